//! A small HTTP endpoint for operators: `/metrics` (Prometheus text) and `/v1/shards` (JSON),
//! served from its own thread so that no shard ever blocks on it.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::io::http::{self, HttpAnswer};

/// A shard's counters, as the endpoint reports them.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ShardStats {
    /// Shard id.
    pub shard: usize,
    /// CPU the shard thread is pinned to, if pinned.
    pub core: Option<usize>,
    /// Kernel thread id of the shard's thread.
    pub thread_id: i32,
    /// Partitions owned.
    pub partitions: usize,
    /// Open client connections.
    pub connections: u64,
    /// Requests handled (all APIs).
    pub requests: u64,
    /// Requests that ended in a connection-level error.
    pub request_errors: u64,
    /// Partition-level errors returned.
    pub partition_errors: u64,
    /// Connections closed for failing TLS or SASL authentication.
    pub authentication_failures: u64,
    /// Responses that throttled their client for exceeding a quota.
    pub quota_throttles: u64,
    /// Incremental fetch sessions opened.
    pub fetch_sessions_opened: u64,
    /// Fetches answered in a session.
    pub incremental_fetches: u64,
    /// Partitions of incremental fetches answered without a read.
    pub session_partitions_unread: u64,
    /// Record bytes appended to the shard's partitions.
    pub produce_bytes: u64,
    /// Record bytes read from the shard's partitions for fetches.
    pub fetch_bytes: u64,
    /// Read cache bytes held.
    pub cache_bytes: u64,
    /// Read cache hits.
    pub cache_hits: u64,
    /// Read cache misses.
    pub cache_misses: u64,
    /// Error answers, per API and error code.
    pub errors: Vec<ErrorCount>,
}

/// How many answers of one API carried one error code.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ErrorCount {
    /// The API's name (`CreateTopics`).
    pub api: String,
    /// The error's name as Kafka spells it (`INVALID_REPLICATION_FACTOR`).
    pub error: String,
    /// Its code.
    pub code: i16,
    /// Answers (each failed topic, partition or resource counts once).
    pub count: u64,
}

/// Where the endpoint gets the counters it reports (called on a blocking-pool thread).
pub type StatsSource = Arc<dyn Fn() -> Vec<ShardStats> + Send + Sync>;

/// Starts the endpoint on `addr` (its own thread; connections served concurrently, request
/// heads bounded, slow clients cut off: see [`crate::io::http`]), over HTTPS when given `tls`;
/// returns the bound address.
pub fn spawn_metrics_server(
    addr: SocketAddr,
    stats: StatsSource,
    tls: Option<http::TlsSource>,
) -> std::io::Result<SocketAddr> {
    let listener = http::http_listener(addr)?;
    let bound = listener.local_addr()?;
    tracing::info!(%bound, tls = tls.is_some(), "metrics endpoint listening");
    let handler: http::HttpHandler = Arc::new(move |path: &str| answer(path, &stats));
    http::spawn_http_server("moldau-metrics", listener, http::HttpLimits::default(), handler, tls)?;
    Ok(bound)
}

/// What the endpoint answers for `path`.
fn answer(path: &str, stats: &StatsSource) -> HttpAnswer {
    match path {
        "/metrics" => HttpAnswer { status: 200, content_type: "text/plain; version=0.0.4", body: prometheus(&stats()) },
        "/v1/shards" => HttpAnswer {
            status: 200,
            content_type: "application/json",
            body: serde_json::to_string_pretty(&stats()).unwrap_or_default(),
        },
        _ => HttpAnswer { status: 404, content_type: "text/plain", body: "try /metrics or /v1/shards\n".to_owned() },
    }
}

/// A metric: name, help text, and how to read it from a shard's stats.
type MetricSpec = (&'static str, &'static str, fn(&ShardStats) -> u64);

fn prometheus(stats: &[ShardStats]) -> String {
    let mut out = String::new();
    let metrics: [MetricSpec; 15] = [
        ("moldau_shard_partitions", "Partitions owned by the shard", |s| s.partitions as u64),
        ("moldau_shard_connections", "Open client connections", |s| s.connections),
        ("moldau_shard_requests_total", "Requests read", |s| s.requests),
        ("moldau_shard_request_errors_total", "Requests that closed their connection", |s| s.request_errors),
        ("moldau_shard_partition_errors_total", "Partition-level errors returned", |s| s.partition_errors),
        (
            "moldau_shard_authentication_failures_total",
            "Connections closed for failing TLS or SASL authentication",
            |s| s.authentication_failures,
        ),
        ("moldau_shard_quota_throttles_total", "Responses that throttled a client over its quota", |s| {
            s.quota_throttles
        }),
        ("moldau_shard_fetch_sessions_opened_total", "Incremental fetch sessions opened", |s| s.fetch_sessions_opened),
        ("moldau_shard_incremental_fetches_total", "Fetches answered in a fetch session", |s| s.incremental_fetches),
        (
            "moldau_shard_fetch_session_unread_partitions_total",
            "Partitions of incremental fetches answered without a read (unchanged since the last)",
            |s| s.session_partitions_unread,
        ),
        ("moldau_shard_produce_bytes_total", "Record bytes appended", |s| s.produce_bytes),
        ("moldau_shard_fetch_bytes_total", "Record bytes served", |s| s.fetch_bytes),
        ("moldau_shard_cache_bytes", "Read cache bytes held", |s| s.cache_bytes),
        ("moldau_shard_cache_hits_total", "Reads served from the cache", |s| s.cache_hits),
        ("moldau_shard_cache_misses_total", "Reads that went to disk", |s| s.cache_misses),
    ];
    for (name, help, get) in metrics {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {}\n",
            if name.ends_with("_total") { "counter" } else { "gauge" }
        ));
        for s in stats {
            out.push_str(&format!("{name}{{shard=\"{}\"}} {}\n", s.shard, get(s)));
        }
    }
    let name = "moldau_shard_error_responses_total";
    out.push_str(&format!(
        "# HELP {name} Errors answered, per API and error code (each failed topic, partition or resource once)\n# TYPE {name} counter\n"
    ));
    for s in stats {
        for e in &s.errors {
            out.push_str(&format!(
                "{name}{{shard=\"{}\",api=\"{}\",error=\"{}\",code=\"{}\"}} {}\n",
                s.shard, e.api, e.error, e.code, e.count
            ));
        }
    }
    out
}
