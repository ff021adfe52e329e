"""Helpers the group tests run to completion: create a topic and produce numbered messages, or
read a group's committed offsets and state.

Usage: group_tools.py BOOTSTRAP produce TOPIC PARTITIONS FIRST COUNT
         creates TOPIC if needed, sends values FIRST..FIRST+COUNT-1, value i to partition
         i % PARTITIONS, and prints "produced COUNT"
       group_tools.py BOOTSTRAP offsets GROUP TOPIC PARTITIONS
         prints "committed P:OFFSET ..." (-1 for none) and "state STATE PROTOCOL_TYPE"
Exits non-zero, with the reason on stderr, when anything fails."""

import sys

from checks import CheckFailed, check, result, run
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def produce(bootstrap, topic, partitions, first, count):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    if topic not in admin.list_topics(timeout=30).topics:
        futures = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
        result(futures[topic], f"creating {topic}")
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all"})
    failures = []

    def delivered(error, _message):
        if error is not None:
            failures.append(str(error))

    for i in range(first, first + count):
        producer.produce(topic, value=str(i).encode(), partition=i % partitions, on_delivery=delivered)
        producer.poll(0)
    left = producer.flush(30)
    check(left == 0 and not failures, f"{left} undelivered, failures {failures[:3]}")
    return f"produced {count}"


def offsets(bootstrap, group, topic, partitions):
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    wanted = [TopicPartition(topic, p) for p in range(partitions)]
    committed = consumer.committed(wanted, timeout=30)
    consumer.close()
    line = "committed " + " ".join(f"{tp.partition}:{tp.offset}" for tp in committed)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    described = result(admin.describe_consumer_groups([group])[group], f"describing {group}")
    state = str(described.state).split(".")[-1]
    return f"{line}\nstate {state} {'simple' if described.is_simple_consumer_group else 'consumer'}"


def main():
    bootstrap, mode, *rest = sys.argv[1:]
    if mode == "produce":
        topic, partitions, first, count = rest[0], int(rest[1]), int(rest[2]), int(rest[3])
        return produce(bootstrap, topic, partitions, first, count)
    if mode == "offsets":
        return offsets(bootstrap, rest[0], rest[1], int(rest[2]))
    raise CheckFailed(f"unknown mode {mode}")


if __name__ == "__main__":
    run(main)
