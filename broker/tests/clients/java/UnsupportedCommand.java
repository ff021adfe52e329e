import java.time.Duration;
import java.util.List;
import java.util.Properties;
import org.apache.kafka.clients.consumer.CloseOptions;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * Features the broker does not offer must fail fast, with an exception, never hang: a consumer
 * of the KIP-848 group protocol (group.protocol=consumer), whose ConsumerGroupHeartbeat the
 * broker does not serve, and a transactional producer, whose coordinator the broker cannot
 * find. Prints what each failed with and after how long:
 *
 * <pre>
 * consumer-protocol failed ms=MS EXCEPTION: MESSAGE
 * transactions failed ms=MS EXCEPTION: MESSAGE
 * </pre>
 */
final class UnsupportedCommand {
    /** How long each client may take to fail before the harness calls it a hang. */
    static final Duration FAIL_TIMEOUT = Duration.ofSeconds(20);

    /** How long initTransactions may block; it must fail within this. */
    static final Duration TRANSACTIONS_BLOCK_TIMEOUT = Duration.ofSeconds(5);

    private UnsupportedCommand() {}

    static void run(String bootstrap, String topic) throws Exception {
        consumerProtocol(bootstrap, topic);
        transactions(bootstrap);
    }

    private static void consumerProtocol(String bootstrap, String topic) throws Exception {
        Properties config = Harness.clientConfig(bootstrap, "java-kip848");
        config.put("group.protocol", "consumer");
        config.put("group.id", "java-kip848");
        config.put("key.deserializer", StringDeserializer.class.getName());
        config.put("value.deserializer", StringDeserializer.class.getName());
        KafkaConsumer<String, String> consumer = new KafkaConsumer<>(config);
        long start = System.nanoTime();
        Duration limit = Harness.atMost(FAIL_TIMEOUT);
        try {
            consumer.subscribe(List.of(topic));
            while (true) {
                Duration waited = Duration.ofNanos(System.nanoTime() - start);
                Harness.check(waited.compareTo(limit) < 0,
                        "a group.protocol=consumer consumer polled for " + waited + " without an error");
                try {
                    consumer.poll(Duration.ofMillis(200));
                } catch (KafkaException e) {
                    report("consumer-protocol", start, e);
                    return;
                }
            }
        } finally {
            consumer.close(CloseOptions.timeout(Harness.CLOSE_TIMEOUT));
        }
    }

    private static void transactions(String bootstrap) throws Exception {
        Properties config = Harness.clientConfig(bootstrap, "java-transactional");
        config.put("transactional.id", "java-transactional");
        config.put("max.block.ms", Long.toString(TRANSACTIONS_BLOCK_TIMEOUT.toMillis()));
        config.put("key.serializer", StringSerializer.class.getName());
        config.put("value.serializer", StringSerializer.class.getName());
        KafkaProducer<String, String> producer = new KafkaProducer<>(config);
        long start = System.nanoTime();
        try {
            producer.initTransactions();
        } catch (KafkaException e) {
            Duration waited = Duration.ofNanos(System.nanoTime() - start);
            Harness.check(waited.compareTo(FAIL_TIMEOUT) < 0, "initTransactions failed only after " + waited);
            report("transactions", start, e);
            return;
        } finally {
            producer.close(Duration.ZERO);
        }
        throw new Harness.Failure("initTransactions succeeded on a broker without transactions");
    }

    private static void report(String what, long start, Exception error) {
        long ms = (System.nanoTime() - start) / 1_000_000;
        System.out.println(what + " failed ms=" + ms + " " + Harness.describe(error));
    }
}
