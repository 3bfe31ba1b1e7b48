//! TLS for client listeners: the rustls server configuration built from Kafka's PEM settings
//! (`ssl.keystore.*`, `ssl.truststore.*`, `ssl.client.auth`), the client configuration a broker
//! connects to another with (or the CLI to a broker), and the principal a client certificate
//! gives (its subject, as Kafka's default mapping writes it: RFC 2253).

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

use crate::config::BrokerConfig;

/// The server configuration: `keystore` and `truststore` are the PEM files' contents (the
/// inline `ssl.keystore.key` and `.certificate.chain` stand in for a key store file);
/// `client_auth` is `none`, `requested` or `required` (Kafka's `ssl.client.auth`).
pub fn server_config(
    config: &BrokerConfig,
    keystore: Option<&[u8]>,
    truststore: Option<&[u8]>,
    client_auth: &str,
) -> Result<Arc<ServerConfig>, String> {
    let (certs, key) = identity(&keystore_pem(config, keystore))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = if client_auth == "none" {
        builder.with_no_client_auth()
    } else {
        let roots = roots(truststore.unwrap_or_default())?;
        let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider);
        let verifier = if client_auth == "requested" { verifier.allow_unauthenticated() } else { verifier };
        builder.with_client_cert_verifier(verifier.build().map_err(|e| format!("trust store: {e}"))?)
    };
    let mut server = builder.with_single_cert(certs, key).map_err(|e| format!("key store: {e}"))?;
    server.alpn_protocols.clear();
    Ok(Arc::new(server))
}

/// The PEM key store: the file's contents, or the inline `ssl.keystore.key` and
/// `.certificate.chain` that stand in for one.
pub fn keystore_pem(config: &BrokerConfig, file: Option<&[u8]>) -> Vec<u8> {
    match file {
        Some(bytes) => bytes.to_vec(),
        None => format!(
            "{}\n{}\n",
            config.ssl_keystore_key.as_deref().unwrap_or_default(),
            config.ssl_keystore_certificate_chain.as_deref().unwrap_or_default()
        )
        .into_bytes(),
    }
}

/// The certificate chain and the unencrypted private key in a PEM key store.
fn identity(pem: &[u8]) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("key store: cannot read the certificate chain: {e}"))?;
    if certs.is_empty() {
        return Err("key store: no certificate (PEM CERTIFICATE section) found".into());
    }
    let key = PrivateKeyDer::from_pem_slice(pem)
        .map_err(|e| format!("key store: no unencrypted private key (PEM PRIVATE KEY section): {e}"))?;
    Ok((certs, key))
}

/// The CA certificates of a PEM trust store (at least one).
fn roots(truststore: &[u8]) -> Result<Arc<RootCertStore>, String> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(truststore) {
        let cert = cert.map_err(|e| format!("trust store: {e}"))?;
        roots.add(cert).map_err(|e| format!("trust store: {e}"))?;
    }
    if roots.is_empty() {
        return Err("trust store: no CA certificate found".into());
    }
    Ok(Arc::new(roots))
}

