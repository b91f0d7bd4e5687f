//! `ztka admin backup DEST` and `ztka admin restore SRC`.
//!
//! A backup is a directory: a consistent snapshot of the database (see
//! [`crate::store::backup`]), the CA and server certificate files, and `ztka-backup.json`,
//! which lists every file with its size and SHA-256 and is written last, so a directory
//! without it is an unfinished backup.
//!
//! With the server stopped, the CLI opens the database and makes the snapshot itself. While a
//! server holds the database (redb admits one opener), the CLI asks that server over a Unix
//! socket in the data directory (`admin.sock`, mode 0600 in a 0700 directory). The server
//! makes the snapshot in a read transaction (writers are not blocked) and streams the files
//! back, and the CLI writes them with its own permissions to a destination the server itself
//! may not be allowed to write (systemd's `ProtectSystem=strict`). Only root and the server's
//! own user are served: exactly those who could copy the files of a stopped server anyway,
//! so the socket grants nothing new. An API route was the alternative; it would put password
//! hashes and the CA key one stolen admin token away from the network, for no gain over a
//! local command.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::pki::{CA_CERT_FILE, CA_KEY_FILE, SERVER_CERT_FILE, SERVER_KEY_FILE};
use crate::store::backup::SnapshotInfo;
use crate::store::{self, DATABASE_FILE, Store, StoreError};

pub const MANIFEST_FILE: &str = "ztka-backup.json";
pub const SOCKET_FILE: &str = "admin.sock";
const FORMAT: u32 = 1;
/// Besides the database: the files that make restored kubeconfigs and agents still trust
/// the server.
const KEY_FILES: [&str; 4] = [CA_CERT_FILE, CA_KEY_FILE, SERVER_CERT_FILE, SERVER_KEY_FILE];
/// Snapshot files the server writes before streaming them; removed afterwards and at start.
const TEMP_PREFIX: &str = ".backup-";

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// Something the operator must fix (exit code 2).
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the running server could not make the backup: {0}")]
    Server(String),
    #[error("{0}")]
    Failed(String),
}

impl BackupError {
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            BackupError::Usage(_)
                | BackupError::Store(
                    StoreError::Locked(_)
                        | StoreError::NotWritable { .. }
                        | StoreError::TooNew { .. }
                        | StoreError::UpgradeRequired { .. }
                )
        )
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_owned(),
        source,
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub ztka_version: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// True when a running server made the snapshot.
    pub online: bool,
    pub snapshot: SnapshotInfo,
    pub files: Vec<FileEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileEntry {
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

fn allowed_file(name: &str) -> bool {
    name == DATABASE_FILE || KEY_FILES.contains(&name)
}

fn mode_for(name: &str) -> u32 {
    if name.ends_with(".crt") { 0o644 } else { 0o600 }
}

/// `ztka admin backup DEST`.
pub fn backup(data_dir: &Path, dest: &Path) -> Result<Manifest, BackupError> {
    if !data_dir.join(DATABASE_FILE).exists() {
        return Err(BackupError::Usage(format!(
            "{} holds no ztka database",
            data_dir.display()
        )));
    }
    let created = prepare_dest(dest)?;
    let result = match Store::open(data_dir) {
        Ok(store) => backup_offline(&store, data_dir, dest),
        Err(StoreError::Locked(_)) => backup_online(data_dir, dest),
        Err(e) => Err(e.into()),
    };
    match result {
        Ok(m) => Ok(m),
        Err(e) => {
            // Leave nothing that looks like a backup behind.
            if created {
                let _ = std::fs::remove_dir_all(dest);
            } else {
                for name in [DATABASE_FILE].iter().chain(KEY_FILES.iter()) {
                    let _ = std::fs::remove_file(dest.join(name));
                }
            }
            Err(e)
        }
    }
}

/// DEST must be new or an empty directory. Returns whether it was created here.
fn prepare_dest(dest: &Path) -> Result<bool, BackupError> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::read_dir(dest) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(BackupError::Usage(format!(
                    "{} already exists and is not empty",
                    dest.display()
                )));
            }
            Ok(false)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(dest)
                .map_err(|e| {
                    BackupError::Usage(format!("cannot create {}: {e}", dest.display()))
                })?;
            Ok(true)
        }
        Err(e) => Err(BackupError::Usage(format!("{}: {e}", dest.display()))),
    }
}

