//! The agent's just-in-time service accounts against the Kubernetes API simulator, made
//! with the agent's own least-privilege token: tokens cached until shortly before expiry,
//! bindings that follow the user's access, removal, the sweep of unused accounts, adoption
//! after a restart, and a fresh account after the old one was deleted outside ztka.

use std::collections::BTreeSet;
use std::time::Duration;

use kubesim::KubeSim;
use serde_json::json;
use uuid::Uuid;
use ztka::agent::accounts::{USER_LABEL, account_name};
use ztka::agent::kube::Cluster;
use ztka::domain::access::ClusterAccess;
use ztka::manifest::{FULL_ACCESS_ROLE, NAMESPACE, NAMESPACE_ADMIN_ROLE, READ_ONLY_ROLE};

struct Setup {
    sim: KubeSim,
    _dir: tempfile::TempDir,
    kubeconfig: std::path::PathBuf,
}

/// A simulator with the manifest's namespace, roles and agent RBAC applied, and a
/// kubeconfig with the agent service account's own token.
async fn setup() -> Setup {
    let sim = KubeSim::start(Default::default()).await.unwrap();
    for ns in ["team-a", "team-b"] {
        sim.create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}))
            .await
            .unwrap();
    }
    let input = ztka::manifest::ManifestInput {
        cluster: "prod",
        token: "unused",
        server_url: "https://ztka.example",
        server_ca: "",
        image: "ztka:test",
    };
    for obj in ztka::manifest::objects(&input) {
        let kind = obj["kind"].as_str().unwrap_or_default();
        if matches!(
            kind,
            "Namespace"
                | "ServiceAccount"
                | "ClusterRole"
                | "ClusterRoleBinding"
                | "Role"
                | "RoleBinding"
        ) {
            sim.create(obj).await.unwrap();
        }
    }
    let token = sim
        .create_token(NAMESPACE, "ztka-agent", 86_400)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("agent.kubeconfig");
    sim.write_kubeconfig(&kubeconfig, &token).unwrap();
    Setup {
        sim,
        _dir: dir,
        kubeconfig,
    }
}

impl Setup {
    async fn agent(&self) -> Cluster {
        Cluster::connect(Some(&self.kubeconfig), Default::default())
            .await
            .unwrap()
    }

