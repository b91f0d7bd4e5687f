//! Users: thin names over the generic named-record functions.

use redb::{ReadTransaction, ReadableTableMetadata, WriteTransaction};
use uuid::Uuid;

use super::Result;
use super::named::{self, Named};
use crate::domain::user::User;

pub fn insert(txn: &WriteTransaction, user: &User) -> Result<()> {
    named::insert(txn, user)
}

pub fn update(txn: &WriteTransaction, user: &User) -> Result<()> {
    named::update(txn, user)
}

pub fn get(txn: &ReadTransaction, id: Uuid) -> Result<Option<User>> {
    named::read::by_id(txn, &id.to_string())
}

pub fn get_by_name(txn: &ReadTransaction, name: &str) -> Result<Option<User>> {
    named::read::by_name(txn, name)
}

/// The same lookup inside a write transaction, for read-modify-write.
pub fn get_by_name_for_update(txn: &WriteTransaction, name: &str) -> Result<Option<User>> {
    named::write::by_name(txn, name)
}

pub fn count(txn: &ReadTransaction) -> Result<u64> {
    Ok(txn.open_table(User::RECORDS)?.len()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Store, StoreError};

    #[test]
    fn insert_get_update_and_unique_names() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let now = time::OffsetDateTime::now_utc();
        let mut u = User::new_local("alice", "h".into(), now);
        store.write_blocking(|t| insert(t, &u)).unwrap();
        let dup = User::new_local("alice", "h".into(), now);
        assert!(matches!(
            store.write_blocking(|t| insert(t, &dup)),
            Err(StoreError::Conflict(_))
        ));
        u.disabled = true;
        store.write_blocking(|t| update(t, &u)).unwrap();
        let got = store
            .read_blocking(|t| get_by_name(t, "alice"))
            .unwrap()
            .unwrap();
        assert!(got.disabled);
        assert_eq!(store.read_blocking(count).unwrap(), 1);
        assert!(
            store
                .read_blocking(|t| get(t, Uuid::nil()))
                .unwrap()
                .is_none()
        );
        let page: Vec<User> = store
            .read_blocking(|t| named::read::page(t, Some("a"), 10))
            .unwrap();
        assert_eq!(page.len(), 1);
        let page: Vec<User> = store
            .read_blocking(|t| named::read::page(t, Some("alice"), 10))
            .unwrap();
        assert!(page.is_empty());
    }
}
