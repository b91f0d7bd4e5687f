//! Storage of casbin policy rules, one row per rule.

use redb::{ReadTransaction, ReadableTable, WriteTransaction};

use super::Result;
use super::tables::CASBIN_RULES;

const SEP: char = '\u{1f}';

fn key(ptype: &str, rule: &[String]) -> String {
    let mut k = ptype.to_owned();
    for v in rule {
        k.push(SEP);
        k.push_str(v);
    }
    k
}

fn split(key: &str) -> (String, Vec<String>) {
    let mut parts = key.split(SEP).map(str::to_owned);
    let ptype = parts.next().unwrap_or_default();
    (ptype, parts.collect())
}

pub fn add(txn: &WriteTransaction, ptype: &str, rule: &[String]) -> Result<bool> {
    Ok(txn
        .open_table(CASBIN_RULES)?
        .insert(key(ptype, rule).as_str(), ())?
        .is_none())
}

pub fn remove(txn: &WriteTransaction, ptype: &str, rule: &[String]) -> Result<bool> {
    Ok(txn
        .open_table(CASBIN_RULES)?
        .remove(key(ptype, rule).as_str())?
        .is_some())
}

/// Removes rules of `ptype` whose fields from `field_index` on equal `values` (an empty value
/// matches anything), as casbin's `remove_filtered_policy` defines.
pub fn remove_filtered(
    txn: &WriteTransaction,
    ptype: &str,
    field_index: usize,
    values: &[String],
) -> Result<bool> {
    let mut table = txn.open_table(CASBIN_RULES)?;
    let mut doomed = Vec::new();
    for row in table.iter()? {
        let (k, _) = row?;
        let (p, rule) = split(k.value());
        if p != ptype {
            continue;
        }
        let matches = values
            .iter()
            .enumerate()
            .all(|(i, v)| v.is_empty() || rule.get(field_index + i).is_some_and(|r| r == v));
        if matches {
            doomed.push(k.value().to_owned());
        }
    }
    for k in &doomed {
        table.remove(k.as_str())?;
    }
    Ok(!doomed.is_empty())
}

pub fn clear(txn: &WriteTransaction) -> Result<()> {
    let mut table = txn.open_table(CASBIN_RULES)?;
    table.retain(|_, _| false)?;
    Ok(())
}

/// Every rule as (ptype, fields).
pub fn all(txn: &ReadTransaction) -> Result<Vec<(String, Vec<String>)>> {
    let table = txn.open_table(CASBIN_RULES)?;
    let mut out = Vec::new();
    for row in table.iter()? {
        let (k, _) = row?;
        out.push(split(k.value()));
    }
    Ok(out)
}
