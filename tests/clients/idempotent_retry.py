"""confluent-kafka (librdkafka 2.x) with enable.idempotence=true: produces COUNT records, one at a
time, through a path that loses acknowledgements (the test's proxy drops produce responses), so
librdkafka times the requests out and retries them with the same producer id and sequence. Then
reads the partition back from the beginning.

Prints one JSON line: {"delivered": n, "errors": [...], "values": [value, ...]} with the values in
the order they are stored.

Usage: idempotent_retry.py BOOTSTRAP TOPIC COUNT
"""
import json
import sys
import time

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

bootstrap, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])

producer = Producer({
    "bootstrap.servers": bootstrap,
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 0,
    # A request unanswered for this long counts as lost: librdkafka drops the connection and
    # retries the batch with the same producer id, epoch and sequence. (request.timeout.ms is
    # only the ack timeout the broker enforces.) No record may run out of message.timeout.ms,
    # or librdkafka would fail it and bump the epoch.
    "socket.timeout.ms": 2000,
    "request.timeout.ms": 2000,
    "message.timeout.ms": 120000,
    "retry.backoff.ms": 100,
})
delivered = 0
errors = []


def report(err, msg):
    global delivered
    if err is None:
        delivered += 1
    else:
        errors.append(str(err))


for i in range(count):
    producer.produce(topic, value=f"record-{i}".encode(), partition=0, on_delivery=report)
    producer.poll(0)
    # One record per request, so every dropped response is a whole retried batch.
    producer.flush(60)
remaining = producer.flush(60)
if remaining:
    errors.append(f"{remaining} records still in flight")

consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "idempotent-check", "enable.auto.commit": False})
consumer.assign([TopicPartition(topic, 0, 0)])
values = []
deadline = time.time() + 60
while len(values) < count * 2 and time.time() < deadline:
    msg = consumer.poll(1.0)
    if msg is None:
        # Keep polling a little after reaching the expected count: a duplicate would come after.
        if len(values) >= count:
            break
        continue
    if msg.error():
        if msg.error().code() != KafkaError._PARTITION_EOF:
            errors.append(str(msg.error()))
        continue
    values.append(msg.value().decode())
consumer.close()
print(json.dumps({"delivered": delivered, "errors": errors, "values": values}))
