"""A confluent-kafka group consumer that a test drives and watches. It prints one line per
event and flushes it at once, so the test sees what happened even if this process is killed:

    added P,P,...             partitions an assignment callback handed over: all of them under
                              an eager strategy, only the new ones under cooperative-sticky
    revoked P,P,...           partitions a revocation callback took back: all of them under an
                              eager strategy, only those that move under cooperative-sticky
    lost P,P,...              partitions taken away without a revocation (the member was
                              dropped from the group)
    assigned P,P,...          the whole assignment after every change ("assigned -" for none),
                              printed after the added, revoked or lost line that changed it
    message P OFFSET VALUE    a message, printed after it was processed
    committed P OFFSET        a synchronous commit of OFFSET on P succeeded
    closed                    close() returned (the consumer left the group)

It stops (close, then exit 0) when a line "stop" or end of file arrives on stdin.

Usage: group_consumer.py BOOTSTRAP GROUP TOPIC [--strategy S] [--commit] [--delay-ms N]
       [--stall-after-assignment] [--max-poll-interval-ms N] [--session-timeout-ms N]
       [--instance-id ID]"""

import argparse
import sys
import threading
import time

from confluent_kafka import Consumer, KafkaException


def say(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("bootstrap")
    parser.add_argument("group")
    parser.add_argument("topic")
    parser.add_argument("--strategy", default="range")
    parser.add_argument("--commit", action="store_true")
    parser.add_argument("--delay-ms", type=int, default=0)
    parser.add_argument("--stall-after-assignment", action="store_true")
    parser.add_argument("--session-timeout-ms", type=int, default=6000)
    parser.add_argument("--max-poll-interval-ms", type=int, default=300000)
    parser.add_argument("--instance-id")
    args = parser.parse_args()

    stop = threading.Event()

    def watch_stdin():
        for line in sys.stdin:
            if line.strip() == "stop":
                break
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()

    config = {
            "bootstrap.servers": args.bootstrap,
            "group.id": args.group,
            "partition.assignment.strategy": args.strategy,
            "session.timeout.ms": args.session_timeout_ms,
            "heartbeat.interval.ms": 1000,
            "max.poll.interval.ms": args.max_poll_interval_ms,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": not args.commit,
            "auto.commit.interval.ms": 500,
    }
    if args.instance_id:
        config["group.instance.id"] = args.instance_id
    consumer = Consumer(config)
    owned = set()

    def listed(partitions):
        return ",".join(str(p) for p in sorted(partitions)) or "-"

    def report():
        say("assigned " + listed(owned))

    def on_assign(c, partitions):
        say("added " + listed(p.partition for p in partitions))
        if args.strategy == "cooperative-sticky":
            owned.update(p.partition for p in partitions)
        else:
            owned.clear()
            owned.update(p.partition for p in partitions)
        report()

    def on_revoke(c, partitions):
        say("revoked " + listed(p.partition for p in partitions))
        owned.difference_update(p.partition for p in partitions)
        report()

    def on_lost(c, partitions):
        say("lost " + listed(p.partition for p in partitions))
        owned.difference_update(p.partition for p in partitions)
        report()

    consumer.subscribe([args.topic], on_assign=on_assign, on_revoke=on_revoke, on_lost=on_lost)
    while not stop.is_set():
        if args.stall_after_assignment and owned:
            # Stop calling poll(): librdkafka leaves the group after max.poll.interval.ms.
            while not stop.is_set():
                time.sleep(0.05)
            break
        message = consumer.poll(0.2)
        if message is None:
            continue
        if message.error():
            say(f"error {message.error()}")
            continue
        if args.delay_ms:
            time.sleep(args.delay_ms / 1000)
        say(f"message {message.partition()} {message.offset()} {message.value().decode()}")
        if args.commit:
            try:
                consumer.commit(message=message, asynchronous=False)
                say(f"committed {message.partition()} {message.offset() + 1}")
            except KafkaException as error:
                say(f"commit-failed {message.partition()} {message.offset()} {error}")
    consumer.close()
    say("closed")


if __name__ == "__main__":
    main()
