//! Audit events by sequence number, their secondary indexes, and the retention sweep.
//!
//! There is no update and no delete of a single event here: rows are appended in batches,
//! and the only removal is [`sweep`], which cuts the oldest events off the front of the log
//! and records the last one it removed as the chain's anchor.

use std::collections::{BTreeMap, BTreeSet};

use redb::{ReadTransaction, ReadableTable, ReadableTableMetadata, Table, WriteTransaction};
use time::OffsetDateTime;

use super::tables::{AUDIT_EVENTS, AUDIT_POSTINGS, META};
use super::{Result, StoreError, decode, encode};
use crate::domain::audit::{
    Anchor, AuditEvent, AuditPage, AuditQuery, GENESIS_HASH, Order, VerifyReport,
    action_is_indexed, chain_hash,
};

/// The newest committed event (seq, hash), written in the same transaction as the events.
/// `verify` compares it with the last row, so cutting events off the end is detected.
const HEAD_KEY: &str = "audit_head";
/// The last event removed by retention: the remaining chain links to it.
const ANCHOR_KEY: &str = "audit_anchor";
/// Every event up to this seq has its posting-list entries (8 bytes, big-endian). The writer
/// indexes every few batches, so a short tail of newer events may have none yet: queries
/// scan that tail, and opening the log indexes it (say, after a crash).
const INDEXED_KEY: &str = "audit_indexed_through";

/// Where the next event links to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainTip {
    pub seq: u64,
    pub hash: String,
    /// Time of the newest stored event, if any.
    pub time: Option<OffsetDateTime>,
}

fn corrupt(message: String) -> StoreError {
    StoreError::Db(redb::Error::Corrupted(message))
}

/// An event ready to store: its place in the chain, its stored encoding and index keys,
/// all computed by the appender so the writer only inserts.
#[derive(Debug, Clone)]
pub struct Sealed {
    pub seq: u64,
    pub hash: String,
    pub bytes: Vec<u8>,
    pub index_keys: Vec<String>,
}

/// Events per posting-list block (see [`AUDIT_POSTINGS`]): offsets within a block fit a
/// `u16`, and a key found in every event still makes a value of only 2 KiB.
const POSTING_SPAN: u64 = 1024;

/// New index entries, grouped by key and block, each with ascending offsets.
type Postings<'a> = BTreeMap<(&'a str, u64), Vec<u16>>;

fn add_posting<'a>(postings: &mut Postings<'a>, key: &'a str, seq: u64) {
    postings
        .entry((key, seq / POSTING_SPAN))
        .or_default()
        .push((seq % POSTING_SPAN) as u16);
}

fn offset_at(raw: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([raw[2 * i], raw[2 * i + 1]])
}

fn offsets(raw: &[u8]) -> impl Iterator<Item = u16> + '_ {
    raw.chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
}

/// Merges `new` into the stored lists, one read and one write per key and block (in key
/// order, so consecutive writes touch neighbouring pages).
fn write_postings(
    index: &mut Table<'_, (&'static str, u64), &'static [u8]>,
    postings: Postings<'_>,
) -> Result<()> {
    let mut value = Vec::new();
    for (key, new) in postings {
        value.clear();
        if let Some(old) = index.get(key)? {
            value.extend_from_slice(old.value());
        }
        let last = (value.len() >= 2).then(|| offset_at(&value, value.len() / 2 - 1));
        if last.is_none_or(|l| new.first().is_some_and(|f| *f > l)) {
            // Appends arrive in seq order: the new offsets go after the stored ones.
            for o in new {
                value.extend_from_slice(&o.to_le_bytes());
            }
        } else {
            let mut all: Vec<u16> = offsets(&value).chain(new).collect();
            all.sort_unstable();
            all.dedup();
            value.clear();
            for o in all {
                value.extend_from_slice(&o.to_le_bytes());
            }
        }
        index.insert(key, value.as_slice())?;
    }
    Ok(())
}

