#!/usr/bin/env bash
# Two revisions of the broker side by side on the workloads of bench/RESULTS.md, in one run:
# each round starts a fresh broker of each revision in turn (so drift on a shared machine hits
# both alike) and runs the same sluice-bench (the current tree's) against it. Prints a table of
# medians, with the spread and the ratio new/old, and saves it under bench/results/.
#
#   scripts/ab.sh OLD_REV [NEW_REV] [--rounds R] [--partitions P] [--out DIR]
#
# NEW_REV defaults to the work tree as it is. Each revision's broker is built in a worktree
# under target/ab/ (release profile). Workloads, 1 KiB messages, acks=1, 1 MiB batches:
#   produce-5s    sustained produce, 1 s warm-up, 5 s measured     (MB/s of record batches)
#   consume-5s    the whole topic produce-5s wrote                 (MB/s)
#   produce-1M    1,000,000 messages                               (MB/s)
#   consume-1M    the whole topic produce-1M wrote                 (MB/s)
#   e2e-p50/p99   end to end at 50,000 msg/s, 5 s measured         (latency, µs)
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=3
partitions=16
out=bench/results
revs=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --rounds) rounds=$2; shift 2 ;;
        --partitions) partitions=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
        *) revs+=("$1"); shift ;;
    esac
done
[[ ${#revs[@]} -ge 1 ]] || { echo "usage: scripts/ab.sh OLD_REV [NEW_REV] (see --help)" >&2; exit 2; }
step() { echo "ab: $*" >&2; }

root=$(pwd)
# Builds `sluice` at a revision in its own worktree and target directory; prints its path.
build_rev() {
    local rev=$1 sha dir
    sha=$(git rev-parse --short=12 "$rev^{commit}")
    dir=$root/target/ab/$sha
    if [[ ! -x $dir/target/release/sluice ]]; then
        step "building sluice at $rev ($sha)"
        rm -rf "$dir"
        git worktree add --force --detach "$dir" "$sha" >/dev/null 2>&1
        (cd "$dir" && cargo build --release --quiet -p sluice-broker)
    fi
    echo "$dir/target/release/sluice"
}

step "building the work tree (release): sluice-bench, and sluice if NEW_REV is not given"
cargo build --release --quiet -p sluice-broker -p sluice-bench
bench=$root/target/release/sluice-bench
old_label=${revs[0]}
old_bin=$(build_rev "${revs[0]}")
if [[ ${#revs[@]} -ge 2 ]]; then
    new_label=${revs[1]}
    new_bin=$(build_rev "${revs[1]}")
else
    new_label="work tree ($(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo '+changes'))"
    mkdir -p target/ab/worktree
    cp target/release/sluice target/ab/worktree/sluice
    new_bin=$root/target/ab/worktree/sluice
fi

work=$(mktemp -d /tmp/sluice-ab.XXXXXX)
broker_pid=""
stop_broker() {
    [[ -n $broker_pid ]] || return 0
    kill "$broker_pid" 2>/dev/null || true
    wait "$broker_pid" 2>/dev/null || true
    broker_pid=""
}
trap 'stop_broker; rm -rf "$work"' EXIT
PORT=19592

start_broker() {
    rm -rf "$work/data"
    "$1" serve --log warn --override log.dirs="$work/data" \
        --override listeners=PLAINTEXT://127.0.0.1:$PORT --override sluice.metrics.address= \
        >"$work/broker.log" 2>&1 &
    broker_pid=$!
    local deadline=$((SECONDS + 60))
    until (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do
        ((SECONDS < deadline)) || { echo "broker did not listen in 60 s" >&2; cat "$work/broker.log" >&2; return 1; }
        sleep 0.2
    done
}

# One sluice-bench run; prints the JSON fields asked for, space-separated.
run_bench() {
    local fields=$1; shift
    timeout 300 "$bench" "$@" --bootstrap 127.0.0.1:$PORT --json 2>/dev/null | tail -1 |
        python3 -c 'import json,sys; d=json.load(sys.stdin); print(" ".join(str(d[f]) for f in sys.argv[1].split(",")))' "$fields"
}

results=$work/results.csv
echo "round,broker,workload,value" >"$results"
record() { echo "$1,$2,$3,$4" >>"$results"; step "round $1: $2: $3 = $4"; }
common=(--message-size 1024 --acks 1 --batch-size 1MiB)
for round in $(seq 1 "$rounds"); do
    for side in old new; do
        bin=$old_bin; [[ $side == new ]] && bin=$new_bin
        start_broker "$bin"
        value=$(run_bench batch_mb_per_s produce --topic s$round --partitions "$partitions" \
            "${common[@]}" --duration 5s --warmup 1s)
        record "$round" $side produce-5s "$value"
        record "$round" $side consume-5s "$(run_bench batch_mb_per_s consume --topic s$round)"
        value=$(run_bench batch_mb_per_s produce --topic m$round --partitions "$partitions" \
            "${common[@]}" --messages 1000000)
        record "$round" $side produce-1M "$value"
        record "$round" $side consume-1M "$(run_bench batch_mb_per_s consume --topic m$round)"
        read -r p50 p99 < <(run_bench latency_p50_us,latency_p99_us end-to-end --topic e$round \
            --partitions "$partitions" "${common[@]}" --rate 50k --duration 5s --warmup 1s \
            --linger-ms 1 --fetch-max-wait-ms 100)
        record "$round" $side e2e-p50-us "$p50"
        record "$round" $side e2e-p99-us "$p99"
        stop_broker
    done
done

mkdir -p "$out"
stamp=$(date -u +%Y%m%d-%H%M%S)
cp "$results" "$out/ab-$stamp.csv"
python3 - "$results" "$old_label" "$new_label" "$rounds" "$partitions" >"$out/ab-$stamp.md" <<'EOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
old_label, new_label, rounds, partitions = sys.argv[2:6]
order = ["produce-5s", "consume-5s", "produce-1M", "consume-1M", "e2e-p50-us", "e2e-p99-us"]
print(f"old = {old_label}, new = {new_label}; {rounds} rounds, {partitions} partitions, "
      "a fresh broker per round and side, alternating.\n")
print("| workload | old median (min–max) | new median (min–max) | new / old |")
print("|---|---|---|---|")
for workload in order:
    cell = {}
    for side in ("old", "new"):
        values = [float(r["value"]) for r in rows
                  if r["workload"] == workload and r["broker"] == side and r["value"] not in ("", "None")]
        cell[side] = values
    def show(v):
        if not v:
            return "failed"
        return f"{statistics.median(v):.0f} ({min(v):.0f}–{max(v):.0f})"
    ratio = ""
    if cell["old"] and cell["new"]:
        ratio = f"{statistics.median(cell['new']) / statistics.median(cell['old']):.2f}"
    unit = "µs" if workload.endswith("-us") else "MB/s"
    name = workload.removesuffix("-us")
    print(f"| {name} ({unit}) | {show(cell['old'])} | {show(cell['new'])} | {ratio} |")
EOF
cat "$out/ab-$stamp.md"
step "saved $out/ab-$stamp.md and .csv"
