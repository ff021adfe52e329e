// kafkajs against the broker.
//
// Usage: node kafkajs_roundtrip.js BOOTSTRAP produce
//   Creates three topics with the admin client, produces MESSAGES keyed messages with headers
//   to each (plain, gzip, idempotent), checks the offsets the broker reports, and prints one
//   line per topic. The test reads the topics back with another client, because kafkajs
//   consumes only through a consumer group.
// Usage: node kafkajs_roundtrip.js BOOTSTRAP consume
//   Reads the plain topic back with a kafkajs consumer group (needs a group coordinator).
// Exits non-zero, with the reason on stderr, when anything differs.

'use strict';

const { Kafka, CompressionTypes, logLevel } = require('kafkajs');

const MESSAGES = 300;
const PARTITIONS = 3;
const TOPICS = [
  { name: 'kafkajs-plain', producer: {}, send: {} },
  { name: 'kafkajs-gzip', producer: {}, send: { compression: CompressionTypes.GZIP } },
  { name: 'kafkajs-idempotent', producer: { idempotent: true, maxInFlightRequests: 1 }, send: {} },
];

class CheckFailed extends Error {}

function equal(got, want, what) {
  const [g, w] = [JSON.stringify(got), JSON.stringify(want)];
  if (g !== w) throw new CheckFailed(`${what}: got ${g}, want ${w}`);
}

function message(topic, i) {
  return {
    partition: i % PARTITIONS,
    key: `key-${i}`,
    value: `${topic}-value-${i}-${'kafkajs'.repeat(i % 30)}`,
    headers: { seq: `${i}` },
  };
}

async function produce(kafka, admin) {
  await admin.createTopics({
    topics: TOPICS.map((t) => ({ topic: t.name, numPartitions: PARTITIONS, replicationFactor: 1 })),
    waitForLeaders: true,
  });
  const summary = [];
  for (const topic of TOPICS) {
    const producer = kafka.producer({ allowAutoTopicCreation: false, ...topic.producer });
    await producer.connect();
    const next = new Array(PARTITIONS).fill(0);
    // Three requests of 100 messages each, acks=all.
    for (let start = 0; start < MESSAGES; start += 100) {
      const messages = [];
      for (let i = start; i < start + 100; i++) messages.push(message(topic.name, i));
      const results = await producer.send({ topic: topic.name, acks: -1, messages, ...topic.send });
      for (const result of results) {
        equal(result.errorCode, 0, `error code for ${topic.name}-${result.partition}`);
        equal(Number(result.baseOffset), next[result.partition], `base offset of ${topic.name}-${result.partition}`);
        next[result.partition] += messages.filter((m) => m.partition === result.partition).length;
      }
    }
    await producer.disconnect();
    const offsets = await admin.fetchTopicOffsets(topic.name);
    offsets.sort((a, b) => a.partition - b.partition);
    equal(
      offsets.map((o) => [o.partition, Number(o.low), Number(o.high)]),
      next.map((n, p) => [p, 0, n]),
      `offsets of ${topic.name}`,
    );
    summary.push(`${topic.name}: ${MESSAGES} messages, ends ${JSON.stringify(next)}`);
  }
  const metadata = await admin.fetchTopicMetadata({ topics: TOPICS.map((t) => t.name) });
  for (const topic of metadata.topics) {
    equal(topic.partitions.length, PARTITIONS, `partitions of ${topic.name}`);
  }
  return summary.join('\n');
}

async function consume(kafka) {
  const topic = TOPICS[0].name;
  const consumer = kafka.consumer({ groupId: 'kafkajs-reader' });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const seen = [];
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new CheckFailed(`read ${seen.length} of ${MESSAGES} within 60 s`)), 60000);
    consumer.on(consumer.events.CRASH, (event) => {
      clearTimeout(timer);
      reject(new CheckFailed(`consumer crashed: ${event.payload.error.message}`));
    });
    consumer
      .run({
        eachMessage: async ({ partition, message: m }) => {
          const i = Number(m.headers.seq.toString());
          const want = message(topic, i);
          equal([partition, m.key.toString(), m.value.toString()], [want.partition, want.key, want.value], `message ${i}`);
          if (seen.includes(i)) {
            clearTimeout(timer);
            reject(new CheckFailed(`message ${i} read twice`));
            return;
          }
          seen.push(i);
          if (seen.length === MESSAGES) {
            clearTimeout(timer);
            resolve();
          }
        },
      })
      .catch(reject);
  });
  await consumer.disconnect();
  return `${topic}: consumer group read ${seen.length} messages`;
}

async function main() {
  const [bootstrap, mode] = process.argv.slice(2);
  const kafka = new Kafka({
    clientId: 'sluice-tests',
    brokers: [bootstrap],
    logLevel: logLevel.ERROR,
    retry: { retries: 3 },
  });
  if (mode === 'produce') {
    const admin = kafka.admin();
    await admin.connect();
    try {
      return await produce(kafka, admin);
    } finally {
      await admin.disconnect();
    }
  }
  if (mode === 'consume') return consume(kafka);
  throw new CheckFailed(`unknown mode ${mode}`);
}

main().then(
  (summary) => {
    console.log(summary);
    process.exit(0);
  },
  (error) => {
    console.error(`FAILED: ${error instanceof CheckFailed ? error.message : error.stack}`);
    process.exit(1);
  },
);
