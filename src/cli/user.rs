//! `moldau user list|set|delete`: SCRAM users in the cluster metadata (what `kafka-configs
//! --entity-type users --alter --add-config SCRAM-SHA-512=[...]` does). The password is salted
//! here, as Kafka's AdminClient does: the broker never sees it.

use std::io::BufRead;

use clap::Subcommand;

use super::{Target, connect};
use crate::client::ClientError;
use crate::client::admin::ScramUpsert;
use crate::security::scram::{MAX_ITERATIONS, MIN_ITERATIONS, ScramMechanism, random_bytes};

/// SCRAM user actions.
#[derive(Subcommand, Debug)]
pub enum UserAction {
    /// List users (all, or those named) and their SCRAM mechanisms.
    List {
        /// Users to show (default: every user).
        users: Vec<String>,
    },
    /// Create or replace a user's SCRAM credential.
    Set {
        /// User name.
        user: String,
        /// Password (read from the first line of stdin when not given).
        #[arg(long)]
        password: Option<String>,
        /// SCRAM-SHA-256 or SCRAM-SHA-512.
        #[arg(long, default_value = "SCRAM-SHA-512")]
        mechanism: String,
        /// PBKDF2 iterations (4096-16384).
        #[arg(long, default_value_t = MIN_ITERATIONS)]
        iterations: u32,
    },
    /// Delete a user's credential for one mechanism.
    Delete {
        /// User name.
        user: String,
        /// SCRAM-SHA-256 or SCRAM-SHA-512.
        #[arg(long, default_value = "SCRAM-SHA-512")]
        mechanism: String,
    },
}

fn mechanism(name: &str) -> Result<ScramMechanism, ClientError> {
    ScramMechanism::from_name(&name.to_ascii_uppercase())
        .ok_or_else(|| ClientError::Unavailable(format!("--mechanism {name:?} is not SCRAM-SHA-256 or SCRAM-SHA-512")))
}

/// Runs a user action.
pub async fn run(target: &Target, action: UserAction) -> Result<(), ClientError> {
    match action {
        UserAction::List { users } => {
            let client = connect(target).await?;
            let names = (!users.is_empty()).then_some(users.as_slice());
            for (user, credentials) in client.describe_scram_credentials(names).await? {
                for (code, iterations) in credentials {
                    let name =
                        ScramMechanism::from_type(code).map_or_else(|| code.to_string(), |m| m.name().to_owned());
                    println!("{user} {name} iterations={iterations}");
                }
            }
        }
        UserAction::Set { user, password, mechanism: name, iterations } => {
            let mechanism = mechanism(&name)?;
            if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
                return Err(ClientError::Unavailable(format!(
                    "--iterations must be {MIN_ITERATIONS}-{MAX_ITERATIONS}, not {iterations}"
                )));
            }
            let password = match password {
                Some(p) => p,
                None => {
                    let mut line = String::new();
                    std::io::stdin()
                        .lock()
                        .read_line(&mut line)
                        .map_err(|e| ClientError::Unavailable(format!("cannot read the password from stdin: {e}")))?;
                    line.trim_end_matches(['\r', '\n']).to_owned()
                }
            };
            if password.is_empty() {
                return Err(ClientError::Unavailable("the password is empty".into()));
            }
            let salt = random_bytes(32);
            let upsert = ScramUpsert {
                user: user.clone(),
                mechanism: mechanism.type_code(),
                iterations: iterations as i32,
                salted_password: mechanism.salted_password(password.as_bytes(), &salt, iterations),
                salt,
            };
            connect(target).await?.alter_scram_credentials(&[upsert], &[]).await?;
            println!("set {user} {}", mechanism.name());
        }
        UserAction::Delete { user, mechanism: name } => {
            let mechanism = mechanism(&name)?;
            connect(target).await?.alter_scram_credentials(&[], &[(user.clone(), mechanism.type_code())]).await?;
            println!("deleted {user} {}", mechanism.name());
        }
    }
    Ok(())
}
