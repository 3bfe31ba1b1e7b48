//! The authorizer: ACLs from the cluster metadata checked the way Kafka's StandardAuthorizer
//! checks them (deny wins over allow; `ALL` covers every operation; READ, WRITE, DELETE and
//! ALTER imply DESCRIBE, ALTER_CONFIGS implies DESCRIBE_CONFIGS; literal, `*` and prefixed
//! resource patterns; `User:*` and host `*`), super users, and what happens to a resource no
//! ACL names (`allow.everyone.if.no.acl.found`).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use uuid::Uuid;

use crate::cluster::AclBinding;
use crate::config::BrokerConfig;

/// Kafka's resource type codes.
pub mod resource {
    /// Matches every type (filters only).
    pub const ANY: i8 = 1;
    /// A topic.
    pub const TOPIC: i8 = 2;
    /// A consumer group.
    pub const GROUP: i8 = 3;
    /// The cluster (named `kafka-cluster`).
    pub const CLUSTER: i8 = 4;
    /// A transactional id.
    pub const TRANSACTIONAL_ID: i8 = 5;
    /// A delegation token.
    pub const DELEGATION_TOKEN: i8 = 6;
    /// A user.
    pub const USER: i8 = 7;
}

/// Kafka's pattern type codes.
pub mod pattern {
    /// Matches every pattern type (filters only).
    pub const ANY: i8 = 1;
    /// Every ACL that applies to the named resource (filters only).
    pub const MATCH: i8 = 2;
    /// The resource name exactly (or `*`).
    pub const LITERAL: i8 = 3;
    /// Every resource whose name starts with it.
    pub const PREFIXED: i8 = 4;
}

/// Kafka's operation codes.
pub mod op {
    /// Matches every operation (filters only).
    pub const ANY: i8 = 1;
    /// Every operation.
    pub const ALL: i8 = 2;
    /// Read.
    pub const READ: i8 = 3;
    /// Write.
    pub const WRITE: i8 = 4;
    /// Create.
    pub const CREATE: i8 = 5;
    /// Delete.
    pub const DELETE: i8 = 6;
    /// Alter.
    pub const ALTER: i8 = 7;
    /// Describe.
    pub const DESCRIBE: i8 = 8;
    /// Broker-to-broker actions (replication).
    pub const CLUSTER_ACTION: i8 = 9;
    /// Describe configs.
    pub const DESCRIBE_CONFIGS: i8 = 10;
    /// Alter configs.
    pub const ALTER_CONFIGS: i8 = 11;
    /// Idempotent produce.
    pub const IDEMPOTENT_WRITE: i8 = 12;
    /// Highest known.
    pub const MAX: i8 = 15;
}

/// Kafka's permission codes.
pub mod permission {
    /// Matches both (filters only).
    pub const ANY: i8 = 1;
    /// Deny.
    pub const DENY: i8 = 2;
    /// Allow.
    pub const ALLOW: i8 = 3;
}

/// Kafka's names for the resource types (as `ResourceType` writes them).
pub const RESOURCE_NAMES: &[(i8, &str)] = &[
    (resource::TOPIC, "TOPIC"),
    (resource::GROUP, "GROUP"),
    (resource::CLUSTER, "CLUSTER"),
    (resource::TRANSACTIONAL_ID, "TRANSACTIONAL_ID"),
    (resource::DELEGATION_TOKEN, "DELEGATION_TOKEN"),
    (resource::USER, "USER"),
];

/// Kafka's names for the pattern types.
pub const PATTERN_NAMES: &[(i8, &str)] = &[(pattern::LITERAL, "LITERAL"), (pattern::PREFIXED, "PREFIXED")];

/// Kafka's names for the operations (as `AclOperation` writes them).
pub const OPERATION_NAMES: &[(i8, &str)] = &[
    (op::ALL, "ALL"),
    (op::READ, "READ"),
    (op::WRITE, "WRITE"),
    (op::CREATE, "CREATE"),
    (op::DELETE, "DELETE"),
    (op::ALTER, "ALTER"),
    (op::DESCRIBE, "DESCRIBE"),
    (op::CLUSTER_ACTION, "CLUSTER_ACTION"),
    (op::DESCRIBE_CONFIGS, "DESCRIBE_CONFIGS"),
    (op::ALTER_CONFIGS, "ALTER_CONFIGS"),
    (op::IDEMPOTENT_WRITE, "IDEMPOTENT_WRITE"),
    (13, "CREATE_TOKENS"),
    (14, "DESCRIBE_TOKENS"),
    (op::MAX, "TWO_PHASE_COMMIT"),
];

