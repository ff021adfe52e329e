#!/usr/bin/env bash
# A cluster of Sluice nodes on this host, each a broker and a controller voter (KRaft's
# combined mode), with its own ports and data directory under ./cluster-data/.
#
#   scripts/cluster.sh up [N]     build (release) and start N nodes (default 3); waits until
#                                 every node is ready, then prints the bootstrap servers
#   scripts/cluster.sh status     which nodes run
#   scripts/cluster.sh down       stop every node (SIGTERM: logs are flushed and closed)
#   scripts/cluster.sh clean      stop, then remove ./cluster-data
#
# Node i listens for clients on 127.0.0.1:(9092 + i), for the quorum on 127.0.0.1:(9192 + i),
# serves metrics on 127.0.0.1:(9101 + i), and keeps its data in ./cluster-data/node-i (its
# output in ./cluster-data/node-i.log). Extra properties for every node can be passed in
# SLUICE_OVERRIDES, e.g. SLUICE_OVERRIDES="default.replication.factor=3 min.insync.replicas=2".
set -euo pipefail
cd "$(dirname "$0")/.."

dir=cluster-data
command=${1:-}
count=${2:-3}

say() { echo "cluster: $*" >&2; }

pid_of() { cat "$dir/node-$1.pid" 2>/dev/null || true; }
running() { local pid; pid=$(pid_of "$1"); [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; }
nodes() { ls "$dir" 2>/dev/null | sed -n 's/^node-\([0-9]*\)\.pid$/\1/p' | sort -n; }

up() {
    say "building sluice (release)"
    cargo build --release --quiet -p sluice-broker
    mkdir -p "$dir"
    local voters=() i
    for ((i = 0; i < count; i++)); do voters+=("$i@127.0.0.1:$((9192 + i))"); done
    local quorum
    quorum=$(IFS=,; echo "${voters[*]}")
    for ((i = 0; i < count; i++)); do
        if running "$i"; then say "node $i already runs"; continue; fi
        local overrides=(
            --override "node.id=$i"
            --override "process.roles=broker,controller"
            --override "listeners=PLAINTEXT://127.0.0.1:$((9092 + i)),CONTROLLER://127.0.0.1:$((9192 + i))"
            --override "controller.quorum.voters=$quorum"
            --override "log.dirs=$dir/node-$i"
            --override "sluice.metrics.address=127.0.0.1:$((9101 + i))"
        )
        for extra in ${SLUICE_OVERRIDES:-}; do overrides+=(--override "$extra"); done
        target/release/sluice serve "${overrides[@]}" >"$dir/node-$i.log" 2>&1 &
        echo $! >"$dir/node-$i.pid"
        say "node $i started (pid $!)"
    done
    # A node prints "ready" once the quorum runs and it has joined; that needs a majority.
    local deadline=$((SECONDS + 120))
    for ((i = 0; i < count; i++)); do
        until grep -qx ready "$dir/node-$i.log" 2>/dev/null; do
            if ! running "$i"; then say "node $i exited:"; tail -5 "$dir/node-$i.log" >&2; exit 1; fi
            if ((SECONDS > deadline)); then say "node $i not ready after 120 s"; exit 1; fi
            sleep 0.2
        done
    done
    local bootstrap=()
    for ((i = 0; i < count; i++)); do bootstrap+=("127.0.0.1:$((9092 + i))"); done
    say "ready; bootstrap servers: $(IFS=,; echo "${bootstrap[*]}")"
}

status() {
    local i
    for i in $(nodes); do
        if running "$i"; then echo "node $i: running (pid $(pid_of "$i"))"; else echo "node $i: stopped"; fi
    done
}

down() {
    local i pid
    for i in $(nodes); do
        pid=$(pid_of "$i")
        if running "$i"; then
            kill -TERM "$pid"
            for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
            kill -0 "$pid" 2>/dev/null && { say "node $i did not stop in 30 s; killing it"; kill -9 "$pid"; }
            say "node $i stopped"
        fi
        rm -f "$dir/node-$i.pid"
    done
}

case $command in
    up) up ;;
    status) status ;;
    down) down ;;
    clean) down; rm -rf "$dir"; say "removed $dir" ;;
    *) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
