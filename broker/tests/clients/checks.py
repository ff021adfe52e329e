"""Small helpers shared by the client scripts: checks that fail with a message, deadlines, and
a consumer loop that reads partitions by assign() up to their end."""

import sys
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition


class CheckFailed(Exception):
    pass


def check(condition, message):
    if not condition:
        raise CheckFailed(message)


def equal(got, want, what):
    if got != want:
        raise CheckFailed(f"{what}: got {got!r}, want {want!r}")


class Deadline:
    def __init__(self, seconds, what):
        self.end = time.monotonic() + seconds
        self.seconds = seconds
        self.what = what

    def check(self, detail=""):
        if time.monotonic() > self.end:
            raise CheckFailed(f"{self.what} did not finish within {self.seconds} s {detail}")


def result(future, what, timeout=30):
    """The result of an admin future, or a failed check naming what it was for."""
    try:
        return future.result(timeout=timeout)
    except Exception as error:  # noqa: BLE001 - the message is what matters here
        raise CheckFailed(f"{what} failed: {error!r}") from error


def error_code(future, timeout=30):
    """The KafkaError code an admin future failed with, or None when it succeeded."""
    try:
        future.result(timeout=timeout)
    except Exception as error:  # noqa: BLE001
        if error.args and isinstance(error.args[0], KafkaError):
            return error.args[0].code()
        raise
    return None


def reader(bootstrap, name, **extra):
    """A consumer for assign() and seek() only: a group id is set, but nothing joins a group
    or commits, so the broker needs no group coordinator."""
    config = {
        "bootstrap.servers": bootstrap,
        "group.id": f"{name}-reader",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "error",
        "enable.partition.eof": True,
        "check.crcs": True,
    }
    config.update(extra)
    return Consumer(config)


def read_partitions(consumer, topic, partitions, seconds=60, start=OFFSET_BEGINNING):
    """Reads each partition from `start` until its end; returns {partition: [message, ...]}."""
    consumer.assign([TopicPartition(topic, p, start) for p in partitions])
    got = {p: [] for p in partitions}
    at_end = set()
    deadline = Deadline(seconds, f"reading {topic}")
    while len(at_end) < len(partitions):
        deadline.check(f"(at the end of partitions {sorted(at_end)})")
        message = consumer.poll(0.5)
        if message is None:
            continue
        if message.error():
            if message.error().code() == KafkaError._PARTITION_EOF:
                at_end.add(message.partition())
                continue
            raise CheckFailed(f"consumer error: {message.error()}")
        at_end.discard(message.partition())
        got[message.partition()].append(message)
    return got


def run(main):
    """Runs `main()`, turning a failed check into a message and exit status 1."""
    try:
        summary = main()
    except CheckFailed as failure:
        print(f"FAILED: {failure}", file=sys.stderr)
        sys.exit(1)
    print(summary)
