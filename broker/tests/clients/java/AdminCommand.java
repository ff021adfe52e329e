import java.util.Collection;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Properties;
import java.util.TreeMap;
import java.util.stream.Collectors;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.TopicPartitionInfo;
import org.apache.kafka.common.config.ConfigResource;

/**
 * The AdminClient: creates topics with configs, describes them and the cluster, alters a
 * topic's configs incrementally and reads them back, and commits and lists a group's offsets.
 * Prints one line per fact:
 *
 * <pre>
 * created TOPIC partitions=N
 * exists TOPIC ERROR
 * topic TOPIC partitions=N leaders=L,L,.. replicas=R,R,.. isr=I,I,..
 * cluster id=ID controller=C brokers=ID@HOST:PORT,..
 * config PHASE TOPIC NAME=VALUE source=SOURCE   (PHASE: created, altered, kept)
 * rejected TOPIC NAME=VALUE ERROR
 * offset GROUP TOPIC PARTITION OFFSET
 * </pre>
 */
final class AdminCommand {
    static final String TOPIC = "java-admin";
    static final String DEFAULTS_TOPIC = "java-admin-defaults";
    static final String GROUP = "java-admin-group";

    /** The configs the test follows through create, alter and describe. */
    private static final List<String> WATCHED = List.of("retention.ms", "segment.bytes", "max.message.bytes");

    private AdminCommand() {}

    static void run(String bootstrap) throws Exception {
        Admin admin = create(bootstrap);
        try {
            createTopics(admin);
            describeTopics(admin);
            describeCluster(admin);
            alterConfigs(admin);
            commitAndListOffsets(admin);
        } finally {
            admin.close(Harness.CLOSE_TIMEOUT);
        }
    }

    /** The `offsets` subcommand: a group's committed offsets, as `offset` lines. */
    static void printOffsets(String bootstrap, String group) throws Exception {
        Admin admin = create(bootstrap);
        try {
            listOffsets(admin, group);
        } finally {
            admin.close(Harness.CLOSE_TIMEOUT);
        }
    }

    /**
     * The `quorum` subcommand: the controller quorum as DescribeMetadataQuorum reports it, a
     * `leader` line and one `voter` line per voter.
     */
    static void printQuorum(String bootstrap) throws Exception {
        Admin admin = create(bootstrap);
        try {
            var quorum = Harness.await(admin.describeMetadataQuorum().quorumInfo(), "describing the quorum");
            System.out.println("leader id=" + quorum.leaderId() + " epoch=" + quorum.leaderEpoch()
                    + " hw=" + quorum.highWatermark());
            for (var voter : quorum.voters()) {
                System.out.println("voter id=" + voter.replicaId() + " log_end=" + voter.logEndOffset());
            }
        } finally {
            admin.close(Harness.CLOSE_TIMEOUT);
        }
    }

    private static Admin create(String bootstrap) {
        Properties config = Harness.clientConfig(bootstrap, "java-admin");
        config.put("default.api.timeout.ms", "30000");
        return Admin.create(config);
    }

    private static void createTopics(Admin admin) throws Exception {
        NewTopic configured = new NewTopic(TOPIC, 3, (short) 1)
                .configs(Map.of("retention.ms", "3600000", "segment.bytes", "1048576"));
        NewTopic defaults = new NewTopic(DEFAULTS_TOPIC, Optional.empty(), Optional.empty());
        var created = admin.createTopics(List.of(configured, defaults));
        Harness.await(created.all(), "creating " + TOPIC + " and " + DEFAULTS_TOPIC);
        for (String topic : List.of(TOPIC, DEFAULTS_TOPIC)) {
            int partitions = Harness.await(created.numPartitions(topic), "partitions of " + topic);
            System.out.println("created " + topic + " partitions=" + partitions);
        }
        // Kafka refuses to create a topic twice; the client surfaces that as an exception.
        var again = admin.createTopics(List.of(new NewTopic(TOPIC, 1, (short) 1)));
        Throwable error = Harness.awaitError(again.all(), "creating " + TOPIC + " again");
        System.out.println("exists " + TOPIC + " " + error.getClass().getSimpleName());
    }

    private static void describeTopics(Admin admin) throws Exception {
        Map<String, TopicDescription> described = Harness.await(
                admin.describeTopics(List.of(TOPIC, DEFAULTS_TOPIC)).allTopicNames(), "describing topics");
        for (TopicDescription topic : new TreeMap<>(described).values()) {
            List<TopicPartitionInfo> partitions = topic.partitions();
            for (int i = 0; i < partitions.size(); i++) {
                Harness.check(partitions.get(i).partition() == i, "partitions out of order in " + topic);
            }
            System.out.println("topic " + topic.name()
                    + " partitions=" + partitions.size()
                    + " leaders=" + join(partitions.stream().map(AdminCommand::leader).toList())
                    + " replicas=" + join(partitions.stream().map(p -> p.replicas().size()).toList())
                    + " isr=" + join(partitions.stream().map(p -> p.isr().size()).toList()));
        }
    }

