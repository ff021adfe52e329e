"""confluent-kafka's AdminClient against the broker, one area per run.

Usage: confluent_admin.py BOOTSTRAP AREA
AREA is one of:
  topics          create (with a config), create again, invalid names, list, delete
  partitions      grow a topic, refuse to shrink it, produce to the new partitions
  offsets         list offsets: earliest, latest, by timestamp, max timestamp
  offsets-in-batch
                  list offsets by timestamp for a record inside a batch of several
  delete-records  delete records, then earliest offset and consumers start at the new start
  configs         describe and incrementally alter topic configs, describe broker configs
Exits non-zero when anything differs."""

import sys
import time

from checks import CheckFailed, Deadline, check, equal, error_code, read_partitions, reader, result, run
from confluent_kafka import KafkaError, Producer, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
    OffsetSpec,
    ResourceType,
)


def topic_partitions(admin, topic):
    """The partition count Metadata reports for `topic`, or None when it is not listed."""
    metadata = admin.list_topics(timeout=10)
    described = metadata.topics.get(topic)
    if described is None or described.error is not None:
        return None
    return len(described.partitions)


def wait_for_partitions(admin, topic, count, what):
    deadline = Deadline(20, what)
    while topic_partitions(admin, topic) != count:
        deadline.check(f"(Metadata says {topic_partitions(admin, topic)})")
        time.sleep(0.2)


def produce(bootstrap, topic, records, **extra):
    """Produces (partition, value, timestamp) records; returns their (partition, offset)s."""
    config = {"bootstrap.servers": bootstrap, "acks": "all"}
    config.update(extra)
    producer = Producer(config)
    delivered = [None] * len(records)
    failures = []

    def report(index, error, message):
        if error is not None:
            failures.append(f"record {index}: {error}")
        else:
            delivered[index] = (message.partition(), message.offset())

    for index, (partition, value, timestamp) in enumerate(records):
        producer.produce(
            topic,
            value=value,
            partition=partition,
            # 0 lets the producer stamp the record with the current time.
            timestamp=timestamp or 0,
            on_delivery=lambda error, message, index=index: report(index, error, message),
        )
    equal(producer.flush(30), 0, "messages left after flush")
    check(not failures, f"delivery failures: {failures}")
    return delivered


def list_offsets(admin, topic, partition, spec, what):
    tp = TopicPartition(topic, partition)
    futures = admin.list_offsets({tp: spec}, request_timeout=10)
    info = result(futures[tp], f"list offsets {what}")
    return info.offset, info.timestamp


