//! Idempotent producers over the wire (KIP-98): a retried batch is stored once and answered with
//! its original offset, a gap in sequence numbers and a fenced producer epoch are refused, and
//! producer state survives a clean restart and a SIGKILL. Then librdkafka itself, retrying
//! batches whose acknowledgements a proxy drops, stores every record exactly once.

mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{Broker, python, run_ok, stdout};
use kafka_protocol::messages::{InitProducerIdRequest, ProducerId};
use moldau::client::{ClientError, KafkaClient};
use moldau::io::block_on;
use moldau::model::records::{BatchBuilder, BatchFields, decode_records};

const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
const INVALID_PRODUCER_EPOCH: i16 = 47;

/// An idempotent batch of `count` records `tag-0..` with the given producer fields.
fn batch(producer_id: i64, epoch: i16, base_sequence: i32, count: usize, tag: &str) -> Bytes {
    let mut builder = BatchBuilder::new(256, 1_700_000_000_000);
    for i in 0..count {
        builder.push(None, format!("{tag}-{i}").as_bytes(), 1_700_000_000_000);
    }
    builder.finish_with(&BatchFields { attributes: 0, producer_id, producer_epoch: epoch, base_sequence })
}

/// A producer id and epoch from the broker (InitProducerId; with `previous`, an epoch bump).
async fn init_producer(client: &KafkaClient, previous: Option<(i64, i16)>) -> (i64, i16) {
    let conn = client.any().await.unwrap();
    let (id, epoch) = previous.unwrap_or((-1, -1));
    let request = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(ProducerId(id))
        .with_producer_epoch(epoch);
    let response = conn.send(request).await.unwrap();
    assert_eq!(response.error_code, 0, "InitProducerId");
    (response.producer_id.0, response.producer_epoch)
}

fn code_of(result: Result<i64, ClientError>) -> i16 {
    match result {
        Ok(offset) => panic!("expected an error, got offset {offset}"),
        Err(err) => err.code().unwrap_or_else(|| panic!("expected a Kafka error code, got {err}")),
    }
}

/// Every value stored in partition 0 of `topic`, in offset order.
async fn stored_values(client: &KafkaClient, topic: &str) -> Vec<String> {
    let mut values = Vec::new();
    let mut offset = 0;
    loop {
        let fetched = client.fetch(topic, 0, offset, 1 << 20, 100).await.unwrap();
        let records = decode_records(fetched.records).unwrap();
        if records.is_empty() {
            return values;
        }
        for record in records {
            offset = record.offset + 1;
            values.push(String::from_utf8(record.value.unwrap().to_vec()).unwrap());
        }
    }
}

async fn latest_offset(client: &KafkaClient, topic: &str) -> i64 {
    client.list_offset(topic, 0, -1).await.unwrap().0
}

#[test]
fn retried_batches_are_stored_once_and_gaps_and_fenced_epochs_are_refused() {
    let broker = Broker::start("idempotence", &[]);
    block_on(async {
        let client = KafkaClient::connect(&broker.addr, "idempotence").await.unwrap();
        client.create_topic("idem", 1, 1, &BTreeMapNone::new()).await.unwrap();
        let (id, epoch) = init_producer(&client, None).await;
        let first = batch(id, epoch, 0, 3, "a");
        assert_eq!(client.produce("idem", 0, first.clone(), -1, 5_000).await.unwrap(), 0);
        // The same batch again (a client retry): the original offset, nothing written.
        for _ in 0..4 {
            assert_eq!(client.produce("idem", 0, first.clone(), -1, 5_000).await.unwrap(), 0);
        }
        assert_eq!(latest_offset(&client, "idem").await, 3, "the retries were not appended");
        assert_eq!(client.produce("idem", 0, batch(id, epoch, 3, 2, "b"), -1, 5_000).await.unwrap(), 3);
        // A retry of an older batch that is still remembered is a duplicate too.
        assert_eq!(client.produce("idem", 0, first.clone(), 1, 5_000).await.unwrap(), 0);
        // A gap: sequence 9 where 5 is next.
        let gap = client.produce("idem", 0, batch(id, epoch, 9, 1, "gap"), -1, 5_000).await;
        assert_eq!(code_of(gap), OUT_OF_ORDER_SEQUENCE_NUMBER);
        // A bumped epoch starts again at 0; the old epoch is fenced from then on.
        let (same_id, bumped) = init_producer(&client, Some((id, epoch))).await;
        assert_eq!((same_id, bumped), (id, epoch + 1));
        assert_eq!(client.produce("idem", 0, batch(id, bumped, 0, 1, "c"), -1, 5_000).await.unwrap(), 5);
        let fenced = client.produce("idem", 0, batch(id, epoch, 5, 1, "stale"), -1, 5_000).await;
        assert_eq!(code_of(fenced), INVALID_PRODUCER_EPOCH);
        assert_eq!(stored_values(&client, "idem").await, ["a-0", "a-1", "a-2", "b-0", "b-1", "c-0"]);
    });
}

/// `BTreeMap<String, String>` of no topic configs.
type BTreeMapNone = std::collections::BTreeMap<String, String>;

