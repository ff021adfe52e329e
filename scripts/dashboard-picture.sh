#!/usr/bin/env bash
# The picture of a dashboard query in the README: a broker under a stepped load (20, 50, then
# 100 MB/s of 1 KiB messages, a minute each, so that the query's 1-minute rate climbs to each
# step), a Prometheus scraping it every second, and Prometheus's own graph page for the
# dashboard's throughput query, captured with headless Chromium (Debian's `chromium`,
# installed if missing) into docs/grafana/throughput.png.
#
#   scripts/dashboard-picture.sh
#
# Ports 19700 (broker), 19701 (metrics) and 19702 (Prometheus) must be free.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "dashboard-picture: $*" >&2; }
as_root() { if [[ $(id -u) == 0 ]]; then "$@"; else sudo "$@"; fi; }

command -v prometheus >/dev/null || as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus
command -v chromium >/dev/null || as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

say "building (release)"
cargo build --release --quiet -p sluice-broker -p sluice-bench

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

target/release/sluice serve --log warn \
    --override listeners=PLAINTEXT://127.0.0.1:19700 \
    --override sluice.metrics.address=127.0.0.1:19701 \
    --override "log.dirs=$work/data" >"$work/sluice.log" 2>&1 &
pids+=($!)

cat >"$work/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: sluice
    static_configs:
      - targets: ['127.0.0.1:19701']
EOF
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
    --web.listen-address=127.0.0.1:19702 --log.level=warn >"$work/prometheus.log" 2>&1 &
pids+=($!)

for _ in $(seq 1 100); do
    curl -sf http://127.0.0.1:19702/-/ready >/dev/null && break
    sleep 0.2
done

for rate in 20k 50k 100k; do
    say "load: $rate messages/s for 60 s"
    target/release/sluice-bench produce --bootstrap 127.0.0.1:19700 --topic picture \
        --partitions 4 --message-size 1024 --batch-size 64KiB --rate "$rate" --linger-ms 5 \
        --duration 60s --interval-ms 10000 >/dev/null
done
# Two more scrapes, so that the last step is on the graph.
sleep 3

# The dashboard's "Throughput in and out" query, with Grafana's $instance as "all".
expr='sum by (instance) (rate(kafka_server_brokertopicmetrics_bytesin_total{topic=""}[1m]))'
encoded=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1]))' "$expr")
url="http://127.0.0.1:19702/graph?g0.expr=$encoded&g0.tab=0&g0.range_input=4m&g0.stacked=0&g0.show_exemplars=0"
say "capturing $url"
mkdir -p docs/grafana
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1400,900 \
    --virtual-time-budget=15000 --screenshot="$PWD/docs/grafana/throughput.png" "$url" \
    >"$work/chromium.log" 2>&1 || { cat "$work/chromium.log" >&2; exit 1; }
say "wrote docs/grafana/throughput.png"