/// Appends sealed events and records the new head; their index entries come later, from
/// [`index_batch`] (in this transaction or a later one). The caller commits (one commit per
/// batch).
pub fn append_batch(txn: &WriteTransaction, events: &[Sealed]) -> Result<()> {
    let mut appender = Appender::open(txn)?;
    for event in events {
        appender.push(event)?;
    }
    appender.finish(txn)
}

/// Appends events one at a time within a transaction, so the writer can store each as it
/// arrives instead of after the group-commit window.
pub struct Appender<'t> {
    events: Table<'t, u64, &'static [u8]>,
    head: Option<Anchor>,
}

impl<'t> Appender<'t> {
    pub fn open(txn: &'t WriteTransaction) -> Result<Self> {
        Ok(Self {
            events: txn.open_table(AUDIT_EVENTS)?,
            head: None,
        })
    }

    pub fn push(&mut self, event: &Sealed) -> Result<()> {
        self.events.insert(event.seq, event.bytes.as_slice())?;
        self.head = Some(Anchor {
            seq: event.seq,
            hash: event.hash.clone(),
        });
        Ok(())
    }

    /// Records the newest appended event as the head.
    pub fn finish(self, txn: &WriteTransaction) -> Result<()> {
        drop(self.events);
        if let Some(head) = self.head {
            txn.open_table(META)?
                .insert(HEAD_KEY, encode(&head)?.as_slice())?;
        }
        Ok(())
    }
}

/// Writes the posting-list entries of `events` (each a seq and its index keys, ascending,
/// together covering every event after the current watermark) and moves the watermark to
/// `through`.
pub fn index_batch<'a>(
    txn: &WriteTransaction,
    events: impl IntoIterator<Item = (u64, &'a [String])>,
    through: u64,
) -> Result<()> {
    let mut postings = Postings::new();
    for (seq, keys) in events {
        for key in keys {
            add_posting(&mut postings, key, seq);
        }
    }
    write_postings(&mut txn.open_table(AUDIT_POSTINGS)?, postings)?;
    set_indexed_through(txn, through)
}

fn set_indexed_through(txn: &WriteTransaction, seq: u64) -> Result<()> {
    txn.open_table(META)?
        .insert(INDEXED_KEY, seq.to_be_bytes().as_slice())?;
    Ok(())
}

/// The watermark: every event up to this seq is in the posting lists. A log that never
/// recorded one is treated as not indexed at all, which is slow but never wrong.
pub fn indexed_through(meta: &impl ReadableTable<&'static str, &'static [u8]>) -> Result<u64> {
    let Some(raw) = meta.get(INDEXED_KEY)? else {
        return Ok(0);
    };
    let bytes: [u8; 8] = raw
        .value()
        .try_into()
        .map_err(|_| corrupt(format!("{INDEXED_KEY} is not 8 bytes")))?;
    Ok(u64::from_be_bytes(bytes))
}

/// Indexes the events after the watermark (those a crash or shutdown left unindexed) and
/// returns how many there were.
pub fn index_tail(txn: &WriteTransaction) -> Result<u64> {
    let after = indexed_through(&txn.open_table(META)?)?;
    index_after(txn, after)
}

/// Rebuilds the index entries of every stored event (used by the migration that introduced
/// the posting lists).
pub fn reindex_all(txn: &WriteTransaction) -> Result<()> {
    index_after(txn, 0).map(drop)
}

/// Indexes every event with a seq above `after`, a slice of events at a time to bound
/// memory, and moves the watermark to the last one.
fn index_after(txn: &WriteTransaction, after: u64) -> Result<u64> {
    const CHUNK: usize = 65_536;
    let table = txn.open_table(AUDIT_EVENTS)?;
    let mut rows = table.range(after.saturating_add(1)..)?;
    let mut total = 0u64;
    loop {
        let mut chunk: Vec<(u64, Vec<String>)> = Vec::with_capacity(CHUNK);
        for row in rows.by_ref() {
            let (_, v) = row?;
            let event: AuditEvent = decode(v.value())?;
            chunk.push((event.seq, event.index_keys()));
            if chunk.len() == CHUNK {
                break;
            }
        }
        let Some(&(through, _)) = chunk.last() else {
            return Ok(total);
        };
        total += chunk.len() as u64;
        index_batch(
            txn,
            chunk.iter().map(|(seq, keys)| (*seq, keys.as_slice())),
            through,
        )?;
    }
}

