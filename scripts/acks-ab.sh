#!/usr/bin/env bash
# acks=1 on one replica against acks=all on three (issue P6), in one run: each round starts a
# fresh three-node cluster (scripts/cluster.sh) for each side in turn, with the dirty page
# cache written back first, so neither side pays for the other's writeback. Prints one CSV
# line per round and side, then the medians.
#
#   scripts/acks-ab.sh [ROUNDS] [DURATION]     (defaults 3 and 5s)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
duration=${2:-5s}
bench=target/release/sluice-bench
cargo build --release --quiet -p sluice-bench -p sluice-broker
out=$(mktemp)
trap 'scripts/cluster.sh clean >/dev/null 2>&1 || true; rm -f "$out"' EXIT
echo "side,round,msgs_per_s,mb_per_s,p50_ms,p99_ms,p99_99_ms"
for ((r = 1; r <= rounds; r++)); do
    for pair in "1 1" "all 3"; do
        read -r acks rf <<<"$pair"
        side="acks=$acks rf=$rf"
        scripts/cluster.sh clean >/dev/null 2>&1
        sync
        scripts/cluster.sh up 3 >/dev/null 2>&1
        echo "round $r: $side" >&2
        $bench produce --bootstrap 127.0.0.1:9092 --topic "ab-$r" --partitions 6 \
            --replication-factor "$rf" --acks "$acks" --message-size 1024 --batch-size 1MiB \
            --duration "$duration" --warmup 1s --csv >"$out"
        python3 - "$side" "$r" "$out" <<'PY'
import csv, sys
side, r, path = sys.argv[1:]
row = list(csv.DictReader(open(path)))[-1]
us = lambda k: float(row[k]) / 1000
print(f'{side},{r},{float(row["msgs_per_s"]):.0f},{row["payload_mb_per_s"]},'
      f'{us("latency_p50_us"):.2f},{us("latency_p99_us"):.2f},{us("latency_p99_99_us"):.2f}')
PY
    done
done
