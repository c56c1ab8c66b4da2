// Reads every record of one topic with the Java Kafka client and prints it as one JSON line, for
// tests/test_interop_java.py: what a Java consumer sees of eventstream's records.
//
//   java -cp <classes>:kafka-clients.jar:slf4j-api.jar ReadEvents <bootstrap> <topic> <timeout ms>
//
// The consumer has no group: it is assigned every partition of the topic from the beginning and
// reads up to the end offsets it finds at the start (commits nothing). One line per record:
//
//   {"topic": "...", "partition": 0, "offset": 0, "timestamp": 1764578400123,
//    "timestamp_type": "CreateTime", "key": "<base64>" | null, "value": "<base64>" | null,
//    "headers": [{"name": "...", "value": "<base64>" | null}, ...],   (in record order)
//    "last": {"<name>": "<base64>" | null, ...},     (Headers.lastHeader of every name)
//    "ce_time_epoch_ms": 1764578400123 | null,       (Instant.parse of the last ce_time)
//    "ce_time_error": "..." | null}                  (why Instant.parse refused it)
//
// The JSON is written by hand (no library beyond kafka-clients) and is plain ASCII: any other
// character is written as a backslash-u escape. Exit status: 0 once the end offsets were reached,
// 1 on a timeout (the records read so far are printed), 2 on misuse or a topic without partitions.
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.time.Instant;
import java.time.format.DateTimeParseException;
import java.util.ArrayList;
import java.util.Base64;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.Headers;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

public final class ReadEvents {
    private ReadEvents() {}

    public static void main(String[] args) {
        if (args.length != 3) {
            System.err.println("usage: ReadEvents <bootstrap servers> <topic> <timeout ms>");
            System.exit(2);
        }
        String topic = args[1];
        long deadline = System.nanoTime() + Duration.ofMillis(Long.parseLong(args[2])).toNanos();
        Properties props = new Properties();
        props.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        props.put(ConsumerConfig.CLIENT_ID_CONFIG, "eventstream-java-interop");
        props.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        props.put(ConsumerConfig.ALLOW_AUTO_CREATE_TOPICS_CONFIG, "false"); // a reader creates none
        ByteArrayDeserializer bytes = new ByteArrayDeserializer();
        try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(props, bytes, bytes)) {
            List<PartitionInfo> infos = consumer.partitionsFor(topic, remaining(deadline));
            if (infos == null || infos.isEmpty()) {
                System.err.println("ReadEvents: topic " + topic + " has no partitions");
                System.exit(2);
            }
            List<TopicPartition> partitions = new ArrayList<>();
            for (PartitionInfo info : infos) {
                partitions.add(new TopicPartition(topic, info.partition()));
            }
            consumer.assign(partitions);
            consumer.seekToBeginning(partitions);
            Map<TopicPartition, Long> end = consumer.endOffsets(partitions, remaining(deadline));
            while (!reached(consumer, end, deadline)) {
                if (System.nanoTime() >= deadline) {
                    System.out.flush();
                    System.err.println("ReadEvents: timed out before the end offsets " + end);
                    System.exit(1);
                }
                for (ConsumerRecord<byte[], byte[]> rec : consumer.poll(Duration.ofMillis(200))) {
                    System.out.print(line(rec));
                }
            }
            System.out.flush();
        }
    }

    private static Duration remaining(long deadline) {
        return Duration.ofNanos(Math.max(0, deadline - System.nanoTime()));
    }

    private static boolean reached(
            KafkaConsumer<byte[], byte[]> consumer, Map<TopicPartition, Long> end, long deadline) {
        for (Map.Entry<TopicPartition, Long> entry : end.entrySet()) {
            if (consumer.position(entry.getKey(), remaining(deadline)) < entry.getValue()) {
                return false;
            }
        }
        return true;
    }

    private static String line(ConsumerRecord<byte[], byte[]> record) {
        StringBuilder out = new StringBuilder("{\"topic\": ");
        string(out, record.topic());
        out.append(", \"partition\": ").append(record.partition());
        out.append(", \"offset\": ").append(record.offset());
        out.append(", \"timestamp\": ").append(record.timestamp());
        out.append(", \"timestamp_type\": ");
        string(out, record.timestampType().toString());
        out.append(", \"key\": ");
        bytes(out, record.key());
        out.append(", \"value\": ");
        bytes(out, record.value());
        Headers headers = record.headers();
        Map<String, byte[]> last = new LinkedHashMap<>();
        out.append(", \"headers\": [");
        boolean first = true;
        for (Header header : headers) {
            out.append(first ? "" : ", ").append("{\"name\": ");
            string(out, header.key());
            out.append(", \"value\": ");
            bytes(out, header.value());
            out.append('}');
            first = false;
            Header latest = headers.lastHeader(header.key());
            last.put(header.key(), latest == null ? null : latest.value());
        }
        out.append("], \"last\": {");
        first = true;
        for (Map.Entry<String, byte[]> entry : last.entrySet()) {
            out.append(first ? "" : ", ");
            string(out, entry.getKey());
            out.append(": ");
            bytes(out, entry.getValue());
            first = false;
        }
        out.append('}');
        Long millis = null;
        String error = null;
        Header time = headers.lastHeader("ce_time");
        if (time == null || time.value() == null) {
            error = "no ce_time header";
        } else {
            try {
                String text = new String(time.value(), StandardCharsets.UTF_8);
                millis = Instant.parse(text).toEpochMilli();
            } catch (DateTimeParseException e) {
                error = e.getMessage();
            }
        }
        out.append(", \"ce_time_epoch_ms\": ").append(millis == null ? "null" : millis.toString());
        out.append(", \"ce_time_error\": ");
        string(out, error);
        return out.append("}\n").toString();
    }

    private static void bytes(StringBuilder out, byte[] value) {
        if (value == null) {
            out.append("null");
        } else {
            out.append('"').append(Base64.getEncoder().encodeToString(value)).append('"');
        }
    }

    private static void string(StringBuilder out, String value) {
        if (value == null) {
            out.append("null");
            return;
        }
        out.append('"');
        for (int i = 0; i < value.length(); i++) {
            char c = value.charAt(i);
            if (c == '"' || c == '\\') {
                out.append('\\').append(c);
            } else if (c < 0x20 || c > 0x7e) {
                out.append(String.format("\\u%04x", (int) c));
            } else {
                out.append(c);
            }
        }
        out.append('"');
    }
}
