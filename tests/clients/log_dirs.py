"""kafka-python's admin client: DescribeLogDirs on every broker for one topic.

Usage: log_dirs.py BOOTSTRAP TOPIC   -> one line per stored replica: BROKER PARTITION SIZE LAG,
then one line per broker: BROKER dir TOTAL_BYTES USABLE_BYTES
"""
import sys

from kafka.admin import KafkaAdminClient

bootstrap, topic = sys.argv[1], sys.argv[2]
admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","), request_timeout_ms=10000)
replicas, dirs = [], []
for answer in admin.describe_log_dirs([topic]):
    broker = answer["broker"]
    for result in answer["log_dirs"]:
        assert result["error_code"] == 0, result
        dirs.append(f"{broker} dir {result['total_bytes']} {result['usable_bytes']}")
        for t in result["topics"]:
            assert t["name"] == topic, t
            for p in t["partitions"]:
                replicas.append(f"{broker} {p['partition_index']} {p['partition_size']} {p['offset_lag']}")
admin.close()
print("\n".join(sorted(replicas) + sorted(dirs)))
