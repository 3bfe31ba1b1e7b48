//! SASL on Kafka connections (SaslHandshake v1, then SaslAuthenticate tokens): the mechanisms
//! PLAIN and SCRAM-SHA-256/512, one exchange per connection at a time; and the client's side,
//! the logins a broker presents to another and the CLI to a broker.

use std::collections::BTreeMap;
use std::rc::Rc;

use super::scram::{ScramClient, ScramError, ScramMechanism, ScramServer, ScramStep};
use crate::client::SaslClient;
use crate::cluster::MetadataImage;

/// A SASL mechanism a client chose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    /// PLAIN (RFC 4616): the password travels (use it over TLS).
    Plain,
    /// SCRAM-SHA-256 or SCRAM-SHA-512.
    Scram(ScramMechanism),
}

impl Mechanism {
    /// By its SASL name.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "PLAIN" => Some(Self::Plain),
            other => ScramMechanism::from_name(other).map(Self::Scram),
        }
    }

    /// Its SASL name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::Scram(m) => m.name(),
        }
    }
}

/// What an exchange says next.
#[derive(Debug, PartialEq, Eq)]
pub enum SaslOutcome {
    /// Send this token and wait for the next.
    Continue(Vec<u8>),
    /// Authenticated: the principal (`User:NAME`) and the last token to send.
    Authenticated {
        /// Kafka principal.
        principal: String,
        /// Final server token (empty for PLAIN).
        reply: Vec<u8>,
    },
    /// Refused, with the message the client is told.
    Failed(String),
}

/// One SASL exchange on a connection.
pub struct SaslExchange {
    mechanism: Mechanism,
    scram: Option<ScramServer>,
}

/// Longest SASL token taken (a PLAIN or SCRAM message is a few hundred bytes).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

impl SaslExchange {
    /// An exchange with `mechanism`.
    pub fn new(mechanism: Mechanism) -> Self {
        let scram = match mechanism {
            Mechanism::Plain => None,
            Mechanism::Scram(m) => Some(ScramServer::new(m)),
        };
        Self { mechanism, scram }
    }

    /// The mechanism.
    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// Takes the client's next token: PLAIN checks it against `plain_users`, SCRAM against the
    /// credentials in the cluster metadata `image`.
    pub fn step(&mut self, token: &[u8], plain_users: &BTreeMap<String, String>, image: &MetadataImage) -> SaslOutcome {
        if token.len() > MAX_TOKEN_BYTES {
            return SaslOutcome::Failed(format!("SASL token of {} bytes is too large", token.len()));
        }
        match self.mechanism {
            Mechanism::Plain => plain(token, plain_users),
            Mechanism::Scram(mechanism) => {
                let server = self.scram.as_mut().expect("a SCRAM exchange has its server");
                let lookup = |user: &str| {
                    image.scram_credentials.get(&(user.to_owned(), mechanism.name().to_owned())).map(|c| (**c).clone())
                };
                match server.step(token, lookup) {
                    Ok(ScramStep::Continue(reply)) => SaslOutcome::Continue(reply),
                    Ok(ScramStep::Done(user, reply)) => {
                        SaslOutcome::Authenticated { principal: format!("User:{user}"), reply }
                    }
                    Err(
                        err @ (ScramError::Malformed(_) | ScramError::Unsupported(_) | ScramError::BadCredentials(_)),
                    ) => SaslOutcome::Failed(err.to_string()),
                }
            }
        }
    }
}

/// Equal, in time that depends only on the lengths.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// PLAIN: `authzid NUL authcid NUL password`.
fn plain(token: &[u8], users: &BTreeMap<String, String>) -> SaslOutcome {
    let invalid = || SaslOutcome::Failed("Authentication failed: Invalid username or password".into());
    let parts: Vec<&[u8]> = token.split(|b| *b == 0).collect();
    let [authzid, user, password] = parts.as_slice() else {
        return SaslOutcome::Failed("Invalid SASL/PLAIN response: expected 3 tokens".into());
    };
    let (Ok(authzid), Ok(user)) = (std::str::from_utf8(authzid), std::str::from_utf8(user)) else {
        return invalid();
    };
    if user.is_empty() {
        return SaslOutcome::Failed("Authentication failed: username not specified".into());
    }
    if !authzid.is_empty() && authzid != user {
        return SaslOutcome::Failed(
            "Authentication failed: Client requested an authorization id that is different from username".into(),
        );
    }
    match users.get(user) {
        Some(known) if same_secret(known.as_bytes(), password) => {
            SaslOutcome::Authenticated { principal: format!("User:{user}"), reply: Vec::new() }
        }
        _ => invalid(),
    }
}