    /// (kind, namespace, name, role) of every binding labelled for `user`.
    async fn bindings(&self, user: Uuid) -> BTreeSet<(String, String, String, String)> {
        let selector = format!("{USER_LABEL}={user}");
        let mut out = BTreeSet::new();
        for kind in ["ClusterRoleBinding", "RoleBinding"] {
            for b in self
                .sim
                .list("rbac.authorization.k8s.io/v1", kind, "", &selector)
                .await
                .unwrap()
            {
                out.insert((
                    kind.to_owned(),
                    b["metadata"]["namespace"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    b["metadata"]["name"].as_str().unwrap().to_owned(),
                    b["roleRef"]["name"].as_str().unwrap().to_owned(),
                ));
            }
        }
        out
    }

    async fn has_account(&self, name: &str) -> bool {
        self.sim
            .get("v1", "ServiceAccount", NAMESPACE, name)
            .await
            .unwrap()
            .is_some()
    }

    /// The status of a pod list in `team-a` with `token`.
    async fn pods_as(&self, token: &str) -> u16 {
        let path = "/api/v1/namespaces/team-a/pods";
        self.sim
            .request_as(token, "GET", path, None)
            .await
            .unwrap()
            .0
    }

    /// TokenRequests made since the log was last cleared.
    fn token_requests(&self) -> usize {
        self.sim
            .requests()
            .iter()
            .filter(|r| r.method == "POST" && r.uri.contains("/serviceaccounts/"))
            .filter(|r| {
                r.uri
                    .split('?')
                    .next()
                    .is_some_and(|p| p.ends_with("/token"))
            })
            .count()
    }
}

fn full() -> ClusterAccess {
    ClusterAccess {
        full: true,
        ..Default::default()
    }
}

fn namespace_admin(namespaces: &[&str]) -> ClusterAccess {
    ClusterAccess {
        admin_namespaces: namespaces.iter().map(|n| n.to_string()).collect(),
        ..Default::default()
    }
}

fn binding(kind: &str, ns: &str, name: String, role: &str) -> (String, String, String, String) {
    (kind.to_owned(), ns.to_owned(), name, role.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_cached_and_bindings_follow_the_users_access() {
    let s = setup().await;
    let agent = s.agent().await;
    let user = Uuid::now_v7();
    let sa = account_name("ada", user);

    s.sim.clear_requests();
    let first = agent.accounts.token(user, "ada", &full()).await.unwrap();
    assert!(s.has_account(&sa).await);
    assert_eq!(
        s.bindings(user).await,
        BTreeSet::from([binding(
            "ClusterRoleBinding",
            "",
            format!("{sa}-full"),
            FULL_ACCESS_ROLE
        )])
    );
    assert_eq!(s.token_requests(), 1);
    // The token works against the API server, as the user's service account.
    assert_eq!(s.pods_as(&first).await, 200);
    // Later requests with the same access reuse the token: no TokenRequest, no API call.
    s.sim.clear_requests();
    for _ in 0..5 {
        let again = agent.accounts.token(user, "ada", &full()).await.unwrap();
        assert_eq!(again, first);
    }
    assert!(s.sim.requests().is_empty(), "{:?}", s.sim.requests());

    // Narrower access: the cluster-wide binding goes, a RoleBinding per namespace comes.
    agent
        .accounts
        .token(user, "ada", &namespace_admin(&["team-a", "team-b"]))
        .await
        .unwrap();
    assert_eq!(
        s.bindings(user).await,
        BTreeSet::from([
            binding(
                "RoleBinding",
                "team-a",
                format!("{sa}-admin"),
                NAMESPACE_ADMIN_ROLE
            ),
            binding(
                "RoleBinding",
                "team-b",
                format!("{sa}-admin"),
                NAMESPACE_ADMIN_ROLE
            ),
        ])
    );
    // A change pushed by the server (one namespace fewer, read-only everywhere) is applied
    // without waiting for a request.
    let mut changed = namespace_admin(&["team-a"]);
    changed.read_only = true;
    agent.accounts.apply(user, "ada", &changed).await.unwrap();
    assert_eq!(
        s.bindings(user).await,
        BTreeSet::from([
            binding(
                "ClusterRoleBinding",
                "",
                format!("{sa}-read"),
                READ_ONLY_ROLE
            ),
            binding(
                "RoleBinding",
                "team-a",
                format!("{sa}-admin"),
                NAMESPACE_ADMIN_ROLE
            ),
        ])
    );
    // No access: account and bindings are gone.
    agent
        .accounts
        .apply(user, "ada", &ClusterAccess::default())
        .await
        .unwrap();
    assert!(!s.has_account(&sa).await);
    assert!(s.bindings(user).await.is_empty());
    assert!(agent.accounts.users().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unused_accounts_are_swept_and_a_restarted_agent_adopts_the_others() {
    let s = setup().await;
    let agent = s.agent().await;
    let (old, fresh) = (Uuid::now_v7(), Uuid::now_v7());
    agent.accounts.token(old, "old", &full()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    agent.accounts.token(fresh, "fresh", &full()).await.unwrap();
    // Only what was unused for the TTL goes.
    agent.accounts.sweep(Duration::from_millis(200)).await;
    assert!(!s.has_account(&account_name("old", old)).await);
    assert!(s.bindings(old).await.is_empty());
    assert!(s.has_account(&account_name("fresh", fresh)).await);
    assert_eq!(agent.accounts.users(), vec![fresh]);

    // A restarted agent knows the account from its labels, keeps it for a TTL from its
    // start, and re-syncs its bindings on the next request (its access is unknown).
    let restarted = s.agent().await;
    assert_eq!(restarted.accounts.adopt_existing().await.unwrap(), 1);
    assert_eq!(restarted.accounts.users(), vec![fresh]);
    restarted.accounts.sweep(Duration::from_secs(3600)).await;
    assert!(s.has_account(&account_name("fresh", fresh)).await);
    restarted
        .accounts
        .token(fresh, "fresh", &namespace_admin(&["team-b"]))
        .await
        .unwrap();
    assert_eq!(
        s.bindings(fresh).await,
        BTreeSet::from([binding(
            "RoleBinding",
            "team-b",
            format!("{}-admin", account_name("fresh", fresh)),
            NAMESPACE_ADMIN_ROLE
        )])
    );
    restarted.accounts.sweep(Duration::ZERO).await;
    assert!(!s.has_account(&account_name("fresh", fresh)).await);
    assert!(restarted.accounts.users().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_deleted_outside_ztka_is_made_again_after_forget() {
    let s = setup().await;
    let agent = s.agent().await;
    let user = Uuid::now_v7();
    let sa = account_name("bea", user);
    let token = agent.accounts.token(user, "bea", &full()).await.unwrap();
    s.sim
        .delete("v1", "ServiceAccount", NAMESPACE, &sa)
        .await
        .unwrap();
    // The cached token died with its account.
    assert_eq!(s.pods_as(&token).await, 401);
    assert_eq!(
        agent.accounts.token(user, "bea", &full()).await.unwrap(),
        token,
        "cached until told otherwise"
    );
    assert!(agent.accounts.forget(user));
    let renewed = agent.accounts.token(user, "bea", &full()).await.unwrap();
    assert_ne!(renewed, token);
    assert!(s.has_account(&sa).await);
    assert_eq!(s.pods_as(&renewed).await, 200);
    assert_eq!(
        agent.accounts.users(),
        vec![user],
        "still known to the sweep"
    );
    // Not again right away (a broken API server would have every request repair first),
    // and never for a user the agent does not know.
    assert!(!agent.accounts.forget(user));
    assert_eq!(
        agent.accounts.token(user, "bea", &full()).await.unwrap(),
        renewed
    );
    assert!(!agent.accounts.forget(Uuid::now_v7()));
}
