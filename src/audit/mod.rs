//! The audit log: append with group commit, query, export, verify and retention.
//!
//! Appends are sequenced and hashed under a short lock (so `Fast` can hand back the receipt
//! at once), then queued to one writer thread. The writer gathers whatever is queued (waiting
//! at most `group_commit_wait` for more) and commits it as one redb transaction; `Durable`
//! callers are woken only after that commit. A batch of `Fast` events alone gathers for
//! `fast_commit_wait` without waking the writer per event, and while they keep coming the
//! writer sleeps out each window instead of blocking on the queue, so no append has to wake
//! it; a durable append, a flush or a sweep cuts that wait short. Queue space is a semaphore
//! released after the commit, so a stalled disk pushes back on callers instead of growing
//! memory. Dropping the last handle (or [`AuditLog::close`]) lets the writer commit what is
//! queued and stop.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use time::OffsetDateTime;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

pub use crate::domain::audit::chain_hash;
use crate::domain::audit::{
    AuditEvent, AuditPage, AuditQuery, Durability, MAX_PAGE, NewEvent, VerifyReport, seal_body,
};
use crate::store::audit::Sealed;
use crate::store::{Result as StoreResult, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("audit log is closed")]
    Closed,
    #[error("audit events could not be written: {0}")]
    Write(String),
    #[error("cannot encode audit event: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("cannot write the export: {0}")]
    Io(#[from] std::io::Error),
}

/// Room for one event in the audit queue, held from [`AuditLog::room`] until the event is
/// queued with [`AuditLog::append_in`] (or given back when dropped).
#[derive(Debug)]
pub struct Room(OwnedSemaphorePermit);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub seq: u64,
    pub hash: String,
}

/// Tuning and retention for the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditOptions {
    /// Remove events older than this. `None` keeps them regardless of age.
    pub retention_max_age: Option<Duration>,
    /// Keep at most this many events. `None` keeps any number.
    pub retention_max_events: Option<u64>,
    /// How often the writer runs the retention sweep (also once at start).
    pub sweep_interval: Duration,
    /// How long the writer waits for more events before committing a batch.
    pub group_commit_wait: Duration,
    /// How long a batch that only `Fast` events wait for gathers before it is committed.
    /// Nobody waits for it, so it may be long: one commit then carries many events, and
    /// appends do not wake the writer. A durable append, flush, sweep or shutdown ends the
    /// wait at once, so it never delays them, and reads of the log (recorded durably)
    /// always see the events appended before them.
    pub fast_commit_wait: Duration,
    /// Batches that only `Fast` events wait for are committed without syncing the disk
    /// until this long after the first such commit; then one is synced (or, when appends
    /// pause, an empty commit is). A crash (power loss, SIGKILL) loses at most this much of
    /// the fast events; durable appends and everything before them are always synced.
    pub fast_sync_interval: Duration,
    /// Most events in one transaction.
    pub max_batch: usize,
    /// Events queued but not yet committed before `append` waits for room.
    pub queue_capacity: usize,
    /// Committed events left out of the posting lists before the writer indexes them, in
    /// the transaction of the batch that reaches it. Merging many batches' entries into
    /// each list is much cheaper than one read-modify-write per key and batch; queries scan
    /// this short tail instead.
    pub index_every: usize,
    /// The writer indexes the tail once no event has arrived for this long.
    pub index_idle: Duration,
}

pub const DEFAULT_RETENTION_DAYS: u64 = 365;

impl Default for AuditOptions {
    fn default() -> Self {
        Self {
            retention_max_age: Some(Duration::from_secs(DEFAULT_RETENTION_DAYS * 86_400)),
            retention_max_events: None,
            sweep_interval: Duration::from_secs(3600),
            group_commit_wait: Duration::from_millis(2),
            fast_commit_wait: Duration::from_millis(20),
            fast_sync_interval: Duration::from_millis(200),
            max_batch: 8192,
            queue_capacity: 65_536,
            index_every: 2048,
            index_idle: Duration::from_millis(50),
        }
    }
}

