//! `--command-config FILE`: client security settings in a properties file, with the names
//! librdkafka takes (so one file serves `kcat -F`, confluent-kafka and `moldau`), and the Java
//! client's `sasl.jaas.config` and PEM `ssl.truststore.location` / `ssl.keystore.location`
//! for files written for Kafka's own tools.

use std::path::Path;

use crate::client::ClientSecurity;
use crate::config::{SecurityProtocol, jaas, parse_properties};
use crate::security::{read_file, sasl, tls};

/// The names taken, for the error on an unknown one.
const KNOWN: &[&str] = &[
    "security.protocol",
    "sasl.mechanism",
    "sasl.mechanisms",
    "sasl.username",
    "sasl.password",
    "sasl.jaas.config",
    "ssl.ca.location",
    "ssl.truststore.location",
    "ssl.truststore.type",
    "ssl.certificate.location",
    "ssl.key.location",
    "ssl.keystore.location",
    "ssl.keystore.type",
    "ssl.endpoint.identification.algorithm",
];

/// Settings read from a file, before the files they name are read.
#[derive(Debug, Default, PartialEq)]
struct Settings {
    protocol: Option<SecurityProtocol>,
    mechanism: Option<String>,
    username: Option<String>,
    password: Option<String>,
    ca: Option<String>,
    /// PEM files holding the client's certificate chain and key (one file may hold both).
    identity: Vec<String>,
    verify_hostname: bool,
}

fn parse(text: &str) -> Result<Settings, String> {
    let mut settings = Settings { verify_hostname: true, ..Settings::default() };
    for (name, value) in parse_properties(text)? {
        match name.as_str() {
            "security.protocol" => {
                settings.protocol = Some(SecurityProtocol::parse(&value).ok_or_else(|| {
                    format!("security.protocol: {value:?} is not plaintext, ssl, sasl_plaintext or sasl_ssl")
                })?)
            }
            "sasl.mechanism" | "sasl.mechanisms" => settings.mechanism = Some(value),
            "sasl.username" => settings.username = Some(value),
            "sasl.password" => settings.password = Some(value),
            "sasl.jaas.config" => {
                let (user, password) = jaas(&value)?.login.ok_or("sasl.jaas.config: no username and password")?;
                (settings.username, settings.password) = (Some(user), Some(password));
            }
            "ssl.ca.location" | "ssl.truststore.location" => settings.ca = Some(value),
            "ssl.certificate.location" | "ssl.key.location" | "ssl.keystore.location" => settings.identity.push(value),
            "ssl.truststore.type" | "ssl.keystore.type" if value.eq_ignore_ascii_case("PEM") => {}
            "ssl.truststore.type" | "ssl.keystore.type" => {
                return Err(format!("{name}: only PEM is supported, not {value:?}"));
            }
            "ssl.endpoint.identification.algorithm" => {
                settings.verify_hostname = match value.to_ascii_lowercase().as_str() {
                    "https" => true,
                    "" | "none" => false,
                    _ => return Err(format!("{name}: {value:?} is not https or none")),
                }
            }
            _ => return Err(format!("unknown client property {name:?} (known: {})", KNOWN.join(", "))),
        }
    }
    Ok(settings)
}

/// The client security the file at `path` describes.
pub async fn load(path: &Path) -> Result<ClientSecurity, String> {
    let text = String::from_utf8(read_file("file", path).await?).map_err(|_| "not UTF-8 text".to_owned())?;
    let settings = parse(&text)?;
    let protocol = settings.protocol.unwrap_or(SecurityProtocol::Plaintext);
    let mut security = ClientSecurity::default();
    if protocol.tls() {
        let ca = settings.ca.as_deref().ok_or("a TLS connection needs ssl.ca.location (the CA certificates, PEM)")?;
        let trust = read_file("ssl.ca.location", Path::new(ca)).await?;
        let mut identity = Vec::new();
        for file in &settings.identity {
            identity.extend(read_file("client certificate", Path::new(file)).await?);
            identity.push(b'\n');
        }
        let identity = (!identity.is_empty()).then_some(identity);
        security.tls = Some(tls::client_config(&trust, identity.as_deref(), settings.verify_hostname)?);
    }
    if protocol.sasl() {
        let mechanism = settings.mechanism.as_deref().unwrap_or("PLAIN");
        let (Some(user), Some(password)) = (&settings.username, &settings.password) else {
            return Err("a SASL connection needs sasl.username and sasl.password".into());
        };
        security.sasl = Some(sasl::login(mechanism, user, password)?);
    }
    Ok(security)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn librdkafka_and_java_names_are_taken_and_others_refused() {
        let settings = parse(
            "security.protocol=SASL_SSL\nsasl.mechanisms=SCRAM-SHA-512\nsasl.username=alice\nsasl.password=s=cret\n\
             ssl.ca.location=/ca.pem\nssl.endpoint.identification.algorithm=none\n",
        )
        .unwrap();
        assert_eq!(settings.protocol, Some(SecurityProtocol::SaslSsl));
        assert_eq!(settings.mechanism.as_deref(), Some("SCRAM-SHA-512"));
        assert_eq!((settings.username.as_deref(), settings.password.as_deref()), (Some("alice"), Some("s=cret")));
        assert_eq!(settings.ca.as_deref(), Some("/ca.pem"));
        assert!(!settings.verify_hostname);
        let java = parse(
            "security.protocol=SASL_PLAINTEXT\nsasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule \
             required username=\"bob\" password=\"pw\";\n",
        )
        .unwrap();
        assert_eq!((java.username.as_deref(), java.password.as_deref()), (Some("bob"), Some("pw")));
        assert!(java.verify_hostname, "names are checked unless told otherwise");
        assert!(parse("security.protocol=tls").unwrap_err().contains("security.protocol"));
        assert!(parse("bootstrap.server=x").unwrap_err().contains("unknown client property"));
        assert!(parse("ssl.truststore.type=JKS").unwrap_err().contains("only PEM"));
    }
}
