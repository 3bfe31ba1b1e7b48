"""What a client quota buys the other tenants, on one broker in one run: a paced producer's
acknowledgement p50/p99 (acks=all, 100-byte records, 500/s for 8 s) alone, then beside a greedy
producer (100 KiB records as fast as it can) without a quota, then beside the same greedy
producer under a 1 MB/s producer_byte_rate quota. Prints each phase and the p99 ratios to the
phase alone.

Usage: benches/quotas.py BOOTSTRAP             (see benches/quotas.sh)
       benches/quotas.py greedy BOOTSTRAP CLIENT_ID SECONDS   (the greedy producer, run by the above)
"""
import subprocess
import sys
import time

from confluent_kafka import Producer


def greedy(bootstrap, client_id, seconds):
    producer = Producer({"bootstrap.servers": bootstrap, "client.id": client_id, "acks": "1", "linger.ms": 5,
                         "queue.buffering.max.kbytes": 65536})
    payload, acked, end = b"g" * 102400, [0], time.monotonic() + seconds

    def done(err, msg):
        if err is None:
            acked[0] += len(msg.value())

    while time.monotonic() < end:
        try:
            producer.produce("quota-greedy", payload, on_delivery=done)
        except BufferError:
            producer.poll(0.01)
        producer.poll(0)
    producer.purge()
    producer.flush(5)
    print(f"{acked[0] / seconds / 1e6:.1f}", flush=True)


def paced(bootstrap, rate=500, seconds=8):
    producer = Producer({"bootstrap.servers": bootstrap, "client.id": "victim", "acks": "all", "linger.ms": 0})
    latencies, payload = [], b"v" * 100
    start = time.perf_counter()
    for i in range(rate * seconds):
        due = start + i / rate
        while time.perf_counter() < due:
            producer.poll(0.0005)
        sent = time.perf_counter()
        producer.produce("quota-victim", payload, on_delivery=lambda e, m, s=sent: latencies.append(time.perf_counter() - s))
        producer.poll(0)
    producer.flush(60)
    latencies.sort()
    return latencies[len(latencies) // 2] * 1e3, latencies[int(len(latencies) * 0.99)] * 1e3


def beside(bootstrap, client_id):
    other = subprocess.Popen([sys.executable, __file__, "greedy", bootstrap, client_id, "11"], stdout=subprocess.PIPE,
                             text=True)
    time.sleep(2)
    measured = paced(bootstrap)
    rate = other.communicate(timeout=120)[0].strip()
    return measured, rate


def main(bootstrap):
    from kafka.admin import KafkaAdminClient
    from kafka.protocol.admin import AlterClientQuotasRequest as A
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    entry = A.EntryData(entity=[A.EntryData.EntityData(entity_type="client-id", entity_name="greedy")],
                        ops=[A.EntryData.OpData(key="producer_byte_rate", value=1e6, remove=False)])
    assert admin._manager.run(admin._manager.send, A(entries=[entry], validate_only=False)).entries[0].error_code == 0
    paced(bootstrap, seconds=2)  # topics created, connections warm
    alone = paced(bootstrap)
    print(f"alone:                     ack p50 {alone[0]:6.2f} ms  p99 {alone[1]:6.2f} ms")
    free, free_rate = beside(bootstrap, "greedy-free")
    print(f"beside an unlimited tenant: ack p50 {free[0]:6.2f} ms  p99 {free[1]:6.2f} ms  (it got {free_rate} MB/s acknowledged)")
    held, held_rate = beside(bootstrap, "greedy")
    print(f"beside a 1 MB/s tenant:     ack p50 {held[0]:6.2f} ms  p99 {held[1]:6.2f} ms  (it got {held_rate} MB/s acknowledged)")
    print(f"p99 ratio to alone: unlimited {free[1] / alone[1]:.2f}x, under quota {held[1] / alone[1]:.2f}x")


if __name__ == "__main__":
    if sys.argv[1] == "greedy":
        greedy(sys.argv[2], sys.argv[3], float(sys.argv[4]))
    else:
        main(sys.argv[1])
