//! Security: TLS on client listeners, SASL authentication (PLAIN, SCRAM), ACLs, client quotas,
//! and what each shard keeps of it: the TLS configuration and the PLAIN users, re-read when
//! their files change, and the broker's quota sensors. Also the client's side a broker uses
//! on another's inter-broker listener ([`inter_broker_client`]).
//!
//! Ownership: one [`SecurityFiles`] per broker (`Arc`, shared by the shards so they all serve the
//! same certificate), one [`ShardSecurity`] per shard (`Rc`), used by its connections.

pub mod acl;
pub mod quota;
pub mod sasl;
pub mod scram;
pub mod tls;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::client::ClientSecurity;
use crate::cluster::{ControllerTls, ControllerTlsSource};
use crate::config::{BrokerConfig, SecurityProtocol};
use crate::io::{self, Faults};

/// Files are looked at again at most this often.
const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// A setting built from files, shared by every shard (so all serve the same version): the
/// files are re-read when asked at most once per [`RELOAD_INTERVAL`], and a change that does
/// not build leaves the last good value in use.
struct Watched<T> {
    paths: Vec<Option<PathBuf>>,
    state: Mutex<WatchedState<T>>,
}

struct WatchedState<T> {
    contents: Option<Vec<Option<Vec<u8>>>>,
    value: Option<T>,
    checked: Option<Instant>,
}

