"""confluent-kafka (librdkafka 2.x): admin topics and configs, producing with acks=all and each
compression, keyed records on the client's chosen partitions, assign + seek read-back.

Usage: confluent_basic.py BOOTSTRAP TOPIC
"""
import sys

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic

bootstrap, topic = sys.argv[1], sys.argv[2]
admin = AdminClient({"bootstrap.servers": bootstrap})

for t, f in admin.create_topics([NewTopic(topic, num_partitions=4, replication_factor=1,
                                          config={"retention.ms": "3600000"})]).items():
    f.result()
assert topic in admin.list_topics(timeout=10).topics, "created topic is listed"
meta = admin.list_topics(topic, timeout=10).topics[topic]
assert len(meta.partitions) == 4, meta.partitions

res = ConfigResource(ConfigResource.Type.TOPIC, topic)
configs = admin.describe_configs([res])[res].result()
assert configs["retention.ms"].value == "3600000", configs["retention.ms"]
assert configs["cleanup.policy"].value == "delete"
change = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
    ConfigEntry("retention.bytes", "10485760", incremental_operation=AlterConfigOpType.SET)])
admin.incremental_alter_configs([change])[change].result()
configs = admin.describe_configs([res])[res].result()
assert configs["retention.bytes"].value == "10485760", configs["retention.bytes"]

# Produce: acks=all, idempotence off, every compression; remember where each record landed.
landed = {}  # (partition, offset) -> (key, value)
errors = []


def report(err, msg):
    if err is not None:
        errors.append(err)
    else:
        landed[(msg.partition(), msg.offset())] = (msg.key(), msg.value())


sent = 0
for compression in ["gzip", "snappy", "lz4", "zstd"]:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": False,
                         "compression.type": compression, "linger.ms": 5})
    for i in range(250):
        key = f"key-{i % 37}".encode()
        value = f"{compression}-{i}-".encode() + bytes(range(256))[: i % 200]
        producer.produce(topic, key=key, value=value, on_delivery=report)
        sent += 1
    assert producer.flush(30) == 0, "all delivered"
assert not errors, errors
assert len(landed) == sent, (len(landed), sent)

# Same key, same partition: the client's partitioner decided, the broker kept it.
key_partition = {}
for (partition, _), (key, _) in landed.items():
    assert key_partition.setdefault(key, partition) == partition, f"key {key} on two partitions"

# Read everything back with assign + seek, byte-identical and in offset order per partition.
consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{topic}-reader",
                     "enable.auto.commit": False, "auto.offset.reset": "earliest"})
consumer.assign([TopicPartition(topic, p, 0) for p in range(4)])
for p in range(4):
    consumer.seek(TopicPartition(topic, p, 0))
got = {}
last_offset = {}
idle = 0
while len(got) < sent and idle < 20:
    msg = consumer.poll(1.0)
    if msg is None:
        idle += 1
        continue
    if msg.error():
        raise KafkaException(msg.error())
    p, o = msg.partition(), msg.offset()
    assert o > last_offset.get(p, -1), "offsets increase within a partition"
    last_offset[p] = o
    got[(p, o)] = (msg.key(), msg.value())
consumer.close()
assert got == landed, f"read back {len(got)} of {len(landed)}; differing: {[k for k in landed if got.get(k) != landed[k]][:5]}"

for t, f in admin.delete_topics([topic]).items():
    f.result()
assert topic not in admin.list_topics(timeout=10).topics
print(f"confluent-kafka ok: {sent} records over 4 compressions")