#[test]
fn producer_state_survives_a_clean_restart_and_a_sigkill() {
    let mut broker = Broker::start("idempotence-restart", &[]);
    let (id, epoch) = block_on(async {
        let client = KafkaClient::connect(&broker.addr, "restart").await.unwrap();
        client.create_topic("idem", 1, 1, &BTreeMapNone::new()).await.unwrap();
        let (id, epoch) = init_producer(&client, None).await;
        assert_eq!(client.produce("idem", 0, batch(id, epoch, 0, 2, "x"), -1, 5_000).await.unwrap(), 0);
        (id, epoch)
    });
    for restart in [Broker::restart_clean as fn(&mut Broker), Broker::restart] {
        restart(&mut broker);
        block_on(async {
            let client = KafkaClient::connect(&broker.addr, "restart").await.unwrap();
            // The last batch again after the restart is still recognised as a duplicate...
            assert_eq!(client.produce("idem", 0, batch(id, epoch, 0, 2, "x"), -1, 5_000).await.unwrap(), 0);
            // ...and the sequence carries on where it was.
            let gap = client.produce("idem", 0, batch(id, epoch, 7, 1, "gap"), -1, 5_000).await;
            assert_eq!(code_of(gap), OUT_OF_ORDER_SEQUENCE_NUMBER);
            assert_eq!(latest_offset(&client, "idem").await, 2);
        });
    }
    block_on(async {
        let client = KafkaClient::connect(&broker.addr, "restart").await.unwrap();
        assert_eq!(stored_values(&client, "idem").await, ["x-0", "x-1"]);
    });
}

/// A TCP proxy in front of the broker that drops the responses to the first `drops` Produce
/// requests it forwards: the broker appended those batches, but their producer never hears so.
struct AckDropper {
    port: u16,
    dropped: Arc<AtomicUsize>,
}

impl AckDropper {
    fn start() -> (Self, TcpListener) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        (Self { port, dropped: Arc::new(AtomicUsize::new(0)) }, listener)
    }

    /// Serves connections on `listener`, forwarding them to `broker`.
    fn run(&self, listener: TcpListener, broker: String, drops: usize) {
        let budget = Arc::new(AtomicUsize::new(drops));
        let dropped = self.dropped.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(&broker) else { return };
                let doomed = Arc::new(Mutex::new(HashSet::new()));
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (budget, doomed2, dropped) = (budget.clone(), doomed.clone(), dropped.clone());
                std::thread::spawn(move || {
                    forward_frames(client, server, |frame| {
                        let api_key = i16::from_be_bytes([frame[0], frame[1]]);
                        let correlation = i32::from_be_bytes(frame[4..8].try_into().unwrap());
                        let take = api_key == 0
                            && budget.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| b.checked_sub(1)).is_ok();
                        if take {
                            doomed.lock().unwrap().insert(correlation);
                        }
                        true
                    })
                });
                std::thread::spawn(move || {
                    forward_frames(s2, c2, |frame| {
                        let correlation = i32::from_be_bytes(frame[0..4].try_into().unwrap());
                        let drop = doomed2.lock().unwrap().remove(&correlation);
                        if drop {
                            dropped.fetch_add(1, Ordering::SeqCst);
                        }
                        !drop
                    })
                });
            }
        });
    }
}

/// Copies size-prefixed frames from `from` to `to`, skipping those `keep` refuses.
fn forward_frames(mut from: TcpStream, mut to: TcpStream, mut keep: impl FnMut(&[u8]) -> bool) {
    loop {
        let mut size = [0u8; 4];
        if from.read_exact(&mut size).is_err() {
            break;
        }
        let mut frame = vec![0u8; i32::from_be_bytes(size).max(0) as usize];
        if from.read_exact(&mut frame).is_err() || frame.len() < 8 {
            break;
        }
        if keep(&frame) && (to.write_all(&size).is_err() || to.write_all(&frame).is_err()) {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
    let _ = from.shutdown(std::net::Shutdown::Both);
}

#[test]
fn librdkafka_retries_of_lost_acknowledgements_store_every_record_once() {
    const RECORDS: usize = 20;
    const DROPPED_ACKS: usize = 3;
    let (proxy, listener) = AckDropper::start();
    // Clients are told the proxy's port, so every connection goes through it.
    let port = format!("advertised_port={}", proxy.port);
    let broker = Broker::start("idempotence-librdkafka", &["--set", &port]);
    proxy.run(listener, broker.addr.clone(), DROPPED_ACKS);
    block_on(async {
        let client = KafkaClient::connect(&broker.addr, "setup").await.unwrap();
        client.create_topic("retried", 1, 1, &BTreeMapNone::new()).await.unwrap();
    });
    let bootstrap = format!("127.0.0.1:{}", proxy.port);
    let out = run_ok(
        &mut python("idempotent_retry.py", &[&bootstrap, "retried", &RECORDS.to_string()]),
        "idempotent_retry.py",
        Duration::from_secs(240),
    );
    let result: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(result["errors"], serde_json::json!([]), "{result}");
    assert_eq!(result["delivered"], RECORDS, "{result}");
    assert_eq!(proxy.dropped.load(Ordering::SeqCst), DROPPED_ACKS, "the proxy lost acknowledgements");
    let values: Vec<String> =
        result["values"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect();
    let want: Vec<String> = (0..RECORDS).map(|i| format!("record-{i}")).collect();
    assert_eq!(values, want, "every record once, in order");
}
