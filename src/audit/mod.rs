//! The audit log interface every caller uses. This first version appends each event in its
//! own redb transaction with the SHA-256 chain; the storage behind `append` can change
//! (group commit, indexes) without touching callers.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

use crate::domain::audit::{AuditEvent, Durability, GENESIS_HASH, NewEvent};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("audit log is closed")]
    Closed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub seq: u64,
    pub hash: String,
}

#[derive(Clone)]
pub struct AuditLog {
    store: Store,
    /// Serializes appends so the chain has one writer.
    head: Arc<Mutex<(u64, String)>>,
}

impl AuditLog {
    pub fn open(store: Store) -> Result<Self, AuditError> {
        let head = store
            .read_blocking(crate::store::audit::head)?
            .unwrap_or((0, GENESIS_HASH.to_owned()));
        Ok(Self {
            store,
            head: Arc::new(Mutex::new(head)),
        })
    }

    pub async fn append(
        &self,
        event: NewEvent,
        _durability: Durability,
    ) -> Result<Receipt, AuditError> {
        let mut head = self.head.lock().await;
        let seq = head.0 + 1;
        let prev_hash = head.1.clone();
        let mut stored = AuditEvent {
            seq,
            time: time::OffsetDateTime::now_utc(),
            event,
            prev_hash,
            hash: String::new(),
        };
        stored.hash = chain_hash(&stored)?;
        let receipt = Receipt {
            seq,
            hash: stored.hash.clone(),
        };
        self.store
            .write(move |txn| crate::store::audit::append(txn, &stored))
            .await?;
        *head = (receipt.seq, receipt.hash.clone());
        Ok(receipt)
    }

    /// Newest first, at most `limit`.
    pub async fn recent(&self, limit: usize) -> Result<Vec<AuditEvent>, AuditError> {
        Ok(self
            .store
            .read(move |txn| crate::store::audit::recent(txn, limit))
            .await?)
    }
}

/// SHA-256 over the previous hash and the event's canonical JSON (with `hash` empty).
pub fn chain_hash(event: &AuditEvent) -> Result<String, StoreError> {
    let mut unhashed = event.clone();
    unhashed.hash.clear();
    let canonical = serde_json::to_vec(&unhashed)?;
    let mut h = Sha256::new();
    h.update(event.prev_hash.as_bytes());
    h.update(&canonical);
    Ok(hex::encode(h.finalize()))
}
