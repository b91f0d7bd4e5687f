//! Just-in-time service accounts: one per user in `ztka-system`, bound to the ztka
//! ClusterRoles that match the user's access, with short-lived TokenRequest tokens cached
//! until shortly before they expire. Removed when access ends or after the TTL unused.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};
use sha2::Digest as _;
use uuid::Uuid;

use crate::domain::access::ClusterAccess;
use crate::manifest::{
    FULL_ACCESS_ROLE, MANAGED_BY, MANAGED_BY_LABEL, NAMESPACE, NAMESPACE_ADMIN_ROLE, READ_ONLY_ROLE,
};

pub const USER_LABEL: &str = "ztka.dev/user";
/// Requested token lifetime; tokens are renewed at 80 % of what the server granted.
const TOKEN_SECONDS: i64 = 3600;

/// The service account name for a user: a readable prefix and a short hash of the id.
pub fn account_name(user_name: &str, user: Uuid) -> String {
    let readable: String = user_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    let readable = readable.trim_matches('-');
    let hash = hex::encode(sha2::Sha256::digest(user.as_bytes()));
    format!("ztka-{readable}-{}", &hash[..8])
}

struct Entry {
    account: String,
    /// What the bindings were last made for; None when unknown (the next request syncs).
    access: Option<ClusterAccess>,
    token: Option<(String, Instant)>,
    last_used: Instant,
    /// When [`Accounts::forget`] last dropped the token.
    forgotten_at: Option<Instant>,
}

impl Entry {
    /// An account whose bindings are of unknown access (the next request syncs them).
    fn new(account: String) -> Self {
        Self {
            account,
            access: None,
            token: None,
            last_used: Instant::now(),
            forgotten_at: None,
        }
    }
}

/// A user's token is dropped at most this often after the API server refused it: when its
/// authentication is broken for everyone, requests are not queued behind a repair each.
const FORGET_INTERVAL: Duration = Duration::from_secs(10);

pub struct Accounts {
    client: Client,
    cache: Mutex<HashMap<Uuid, Entry>>,
    /// Serializes changes to the cluster (creation, binding changes, deletion).
    changes: tokio::sync::Mutex<()>,
}

