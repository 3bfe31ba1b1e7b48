//! A broker process: its data directory, the metadata it starts from, the shard threads and the
//! services each of them runs, wired together here (and only here), and the metrics endpoint.
//!
//! Per shard: a `PartitionManager` (its partitions), a `LocalMetadata` (its view of the
//! cluster), a `GroupCoordinator`, and the Kafka service (listener and connections). Shard 0 also
//! runs the node's control plane: its metadata quorum member and controller (voters), the
//! publisher that makes every committed change take effect on all shards, and the broker's
//! registration. Clients are served once the broker is registered and caught up.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

use crate::cluster::{
    ControlPlane, ControllerHandle, Endpoint, LocalMetadata, MetadataImage, MetadataView, PlaneStart, Publisher,
    QuorumStart, Voter, apply_on_shard, opens_for_shard, read_cluster_id,
};
use crate::config::{BrokerConfig, PLAINTEXT_LISTENER, SecurityProtocol};
use crate::group::{GroupCoordinator, run_group_ticker};
use crate::http::ShardStats;
use crate::io::{self, Faults};
use crate::kafka::server::{KafkaContext, KafkaServices};
use crate::model::TopicPartition;
use crate::partition::{CleanerSettings, PartitionManager, run_cleaner, run_retention};
use crate::replication::Replication;
use crate::security::{SecurityFiles, ShardSecurity};
use crate::shard::{ShardInit, ShardLimits, ShardSet, ShardThreads, Sharded, stop_current};
use crate::storage::{LogContext, ReadCache};

/// Calls the controller's queue holds before callers wait.
const CONTROLLER_QUEUE_CAPACITY: usize = 1024;
/// Control-lane jobs a shard's mailbox holds before senders wait.
const CONTROL_QUEUE_CAPACITY: usize = 256;

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
    /// The configuration is refused.
    #[error("{0}")]
    Config(String),
    /// A shard failed to start.
    #[error("{0}")]
    Shard(String),
}

/// The services of every shard.
#[derive(Clone)]
struct Services {
    shards: ShardSet,
    plane: Sharded<ControlPlane>,
    replication: Sharded<Replication>,
    partitions: Sharded<PartitionManager>,
    metadata: Sharded<LocalMetadata>,
    groups: Sharded<GroupCoordinator>,
    kafka: Sharded<KafkaContext>,
}

/// A running broker.
pub struct Broker {
    config: Arc<BrokerConfig>,
    services: Services,
    threads: ShardThreads,
    _lock: io::fs::DirLock,
}

fn data_dir_error(path: &Path, reason: impl std::fmt::Display) -> StartError {
    StartError::DataDir { path: path.to_owned(), reason: reason.to_string() }
}

/// Removes directories left by deletions that a crash interrupted: partitions this broker does not
/// host in `view` (everything the node's metadata log holds, committed or not) and directories
/// already renamed for deletion.
async fn remove_orphans(config: &BrokerConfig, view: &MetadataView, faults: &Faults) {
    let Ok(names) = io::fs::list_dir(&config.data_dir, faults).await else { return };
    for name in names {
        let path = config.data_dir.join(&name);
        if name == "__cluster" || !io::fs::is_dir(&path, faults).await.unwrap_or(false) {
            continue;
        }
        let hosted = |topic: &str, index: &str| {
            let Some(topic) = view.topic(topic) else { return false };
            index.parse::<i32>().is_ok_and(|i| view.placement.shard_of(&(topic.id, i)).is_some())
        };
        let doomed = name.ends_with("-delete")
            || match name.rsplit_once('-') {
                Some((topic, index)) => !hosted(topic, index),
                None => false,
            };
        if doomed {
            tracing::warn!(dir = %path.display(), "removing the directory of a partition this broker does not host");
            if let Err(err) = io::fs::remove_dir_all(&path, faults).await {
                tracing::error!(dir = %path.display(), error = %err, "could not remove directory");
            }
        }
    }
}

/// What each shard's start needs, shared by all of them.
struct Startup {
    config: Arc<BrokerConfig>,
    faults: Faults,
    view: Arc<MetadataView>,
    services: Services,
    controller: ControllerHandle,
    /// Partitions a shard could not open (a full disk, say): the publisher tries them again.
    failed: std::sync::Mutex<BTreeSet<TopicPartition>>,
    /// TLS configuration and PLAIN users, shared by the shards.
    security: Arc<SecurityFiles>,
}

