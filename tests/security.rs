//! Secured listeners with real clients and raw sockets: TLS (rustls) with a CA the test makes
//! with `openssl`, SASL PLAIN and SCRAM-SHA-256/512 with confluent-kafka, SCRAM users created
//! through an AdminClient on the plaintext listener, and every kind of bad input on the
//! secured ports.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Broker, TempDir, TestCa, openssl, python, run_ok, stdout};

const CLIENT_TIMEOUT: Duration = Duration::from_secs(180);

/// A broker with SSL, SASL_SSL and SASL_PLAINTEXT listeners beside the plaintext one; PLAIN
/// user alice (from the JAAS option, as Kafka takes it) and bob (from a users file).
fn secured_broker(name: &str, ca: &TestCa, extra: &[&str]) -> Broker {
    std::fs::write(ca.dir.join("plain-users"), "# PLAIN users\nbob=bob-secret\n").unwrap();
    let mut args = vec![
        "--set".to_owned(),
        "listeners=PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:0,SASL_SSL://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0".to_owned(),
        "--set".to_owned(),
        format!("ssl.keystore.location={}", ca.path("broker-keystore.pem")),
        "--set".to_owned(),
        format!("ssl.truststore.location={}", ca.path("ca.pem")),
        "--set".to_owned(),
        "ssl.client.auth=requested".to_owned(),
        "--set".to_owned(),
        r#"listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_alice="alice-secret";"#.to_owned(),
        "--set".to_owned(),
        format!("sasl_plain_users_file=\"{}\"", ca.path("plain-users")),
        "--set".to_owned(),
        "connection.failed.authentication.delay.ms=300".to_owned(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    Broker::start(name, &args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn client_settings(broker: &Broker, ca: &TestCa, listener: &str, extra: &[(&str, &str)]) -> String {
    let mut settings = serde_json::Map::new();
    settings.insert("bootstrap.servers".into(), broker.listener(listener).into());
    settings.insert("security.protocol".into(), listener.into());
    if listener.ends_with("SSL") {
        settings.insert("ssl.ca.location".into(), ca.path("ca.pem").into());
    }
    for (key, value) in extra {
        settings.insert((*key).into(), (*value).into());
    }
    serde_json::Value::Object(settings).to_string()
}

fn roundtrip(settings: &str, topic: &str) {
    let out =
        run_ok(&mut python("security.py", &["roundtrip", settings, topic, "200"]), "secured roundtrip", CLIENT_TIMEOUT);
    assert!(stdout(&out).contains("roundtrip ok 200"), "{}", stdout(&out));
}

fn refused(settings: &str) -> String {
    let out = run_ok(&mut python("security.py", &["refused", settings]), "refused login", CLIENT_TIMEOUT);
    stdout(&out).trim().to_owned()
}

fn sasl<'a>(mechanism: &'a str, user: &'a str, password: &'a str) -> [(&'a str, &'a str); 3] {
    [("sasl.mechanism", mechanism), ("sasl.username", user), ("sasl.password", password)]
}

#[test]
fn tls_and_sasl_listeners_serve_real_clients_and_scram_users_come_from_the_admin_api() {
    let dir = TempDir::new("security-ca");
    let ca = TestCa::new(&dir);
    let mut broker = secured_broker("secured", &ca, &[]);
    // A SCRAM user made through the plaintext listener with an AdminClient.
    let admin = client_settings(&broker, &ca, "PLAINTEXT", &[]);
    for (mechanism, iterations) in [("SCRAM-SHA-512", "8192"), ("SCRAM-SHA-256", "4096")] {
        let out = run_ok(
            &mut python("security.py", &["add-scram", &admin, "carol", "carol-secret", mechanism, iterations]),
            "add SCRAM user",
            CLIENT_TIMEOUT,
        );
        assert!(stdout(&out).contains(&format!("scram {mechanism} {iterations}")), "{}", stdout(&out));
    }
    // TLS, without and with a client certificate.
    roundtrip(&client_settings(&broker, &ca, "SSL", &[]), "tls");
    let mtls = [("ssl.certificate.location", ca.path("client.pem")), ("ssl.key.location", ca.path("client.key"))];
    let mtls: Vec<(&str, &str)> = mtls.iter().map(|(k, v)| (*k, v.as_str())).collect();
    roundtrip(&client_settings(&broker, &ca, "SSL", &mtls), "mtls");
    // SASL over TLS and over plain TCP, every mechanism.
    roundtrip(&client_settings(&broker, &ca, "SASL_SSL", &sasl("SCRAM-SHA-512", "carol", "carol-secret")), "scram512");
    roundtrip(&client_settings(&broker, &ca, "SASL_SSL", &sasl("PLAIN", "alice", "alice-secret")), "plain-jaas");
    roundtrip(&client_settings(&broker, &ca, "SASL_PLAINTEXT", &sasl("PLAIN", "bob", "bob-secret")), "plain-file");
    roundtrip(
        &client_settings(&broker, &ca, "SASL_PLAINTEXT", &sasl("SCRAM-SHA-256", "carol", "carol-secret")),
        "scram256",
    );
    // Wrong passwords, unknown users, and a mechanism the user has no credential for.
    for (listener, mechanism, user, password) in [
        ("SASL_SSL", "SCRAM-SHA-512", "carol", "wrong"),
        ("SASL_SSL", "PLAIN", "alice", "wrong"),
        ("SASL_PLAINTEXT", "SCRAM-SHA-256", "nobody", "x"),
        ("SASL_PLAINTEXT", "PLAIN", "carol", "carol-secret"),
    ] {
        let said = refused(&client_settings(&broker, &ca, listener, &sasl(mechanism, user, password)));
        assert_eq!(said, "refused _AUTHENTICATION", "{listener} {mechanism} {user}");
    }
    // A PLAIN user added to the file logs in without a restart.
    std::fs::write(ca.dir.join("plain-users"), "bob=bob-secret\ndave=dave-secret\n").unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    roundtrip(
        &client_settings(&broker, &ca, "SASL_PLAINTEXT", &sasl("PLAIN", "dave", "dave-secret")),
        "plain-reloaded",
    );
    // SCRAM credentials are cluster metadata: they survive a restart, and deleting one works.
    broker.restart_clean();
    roundtrip(&client_settings(&broker, &ca, "SASL_SSL", &sasl("SCRAM-SHA-512", "carol", "carol-secret")), "scram512");
    let admin = client_settings(&broker, &ca, "PLAINTEXT", &[]);
    let out = run_ok(
        &mut python("security.py", &["delete-scram", &admin, "carol", "SCRAM-SHA-512"]),
        "delete",
        CLIENT_TIMEOUT,
    );
    assert!(stdout(&out).contains("deleted"), "{}", stdout(&out));
    let out = run_ok(
        &mut python("security.py", &["delete-scram", &admin, "carol", "SCRAM-SHA-512"]),
        "delete",
        CLIENT_TIMEOUT,
    );
    assert!(stdout(&out).contains("error RESOURCE_NOT_FOUND"), "{}", stdout(&out));
    let said = refused(&client_settings(&broker, &ca, "SASL_SSL", &sasl("SCRAM-SHA-512", "carol", "carol-secret")));
    assert_eq!(said, "refused _AUTHENTICATION");
    roundtrip(
        &client_settings(&broker, &ca, "SASL_PLAINTEXT", &sasl("SCRAM-SHA-256", "carol", "carol-secret")),
        "scram256",
    );
}

#[test]
fn a_client_certificate_names_its_principal_as_kafka_does() {
    let dir = TempDir::new("security-principal");
    let _ca = TestCa::new(&dir);
    openssl(&dir, &["x509", "-in", "client.pem", "-outform", "der", "-out", "client.der"]);
    let der = std::fs::read(dir.join("client.der")).unwrap();
    assert_eq!(moldau::security::tls::subject_name(&der).as_deref(), Some("CN=alice,OU=eng,O=Moldau Test"));
}

#[test]
fn tls_certificates_are_read_again_when_their_file_changes() {
    let dir = TempDir::new("security-reload");
    let ca = TestCa::new(&dir);
    let broker = secured_broker("tls-reload", &ca, &[]);
    let served = |addr: &str| {
        let out = run_ok(
            Command::new("python3").args([
                "-c",
                "import ssl,sys; h,p=sys.argv[1].rsplit(':',1); print(ssl.get_server_certificate((h,int(p))))",
                addr,
            ]),
            "get the served certificate",
            CLIENT_TIMEOUT,
        );
        stdout(&out).split_whitespace().collect::<String>()
    };
    let pem = |file: &str| std::fs::read_to_string(dir.join(file)).unwrap().split_whitespace().collect::<String>();
    assert_eq!(served(&broker.listener("SSL")), pem("broker.pem"));
    // A renewed certificate in the same file is served to new connections, no restart.
    ca.issue("renewed", "/CN=localhost", "broker.ext");
    let key = std::fs::read_to_string(dir.join("renewed.key")).unwrap();
    let cert = std::fs::read_to_string(dir.join("renewed.pem")).unwrap();
    std::fs::write(dir.join("broker-keystore.pem"), format!("{key}{cert}")).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let deadline = Instant::now() + Duration::from_secs(10);
    while served(&broker.listener("SSL")) != pem("renewed.pem") {
        assert!(Instant::now() < deadline, "the renewed certificate is not served");
        std::thread::sleep(Duration::from_millis(200));
    }
    // A broken file keeps the last good one in use.
    std::fs::write(dir.join("broker-keystore.pem"), "not a key store").unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(served(&broker.listener("SSL")), pem("renewed.pem"));
    roundtrip(&client_settings(&broker, &ca, "SSL", &[]), "after-reload");
}

// ---- raw sockets ----

fn request(stream: &mut TcpStream, api_key: i16, version: i16, body: &[u8]) -> Option<Vec<u8>> {
    stream.write_all(&common::request_frame(api_key, version, body)).ok()?;
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).ok()?;
    let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
    stream.read_exact(&mut body).ok()?;
    Some(body[4..].to_vec())
}

/// Whether the broker closes the connection (whatever it sends before, e.g. a TLS alert).
fn closed(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    for _ in 0..16 {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) => return !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
        }
    }
    false
}

