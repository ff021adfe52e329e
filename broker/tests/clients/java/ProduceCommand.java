import java.nio.charset.StandardCharsets;
import java.util.Map;
import java.util.Properties;
import java.util.TreeMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * An idempotent producer with the client's defaults (acks=all, enable.idempotence=true) and
 * the given compression sends N keyed records with a header, and waits for every ack. Record
 * `i` has key `key-i`, value {@link #value(int)} and header `seq=i`; the partitioner picks
 * its partition from the key. Prints, once every ack is in:
 *
 * <pre>
 * partition P acked=COUNT
 * acked N
 * </pre>
 *
 * The acks of each partition must carry the offsets 0..COUNT-1, each once (a fresh topic).
 */
final class ProduceCommand {
    private ProduceCommand() {}

    /** Record `i`'s value: repetitive, so that every codec has something to squeeze. */
    static String value(int i) {
        return "value-" + i + "-" + "java".repeat(i % 40);
    }

    static void run(String bootstrap, String topic, int count, String compression) throws Exception {
        Properties config = Harness.clientConfig(bootstrap, "java-producer");
        config.put("compression.type", compression);
        config.put("key.serializer", StringSerializer.class.getName());
        config.put("value.serializer", StringSerializer.class.getName());
        // send() blocks for metadata at most this long; delivery gives up on a record after
        // delivery.timeout.ms. Both fit well inside the run's deadline.
        config.put("max.block.ms", "20000");
        config.put("delivery.timeout.ms", "40000");
        KafkaProducer<String, String> producer = new KafkaProducer<>(config);
        CountDownLatch answered = new CountDownLatch(count);
        AtomicReference<Exception> failed = new AtomicReference<>();
        // offsets.get(partition)[offset] counts the acks of that offset.
        Map<Integer, int[]> offsets = new TreeMap<>();
        try {
            for (int i = 0; i < count; i++) {
                // A send that fails (no metadata within max.block.ms) fails the run; the rest
                // would each wait as long.
                Harness.check(failed.get() == null, "a send failed: " + describe(failed.get()));
                ProducerRecord<String, String> record = new ProducerRecord<>(topic, "key-" + i, value(i));
                record.headers().add("seq", Integer.toString(i).getBytes(StandardCharsets.UTF_8));
                producer.send(record, (metadata, error) -> {
                    if (error != null) {
                        failed.compareAndSet(null, error);
                    } else {
                        acked(offsets, metadata, count);
                    }
                    answered.countDown();
                });
            }
            boolean done = answered.await(Harness.remaining().toMillis(), TimeUnit.MILLISECONDS);
            Harness.check(done, answered.getCount() + " of " + count + " records unanswered at the deadline");
            Harness.check(failed.get() == null, "a send failed: " + describe(failed.get()));
        } finally {
            producer.close(Harness.CLOSE_TIMEOUT);
        }
        int total = 0;
        synchronized (offsets) {
            for (Map.Entry<Integer, int[]> partition : offsets.entrySet()) {
                int acked = checkOffsets(partition.getKey(), partition.getValue());
                System.out.println("partition " + partition.getKey() + " acked=" + acked);
                total += acked;
            }
        }
        Harness.check(total == count, total + " acks for " + count + " records");
        System.out.println("acked " + total);
    }

    private static void acked(Map<Integer, int[]> offsets, RecordMetadata metadata, int count) {
        synchronized (offsets) {
            int[] seen = offsets.computeIfAbsent(metadata.partition(), p -> new int[count]);
            long offset = metadata.offset();
            if (offset >= 0 && offset < count) {
                seen[(int) offset]++;
            } else {
                // Out of range for a fresh topic: make checkOffsets fail on it.
                seen[0] += count + 1;
            }
        }
    }

    /** The number of acks of `partition`, which must be offsets 0..n-1 once each. */
    private static int checkOffsets(int partition, int[] seen) throws Harness.Failure {
        int acked = 0;
        while (acked < seen.length && seen[acked] == 1) {
            acked++;
        }
        for (int offset = 0; offset < seen.length; offset++) {
            boolean expected = offset < acked ? seen[offset] == 1 : seen[offset] == 0;
            Harness.check(expected, "partition " + partition + " offset " + offset + " acked " + seen[offset]
                    + " times (acks run 0.." + acked + ")");
        }
        return acked;
    }

    private static String describe(Exception error) {
        return error == null ? "none" : Harness.describe(error);
    }
}
