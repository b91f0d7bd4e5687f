//! Clusters and the bootstrap tokens that let an agent join one.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

/// An imported cluster. Names are unique in the organization because they are the path key
/// of the relay (`/k8s/{cluster}/…`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cluster {
    pub id: Uuid,
    pub name: String,
    pub project_id: Uuid,
    #[serde(default)]
    pub description: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// When an agent first registered with a bootstrap token.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub registered_at: Option<OffsetDateTime>,
    /// Serials of the agent certificates that may open this cluster's tunnel: the newest and,
    /// while a renewal settles, its predecessor. A new registration replaces them all.
    #[serde(default)]
    pub agent_serials: Vec<String>,
    /// What the agent last reported, kept so an offline cluster still shows it.
    #[serde(default)]
    pub agent_version: Option<String>,
    #[serde(default)]
    pub kubernetes_version: Option<String>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_seen: Option<OffsetDateTime>,
}

impl Cluster {
    /// Records a newly issued agent certificate; `renewal` keeps the previous one valid.
    pub fn admit_serial(&mut self, serial: String, renewal: bool) {
        if renewal {
            self.agent_serials.retain(|s| *s != serial);
            self.agent_serials.push(serial);
            let excess = self.agent_serials.len().saturating_sub(2);
            self.agent_serials.drain(..excess);
        } else {
            self.agent_serials = vec![serial];
        }
    }
}

/// A bootstrap token's stored record (the token itself is kept only as a SHA-256 digest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootstrapToken {
    pub cluster_id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub spent_at: Option<OffsetDateTime>,
    #[serde(default)]
    pub revoked: Option<Revocation>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Revocation {
    /// A newer token was issued for the same cluster.
    Superseded,
    /// The cluster was deleted.
    ClusterDeleted,
}

/// Why a bootstrap token cannot be used; each reads as a complete sentence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenRefusal {
    #[error("the bootstrap token is not valid")]
    Unknown,
    #[error("the bootstrap token was already used")]
    Spent,
    #[error("the bootstrap token has expired")]
    Expired,
    #[error("the bootstrap token was replaced by a newer one")]
    Superseded,
    #[error("the bootstrap token belongs to a cluster that was deleted")]
    ClusterDeleted,
}

impl BootstrapToken {
    pub fn usable(&self, now: OffsetDateTime) -> Result<(), TokenRefusal> {
        match self.revoked {
            Some(Revocation::ClusterDeleted) => return Err(TokenRefusal::ClusterDeleted),
            Some(Revocation::Superseded) => return Err(TokenRefusal::Superseded),
            None => {}
        }
        if self.spent_at.is_some() {
            return Err(TokenRefusal::Spent);
        }
        if now >= self.expires_at {
            return Err(TokenRefusal::Expired);
        }
        Ok(())
    }
}

/// Bootstrap tokens read `ztkab_<cluster id as 32 hex digits>_<secret>`: the agent learns
/// which identity to ask for from the token itself, and the server finds the cluster
/// before looking at the secret.
pub const BOOTSTRAP_TOKEN_PREFIX: &str = "ztkab_";

pub fn bootstrap_token(cluster_id: Uuid, secret: &str) -> String {
    format!("{BOOTSTRAP_TOKEN_PREFIX}{}_{secret}", cluster_id.simple())
}

/// The cluster id a bootstrap token names, if it is well formed.
pub fn bootstrap_token_cluster(token: &str) -> Option<Uuid> {
    let rest = token.strip_prefix(BOOTSTRAP_TOKEN_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    if id.len() != 32 || secret.is_empty() {
        return None;
    }
    Uuid::try_parse(id).ok()
}

/// The subject an agent's certificate carries: `CN=<cluster id>`, `O=ztka:agent`.
pub const AGENT_ORGANIZATION: &str = "ztka:agent";
/// The subject a user's kubeconfig certificate carries: `CN=<user id>`, `O=ztka:user`.
pub const USER_ORGANIZATION: &str = "ztka:user";
/// The organizational unit of user certificates: `ztka:issued:<unix milliseconds>`. X.509
/// validity has whole seconds; revocation compares against this exact issue time.
pub const ISSUED_PREFIX: &str = "ztka:issued:";

/// The issue time (unix milliseconds) recorded in a user certificate's units.
pub fn issued_millis(units: &[String]) -> Option<i128> {
    units
        .iter()
        .find_map(|o| o.strip_prefix(ISSUED_PREFIX))
        .and_then(|ms| ms.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_names_its_cluster() {
        let id = Uuid::now_v7();
        let token = bootstrap_token(id, "abc-DEF_123");
        assert_eq!(bootstrap_token_cluster(&token), Some(id));
        assert_eq!(bootstrap_token_cluster("ztkab_nothex_abc"), None);
        assert_eq!(
            bootstrap_token_cluster(&format!("ztkab_{}_", id.simple())),
            None
        );
        assert_eq!(bootstrap_token_cluster("ztka_abc"), None);
    }

    #[test]
    fn refusals_in_order_of_precedence() {
        let now = OffsetDateTime::now_utc();
        let mut t = BootstrapToken {
            cluster_id: Uuid::now_v7(),
            created_at: now,
            expires_at: now + time::Duration::hours(1),
            spent_at: None,
            revoked: None,
        };
        assert_eq!(t.usable(now), Ok(()));
        assert_eq!(
            t.usable(now + time::Duration::hours(2)),
            Err(TokenRefusal::Expired)
        );
        t.spent_at = Some(now);
        assert_eq!(t.usable(now), Err(TokenRefusal::Spent));
        t.revoked = Some(Revocation::ClusterDeleted);
        assert_eq!(t.usable(now), Err(TokenRefusal::ClusterDeleted));
    }

    #[test]
    fn renewal_keeps_one_predecessor() {
        let mut c = Cluster {
            id: Uuid::now_v7(),
            name: "c".into(),
            project_id: Uuid::now_v7(),
            description: String::new(),
            created_at: OffsetDateTime::now_utc(),
            updated_at: OffsetDateTime::now_utc(),
            registered_at: None,
            agent_serials: vec![],
            agent_version: None,
            kubernetes_version: None,
            last_seen: None,
        };
        c.admit_serial("a".into(), false);
        c.admit_serial("b".into(), true);
        c.admit_serial("c".into(), true);
        assert_eq!(c.agent_serials, ["b", "c"]);
        c.admit_serial("d".into(), false);
        assert_eq!(c.agent_serials, ["d"]);
    }
}