/// Builds the calling shard's services, opens its partitions, starts listening.
async fn start_shard(shard: usize, startup: Arc<Startup>) -> Result<(), String> {
    let Startup { config, faults, view, services, controller, failed, security } = &*startup;
    let cache = Rc::new(RefCell::new(ReadCache::new(config.cache_bytes_per_shard)));
    let partitions = Rc::new(PartitionManager::new(
        config.data_dir.clone(),
        config.broker_id,
        LogContext { cache, faults: faults.clone() },
    ));
    services.partitions.install(partitions.clone());
    let metadata = Rc::new(LocalMetadata::new(view.clone()));
    services.metadata.install(metadata.clone());
    let groups = GroupCoordinator::start(partitions.clone(), metadata.clone(), config.clone());
    services.groups.install(groups.clone());
    let replication =
        Replication::start(shard, partitions.clone(), metadata.clone(), controller.clone(), config.clone());
    services.replication.install(replication);
    // Open this shard's partitions before anything is served (the group coordinator hears of
    // the offsets partitions through the metadata it subscribed to).
    let opens = opens_for_shard(view, None, shard);
    // One that fails (logged) is served as unavailable and opened again later, so a broker
    // starts on a full disk and its partitions come back once there is room.
    if let Err(failures) = apply_on_shard(&metadata, &partitions, view.clone(), opens, Vec::new()).await {
        failed.lock().map_err(|_| "poisoned")?.extend(failures);
    }
    let kafka_services = KafkaServices {
        shards: services.shards.clone(),
        partitions: services.partitions.clone(),
        groups: services.groups.clone(),
        controller: controller.clone(),
        config: config.clone(),
        security: ShardSecurity::new(config.clone(), security.clone()).await?,
    };
    let kafka = KafkaContext::new(shard, kafka_services, metadata.clone());
    services.kafka.install(kafka.clone());
    // Bound now (the ports are taken and connections queue), served once the broker is ready.
    let listener = io::net::reuseport_listener(config.listen, 1024)
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    kafka.hold_listener(listener, PLAINTEXT_LISTENER, SecurityProtocol::Plaintext);
    for spec in config.extra_listeners()? {
        let listener = io::net::reuseport_listener(spec.addr, 1024)
            .map_err(|e| format!("cannot listen on {} ({}): {e}", spec.addr, spec.name))?;
        kafka.hold_listener(listener, &spec.name, spec.protocol);
    }
    let retention_ms = config.log_retention_check_interval_ms.max(10);
    if config.log_cleaner_enable {
        let shards = config.shard_count().max(1);
        let settings = CleanerSettings {
            map_entries: (config.log_cleaner_dedupe_buffer_size as usize
                / shards
                / crate::storage::OFFSET_MAP_ENTRY_BYTES)
                .max(1024),
            bytes_per_sec: config.log_cleaner_io_max_bytes_per_second / shards as f64,
            backoff: std::time::Duration::from_millis(config.log_cleaner_backoff_ms.max(10)),
        };
        io::spawn_detached(run_cleaner(partitions.clone(), settings));
    }
    io::spawn_detached(run_retention(partitions, std::time::Duration::from_millis(retention_ms)));
    io::spawn_detached(run_group_ticker(groups));
    tracing::debug!(shard, "shard ready");
    Ok(())
}

/// The address a listener will bind. Port 0: a free port picked once, so every shard binds the
/// same one (the probe socket, kept in `probes`, stays open in the same SO_REUSEPORT group
/// until the shards are listening). A fixed port is bound alone first, to be sure it is free
/// (the shards share it through SO_REUSEPORT, which would just as well let them join another
/// broker's listener there), then held by a probe the same way.
fn reserve_port(addr: SocketAddr, probes: &mut Vec<std::net::TcpListener>) -> Result<SocketAddr, StartError> {
    if addr.port() == 0 {
        let probe = io::net::reuseport_std_listener(addr)
            .map_err(|e| StartError::Shard(format!("cannot listen on {addr}: {e}")))?;
        let port = probe.local_addr().map_err(|e| StartError::Shard(e.to_string()))?.port();
        probes.push(probe);
        Ok(SocketAddr::new(addr.ip(), port))
    } else {
        io::net::exclusive_std_listener_patient(addr, 1, PORT_PATIENCE).map_err(|e| {
            StartError::Shard(format!("cannot listen on {addr}: {e} (is another broker running there?)"))
        })?;
        // Held, like a port-0 probe, so no port-0 listener bound after this can be given it.
        let probe = io::net::reuseport_std_listener(addr)
            .map_err(|e| StartError::Shard(format!("cannot listen on {addr}: {e}")))?;
        probes.push(probe);
        Ok(addr)
    }
}

