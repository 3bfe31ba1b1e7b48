"""kafka-python's admin client against the newer admin APIs.

  kafka_python_admin.py BOOTSTRAP DATA_DIR
      DescribeProducers (an idempotent producer's state), DescribeTopicPartitions (KIP-966, in
      pages through its cursor), ListConfigResources, AlterReplicaLogDirs (the broker's one log
      directory, and one it does not have). Prints "admin-apis ok".
"""
import sys

from kafka import KafkaAdminClient, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import NoError

bootstrap, data_dir = sys.argv[1], sys.argv[2]
admin = KafkaAdminClient(bootstrap_servers=bootstrap)
admin.create_topics([NewTopic("adm", 5, 1)])
cluster = admin.describe_cluster()["brokers"][0]
broker = cluster.get("node_id", cluster.get("broker_id"))

producer = KafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all")
for i in range(3):
    producer.send("adm", value=f"v{i}".encode(), partition=0).get(30)
producer.close()
state = admin.describe_producers([TopicPartition("adm", 0), TopicPartition("adm", 1)])
active = state[TopicPartition("adm", 0)].active_producers
assert len(active) == 1, active
assert active[0].producer_id >= 0 and active[0].last_sequence == 2 and active[0].last_timestamp > 0, active
assert state[TopicPartition("adm", 1)].active_producers == [], state

first = admin.describe_topic_partitions(["adm", "nope"], response_partition_limit=3)
adm = [t for t in first["topics"] if t["name"] == "adm"][0]
assert [p["partition_index"] for p in adm["partitions"]] == [0, 1, 2], first
assert all(p["leader_id"] == broker and p["replica_nodes"] == [broker] for p in adm["partitions"]), first
assert first["next_cursor"]["topic_name"] == "adm" and first["next_cursor"]["partition_index"] == 3, first
second = admin.describe_topic_partitions(["adm", "nope"], response_partition_limit=3, cursor=first["next_cursor"])
by_name = {t["name"]: t for t in second["topics"]}
assert [p["partition_index"] for p in by_name["adm"]["partitions"]] == [3, 4], second
assert by_name["nope"]["error_code"] == 3, second
assert second["next_cursor"] is None, second

listed = admin.list_config_resources(["TOPIC", "BROKER"])
assert "adm" in listed.get("topic", []) and str(broker) in listed.get("broker", []), listed

moved = admin.alter_replica_log_dirs({("adm", 0, broker): data_dir, ("adm", 1, broker): "/nowhere"})
errors = {tpr.partition: err.__name__ for tpr, err in moved.items()}
assert errors == {0: NoError.__name__, 1: "LogDirNotFoundError"}, errors
admin.close()
print("admin-apis ok")
