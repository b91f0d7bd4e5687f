//! Every redb table, in one place. Values are JSON documents of `domain` types so records can
//! grow fields without a migration; keys are chosen for the lookups the code does.

use redb::TableDefinition;

/// Schema bookkeeping (`schema_version`) and single values (`settings`).
pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// Users by id, with a unique name index.
pub const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");
pub const USER_NAMES: TableDefinition<&str, &str> = TableDefinition::new("user_names");

/// Groups by id, with a unique name index.
pub const GROUPS: TableDefinition<&str, &[u8]> = TableDefinition::new("groups");
pub const GROUP_NAMES: TableDefinition<&str, &str> = TableDefinition::new("group_names");

/// Projects by id, with a unique name index.
pub const PROJECTS: TableDefinition<&str, &[u8]> = TableDefinition::new("projects");
pub const PROJECT_NAMES: TableDefinition<&str, &str> = TableDefinition::new("project_names");

/// Clusters by id, with a unique name index (names are the relay's path key).
pub const CLUSTERS: TableDefinition<&str, &[u8]> = TableDefinition::new("clusters");
pub const CLUSTER_NAMES: TableDefinition<&str, &str> = TableDefinition::new("cluster_names");
/// Bootstrap tokens by SHA-256 of the token.
pub const BOOTSTRAP_TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("bootstrap_tokens");

/// OpenID Connect providers by id, with a unique name index.
pub const SSO_PROVIDERS: TableDefinition<&str, &[u8]> = TableDefinition::new("sso_providers");
pub const SSO_PROVIDER_NAMES: TableDefinition<&str, &str> =
    TableDefinition::new("sso_provider_names");
/// SSO users by `issuer \u{1f} subject` → user id.
pub const SSO_IDENTITIES: TableDefinition<&str, &str> = TableDefinition::new("sso_identities");

/// Grants by id (UUIDv7, so key order is creation order).
pub const GRANTS: TableDefinition<&str, &[u8]> = TableDefinition::new("grants");

/// Authorization policy rules as casbin sees them: key `ptype\u{1f}v0\u{1f}v1…`.
pub const CASBIN_RULES: TableDefinition<&str, ()> = TableDefinition::new("casbin_rules");

/// API tokens by id, and token hash → id.
pub const TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("api_tokens");
pub const TOKEN_HASHES: TableDefinition<&str, &str> = TableDefinition::new("api_token_hashes");

/// Kubeconfig client certificates by serial (hex), kept until they expire.
pub const CLIENT_CERTS: TableDefinition<&str, &[u8]> = TableDefinition::new("client_certificates");

/// Console sessions by SHA-256 of the cookie value.
pub const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");

/// Audit events by sequence number (append-only).
pub const AUDIT_EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("audit_events");
/// The first secondary index over the audit events, one row per event and key:
/// `("field=value", seq)`. Schema version 4 replaced it with [`AUDIT_POSTINGS`]; it is only
/// defined so the migration can drop it.
pub const AUDIT_INDEX: TableDefinition<(&str, u64), ()> = TableDefinition::new("audit_index");
/// Secondary indexes over the audit events as posting lists: `("field=value", block)` → the
/// events of that block (seqs `block * POSTING_SPAN ..` the next block) that have the key, as
/// ascending little-endian `u16` offsets. One row per key and block instead of one per key and
/// event: a batch of appends costs one read-modify-write per distinct key, not one B-tree
/// insert per key per event. One table for all fields keeps the write path to one extra B-tree.
pub const AUDIT_POSTINGS: TableDefinition<(&str, u64), &[u8]> =
    TableDefinition::new("audit_postings");