/// Events removed per sweep transaction, so one sweep never holds the writer for long.
const SWEEP_BUDGET: u64 = 20_000;

type Reply<T> = oneshot::Sender<Result<T, AuditError>>;

// Append is nearly every message: boxing it would cost an allocation per event to shrink
// the rare Flush and Sweep.
#[allow(clippy::large_enum_variant)]
enum Msg {
    Append {
        event: Sealed,
        done: Option<Reply<()>>,
        _permit: OwnedSemaphorePermit,
    },
    Flush(Reply<()>),
    Sweep(Reply<u64>),
}

struct Chain {
    next_seq: u64,
    prev_hash: String,
    last_time: OffsetDateTime,
    tx: Option<mpsc::Sender<Msg>>,
}

struct Inner {
    store: Store,
    chain: Mutex<Chain>,
    permits: Arc<Semaphore>,
    closing: Arc<AtomicBool>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Ends the writer's wait on a fast-only batch (see [`Wake`]).
    wake: Wake,
    /// How often the writer blocked on the queue, where an append has to wake it.
    blocking_receives: Arc<std::sync::atomic::AtomicU64>,
}

/// How a durable append, flush, sweep or shutdown ends the writer's wait on a batch of fast
/// events ([`Writer::wait_for_fast`]): a flag, which tells the writer a real call from a
/// spurious wake-up, then an unpark.
struct Wake {
    urgent: Arc<AtomicBool>,
    writer: std::thread::Thread,
}

impl Wake {
    fn now(&self) {
        self.urgent.store(true, Ordering::Release);
        self.writer.unpark();
    }
}

impl Inner {
    fn chain(&self) -> std::sync::MutexGuard<'_, Chain> {
        // Nothing in the critical section panics; a poisoned lock still holds a valid chain.
        self.chain.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn send(&self, msg: Msg) -> Result<(), AuditError> {
        let chain = self.chain();
        let tx = chain.tx.as_ref().ok_or(AuditError::Closed)?;
        tx.send(msg).map_err(|_| AuditError::Closed)?;
        self.wake.now();
        Ok(())
    }

    /// Stops accepting events and waits until the writer has committed the queue.
    fn shut_down(&self) {
        self.closing.store(true, Ordering::SeqCst);
        drop(self.chain().tx.take());
        self.wake.now();
        let handle = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle
            && h.join().is_err()
        {
            tracing::error!("the audit writer thread panicked");
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// The audit log handle; cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Opens the log with the default options. Blocking (reads the chain head).
    pub fn open(store: Store) -> Result<Self, AuditError> {
        Self::open_with(store, AuditOptions::default())
    }

    /// Opens the log and starts its writer thread. Blocking (reads the chain head).
    pub fn open_with(store: Store, options: AuditOptions) -> Result<Self, AuditError> {
        let tip = store.read_blocking(crate::store::audit::chain_tip)?;
        if let Some(recorded) = store.read_blocking(crate::store::audit::recorded_head)?
            && (recorded.seq != tip.seq || recorded.hash != tip.hash)
        {
            tracing::error!(
                recorded_seq = recorded.seq,
                stored_seq = tip.seq,
                "the audit log's last event differs from the recorded head; run `ztka admin audit verify`"
            );
        }
        // Events committed after the last indexing (a crash, a kill) get their entries now.
        let tail = store.write_log_blocking(crate::store::audit::index_tail)?;
        if tail > 0 {
            tracing::info!(events = tail, "indexed the audit log's unindexed tail");
        }
        let (tx, rx) = mpsc::channel();
        let closing = Arc::new(AtomicBool::new(false));
        let urgent = Arc::new(AtomicBool::new(false));
        let blocking_receives = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let writer = Writer {
            store: store.clone(),
            rx,
            options: options.clone(),
            closing: closing.clone(),
            urgent: urgent.clone(),
            unindexed: Vec::new(),
            callers: RecentMax::default(),
            unsynced_since: None,
            blocking_receives: blocking_receives.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("ztka-audit-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| AuditError::Write(format!("cannot start the audit writer: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                chain: Mutex::new(Chain {
                    next_seq: tip.seq + 1,
                    prev_hash: tip.hash,
                    last_time: tip.time.unwrap_or(OffsetDateTime::UNIX_EPOCH),
                    tx: Some(tx),
                }),
                permits: Arc::new(Semaphore::new(options.queue_capacity.max(1))),
                closing,
                wake: Wake {
                    urgent,
                    writer: handle.thread().clone(),
                },
                blocking_receives,
                writer: Mutex::new(Some(handle)),
            }),
        })
    }

