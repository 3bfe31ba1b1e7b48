"""Client quotas with real clients: kafka-python's protocol classes set and describe them
(AlterClientQuotas, DescribeClientQuotas), confluent-kafka producers are throttled by them.

Usage: quotas.py BOOTSTRAP TOPIC
Prints one JSON line of what it measured; exits non-zero when a check fails."""
import json
import sys
import time

from confluent_kafka import Producer
from kafka.admin import KafkaAdminClient
from kafka.protocol.admin import AlterClientQuotasRequest as A, DescribeClientQuotasRequest as D, ListGroupsRequest

bootstrap, topic = sys.argv[1], sys.argv[2]
admin = KafkaAdminClient(bootstrap_servers=bootstrap)


def alter(entity, key, value, remove=False):
    entry = A.EntryData(entity=[A.EntryData.EntityData(entity_type=t, entity_name=n) for t, n in entity],
                        ops=[A.EntryData.OpData(key=key, value=value, remove=remove)])
    response = admin._manager.run(admin._manager.send, A(entries=[entry], validate_only=False))
    return response.entries[0].error_code


RATE = 200_000
assert alter([("client-id", "greedy")], "producer_byte_rate", float(RATE)) == 0
assert alter([("user", None)], "consumer_byte_rate", 1e12) == 0
# Bad input: unknown key, unsupported key and entity type, no value: INVALID_REQUEST (42).
assert alter([("client-id", "x")], "bytes_per_fortnight", 1.0) == 42
assert alter([("client-id", "x")], "controller_mutation_rate", 1.0) == 42
assert alter([("ip", "127.0.0.1")], "producer_byte_rate", 1.0) == 42
assert alter([("client-id", "x")], "producer_byte_rate", -5.0) == 42

described = admin._manager.run(admin._manager.send, D(components=[], strict=False))
quotas = {tuple((e.entity_type, e.entity_name) for e in entry.entity): {v.key: v.value for v in entry.values}
          for entry in described.entries}
assert quotas[(("client-id", "greedy"),)] == {"producer_byte_rate": RATE}, quotas
assert quotas[(("user", None),)] == {"consumer_byte_rate": 1e12}, quotas
exact = D(components=[D.ComponentData(entity_type="client-id", match_type=0, match="greedy")], strict=True)
assert len(admin._manager.run(admin._manager.send, exact).entries) == 1

def produce(client_id, seconds, limit):
    """Bytes per second acknowledged within `seconds` (at most `limit` messages)."""
    p = Producer({"bootstrap.servers": bootstrap, "client.id": client_id, "linger.ms": 5,
                  "queue.buffering.max.messages": 20000})
    acked = [0]

    def done(err, _msg):
        if err is None:
            acked[0] += 1

    value = b"x" * 1000
    sent = 0
    start = time.time()
    while time.time() - start < seconds and sent < limit:
        try:
            p.produce(topic, value, on_delivery=done)
            sent += 1
        except BufferError:
            p.poll(0.01)
        p.poll(0)
    elapsed = time.time() - start
    rate = acked[0] * 1000 / elapsed
    p.purge()
    p.flush(30)
    return rate


greedy = produce("greedy", 8, 20_000_000)
free = produce("free", 3, 20_000_000)
# Removed: the greedy client runs free again.
assert alter([("client-id", "greedy")], "producer_byte_rate", 0.0, remove=True) == 0
print(json.dumps({"greedy_bytes_per_s": greedy, "free_bytes_per_s": free, "quota": RATE}))
# Within the quota (plus the 10 s measured span's first burst), far below an unthrottled client.
assert greedy < RATE * 2.5, greedy
assert free > greedy * 2, (free, greedy)

# A request quota (percent of one shard's time): once over it, the client's responses to any
# API carry throttle_time_ms (here ListGroups, which has no byte quota).
assert alter([("client-id", "busy")], "request_percentage", 0.001) == 0
time.sleep(0.5)  # the metadata reaches the shards
busy = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="busy")
throttled = 0
for _ in range(20):
    throttled = busy._manager.run(busy._manager.send, ListGroupsRequest()).throttle_time_ms
    if throttled > 0:
        break
assert throttled > 0, "no response said to back off"
others = admin._manager.run(admin._manager.send, ListGroupsRequest()).throttle_time_ms
assert others == 0, others
print(json.dumps({"request_quota_throttle_ms": throttled}))
