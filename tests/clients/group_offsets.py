"""confluent-kafka and a group's committed offsets across a coordinator failover.

Usage:
  group_offsets.py commit BOOTSTRAP TOPIC GROUP OFFSET   commits OFFSET for partition 0
  group_offsets.py resume BOOTSTRAP TOPIC GROUP          joins the group, prints the offset of
                                                         the first record it is given
"""
import sys
import time

from confluent_kafka import Consumer, TopicPartition

mode, bootstrap, topic, group = sys.argv[1:5]
consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                     "auto.offset.reset": "earliest", "session.timeout.ms": 6000})
if mode == "commit":
    offset = int(sys.argv[5])
    consumer.commit(offsets=[TopicPartition(topic, 0, offset)], asynchronous=False)
    committed = consumer.committed([TopicPartition(topic, 0)], timeout=30)[0]
    assert committed.offset == offset, committed
    print(committed.offset)
elif mode == "resume":
    consumer.subscribe([topic])
    deadline = time.time() + 60
    msg = None
    while time.time() < deadline:
        msg = consumer.poll(1)
        if msg is not None and not msg.error():
            break
        msg = None
    assert msg is not None, "no record within 60 s"
    print(msg.offset())
else:
    raise SystemExit(f"unknown mode {mode}")
consumer.close()
