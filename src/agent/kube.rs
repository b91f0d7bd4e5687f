//! The agent's view of its cluster: the kube-apiserver it forwards to, and its own client
//! (with the agent's service-account credentials) for the few things it does itself.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::AgentError;

/// How long a read of `/version` is reused in heartbeats.
const VERSION_TTL: Duration = Duration::from_secs(60);

pub struct Cluster {
    pub client: kube::Client,
    pub config: kube::Config,
    /// Where user requests go, with their own tokens.
    pub upstream: super::upstream::Upstream,
    pub accounts: super::accounts::Accounts,
    /// Keeps a worker polling while relayed requests come and go.
    pub busy_poll: crate::busy_poll::BusyPoll,
    version: Mutex<Option<(Instant, String)>>,
    /// Seconds an unused service account is kept (the server's setting, sent with requests).
    sa_ttl_secs: std::sync::atomic::AtomicU64,
}

impl Cluster {
    /// In-cluster configuration, or the given kubeconfig file, or `KUBECONFIG`/`~/.kube/config`.
    pub async fn connect(
        kubeconfig: Option<&Path>,
        busy_poll: crate::busy_poll::BusyPoll,
    ) -> Result<Self, AgentError> {
        let config = match kubeconfig {
            Some(path) => {
                let file = kube::config::Kubeconfig::read_from(path).map_err(|e| {
                    AgentError::Usage(format!("cannot read kubeconfig {}: {e}", path.display()))
                })?;
                kube::Config::from_custom_kubeconfig(file, &Default::default())
                    .await
                    .map_err(|e| AgentError::Usage(format!("kubeconfig {}: {e}", path.display())))?
            }
            None => kube::Config::infer().await.map_err(|e| {
                AgentError::Usage(format!(
                    "no Kubernetes configuration (not in a cluster, and no kubeconfig): {e}"
                ))
            })?,
        };
        let client = kube::Client::try_from(config.clone())
            .map_err(|e| AgentError::Usage(format!("Kubernetes client: {e}")))?;
        let upstream = super::upstream::Upstream::new(&config)?;
        let accounts = super::accounts::Accounts::new(client.clone());
        Ok(Self {
            upstream,
            accounts,
            busy_poll,
            client,
            config,
            version: Mutex::new(None),
            sa_ttl_secs: std::sync::atomic::AtomicU64::new(8 * 3600),
        })
    }

    pub fn set_sa_ttl(&self, ttl: Duration) {
        self.sa_ttl_secs
            .store(ttl.as_secs(), std::sync::atomic::Ordering::Relaxed);
    }

    pub fn sa_ttl(&self) -> Duration {
        Duration::from_secs(self.sa_ttl_secs.load(std::sync::atomic::Ordering::Relaxed))
    }

    pub fn default_namespace(&self) -> &str {
        &self.config.default_namespace
    }

    /// The API server's `gitVersion`, cached for a minute; `None` if it cannot be read.
    pub async fn version(&self) -> Option<String> {
        let cached = self
            .version
            .lock()
            .ok()
            .and_then(|v| v.clone())
            .filter(|(at, _)| at.elapsed() < VERSION_TTL);
        if let Some((_, v)) = cached {
            return Some(v);
        }
        let read = tokio::time::timeout(Duration::from_secs(5), self.client.apiserver_version());
        match read.await {
            Ok(Ok(info)) => {
                if let Ok(mut slot) = self.version.lock() {
                    *slot = Some((Instant::now(), info.git_version.clone()));
                }
                Some(info.git_version)
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot read the Kubernetes version");
                None
            }
            Err(_) => {
                tracing::warn!("reading the Kubernetes version timed out");
                None
            }
        }
    }
}
