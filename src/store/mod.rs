//! The embedded database. Only this module imports redb: everything else calls typed
//! functions that take a transaction, run through [`Store::read`] / [`Store::write`] on the
//! blocking thread pool.

pub mod audit;
pub mod backup;
pub mod casbin;
pub mod certs;
pub mod clusters;
pub mod grants;
mod migrate;
pub mod named;
pub mod sso;
pub mod tables;
pub mod users;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::ReadableDatabase;

pub use redb::{ReadTransaction, WriteTransaction};

pub const DATABASE_FILE: &str = "ztka.redb";

/// The schema version this binary writes (older databases are migrated up to it).
pub const SCHEMA_VERSION: u64 = migrate::SCHEMA_VERSION;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the database {0} is in use by another process (is a ztka server already running on this data directory?)"
    )]
    Locked(PathBuf),
    #[error("the data directory {path} is not writable: {source}")]
    NotWritable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the database {path} was written by a newer ztka (schema version {found}, this binary supports up to {supported}); upgrade ztka"
    )]
    TooNew {
        path: PathBuf,
        found: u64,
        supported: u64,
    },
    #[error("the database {path} uses an old file format and must be upgraded: {detail}")]
    UpgradeRequired { path: PathBuf, detail: String },
    #[error("not found")]
    NotFound,
    #[error("{0} already exists")]
    Conflict(String),
    /// A record cannot change while others depend on it; the message says which.
    #[error("{0}")]
    InUse(String),
    #[error("stored record is corrupt: {0}")]
    Codec(#[from] serde_json::Error),
    #[error("database error: {0}")]
    Db(#[from] redb::Error),
    #[error("background task failed: {0}")]
    Join(String),
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self { StoreError::Db(e.into()) }
        }
    )*};
}
from_redb!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A handle on the open database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Arc<redb::Database>,
    /// Shared: every read and write clones the handle onto the blocking pool.
    path: Arc<PathBuf>,
    /// Counts committed write transactions outside the audit log, so readers can cache
    /// records and know when any of them may have changed.
    generation: Arc<std::sync::atomic::AtomicU64>,
    writers: Arc<WriteQueue>,
}

/// Write transactions in the order they were asked for. redb hands its single write slot
/// to whichever waiter gets there first, so a writer that comes straight back (the audit
/// log's, which keeps its transaction open while a batch gathers) could take it again and
/// again ahead of a request that is waiting.
#[derive(Default)]
struct WriteQueue {
    /// (next ticket to hand out, ticket whose turn it is)
    tickets: std::sync::Mutex<(u64, u64)>,
    turn: std::sync::Condvar,
}

impl WriteQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, (u64, u64)> {
        // The counters stay consistent even if a holder panicked.
        self.tickets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for this caller's turn; the turn passes on when the guard drops.
    fn enter(&self) -> WriteTurn<'_> {
        let mut t = self.lock();
        let ticket = t.0;
        t.0 += 1;
        while t.1 != ticket {
            t = self.turn.wait(t).unwrap_or_else(|e| e.into_inner());
        }
        WriteTurn(self)
    }
}

struct WriteTurn<'a>(&'a WriteQueue);

