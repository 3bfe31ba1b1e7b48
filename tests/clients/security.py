"""confluent-kafka over Moldau's secured listeners.

Every mode takes a JSON object of client settings (librdkafka names: security.protocol,
ssl.ca.location, sasl.mechanism, sasl.username, ...) after the mode.

Usage:
  security.py roundtrip SETTINGS TOPIC COUNT
      Produces COUNT records (acks=all) to TOPIC and reads them back with a group consumer.
      Prints "roundtrip ok COUNT".
  security.py refused SETTINGS
      Asks for metadata; the connection must fail to authenticate. Prints "refused NAME" with
      the librdkafka error name (e.g. _AUTHENTICATION).
  security.py add-scram SETTINGS USER PASSWORD MECHANISM ITERATIONS
      AdminClient: creates (or replaces) USER's SCRAM credential, then describes it. Prints
      "scram MECHANISM ITERATIONS" for every credential USER then has.
  security.py delete-scram SETTINGS USER MECHANISM
      AdminClient: removes USER's credential. Prints "deleted" (or "error NAME").
  security.py create-acls SETTINGS ACL...
      AdminClient: creates each ACL, written TYPE:NAME:PATTERN:PRINCIPAL:OPERATION:PERMISSION
      (e.g. TOPIC:orders:LITERAL:User:alice:WRITE:ALLOW), host *. Prints "acls N" with the
      number of ACLs DescribeAcls then lists.
  security.py delete-acls SETTINGS PRINCIPAL
      AdminClient: deletes every ACL of PRINCIPAL. Prints "deleted N".
  security.py produce SETTINGS TOPIC COUNT
      Prints "produced COUNT", or "error NAME" with the first delivery error.
  security.py consume SETTINGS TOPIC GROUP COUNT
      Reads COUNT records in GROUP. Prints "consumed COUNT", or "error NAME".
  security.py topics SETTINGS
      Prints "topics A,B,..." (the topics Metadata shows, internal ones left out).
  security.py authorized-operations SETTINGS TOPIC GROUP
      AdminClient: the operations the principal may do on TOPIC, the cluster and GROUP, as the
      broker reports them. Prints "topic OPS", "cluster OPS", "group OPS" (sorted names).
  security.py create-topic SETTINGS TOPIC PARTITIONS REPLICAS [NAME=VALUE...]
      AdminClient: creates TOPIC with those topic configs. Prints "created TOPIC".
  security.py mutual-tls SETTINGS HOST:PORT
      Python's ssl, no Kafka: a TLS handshake presenting SETTINGS' ssl.certificate.location and
      ssl.key.location, the server checked against ssl.ca.location (no host name check), then
      sends four bytes and reads. Prints "accepted" when neither side refused the other (the
      server may still close the connection), else "refused REASON".
"""
import json
import socket
import ssl
import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicCollection
from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation, AclPermissionType,
                                   AdminClient, NewTopic, ResourcePatternType, ResourceType, ScramCredentialInfo,
                                   ScramMechanism, UserScramCredentialDeletion, UserScramCredentialUpsertion)

mode, settings = sys.argv[1], json.loads(sys.argv[2])
MECHANISMS = {"SCRAM-SHA-256": ScramMechanism.SCRAM_SHA_256, "SCRAM-SHA-512": ScramMechanism.SCRAM_SHA_512}


def result(future_or_dict):
    if isinstance(future_or_dict, dict):
        return {k: f.result(30) for k, f in future_or_dict.items()}
    return future_or_dict.result(30)


if mode == "roundtrip":
    topic, count = sys.argv[3], int(sys.argv[4])
    producer = Producer({**settings, "acks": "all", "enable.idempotence": True})
    failures = []
    for i in range(count):
        producer.produce(topic, key=f"k{i}", value=f"secure-{i}",
                         on_delivery=lambda err, msg: err and failures.append(err))
        producer.poll(0)
    left = producer.flush(60)
    if left or failures:
        raise SystemExit(f"produce failed: {left} undelivered, errors {failures[:3]}")
    consumer = Consumer({**settings, "group.id": f"secure-{topic}", "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    seen = set()
    deadline = time.time() + 60
    while len(seen) < count and time.time() < deadline:
        msg = consumer.poll(1.0)
        if msg is None:
            continue
        if msg.error():
            raise SystemExit(f"consume failed: {msg.error()}")
        seen.add(msg.value().decode())
    consumer.close()
    if seen != {f"secure-{i}" for i in range(count)}:
        raise SystemExit(f"read {len(seen)} of {count} records")
    print(f"roundtrip ok {count}")
elif mode == "refused":
    errors = []
    admin = AdminClient({**settings, "error_cb": lambda err: errors.append(err)})
    try:
        admin.list_topics(timeout=5)
    except KafkaException as e:
        errors.append(e.args[0])
    else:
        raise SystemExit("metadata was served")
    admin.poll(1)  # serves error_cb, which names the authentication failure
    names = [e.name() for e in errors]
    print("refused " + ("_AUTHENTICATION" if "_AUTHENTICATION" in names else ",".join(names)))
elif mode == "add-scram":
    user, password, mechanism, iterations = sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6])
    admin = AdminClient(settings)
    info = ScramCredentialInfo(MECHANISMS[mechanism], iterations)
    result(admin.alter_user_scram_credentials([UserScramCredentialUpsertion(user, info, password.encode())]))
    described = result(admin.describe_user_scram_credentials([user]))
    for info in described[user].scram_credential_infos:
        print(f"scram {info.mechanism.name.replace('_', '-')} {info.iterations}")