/// The migration that introduced the watermark: events stored before it were indexed as
/// they were appended.
pub fn mark_all_indexed(txn: &WriteTransaction) -> Result<()> {
    if txn.open_table(META)?.get(INDEXED_KEY)?.is_some() {
        return Ok(());
    }
    let last = txn
        .open_table(AUDIT_EVENTS)?
        .last()?
        .map(|(k, _)| k.value());
    set_indexed_through(txn, last.unwrap_or(0))
}

fn meta_record(txn: &ReadTransaction, key: &str) -> Result<Option<Anchor>> {
    let meta = txn.open_table(META)?;
    let Some(raw) = meta.get(key)? else {
        return Ok(None);
    };
    Ok(Some(decode(raw.value())?))
}

pub fn anchor(txn: &ReadTransaction) -> Result<Option<Anchor>> {
    meta_record(txn, ANCHOR_KEY)
}

/// The head recorded by the last commit (may differ from the last row only if the file was
/// tampered with).
pub fn recorded_head(txn: &ReadTransaction) -> Result<Option<Anchor>> {
    meta_record(txn, HEAD_KEY)
}

/// The newest stored event's seq, hash and time; else the anchor; else genesis.
pub fn chain_tip(txn: &ReadTransaction) -> Result<ChainTip> {
    let table = txn.open_table(AUDIT_EVENTS)?;
    if let Some((_, v)) = table.last()? {
        let e: AuditEvent = decode(v.value())?;
        return Ok(ChainTip {
            seq: e.seq,
            hash: e.hash,
            time: Some(e.time),
        });
    }
    Ok(match anchor(txn)? {
        Some(a) => ChainTip {
            seq: a.seq,
            hash: a.hash,
            time: None,
        },
        None => ChainTip {
            seq: 0,
            hash: GENESIS_HASH.to_owned(),
            time: None,
        },
    })
}

/// Newest first, at most `limit`.
pub fn recent(txn: &ReadTransaction, limit: usize) -> Result<Vec<AuditEvent>> {
    let table = txn.open_table(AUDIT_EVENTS)?;
    let mut out = Vec::new();
    for row in table.iter()?.rev().take(limit) {
        let (_, v) = row?;
        out.push(decode(v.value())?);
    }
    Ok(out)
}

pub fn get(txn: &ReadTransaction, seq: u64) -> Result<Option<AuditEvent>> {
    let table = txn.open_table(AUDIT_EVENTS)?;
    table.get(seq)?.map(|v| decode(v.value())).transpose()
}

pub fn count(txn: &ReadTransaction) -> Result<u64> {
    Ok(txn.open_table(AUDIT_EVENTS)?.len()?)
}

#[derive(serde::Deserialize)]
struct TimeOnly {
    #[serde(with = "time::serde::rfc3339")]
    time: OffsetDateTime,
}

