//! Client listeners beside the main plaintext one, their security protocols (Kafka's
//! `listeners`, `advertised.listeners` and `listener.security.protocol.map`, kept in Kafka's
//! syntax and resolved here), and the TLS and SASL settings they use.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use super::BrokerConfig;

/// How a listener secures its connections (Kafka's `security.protocol`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecurityProtocol {
    /// Neither encrypted nor authenticated.
    Plaintext,
    /// TLS; the principal is the client certificate's subject, or `User:ANONYMOUS`.
    Ssl,
    /// SASL over plain TCP.
    SaslPlaintext,
    /// SASL over TLS.
    SaslSsl,
}

impl SecurityProtocol {
    /// The protocol Kafka names `name`.
    pub fn parse(name: &str) -> Option<Self> {
        match name.trim().to_ascii_uppercase().as_str() {
            "PLAINTEXT" => Some(Self::Plaintext),
            "SSL" => Some(Self::Ssl),
            "SASL_PLAINTEXT" => Some(Self::SaslPlaintext),
            "SASL_SSL" => Some(Self::SaslSsl),
            _ => None,
        }
    }

    /// Whether connections are TLS.
    pub fn tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }

    /// Whether clients authenticate with SASL.
    pub fn sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }
}

/// One client listener, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerSpec {
    /// Listener name, as clients and `advertised.listeners` know it.
    pub name: String,
    /// Address it binds.
    pub addr: SocketAddr,
    /// How it secures connections.
    pub protocol: SecurityProtocol,
    /// Host and port clients are told, when not the bound address.
    pub advertised: Option<(String, u16)>,
}

/// Name of the main listener (`listen`): plaintext, and the one brokers talk to each other over.
pub const PLAINTEXT_LISTENER: &str = "PLAINTEXT";

/// The SASL mechanisms Moldau implements.
pub const SASL_MECHANISMS: &[&str] = &["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];

/// Splits Kafka's `NAME://host:port,...` into names, hosts (empty: every address) and ports.
pub(super) fn parse_listener_list(value: &str) -> Result<Vec<(String, String, u16)>, String> {
    let mut out = Vec::new();
    for listener in value.split(',').map(str::trim).filter(|l| !l.is_empty()) {
        let bad = || format!("listener {listener:?} is not NAME://host:port");
        let (name, address) = listener.split_once("://").ok_or_else(bad)?;
        let (host, port) = address
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.trim_matches(['[', ']']), p.parse::<u16>().ok()?)))
            .ok_or_else(bad)?;
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            return Err(bad());
        }
        out.push((name.to_ascii_uppercase(), host.to_owned(), port));
    }
    Ok(out)
}

/// Parses `NAME:PROTOCOL,...`.
fn parse_protocol_map(value: &str) -> Result<BTreeMap<String, SecurityProtocol>, String> {
    let mut map = BTreeMap::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, protocol) = entry
            .split_once(':')
            .ok_or_else(|| format!("listener_security_protocol_map: {entry:?} is not NAME:PROTOCOL"))?;
        let protocol = SecurityProtocol::parse(protocol).ok_or_else(|| {
            format!("listener_security_protocol_map: {protocol:?} is not PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL")
        })?;
        map.insert(name.trim().to_ascii_uppercase(), protocol);
    }
    Ok(map)
}

