//! Consistent copies of the database.
//!
//! redb lets one process open a file, and a byte copy of a file another process is writing
//! can mix two commits. A snapshot therefore reads every table inside one read transaction
//! (redb's MVCC gives it one committed state while writers go on) and writes the rows into a
//! new database file. That works the same for a stopped server (the CLI opens the store) and
//! a running one (the server makes the snapshot for the CLI, see `crate::backup`).

use std::path::Path;

use redb::{
    Key, MultimapTableHandle, ReadableDatabase, ReadableTable, TableDefinition, TableHandle, Value,
};

use super::tables::*;
use super::{ReadTransaction, Result, Store, StoreError};

/// What a snapshot contains, read in the same transaction as the rows.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SnapshotInfo {
    pub schema_version: u64,
    pub users: u64,
    pub audit_events: u64,
    pub audit_head_seq: u64,
    pub audit_head_hash: String,
    pub rows: u64,
}

/// One table the backup knows, with the types it was defined with (redb checks them when a
/// table is opened).
trait Copyable {
    fn table_name(&self) -> &str;
    fn copy_into(&self, src: &ReadTransaction, dst: &redb::Database) -> Result<u64>;
    fn rows(&self, src: &ReadTransaction) -> Result<u64>;
}

impl<K: Key + 'static, V: Value + 'static> Copyable for TableDefinition<'static, K, V> {
    fn table_name(&self) -> &str {
        self.name()
    }
    fn copy_into(&self, src: &ReadTransaction, dst: &redb::Database) -> Result<u64> {
        copy(src, dst, *self)
    }
    fn rows(&self, src: &ReadTransaction) -> Result<u64> {
        use redb::ReadableTableMetadata;
        match src.open_table(*self) {
            Ok(t) => Ok(t.len()?),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(0),
            Err(e) => Err(e.into()),
        }
    }
}

/// Every table. One missing here makes [`snapshot`] fail instead of silently leaving data
/// out of a backup; the `every_table_is_copied` test catches that before a release does.
const TABLES: &[&dyn Copyable] = &[
    &META,
    &USERS,
    &USER_NAMES,
    &GROUPS,
    &GROUP_NAMES,
    &PROJECTS,
    &PROJECT_NAMES,
    &CLUSTERS,
    &CLUSTER_NAMES,
    &BOOTSTRAP_TOKENS,
    &SSO_PROVIDERS,
    &SSO_PROVIDER_NAMES,
    &SSO_IDENTITIES,
    &GRANTS,
    &CASBIN_RULES,
    &TOKENS,
    &TOKEN_HASHES,
    &CLIENT_CERTS,
    &SESSIONS,
    &AUDIT_EVENTS,
    &AUDIT_POSTINGS,
];

fn known(name: &str) -> bool {
    TABLES.iter().any(|t| t.table_name() == name)
}

/// Rows per write transaction in the copy: bounds the memory a large audit table needs.
/// Consistency comes from the one read transaction, so the copy may commit in steps.
const ROWS_PER_COMMIT: usize = 50_000;

fn copy<K: Key + 'static, V: Value + 'static>(
    src: &ReadTransaction,
    dst: &redb::Database,
    def: TableDefinition<K, V>,
) -> Result<u64> {
    let from = match src.open_table(def) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
        Err(e) => return Err(e.into()),
    };
    let mut rows = from.iter()?;
    let mut copied = 0u64;
    loop {
        let txn = dst.begin_write()?;
        let mut batch = 0usize;
        {
            let mut to = txn.open_table(def)?;
            for row in rows.by_ref() {
                let (k, v) = row?;
                to.insert(k.value(), v.value())?;
                batch += 1;
                if batch == ROWS_PER_COMMIT {
                    break;
                }
            }
        }
        txn.commit()?;
        copied += batch as u64;
        if batch < ROWS_PER_COMMIT {
            return Ok(copied);
        }
    }
}

/// Writes a consistent copy of `store` to `dest`, which must not exist yet. Blocking.
pub fn snapshot(store: &Store, dest: &Path) -> Result<SnapshotInfo> {
    let txn = store.db.begin_read()?;
    let unknown: Vec<String> = txn
        .list_tables()?
        .map(|t| t.name().to_owned())
        .filter(|name| !known(name))
        .chain(txn.list_multimap_tables()?.map(|t| t.name().to_owned()))
        .collect();
    if !unknown.is_empty() {
        return Err(StoreError::Db(redb::Error::Corrupted(format!(
            "this ztka does not know how to back up the table(s) {}",
            unknown.join(", ")
        ))));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(dest)
        .map_err(|source| StoreError::NotWritable {
            path: dest.to_owned(),
            source,
        })?;
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(dest, std::fs::Permissions::from_mode(0o600));
    }
    let backend = redb::backends::FileBackend::new(file).map_err(|e| StoreError::Db(e.into()))?;
    let db = super::builder()
        .create_with_backend(backend)
        .map_err(|e| StoreError::Db(e.into()))?;
    let mut rows = 0;
    for table in TABLES {
        rows += table.copy_into(&txn, &db)?;
    }
    let info = summary(&txn, rows)?;
    drop(db);
    Ok(info)
}

fn summary(txn: &ReadTransaction, rows: u64) -> Result<SnapshotInfo> {
    let tip = super::audit::chain_tip(txn)?;
    Ok(SnapshotInfo {
        schema_version: super::migrate::version_in(txn)?,
        users: super::users::count(txn)?,
        audit_events: super::audit::count(txn)?,
        audit_head_seq: tip.seq,
        audit_head_hash: tip.hash,
        rows,
    })
}

/// Reads the same summary from a store (e.g. after a restore), for comparison.
pub fn info(store: &Store) -> Result<SnapshotInfo> {
    store.read_blocking(|txn| {
        let mut rows = 0;
        for table in TABLES {
            rows += table.rows(txn)?;
        }
        summary(txn, rows)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::user::User;

    #[test]
    fn every_table_is_copied() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let names: Vec<String> = store
            .read_blocking(|txn| Ok(txn.list_tables()?.map(|t| t.name().to_owned()).collect()))
            .unwrap();
        for name in &names {
            assert!(
                known(name),
                "table {name} is not in store::backup::TABLES, so backups would leave it out"
            );
        }
        assert_eq!(names.len(), TABLES.len());
    }

    #[test]
    fn snapshot_has_the_same_rows_and_a_later_write_is_not_in_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("data")).unwrap();
        let now = time::OffsetDateTime::now_utc();
        store
            .write_blocking(|txn| {
                super::super::users::insert(txn, &User::new_local("alice", String::new(), now))
            })
            .unwrap();
        let dest = dir.path().join("copy.redb");
        let info = snapshot(&store, &dest).unwrap();
        assert_eq!(info.users, 1);
        assert!(
            snapshot(&store, &dest).is_err(),
            "an existing file is never overwritten"
        );
        store
            .write_blocking(|txn| {
                super::super::users::insert(txn, &User::new_local("bob", String::new(), now))
            })
            .unwrap();

        let copy_dir = dir.path().join("restored");
        std::fs::create_dir(&copy_dir).unwrap();
        std::fs::rename(&dest, copy_dir.join(super::super::DATABASE_FILE)).unwrap();
        let copy = Store::open(&copy_dir).unwrap();
        assert_eq!(super::info(&copy).unwrap(), info);
        let names: Vec<String> = copy
            .read_blocking(super::super::named::read::every::<User>)
            .unwrap()
            .into_iter()
            .map(|u| u.name)
            .collect();
        assert_eq!(names, ["alice"]);
    }
}