fn backup_offline(store: &Store, data_dir: &Path, dest: &Path) -> Result<Manifest, BackupError> {
    // Recorded before the snapshot, so the backup carries its own record.
    crate::admin::audit_offline(
        store,
        "backup.create",
        crate::domain::audit::Target {
            kind: "backup".into(),
            ..Default::default()
        },
    )
    .map_err(|e| BackupError::Failed(e.to_string()))?;
    let snapshot = store::backup::snapshot(store, &dest.join(DATABASE_FILE))?;
    let mut files = vec![describe(&dest.join(DATABASE_FILE), DATABASE_FILE)?];
    for name in KEY_FILES {
        let from = data_dir.join(name);
        if from.exists() {
            files.push(copy_file(&from, &dest.join(name), name)?);
        }
    }
    finish(dest, false, snapshot, files)
}

fn finish(
    dest: &Path,
    online: bool,
    snapshot: SnapshotInfo,
    files: Vec<FileEntry>,
) -> Result<Manifest, BackupError> {
    let manifest = Manifest {
        format: FORMAT,
        ztka_version: env!("CARGO_PKG_VERSION").to_owned(),
        created_at: OffsetDateTime::now_utc(),
        online,
        snapshot,
        files,
    };
    let json = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| BackupError::Failed(format!("cannot encode the manifest: {e}")))?;
    let path = dest.join(MANIFEST_FILE);
    let tmp = dest.join(format!("{MANIFEST_FILE}.tmp"));
    write_new(&tmp, 0o600, |f| f.write_all(&json))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    sync_dir(dest)?;
    Ok(manifest)
}

/// Creates `path` (never overwriting), fills it, and flushes it to disk.
fn write_new(
    path: &Path,
    mode: u32,
    fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> Result<(), BackupError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io(path))?;
    fill(&mut f).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

fn sync_dir(dir: &Path) -> Result<(), BackupError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

/// Hashes a file already in place.
fn describe(path: &Path, name: &str) -> Result<FileEntry, BackupError> {
    let mut f = std::fs::File::open(path).map_err(io(path))?;
    let (size, sha256) = hash_reader(&mut f).map_err(io(path))?;
    Ok(FileEntry {
        name: name.to_owned(),
        size,
        sha256,
    })
}

fn hash_reader(r: &mut impl Read) -> std::io::Result<(u64, String)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok((size, hex::encode(hasher.finalize())));
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
}

/// Copies `from` to the new file `to` (mode by kind), hashing on the way.
fn copy_file(from: &Path, to: &Path, name: &str) -> Result<FileEntry, BackupError> {
    let mut src = std::fs::File::open(from).map_err(io(from))?;
    copy_stream(&mut src, None, to, name)
}

/// Writes `len` bytes (or everything) from `src` into the new file `to`, hashing them.
fn copy_stream(
    src: &mut impl Read,
    len: Option<u64>,
    to: &Path,
    name: &str,
) -> Result<FileEntry, BackupError> {
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    write_new(to, mode_for(name), |f| {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let want = match len {
                Some(l) => buf.len().min((l - size) as usize),
                None => buf.len(),
            };
            if want == 0 {
                return Ok(());
            }
            let n = src.read(&mut buf[..want])?;
            if n == 0 {
                return match len {
                    Some(_) => Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the server closed the connection early",
                    )),
                    None => Ok(()),
                };
            }
            hasher.update(&buf[..n]);
            f.write_all(&buf[..n])?;
            size += n as u64;
        }
    })?;
    Ok(FileEntry {
        name: name.to_owned(),
        size,
        sha256: hex::encode(hasher.finalize()),
    })
}