impl BrokerConfig {
    /// The client listeners beside `listen`, resolved and checked.
    pub fn extra_listeners(&self) -> Result<Vec<ListenerSpec>, String> {
        let map = parse_protocol_map(&self.listener_security_protocol_map)?;
        let advertised: BTreeMap<String, (String, u16)> = parse_listener_list(&self.advertised_listeners)?
            .into_iter()
            .map(|(name, host, port)| (name, (host, port)))
            .collect();
        let mut out: Vec<ListenerSpec> = Vec::new();
        for (name, host, port) in parse_listener_list(&self.listeners)? {
            if name == PLAINTEXT_LISTENER || name == "CONTROLLER" {
                return Err(format!("listeners: {name} is the name of the main or the controller listener"));
            }
            if out.iter().any(|l| l.name == name) {
                return Err(format!("listeners: {name} is listed twice"));
            }
            let protocol = map.get(&name).copied().or_else(|| SecurityProtocol::parse(&name)).ok_or_else(|| {
                format!(
                    "listeners: {name} is not a security protocol; name its protocol in listener_security_protocol_map"
                )
            })?;
            let host = if host.is_empty() { "0.0.0.0" } else { host.as_str() };
            let addr = format!("{host}:{port}")
                .parse::<SocketAddr>()
                .map_err(|_| format!("listeners: {name}: {host:?} is not an IP address"))?;
            if addr == self.listen && addr.port() != 0 {
                return Err(format!("listeners: {name} binds {addr}, the main listener's address"));
            }
            out.push(ListenerSpec { advertised: advertised.get(&name).cloned(), name, addr, protocol });
        }
        if let Some(unknown) = advertised.keys().find(|n| !out.iter().any(|l| &l.name == *n)) {
            return Err(format!("advertised_listeners: {unknown} is not one of the listeners"));
        }
        let tls = out.iter().any(|l| l.protocol.tls());
        if tls && self.ssl_keystore_location.is_none() && self.ssl_keystore_certificate_chain.is_none() {
            return Err("an SSL or SASL_SSL listener needs ssl_keystore_location (a PEM file with the key and \
                        certificate chain) or ssl_keystore_key and ssl_keystore_certificate_chain"
                .into());
        }
        if !self.ssl_keystore_type.eq_ignore_ascii_case("PEM") || !self.ssl_truststore_type.eq_ignore_ascii_case("PEM")
        {
            return Err("ssl_keystore_type and ssl_truststore_type: only PEM is supported (convert JKS or PKCS12 \
                        with keytool/openssl)"
                .into());
        }
        if !matches!(self.ssl_client_auth.as_str(), "none" | "requested" | "required") {
            return Err(format!("ssl_client_auth must be none, requested or required, not {:?}", self.ssl_client_auth));
        }
        if self.ssl_client_auth != "none" && tls && self.ssl_truststore_location.is_none() {
            return Err("ssl_client_auth needs ssl_truststore_location (the CA certificates, PEM)".into());
        }
        for mechanism in self.sasl_mechanisms() {
            if !SASL_MECHANISMS.contains(&mechanism.as_str()) {
                return Err(format!(
                    "sasl_enabled_mechanisms: {mechanism} is not supported (supported: {})",
                    SASL_MECHANISMS.join(", ")
                ));
            }
        }
        if out.iter().any(|l| l.protocol.sasl()) && self.sasl_mechanisms().is_empty() {
            return Err("a SASL listener needs at least one of sasl_enabled_mechanisms".into());
        }
        Ok(out)
    }

    /// The security protocol of the listener brokers replicate over, once its settings are
    /// checked: it must be one of the listeners, and have what a broker needs to connect to
    /// another's (a trust store for TLS, a login for SASL).
    pub fn inter_broker_protocol(&self) -> Result<SecurityProtocol, String> {
        let name = self.inter_broker_listener_name.trim().to_ascii_uppercase();
        let listeners = self.extra_listeners()?;
        let protocol = if name == PLAINTEXT_LISTENER {
            SecurityProtocol::Plaintext
        } else {
            listeners.into_iter().find(|l| l.name == name).map(|l| l.protocol).ok_or_else(|| {
                format!("inter_broker_listener_name: {name} is neither PLAINTEXT nor one of the listeners")
            })?
        };
        if protocol.sasl() {
            let mechanism = self.sasl_mechanism_inter_broker_protocol.trim().to_ascii_uppercase();
            if !self.sasl_mechanisms().contains(&mechanism) {
                return Err(format!(
                    "sasl_mechanism_inter_broker_protocol: {mechanism} is not one of sasl_enabled_mechanisms"
                ));
            }
            if self.inter_broker_sasl_username.is_none() || self.inter_broker_sasl_password.is_none() {
                return Err(format!(
                    "the inter-broker listener {name} is SASL: brokers need inter_broker_sasl_username and \
                     inter_broker_sasl_password (Kafka: username and password in that listener's sasl.jaas.config)"
                ));
            }
        }
        if protocol.tls() && self.ssl_truststore_location.is_none() {
            return Err(format!(
                "the inter-broker listener {name} is TLS: brokers need ssl_truststore_location, the CA \
                 certificates they check each other's against"
            ));
        }
        if !matches!(self.ssl_endpoint_identification_algorithm.to_ascii_lowercase().as_str(), "https" | "") {
            return Err(format!(
                "ssl_endpoint_identification_algorithm must be https or empty, not {:?}",
                self.ssl_endpoint_identification_algorithm
            ));
        }
        Ok(protocol)
    }