fn connect(addr: &str) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream
}

fn string(s: &str) -> Vec<u8> {
    let mut out = (s.len() as i16).to_be_bytes().to_vec();
    out.extend_from_slice(s.as_bytes());
    out
}

fn bytes_field(b: &[u8]) -> Vec<u8> {
    let mut out = (b.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(b);
    out
}

const API_VERSIONS: i16 = 18;
const METADATA: i16 = 3;
const SASL_HANDSHAKE: i16 = 17;
const SASL_AUTHENTICATE: i16 = 36;

fn error_code(body: &[u8]) -> i16 {
    i16::from_be_bytes([body[0], body[1]])
}

/// SaslHandshake for `mechanism`, then one SaslAuthenticate (v1) with `token`: its error code
/// and how long the answer took.
fn authenticate(addr: &str, mechanism: &str, token: &[u8]) -> (i16, Duration, TcpStream) {
    let mut stream = connect(addr);
    let handshake = request(&mut stream, SASL_HANDSHAKE, 1, &string(mechanism)).expect("handshake answered");
    assert_eq!(error_code(&handshake), 0);
    let started = Instant::now();
    let answer = request(&mut stream, SASL_AUTHENTICATE, 1, &bytes_field(token)).expect("authenticate answered");
    (error_code(&answer), started.elapsed(), stream)
}

#[test]
fn bad_input_on_secured_listeners_gets_kafka_errors_and_closes_only_that_connection() {
    let dir = TempDir::new("security-bad");
    let ca = TestCa::new(&dir);
    let broker = secured_broker("secured-bad", &ca, &[]);
    let sasl_plain = broker.listener("SASL_PLAINTEXT");
    // A plaintext Kafka client on the TLS port: the handshake fails, the connection closes.
    let mut stream = connect(&broker.listener("SSL"));
    stream.write_all(&common::request_frame(API_VERSIONS, 0, &[])).unwrap();
    assert!(closed(&mut stream), "plaintext on the TLS port is closed");
    // A TLS client on the plaintext port: its ClientHello is no Kafka frame.
    let mut stream = connect(&broker.addr);
    stream.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]).unwrap();
    assert!(closed(&mut stream), "TLS on the plaintext port is closed");
    // Requests before the SASL handshake: ApiVersions is answered, anything else closes.
    let mut stream = connect(&sasl_plain);
    assert!(request(&mut stream, API_VERSIONS, 0, &[]).is_some(), "ApiVersions before authentication");
    assert!(request(&mut stream, METADATA, 1, &(-1i32).to_be_bytes()).is_none(), "Metadata before the handshake");
    let mut stream = connect(&sasl_plain);
    assert!(request(&mut stream, SASL_AUTHENTICATE, 1, &bytes_field(b"\0alice\0alice-secret")).is_none());
    // An unknown mechanism: UNSUPPORTED_SASL_MECHANISM with the enabled ones, then closed.
    let mut stream = connect(&sasl_plain);
    let answer = request(&mut stream, SASL_HANDSHAKE, 1, &string("GSSAPI")).unwrap();
    assert_eq!(error_code(&answer), 33);
    let listed = String::from_utf8_lossy(&answer);
    assert!(["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"].iter().all(|m| listed.contains(m)), "{listed}");
    assert!(closed(&mut stream));
    // Wrong, garbage and oversized tokens: SASL_AUTHENTICATION_FAILED after the delay, closed.
    for (mechanism, token) in [
        ("PLAIN", b"\0bob\0wrong".to_vec()),
        ("PLAIN", b"garbage".to_vec()),
        ("PLAIN", vec![0u8; 9000]),
        ("SCRAM-SHA-256", b"n,,garbage".to_vec()),
        ("SCRAM-SHA-512", vec![0xff; 64]),
    ] {
        let (code, took, mut stream) = authenticate(&sasl_plain, mechanism, &token);
        assert_eq!(code, 58, "{mechanism} {:?}", String::from_utf8_lossy(&token));
        assert!(took >= Duration::from_millis(250), "a failed authentication is answered late ({took:?})");
        assert!(closed(&mut stream), "closed after a failed authentication");
    }
    // SASL requests on the plaintext listener: ILLEGAL_SASL_STATE, the connection stays.
    let mut stream = connect(&broker.addr);
    let answer = request(&mut stream, SASL_HANDSHAKE, 1, &string("PLAIN")).unwrap();
    assert_eq!(error_code(&answer), 34);
    let answer = request(&mut stream, SASL_AUTHENTICATE, 1, &bytes_field(b"\0bob\0bob-secret")).unwrap();
    assert_eq!(error_code(&answer), 34);
    assert!(request(&mut stream, API_VERSIONS, 0, &[]).is_some());
    // The right password still works, on a raw socket too, and the broker serves everyone.
    let (code, _, mut stream) = authenticate(&sasl_plain, "PLAIN", b"\0bob\0bob-secret");
    assert_eq!(code, 0);
    assert!(request(&mut stream, METADATA, 1, &(-1i32).to_be_bytes()).is_some(), "Metadata once authenticated");
    roundtrip(&client_settings(&broker, &ca, "SASL_SSL", &sasl("PLAIN", "alice", "alice-secret")), "after-bad-input");
}