/// The smallest key in `[first, last]` whose event (or the next stored one) is at or after
/// `t`; `last + 1` when none is. The writer never lets time go backwards along the sequence,
/// so time is monotonic in seq and a binary search over seq replaces a time index.
fn lower_bound_time(
    table: &impl ReadableTable<u64, &'static [u8]>,
    first: u64,
    last: u64,
    t: OffsetDateTime,
) -> Result<u64> {
    let (mut lo, mut hi) = (first, last.saturating_add(1));
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let at_or_after = match table.range(mid..)?.next() {
            Some(row) => {
                let (_, v) = row?;
                decode::<TimeOnly>(v.value())?.time >= t
            }
            None => true,
        };
        if at_or_after {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Ok(lo)
}

fn first_last(table: &impl ReadableTable<u64, &'static [u8]>) -> Result<Option<(u64, u64)>> {
    let first = table.first()?.map(|(k, _)| k.value());
    let last = table.last()?.map(|(k, _)| k.value());
    Ok(first.zip(last))
}

/// One AND-ed condition answered by the index: the event has at least one of these keys.
struct Term(Vec<String>);

fn index_terms(q: &AuditQuery) -> Vec<Term> {
    let mut terms = Vec::new();
    let mut one = |field: &str, value: &Option<String>| {
        if let Some(v) = value {
            terms.push(Term(vec![format!("{field}={v}")]));
        }
    };
    one("cluster", &q.cluster);
    one("project", &q.project);
    one("namespace", &q.namespace);
    if let Some(a) = q.action.as_deref().filter(|a| action_is_indexed(a)) {
        terms.push(Term(vec![format!("action={a}")]));
    }
    if let Some(u) = &q.user {
        terms.push(Term(vec![format!("user={u}"), format!("user_id={u}")]));
    }
    // Dense values have no index entries: the scan answers them (see `EventKind::is_indexed`).
    if let Some(k) = q.kind.filter(|k| k.is_indexed()) {
        terms.push(Term(vec![format!("kind={}", k.as_str())]));
    }
    if let Some(o) = q.outcome.filter(|o| o.is_indexed()) {
        terms.push(Term(vec![format!("outcome={}", o.as_str())]));
    }
    if let Some(ps) = &q.projects_visible {
        terms.push(Term(ps.iter().map(|p| format!("project={p}")).collect()));
    }
    terms
}

/// The nearest seq at or beyond `from` (in the query's direction, within `[lo, hi]`) that
/// has one of the term's keys.
fn seek(
    index: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
    term: &Term,
    from: u64,
    lo: u64,
    hi: u64,
    ascending: bool,
) -> Result<Option<u64>> {
    let mut best: Option<u64> = None;
    for key in &term.0 {
        if let Some(seq) = seek_key(index, key, from, lo, hi, ascending)? {
            best = Some(match best {
                Some(b) if ascending => b.min(seq),
                Some(b) => b.max(seq),
                None => seq,
            });
        }
    }
    Ok(best)
}

/// [`seek`] for one key: walks its blocks from the one holding `from`.
fn seek_key(
    index: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
    key: &str,
    from: u64,
    lo: u64,
    hi: u64,
    ascending: bool,
) -> Result<Option<u64>> {
    if ascending {
        for row in index.range((key, from / POSTING_SPAN)..=(key, hi / POSTING_SPAN))? {
            let (k, v) = row?;
            let base = k.value().1 * POSTING_SPAN;
            let raw = v.value();
            let n = raw.len() / 2;
            // First offset at or after `from` within this block.
            let min = from.saturating_sub(base);
            let (mut a, mut b) = (0, n);
            while a < b {
                let m = (a + b) / 2;
                if u64::from(offset_at(raw, m)) < min {
                    a = m + 1;
                } else {
                    b = m;
                }
            }
            if a < n {
                let seq = base + u64::from(offset_at(raw, a));
                return Ok((seq <= hi).then_some(seq));
            }
        }
    } else {
        for row in index
            .range((key, lo / POSTING_SPAN)..=(key, from / POSTING_SPAN))?
            .rev()
        {
            let (k, v) = row?;
            let base = k.value().1 * POSTING_SPAN;
            let raw = v.value();
            let n = raw.len() / 2;
            // Offsets at or before `from` within this block: the last of them.
            let max = from - base;
            let (mut a, mut b) = (0, n);
            while a < b {
                let m = (a + b) / 2;
                if u64::from(offset_at(raw, m)) <= max {
                    a = m + 1;
                } else {
                    b = m;
                }
            }
            if a > 0 {
                let seq = base + u64::from(offset_at(raw, a - 1));
                return Ok((seq >= lo).then_some(seq));
            }
        }
    }
    Ok(None)
}

/// One page of events matching `q`.
///
/// Every index-backed filter becomes a term; the terms are intersected by leapfrogging
/// (each term seeks to the candidate the others proposed), so the sparsest term drives the
/// walk and a selective filter never scans the denser ones. Time bounds become seq bounds.
/// Each candidate is then decoded and checked against the whole query.
pub fn query(txn: &ReadTransaction, q: &AuditQuery) -> Result<AuditPage> {
    let events = txn.open_table(AUDIT_EVENTS)?;
    let index = txn.open_table(AUDIT_POSTINGS)?;
    let limit = q.page_size();
    let empty = Ok(AuditPage::default());
    if q.projects_visible.as_ref().is_some_and(Vec::is_empty) {
        return empty;
    }
    let Some((first, last)) = first_last(&events)? else {
        return empty;
    };
    let (mut lo, mut hi) = (first, last);
    if let Some(from) = q.from {
        lo = lower_bound_time(&events, first, last, from)?;
    }
    if let Some(to) = q.to {
        match lower_bound_time(&events, first, last, to)?.checked_sub(1) {
            Some(h) => hi = h,
            None => return empty,
        }
    }
    let ascending = q.order == Order::OldestFirst;
    match (q.cursor, ascending) {
        (Some(c), true) => lo = lo.max(c.saturating_add(1)),
        (Some(0), false) => return empty,
        (Some(c), false) => hi = hi.min(c - 1),
        (None, _) => {}
    }
    if lo > hi {
        return empty;
    }
    let terms = index_terms(q);
    // Events after the watermark are not in the posting lists yet: every one of them is a
    // candidate (a tail of a few batches at most).
    let indexed = indexed_through(&txn.open_table(META)?)?;

    // The nearest stored seq in `range`, in the query's direction.
    let scan = |range: std::ops::RangeInclusive<u64>| -> Result<Option<u64>> {
        if range.is_empty() {
            return Ok(None);
        }
        let mut rows = events.range(range)?;
        let row = if ascending {
            rows.next()
        } else {
            rows.next_back()
        };
        Ok(match row {
            Some(r) => Some(r?.0.value()),
            None => None,
        })
    };
    // The nearest seq from `from` in `[lo, hi]` (all indexed) that every term has.
    let leapfrog = |from: u64, lo: u64, hi: u64| -> Result<Option<u64>> {
        let mut candidate = from;
        'leapfrog: loop {
            for term in &terms {
                match seek(&index, term, candidate, lo, hi, ascending)? {
                    None => return Ok(None),
                    Some(s) if s != candidate => {
                        candidate = s;
                        continue 'leapfrog;
                    }
                    Some(_) => {}
                }
            }
            return Ok(Some(candidate));
        }
    };
    let next_candidate = |from: u64| -> Result<Option<u64>> {
        if terms.is_empty() {
            return if ascending {
                scan(from..=hi)
            } else {
                scan(lo..=from)
            };
        }
        let tail_start = indexed.saturating_add(1).max(lo);
        if ascending {
            if from <= indexed
                && let Some(seq) = leapfrog(from, lo, hi.min(indexed))?
            {
                return Ok(Some(seq));
            }
            scan(from.max(tail_start)..=hi)
        } else {
            if from >= tail_start
                && let Some(seq) = scan(tail_start..=from)?
            {
                return Ok(Some(seq));
            }
            match from.min(indexed) {
                f if f >= lo => leapfrog(f, lo, hi.min(indexed)),
                _ => Ok(None),
            }
        }
    };

    let mut page = AuditPage::default();
    let mut at = if ascending { lo } else { hi };
    while let Some(seq) = next_candidate(at)? {
        if let Some(raw) = events.get(seq)? {
            let event: AuditEvent = decode(raw.value())?;
            if q.matches(&event) {
                if page.events.len() == limit {
                    // One more match exists: the page is not the last.
                    page.next_cursor = page.events.last().map(|e| e.seq);
                    break;
                }
                page.events.push(event);
            }
        }
        let next = if ascending {
            seq.checked_add(1).filter(|s| *s <= hi)
        } else {
            seq.checked_sub(1).filter(|s| *s >= lo)
        };
        match next {
            Some(n) => at = n,
            None => break,
        }
    }
    Ok(page)
}

