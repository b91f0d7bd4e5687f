//! Many agents, one server: starts `ztka serve` as its own process, imports N clusters,
//! registers N lightweight in-process agents (the real registration and tunnel code, without
//! a Kubernetes API behind them) and holds N tunnels open while heartbeats run. Reports the
//! server's memory before and with the tunnels, and its CPU use while idle.
//!
//! `cargo bench --bench tunnels` (env `TUNNELS`, default 1000; `IDLE_SECS`, default 30).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use ztka::agent::Context;
use ztka::client::HttpsClient;

struct Api {
    http: HttpsClient,
    base: String,
    cookie: String,
    csrf: String,
}

impl Api {
    async fn send(&self, method: &str, path: &str, body: Value) -> (u16, Value) {
        let req = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .header("cookie", format!("ztka_session={}", self.cookie))
            .header("x-csrf-token", &self.csrf)
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap_or_default();
        match self.http.send(req).await {
            Ok(res) => (
                res.status().as_u16(),
                serde_json::from_slice(res.body()).unwrap_or(Value::Null),
            ),
            Err(e) => (0, json!(e.to_string())),
        }
    }
}

fn proc_field(pid: u32, file: &str, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// utime + stime in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let get = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    get(11) + get(12)
}

fn main() {
    let n: usize = std::env::var("TUNNELS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let idle = Duration::from_secs(
        std::env::var("IDLE_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(30),
    );
    ztka::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    rt.block_on(run(n, idle));
}

async fn run(n: usize, idle: Duration) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut server = Command::new(env!("CARGO_BIN_EXE_ztka"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("ZTKA_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn ztka: {e}"));
    let pid = server.id();
    let stdout = server.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        let line = lines.next().and_then(Result::ok).unwrap_or_default();
        if let Some(a) = line.strip_prefix("ztka: listening on https://") {
            break a.to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let base = format!("https://{addr}");
    let ca = dir.path().join("ca.crt");
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&ca).unwrap_or_else(|e| panic!("{e}")) {
        let _ = roots.add(c.unwrap_or_else(|e| panic!("{e}")));
    }
    let http = HttpsClient::new(roots.clone(), None, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}"));

    // Sign in and replace the generated password.
    let initial = std::fs::read_to_string(dir.path().join("initial-admin-password"))
        .unwrap_or_default()
        .trim()
        .to_owned();
    let login = hyper::Request::post(format!("{base}/api/v1/auth/login"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            json!({"username": "admin", "password": initial}).to_string(),
        )))
        .unwrap_or_default();
    let res = http.send(login).await.unwrap_or_else(|e| panic!("{e}"));
    let cookie = res
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .and_then(|v| v.strip_prefix("ztka_session="))
        .unwrap_or_default()
        .to_owned();
    let body: Value = serde_json::from_slice(res.body()).unwrap_or(Value::Null);
    let api = Arc::new(Api {
        http: http.clone(),
        base: base.clone(),
        cookie,
        csrf: body["csrf_token"].as_str().unwrap_or_default().to_owned(),
    });
    let (s, b) = api
        .send(
            "POST",
            "/api/v1/auth/password",
            json!({"current_password": initial, "new_password": "benchmark password 123"}),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    api.send("POST", "/api/v1/projects", json!({"name": "bench"}))
        .await;

    // Import and register N clusters, a few at a time.
    let started = Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::channel(n.max(1));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..8 {
        let (api, http, base, tx, next) = (
            api.clone(),
            http.clone(),
            base.clone(),
            tx.clone(),
            next.clone(),
        );
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let name = format!("c{i:05}");
                let (s, b) = api
                    .send(
                        "POST",
                        "/api/v1/projects/bench/clusters",
                        json!({"name": name}),
                    )
                    .await;
                assert_eq!(s, 201, "{b}");
                let (s, b) = api
                    .send(
                        "POST",
                        &format!("/api/v1/projects/bench/clusters/{name}/bootstrap"),
                        json!({}),
                    )
                    .await;
                assert_eq!(s, 201, "{b}");
                let token = b["token"].as_str().unwrap_or_default().to_owned();
                let identity = ztka::agent::identity::register(&http, &base, &token)
                    .await
                    .unwrap_or_else(|e| panic!("register {name}: {e}"));
                let _ = tx.send(identity).await;
            }
        }));
    }
    drop(tx);
    let mut identities = Vec::with_capacity(n);
    while let Some(i) = rx.recv().await {
        identities.push(i);
    }
    for w in workers {
        let _ = w.await;
    }
    let setup = started.elapsed();
    let rss_before = proc_field(pid, "status", "VmRSS:");

    // Open every tunnel.
    let stop = CancellationToken::new();
    let opened = Instant::now();
    for identity in identities {
        let ctx = Arc::new(Context::new(base.clone(), None, identity));
        let chain = ctx
            .identity()
            .tls_identity()
            .unwrap_or_else(|e| panic!("{e}"));
        let client = HttpsClient::new(roots.clone(), Some(chain), Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("{e}"));
        let stop = stop.clone();
        tokio::spawn(async move {
            if let Err(e) = ztka::agent::tunnel::run_once(&ctx, &client, &stop).await {
                eprintln!("tunnel: {e}");
            }
        });
    }
    // Wait until the server lists every cluster online.
    loop {
        let mut online = 0;
        let mut cursor = String::new();
        loop {
            let (_, page) = api
                .send(
                    "GET",
                    &format!("/api/v1/projects/bench/clusters?limit=500{cursor}"),
                    Value::Null,
                )
                .await;
            online += page["items"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter(|c| c["status"]["state"] == "online")
                        .count()
                })
                .unwrap_or(0);
            match page["next_cursor"].as_str() {
                Some(c) => cursor = format!("&cursor={c}"),
                None => break,
            }
        }
        if online >= n {
            break;
        }
        assert!(
            opened.elapsed() < Duration::from_secs(300),
            "only {online}/{n} online"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let open_time = opened.elapsed();
    // Let the first heartbeats settle, then measure an idle window.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let ticks0 = cpu_ticks(pid);
    tokio::time::sleep(idle).await;
    let ticks1 = cpu_ticks(pid);
    let rss_with = proc_field(pid, "status", "VmRSS:");
    let hz = 100.0; // USER_HZ on Linux
    let cpu = (ticks1 - ticks0) as f64 / hz / idle.as_secs_f64() * 100.0;
    let me = proc_field(std::process::id(), "status", "VmRSS:");

    println!(
        "tunnels: {n} (setup: import + register in {setup:.1?}; all online {open_time:.1?} after dialing)"
    );
    println!(
        "server RSS before tunnels: {:.1} MiB",
        rss_before as f64 / 1024.0
    );
    println!(
        "server RSS with {n} tunnels: {:.1} MiB ({:.1} KiB per tunnel)",
        rss_with as f64 / 1024.0,
        (rss_with.saturating_sub(rss_before)) as f64 / n.max(1) as f64
    );
    println!(
        "server CPU while idle with heartbeats every 10 s: {cpu:.1}% of one core over {idle:?}"
    );
    println!(
        "agents' process RSS (all {n} agents): {:.1} MiB",
        me as f64 / 1024.0
    );
    stop.cancel();
    unsafe {
        libc::kill(pid as i32, libc::SIGTERM);
    }
    let _ = server.wait();
}