    /// How many times the writer has blocked on its queue (where an append must wake it).
    pub fn blocking_receives(&self) -> u64 {
        self.inner.blocking_receives.load(Ordering::Relaxed)
    }

    /// Appends an event. `Durable` returns after the commit that contains it; `Fast` once it
    /// is queued (it is committed within the group-commit window, and on shutdown).
    pub async fn append(
        &self,
        event: NewEvent,
        durability: Durability,
    ) -> Result<Receipt, AuditError> {
        let Room(permit) = self.room().await?;
        match durability {
            Durability::Durable => {
                let (tx, rx) = oneshot::channel();
                let receipt = self.queue(event, permit, Some(tx))?;
                self.inner.wake.now();
                rx.await.map_err(|_| AuditError::Closed)??;
                Ok(receipt)
            }
            Durability::Fast => self.queue(event, permit, None),
        }
    }

    /// Room for one event, waiting while the queue is full (a stalled disk slows the caller
    /// down instead of growing memory).
    pub async fn room(&self) -> Result<Room, AuditError> {
        let permit = self.inner.permits.clone().acquire_owned().await;
        permit.map(Room).map_err(|_| AuditError::Closed)
    }

    /// Room for one event if the queue has it now; `None` when it is full.
    pub fn try_room(&self) -> Option<Room> {
        self.inner
            .permits
            .clone()
            .try_acquire_owned()
            .ok()
            .map(Room)
    }

    /// Appends a `Fast` event into room taken before, without waiting.
    pub fn append_in(&self, room: Room, event: NewEvent) -> Result<Receipt, AuditError> {
        self.queue(event, room.0, None)
    }

    /// Sequences and hashes the event and queues it to the writer, within the room `permit`
    /// holds.
    fn queue(
        &self,
        event: NewEvent,
        permit: OwnedSemaphorePermit,
        done: Option<Reply<()>>,
    ) -> Result<Receipt, AuditError> {
        // Everything that does not depend on the event's place in the chain happens before
        // the lock: under it, only the small envelope and the hash are computed.
        let index_keys = event.index_keys();
        let body = event.encode_body()?;
        drop(event);
        let mut chain = self.inner.chain();
        let tx = chain.tx.clone().ok_or(AuditError::Closed)?;
        // Time never goes backwards along the sequence: queries find time ranges by binary
        // search over seq.
        let time = OffsetDateTime::now_utc().max(chain.last_time);
        let seq = chain.next_seq;
        let (bytes, hash) = seal_body(seq, time, &body, &chain.prev_hash)?;
        let receipt = Receipt {
            seq,
            hash: hash.clone(),
        };
        tx.send(Msg::Append {
            event: Sealed {
                seq,
                index_keys,
                hash: hash.clone(),
                bytes,
            },
            done,
            _permit: permit,
        })
        .map_err(|_| AuditError::Closed)?;
        chain.next_seq += 1;
        chain.prev_hash = hash;
        chain.last_time = time;
        Ok(receipt)
    }

