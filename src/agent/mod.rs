//! `ztka agent`: registers with a bootstrap token (once), then keeps the tunnel to the server
//! open, reconnecting with jittered exponential backoff, and renews its certificate before
//! it expires.

pub mod accounts;
pub mod identity;
pub mod kube;
pub mod proxy;
pub mod tunnel;
pub mod upstream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::client::HttpsClient;
use crate::config::Secret;
use identity::{Identity, IdentityStore};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Wrong flags or configuration; the agent exits with code 2.
    #[error("{0}")]
    Usage(String),
    #[error("the server refused the request ({status}): {message}")]
    Refused { status: u16, message: String },
    #[error("cannot reach the server: {0}")]
    Unreachable(String),
    #[error("agent identity: {0}")]
    Identity(String),
}

impl AgentError {
    pub fn is_usage(&self) -> bool {
        matches!(self, AgentError::Usage(_))
    }
}

/// Where the identity is kept.
#[derive(Debug, Clone)]
pub enum StateLocation {
    /// A directory holding `identity.json` (mode 0600).
    Dir(PathBuf),
    /// The `ztka-agent-identity` Secret in the agent's own namespace.
    InCluster,
}

#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Base URL of the server, e.g. `https://ztka.example.com`.
    pub server: String,
    /// PEM file of the CA to trust for the server; the system's web roots when absent.
    pub server_ca: Option<PathBuf>,
    pub token: Option<Secret>,
    pub state: StateLocation,
    pub kubeconfig: Option<PathBuf>,
    pub health_listen: Option<SocketAddr>,
    /// Busy polling after relayed traffic, in microseconds; `None` for the default.
    pub busy_poll_us: Option<u64>,
}

impl AgentConfig {
    pub fn resolve(args: &crate::cli::AgentArgs) -> Result<Self, AgentError> {
        let token = match (&args.token, &args.token_file) {
            (Some(t), _) if !t.is_empty() => Some(Secret::new(t.trim())),
            (_, Some(path)) => match crate::config::read_secret_file("token_file", path) {
                Ok(s) if s.expose().is_empty() => None,
                Ok(s) => Some(Secret::new(s.expose().trim())),
                // A mounted Secret that is gone is fine once the agent has its identity.
                Err(e) if path.exists() => return Err(AgentError::Usage(e.to_string())),
                Err(_) => None,
            },
            _ => None,
        };
        let state = match &args.state_dir {
            Some(dir) => StateLocation::Dir(dir.clone()),
            None if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() => {
                StateLocation::InCluster
            }
            None => {
                return Err(AgentError::Usage(
                    "--state-dir is required when the agent runs outside a cluster".into(),
                ));
            }
        };
        Ok(Self {
            server: args.server.clone(),
            server_ca: args.server_ca.clone(),
            token,
            state,
            kubeconfig: args.kubeconfig.clone(),
            health_listen: args.health_listen,
            busy_poll_us: args.busy_poll_us,
        })
    }
}

/// Shared by the tunnel, its handlers and the health endpoints.
pub struct Context {
    pub server: String,
    /// The cluster the agent serves; absent only in load tests of the tunnel itself.
    pub kube: Option<kube::Cluster>,
    identity: RwLock<Identity>,
    connected: AtomicBool,
}

impl Context {
    pub fn new(server: String, kube: Option<kube::Cluster>, identity: Identity) -> Self {
        Self {
            server,
            kube,
            identity: RwLock::new(identity),
            connected: AtomicBool::new(false),
        }
    }

    pub fn identity(&self) -> Identity {
        self.identity
            .read()
            .map(|i| i.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }
    fn set_identity(&self, identity: Identity) {
        match self.identity.write() {
            Ok(mut slot) => *slot = identity,
            Err(p) => *p.into_inner() = identity,
        }
    }
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }
    fn set_connected(&self, up: bool) {
        self.connected.store(up, Ordering::Relaxed);
    }
}

pub fn user_agent() -> String {
    format!("ztka-agent/{}", env!("CARGO_PKG_VERSION"))
}

/// The `message` of an API error body, or the body itself.
pub fn error_message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(300).collect())
}

