//! Every redb table, in one place. Values are JSON documents of `domain` types so records can
//! grow fields without a migration; keys are chosen for the lookups the code does.

use redb::TableDefinition;

/// Schema bookkeeping: `schema_version` and other single values.
pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// Users by id.
pub const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");
/// User name → user id (names are unique).
pub const USER_NAMES: TableDefinition<&str, &str> = TableDefinition::new("user_names");

/// Audit events by sequence number (append-only).
pub const AUDIT_EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("audit_events");
