//! Records with a unique DNS-1123 name and a stable id: users, groups, projects, clusters. One generic
//! implementation of insert / update / get / delete / list-by-name for all of them.

use redb::{ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Result, StoreError, decode, encode};

pub trait Named: Serialize + DeserializeOwned {
    const KIND: &'static str;
    const RECORDS: TableDefinition<'static, &'static str, &'static [u8]>;
    const NAMES: TableDefinition<'static, &'static str, &'static str>;
    fn id(&self) -> String;
    fn name(&self) -> &str;
}

pub fn insert<T: Named>(txn: &redb::WriteTransaction, item: &T) -> Result<()> {
    let mut names = txn.open_table(T::NAMES)?;
    if names.get(item.name())?.is_some() {
        return Err(StoreError::Conflict(format!("{} {}", T::KIND, item.name())));
    }
    let id = item.id();
    names.insert(item.name(), id.as_str())?;
    txn.open_table(T::RECORDS)?
        .insert(id.as_str(), encode(item)?.as_slice())?;
    Ok(())
}

/// Replaces a record; names are immutable.
pub fn update<T: Named>(txn: &redb::WriteTransaction, item: &T) -> Result<()> {
    let mut records = txn.open_table(T::RECORDS)?;
    let id = item.id();
    if records.get(id.as_str())?.is_none() {
        return Err(StoreError::NotFound);
    }
    records.insert(id.as_str(), encode(item)?.as_slice())?;
    Ok(())
}

pub fn delete<T: Named>(txn: &redb::WriteTransaction, item: &T) -> Result<()> {
    txn.open_table(T::NAMES)?.remove(item.name())?;
    txn.open_table(T::RECORDS)?.remove(item.id().as_str())?;
    Ok(())
}

/// Works in read and write transactions alike.
pub fn get<T: Named>(
    records: &impl ReadableTable<&'static str, &'static [u8]>,
    id: &str,
) -> Result<Option<T>> {
    records.get(id)?.map(|v| decode(v.value())).transpose()
}

pub fn get_by_name<T: Named>(
    names: &impl ReadableTable<&'static str, &'static str>,
    records: &impl ReadableTable<&'static str, &'static [u8]>,
    name: &str,
) -> Result<Option<T>> {
    let Some(id) = names.get(name)? else {
        return Ok(None);
    };
    let id = id.value().to_owned();
    get(records, &id)
}

/// Up to `limit` records sorted by name, starting after `after`.
pub fn list<T: Named>(
    names: &impl ReadableTable<&'static str, &'static str>,
    records: &impl ReadableTable<&'static str, &'static [u8]>,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<T>> {
    let range = match after {
        Some(a) => {
            names.range::<&str>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded))?
        }
        None => names.range::<&str>(..)?,
    };
    let mut out = Vec::new();
    for row in range.take(limit) {
        let (_, id) = row?;
        let id = id.value().to_owned();
        if let Some(item) = get(records, &id)? {
            out.push(item);
        }
    }
    Ok(out)
}

/// Every record, in name order (for small tables and policy loading).
pub fn all<T: Named>(
    names: &impl ReadableTable<&'static str, &'static str>,
    records: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<Vec<T>> {
    list(names, records, None, usize::MAX)
}

pub fn count<T: Named>(records: &impl ReadableTableMetadata) -> Result<u64> {
    Ok(records.len()?)
}

/// Convenience wrappers that open the tables themselves.
pub mod read {
    use super::*;

    pub fn by_name<T: Named>(txn: &redb::ReadTransaction, name: &str) -> Result<Option<T>> {
        get_by_name(
            &txn.open_table(T::NAMES)?,
            &txn.open_table(T::RECORDS)?,
            name,
        )
    }

    pub fn by_id<T: Named>(txn: &redb::ReadTransaction, id: &str) -> Result<Option<T>> {
        get(&txn.open_table(T::RECORDS)?, id)
    }

    pub fn page<T: Named>(
        txn: &redb::ReadTransaction,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<T>> {
        list(
            &txn.open_table(T::NAMES)?,
            &txn.open_table(T::RECORDS)?,
            after,
            limit,
        )
    }

    pub fn every<T: Named>(txn: &redb::ReadTransaction) -> Result<Vec<T>> {
        all(&txn.open_table(T::NAMES)?, &txn.open_table(T::RECORDS)?)
    }
}

pub mod write {
    use super::*;

    pub fn by_name<T: Named>(txn: &redb::WriteTransaction, name: &str) -> Result<Option<T>> {
        get_by_name(
            &txn.open_table(T::NAMES)?,
            &txn.open_table(T::RECORDS)?,
            name,
        )
    }

    pub fn by_id<T: Named>(txn: &redb::WriteTransaction, id: &str) -> Result<Option<T>> {
        get(&txn.open_table(T::RECORDS)?, id)
    }

    pub fn every<T: Named>(txn: &redb::WriteTransaction) -> Result<Vec<T>> {
        all(&txn.open_table(T::NAMES)?, &txn.open_table(T::RECORDS)?)
    }
}

macro_rules! named {
    ($t:ty, $kind:literal, $records:ident, $names:ident) => {
        impl Named for $t {
            const KIND: &'static str = $kind;
            const RECORDS: TableDefinition<'static, &'static str, &'static [u8]> =
                super::tables::$records;
            const NAMES: TableDefinition<'static, &'static str, &'static str> =
                super::tables::$names;
            fn id(&self) -> String {
                self.id.to_string()
            }
            fn name(&self) -> &str {
                &self.name
            }
        }
    };
}

named!(crate::domain::user::User, "user", USERS, USER_NAMES);
named!(
    crate::domain::sso::SsoProvider,
    "SSO provider",
    SSO_PROVIDERS,
    SSO_PROVIDER_NAMES
);
named!(crate::domain::org::Group, "group", GROUPS, GROUP_NAMES);
named!(
    crate::domain::org::Project,
    "project",
    PROJECTS,
    PROJECT_NAMES
);
named!(
    crate::domain::cluster::Cluster,
    "cluster",
    CLUSTERS,
    CLUSTER_NAMES
);
