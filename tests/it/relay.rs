//! kubectl through ztka: real kubectl binaries → the relay → the tunnel → a real `ztka agent`
//! process (with the least-privilege agent role) → the Kubernetes API simulator.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;
use kubesim::KubeSim;
use kubesim::kubectl::{kubectl, kubectls, ok, port_forward_round_trip, stream_until};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::agent::import;
use crate::fixture::{ApiClient, ServerProcess, client_trusting, get, ztka};

/// Every test user's password.
const PASSWORD: &str = "a long enough password";

struct Env {
    sim: KubeSim,
    server: ServerProcess,
    admin: ApiClient,
    dir: tempfile::TempDir,
    agent: std::process::Child,
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = self.agent.kill();
        let _ = self.agent.wait();
        self.server.signal(libc::SIGKILL);
    }
}

fn pod(ns: &str, name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"containers": [{"name": "main", "image": "busybox"}]}})
}

/// `ztka agent` as the tests run it: files in `dir` (`token`, `agent.kubeconfig`).
fn spawn_agent(dir: &Path, external: &str, data: &Path) -> std::process::Child {
    ztka()
        .args(["agent", "--server", external, "--server-ca"])
        .arg(data.join("ca.crt"))
        .arg("--token-file")
        .arg(dir.join("token"))
        .arg("--kubeconfig")
        .arg(dir.join("agent.kubeconfig"))
        .env("KUBERNETES_SERVICE_HOST", "kubesim")
        .env("ZTKA_LOG", "ztka=debug")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

async fn wait_online(admin: &mut ApiClient) {
    let start = Instant::now();
    loop {
        let (_, b) = admin.get("/api/v1/projects/shop/clusters/prod").await;
        if b["status"]["state"] == "online" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "agent never came online: {b}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Simulator with the install manifest applied, a server, and an agent that runs with the
/// agent service account's own token (so its least privilege is what is exercised).
async fn env() -> Env {
    let sim = KubeSim::start(Default::default()).await.unwrap();
    for ns in ["team-a", "team-b"] {
        sim.create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}))
            .await
            .unwrap();
    }
    sim.create(pod("default", "box")).await.unwrap();
    sim.create(pod("team-a", "box")).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = crate::fixture::free_port();
    let external = format!("https://localhost:{port}");
    let server = ServerProcess::start_at(
        &data,
        &format!("127.0.0.1:{port}"),
        &["--external-url", &external],
        |_| {},
    );
    let mut admin = server.admin().await;
    let boot = import(&mut admin, "shop", "prod").await;
    let manifest = dir.path().join("manifest.yaml");
    std::fs::write(&manifest, boot["manifest"].as_str().unwrap()).unwrap();
    let bin = PathBuf::from("/usr/bin/kubectl");
    ok(
        &bin,
        sim.kubeconfig_path(),
        &["apply", "-f", manifest.to_str().unwrap()],
        None,
    )
    .await;
    let agent_token = sim
        .create_token("ztka-system", "ztka-agent", 86_400)
        .await
        .unwrap();
    // As in the cluster: the service account's namespace, and the identity kept in the
    // `ztka-agent-identity` Secret (no --state-dir), through the role's own permissions.
    let agent_kc = dir.path().join("agent.kubeconfig");
    sim.write_kubeconfig(&agent_kc, &agent_token).unwrap();
    let kc = std::fs::read_to_string(&agent_kc).unwrap();
    std::fs::write(
        &agent_kc,
        kc.replace("namespace: default", "namespace: ztka-system"),
    )
    .unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, boot["token"].as_str().unwrap()).unwrap();
    let agent = spawn_agent(dir.path(), &external, &data);
    wait_online(&mut admin).await;
    let secret = sim
        .get("v1", "Secret", "ztka-system", "ztka-agent-identity")
        .await
        .unwrap()
        .expect("the identity Secret");
    assert!(
        secret["data"]["identity.json"]
            .as_str()
            .is_some_and(|d| d.len() > 100),
        "the agent keeps its identity in the Secret: {secret}"
    );
    Env {
        sim,
        server,
        admin,
        dir,
        agent,
    }
}

