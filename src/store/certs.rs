//! Kubeconfig client certificates by serial, from download until expiry.

use redb::{ReadTransaction, ReadableTable, WriteTransaction};
use time::OffsetDateTime;
use uuid::Uuid;

use super::tables::CLIENT_CERTS;
use super::{Result, decode, encode};
use crate::domain::user::ClientCertificate;

/// Records a certificate just issued, and drops those that have expired.
pub fn insert(txn: &WriteTransaction, cert: &ClientCertificate) -> Result<()> {
    let mut table = txn.open_table(CLIENT_CERTS)?;
    let now = OffsetDateTime::now_utc();
    table.retain(|_, v| decode::<ClientCertificate>(v).map_or(true, |c| c.expires_at > now))?;
    table.insert(cert.serial.as_str(), encode(cert)?.as_slice())?;
    Ok(())
}

/// The user's certificates that have not expired, newest first.
pub fn of_user(txn: &ReadTransaction, user: Uuid) -> Result<Vec<ClientCertificate>> {
    let now = OffsetDateTime::now_utc();
    let mut out: Vec<ClientCertificate> = all(txn)?
        .into_iter()
        .filter(|c| c.user_id == user && c.expires_at > now)
        .collect();
    out.sort_by_key(|c| std::cmp::Reverse(c.issued_at));
    Ok(out)
}

/// Serials revoked one by one that have not expired yet, with their expiry.
pub fn revoked_serials(txn: &ReadTransaction) -> Result<Vec<(String, OffsetDateTime)>> {
    let now = OffsetDateTime::now_utc();
    Ok(all(txn)?
        .into_iter()
        .filter(|c| c.revoked_at.is_some() && c.expires_at > now)
        .map(|c| (c.serial, c.expires_at))
        .collect())
}

/// Whether the certificate with this serial is revoked on its own.
pub fn is_revoked(txn: &ReadTransaction, serial: &str) -> Result<bool> {
    let table = txn.open_table(CLIENT_CERTS)?;
    let Some(v) = table.get(serial)? else {
        return Ok(false);
    };
    Ok(decode::<ClientCertificate>(v.value())?.revoked_at.is_some())
}

/// Marks the user's certificate revoked; None when the user has no certificate with that
/// serial (the stored record otherwise, revoked now or before).
pub fn revoke(
    txn: &WriteTransaction,
    user: Uuid,
    serial: &str,
    at: OffsetDateTime,
) -> Result<Option<ClientCertificate>> {
    let mut table = txn.open_table(CLIENT_CERTS)?;
    let Some(mut cert) = table
        .get(serial)?
        .map(|v| decode::<ClientCertificate>(v.value()))
        .transpose()?
    else {
        return Ok(None);
    };
    if cert.user_id != user {
        return Ok(None);
    }
    if cert.revoked_at.is_none() {
        cert.revoked_at = Some(at);
        table.insert(serial, encode(&cert)?.as_slice())?;
    }
    Ok(Some(cert))
}

fn all(txn: &ReadTransaction) -> Result<Vec<ClientCertificate>> {
    let table = txn.open_table(CLIENT_CERTS)?;
    let mut out = Vec::new();
    for row in table.iter()? {
        let (_, v) = row?;
        out.push(decode(v.value())?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn cert(serial: &str, user: Uuid, expires_in: i64) -> ClientCertificate {
        let now = OffsetDateTime::now_utc();
        ClientCertificate {
            serial: serial.to_owned(),
            user_id: user,
            issued_at: now,
            expires_at: now + time::Duration::seconds(expires_in),
            clusters: vec!["prod".into()],
            revoked_at: None,
        }
    }

    #[test]
    fn certificates_are_listed_revoked_by_their_owner_and_dropped_once_expired() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (ann, bob) = (Uuid::now_v7(), Uuid::now_v7());
        store
            .write_blocking(|t| {
                insert(t, &cert("0a", ann, 3600))?;
                insert(t, &cert("0b", ann, -1))?;
                insert(t, &cert("0c", bob, 3600))
            })
            .unwrap();
        let listed = store.read_blocking(|t| of_user(t, ann)).unwrap();
        assert_eq!(
            listed.iter().map(|c| c.serial.as_str()).collect::<Vec<_>>(),
            ["0a"]
        );
        // Not bob's to revoke, and an unknown serial is nobody's.
        let now = OffsetDateTime::now_utc();
        assert!(
            store
                .write_blocking(|t| revoke(t, bob, "0a", now))
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .write_blocking(|t| revoke(t, ann, "ff", now))
                .unwrap()
                .is_none()
        );
        let revoked = store
            .write_blocking(|t| revoke(t, ann, "0a", now))
            .unwrap()
            .unwrap();
        assert_eq!(revoked.revoked_at, Some(now));
        // Revoking again keeps the first time.
        let later = now + time::Duration::seconds(5);
        let again = store
            .write_blocking(|t| revoke(t, ann, "0a", later))
            .unwrap()
            .unwrap();
        assert_eq!(again.revoked_at, Some(now));
        let serials = store.read_blocking(revoked_serials).unwrap();
        assert_eq!(
            serials.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>(),
            ["0a"]
        );
        assert!(store.read_blocking(|t| is_revoked(t, "0a")).unwrap());
        assert!(!store.read_blocking(|t| is_revoked(t, "0c")).unwrap());
        // The expired one went with the insert that followed it.
        assert!(
            store
                .read_blocking(|t| { Ok(t.open_table(CLIENT_CERTS)?.get("0b")?.is_none()) })
                .unwrap()
        );
    }
}
