//! Starting and stopping a broker process: the data directory, the metadata replay, the shard
//! threads, and the optional metrics endpoint.

use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use futures_channel::oneshot;

use crate::cluster::{ClusterMetadata, MetadataLog, MetadataRecord};
use crate::config::BrokerConfig;
use crate::io::Faults;
use crate::shard::{self, Router, ShardMessage, ShardStart, ShardStats};
use crate::util::block_on_thread;

/// Why a broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory is unusable.
    #[error("data directory {path}: {reason}")]
    DataDir {
        /// Directory.
        path: std::path::PathBuf,
        /// Why.
        reason: String,
    },
    /// A shard failed to start.
    #[error("{0}")]
    Shard(String),
}

/// A running broker.
pub struct Broker {
    config: Arc<BrokerConfig>,
    router: Router,
    threads: Vec<JoinHandle<()>>,
    _lock: std::fs::File,
}

fn data_dir_error(path: &Path, reason: impl std::fmt::Display) -> StartError {
    StartError::DataDir { path: path.to_owned(), reason: reason.to_string() }
}

/// Takes an exclusive lock on the data directory so two brokers never share one.
fn lock_data_dir(dir: &Path) -> Result<std::fs::File, StartError> {
    use std::os::fd::AsRawFd;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(".lock"))
        .map_err(|e| data_dir_error(dir, e))?;
    // SAFETY: flock on a descriptor we own.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(data_dir_error(dir, "in use by another broker (lock held)"));
    }
    Ok(file)
}

/// Replays (and compacts) the metadata log, creating the cluster identity on first start.
fn load_metadata(config: &BrokerConfig, shard_count: usize) -> Result<(ClusterMetadata, MetadataLog), StartError> {
    let log = MetadataLog::new(&config.data_dir);
    let mut records = log.replay().map_err(|e| data_dir_error(&config.data_dir, e))?;
    if records.is_empty() {
        let id = uuid::Uuid::new_v4();
        records.push(MetadataRecord::ClusterCreated { cluster_id: base64_url(id.as_bytes()) });
    }
    let metadata = records.iter().fold(ClusterMetadata::empty(config, shard_count), |m, r| m.apply(r, config));
    log.rewrite(&metadata.to_records()).map_err(|e| data_dir_error(&config.data_dir, e))?;
    Ok((metadata, log))
}

/// URL-safe base64 without padding (the form of Kafka cluster ids).
fn base64_url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    let mut bits = 0u32;
    let mut count = 0;
    for byte in bytes {
        bits = (bits << 8) | u32::from(*byte);
        count += 8;
        while count >= 6 {
            count -= 6;
            out.push(ALPHABET[((bits >> count) & 63) as usize] as char);
        }
    }
    if count > 0 {
        out.push(ALPHABET[((bits << (6 - count)) & 63) as usize] as char);
    }
    out
}

/// Removes directories left by deletions that a crash interrupted: partitions of topics that no
/// longer exist and directories already renamed for deletion.
fn remove_orphans(config: &BrokerConfig, metadata: &ClusterMetadata) {
    let Ok(entries) = std::fs::read_dir(&config.data_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if !path.is_dir() || name == "__cluster" {
            continue;
        }
        let doomed = name.ends_with("-delete")
            || match name.rsplit_once('-') {
                Some((topic, index)) => match (metadata.topic(topic), index.parse::<usize>()) {
                    (Some(t), Ok(i)) => i >= t.partitions.len(),
                    _ => true,
                },
                None => false,
            };
        if doomed {
            tracing::warn!(dir = %path.display(), "removing the directory of a deleted partition");
            if let Err(err) = std::fs::remove_dir_all(&path) {
                tracing::error!(dir = %path.display(), error = %err, "could not remove directory");
            }
        }
    }
}

impl Broker {
    /// Starts a broker and returns once every shard is listening.
    pub fn start(config: BrokerConfig) -> Result<Self, StartError> {
        Self::start_with_faults(config, Faults::none())
    }