impl Drop for WriteTurn<'_> {
    fn drop(&mut self) {
        self.0.lock().1 += 1;
        self.0.turn.notify_all();
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

/// Memory for each database's redb page cache (reads and the write buffer, which gets at most
/// half). redb's default is 1 GiB, which a long audit log fills; the server's working set
/// (users, grants, clusters, the audit log's newest pages) is far smaller, and older audit
/// pages are read through the operating system's page cache when a query asks for them.
const CACHE_BYTES: usize = 64 << 20;

/// How every database of the store is opened or created (the live one and a snapshot's).
pub(super) fn builder() -> redb::Builder {
    let mut builder = redb::Builder::new();
    builder.set_cache_size(CACHE_BYTES);
    builder
}

impl Store {
    /// Opens (creating if needed) the database in `data_dir` and brings its schema up to date.
    /// Blocking: call before the runtime serves requests, or from `spawn_blocking`.
    pub fn open(data_dir: &Path) -> Result<Self> {
        ensure_writable_dir(data_dir)?;
        let path = data_dir.join(DATABASE_FILE);
        let db = builder().create(&path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen
            | redb::DatabaseError::LockProtocolMismatch => StoreError::Locked(path.clone()),
            redb::DatabaseError::UpgradeRequired(v) => StoreError::UpgradeRequired {
                path: path.clone(),
                detail: format!("file format version {v}"),
            },
            redb::DatabaseError::Storage(redb::StorageError::Io(source))
                if source.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                StoreError::NotWritable {
                    path: path.clone(),
                    source,
                }
            }
            other => StoreError::Db(other.into()),
        })?;
        // The database holds password hashes: owner-only, whatever the umask.
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
        }
        let store = Self {
            db: Arc::new(db),
            path: Arc::new(path),
            generation: Arc::default(),
            writers: Arc::default(),
        };
        migrate::run(&store)?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Changes after every committed write (except the audit log's own): a value read
    /// together with generation `g` is current while `generation()` is still `g`. Read it
    /// before reading the records.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Runs `f` in a read transaction on the blocking pool.
    pub async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&ReadTransaction) -> Result<T> + Send + 'static,
    {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.read_blocking(f))
            .await
            .map_err(|e| StoreError::Join(e.to_string()))?
    }

    /// Runs `f` in a write transaction on the blocking pool; commits when `f` returns `Ok`.
    pub async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&WriteTransaction) -> Result<T> + Send + 'static,
    {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.write_blocking(f))
            .await
            .map_err(|e| StoreError::Join(e.to_string()))?
    }

    pub fn read_blocking<T>(&self, f: impl FnOnce(&ReadTransaction) -> Result<T>) -> Result<T> {
        let txn = self.db.begin_read()?;
        f(&txn)
    }

    pub fn write_blocking<T>(&self, f: impl FnOnce(&WriteTransaction) -> Result<T>) -> Result<T> {
        let result = self.write_log_blocking(f);
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        result
    }

    /// A write to the audit log's own tables only: it does not change
    /// [`Store::generation`], so cached users, clusters and groups stay valid while the log
    /// grows.
    pub fn write_log_blocking<T>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<T>,
    ) -> Result<T> {
        self.write_log_with_durability_blocking(|txn| Ok((f(txn)?, redb::Durability::Immediate)))
    }

    /// [`Store::write_log_blocking`] with the commit's durability chosen by `f` once it has
    /// written. A [`redb::Durability::None`] commit is visible at once but reaches the disk
    /// only with the next durable commit (of any writer); a crash before that loses it.
    pub fn write_log_with_durability_blocking<T>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<(T, redb::Durability)>,
    ) -> Result<T> {
        let _turn = self.writers.enter();
        let mut txn = self.db.begin_write()?;
        match f(&txn) {
            Ok((v, durability)) => {
                if let Err(e) = txn.set_durability(durability) {
                    // Only a mode that shares the file between processes refuses it; then
                    // the commit is simply durable.
                    tracing::debug!(error = %e, "commit stays durable");
                }
                txn.commit()?;
                Ok(v)
            }
            Err(e) => {
                // Dropping would abort too; aborting explicitly keeps partial writes impossible.
                let _ = txn.abort();
                Err(e)
            }
        }
    }
}

/// Creates the data directory (mode 0700) and proves it is writable, so a read-only mount or a
/// wrong owner is reported by name instead of as an obscure database error later.
pub fn ensure_writable_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let not_writable = |source| StoreError::NotWritable {
        path: dir.to_owned(),
        source,
    };
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(not_writable)?;
    } else if let Ok(meta) = std::fs::metadata(dir) {
        // Tighten a directory created by someone else with a permissive umask.
        if meta.permissions().mode() & 0o077 != 0 {
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        }
    }
    let probe = dir.join(".write-probe");
    std::fs::write(&probe, b"").map_err(not_writable)?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

pub(crate) fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>> {
    Ok(serde_json::to_vec(value)?)
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    Ok(serde_json::from_slice(bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writers_take_turns_in_the_order_they_asked() {
        let queue = Arc::new(WriteQueue::default());
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let held = queue.enter();
        let mut waiting = Vec::new();
        for i in 0..4u64 {
            let (q, o) = (queue.clone(), order.clone());
            waiting.push(std::thread::spawn(move || {
                let _turn = q.enter();
                o.lock().unwrap().push(i);
            }));
            // The next one asks only after this one holds its ticket.
            while queue.lock().0 < i + 2 {
                std::thread::yield_now();
            }
        }
        drop(held);
        for w in waiting {
            w.join().unwrap();
        }
        assert_eq!(*order.lock().unwrap(), [0, 1, 2, 3]);
    }
}
