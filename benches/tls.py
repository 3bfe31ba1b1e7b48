"""TLS against plaintext on one broker, in one run: confluent-kafka produces N records of SIZE
bytes (acks=1) through each listener as fast as it can, then reads them back (MB/s each way);
then produces 5 000 records/s for 10 s through each and reports the acknowledgement p50/p99
(delivery callback minus send time: at full speed that is the client's queue, not the broker).

Usage: benches/tls.py PLAINTEXT_ADDR SSL_ADDR CAFILE [N] [SIZE]   (see benches/tls.sh)
"""
import sys
import time

from confluent_kafka import Consumer, Producer

plain, tls, cafile = sys.argv[1:4]
count = int(sys.argv[4]) if len(sys.argv) > 4 else 200_000
size = int(sys.argv[5]) if len(sys.argv) > 5 else 1024


def paced(name, settings, topic, rate=5000, seconds=10):
    producer = Producer({**settings, "acks": "1", "linger.ms": 0})
    latencies = []
    payload = b"x" * size
    start = time.perf_counter()
    for i in range(rate * seconds):
        due = start + i / rate
        while time.perf_counter() < due:
            producer.poll(0.0005)
        sent = time.perf_counter()
        producer.produce(topic, payload, on_delivery=lambda e, m, s=sent: latencies.append(time.perf_counter() - s))
        producer.poll(0)
    producer.flush(60)
    latencies.sort()
    p50, p99 = latencies[len(latencies) // 2] * 1e3, latencies[int(len(latencies) * 0.99)] * 1e3
    print(f"{name:9} at {rate} records/s: ack p50 {p50:6.2f} ms  p99 {p99:6.2f} ms")
    return p99


def run(name, settings, topic):
    producer = Producer({**settings, "acks": "1", "linger.ms": 5, "batch.size": 1 << 20,
                         "queue.buffering.max.messages": 1_000_000})
    latencies = []
    payload = b"x" * size

    def done(err, msg, sent):
        if err:
            raise SystemExit(f"{name}: {err}")
        latencies.append(time.perf_counter() - sent)

    start = time.perf_counter()
    for _ in range(count):
        sent = time.perf_counter()
        while True:
            try:
                producer.produce(topic, payload, on_delivery=lambda e, m, s=sent: done(e, m, s))
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    producer.flush(120)
    produce_s = time.perf_counter() - start
    consumer = Consumer({**settings, "group.id": f"bench-{topic}", "auto.offset.reset": "earliest",
                         "fetch.max.bytes": 52428800})
    consumer.subscribe([topic])
    read, start = 0, None
    deadline = time.time() + 120
    while read < count and time.time() < deadline:
        for msg in consumer.consume(10000, 1.0):
            if msg.error():
                continue
            start = start or time.perf_counter()
            read += 1
    consume_s = time.perf_counter() - start
    consumer.close()
    latencies.sort()
    mb = count * size / 1e6
    result = dict(produce=mb / produce_s, consume=mb / consume_s,
                  p50=latencies[len(latencies) // 2] * 1e3, p99=latencies[int(len(latencies) * 0.99)] * 1e3)
    print(f"{name:9} produce {result['produce']:7.1f} MB/s  consume {result['consume']:7.1f} MB/s  "
          f"ack p50 {result['p50']:6.2f} ms  p99 {result['p99']:6.2f} ms")
    return result


suffix = str(int(time.time()))
p = run("plaintext", {"bootstrap.servers": plain}, f"bench-plain-{suffix}")
t = run("tls", {"bootstrap.servers": tls, "security.protocol": "SSL", "ssl.ca.location": cafile},
        f"bench-tls-{suffix}")
plain_p99 = paced("plaintext", {"bootstrap.servers": plain}, f"bench-plain-{suffix}")
tls_p99 = paced("tls", {"bootstrap.servers": tls, "security.protocol": "SSL", "ssl.ca.location": cafile},
                f"bench-tls-{suffix}")
print(f"tls/plaintext: produce {t['produce'] / p['produce']:.2f}x  consume {t['consume'] / p['consume']:.2f}x  "
      f"paced ack p99 {tls_p99 / plain_p99:.2f}x")
