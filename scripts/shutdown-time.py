"""Times a broker's start-up and clean shutdown with many partitions: starts `sluice serve` on
a fresh data directory, creates one topic of N partitions, stops the broker with SIGTERM and
times the exit, then starts it again on the same directory and times that start and stop.

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
        topic = NewTopic("many", num_partitions=args.partitions, replication_factor=1)
        admin.create_topics([topic], operation_timeout=300, request_timeout=300)["many"].result(timeout=600)
        first_stop, status = stop(process)
        process, restart = start(args.binary, data, port)
        second_stop, second_status = stop(process)
        print(f"partitions={args.partitions} stop_s={first_stop:.2f} (exit {status}) "
              f"restart_s={restart:.2f} stop_after_restart_s={second_stop:.2f} (exit {second_status})")


if __name__ == "__main__":
    main()
