#!/usr/bin/env bash
# One sluice-bench run against a fresh broker, with a system-wide CPU profile: where the
# machine's time goes while the workload runs (reactors, io_uring workers, the client, idle).
#
#   scripts/profile.sh LABEL [--override KEY=VALUE]... -- SLUICE-BENCH-ARGS...
#
# The broker (target/release/sluice, built beforehand) gets an empty data directory and,
# once earlier runs' writes are flushed (sync), listens on 127.0.0.1:19700 (metrics :19701);
# the bench connects there. Everything lands in target/profile/LABEL.*: the bench's CSV
# summary, the broker's metrics at the end, and perf.data (perf record -a -g at 499 Hz). Prints the throughput, the share of samples per
# thread name, and the kernel paths of the data: receive, file write, splice, send.
set -euo pipefail
cd "$(dirname "$0")/.."

[[ $# -ge 1 && $1 != -* ]] || { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
label=$1
shift
overrides=()
while [[ $# -gt 0 && $1 != -- ]]; do
    case $1 in
        --override) overrides+=(--override "$2"); shift 2 ;;
        *) echo "unknown option $1 (see the head of $0)" >&2; exit 2 ;;
    esac
done
[[ $# -gt 0 ]] && shift
command -v perf >/dev/null || { echo "perf is missing (Debian: linux-perf)" >&2; exit 2; }

out=target/profile
data=$out/$label.data
mkdir -p "$out"
rm -rf "$data"
mkdir -p "$data"
# Earlier runs' dirty pages would be written back during this one: flush them first.
sync
target/release/sluice serve --log warn \
    --override "log.dirs=$data" \
    --override listeners=PLAINTEXT://127.0.0.1:19700 \
    --override sluice.metrics.address=127.0.0.1:19701 \
    "${overrides[@]}" >"$out/$label.broker.log" 2>&1 &
broker=$!
trap 'kill $broker 2>/dev/null || true; wait $broker 2>/dev/null || true; rm -rf "$data"' EXIT
for _ in $(seq 100); do
    curl -sf 127.0.0.1:19701/metrics >/dev/null && break
    sleep 0.1
done

echo "profile: $label: sluice-bench $*" >&2
perf record -q -F 499 -g -a -o "$out/$label.perf.data" -- \
    target/release/sluice-bench "$@" --bootstrap 127.0.0.1:19700 --csv >"$out/$label.csv"
curl -sf 127.0.0.1:19701/metrics >"$out/$label.metrics" || true

column() { # the named column of the CSV summary
    awk -F, -v name="$1" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == name) c = i }
        NR == 2 && c { print $c }' "$out/$label.csv"
}
echo "== $label: $(column batch_mb_per_s) MB/s, p50 $(column latency_p50_us) µs, p99 $(column latency_p99_us) µs"
echo "-- samples per thread"
perf report -i "$out/$label.perf.data" --no-children --sort comm --stdio 2>/dev/null |
    grep -E '^ +[0-9.]+%' | head -10
echo "-- kernel paths of the data (share of all samples, callees included)"
perf report -i "$out/$label.perf.data" --children --sort sym --stdio -g none 2>/dev/null |
    grep -E '\] (io_recv|io_write|io_splice|io_send|tcp_sendmsg|tcp_recvmsg)$' || true
echo "-- requests served"
grep -E '^kafka_network_requestmetrics_requests_total\{request="(Produce|Fetch)"\}' \
    "$out/$label.metrics" || true
