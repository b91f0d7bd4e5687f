//! Audit events: one envelope for `system` events (API actions, logins, kubeconfig
//! downloads, cluster registration, agent connect/disconnect) and `kube` events (one per
//! proxied Kubernetes request).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
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
    /// Recorded before the request was carried out (mutating Kubernetes requests); the
    /// outcome follows in a second event with the same request id.
    Pending,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::System => "system",
            EventKind::Kube => "kube",
        }
    }
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Denied => "denied",
            Outcome::Error => "error",
            Outcome::Pending => "pending",
        }
    }

    /// Classifies an HTTP status: 2xx/3xx success, 401/403 denied, 0 not yet known, anything
    /// else an error.
    pub fn from_status(status: u16) -> Self {
        match status {
            0 => Outcome::Pending,
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
    /// The values this event is indexed under, as `field=value`: a query filter on `field`
    /// looks up exactly these strings. Dense values are left out (see
    /// [`EventKind::is_indexed`]); filters on them are answered by scanning.
    pub fn index_keys(&self) -> Vec<String> {
        let e = self;
        let mut keys = Vec::with_capacity(8);
        if e.kind.is_indexed() {
            keys.push(format!("kind={}", e.kind.as_str()));
        }
        if action_is_indexed(&e.action) {
            keys.push(format!("action={}", e.action));
        }
        if e.outcome.is_indexed() {
            keys.push(format!("outcome={}", e.outcome.as_str()));
        }
        if let Some(name) = &e.actor.user_name {
            keys.push(format!("user={name}"));
        }
        if let Some(id) = e.actor.user_id {
            keys.push(format!("user_id={id}"));
        }
        if let Some(c) = &e.target.cluster {
            keys.push(format!("cluster={c}"));
        }
        if let Some(p) = &e.target.project {
            keys.push(format!("project={p}"));
        }
        if let Some(n) = &e.target.namespace {
            keys.push(format!("namespace={n}"));
        }
        keys
    }

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

impl EventKind {
    /// Only the rare kind is indexed: `kube` events are the bulk of the log, so a filter on
    /// them finds its matches at once by scanning, and indexing them would only cost writes.
    pub fn is_indexed(self) -> bool {
        self == EventKind::System
    }
}

impl Outcome {
    /// Only the rare outcomes are indexed (see [`EventKind::is_indexed`]).
    pub fn is_indexed(self) -> bool {
        self != Outcome::Success
    }
}

/// `kube.*` actions go with every proxied request (dense); other actions are indexed.
pub fn action_is_indexed(action: &str) -> bool {
    !action.starts_with("kube.")
}

impl AuditEvent {
    pub fn index_keys(&self) -> Vec<String> {
        self.event.index_keys()
    }

    /// Sets `hash` from `prev_hash` and the canonical encoding, and returns the stored
    /// encoding (the canonical JSON with the hash filled in).
    pub fn seal(&mut self) -> Result<Vec<u8>, serde_json::Error> {
        let body = self.event.encode_body()?;
        let (bytes, hash) = seal_body(self.seq, self.time, &body, &self.prev_hash)?;
        self.hash = hash;
        Ok(bytes)
    }
}

impl NewEvent {
    /// The event's own JSON, the bulk of the canonical encoding. It does not depend on the
    /// event's place in the chain, so appenders encode it before taking the chain lock.
    pub fn encode_body(&self) -> Result<Vec<u8>, serde_json::Error> {
        let mut out = Vec::with_capacity(1024);
        serde_json::to_writer(&mut out, self)?;
        Ok(out)
    }
}

/// Seals an event from its [`NewEvent::encode_body`]: returns the stored encoding and the
/// hash. The bytes are exactly `serde_json::to_vec` of the [`AuditEvent`] (whose `event` is
/// flattened between `time` and `prev_hash`), with `hash` empty while hashing and filled in
/// after, so [`chain_hash`] on the decoded event reproduces the hash.
pub fn seal_body(
    seq: u64,
    time: OffsetDateTime,
    body: &[u8],
    prev_hash: &str,
) -> Result<(Vec<u8>, String), serde_json::Error> {
    use std::io::Write as _;
    let fields = body
        .strip_prefix(b"{")
        .and_then(|b| b.strip_suffix(b"}"))
        .filter(|f| !f.is_empty())
        .ok_or_else(|| {
            <serde_json::Error as serde::ser::Error>::custom(
                "an event body must be a non-empty object",
            )
        })?;
    let mut out = Vec::with_capacity(body.len() + 256);
    write!(out, "{{\"seq\":{seq},\"time\":").map_err(serde_json::Error::io)?;
    time::serde::rfc3339::serialize(&time, &mut serde_json::Serializer::new(&mut out))?;
    out.push(b',');
    out.extend_from_slice(fields);
    out.extend_from_slice(b",\"prev_hash\":");
    serde_json::to_writer(&mut out, prev_hash)?;
    out.extend_from_slice(b",\"hash\":\"\"}");
    let hash = hash_canonical(prev_hash, &out);
    out.truncate(out.len() - 2);
    out.extend_from_slice(hash.as_bytes());
    out.extend_from_slice(b"\"}");
    Ok((out, hash))
}

fn hash_canonical(prev_hash: &str, canonical: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(canonical);
    let digest = h.finalize();
    // `hex::encode` goes through a char iterator; this is on every append's path.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    out
}

/// Hex SHA-256 over the previous hash and the event's canonical encoding: its JSON with
/// `hash` empty. Field order is fixed by the struct and `details` maps keep their stored key
/// order, so decoding and re-encoding a stored event reproduces the same bytes.
pub fn chain_hash(event: &AuditEvent) -> Result<String, serde_json::Error> {
    let canonical = if event.hash.is_empty() {
        serde_json::to_vec(event)?
    } else {
        let mut unhashed = event.clone();
        unhashed.hash.clear();
        serde_json::to_vec(&unhashed)?
    };
    Ok(hash_canonical(&event.prev_hash, &canonical))
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

/// The order of a query's results.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    #[default]
    NewestFirst,
    OldestFirst,
}

/// The largest page a query returns; bigger limits are clamped to it.
pub const MAX_PAGE: usize = 1000;
/// The page size when a query names none.
pub const DEFAULT_PAGE: usize = 50;

/// A filter over the audit log. Every field that is set must match; unset fields match all.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AuditQuery {
    /// Events at or after this time.
    #[serde(with = "time::serde::rfc3339::option")]
    pub from: Option<OffsetDateTime>,
    /// Events strictly before this time.
    #[serde(with = "time::serde::rfc3339::option")]
    pub to: Option<OffsetDateTime>,
    /// A user id or a user name (the actor).
    pub user: Option<String>,
    pub cluster: Option<String>,
    pub project: Option<String>,
    pub namespace: Option<String>,
    pub kind: Option<EventKind>,
    pub action: Option<String>,
    pub outcome: Option<Outcome>,
    /// Kubernetes verb (`get`, `list`, `watch`, …); kube events only.
    pub verb: Option<String>,
    /// Kubernetes resource (`pods`, `deployments`, …); kube events only.
    pub resource: Option<String>,
    /// HTTP status code.
    pub status: Option<u16>,
    /// Restricts the result to events of these projects (for project-scoped viewers).
    /// `Some(vec![])` matches nothing; events without a project are never visible here.
    /// Set by the server from the viewer's grants, never read from a request.
    #[serde(skip)]
    pub projects_visible: Option<Vec<String>>,
    /// The `next_cursor` of the previous page: continue after that sequence number.
    pub cursor: Option<u64>,
    /// Page size, 1..=[`MAX_PAGE`]; 0 means [`DEFAULT_PAGE`].
    pub limit: usize,
    pub order: Order,
}

impl AuditQuery {
    pub fn page_size(&self) -> usize {
        match self.limit {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        }
    }

    /// Whether `event` passes every filter. Indexes narrow the candidates; this is the
    /// final word, so a query never depends on an index being complete.
    pub fn matches(&self, e: &AuditEvent) -> bool {
        let ev = &e.event;
        let opt_eq = |want: &Option<String>, have: &Option<String>| match want {
            Some(w) => have.as_deref() == Some(w.as_str()),
            None => true,
        };
        let time_ok = self.from.is_none_or(|f| e.time >= f) && self.to.is_none_or(|t| e.time < t);
        let user_ok = self.user.as_deref().is_none_or(|u| {
            ev.actor.user_name.as_deref() == Some(u)
                || ev.actor.user_id.is_some_and(|id| id.to_string() == u)
        });
        let kube = ev.kube.as_ref();
        time_ok
            && user_ok
            && opt_eq(&self.cluster, &ev.target.cluster)
            && opt_eq(&self.project, &ev.target.project)
            && opt_eq(&self.namespace, &ev.target.namespace)
            && self.kind.is_none_or(|k| ev.kind == k)
            && self.action.as_deref().is_none_or(|a| ev.action == a)
            && self.outcome.is_none_or(|o| ev.outcome == o)
            && self.status.is_none_or(|s| ev.status == s)
            && self
                .verb
                .as_deref()
                .is_none_or(|v| kube.is_some_and(|k| k.verb == v))
            && self
                .resource
                .as_deref()
                .is_none_or(|r| kube.is_some_and(|k| k.resource == r))
            && self.projects_visible.as_ref().is_none_or(|ps| {
                ev.target
                    .project
                    .as_ref()
                    .is_some_and(|p| ps.iter().any(|v| v == p))
            })
    }
}

/// One page of query results.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditPage {
    pub events: Vec<AuditEvent>,
    /// Pass as `cursor` to get the next page; `None` when this page is the last.
    pub next_cursor: Option<u64>,
}