/// The client's side of PLAIN: one token, `NUL user NUL password`.
struct PlainClient {
    token: Vec<u8>,
}

impl SaslClient for PlainClient {
    fn mechanism(&self) -> &str {
        "PLAIN"
    }

    fn step(&mut self, challenge: Option<&[u8]>) -> Result<Option<Vec<u8>>, String> {
        Ok(challenge.is_none().then(|| std::mem::take(&mut self.token)))
    }
}

/// A login as `user` with `password` by SASL `mechanism` (PLAIN, SCRAM-SHA-256 or -512): a new
/// client exchange for each connection.
pub fn login(mechanism: &str, user: &str, password: &str) -> Result<Rc<dyn Fn() -> Box<dyn SaslClient>>, String> {
    let (user, password) = (user.to_owned(), password.to_owned());
    match Mechanism::from_name(&mechanism.trim().to_ascii_uppercase()) {
        Some(Mechanism::Plain) => Ok(Rc::new(move || {
            let token = [b"\0", user.as_bytes(), b"\0", password.as_bytes()].concat();
            Box::new(PlainClient { token })
        })),
        Some(Mechanism::Scram(m)) => Ok(Rc::new(move || Box::new(ScramClient::new(m, &user, &password)))),
        None => Err(format!("SASL mechanism {mechanism:?} is not one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512")),
    }
}

/// Parses a PLAIN users file: `name=password` per line, `#` comments.
pub fn parse_users_file(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut users = BTreeMap::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, password) = line.split_once('=').ok_or_else(|| format!("line {}: not name=password", number + 1))?;
        users.insert(name.trim().to_owned(), password.trim().to_owned());
    }
    Ok(users)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_checks_user_password_and_authorization_id() {
        let users = BTreeMap::from([("alice".to_owned(), "secret".to_owned())]);
        let image = MetadataImage::empty();
        let step = |token: &[u8]| SaslExchange::new(Mechanism::Plain).step(token, &users, &image);
        assert!(
            matches!(step(b"\0alice\0secret"), SaslOutcome::Authenticated { principal, .. } if principal == "User:alice")
        );
        assert!(matches!(step(b"alice\0alice\0secret"), SaslOutcome::Authenticated { .. }));
        assert!(matches!(step(b"\0alice\0wrong"), SaslOutcome::Failed(_)));
        assert!(matches!(step(b"\0bob\0secret"), SaslOutcome::Failed(_)));
        assert!(matches!(step(b"bob\0alice\0secret"), SaslOutcome::Failed(_)));
        assert!(matches!(step(b"garbage"), SaslOutcome::Failed(_)));
        assert!(matches!(step(&vec![0u8; MAX_TOKEN_BYTES + 1]), SaslOutcome::Failed(_)));
    }

    #[test]
    fn the_plain_login_is_what_the_server_takes() {
        let users = BTreeMap::from([("alice".to_owned(), "secret".to_owned())]);
        let mut client = login("plain", "alice", "secret").unwrap()();
        assert_eq!(client.mechanism(), "PLAIN");
        let token = client.step(None).unwrap().unwrap();
        let outcome = SaslExchange::new(Mechanism::Plain).step(&token, &users, &MetadataImage::empty());
        assert!(matches!(outcome, SaslOutcome::Authenticated { .. }));
        assert_eq!(client.step(Some(b"")), Ok(None));
        assert!(login("GSSAPI", "a", "b").is_err());
    }

    #[test]
    fn a_users_file_has_one_user_per_line() {
        let users = parse_users_file("# users\nalice = secret\n\nbob=p=w\n").unwrap();
        assert_eq!(users.get("alice").map(String::as_str), Some("secret"));
        assert_eq!(users.get("bob").map(String::as_str), Some("p=w"));
        assert!(parse_users_file("nobody").is_err());
    }
}
