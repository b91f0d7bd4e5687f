//! Starts the real `ztka` binary on port 0 in a temporary data directory and talks to it over
//! real TLS.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use ztka::client::HttpsClient;

pub const BIN: &str = env!("CARGO_BIN_EXE_ztka");

pub fn ztka() -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("ZTKA_LOG", "info");
    cmd
}

pub struct ServerProcess {
    pub child: Child,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    /// stdout lines up to and including the "listening on" line.
    pub stdout: Vec<String>,
}

impl ServerProcess {
    pub fn start(data_dir: &Path, extra: &[&str]) -> Self {
        Self::start_with(data_dir, extra, |_| {})
    }

    pub fn start_with(data_dir: &Path, extra: &[&str], tweak: impl FnOnce(&mut Command)) -> Self {
        Self::start_at(data_dir, "127.0.0.1:0", extra, tweak)
    }

    /// Starts on a given address, e.g. to restart on the port agents already know.
    pub fn start_at(
        data_dir: &Path,
        listen: &str,
        extra: &[&str],
        tweak: impl FnOnce(&mut Command),
    ) -> Self {
        let mut cmd = ztka();
        cmd.args(["serve", "--listen", listen, "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        tweak(&mut cmd);
        let mut child = cmd.spawn().expect("spawn ztka serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut lines = Vec::new();
        let addr = loop {
            match rx.recv_timeout(Duration::from_secs(20)) {
                Ok(line) => {
                    let found = line
                        .strip_prefix("ztka: listening on https://")
                        .map(|a| a.parse::<SocketAddr>().unwrap());
                    lines.push(line);
                    if let Some(a) = found {
                        break a;
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    panic!("server did not report its address; stdout so far: {lines:?}");
                }
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || while rx.recv().is_ok() {});
        Self {
            child,
            addr,
            data_dir: data_dir.to_owned(),
            stdout: lines,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }

    /// A client that trusts the server's CA (read from the data directory).
    pub fn client(&self) -> HttpsClient {
        client_trusting(&[self.data_dir.join("ca.crt")], None)
    }

    pub async fn get(&self, path: &str) -> hyper::Response<Bytes> {
        self.client().send(get(&self.url(path))).await.unwrap()
    }

    pub fn signal(&self, sig: i32) {
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// SIGTERM and wait.
    pub fn stop(mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        wait_timeout(&mut self.child, Duration::from_secs(20))
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn wait_timeout(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(std::time::Instant::now() < deadline, "process did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn get(url: &str) -> hyper::Request<Full<Bytes>> {
    hyper::Request::get(url)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

pub fn client_trusting(
    ca_files: &[PathBuf],
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> HttpsClient {
    ztka::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    for f in ca_files {
        for c in CertificateDer::pem_file_iter(f).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
    }
    HttpsClient::new(roots, identity, Duration::from_secs(10)).unwrap()
}

pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A server started in this process (real listener, TLS and redb), for tests that also need
/// to reach into its state, e.g. to age a session.
pub struct InProcess {
    pub server: ztka::serve::Server,
    pub admin_password: String,
    _dir: tempfile::TempDir,
}

impl InProcess {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts with `tweak` applied to the configuration.
    pub async fn start_with(tweak: impl FnOnce(&mut ztka::config::ServeConfig)) -> Self {
        ztka::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let mut config = ztka::config::ServeConfig {
            data_dir: dir.path().to_owned(),
            listen: "127.0.0.1:0".parse().unwrap(),
            external_url: ztka::config::ExternalUrl::parse("https://localhost:8443").unwrap(),
            tls_files: None,
            initial_admin_password: None,
            shutdown_grace: Duration::from_secs(2),
            handshake_timeout: Duration::from_secs(5),
            audit: Default::default(),
            agents: Default::default(),
            busy_poll_us: None,
        };
        tweak(&mut config);
        let server = ztka::serve::Server::start(config, ztka::shutdown::Shutdown::new())
            .await
            .unwrap();
        let admin_password = server
            .generated_admin_password
            .as_ref()
            .unwrap()
            .expose()
            .to_owned();
        Self {
            server,
            admin_password,
            _dir: dir,
        }
    }

    pub fn base(&self) -> String {
        format!("https://localhost:{}", self.server.addr.port())
    }

    pub fn anonymous(&self) -> ApiClient {
        ApiClient::new(
            client_trusting(&[self.server.state.config.data_dir.join("ca.crt")], None),
            self.base(),
        )
    }

    /// Signs in; returns the client and the login response body.
    pub async fn login(&self, user: &str, password: &str) -> (ApiClient, serde_json::Value) {
        let mut c = self.anonymous();
        let (status, body) = c
            .post(
                "/api/v1/auth/login",
                serde_json::json!({"username": user, "password": password}),
            )
            .await;
        assert_eq!(status, 200, "login {user}: {body}");
        (c, body)
    }

    /// Signs in as admin and replaces the initial password.
    pub async fn admin(&self) -> ApiClient {
        let (c, _) = self.login("admin", &self.admin_password).await;
        replace_initial_password(c, &self.admin_password).await
    }
}

pub async fn replace_initial_password(mut c: ApiClient, initial: &str) -> ApiClient {
    let (s, b) = c
        .post(
            "/api/v1/auth/password",
            serde_json::json!({"current_password": initial, "new_password": ADMIN_PASSWORD}),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    c
}

impl ServerProcess {
    /// Signs in as admin with the generated password and replaces it.
    pub async fn admin(&self) -> ApiClient {
        let initial = std::fs::read_to_string(self.data_dir.join("initial-admin-password"))
            .unwrap()
            .trim()
            .to_owned();
        let mut c = ApiClient::new(self.client(), self.url(""));
        let (status, body) = c
            .post(
                "/api/v1/auth/login",
                serde_json::json!({"username": "admin", "password": initial}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        replace_initial_password(c, &initial).await
    }

    /// Signs in as admin after [`ServerProcess::admin`] changed the password.
    pub async fn admin_again(&self) -> ApiClient {
        let mut c = ApiClient::new(self.client(), self.url(""));
        let (status, body) = c
            .post(
                "/api/v1/auth/login",
                serde_json::json!({"username": "admin", "password": ADMIN_PASSWORD}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        c
    }
}

pub const ADMIN_PASSWORD: &str = "correct horse battery staple";

/// A JSON API client that keeps the session cookie and CSRF token like the console does.
#[derive(Clone)]
pub struct ApiClient {
    pub http: HttpsClient,
    pub base: String,
    pub cookie: Option<String>,
    pub csrf: Option<String>,
    pub bearer: Option<String>,
    pub user_agent: String,
}

impl ApiClient {
    pub fn new(http: HttpsClient, base: String) -> Self {
        Self {
            http,
            base,
            cookie: None,
            csrf: None,
            bearer: None,
            user_agent: "ztka-tests/1".into(),
        }
    }

    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        body: Option<Bytes>,
        content_type: Option<&str>,
    ) -> (u16, serde_json::Value) {
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("user-agent", &self.user_agent);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        if let Some(c) = &self.cookie {
            req = req.header("cookie", format!("ztka_session={c}"));
        }
        if let Some(t) = &self.csrf {
            req = req.header("x-csrf-token", t);
        }
        if let Some(b) = &self.bearer {
            req = req.header("authorization", format!("Bearer {b}"));
        }
        let req = req.body(Full::new(body.unwrap_or_default())).unwrap();
        let res = self.http.send(req).await.unwrap();
        let session_cookie = res
            .headers()
            .get_all("set-cookie")
            .iter()
            .find(|v| v.as_bytes().starts_with(b"ztka_session="));
        if let Some(set) = session_cookie {
            let v = set.to_str().unwrap();
            assert!(
                v.contains("HttpOnly") && v.contains("Secure") && v.contains("SameSite=Strict"),
                "{v}"
            );
            let value = v
                .split(';')
                .next()
                .unwrap()
                .trim_start_matches("ztka_session=");
            self.cookie = (!value.is_empty()).then(|| value.to_owned());
        }
        let status = res.status().as_u16();
        let json = if res.body().is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(res.body()).unwrap_or_else(|_| {
                serde_json::Value::String(String::from_utf8_lossy(res.body()).into_owned())
            })
        };
        if path == "/api/v1/auth/login" && status == 200 {
            self.csrf = json["csrf_token"].as_str().map(str::to_owned);
        }
        (status, json)
    }

    pub async fn get(&mut self, path: &str) -> (u16, serde_json::Value) {
        self.send("GET", path, None, None).await
    }

    pub async fn post(&mut self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        self.send(
            "POST",
            path,
            Some(Bytes::from(body.to_string())),
            Some("application/json"),
        )
        .await
    }

    pub async fn patch(&mut self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        self.send(
            "PATCH",
            path,
            Some(Bytes::from(body.to_string())),
            Some("application/json"),
        )
        .await
    }

    pub async fn delete(&mut self, path: &str) -> (u16, serde_json::Value) {
        self.send("DELETE", path, None, None).await
    }
}

/// A port that was free a moment ago, for servers that must come back on the same port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
