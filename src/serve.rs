//! `ztka serve`: the composition root. Opens the store, loads the PKI, creates the first admin,
//! builds the [`AppState`] and runs the HTTPS listener until a signal arrives.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::audit::AuditLog;
use crate::authn::password;
use crate::config::{Secret, ServeConfig};
use crate::domain::user::{self, User};
use crate::listener::TlsServer;
use crate::pki::{Pki, PkiError};
use crate::shutdown::Shutdown;
use crate::state::AppState;
use crate::store::{self, Store, StoreError};

pub const INITIAL_ADMIN_PASSWORD_FILE: &str = "initial-admin-password";

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("TLS setup failed: {0}")]
    Pki(#[from] PkiError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("initial admin password: {0}")]
    AdminPassword(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("startup task failed: {0}")]
    Join(String),
}

impl ServeError {
    /// Problems the operator must fix (exit code 2) versus runtime failures (exit code 1).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            ServeError::Store(
                StoreError::Locked(_)
                    | StoreError::NotWritable { .. }
                    | StoreError::TooNew { .. }
                    | StoreError::UpgradeRequired { .. }
            ) | ServeError::Bind { .. }
                | ServeError::AdminPassword(_)
                | ServeError::Pki(_)
        )
    }
}

/// A started server.
pub struct Server {
    pub addr: SocketAddr,
    pub state: AppState,
    /// Set when this start created the admin with a generated password (shown once).
    pub generated_admin_password: Option<Secret>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Prepares everything and starts accepting; returns once the listener is bound.
    pub async fn start(config: ServeConfig, shutdown: Shutdown) -> Result<Self, ServeError> {
        let config = Arc::new(config);
        let prepared = {
            let config = config.clone();
            tokio::task::spawn_blocking(move || prepare(&config))
                .await
                .map_err(|e| ServeError::Join(e.to_string()))??
        };
        let (store, pki, generated_admin_password) = prepared;
        let tls = pki.server_config()?;
        let audit = AuditLog::open_with(store.clone(), config.audit.clone())
            .map_err(|e| ServeError::Join(e.to_string()))?;
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ServeError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let addr = listener.local_addr().map_err(|source| ServeError::Bind {
            addr: config.listen,
            source,
        })?;
        let authz = crate::authz::Authorizer::load(&store)
            .await
            .map_err(|e| ServeError::Join(format!("loading access policy: {e}")))?;
        let revoked_serials = store
            .read(crate::store::certs::revoked_serials)
            .await
            .map_err(ServeError::Store)?;
        let settings = store
            .read(crate::store::grants::settings)
            .await
            .map_err(ServeError::Store)?;
        let state = AppState::new(crate::state::Parts {
            authz: Arc::new(authz),
            throttle: Arc::new(crate::authn::throttle::Throttle::new(Default::default())),
            settings: Arc::new(std::sync::RwLock::new(settings)),
            tunnels: Arc::new(crate::tunnel::Tunnels::default()),
            streams: Arc::default(),
            revoked_serials: Arc::new(crate::relay::streams::RevokedSerials::new(revoked_serials)),
            sso: Arc::default(),
            relay_lookups: Arc::default(),
            busy_poll: crate::busy_poll::BusyPoll::configured(config.busy_poll_us),
            store,
            audit,
            pki: Arc::new(pki),
            config: config.clone(),
            shutdown: shutdown.clone(),
        });
        let server = TlsServer {
            listener,
            tls,
            app: crate::api::app(state.clone()),
            handshake_timeout: config.handshake_timeout,
        };
        let task = tokio::spawn(server.run(shutdown.clone()));
        state.busy_poll.spawn(shutdown.token());
        // On the shutdown tracker: a drain waits for an expiry being recorded.
        shutdown.spawn(crate::relay::expire_grants(state.clone()));
        // Online backups (`ztka admin backup` while this server holds the database).
        match crate::backup::socket::bind(&config.data_dir) {
            Ok((listener, owner)) => {
                tokio::spawn(crate::backup::socket::serve(
                    listener,
                    owner,
                    config.data_dir.clone(),
                    state.store.clone(),
                    state.audit.clone(),
                    shutdown,
                ));
            }
            Err(e) => tracing::warn!(
                error = %e,
                "cannot open the admin socket; `ztka admin backup` needs the server stopped"
            ),
        }
        Ok(Self {
            addr,
            state,
            generated_admin_password,
            task,
        })
    }

    /// Waits for the accept loop to end (after shutdown), then drains open connections.
    pub async fn wait(self) {
        let _ = self.task.await;
        // Watches, `logs -f` and exec sessions would hold their connections through the
        // whole grace period; they end now, and their audit events are queued before the
        // log closes.
        let ended = self.state.streams.close_lasting();
        if ended > 0 {
            tracing::info!(streams = ended, "ended open relay streams for shutdown");
        }
        let grace = self.state.config.shutdown_grace;
        if !self.state.shutdown.drain(grace).await {
            tracing::warn!(
                ?grace,
                "connections still open after the grace period; closing them"
            );
        }
        // Queued `Fast` events reach the disk before the process exits.
        if let Err(e) = self.state.audit.close().await {
            tracing::error!(error = %e, "cannot flush the audit log");
        }
    }
}

