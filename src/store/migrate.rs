//! Forward-only schema migrations, recorded as `schema_version` in the meta table.

use redb::{ReadableDatabase, WriteTransaction};

use super::tables::*;
use super::{Result, Store, StoreError};

/// Migration `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[fn(&WriteTransaction) -> Result<()>] = &[
    v0_create_tables,
    v1_audit_indexes,
    v2_clusters,
    v3_audit_postings,
    v4_sso,
    v5_audit_index_watermark,
    v6_client_certificates,
];

pub const SCHEMA_VERSION: u64 = MIGRATIONS.len() as u64;

fn v0_create_tables(txn: &WriteTransaction) -> Result<()> {
    txn.open_table(META)?;
    txn.open_table(USERS)?;
    txn.open_table(USER_NAMES)?;
    txn.open_table(GROUPS)?;
    txn.open_table(GROUP_NAMES)?;
    txn.open_table(PROJECTS)?;
    txn.open_table(PROJECT_NAMES)?;
    txn.open_table(GRANTS)?;
    txn.open_table(CASBIN_RULES)?;
    txn.open_table(TOKENS)?;
    txn.open_table(TOKEN_HASHES)?;
    txn.open_table(SESSIONS)?;
    txn.open_table(AUDIT_EVENTS)?;
    Ok(())
}

/// The first audit index. Its rows are no longer written or read: version 3 drops the table
/// and rebuilds the index from the events, so indexing them here would be wasted work.
fn v1_audit_indexes(txn: &WriteTransaction) -> Result<()> {
    txn.open_table(AUDIT_INDEX)?;
    Ok(())
}

/// Clusters and their bootstrap tokens.
fn v2_clusters(txn: &WriteTransaction) -> Result<()> {
    txn.open_table(CLUSTERS)?;
    txn.open_table(CLUSTER_NAMES)?;
    txn.open_table(BOOTSTRAP_TOKENS)?;
    Ok(())
}

/// Audit indexes as posting lists (one row per key and block of events instead of one per
/// key and event), rebuilt from the events. The events and their chain are untouched.
fn v3_audit_postings(txn: &WriteTransaction) -> Result<()> {
    txn.delete_table(AUDIT_INDEX)?;
    txn.open_table(AUDIT_POSTINGS)?;
    super::audit::reindex_all(txn)
}

/// Single sign-on providers and the index of SSO identities.
fn v4_sso(txn: &WriteTransaction) -> Result<()> {
    txn.open_table(SSO_PROVIDERS)?;
    txn.open_table(SSO_PROVIDER_NAMES)?;
    txn.open_table(SSO_IDENTITIES)?;
    Ok(())
}

/// The audit index watermark: from now on posting lists are written every few batches, and
/// everything stored so far was indexed as it was appended.
fn v5_audit_index_watermark(txn: &WriteTransaction) -> Result<()> {
    super::audit::mark_all_indexed(txn)
}

/// Kubeconfig client certificates, so one can be revoked by its serial.
fn v6_client_certificates(txn: &WriteTransaction) -> Result<()> {
    txn.open_table(CLIENT_CERTS)?;
    Ok(())
}

pub(super) fn run(store: &Store) -> Result<()> {
    let current = current_version(store)?;
    if current > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            path: store.path.to_path_buf(),
            found: current,
            supported: SCHEMA_VERSION,
        });
    }
    for (version, migration) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        store.write_blocking(|txn| {
            migration(txn)?;
            let next = version as u64 + 1;
            txn.open_table(META)?
                .insert("schema_version", next.to_be_bytes().as_slice())?;
            Ok(())
        })?;
        tracing::info!(from = version, to = version + 1, "migrated database schema");
    }
    Ok(())
}

pub fn current_version(store: &Store) -> Result<u64> {
    version_in(&store.db.begin_read()?)
}

/// The schema version as seen by one read transaction.
pub fn version_in(txn: &redb::ReadTransaction) -> Result<u64> {
    let table = match txn.open_table(META) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
        Err(e) => return Err(e.into()),
    };
    let Some(raw) = table.get("schema_version")? else {
        return Ok(0);
    };
    let bytes: [u8; 8] = raw.value().try_into().map_err(|_| {
        StoreError::Db(redb::Error::Corrupted(
            "schema_version is not 8 bytes".into(),
        ))
    })?;
    Ok(u64::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_database_is_at_current_version_and_reopen_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(current_version(&store).unwrap(), SCHEMA_VERSION);
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(current_version(&store).unwrap(), SCHEMA_VERSION);
    }

    #[test]
    fn newer_schema_is_refused_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .write_blocking(|txn| {
                txn.open_table(META)?.insert(
                    "schema_version",
                    (SCHEMA_VERSION + 5).to_be_bytes().as_slice(),
                )?;
                Ok(())
            })
            .unwrap();
        drop(store);
        let err = Store::open(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::TooNew { .. }), "{err}");
        assert!(err.to_string().contains("upgrade ztka"));
    }

    #[test]
    fn second_open_reports_locked() {
        let dir = tempfile::tempdir().unwrap();
        let _store = Store::open(dir.path()).unwrap();
        let err = Store::open(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::Locked(_)), "{err}");
    }
}