fn kube_err(what: &str, e: kube::Error) -> String {
    format!("{what}: {e}")
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

impl Accounts {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            cache: Mutex::new(HashMap::new()),
            changes: tokio::sync::Mutex::new(()),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Entry>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A bearer token for the user's service account, creating or correcting the account
    /// and its bindings when needed.
    pub async fn token(
        &self,
        user: Uuid,
        user_name: &str,
        access: &ClusterAccess,
    ) -> Result<String, String> {
        {
            let mut cache = self.cache();
            if let Some(e) = cache.get_mut(&user)
                && e.access.as_ref() == Some(access)
                && let Some((token, renew_at)) = &e.token
                && Instant::now() < *renew_at
            {
                e.last_used = Instant::now();
                return Ok(token.clone());
            }
        }
        let _serial = self.changes.lock().await;
        let account = account_name(user_name, user);
        let synced = self
            .cache()
            .get(&user)
            .is_some_and(|e| e.access.as_ref() == Some(access));
        if !synced {
            self.ensure_account(user, &account).await?;
            self.sync_bindings(user, &account, access).await?;
        }
        let (token, renew_at) = self.request_token(&account).await?;
        let mut cache = self.cache();
        // Kept (and so its last forget), or new.
        let e = cache
            .entry(user)
            .or_insert_with(|| Entry::new(String::new()));
        e.account = account;
        e.access = Some(access.clone());
        e.token = Some((token.clone(), renew_at));
        e.last_used = Instant::now();
        Ok(token)
    }

    async fn ensure_account(&self, user: Uuid, account: &str) -> Result<(), String> {
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), NAMESPACE);
        let sa = ServiceAccount {
            metadata: meta(account, Some(NAMESPACE), user),
            ..Default::default()
        };
        match api.create(&PostParams::default(), &sa).await {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 409) => Ok(()),
            Err(e) => Err(kube_err("creating the service account", e)),
        }
    }

    async fn request_token(&self, account: &str) -> Result<(String, Instant), String> {
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), NAMESPACE);
        let req = TokenRequest {
            spec: TokenRequestSpec {
                expiration_seconds: Some(TOKEN_SECONDS),
                audiences: Vec::new(),
                ..Default::default()
            },
            ..Default::default()
        };
        let tr = api
            .create_token_request(account, &PostParams::default(), &req)
            .await
            .map_err(|e| kube_err("requesting a service account token", e))?;
        let status = tr.status.ok_or("the token request returned no token")?;
        let now = jiff_now();
        let granted = (status.expiration_timestamp.0.as_second() - now).clamp(60, TOKEN_SECONDS);
        let renew_at = Instant::now() + Duration::from_secs((granted as u64) * 4 / 5);
        Ok((status.token, renew_at))
    }

    /// Makes the user's bindings exactly those `access` needs.
    async fn sync_bindings(
        &self,
        user: Uuid,
        account: &str,
        access: &ClusterAccess,
    ) -> Result<(), String> {
        let selector = ListParams::default().labels(&format!("{USER_LABEL}={user}"));
        let subject = Subject {
            kind: "ServiceAccount".into(),
            name: account.to_owned(),
            namespace: Some(NAMESPACE.to_owned()),
            api_group: None,
        };
        // Cluster-wide.
        let mut want_cluster: BTreeSet<(String, &str)> = BTreeSet::new();
        if access.full {
            want_cluster.insert((format!("{account}-full"), FULL_ACCESS_ROLE));
        }
        if access.read_only {
            want_cluster.insert((format!("{account}-read"), READ_ONLY_ROLE));
        }
        let crbs: Api<ClusterRoleBinding> = Api::all(self.client.clone());
        let existing = crbs
            .list(&selector)
            .await
            .map_err(|e| kube_err("listing cluster role bindings", e))?;
        let mut have = BTreeSet::new();
        for b in existing.items {
            let name = b.metadata.name.clone().unwrap_or_default();
            let key = (name.clone(), b.role_ref.name.clone());
            if want_cluster.iter().any(|(n, r)| *n == key.0 && *r == key.1) {
                have.insert(name);
            } else {
                delete_ok(crbs.delete(&name, &DeleteParams::default()).await)?;
            }
        }
        for (name, role) in &want_cluster {
            if have.contains(name) {
                continue;
            }
            let crb = ClusterRoleBinding {
                metadata: meta(name, None, user),
                role_ref: role_ref(role),
                subjects: Some(vec![subject.clone()]),
            };
            create_ok(crbs.create(&PostParams::default(), &crb).await)?;
        }
        // Per namespace.
        let mut want_ns: BTreeSet<(String, String, &str)> = BTreeSet::new();
        for ns in &access.admin_namespaces {
            want_ns.insert((ns.clone(), format!("{account}-admin"), NAMESPACE_ADMIN_ROLE));
        }
        for ns in &access.read_namespaces {
            want_ns.insert((ns.clone(), format!("{account}-read"), READ_ONLY_ROLE));
        }
        let all_rbs: Api<RoleBinding> = Api::all(self.client.clone());
        let existing = all_rbs
            .list(&selector)
            .await
            .map_err(|e| kube_err("listing role bindings", e))?;
        let mut have = BTreeSet::new();
        for b in existing.items {
            let ns = b.metadata.namespace.clone().unwrap_or_default();
            let name = b.metadata.name.clone().unwrap_or_default();
            let wanted = want_ns
                .iter()
                .any(|(n, bn, r)| *n == ns && *bn == name && *r == b.role_ref.name);
            if wanted {
                have.insert((ns, name));
            } else {
                let api: Api<RoleBinding> = Api::namespaced(self.client.clone(), &ns);
                delete_ok(api.delete(&name, &DeleteParams::default()).await)?;
            }
        }
        for (ns, name, role) in &want_ns {
            if have.contains(&(ns.clone(), name.clone())) {
                continue;
            }
            let api: Api<RoleBinding> = Api::namespaced(self.client.clone(), ns);
            let rb = RoleBinding {
                metadata: meta(name, Some(ns), user),
                role_ref: role_ref(role),
                subjects: Some(vec![subject.clone()]),
            };
            match api.create(&PostParams::default(), &rb).await {
                Ok(_) => {}
                Err(e) if is_status(&e, 409) => {}
                // A namespace that does not exist yet: the binding follows on a later sync.
                Err(e) if is_status(&e, 404) => {}
                Err(e) => return Err(kube_err("creating a role binding", e)),
            }
        }
        Ok(())
    }

    /// Applies a changed access level: removes everything when there is none, otherwise
    /// corrects the bindings of an account that exists.
    pub async fn apply(
        &self,
        user: Uuid,
        user_name: &str,
        access: &ClusterAccess,
    ) -> Result<(), String> {
        if access.is_none() {
            return self.remove(user).await;
        }
        let known = self.cache().contains_key(&user);
        if known {
            let _serial = self.changes.lock().await;
            let account = account_name(user_name, user);
            self.sync_bindings(user, &account, access).await?;
            if let Some(e) = self.cache().get_mut(&user) {
                e.access = Some(access.clone());
            }
        }
        Ok(())
    }

    /// Drops what is cached for the user (token, known access), so the next request checks
    /// the account and its bindings again and asks for a new token; at most once per
    /// [`FORGET_INTERVAL`] (returns whether it did). The account stays known, so the sweep
    /// still removes it when unused.
    pub fn forget(&self, user: Uuid) -> bool {
        let mut cache = self.cache();
        let Some(e) = cache.get_mut(&user) else {
            return false;
        };
        if e.forgotten_at
            .is_some_and(|t| t.elapsed() < FORGET_INTERVAL)
        {
            return false;
        }
        e.token = None;
        e.access = None;
        e.forgotten_at = Some(Instant::now());
        true
    }

    /// Users with a service account here (made or adopted by this agent).
    pub fn users(&self) -> Vec<Uuid> {
        self.cache().keys().copied().collect()
    }

    /// Deletes the user's service account and bindings.
    pub async fn remove(&self, user: Uuid) -> Result<(), String> {
        let _serial = self.changes.lock().await;
        self.cache().remove(&user);
        let selector = ListParams::default().labels(&format!("{USER_LABEL}={user}"));
        let crbs: Api<ClusterRoleBinding> = Api::all(self.client.clone());
        for b in crbs
            .list(&selector)
            .await
            .map_err(|e| kube_err("listing bindings", e))?
            .items
        {
            if let Some(name) = b.metadata.name {
                delete_ok(crbs.delete(&name, &DeleteParams::default()).await)?;
            }
        }
        let rbs: Api<RoleBinding> = Api::all(self.client.clone());
        for b in rbs
            .list(&selector)
            .await
            .map_err(|e| kube_err("listing bindings", e))?
            .items
        {
            if let (Some(name), Some(ns)) = (b.metadata.name, b.metadata.namespace) {
                let api: Api<RoleBinding> = Api::namespaced(self.client.clone(), &ns);
                delete_ok(api.delete(&name, &DeleteParams::default()).await)?;
            }
        }
        let sas: Api<ServiceAccount> = Api::namespaced(self.client.clone(), NAMESPACE);
        for sa in sas
            .list(&selector)
            .await
            .map_err(|e| kube_err("listing service accounts", e))?
            .items
        {
            if let Some(name) = sa.metadata.name {
                delete_ok(sas.delete(&name, &DeleteParams::default()).await)?;
            }
        }
        Ok(())
    }

    /// Removes accounts unused for `ttl`. Accounts found at start count as used then.
    pub async fn sweep(&self, ttl: Duration) {
        let stale: Vec<(Uuid, String)> = self
            .cache()
            .iter()
            .filter(|(_, e)| e.last_used.elapsed() > ttl)
            .map(|(u, e)| (*u, e.account.clone()))
            .collect();
        for (user, account) in stale {
            match self.remove(user).await {
                Ok(()) => tracing::info!(%account, "removed a service account unused for the TTL"),
                Err(e) => {
                    tracing::warn!(%account, error = %e, "cannot remove an unused service account")
                }
            }
        }
    }

    /// Adopts accounts that exist from an earlier run, so the sweep can remove them.
    pub async fn adopt_existing(&self) -> Result<usize, String> {
        let sas: Api<ServiceAccount> = Api::namespaced(self.client.clone(), NAMESPACE);
        let list = sas
            .list(&ListParams::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}")))
            .await
            .map_err(|e| kube_err("listing service accounts", e))?;
        let mut cache = self.cache();
        let mut n = 0;
        for sa in list.items {
            let Some(user) = sa
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(USER_LABEL))
                .and_then(|u| Uuid::parse_str(u).ok())
            else {
                continue;
            };
            cache.entry(user).or_insert_with(|| {
                n += 1;
                Entry::new(sa.metadata.name.clone().unwrap_or_default())
            });
        }
        Ok(n)
    }
}