    /// Returns once everything appended before the call is committed and indexed.
    pub async fn flush(&self) -> Result<(), AuditError> {
        let (tx, rx) = oneshot::channel();
        self.inner.send(Msg::Flush(tx))?;
        rx.await.map_err(|_| AuditError::Closed)?
    }

    /// Runs the retention sweep now (it also runs periodically); returns events removed.
    pub async fn sweep(&self) -> Result<u64, AuditError> {
        let (tx, rx) = oneshot::channel();
        self.inner.send(Msg::Sweep(tx))?;
        rx.await.map_err(|_| AuditError::Closed)?
    }

    /// Commits what is queued and stops the writer. Later appends fail with `Closed`.
    pub async fn close(&self) -> Result<(), AuditError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.shut_down())
            .await
            .map_err(|e| AuditError::Write(e.to_string()))
    }

    /// The newest committed event's seq and hash (seq 0 and the genesis hash when empty).
    pub async fn head(&self) -> Result<Receipt, AuditError> {
        let tip = self
            .inner
            .store
            .read(crate::store::audit::chain_tip)
            .await?;
        Ok(Receipt {
            seq: tip.seq,
            hash: tip.hash,
        })
    }

    pub async fn query(&self, query: AuditQuery) -> Result<AuditPage, AuditError> {
        Ok(self
            .inner
            .store
            .read(move |txn| crate::store::audit::query(txn, &query))
            .await?)
    }

    pub async fn verify(&self) -> Result<VerifyReport, AuditError> {
        Ok(self.inner.store.read(crate::store::audit::verify).await?)
    }

    /// Newest first, at most `limit`.
    pub async fn recent(&self, limit: usize) -> Result<Vec<AuditEvent>, AuditError> {
        Ok(self
            .inner
            .store
            .read(move |txn| crate::store::audit::recent(txn, limit))
            .await?)
    }

    /// Streams the events matching `query` as JSON Lines, a page per chunk, for an HTTP
    /// response body. The receiver applies backpressure; dropping it stops the export.
    pub fn export_stream(
        &self,
        query: AuditQuery,
    ) -> tokio::sync::mpsc::Receiver<Result<Bytes, AuditError>> {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let store = self.inner.store.clone();
        tokio::task::spawn_blocking(move || {
            let result = for_each_page(&store, &query, |page| {
                let mut chunk = Vec::with_capacity(page.len() * 512);
                write_jsonl(&mut chunk, page)?;
                // A closed receiver means the client went away: stop quietly.
                Ok(tx.blocking_send(Ok(Bytes::from(chunk))).is_ok())
            });
            if let Err(e) = result {
                let _ = tx.blocking_send(Err(e));
            }
        });
        rx
    }
}

impl AuditLog {
    /// [`AuditLog::export_stream`] as a `Stream`, ready for `axum::body::Body::from_stream`.
    pub fn export_byte_stream(
        &self,
        query: AuditQuery,
    ) -> impl futures_util::Stream<Item = Result<Bytes, AuditError>> + Send + 'static {
        futures_util::stream::unfold(self.export_stream(query), |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        })
    }
}

/// Verifies the chain of a store (offline use: `ztka admin audit verify`).
pub fn verify_store(store: &Store) -> Result<VerifyReport, AuditError> {
    Ok(store.read_blocking(crate::store::audit::verify)?)
}

/// Writes the events matching `query` as JSON Lines to `out`, a page at a time (the `limit`
/// and `cursor` of `query` are the starting point, not a cap). Returns how many were written.
pub fn export_jsonl(
    store: &Store,
    query: &AuditQuery,
    out: &mut impl Write,
) -> Result<u64, AuditError> {
    let mut written = 0u64;
    for_each_page(store, query, |page| {
        write_jsonl(&mut *out, page)?;
        written += page.len() as u64;
        Ok(true)
    })?;
    out.flush()?;
    Ok(written)
}

