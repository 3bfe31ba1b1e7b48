"""kafka-python with default settings (idempotent producer): admin create/delete, produce,
consume with assign + seek.

Usage: kafka_python_basic.py BOOTSTRAP TOPIC
"""
import sys

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

bootstrap, topic = sys.argv[1], sys.argv[2]
admin = KafkaAdminClient(bootstrap_servers=bootstrap)
admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
assert topic in admin.list_topics()

producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
futures = [producer.send(topic, key=b"k%d" % i, value=b"value-%d" % i, partition=i % 2) for i in range(200)]
producer.flush()
metas = [f.get(timeout=10) for f in futures]
producer.close()

consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=5000)
consumer.assign([TopicPartition(topic, 0), TopicPartition(topic, 1)])
consumer.seek_to_beginning()
got = {}
for msg in consumer:
    got[(msg.partition, msg.offset)] = msg.value
    if len(got) == 200:
        break
consumer.close()
expected = {(m.partition, m.offset): b"value-%d" % i for i, m in enumerate(metas)}
assert got == expected, f"got {len(got)} of {len(expected)}"

admin.delete_topics([topic])
assert topic not in admin.list_topics()
admin.close()
print("kafka-python ok: 200 records")
