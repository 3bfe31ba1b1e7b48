"""confluent-kafka cases where Moldau must answer as Kafka does.

Usage:
  kafka_compat.py transactions BOOTSTRAP
      init_transactions() must fail at once with a non-retriable error (no transaction
      coordinator yet), not wait out its timeout. Prints "refused CODE".
  kafka_compat.py bad-topics BOOTSTRAP TIMES
      AdminClient asks TIMES times for a topic of 3 replicas on one broker, then once for one
      with retention.ms=abc. Prints each error's name, one per line.
  kafka_compat.py revoke-commit BOOTSTRAP TOPIC PARTITIONS RECORDS
      Member A reads every record without committing; member B joins; A commits what it read in
      its partitions-revoked callback (the group is preparing the rebalance then, which Kafka
      allows). Prints "revoke-commit ok COMMITTED" with the offsets committed in total.
  kafka_compat.py compressed-topic BOOTSTRAP TOPIC CODEC COUNT
      AdminClient creates TOPIC with compression.type=CODEC; an uncompressed producer writes
      COUNT records; a consumer reads them back. Prints "compressed-topic ok COUNT".
  kafka_compat.py compacted-produce BOOTSTRAP TOPIC KEYS ROUNDS
      AdminClient creates TOPIC (cleanup.policy=compact, small segments); a producer writes
      ROUNDS values of each of KEYS keys (idempotent; the last round from a second producer),
      the last round deleting every tenth key (tombstones), then after segment.ms one more record so that
      all of it lies in sealed segments.
  kafka_compat.py compacted-read BOOTSTRAP TOPIC KEYS ROUNDS
      Reads TOPIC from the beginning to its end. Exits 1 if a key's newest value (or tombstone)
      is missing or an older one is newer than it; exits 2 while older values are still there
      (not compacted yet); prints "compacted ok COUNT" when exactly the newest are left and
      kafka-python reads the same.
  kafka_compat.py broker-configs BOOTSTRAP TOPIC BROKER_ID
      AdminClient sets the broker's dynamic configs (small segments, 1.5 s retention), describes
      the broker and TOPIC (whose defaults name the broker layer they come from), is refused a read-only config and a bad value, produces until retention
      moves TOPIC's log start, then deletes the dynamic configs. Prints one line per step.
  kafka_compat.py topic-defaults BOOTSTRAP TOPIC
      On a broker started with Kafka's min.insync.replicas=2 and log.cleanup.policy=compact,delete:
      describes TOPIC's defaults with their broker synonyms, produces with acks=all (refused: one
      broker), lowers min.insync.replicas for the cluster, produces again (taken), is refused a bad
      value, then deletes the dynamic config (refused again). Prints one line per step.
"""
import re
import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, ConfigSource, NewTopic,
                                  ResourceType)


def compacted_value(key, round_):
    return f"{key}:{round_}:".ljust(200, "v").encode()

mode, bootstrap = sys.argv[1], sys.argv[2]

if mode == "transactions":
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": "compat-tx"})
    try:
        producer.init_transactions(30)
    except KafkaException as e:
        print(f"refused {e.args[0].name()}")
    else:
        raise SystemExit("init_transactions() succeeded")
elif mode == "bad-topics":
    admin = AdminClient({"bootstrap.servers": bootstrap})
    asks = [NewTopic("too-wide", 1, 3)] * int(sys.argv[3]) + [NewTopic("bad-config", 1, 1, config={"retention.ms": "abc"})]
    for topic in asks:
        try:
            admin.create_topics([topic])[topic.topic].result(30)
        except KafkaException as e:
            print(e.args[0].name())
        else:
            raise SystemExit(f"{topic.topic} was created")
