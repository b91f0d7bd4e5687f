//! What the API returns: views of domain records without secrets.

use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::cluster::Cluster;
use crate::domain::org::{ApiToken, Grant, Group, Project, Role, Subject};
use crate::domain::user::{User, UserKind};
use crate::tunnel::TunnelStatus;

#[derive(Debug, Serialize)]
pub struct UserView {
    pub id: Uuid,
    pub name: String,
    pub kind: UserKind,
    pub display_name: String,
    pub email: String,
    pub disabled: bool,
    pub must_change_password: bool,
    pub kubeconfig_validity_secs: Option<u64>,
    /// For SSO users: the provider they last signed in through.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sso_provider: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        Self {
            id: u.id,
            name: u.name.clone(),
            kind: u.kind,
            display_name: u.display_name.clone(),
            email: u.email.clone(),
            disabled: u.disabled,
            must_change_password: u.must_change_password,
            kubeconfig_validity_secs: u.kubeconfig_validity_secs,
            sso_provider: u.sso.as_ref().map(|l| l.provider.clone()),
            created_at: u.created_at,
            updated_at: u.updated_at,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct GroupView {
    pub id: Uuid,
    pub name: String,
    pub description: String,
    pub member_count: usize,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl From<&Group> for GroupView {
    fn from(g: &Group) -> Self {
        Self {
            id: g.id,
            name: g.name.clone(),
            description: g.description.clone(),
            member_count: g.members.len(),
            created_at: g.created_at,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ProjectView {
    pub id: Uuid,
    pub name: String,
    pub description: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl From<&Project> for ProjectView {
    fn from(p: &Project) -> Self {
        Self {
            id: p.id,
            name: p.name.clone(),
            description: p.description.clone(),
            created_at: p.created_at,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct SubjectView {
    pub kind: &'static str,
    pub id: Uuid,
    pub name: String,
}

#[derive(Debug, Serialize)]
pub struct GrantView {
    pub id: Uuid,
    pub subject: SubjectView,
    pub role: Role,
    pub scope: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    pub active: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl GrantView {
    pub fn new(g: &Grant, subject_name: String) -> Self {
        let (kind, id) = match g.subject {
            Subject::User(id) => ("user", id),
            Subject::Group(id) => ("group", id),
        };
        Self {
            id: g.id,
            subject: SubjectView {
                kind,
                id,
                name: subject_name,
            },
            role: g.role,
            scope: match g.role.scope() {
                crate::domain::org::ScopeKind::Organization => "organization",
                crate::domain::org::ScopeKind::Project => "project",
                crate::domain::org::ScopeKind::Namespaces => "namespaces",
            },
            project: g.project.clone(),
            namespaces: g.namespaces.clone(),
            expires_at: g.expires_at,
            active: g.is_active(OffsetDateTime::now_utc()),
            created_at: g.created_at,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct TokenView {
    pub id: Uuid,
    pub name: String,
    pub prefix: String,
    pub user_id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
}

impl From<&ApiToken> for TokenView {
    fn from(t: &ApiToken) -> Self {
        Self {
            id: t.id,
            name: t.name.clone(),
            prefix: t.prefix.clone(),
            user_id: t.user_id,
            created_at: t.created_at,
            expires_at: t.expires_at,
            last_used_at: t.last_used_at,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ClusterView {
    pub id: Uuid,
    pub name: String,
    pub project: String,
    pub description: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub status: ClusterStatusView,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClusterState {
    /// No agent has registered yet.
    Pending,
    Online,
    Offline,
}

#[derive(Debug, Serialize)]
pub struct ClusterStatusView {
    pub state: ClusterState,
    #[serde(with = "time::serde::rfc3339::option")]
    pub registered_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub connected_since: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_heartbeat: Option<OffsetDateTime>,
    /// When the agent was last connected (the last heartbeat while online).
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_seen: Option<OffsetDateTime>,
    pub agent_version: Option<String>,
    pub kubernetes_version: Option<String>,
}

impl ClusterView {
    pub fn new(c: &Cluster, project: &str, live: Option<TunnelStatus>) -> Self {
        let state = match (&live, c.registered_at) {
            (Some(_), _) => ClusterState::Online,
            (None, None) => ClusterState::Pending,
            (None, Some(_)) => ClusterState::Offline,
        };
        let live = live.unwrap_or_default();
        Self {
            id: c.id,
            name: c.name.clone(),
            project: project.to_owned(),
            description: c.description.clone(),
            created_at: c.created_at,
            status: ClusterStatusView {
                state,
                registered_at: c.registered_at,
                connected_since: live.connected_since,
                last_heartbeat: live.last_heartbeat,
                last_seen: live.last_heartbeat.or(c.last_seen),
                agent_version: live.agent_version.or_else(|| c.agent_version.clone()),
                kubernetes_version: live
                    .kubernetes_version
                    .or_else(|| c.kubernetes_version.clone()),
            },
        }
    }
}
