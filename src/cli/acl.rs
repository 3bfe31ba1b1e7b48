//! `moldau acl add|list|remove`: ACLs in the cluster metadata (Kafka's `kafka-acls`).

use clap::Subcommand;

use super::{Target, connect};
use crate::client::ClientError;
use crate::client::admin::{Acl, AclFilter};
use crate::security::acl::{
    CLUSTER_NAME, OPERATION_NAMES, PATTERN_NAMES, PERMISSION_NAMES, RESOURCE_NAMES, code_of, name_of, op, pattern,
    permission, resource,
};

/// Which ACLs: for `add` the one to create (principal, operation and one resource needed);
/// for `list` and `remove` a filter (what is not given matches anything).
#[derive(clap::Args, Debug)]
pub struct AclSpec {
    /// Principal, e.g. `User:alice` (`User:*`: everyone).
    #[arg(long)]
    principal: Option<String>,
    /// Host the ACL applies to (`add`: any host, `*`, unless given).
    #[arg(long)]
    host: Option<String>,
    /// Operation: all, read, write, create, delete, alter, describe, cluster_action,
    /// describe_configs, alter_configs, idempotent_write.
    #[arg(long)]
    operation: Option<String>,
    /// allow or deny (`add`: allow unless given).
    #[arg(long)]
    permission: Option<String>,
    /// A topic (`*`: every topic).
    #[arg(long)]
    topic: Option<String>,
    /// A consumer group (`*`: every group).
    #[arg(long)]
    group: Option<String>,
    /// A transactional id.
    #[arg(long)]
    transactional_id: Option<String>,
    /// The cluster.
    #[arg(long)]
    cluster: bool,
    /// The resource name is a prefix.
    #[arg(long)]
    prefixed: bool,
}

/// ACL actions.
#[derive(Subcommand, Debug)]
pub enum AclAction {
    /// Create an ACL.
    Add(AclSpec),
    /// List the ACLs that match.
    List(AclSpec),
    /// Delete the ACLs that match (at least a principal or a resource must be given).
    Remove(AclSpec),
}

fn bad(message: String) -> ClientError {
    ClientError::Unavailable(message)
}

impl AclSpec {
    /// The resource type and name given, if any (at most one).
    fn resource(&self) -> Result<Option<(i8, String)>, ClientError> {
        let mut given = Vec::new();
        for (kind, name) in [
            (resource::TOPIC, &self.topic),
            (resource::GROUP, &self.group),
            (resource::TRANSACTIONAL_ID, &self.transactional_id),
        ] {
            if let Some(name) = name {
                given.push((kind, name.clone()));
            }
        }
        if self.cluster {
            given.push((resource::CLUSTER, CLUSTER_NAME.to_owned()));
        }
        match given.len() {
            0 | 1 => Ok(given.pop()),
            _ => Err(bad("give one of --topic, --group, --transactional-id, --cluster".into())),
        }
    }

    fn code(names: &[(i8, &str)], what: &str, value: &Option<String>, any: i8) -> Result<i8, ClientError> {
        match value {
            None => Ok(any),
            Some(name) => code_of(names, name).ok_or_else(|| {
                let known: Vec<String> = names.iter().map(|(_, n)| n.to_ascii_lowercase()).collect();
                bad(format!("--{what} {name:?} is not one of {}", known.join(", ")))
            }),
        }
    }

    fn filter(&self) -> Result<AclFilter, ClientError> {
        let resource = self.resource()?;
        let pattern_type = match (&resource, self.prefixed) {
            (_, true) => pattern::PREFIXED,
            (Some(_), false) => pattern::LITERAL,
            (None, false) => pattern::ANY,
        };
        Ok(AclFilter {
            resource_type: resource.as_ref().map_or(resource::ANY, |(t, _)| *t),
            resource_name: resource.map(|(_, n)| n),
            pattern_type,
            principal: self.principal.clone(),
            host: self.host.clone(),
            operation: Self::code(OPERATION_NAMES, "operation", &self.operation, op::ANY)?,
            permission: Self::code(PERMISSION_NAMES, "permission", &self.permission, permission::ANY)?,
        })
    }

    fn acl(&self) -> Result<Acl, ClientError> {
        let filter = self.filter()?;
        let (Some(principal), Some(resource_name)) = (filter.principal, filter.resource_name) else {
            return Err(bad("add needs --principal and one of --topic, --group, --transactional-id, --cluster".into()));
        };
        if filter.operation == op::ANY {
            return Err(bad("add needs --operation".into()));
        }
        let permission = if filter.permission == permission::ANY { permission::ALLOW } else { filter.permission };
        Ok(Acl {
            resource_type: filter.resource_type,
            resource_name,
            pattern_type: filter.pattern_type,
            principal,
            host: filter.host.unwrap_or_else(|| "*".into()),
            operation: filter.operation,
            permission,
        })
    }
}

fn print(acl: &Acl) {
    println!(
        "{} {} {} {} host={} {} {}",
        name_of(RESOURCE_NAMES, acl.resource_type),
        acl.resource_name,
        name_of(PATTERN_NAMES, acl.pattern_type),
        acl.principal,
        acl.host,
        name_of(OPERATION_NAMES, acl.operation),
        name_of(PERMISSION_NAMES, acl.permission),
    );
}

/// Runs an ACL action.
pub async fn run(target: &Target, action: AclAction) -> Result<(), ClientError> {
    match action {
        AclAction::Add(spec) => {
            let acl = spec.acl()?;
            connect(target).await?.create_acls(std::slice::from_ref(&acl)).await?;
            print!("added ");
            print(&acl);
        }
        AclAction::List(spec) => {
            let filter = spec.filter()?;
            for acl in connect(target).await?.describe_acls(&filter).await? {
                print(&acl);
            }
        }
        AclAction::Remove(spec) => {
            let filter = spec.filter()?;
            if filter.principal.is_none() && filter.resource_name.is_none() {
                return Err(bad("remove needs --principal or a resource (or both)".into()));
            }
            let removed = connect(target).await?.delete_acls(&filter).await?;
            for acl in &removed {
                print!("removed ");
                print(acl);
            }
            println!("removed {} ACLs", removed.len());
        }
    }
    Ok(())
}
