//! A Kubernetes API server simulator for ztka's tests and benchmarks.
//!
//! It serves the real wire protocol (HTTPS with its own CA, HTTP/1.1 and h2, WebSocket
//! upgrades) so that unmodified `kubectl` binaries and client libraries can drive it, and it
//! applies bearer-token authentication and RBAC like a real kube-apiserver. Objects live in
//! memory; a few built-in behaviours (running pods, deployments owning replica sets and pods,
//! garbage collection, pod logs and exec) stand in for controllers and kubelets.

mod fs;
pub mod kubectl;
mod objects;
mod patch;
mod proto;
mod rbac;
mod resources;
mod server;
mod spdy;
mod store;
mod stream;
mod table;
mod tls;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};
use tokio::sync::watch;

pub use rbac::User;
pub use resources::{RESOURCES, ResourceType};

#[derive(Debug)]
pub enum Error {
    Io(std::io::Error),
    Certificate(rcgen::Error),
    Tls(String),
    Api { code: u16, status: Value },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "I/O error: {e}"),
            Error::Certificate(e) => write!(f, "certificate error: {e}"),
            Error::Tls(e) => write!(f, "TLS configuration error: {e}"),
            Error::Api { code, status } => write!(
                f,
                "API error {code}: {}",
                status.get("message").and_then(Value::as_str).unwrap_or("")
            ),
        }
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e)
    }
}

impl From<rcgen::Error> for Error {
    fn from(e: rcgen::Error) -> Self {
        Error::Certificate(e)
    }
}

/// One request as the server saw it, for tests that check who reached the API server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// The authenticated user ("" when authentication failed).
    pub user: String,
    pub groups: Vec<String>,
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// The response status (101 for upgrades; streams are recorded when they start).
    pub status: u16,
    /// How many bearer tokens the request carried (`Authorization`, WebSocket subprotocols).
    pub tokens: usize,
}

/// How many requests the log keeps.
const REQUEST_LOG: usize = 10_000;

/// How to start a simulator.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Added before every request is handled.
    pub latency: Duration,
    /// The admin bearer token; random when None.
    pub admin_token: Option<String>,
    /// Listen address; `127.0.0.1:0` when None.
    pub listen: Option<SocketAddr>,
}

#[derive(Clone)]
pub(crate) struct TokenInfo {
    pub namespace: String,
    pub service_account: String,
    pub sa_uid: String,
    pub expires: time::OffsetDateTime,
}

pub(crate) struct Inner {
    pub store: Mutex<store::Store>,
    pub tokens: Mutex<HashMap<String, TokenInfo>>,
    pub admin_token: String,
    pub latency: Mutex<Duration>,
    pub server_address: String,
    /// Per-pod files (`namespace/pod`), written by `kubectl cp`.
    pub files: Mutex<HashMap<String, fs::Files>>,
    pub requests: Mutex<std::collections::VecDeque<RequestRecord>>,
}

impl Inner {
    pub fn store(&self) -> MutexGuard<'_, store::Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn record(&self, r: RequestRecord) {
        let mut log = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        if log.len() == REQUEST_LOG {
            log.pop_front();
        }
        log.push_back(r);
    }

    pub fn tokens(&self) -> MutexGuard<'_, HashMap<String, TokenInfo>> {
        self.tokens.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running simulator. Dropping it stops the listener.
pub struct KubeSim {
    inner: Arc<Inner>,
    router: axum::Router,
    addr: SocketAddr,
    ca_pem: String,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    shutdown: watch::Sender<bool>,
}

impl KubeSim {
    pub async fn start(opts: Options) -> Result<KubeSim, Error> {
        let pki = tls::create()?;
        let listener =
            tokio::net::TcpListener::bind(opts.listen.unwrap_or(([127, 0, 0, 1], 0).into()))
                .await?;
        let addr = listener.local_addr()?;
        let admin_token = opts.admin_token.unwrap_or_else(random_token);
        let inner = Arc::new(Inner {
            store: Mutex::new(store::Store::new()),
            tokens: Mutex::new(HashMap::new()),
            admin_token: admin_token.clone(),
            latency: Mutex::new(opts.latency),
            server_address: addr.to_string(),
            files: Mutex::new(HashMap::new()),
            requests: Mutex::new(std::collections::VecDeque::new()),
        });
        objects::bootstrap(&mut inner.store());
        let router = server::router(inner.clone());
        let (shutdown, rx) = watch::channel(false);
        tokio::spawn(server::serve(
            listener,
            tokio_rustls::TlsAcceptor::from(pki.server_config.clone()),
            router.clone(),
            rx,
        ));
        let dir = tempfile::Builder::new().prefix("kubesim-").tempdir()?;
        let kubeconfig = dir.path().join("kubeconfig");
        let sim = KubeSim {
            inner,
            router,
            addr,
            ca_pem: pki.ca_pem,
            dir,
            kubeconfig,
            shutdown,
        };
        sim.write_kubeconfig(&sim.kubeconfig, &admin_token)?;
        Ok(sim)
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    pub fn admin_token(&self) -> &str {
        &self.inner.admin_token
    }

    /// The admin kubeconfig (context `kubesim`, namespace `default`).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// A scratch directory that lives as long as the simulator.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a kubeconfig for this server with another bearer token.
    pub fn write_kubeconfig(&self, path: &Path, token: &str) -> Result<(), Error> {
        let ca = base64::engine::general_purpose::STANDARD.encode(self.ca_pem.as_bytes());
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: kubesim\n  cluster:\n    server: {}\n    certificate-authority-data: {ca}\nusers:\n- name: kubesim-user\n  user:\n    token: {token}\ncontexts:\n- name: kubesim\n  context:\n    cluster: kubesim\n    user: kubesim-user\n    namespace: default\ncurrent-context: kubesim\n",
            self.url()
        );
        std::fs::write(path, text)?;
        Ok(())
    }