impl<T: Clone> Watched<T> {
    fn new(paths: Vec<Option<PathBuf>>) -> Self {
        Self { paths, state: Mutex::new(WatchedState { contents: None, value: None, checked: None }) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, WatchedState<T>> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The current value, after reading the files again if due; `build` makes a value of new
    /// contents. Errors: the files could not be read or built (the last good value stays).
    async fn get(&self, build: impl FnOnce(&[Option<Vec<u8>>]) -> Result<T, String>) -> (Option<T>, Option<String>) {
        {
            let mut state = self.lock();
            // Nothing good yet (another shard may be reading right now): read them here too.
            let due = state.value.is_none() || state.checked.is_none_or(|at| at.elapsed() >= RELOAD_INTERVAL);
            if !due {
                return (state.value.clone(), None);
            }
            state.checked = Some(Instant::now());
        }
        let mut now = Vec::with_capacity(self.paths.len());
        for path in &self.paths {
            let read = match path {
                Some(path) => match io::fs::read(path, &Faults::none()).await {
                    Ok(Some(bytes)) => Some(bytes),
                    Ok(None) => return (self.lock().value.clone(), Some(format!("{}: no such file", path.display()))),
                    Err(e) => return (self.lock().value.clone(), Some(format!("{}: {e}", path.display()))),
                },
                None => None,
            };
            now.push(read);
        }
        let mut state = self.lock();
        if state.contents.as_ref() == Some(&now) {
            return (state.value.clone(), None);
        }
        let built = build(&now);
        state.contents = Some(now);
        match built {
            Ok(value) => {
                let replaced = state.value.replace(value.clone()).is_some();
                (Some(value), replaced.then(String::new))
            }
            Err(err) => (state.value.clone(), Some(err)),
        }
    }
}

/// The TLS configuration, PLAIN users and quota sensors of a broker, shared by its shards.
pub struct SecurityFiles {
    config: Arc<BrokerConfig>,
    quotas: Arc<quota::Quotas>,
    tls: Watched<Arc<rustls::ServerConfig>>,
    controller_tls: Watched<ControllerTls>,
    users: Watched<Arc<BTreeMap<String, String>>>,
}

impl SecurityFiles {
    /// For `config` (read on first use).
    pub fn new(config: Arc<BrokerConfig>) -> Arc<Self> {
        let tls_paths = vec![config.ssl_keystore_location.clone(), config.ssl_truststore_location.clone()];
        let users_paths = vec![config.sasl_plain_users_file.clone()];
        let quotas = quota::Quotas::new(&config);
        Arc::new(Self {
            tls: Watched::new(tls_paths.clone()),
            controller_tls: Watched::new(tls_paths),
            users: Watched::new(users_paths),
            quotas,
            config,
        })
    }

    /// The TLS server configuration as the files are now. `Err` only when none ever loaded.
    pub async fn tls(&self) -> Result<Arc<rustls::ServerConfig>, String> {
        let config = &self.config;
        let (value, said) = self
            .tls
            .get(|files| tls::server_config(config, files[0].as_deref(), files[1].as_deref(), &config.ssl_client_auth))
            .await;
        kept_or_new(value, said, "TLS key store or trust store")
    }

    /// TLS for the controller listener (`CONTROLLER:SSL`) as the files are now: the server side
    /// requires a client certificate that chains to the trust store, the client side presents the
    /// key store's and checks the server's (its IP address too, unless
    /// `ssl_endpoint_identification_algorithm` is empty). Asked at each controller connection, so
    /// renewed certificates are used from the next one on. `Err` only when none ever loaded.
    pub async fn controller_tls(&self) -> Result<ControllerTls, String> {
        let config = &self.config;
        let (value, said) = self
            .controller_tls
            .get(|files| {
                let keystore = tls::keystore_pem(config, files[0].as_deref());
                let trust =
                    files[1].as_deref().ok_or("the controller listener is SSL but has no ssl_truststore_location")?;
                let server = tls::server_config(config, Some(&keystore), Some(trust), "required")?;
                let verify_hostname = !config.ssl_endpoint_identification_algorithm.is_empty();
                let client = tls::client_config(trust, Some(&keystore), verify_hostname)?;
                Ok(ControllerTls { server, client })
            })
            .await;
        kept_or_new(value, said, "controller listener's key store or trust store")
    }

    /// The PLAIN users as they are now (the JAAS ones and the users file's).
    async fn plain_users(&self) -> Result<Arc<BTreeMap<String, String>>, String> {
        if self.config.sasl_plain_users_file.is_none() {
            return Ok(Arc::new(self.config.sasl_plain_users.clone()));
        }
        let config = &self.config;
        let (value, said) = self
            .users
            .get(|files| {
                let text = String::from_utf8_lossy(files[0].as_deref().unwrap_or_default()).into_owned();
                let mut users = config.sasl_plain_users.clone();
                users.extend(sasl::parse_users_file(&text)?);
                Ok(Arc::new(users))
            })
            .await;
        kept_or_new(value, said, "PLAIN users file")
    }
}

/// A shard's view of the security settings.
pub struct ShardSecurity {
    /// Checks requests against the ACLs.
    pub authorizer: acl::Authorizer,
    /// The broker's quota sensors.
    pub quotas: Arc<quota::Quotas>,
    files: Arc<SecurityFiles>,
}

impl ShardSecurity {
    /// Loads what the listeners need (errors: the broker does not start).
    pub async fn new(config: Arc<BrokerConfig>, files: Arc<SecurityFiles>) -> Result<Rc<Self>, String> {
        if config.extra_listeners()?.iter().any(|l| l.protocol.tls()) {
            files.tls().await?;
        }
        files.plain_users().await?;
        Ok(Rc::new(Self { authorizer: acl::Authorizer::new(&config), quotas: files.quotas.clone(), files }))
    }

    /// A server session for a new TLS connection, with the key store as it is now (a changed
    /// file is read again; one that no longer loads leaves the previous configuration in use).
    pub async fn tls_session(&self) -> Result<rustls::ServerConnection, String> {
        let config = self.files.tls().await?;
        rustls::ServerConnection::new(config).map_err(|e| e.to_string())
    }

    /// The PLAIN users as they are now.
    pub async fn plain_users(&self) -> Arc<BTreeMap<String, String>> {
        self.files.plain_users().await.unwrap_or_default()
    }
}

/// A file's contents; errors name it as `what` and its path.
pub async fn read_file(what: &str, path: &std::path::Path) -> Result<Vec<u8>, String> {
    match io::fs::read(path, &Faults::none()).await {
        Ok(Some(bytes)) => Ok(bytes),
        Ok(None) => Err(format!("{what} {}: no such file", path.display())),
        Err(e) => Err(format!("{what} {}: {e}", path.display())),
    }
}

/// The key store's PEM (the file's, or the inline key and chain).
async fn keystore(config: &BrokerConfig) -> Result<Vec<u8>, String> {
    let file = match &config.ssl_keystore_location {
        Some(path) => Some(read_file("key store", path).await?),
        None => None,
    };
    Ok(tls::keystore_pem(config, file.as_deref()))
}

/// Where the control plane gets its TLS from when the controller listener is SSL
/// (`CONTROLLER:SSL`): [`SecurityFiles::controller_tls`], asked per connection.
pub fn controller_tls_source(files: &Arc<SecurityFiles>) -> Result<Option<ControllerTlsSource>, String> {
    if files.config.controller_protocol()? != SecurityProtocol::Ssl {
        return Ok(None);
    }
    let files = files.clone();
    Ok(Some(Arc::new(move || {
        let files = files.clone();
        Box::pin(async move { files.controller_tls().await }) as futures_util::future::LocalBoxFuture<'static, _>
    })))
}

/// What a [`Watched`] setting gave: the value in use, after saying in the log that `what`
/// changed (the new one is used) or changed but does not load (the previous one is kept).
fn kept_or_new<T>(value: Option<T>, said: Option<String>, what: &str) -> Result<T, String> {
    match (&value, said) {
        (Some(_), Some(err)) if err.is_empty() => {
            tracing::info!("{what} changed: new connections use the new one")
        }
        (Some(_), Some(err)) => {
            tracing::warn!(error = %err, "{what} changed but does not load; keeping the previous one")
        }
        (None, Some(err)) => return Err(err),
        _ => {}
    }
    value.ok_or_else(|| format!("no {what}"))
}

/// How this broker connects to another's inter-broker listener (`inter_broker_listener_name`):
/// over TLS it checks the other's certificate against the trust store (and its name, unless
/// `ssl_endpoint_identification_algorithm` is empty) and presents its own key store where
/// listeners ask for client certificates; over SASL it logs in as `inter_broker_sasl_username`.
/// The files are read at each call (followers connect rarely), so a renewed certificate is used
/// from the next connection on.
pub async fn inter_broker_client(config: &BrokerConfig) -> Result<ClientSecurity, String> {
    let protocol = config.inter_broker_protocol()?;
    let mut security = ClientSecurity::default();
    if protocol.tls() {
        let trust_path = config.ssl_truststore_location.as_deref().ok_or("no ssl_truststore_location")?;
        let trust = read_file("trust store", trust_path).await?;
        let identity = if config.ssl_client_auth == "none" { None } else { Some(keystore(config).await?) };
        let verify_hostname = !config.ssl_endpoint_identification_algorithm.is_empty();
        security.tls = Some(tls::client_config(&trust, identity.as_deref(), verify_hostname)?);
    }
    if protocol.sasl() {
        let user = config.inter_broker_sasl_username.as_deref().unwrap_or_default();
        let password = config.inter_broker_sasl_password.as_deref().unwrap_or_default();
        security.sasl = Some(sasl::login(&config.sasl_mechanism_inter_broker_protocol, user, password)?);
    }
    Ok(security)
}
