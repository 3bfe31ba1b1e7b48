"""Broker CPU per fetch and per fetched MB for consumers of 1,000 partitions, with and without
incremental fetch sessions (KIP-227), on one broker in one run. A producer writes 1 KiB records to
random partitions (bursts of 20 every 10 ms) throughout. The broker's CPU time (/proc/PID/stat) is
taken in alternating phases: the producer alone, then CONSUMERS kafka-python consumers of every
partition added (with sessions), the producer alone again, then the consumers without sessions,
ROUNDS times over. A consumer phase's share is its CPU minus the producer-alone rate of the two
phases around it, so a drift in the producer's cost does not land on one mode; the medians over
the rounds are reported.

Usage: benches/fetch_sessions.py BOOTSTRAP BROKER_PID METRICS   (see benches/fetch_sessions.sh)
       benches/fetch_sessions.py produce BOOTSTRAP SECONDS  (the producer, run by the above)
       benches/fetch_sessions.py consume BOOTSTRAP SESSIONS  (one consumer, run by the above)
"""
import os
import random
import statistics
import subprocess
import sys
import time

PARTITIONS, BURST, TOPIC = 1000, 20, "fetch-sessions-bench"
ROUNDS, CONSUMERS, BASELINE_SECONDS, PHASE_SECONDS = 3, 2, 8, 15


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


def consume(bootstrap, sessions):
    """One consumer of every partition from its end: says `ready` once it has fetched, starts on a
    line from stdin, polls for PHASE_SECONDS and prints the bytes it fetched."""
    from kafka import KafkaConsumer, TopicPartition
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=100,
                             enable_incremental_fetch_sessions=sessions)
    consumer.assign([TopicPartition(TOPIC, p) for p in range(PARTITIONS)])
    consumer.seek_to_end()
    consumer.poll(timeout_ms=1000)
    print("ready", flush=True)
    sys.stdin.readline()
    fetched, start = 0, time.monotonic()
    while time.monotonic() - start < PHASE_SECONDS:
        for messages in consumer.poll(timeout_ms=200).values():
            fetched += sum(len(m.value) for m in messages)
    print(fetched, flush=True)
    consumer.close()


def requests(metrics):
    """Requests the broker has read (all shards), from its metrics listener."""
    import json
    import urllib.request
    with urllib.request.urlopen(f"http://{metrics}/v1/shards") as response:
        return sum(shard["requests"] for shard in json.load(response))


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Meter:
    """Broker CPU seconds and requests read since it was made, and the seconds that took."""

    def __init__(self, pid, metrics):
        self.pid, self.metrics = pid, metrics
        self.cpu, self.asked, self.start = cpu_seconds(pid), requests(metrics), time.monotonic()

    def read(self):
        return (time.monotonic() - self.start, cpu_seconds(self.pid) - self.cpu,
                requests(self.metrics) - self.asked)


def producer_alone(pid, metrics):
    """The broker's CPU rate and request rate with only the producer running."""
    meter = Meter(pid, metrics)
    time.sleep(BASELINE_SECONDS)
    elapsed, cpu, asked = meter.read()
    return cpu / elapsed, asked / elapsed


def consumers(bootstrap, pid, metrics, sessions):
    """CONSUMERS consumers together for one phase: (seconds, broker CPU, requests, MB fetched)."""
    procs = [subprocess.Popen([sys.executable, __file__, "consume", bootstrap, str(int(sessions))],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for _ in range(CONSUMERS)]
    for proc in procs:
        assert proc.stdout.readline().strip() == "ready"
    meter = Meter(pid, metrics)
    for proc in procs:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    fetched = sum(int(proc.stdout.readline()) for proc in procs)
    elapsed, cpu, asked = meter.read()
    for proc in procs:
        proc.wait(timeout=30)
    return elapsed, cpu, asked, fetched / 1e6


def main(bootstrap, pid, metrics):
    from kafka.admin import KafkaAdminClient, NewTopic
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)])
    admin.close()
    total = ROUNDS * 2 * (BASELINE_SECONDS + PHASE_SECONDS + 10) + BASELINE_SECONDS + 20
    producer = subprocess.Popen([sys.executable, __file__, "produce", bootstrap, str(total)])
    time.sleep(3)
    modes = [("with sessions", True), ("without sessions", False)]
    per_fetch, per_mb, fetch_counts = {m: [] for m, _ in modes}, {m: [] for m, _ in modes}, {m: [] for m, _ in modes}
    before = producer_alone(pid, metrics)
    for round_ in range(ROUNDS):
        for name, sessions in modes:
            elapsed, cpu, asked, mb = consumers(bootstrap, pid, metrics, sessions)
            after = producer_alone(pid, metrics)
            cpu_rate, ask_rate = (before[0] + after[0]) / 2, (before[1] + after[1]) / 2
            consumer_cpu = max(cpu - cpu_rate * elapsed, 0.0)
            fetches = max(asked - ask_rate * elapsed, 1.0)
            per_fetch[name].append(consumer_cpu * 1e6 / fetches)
            per_mb[name].append(consumer_cpu * 1e3 / mb if mb > 0 else float("nan"))
            fetch_counts[name].append(fetches)
            print(f"round {round_ + 1} {name}: producer alone {before[0] * 100:.1f}% / {after[0] * 100:.1f}% CPU; "
                  f"{CONSUMERS} consumers {mb:.1f} MB in {elapsed:.1f} s by ~{fetches:.0f} fetches, broker CPU "
                  f"{cpu:.2f} s ({consumer_cpu:.2f} s theirs): {per_fetch[name][-1]:.0f} us per fetch, "
                  f"{per_mb[name][-1]:.1f} ms per MB", flush=True)
            before = after
    producer.wait(timeout=120)
    for name, _ in modes:
        print(f"median {name}: {statistics.median(fetch_counts[name]):.0f} fetches, "
              f"{statistics.median(per_fetch[name]):.0f} us per fetch, {statistics.median(per_mb[name]):.1f} ms per MB")
    print("ratio of medians (without / with sessions): "
          f"per fetch {statistics.median(per_fetch['without sessions']) / statistics.median(per_fetch['with sessions']):.2f}, "
          f"per MB {statistics.median(per_mb['without sessions']) / statistics.median(per_mb['with sessions']):.2f}")


if __name__ == "__main__":
    if sys.argv[1] == "produce":
        produce(sys.argv[2], float(sys.argv[3]))
    elif sys.argv[1] == "consume":
        consume(sys.argv[2], sys.argv[3] == "1")
    else:
        main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
