"""confluent-kafka against a cluster of brokers: the client finds each partition's leader on
its own. Prints one JSON document; exits non-zero when anything fails.

Usage: cluster_client.py BOOTSTRAP COMMAND ARGS...
  create TOPIC PARTITIONS RF [KEY=VALUE...]   create a topic (configs optional)
  describe TOPIC                              brokers, controller, and per partition its
                                              leader, replicas and ISR
  configs TOPIC                               the topic's configs that are not defaults
  broker-configs BROKER                       the dynamic configs in force on broker BROKER
                                              (asked of that broker): {key: [value, source]}
  produce TOPIC N                             N keyed messages over every partition, acks=all
  send TOPIC PARTITION N ACKS                 N messages to one partition, no retries; prints
                                              how many got each error code (0: acknowledged)
  consume TOPIC [PARTITION]                   read every partition (or one) from the start to
                                              its end
  commit GROUP TOPIC OFFSET                   commit OFFSET for every partition of TOPIC
  committed GROUP TOPIC                       the committed offset of every partition
  elect TYPE TOPIC                            ElectLeaders (preferred or unclean) for every
                                              partition of TOPIC; the error name per partition"""

import json
import sys

from checks import CheckFailed, Deadline, check, read_partitions, reader, result, run
from confluent_kafka import Consumer, ElectionType, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewTopic,
    ResourceType,
)


def admin(bootstrap):
    return AdminClient({"bootstrap.servers": bootstrap})


def partitions_of(bootstrap, topic):
    metadata = admin(bootstrap).list_topics(topic=topic, timeout=10)
    described = metadata.topics.get(topic)
    check(described is not None and described.error is None, f"{topic} is not described")
    return sorted(described.partitions)


def create(bootstrap, topic, partitions, factor, *configs):
    pairs = dict(pair.split("=", 1) for pair in configs)
    new = NewTopic(topic, num_partitions=int(partitions), replication_factor=int(factor), config=pairs)
    client = admin(bootstrap)
    result(client.create_topics([new])[topic], f"creating {topic}")
    return {"created": topic}


def describe(bootstrap, topic):
    client = admin(bootstrap)
    metadata = client.list_topics(timeout=10)
    out = {
        "brokers": sorted(metadata.brokers),
        "controller": metadata.controller_id,
        "partitions": {},
    }
    described = metadata.topics.get(topic)
    if described is not None and described.error is None:
        for index, partition in sorted(described.partitions.items()):
            out["partitions"][str(index)] = {
                "leader": partition.leader,
                "replicas": list(partition.replicas),
                "isr": list(partition.isrs),
            }
    return out


def configs(bootstrap, topic):
    client = admin(bootstrap)
    resource = ConfigResource(ResourceType.TOPIC, topic)
    found = result(client.describe_configs([resource])[resource], f"configs of {topic}")
    return {name: entry.value for name, entry in found.items() if not entry.is_default}


def alter(bootstrap, topic, key, value):
    client = admin(bootstrap)
    entry = ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[entry])
    result(client.incremental_alter_configs([resource])[resource], f"alter {key} of {topic}")
    return {"altered": key}


def broker_configs(bootstrap, broker):
    client = admin(bootstrap)
    resource = ConfigResource(ResourceType.BROKER, broker)
    found = result(client.describe_configs([resource])[resource], f"configs of broker {broker!r}")
    dynamic = {"DYNAMIC_BROKER_CONFIG", "DYNAMIC_DEFAULT_BROKER_CONFIG"}
    sources = {name: ConfigSource(entry.source).name for name, entry in found.items()}
    return {name: [entry.value, sources[name]] for name, entry in found.items() if sources[name] in dynamic}


def produce(bootstrap, topic, count):
    count = int(count)
    partitions = partitions_of(bootstrap, topic)
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    failures = []
    delivered = {p: 0 for p in partitions}

    def done(error, message):
        if error is not None:
            failures.append(str(error))
        else:
            delivered[message.partition()] += 1

    for i in range(count):
        partition = partitions[i % len(partitions)]
        producer.produce(topic, key=f"k{i}", value=f"v{i}", partition=partition, on_delivery=done)
        producer.poll(0)
    left = producer.flush(60)
    check(left == 0, f"{left} messages not delivered within 60 s")
    check(not failures, f"delivery failures: {failures[:3]}")
    return {"delivered": sum(delivered.values()), "per_partition": delivered}


def send(bootstrap, topic, partition, count, acks):
    producer = Producer({
        "bootstrap.servers": bootstrap,
        "acks": acks,
        "retries": 0,
        "enable.idempotence": False,
        "linger.ms": 0,
        "message.timeout.ms": 30000,
    })
    outcomes = {}

    def done(error, _message):
        key = "0" if error is None else str(error.code())
        outcomes[key] = outcomes.get(key, 0) + 1

    for i in range(int(count)):
        producer.produce(topic, value=f"send-{acks}-{i}", partition=int(partition), on_delivery=done)
        producer.poll(0)
    left = producer.flush(60)
    check(left == 0, f"{left} messages not answered within 60 s")
    return {"outcomes": outcomes}


def consume(bootstrap, topic, only=None):
    partitions = partitions_of(bootstrap, topic) if only is None else [int(only)]
    consumer = reader(bootstrap, topic)
    got = read_partitions(consumer, topic, partitions)
    consumer.close()
    for p, messages in got.items():
        offsets = [m.offset() for m in messages]
        check(offsets == sorted(set(offsets)), f"partition {p}: an offset was read twice")
    read = sum(len(m) for m in got.values())
    return {"read": read, "per_partition": {p: len(m) for p, m in got.items()}}


def commit(bootstrap, group, topic, offset):
    partitions = partitions_of(bootstrap, topic)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    offsets = [TopicPartition(topic, p, int(offset)) for p in partitions]
    deadline = Deadline(60, f"committing for {group}")
    while True:
        try:
            consumer.commit(offsets=offsets, asynchronous=False)
            break
        except Exception as error:  # noqa: BLE001 - retried until the deadline
            deadline.check(f"(last error {error!r})")
    consumer.close()
    return {"committed": len(offsets)}


def committed(bootstrap, group, topic):
    partitions = partitions_of(bootstrap, topic)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    found = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=30)
    consumer.close()
    return {"offsets": {tp.partition: tp.offset for tp in found}}


def elect(bootstrap, kind, topic):
    partitions = [TopicPartition(topic, p) for p in partitions_of(bootstrap, topic)]
    election = {"preferred": ElectionType.PREFERRED, "unclean": ElectionType.UNCLEAN}[kind]
    client = admin(bootstrap)  # kept alive until the answer comes
    future = client.elect_leaders(election, partitions)
    try:
        outcome = future.result(timeout=30)
    except KafkaException as error:
        return {"error": error.args[0].name()}
    names = {}
    for tp, error in outcome.items():
        names[str(tp.partition)] = "NONE" if error is None else error.name()
    return {"partitions": names}


COMMANDS = {
    "create": create,
    "describe": describe,
    "configs": configs,
    "alter": alter,
    "broker-configs": broker_configs,
    "produce": produce,
    "send": send,
    "consume": consume,
    "commit": commit,
    "committed": committed,
    "elect": elect,
}


def main():
    bootstrap, command, *args = sys.argv[1:]
    if command not in COMMANDS:
        raise CheckFailed(f"unknown command {command}")
    return json.dumps(COMMANDS[command](bootstrap, *args), sort_keys=True)


if __name__ == "__main__":
    run(main)
