//! Audit events: one envelope for `system` events (API actions, logins, kubeconfig
//! downloads, cluster registration, agent connect/disconnect) and `kube` events (one per
//! proxied Kubernetes request).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    System,
    Kube,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    Denied,
    Error,
}

impl Outcome {
    /// Classifies an HTTP status: 2xx/3xx success, 401/403 denied, anything else an error.
    pub fn from_status(status: u16) -> Self {
        match status {
            200..=399 => Outcome::Success,
            401 | 403 => Outcome::Denied,
            _ => Outcome::Error,
        }
    }
}

/// Who did it, as established by the server (never as claimed by the client).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<Uuid>,
    /// The user name; for failed logins, the name that was tried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_addr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
}

/// What it was done to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// `user`, `group`, `project`, `cluster`, `grant`, `token`, `settings`, `session`, …
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// The Kubernetes side of a `kube` event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KubeRequest {
    pub method: String,
    pub verb: String,
    #[serde(default)]
    pub api_group: String,
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub resource: String,
    #[serde(default)]
    pub subresource: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub path: String,
    #[serde(default)]
    pub bytes: u64,
    #[serde(default)]
    pub duration_ms: f64,
}

/// An event as a caller hands it to the audit log; sequence, time and hashes are assigned
/// by the log's writer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    pub kind: EventKind,
    /// Dotted verb phrase, e.g. `auth.login`, `user.create`, `grant.delete`, `kube.request`.
    pub action: String,
    pub actor: Actor,
    pub target: Target,
    pub outcome: Outcome,
    /// HTTP status (or 0 where none applies).
    pub status: u16,
    #[serde(default)]
    pub request_id: String,
    /// Extra, action-specific facts. Never secrets.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub details: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube: Option<KubeRequest>,
}

impl NewEvent {
    pub fn system(action: impl Into<String>, target: Target) -> Self {
        Self {
            kind: EventKind::System,
            action: action.into(),
            actor: Actor::default(),
            target,
            outcome: Outcome::Success,
            status: 200,
            request_id: String::new(),
            details: serde_json::Value::Null,
            kube: None,
        }
    }

    pub fn with_outcome(mut self, status: u16) -> Self {
        self.status = status;
        self.outcome = Outcome::from_status(status);
        self
    }
}

/// A stored event: the chain links it to its predecessor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub seq: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    #[serde(flatten)]
    pub event: NewEvent,
    /// Hex SHA-256 of the previous event (the anchor's, or 64 zeros for the first event).
    pub prev_hash: String,
    /// Hex SHA-256 over `prev_hash` and this event's canonical encoding.
    pub hash: String,
}

/// Whether `append` returns after the event is on disk, or once it is queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Returns after the commit that contains the event: mutating actions use this.
    Durable,
    /// Returns once queued; the event is committed within the group-commit window.
    Fast,
}

pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

impl Target {
    pub fn of(kind: &str, name: &str) -> Self {
        Self {
            kind: kind.to_owned(),
            name: Some(name.to_owned()),
            ..Self::default()
        }
    }

    pub fn user(name: &str) -> Self {
        Self::of("user", name)
    }

    pub fn in_project(mut self, project: &str) -> Self {
        self.project = Some(project.to_owned());
        self
    }
}
