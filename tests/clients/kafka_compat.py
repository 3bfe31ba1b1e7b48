"""confluent-kafka cases where Moldau must answer as Kafka does.

Usage:
  kafka_compat.py transactions BOOTSTRAP
      init_transactions() must fail at once with a non-retriable error (no transaction
      coordinator yet), not wait out its timeout. Prints "refused CODE".
  kafka_compat.py revoke-commit BOOTSTRAP TOPIC PARTITIONS RECORDS
      Member A reads every record without committing; member B joins; A commits what it read in
      its partitions-revoked callback (the group is preparing the rebalance then, which Kafka
      allows). Prints "revoke-commit ok COMMITTED" with the offsets committed in total.
  kafka_compat.py compressed-topic BOOTSTRAP TOPIC CODEC COUNT
      AdminClient creates TOPIC with compression.type=CODEC; an uncompressed producer writes
      COUNT records; a consumer reads them back. Prints "compressed-topic ok COUNT".
"""
import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

mode, bootstrap = sys.argv[1], sys.argv[2]

if mode == "transactions":
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": "compat-tx"})
    try:
        producer.init_transactions(30)
    except KafkaException as e:
        print(f"refused {e.args[0].name()}")
    else:
        raise SystemExit("init_transactions() succeeded")
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
else:
    raise SystemExit(f"unknown mode {mode}")
