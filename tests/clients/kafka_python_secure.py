"""kafka-python over a secured listener: produce and consume with SASL (PLAIN or SCRAM) over TLS
or plain TCP; or, with a wrong password, the login must fail.

Usage: kafka_python_secure.py BOOTSTRAP PROTOCOL MECHANISM USER PASSWORD CAFILE TOPIC COUNT
  PROTOCOL: SASL_SSL or SASL_PLAINTEXT (CAFILE is ignored for the latter).
  Prints "roundtrip ok COUNT", or "refused" when COUNT is 0 and the login fails.
"""
import sys

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

bootstrap, protocol, mechanism, user, password, cafile, topic, count = sys.argv[1:9]
count = int(count)
settings = dict(bootstrap_servers=bootstrap, security_protocol=protocol, sasl_mechanism=mechanism,
                sasl_plain_username=user, sasl_plain_password=password)
if protocol.endswith("SSL"):
    settings.update(ssl_cafile=cafile, ssl_check_hostname=True)

if count == 0:
    try:
        producer = KafkaProducer(**settings, request_timeout_ms=5000, max_block_ms=5000)
        producer.send(topic, b"x").get(timeout=5)
    except KafkaError as e:
        print(f"refused {type(e).__name__}")
        sys.exit(0)
    raise SystemExit("a wrong password logged in")

producer = KafkaProducer(**settings, acks="all")
futures = [producer.send(topic, key=b"k%d" % i, value=b"kp-%d" % i, partition=0) for i in range(count)]
producer.flush()
for f in futures:
    f.get(timeout=30)
producer.close()
consumer = KafkaConsumer(**settings, enable_auto_commit=False, consumer_timeout_ms=10000)
consumer.assign([TopicPartition(topic, 0)])
consumer.seek_to_beginning()
got = set()
for msg in consumer:
    got.add(msg.value)
    if len(got) == count:
        break
consumer.close()
if got != {b"kp-%d" % i for i in range(count)}:
    raise SystemExit(f"read {len(got)} of {count}")
print(f"roundtrip ok {count}")
