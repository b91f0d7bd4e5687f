//! Groups, projects, built-in roles, grants, API tokens, sessions and settings.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    pub id: Uuid,
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Member user ids.
    #[serde(default)]
    pub members: BTreeSet<Uuid>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Project {
    pub id: Uuid,
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// The built-in roles; their names are stable API values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Admin,
    AdminReadOnly,
    ProjectAdmin,
    ProjectReadOnly,
    ClusterAdmin,
    NamespaceAdmin,
    NamespaceReadOnly,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScopeKind {
    Organization,
    Project,
    Namespaces,
}

/// Kubernetes access level a role carries into the scope's clusters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KubeAccess {
    NamespaceReadOnly,
    ReadOnly,
    NamespaceAdmin,
    Full,
}

impl Role {
    pub const ALL: [Role; 7] = [
        Role::Admin,
        Role::AdminReadOnly,
        Role::ProjectAdmin,
        Role::ProjectReadOnly,
        Role::ClusterAdmin,
        Role::NamespaceAdmin,
        Role::NamespaceReadOnly,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::AdminReadOnly => "admin-read-only",
            Role::ProjectAdmin => "project-admin",
            Role::ProjectReadOnly => "project-read-only",
            Role::ClusterAdmin => "cluster-admin",
            Role::NamespaceAdmin => "namespace-admin",
            Role::NamespaceReadOnly => "namespace-read-only",
        }
    }

    pub fn parse(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == name)
    }

    pub fn scope(self) -> ScopeKind {
        match self {
            Role::Admin | Role::AdminReadOnly => ScopeKind::Organization,
            Role::ProjectAdmin | Role::ProjectReadOnly | Role::ClusterAdmin => ScopeKind::Project,
            Role::NamespaceAdmin | Role::NamespaceReadOnly => ScopeKind::Namespaces,
        }
    }

    pub fn kube_access(self) -> KubeAccess {
        match self {
            Role::Admin | Role::ProjectAdmin | Role::ClusterAdmin => KubeAccess::Full,
            Role::AdminReadOnly | Role::ProjectReadOnly => KubeAccess::ReadOnly,
            Role::NamespaceAdmin => KubeAccess::NamespaceAdmin,
            Role::NamespaceReadOnly => KubeAccess::NamespaceReadOnly,
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            Role::Admin => "Everything in the console; full Kubernetes access everywhere",
            Role::AdminReadOnly => {
                "Read everything in the console; read-only Kubernetes access everywhere"
            }
            Role::ProjectAdmin => {
                "Manage the project, its clusters and grants; full Kubernetes access in its clusters"
            }
            Role::ProjectReadOnly => {
                "Read the project; read-only Kubernetes access in its clusters"
            }
            Role::ClusterAdmin => {
                "Read the project and change cluster settings; full Kubernetes access in its clusters"
            }
            Role::NamespaceAdmin => {
                "Read the project; all verbs on namespaced resources in the granted namespaces"
            }
            Role::NamespaceReadOnly => {
                "Read the project; read-only Kubernetes access in the granted namespaces"
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum Subject {
    User(Uuid),
    Group(Uuid),
}

impl Subject {
    /// The subject's name in authorization policies.
    pub fn policy_name(&self) -> String {
        match self {
            Subject::User(id) => format!("user:{id}"),
            Subject::Group(id) => format!("group:{id}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub id: Uuid,
    pub subject: Subject,
    pub role: Role,
    /// Project name for project and namespace scopes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(default)]
    pub created_by: Option<Uuid>,
}

impl Grant {
    pub fn is_active(&self, now: OffsetDateTime) -> bool {
        self.expires_at.is_none_or(|t| t > now)
    }

    /// The authorization domain the grant applies in.
    pub fn domain(&self) -> String {
        match &self.project {
            Some(p) => project_domain(p),
            None => ORG_DOMAIN.to_owned(),
        }
    }
}

pub const ORG_DOMAIN: &str = "org";

pub fn project_domain(project: &str) -> String {
    format!("project:{project}")
}

/// An API token: the secret is shown once; only its SHA-256 is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiToken {
    pub id: Uuid,
    pub user_id: Uuid,
    pub name: String,
    /// Hex SHA-256 of the whole token string.
    pub hash: String,
    /// The first characters of the token, to recognise it in lists.
    pub prefix: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
}

/// A console session; stored under the SHA-256 of its cookie value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub user_id: Uuid,
    /// Hex SHA-256 of the CSRF token the client must echo in `X-CSRF-Token`.
    pub csrf_hash: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen_at: OffsetDateTime,
    #[serde(default)]
    pub client_addr: String,
}

/// Organization-wide settings, changed through the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// A session ends after this long without requests.
    pub session_idle_timeout_secs: u64,
    /// A session ends this long after sign-in, active or not.
    pub session_absolute_timeout_secs: u64,
    /// Validity of client certificates in downloaded kubeconfigs.
    pub kubeconfig_validity_secs: u64,
    /// Unused just-in-time service accounts are removed after this long.
    pub service_account_ttl_secs: u64,
    /// Longest lifetime an API token may be created with.
    pub api_token_max_validity_secs: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            session_idle_timeout_secs: 3600,
            session_absolute_timeout_secs: 12 * 3600,
            kubeconfig_validity_secs: 7 * 24 * 3600,
            service_account_ttl_secs: 8 * 3600,
            api_token_max_validity_secs: 365 * 24 * 3600,
        }
    }
}

impl Settings {
    /// Returns the first invalid field and why.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let range = |field: &'static str, v: u64, min: u64, max: u64| {
            if v < min || v > max {
                Err((field, format!("must be between {min} and {max} seconds")))
            } else {
                Ok(())
            }
        };
        range(
            "session_idle_timeout_secs",
            self.session_idle_timeout_secs,
            60,
            30 * 86400,
        )?;
        range(
            "session_absolute_timeout_secs",
            self.session_absolute_timeout_secs,
            300,
            90 * 86400,
        )?;
        range(
            "kubeconfig_validity_secs",
            self.kubeconfig_validity_secs,
            300,
            365 * 86400,
        )?;
        range(
            "service_account_ttl_secs",
            self.service_account_ttl_secs,
            300,
            30 * 86400,
        )?;
        range(
            "api_token_max_validity_secs",
            self.api_token_max_validity_secs,
            3600,
            5 * 365 * 86400,
        )?;
        if self.session_idle_timeout_secs > self.session_absolute_timeout_secs {
            return Err((
                "session_idle_timeout_secs",
                "must not exceed session_absolute_timeout_secs".into(),
            ));
        }
        Ok(())
    }
}

/// Checks that a role's scope matches what the grant names: organization roles take no
/// project, project roles a project, namespace roles a project and namespaces. Returns the
/// offending field and why.
pub fn check_grant_scope(
    role: Role,
    project: Option<&str>,
    namespaces: &[String],
) -> Result<(), (&'static str, String)> {
    match (role.scope(), project) {
        (ScopeKind::Organization, Some(_)) => {
            return Err((
                "project",
                format!("{} is an organization role; omit project", role.name()),
            ));
        }
        (ScopeKind::Project | ScopeKind::Namespaces, None) => {
            return Err(("project", format!("{} needs a project", role.name())));
        }
        _ => {}
    }
    match (role.scope(), namespaces.is_empty()) {
        (ScopeKind::Namespaces, true) => Err((
            "namespaces",
            format!("{} needs at least one namespace", role.name()),
        )),
        (ScopeKind::Organization | ScopeKind::Project, false) => Err((
            "namespaces",
            format!("{} does not take namespaces", role.name()),
        )),
        _ => {
            for ns in namespaces {
                crate::domain::names::validate_name(ns)
                    .map_err(|e| ("namespaces", format!("{ns:?} {e}")))?;
            }
            Ok(())
        }
    }
}
