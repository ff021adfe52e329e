#!/usr/bin/env bash
# Sluice and its peers under the same workloads, side by side in one run, with the loopback
# limits measured in the same run. Prints a ratio table and saves it (Markdown and CSV).
#
#   scripts/compare.sh [--messages N] [--runs R] [--peers "kafka09 tansu"] [--out DIR]
#
# Workloads (1 KiB messages, acks=1):
#   rdk-produce  rdkafka_performance -P, 1 partition, linger.ms=5, batch.size=1000000
#   rdk-consume  rdkafka_performance -C of what rdk-produce wrote
#   bench-produce  sluice-bench produce, 16 partitions, 1 MiB batches   (limit: loopback TCP)
#   bench-consume  sluice-bench consume of those 16 partitions          (limit: sendfile to loopback)
# Kafka 0.9 speaks no RecordBatch v2, so sluice-bench runs against Sluice and Tansu only.
# Limits: iperf3 over loopback, copying (write) and zero-copy (-Z, sendfile).
# Every figure is the median of R runs; brokers take turns within each run so that drift on a
# shared machine hits them alike. Peers are installed on first use (scripts/peers.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

messages=1000000
runs=3
peers="kafka09 tansu"
out=bench/results
while [[ $# -gt 0 ]]; do
    case $1 in
        --messages) messages=$2; shift 2 ;;
        --runs) runs=$2; shift 2 ;;
        --peers) peers=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

# shellcheck source=scripts/peers.sh
source scripts/peers.sh
step() { echo "compare: $*" >&2; }

step "building sluice and sluice-bench (release)"
cargo build --release --quiet -p sluice-broker -p sluice-bench
sluice=target/release/sluice
bench=target/release/sluice-bench
rdk=$(peer_rdkafka_performance)
iperf=$(peer_iperf3)
kafka_home=""
tansu=""
[[ " $peers " == *" kafka09 "* ]] && kafka_home=$(peer_kafka09)
[[ " $peers " == *" tansu "* ]] && tansu=$(peer_tansu)

work=$(mktemp -d /tmp/sluice-compare.XXXXXX)
pids=()
# Stops the processes started last first (Kafka before its ZooKeeper: a Kafka broker whose
# ZooKeeper is gone retries its controlled shutdown forever), each with SIGTERM and, after
# 20 s, SIGKILL.
stop_brokers() {
    local i pid
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        pid=${pids[i]}
        kill "$pid" 2>/dev/null || continue
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    pids=()
}
trap 'stop_brokers; rm -rf "$work"' EXIT

# Waits (at most 60 s) until something accepts connections on 127.0.0.1:$1.
wait_port() {
    local deadline=$((SECONDS + 60))
    until (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
        ((SECONDS < deadline)) || { echo "nothing listens on port $1 after 60 s" >&2; return 1; }
        sleep 0.2
    done
}

SLUICE_PORT=19192 KAFKA_PORT=19093 ZK_PORT=12181 TANSU_PORT=19094 IPERF_PORT=15201

start_broker() {
    local name=$1 dir=$work/$1
    rm -rf "$dir" && mkdir -p "$dir"
    case $name in
        sluice)
            "$sluice" serve --override log.dirs="$dir/data" \
                --override listeners=PLAINTEXT://127.0.0.1:$SLUICE_PORT \
                --override sluice.metrics.address= >"$dir/log" 2>&1 &
            pids+=($!); wait_port $SLUICE_PORT ;;
        kafka09)
            printf 'dataDir=%s/zk\nclientPort=%s\nmaxClientCnxns=0\n' "$dir" $ZK_PORT >"$dir/zk.properties"
            printf 'broker.id=0\nlisteners=PLAINTEXT://127.0.0.1:%s\nlog.dirs=%s/logs\nzookeeper.connect=127.0.0.1:%s\nnum.partitions=1\n' \
                $KAFKA_PORT "$dir" $ZK_PORT >"$dir/server.properties"
            local jvm=(java -cp "$kafka_home/libs/*" -Dlog4j.configuration="file:$kafka_home/config/log4j.properties" -Dkafka.logs.dir="$dir")
            "${jvm[@]}" -Xmx512m org.apache.zookeeper.server.quorum.QuorumPeerMain "$dir/zk.properties" >"$dir/zk.log" 2>&1 &
            pids+=($!); wait_port $ZK_PORT
            "${jvm[@]}" -Xmx1g -Xms1g kafka.Kafka "$dir/server.properties" >"$dir/log" 2>&1 &
            pids+=($!); wait_port $KAFKA_PORT ;;
        tansu)
            "$tansu" broker --storage-engine memory://tansu/ \
                --kafka-listener-url tcp://127.0.0.1:$TANSU_PORT \
                --kafka-advertised-listener-url tcp://127.0.0.1:$TANSU_PORT >"$dir/log" 2>&1 &
            pids+=($!); wait_port $TANSU_PORT ;;
    esac
}

address() {
    case $1 in
        sluice) echo 127.0.0.1:$SLUICE_PORT ;;
        kafka09) echo 127.0.0.1:$KAFKA_PORT ;;
        tansu) echo 127.0.0.1:$TANSU_PORT ;;
    esac
}

# Sluice and Kafka create topics on first use; Tansu needs them created.
create_topic() {
    if [[ $1 == tansu ]]; then
        "$tansu" topic create "$2" --partitions "$3" --broker "tcp://$(address tansu)" >/dev/null
    fi
}

rdk_flags() {
    # Kafka 0.9 has no ApiVersions; the client must be told what it speaks.
    [[ $1 == kafka09 ]] && echo "-X api.version.request=false -X broker.version.fallback=0.9.0.1"
    return 0
}