/// Kafka's names for the permissions.
pub const PERMISSION_NAMES: &[(i8, &str)] = &[(permission::DENY, "DENY"), (permission::ALLOW, "ALLOW")];

/// The name `code` has in `names`, or the code itself.
pub fn name_of(names: &[(i8, &str)], code: i8) -> String {
    names.iter().find(|(c, _)| *c == code).map_or_else(|| code.to_string(), |(_, n)| (*n).to_owned())
}

/// The code named `name` (any case, `-` for `_`) in `names`.
pub fn code_of(names: &[(i8, &str)], name: &str) -> Option<i8> {
    let name = name.trim().to_ascii_uppercase().replace('-', "_");
    names.iter().find(|(_, n)| *n == name).map(|(c, _)| *c)
}

/// The operations a resource type has, as Kafka lists them for the authorized-operations
/// fields of Metadata, DescribeCluster and DescribeGroups.
pub fn supported_operations(resource_type: i8) -> &'static [i8] {
    match resource_type {
        resource::TOPIC => &[
            op::READ,
            op::WRITE,
            op::CREATE,
            op::DESCRIBE,
            op::DELETE,
            op::ALTER,
            op::DESCRIBE_CONFIGS,
            op::ALTER_CONFIGS,
        ],
        resource::GROUP => &[op::READ, op::DESCRIBE, op::DELETE],
        resource::CLUSTER => &[
            op::CREATE,
            op::CLUSTER_ACTION,
            op::DESCRIBE_CONFIGS,
            op::ALTER_CONFIGS,
            op::IDEMPOTENT_WRITE,
            op::ALTER,
            op::DESCRIBE,
        ],
        resource::TRANSACTIONAL_ID => &[op::DESCRIBE, op::WRITE],
        resource::DELEGATION_TOKEN => &[op::DESCRIBE],
        resource::USER => &[13, 14],
        _ => &[],
    }
}

/// The name of the cluster resource.
pub const CLUSTER_NAME: &str = "kafka-cluster";

/// Why an ACL cannot be created.
pub fn invalid_binding(binding: &AclBinding) -> Option<&'static str> {
    if !(resource::TOPIC..=resource::USER).contains(&binding.resource_type) {
        return Some("the resource type must be TOPIC, GROUP, CLUSTER, TRANSACTIONAL_ID, DELEGATION_TOKEN or USER");
    }
    if !matches!(binding.pattern_type, pattern::LITERAL | pattern::PREFIXED) {
        return Some("the pattern type must be LITERAL or PREFIXED");
    }
    if !(op::ALL..=op::MAX).contains(&binding.operation) {
        return Some("the operation must be a known one other than ANY");
    }
    if !matches!(binding.permission, permission::ALLOW | permission::DENY) {
        return Some("the permission must be ALLOW or DENY");
    }
    if binding.resource_name.is_empty() {
        return Some("the resource name must not be empty");
    }
    if binding.resource_type == resource::CLUSTER && binding.resource_name != CLUSTER_NAME {
        return Some("the cluster resource is named kafka-cluster");
    }
    if binding.pattern_type == pattern::PREFIXED && binding.resource_name == "*" {
        return Some("a prefixed pattern cannot be *");
    }
    if binding.principal.split_once(':').is_none_or(|(kind, name)| kind.is_empty() || name.is_empty()) {
        return Some("the principal must be TYPE:NAME (e.g. User:alice)");
    }
    if binding.host.is_empty() {
        return Some("the host must be an address or *");
    }
    None
}

