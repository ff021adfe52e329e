"""Times a broker's start-up and clean shutdown with many partitions: starts `sluice serve` on
a fresh data directory, creates N partitions (topics of at most 10,000, a topic's limit), stops the broker with SIGTERM and
times the exit, then starts it again on the same directory and times that start, a Metadata
request for every topic (the first and the median of five more), and the stop. Also counts the
descriptors the broker holds once the partitions are created and once it has started again.

Usage: shutdown-time.py [--binary target/release/sluice] [--partitions 10000]"""

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

from confluent_kafka.admin import AdminClient, NewTopic

# The most partitions a Sluice topic may have (TOPIC_PARTITIONS_MAX).
TOPIC_PARTITIONS_MAX = 10_000


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(binary, data, port):
    argv = [binary, "serve", "--override", f"log.dirs={data}", "--override", f"listeners=PLAINTEXT://127.0.0.1:{port}",
            "--override", "sluice.metrics.address="]
    began = time.monotonic()
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in process.stdout:
        if line.strip() == "ready":
            return process, time.monotonic() - began
    raise SystemExit(f"the broker exited before it was ready ({process.wait()})")


def descriptors(process):
    return len(os.listdir(f"/proc/{process.pid}/fd"))


def stop(process):
    began = time.monotonic()
    process.send_signal(signal.SIGTERM)
    status = process.wait(timeout=300)
    return time.monotonic() - began, status


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", default="target/release/sluice")
    parser.add_argument("--partitions", type=int, default=10000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data:
        port = free_port()
        process, _ = start(args.binary, data, port)
        admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}", "log_level": 2})
        print(f"creating {args.partitions} partitions ...", file=sys.stderr, flush=True)
        sizes = [TOPIC_PARTITIONS_MAX] * (args.partitions // TOPIC_PARTITIONS_MAX)
        if args.partitions % TOPIC_PARTITIONS_MAX:
            sizes.append(args.partitions % TOPIC_PARTITIONS_MAX)
        began = time.monotonic()
        for n, size in enumerate(sizes):
            topic = NewTopic(f"many-{n}", num_partitions=size, replication_factor=1)
            created = admin.create_topics([topic], operation_timeout=300, request_timeout=300)
            created[f"many-{n}"].result(timeout=600)
            print(f"  {sum(sizes[:n + 1])} created", file=sys.stderr, flush=True)
        create = time.monotonic() - began
        created_fds = descriptors(process)
        first_stop, status = stop(process)
        process, restart = start(args.binary, data, port)
        restart_fds = descriptors(process)
        admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}", "log_level": 2})
        metadata = []
        for _ in range(6):
            began = time.monotonic()
            found = admin.list_topics(timeout=120)
            metadata.append(time.monotonic() - began)
            counted = sum(len(t.partitions) for name, t in found.topics.items()
                          if name.startswith("many-"))
            if counted != args.partitions:
                raise SystemExit(f"Metadata named {counted} partitions, not {args.partitions}")
        later = sorted(metadata[1:])[len(metadata[1:]) // 2]
        second_stop, second_status = stop(process)
        print(f"partitions={args.partitions} create_s={create:.1f} fds_created={created_fds} "
              f"stop_s={first_stop:.2f} (exit {status}) fds_restarted={restart_fds} "
              f"restart_s={restart:.2f} metadata_first_s={metadata[0]:.3f} "
              f"metadata_median_s={later:.3f} "
              f"stop_after_restart_s={second_stop:.2f} (exit {second_status})")


if __name__ == "__main__":
    main()
