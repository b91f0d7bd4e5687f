//! Grants, sessions, API tokens and settings: records keyed by id or hash.

use redb::{ReadTransaction, ReadableTable, WriteTransaction};
use uuid::Uuid;

use super::tables::{GRANTS, META, SESSIONS, TOKEN_HASHES, TOKENS};
use super::{Result, StoreError, decode, encode};
use crate::domain::org::{ApiToken, Grant, Session, Settings};

pub fn insert_grant(txn: &WriteTransaction, grant: &Grant) -> Result<()> {
    txn.open_table(GRANTS)?
        .insert(grant.id.to_string().as_str(), encode(grant)?.as_slice())?;
    Ok(())
}

pub fn delete_grant(txn: &WriteTransaction, id: Uuid) -> Result<Grant> {
    let mut t = txn.open_table(GRANTS)?;
    let removed = t.remove(id.to_string().as_str())?;
    match removed {
        Some(v) => decode(v.value()),
        None => Err(StoreError::NotFound),
    }
}

fn all_grants_in(t: &impl ReadableTable<&'static str, &'static [u8]>) -> Result<Vec<Grant>> {
    let mut out = Vec::new();
    for row in t.iter()? {
        let (_, v) = row?;
        out.push(decode(v.value())?);
    }
    Ok(out)
}

pub fn all_grants(txn: &ReadTransaction) -> Result<Vec<Grant>> {
    all_grants_in(&txn.open_table(GRANTS)?)
}

pub fn all_grants_for_update(txn: &WriteTransaction) -> Result<Vec<Grant>> {
    all_grants_in(&txn.open_table(GRANTS)?)
}

pub fn get_grant(txn: &ReadTransaction, id: Uuid) -> Result<Option<Grant>> {
    let t = txn.open_table(GRANTS)?;
    let raw = t.get(id.to_string().as_str())?;
    raw.map(|v| decode(v.value())).transpose()
}

// --- sessions ---

pub fn put_session(txn: &WriteTransaction, key_hash: &str, session: &Session) -> Result<()> {
    txn.open_table(SESSIONS)?
        .insert(key_hash, encode(session)?.as_slice())?;
    Ok(())
}

pub fn get_session(txn: &ReadTransaction, key_hash: &str) -> Result<Option<Session>> {
    let t = txn.open_table(SESSIONS)?;
    let raw = t.get(key_hash)?;
    raw.map(|v| decode(v.value())).transpose()
}

pub fn delete_session(txn: &WriteTransaction, key_hash: &str) -> Result<()> {
    txn.open_table(SESSIONS)?.remove(key_hash)?;
    Ok(())
}

/// Removes sessions for which `expired` is true; returns how many.
pub fn sweep_sessions(txn: &WriteTransaction, expired: impl Fn(&Session) -> bool) -> Result<usize> {
    let mut t = txn.open_table(SESSIONS)?;
    let mut doomed = Vec::new();
    for row in t.iter()? {
        let (k, v) = row?;
        let s: Session = decode(v.value())?;
        if expired(&s) {
            doomed.push(k.value().to_owned());
        }
    }
    for k in &doomed {
        t.remove(k.as_str())?;
    }
    Ok(doomed.len())
}

// --- API tokens ---

pub fn insert_token(txn: &WriteTransaction, token: &ApiToken) -> Result<()> {
    let id = token.id.to_string();
    txn.open_table(TOKEN_HASHES)?
        .insert(token.hash.as_str(), id.as_str())?;
    txn.open_table(TOKENS)?
        .insert(id.as_str(), encode(token)?.as_slice())?;
    Ok(())
}

pub fn update_token(txn: &WriteTransaction, token: &ApiToken) -> Result<()> {
    txn.open_table(TOKENS)?
        .insert(token.id.to_string().as_str(), encode(token)?.as_slice())?;
    Ok(())
}

pub fn token_by_hash(txn: &ReadTransaction, hash: &str) -> Result<Option<ApiToken>> {
    let Some(id) = txn
        .open_table(TOKEN_HASHES)?
        .get(hash)?
        .map(|v| v.value().to_owned())
    else {
        return Ok(None);
    };
    let t = txn.open_table(TOKENS)?;
    let raw = t.get(id.as_str())?;
    raw.map(|v| decode(v.value())).transpose()
}

pub fn tokens_of(txn: &ReadTransaction, user: Option<Uuid>) -> Result<Vec<ApiToken>> {
    let t = txn.open_table(TOKENS)?;
    let mut out = Vec::new();
    for row in t.iter()? {
        let (_, v) = row?;
        let tok: ApiToken = decode(v.value())?;
        if user.is_none_or(|u| tok.user_id == u) {
            out.push(tok);
        }
    }
    Ok(out)
}

pub fn delete_token(txn: &WriteTransaction, id: Uuid) -> Result<ApiToken> {
    let tok: ApiToken = {
        let mut t = txn.open_table(TOKENS)?;
        let removed = t.remove(id.to_string().as_str())?;
        match removed {
            Some(v) => decode(v.value())?,
            None => return Err(StoreError::NotFound),
        }
    };
    txn.open_table(TOKEN_HASHES)?.remove(tok.hash.as_str())?;
    Ok(tok)
}

/// Removes every token of a user (user deletion).
pub fn delete_tokens_of(txn: &WriteTransaction, user: Uuid) -> Result<()> {
    let ids: Vec<Uuid> = {
        let t = txn.open_table(TOKENS)?;
        let mut ids = Vec::new();
        for row in t.iter()? {
            let (_, v) = row?;
            let tok: ApiToken = decode(v.value())?;
            if tok.user_id == user {
                ids.push(tok.id);
            }
        }
        ids
    };
    for id in ids {
        delete_token(txn, id)?;
    }
    Ok(())
}

// --- settings ---

pub fn settings(txn: &ReadTransaction) -> Result<Settings> {
    let t = txn.open_table(META)?;
    let raw = t.get("settings")?;
    Ok(raw
        .map(|v| decode(v.value()))
        .transpose()?
        .unwrap_or_default())
}

pub fn put_settings(txn: &WriteTransaction, settings: &Settings) -> Result<()> {
    txn.open_table(META)?
        .insert("settings", encode(settings)?.as_slice())?;
    Ok(())
}