#[test]
fn a_sasl_session_past_connections_max_reauth_ms_must_authenticate_again() {
    let dir = TempDir::new("security-reauth");
    let ca = TestCa::new(&dir);
    let broker = secured_broker("secured-reauth", &ca, &["--set", "connections.max.reauth.ms=1000"]);
    let sasl_plain = broker.listener("SASL_PLAINTEXT");
    let mut stream = connect(&sasl_plain);
    request(&mut stream, SASL_HANDSHAKE, 1, &string("PLAIN")).unwrap();
    let answer = request(&mut stream, SASL_AUTHENTICATE, 1, &bytes_field(b"\0bob\0bob-secret")).unwrap();
    assert_eq!(error_code(&answer), 0);
    let lifetime = i64::from_be_bytes(answer[answer.len() - 8..].try_into().unwrap());
    assert_eq!(lifetime, 1000, "session_lifetime_ms tells the client");
    std::thread::sleep(Duration::from_millis(1200));
    // Re-authentication (KIP-368) renews the session...
    let answer = request(&mut stream, SASL_HANDSHAKE, 1, &string("PLAIN")).unwrap();
    assert_eq!(error_code(&answer), 0);
    let answer = request(&mut stream, SASL_AUTHENTICATE, 1, &bytes_field(b"\0bob\0bob-secret")).unwrap();
    assert_eq!(error_code(&answer), 0);
    assert!(request(&mut stream, METADATA, 1, &(-1i32).to_be_bytes()).is_some());
    // ...and a session left to expire is closed on its next request.
    std::thread::sleep(Duration::from_millis(1200));
    assert!(request(&mut stream, METADATA, 1, &(-1i32).to_be_bytes()).is_none(), "an expired session is closed");
    // librdkafka re-authenticates on its own and keeps working past several lifetimes.
    roundtrip(&client_settings(&broker, &ca, "SASL_SSL", &sasl("PLAIN", "alice", "alice-secret")), "reauth");
}

