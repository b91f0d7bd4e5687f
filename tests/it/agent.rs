//! Cluster import, agent registration and the tunnel, against the real server, a real
//! `ztka agent` process and the Kubernetes API simulator.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use redb::ReadableTable as _;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};

use crate::fixture::{ApiClient, InProcess, ServerProcess, client_trusting, ztka};

/// Creates project `p` (if needed) and cluster `name`, and returns a bootstrap answer.
pub async fn import(api: &mut ApiClient, project: &str, name: &str) -> Value {
    let (s, b) = api.post("/api/v1/projects", json!({"name": project})).await;
    assert!(s == 201 || s == 409, "{s} {b}");
    let (s, b) = api
        .post(
            &format!("/api/v1/projects/{project}/clusters"),
            json!({"name": name, "description": "test cluster"}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["status"]["state"], "pending");
    let (s, b) = api
        .post(
            &format!("/api/v1/projects/{project}/clusters/{name}/bootstrap"),
            json!({}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert!(b["token"].as_str().unwrap().starts_with("ztkab_"));
    b
}

/// A `ztka agent` process keeping its identity in `state`, with its health endpoint on
/// `health` (also what `ztka healthcheck --agent` reads).
fn spawn_agent(
    server: &str,
    ca: &Path,
    token_file: &Path,
    state: &Path,
    kubeconfig: &Path,
    health: &str,
) -> Child {
    ztka()
        .args(["agent", "--server", server, "--server-ca"])
        .arg(ca)
        .arg("--token-file")
        .arg(token_file)
        .arg("--state-dir")
        .arg(state)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .env("ZTKA_HEALTH_LISTEN", health)
        .env("ZTKA_LOG", "ztka=debug")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// `ztka healthcheck --agent` against the agent whose health endpoint is `health`.
fn agent_healthcheck(health: &str) -> std::process::Output {
    ztka()
        .args(["healthcheck", "--agent"])
        .env("ZTKA_HEALTH_LISTEN", health)
        .output()
        .unwrap()
}

/// Polls the cluster until `pred` holds, or panics after `limit` with the last answer.
async fn wait_for_cluster(
    api: &mut ApiClient,
    path: &str,
    limit: Duration,
    pred: impl Fn(&Value) -> bool,
) -> (Value, Duration) {
    let start = Instant::now();
    loop {
        let (s, b) = api.get(path).await;
        assert_eq!(s, 200, "{b}");
        if pred(&b) {
            return (b, start.elapsed());
        }
        assert!(
            start.elapsed() < limit,
            "cluster never reached the state: {b}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn audit_has(api: &mut ApiClient, action: &str, outcome: &str, reason: &str) -> Value {
    audit_has_in(api, "", action, outcome, reason).await
}

/// [`audit_has`] among the events of one cluster ("" = any).
async fn audit_has_in(
    api: &mut ApiClient,
    cluster: &str,
    action: &str,
    outcome: &str,
    reason: &str,
) -> Value {
    let scope = if cluster.is_empty() {
        String::new()
    } else {
        format!("&cluster={cluster}")
    };
    let (s, b) = api
        .get(&format!(
            "/api/v1/audit?action={action}&outcome={outcome}{scope}&limit=50"
        ))
        .await;
    assert_eq!(s, 200, "{b}");
    let events = b["items"].as_array().unwrap();
    events
        .iter()
        .find(|e| {
            e["details"]["reason"]
                .as_str()
                .unwrap_or("")
                .contains(reason)
        })
        .cloned()
        .unwrap_or_else(|| panic!("no {action}/{outcome} event with reason {reason:?}: {b}"))
}

#[tokio::test]
async fn agent_registers_comes_online_survives_a_restart_and_is_refused_after_delete() {
    let sim = kubesim::KubeSim::start(Default::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // A fixed port, so the agent finds the restarted server where it left it.
    let port = crate::fixture::free_port();
    let listen = format!("127.0.0.1:{port}");
    let server = ServerProcess::start_at(&data, &listen, &[], |_| {});
    let mut api = server.admin().await;
    let boot = import(&mut api, "shop", "prod").await;
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, boot["token"].as_str().unwrap()).unwrap();
    let state = dir.path().join("agent-state");
    let url = format!("https://127.0.0.1:{port}");
    let health = format!("127.0.0.1:{}", crate::fixture::free_port());
    let mut agent = spawn_agent(
        &url,
        &data.join("ca.crt"),
        &token_file,
        &state,
        sim.kubeconfig_path(),
        &health,
    );
    let path = "/api/v1/projects/shop/clusters/prod";
    let (b, _) = wait_for_cluster(&mut api, path, Duration::from_secs(20), |b| {
        b["status"]["state"] == "online" && b["status"]["kubernetes_version"].is_string()
    })
    .await;
    assert_eq!(b["status"]["agent_version"], env!("CARGO_PKG_VERSION"));
    assert!(
        b["status"]["kubernetes_version"]
            .as_str()
            .unwrap()
            .starts_with('v')
    );
    assert!(b["status"]["connected_since"].is_string());
    assert!(b["status"]["registered_at"].is_string());
    // The identity is kept in a private file; the token is spent.
    assert_eq!(crate::fixture::mode(&state.join("identity.json")), 0o600);

    // The server goes away and comes back on the same port.
    server.signal(libc::SIGKILL);
    let mut server = server;
    crate::fixture::wait_timeout(&mut server.child, Duration::from_secs(10));
    let server = ServerProcess::start_at(&data, &listen, &[], |_| {});
    let restarted = Instant::now();
    let mut api = server.admin_again().await;
    let (b, _) = wait_for_cluster(&mut api, path, Duration::from_secs(10), |b| {
        b["status"]["state"] == "online"
    })
    .await;
    eprintln!(
        "agent back online {:?} after the restart",
        restarted.elapsed()
    );
    assert!(b["status"]["last_seen"].is_string());
    assert!(agent_healthcheck(&health).status.success());

    // A server that stops answering (no TCP reset, just silence) is noticed by the agent's
    // keepalive within 30 s: it reports not ready, and reconnects once the server is back.
    server.signal(libc::SIGSTOP);
    let frozen = Instant::now();
    while agent_healthcheck(&health).status.success() {
        assert!(
            frozen.elapsed() < Duration::from_secs(30),
            "the agent never noticed the silent server"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!("silent server noticed after {:?}", frozen.elapsed());
    server.signal(libc::SIGCONT);
    wait_for_cluster(&mut api, path, Duration::from_secs(20), |b| {
        b["status"]["state"] == "online"
    })
    .await;

    // A frozen agent (no TCP reset, just silence) is noticed by keepalive within 30 s…
    unsafe {
        libc::kill(agent.id() as i32, libc::SIGSTOP);
    }
    let (_, noticed) = wait_for_cluster(&mut api, path, Duration::from_secs(30), |b| {
        b["status"]["state"] == "offline"
    })
    .await;
    eprintln!("frozen agent noticed after {noticed:?}");
    // …and once it runs again it reconnects.
    unsafe {
        libc::kill(agent.id() as i32, libc::SIGCONT);
    }
    wait_for_cluster(&mut api, path, Duration::from_secs(45), |b| {
        b["status"]["state"] == "online"
    })
    .await;

    // The list shows it too.
    let (s, list) = api.get("/api/v1/projects/shop/clusters").await;
    assert_eq!(s, 200);
    assert_eq!(list["items"][0]["name"], "prod");

    // A project with clusters cannot be deleted.
    let (s, b) = api.delete("/api/v1/projects/shop").await;
    assert_eq!(s, 409, "{b}");
    assert!(b["error"]["message"].as_str().unwrap().contains("prod"));

    // Deleting the cluster closes the tunnel, and the agent's certificate is refused.
    let (s, b) = api.delete(path).await;
    assert_eq!(s, 204, "{b}");
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let (_, b) = api
            .get("/api/v1/audit?action=agent.tunnel&outcome=denied&limit=5")
            .await;
        let refused = b["items"].as_array().unwrap().iter().any(|e| {
            e["details"]["reason"]
                .as_str()
                .unwrap_or("")
                .contains("no longer exists")
        });
        if refused {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the agent was never refused: {b}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, b) = api
        .get("/api/v1/audit?action=agent.disconnect&limit=5")
        .await;
    assert!(
        b["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["details"]["reason"] == "closed by the server"),
        "{b}"
    );
    let _ = agent.kill();
    let _ = agent.wait();
    server.stop();
}

/// Agent certificates that last 9 s: the real agent renews at two thirds of that while its
/// tunnel is up and reconnects with the new one; a tunnel whose certificate runs out is
/// closed by the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_renews_while_connected_and_expired_certificates_lose_the_tunnel() {
    let sim = kubesim::KubeSim::start(Default::default()).await.unwrap();
    let server = InProcess::start_with(|c| {
        c.agents.certificate_validity = Duration::from_secs(9);
    })
    .await;
    let ca = server.server.state.config.data_dir.join("ca.crt");
    let mut api = server.admin().await;

    // A tunnel that never renews: the in-process agent code without the renewal loop.
    let boot = import(&mut api, "team", "stale").await;
    let anonymous = client_trusting(std::slice::from_ref(&ca), None);
    let identity = ztka::agent::identity::register(
        &anonymous,
        &server.base(),
        boot["token"].as_str().unwrap(),
    )
    .await
    .unwrap();
    let stale_ctx = std::sync::Arc::new(ztka::agent::Context::new(server.base(), None, identity));
    let stale_client = client_trusting(
        std::slice::from_ref(&ca),
        Some(stale_ctx.identity().tls_identity().unwrap()),
    );
    let stop = tokio_util::sync::CancellationToken::new();
    let stale = {
        let stop = stop.clone();
        tokio::spawn(async move {
            ztka::agent::tunnel::run_once(&stale_ctx, &stale_client, &stop).await
        })
    };

    // The real agent, with its health endpoint.
    let boot = import(&mut api, "team", "fresh").await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, boot["token"].as_str().unwrap()).unwrap();
    let state = dir.path().join("agent-state");
    let health = format!("127.0.0.1:{}", crate::fixture::free_port());
    let mut agent = spawn_agent(
        &server.base(),
        &ca,
        &token_file,
        &state,
        sim.kubeconfig_path(),
        &health,
    );
    let path = "/api/v1/projects/team/clusters/fresh";
    let (b, _) = wait_for_cluster(&mut api, path, Duration::from_secs(20), |b| {
        b["status"]["state"] == "online"
    })
    .await;
    let first_connected = b["status"]["connected_since"].clone();
    // The real agent's own events (the in-process one above has its own).
    audit_has_in(&mut api, "fresh", "agent.register", "success", "").await;
    audit_has_in(&mut api, "fresh", "agent.connect", "success", "").await;
    let certificate = || {
        let raw = std::fs::read(state.join("identity.json")).unwrap();
        serde_json::from_slice::<Value>(&raw).unwrap()["certificate_pem"].clone()
    };
    let first_certificate = certificate();
    let out = agent_healthcheck(&health);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // About 6 s after registering, the agent renews, stores the new certificate and
    // reconnects with it; the cluster is online again under a new connection.
    let (b, _) = wait_for_cluster(&mut api, path, Duration::from_secs(20), |b| {
        b["status"]["state"] == "online" && b["status"]["connected_since"] != first_connected
    })
    .await;
    assert!(b["status"]["connected_since"].is_string());
    audit_has(&mut api, "agent.renew", "success", "").await;
    assert_ne!(certificate(), first_certificate);

    // The tunnel that kept its first certificate was closed when it expired.
    let up = tokio::time::timeout(Duration::from_secs(20), stale)
        .await
        .expect("the server never closed the expired tunnel")
        .unwrap()
        .unwrap();
    assert!(up < Duration::from_secs(12), "up {up:?}");
    audit_has(
        &mut api,
        "agent.disconnect",
        "success",
        "certificate expired",
    )
    .await;
    // …while the renewing agent, well past its first certificate's 9 s, is still online.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (s, b) = api.get(path).await;
    assert_eq!(s, 200);
    assert_eq!(b["status"]["state"], "online", "{b}");
    let (_, b) = api
        .get("/api/v1/audit?action=agent.disconnect&cluster=fresh&limit=50")
        .await;
    assert!(
        !b["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["details"]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("expired"))),
        "the renewing agent never lost its tunnel to expiry: {b}"
    );

    let _ = agent.kill();
    let _ = agent.wait();
    let out = agent_healthcheck(&health);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("readyz"));
    stop.cancel();
}

fn identity_of(
    pem_cert: &str,
    pem_key: &str,
) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let chain = CertificateDer::pem_slice_iter(pem_cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    (
        chain,
        PrivateKeyDer::from_pem_slice(pem_key.as_bytes()).unwrap(),
    )
}

/// Sends the tunnel request with `identity` and returns the status and error message.
async fn try_tunnel(
    server: &InProcess,
    cluster_id: &str,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> (u16, String) {
    let ca = server.server.state.config.data_dir.join("ca.crt");
    let client = client_trusting(&[ca], identity);
    let req = hyper::Request::get(format!(
        "{}/agent/v1/clusters/{cluster_id}/tunnel",
        server.base()
    ))
    .header("upgrade", "ztka-tunnel/1")
    .header("connection", "upgrade")
    .body(Full::new(Bytes::new()))
    .unwrap();
    let res = client.send(req).await.unwrap();
    let status = res.status().as_u16();
    (status, ztka::agent::error_message(res.body()))
}

async fn register_raw(server: &InProcess, token: &str, csr: &str) -> (u16, Value) {
    let mut c = server.anonymous();
    c.post("/agent/v1/register", json!({"token": token, "csr": csr}))
        .await
}

#[tokio::test]
async fn registration_and_tunnel_refusals_are_clear_and_audited() {
    let server = InProcess::start().await;
    let mut api = server.admin().await;
    let a = import(&mut api, "team", "alpha").await;
    let b = import(&mut api, "team", "beta").await;
    let token_a = a["token"].as_str().unwrap();
    let id_a = ztka::domain::cluster::bootstrap_token_cluster(token_a).unwrap();
    let id_b =
        ztka::domain::cluster::bootstrap_token_cluster(b["token"].as_str().unwrap()).unwrap();

    // Malformed CSR: 400 naming the field; the token is not spent by it.
    let (s, body) = register_raw(&server, token_a, "garbage").await;
    assert_eq!(s, 400, "{body}");
    assert_eq!(body["error"]["field"], "csr");
    audit_has(&mut api, "agent.register", "error", "PKCS#10").await;

    // A CSR asking for another cluster's identity.
    let (_, other) = ztka::pki::csr::create(&id_b.to_string(), "ztka:agent").unwrap();
    let (s, body) = register_raw(&server, token_a, &other).await;
    assert_eq!(s, 403, "{body}");
    assert_eq!(body["error"]["code"], "identity_mismatch");
    audit_has(&mut api, "agent.register", "denied", "may only ask for").await;
    // …or for more than the agent identity.
    let (_, admin_org) = ztka::pki::csr::create(&id_a.to_string(), "system:masters").unwrap();
    let (s, body) = register_raw(&server, token_a, &admin_org).await;
    assert_eq!(s, 403, "{body}");
    assert_eq!(body["error"]["code"], "identity_mismatch");
    audit_has(
        &mut api,
        "agent.register",
        "denied",
        "more than the agent identity",
    )
    .await;

    // The real registration works once; the replay is refused.
    let (key_a, csr_a) = ztka::pki::csr::create(&id_a.to_string(), "ztka:agent").unwrap();
    let (s, issued_a) = register_raw(&server, token_a, &csr_a).await;
    assert_eq!(s, 200, "{issued_a}");
    assert_eq!(issued_a["cluster"], "alpha");
    assert_eq!(issued_a["project"], "team");
    let (s, body) = register_raw(&server, token_a, &csr_a).await;
    assert_eq!(s, 401, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already used")
    );
    audit_has(&mut api, "agent.register", "denied", "already used").await;

    // An expired token.
    let c = import(&mut api, "team", "gamma").await;
    let token_c = c["token"].as_str().unwrap().to_owned();
    let hash = ztka::authn::sha256_hex(&token_c);
    server
        .server
        .state
        .store
        .write(move |txn| {
            let mut t = txn.open_table(ztka::store::tables::BOOTSTRAP_TOKENS)?;
            let mut record: ztka::domain::cluster::BootstrapToken =
                serde_json::from_slice(t.get(hash.as_str())?.unwrap().value())?;
            record.expires_at = time::OffsetDateTime::now_utc() - time::Duration::minutes(1);
            t.insert(hash.as_str(), serde_json::to_vec(&record)?.as_slice())?;
            Ok(())
        })
        .await
        .unwrap();
    let id_c = ztka::domain::cluster::bootstrap_token_cluster(&token_c).unwrap();
    let (_, csr_c) = ztka::pki::csr::create(&id_c.to_string(), "ztka:agent").unwrap();
    let (s, body) = register_raw(&server, &token_c, &csr_c).await;
    assert_eq!(s, 401, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired")
    );
    audit_has(&mut api, "agent.register", "denied", "expired").await;

    // A token superseded by a newer one, and the token of a deleted cluster.
    let d1 = import(&mut api, "team", "delta").await;
    let (_, d2) = api
        .post("/api/v1/projects/team/clusters/delta/bootstrap", json!({}))
        .await;
    let id_d =
        ztka::domain::cluster::bootstrap_token_cluster(d1["token"].as_str().unwrap()).unwrap();
    let (_, csr_d) = ztka::pki::csr::create(&id_d.to_string(), "ztka:agent").unwrap();
    let (s, body) = register_raw(&server, d1["token"].as_str().unwrap(), &csr_d).await;
    assert_eq!(s, 401, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("replaced")
    );
    let (s, _) = api.delete("/api/v1/projects/team/clusters/delta").await;
    assert_eq!(s, 204);
    let (s, body) = register_raw(&server, d2["token"].as_str().unwrap(), &csr_d).await;
    assert_eq!(s, 401, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("deleted")
    );
    audit_has(&mut api, "agent.register", "denied", "deleted").await;

    // Tunnel: no certificate, a user certificate, another cluster's path.
    let cert_a = || {
        identity_of(
            issued_a["certificate"].as_str().unwrap(),
            &key_a.serialize_pem(),
        )
    };
    let (s, m) = try_tunnel(&server, &id_a.to_string(), None).await;
    assert_eq!(s, 401, "{m}");
    let user_key = rcgen::KeyPair::generate().unwrap();
    let user_cert = server
        .server
        .state
        .pki
        .issue_client_cert(
            &user_key,
            &uuid::Uuid::now_v7().to_string(),
            &["ztka:user".to_owned()],
            Duration::from_secs(3600),
        )
        .unwrap();
    let (s, m) = try_tunnel(
        &server,
        &id_a.to_string(),
        Some(identity_of(&user_cert.pem, &user_key.serialize_pem())),
    )
    .await;
    assert_eq!(s, 403, "{m}");
    assert!(m.contains("not an agent certificate"), "{m}");
    audit_has(
        &mut api,
        "agent.tunnel",
        "denied",
        "not an agent certificate",
    )
    .await;
    let (s, m) = try_tunnel(&server, &id_b.to_string(), Some(cert_a())).await;
    assert_eq!(s, 403, "{m}");
    assert!(m.contains("belongs to cluster alpha"), "{m}");
    audit_has(
        &mut api,
        "agent.tunnel",
        "denied",
        "belongs to cluster alpha",
    )
    .await;
    // Without the Upgrade header the right certificate gets a clear 426.
    let ca = server.server.state.config.data_dir.join("ca.crt");
    let res = client_trusting(&[ca], Some(cert_a()))
        .send(
            hyper::Request::get(format!("{}/agent/v1/clusters/{id_a}/tunnel", server.base()))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 426);

    // Renewal keeps the previous certificate valid; a new registration replaces both.
    let client = client_trusting(
        &[server.server.state.config.data_dir.join("ca.crt")],
        Some(cert_a()),
    );
    let current: ztka::agent::identity::Identity = serde_json::from_value(json!({
        "cluster_id": id_a, "cluster": "alpha", "project": "team",
        "key_pem": key_a.serialize_pem(),
        "certificate_pem": issued_a["certificate"],
        "issued_at": "2026-01-01T00:00:00Z",
        "not_after": issued_a["not_after"],
    }))
    .unwrap();
    let renewed = ztka::agent::identity::renew(&client, &server.base(), &current)
        .await
        .unwrap();
    assert_ne!(renewed.certificate_pem, current.certificate_pem);
    let serials = |name: &'static str| {
        let store = server.server.state.store.clone();
        async move {
            store
                .read(move |txn| {
                    ztka::store::named::read::by_name::<ztka::domain::cluster::Cluster>(txn, name)
                })
                .await
                .unwrap()
                .unwrap()
                .agent_serials
        }
    };
    assert_eq!(serials("alpha").await.len(), 2);
    audit_has(&mut api, "agent.renew", "success", "").await;
}

// kubectl runs blocking; the simulator needs other threads meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_applies_with_kubectl_and_the_agent_role_is_least_privilege() {
    let sim = kubesim::KubeSim::start(Default::default()).await.unwrap();
    let server = InProcess::start().await;
    let mut api = server.admin().await;
    let boot = import(&mut api, "ops", "edge").await;
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("manifest.yaml");
    std::fs::write(&manifest, boot["manifest"].as_str().unwrap()).unwrap();
    let kubectl = |args: &[&str]| {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(sim.kubeconfig_path())
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let m = manifest.to_str().unwrap();
    let (ok, out) = kubectl(&["apply", "--dry-run=client", "-f", m]);
    assert!(ok, "{out}");
    let (ok, out) = kubectl(&["apply", "-f", m]);
    assert!(ok, "{out}");
    assert!(out.contains("deployment.apps/ztka-agent created"), "{out}");

    // The one-line install command fetches the same manifest by token.
    let cmd = boot["install_command"].as_str().unwrap();
    assert!(cmd.contains("--pinnedpubkey 'sha256//"), "{cmd}");
    let token = boot["token"].as_str().unwrap();
    let (s, fetched) = server
        .anonymous()
        .get(&format!("/agent/v1/manifests/{token}"))
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        fetched.as_str().unwrap(),
        boot["manifest"].as_str().unwrap()
    );
    let (s, _) = server
        .anonymous()
        .get("/agent/v1/manifests/ztkab_nope_x")
        .await;
    assert_eq!(s, 401);

    // Act as the agent's service account.
    let sa = sim
        .create_token("ztka-system", "ztka-agent", 3600)
        .await
        .unwrap();
    let as_agent = |method: &'static str, path: String, body: Option<Value>| {
        let sim = &sim;
        let sa = sa.clone();
        async move {
            sim.request_as(&sa, method, &path, body.as_ref())
                .await
                .unwrap()
                .0
        }
    };
    let user_sa = json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "ztka-u-alice", "namespace": "ztka-system"}});
    // What the relay needs: service accounts and their tokens in ztka-system…
    assert_eq!(
        as_agent(
            "POST",
            "/api/v1/namespaces/ztka-system/serviceaccounts".into(),
            Some(user_sa)
        )
        .await,
        201
    );
    let tr = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"expirationSeconds": 600}});
    assert_eq!(
        as_agent(
            "POST",
            "/api/v1/namespaces/ztka-system/serviceaccounts/ztka-u-alice/token".into(),
            Some(tr)
        )
        .await,
        201
    );
    // …bindings to the three ztka roles, cluster-wide and per namespace…
    let subject =
        json!([{"kind": "ServiceAccount", "name": "ztka-u-alice", "namespace": "ztka-system"}]);
    for role in ["ztka:full-access", "ztka:read-only"] {
        let crb = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": format!("ztka-u-alice-{}", role.replace(':', "-"))},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": subject});
        assert_eq!(
            as_agent(
                "POST",
                "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings".into(),
                Some(crb)
            )
            .await,
            201,
            "{role}"
        );
    }
    let rb = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "ztka-u-alice", "namespace": "default"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "ztka:namespace-admin"},
        "subjects": subject});
    assert_eq!(
        as_agent(
            "POST",
            "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings".into(),
            Some(rb)
        )
        .await,
        201
    );
    assert_eq!(
        as_agent(
            "GET",
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings".into(),
            None
        )
        .await,
        200
    );
    assert_eq!(
        as_agent("GET", "/api/v1/namespaces".into(), None).await,
        200
    );
    assert_eq!(
        as_agent(
            "GET",
            "/api/v1/namespaces/ztka-system/secrets/ztka-agent-identity".into(),
            None
        )
        .await,
        200
    );
    // …and nothing more: no Secrets elsewhere (or even listing its own namespace's), no
    // binding to cluster-admin or to any other role, no workloads.
    assert_eq!(
        as_agent("GET", "/api/v1/namespaces/default/secrets".into(), None).await,
        403
    );
    assert_eq!(
        as_agent("GET", "/api/v1/namespaces/ztka-system/secrets".into(), None).await,
        403
    );
    assert_eq!(
        as_agent(
            "GET",
            "/api/v1/namespaces/ztka-system/secrets/ztka-agent-bootstrap".into(),
            None
        )
        .await,
        403
    );
    let escalate = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "pwn"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": subject});
    assert_eq!(
        as_agent(
            "POST",
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings".into(),
            Some(escalate)
        )
        .await,
        403
    );
    let own_role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "pwn"}, "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]});
    assert_eq!(
        as_agent(
            "POST",
            "/apis/rbac.authorization.k8s.io/v1/clusterroles".into(),
            Some(own_role)
        )
        .await,
        403
    );
    assert_eq!(
        as_agent("GET", "/api/v1/namespaces/default/pods".into(), None).await,
        403
    );
    assert_eq!(
        as_agent("POST", "/api/v1/namespaces/default/serviceaccounts".into(),
            Some(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "x", "namespace": "default"}}))).await,
        403
    );
}

