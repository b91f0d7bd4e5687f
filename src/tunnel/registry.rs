//! Live tunnels by cluster id. At most one tunnel per cluster: a new connection replaces the
//! old one, and a tunnel only ever removes its own entry (by generation), so a late
//! disconnect of a replaced tunnel cannot take the new one offline.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Body;
use hyper::client::conn::http2::SendRequest;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::Heartbeat;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TunnelStatus {
    pub online: bool,
    pub connected_since: Option<OffsetDateTime>,
    pub last_heartbeat: Option<OffsetDateTime>,
    pub agent_version: Option<String>,
    pub kubernetes_version: Option<String>,
}

struct Live {
    generation: u64,
    sender: SendRequest<Body>,
    close: CancellationToken,
    status: TunnelStatus,
}

#[derive(Default)]
pub struct Tunnels {
    live: Mutex<HashMap<Uuid, Live>>,
    generations: AtomicU64,
}

/// A registered tunnel's handle for its own task.
pub struct Registration {
    pub generation: u64,
    pub close: CancellationToken,
}

impl Tunnels {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Live>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a connected tunnel, closing any earlier one for the same cluster.
    pub fn connect(
        &self,
        cluster: Uuid,
        sender: SendRequest<Body>,
        agent_version: Option<String>,
    ) -> Registration {
        let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        let close = CancellationToken::new();
        let now = OffsetDateTime::now_utc();
        let live = Live {
            generation,
            sender,
            close: close.clone(),
            status: TunnelStatus {
                online: true,
                connected_since: Some(now),
                last_heartbeat: None,
                agent_version,
                kubernetes_version: None,
            },
        };
        if let Some(old) = self.lock().insert(cluster, live) {
            old.close.cancel();
        }
        Registration { generation, close }
    }

    /// Removes the tunnel if it is still the registered one; returns its last status.
    pub fn disconnect(&self, cluster: Uuid, generation: u64) -> Option<TunnelStatus> {
        let mut live = self.lock();
        if live.get(&cluster).map(|l| l.generation) == Some(generation) {
            return live.remove(&cluster).map(|l| l.status);
        }
        None
    }

    pub fn heartbeat(&self, cluster: Uuid, generation: u64, beat: Heartbeat) {
        if let Some(l) = self.lock().get_mut(&cluster)
            && l.generation == generation
        {
            l.status.last_heartbeat = Some(OffsetDateTime::now_utc());
            l.status.agent_version = Some(beat.agent_version);
            if beat.kubernetes_version.is_some() {
                l.status.kubernetes_version = beat.kubernetes_version;
            }
        }
    }

    /// Closes a cluster's tunnel (cluster deleted, agent certificate revoked).
    pub fn close(&self, cluster: Uuid) {
        if let Some(l) = self.lock().remove(&cluster) {
            l.close.cancel();
        }
    }

    pub fn status(&self, cluster: Uuid) -> Option<TunnelStatus> {
        self.lock().get(&cluster).map(|l| l.status.clone())
    }

    /// A handle to send requests to the cluster's agent, if it is connected.
    pub fn sender(&self, cluster: Uuid) -> Option<SendRequest<Body>> {
        self.lock().get(&cluster).map(|l| l.sender.clone())
    }

    pub fn online_count(&self) -> usize {
        self.lock().len()
    }
}