    pub fn set_latency(&self, latency: Duration) {
        *self.inner.latency.lock().unwrap_or_else(|p| p.into_inner()) = latency;
    }

    /// The requests served so far (the last 10,000), oldest first, including the
    /// in-process ones.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.inner
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    pub fn clear_requests(&self) {
        self.inner
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Stops accepting connections and closes open ones.
    pub fn stop(&self) {
        let _ = self.shutdown.send(true);
    }

    /// Sends one request through the same handler as the HTTPS listener, as the admin.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), Error> {
        self.request_as(self.admin_token(), method, path, body)
            .await
    }

    /// Sends one request through the same handler as the HTTPS listener, with `token`.
    pub async fn request_as(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), Error> {
        use tower::ServiceExt;
        let content_type = if method == "PATCH" {
            "application/merge-patch+json"
        } else {
            "application/json"
        };
        let req = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", content_type)
            .body(axum::body::Body::from(
                body.map(Value::to_string).unwrap_or_default(),
            ))
            .map_err(|e| Error::Tls(e.to_string()))?;
        let resp = match self.router.clone().oneshot(req).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
        let code = resp.status().as_u16();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .map_err(|e| Error::Io(std::io::Error::other(e.to_string())))?;
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Ok((code, value))
    }

    fn ok(result: (u16, Value)) -> Result<Value, Error> {
        if result.0 < 300 {
            Ok(result.1)
        } else {
            Err(Error::Api {
                code: result.0,
                status: result.1,
            })
        }
    }

    /// Creates any supported object; its namespace comes from `metadata.namespace`.
    pub async fn create(&self, obj: Value) -> Result<Value, Error> {
        let path = object_path(&obj, false)?;
        Self::ok(self.request("POST", &path, Some(&obj)).await?)
    }

    /// Gets one object, or None when it does not exist.
    pub async fn get(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Value>, Error> {
        let obj = json!({"apiVersion": api_version, "kind": kind,
            "metadata": {"namespace": namespace, "name": name}});
        let (code, v) = self.request("GET", &object_path(&obj, true)?, None).await?;
        match code {
            404 => Ok(None),
            _ => Self::ok((code, v)).map(Some),
        }
    }

    /// Lists objects of a kind in a namespace ("" = all namespaces), filtered by a label
    /// selector ("" = all).
    pub async fn list(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        label_selector: &str,
    ) -> Result<Vec<Value>, Error> {
        let obj = json!({"apiVersion": api_version, "kind": kind,
            "metadata": {"namespace": namespace}});
        let mut path = object_path(&obj, false)?;
        if !label_selector.is_empty() {
            path.push_str("?labelSelector=");
            path.push_str(&server::percent_encode(label_selector));
        }
        let list = Self::ok(self.request("GET", &path, None).await?)?;
        Ok(list
            .get("items")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default())
    }

    /// Deletes one object (with the default background propagation).
    pub async fn delete(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<(), Error> {
        let obj = json!({"apiVersion": api_version, "kind": kind,
            "metadata": {"namespace": namespace, "name": name}});
        Self::ok(
            self.request("DELETE", &object_path(&obj, true)?, None)
                .await?,
        )
        .map(|_| ())
    }

    /// Mints a ServiceAccount token through the TokenRequest API.
    pub async fn create_token(
        &self,
        namespace: &str,
        service_account: &str,
        expiration_seconds: u64,
    ) -> Result<String, Error> {
        let body = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"expirationSeconds": expiration_seconds}});
        let path =
            format!("/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}/token");
        let v = Self::ok(self.request("POST", &path, Some(&body)).await?)?;
        Ok(v.pointer("/status/token")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned())
    }
}

impl Drop for KubeSim {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The URL path of an object (or of its collection when `named` is false).
pub fn object_path(obj: &Value, named: bool) -> Result<String, Error> {
    let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    let rt = resources::by_kind(api_version, kind).ok_or_else(|| Error::Api {
        code: 404,
        status: store::status(
            404,
            "NotFound",
            &format!("no resource for {api_version} {kind}"),
            None,
        ),
    })?;
    let ns = obj
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let prefix = if rt.group.is_empty() {
        "/api/v1".to_owned()
    } else {
        format!("/apis/{}/{}", rt.group, rt.version)
    };
    let mut path = if rt.namespaced && !ns.is_empty() {
        format!("{prefix}/namespaces/{ns}/{}", rt.name)
    } else {
        format!("{prefix}/{}", rt.name)
    };
    if named {
        path.push('/');
        path.push_str(name);
    }
    Ok(path)
}

pub(crate) fn random_token() -> String {
    use rand::Rng;
    let bytes: [u8; 24] = rand::rng().random();
    hex::encode(bytes)
}