    /// The security protocol of the controller listener (the Raft quorum and brokers' calls to
    /// the controller): PLAINTEXT unless `listener_security_protocol_map` names CONTROLLER as SSL,
    /// which makes both ends present the key store's certificate and check the other's against
    /// the trust store (mutual TLS: the protocol there is Moldau's own, so there is no SASL).
    pub fn controller_protocol(&self) -> Result<SecurityProtocol, String> {
        let protocol = parse_protocol_map(&self.listener_security_protocol_map)?
            .get("CONTROLLER")
            .copied()
            .unwrap_or(SecurityProtocol::Plaintext);
        match protocol {
            SecurityProtocol::Plaintext => Ok(protocol),
            SecurityProtocol::Ssl => {
                let keystore = self.ssl_keystore_location.is_some() || self.ssl_keystore_certificate_chain.is_some();
                if !keystore || self.ssl_truststore_location.is_none() {
                    return Err("CONTROLLER:SSL needs a key store (ssl_keystore_location) and a trust store \
                                (ssl_truststore_location): controllers and brokers check each other's certificates"
                        .into());
                }
                Ok(protocol)
            }
            _ => Err("the CONTROLLER listener takes PLAINTEXT or SSL (mutual TLS), not SASL".into()),
        }
    }

    /// The enabled SASL mechanisms, upper case.
    pub fn sasl_mechanisms(&self) -> Vec<String> {
        self.sasl_enabled_mechanisms
            .split(',')
            .map(|m| m.trim().to_ascii_uppercase())
            .filter(|m| !m.is_empty())
            .collect()
    }
}

/// The options of a JAAS login module entry (`Module required key="value" ...;`), as Kafka
/// configures SASL in `sasl.jaas.config`.
fn jaas_options(value: &str) -> Result<Vec<(String, String)>, String> {
    let mut options = Vec::new();
    let mut rest = value;
    while let Some(at) = rest.find('=') {
        let key = rest[..at].rsplit(char::is_whitespace).next().unwrap_or_default().to_owned();
        let after = rest[at + 1..].trim_start();
        let quoted =
            after.strip_prefix('"').ok_or_else(|| format!("sasl.jaas.config: {key}=\"value\" needs quotes"))?;
        let end = quoted.find('"').ok_or("sasl.jaas.config: unterminated value")?;
        options.push((key, quoted[..end].to_owned()));
        rest = &quoted[end + 1..];
    }
    Ok(options)
}

/// What a JAAS entry configures: the PLAIN users it knows (`user_alice="secret"`), and the
/// login this broker presents to others (`username`, `password`).
pub struct Jaas {
    /// PLAIN users and their passwords.
    pub users: BTreeMap<String, String>,
    /// User name and password.
    pub login: Option<(String, String)>,
}

