"""kafka-python against a replicated topic: produce numbered records one by one (acks=all,
retries on) while the test kills brokers.

Usage: kafka_python_cluster.py BOOTSTRAP TOPIC FIRST COUNT   -> prints the number acknowledged
"""
import sys

from kafka import KafkaProducer

bootstrap, topic, first, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
producer = KafkaProducer(bootstrap_servers=bootstrap.split(","), acks="all", retries=20, retry_backoff_ms=300,
                         request_timeout_ms=10000, max_in_flight_requests_per_connection=1,
                         metadata_max_age_ms=1000)
acked = 0
for i in range(first, first + count):
    producer.send(topic, value=f"m-{i}".encode(), partition=0).get(timeout=60)
    acked += 1
producer.close()
print(acked)
