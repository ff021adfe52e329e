"""confluent-kafka (librdkafka) produces keyed messages with headers using one compression codec,
optionally as an idempotent producer, then a consumer reads them back by assign() and seek().

Usage: confluent_roundtrip.py BOOTSTRAP CODEC [--idempotent]
CODEC is one of none, gzip, snappy, lz4, zstd. Exits non-zero when anything differs."""

import sys

from checks import CheckFailed, Deadline, check, equal, read_partitions, reader, result, run
from confluent_kafka import KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

MESSAGES = 6000
PARTITIONS = 3


def expected_message(i, codec):
    key = f"key-{i}".encode()
    # Repetitive values so every codec has something to compress, of varying length.
    value = (f"value-{i}-" + "sluice" * (i % 40)).encode()
    headers = [("seq", str(i).encode()), ("codec", codec.encode())]
    return key, value, headers


def produce(bootstrap, topic, codec, idempotent):
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "compression.type": codec,
            "enable.idempotence": idempotent,
            "acks": "all",
            "linger.ms": 20,
            "batch.num.messages": 1000,
            "message.timeout.ms": 30000,
        }
    )
    delivered = {}
    failures = []

    def on_delivery(seq, error, message):
        if error is not None:
            failures.append(f"message {seq}: {error}")
            return
        delivered[seq] = (message.partition(), message.offset())

    for i in range(MESSAGES):
        key, value, headers = expected_message(i, codec)
        while True:
            try:
                producer.produce(
                    topic,
                    key=key,
                    value=value,
                    headers=headers,
                    partition=i % PARTITIONS,
                    on_delivery=lambda error, message, seq=i: on_delivery(seq, error, message),
                )
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    left = producer.flush(60)
    equal(left, 0, "messages still queued after flush")
    check(not failures, f"delivery failures: {failures[:5]}")
    equal(len(delivered), MESSAGES, "delivery reports")
    return delivered


def check_offsets(delivered):
    """Each partition's offsets are 0..n-1 in produce order: no gaps, no duplicates."""
    by_partition = {p: [] for p in range(PARTITIONS)}
    for seq in sorted(delivered):
        partition, offset = delivered[seq]
        equal(partition, seq % PARTITIONS, f"partition of message {seq}")
        by_partition[partition].append(offset)
    for partition, offsets in by_partition.items():
        equal(offsets, list(range(len(offsets))), f"offsets of partition {partition} in produce order")
    return {p: len(o) for p, o in by_partition.items()}


def main():
    bootstrap, codec = sys.argv[1], sys.argv[2]
    idempotent = "--idempotent" in sys.argv[3:]
    topic = f"roundtrip-{codec}" + ("-idempotent" if idempotent else "")
    admin = AdminClient({"bootstrap.servers": bootstrap})
    created = admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    result(created[topic], f"creating {topic}")

    delivered = produce(bootstrap, topic, codec, idempotent)
    counts = check_offsets(delivered)

    consumer = reader(bootstrap, topic)
    got = read_partitions(consumer, topic, range(PARTITIONS))
    at = {p: 0 for p in range(PARTITIONS)}
    for seq in range(MESSAGES):
        partition, offset = delivered[seq]
        messages = got[partition]
        check(at[partition] < len(messages), f"message {seq} (partition {partition}, offset {offset}) was not read back")
        message = messages[at[partition]]
        at[partition] += 1
        equal(message.offset(), offset, f"offset of message {seq}")
        key, value, headers = expected_message(seq, codec)
        equal(message.key(), key, f"key at {partition}/{offset}")
        equal(message.value(), value, f"value at {partition}/{offset}")
        equal(message.headers(), headers, f"headers at {partition}/{offset}")
    for partition in range(PARTITIONS):
        equal(len(got[partition]), counts[partition], f"messages read from partition {partition}")
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        equal((low, high), (0, counts[partition]), f"watermarks of partition {partition}")

    # Seek back into the middle of partition 1 and read the same message again.
    middle = counts[1] // 2
    consumer.seek(TopicPartition(topic, 1, middle))
    deadline = Deadline(30, "reading after seek")
    while True:
        deadline.check()
        message = consumer.poll(0.5)
        if message is None or message.partition() != 1:
            continue
        if message.error():
            if message.error().code() == KafkaError._PARTITION_EOF:
                continue
            raise CheckFailed(f"consumer error after seek: {message.error()}")
        break
    equal(message.offset(), middle, "first offset after seek")
    seq = middle * PARTITIONS + 1
    equal(message.value(), expected_message(seq, codec)[1], "value after seek")
    consumer.close()
    mode = "idempotent" if idempotent else "plain"
    return f"{codec} ({mode}): produced and read back {MESSAGES} messages over {PARTITIONS} partitions, {counts}"


if __name__ == "__main__":
    run(main)