    private static void describeCluster(Admin admin) throws Exception {
        DescribeClusterResult cluster = admin.describeCluster();
        String id = Harness.await(cluster.clusterId(), "cluster id");
        Node controller = Harness.await(cluster.controller(), "controller");
        Collection<Node> nodes = Harness.await(cluster.nodes(), "brokers");
        String brokers = nodes.stream()
                .map(n -> n.id() + "@" + n.host() + ":" + n.port())
                .sorted()
                .collect(Collectors.joining(","));
        System.out.println("cluster id=" + id + " controller=" + controller.id() + " brokers=" + brokers);
    }

    private static void alterConfigs(Admin admin) throws Exception {
        ConfigResource topic = new ConfigResource(ConfigResource.Type.TOPIC, TOPIC);
        printConfigs(admin, topic, "created");
        List<AlterConfigOp> edits = List.of(
                new AlterConfigOp(new ConfigEntry("retention.ms", "7200000"), AlterConfigOp.OpType.SET),
                new AlterConfigOp(new ConfigEntry("max.message.bytes", "2097152"), AlterConfigOp.OpType.SET),
                new AlterConfigOp(new ConfigEntry("segment.bytes", ""), AlterConfigOp.OpType.DELETE));
        Harness.await(admin.incrementalAlterConfigs(Map.of(topic, edits)).all(), "altering " + TOPIC);
        awaitConfig(admin, topic, "retention.ms", "7200000");
        printConfigs(admin, topic, "altered");
        // An invalid value is refused and changes nothing.
        List<AlterConfigOp> invalid = List.of(
                new AlterConfigOp(new ConfigEntry("retention.ms", "-2"), AlterConfigOp.OpType.SET));
        Throwable error = Harness.awaitError(
                admin.incrementalAlterConfigs(Map.of(topic, invalid)).all(), "setting retention.ms=-2");
        System.out.println("rejected " + TOPIC + " retention.ms=-2 " + error.getClass().getSimpleName());
        printConfigs(admin, topic, "kept");
    }

    private static Config describeConfigs(Admin admin, ConfigResource resource) throws Exception {
        Map<ConfigResource, Config> described =
                Harness.await(admin.describeConfigs(List.of(resource)).all(), "describing configs of " + resource);
        Config config = described.get(resource);
        Harness.check(config != null, "no configs for " + resource);
        return config;
    }

    /** The watched configs of `resource`, as lines `config PHASE TOPIC NAME=VALUE source=SOURCE`. */
    private static void printConfigs(Admin admin, ConfigResource resource, String phase) throws Exception {
        Config config = describeConfigs(admin, resource);
        for (String name : WATCHED) {
            ConfigEntry entry = config.get(name);
            Harness.check(entry != null, name + " missing from the configs of " + resource);
            System.out.println("config " + phase + " " + resource.name() + " " + name + "=" + entry.value()
                    + " source=" + entry.source());
        }
    }

    /** Kafka applies an alteration asynchronously; wait until a describe shows it. */
    private static void awaitConfig(Admin admin, ConfigResource resource, String name, String value)
            throws Exception {
        while (true) {
            ConfigEntry entry = describeConfigs(admin, resource).get(name);
            if (entry != null && value.equals(entry.value())) {
                return;
            }
            Harness.check(!Harness.deadlinePassed(), name + " of " + resource + " is still " + entry);
            Thread.sleep(100);
        }
    }

    /** Commits offsets for an empty group, as `kafka-consumer-groups --reset-offsets` does. */
    private static void commitAndListOffsets(Admin admin) throws Exception {
        Map<TopicPartition, OffsetAndMetadata> offsets = Map.of(
                new TopicPartition(TOPIC, 0), new OffsetAndMetadata(5),
                new TopicPartition(TOPIC, 2), new OffsetAndMetadata(7, "from java"));
        Harness.await(admin.alterConsumerGroupOffsets(GROUP, offsets).all(), "committing offsets of " + GROUP);
        listOffsets(admin, GROUP);
    }

    private static void listOffsets(Admin admin, String group) throws Exception {
        Map<TopicPartition, OffsetAndMetadata> committed = Harness.await(
                admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata(),
                "listing offsets of " + group);
        Map<String, OffsetAndMetadata> sorted = new TreeMap<>();
        committed.forEach((partition, offset) -> sorted.put(partition.topic() + " " + partition.partition(), offset));
        sorted.forEach((partition, offset) -> System.out.println("offset " + group + " " + partition + " "
                + (offset == null ? "none" : offset.offset())));
    }

    private static String leader(TopicPartitionInfo partition) {
        return partition.leader() == null ? "none" : Integer.toString(partition.leader().id());
    }

    private static String join(List<?> values) {
        return values.stream().map(String::valueOf).collect(Collectors.joining(","));
    }
}
