//! Clusters (through [`super::named`]) and their bootstrap tokens.

use redb::{ReadableTable, WriteTransaction};
use time::OffsetDateTime;
use uuid::Uuid;

use super::named;
use super::tables::BOOTSTRAP_TOKENS;
use super::{Result, StoreError, decode, encode};
use crate::domain::cluster::{BootstrapToken, Cluster, Revocation, TokenRefusal};

/// Every cluster of a project, in name order.
pub fn in_project(txn: &redb::ReadTransaction, project_id: Uuid) -> Result<Vec<Cluster>> {
    Ok(named::read::every::<Cluster>(txn)?
        .into_iter()
        .filter(|c| c.project_id == project_id)
        .collect())
}

/// Every cluster with its project's name, in cluster name order.
pub fn with_projects(txn: &redb::ReadTransaction) -> Result<Vec<(Cluster, String)>> {
    let projects = named::read::every::<crate::domain::org::Project>(txn)?;
    Ok(named::read::every::<Cluster>(txn)?
        .into_iter()
        .filter_map(|c| {
            let p = projects.iter().find(|p| p.id == c.project_id)?;
            Some((c, p.name.clone()))
        })
        .collect())
}

/// Stores a new token for `cluster_id` and marks the cluster's earlier live tokens superseded.
pub fn issue_token(txn: &WriteTransaction, hash: &str, token: &BootstrapToken) -> Result<()> {
    mark_tokens(txn, token.cluster_id, Revocation::Superseded)?;
    txn.open_table(BOOTSTRAP_TOKENS)?
        .insert(hash, encode(token)?.as_slice())?;
    Ok(())
}

/// Revokes every unspent token of a cluster (a deleted cluster's tokens stay as records so
/// a late agent hears why it is refused).
pub fn mark_tokens(txn: &WriteTransaction, cluster_id: Uuid, why: Revocation) -> Result<()> {
    let mut table = txn.open_table(BOOTSTRAP_TOKENS)?;
    let mut changed = Vec::new();
    for row in table.iter()? {
        let (hash, value) = row?;
        let mut token: BootstrapToken = decode(value.value())?;
        if token.cluster_id == cluster_id && token.revoked.is_none() && token.spent_at.is_none() {
            token.revoked = Some(why);
            changed.push((hash.value().to_owned(), token));
        }
    }
    for (hash, token) in changed {
        table.insert(hash.as_str(), encode(&token)?.as_slice())?;
    }
    Ok(())
}

/// Spends the token with digest `hash` if it is usable, returning its cluster. A token is
/// spent in the same transaction that records the agent's certificate, so two agents racing
/// with one token cannot both succeed.
pub fn spend_token(
    txn: &WriteTransaction,
    hash: &str,
    now: OffsetDateTime,
) -> Result<std::result::Result<Cluster, TokenRefusal>> {
    let mut table = txn.open_table(BOOTSTRAP_TOKENS)?;
    let token: BootstrapToken = match table.get(hash)? {
        Some(v) => decode(v.value())?,
        None => return Ok(Err(TokenRefusal::Unknown)),
    };
    if let Err(refusal) = token.usable(now) {
        return Ok(Err(refusal));
    }
    let Some(cluster) = named::write::by_id::<Cluster>(txn, &token.cluster_id.to_string())? else {
        return Ok(Err(TokenRefusal::ClusterDeleted));
    };
    let spent = BootstrapToken {
        spent_at: Some(now),
        ..token
    };
    table.insert(hash, encode(&spent)?.as_slice())?;
    Ok(Ok(cluster))
}

/// A token's record and its cluster (if that still exists), without spending it.
pub fn token(
    txn: &redb::ReadTransaction,
    hash: &str,
) -> Result<Option<(BootstrapToken, Option<Cluster>)>> {
    let Some(token) = txn
        .open_table(BOOTSTRAP_TOKENS)?
        .get(hash)?
        .map(|v| decode::<BootstrapToken>(v.value()))
        .transpose()?
    else {
        return Ok(None);
    };
    let cluster = named::read::by_id::<Cluster>(txn, &token.cluster_id.to_string())?;
    Ok(Some((token, cluster)))
}

/// Deletes a cluster and revokes its tokens.
pub fn delete(txn: &WriteTransaction, cluster: &Cluster) -> Result<()> {
    named::delete(txn, cluster)?;
    mark_tokens(txn, cluster.id, Revocation::ClusterDeleted)
}

/// Applies `change` to the stored cluster with `id`.
pub fn modify(
    txn: &WriteTransaction,
    id: Uuid,
    change: impl FnOnce(&mut Cluster),
) -> Result<Cluster> {
    let mut cluster =
        named::write::by_id::<Cluster>(txn, &id.to_string())?.ok_or(StoreError::NotFound)?;
    change(&mut cluster);
    named::update(txn, &cluster)?;
    Ok(cluster)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn cluster() -> Cluster {
        let now = OffsetDateTime::now_utc();
        Cluster {
            id: Uuid::now_v7(),
            name: "prod".into(),
            project_id: Uuid::now_v7(),
            description: String::new(),
            created_at: now,
            updated_at: now,
            registered_at: None,
            agent_serials: vec![],
            agent_version: None,
            kubernetes_version: None,
            last_seen: None,
        }
    }

    fn token(cluster_id: Uuid, hours: i64) -> BootstrapToken {
        let now = OffsetDateTime::now_utc();
        BootstrapToken {
            cluster_id,
            created_at: now,
            expires_at: now + time::Duration::hours(hours),
            spent_at: None,
            revoked: None,
        }
    }

    #[test]
    fn tokens_spend_once_and_newer_tokens_supersede() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let c = cluster();
        let now = OffsetDateTime::now_utc();
        let spend = |hash: &'static str| {
            store
                .write_blocking(|txn| spend_token(txn, hash, now))
                .unwrap()
                .map(|c| c.id)
        };
        store
            .write_blocking(|txn| {
                named::insert(txn, &c)?;
                issue_token(txn, "first", &token(c.id, 24))?;
                issue_token(txn, "second", &token(c.id, 24))?;
                issue_token(txn, "old", &token(c.id, -1))
            })
            .unwrap();
        assert_eq!(spend("first"), Err(TokenRefusal::Superseded));
        assert_eq!(spend("old"), Err(TokenRefusal::Expired));
        assert_eq!(spend("nope"), Err(TokenRefusal::Unknown));
        store
            .write_blocking(|txn| issue_token(txn, "third", &token(c.id, 24)))
            .unwrap();
        assert_eq!(spend("third"), Ok(c.id));
        assert_eq!(spend("third"), Err(TokenRefusal::Spent));
        store
            .write_blocking(|txn| {
                issue_token(txn, "fourth", &token(c.id, 24))?;
                delete(txn, &c)
            })
            .unwrap();
        assert_eq!(spend("fourth"), Err(TokenRefusal::ClusterDeleted));
    }
}
