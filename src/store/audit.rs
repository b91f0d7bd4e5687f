//! Audit events by sequence number. There is no update or delete here.

use redb::{ReadTransaction, ReadableTable, WriteTransaction};

use super::tables::AUDIT_EVENTS;
use super::{Result, decode, encode};
use crate::domain::audit::AuditEvent;

pub fn append(txn: &WriteTransaction, event: &AuditEvent) -> Result<()> {
    txn.open_table(AUDIT_EVENTS)?
        .insert(event.seq, encode(event)?.as_slice())?;
    Ok(())
}

pub fn head(txn: &ReadTransaction) -> Result<Option<(u64, String)>> {
    let table = txn.open_table(AUDIT_EVENTS)?;
    let last = table.last()?;
    last.map(|(_, v)| decode::<AuditEvent>(v.value()).map(|e| (e.seq, e.hash)))
        .transpose()
}

pub fn recent(txn: &ReadTransaction, limit: usize) -> Result<Vec<AuditEvent>> {
    let table = txn.open_table(AUDIT_EVENTS)?;
    let mut out = Vec::new();
    for row in table.iter()?.rev().take(limit) {
        let (_, v) = row?;
        out.push(decode(v.value())?);
    }
    Ok(out)
}