#[test]
fn listener_settings_that_cannot_work_are_refused_at_start() {
    for (set, expect) in [
        ("listeners=SSL://127.0.0.1:0", "PLAINTEXT listener"),
        ("listeners=PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:0", "ssl_keystore_location"),
        ("listeners=PLAINTEXT://127.0.0.1:0,INTERNAL://127.0.0.1:0", "listener_security_protocol_map"),
        ("sasl.enabled.mechanisms=GSSAPI", "GSSAPI"),
        ("ssl.keystore.type=JKS", "PEM"),
        ("inter.broker.listener.name=SASL_SSL", "PLAINTEXT"),
    ] {
        let dir = TempDir::new("security-refused");
        let out = common::run(
            &mut common::moldau(&["serve", "--data-dir", &dir.0.display().to_string(), "--set", set]),
            Duration::from_secs(60),
        );
        assert!(!out.status.success(), "{set} was taken");
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(said.contains(expect), "{set}: {said}");
    }
}

fn script(args: &[&str]) -> String {
    let out = run_ok(&mut python("security.py", args), args[0], CLIENT_TIMEOUT);
    stdout(&out).trim().to_owned()
}

#[test]
fn acls_decide_who_writes_reads_and_sees_what() {
    let dir = TempDir::new("security-acl");
    let ca = TestCa::new(&dir);
    // The plaintext listener's anonymous principal is a super user (brokers and the admin use it).
    let broker = secured_broker(
        "secured-acl",
        &ca,
        &[
            "--set",
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "--set",
            "super.users=User:admin;User:ANONYMOUS",
        ],
    );
    let admin = client_settings(&broker, &ca, "PLAINTEXT", &[]);
    assert_eq!(script(&["produce", &admin, "orders", "5"]), "produced 5", "super user auto-creates and writes");
    assert_eq!(script(&["produce", &admin, "secret", "5"]), "produced 5");
    let mtls_user = "User:CN=alice,OU=eng,O=Moldau Test";
    let said = script(&[
        "create-acls",
        &admin,
        "TOPIC:orders:LITERAL:User:bob:WRITE:ALLOW",
        "TOPIC:ord:PREFIXED:User:bob:READ:ALLOW",
        "GROUP:bob-:PREFIXED:User:bob:READ:ALLOW",
        &format!("TOPIC:orders:LITERAL:{mtls_user}:WRITE:ALLOW"),
    ]);
    assert_eq!(said, "acls 4");
    let bob = client_settings(&broker, &ca, "SASL_PLAINTEXT", &sasl("PLAIN", "bob", "bob-secret"));
    assert_eq!(script(&["produce", &bob, "orders", "10"]), "produced 10");
    assert_eq!(script(&["produce", &bob, "secret", "1"]), "error TOPIC_AUTHORIZATION_FAILED");
    assert_eq!(script(&["consume", &bob, "orders", "bob-readers", "15"]), "consumed 15");
    assert_eq!(script(&["consume", &bob, "orders", "other-group", "1"]), "error GROUP_AUTHORIZATION_FAILED");
    assert_eq!(script(&["consume", &bob, "secret", "bob-readers", "1"]), "error TOPIC_AUTHORIZATION_FAILED");
    // Topics a principal may not describe are invisible to it.
    assert_eq!(script(&["topics", &bob]), "topics orders");
    let alice = client_settings(&broker, &ca, "SASL_SSL", &sasl("PLAIN", "alice", "alice-secret"));
    assert_eq!(script(&["topics", &alice]), "topics", "alice may describe no topic");
    assert_eq!(script(&["produce", &alice, "orders", "1"]), "error TOPIC_AUTHORIZATION_FAILED");
    // A TLS client certificate's subject is the principal the ACL names.
    let mtls = [("ssl.certificate.location", ca.path("client.pem")), ("ssl.key.location", ca.path("client.key"))];
    let mtls: Vec<(&str, &str)> = mtls.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let cert = client_settings(&broker, &ca, "SSL", &mtls);
    assert_eq!(script(&["produce", &cert, "orders", "3"]), "produced 3");
    assert_eq!(script(&["produce", &cert, "secret", "1"]), "error TOPIC_AUTHORIZATION_FAILED");
    let anonymous_tls = client_settings(&broker, &ca, "SSL", &[]);
    assert_eq!(script(&["produce", &anonymous_tls, "secret", "1"]), "produced 1", "User:ANONYMOUS is a super user");
    // What each may do, as the authorized-operations fields report it (READ and WRITE imply
    // DESCRIBE); a super user may do everything.
    let ops = script(&["authorized-operations", &bob, "orders", "bob-readers"]);
    assert_eq!(ops, "topic DESCRIBE,READ,WRITE\ncluster \ngroup DESCRIBE,READ", "{ops}");
    let ops = script(&["authorized-operations", &admin, "orders", "bob-readers"]);
    assert!(ops.starts_with("topic ALTER,ALTER_CONFIGS,CREATE,DELETE,DESCRIBE,DESCRIBE_CONFIGS,READ,WRITE\n"), "{ops}");
    assert!(
        ops.contains("cluster ALTER,ALTER_CONFIGS,CLUSTER_ACTION,CREATE,DESCRIBE,DESCRIBE_CONFIGS,IDEMPOTENT_WRITE\n"),
        "{ops}"
    );
    assert!(ops.ends_with("group DELETE,DESCRIBE,READ"), "{ops}");
    // ACL changes take effect at once; deleted ACLs grant nothing.
    assert_eq!(script(&["delete-acls", &admin, "User:bob"]), "deleted 3");
    assert_eq!(script(&["produce", &bob, "orders", "1"]), "error TOPIC_AUTHORIZATION_FAILED");
    // Only a principal with ALTER on the cluster manages ACLs.
    let out = run(&mut python("security.py", &["create-acls", &bob, "TOPIC:secret:LITERAL:User:bob:ALL:ALLOW"]));
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("CLUSTER_AUTHORIZATION_FAILED"));
}