#[tokio::test]
async fn clusters_api_validates_updates_and_checks_permissions() {
    let app = InProcess::start().await;
    let mut admin = app.admin().await;
    let boot = import(&mut admin, "shop", "prod").await;
    // Bootstrap tokens last 24 h by default; the manifest runs this release's image.
    let expires = time::OffsetDateTime::parse(
        boot["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let ttl = expires - time::OffsetDateTime::now_utc();
    assert!(
        ttl > time::Duration::hours(23) && ttl <= time::Duration::hours(24),
        "{ttl}"
    );
    let image = format!("image: ghcr.io/ztka-dev/ztka:{}", env!("CARGO_PKG_VERSION"));
    assert!(boot["manifest"].as_str().unwrap().contains(&image));

    let clusters = "/api/v1/projects/shop/clusters";
    for (body, field) in [
        (json!({"name": "Not_A_Name"}), "name"),
        (json!({"name": "x".repeat(64)}), "name"),
        (
            json!({"name": "ok", "description": "d".repeat(2000)}),
            "description",
        ),
    ] {
        let (s, b) = admin.post(clusters, body).await;
        assert_eq!((s, b["error"]["field"].as_str()), (400, Some(field)), "{b}");
    }
    let (s, b) = admin.post(clusters, json!({"name": "prod"})).await;
    assert_eq!(s, 409, "{b}");
    let (s, b) = admin
        .post("/api/v1/projects/nope/clusters", json!({"name": "prod"}))
        .await;
    assert_eq!(s, 404, "{b}");

    // The description can change; nothing else about the cluster does.
    let path = "/api/v1/projects/shop/clusters/prod";
    let (s, b) = admin
        .patch(path, json!({"description": "the production cluster"}))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["description"], "the production cluster");
    let (_, b) = admin.get(path).await;
    assert_eq!(b["description"], "the production cluster");
    let (s, b) = admin
        .patch(path, json!({"description": "d".repeat(2000)}))
        .await;
    assert_eq!(
        (s, b["error"]["field"].as_str()),
        (400, Some("description"))
    );
    let (s, b) = admin.patch(path, json!({"name": "renamed"})).await;
    assert_eq!(s, 400, "{b}");
    audit_has(&mut admin, "cluster.update", "success", "").await;

    // A project reader sees the cluster but cannot change it; an outsider cannot see it.
    for (name, grant) in [
        (
            "reader",
            Some(json!({"role": "project-read-only", "project": "shop"})),
        ),
        ("outsider", None),
    ] {
        let (s, b) = admin
            .post(
                "/api/v1/users",
                json!({"name": name, "password": "a long enough password"}),
            )
            .await;
        assert_eq!(s, 201, "{b}");
        if let Some(mut g) = grant {
            g["user"] = json!(name);
            let (s, b) = admin.post("/api/v1/grants", g).await;
            assert_eq!(s, 201, "{b}");
        }
    }
    let mut reader = crate::fixture::replace_initial_password(
        app.login("reader", "a long enough password").await.0,
        "a long enough password",
    )
    .await;
    let (s, b) = reader.get(path).await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = reader.get(clusters).await;
    assert_eq!((s, b["items"][0]["name"].as_str()), (200, Some("prod")));
    for (s, b) in [
        reader.post(clusters, json!({"name": "new"})).await,
        reader.patch(path, json!({"description": "mine"})).await,
        reader.post(&format!("{path}/bootstrap"), json!({})).await,
        reader.delete(path).await,
    ] {
        assert_eq!(s, 403, "{b}");
    }
    let mut outsider = crate::fixture::replace_initial_password(
        app.login("outsider", "a long enough password").await.0,
        "a long enough password",
    )
    .await;
    let (s, b) = outsider.get(path).await;
    assert_eq!(s, 404, "a project the caller cannot see is not found: {b}");
    let (s, b) = outsider.get(clusters).await;
    assert_eq!(s, 404, "a project the caller cannot see is not found: {b}");
}

/// Relayed requests start the server's busy polling: its loop turns after kubectl's
/// requests (and not before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayed_requests_start_the_servers_busy_polling() {
    let sim = kubesim::KubeSim::start(Default::default()).await.unwrap();
    let server = InProcess::start_with(|c| c.busy_poll_us = Some(10_000)).await;
    let ca = server.server.state.config.data_dir.join("ca.crt");
    let mut api = server.admin().await;
    let boot = import(&mut api, "team", "spin").await;
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("manifest.yaml");
    std::fs::write(&manifest, boot["manifest"].as_str().unwrap()).unwrap();
    let applied = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(sim.kubeconfig_path())
        .arg("apply")
        .arg("-f")
        .arg(&manifest)
        .output()
        .await
        .unwrap();
    assert!(applied.status.success(), "{applied:?}");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, boot["token"].as_str().unwrap()).unwrap();
    let health = format!("127.0.0.1:{}", crate::fixture::free_port());
    let mut agent = spawn_agent(
        &server.base(),
        &ca,
        &token_file,
        &dir.path().join("agent-state"),
        sim.kubeconfig_path(),
        &health,
    );
    let path = "/api/v1/projects/team/clusters/spin";
    wait_for_cluster(&mut api, path, Duration::from_secs(20), |b| {
        b["status"]["state"] == "online"
    })
    .await;
    let busy = &server.server.state.busy_poll;
    assert_eq!(busy.window(), Duration::from_millis(10));
    assert_eq!(busy.turns(), 0, "no relayed request yet");

    let (s, b) = api.get("/api/v1/kubeconfig").await;
    assert_eq!(s, 200, "{b}");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, b.as_str().unwrap()).unwrap();
    let relay = format!("{}/k8s/spin", server.base());
    // On a loaded machine the loop may first run after a window has passed: a few tries.
    for _ in 0..20 {
        let out = tokio::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["--server", &relay, "get", "namespaces", "-o", "name"])
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if busy.turns() > 0 {
            break;
        }
    }
    assert!(busy.turns() > 0, "the relay never started busy polling");
    let _ = agent.kill();
    let _ = agent.wait();
}