impl Env {
    /// Stops the agent (SIGKILL) and starts it again, once the server saw the tunnel go.
    async fn restart_agent(&mut self, while_away: impl AsyncFnOnce(&mut Self)) {
        let _ = self.agent.kill();
        let _ = self.agent.wait();
        let start = Instant::now();
        loop {
            let (_, b) = self.admin.get("/api/v1/projects/shop/clusters/prod").await;
            if b["status"]["state"] != "online" {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "still online: {b}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        while_away(self).await;
        let external = self.server.url("");
        self.agent = spawn_agent(
            self.dir.path(),
            external.trim_end_matches('/'),
            &self.server.data_dir,
        );
        wait_online(&mut self.admin).await;
    }

    /// Stops the server (SIGTERM) and starts it again on the same port and data directory,
    /// then waits for the agent to reconnect.
    async fn restart_server(&mut self) {
        self.server.signal(libc::SIGTERM);
        crate::fixture::wait_timeout(&mut self.server.child, Duration::from_secs(20));
        let port = self.server.addr.port();
        let external = self.server.url("");
        self.server = ServerProcess::start_at(
            &self.server.data_dir.clone(),
            &format!("127.0.0.1:{port}"),
            &["--external-url", external.trim_end_matches('/')],
            |_| {},
        );
        self.admin = self.server.admin_again().await;
        wait_online(&mut self.admin).await;
    }

    /// Creates a local user with a grant, signs in as them and downloads their kubeconfig.
    async fn user(&mut self, name: &str, grant: Option<Value>) -> (PathBuf, ApiClient) {
        self.user_with(name, grant, None).await
    }

    /// The same for a user whose access comes from membership of `group`.
    async fn user_in_group(&mut self, name: &str, group: &str) -> PathBuf {
        self.user_with(name, None, Some(group)).await.0
    }

    async fn user_with(
        &mut self,
        name: &str,
        grant: Option<Value>,
        group: Option<&str>,
    ) -> (PathBuf, ApiClient) {
        let (s, b) = self
            .admin
            .post(
                "/api/v1/users",
                json!({"name": name, "password": PASSWORD, "must_change_password": false}),
            )
            .await;
        assert_eq!(s, 201, "{b}");
        if let Some(mut g) = grant {
            g["user"] = json!(name);
            let (s, b) = self.admin.post("/api/v1/grants", g).await;
            assert_eq!(s, 201, "{b}");
        }
        if let Some(group) = group {
            let (s, b) = self
                .admin
                .post(
                    &format!("/api/v1/groups/{group}/members"),
                    json!({"user": name}),
                )
                .await;
            assert!((200..300).contains(&s), "{s} {b}");
        }
        let mut c = self.sign_in(name).await;
        let path = self.download(&mut c, name).await;
        (path, c)
    }

    /// A new session of a user made by [`Env::user`].
    async fn sign_in(&self, name: &str) -> ApiClient {
        let mut c = ApiClient::new(self.server.client(), self.server.url(""));
        let (s, b) = c
            .post(
                "/api/v1/auth/login",
                json!({"username": name, "password": PASSWORD}),
            )
            .await;
        assert_eq!(s, 200, "{b}");
        c
    }

    /// The id of the grant held by user `name`.
    async fn grant_of(&mut self, name: &str) -> String {
        let (_, b) = self.admin.get("/api/v1/grants?limit=100").await;
        let found = b["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["subject"]["name"] == name);
        found.unwrap()["id"].as_str().unwrap().to_owned()
    }

    async fn download(&self, c: &mut ApiClient, name: &str) -> PathBuf {
        let (s, b) = c.get("/api/v1/kubeconfig").await;
        assert_eq!(s, 200, "{b}");
        let dir = self.dir.path().join(format!("home-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config");
        std::fs::write(&path, b.as_str().unwrap()).unwrap();
        path
    }
}

/// The client certificate and key inside a kubeconfig.
fn identity(kubeconfig: &Path) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let doc: Value = serde_saphyr::from_str(&std::fs::read_to_string(kubeconfig).unwrap()).unwrap();
    let field = |k: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(doc["users"][0]["user"][k].as_str().unwrap())
            .unwrap()
    };
    let chain = CertificateDer::pem_slice_iter(&field("client-certificate-data"))
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    (
        chain,
        PrivateKeyDer::from_pem_slice(&field("client-key-data")).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_versions_work_through_ztka_as_the_users_service_account() {
    let mut env = env().await;
    let (kc, _) = env
        .user(
            "dev",
            Some(json!({"role": "project-admin", "project": "shop"})),
        )
        .await;
    let bins = kubectls();
    assert!(
        bins.len() >= 3,
        "kubectl 1.32, 1.33 and 1.27 are all expected: {bins:?}"
    );
    for version in ["1.27", "1.32", "1.33"] {
        assert!(
            bins.iter().any(|b| b.to_string_lossy().ends_with(version)),
            "kubectl {version} is expected by name: {bins:?}"
        );
    }
    for (i, bin) in bins.iter().enumerate() {
        let out = ok(bin, &kc, &["get", "pods", "-n", "default"], None).await;
        assert!(out.contains("box"), "{out}");
        let cm = env.dir.path().join(format!("cm{i}.yaml"));
        std::fs::write(
            &cm,
            format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm{i}\n  namespace: default\ndata:\n  k: v\n"),
        )
        .unwrap();
        let out = ok(bin, &kc, &["apply", "-f", cm.to_str().unwrap()], None).await;
        assert!(out.contains("created"), "{out}");
        let out = ok(
            bin,
            &kc,
            &["delete", "configmap", &format!("cm{i}"), "-n", "default"],
            None,
        )
        .await;
        assert!(out.contains("deleted"), "{out}");
        // A watch, ended by the client's timeout.
        let w = kubectl(
            bin,
            &kc,
            &["get", "pods", "-n", "default", "-w", "--request-timeout=2s"],
            None,
        )
        .await;
        assert!(w.stdout.contains("box"), "{} {}", w.stdout, w.stderr);
        let lines = stream_until(
            bin,
            &kc,
            &["logs", "-f", "box", "-n", "default"],
            |s| s.len() >= 12,
            None,
        )
        .await;
        assert!(lines[11].contains("log line 12"), "{lines:?}");
        let out = ok(
            bin,
            &kc,
            &["exec", "-i", "box", "-n", "default", "--", "cat"],
            Some("through ztka\n"),
        )
        .await;
        assert_eq!(out, "through ztka\n");
        let ex = kubectl(
            bin,
            &kc,
            &["exec", "box", "-n", "default", "--", "sh", "-c", "exit 3"],
            None,
        )
        .await;
        assert_eq!(ex.code, 3, "{}", ex.stderr);
        port_forward_round_trip(bin, &kc, &["-n", "default"], "pod/box", 8080, 1).await;
        let local = env.dir.path().join(format!("cp{i}"));
        std::fs::create_dir_all(&local).unwrap();
        std::fs::write(local.join("f.txt"), "copied\n").unwrap();
        ok(
            bin,
            &kc,
            &[
                "cp",
                local.join("f.txt").to_str().unwrap(),
                &format!("default/box:/cp{i}.txt"),
            ],
            None,
        )
        .await;
        let out = ok(
            bin,
            &kc,
            &[
                "exec",
                "box",
                "-n",
                "default",
                "--",
                "cat",
                &format!("/cp{i}.txt"),
            ],
            None,
        )
        .await;
        assert_eq!(out, "copied\n");
        let out = ok(
            bin,
            &kc,
            &["auth", "can-i", "--list", "-n", "default"],
            None,
        )
        .await;
        assert!(out.contains("*.*"), "{out}");
    }
    // The user's service account exists in ztka-system, made by the agent.
    let sas = env
        .sim
        .list("v1", "ServiceAccount", "ztka-system", "ztka.dev/user")
        .await
        .unwrap();
    assert!(
        sas.iter().any(|sa| sa["metadata"]["name"]
            .as_str()
            .unwrap()
            .starts_with("ztka-dev-")),
        "{sas:?}"
    );
    // Every request was audited as a kube event; mutations before they ran.
    let (_, b) = env
        .admin
        .get("/api/v1/audit?kind=kube&user=dev&outcome=pending&limit=5")
        .await;
    assert!(!b["items"].as_array().unwrap().is_empty(), "{b}");
    let (_, b) = env
        .admin
        .get("/api/v1/audit?kind=kube&user=dev&verb=create&limit=50")
        .await;
    assert!(
        b["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kube"]["subresource"] == "exec"),
        "{b}"
    );
}

/// A raw request through the relay with a user's certificate and extra headers.
async fn raw(
    env: &Env,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let client = client_trusting(&[env.server.data_dir.join("ca.crt")], identity);
    let mut req = hyper::Request::get(env.server.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = client
        .send(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let status = res.status().as_u16();
    (
        status,
        serde_json::from_slice(res.body()).unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_rbac_decides_and_forged_identities_are_refused() {
    let mut env = env().await;
    env.sim
        .create(json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "db", "namespace": "default"}, "stringData": {"password": "x"}}))
        .await
        .unwrap();
    let bin = PathBuf::from("/usr/bin/kubectl");
    let (ro, _) = env
        .user(
            "rita",
            Some(json!({"role": "project-read-only", "project": "shop"})),
        )
        .await;
    assert!(
        ok(&bin, &ro, &["get", "pods", "-A"], None)
            .await
            .contains("box")
    );
    for args in [
        &["get", "secrets", "-n", "default"][..],
        &["exec", "box", "-n", "default", "--", "echo", "hi"][..],
        &["delete", "pod", "box", "-n", "default"][..],
    ] {
        let out = kubectl(&bin, &ro, args, None).await;
        assert_ne!(out.code, 0, "{args:?} should be refused");
        assert!(
            out.stderr.contains("Forbidden") || out.stderr.contains("forbidden"),
            "{args:?}: {}",
            out.stderr
        );
    }
    let (na, _) = env
        .user(
            "nora",
            Some(json!({"role": "namespace-admin", "project": "shop", "namespaces": ["team-a"]})),
        )
        .await;
    ok(
        &bin,
        &na,
        &["create", "configmap", "mine", "-n", "team-a"],
        None,
    )
    .await;
    let out = kubectl(
        &bin,
        &na,
        &["create", "configmap", "mine", "-n", "team-b"],
        None,
    )
    .await;
    assert!(out.stderr.contains("forbidden"), "{}", out.stderr);
    let (none, _) = env.user("nobody", None).await;
    // Without a reachable cluster the kubeconfig has no context; point one at prod by hand.
    let manual = env.dir.path().join("nobody.kubeconfig");
    let mut doc: Value = serde_saphyr::from_str(&std::fs::read_to_string(&ro).unwrap()).unwrap();
    let theirs: Value = serde_saphyr::from_str(&std::fs::read_to_string(&none).unwrap()).unwrap();
    doc["users"] = theirs["users"].clone();
    doc["contexts"][0]["context"]["user"] = theirs["users"][0]["name"].clone();
    std::fs::write(&manual, serde_json::to_string(&doc).unwrap()).unwrap();
    let out = kubectl(&bin, &manual, &["get", "pods"], None).await;
    assert!(
        out.code != 0 && out.stderr.contains("Forbidden"),
        "{}",
        out.stderr
    );
    // kubectl's discovery hides the message; the Status carries it.
    let (s, b) = raw(&env, Some(identity(&none)), "/k8s/prod/api/v1/pods", &[]).await;
    assert_eq!(s, 403);
    assert_eq!(b["message"], "user nobody has no access to cluster prod");

    // A service user (no password) gets a token from an administrator and its kubeconfig
    // with that token, as CI or Argo CD would.
    let (s, b) = env
        .admin
        .post(
            "/api/v1/users",
            json!({"name": "ci-bot", "kind": "service"}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = env
        .admin
        .post(
            "/api/v1/grants",
            json!({"user": "ci-bot", "role": "project-read-only", "project": "shop"}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = env
        .admin
        .post("/api/v1/users/rita/tokens", json!({"name": "nope"}))
        .await;
    assert_eq!(s, 409, "people create their own tokens: {b}");
    let (s, b) = env
        .admin
        .post("/api/v1/users/ci-bot/tokens", json!({"name": "pipeline"}))
        .await;
    assert_eq!(s, 201, "{b}");
    let mut bot = ApiClient::new(env.server.client(), env.server.url(""));
    bot.bearer = Some(b["token"].as_str().unwrap().to_owned());
    let bot_kc = env.download(&mut bot, "ci-bot").await;
    assert!(
        ok(&bin, &bot_kc, &["get", "pods"], None)
            .await
            .contains("box")
    );

    // Forged identity headers change nothing.
    let rita = || identity(&ro);
    let admin_token = env.sim.admin_token().to_owned();
    let bearer = format!("Bearer {admin_token}");
    for headers in [
        vec![
            ("impersonate-user", "system:admin"),
            ("impersonate-group", "system:masters"),
        ],
        vec![("authorization", bearer.as_str())],
        vec![
            ("x-ztka-access", r#"{"full":true}"#),
            ("x-remote-user", "admin"),
        ],
    ] {
        let (s, b) = raw(
            &env,
            Some(rita()),
            "/k8s/prod/api/v1/namespaces/default/secrets",
            &headers,
        )
        .await;
        assert_eq!(s, 403, "{headers:?}: {b}");
        assert_eq!(b["kind"], "Status");
    }
    // With full access the same forgeries would succeed if any of them reached the API
    // server (the user's service account may impersonate): it must still see that account.
    let (full, _) = env
        .user(
            "fred",
            Some(json!({"role": "project-admin", "project": "shop"})),
        )
        .await;
    let token_protocol = format!(
        "base64url.bearer.authorization.k8s.io.{}, v5.channel.k8s.io",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&admin_token)
    );
    for headers in [
        vec![
            ("impersonate-user", "system:admin"),
            ("impersonate-group", "system:masters"),
        ],
        vec![("authorization", bearer.as_str())],
        vec![("sec-websocket-protocol", token_protocol.as_str())],
    ] {
        env.sim.clear_requests();
        let (s, b) = raw(
            &env,
            Some(identity(&full)),
            "/k8s/prod/api/v1/namespaces/default/secrets",
            &headers,
        )
        .await;
        assert_eq!(s, 200, "{headers:?}: {b}");
        let seen: Vec<(String, usize)> = env
            .sim
            .requests()
            .into_iter()
            .filter(|r| r.uri.ends_with("/namespaces/default/secrets"))
            .map(|r| (r.user, r.tokens))
            .collect();
        assert_eq!(seen.len(), 1, "{headers:?}: {seen:?}");
        assert!(
            seen[0]
                .0
                .starts_with("system:serviceaccount:ztka-system:ztka-fred-"),
            "{headers:?} reached the API server as {}",
            seen[0].0
        );
        assert_eq!(seen[0].1, 1, "{headers:?}: only the agent's token for fred");
    }
    // A client's request id is replaced by the server's own, which the audit event carries.
    let client = client_trusting(&[env.server.data_dir.join("ca.crt")], Some(rita()));
    let res = client
        .send(
            hyper::Request::get(env.server.url("/k8s/prod/api/v1/namespaces/default/pods"))
                .header("x-request-id", "forged-correlation")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "request id {id}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, b) = env
            .admin
            .get("/api/v1/audit?kind=kube&user=rita&limit=5")
            .await;
        let ids: Vec<&str> = b["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["request_id"].as_str())
            .collect();
        assert!(!ids.contains(&"forged-correlation"), "{b}");
        if ids.contains(&id.as_str()) {
            break;
        }
        assert!(Instant::now() < deadline, "no audit event with {id}: {b}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // No certificate; an agent certificate is not a user certificate.
    let (s, b) = raw(&env, None, "/k8s/prod/api/v1/pods", &[]).await;
    assert_eq!(s, 401, "{b}");
    assert_eq!(b["reason"], "Unauthorized");
    // A certificate from another CA does not get through TLS.
    let other = rcgen::KeyPair::generate().unwrap();
    let self_signed = rcgen::CertificateParams::new(vec!["rita".to_owned()])
        .unwrap()
        .self_signed(&other)
        .unwrap();
    let client = client_trusting(
        &[env.server.data_dir.join("ca.crt")],
        Some((
            vec![self_signed.der().clone()],
            PrivateKeyDer::from_pem_slice(other.serialize_pem().as_bytes()).unwrap(),
        )),
    );
    let sent = client
        .send(
            hyper::Request::get(env.server.url("/k8s/prod/api/v1/pods"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await;
    assert!(
        sent.is_err(),
        "a foreign certificate must fail the handshake"
    );
    // Another cluster rita has no access to: refused with a clear Status.
    let (s, _) = env
        .admin
        .post("/api/v1/projects", json!({"name": "vault"}))
        .await;
    assert_eq!(s, 201);
    let (s, _) = env
        .admin
        .post(
            "/api/v1/projects/vault/clusters",
            json!({"name": "secret-cluster"}),
        )
        .await;
    assert_eq!(s, 201);
    let (s, b) = raw(&env, Some(rita()), "/k8s/secret-cluster/api/v1/pods", &[]).await;
    assert_eq!(s, 403, "{b}");
    // …and an offline cluster the user can reach answers 503 at once.
    let (s, _) = env
        .admin
        .post(
            "/api/v1/grants",
            json!({"user": "rita", "role": "project-read-only", "project": "vault"}),
        )
        .await;
    assert_eq!(s, 201);
    let t = Instant::now();
    let (s, b) = raw(&env, Some(rita()), "/k8s/secret-cluster/api/v1/pods", &[]).await;
    assert_eq!(s, 503, "{b}");
    assert!(b["message"].as_str().unwrap().contains("offline"), "{b}");
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_ends_open_streams_and_removes_the_service_account() {
    let mut env = env().await;
    let bin = PathBuf::from("/usr/bin/kubectl");
    let kc = project_admin(&mut env, "eve").await;
    ok(&bin, &kc, &["get", "pods"], None).await;
    assert!(has_account(&env.sim, "ztka-eve-").await);
    let mut watch = open_watch(&bin, &kc).await;
    let mut exec = spawn_kubectl(&bin, &kc, &["exec", "-i", "box", "--", "cat"]);
    let mut exec_in = exec.stdin.take().unwrap();
    exec_in.write_all(b"still here\n").await.unwrap();
    let mut exec_out = BufReader::new(exec.stdout.take().unwrap()).lines();
    let echoed = tokio::time::timeout(Duration::from_secs(20), exec_out.next_line())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(echoed.as_deref(), Some("still here"));

    let (s, _) = env
        .admin
        .post("/api/v1/users/eve/kubeconfig/revoke", json!({}))
        .await;
    assert_eq!(s, 204);
    // Within a second of the revocation's answer (SPEC: revocation is immediate); the
    // streams end in a few milliseconds, and kubectl exits when they do.
    let revoked = Instant::now();
    let w = tokio::time::timeout(Duration::from_secs(1), watch.wait()).await;
    let e = tokio::time::timeout(
        Duration::from_secs(1).saturating_sub(revoked.elapsed()),
        exec.wait(),
    )
    .await;
    assert!(
        w.is_ok(),
        "the watch is still open a second after revocation"
    );
    assert!(
        e.is_ok(),
        "the exec session is still open a second after revocation"
    );
    eprintln!("streams ended {:?} after the revocation", revoked.elapsed());
    let out = kubectl(&bin, &kc, &["get", "pods"], None).await;
    assert_ne!(out.code, 0);
    let start = Instant::now();
    while has_account(&env.sim, "ztka-eve-").await {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the service account was not removed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A new kubeconfig works again.
    let mut c = env.sign_in("eve").await;
    let fresh = env.download(&mut c, "eve2").await;
    ok(&bin, &fresh, &["get", "pods"], None).await;
    let (_, b) = env
        .admin
        .get("/api/v1/audit?action=kube.request&user=eve&outcome=denied&limit=5")
        .await;
    assert!(!b["items"].as_array().unwrap().is_empty(), "{b}");
}

/// Every way access ends works as a revocation does: the user's open streams end, the
/// next request is refused, and the agent removes the service account — disabling or
/// deleting the user, removing their grant or their group membership, a grant's expiry and
/// a password reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_way_access_ends_closes_streams_and_removes_the_account() {
    let mut env = env().await;
    let bin = PathBuf::from("/usr/bin/kubectl");
    let (s, _) = env
        .admin
        .post("/api/v1/groups", json!({"name": "ops"}))
        .await;
    assert_eq!(s, 201);
    let (s, b) = env
        .admin
        .post(
            "/api/v1/grants",
            json!({"group": "ops", "role": "project-admin", "project": "shop"}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let mut open = Vec::new();
    for name in ["dora", "dean", "gina", "pam"] {
        let kc = project_admin(&mut env, name).await;
        open.push((name, kc));
    }
    let mona = env.user_in_group("mona", "ops").await;
    open.push(("mona", mona));
    // Expires once everyone's streams are open.
    let expiry = time::OffsetDateTime::now_utc() + time::Duration::seconds(20);
    let (exa, _) = env
        .user(
            "exa",
            Some(json!({"role": "project-admin", "project": "shop",
                "expires_at": expiry.format(&time::format_description::well_known::Rfc3339).unwrap()})),
        )
        .await;
    open.push(("exa", exa));
    let mut watches = Vec::new();
    for (name, kc) in &open {
        ok(&bin, kc, &["get", "pods"], None).await;
        assert!(has_account(&env.sim, &format!("ztka-{name}-")).await);
        watches.push(open_watch(&bin, kc).await);
    }
    let gina_grant = env.grant_of("gina").await;
    for ((name, kc), mut watch) in open.iter().zip(watches) {
        let what = match *name {
            "dora" => {
                let (s, b) = env
                    .admin
                    .patch("/api/v1/users/dora", json!({"disabled": true}))
                    .await;
                assert_eq!(s, 200, "{b}");
                "disabling the user"
            }
            "dean" => {
                let (s, _) = env.admin.delete("/api/v1/users/dean").await;
                assert_eq!(s, 204);
                "deleting the user"
            }
            "gina" => {
                let (s, _) = env
                    .admin
                    .delete(&format!("/api/v1/grants/{gina_grant}"))
                    .await;
                assert_eq!(s, 204);
                "removing the grant"
            }
            "pam" => {
                let (s, b) = env
                    .admin
                    .post("/api/v1/users/pam/password", json!({}))
                    .await;
                assert_eq!(s, 200, "{b}");
                "resetting the password"
            }
            "mona" => {
                let (s, _) = env.admin.delete("/api/v1/groups/ops/members/mona").await;
                assert_eq!(s, 204);
                "removing the group membership"
            }
            _ => {
                let left = expiry - time::OffsetDateTime::now_utc();
                if let Ok(left) = Duration::try_from(left) {
                    tokio::time::sleep(left).await;
                }
                "the grant's expiry"
            }
        };
        let ended = tokio::time::timeout(Duration::from_secs(5), watch.wait()).await;
        assert!(ended.is_ok(), "{name}'s watch is still open after {what}");
        let out = kubectl(&bin, kc, &["get", "pods"], None).await;
        assert_ne!(out.code, 0, "{name} still gets through after {what}");
        let start = Instant::now();
        while has_account(&env.sim, &format!("ztka-{name}-")).await {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{name}'s service account is still there after {what}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let (_, b) = env.admin.get("/api/v1/audit?action=grant.expire").await;
    assert_eq!(b["items"].as_array().unwrap().len(), 1, "{b}");
}

/// The agent catches up with what changed behind its back: a user's service account
/// deleted outside ztka is made again on the next request (the API server refuses the
/// cached token; the agent renews it and retries the read), and a grant removed while the
/// agent was away takes the account with it when the agent reconnects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_catches_up_with_changes_made_while_it_was_away() {
    let mut env = env().await;
    let bin = PathBuf::from("/usr/bin/kubectl");
    let hal = project_admin(&mut env, "hal").await;
    let (ivy, _) = env
        .user(
            "ivy",
            Some(json!({"role": "project-read-only", "project": "shop"})),
        )
        .await;
    // jan's kubeconfigs will be revoked while the agent is away; kay's too, but kay
    // downloads a new one at once.
    let jan = project_admin(&mut env, "jan").await;
    let (kay, _) = env
        .user(
            "kay",
            Some(json!({"role": "project-admin", "project": "shop"})),
        )
        .await;
    for kc in [&hal, &ivy, &jan, &kay] {
        ok(&bin, kc, &["get", "pods"], None).await;
    }
    let hal_sa = account_of(&env.sim, "hal").await.unwrap();
    env.sim
        .delete("v1", "ServiceAccount", "ztka-system", &hal_sa)
        .await
        .unwrap();
    assert!(ok(&bin, &hal, &["get", "pods"], None).await.contains("box"));
    assert_eq!(
        account_of(&env.sim, "hal").await.as_deref(),
        Some(hal_sa.as_str())
    );

    let ivy_grant = env.grant_of("ivy").await;
    let mut kay_again = None;
    env.restart_agent(async |env: &mut Env| {
        let (s, _) = env
            .admin
            .delete(&format!("/api/v1/grants/{ivy_grant}"))
            .await;
        assert_eq!(s, 204);
        for who in ["jan", "kay"] {
            let (s, _) = env
                .admin
                .post(&format!("/api/v1/users/{who}/kubeconfig/revoke"), json!({}))
                .await;
            assert_eq!(s, 204);
        }
        // The revocation signed kay out too.
        let mut kay_client = env.sign_in("kay").await;
        kay_again = Some(env.download(&mut kay_client, "kay-again").await);
    })
    .await;
    let start = Instant::now();
    for (who, why) in [
        ("ivy", "her grant was removed"),
        ("jan", "his kubeconfigs were revoked"),
    ] {
        while account_of(&env.sim, who).await.is_some() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{who}'s service account outlived the agent's return after {why}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Those who may use the cluster keep theirs: hal, and kay with the new kubeconfig (the
    // agent has heard about everyone by the time jan's went, and had time to act).
    tokio::time::sleep(Duration::from_secs(1)).await;
    for who in ["hal", "kay"] {
        assert!(
            account_of(&env.sim, who).await.is_some(),
            "{who} lost the account"
        );
    }
    ok(&bin, &hal, &["get", "pods"], None).await;
    ok(&bin, &kay_again.unwrap(), &["get", "pods"], None).await;
}

/// Every kubeconfig download issues a certificate that is recorded (and audited with its
/// serial), listed for its user and an administrator, and revocable on its own: the
/// streams opened with it end and it is refused, also after a restart, while the user's
/// other kubeconfigs go on working. Downloads can be scoped to one cluster and a default
/// namespace, and an administrator can shorten one user's validity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubeconfig_certificates_are_recorded_scoped_and_revocable_one_by_one() {
    let mut env = env().await;
    let bin = PathBuf::from("/usr/bin/kubectl");
    let (laptop, mut kim) = env
        .user(
            "kim",
            Some(json!({"role": "project-admin", "project": "shop"})),
        )
        .await;
    let (s, b) = kim
        .get("/api/v1/kubeconfig?cluster=prod&namespace=team-a")
        .await;
    assert_eq!(s, 200, "{b}");
    let desktop = env.dir.path().join("kim-desktop.kubeconfig");
    std::fs::write(&desktop, b.as_str().unwrap()).unwrap();
    let doc: Value = serde_saphyr::from_str(b.as_str().unwrap()).unwrap();
    assert_eq!(
        doc["contexts"][0]["context"]["namespace"], "team-a",
        "{doc}"
    );
    assert_eq!(doc["contexts"].as_array().unwrap().len(), 1);
    // The default namespace is team-a's: its pod, not default's.
    let pods = ok(&bin, &desktop, &["get", "pods", "-o", "name"], None).await;
    assert_eq!(pods.trim(), "pod/box");
    let (s, _) = kim.get("/api/v1/kubeconfig?cluster=nowhere").await;
    assert_eq!(s, 404);
    let (s, _) = kim.get("/api/v1/kubeconfig?namespace=Not_A_Name").await;
    assert_eq!(s, 400);

    let (s, b) = kim.get("/api/v1/kubeconfig/certificates").await;
    assert_eq!(s, 200, "{b}");
    let certs = b["items"].as_array().unwrap().clone();
    assert_eq!(certs.len(), 2, "{b}");
    assert!(
        certs
            .iter()
            .all(|c| c["active"] == true && c["clusters"] == json!(["prod"]))
    );
    let serial_of = |kc: &Path| {
        let (chain, _) = identity(kc);
        let (_, cert) = x509_parser::parse_x509_certificate(chain[0].as_ref()).unwrap();
        hex::encode(cert.raw_serial())
    };
    let (laptop_serial, desktop_serial) = (serial_of(&laptop), serial_of(&desktop));
    // Newest first.
    assert_eq!(certs[0]["serial"], desktop_serial.as_str());
    assert_eq!(certs[1]["serial"], laptop_serial.as_str());
    let (_, b) = env
        .admin
        .get("/api/v1/audit?action=kubeconfig.download&user=kim")
        .await;
    let mut audited: Vec<&str> = b["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["details"]["serial"].as_str())
        .collect();
    audited.sort();
    let mut issued = vec![laptop_serial.as_str(), desktop_serial.as_str()];
    issued.sort();
    assert_eq!(audited, issued, "{b}");

    // The laptop is lost: kim revokes its certificate; the desktop goes on.
    let mut on_laptop = open_watch(&bin, &laptop).await;
    let mut on_desktop = open_watch(&bin, &desktop).await;
    let (s, b) = kim
        .post(
            &format!("/api/v1/kubeconfig/certificates/{laptop_serial}/revoke"),
            json!({}),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    let ended = tokio::time::timeout(Duration::from_secs(5), on_laptop.wait()).await;
    assert!(
        ended.is_ok(),
        "the revoked certificate's watch is still open"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        on_desktop.try_wait().unwrap().is_none(),
        "the other kubeconfig's watch ended too"
    );
    let (s, b) = raw(&env, Some(identity(&laptop)), "/k8s/prod/api/v1/pods", &[]).await;
    assert_eq!(s, 401, "{b}");
    assert_eq!(
        b["message"],
        "this kubeconfig of user kim was revoked; download a new one"
    );
    ok(&bin, &desktop, &["get", "pods"], None).await;
    let (_, b) = env
        .admin
        .get("/api/v1/users/kim/kubeconfig/certificates")
        .await;
    let active: Vec<(&str, bool)> = b["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["serial"].as_str().unwrap(), c["active"] == true))
        .collect();
    assert_eq!(
        active,
        [
            (desktop_serial.as_str(), true),
            (laptop_serial.as_str(), false)
        ]
    );
    // What is not a certificate of this user is not found; what is not a serial is refused.
    let (s, _) = env
        .admin
        .post("/api/v1/users", json!({"name": "rex", "kind": "service"}))
        .await;
    assert_eq!(s, 201);
    for (path, want) in [
        (
            format!("/api/v1/users/rex/kubeconfig/certificates/{desktop_serial}/revoke"),
            404,
        ),
        (
            "/api/v1/users/kim/kubeconfig/certificates/0badc0de/revoke".to_owned(),
            404,
        ),
        (
            "/api/v1/users/kim/kubeconfig/certificates/not-hex/revoke".to_owned(),
            400,
        ),
    ] {
        let (s, b) = env.admin.post(&path, json!({})).await;
        assert_eq!(s, want, "{path}: {b}");
    }
    ok(&bin, &desktop, &["get", "pods"], None).await;

    // Revocations outlive a restart.
    env.restart_server().await;
    let (s, _) = raw(&env, Some(identity(&laptop)), "/k8s/prod/api/v1/pods", &[]).await;
    assert_eq!(s, 401);
    ok(&bin, &desktop, &["get", "pods"], None).await;
    let (s, b) = env
        .admin
        .post(
            &format!("/api/v1/users/kim/kubeconfig/certificates/{desktop_serial}/revoke"),
            json!({}),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    let (s, _) = raw(&env, Some(identity(&desktop)), "/k8s/prod/api/v1/pods", &[]).await;
    assert_eq!(s, 401);
    let (_, b) = env
        .admin
        .get("/api/v1/audit?action=kubeconfig.revoke")
        .await;
    let outcomes = |o: &str| {
        b["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["outcome"] == o && e["details"]["serial"].is_string())
            .count()
    };
    // Two revocations; the refused attempts are on record too.
    assert_eq!((outcomes("success"), outcomes("error")), (2, 2), "{b}");

    // A shorter validity for kim alone.
    let (s, b) = env
        .admin
        .patch(
            "/api/v1/users/kim",
            json!({"kubeconfig_validity_secs": 600}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let mut kim = env.sign_in("kim").await;
    let short = env.download(&mut kim, "kim-short").await;
    let (chain, _) = identity(&short);
    let (_, cert) = x509_parser::parse_x509_certificate(chain[0].as_ref()).unwrap();
    let issued = time::OffsetDateTime::now_utc().unix_timestamp();
    let lifetime = cert.validity().not_after.timestamp() - issued;
    assert!((590..=610).contains(&lifetime), "{lifetime} s");
    ok(&bin, &short, &["get", "pods"], None).await;
}

/// A mutation is on record before the API server sees it: while the simulator holds the
/// request, its `pending` event is already in the log; the outcome follows under the same
/// request id. Discovery requests are marked as such.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutations_are_on_record_before_the_api_server_sees_them() {
    let mut env = env().await;
    let bin = PathBuf::from("/usr/bin/kubectl");
    let kc = project_admin(&mut env, "moe").await;
    // Discovery now, so the delete below makes one request.
    ok(&bin, &kc, &["get", "pods", "-n", "team-a"], None).await;
    let (_, b) = env
        .admin
        .get("/api/v1/audit?kind=kube&user=moe&limit=200")
        .await;
    assert!(
        b["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["target"]["kind"] == "discovery" && e["details"]["discovery"] == true),
        "{b}"
    );
    env.sim.set_latency(Duration::from_secs(3));
    let mut delete = spawn_kubectl(
        &bin,
        &kc,
        &["delete", "pod", "box", "-n", "team-a", "--wait=false"],
    );
    let pending = loop {
        let (_, b) = env
            .admin
            .get("/api/v1/audit?kind=kube&user=moe&outcome=pending&limit=5")
            .await;
        let found = b["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["kube"]["verb"] == "delete" && e["target"]["name"] == "box")
            .cloned();
        if let Some(e) = found {
            break e;
        }
        assert!(
            delete.try_wait().unwrap().is_none(),
            "kubectl finished before the pending event was in the log: {b}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        delete.try_wait().unwrap().is_none(),
        "the pending event appeared only after the API server answered"
    );
    // The simulator logs a request once it has answered it (its latency comes first).
    assert!(
        !env.sim.requests().iter().any(|r| r.method == "DELETE"),
        "the API server answered before the pending event was read"
    );
    assert!(
        tokio::time::timeout(Duration::from_secs(20), delete.wait())
            .await
            .unwrap()
            .unwrap()
            .success()
    );
    env.sim.set_latency(Duration::ZERO);
    let id = pending["request_id"].as_str().unwrap();
    let (_, b) = env
        .admin
        .get("/api/v1/audit?action=kube.response&user=moe&limit=20")
        .await;
    let outcome = b["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["request_id"] == id)
        .unwrap_or_else(|| panic!("no outcome for {id}: {b}"));
    assert_eq!(outcome["status"], 200, "{outcome}");
    assert!(outcome["seq"].as_u64().unwrap() > pending["seq"].as_u64().unwrap());
}

/// A kube event carries the bytes the client was sent and the time until the answer ended:
/// for a whole answer, a watch the API server ends (streamed, no Content-Length), and a
/// watch the client walks away from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_events_carry_the_bytes_sent_and_the_whole_duration() {
    let mut env = env().await;
    let bin = PathBuf::from("/usr/bin/kubectl");
    let kc = project_admin(&mut env, "ivy").await;
    let client = client_trusting(&[env.server.data_dir.join("ca.crt")], Some(identity(&kc)));
    let mut sent = Vec::new();
    for path in [
        "/k8s/prod/api/v1/namespaces/default/pods",
        "/k8s/prod/api/v1/namespaces/default/pods?watch=true&timeoutSeconds=1",
    ] {
        let res = client.send(get(&env.server.url(path))).await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        let id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
        sent.push((
            id,
            res.headers().contains_key("content-length"),
            res.body().len() as u64,
        ));
    }
    assert!(
        sent[0].1 && !sent[1].1,
        "a whole answer and a streamed one: {sent:?}"
    );
    // A watch the client walks away from, after one change reached it.
    let (mut watch, mut out) = spawn_streaming(&bin, &kc, &["get", "pods", "-w"]).await;
    watching(&env, &mut out, "late").await;
    tokio::time::sleep(Duration::from_millis(900)).await;
    watch.kill().await.unwrap();
    // A watch still open when the server shuts down ends with it, and is on record.
    let (_still_open, mut out) = spawn_streaming(&bin, &kc, &["get", "pods", "-w"]).await;
    watching(&env, &mut out, "later").await;
    env.restart_server().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let events = loop {
        let (_, b) = env
            .admin
            .get("/api/v1/audit?kind=kube&user=ivy&limit=100")
            .await;
        let events = b["items"].as_array().unwrap().clone();
        let ended = events
            .iter()
            .filter(|e| e["kube"]["verb"] == "watch" && e["action"] == "kube.response")
            .count();
        if ended >= 3 {
            break events;
        }
        assert!(
            Instant::now() < deadline,
            "three ended watches expected: {b}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let find = |id: &str, action: &str| {
        events
            .iter()
            .find(|e| e["request_id"] == id && e["action"] == action)
            .unwrap_or_else(|| panic!("no {action} for {id}: {events:?}"))
    };
    let list = find(&sent[0].0, "kube.request");
    assert_eq!(list["kube"]["bytes"], sent[0].2, "{list}");
    let watch = find(&sent[1].0, "kube.response");
    assert!(sent[1].2 > 0);
    assert_eq!(watch["kube"]["bytes"], sent[1].2, "{watch}");
    assert!(
        watch["kube"]["duration_ms"].as_f64().unwrap() >= 900.0,
        "{watch}"
    );
    assert!(watch["details"]["ended"].is_null(), "{watch}");
    // Each watch was on record from its start.
    let ended: Vec<&Value> = events
        .iter()
        .filter(|e| e["kube"]["verb"] == "watch" && e["action"] == "kube.response")
        .collect();
    for e in &ended {
        let start = find(e["request_id"].as_str().unwrap(), "kube.request");
        assert_eq!(start["outcome"], "pending", "{start}");
        assert!(start["seq"].as_u64().unwrap() < e["seq"].as_u64().unwrap());
    }
    let why = |e: &&Value| e["details"]["ended"].as_str().unwrap_or("").to_owned();
    let walked_away = ended
        .iter()
        .find(|e| why(e) == "the client left")
        .unwrap_or_else(|| panic!("the watch the client left: {ended:?}"));
    assert!(
        walked_away["kube"]["bytes"].as_u64().unwrap() > 0,
        "{walked_away}"
    );
    assert!(
        walked_away["kube"]["duration_ms"].as_f64().unwrap() >= 900.0,
        "{walked_away}"
    );
    let shut = ended
        .iter()
        .find(|e| why(e) == "the server shut down")
        .unwrap_or_else(|| panic!("the watch open at shutdown: {ended:?}"));
    assert_eq!(shut["status"], 200, "{shut}");
    assert!(shut["kube"]["bytes"].as_u64().unwrap() > 0, "{shut}");
}

/// Waits until a pod created now reaches an open `kubectl get pods -w`.
async fn watching(env: &Env, out: &mut OutputLines, pod_name: &str) {
    env.sim.create(pod("default", pod_name)).await.unwrap();
    loop {
        let line = tokio::time::timeout(Duration::from_secs(20), out.next_line())
            .await
            .expect("the new pod reaches the watch")
            .unwrap()
            .expect("the watch is open");
        if line.split_whitespace().next() == Some(pod_name) {
            return;
        }
    }
}

/// A tunnel the server closes takes its open streams with it: deleting the cluster ends a
/// watch at once, though the user's grant (project-wide) still stands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_cluster_ends_the_streams_open_on_its_tunnel() {
    let mut env = env().await;
    let bin = PathBuf::from("/usr/bin/kubectl");
    let kc = project_admin(&mut env, "wes").await;
    let mut watch = open_watch(&bin, &kc).await;
    let (s, _) = env
        .admin
        .delete("/api/v1/projects/shop/clusters/prod")
        .await;
    assert_eq!(s, 204);
    let deleted = Instant::now();
    let w = tokio::time::timeout(Duration::from_secs(5), watch.wait()).await;
    assert!(
        w.is_ok(),
        "the watch is still open after its cluster was deleted"
    );
    eprintln!("the watch ended {:?} after the deletion", deleted.elapsed());
}

/// An agent that stops gracefully finishes what it is answering: a followed log keeps
/// streaming through the relay after the agent was told to stop and the server saw the
/// tunnel close, until the agent's own limit (5 s) ends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_in_flight_finish_when_the_agent_closes_its_tunnel() {
    let mut env = env().await;
    let bin = PathBuf::from("/usr/bin/kubectl");
    let kc = project_admin(&mut env, "lia").await;
    let (_logs, mut out) =
        spawn_streaming(&bin, &kc, &["logs", "-f", "box", "-n", "default"]).await;
    unsafe {
        libc::kill(env.agent.id() as i32, libc::SIGTERM);
    }
    let stopped = Instant::now();
    // A request on the closing tunnel makes the server see the agent's GOAWAY at once.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = kubectl(&bin, &kc, &["get", "pods"], None).await;
    let mut last = stopped;
    while let Ok(Ok(Some(_))) = tokio::time::timeout(Duration::from_secs(10), out.next_line()).await
    {
        last = Instant::now();
        if last - stopped > Duration::from_secs(2) {
            break;
        }
    }
    assert!(
        last - stopped > Duration::from_secs(2),
        "the followed log ended {:?} after the agent was told to stop",
        last - stopped
    );
}

/// A user with `project-admin` on the cluster's project, and their kubeconfig.
async fn project_admin(env: &mut Env, name: &str) -> PathBuf {
    let (kc, _) = env
        .user(
            name,
            Some(json!({"role": "project-admin", "project": "shop"})),
        )
        .await;
    kc
}

/// A kubectl process with its standard streams piped.
fn spawn_kubectl(bin: &Path, kc: &Path, args: &[&str]) -> tokio::process::Child {
    kubesim::kubectl::command(bin, kc, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

type OutputLines = tokio::io::Lines<BufReader<tokio::process::ChildStdout>>;

/// A long-running kubectl, once it printed its first line, and the rest of its output.
async fn spawn_streaming(
    bin: &Path,
    kc: &Path,
    args: &[&str],
) -> (tokio::process::Child, OutputLines) {
    let mut child = spawn_kubectl(bin, kc, args);
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(20), out.next_line())
        .await
        .unwrap_or_else(|_| panic!("kubectl {args:?} printed nothing within 20 s"))
        .unwrap();
    assert!(first.is_some(), "kubectl {args:?} ended at once");
    (child, out)
}

/// `kubectl get pods -w`, open (its output keeps flowing).
async fn open_watch(bin: &Path, kc: &Path) -> tokio::process::Child {
    let (watch, mut out) = spawn_streaming(bin, kc, &["get", "pods", "-w"]).await;
    // The rest of its output is read and dropped, so the watch never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = out.next_line().await {} });
    watch
}

/// The name of the user's service account, if there is one.
async fn account_of(sim: &KubeSim, user: &str) -> Option<String> {
    let prefix = format!("ztka-{user}-");
    sim.list("v1", "ServiceAccount", "ztka-system", "")
        .await
        .unwrap()
        .iter()
        .filter_map(|a| a["metadata"]["name"].as_str().map(str::to_owned))
        .find(|n| n.starts_with(&prefix))
}

async fn has_account(sim: &KubeSim, prefix: &str) -> bool {
    sim.list("v1", "ServiceAccount", "ztka-system", "")
        .await
        .unwrap()
        .iter()
        .any(|sa| {
            sa["metadata"]["name"]
                .as_str()
                .unwrap_or("")
                .starts_with(prefix)
        })
}
