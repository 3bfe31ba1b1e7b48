//! SCRAM (RFC 5802, RFC 7677) as Kafka uses it: SCRAM-SHA-256 and SCRAM-SHA-512, both sides of
//! the exchange (the client's is what a broker presents to another, and the CLI to a broker),
//! and the credentials a broker stores (never the password).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::{digest, hmac, pbkdf2, rand::SecureRandom};

use crate::cluster::ScramCredential;

/// Fewest PBKDF2 iterations a credential may have (Kafka's minimum).
pub const MIN_ITERATIONS: u32 = 4096;
/// Most PBKDF2 iterations AlterUserScramCredentials accepts (Kafka's maximum).
pub const MAX_ITERATIONS: u32 = 16384;

/// A SCRAM mechanism.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScramMechanism {
    /// SCRAM-SHA-256.
    Sha256,
    /// SCRAM-SHA-512.
    Sha512,
}

impl ScramMechanism {
    /// By its SASL name.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "SCRAM-SHA-256" => Some(Self::Sha256),
            "SCRAM-SHA-512" => Some(Self::Sha512),
            _ => None,
        }
    }

    /// By Kafka's type code (AlterUserScramCredentials, DescribeUserScramCredentials).
    pub fn from_type(code: i8) -> Option<Self> {
        match code {
            1 => Some(Self::Sha256),
            2 => Some(Self::Sha512),
            _ => None,
        }
    }

    /// Kafka's type code.
    pub fn type_code(self) -> i8 {
        match self {
            Self::Sha256 => 1,
            Self::Sha512 => 2,
        }
    }

    /// The SASL name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha256 => "SCRAM-SHA-256",
            Self::Sha512 => "SCRAM-SHA-512",
        }
    }

    fn hmac(self) -> hmac::Algorithm {
        match self {
            Self::Sha256 => hmac::HMAC_SHA256,
            Self::Sha512 => hmac::HMAC_SHA512,
        }
    }

    fn digest(self) -> &'static digest::Algorithm {
        match self {
            Self::Sha256 => &digest::SHA256,
            Self::Sha512 => &digest::SHA512,
        }
    }

    fn pbkdf2(self) -> pbkdf2::Algorithm {
        match self {
            Self::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
            Self::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        }
    }

    fn mac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        hmac::sign(&hmac::Key::new(self.hmac(), key), data).as_ref().to_vec()
    }

    /// The stored credential for a salted password (what AlterUserScramCredentials carries).
    pub fn credential(self, salt: &[u8], salted_password: &[u8], iterations: u32) -> ScramCredential {
        let client_key = self.mac(salted_password, b"Client Key");
        ScramCredential {
            mechanism: self.name().to_owned(),
            salt: salt.to_vec(),
            stored_key: digest::digest(self.digest(), &client_key).as_ref().to_vec(),
            server_key: self.mac(salted_password, b"Server Key"),
            iterations,
        }
    }

    /// Hi(password, salt, iterations): PBKDF2 with the mechanism's HMAC.
    pub fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut out = vec![0u8; self.digest().output_len()];
        let rounds = std::num::NonZeroU32::new(iterations.max(1)).expect("at least one iteration");
        pbkdf2::derive(self.pbkdf2(), rounds, salt, password, &mut out);
        out
    }
}

/// Random bytes from the system's generator.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut out = vec![0u8; n];
    ring::rand::SystemRandom::new().fill(&mut out).expect("the system's random generator works");
    out
}

