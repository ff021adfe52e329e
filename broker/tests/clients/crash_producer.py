"""Produces numbered messages as fast as the broker takes them, with acks=all and idempotence,
and appends one line per acknowledged message to a file: "partition offset sequence". It runs
until it is killed; the crash test kills the broker under it.

Usage: crash_producer.py BOOTSTRAP TOPIC PARTITIONS FIRST_SEQUENCE ACK_FILE

Message values are derived from their sequence number (see `value_of`), so a reader can tell a
corrupt or misplaced value from a good one without the producer's help."""

import sys

from confluent_kafka import Producer


def value_of(sequence):
    """The value of message `sequence`: the number, then filler that depends on it."""
    filler = (f"{sequence:x}" * 40)[: 50 + sequence % 200]
    return f"{sequence:016d}:{filler}".encode()


def main():
    bootstrap, topic = sys.argv[1], sys.argv[2]
    partitions, first = int(sys.argv[3]), int(sys.argv[4])
    acks = open(sys.argv[5], "a", buffering=1 << 16)
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 2,
            "batch.num.messages": 200,
            "queue.buffering.max.messages": 20000,
            "message.timeout.ms": 300000,
        }
    )

    def on_delivery(sequence, error, message):
        if error is None:
            acks.write(f"{message.partition()} {message.offset()} {sequence}\n")

    sequence = first
    while True:
        try:
            producer.produce(
                topic,
                value=value_of(sequence),
                partition=sequence % partitions,
                on_delivery=lambda error, message, sequence=sequence: on_delivery(sequence, error, message),
            )
            sequence += 1
        except BufferError:
            producer.poll(0.05)
        # Serve delivery reports, then make what they wrote visible to the test.
        producer.poll(0)
        acks.flush()


if __name__ == "__main__":
    main()