elif mode == "revoke-commit":
    topic, partitions, records = sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    group = "compat-revoke-commit"
    settings = {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                "auto.offset.reset": "earliest", "partition.assignment.strategy": "range",
                "session.timeout.ms": 6000, "heartbeat.interval.ms": 500}
    commits = []

    def on_revoke(consumer, revoked):
        try:
            consumer.commit(asynchronous=False)
            commits.append("ok")
        except KafkaException as e:
            commits.append(e.args[0].name())

    a = Consumer(settings)
    a.subscribe([topic], on_revoke=on_revoke)
    read, deadline = 0, time.time() + 60
    while read < records:
        assert time.time() < deadline, f"member A read {read} of {records}"
        msg = a.poll(0.5)
        if msg is not None and not msg.error():
            read += 1
    b = Consumer(settings)
    b.subscribe([topic])
    deadline = time.time() + 60
    while not commits or not b.assignment() or not a.assignment():
        assert time.time() < deadline, f"no rebalance (commits {commits})"
        a.poll(0.1)
        b.poll(0.1)
    assert commits[0] == "ok", f"the commit in on_revoke failed: {commits}"
    committed = a.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
    total = sum(max(tp.offset, 0) for tp in committed)
    a.close()
    b.close()
    print(f"revoke-commit ok {total}")
elif mode == "compressed-topic":
    topic, codec, count = sys.argv[3], sys.argv[4], int(sys.argv[5])
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(topic, 1, 1, config={"compression.type": codec})])
    futures[topic].result(30)
    producer = Producer({"bootstrap.servers": bootstrap, "compression.type": "none", "linger.ms": 5})
    for i in range(count):
        producer.produce(topic, key=f"k{i}".encode(), value=f"value-{i}".encode(), partition=0)
    assert producer.flush(30) == 0, "records never acknowledged"
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "compat-compressed",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, 0)])
    values, deadline = [], time.time() + 30
    while len(values) < count:
        assert time.time() < deadline, f"read {len(values)} of {count}"
        msg = consumer.poll(1)
        if msg is not None and not msg.error():
            values.append(msg.value().decode())
    consumer.close()
    assert values == [f"value-{i}" for i in range(count)], values[:5]
    print(f"compressed-topic ok {count}")
elif mode == "compacted-produce":
    topic, keys, rounds = sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    admin = AdminClient({"bootstrap.servers": bootstrap})
    config = {"cleanup.policy": "compact", "segment.bytes": "16384", "segment.ms": "1000",
              "min.cleanable.dirty.ratio": "0.01"}
    for future in admin.create_topics([NewTopic(topic, 1, 1, config=config)]).values():
        future.result(30)
    settings = {"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5, "enable.idempotence": True}
    producer = Producer(settings)
    for r in range(rounds):
        if r == rounds - 1:
            # Another idempotent producer overwrites every key: the cleaner keeps the first
            # one's last batch, emptied, so readers meet an empty batch too.
            producer = Producer(settings)
        for k in range(keys):
            tombstone = r == rounds - 1 and k % 10 == 0
            producer.produce(topic, key=f"k{k}".encode(), value=None if tombstone else compacted_value(k, r))
        producer.flush(60)
    time.sleep(1.5)
    producer.produce(topic, key=b"end", value=b"end")
    producer.flush(60)
    print(f"produced {rounds * keys + 1}")
elif mode == "compacted-read":
    topic, keys, rounds = sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"compacted-{time.time()}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=30)
    consumer.assign([TopicPartition(topic, 0, low)])
    seen, last_offset, deadline = [], low - 1, time.time() + 60
    while last_offset < high - 1 and time.time() < deadline:
        message = consumer.poll(1.0)
        if message is None or message.error():
            continue
        seen.append((message.offset(), message.key(), message.value()))
        last_offset = message.offset()
    consumer.close()
    if last_offset < high - 1:
        raise SystemExit(f"read up to {last_offset} of [{low}, {high})")
    newest = {}
    for offset, key, value in seen:
        newest[key] = (offset, value)
    for k in range(keys):
        key = f"k{k}".encode()
        want = None if k % 10 == 0 else compacted_value(k, rounds - 1)
        if key not in newest or newest[key][1] != want:
            print(f"key {key} newest is {newest.get(key)}, expected {want!r}")
            sys.exit(1)
    if len(seen) > keys + 1:
        print(f"{len(seen)} records, not compacted yet")
        sys.exit(2)
    # kafka-python reads the same records (past the empty batches).
    from kafka import KafkaConsumer, TopicPartition as KpPartition
    other = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=10000)
    other.assign([KpPartition(topic, 0)])
    other.seek(KpPartition(topic, 0), low)
    again = []
    for message in other:
        again.append((message.offset, message.key, message.value))
        if message.offset >= high - 1:
            break
    other.close()
    if again != seen:
        print(f"kafka-python read {len(again)} records, not the same {len(seen)}")
        sys.exit(1)
    print(f"compacted ok {len(seen)}")
