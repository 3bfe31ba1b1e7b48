//! Security: TLS on client listeners, SASL authentication (PLAIN, SCRAM), and what each shard
//! keeps of it: the TLS configuration and the PLAIN users, re-read when their files change.
//!
//! Ownership: one [`ShardSecurity`] per shard (`Rc`), used by the shard's connections only.

pub mod acl;
pub mod sasl;
pub mod scram;
pub mod tls;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::BrokerConfig;
use crate::io::{self, Faults};

/// Files are looked at again at most this often.
const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// Files whose contents a setting is built from, re-read when asked at most once per
/// [`RELOAD_INTERVAL`].
struct Watched {
    paths: Vec<Option<PathBuf>>,
    contents: RefCell<Vec<Option<Vec<u8>>>>,
    checked: Cell<Option<Instant>>,
}

impl Watched {
    fn new(paths: Vec<Option<PathBuf>>) -> Self {
        let none = vec![None; paths.len()];
        Self { paths, contents: RefCell::new(none), checked: Cell::new(None) }
    }

    /// The files' new contents when any changed since the last look (always on the first).
    async fn changed(&self) -> Result<Option<Vec<Option<Vec<u8>>>>, String> {
        let first = self.checked.get().is_none();
        if self.checked.get().is_some_and(|at| at.elapsed() < RELOAD_INTERVAL) {
            return Ok(None);
        }
        self.checked.set(Some(Instant::now()));
        let mut now = Vec::with_capacity(self.paths.len());
        for path in &self.paths {
            now.push(match path {
                Some(path) => Some(
                    io::fs::read(path, &Faults::none())
                        .await
                        .map_err(|e| format!("{}: {e}", path.display()))?
                        .ok_or_else(|| format!("{}: no such file", path.display()))?,
                ),
                None => None,
            });
        }
        if !first && *self.contents.borrow() == now {
            return Ok(None);
        }
        *self.contents.borrow_mut() = now.clone();
        Ok(Some(now))
    }
}

/// A shard's TLS configuration and PLAIN users.
pub struct ShardSecurity {
    /// Checks requests against the ACLs.
    pub authorizer: acl::Authorizer,
    config: Arc<BrokerConfig>,
    tls_files: Watched,
    tls: RefCell<Option<Arc<rustls::ServerConfig>>>,
    users_file: Watched,
    plain_users: RefCell<Rc<BTreeMap<String, String>>>,
}

impl ShardSecurity {
    /// Reads the TLS and PLAIN settings once (errors: the broker does not start).
    pub async fn new(config: Arc<BrokerConfig>) -> Result<Rc<Self>, String> {
        let tls_needed = config.extra_listeners()?.iter().any(|l| l.protocol.tls());
        let tls_paths = if tls_needed {
            vec![config.ssl_keystore_location.clone(), config.ssl_truststore_location.clone()]
        } else {
            Vec::new()
        };
        let security = Rc::new(Self {
            authorizer: acl::Authorizer::new(&config),
            tls_files: Watched::new(tls_paths),
            tls: RefCell::new(None),
            users_file: Watched::new(vec![config.sasl_plain_users_file.clone()]),
            plain_users: RefCell::new(Rc::new(config.sasl_plain_users.clone())),
            config,
        });
        if tls_needed {
            security.refresh_tls().await?;
        }
        security.refresh_users().await?;
        Ok(security)
    }

    async fn refresh_tls(&self) -> Result<(), String> {
        if let Some(files) = self.tls_files.changed().await? {
            let built = tls::server_config(&self.config, files[0].as_deref(), files[1].as_deref())?;
            if self.tls.borrow_mut().replace(built).is_some() {
                tracing::info!("TLS key store or trust store changed: new connections use the new one");
            }
        }
        Ok(())
    }

    async fn refresh_users(&self) -> Result<(), String> {
        if self.config.sasl_plain_users_file.is_none() {
            return Ok(());
        }
        if let Some(files) = self.users_file.changed().await? {
            let text = String::from_utf8_lossy(files[0].as_deref().unwrap_or_default()).into_owned();
            let mut users = self.config.sasl_plain_users.clone();
            users.extend(sasl::parse_users_file(&text)?);
            *self.plain_users.borrow_mut() = Rc::new(users);
        }
        Ok(())
    }

    /// A server session for a new TLS connection, with the key store as it is now (a changed
    /// file is read again; one that no longer loads leaves the previous configuration in use).
    pub async fn tls_session(&self) -> Result<rustls::ServerConnection, String> {
        if let Err(err) = self.refresh_tls().await {
            tracing::warn!(error = %err, "TLS files changed but do not load; keeping the previous ones");
        }
        let config = self.tls.borrow().clone().ok_or("no TLS configuration")?;
        rustls::ServerConnection::new(config).map_err(|e| e.to_string())
    }

    /// The PLAIN users as they are now.
    pub async fn plain_users(&self) -> Rc<BTreeMap<String, String>> {
        if let Err(err) = self.refresh_users().await {
            tracing::warn!(error = %err, "PLAIN users file changed but does not load; keeping the previous users");
        }
        self.plain_users.borrow().clone()
    }
}
