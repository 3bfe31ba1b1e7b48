"""confluent-kafka producing sequence-numbered records (acks=all, idempotence on) round-robin over
a topic's partitions while a test injects faults; every acknowledgement is reported.

Usage: jepsen_producer.py BOOTSTRAP TOPIC PARTITIONS RATE MAX_SECONDS
Stops at MAX_SECONDS or when "stop" arrives on stdin, then waits for every answer.

Output lines: ACK partition offset value | FAIL partition value error | DONE acked failed
"""
import sys
import time

from confluent_kafka import Producer

from stdin_stop import stop_on_stdin

bootstrap, topic = sys.argv[1], sys.argv[2]
partitions, rate, max_seconds = int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
stop = stop_on_stdin()
producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                     "linger.ms": 5, "message.timeout.ms": 60000, "request.timeout.ms": 5000,
                     "retry.backoff.ms": 100, "topic.metadata.refresh.interval.ms": 1000})
counts = {"acked": 0, "failed": 0}


def report(err, msg):
    if err is not None:
        counts["failed"] += 1
        print(f"FAIL {msg.partition()} {msg.value().decode()} {err}", flush=True)
    else:
        counts["acked"] += 1
        print(f"ACK {msg.partition()} {msg.offset()} {msg.value().decode()}", flush=True)


sequence = [0] * partitions
started = time.time()
sent = 0
while not stop.is_set() and time.time() - started < max_seconds:
    p = sent % partitions
    try:
        producer.produce(topic, value=f"{p}-{sequence[p]}".encode(), partition=p, on_delivery=report)
    except BufferError:
        producer.poll(0.05)
        continue
    sequence[p] += 1
    sent += 1
    producer.poll(0)
    # Paced: `rate` records per second overall.
    delay = started + sent / rate - time.time()
    if delay > 0:
        producer.poll(delay)
left = producer.flush(90)
print(f"DONE {counts['acked']} {counts['failed']} unanswered={left}", flush=True)