fn run(command: &mut Command) -> std::process::Output {
    common::run(command, CLIENT_TIMEOUT)
}

#[test]
fn kafka_python_and_kafkajs_authenticate_with_scram_and_plain_over_tls() {
    let dir = TempDir::new("security-clients");
    let ca = TestCa::new(&dir);
    let broker = secured_broker("secured-clients", &ca, &[]);
    let admin = client_settings(&broker, &ca, "PLAINTEXT", &[]);
    for mechanism in ["SCRAM-SHA-256", "SCRAM-SHA-512"] {
        let said = script(&["add-scram", &admin, "erin", "erin-secret", mechanism, "4096"]);
        assert!(said.contains(mechanism), "{said}");
    }
    let ca_file = ca.path("ca.pem");
    let sasl_ssl = broker.listener("SASL_SSL");
    let sasl_plain = broker.listener("SASL_PLAINTEXT");
    // kafka-python: SCRAM-SHA-512 over TLS, SCRAM-SHA-256 and PLAIN over plain TCP; a wrong password.
    for (addr, protocol, mechanism, user, password, topic) in [
        (&sasl_ssl, "SASL_SSL", "SCRAM-SHA-512", "erin", "erin-secret", "kp-scram512"),
        (&sasl_plain, "SASL_PLAINTEXT", "SCRAM-SHA-256", "erin", "erin-secret", "kp-scram256"),
        (&sasl_ssl, "SASL_SSL", "PLAIN", "alice", "alice-secret", "kp-plain"),
    ] {
        let out = run_ok(
            &mut python("kafka_python_secure.py", &[addr, protocol, mechanism, user, password, &ca_file, topic, "50"]),
            "kafka-python secured",
            CLIENT_TIMEOUT,
        );
        assert!(stdout(&out).contains("roundtrip ok 50"), "{protocol} {mechanism}: {}", stdout(&out));
    }
    let out = run_ok(
        &mut python(
            "kafka_python_secure.py",
            &[&sasl_ssl, "SASL_SSL", "SCRAM-SHA-512", "erin", "wrong", &ca_file, "x", "0"],
        ),
        "kafka-python wrong password",
        CLIENT_TIMEOUT,
    );
    assert!(stdout(&out).contains("refused"), "{}", stdout(&out));
    // kafkajs: PLAIN and SCRAM-SHA-512 over TLS, SCRAM-SHA-256 over plain TCP; a wrong password.
    for (addr, tls, mechanism, user, password, topic) in [
        (&sasl_ssl, "true", "plain", "alice", "alice-secret", "js-plain"),
        (&sasl_ssl, "true", "scram-sha-512", "erin", "erin-secret", "js-scram512"),
        (&sasl_plain, "false", "scram-sha-256", "erin", "erin-secret", "js-scram256"),
    ] {
        let out = run_ok(
            &mut common::node("kafkajs_secure.js", &[addr, tls, mechanism, user, password, &ca_file, topic, "50"]),
            "kafkajs secured",
            CLIENT_TIMEOUT,
        );
        assert!(stdout(&out).contains("roundtrip ok 50"), "{mechanism}: {}", stdout(&out));
    }
    let out = run_ok(
        &mut common::node("kafkajs_secure.js", &[&sasl_ssl, "true", "plain", "alice", "wrong", &ca_file, "x", "0"]),
        "kafkajs wrong password",
        CLIENT_TIMEOUT,
    );
    assert!(stdout(&out).contains("refused KafkaJSSASLAuthenticationError"), "{}", stdout(&out));
}

