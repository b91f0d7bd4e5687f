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
/// Secondary indexes over the audit events: `("field=value", seq)`, e.g. `("user=alice", 42)`.
/// One table for all fields keeps the write path to one extra B-tree.
pub const AUDIT_INDEX: TableDefinition<(&str, u64), ()> = TableDefinition::new("audit_index");