/// Why a SCRAM exchange failed: said to the client as the SASL error message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScramError {
    /// The client's message does not parse.
    #[error("invalid SCRAM message: {0}")]
    Malformed(&'static str),
    /// Unknown user, or a wrong proof.
    #[error("Authentication failed during authentication due to invalid credentials with SASL mechanism {0}")]
    BadCredentials(&'static str),
    /// Something SCRAM allows that Kafka does not (channel binding, delegation tokens).
    #[error("{0}")]
    Unsupported(&'static str),
}

/// The server's side of one SCRAM exchange.
pub struct ScramServer {
    mechanism: ScramMechanism,
    state: State,
}

enum State {
    /// Waiting for client-first.
    Start,
    /// Sent server-first; waiting for client-final.
    Sent { user: String, credential: ScramCredential, client_first_bare: String, server_first: String, gs2: String },
    /// Finished (either way).
    Done,
}

/// What the server says next.
pub enum ScramStep {
    /// Send this and wait for the client's next message.
    Continue(Vec<u8>),
    /// Authenticated as this user; send this last message.
    Done(String, Vec<u8>),
}

/// The client's side of one SCRAM exchange.
pub struct ScramClient {
    mechanism: ScramMechanism,
    user: String,
    password: String,
    state: ClientState,
}

enum ClientState {
    /// Nothing sent yet.
    Start,
    /// Sent client-first; waiting for server-first.
    SentFirst { client_first_bare: String, nonce: String },
    /// Sent client-final; waiting for the server's signature.
    SentFinal { server_final: String },
    /// Finished (either way).
    Done,
}

/// SCRAM's escaping of user names (`,` is `=2C`, `=` is `=3D`).
fn escape_name(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

impl ScramClient {
    /// An exchange for `user` with `password`.
    pub fn new(mechanism: ScramMechanism, user: &str, password: &str) -> Self {
        Self { mechanism, user: user.to_owned(), password: password.to_owned(), state: ClientState::Start }
    }

    /// client-final for `server_first`, and the server-final that proves the server knows the
    /// credential.
    fn answer(&self, client_first_bare: &str, nonce: &str, server_first: &str) -> Result<(String, String), String> {
        let parts: Vec<&str> = server_first.split(',').collect();
        if let Some(error) = attribute(&parts, 'e') {
            return Err(format!("the server refused: {error}"));
        }
        let combined = attribute(&parts, 'r').ok_or("server-first has no nonce")?;
        if !combined.starts_with(nonce) || combined.len() == nonce.len() {
            return Err("server-first's nonce does not extend ours".into());
        }
        let salt = BASE64.decode(attribute(&parts, 's').ok_or("server-first has no salt")?);
        let salt = salt.map_err(|_| "server-first's salt is not base64")?;
        let iterations: u32 = attribute(&parts, 'i').and_then(|i| i.parse().ok()).ok_or("bad iteration count")?;
        if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
            return Err(format!("{iterations} iterations is outside {MIN_ITERATIONS}..={MAX_ITERATIONS}"));
        }
        let salted = self.mechanism.salted_password(self.password.as_bytes(), &salt, iterations);
        let client_key = self.mechanism.mac(&salted, b"Client Key");
        let stored_key = digest::digest(self.mechanism.digest(), &client_key);
        let without_proof = format!("c={},r={combined}", BASE64.encode("n,,"));
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let signature = self.mechanism.mac(stored_key.as_ref(), auth_message.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&signature).map(|(a, b)| a ^ b).collect();
        let server_key = self.mechanism.mac(&salted, b"Server Key");
        let server_final = format!("v={}", BASE64.encode(self.mechanism.mac(&server_key, auth_message.as_bytes())));
        Ok((format!("{without_proof},p={}", BASE64.encode(proof)), server_final))
    }
}

impl crate::client::SaslClient for ScramClient {
    fn mechanism(&self) -> &str {
        self.mechanism.name()
    }

    fn step(&mut self, challenge: Option<&[u8]>) -> Result<Option<Vec<u8>>, String> {
        let text = challenge.map(|c| std::str::from_utf8(c).map_err(|_| "the server's message is not UTF-8"));
        match (std::mem::replace(&mut self.state, ClientState::Done), text.transpose()?) {
            (ClientState::Start, None) => {
                let nonce = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes(24));
                let client_first_bare = format!("n={},r={nonce}", escape_name(&self.user));
                let first = format!("n,,{client_first_bare}").into_bytes();
                self.state = ClientState::SentFirst { client_first_bare, nonce };
                Ok(Some(first))
            }
            (ClientState::SentFirst { client_first_bare, nonce }, Some(server_first)) => {
                let (client_final, server_final) = self.answer(&client_first_bare, &nonce, server_first)?;
                self.state = ClientState::SentFinal { server_final };
                Ok(Some(client_final.into_bytes()))
            }
            (ClientState::SentFinal { server_final }, Some(given)) if given == server_final => Ok(None),
            (ClientState::SentFinal { .. }, Some(given)) => Err(match given.strip_prefix("e=") {
                Some(error) => format!("the server refused: {error}"),
                None => "the server's signature is wrong: it does not know the credential".into(),
            }),
            _ => Err("the SCRAM exchange is out of step".into()),
        }
    }
}

/// Undoes SCRAM's escaping of user names (`=2C` is `,`, `=3D` is `=`).
fn unescape_name(name: &str) -> Result<String, ScramError> {
    let mut out = String::new();
    let mut rest = name;
    while let Some(at) = rest.find('=') {
        out.push_str(&rest[..at]);
        match rest.get(at..at + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(ScramError::Malformed("bad escape in the user name")),
        }
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The value of attribute `key` (`k=value`) among `parts`.
fn attribute<'a>(parts: &[&'a str], key: char) -> Option<&'a str> {
    parts.iter().find_map(|p| p.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

impl ScramServer {
    /// A new exchange for `mechanism`.
    pub fn new(mechanism: ScramMechanism) -> Self {
        Self { mechanism, state: State::Start }
    }

    /// Takes the client's next message; `lookup` finds a user's credential for this mechanism.
    pub fn step(
        &mut self,
        message: &[u8],
        lookup: impl FnOnce(&str) -> Option<ScramCredential>,
    ) -> Result<ScramStep, ScramError> {
        let message = std::str::from_utf8(message).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        match std::mem::replace(&mut self.state, State::Done) {
            State::Start => {
                // gs2-header: "n,," or "n,a=authzid," (no channel binding).
                let (cbind, rest) = message.split_once(',').ok_or(ScramError::Malformed("no GS2 header"))?;
                match cbind {
                    "n" | "y" => {}
                    c if c.starts_with("p=") => {
                        return Err(ScramError::Unsupported("channel binding is not supported"));
                    }
                    _ => return Err(ScramError::Malformed("bad GS2 header")),
                }
                let (authzid, bare) = rest.split_once(',').ok_or(ScramError::Malformed("no GS2 header"))?;
                let gs2 = format!("{cbind},{authzid},");
                let parts: Vec<&str> = bare.split(',').collect();
                if parts.iter().any(|p| p.starts_with("m=")) {
                    return Err(ScramError::Unsupported("mandatory SCRAM extensions are not supported"));
                }
                if parts.iter().any(|p| p.starts_with("tokenauth=")) {
                    return Err(ScramError::Unsupported("delegation tokens are not supported"));
                }
                let user = unescape_name(attribute(&parts, 'n').ok_or(ScramError::Malformed("no user name"))?)?;
                let nonce =
                    attribute(&parts, 'r').filter(|n| !n.is_empty()).ok_or(ScramError::Malformed("no nonce"))?;
                if let Some(authzid) = authzid.strip_prefix("a=")
                    && unescape_name(authzid)? != user
                {
                    return Err(ScramError::Unsupported("the authorization id must be the user name"));
                }
                let credential = lookup(&user).ok_or(ScramError::BadCredentials(self.mechanism.name()))?;
                let server_nonce = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes(24));
                let server_first = format!(
                    "r={nonce}{server_nonce},s={},i={}",
                    BASE64.encode(&credential.salt),
                    credential.iterations
                );
                let reply = server_first.clone().into_bytes();
                self.state = State::Sent { user, credential, client_first_bare: bare.to_owned(), server_first, gs2 };
                Ok(ScramStep::Continue(reply))
            }
            State::Sent { user, credential, client_first_bare, server_first, gs2 } => {
                let (without_proof, proof) =
                    message.rsplit_once(",p=").ok_or(ScramError::Malformed("no proof in the final message"))?;
                let parts: Vec<&str> = without_proof.split(',').collect();
                let binding = attribute(&parts, 'c').ok_or(ScramError::Malformed("no channel binding"))?;
                if BASE64.decode(binding).ok().as_deref() != Some(gs2.as_bytes()) {
                    return Err(ScramError::Malformed("the channel binding does not match the GS2 header"));
                }
                let nonce = attribute(&parts, 'r').ok_or(ScramError::Malformed("no nonce"))?;
                let sent_nonce = server_first.strip_prefix("r=").and_then(|r| r.split(',').next()).unwrap_or("");
                if nonce != sent_nonce {
                    return Err(ScramError::Malformed("the nonce does not match"));
                }
                let proof = BASE64.decode(proof).map_err(|_| ScramError::Malformed("the proof is not base64"))?;
                let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
                let signature = self.mechanism.mac(&credential.stored_key, auth_message.as_bytes());
                let bad = ScramError::BadCredentials(self.mechanism.name());
                if proof.len() != signature.len() {
                    return Err(bad);
                }
                let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(a, b)| a ^ b).collect();
                let stored = digest::digest(self.mechanism.digest(), &client_key);
                let differs = stored.as_ref().iter().zip(&credential.stored_key).fold(0u8, |acc, (a, b)| acc | (a ^ b));
                if differs != 0 || stored.as_ref().len() != credential.stored_key.len() {
                    return Err(bad);
                }
                let server_signature = self.mechanism.mac(&credential.server_key, auth_message.as_bytes());
                Ok(ScramStep::Done(user, format!("v={}", BASE64.encode(server_signature)).into_bytes()))
            }
            State::Done => Err(ScramError::Malformed("the exchange is over")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::SaslClient;

    fn exchange(mechanism: ScramMechanism, stored_password: &str, given_password: &str) -> Result<String, ScramError> {
        let salt = random_bytes(16);
        let credential =
            mechanism.credential(&salt, &mechanism.salted_password(stored_password.as_bytes(), &salt, 4096), 4096);
        let mut server = ScramServer::new(mechanism);
        let mut client = ScramClient::new(mechanism, "al=ice", given_password);
        let first = client.step(None).unwrap().unwrap();
        assert!(first.starts_with(b"n,,n=al=3Dice,r="), "the user name is escaped");
        let ScramStep::Continue(server_first) =
            server.step(&first, |user| (user == "al=ice").then(|| credential.clone()))?
        else {
            panic!("the first step continues")
        };
        let final_message = client.step(Some(&server_first)).unwrap().unwrap();
        match server.step(&final_message, |_| unreachable!())? {
            ScramStep::Done(user, v) => {
                assert_eq!(client.step(Some(&v)), Ok(None), "the server proves it knows the credential");
                Ok(user)
            }
            ScramStep::Continue(_) => panic!("the exchange has two steps"),
        }
    }

    #[test]
    fn a_server_that_does_not_know_the_credential_is_caught() {
        let mut client = ScramClient::new(ScramMechanism::Sha256, "u", "p");
        let first = String::from_utf8(client.step(None).unwrap().unwrap()).unwrap();
        let nonce = first.rsplit_once("r=").unwrap().1;
        let server_first = format!("r={nonce}xyz,s={},i=4096", BASE64.encode(b"salt"));
        assert!(client.step(Some(server_first.as_bytes())).unwrap().is_some());
        assert!(client.step(Some(b"v=AAAA")).unwrap_err().contains("does not know"));
        let mut client = ScramClient::new(ScramMechanism::Sha256, "u", "p");
        client.step(None).unwrap();
        assert!(client.step(Some(b"r=other,s=c2FsdA==,i=4096")).unwrap_err().contains("nonce"));
    }

    #[test]
    fn a_right_password_authenticates_and_a_wrong_one_does_not() {
        for mechanism in [ScramMechanism::Sha256, ScramMechanism::Sha512] {
            assert_eq!(exchange(mechanism, "pencil", "pencil").unwrap(), "al=ice");
            assert_eq!(exchange(mechanism, "pencil", "pen"), Err(ScramError::BadCredentials(mechanism.name())));
        }
    }

    #[test]
    fn the_rfc_7677_test_vector_gives_the_same_server_signature() {
        // RFC 7677 section 3: user "user", password "pencil".
        let mechanism = ScramMechanism::Sha256;
        let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let credential = mechanism.credential(&salt, &mechanism.salted_password(b"pencil", &salt, 4096), 4096);
        let client_first_bare = "n=user,r=rOprNGfwEbeRWgbNEkqO";
        let server_first = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let without_proof = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let v = BASE64.encode(mechanism.mac(&credential.server_key, auth_message.as_bytes()));
        assert_eq!(v, "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
    }

    #[test]
    fn malformed_and_unsupported_messages_are_refused() {
        let mut server = ScramServer::new(ScramMechanism::Sha256);
        assert!(matches!(server.step(b"garbage", |_| None), Err(ScramError::Malformed(_))));
        let mut server = ScramServer::new(ScramMechanism::Sha256);
        assert!(matches!(server.step(b"p=tls-unique,,n=u,r=x", |_| None), Err(ScramError::Unsupported(_))));
        let mut server = ScramServer::new(ScramMechanism::Sha256);
        assert!(matches!(server.step(b"n,,n=u,r=x", |_| None), Err(ScramError::BadCredentials(_))));
        let mut server = ScramServer::new(ScramMechanism::Sha256);
        assert!(matches!(server.step(&[0xff, 0xfe], |_| None), Err(ScramError::Malformed(_))));
    }
}