/// A filter of DescribeAcls and DeleteAcls (Kafka's codes; `None`: any).
#[derive(Clone, Debug)]
pub struct AclFilter {
    /// Resource type or ANY.
    pub resource_type: i8,
    /// Resource name.
    pub resource_name: Option<String>,
    /// Pattern type, ANY or MATCH.
    pub pattern_type: i8,
    /// Principal.
    pub principal: Option<String>,
    /// Host.
    pub host: Option<String>,
    /// Operation or ANY.
    pub operation: i8,
    /// Permission or ANY.
    pub permission: i8,
}

impl AclFilter {
    /// Whether `binding` passes.
    pub fn matches(&self, binding: &AclBinding) -> bool {
        let type_ok = self.resource_type == resource::ANY || self.resource_type == binding.resource_type;
        let name_ok = match (self.pattern_type, &self.resource_name) {
            (pattern::MATCH, Some(name)) => pattern_covers(binding, name),
            (pattern::MATCH, None) => true,
            (pattern::ANY, name) => name.as_ref().is_none_or(|n| *n == binding.resource_name),
            (kind, name) => kind == binding.pattern_type && name.as_ref().is_none_or(|n| *n == binding.resource_name),
        };
        type_ok
            && name_ok
            && self.principal.as_ref().is_none_or(|p| *p == binding.principal)
            && self.host.as_ref().is_none_or(|h| *h == binding.host)
            && (self.operation == op::ANY || self.operation == binding.operation)
            && (self.permission == permission::ANY || self.permission == binding.permission)
    }
}

/// Whether `binding`'s resource pattern covers the resource `name`.
fn pattern_covers(binding: &AclBinding, name: &str) -> bool {
    match binding.pattern_type {
        pattern::LITERAL => binding.resource_name == name || binding.resource_name == "*",
        pattern::PREFIXED => name.starts_with(&binding.resource_name),
        _ => false,
    }
}

/// Whether an ACL for `acl_op` grants `wanted` (`allow`) or denies it (`!allow`).
fn operation_covers(acl_op: i8, wanted: i8, allow: bool) -> bool {
    if acl_op == op::ALL || acl_op == wanted {
        return true;
    }
    allow
        && match wanted {
            op::DESCRIBE => matches!(acl_op, op::READ | op::WRITE | op::DELETE | op::ALTER),
            op::DESCRIBE_CONFIGS => acl_op == op::ALTER_CONFIGS,
            _ => false,
        }
}

/// Checks requests against the ACLs (when an authorizer is configured).
#[derive(Clone, Debug)]
pub struct Authorizer {
    enabled: bool,
    super_users: Vec<String>,
    allow_if_no_acl: bool,
}

impl Authorizer {
    /// As `config` sets it.
    pub fn new(config: &BrokerConfig) -> Self {
        Self {
            enabled: !config.authorizer_class_name.is_empty(),
            super_users: config
                .super_users
                .split(';')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            allow_if_no_acl: config.allow_everyone_if_no_acl_found,
        }
    }