/// Reads a JAAS entry (`sasl.jaas.config`).
pub fn jaas(value: &str) -> Result<Jaas, String> {
    let options = jaas_options(value)?;
    let find = |name: &str| options.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let users = options.iter().filter_map(|(k, v)| Some((k.strip_prefix("user_")?.to_owned(), v.clone()))).collect();
    let login = match (find("username"), find("password")) {
        (Some(user), Some(password)) => Some((user, password)),
        (None, None) => None,
        _ => return Err("sasl.jaas.config: username and password go together".into()),
    };
    Ok(Jaas { users, login })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_resolve_their_protocols_from_the_name_or_the_map() {
        let config = BrokerConfig {
            listeners: "SASL_SSL://127.0.0.1:9094,internal_tls://:9095".into(),
            listener_security_protocol_map: "INTERNAL_TLS:SSL".into(),
            advertised_listeners: "SASL_SSL://kafka.example:19094".into(),
            ssl_keystore_location: Some("/k.pem".into()),
            ..BrokerConfig::default()
        };
        let listeners = config.extra_listeners().unwrap();
        assert_eq!(listeners[0].protocol, SecurityProtocol::SaslSsl);
        assert_eq!(listeners[0].advertised, Some(("kafka.example".into(), 19094)));
        assert_eq!(listeners[1].name, "INTERNAL_TLS");
        assert_eq!(listeners[1].protocol, SecurityProtocol::Ssl);
        assert_eq!(listeners[1].addr.to_string(), "0.0.0.0:9095");
        let no_key = BrokerConfig { ssl_keystore_location: None, ..config.clone() };
        assert!(no_key.extra_listeners().unwrap_err().contains("ssl_keystore_location"));
        let unknown = BrokerConfig { listeners: "OTHER://:1".into(), ..BrokerConfig::default() };
        assert!(unknown.extra_listeners().unwrap_err().contains("listener_security_protocol_map"));
        let mechanism = BrokerConfig { sasl_enabled_mechanisms: "GSSAPI".into(), ..config };
        assert!(mechanism.extra_listeners().unwrap_err().contains("GSSAPI"));
    }

    #[test]
    fn an_inter_broker_listener_must_exist_and_have_what_a_broker_connects_with() {
        let config = BrokerConfig {
            listeners: "SASL_SSL://127.0.0.1:9094".into(),
            ssl_keystore_location: Some("/k.pem".into()),
            ssl_truststore_location: Some("/ca.pem".into()),
            inter_broker_listener_name: "sasl_ssl".into(),
            inter_broker_sasl_username: Some("broker".into()),
            inter_broker_sasl_password: Some("secret".into()),
            ..BrokerConfig::default()
        };
        assert_eq!(config.inter_broker_protocol(), Ok(SecurityProtocol::SaslSsl));
        assert_eq!(BrokerConfig::default().inter_broker_protocol(), Ok(SecurityProtocol::Plaintext));
        let refused = |config: BrokerConfig| config.inter_broker_protocol().unwrap_err();
        assert!(
            refused(BrokerConfig { inter_broker_listener_name: "OTHER".into(), ..config.clone() })
                .contains("neither PLAINTEXT nor one of the listeners")
        );
        assert!(
            refused(BrokerConfig { inter_broker_sasl_password: None, ..config.clone() })
                .contains("inter_broker_sasl_password")
        );
        assert!(
            refused(BrokerConfig { ssl_truststore_location: None, ..config.clone() })
                .contains("ssl_truststore_location")
        );
        assert!(
            refused(BrokerConfig { sasl_enabled_mechanisms: "SCRAM-SHA-512".into(), ..config.clone() })
                .contains("not one of sasl_enabled_mechanisms")
        );
        assert!(
            refused(BrokerConfig { ssl_endpoint_identification_algorithm: "ldap".into(), ..config })
                .contains("https or empty")
        );
    }

    #[test]
    fn the_controller_listener_is_plaintext_or_mutual_tls() {
        assert_eq!(BrokerConfig::default().controller_protocol(), Ok(SecurityProtocol::Plaintext));
        let ssl = BrokerConfig {
            listener_security_protocol_map: "CONTROLLER:SSL".into(),
            ssl_keystore_location: Some("/k.pem".into()),
            ssl_truststore_location: Some("/ca.pem".into()),
            ..BrokerConfig::default()
        };
        assert_eq!(ssl.controller_protocol(), Ok(SecurityProtocol::Ssl));
        let no_trust = BrokerConfig { ssl_truststore_location: None, ..ssl.clone() };
        assert!(no_trust.controller_protocol().unwrap_err().contains("trust store"));
        let sasl = BrokerConfig { listener_security_protocol_map: "CONTROLLER:SASL_SSL".into(), ..ssl };
        assert!(sasl.controller_protocol().unwrap_err().contains("not SASL"));
    }

    #[test]
    fn jaas_plain_users_are_read_from_the_login_module_options() {
        let jaas = jaas(
            r#"org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="a=b" user_admin="a" user_alice="s3 cret";"#,
        )
        .unwrap();
        assert_eq!(jaas.login, Some(("admin".to_owned(), "a=b".to_owned())));
        let users = jaas.users;
        assert_eq!(users.get("admin").map(String::as_str), Some("a"));
        assert_eq!(users.get("alice").map(String::as_str), Some("s3 cret"));
        assert_eq!(users.len(), 2);
    }
}