/// What the server sends before the file bytes: one JSON line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Reply {
    Ok {
        snapshot: SnapshotInfo,
        /// Name and size of each file, whose bytes follow in this order.
        files: Vec<(String, u64)>,
    },
    Error(String),
}

const REQUEST: &str = "backup";

fn backup_online(data_dir: &Path, dest: &Path) -> Result<Manifest, BackupError> {
    use std::io::BufRead;
    use std::os::unix::net::UnixStream;
    let socket = data_dir.join(SOCKET_FILE);
    let stream = UnixStream::connect(&socket).map_err(|e| {
        BackupError::Usage(format!(
            "the database is in use, but no server answers on {} ({e}); stop the other process or retry",
            socket.display()
        ))
    })?;
    let mut writer = stream.try_clone().map_err(io(&socket))?;
    writer
        .write_all(format!("{REQUEST}\n").as_bytes())
        .map_err(io(&socket))?;
    let mut reader = std::io::BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).map_err(io(&socket))?;
    let reply: Reply = serde_json::from_str(line.trim_end()).map_err(|_| {
        BackupError::Server(if line.is_empty() {
            "no answer (is this user allowed to back up this server?)".to_owned()
        } else {
            "unexpected answer".to_owned()
        })
    })?;
    let (snapshot, announced) = match reply {
        Reply::Ok { snapshot, files } => (snapshot, files),
        Reply::Error(message) => return Err(BackupError::Server(message)),
    };
    let mut files = Vec::new();
    for (name, size) in announced {
        if !allowed_file(&name) || files.iter().any(|f: &FileEntry| f.name == name) {
            return Err(BackupError::Server(format!("unexpected file {name:?}")));
        }
        files.push(copy_stream(
            &mut reader,
            Some(size),
            &dest.join(&name),
            &name,
        )?);
    }
    if !files.iter().any(|f| f.name == DATABASE_FILE) {
        return Err(BackupError::Server("no database in the answer".into()));
    }
    finish(dest, true, snapshot, files)
}

/// The server side of the online backup: a Unix socket in the data directory.
pub mod socket {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    use tokio::net::{UnixListener, UnixStream};

    use super::{KEY_FILES, REQUEST, Reply, SOCKET_FILE, TEMP_PREFIX};
    use crate::audit::AuditLog;
    use crate::domain::audit::{Durability, NewEvent, Target};
    use crate::shutdown::Shutdown;
    use crate::store::{DATABASE_FILE, Store};

