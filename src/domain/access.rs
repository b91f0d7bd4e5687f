//! What a user may do in one cluster, folded from their grants: the access level the relay
//! sends to the agent, which turns it into RBAC bindings for the user's service account.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::org::{Grant, KubeAccess};

/// A user's Kubernetes access in the clusters of one project. Cluster-wide levels make the
/// namespace lists that they already cover empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterAccess {
    /// Everything, cluster-wide (`ztka:full-access`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub full: bool,
    /// Read-only, cluster-wide (`ztka:read-only`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    /// All verbs on namespaced resources of these namespaces (`ztka:namespace-admin`).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub admin_namespaces: BTreeSet<String>,
    /// Read-only in these namespaces.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub read_namespaces: BTreeSet<String>,
}

impl ClusterAccess {
    /// Folds the active grants that reach `project` (organization grants reach every project).
    pub fn from_grants<'a>(grants: impl IntoIterator<Item = &'a Grant>, project: &str) -> Self {
        let mut a = Self::default();
        for g in grants {
            if g.project.as_deref().is_some_and(|p| p != project) {
                continue;
            }
            match g.role.kube_access() {
                KubeAccess::Full => a.full = true,
                KubeAccess::ReadOnly => a.read_only = true,
                KubeAccess::NamespaceAdmin => {
                    a.admin_namespaces.extend(g.namespaces.iter().cloned())
                }
                KubeAccess::NamespaceReadOnly => {
                    a.read_namespaces.extend(g.namespaces.iter().cloned())
                }
            }
        }
        a.normalize();
        a
    }

    fn normalize(&mut self) {
        if self.full {
            self.read_only = false;
            self.admin_namespaces.clear();
            self.read_namespaces.clear();
        }
        if self.read_only {
            self.read_namespaces.clear();
        }
        let admin = self.admin_namespaces.clone();
        self.read_namespaces.retain(|ns| !admin.contains(ns));
    }

    pub fn is_none(&self) -> bool {
        !self.full
            && !self.read_only
            && self.admin_namespaces.is_empty()
            && self.read_namespaces.is_empty()
    }

    /// A short human description for errors and audit details.
    pub fn describe(&self) -> String {
        if self.full {
            return "full access".into();
        }
        let mut parts = Vec::new();
        if self.read_only {
            parts.push("read-only".to_owned());
        }
        if !self.admin_namespaces.is_empty() {
            parts.push(format!(
                "namespace-admin in {}",
                self.admin_namespaces
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(",")
            ));
        }
        if !self.read_namespaces.is_empty() {
            parts.push(format!(
                "read-only in {}",
                self.read_namespaces
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(",")
            ));
        }
        if parts.is_empty() {
            "no access".into()
        } else {
            parts.join("; ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::org::{Role, Subject};
    use time::OffsetDateTime;
    use uuid::Uuid;

    fn grant(role: Role, project: Option<&str>, ns: &[&str]) -> Grant {
        Grant {
            id: Uuid::now_v7(),
            subject: Subject::User(Uuid::now_v7()),
            role,
            project: project.map(str::to_owned),
            namespaces: ns.iter().map(|s| s.to_string()).collect(),
            expires_at: None,
            created_at: OffsetDateTime::now_utc(),
            created_by: None,
        }
    }

    #[test]
    fn folds_grants_of_the_project_only() {
        let gs = [
            grant(Role::NamespaceAdmin, Some("p"), &["a"]),
            grant(Role::NamespaceReadOnly, Some("p"), &["a", "b"]),
            grant(Role::ProjectAdmin, Some("other"), &[]),
        ];
        let a = ClusterAccess::from_grants(&gs, "p");
        assert!(!a.full && !a.read_only);
        assert_eq!(a.admin_namespaces, BTreeSet::from(["a".to_owned()]));
        assert_eq!(a.read_namespaces, BTreeSet::from(["b".to_owned()]));
        assert!(ClusterAccess::from_grants(&gs, "q").is_none());
        let org = [grant(Role::AdminReadOnly, None, &[]), gs[1].clone()];
        let a = ClusterAccess::from_grants(&org, "q");
        assert!(a.read_only && a.read_namespaces.is_empty());
        let full = [grant(Role::Admin, None, &[]), gs[0].clone()];
        assert_eq!(
            ClusterAccess::from_grants(&full, "p"),
            ClusterAccess {
                full: true,
                ..Default::default()
            }
        );
    }
}