/// `ztka admin init`: the same first-start work as `serve` (data directory, CA, server
/// certificate, first admin), without listening. Returns whether it created the admin with a
/// generated password, which is then only in `<data-dir>/initial-admin-password`. Blocking.
pub fn initialize(config: &ServeConfig) -> Result<bool, ServeError> {
    let (_, _, generated) = prepare(config)?;
    Ok(generated.is_some())
}

/// Blocking startup work: database, certificates, first admin.
fn prepare(config: &ServeConfig) -> Result<(Store, Pki, Option<Secret>), ServeError> {
    let store = Store::open(&config.data_dir)?;
    let pki = Pki::load_or_init(
        &config.data_dir,
        &config.external_url,
        config.tls_files.as_ref(),
    )?;
    let generated = ensure_bootstrap_admin(
        &store,
        &config.data_dir,
        config.initial_admin_password.clone(),
    )?;
    Ok((store, pki, generated))
}

/// Creates the `admin` user when the database has no users. Returns the password when it was
/// generated here (so it can be shown once); it is also written to
/// `<data-dir>/initial-admin-password` with mode 0600.
pub fn ensure_bootstrap_admin(
    store: &Store,
    data_dir: &Path,
    supplied: Option<Secret>,
) -> Result<Option<Secret>, ServeError> {
    if store.read_blocking(store::users::count)? > 0 {
        return Ok(None);
    }
    let (secret, generated) = match supplied {
        Some(s) => {
            user::check_password_policy(s.expose())
                .map_err(|e| ServeError::AdminPassword(e.to_string()))?;
            (s, false)
        }
        None => (password::generate(), true),
    };
    if generated {
        // Written before the user is committed: a crash in between regenerates both.
        write_private_file(
            &data_dir.join(INITIAL_ADMIN_PASSWORD_FILE),
            format!("{}\n", secret.expose()).as_bytes(),
        )?;
    }
    let hash =
        password::hash(secret.expose()).map_err(|e| ServeError::AdminPassword(e.to_string()))?;
    let now = time::OffsetDateTime::now_utc();
    let mut admin = User::new_local(user::BOOTSTRAP_ADMIN, hash, now);
    admin.must_change_password = generated;
    admin.display_name = "Administrator".into();
    let grant = crate::domain::org::Grant {
        id: uuid::Uuid::now_v7(),
        subject: crate::domain::org::Subject::User(admin.id),
        role: crate::domain::org::Role::Admin,
        project: None,
        namespaces: Vec::new(),
        expires_at: None,
        created_at: now,
        created_by: None,
    };
    store.write_blocking(|txn| {
        store::users::insert(txn, &admin)?;
        store::grants::insert_grant(txn, &grant)?;
        store::casbin::add(txn, "g", &crate::authz::Authorizer::grouping_rule(&grant))?;
        Ok(())
    })?;
    tracing::info!(
        user = user::BOOTSTRAP_ADMIN,
        "created the first administrator"
    );
    Ok(generated.then_some(secret))
}

fn write_private_file(path: &Path, bytes: &[u8]) -> Result<(), ServeError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| ServeError::Write {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// The `serve` command: start, tell systemd, wait for a signal, drain.
pub async fn run(config: ServeConfig) -> Result<(), ServeError> {
    let shutdown = Shutdown::new();
    shutdown
        .listen_for_signals()
        .map_err(|e| ServeError::Join(format!("cannot install signal handlers: {e}")))?;
    let data_dir = config.data_dir.clone();
    let external = config.external_url.url.clone();
    let server = Server::start(config, shutdown).await?;
    if let Some(pw) = &server.generated_admin_password {
        let file = data_dir.join(INITIAL_ADMIN_PASSWORD_FILE);
        // Under systemd, stdout is the journal, which keeps what it is given and is often
        // readable by more than root: there the password stays in its 0600 file only.
        if std::env::var_os("JOURNAL_STREAM").is_some() {
            println!(
                "ztka: created user \"admin\"; its password is in {} and must be changed at first sign-in",
                file.display()
            );
        } else {
            println!(
                "ztka: created user \"admin\" with password: {}",
                pw.expose()
            );
            println!(
                "ztka: the password is also in {} and must be changed at first sign-in",
                file.display()
            );
        }
    }
    println!("ztka: listening on https://{}", server.addr);
    println!(
        "ztka: console at {external}/ (CA certificate: {})",
        data_dir.join(crate::pki::CA_CERT_FILE).display()
    );
    tracing::info!(addr = %server.addr, %external, "ready");
    crate::sdnotify::notify("READY=1");
    server.state.shutdown.triggered().await;
    crate::sdnotify::notify("STOPPING=1");
    server.wait().await;
    tracing::info!("stopped");
    Ok(())
}
