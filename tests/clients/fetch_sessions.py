"""kafka-python through incremental fetch sessions (KIP-227).

  fetch_sessions.py BOOTSTRAP TOPIC PARTITIONS RECORDS SESSIONS
      Produces RECORDS records round-robin over PARTITIONS partitions of TOPIC (created by the
      caller), then one consumer assigned every partition reads them all back, with
      enable_incremental_fetch_sessions=SESSIONS (1 or 0), in rounds: after each round of
      reading, more records are produced to a few partitions only (what an incremental fetch
      answers alone). Prints "read COUNT" when every record was read exactly once.
"""
import sys
import time

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

bootstrap, topic, partitions, records, sessions = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1"
producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
expected = set()


def produce(count, only=None):
    for i in range(count):
        p = only[i % len(only)] if only else i % partitions
        value = f"{len(expected)}".encode()
        producer.send(topic, value=value, partition=p)
        expected.add((p, value))
    producer.flush(30)


produce(records)
consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=100,
                         enable_incremental_fetch_sessions=sessions)
consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
consumer.seek_to_beginning()
seen = []
deadline = time.time() + 60
for round_ in range(4):
    while len(seen) < len(expected):
        assert time.time() < deadline, f"read {len(seen)} of {len(expected)}"
        for tp, messages in consumer.poll(timeout_ms=500).items():
            seen.extend((tp.partition, m.value) for m in messages)
    if round_ < 3:
        produce(7, only=[round_, partitions - 1])
consumer.close()
producer.close()
if len(seen) != len(set(seen)) or set(seen) != expected:
    raise SystemExit(f"read {len(seen)} records ({len(set(seen))} distinct), expected {len(expected)}")
print(f"read {len(seen)}")