/// Walks the whole chain from the anchor (or genesis) and reports the first broken link.
pub fn verify(txn: &ReadTransaction) -> Result<VerifyReport> {
    let table = txn.open_table(AUDIT_EVENTS)?;
    let anchor = anchor(txn)?;
    let (mut prev_seq, mut prev_hash) = match &anchor {
        Some(a) => (a.seq, a.hash.clone()),
        None => (0, GENESIS_HASH.to_owned()),
    };
    let mut count = 0u64;
    for row in table.iter()? {
        let (k, v) = row?;
        let key = k.value();
        let broken = |reason: String| Ok(VerifyReport::Broken { seq: key, reason });
        let event: AuditEvent = match decode(v.value()) {
            Ok(e) => e,
            Err(e) => return broken(format!("the stored event cannot be decoded: {e}")),
        };
        if Some(key) != prev_seq.checked_add(1) {
            return broken(format!(
                "expected seq {} after {prev_seq}: events are missing from the log",
                prev_seq.saturating_add(1)
            ));
        }
        if event.seq != key {
            return broken(format!(
                "the row holds the event with seq {}: events were moved or reordered",
                event.seq
            ));
        }
        if event.prev_hash != prev_hash {
            return broken(format!(
                "prev_hash {} does not match the previous event's hash {prev_hash}: the chain was rewritten",
                event.prev_hash
            ));
        }
        let actual = chain_hash(&event)?;
        if actual != event.hash {
            return broken(format!(
                "content hashes to {actual}, not the stored {}: the event was modified",
                event.hash
            ));
        }
        prev_seq = key;
        prev_hash = event.hash;
        count += 1;
    }
    if let Some(head) = recorded_head(txn)?
        && (head.seq != prev_seq || head.hash != prev_hash)
    {
        return Ok(VerifyReport::Broken {
            seq: head.seq,
            reason: format!(
                "the log ends at seq {prev_seq} but the last commit recorded head seq {}: events were removed from the end",
                head.seq
            ),
        });
    }
    Ok(VerifyReport::Intact {
        count,
        head_seq: prev_seq,
        head_hash: prev_hash,
        anchor,
    })
}