/// Where the chain starts after the retention sweep removed older events: the last
/// removed event's sequence number and hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    pub seq: u64,
    pub hash: String,
}

/// The result of walking the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum VerifyReport {
    Intact {
        /// Events checked.
        count: u64,
        /// The newest event (or the anchor, when retention removed everything).
        head_seq: u64,
        head_hash: String,
        anchor: Option<Anchor>,
    },
    Broken {
        /// Sequence number (table key) of the first event that does not link.
        seq: u64,
        reason: String,
    },
}

impl VerifyReport {
    pub fn is_intact(&self) -> bool {
        matches!(self, VerifyReport::Intact { .. })
    }
}

impl std::fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VerifyReport::Intact {
                count,
                head_seq,
                head_hash,
                anchor,
            } => {
                write!(
                    f,
                    "OK: {count} events verified; head seq {head_seq} hash {head_hash}"
                )?;
                if let Some(a) = anchor {
                    write!(f, " (chain anchored at seq {} by retention)", a.seq)?;
                }
                Ok(())
            }
            VerifyReport::Broken { seq, reason } => {
                write!(f, "BROKEN at seq {seq}: {reason}")
            }
        }
    }
}

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

    /// A cluster, with its project.
    pub fn cluster(cluster: &super::cluster::Cluster, project: &str) -> Self {
        Self {
            kind: "cluster".into(),
            name: Some(cluster.name.clone()),
            project: Some(project.to_owned()),
            cluster: Some(cluster.name.clone()),
            namespace: None,
        }
    }

    pub fn in_project(mut self, project: &str) -> Self {
        self.project = Some(project.to_owned());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_seal_matches_chain_hash_and_plain_encoding() {
        let mut e = AuditEvent {
            seq: 7,
            time: OffsetDateTime::UNIX_EPOCH,
            event: NewEvent::system("user.create", Target::default()),
            prev_hash: GENESIS_HASH.to_owned(),
            hash: String::new(),
        };
        e.event.details = serde_json::json!({"hash": "", "b": [1, 2]});
        let bytes = e.seal().unwrap();
        assert_eq!(bytes, serde_json::to_vec(&e).unwrap());
        assert_eq!(chain_hash(&e).unwrap(), e.hash);
        let unhashed = AuditEvent {
            hash: String::new(),
            ..e.clone()
        };
        let canonical = [
            GENESIS_HASH.as_bytes(),
            &serde_json::to_vec(&unhashed).unwrap(),
        ]
        .concat();
        assert_eq!(e.hash, hex::encode(Sha256::digest(canonical)));
    }

    #[test]
    fn audit_seal_of_every_shape_is_the_plain_encoding() {
        let mut shapes = vec![NewEvent::system(
            "auth.login",
            Target::user("a\"b\\c\u{1}é"),
        )];
        let mut kube = NewEvent::system("kube.request", Target::default()).with_outcome(403);
        kube.kind = EventKind::Kube;
        kube.actor = Actor {
            user_id: Some(Uuid::from_u128(7)),
            user_name: Some("alice".into()),
            groups: vec!["dev".into(), "ops".into()],
            client_addr: Some("10.0.0.1:5".into()),
            user_agent: Some("kubectl/v1.33".into()),
        };
        kube.request_id = "r-1".into();
        kube.details = serde_json::json!({"z": 1, "a": {"hash": ""}, "n": null});
        kube.kube = Some(KubeRequest {
            method: "GET".into(),
            verb: "list".into(),
            duration_ms: 0.1 + 0.2,
            bytes: u64::MAX,
            ..KubeRequest::default()
        });
        shapes.push(kube);
        for (i, event) in shapes.into_iter().enumerate() {
            let mut e = AuditEvent {
                seq: u64::MAX - i as u64,
                time: OffsetDateTime::now_utc(),
                event,
                prev_hash: "ab".repeat(32),
                hash: String::new(),
            };
            let bytes = e.seal().unwrap();
            assert_eq!(bytes, serde_json::to_vec(&e).unwrap());
            let decoded: AuditEvent = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(chain_hash(&decoded).unwrap(), e.hash);
        }
    }
}