def area_topics(bootstrap):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    created = admin.create_topics(
        [
            NewTopic("admin-topics-a", 2, 1, config={"retention.ms": "3600000"}),
            NewTopic("admin-topics-b", 1, 1),
        ],
        request_timeout=10,
    )
    for name, future in created.items():
        result(future, f"creating {name}")
    equal(topic_partitions(admin, "admin-topics-a"), 2, "partitions of admin-topics-a")
    equal(topic_partitions(admin, "admin-topics-b"), 1, "partitions of admin-topics-b")

    again = admin.create_topics([NewTopic("admin-topics-a", 2, 1)], request_timeout=10)
    equal(error_code(again["admin-topics-a"]), KafkaError.TOPIC_ALREADY_EXISTS, "creating a topic twice")
    for bad in ["bad/name", "..", "x" * 250]:
        refused = admin.create_topics([NewTopic(bad, 1, 1)], request_timeout=10)
        equal(error_code(refused[bad]), KafkaError.TOPIC_EXCEPTION, f"creating {bad[:20]!r}")
    zero = admin.create_topics([NewTopic("admin-topics-zero", 0, 1)], request_timeout=10)
    equal(error_code(zero["admin-topics-zero"]), KafkaError.INVALID_PARTITIONS, "creating 0 partitions")
    three = admin.create_topics([NewTopic("admin-topics-rf3", 1, 3)], request_timeout=10)
    equal(
        error_code(three["admin-topics-rf3"]),
        KafkaError.INVALID_REPLICATION_FACTOR,
        "replication factor 3 on one broker",
    )
    validate = admin.create_topics([NewTopic("admin-topics-dry", 1, 1)], validate_only=True, request_timeout=10)
    result(validate["admin-topics-dry"], "validate-only create")
    equal(topic_partitions(admin, "admin-topics-dry"), None, "a validate-only topic is not created")

    produce(bootstrap, "admin-topics-a", [(0, b"before delete", None)])
    deleted = admin.delete_topics(["admin-topics-a", "admin-topics-b"], request_timeout=10)
    for name, future in deleted.items():
        result(future, f"deleting {name}")
    deadline = Deadline(20, "deleted topics leaving Metadata")
    while topic_partitions(admin, "admin-topics-a") is not None or topic_partitions(admin, "admin-topics-b") is not None:
        deadline.check()
        time.sleep(0.2)
    missing = admin.delete_topics(["admin-topics-a"], request_timeout=10)
    equal(
        error_code(missing["admin-topics-a"]),
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        "deleting a topic that is gone",
    )
    # A topic created again under the same name starts empty.
    recreated = admin.create_topics([NewTopic("admin-topics-a", 1, 1)], request_timeout=10)
    result(recreated["admin-topics-a"], "creating admin-topics-a again")
    equal(
        list_offsets(admin, "admin-topics-a", 0, OffsetSpec.latest(), "latest of the recreated topic")[0],
        0,
        "end offset of a recreated topic",
    )
    return "topics: create, duplicate, invalid names, 0 partitions, rf 3, validate-only, delete, recreate"


def area_partitions(bootstrap):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    result(admin.create_topics([NewTopic("admin-grow", 2, 1)])["admin-grow"], "creating admin-grow")
    grown = admin.create_partitions([NewPartitions("admin-grow", 5)], request_timeout=10)
    result(grown["admin-grow"], "growing admin-grow to 5 partitions")
    wait_for_partitions(admin, "admin-grow", 5, "Metadata showing 5 partitions")
    shrink = admin.create_partitions([NewPartitions("admin-grow", 3)], request_timeout=10)
    equal(error_code(shrink["admin-grow"]), KafkaError.INVALID_PARTITIONS, "shrinking a topic")
    same = admin.create_partitions([NewPartitions("admin-grow", 5)], request_timeout=10)
    equal(error_code(same["admin-grow"]), KafkaError.INVALID_PARTITIONS, "growing to the same count")
    unknown = admin.create_partitions([NewPartitions("admin-no-such-topic", 2)], request_timeout=10)
    equal(
        error_code(unknown["admin-no-such-topic"]),
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        "growing a topic that does not exist",
    )
    records = [(p, f"to partition {p}".encode(), None) for p in range(5)]
    delivered = produce(bootstrap, "admin-grow", records)
    equal(delivered, [(p, 0) for p in range(5)], "offsets in the old and new partitions")
    consumer = reader(bootstrap, "admin-grow")
    got = read_partitions(consumer, "admin-grow", range(5))
    consumer.close()
    for p in range(5):
        equal([m.value() for m in got[p]], [f"to partition {p}".encode()], f"partition {p}")
    return "partitions: grown 2 -> 5, shrink and no-op refused, new partitions take data"


