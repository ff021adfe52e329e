import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;
import java.util.stream.Collectors;
import org.apache.kafka.clients.consumer.CloseOptions;
import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.WakeupException;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.serialization.StringDeserializer;

/**
 * A classic-protocol consumer group (group.protocol=classic) of MEMBERS consumers, one thread
 * each, reads TOPIC until N distinct records have been consumed in total, committing
 * synchronously after every poll. Members fetch nothing until every member owns a share of the
 * partitions, so the split is real: each member pauses what it is assigned until the group's
 * assignment covers every partition exactly once with no member left out. Fails on a record
 * consumed twice (by partition and offset, or by key), on a record that is not what
 * ProduceCommand sends, or at the deadline. Prints:
 *
 * <pre>
 * member M partitions=P,P,.. records=COUNT
 * partition P records=COUNT next=OFFSET
 * consumed N
 * </pre>
 *
 * where `partitions` is the member's assignment when the group finished and `next` the offset
 * committed for the partition.
 */
final class GroupCommand {
    /** How long one poll waits; short, so a member notices the end soon. */
    private static final Duration POLL = Duration.ofMillis(200);

    private final String topic;
    private final int total;
    private final int memberCount;
    private final AtomicInteger partitionCount = new AtomicInteger(-1);
    /** Each member's current assignment, as its rebalance callbacks report it. */
    private final Map<Integer, Set<Integer>> assignments = new HashMap<>();
    /** "partition/offset" and key of every record consumed, with the member that took it. */
    private final Map<String, Integer> byOffset = new ConcurrentHashMap<>();
    private final Map<String, Integer> byKey = new ConcurrentHashMap<>();
    private final Map<Integer, AtomicInteger> memberRecords = new ConcurrentHashMap<>();
    /** The offset committed last per partition. */
    private final Map<Integer, Long> committed = new ConcurrentHashMap<>();
    private final AtomicInteger consumed = new AtomicInteger();
    private final AtomicReference<Throwable> failure = new AtomicReference<>();
    /** Counts down once N records are consumed and committed, or on the first failure. */
    private final CountDownLatch finished = new CountDownLatch(1);
    private volatile boolean stopping;

    private GroupCommand(String topic, int total, int memberCount) {
        this.topic = topic;
        this.total = total;
        this.memberCount = memberCount;
        for (int member = 0; member < memberCount; member++) {
            memberRecords.put(member, new AtomicInteger());
        }
    }

    static void run(String bootstrap, String topic, String group, int total, int members) throws Exception {
        Harness.check(members > 0 && total > 0, "need members and records, got " + members + " and " + total);
        GroupCommand command = new GroupCommand(topic, total, members);
        List<Thread> threads = new ArrayList<>();
        List<KafkaConsumer<String, String>> consumers = new ArrayList<>();
        for (int member = 0; member < members; member++) {
            KafkaConsumer<String, String> consumer = new KafkaConsumer<>(config(bootstrap, group, member));
            consumers.add(consumer);
            int id = member;
            Thread thread = new Thread(() -> command.member(id, consumer), "member-" + member);
            threads.add(thread);
            thread.start();
        }
        boolean finished = command.finished.await(Harness.remaining().toMillis(), TimeUnit.MILLISECONDS);
        Map<Integer, Set<Integer>> assignments = command.snapshot();
        command.stopping = true;
        consumers.forEach(KafkaConsumer::wakeup);
        for (Thread thread : threads) {
            thread.join(Harness.atMost(Harness.CLOSE_TIMEOUT.multipliedBy(2)).toMillis());
        }
        Throwable failed = command.failure.get();
        if (failed instanceof Harness.Failure) {
            throw (Harness.Failure) failed;
        }
        Harness.check(failed == null, "a member failed: " + (failed == null ? "" : Harness.describe(failed)));
        Harness.check(finished, command.consumed.get() + " of " + total + " records consumed at the deadline; "
                + "assignments " + assignments + ", " + command.partitionCount.get() + " partitions");
        for (Thread thread : threads) {
            Harness.check(!thread.isAlive(), thread.getName() + " did not close in time");
        }
        command.print(assignments);
    }

    private static Properties config(String bootstrap, String group, int member) {
        Properties config = Harness.clientConfig(bootstrap, "java-member-" + member);
        config.put("group.protocol", "classic");
        config.put("group.id", group);
        config.put("auto.offset.reset", "earliest");
        config.put("enable.auto.commit", "false");
        config.put("key.deserializer", StringDeserializer.class.getName());
        config.put("value.deserializer", StringDeserializer.class.getName());
        // A member that leaves is noticed by its LeaveGroup; these bound a lost one.
        config.put("session.timeout.ms", "10000");
        config.put("heartbeat.interval.ms", "1000");
        return config;
    }

