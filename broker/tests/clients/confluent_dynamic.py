"""confluent-kafka's AdminClient changes broker configs while the broker runs.

Usage: confluent_dynamic.py BOOTSTRAP STEP
STEP is one of:
  lower-retention  incremental alter of log.retention.ms on broker 0; a read-only config and
                   a value that is no number are refused
  after-restart    the change is still described as a dynamic broker config, and topics that
                   inherit it say so
  topic-override   a topic's own retention.ms is described as DYNAMIC_TOPIC_CONFIG, values it
                   inherits name the broker layer they come from, and the legacy (whole
                   resource) alter_configs sets a dynamic broker config
Exits non-zero when anything differs."""

import sys

from checks import CheckFailed, check, equal, error_code, result, run
from confluent_kafka import KafkaError
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    ResourceType,
)

BROKER = ConfigResource(ResourceType.BROKER, "0")


def describe(admin, resource):
    futures = admin.describe_configs([resource], request_timeout=10)
    return result(futures[resource], f"describing {resource}")


def alter(admin, name, pairs):
    ops = [ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in pairs]
    resource = ConfigResource(ResourceType.BROKER, name, incremental_configs=ops)
    return admin.incremental_alter_configs([resource], request_timeout=10)[resource]


def step_lower_retention(bootstrap):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    before = describe(admin, BROKER)["log.retention.ms"]
    equal(before.value, "604800000", "log.retention.ms before the change")
    equal(before.source, ConfigSource.DEFAULT_CONFIG.value, "source before the change")
    check(not before.is_read_only, "log.retention.ms is dynamic, so not read-only")
    check(describe(admin, BROKER)["log.dirs"].is_read_only, "log.dirs is read-only")

    refused = alter(admin, "0", [("log.dirs", "/elsewhere")])
    equal(error_code(refused), KafkaError.INVALID_REQUEST, "altering read-only log.dirs")
    refused = alter(admin, "0", [("log.retention.ms", "soon")])
    equal(error_code(refused), KafkaError.INVALID_REQUEST, "a log.retention.ms that is no number")

    result(alter(admin, "0", [("log.retention.ms", "1")]), "lowering log.retention.ms")
    after = describe(admin, BROKER)["log.retention.ms"]
    equal(after.value, "1", "log.retention.ms after the change")
    equal(after.source, ConfigSource.DYNAMIC_BROKER_CONFIG.value, "source after the change")
    return "lower-retention: read-only and bad value refused; log.retention.ms=1"


def step_after_restart(bootstrap):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    entry = describe(admin, BROKER)["log.retention.ms"]
    equal(entry.value, "1", "log.retention.ms after a restart")
    equal(entry.source, ConfigSource.DYNAMIC_BROKER_CONFIG.value, "source after a restart")
    inherited = describe(admin, ConfigResource(ResourceType.TOPIC, "aging"))["retention.ms"]
    equal(inherited.value, "1", "retention.ms a topic inherits")
    equal(inherited.source, ConfigSource.DYNAMIC_BROKER_CONFIG.value, "source of an inherited value")
    return "after-restart: log.retention.ms=1 from DYNAMIC_BROKER_CONFIG, inherited by the topic"


def step_topic_override(bootstrap):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    # The legacy AlterConfigs replaces broker 0's dynamic layer with exactly these entries.
    replaced = ConfigResource(ResourceType.BROKER, "0", set_config={"message.max.bytes": "2000000"})
    result(admin.alter_configs([replaced], request_timeout=10)[replaced], "alter_configs on broker 0")
    entry = describe(admin, BROKER)["message.max.bytes"]
    equal(entry.value, "2000000", "message.max.bytes set with alter_configs")
    equal(entry.source, ConfigSource.DYNAMIC_BROKER_CONFIG.value, "source of message.max.bytes")

    topic = ConfigResource(ResourceType.TOPIC, "layered")
    ops = [ConfigEntry("retention.ms", "60000", incremental_operation=AlterConfigOpType.SET)]
    own = ConfigResource(ResourceType.TOPIC, "layered", incremental_configs=ops)
    result(admin.incremental_alter_configs([own], request_timeout=10)[own], "setting retention.ms")
    configs = describe(admin, topic)
    expected = {
        "retention.ms": ("60000", ConfigSource.DYNAMIC_TOPIC_CONFIG),
        "retention.bytes": ("4194304", ConfigSource.STATIC_BROKER_CONFIG),
        "max.message.bytes": ("2000000", ConfigSource.DYNAMIC_BROKER_CONFIG),
        "segment.bytes": ("1073741824", ConfigSource.DEFAULT_CONFIG),
    }
    for name, (value, source) in expected.items():
        equal(configs[name].value, value, f"{name} of the topic")
        equal(configs[name].source, source.value, f"source of the topic's {name}")
    return "topic-override: TOPIC, DYNAMIC_BROKER, STATIC and DEFAULT sources as Kafka names them"


STEPS = {
    "lower-retention": step_lower_retention,
    "after-restart": step_after_restart,
    "topic-override": step_topic_override,
}


def main():
    bootstrap, step = sys.argv[1], sys.argv[2]
    if step not in STEPS:
        raise CheckFailed(f"unknown step {step!r}; known: {sorted(STEPS)}")
    return STEPS[step](bootstrap)


if __name__ == "__main__":
    run(main)