/// Runs the agent until `stop` is cancelled.
pub async fn run(config: AgentConfig, stop: CancellationToken) -> Result<(), AgentError> {
    let server = config.server.trim_end_matches('/').to_owned();
    if !server.starts_with("https://") {
        return Err(AgentError::Usage(format!(
            "--server must be an https:// URL, got {server:?}"
        )));
    }
    let malformed =
        |t: &Secret| crate::domain::cluster::bootstrap_token_cluster(t.expose()).is_none();
    if config.token.as_ref().is_some_and(malformed) {
        return Err(AgentError::Usage(
            "the bootstrap token is malformed (expected ztkab_<cluster id>_<secret>)".into(),
        ));
    }
    let roots = server_roots(config.server_ca.as_deref())?;
    let busy_poll = crate::busy_poll::BusyPoll::configured(config.busy_poll_us);
    busy_poll.spawn(stop.clone());
    let kube = kube::Cluster::connect(config.kubeconfig.as_deref(), busy_poll).await?;
    let store = match &config.state {
        StateLocation::Dir(dir) => IdentityStore::File(dir.join(identity::IDENTITY_FILE)),
        StateLocation::InCluster => IdentityStore::Secret {
            api: Box::new(::kube::Api::namespaced(
                kube.client.clone(),
                kube.default_namespace(),
            )),
            name: crate::manifest::IDENTITY_SECRET.to_owned(),
        },
    };
    // Under systemd (`Type=notify`, ztka-agent.service) the agent is up once its settings and
    // the cluster connection are in hand: registering and keeping the tunnel are retried from
    // here on, and may wait for the server as long as it takes.
    crate::sdnotify::notify("READY=1");
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            stop.cancelled().await;
            crate::sdnotify::notify("STOPPING=1");
        });
    }
    let anonymous = HttpsClient::new(roots.clone(), None, Duration::from_secs(30))
        .map_err(|e| AgentError::Usage(e.to_string()))?;
    let identity = match store.load().await? {
        Some(identity) => {
            tracing::info!(cluster = %identity.cluster, store = %store.describe(), "using the stored identity");
            identity
        }
        None => {
            let token = config.token.as_ref().ok_or_else(|| {
                AgentError::Usage(format!(
                    "no identity in {} yet and no bootstrap token (--token or --token-file)",
                    store.describe()
                ))
            })?;
            let identity = with_retries(&stop, || {
                identity::register(&anonymous, &server, token.expose())
            })
            .await?;
            store.save(&identity).await?;
            tracing::info!(cluster = %identity.cluster, project = %identity.project, "registered");
            identity
        }
    };
    match kube.accounts.adopt_existing().await {
        Ok(n) if n > 0 => {
            tracing::info!(accounts = n, "found service accounts from an earlier run")
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot list existing service accounts"),
    }
    let ctx = Arc::new(Context::new(server, Some(kube), identity));
    let sweeper = ctx.clone();
    let sweep_stop = stop.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(60)) => {}
                _ = sweep_stop.cancelled() => return,
            }
            if let Some(k) = &sweeper.kube {
                k.accounts.sweep(k.sa_ttl()).await;
            }
        }
    });
    if let Some(addr) = config.health_listen {
        spawn_health(addr, ctx.clone()).await?;
    }
    let store = Arc::new(store);
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    while !stop.is_cancelled() {
        if let Err(e) = renew_if_due(&ctx, &store, &roots).await {
            tracing::warn!(error = %e, "certificate renewal failed; will retry");
        }
        let client = tunnel_client(&ctx, &roots)?;
        // The certificate is renewed while the tunnel is up, too; the session then ends so
        // the next one presents the new certificate.
        let session = stop.child_token();
        let renewal = tokio::spawn(renew_during(
            ctx.clone(),
            store.clone(),
            roots.clone(),
            session.clone(),
        ));
        let outcome = tunnel::run_once(&ctx, &client, &session).await;
        // Ends the renewal task at its next wait; a renewal already under way finishes
        // (aborting it could lose a certificate the server has already admitted).
        session.cancel();
        let renewed = renewal.await.unwrap_or(false);
        match outcome {
            // However it ended, a tunnel that held for a while means the server is there:
            // reconnect quickly rather than where earlier failures left the backoff.
            Ok(up) if up > Duration::from_secs(10) => backoff.reset(),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "tunnel unavailable"),
        }
        if renewed && !stop.is_cancelled() {
            tracing::info!("reconnecting with the renewed certificate");
            backoff.reset();
            continue;
        }
        let wait = backoff.next_wait();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => {}
        }
    }
    Ok(())
}

fn server_roots(ca: Option<&std::path::Path>) -> Result<rustls::RootCertStore, AgentError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| {
                    AgentError::Usage(format!("cannot read --server-ca {}: {e}", path.display()))
                })?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(AgentError::Usage(format!(
                    "--server-ca {} holds no certificate",
                    path.display()
                )));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    Ok(roots)
}