/// Where clients reach this broker, by listener: the PLAINTEXT one first.
fn endpoints(config: &BrokerConfig) -> Vec<Endpoint> {
    let (host, port) = config.advertised();
    let mut endpoints = vec![Endpoint { listener: PLAINTEXT_LISTENER.into(), host, port }];
    for spec in config.extra_listeners().unwrap_or_default() {
        let (host, port) = spec.advertised.unwrap_or_else(|| (spec.addr.ip().to_string(), spec.addr.port()));
        endpoints.push(Endpoint { listener: spec.name, host, port });
    }
    endpoints
}

/// How long a starting broker waits for a fixed port held by someone else: long enough for a
/// crashed predecessor's sockets to go, short enough to say soon that another process has it.
const PORT_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);

impl Broker {
    /// Starts a broker and returns once every shard is listening.
    pub fn start(config: BrokerConfig) -> Result<Self, StartError> {
        Self::start_with_faults(config, Faults::none())
    }

    /// Starts a broker whose files use `faults` (tests).
    pub fn start_with_faults(config: BrokerConfig, faults: Faults) -> Result<Self, StartError> {
        config.validate().map_err(|e| StartError::Config(e.to_string()))?;
        crate::cluster::topic_config::check_broker_defaults(&config).map_err(StartError::Config)?;
        let lock =
            io::fs::DirLock::acquire(&config.data_dir, &faults).map_err(|e| data_dir_error(&config.data_dir, e))?;
        let mut config = config;
        // Fixed ports are bound before any port 0 is: a free port the kernel picks for a port-0
        // listener on the same address could otherwise be this node's own fixed one.
        let controller_listener = match config.controller_listener() {
            Some(addr) => Some(
                io::net::exclusive_std_listener_patient(addr, 128, PORT_PATIENCE)
                    .map_err(|e| StartError::Shard(format!("cannot listen for controllers on {addr}: {e}")))?,
            ),
            None => None,
        };
        let extra = config.extra_listeners().map_err(StartError::Config)?;
        let mut wanted: Vec<SocketAddr> = std::iter::once(config.listen).chain(extra.iter().map(|s| s.addr)).collect();
        let mut probes = Vec::new();
        for fixed_first in [true, false] {
            for addr in wanted.iter_mut().filter(|a| (a.port() != 0) == fixed_first) {
                *addr = reserve_port(*addr, &mut probes)?;
            }
        }
        config.listen = wanted[0];
        config.listeners = extra
            .iter()
            .zip(&wanted[1..])
            .map(|(spec, addr)| format!("{}://{addr}", spec.name))
            .collect::<Vec<_>>()
            .join(",");
        let probe = probes;
        // The principal followers fetch as (over SSL it is the key store's subject: not checked).
        let follower = match config.inter_broker_protocol().map_err(StartError::Config)? {
            SecurityProtocol::Plaintext => Some("User:ANONYMOUS".to_owned()),
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl => {
                config.inter_broker_sasl_username.as_ref().map(|user| format!("User:{user}"))
            }
            SecurityProtocol::Ssl => None,
        };
        if let Some(principal) = follower
            && !config.authorizer_class_name.is_empty()
            && config.voters.is_some()
            && !config.super_users.split(';').any(|u| u.trim() == principal)
        {
            tracing::warn!(
                listener = %config.inter_broker_listener_name,
                "followers fetch as {principal}: give it CLUSTER_ACTION on the cluster (or list it in super.users), \
                 or replication stops"
            );
        }
        let config = Arc::new(config);
        let voters: Vec<Voter> = config
            .parsed_voters()
            .map_err(StartError::Config)?
            .into_iter()
            .map(|(id, addr)| Voter { id, addr })
            .collect();
        let is_voter = voters.iter().any(|v| v.id == config.broker_id);
        let (quorum_start, view, cluster_id) = io::block_on(async {
            let recorded = read_cluster_id(&config.data_dir, &faults).await.map_err(|e| format!("cluster id: {e}"))?;
            let (start, image) = if is_voter {
                let start = QuorumStart::load(&config.data_dir, config.broker_id, &voters, faults.clone()).await?;
                // Files of anything the node's log holds are kept, committed or not.
                let held = MetadataView::build(Arc::new(start.held.clone()), None, &config);
                remove_orphans(&config, &held, &faults).await;
                let image = Arc::new(start.image.clone());
                (Some(start), image)
            } else {
                // A broker that is not a voter learns the metadata from them; it removes no
                // directory before it knows what it hosts.
                (None, Arc::new(MetadataImage::empty()))
            };
            // The id recorded, else any the node's log holds (a cluster's id never changes).
            let held_id = start.as_ref().map(|s| s.held.cluster_id.clone()).filter(|c| !c.is_empty());
            let cluster_id = recorded.or(held_id);
            Ok::<_, String>((start, Arc::new(MetadataView::build(image, None, &config)), cluster_id))
        })
        .map_err(|e| data_dir_error(&config.data_dir, e))?;
        let limits = ShardLimits {
            count: config.shard_count(),
            data_capacity: config.shard_queue_capacity,
            control_capacity: CONTROL_QUEUE_CAPACITY,
        };
        let (shards, inboxes) = ShardSet::new(limits);
        let services = Services {
            partitions: Sharded::new(&shards),
            metadata: Sharded::new(&shards),
            groups: Sharded::new(&shards),
            kafka: Sharded::new(&shards),
            plane: Sharded::new(&shards),
            replication: Sharded::new(&shards),
            shards: shards.clone(),
        };
        let (controller, calls) = ControllerHandle::new(CONTROLLER_QUEUE_CAPACITY);
        let startup = Arc::new(Startup {
            config: config.clone(),
            faults: faults.clone(),
            view: view.clone(),
            services: services.clone(),
            controller,
            failed: std::sync::Mutex::new(BTreeSet::new()),
            security: SecurityFiles::new(config.clone()),
        });
        let init: ShardInit = {
            let startup = startup.clone();
            Arc::new(move |shard| Box::pin(start_shard(shard, startup.clone())))
        };
        let threads = ShardThreads::start(&shards, inboxes, init).map_err(StartError::Shard)?;
        // The control plane starts once every shard has opened its partitions, so its first
        // publish never races a shard's start (calls made meanwhile wait in its queue).
        let kafka = services.kafka.clone();
        let plane_start = PlaneStart {
            config: config.clone(),
            voters,
            quorum: quorum_start,
            image: view.image.clone(),
            cluster_id,
            faults: faults.clone(),
            publisher: Publisher::new(
                view.clone(),
                config.clone(),
                services.metadata.clone(),
                services.partitions.clone(),
                std::mem::take(&mut *startup.failed.lock().map_err(|_| StartError::Shard("poisoned".into()))?),
            ),
            calls,
            listener: controller_listener,
            tls: None,
            endpoints: endpoints(&config),
            on_ready: Box::new(move || open_for_clients(kafka)),
        };
        let planes = services.plane.clone();
        let controller_tls = crate::security::controller_tls_source(&startup.security).map_err(StartError::Shard);
        let started = controller_tls.and_then(|tls| {
            shards
                .invoke_on_blocking(0, move || async move {
                    let mut plane_start = plane_start;
                    if let Some(tls) = &tls {
                        // Refuse to start with files that do not load, rather than at the first call.
                        tls().await?;
                    }
                    plane_start.tls = tls;
                    ControlPlane::start(plane_start).map(|plane| planes.install(plane))
                })
                .map_err(|e| StartError::Shard(e.to_string()))
                .and_then(|started| started.map_err(StartError::Shard))
        });
        if let Err(err) = started {
            drop(probe);
            Self::stop_services(&services, threads);
            return Err(err);
        }
        drop(probe);
        let broker = Self { config, services, threads, _lock: lock };
        if let Some(addr) = broker.config.metrics_listen {
            let services = broker.services.clone();
            let stats = Arc::new(move || collect_stats(&services));
            // HTTPS with the listeners' key store (and client certificates as they ask for them).
            let tls: Option<io::http::TlsSource> = broker.config.metrics_tls.then(|| {
                let files = startup.security.clone();
                Arc::new(move || {
                    let files = files.clone();
                    Box::pin(async move { files.tls().await }) as futures_util::future::LocalBoxFuture<'static, _>
                }) as io::http::TlsSource
            });
            if let Err(err) = crate::http::spawn_metrics_server(addr, stats, tls) {
                let reason = format!("metrics endpoint {addr}: {err}");
                broker.stop();
                return Err(StartError::Shard(reason));
            }
        }
        tracing::info!(
            listen = %broker.config.listen,
            shards = shards.count(),
            data_dir = %broker.config.data_dir.display(),
            flush = %broker.config.flush,
            topics = view.image.topic_count(),
            cluster_id = %view.image.cluster_id,
            broker_id = broker.config.broker_id,
            "broker started"
        );
        Ok(broker)
    }