    /// Binds `<data-dir>/admin.sock`. The caller holds the database, so no other server uses
    /// this directory and a leftover socket or snapshot is stale.
    pub fn bind(data_dir: &Path) -> std::io::Result<(UnixListener, u32)> {
        if let Ok(entries) = std::fs::read_dir(data_dir) {
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        let path = data_dir.join(SOCKET_FILE);
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        let owner = std::fs::metadata(&path)?.uid();
        Ok((listener, owner))
    }

    /// Answers backup requests until shutdown.
    pub async fn serve(
        listener: UnixListener,
        owner: u32,
        data_dir: PathBuf,
        store: Store,
        audit: AuditLog,
        shutdown: Shutdown,
    ) {
        loop {
            let stream = tokio::select! {
                _ = shutdown.triggered() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!(error = %e, "admin socket accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let (data_dir, store, audit) = (data_dir.clone(), store.clone(), audit.clone());
            tokio::spawn(async move {
                if let Err(e) = handle(stream, owner, &data_dir, store, audit).await {
                    tracing::warn!(error = %e, "admin socket request failed");
                }
            });
        }
        let _ = std::fs::remove_file(data_dir.join(SOCKET_FILE));
    }

    async fn handle(
        mut stream: UnixStream,
        owner: u32,
        data_dir: &Path,
        store: Store,
        audit: AuditLog,
    ) -> std::io::Result<()> {
        let uid = stream.peer_cred()?.uid();
        if uid != 0 && uid != owner {
            tracing::warn!(uid, "admin socket: refused a process of another user");
            return Ok(());
        }
        let mut line = String::new();
        let read = {
            let mut reader = BufReader::new(&mut stream).take(64);
            tokio::time::timeout(Duration::from_secs(10), reader.read_line(&mut line)).await
        };
        if !matches!(read, Ok(Ok(_))) || line.trim_end() != REQUEST {
            return send_reply(&mut stream, &Reply::Error("unknown request".into())).await;
        }
        let mut event = NewEvent::system(
            "backup.create",
            Target {
                kind: "backup".into(),
                ..Default::default()
            },
        );
        event.actor.user_name = Some("ztka-admin-cli".into());
        event.details = serde_json::json!({"via": "admin socket", "uid": uid});
        if let Err(e) = audit.append(event, Durability::Durable).await {
            tracing::error!(error = %e, "cannot record the backup in the audit log");
            return send_reply(&mut stream, &Reply::Error("audit log unavailable".into())).await;
        }
        let temp = TempFile(data_dir.join(format!("{TEMP_PREFIX}{}.tmp", uuid::Uuid::new_v4())));
        let snapshot = {
            let (store, path) = (store.clone(), temp.0.clone());
            tokio::task::spawn_blocking(move || crate::store::backup::snapshot(&store, &path)).await
        };
        let snapshot = match snapshot {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "backup snapshot failed");
                return send_reply(
                    &mut stream,
                    &Reply::Error("snapshot failed; see the server log".into()),
                )
                .await;
            }
            Err(e) => {
                tracing::error!(error = %e, "backup snapshot task failed");
                return send_reply(
                    &mut stream,
                    &Reply::Error("snapshot failed; see the server log".into()),
                )
                .await;
            }
        };
        let mut sources = vec![(DATABASE_FILE.to_owned(), temp.0.clone())];
        sources.extend(
            KEY_FILES
                .iter()
                .map(|n| (n.to_string(), data_dir.join(n)))
                .filter(|(_, p)| p.exists()),
        );
        let mut opened = Vec::new();
        let mut announced = Vec::new();
        for (name, path) in sources {
            let file = tokio::fs::File::open(&path).await?;
            let size = file.metadata().await?.len();
            announced.push((name, size));
            opened.push((file, size));
        }
        send_reply(
            &mut stream,
            &Reply::Ok {
                snapshot: snapshot.clone(),
                files: announced,
            },
        )
        .await?;
        for (file, size) in opened {
            // Exactly the announced length, even if a file changed since.
            let copied = tokio::io::copy(&mut file.take(size), &mut stream).await?;
            if copied != size {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "a file shrank while it was being sent",
                ));
            }
        }
        stream.shutdown().await?;
        tracing::info!(
            uid,
            users = snapshot.users,
            audit_head = snapshot.audit_head_seq,
            "backup sent over the admin socket"
        );
        Ok(())
    }

    async fn send_reply(stream: &mut UnixStream, reply: &Reply) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(reply).map_err(std::io::Error::other)?;
        line.push(b'\n');
        stream.write_all(&line).await
    }

    /// Removes the snapshot file however the request ends.
    struct TempFile(PathBuf);

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// Root restoring into the service user's data directory (`/var/lib/ztka`, owned by `ztka`)
/// must not leave files the server cannot open: they get the directory's owner.
fn give_to_dir_owner(data_dir: &Path, files: &[PathBuf]) -> Result<(), BackupError> {
    use std::os::unix::fs::MetadataExt;
    let dir = std::fs::metadata(data_dir).map_err(io(data_dir))?;
    for file in files {
        let meta = std::fs::metadata(file).map_err(io(file))?;
        if (meta.uid(), meta.gid()) != (dir.uid(), dir.gid()) {
            std::os::unix::fs::chown(file, Some(dir.uid()), Some(dir.gid())).map_err(io(file))?;
        }
    }
    Ok(())
}