/// A client configuration: servers must present a chain to a CA in `truststore` (PEM) and,
/// when `verify_hostname` (Kafka's `ssl.endpoint.identification.algorithm=https`), a
/// certificate for the host connected to; `identity` (a PEM key and certificate chain) is
/// presented to servers that ask for a client certificate.
pub fn client_config(
    truststore: &[u8],
    identity_pem: Option<&[u8]>,
    verify_hostname: bool,
) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiServerVerifier::builder_with_provider(roots(truststore)?, provider.clone())
        .build()
        .map_err(|e| format!("trust store: {e}"))?;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = if verify_hostname {
        builder.with_webpki_verifier(verifier)
    } else {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(AnyHostName(verifier)))
    };
    let config = match identity_pem {
        Some(pem) => {
            let (certs, key) = identity(pem)?;
            builder.with_client_auth_cert(certs, key).map_err(|e| format!("key store: {e}"))?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// Checks a server's chain as webpki does but takes a certificate for any host name (Kafka's
/// `ssl.endpoint.identification.algorithm` set empty): the name is checked only once the chain
/// is valid, so this error means nothing else was wrong.
#[derive(Debug)]
struct AnyHostName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyHostName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// One DER element: tag and contents, and what follows it.
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        (rest[..n].iter().fold(0usize, |acc, b| (acc << 8) | *b as usize), &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// Dotted form of an OID's contents.
fn oid(bytes: &[u8]) -> String {
    let mut parts: Vec<u64> = Vec::new();
    let mut value = 0u64;
    for b in bytes {
        value = (value << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if parts.is_empty() {
                let first = (value / 40).min(2);
                parts.push(first);
                parts.push(value - first * 40);
            } else {
                parts.push(value);
            }
            value = 0;
        }
    }
    parts.iter().map(u64::to_string).collect::<Vec<_>>().join(".")
}

/// RFC 2253 escaping of an attribute value.
fn escape(value: &str) -> String {
    let mut out = String::new();
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The subject of a DER certificate as RFC 2253 writes it (`CN=alice,OU=eng,O=Example`), the
/// way Kafka's default principal mapping names a TLS client.
pub fn subject_name(certificate: &[u8]) -> Option<String> {
    let (_, cert, _) = der(certificate)?;
    let (_, tbs, _) = der(cert)?;
    let mut fields = tbs;
    let mut next = || {
        let (tag, content, rest) = der(fields)?;
        fields = rest;
        Some((tag, content))
    };
    let (mut tag, _) = next()?;
    if tag == 0xa0 {
        tag = next()?.0; // the version, then the serial number
    }
    if tag != 0x02 {
        return None;
    }
    next()?; // signature algorithm
    next()?; // issuer
    next()?; // validity
    let (tag, mut subject) = next()?;
    if tag != 0x30 {
        return None;
    }
    let mut rdns = Vec::new();
    while !subject.is_empty() {
        let (_, mut set, rest) = der(subject)?;
        subject = rest;
        let mut attributes = Vec::new();
        while !set.is_empty() {
            let (_, attribute, rest) = der(set)?;
            set = rest;
            let (_, id, value_der) = der(attribute)?;
            let (value_tag, value, _) = der(value_der)?;
            let id = oid(id);
            let name = match id.as_str() {
                "2.5.4.3" => "CN",
                "2.5.4.6" => "C",
                "2.5.4.7" => "L",
                "2.5.4.8" => "ST",
                "2.5.4.9" => "STREET",
                "2.5.4.10" => "O",
                "2.5.4.11" => "OU",
                "0.9.2342.19200300.100.1.25" => "DC",
                "0.9.2342.19200300.100.1.1" => "UID",
                _ => "",
            };
            let text = match value_tag {
                0x0c | 0x13 | 0x16 | 0x14 => std::str::from_utf8(value).ok().map(escape),
                _ => None,
            };
            attributes.push(match (name, text) {
                ("", _) | (_, None) => {
                    let hex: String = value_der[..value_der.len() - der(value_der)?.2.len()]
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect();
                    format!("{}=#{hex}", if name.is_empty() { id.as_str() } else { name })
                }
                (name, Some(text)) => format!("{name}={text}"),
            });
        }
        rdns.push(attributes.join("+"));
    }
    rdns.reverse();
    Some(rdns.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_follows_rfc_2253() {
        assert_eq!(escape("a,b+c"), "a\\,b\\+c");
        assert_eq!(escape(" #x "), "\\ #x\\ ");
        assert_eq!(escape("#x"), "\\#x");
    }

    #[test]
    fn oids_are_written_dotted() {
        assert_eq!(oid(&[0x55, 0x04, 0x03]), "2.5.4.3");
        assert_eq!(oid(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01]), "1.2.840.113549.1.9.1");
    }

    #[test]
    fn garbage_has_no_subject() {
        assert_eq!(subject_name(b""), None);
        assert_eq!(subject_name(&[0x30, 0x82, 0xff]), None);
        assert_eq!(subject_name(&[0x30, 0x03, 0x30, 0x01, 0x02]), None);
    }
}