fn tunnel_client(ctx: &Context, roots: &rustls::RootCertStore) -> Result<HttpsClient, AgentError> {
    let identity = ctx.identity().tls_identity()?;
    HttpsClient::new(roots.clone(), Some(identity), Duration::from_secs(30))
        .map_err(|e| AgentError::Identity(e.to_string()))
}

/// Renews the certificate if it is due; returns whether it did.
async fn renew_if_due(
    ctx: &Context,
    store: &IdentityStore,
    roots: &rustls::RootCertStore,
) -> Result<bool, AgentError> {
    let current = ctx.identity();
    if !current.needs_renewal(OffsetDateTime::now_utc()) {
        return Ok(false);
    }
    let client = tunnel_client(ctx, roots)?;
    let renewed = identity::renew(&client, &ctx.server, &current).await?;
    store.save(&renewed).await?;
    tracing::info!(not_after = %renewed.not_after, "renewed the agent certificate");
    ctx.set_identity(renewed);
    Ok(true)
}

/// Renews the certificate when it falls due during a tunnel session, then ends the session
/// (`session`) so the agent reconnects with it; returns whether it renewed. Failures are
/// retried every minute.
async fn renew_during(
    ctx: Arc<Context>,
    store: Arc<IdentityStore>,
    roots: rustls::RootCertStore,
    session: CancellationToken,
) -> bool {
    const RETRY: Duration = Duration::from_secs(60);
    // Wakes at least hourly, so a clock that jumps cannot push the renewal far out.
    const RECHECK: Duration = Duration::from_secs(3600);
    // The session was opened right after a check: wait for the due time.
    let until_due = || {
        let left = ctx.identity().renewal_due() - OffsetDateTime::now_utc();
        // A little past the due time, so `needs_renewal` holds when it wakes.
        Duration::try_from(left).unwrap_or_default().min(RECHECK) + Duration::from_millis(10)
    };
    let mut wait = until_due();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = session.cancelled() => return false,
        }
        match renew_if_due(&ctx, &store, &roots).await {
            Ok(true) => {
                session.cancel();
                return true;
            }
            Ok(false) => wait = until_due(),
            Err(e) => {
                tracing::warn!(error = %e, "certificate renewal failed; will retry");
                wait = RETRY;
            }
        }
    }
}

/// Retries `op` while the server is unreachable; refusals and usage errors end it.
async fn with_retries<T, F, Fut>(stop: &CancellationToken, mut op: F) -> Result<T, AgentError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, AgentError>>,
{
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    loop {
        match op().await {
            Err(AgentError::Unreachable(e)) if !stop.is_cancelled() => {
                tracing::warn!(error = %e, "server unreachable; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff.next_wait()) => {}
                    _ = stop.cancelled() => return Err(AgentError::Unreachable(e)),
                }
            }
            other => return other,
        }
    }
}

/// Exponential backoff with jitter: each wait is uniformly between half and all of
/// `min(cap, base · 2^attempt)`, so many agents restarting together spread out.
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            attempt: 0,
        }
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn next_wait(&mut self) -> Duration {
        use rand::Rng as _;
        let ceiling = self
            .base
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        let ms = ceiling.as_millis().max(2) as u64;
        Duration::from_millis(rand::rng().random_range(ms / 2..=ms))
    }
}

/// `/healthz` (the process runs) and `/readyz` (the tunnel is open), plain HTTP for the
/// kubelet's probes.
async fn spawn_health(addr: SocketAddr, ctx: Arc<Context>) -> Result<(), AgentError> {
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| AgentError::Usage(format!("cannot listen on {addr}: {e}")))?;
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ctx = ctx.clone();
                async move {
                    if ctx.connected() {
                        (axum::http::StatusCode::OK, "tunnel open")
                    } else {
                        (
                            axum::http::StatusCode::SERVICE_UNAVAILABLE,
                            "tunnel not open",
                        )
                    }
                }
            }),
        );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "health endpoint failed");
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_cap_with_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let waits: Vec<Duration> = (0..12).map(|_| b.next_wait()).collect();
        assert!(waits[0] >= Duration::from_millis(250) && waits[0] <= Duration::from_millis(500));
        assert!(waits.iter().all(|w| *w <= Duration::from_secs(30)));
        assert!(waits[11] >= Duration::from_secs(15));
        b.reset();
        assert!(b.next_wait() <= Duration::from_millis(500));
    }
}