#[test]
fn client_quotas_are_set_described_and_throttle_a_greedy_producer() {
    // kafka-python sets and describes the quotas (bad keys, entity types and values refused);
    // a confluent-kafka producer under a 200 KB/s quota is held near it while one without a
    // quota runs free on the same broker.
    let broker = Broker::start("quotas", &[]);
    let out = run_ok(&mut python("quotas.py", &[&broker.addr, "quota-topic"]), "client quotas", CLIENT_TIMEOUT);
    assert!(stdout(&out).contains("greedy_bytes_per_s"), "{}", stdout(&out));
}

/// `moldau` with `--command-config`: the output of a CLI command that must succeed.
fn moldau_ok(args: &[&str]) -> String {
    stdout(&run_ok(&mut common::moldau(args), &format!("moldau {args:?}"), CLIENT_TIMEOUT))
}

/// The error a CLI command that must fail prints.
fn moldau_fails(args: &[&str]) -> String {
    let out = run(&mut common::moldau(args));
    assert!(!out.status.success(), "moldau {args:?} should fail: {}", stdout(&out));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn produce_with(args: &[&str], lines: &str) -> std::process::Output {
    use std::process::Stdio;
    let mut child =
        common::moldau(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(lines.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn the_cli_manages_scram_users_and_acls_and_connects_as_a_command_config_file_says() {
    let dir = TempDir::new("security-cli");
    let ca = TestCa::new(&dir);
    let broker = secured_broker(
        "secured-cli",
        &ca,
        &[
            "--set",
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "--set",
            "super.users=User:ANONYMOUS",
        ],
    );
    let plain = broker.addr.clone();
    let sasl_ssl = broker.listener("SASL_SSL");
    // A SCRAM user, salted by the CLI, created over the plaintext listener (anonymous super user).
    assert!(
        moldau_ok(&[
            "user",
            "set",
            "carol",
            "--password",
            "carol-secret",
            "--mechanism",
            "scram-sha-256",
            "--bootstrap",
            &plain
        ])
        .contains("set carol SCRAM-SHA-256")
    );
    assert!(moldau_ok(&["user", "list", "--bootstrap", &plain]).contains("carol SCRAM-SHA-256 iterations=4096"));
    let properties = |name: &str, lines: &[String]| {
        let path = dir.join(name);
        std::fs::write(&path, lines.join("\n")).unwrap();
        path.display().to_string()
    };
    let ca_line = format!("ssl.ca.location={}", ca.path("ca.pem"));
    let carol = properties(
        "carol.properties",
        &[
            "# librdkafka's names".into(),
            "security.protocol=SASL_SSL".into(),
            "sasl.mechanism=SCRAM-SHA-256".into(),
            "sasl.username=carol".into(),
            "sasl.password=carol-secret".into(),
            ca_line.clone(),
        ],
    );
    moldau_ok(&["topic", "create", "orders", "--bootstrap", &plain]);
    moldau_ok(&["topic", "create", "ledger", "--bootstrap", &plain]);
    // Authenticated but allowed nothing yet: carol sees no topic.
    let seen = moldau_ok(&["topic", "list", "--bootstrap", &sasl_ssl, "--command-config", &carol]);
    assert!(!seen.contains("orders"), "{seen}");
    let added = moldau_ok(&[
        "acl",
        "add",
        "--principal",
        "User:carol",
        "--operation",
        "write",
        "--topic",
        "orders",
        "--bootstrap",
        &plain,
    ]);
    assert!(added.contains("TOPIC orders LITERAL User:carol host=* WRITE ALLOW"), "{added}");
    let listed = moldau_ok(&["acl", "list", "--principal", "User:carol", "--bootstrap", &plain]);
    assert_eq!(listed.lines().count(), 1, "{listed}");
    let to = |topic: &str| {
        produce_with(&["produce", "--topic", topic, "--bootstrap", &sasl_ssl, "--command-config", &carol], "one\ntwo\n")
    };
    let out = to("orders");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = to("ledger");
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("TopicAuthorizationFailed"),
        "{out:?}"
    );
    // A Java-style file (JAAS line) with a wrong password is refused by the broker.
    let wrong = properties(
        "wrong.properties",
        &[
            "security.protocol=SASL_SSL".into(),
            "sasl.mechanism=SCRAM-SHA-256".into(),
            "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"carol\" password=\"nope\";".into(),
            format!("ssl.truststore.location={}", ca.path("ca.pem")),
        ],
    );
    let said = moldau_fails(&["topic", "list", "--bootstrap", &sasl_ssl, "--command-config", &wrong]);
    assert!(said.contains("SaslAuthenticationFailed"), "{said}");
    // A client certificate over SSL (the principal is its subject).
    let mtls = properties(
        "mtls.properties",
        &[
            "security.protocol=SSL".into(),
            ca_line,
            format!("ssl.certificate.location={}", ca.path("client.pem")),
            format!("ssl.key.location={}", ca.path("client.key")),
        ],
    );
    moldau_ok(&["topic", "list", "--bootstrap", &broker.listener("SSL"), "--command-config", &mtls]);
    let unknown = properties("unknown.properties", &["bootstrap.servers=x".into()]);
    assert!(
        moldau_fails(&["topic", "list", "--command-config", &unknown, "--bootstrap", &plain])
            .contains("unknown client property")
    );
    // Removed ACLs and users grant nothing.
    assert!(
        moldau_ok(&["acl", "remove", "--principal", "User:carol", "--bootstrap", &plain]).contains("removed 1 ACLs")
    );
    assert!(!to("orders").status.success());
    moldau_ok(&["user", "delete", "carol", "--mechanism", "SCRAM-SHA-256", "--bootstrap", &plain]);
    assert!(!moldau_ok(&["user", "list", "--bootstrap", &plain]).contains("carol"));
    let said = moldau_fails(&["topic", "list", "--bootstrap", &sasl_ssl, "--command-config", &carol]);
    assert!(said.contains("SaslAuthenticationFailed"), "{said}");
}

#[test]
fn the_metrics_endpoint_stays_on_localhost_and_can_require_tls() {
    let dir = TempDir::new("security-metrics");
    let ca = TestCa::new(&dir);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let _broker = secured_broker(
        "secured-metrics",
        &ca,
        &["--set", &format!("metrics_listen=\":{port}\""), "--set", "metrics_tls=true"],
    );
    // HTTPS, checked against the test CA (the broker's certificate names 127.0.0.1).
    let fetch = format!(
        "import ssl, sys, urllib.request\n\
         context = ssl.create_default_context(cafile={ca:?})\n\
         body = urllib.request.urlopen('https://127.0.0.1:{port}/metrics', context=context, timeout=20).read()\n\
         sys.stdout.write(body.decode())\n",
        ca = ca.path("ca.pem")
    );
    let out = run_ok(Command::new("python3").args(["-c", &fetch]), "metrics over HTTPS", CLIENT_TIMEOUT);
    assert!(stdout(&out).contains("moldau_shard_connections"), "{}", stdout(&out));
    // Plain HTTP on the TLS port gets no metrics.
    let mut plain = connect(&format!("127.0.0.1:{port}"));
    plain.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(!String::from_utf8_lossy(&answer).contains("moldau_shard"), "plaintext must not be served");
    // A port alone binds 127.0.0.1 only: the host's other loopback addresses do not reach it.
    assert!(TcpStream::connect(("127.0.0.2", port)).is_err(), "bound to 127.0.0.1 only");
}
