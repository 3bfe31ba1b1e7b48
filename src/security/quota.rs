//! Client quotas (Kafka's KIP-13, KIP-55 and KIP-124): how many bytes a client may produce and
//! fetch per second, and what share of a shard's time its requests may take, per user and client
//! id, as AlterClientQuotas set them in the cluster metadata.
//!
//! A quota is per broker, as in Kafka. A client over its bound is not refused: its response says
//! how long to back off (`throttle_time_ms`) and the broker reads nothing more from the
//! connection for that long, so a client that ignores the hint is slowed all the same.
//!
//! Rates are measured as Kafka's `Rate` does: `quota.window.num` samples of
//! `quota.window.size.seconds` each, the rate being what the live samples hold over the time
//! they span (at least all but one of the samples, so a fresh sensor does not see a burst as a
//! huge rate). A client over its bound is throttled for as long as it takes the rate to fall back
//! to the bound: `(rate - bound) / bound * window`.
//!
//! Ownership: one [`Quotas`] per broker (`Arc`, shared by the shards: a client's connections land
//! on any shard), its sensors behind one mutex, taken once per request that a quota applies to.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cluster::{QuotaEntity, QuotaName};
use crate::config::BrokerConfig;

/// The quota keys, as Kafka names them.
pub mod key {
    /// Bytes per second a client may produce.
    pub const PRODUCER_BYTE_RATE: &str = "producer_byte_rate";
    /// Bytes per second a client may fetch.
    pub const CONSUMER_BYTE_RATE: &str = "consumer_byte_rate";
    /// Percent of one shard's time a client's requests may take (100: a whole shard).
    pub const REQUEST_PERCENTAGE: &str = "request_percentage";
    /// Partitions per second a client may create or delete: Kafka's, refused here (topic
    /// changes are not throttled yet).
    pub const CONTROLLER_MUTATION_RATE: &str = "controller_mutation_rate";
    /// Every key a quota may have here.
    pub const ALL: [&str; 3] = [PRODUCER_BYTE_RATE, CONSUMER_BYTE_RATE, REQUEST_PERCENTAGE];
}

/// The quotas in the cluster metadata: each entity's bounds by key.
pub type QuotaTable = BTreeMap<QuotaEntity, BTreeMap<String, f64>>;

/// What a quota bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuotaKind {
    /// Produced bytes (the request's size).
    Produce,
    /// Fetched bytes (the response's size).
    Fetch,
    /// Time the broker spends on the client's requests.
    Request,
}

impl QuotaKind {
    /// The quota key that bounds it.
    pub fn key(self) -> &'static str {
        match self {
            Self::Produce => key::PRODUCER_BYTE_RATE,
            Self::Fetch => key::CONSUMER_BYTE_RATE,
            Self::Request => key::REQUEST_PERCENTAGE,
        }
    }
}

/// The sensor a client's use is counted in: the clients an entity covers share one (a quota on a
/// user binds all of the user's client ids together); a default entity gives each name its own.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SensorId {
    /// What is counted.
    pub kind: QuotaKind,
    /// The user counted for, empty when the quota is on client ids alone.
    pub user: String,
    /// The client id counted for, empty when the quota is on users alone.
    pub client_id: String,
}

/// Kafka's entity type of users.
pub const USER: &str = "user";
/// Kafka's entity type of client ids.
pub const CLIENT_ID: &str = "client-id";

/// The entity named by (entity type, name or `None` for the default) pairs, as AlterClientQuotas
/// sends them. Errors: an unknown or repeated type, `ip` entities, no part at all.
pub fn entity_of<'a>(parts: impl IntoIterator<Item = (&'a str, Option<&'a str>)>) -> Result<QuotaEntity, String> {
    let mut entity = QuotaEntity { user: None, client_id: None };
    for (kind, name) in parts {
        let slot = match kind {
            USER => &mut entity.user,
            CLIENT_ID => &mut entity.client_id,
            "ip" => return Err("ip quotas (connection_creation_rate) are not supported by this broker".into()),
            other => return Err(format!("unknown quota entity type {other:?} (known: user, client-id)")),
        };
        if slot.is_some() {
            return Err(format!("quota entity type {kind} given twice"));
        }
        *slot = Some(name.map_or(QuotaName::Default, |n| QuotaName::Named(n.to_owned())));
    }
    if entity.user.is_none() && entity.client_id.is_none() {
        return Err("a quota entity needs a user, a client id, or both".into());
    }
    Ok(entity)
}