# Each measurement keeps the tool's whole output in $work/raw; a failed one shows its tail.
raw() {
    local file=$work/raw/$1.txt
    mkdir -p "$work/raw"
    cat >"$file"
    sed -n "$2" "$file" | tail -1 | grep . || { tail -5 "$file" | sed 's/^/  | /' >&2; return 0; }
}

# MB/s (10^6 bytes) from rdkafka_performance's summary line, or "" when the run failed.
rdk_produce() {
    # shellcheck disable=SC2046
    "$rdk" -P -t "$2" -p 0 -b "$(address "$1")" -s 1024 -c "$messages" -a 1 \
        -X linger.ms=5 -X batch.size=1000000 $(rdk_flags "$1") -q 2>&1 |
        raw "rdk-produce-$1-$2" 's/.* messages produced .* and \([0-9.]*\) MB\/s.*/\1/p'
}
rdk_consume() {
    # shellcheck disable=SC2046
    timeout 300 "$rdk" -C -t "$2" -p 0 -o beginning -b "$(address "$1")" -c "$messages" \
        $(rdk_flags "$1") -q 2>&1 |
        raw "rdk-consume-$1-$2" 's/.* consumed in .*(\([0-9.]*\) MB\/s).*/\1/p'
}

# Bytes on the wire per second (record batches), in MB/s, from sluice-bench --json.
bench_run() {
    local mode=$1 broker=$2 topic=$3
    local args=(--bootstrap "$(address "$broker")" --topic "$topic" --json)
    [[ $mode == produce ]] && args+=(--partitions 16 --message-size 1024 --messages "$messages" --acks 1 --batch-size 1MiB)
    timeout 300 "$bench" "$mode" "${args[@]}" 2>&1 |
        raw "bench-$mode-$broker-$topic" 's/.*"batch_mb_per_s":\([0-9.]*\).*/\1/p'
}

# iperf3's server is started per measurement and stopped after it; the client retries until
# the server listens (probing the port would use up a one-shot server).
iperf_run() {
    "$iperf" -s -p $IPERF_PORT >/dev/null 2>&1 &
    local server=$! deadline=$((SECONDS + 30)) output=""
    until output=$("$iperf" -c 127.0.0.1 -p $IPERF_PORT -t 5 -J "$@" 2>/dev/null) &&
        [[ $output == *sum_received* ]]; do
        ((SECONDS < deadline)) || break
        sleep 0.2
    done
    kill "$server" 2>/dev/null; wait "$server" 2>/dev/null || true
    python3 -c 'import json, sys; print(round(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 8e6, 1))' \
        <<<"$output" 2>/dev/null || true
}

results=$work/results.csv
echo "run,workload,target,mb_per_s" >"$results"
record() { echo "$1,$2,$3,${4:-}" >>"$results"; step "run $1: $2 on $3: ${4:-failed} MB/s"; }

brokers="sluice $peers"
for run in $(seq 1 "$runs"); do
    record "$run" limit-tcp loopback "$(iperf_run)"
    record "$run" limit-sendfile loopback "$(iperf_run -Z)"
    for broker in $brokers; do
        step "run $run: starting $broker"
        start_broker "$broker"
        create_topic "$broker" "rdk$run" 1
        record "$run" rdk-produce "$broker" "$(rdk_produce "$broker" "rdk$run")"
        record "$run" rdk-consume "$broker" "$(rdk_consume "$broker" "rdk$run")"
        if [[ $broker != kafka09 ]]; then
            create_topic "$broker" "bench$run" 16
            record "$run" bench-produce "$broker" "$(bench_run produce "$broker" "bench$run")"
            record "$run" bench-consume "$broker" "$(bench_run consume "$broker" "bench$run")"
        fi
        stop_brokers
    done
done

mkdir -p "$out"
stamp=$(date -u +%Y%m%d-%H%M%S)
cp "$results" "$out/compare-$stamp.csv"
python3 - "$results" "$brokers" "$messages" "$runs" >"$out/compare-$stamp.md" <<'EOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
brokers = sys.argv[2].split()
def median(workload, target):
    values = [float(r["mb_per_s"]) for r in rows
              if r["workload"] == workload and r["target"] == target and r["mb_per_s"]]
    return statistics.median(values) if values else None
fmt = lambda v: "n/a" if v is None else f"{v:.0f}"
ratio = lambda a, b: "n/a" if a is None or not b else f"{a / b:.2f}"
peers = [b for b in brokers if b != "sluice"]
limits = {"bench-produce": ("limit-tcp", "loopback TCP"), "bench-consume": ("limit-sendfile", "sendfile")}
print(f"Median MB/s of {sys.argv[4]} runs, {sys.argv[3]} messages of 1 KiB per run.\n")
head = ["workload"] + brokers + [f"sluice / {p}" for p in peers] + ["limit", "sluice / limit"]
print("| " + " | ".join(head) + " |")
print("|" + "---|" * len(head))
for workload in ["rdk-produce", "rdk-consume", "bench-produce", "bench-consume"]:
    values = {b: median(workload, b) for b in brokers}
    limit_key, limit_name = limits.get(workload, (None, ""))
    limit = median(limit_key, "loopback") if limit_key else None
    cells = [workload] + [fmt(values[b]) for b in brokers]
    cells += [ratio(values["sluice"], values[p]) for p in peers]
    cells += [f"{limit_name} {fmt(limit)}" if limit_key else "", ratio(values["sluice"], limit) if limit_key else ""]
    print("| " + " | ".join(cells) + " |")
EOF
cat "$out/compare-$stamp.md"
step "saved $out/compare-$stamp.md and $out/compare-$stamp.csv"