/// The outcome of a restore.
#[derive(Debug)]
pub struct Restored {
    pub manifest: Manifest,
    pub audit: crate::domain::audit::VerifyReport,
}

/// `ztka admin restore SRC`: into a data directory that holds no database or CA yet.
pub fn restore(src: &Path, data_dir: &Path) -> Result<Restored, BackupError> {
    let manifest_path = src.join(MANIFEST_FILE);
    let text = match std::fs::read(&manifest_path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(BackupError::Usage(format!(
                "{} is not a complete ztka backup (no {MANIFEST_FILE})",
                src.display()
            )));
        }
        Err(e) => return Err(io(&manifest_path)(e)),
    };
    let manifest: Manifest = serde_json::from_slice(&text).map_err(|e| {
        BackupError::Usage(format!(
            "{}: not a ztka backup manifest: {e}",
            manifest_path.display()
        ))
    })?;
    if manifest.format != FORMAT {
        return Err(BackupError::Usage(format!(
            "{}: backup format {} is not supported by this ztka (expects {FORMAT})",
            src.display(),
            manifest.format
        )));
    }
    if manifest.snapshot.schema_version > store::SCHEMA_VERSION {
        return Err(BackupError::Usage(format!(
            "the backup was made by a newer ztka ({}, schema version {}); upgrade ztka to restore it",
            manifest.ztka_version, manifest.snapshot.schema_version
        )));
    }
    if !manifest.files.iter().any(|f| f.name == DATABASE_FILE) {
        return Err(BackupError::Usage(format!(
            "{}: the backup has no database",
            src.display()
        )));
    }
    for entry in &manifest.files {
        if !allowed_file(&entry.name) {
            return Err(BackupError::Usage(format!(
                "{}: unexpected file {:?} in the manifest",
                src.display(),
                entry.name
            )));
        }
        let found = describe(&src.join(&entry.name), &entry.name)
            .map_err(|e| BackupError::Usage(format!("the backup is incomplete: {e}")))?;
        if found != *entry {
            return Err(BackupError::Usage(format!(
                "{} does not match the backup manifest (damaged or altered backup)",
                src.join(&entry.name).display()
            )));
        }
    }
    for name in [DATABASE_FILE, CA_KEY_FILE] {
        if data_dir.join(name).exists() {
            return Err(BackupError::Usage(format!(
                "restore needs a fresh data directory, and {} already holds {name}",
                data_dir.display()
            )));
        }
    }
    store::ensure_writable_dir(data_dir)?;
    let mut written = Vec::new();
    let result = (|| {
        for entry in &manifest.files {
            let to = data_dir.join(&entry.name);
            let copied = copy_file(&src.join(&entry.name), &to, &entry.name)?;
            written.push(to);
            if copied != *entry {
                return Err(BackupError::Failed(format!(
                    "{} changed while it was being restored",
                    src.join(&entry.name).display()
                )));
            }
        }
        sync_dir(data_dir)
    })();
    let result = result.and_then(|()| give_to_dir_owner(data_dir, &written));
    if let Err(e) = result {
        for path in written {
            let _ = std::fs::remove_file(path);
        }
        return Err(e);
    }
    let store = Store::open(data_dir)?;
    let audit = crate::audit::verify_store(&store)
        .map_err(|e| BackupError::Failed(format!("cannot verify the restored audit log: {e}")))?;
    if !audit.is_intact() {
        return Err(BackupError::Failed(format!(
            "restored into {}, but its audit chain does not verify: {audit}",
            data_dir.display()
        )));
    }
    let mut target = crate::domain::audit::Target {
        kind: "backup".into(),
        ..Default::default()
    };
    target.name = manifest
        .created_at
        .format(&time::format_description::well_known::Rfc3339)
        .ok();
    crate::admin::audit_offline(&store, "backup.restore", target)
        .map_err(|e| BackupError::Failed(e.to_string()))?;
    Ok(Restored { manifest, audit })
}