elif mode == "delete-scram":
    user, mechanism = sys.argv[3], sys.argv[4]
    admin = AdminClient(settings)
    try:
        result(admin.alter_user_scram_credentials([UserScramCredentialDeletion(user, MECHANISMS[mechanism])]))
        print("deleted")
    except KafkaException as e:
        print(f"error {e.args[0].name()}")
elif mode == "create-acls":
    admin = AdminClient(settings)
    bindings = []
    for spec in sys.argv[3:]:
        rtype, name, pattern, kind, user, operation, permission = spec.split(":")
        bindings.append(AclBinding(ResourceType[rtype], name, ResourcePatternType[pattern], f"{kind}:{user}", "*",
                                   AclOperation[operation], AclPermissionType[permission]))
    result(admin.create_acls(bindings))
    everything = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
                                  AclOperation.ANY, AclPermissionType.ANY)
    print(f"acls {len(result(admin.describe_acls(everything)))}")
elif mode == "delete-acls":
    admin = AdminClient(settings)
    of_principal = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, sys.argv[3], None,
                                    AclOperation.ANY, AclPermissionType.ANY)
    deleted = result(admin.delete_acls([of_principal]))
    print(f"deleted {sum(len(v) for v in deleted.values())}")
elif mode == "produce":
    topic, count = sys.argv[3], int(sys.argv[4])
    producer = Producer({**settings, "acks": "all", "message.timeout.ms": 10000})
    failures = []
    for i in range(count):
        producer.produce(topic, value=f"acl-{i}", on_delivery=lambda err, msg: err and failures.append(err))
    producer.flush(30)
    print(f"error {failures[0].name()}" if failures else f"produced {count}")
elif mode == "consume":
    topic, group, count = sys.argv[3], sys.argv[4], int(sys.argv[5])
    consumer = Consumer({**settings, "group.id": group, "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    seen, error = 0, None
    deadline = time.time() + 30
    while seen < count and error is None and time.time() < deadline:
        msg = consumer.poll(1.0)
        if msg is None:
            continue
        if msg.error():
            error = msg.error().name()
        else:
            seen += 1
    consumer.close()
    print(f"error {error}" if error else f"consumed {seen}")
elif mode == "topics":
    admin = AdminClient(settings)
    topics = admin.list_topics(timeout=15).topics
    print("topics " + ",".join(sorted(t for t in topics if not t.startswith("__"))))
elif mode == "authorized-operations":
    topic, group = sys.argv[3], sys.argv[4]
    admin = AdminClient(settings)
    names = lambda ops: ",".join(sorted(op.name for op in ops or []))
    described = result(admin.describe_topics(TopicCollection([topic]), include_authorized_operations=True))
    print("topic " + names(described[topic].authorized_operations))
    print("cluster " + names(result(admin.describe_cluster(include_authorized_operations=True)).authorized_operations))
    groups = result(admin.describe_consumer_groups([group], include_authorized_operations=True))
    print("group " + names(groups[group].authorized_operations))
elif mode == "create-topic":
    topic, partitions, replicas = sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    configs = dict(arg.split("=", 1) for arg in sys.argv[6:])
    admin = AdminClient(settings)
    result(admin.create_topics([NewTopic(topic, partitions, replicas, config=configs)]))
    print(f"created {topic}")
elif mode == "mutual-tls":
    host, port = sys.argv[3].rsplit(":", 1)
    context = ssl.create_default_context(cafile=settings["ssl.ca.location"])
    context.check_hostname = False
    context.load_cert_chain(settings["ssl.certificate.location"], settings["ssl.key.location"])
    try:
        with socket.create_connection((host, int(port)), timeout=10) as raw:
            with context.wrap_socket(raw) as tls:
                # TLS 1.3 servers refuse a client certificate after the handshake: read to see it.
                tls.sendall(b"\0\0\0\0")
                tls.recv(1)
        print("accepted")
    except ssl.SSLError as err:
        print(f"refused {err.reason}")
    except (ConnectionError, socket.timeout) as err:
        print(f"accepted ({err!r})")
else:
    raise SystemExit(f"unknown mode {mode}")