    /** One member's thread: poll, check, commit, until the group is done or fails. */
    private void member(int member, KafkaConsumer<String, String> consumer) {
        try {
            int partitions = consumer.partitionsFor(topic, Harness.atMost(Duration.ofSeconds(30))).size();
            partitionCount.compareAndSet(-1, partitions);
            consumer.subscribe(List.of(topic), listener(member, consumer));
            while (!stopping) {
                Harness.check(!Harness.deadlinePassed(), "member " + member + " still polling at the deadline");
                ConsumerRecords<String, String> records = consumer.poll(POLL);
                if (groupSplit()) {
                    consumer.resume(consumer.paused());
                } else {
                    consumer.pause(consumer.assignment());
                }
                // Records a poll returned are this member's to process even if the group has
                // just started to rebalance; pausing only stops the next fetch.
                if (!records.isEmpty()) {
                    process(member, consumer, records);
                }
            }
        } catch (WakeupException e) {
            if (!stopping) {
                fail(e);
            }
        } catch (Throwable e) {
            fail(e);
        } finally {
            consumer.close(CloseOptions.timeout(Harness.CLOSE_TIMEOUT));
        }
    }

    private void process(int member, KafkaConsumer<String, String> consumer, ConsumerRecords<String, String> records)
            throws Harness.Failure {
        Map<TopicPartition, OffsetAndMetadata> next = new HashMap<>();
        for (ConsumerRecord<String, String> record : records) {
            check(member, record);
            TopicPartition partition = new TopicPartition(record.topic(), record.partition());
            next.put(partition, new OffsetAndMetadata(record.offset() + 1));
        }
        consumer.commitSync(next, Harness.atMost(Duration.ofSeconds(15)));
        next.forEach((partition, offset) -> committed.merge(partition.partition(), offset.offset(), Math::max));
        memberRecords.get(member).addAndGet(records.count());
        if (consumed.addAndGet(records.count()) >= total) {
            finished.countDown();
        }
    }

    /** A record must be one ProduceCommand sent, and nobody may have consumed it before. */
    private void check(int member, ConsumerRecord<String, String> record) throws Harness.Failure {
        String where = record.partition() + "/" + record.offset();
        Integer before = byOffset.putIfAbsent(where, member);
        Harness.check(before == null, "member " + member + " consumed " + where + " which member " + before
                + " consumed already");
        String key = record.key();
        before = byKey.putIfAbsent(String.valueOf(key), member);
        Harness.check(before == null, "member " + member + " consumed key " + key + " at " + where
                + " which member " + before + " consumed already");
        Header seq = record.headers().lastHeader("seq");
        Harness.check(key != null && key.startsWith("key-") && seq != null, "record at " + where + " has key "
                + key + " and header " + seq);
        int i = Integer.parseInt(key.substring("key-".length()));
        String header = new String(seq.value(), StandardCharsets.UTF_8);
        Harness.check(header.equals(Integer.toString(i)) && ProduceCommand.value(i).equals(record.value()),
                "record at " + where + " with key " + key + " has header seq=" + header + " and value "
                        + record.value());
    }

    private ConsumerRebalanceListener listener(int member, KafkaConsumer<String, String> consumer) {
        return new ConsumerRebalanceListener() {
            @Override
            public void onPartitionsRevoked(Collection<TopicPartition> partitions) {
                update(member, partitions, false);
            }

            @Override
            public void onPartitionsLost(Collection<TopicPartition> partitions) {
                update(member, partitions, false);
            }

            @Override
            public void onPartitionsAssigned(Collection<TopicPartition> partitions) {
                // Fetch nothing until the whole group has its shares (see groupSplit).
                consumer.pause(partitions);
                update(member, partitions, true);
            }
        };
    }

    private void update(int member, Collection<TopicPartition> partitions, boolean assigned) {
        synchronized (assignments) {
            Set<Integer> owned = assignments.computeIfAbsent(member, m -> new TreeSet<>());
            for (TopicPartition partition : partitions) {
                if (assigned) {
                    owned.add(partition.partition());
                } else {
                    owned.remove(partition.partition());
                }
            }
        }
    }

    /** Whether every member owns some partitions and every partition has exactly one owner. */
    private boolean groupSplit() {
        int partitions = partitionCount.get();
        synchronized (assignments) {
            Set<Integer> union = new TreeSet<>();
            int owned = 0;
            for (int member = 0; member < memberCount; member++) {
                Set<Integer> mine = assignments.getOrDefault(member, Set.of());
                if (mine.isEmpty()) {
                    return false;
                }
                union.addAll(mine);
                owned += mine.size();
            }
            return owned == partitions && union.size() == partitions;
        }
    }

    private Map<Integer, Set<Integer>> snapshot() {
        synchronized (assignments) {
            Map<Integer, Set<Integer>> copy = new TreeMap<>();
            assignments.forEach((member, owned) -> copy.put(member, new TreeSet<>(owned)));
            return copy;
        }
    }

    private void fail(Throwable error) {
        failure.compareAndSet(null, error);
        finished.countDown();
    }

    private void print(Map<Integer, Set<Integer>> assignments) {
        for (int member = 0; member < memberCount; member++) {
            String owned = assignments.getOrDefault(member, Set.of()).stream()
                    .map(String::valueOf)
                    .collect(Collectors.joining(","));
            System.out.println("member " + member + " partitions=" + owned + " records="
                    + memberRecords.get(member).get());
        }
        Map<Integer, Integer> perPartition = new TreeMap<>();
        byOffset.keySet().forEach(where -> perPartition.merge(Integer.parseInt(where.split("/")[0]), 1, Integer::sum));
        perPartition.forEach((partition, records) -> System.out.println("partition " + partition + " records="
                + records + " next=" + committed.get(partition)));
        System.out.println("consumed " + consumed.get());
    }
}
