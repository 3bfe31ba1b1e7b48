"""Broker CPU per fetched MB for a consumer of 1,000 partitions, with and without incremental
fetch sessions (KIP-227), on one broker in one run. A producer writes 1 KiB records to random
partitions (bursts of 20 every 10 ms) throughout; the broker's CPU time (/proc/PID/stat) is measured with
the producer alone, then with a kafka-python consumer of every partition added, first with
sessions, then without. The consumer's share is the phase's CPU minus the producer-alone rate.

Usage: benches/fetch_sessions.py BOOTSTRAP BROKER_PID METRICS   (see benches/fetch_sessions.sh)
       benches/fetch_sessions.py produce BOOTSTRAP SECONDS  (the producer, run by the above)
"""
import os
import random
import subprocess
import sys
import time

PARTITIONS, BURST, TOPIC, PHASE_SECONDS = 1000, 20, "fetch-sessions-bench", 15


def produce(bootstrap, seconds):
    """Every 10 ms a burst of 20 records to one random partition: 2 MB/s that lands in a few
    partitions at a time, as on a topic whose traffic moves about."""
    from confluent_kafka import Producer
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "1", "linger.ms": 2})
    payload, start, bursts = b"r" * 1024, time.monotonic(), 0
    while time.monotonic() - start < seconds:
        due = start + bursts * 0.01
        if time.monotonic() < due:
            producer.poll(max(0.0, due - time.monotonic()))
            continue
        partition = random.randrange(PARTITIONS)
        for _ in range(BURST):
            try:
                producer.produce(TOPIC, payload, partition=partition)
            except BufferError:
                producer.poll(0.01)
        bursts += 1
        producer.poll(0)
    producer.flush(30)


def requests(metrics):
    """Requests the broker has read (all shards), from its metrics listener."""
    import json
    import urllib.request
    with urllib.request.urlopen(f"http://{metrics}/v1/shards") as response:
        return sum(shard["requests"] for shard in json.load(response))


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def consume(bootstrap, pid, metrics, sessions):
    from kafka import KafkaConsumer, TopicPartition
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=100,
                             enable_incremental_fetch_sessions=sessions)
    consumer.assign([TopicPartition(TOPIC, p) for p in range(PARTITIONS)])
    consumer.seek_to_end()
    consumer.poll(timeout_ms=1000)
    before, asked, fetched, start = cpu_seconds(pid), requests(metrics), 0, time.monotonic()
    while time.monotonic() - start < PHASE_SECONDS:
        for messages in consumer.poll(timeout_ms=200).values():
            fetched += sum(len(m.value) for m in messages)
    elapsed, cpu, asked = time.monotonic() - start, cpu_seconds(pid) - before, requests(metrics) - asked
    consumer.close()
    return elapsed, cpu, fetched / 1e6, asked


def main(bootstrap, pid, metrics):
    from kafka.admin import KafkaAdminClient, NewTopic
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)])
    admin.close()
    total = 3 * PHASE_SECONDS + 20
    producer = subprocess.Popen([sys.executable, __file__, "produce", bootstrap, str(total)])
    time.sleep(3)
    before, asked, start = cpu_seconds(pid), requests(metrics), time.monotonic()
    time.sleep(PHASE_SECONDS)
    baseline = (cpu_seconds(pid) - before) / (time.monotonic() - start)
    produce_rate = (requests(metrics) - asked) / (time.monotonic() - start)
    print(f"producer alone ({BURST * 100} x 1 KiB/s over {PARTITIONS} partitions): broker CPU {baseline * 100:.1f}%")
    results = {}
    for name, sessions in [("with sessions", True), ("without sessions", False)]:
        elapsed, cpu, mb, asked = consume(bootstrap, pid, metrics, sessions)
        consumer_cpu = max(cpu - baseline * elapsed, 0.0)
        fetches = max(asked - produce_rate * elapsed, 1.0)
        results[name] = consumer_cpu * 1e3 / mb if mb > 0 and consumer_cpu > 0 else float("nan")
        print(f"{name}: {mb:.1f} MB fetched in {elapsed:.1f} s by ~{fetches:.0f} fetches, broker CPU {cpu:.2f} s "
              f"({consumer_cpu:.2f} s for the consumer): {results[name]:.1f} ms per fetched MB, "
              f"{consumer_cpu * 1e6 / fetches:.0f} us per fetch")
    producer.wait(timeout=120)
    print(f"ratio (without / with sessions): {results['without sessions'] / results['with sessions']:.2f}")


if __name__ == "__main__":
    if sys.argv[1] == "produce":
        produce(sys.argv[2], float(sys.argv[3]))
    else:
        main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
