"""confluent-kafka against a replicated partition: produce numbered records with acks=all and
idempotence (every one must be acknowledged), or read a partition back from the start.

Usage:
  replicated_log.py produce BOOTSTRAP TOPIC FIRST COUNT [PAD] -> prints the number acknowledged
                                                          (PAD: values padded with "." to PAD bytes)
  replicated_log.py consume BOOTSTRAP TOPIC PARTITION [RACK] -> prints one value per line, its
                                                          padding cut
                                                          (RACK: the consumer's client.rack)
"""
import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition

mode, bootstrap, topic = sys.argv[1], sys.argv[2], sys.argv[3]

if mode == "produce":
    first, count = int(sys.argv[4]), int(sys.argv[5])
    pad = int(sys.argv[6]) if len(sys.argv) > 6 else 0
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                         "linger.ms": 2, "message.timeout.ms": 60000, "partitioner": "murmur2_random"})
    acked, errors = [], []

    def report(err, msg):
        if err is not None:
            errors.append(str(err))
        else:
            acked.append(msg.value())

    for i in range(first, first + count):
        while True:
            try:
                producer.produce(topic, value=f"m-{i}".ljust(pad, ".").encode(), partition=0,
                                 on_delivery=report)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    left = producer.flush(90)
    assert left == 0, f"{left} records never answered"
    assert not errors, errors[:5]
    print(len(acked))
elif mode == "consume":
    partition = int(sys.argv[4])
    settings = {"bootstrap.servers": bootstrap, "group.id": "replicated-log-reader", "enable.auto.commit": False}
    until = 0
    for extra in sys.argv[5:]:
        if extra.startswith("until="):
            until = int(extra[len("until="):])
        else:
            settings["client.rack"] = extra
    consumer = Consumer(settings)
    # A new leader learns the high watermark from its followers' next fetches: with until=N,
    # wait (bounded) until it covers N, so an acknowledged record is read, not merely not yet
    # visible. One that was lost never gets there.
    deadline = time.time() + 30
    while True:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=20)
        if high >= until or time.time() > deadline:
            break
        time.sleep(0.2)
    consumer.assign([TopicPartition(topic, partition, low)])
    values, position = [], low
    while position < high:
        msg = consumer.poll(10)
        assert msg is not None, f"nothing more at {position} (high watermark {high})"
        if msg.error():
            raise SystemExit(f"consume error: {msg.error()}")
        values.append(msg.value().decode().rstrip("."))
        position = msg.offset() + 1
    consumer.close()
    print("\n".join(values))
else:
    raise SystemExit(f"unknown mode {mode}")