def area_offsets(bootstrap):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topic = "admin-offsets"
    result(admin.create_topics([NewTopic(topic, 1, 1)])[topic], f"creating {topic}")
    empty = list_offsets(admin, topic, 0, OffsetSpec.latest(), "latest of an empty partition")
    equal(empty[0], 0, "latest offset of an empty partition")
    base = int(time.time() * 1000) - 100_000
    # One record per batch (linger 0, one in flight), timestamps one second apart.
    stamps = [base + i * 1000 for i in range(10)]
    producer_config = {"linger.ms": 0, "max.in.flight.requests.per.connection": 1}
    for i, stamp in enumerate(stamps):
        produce(bootstrap, topic, [(0, f"record {i}".encode(), stamp)], **producer_config)
    equal(list_offsets(admin, topic, 0, OffsetSpec.earliest(), "earliest")[0], 0, "earliest offset")
    equal(list_offsets(admin, topic, 0, OffsetSpec.latest(), "latest")[0], 10, "latest offset")
    for target, want in [(base - 5000, 0), (base, 0), (base + 3500, 4), (base + 9000, 9)]:
        got = list_offsets(admin, topic, 0, OffsetSpec.for_timestamp(target), f"for timestamp {target}")
        equal(got, (want, stamps[want]), f"offset and timestamp for timestamp base{target - base:+}")
    after = list_offsets(admin, topic, 0, OffsetSpec.for_timestamp(base + 60_000), "after the last record")
    equal(after[0], -1, "offset for a timestamp after every record")
    newest = list_offsets(admin, topic, 0, OffsetSpec.max_timestamp(), "max timestamp")
    equal(newest, (9, stamps[9]), "offset and timestamp of the max timestamp")
    return "offsets: earliest, latest, 4 timestamps, beyond the end, max timestamp"


def area_offsets_in_batch(bootstrap):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topic = "admin-offsets-batch"
    result(admin.create_topics([NewTopic(topic, 1, 1)])[topic], f"creating {topic}")
    base = int(time.time() * 1000) - 100_000
    stamps = [base + i * 1000 for i in range(10)]
    # All ten records go out in one batch (a long linger, flushed at the end).
    produce(
        bootstrap,
        topic,
        [(0, f"record {i}".encode(), stamp) for i, stamp in enumerate(stamps)],
        **{"linger.ms": 1000, "batch.num.messages": 100},
    )
    consumer = reader(bootstrap, topic)
    got = read_partitions(consumer, topic, [0])[0]
    consumer.close()
    equal([m.timestamp()[1] for m in got], stamps, "timestamps read back")
    # Kafka answers with the first record whose timestamp is at or after the target, even when
    # it sits inside a batch.
    got = list_offsets(admin, topic, 0, OffsetSpec.for_timestamp(base + 3500), "inside a batch")
    equal(got, (4, stamps[4]), "offset and timestamp for a timestamp inside a batch")
    newest = list_offsets(admin, topic, 0, OffsetSpec.max_timestamp(), "max timestamp in a batch")
    equal(newest, (9, stamps[9]), "offset and timestamp of the max timestamp inside a batch")
    return "offsets-in-batch: by timestamp and max timestamp resolve to the record"


def area_delete_records(bootstrap):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topic = "admin-delete-records"
    result(admin.create_topics([NewTopic(topic, 2, 1)])[topic], f"creating {topic}")
    produce(bootstrap, topic, [(i % 2, f"record {i}".encode(), None) for i in range(20)])
    tp0 = TopicPartition(topic, 0, 4)
    deleted = admin.delete_records([tp0], request_timeout=10)
    info = result(deleted[tp0], "deleting records before offset 4 of partition 0")
    equal(info.low_watermark, 4, "low watermark after delete")
    equal(list_offsets(admin, topic, 0, OffsetSpec.earliest(), "earliest after delete")[0], 4, "earliest offset")
    equal(list_offsets(admin, topic, 1, OffsetSpec.earliest(), "earliest of partition 1")[0], 0, "partition 1 untouched")
    # Deleting up to the end (offset -1 means the high watermark).
    tp1 = TopicPartition(topic, 1, -1)
    info = result(admin.delete_records([tp1], request_timeout=10)[tp1], "deleting all of partition 1")
    equal(info.low_watermark, 10, "low watermark after deleting everything")
    # Past the end is refused.
    beyond = TopicPartition(topic, 0, 11)
    equal(
        error_code(admin.delete_records([beyond], request_timeout=10)[beyond]),
        KafkaError.OFFSET_OUT_OF_RANGE,
        "deleting past the end",
    )
    consumer = reader(bootstrap, topic)
    got = read_partitions(consumer, topic, [0, 1])
    equal([m.offset() for m in got[0]], list(range(4, 10)), "offsets left in partition 0")
    equal([m.value() for m in got[0]], [f"record {2 * i}".encode() for i in range(4, 10)], "values left")
    equal(got[1], [], "partition 1 after deleting everything")
    low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    equal((low, high), (4, 10), "watermarks of partition 0")
    consumer.close()
    return "delete-records: low watermark moves, earliest follows, consumers start there"