/// The (entity type, name or `None` for the default) pairs of an entity, user first.
pub fn parts_of(entity: &QuotaEntity) -> Vec<(&'static str, Option<&str>)> {
    fn name(n: &QuotaName) -> Option<&str> {
        match n {
            QuotaName::Default => None,
            QuotaName::Named(n) => Some(n.as_str()),
        }
    }
    let mut parts = Vec::new();
    if let Some(user) = &entity.user {
        parts.push((USER, name(user)));
    }
    if let Some(client_id) = &entity.client_id {
        parts.push((CLIENT_ID, name(client_id)));
    }
    parts
}

/// How DescribeClientQuotas matches one entity type (Kafka's match types).
#[derive(Clone, Debug)]
pub enum Match {
    /// This name.
    Exact(String),
    /// The default entity.
    Default,
    /// Any name but the default.
    Specified,
}

/// Whether `entity` passes DescribeClientQuotas's filter: every component's type present and
/// matching; with `strict`, no other type present.
pub fn matches(entity: &QuotaEntity, components: &[(&str, Match)], strict: bool) -> bool {
    let parts = parts_of(entity);
    if strict && parts.len() != components.len() {
        return false;
    }
    components.iter().all(|(kind, wanted)| {
        parts.iter().any(|(k, name)| {
            k == kind
                && match (wanted, name) {
                    (Match::Exact(want), Some(name)) => want == name,
                    (Match::Default, None) | (Match::Specified, Some(_)) => true,
                    _ => false,
                }
        })
    })
}

/// Why a quota key is refused.
pub fn invalid_key(key: &str) -> Option<String> {
    if key == key::CONTROLLER_MUTATION_RATE {
        return Some(format!("{key} is not supported by this broker (topic changes are not throttled)"));
    }
    if !key::ALL.contains(&key) {
        return Some(format!("unknown quota key {key:?}; known: {}", key::ALL.join(", ")));
    }
    None
}

/// Why a quota value (or its key) is refused.
pub fn invalid_value(key: &str, value: f64) -> Option<String> {
    if let Some(why) = invalid_key(key) {
        return Some(why);
    }
    if !value.is_finite() || value <= 0.0 {
        return Some(format!("{key} must be a positive number, not {value}"));
    }
    None
}

/// The bound of `kind` that applies to a client (`user`: the principal's name without `User:`)
/// and the sensor it is counted in: the first entity that sets it in Kafka's order of precedence
/// (user and client id, user and default client, user, default user and client id, default user
/// and default client, default user, client id, default client).
pub fn resolve(table: &QuotaTable, kind: QuotaKind, user: &str, client_id: &str) -> Option<(SensorId, f64)> {
    use QuotaName::{Default, Named};
    if table.is_empty() {
        return None;
    }
    let named_user = || Some(Named(user.to_owned()));
    let named_client = || Some(Named(client_id.to_owned()));
    // (entity, counted per user, counted per client id)
    let order = [
        (named_user(), named_client(), true, true),
        (named_user(), Some(Default), true, true),
        (named_user(), None, true, false),
        (Some(Default), named_client(), true, true),
        (Some(Default), Some(Default), true, true),
        (Some(Default), None, true, false),
        (None, named_client(), false, true),
        (None, Some(Default), false, true),
    ];
    order.into_iter().find_map(|(user_part, client_part, per_user, per_client)| {
        let entity = QuotaEntity { user: user_part, client_id: client_part };
        let bound = *table.get(&entity)?.get(kind.key())?;
        let sensor = SensorId {
            kind,
            user: if per_user { user.to_owned() } else { String::new() },
            client_id: if per_client { client_id.to_owned() } else { String::new() },
        };
        Some((sensor, bound))
    })
}

/// A rate over a few consecutive time windows.
struct Sensor {
    /// (window start, amount recorded in it), oldest first.
    samples: VecDeque<(Instant, f64)>,
}

impl Sensor {
    fn record(&mut self, now: Instant, value: f64, window: Duration, count: usize) {
        match self.samples.back_mut() {
            Some((start, total)) if now < *start + window => *total += value,
            _ => {
                self.samples.push_back((now, value));
                while self.samples.len() > count {
                    self.samples.pop_front();
                }
            }
        }
    }