/// The retention sweep: removes the oldest events older than `cutoff` and/or beyond the
/// newest `max_events`, at most `budget` per call, with their index entries, and moves the
/// anchor to the last one removed. Returns how many were removed (call again while it
/// returns `budget`).
///
/// Each removed event is checked against the chain first: retention must never turn a
/// tampered event into a trusted anchor, so a broken link stops the sweep with an error.
pub fn sweep(
    txn: &WriteTransaction,
    cutoff: Option<OffsetDateTime>,
    max_events: Option<u64>,
    budget: u64,
) -> Result<u64> {
    let mut events = txn.open_table(AUDIT_EVENTS)?;
    let Some((first, last)) = first_last(&events)? else {
        return Ok(0);
    };
    let mut remove_below = first; // keys < remove_below go
    if let Some(max) = max_events {
        let count = events.len()?;
        if count > max {
            remove_below = remove_below.max(last.saturating_sub(max).saturating_add(1));
        }
    }
    if let Some(cutoff) = cutoff {
        remove_below = remove_below.max(lower_bound_time(&events, first, last, cutoff)?);
    }
    let end = remove_below.min(first.saturating_add(budget));
    if end <= first {
        return Ok(0);
    }

    let mut index = txn.open_table(AUDIT_POSTINGS)?;
    let read_anchor = {
        let meta = txn.open_table(META)?;
        let raw = meta.get(ANCHOR_KEY)?;
        raw.map(|r| decode::<Anchor>(r.value())).transpose()?
    };
    let (mut prev_seq, mut prev_hash) = match read_anchor {
        Some(a) => (a.seq, a.hash),
        None => (0, GENESIS_HASH.to_owned()),
    };
    let mut removed = 0u64;
    let mut touched = BTreeSet::new();
    for row in events.extract_from_if(..end, |_, _| true)? {
        let (k, v) = row?;
        let key = k.value();
        let event: AuditEvent = decode(v.value())?;
        let links = Some(key) == prev_seq.checked_add(1)
            && event.seq == key
            && event.prev_hash == prev_hash
            && chain_hash(&event)? == event.hash;
        if !links {
            return Err(corrupt(format!(
                "audit event {key} does not verify; retention stopped (run `ztka admin audit verify`)"
            )));
        }
        for ik in event.index_keys() {
            touched.insert((ik, key / POSTING_SPAN));
        }
        prev_seq = key;
        prev_hash = event.hash;
        removed += 1;
    }
    // Drop the removed events from the blocks that held them.
    let mut kept = Vec::new();
    for (ik, block) in touched {
        let k = (ik.as_str(), block);
        kept.clear();
        if let Some(raw) = index.get(k)? {
            let base = block * POSTING_SPAN;
            kept.extend(
                offsets(raw.value())
                    .filter(|o| base + u64::from(*o) >= end)
                    .flat_map(u16::to_le_bytes),
            );
        }
        if kept.is_empty() {
            index.remove(k)?;
        } else {
            index.insert(k, kept.as_slice())?;
        }
    }
    if removed > 0 {
        let anchor = Anchor {
            seq: prev_seq,
            hash: prev_hash,
        };
        txn.open_table(META)?
            .insert(ANCHOR_KEY, encode(&anchor)?.as_slice())?;
    }
    Ok(removed)
}