def area_configs(bootstrap):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topic = "admin-configs"
    created = admin.create_topics([NewTopic(topic, 1, 1, config={"retention.ms": "3600000"})])
    result(created[topic], f"creating {topic}")
    resource = ConfigResource(ResourceType.TOPIC, topic)

    def describe():
        return result(admin.describe_configs([resource], request_timeout=10)[resource], "describing topic configs")

    configs = describe()
    equal(configs["retention.ms"].value, "3600000", "retention.ms set at creation")
    check("segment.bytes" in configs, f"segment.bytes described: {sorted(configs)}")
    check(configs["segment.bytes"].is_default, "segment.bytes is a default")
    alter = ConfigResource(
        ResourceType.TOPIC,
        topic,
        incremental_configs=[
            ConfigEntry("retention.ms", "7200000", incremental_operation=AlterConfigOpType.SET),
            ConfigEntry("segment.bytes", "1048576", incremental_operation=AlterConfigOpType.SET),
        ],
    )
    result(admin.incremental_alter_configs([alter], request_timeout=10)[alter], "incremental alter")
    configs = describe()
    equal(configs["retention.ms"].value, "7200000", "retention.ms after alter")
    equal(configs["segment.bytes"].value, "1048576", "segment.bytes after alter")
    bad = ConfigResource(
        ResourceType.TOPIC,
        topic,
        incremental_configs=[ConfigEntry("retention.ms", "soon", incremental_operation=AlterConfigOpType.SET)],
    )
    equal(
        error_code(admin.incremental_alter_configs([bad], request_timeout=10)[bad]),
        KafkaError.INVALID_CONFIG,
        "a non-numeric retention.ms",
    )
    equal(describe()["retention.ms"].value, "7200000", "retention.ms after a refused alter")
    # message.format.version (deprecated in Kafka 3, removed in 4) is accepted and ignored.
    old_format = ConfigResource(
        ResourceType.TOPIC,
        topic,
        incremental_configs=[
            ConfigEntry("message.format.version", "0.10.0", incremental_operation=AlterConfigOpType.SET)
        ],
    )
    result(admin.incremental_alter_configs([old_format], request_timeout=10)[old_format], "message.format.version alter")
    legacy = "admin-configs-format"
    created = admin.create_topics([NewTopic(legacy, 1, 1, config={"message.format.version": "2.8-IV1"})])
    result(created[legacy], f"creating {legacy} with message.format.version")
    configs = describe()
    check("message.format.version" not in configs, "message.format.version is not kept")
    equal(configs["retention.ms"].value, "7200000", "retention.ms after message.format.version")
    broker = ConfigResource(ResourceType.BROKER, "0")
    broker_configs = result(admin.describe_configs([broker], request_timeout=10)[broker], "describing the broker")
    check("log.segment.bytes" in broker_configs, f"broker configs: {sorted(broker_configs)[:10]}")
    return "configs: describe, incremental alter, invalid value refused, message.format.version ignored, broker described"


AREAS = {
    "topics": area_topics,
    "partitions": area_partitions,
    "offsets": area_offsets,
    "offsets-in-batch": area_offsets_in_batch,
    "delete-records": area_delete_records,
    "configs": area_configs,
}


def main():
    bootstrap, area = sys.argv[1], sys.argv[2]
    if area not in AREAS:
        raise CheckFailed(f"unknown area {area!r}; known: {sorted(AREAS)}")
    return AREAS[area](bootstrap)


if __name__ == "__main__":
    run(main)