    /// Starts a broker whose files use `faults` (tests).
    pub fn start_with_faults(config: BrokerConfig, faults: Faults) -> Result<Self, StartError> {
        config.validate().map_err(|e| StartError::Shard(e.to_string()))?;
        std::fs::create_dir_all(&config.data_dir).map_err(|e| data_dir_error(&config.data_dir, e))?;
        let lock = lock_data_dir(&config.data_dir)?;
        let mut config = config;
        // Port 0: pick a free port once, so every shard binds the same one. The probe socket
        // stays open (in the same SO_REUSEPORT group) until the shards are listening.
        let probe = if config.listen.port() == 0 {
            let probe = crate::io::net::reuseport_std_listener(config.listen)
                .map_err(|e| StartError::Shard(format!("cannot listen on {}: {e}", config.listen)))?;
            let port = probe.local_addr().map_err(|e| StartError::Shard(e.to_string()))?.port();
            config.listen.set_port(port);
            Some(probe)
        } else {
            None
        };
        let shard_count = config.shard_count();
        let (metadata, metadata_log) = load_metadata(&config, shard_count)?;
        remove_orphans(&config, &metadata);
        let metadata = Arc::new(metadata);
        let config = Arc::new(config);
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        let (router, inboxes) = shard::inboxes(shard_count, config.shard_queue_capacity);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let mut threads = Vec::new();
        for (id, inbox) in inboxes.into_iter().enumerate() {
            let start = ShardStart {
                id,
                core: (!cores.is_empty()).then(|| cores[id % cores.len()]),
                config: config.clone(),
                router: router.clone(),
                inbox,
                metadata: metadata.clone(),
                faults: faults.clone(),
                ready: ready_tx.clone(),
                controller: (id == 0).then(|| metadata_log.clone()),
            };
            let thread = std::thread::Builder::new()
                .name(format!("moldau-shard-{id}"))
                .spawn(move || shard::run_shard_thread(start))
                .map_err(|e| StartError::Shard(format!("cannot spawn shard thread: {e}")))?;
            threads.push(thread);
        }
        let broker = Self { config, router, threads, _lock: lock };
        for _ in 0..shard_count {
            match ready_rx.recv_timeout(Duration::from_secs(600)) {
                Ok(Ok(_)) => {}
                Ok(Err(reason)) => {
                    broker.stop();
                    return Err(StartError::Shard(reason));
                }
                Err(_) => {
                    broker.stop();
                    return Err(StartError::Shard("a shard did not start".into()));
                }
            }
        }
        drop(probe);
        if let Some(addr) = broker.config.metrics_listen {
            crate::http::spawn_metrics_server(addr, broker.router.clone())
                .map_err(|e| StartError::Shard(format!("metrics endpoint {addr}: {e}")))?;
        }
        tracing::info!(
            listen = %broker.config.listen,
            shards = shard_count,
            data_dir = %broker.config.data_dir.display(),
            flush = %broker.config.flush,
            topics = metadata.topics.len(),
            cluster_id = %metadata.cluster_id,
            "broker started"
        );
        Ok(broker)
    }

    /// The broker's configuration.
    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// Inboxes of the shards.
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// Every shard's counters.
    pub fn stats(&self) -> Vec<ShardStats> {
        collect_stats(&self.router)
    }

    /// Stops accepting, finishes in-flight requests, flushes and closes every log, and joins the
    /// shard threads.
    pub fn stop(self) {
        let mut acks = Vec::new();
        for shard in 0..self.router.shard_count() {
            let (tx, rx) = oneshot::channel();
            self.router.send_blocking(shard, ShardMessage::Shutdown(tx));
            acks.push(rx);
        }
        for ack in acks {
            let _ = block_on_thread(ack);
        }
        for thread in self.threads {
            let _ = thread.join();
        }
        tracing::info!("broker stopped");
    }
}

/// Asks every shard for its counters (from a thread outside the shards).
pub fn collect_stats(router: &Router) -> Vec<ShardStats> {
    (0..router.shard_count())
        .filter_map(|shard| {
            let (tx, rx) = oneshot::channel();
            router.send_blocking(shard, ShardMessage::Stats(tx));
            block_on_thread(rx).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_ids_look_like_kafkas() {
        let id = base64_url(&[0xff; 16]);
        assert_eq!(id.len(), 22);
        assert!(id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(base64_url(b"Man"), "TWFu");
    }
}
