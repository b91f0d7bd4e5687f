//! The agent tunnel: one TLS connection per cluster, opened by the agent, on which roles are
//! reversed. The agent sends an HTTP/1.1 `Upgrade: ztka-tunnel/1` request with its client
//! certificate; after `101 Switching Protocols` the agent is the HTTP/2 *server* and the
//! control plane is the HTTP/2 client. Flow control, stream multiplexing, PING keepalive and
//! GOAWAY are HTTP/2's own.
//!
//! This module holds what both ends agree on and the server's registry of live tunnels.

pub mod coalesce;
pub mod executor;
pub mod registry;
pub mod server;

use std::time::Duration;

pub use registry::{TunnelStatus, Tunnels};

/// The `Upgrade` token of the tunnel request.
pub const UPGRADE_PROTOCOL: &str = "ztka-tunnel/1";
/// Header on the tunnel request carrying the agent's version.
pub const AGENT_VERSION_HEADER: &str = "x-ztka-agent-version";

/// Paths under `/agent/v1` on the server.
pub fn tunnel_path(cluster_id: uuid::Uuid) -> String {
    format!("/agent/v1/clusters/{cluster_id}/tunnel")
}
pub fn renew_path(cluster_id: uuid::Uuid) -> String {
    format!("/agent/v1/clusters/{cluster_id}/renew")
}
pub const REGISTER_PATH: &str = "/agent/v1/register";

/// Paths the agent serves on the tunnel.
pub const HEARTBEAT_PATH: &str = "/v1/heartbeat";
/// The users the agent keeps service accounts for ([`AgentAccounts`]).
pub const ACCOUNTS_PATH: &str = "/v1/accounts";
/// Kubernetes API requests: `/k8s/<path on the API server>`.
pub const KUBE_PREFIX: &str = "/k8s";
/// `POST /v1/users/{id}/access` with a [`UserAccess`]: reconcile (or remove) a user's
/// service account after their access changed.
pub fn user_access_path(user: uuid::Uuid) -> String {
    format!("/v1/users/{user}/access")
}

/// Headers the server sets on relayed requests (any a client sent are removed first).
pub const USER_ID_HEADER: &str = "x-ztka-user-id";
pub const USER_NAME_HEADER: &str = "x-ztka-user";
/// JSON [`crate::domain::access::ClusterAccess`].
pub const ACCESS_HEADER: &str = "x-ztka-access";
/// Seconds an unused service account is kept.
pub const SA_TTL_HEADER: &str = "x-ztka-sa-ttl";
/// The client's `Upgrade` value: HTTP/2 has no upgrades, so the tunnel carries it here and
/// the stream's bodies carry the upgraded bytes.
pub const UPGRADE_HEADER: &str = "x-ztka-upgrade";
/// On the agent's answer to an upgrade: the API server's status (101 when it switched).
pub const STATUS_HEADER: &str = "x-ztka-status";

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct UserAccess {
    pub user: String,
    pub access: crate::domain::access::ClusterAccess,
}

/// How often the server asks the agent for a heartbeat, and how long it waits.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 PING on both ends: a dead peer is noticed within interval + timeout (20 s).
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the agent answers on [`HEARTBEAT_PATH`].
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Heartbeat {
    pub agent_version: String,
    #[serde(default)]
    pub kubernetes_version: Option<String>,
}

/// What the agent answers on [`ACCOUNTS_PATH`]: the users it keeps a service account for.
/// The server asks once per tunnel and answers with each one's current access, so the
/// accounts of users who lost it while the agent was away go at once.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct AgentAccounts {
    pub users: Vec<uuid::Uuid>,
}

/// Registration request and answer on [`REGISTER_PATH`] (and the renewal path, which takes
/// only `csr`).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    pub token: String,
    pub csr: String,
    #[serde(default)]
    pub agent_version: Option<String>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    pub csr: String,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct IssuedIdentity {
    pub cluster_id: uuid::Uuid,
    pub cluster: String,
    pub project: String,
    /// PEM client certificate.
    pub certificate: String,
    /// PEM of the CA that signs agent certificates.
    pub ca: String,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: time::OffsetDateTime,
}

/// A Kubernetes `Status` failure, the error shape kubectl understands; both ends answer
/// with it.
pub fn kube_status(
    code: hyper::StatusCode,
    reason: &str,
    message: impl Into<String>,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let body = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message.into(),
        "reason": reason,
        "code": code.as_u16(),
    });
    (code, axum::Json(body)).into_response()
}