/// Raw row access for tests that play the attacker: they rewrite the table the way someone
/// holding the database file could. Test builds only.
#[cfg(test)]
pub(crate) mod tamper {
    use super::*;

    pub fn read(txn: &WriteTransaction, seq: u64) -> AuditEvent {
        let t = txn.open_table(AUDIT_EVENTS).unwrap();
        decode(t.get(seq).unwrap().unwrap().value()).unwrap()
    }

    pub fn write(txn: &WriteTransaction, key: u64, e: &AuditEvent) {
        let mut t = txn.open_table(AUDIT_EVENTS).unwrap();
        t.insert(key, encode(e).unwrap().as_slice()).unwrap();
    }

    pub fn remove(txn: &WriteTransaction, key: u64) {
        let mut t = txn.open_table(AUDIT_EVENTS).unwrap();
        t.remove(key).unwrap();
    }

    fn entries(t: &impl ReadableTable<(&'static str, u64), &'static [u8]>) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        for row in t.iter().unwrap() {
            let (k, v) = row.unwrap();
            let (key, block) = k.value();
            for o in offsets(v.value()) {
                out.push((key.to_owned(), block * POSTING_SPAN + u64::from(o)));
            }
        }
        out
    }

    /// Every `(key, seq)` in the posting lists.
    pub fn index_entries(txn: &ReadTransaction) -> Vec<(String, u64)> {
        entries(&txn.open_table(AUDIT_POSTINGS).unwrap())
    }

    /// Turns the database back into schema version 3: the per-event index rows that
    /// version 4 replaced with posting lists.
    pub fn downgrade_to_row_index(txn: &WriteTransaction) {
        use crate::store::tables::AUDIT_INDEX;
        let entries = entries(&txn.open_table(AUDIT_POSTINGS).unwrap());
        assert!(!entries.is_empty());
        let mut old = txn.open_table(AUDIT_INDEX).unwrap();
        for (key, seq) in &entries {
            old.insert((key.as_str(), *seq), ()).unwrap();
        }
        drop(old);
        assert!(txn.delete_table(AUDIT_POSTINGS).unwrap());
        let mut meta = txn.open_table(META).unwrap();
        meta.remove(INDEXED_KEY).unwrap();
        meta.insert("schema_version", 3u64.to_be_bytes().as_slice())
            .unwrap();
    }

    pub fn schema_version(store: &crate::store::Store) -> u64 {
        crate::store::migrate::current_version(store).unwrap()
    }
}