    /// The broker's configuration.
    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// Every shard's counters.
    pub fn stats(&self) -> Vec<ShardStats> {
        collect_stats(&self.services)
    }

    /// Stops accepting on every shard and lets connections finish what they are doing (up to the
    /// grace period), then flushes and closes every log, and joins the shard threads.
    pub fn stop(self) {
        let plane = self.services.plane.clone();
        let _ = self.services.shards.invoke_on_blocking(0, move || async move {
            if let Some(plane) = plane.try_local() {
                plane.shutdown().await;
            }
        });
        Self::stop_services(&self.services, self.threads);
        tracing::info!("broker stopped");
    }

    fn stop_services(services: &Services, threads: ShardThreads) {
        // Every shard stops accepting and drains its connections at the same time; only then do
        // the logs close (a request still being served on one shard may need another's).
        let drained = (0..services.shards.count()).map(|shard| {
            let (kafka, groups, replication) =
                (services.kafka.clone(), services.groups.clone(), services.replication.clone());
            services.shards.control_on(shard, move || async move {
                if let Some(groups) = groups.try_local() {
                    groups.stop();
                }
                if let Some(replication) = replication.try_local() {
                    replication.stop();
                }
                if let Some(kafka) = kafka.try_local() {
                    kafka.stop().await;
                }
            })
        });
        io::block_on_thread(futures_util::future::join_all(drained));
        let closed = (0..services.shards.count()).map(|shard| {
            let partitions = services.partitions.clone();
            services.shards.control_on(shard, move || async move {
                if let Some(partitions) = partitions.try_local() {
                    partitions.close_all().await;
                }
                stop_current();
            })
        });
        io::block_on_thread(futures_util::future::join_all(closed));
        threads.join();
    }
}

