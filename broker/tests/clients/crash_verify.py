"""Reads every partition of the crash test's topic from the start and checks it against the
acknowledgements crash_producer.py wrote: every acknowledged message is there at its offset,
every stored value is intact, and each partition holds its messages in production order with
no duplicates.

Usage: crash_verify.py BOOTSTRAP TOPIC PARTITIONS ACK_FILE..."""

import sys

from checks import check, equal, read_partitions, reader, run
from confluent_kafka import TopicPartition
from crash_producer import value_of


def load_acks(paths):
    """{(partition, offset): sequence} from the ack files; a torn last line is ignored."""
    acked = {}
    for path in paths:
        with open(path) as lines:
            for line in lines:
                if not line.endswith("\n"):
                    continue
                partition, offset, sequence = (int(field) for field in line.split())
                earlier = acked.setdefault((partition, offset), sequence)
                check(
                    earlier == sequence,
                    f"offset {offset} of partition {partition} was acknowledged for two messages: "
                    f"{earlier} and {sequence} (an acknowledged write was lost and its offset reused)",
                )
    return acked


def main():
    bootstrap, topic, partitions = sys.argv[1], sys.argv[2], int(sys.argv[3])
    acked = load_acks(sys.argv[4:])
    check(acked, "no acknowledgements to verify")
    consumer = reader(bootstrap, f"{topic}-verify")
    got = read_partitions(consumer, topic, range(partitions), seconds=120)
    stored = {}
    for partition, messages in got.items():
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        equal(low, 0, f"log start of partition {partition}")
        acked_here = [offset for (p, offset) in acked if p == partition]
        if acked_here:
            check(
                high > max(acked_here),
                f"partition {partition}: high watermark {high} hides acknowledged offset {max(acked_here)}",
            )
        equal([m.offset() for m in messages], list(range(high)), f"offsets of partition {partition}")
        previous = -1
        for message in messages:
            value = message.value()
            sequence = int(value[:16])
            equal(value, value_of(sequence), f"value at {partition}/{message.offset()}")
            equal(sequence % partitions, partition, f"partition of message {sequence}")
            check(
                sequence > previous,
                f"partition {partition}: message {sequence} at offset {message.offset()} follows {previous}",
            )
            previous = sequence
            stored[(partition, message.offset())] = sequence
    consumer.close()
    lost = sorted(key for key in acked if key not in stored)
    check(not lost, f"{len(lost)} acknowledged messages are missing, first (partition, offset)s: {lost[:10]}")
    moved = [(key, acked[key], stored[key]) for key in acked if stored[key] != acked[key]]
    check(not moved, f"offsets holding other messages than acknowledged: {moved[:10]}")
    extra = len(stored) - len(acked)
    counts = {p: len(m) for p, m in got.items()}
    return f"{len(acked)} acknowledged messages all present and intact; stored per partition {counts}; {extra} stored but unacknowledged"


if __name__ == "__main__":
    run(main)
