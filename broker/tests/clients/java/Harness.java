import java.time.Duration;
import java.util.Arrays;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import org.apache.kafka.common.KafkaFuture;

/**
 * The real Java client (kafka-clients) against a broker, for broker/tests/java.rs. Each
 * subcommand prints machine-checkable lines on stdout and exits non-zero, with the reason on
 * stderr, when something differs or a deadline passes.
 *
 * <pre>
 * Harness admin BOOTSTRAP
 * Harness offsets BOOTSTRAP GROUP
 * Harness quorum BOOTSTRAP
 * Harness produce BOOTSTRAP TOPIC N COMPRESSION
 * Harness consume-group BOOTSTRAP TOPIC GROUP N MEMBERS
 * Harness unsupported BOOTSTRAP TOPIC
 * </pre>
 */
public final class Harness {
    /** The longest a subcommand may run; every wait inside it is bounded by this deadline. */
    static final Duration RUN_TIMEOUT = Duration.ofSeconds(90);

    /** How long a client may take to close after its work is done. */
    static final Duration CLOSE_TIMEOUT = Duration.ofSeconds(10);

    private static final long DEADLINE_NANOS = System.nanoTime() + RUN_TIMEOUT.toNanos();

    /** A check that failed: the message says what differed. */
    static final class Failure extends Exception {
        private static final long serialVersionUID = 1L;

        Failure(String message) {
            super(message);
        }
    }

    private Harness() {}

    public static void main(String[] args) {
        startWatchdog();
        int status;
        try {
            dispatch(args);
            status = 0;
        } catch (Failure failure) {
            System.err.println("FAILED: " + failure.getMessage());
            status = 1;
        } catch (Exception e) {
            System.err.print("FAILED: ");
            e.printStackTrace();
            status = 1;
        }
        System.out.flush();
        // Client threads that outlive a failed close must not keep the process alive.
        System.exit(status);
    }

    private static void dispatch(String[] args) throws Exception {
        String command = args.length > 0 ? args[0] : "";
        switch (command) {
            case "admin" -> {
                arguments(args, 2);
                AdminCommand.run(args[1]);
            }
            case "offsets" -> {
                arguments(args, 3);
                AdminCommand.printOffsets(args[1], args[2]);
            }
            case "quorum" -> {
                arguments(args, 2);
                AdminCommand.printQuorum(args[1]);
            }
            case "produce" -> {
                arguments(args, 5);
                ProduceCommand.run(args[1], args[2], Integer.parseInt(args[3]), args[4]);
            }
            case "consume-group" -> {
                arguments(args, 6);
                GroupCommand.run(
                        args[1], args[2], args[3], Integer.parseInt(args[4]), Integer.parseInt(args[5]));
            }
            case "unsupported" -> {
                arguments(args, 3);
                UnsupportedCommand.run(args[1], args[2]);
            }
            default -> throw new Failure("unknown subcommand in " + Arrays.toString(args));
        }
    }

    private static void arguments(String[] args, int count) throws Failure {
        if (args.length != count) {
            throw new Failure(args[0] + " takes " + (count - 1) + " arguments, got " + Arrays.toString(args));
        }
    }

    /**
     * Every wait below is bounded, but a client call that ignores its timeout must still not
     * hang the test: past the deadline, print every thread's stack and halt.
     */
    private static void startWatchdog() {
        Thread watchdog = new Thread(() -> {
            try {
                Thread.sleep(RUN_TIMEOUT.plusSeconds(15).toMillis());
            } catch (InterruptedException e) {
                return;
            }
            System.err.println("FAILED: still running " + RUN_TIMEOUT.plusSeconds(15) + " after start; threads:");
            for (Map.Entry<Thread, StackTraceElement[]> entry : Thread.getAllStackTraces().entrySet()) {
                System.err.println(entry.getKey());
                for (StackTraceElement frame : entry.getValue()) {
                    System.err.println("    at " + frame);
                }
            }
            System.err.flush();
            Runtime.getRuntime().halt(3);
        }, "watchdog");
        watchdog.setDaemon(true);
        watchdog.start();
    }

    /** What is left of the run's deadline (zero once it has passed). */
    static Duration remaining() {
        return Duration.ofNanos(Math.max(0, DEADLINE_NANOS - System.nanoTime()));
    }

    /** `limit`, or less if the run's deadline comes sooner. */
    static Duration atMost(Duration limit) {
        Duration left = remaining();
        return left.compareTo(limit) < 0 ? left : limit;
    }

    static boolean deadlinePassed() {
        return remaining().isZero();
    }

    /** The result of an admin call, or a Failure naming `what` when it fails or times out. */
    static <T> T await(KafkaFuture<T> future, String what) throws Failure, InterruptedException {
        try {
            return future.get(remaining().toMillis(), TimeUnit.MILLISECONDS);
        } catch (TimeoutException e) {
            throw new Failure(what + ": no answer within the deadline");
        } catch (ExecutionException e) {
            throw new Failure(what + ": " + describe(e.getCause()));
        }
    }

    /** The error a call failed with; a Failure when it succeeds or does not answer in time. */
    static Throwable awaitError(KafkaFuture<?> future, String what) throws Failure, InterruptedException {
        try {
            future.get(remaining().toMillis(), TimeUnit.MILLISECONDS);
        } catch (TimeoutException e) {
            throw new Failure(what + ": no answer within the deadline");
        } catch (ExecutionException e) {
            return e.getCause();
        }
        throw new Failure(what + " succeeded");
    }

    /** An exception as one line: its class and message. */
    static String describe(Throwable error) {
        return error.getClass().getSimpleName() + ": " + String.valueOf(error.getMessage()).replace('\n', ' ');
    }

    /** Settings every client shares: the broker, a name for its logs, quick reconnects. */
    static Properties clientConfig(String bootstrap, String clientId) {
        Properties config = new Properties();
        config.put("bootstrap.servers", bootstrap);
        config.put("client.id", clientId);
        // One broker on loopback: a refused connection is retried soon, not after seconds.
        config.put("reconnect.backoff.max.ms", "1000");
        config.put("request.timeout.ms", "15000");
        return config;
    }

    static void check(boolean condition, String message) throws Failure {
        if (!condition) {
            throw new Failure(message);
        }
    }
}