fn jiff_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn meta(name: &str, namespace: Option<&str>, user: Uuid) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: namespace.map(str::to_owned),
        labels: Some(
            [
                (MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned()),
                (USER_LABEL.to_owned(), user.to_string()),
            ]
            .into(),
        ),
        ..Default::default()
    }
}

fn role_ref(role: &str) -> RoleRef {
    RoleRef {
        api_group: "rbac.authorization.k8s.io".into(),
        kind: "ClusterRole".into(),
        name: role.to_owned(),
    }
}

fn delete_ok<T>(r: Result<T, kube::Error>) -> Result<(), String> {
    match r {
        Ok(_) => Ok(()),
        Err(e) if is_status(&e, 404) => Ok(()),
        Err(e) => Err(kube_err("deleting", e)),
    }
}

fn create_ok<T>(r: Result<T, kube::Error>) -> Result<(), String> {
    match r {
        Ok(_) => Ok(()),
        Err(e) if is_status(&e, 409) => Ok(()),
        Err(e) => Err(kube_err("creating a binding", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_names_are_valid_and_distinct() {
        let a = Uuid::now_v7();
        let b = Uuid::now_v7();
        let n = account_name("Alice.Smith@Example.com", a);
        assert!(n.starts_with("ztka-alice-smith-example-com-"), "{n}");
        assert!(n.len() <= 63);
        assert_ne!(n, account_name("Alice.Smith@Example.com", b));
        assert!(account_name(&"x".repeat(200), a).len() <= 63);
    }
}
