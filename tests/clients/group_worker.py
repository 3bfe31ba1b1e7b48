"""A consumer-group member driven by a test: reports what it is assigned and every record it
processes, commits after each record (at-least-once), leaves the group cleanly on "stop".

Usage: group_worker.py BOOTSTRAP TOPIC GROUP NAME [--client confluent|kafka-python]
       [--strategy range|roundrobin|cooperative-sticky] [--instance-id ID] [--session-ms MS]
       [--protocol classic|consumer] [--remote-assignor uniform|range]

With --protocol consumer (confluent only) the member speaks KIP-848's ConsumerGroupHeartbeat:
the broker assigns, and sessions and heartbeats are the broker's settings.

Output lines: READY name | ASSIGNED name p,p,... | REVOKED name p,... | RECORD name p offset value
"""
import argparse

from stdin_stop import stop_on_stdin

parser = argparse.ArgumentParser()
parser.add_argument("bootstrap")
parser.add_argument("topic")
parser.add_argument("group")
parser.add_argument("name")
parser.add_argument("--client", default="confluent")
parser.add_argument("--strategy", default="range")
parser.add_argument("--instance-id")
parser.add_argument("--session-ms", type=int, default=6000)
parser.add_argument("--protocol", default="classic")
parser.add_argument("--remote-assignor")
args = parser.parse_args()

stop = stop_on_stdin()


def say(*parts):
    print(" ".join(str(p) for p in parts), flush=True)


assigned = set()

if args.client == "confluent":
    from confluent_kafka import Consumer, KafkaException

    config = {
        "bootstrap.servers": args.bootstrap,
        "group.id": args.group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": args.session_ms,
        "heartbeat.interval.ms": max(100, min(1000, args.session_ms // 3)),
        "partition.assignment.strategy": args.strategy,
    }
    if args.instance_id:
        config["group.instance.id"] = args.instance_id
    if args.protocol == "consumer":
        for classic_only in ("session.timeout.ms", "heartbeat.interval.ms", "partition.assignment.strategy"):
            del config[classic_only]
        config["group.protocol"] = "consumer"
        if args.remote_assignor:
            config["group.remote.assignor"] = args.remote_assignor
    consumer = Consumer(config)

    def on_assign(c, partitions):
        assigned.update(p.partition for p in partitions)
        say("ASSIGNED", args.name, ",".join(str(p) for p in sorted(assigned)))

    def on_revoke(c, partitions):
        assigned.difference_update(p.partition for p in partitions)
        say("REVOKED", args.name, ",".join(str(p.partition) for p in partitions))

    consumer.subscribe([args.topic], on_assign=on_assign, on_revoke=on_revoke)
    say("READY", args.name)
    while not stop.is_set():
        msg = consumer.poll(0.2)
        if msg is None:
            continue
        if msg.error():
            say("ERROR", args.name, msg.error())
            continue
        say("RECORD", args.name, msg.partition(), msg.offset(), msg.value().decode())
        consumer.commit(message=msg, asynchronous=False)
    consumer.close()
else:
    from kafka import KafkaConsumer
    from kafka.consumer.subscription_state import ConsumerRebalanceListener

    class Listener(ConsumerRebalanceListener):
        def on_partitions_assigned(self, partitions):
            assigned.update(p.partition for p in partitions)
            say("ASSIGNED", args.name, ",".join(str(p) for p in sorted(assigned)))

        def on_partitions_revoked(self, partitions):
            assigned.difference_update(p.partition for p in partitions)
            say("REVOKED", args.name, ",".join(str(p.partition) for p in partitions))

    consumer = KafkaConsumer(bootstrap_servers=args.bootstrap, group_id=args.group, enable_auto_commit=False,
                             auto_offset_reset="earliest", session_timeout_ms=args.session_ms,
                             heartbeat_interval_ms=max(100, min(1000, args.session_ms // 3)))
    consumer.subscribe([args.topic], listener=Listener())
    say("READY", args.name)
    while not stop.is_set():
        batches = consumer.poll(timeout_ms=200)
        for tp, messages in batches.items():
            for msg in messages:
                say("RECORD", args.name, msg.partition, msg.offset, msg.value.decode())
            consumer.commit()
    consumer.close()
say("STOPPED", args.name)