/// Connection-specific headers, never forwarded in either direction, and ours.
pub fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "http2-settings"
    ) || name.starts_with("x-ztka-")
}

/// Whether a Kubernetes query sets the boolean parameter `name` (`watch`, `follow`): bare, or
/// with a value Go's `strconv.ParseBool` reads as true, as the API server decodes it.
pub fn query_flag(query: Option<&str>, name: &str) -> bool {
    query.is_some_and(|q| {
        q.split('&').any(|pair| match pair.split_once('=') {
            Some((key, value)) => {
                key == name && matches!(value, "1" | "t" | "T" | "true" | "TRUE" | "True")
            }
            None => pair == name,
        })
    })
}

/// A client's request header as it travels towards the API server: None when it is
/// stripped (see [`is_stripped_request_header`]); `Sec-WebSocket-Protocol` loses every
/// bearer-token subprotocol (the API server takes a token from there too, for browsers,
/// which cannot set `Authorization` on a WebSocket) and is dropped when nothing is left.
/// The relay applies this to kubectl's request; the agent again before the API server.
pub fn forwarded_request_header(
    name: &axum::http::HeaderName,
    value: &axum::http::HeaderValue,
) -> Option<axum::http::HeaderValue> {
    if is_stripped_request_header(name.as_str()) {
        return None;
    }
    if name != axum::http::header::SEC_WEBSOCKET_PROTOCOL {
        return Some(value.clone());
    }
    let protocols = value.to_str().ok()?;
    let kept: Vec<&str> = protocols
        .split(',')
        .map(str::trim)
        .filter(|p| {
            !p.is_empty()
                && !p
                    .get(..BEARER_PROTOCOL.len())
                    .is_some_and(|head| head.eq_ignore_ascii_case(BEARER_PROTOCOL))
        })
        .collect();
    if kept.is_empty() {
        return None;
    }
    axum::http::HeaderValue::from_str(&kept.join(", ")).ok()
}

/// The WebSocket subprotocol prefix that carries a bearer token.
const BEARER_PROTOCOL: &str = "base64url.bearer.authorization.k8s.io.";

/// Request headers that never travel from a client towards the API server: hop-by-hop
/// ones, any credential or identity a client could claim, and `Host`.
pub fn is_stripped_request_header(name: &str) -> bool {
    is_hop_by_hop(name)
        || matches!(
            name,
            "authorization" | "proxy-authorization" | "cookie" | "host"
        )
        || name.starts_with("impersonate-")
        || name.starts_with("x-remote-")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderName, HeaderValue};

    fn forwarded(name: &str, value: &str) -> Option<String> {
        forwarded_request_header(
            &HeaderName::from_bytes(name.as_bytes()).unwrap(),
            &HeaderValue::from_str(value).unwrap(),
        )
        .map(|v| v.to_str().unwrap().to_owned())
    }

    #[test]
    fn credentials_and_identities_from_a_client_do_not_travel() {
        for name in [
            "authorization",
            "proxy-authorization",
            "cookie",
            "host",
            "impersonate-user",
            "impersonate-group",
            "impersonate-uid",
            "impersonate-extra-scopes",
            "x-remote-user",
            "x-remote-group",
            "x-ztka-access",
            "x-ztka-user-id",
            "connection",
            "upgrade",
        ] {
            assert_eq!(forwarded(name, "x"), None, "{name}");
        }
        for (name, value) in [
            ("accept", "application/json"),
            ("user-agent", "kubectl/v1.33"),
            ("content-type", "application/apply-patch+yaml"),
        ] {
            assert_eq!(forwarded(name, value).as_deref(), Some(value), "{name}");
        }
    }

    #[test]
    fn a_bearer_token_subprotocol_is_removed_and_the_rest_kept() {
        let token = "base64url.bearer.authorization.k8s.io.ZXlKaGJHY2lPaUpT";
        assert_eq!(
            forwarded(
                "sec-websocket-protocol",
                &format!("v5.channel.k8s.io, {token}, v4.channel.k8s.io")
            )
            .as_deref(),
            Some("v5.channel.k8s.io, v4.channel.k8s.io")
        );
        assert_eq!(forwarded("sec-websocket-protocol", token), None);
        assert_eq!(
            forwarded(
                "sec-websocket-protocol",
                "BASE64URL.Bearer.Authorization.K8S.io.eA,v5.channel.k8s.io"
            )
            .as_deref(),
            Some("v5.channel.k8s.io")
        );
        assert_eq!(
            forwarded("sec-websocket-protocol", "v5.channel.k8s.io").as_deref(),
            Some("v5.channel.k8s.io")
        );
    }
}