    /// The rate per second and the span it was measured over.
    fn rate(&mut self, now: Instant, window: Duration, count: usize) -> (f64, Duration) {
        let span = window * count as u32;
        while self.samples.front().is_some_and(|(start, _)| now.saturating_duration_since(*start) >= span) {
            self.samples.pop_front();
        }
        let total: f64 = self.samples.iter().map(|(_, v)| v).sum();
        let elapsed = self.samples.front().map_or(Duration::ZERO, |(start, _)| now.saturating_duration_since(*start));
        let measured = elapsed.max(window * (count.saturating_sub(1).max(1)) as u32);
        (total / measured.as_secs_f64(), measured)
    }
}

/// A broker's quota sensors.
pub struct Quotas {
    window: Duration,
    count: usize,
    state: Mutex<State>,
}

struct State {
    sensors: HashMap<SensorId, Sensor>,
    swept: Instant,
}

impl Quotas {
    /// With `config`'s windows.
    pub fn new(config: &BrokerConfig) -> Arc<Self> {
        Arc::new(Self {
            window: Duration::from_secs(config.quota_window_size_seconds.max(1)),
            count: config.quota_window_num.max(1) as usize,
            state: Mutex::new(State { sensors: HashMap::new(), swept: Instant::now() }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts `value` in `sensor` and returns how long its client must now wait: zero while its
    /// rate is within `bound`.
    pub fn record(&self, sensor: &SensorId, bound: f64, value: f64) -> Duration {
        let now = Instant::now();
        let (window, count) = (self.window, self.count);
        let mut state = self.lock();
        if now.saturating_duration_since(state.swept) >= window * count as u32 {
            // Sensors idle for a whole span hold nothing: forget them.
            state
                .sensors
                .retain(|_, s| s.samples.back().is_some_and(|(at, _)| now.duration_since(*at) < window * count as u32));
            state.swept = now;
        }
        let entry = state.sensors.entry(sensor.clone()).or_insert_with(|| Sensor { samples: VecDeque::new() });
        entry.record(now, value, window, count);
        let (rate, measured) = entry.rate(now, window, count);
        if rate <= bound || bound <= 0.0 {
            return Duration::ZERO;
        }
        let longest = match sensor.kind {
            QuotaKind::Request => window,
            QuotaKind::Produce | QuotaKind::Fetch => window * count as u32,
        };
        measured.mul_f64((rate - bound) / bound).min(longest)
    }

    /// Takes back `value` counted in `sensor` (a throttled fetch sends nothing).
    pub fn unrecord(&self, sensor: &SensorId, value: f64) {
        let now = Instant::now();
        if let Some(entry) = self.lock().sensors.get_mut(sensor) {
            entry.record(now, -value, self.window, self.count);
        }
    }

    /// The most a client under `bound` bytes per second may fetch in one response: what the
    /// measured span allows, so one large fetch cannot earn a throttle longer than the span.
    pub fn most_per_window(&self, bound: f64) -> usize {
        let span = self.window * (self.count.saturating_sub(1).max(1)) as u32;
        (bound * span.as_secs_f64()).clamp(1.0, usize::MAX as f64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(entries: &[(Option<QuotaName>, Option<QuotaName>, &str, f64)]) -> QuotaTable {
        let mut table = QuotaTable::new();
        for (user, client_id, key, value) in entries {
            let entity = QuotaEntity { user: user.clone(), client_id: client_id.clone() };
            table.entry(entity).or_default().insert((*key).to_owned(), *value);
        }
        table
    }

    fn named(name: &str) -> Option<QuotaName> {
        Some(QuotaName::Named(name.to_owned()))
    }

    #[test]
    fn the_most_specific_entity_wins_and_defaults_count_each_name_apart() {
        use QuotaKind::Produce;
        let t = table(&[
            (None, Some(QuotaName::Default), key::PRODUCER_BYTE_RATE, 1.0),
            (None, named("app"), key::PRODUCER_BYTE_RATE, 2.0),
            (Some(QuotaName::Default), None, key::PRODUCER_BYTE_RATE, 3.0),
            (named("alice"), None, key::PRODUCER_BYTE_RATE, 4.0),
            (named("alice"), named("app"), key::PRODUCER_BYTE_RATE, 5.0),
            (named("bob"), None, key::CONSUMER_BYTE_RATE, 9.0),
        ]);
        let (sensor, bound) = resolve(&t, Produce, "alice", "app").unwrap();
        assert_eq!((bound, sensor.user.as_str(), sensor.client_id.as_str()), (5.0, "alice", "app"));
        let (sensor, bound) = resolve(&t, Produce, "alice", "other").unwrap();
        assert_eq!((bound, sensor.user.as_str(), sensor.client_id.as_str()), (4.0, "alice", ""));
        // Bob's own entity has no produce bound: the default user's applies, counted for bob.
        let (sensor, bound) = resolve(&t, Produce, "bob", "app").unwrap();
        assert_eq!((bound, sensor.user.as_str(), sensor.client_id.as_str()), (3.0, "bob", ""));
        assert_eq!(resolve(&t, QuotaKind::Fetch, "bob", "x").unwrap().1, 9.0);
        assert!(resolve(&t, QuotaKind::Fetch, "carol", "x").is_none());
        let only_clients = table(&[
            (None, Some(QuotaName::Default), key::PRODUCER_BYTE_RATE, 1.0),
            (None, named("app"), key::PRODUCER_BYTE_RATE, 2.0),
        ]);
        let (sensor, bound) = resolve(&only_clients, Produce, "carol", "app").unwrap();
        assert_eq!((bound, sensor.user.as_str(), sensor.client_id.as_str()), (2.0, "", "app"));
        let (sensor, bound) = resolve(&only_clients, Produce, "carol", "tool").unwrap();
        assert_eq!((bound, sensor.client_id.as_str()), (1.0, "tool"));
    }

    #[test]
    fn throttle_time_brings_the_rate_back_to_the_bound() {
        let config = BrokerConfig { quota_window_num: 11, quota_window_size_seconds: 1, ..BrokerConfig::default() };
        let quotas = Quotas::new(&config);
        let sensor = SensorId { kind: QuotaKind::Produce, user: "u".into(), client_id: String::new() };
        // 10 s measured at least: 5,000 bytes are 500 B/s, within a 1,000 B/s bound.
        assert_eq!(quotas.record(&sensor, 1000.0, 5000.0), Duration::ZERO);
        // 15,000 bytes over 10 s: 1,500 B/s, half over; waiting 5 s brings it to 1,000 B/s.
        let wait = quotas.record(&sensor, 1000.0, 10_000.0);
        assert!((wait.as_secs_f64() - 5.0).abs() < 0.1, "{wait:?}");
        // Capped at the whole span.
        let wait = quotas.record(&sensor, 1000.0, 1e9);
        assert_eq!(wait, Duration::from_secs(11));
        quotas.unrecord(&sensor, 1e9);
        let wait = quotas.record(&sensor, 1000.0, 0.0);
        assert!((wait.as_secs_f64() - 5.0).abs() < 0.1, "{wait:?}");
        assert_eq!(quotas.most_per_window(1000.0), 10_000);
    }

    #[test]
    fn describe_filters_match_as_kafka_does() {
        let alice_app = QuotaEntity { user: named("alice"), client_id: named("app") };
        let alice = QuotaEntity { user: named("alice"), client_id: None };
        let default_user = QuotaEntity { user: Some(QuotaName::Default), client_id: None };
        let alice_only = [(USER, Match::Exact("alice".into()))];
        assert!(matches(&alice_app, &alice_only, false));
        assert!(!matches(&alice_app, &alice_only, true));
        assert!(matches(&alice, &alice_only, true));
        assert!(!matches(&default_user, &alice_only, false));
        assert!(matches(&default_user, &[(USER, Match::Default)], true));
        assert!(!matches(&default_user, &[(USER, Match::Specified)], false));
        assert!(matches(&alice, &[], false));
        assert!(!matches(&alice, &[(CLIENT_ID, Match::Specified)], false));
    }

    #[test]
    fn bad_entities_and_values_are_named() {
        assert!(entity_of([]).unwrap_err().contains("needs a user"));
        assert!(entity_of([("user", Some("a")), ("user", None)]).unwrap_err().contains("twice"));
        assert!(entity_of([("ip", Some("127.0.0.1"))]).unwrap_err().contains("not supported"));
        assert!(entity_of([("group", Some("g"))]).unwrap_err().contains("unknown"));
        let entity = entity_of([("client-id", None), ("user", Some("a"))]).unwrap();
        assert_eq!(entity, QuotaEntity { user: named("a"), client_id: Some(QuotaName::Default) });
        assert_eq!(parts_of(&entity), vec![("user", Some("a")), ("client-id", None)]);
        assert!(invalid_value("producer_byte_rate", 0.0).is_some());
        assert!(invalid_value("producer_byte_rate", f64::NAN).is_some());
        assert!(invalid_value("bytes_per_fortnight", 1.0).unwrap().contains("consumer_byte_rate"));
        assert!(invalid_value("request_percentage", 50.0).is_none());
        assert!(invalid_value("controller_mutation_rate", 5.0).unwrap().contains("not supported"));
    }
}
