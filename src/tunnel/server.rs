//! The control plane's end of a tunnel: after the upgrade, an HTTP/2 client over the agent's
//! connection, registered in [`super::Tunnels`] until the connection ends, the server closes
//! it, or the agent stops answering heartbeats.

use axum::body::Body;
use http_body_util::BodyExt;
use hyper::client::conn::http2::SendRequest;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioTimer;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    ACCOUNTS_PATH, AgentAccounts, HEARTBEAT_INTERVAL, HEARTBEAT_PATH, HEARTBEAT_TIMEOUT, Heartbeat,
    KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT,
};
use crate::domain::audit::{Actor, Durability, NewEvent, Target};
use crate::domain::cluster::Cluster;
use crate::state::AppState;

/// Largest heartbeat answer read from an agent.
const MAX_HEARTBEAT_BYTES: usize = 16 * 1024;

/// Who the tunnel belongs to, for the registry and the audit log.
pub struct TunnelOwner {
    pub cluster: Cluster,
    pub project: String,
    pub actor: Actor,
    pub agent_version: Option<String>,
    /// When the certificate the agent connected with expires: the tunnel ends then (a
    /// renewing agent reconnects with its new certificate before).
    pub certificate_expires: Option<OffsetDateTime>,
}

/// Runs one tunnel to completion. Spawned by the upgrade handler on the shutdown tracker,
/// so a draining server waits for the disconnect to be recorded.
pub async fn run(state: AppState, owner: TunnelOwner, upgrade: OnUpgrade) {
    let io = match upgrade.await {
        Ok(io) => io,
        Err(e) => {
            tracing::debug!(cluster = %owner.cluster.name, error = %e, "tunnel upgrade failed");
            return;
        }
    };
    // hyper's per-request futures run on this task, beside the connection (see `executor`).
    let (mut tasks, executor) = super::executor::TunnelTasks::new();
    let handshake = hyper::client::conn::http2::Builder::new(executor)
        .timer(TokioTimer::new())
        .keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .max_concurrent_reset_streams(1024)
        .initial_stream_window_size(1 << 20)
        .initial_connection_window_size(4 << 20)
        .handshake::<_, Body>(super::coalesce::Coalesce::new(io))
        .await;
    let (sender, conn) = match handshake {
        Ok(pair) => pair,
        Err(e) => {
            tracing::info!(cluster = %owner.cluster.name, error = %e, "tunnel handshake failed");
            return;
        }
    };
    let cluster_id = owner.cluster.id;
    let registration =
        state
            .tunnels
            .connect(cluster_id, sender.clone(), owner.agent_version.clone());
    tracing::info!(cluster = %owner.cluster.name, "agent connected");

    // The connection, the heartbeats and the per-request futures run from here on (the
    // connect event's durable write included); `conn` and `sender` move into this future
    // and end with it.
    let (reason, ending) = tasks
        .drive(async {
            audit(&state, &owner, "agent.connect", serde_json::json!({})).await;
            let beats = heartbeats(&state, cluster_id, registration.generation, sender);
            tokio::pin!(conn, beats);
            let expiry = async {
                match owner.certificate_expires {
                    Some(at) => {
                        let left = at - OffsetDateTime::now_utc();
                        tokio::time::sleep(std::time::Duration::try_from(left).unwrap_or_default())
                            .await
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = expiry => ("the agent's certificate expired".to_owned(), Ending::Cut),
                r = conn.as_mut() => match r {
                    Ok(()) => ("the agent closed the tunnel".to_owned(), Ending::Drain),
                    Err(e) => (format!("the connection failed: {e}"), Ending::Cut),
                },
                why = beats.as_mut() => (why, Ending::Cut),
                _ = registration.close.cancelled() => ("closed by the server".to_owned(), Ending::Cut),
                _ = state.shutdown.triggered() => {
                    ("the server is shutting down".to_owned(), Ending::Drain)
                }
            }
        })
        .await;
    // No new request is routed here from now on.
    let last = state
        .tunnels
        .disconnect(cluster_id, registration.generation);
    tracing::info!(cluster = %owner.cluster.name, %reason, "agent disconnected");
    if let Some(status) = last {
        remember(
            &state,
            cluster_id,
            status.agent_version,
            status.kubernetes_version,
        )
        .await;
    }
    audit(
        &state,
        &owner,
        "agent.disconnect",
        serde_json::json!({ "reason": reason }),
    )
    .await;
    // The disconnect is on record before the connection ends (an agent that sees its tunnel
    // close finds it in the log, and a server that stops draining has written it).
    if ending == Ending::Drain {
        // Answers still on their way (an agent closing gracefully finishes its streams;
        // a draining server lets its clients' requests finish) get the grace period.
        let grace = state.config.shutdown_grace;
        if tokio::time::timeout(grace, tasks.finish()).await.is_err() {
            tracing::info!(cluster = %owner.cluster.name, ?grace, "tunnel streams still open after the grace period; closing them");
        }
    }
    // The connection, and whatever is still open on it, ends here.
    drop(tasks);
}

/// How a tunnel's open streams end with it.
#[derive(PartialEq, Eq)]
enum Ending {
    /// At once: the agent is gone, unresponsive or no longer allowed.
    Cut,
    /// After they finish, within the shutdown grace period.
    Drain,
}

/// Asks the agent for a heartbeat now and every interval; returns why it stopped answering.
async fn heartbeats(
    state: &AppState,
    cluster: Uuid,
    generation: u64,
    mut sender: SendRequest<Body>,
) -> String {
    let mut first = true;
    loop {
        if !first {
            tokio::time::sleep(HEARTBEAT_INTERVAL).await;
        }
        let beat = match tokio::time::timeout(HEARTBEAT_TIMEOUT, heartbeat(&mut sender)).await {
            Ok(Ok(beat)) => beat,
            Ok(Err(e)) => return format!("heartbeat failed: {e}"),
            Err(_) => {
                return format!(
                    "no heartbeat answer within {}s",
                    HEARTBEAT_TIMEOUT.as_secs()
                );
            }
        };
        let versions = (
            Some(beat.agent_version.clone()),
            beat.kubernetes_version.clone(),
        );
        state.tunnels.heartbeat(cluster, generation, beat);
        if first {
            // Versions are kept on the cluster record so an offline cluster still shows them.
            remember(state, cluster, versions.0, versions.1).await;
            tokio::spawn(catch_up(state.clone(), cluster, sender.clone()));
        }
        first = false;
    }
}

/// Largest list of service accounts read from an agent (some 200,000 users).
const MAX_ACCOUNTS_BYTES: usize = 8 << 20;

/// Once per tunnel: asks the agent which users it keeps service accounts for and tells it
/// each one's current access (see [`crate::relay::agent_connected`]).
async fn catch_up(state: AppState, cluster: Uuid, mut sender: SendRequest<Body>) {
    let asked = get_json::<AgentAccounts>(&mut sender, ACCOUNTS_PATH, MAX_ACCOUNTS_BYTES);
    match tokio::time::timeout(HEARTBEAT_TIMEOUT * 3, asked).await {
        Ok(Ok(accounts)) => crate::relay::agent_connected(&state, cluster, accounts.users).await,
        Ok(Err(e)) => {
            tracing::warn!(%cluster, error = %e, "cannot read the agent's service accounts")
        }
        Err(_) => tracing::warn!(%cluster, "the agent did not list its service accounts"),
    }
}

async fn heartbeat(sender: &mut SendRequest<Body>) -> Result<Heartbeat, String> {
    get_json(sender, HEARTBEAT_PATH, MAX_HEARTBEAT_BYTES).await
}

/// `GET path` on the agent, its answer (at most `limit` bytes) read as JSON.
async fn get_json<T: serde::de::DeserializeOwned>(
    sender: &mut SendRequest<Body>,
    path: &str,
    limit: usize,
) -> Result<T, String> {
    sender.ready().await.map_err(|e| e.to_string())?;
    let req = hyper::Request::get(format!("http://agent{path}"))
        .body(Body::empty())
        .map_err(|e| e.to_string())?;
    let res = sender.send_request(req).await.map_err(|e| e.to_string())?;
    if !res.status().is_success() {
        return Err(format!("the agent answered {}", res.status()));
    }
    let body = http_body_util::Limited::new(res.into_body(), limit)
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| format!("unreadable answer to {path}: {e}"))
}

/// Stores what the agent reported and when it was last seen.
async fn remember(
    state: &AppState,
    cluster: Uuid,
    agent_version: Option<String>,
    kubernetes_version: Option<String>,
) {
    let result = state
        .store
        .write(move |txn| {
            crate::store::clusters::modify(txn, cluster, |c| {
                c.last_seen = Some(OffsetDateTime::now_utc());
                if agent_version.is_some() {
                    c.agent_version = agent_version;
                }
                if kubernetes_version.is_some() {
                    c.kubernetes_version = kubernetes_version;
                }
            })
        })
        .await;
    match result {
        Ok(_) | Err(crate::store::StoreError::NotFound) => {}
        Err(e) => tracing::warn!(%cluster, error = %e, "cannot record agent status"),
    }
}

async fn audit(state: &AppState, owner: &TunnelOwner, action: &str, details: serde_json::Value) {
    let mut event = NewEvent::system(action, Target::cluster(&owner.cluster, &owner.project));
    event.actor = owner.actor.clone();
    event.details = details;
    if let Err(e) = state.audit.append(event, Durability::Durable).await {
        tracing::error!(error = %e, "cannot record a tunnel event");
    }
}