elif mode == "broker-configs":
    topic, node = sys.argv[3], sys.argv[4]
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)

    def alter(name, entries):
        ops = [ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET if v is not None else AlterConfigOpType.DELETE)
               for k, v in entries]
        resource = ConfigResource(ResourceType.BROKER, name, incremental_configs=ops)
        try:
            admin.incremental_alter_configs([resource])[resource].result(30)
            return "ok"
        except KafkaException as e:
            return e.args[0].name()

    def describe(kind, name):
        resource = ConfigResource(kind, name)
        return admin.describe_configs([resource])[resource].result(30)

    def show(entries, key):
        e = entries[key]
        return f"{key}={e.value} {ConfigSource(e.source).name} read_only={e.is_read_only}"

    print("set", alter(node, [("log.segment.bytes", "8192"), ("log.retention.ms", "1500")]))
    broker = describe(ResourceType.BROKER, node)
    print(show(broker, "log.retention.ms"))
    print(show(broker, "num.partitions"))
    print("advertised.listeners", broker["advertised.listeners"].value.startswith("PLAINTEXT://127.0.0.1:"))
    described = describe(ResourceType.TOPIC, topic)
    print("topic", show(described, "retention.ms"))
    print("topic", show(described, "retention.bytes"))
    print("set read-only", alter(node, [("num.partitions", "3")]))
    print("set bad value", alter(node, [("log.segment.bytes", "10")]))
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "broker-configs"})
    deadline = time.time() + 30
    low = 0
    while time.time() < deadline and low == 0:
        for i in range(50):
            producer.produce(topic, ("x" * 1000).encode())
            producer.poll(0)
        producer.flush(10)
        time.sleep(0.5)
        low, _ = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    print("log start moved", low > 0)
    print("delete", alter(node, [("log.segment.bytes", None), ("log.retention.ms", None)]))
    print(show(describe(ResourceType.BROKER, node), "log.retention.ms"))
    print("topic", show(describe(ResourceType.TOPIC, topic), "retention.ms"))
    consumer.close()
elif mode == "topic-defaults":
    topic = sys.argv[3]
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "retries": 0, "linger.ms": 0})

    def produce():
        outcome = []
        producer.produce(topic, b"v", key=b"k", on_delivery=lambda err, _msg: outcome.append(err))
        producer.flush(30)
        if not outcome:
            return "no answer"
        # The error's name from its repr: name() and str() of this KafkaError raise here after a
        # describe_configs (confluent-kafka 2.x), while its repr does not.
        return "ok" if outcome[0] is None else re.search(r"code=(\w+)", repr(outcome[0])).group(1)

    def alter(entries):
        ops = [ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET if v is not None else AlterConfigOpType.DELETE)
               for k, v in entries]
        resource = ConfigResource(ResourceType.BROKER, "0", incremental_configs=ops)
        try:
            admin.incremental_alter_configs([resource])[resource].result(30)
            return "ok"
        except KafkaException as e:
            return e.args[0].name()

    def show(key):
        resource = ConfigResource(ResourceType.TOPIC, topic)
        entry = admin.describe_configs([resource])[resource].result(30)[key]
        synonyms = ",".join(f"{s.name}:{ConfigSource(s.source).name}" for s in entry.synonyms.values())
        return f"{key}={entry.value} {ConfigSource(entry.source).name} [{synonyms}]"

    print(show("min.insync.replicas"))
    print(show("cleanup.policy"))
    print("acks=all", produce())
    print("lower", alter([("min.insync.replicas", "1")]))
    print(show("min.insync.replicas"))
    print("acks=all", produce())
    print("bad value", alter([("min.insync.replicas", "0")]))
    print("delete", alter([("min.insync.replicas", None)]))
    print("acks=all", produce())
else:
    raise SystemExit(f"unknown mode {mode}")
