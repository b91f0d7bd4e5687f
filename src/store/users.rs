//! Users: by id in `USERS`, with a unique name index in `USER_NAMES`.

use redb::{ReadTransaction, ReadableTable, WriteTransaction};
use uuid::Uuid;

use super::tables::{USER_NAMES, USERS};
use super::{Result, StoreError, decode, encode};
use crate::domain::user::User;

pub fn insert(txn: &WriteTransaction, user: &User) -> Result<()> {
    let mut names = txn.open_table(USER_NAMES)?;
    if names.get(user.name.as_str())?.is_some() {
        return Err(StoreError::Conflict(format!("user {}", user.name)));
    }
    let id = user.id.to_string();
    names.insert(user.name.as_str(), id.as_str())?;
    txn.open_table(USERS)?
        .insert(id.as_str(), encode(user)?.as_slice())?;
    Ok(())
}

/// Replaces a user record; the name is immutable.
pub fn update(txn: &WriteTransaction, user: &User) -> Result<()> {
    let mut users = txn.open_table(USERS)?;
    let id = user.id.to_string();
    if users.get(id.as_str())?.is_none() {
        return Err(StoreError::NotFound);
    }
    users.insert(id.as_str(), encode(user)?.as_slice())?;
    Ok(())
}

pub fn get(txn: &ReadTransaction, id: Uuid) -> Result<Option<User>> {
    let users = txn.open_table(USERS)?;
    let raw = users.get(id.to_string().as_str())?;
    raw.map(|v| decode(v.value())).transpose()
}

pub fn get_by_name(txn: &ReadTransaction, name: &str) -> Result<Option<User>> {
    let names = txn.open_table(USER_NAMES)?;
    let Some(id) = names.get(name)? else {
        return Ok(None);
    };
    let users = txn.open_table(USERS)?;
    let raw = users.get(id.value())?;
    raw.map(|v| decode(v.value())).transpose()
}

/// The same lookup inside a write transaction, for read-modify-write.
pub fn get_by_name_for_update(txn: &WriteTransaction, name: &str) -> Result<Option<User>> {
    let names = txn.open_table(USER_NAMES)?;
    let Some(id) = names.get(name)? else {
        return Ok(None);
    };
    let users = txn.open_table(USERS)?;
    let raw = users.get(id.value())?;
    raw.map(|v| decode(v.value())).transpose()
}

pub fn count(txn: &ReadTransaction) -> Result<u64> {
    use redb::ReadableTableMetadata;
    Ok(txn.open_table(USERS)?.len()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

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
    }
}