    /// Whether an authorizer checks requests at all.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Whether `principal` from `host` may do `operation` on the resource (`resource_type`,
    /// `name`) under `acls`.
    pub fn allows(
        &self,
        acls: &BTreeMap<Uuid, Arc<AclBinding>>,
        principal: &str,
        host: IpAddr,
        operation: i8,
        resource_type: i8,
        name: &str,
    ) -> bool {
        if !self.enabled || self.super_users.iter().any(|s| s == principal) {
            return true;
        }
        let host = host.to_string();
        let mut named = false;
        let mut allowed = false;
        for acl in acls.values() {
            if acl.resource_type != resource_type || !pattern_covers(acl, name) {
                continue;
            }
            named = true;
            let applies =
                (acl.principal == principal || acl.principal == "User:*") && (acl.host == "*" || acl.host == host);
            if !applies {
                continue;
            }
            let allow = acl.permission == permission::ALLOW;
            if operation_covers(acl.operation, operation, allow) {
                if !allow {
                    return false;
                }
                allowed = true;
            }
        }
        allowed || (!named && self.allow_if_no_acl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(
        resource_type: i8,
        name: &str,
        pattern_type: i8,
        principal: &str,
        operation: i8,
        permission: i8,
    ) -> AclBinding {
        AclBinding {
            resource_type,
            resource_name: name.into(),
            pattern_type,
            principal: principal.into(),
            host: "*".into(),
            operation,
            permission,
        }
    }

    fn authorizer(super_users: &str, allow_if_no_acl: bool) -> Authorizer {
        Authorizer::new(&BrokerConfig {
            authorizer_class_name: crate::config::STANDARD_AUTHORIZER.into(),
            super_users: super_users.into(),
            allow_everyone_if_no_acl_found: allow_if_no_acl,
            ..BrokerConfig::default()
        })
    }

    #[test]
    fn acls_allow_deny_imply_and_match_patterns_as_kafka_does() {
        let host: IpAddr = "127.0.0.1".parse().unwrap();
        let acls: BTreeMap<Uuid, Arc<AclBinding>> = [
            acl(resource::TOPIC, "orders", pattern::LITERAL, "User:alice", op::WRITE, permission::ALLOW),
            acl(resource::TOPIC, "logs-", pattern::PREFIXED, "User:*", op::READ, permission::ALLOW),
            acl(resource::TOPIC, "logs-secret", pattern::LITERAL, "User:bob", op::ALL, permission::DENY),
            acl(resource::GROUP, "*", pattern::LITERAL, "User:bob", op::READ, permission::ALLOW),
        ]
        .into_iter()
        .map(|b| (Uuid::new_v4(), Arc::new(b)))
        .collect();
        let a = authorizer("User:admin", false);
        let allows = |who: &str, operation, rt, name: &str| a.allows(&acls, who, host, operation, rt, name);
        assert!(allows("User:alice", op::WRITE, resource::TOPIC, "orders"));
        assert!(allows("User:alice", op::DESCRIBE, resource::TOPIC, "orders"), "WRITE implies DESCRIBE");
        assert!(!allows("User:alice", op::READ, resource::TOPIC, "orders"));
        assert!(!allows("User:bob", op::WRITE, resource::TOPIC, "orders"));
        assert!(allows("User:bob", op::READ, resource::TOPIC, "logs-app"), "prefixed, User:*");
        assert!(!allows("User:bob", op::READ, resource::TOPIC, "logs-secret"), "deny wins");
        assert!(allows("User:carol", op::READ, resource::TOPIC, "logs-secret"));
        assert!(allows("User:bob", op::READ, resource::GROUP, "any-group"), "literal *");
        assert!(!allows("User:bob", op::DELETE, resource::GROUP, "any-group"));
        assert!(allows("User:admin", op::ALTER, resource::CLUSTER, CLUSTER_NAME), "super user");
        assert!(!allows("User:carol", op::WRITE, resource::TOPIC, "unnamed"), "no ACL: denied by default");
        let open = authorizer("", true);
        assert!(open.allows(&acls, "User:carol", host, op::WRITE, resource::TOPIC, "unnamed"));
        assert!(!open.allows(&acls, "User:carol", host, op::WRITE, resource::TOPIC, "orders"), "named: ACLs apply");
        let off = Authorizer::new(&BrokerConfig::default());
        assert!(off.allows(&acls, "User:carol", host, op::WRITE, resource::TOPIC, "orders"), "no authorizer");
    }

    #[test]
    fn filters_match_literal_prefixed_and_match_patterns() {
        let prefixed = acl(resource::TOPIC, "logs-", pattern::PREFIXED, "User:*", op::READ, permission::ALLOW);
        let filter = |pattern_type, name: Option<&str>| AclFilter {
            resource_type: resource::ANY,
            resource_name: name.map(str::to_owned),
            pattern_type,
            principal: None,
            host: None,
            operation: op::ANY,
            permission: permission::ANY,
        };
        assert!(filter(pattern::MATCH, Some("logs-app")).matches(&prefixed));
        assert!(!filter(pattern::LITERAL, Some("logs-")).matches(&prefixed));
        assert!(filter(pattern::PREFIXED, Some("logs-")).matches(&prefixed));
        assert!(filter(pattern::ANY, None).matches(&prefixed));
        assert!(invalid_binding(&prefixed).is_none());
        let bad = acl(resource::CLUSTER, "other", pattern::LITERAL, "alice", op::ANY, permission::ANY);
        assert!(invalid_binding(&bad).is_some());
    }
}