/// Asks every shard for its counters (from a thread that is not a shard).
fn collect_stats(services: &Services) -> Vec<ShardStats> {
    (0..services.shards.count())
        .filter_map(|shard| {
            let (kafka, partitions) = (services.kafka.clone(), services.partitions.clone());
            services
                .shards
                .invoke_on_blocking(shard, move || async move {
                    let kafka = kafka.local();
                    let partitions = partitions.local().stats();
                    ShardStats {
                        shard,
                        core: core_of_current_thread(),
                        // SAFETY: gettid has no preconditions.
                        thread_id: unsafe { libc::gettid() },
                        partitions: partitions.partitions,
                        connections: kafka.metrics.connections.get(),
                        requests: kafka.metrics.requests.get(),
                        request_errors: kafka.metrics.request_errors.get(),
                        partition_errors: kafka.metrics.partition_errors.get(),
                        authentication_failures: kafka.metrics.authentication_failures.get(),
                        quota_throttles: kafka.metrics.quota_throttles.get(),
                        fetch_sessions_opened: kafka.metrics.fetch_sessions_opened.get(),
                        incremental_fetches: kafka.metrics.incremental_fetches.get(),
                        session_partitions_unread: kafka.metrics.session_partitions_unread.get(),
                        produce_bytes: partitions.appended_bytes,
                        fetch_bytes: partitions.read_bytes,
                        cache_bytes: partitions.cache.used_bytes,
                        cache_hits: partitions.cache.hits,
                        cache_misses: partitions.cache.misses,
                        errors: kafka
                            .error_stats
                            .snapshot()
                            .into_iter()
                            .map(|(api, error, code, count)| crate::http::ErrorCount { api, error, code, count })
                            .collect(),
                    }
                })
                .ok()
        })
        .collect()
}

/// Every shard starts accepting clients (the broker is registered and caught up).
fn open_for_clients(kafka: Sharded<KafkaContext>) {
    for shard in 0..kafka.shards().count() {
        let kafka = kafka.clone();
        io::spawn_detached(async move {
            let shards = kafka.shards().clone();
            let _ = shards
                .control_on(shard, move || async move {
                    if let Some(kafka) = kafka.try_local() {
                        kafka.open_for_clients();
                    }
                })
                .await;
        });
    }
}

/// The CPU the calling thread is pinned to, when it may run on exactly one.
fn core_of_current_thread() -> Option<usize> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_getaffinity fills it for this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return None;
        }
        let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize).filter(|&c| libc::CPU_ISSET(c, &set)).collect();
        (cpus.len() == 1).then(|| cpus[0])
    }
}