fn write_jsonl(out: &mut impl Write, events: &[AuditEvent]) -> Result<(), AuditError> {
    for e in events {
        serde_json::to_writer(&mut *out, e)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// Pages through the matches of `query`, one read transaction per page; `f` returns false
/// to stop.
fn for_each_page(
    store: &Store,
    query: &AuditQuery,
    mut f: impl FnMut(&[AuditEvent]) -> Result<bool, AuditError>,
) -> Result<(), AuditError> {
    let mut q = query.clone();
    q.limit = MAX_PAGE;
    loop {
        let page = store.read_blocking(|txn| crate::store::audit::query(txn, &q))?;
        if !page.events.is_empty() && !f(&page.events)? {
            return Ok(());
        }
        match page.next_cursor {
            Some(c) => q.cursor = Some(c),
            None => return Ok(()),
        }
    }
}

struct Writer {
    store: Store,
    rx: mpsc::Receiver<Msg>,
    options: AuditOptions,
    closing: Arc<AtomicBool>,
    /// Set (with an unpark) when a fast-only batch should stop waiting: see [`Wake`].
    urgent: Arc<AtomicBool>,
    /// Committed events not yet in the posting lists (seq and index keys, ascending).
    unindexed: Vec<(u64, Vec<String>)>,
    /// How many durable callers recent batches carried: see [`Writer::gather`].
    callers: RecentMax,
    /// When the oldest commit not yet synced to disk was made.
    unsynced_since: Option<Instant>,
    /// See [`Inner::blocking_receives`].
    blocking_receives: Arc<std::sync::atomic::AtomicU64>,
}

/// The largest count seen in the last [`RecentMax::SPAN`] batches (approximately: a
/// larger count takes over at once, a smaller one after the span).
#[derive(Default)]
struct RecentMax {
    max: usize,
    age: u32,
}

impl RecentMax {
    const SPAN: u32 = 16;

    fn record(&mut self, n: usize) {
        if n >= self.max || self.age >= Self::SPAN {
            self.max = n;
            self.age = 0;
        } else {
            self.age += 1;
        }
    }
}

#[derive(Default)]
struct Batch {
    events: Vec<Sealed>,
    waiters: Vec<Reply<()>>,
    permits: Vec<OwnedSemaphorePermit>,
    flushes: Vec<Reply<()>>,
    sweeps: Vec<Reply<u64>>,
}

impl Batch {
    /// Adds the message; returns the event it carried, if any.
    fn push(&mut self, msg: Msg) -> Option<&Sealed> {
        match msg {
            Msg::Append {
                event,
                done,
                _permit,
            } => {
                self.events.push(event);
                self.waiters.extend(done);
                self.permits.push(_permit);
                return self.events.last();
            }
            Msg::Flush(r) => self.flushes.push(r),
            Msg::Sweep(r) => self.sweeps.push(r),
        }
        None
    }
}

impl Batch {
    /// A durable append, a flush or a sweep waits for the batch's commit.
    fn someone_waits(&self) -> bool {
        !self.waiters.is_empty() || !self.flushes.is_empty() || !self.sweeps.is_empty()
    }

    /// Only fast events: nobody waited for this batch.
    fn was_fast(&self) -> bool {
        !self.events.is_empty() && !self.someone_waits()
    }
}

impl Writer {
    fn retention_enabled(&self) -> bool {
        self.options.retention_max_age.is_some() || self.options.retention_max_events.is_some()
    }

    fn run(mut self) {
        let mut next_sweep = Instant::now();
        // The last batch held only fast events: more are likely on their way.
        let mut flowing = false;
        loop {
            if self.retention_enabled() && Instant::now() >= next_sweep {
                // One bounded step at a time, so a large backlog (say, after lowering the
                // retention) is removed between batches instead of stalling appends.
                next_sweep = match self.sweep_step() {
                    Ok(removed) if removed == SWEEP_BUDGET => Instant::now(),
                    Ok(_) => Instant::now() + self.options.sweep_interval,
                    Err(e) => {
                        tracing::error!(error = %e, "audit retention sweep failed");
                        Instant::now() + self.options.sweep_interval
                    }
                };
            }
            // Wake for the next sweep, to index the tail once appends pause, or to sync
            // the fast events' commits.
            let mut wake = self.retention_enabled().then_some(next_sweep);
            let mut wake_by = |at: Instant| wake = Some(wake.map_or(at, |w| w.min(at)));
            if !self.unindexed.is_empty() {
                wake_by(Instant::now() + self.options.index_idle);
            }
            if let Some(since) = self.unsynced_since {
                wake_by(since + self.options.fast_sync_interval);
            }
            // While fast events keep coming, the writer sleeps out the next gathering window
            // instead of blocking on the queue: a blocked receiver is one that every append
            // must wake, and the first append after each batch would. A window that gathers
            // nothing returns to the blocking receive.
            let waited = flowing && self.callers.max == 0;
            if waited {
                self.wait_for_fast(Instant::now() + self.options.fast_commit_wait);
            }
            let received = if waited {
                match self.rx.try_recv() {
                    Ok(m) => Ok(m),
                    Err(TryRecvError::Empty) => {
                        flowing = false;
                        continue;
                    }
                    Err(TryRecvError::Disconnected) => Err(RecvTimeoutError::Disconnected),
                }
            } else {
                self.blocking_receives.fetch_add(1, Ordering::Relaxed);
                match wake {
                    Some(at) => self
                        .rx
                        .recv_timeout(at.saturating_duration_since(Instant::now())),
                    None => self.rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                }
            };
            let first = match received {
                Ok(m) => m,
                Err(RecvTimeoutError::Timeout) => {
                    // A failure is logged; the tail stays queued for the next attempt.
                    let _ = self.settle();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            // No durable caller is expected, so nobody waits for this batch.
            let fast_only =
                matches!(first, Msg::Append { done: None, .. }) && self.callers.max == 0;
            if fast_only && !waited {
                // Let it gather before taking the database's only write slot. Appenders
                // meanwhile find no receiver to wake, which spares every fast append a
                // wake-up of this thread.
                self.wait_for_fast(Instant::now() + self.options.fast_commit_wait);
            }
            // Whoever asked for a batch before this point is queued, and this batch takes
            // what is queued; a later call is seen by the next wait.
            let urgent = self.urgent.swap(false, Ordering::AcqRel);
            // A fast-only batch has gathered for its window already: it takes what is
            // queued and does not wait on the queue for more (where appends would wake it).
            let deadline = if fast_only && !urgent {
                Instant::now()
            } else {
                Instant::now() + self.options.group_commit_wait
            };
            let mut batch = Batch::default();
            let mut disconnected = false;
            // Otherwise the transaction is open while the batch gathers: each event is
            // stored as it arrives, overlapping the appenders that are still sealing theirs.
            let written = self.store.write_log_with_durability_blocking(|txn| {
                let mut appender = crate::store::audit::Appender::open(txn)?;
                disconnected = self.gather(first, deadline, &mut batch, &mut appender)?;
                appender.finish(txn)?;
                if self.index_now(&batch) {
                    self.write_index(txn, &batch.events)?;
                }
                let durability = self.durability(&batch);
                Ok((durability, durability))
            });
            flowing = batch.was_fast();
            self.commit(batch, written);
            if disconnected {
                break;
            }
        }
        // Syncs the last fast events; the indexing is not needed for correctness (opening
        // indexes the tail), but spares the next start.
        let _ = self.settle();
    }

    /// Whether the batch's commit syncs the disk: when someone waits for it or stops the
    /// log, and once the oldest unsynced commit is `fast_sync_interval` old.
    fn durability(&self, batch: &Batch) -> redb::Durability {
        let due = self
            .unsynced_since
            .is_some_and(|t| t.elapsed() >= self.options.fast_sync_interval);
        if batch.someone_waits() || due || self.closing.load(Ordering::Relaxed) {
            redb::Durability::Immediate
        } else {
            redb::Durability::None
        }
    }

    /// Parks until `until`, or until a durable append, flush, sweep or shutdown asks for the
    /// batch ([`Wake::now`]).
    fn wait_for_fast(&self, until: Instant) {
        loop {
            if self.urgent.swap(false, Ordering::AcqRel) || self.closing.load(Ordering::Relaxed) {
                return;
            }
            let now = Instant::now();
            if now >= until {
                return;
            }
            std::thread::park_timeout(until - now);
        }
    }

    /// Takes `first` and the queued messages into the batch until it is full or `deadline`
    /// (the end of the group-commit window) passes, storing each event through `appender`. Returns true when
    /// every sender is gone (and the queue is empty). On a storage error the message is
    /// already in the batch, so [`Writer::commit`] can retry it.
    ///
    /// Durable callers usually come back: a caller woken by the last commit appends its
    /// next event while this batch gathers. Once as many durable callers are waiting as
    /// recent batches carried, the window closes early instead of idling to its end.
    fn gather(
        &self,
        first: Msg,
        deadline: Instant,
        batch: &mut Batch,
        appender: &mut crate::store::audit::Appender<'_>,
    ) -> StoreResult<bool> {
        let expected = self.callers.max;
        let mut take = |batch: &mut Batch, msg: Msg| match batch.push(msg) {
            Some(event) => appender.push(event),
            None => Ok(()),
        };
        take(batch, first)?;
        while batch.events.len() < self.options.max_batch
            && (expected == 0 || batch.waiters.len() < expected)
        {
            match self.rx.try_recv() {
                Ok(m) => take(batch, m)?,
                Err(TryRecvError::Disconnected) => return Ok(true),
                Err(TryRecvError::Empty) => {
                    let now = Instant::now();
                    if now >= deadline || self.closing.load(Ordering::Relaxed) {
                        return Ok(false);
                    }
                    self.blocking_receives.fetch_add(1, Ordering::Relaxed);
                    match self.rx.recv_timeout(deadline - now) {
                        Ok(m) => take(batch, m)?,
                        Err(RecvTimeoutError::Timeout) => return Ok(false),
                        Err(RecvTimeoutError::Disconnected) => return Ok(true),
                    }
                }
            }
        }
        Ok(false)
    }

    /// Whether the batch's transaction also writes the unindexed tail's posting lists: when
    /// the tail reaches `index_every` events, or when someone flushes or sweeps.
    fn index_now(&self, batch: &Batch) -> bool {
        self.unindexed.len() + batch.events.len() >= self.options.index_every
            || !batch.flushes.is_empty()
            || !batch.sweeps.is_empty()
    }

    /// Settles the batch after its first write attempt (`written`), retrying until the
    /// events are committed: they already have their place in the chain, so dropping them
    /// would break it. Durable callers hear about each failed attempt; the held queue
    /// permits make further appends wait rather than go unrecorded.
    fn commit(&mut self, mut batch: Batch, written: StoreResult<redb::Durability>) {
        // Before a failed attempt drains the waiters.
        self.callers.record(batch.waiters.len());
        let index_now = self.index_now(&batch);
        let mut backoff = Duration::from_millis(50);
        let mut attempts = 0u32;
        let mut result = written;
        loop {
            match result {
                Ok(redb::Durability::Immediate) => {
                    self.unsynced_since = None;
                    break;
                }
                Ok(_) => {
                    self.unsynced_since.get_or_insert_with(Instant::now);
                    break;
                }
                Err(e) => {
                    attempts += 1;
                    tracing::error!(error = %e, events = batch.events.len(), attempts, "cannot commit audit events; retrying");
                    for w in batch.waiters.drain(..) {
                        let _ = w.send(Err(AuditError::Write(e.to_string())));
                    }
                    if self.closing.load(Ordering::Relaxed) && attempts >= 5 {
                        tracing::error!(
                            events = batch.events.len(),
                            "giving up on uncommitted audit events at shutdown"
                        );
                        for f in batch.flushes.drain(..) {
                            let _ = f.send(Err(AuditError::Write(e.to_string())));
                        }
                        return;
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
            result = self.store.write_log_blocking(|txn| {
                crate::store::audit::append_batch(txn, &batch.events)?;
                if index_now {
                    self.write_index(txn, &batch.events)?;
                }
                Ok(redb::Durability::Immediate)
            });
        }
        if index_now {
            self.unindexed.clear();
        } else {
            self.unindexed.extend(
                batch
                    .events
                    .iter_mut()
                    .map(|e| (e.seq, std::mem::take(&mut e.index_keys))),
            );
        }
        for w in batch.waiters {
            let _ = w.send(Ok(()));
        }
        drop(batch.permits);
        for f in batch.flushes {
            let _ = f.send(Ok(()));
        }
        if !batch.sweeps.is_empty() {
            let result = self.sweep();
            for s in batch.sweeps {
                let _ = s.send(match &result {
                    Ok(n) => Ok(*n),
                    Err(e) => Err(AuditError::Write(e.to_string())),
                });
            }
        }
    }

    /// Writes the posting lists of the unindexed tail followed by `batch` (already in `txn`).
    fn write_index(&self, txn: &redb::WriteTransaction, batch: &[Sealed]) -> StoreResult<()> {
        let through = batch
            .last()
            .map(|e| e.seq)
            .or(self.unindexed.last().map(|(seq, _)| *seq));
        let Some(through) = through else {
            return Ok(());
        };
        let tail = self.unindexed.iter().map(|(seq, k)| (*seq, k.as_slice()));
        let new = batch.iter().map(|e| (e.seq, e.index_keys.as_slice()));
        crate::store::audit::index_batch(txn, tail.chain(new), through)
    }

    /// Indexes the tail and syncs every commit, in a durable transaction of its own (the
    /// writer is idle, sweeping or stopping). On failure the tail stays queued; opening the
    /// log indexes whatever is left.
    fn settle(&mut self) -> StoreResult<()> {
        if self.unindexed.is_empty() && self.unsynced_since.is_none() {
            return Ok(());
        }
        let result = self
            .store
            .write_log_blocking(|txn| self.write_index(txn, &[]));
        match &result {
            Ok(()) => {
                self.unindexed.clear();
                self.unsynced_since = None;
            }
            Err(e) => tracing::error!(error = %e, "cannot index audit events; retrying later"),
        }
        result
    }

    /// Removes at most [`SWEEP_BUDGET`] events beyond the retention limits.
    fn sweep_step(&mut self) -> Result<u64, StoreError> {
        // Index entries are removed along with their events: the tail must have them first.
        self.settle()?;
        // An age too large to subtract from now keeps everything.
        let cutoff = self.options.retention_max_age.and_then(|age| {
            let age = time::Duration::try_from(age).ok()?;
            OffsetDateTime::now_utc().checked_sub(age)
        });
        let max = self.options.retention_max_events;
        if cutoff.is_none() && max.is_none() {
            return Ok(0);
        }
        let removed = self
            .store
            .write_log_blocking(|txn| crate::store::audit::sweep(txn, cutoff, max, SWEEP_BUDGET))?;
        if removed > 0 {
            tracing::info!(removed, "audit retention removed old events");
        }
        Ok(removed)
    }

    /// Removes everything beyond the retention limits.
    fn sweep(&mut self) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            let removed = self.sweep_step()?;
            total += removed;
            if removed < SWEEP_BUDGET {
                return Ok(total);
            }
        }
    }
}

#[cfg(test)]
mod tests;
