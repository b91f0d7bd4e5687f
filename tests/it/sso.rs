//! Single sign-on against a real, independent OpenID provider: the npm package
//! `oidc-provider` run by `tests/support/oidc/provider.mjs` over HTTPS on 127.0.0.1. The tests
//! drive the whole browser-less flow — redirects, cookies, the provider's login form — through
//! the real ztka binary.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use serde_json::{Value, json};
use ztka::client::HttpsClient;

use crate::fixture::{ApiClient, ServerProcess, free_port};

pub const CLIENT_ID: &str = "ztka-test";
pub const CLIENT_SECRET: &str = "idp-client-secret-4f1c9a";

/// The test provider: a child process with its own CA.
pub struct Idp {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
    pub ca_pem: String,
    control: HttpsClient,
}

fn oidc_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/oidc")
}

impl Idp {
    pub fn start(redirect_uri: &str) -> Self {
        assert!(
            oidc_dir().join("node_modules/oidc-provider").exists(),
            "the test provider's packages are missing: run `npm ci` in tests/support/oidc (the README's test command does)"
        );
        let dir = tempfile::tempdir().unwrap();
        let (ca_pem, cert_pem, key_pem) = tls_for_localhost();
        std::fs::write(dir.path().join("cert.pem"), cert_pem).unwrap();
        std::fs::write(dir.path().join("key.pem"), key_pem).unwrap();
        let port = free_port();
        let config = json!({
            "port": port,
            "tls": {"cert": dir.path().join("cert.pem"), "key": dir.path().join("key.pem")},
            "clients": [
                {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "redirect_uris": [redirect_uri]},
            ],
            "users": [
                {"username": "alice", "password": "alice-pw", "claims": {
                    "email": "alice@example.com", "email_verified": true, "name": "Alice Example",
                    "groups": ["eng", "ops", "unmapped"]}},
                {"username": "bob", "password": "bob-pw", "claims": {
                    "email": "bob@other.org", "email_verified": true, "name": "Bob", "groups": ["eng"]}},
            ],
        });
        std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        add_pem(&mut roots, &ca_pem);
        let control = HttpsClient::new(roots, None, Duration::from_secs(10)).unwrap();
        let mut idp = Self {
            child: None,
            dir,
            port,
            ca_pem,
            control,
        };
        idp.spawn();
        idp
    }

    fn spawn(&mut self) {
        let mut child = Command::new("node")
            .arg(oidc_dir().join("provider.mjs"))
            .arg(self.dir.path().join("config.json"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node runs (the README's test command installs it)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(
            line.starts_with("READY "),
            "provider did not start: {line:?}"
        );
        self.child = Some(child);
    }

    /// A restart makes a new signing key with a new key id: a key rotation.
    fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
            crate::fixture::wait_timeout(&mut child, Duration::from_secs(10));
        }
    }

    pub fn issuer(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    async fn control(&self, method: &str, path: &str, body: Value) {
        let req = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.issuer()))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap();
        let res = self.control.send(req).await.unwrap();
        assert!(
            res.status().is_success(),
            "{method} {path}: {:?}",
            res.status()
        );
    }

    async fn fault(&self, kind: &str) {
        self.control("POST", "/__control/fault", json!({"fault": kind}))
            .await;
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn add_pem(roots: &mut rustls::RootCertStore, pem: &str) {
    use rustls_pki_types::pem::PemObject;
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
}

/// A CA and a certificate for 127.0.0.1 signed by it: (CA PEM, certificate PEM, key PEM).
fn tls_for_localhost() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name
        .push(DnType::CommonName, "test idp ca");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    (ca_pem, cert.pem(), key.serialize_pem())
}

/// A browser without a browser: keeps cookies per origin and path, follows redirects by
/// hand and fills in the provider's login form.
struct Browser {
    http: HttpsClient,
    /// (origin, path, name, value)
    jar: Vec<(String, String, String, String)>,
}

/// Where a sign-in ended, as ztka redirected the browser.
#[derive(Debug)]
enum Landing {
    /// Signed in: the console path and the CSRF token from the fragment.
    Console { path: String, csrf: String },
    /// Sent back to the sign-in page with an error id.
    Error(String),
}

fn origin_and_path(url: &str) -> (String, String) {
    let rest = url.strip_prefix("https://").unwrap();
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    (
        format!("https://{host}"),
        format!("/{}", path.split(['?', '#']).next().unwrap()),
    )
}

fn resolve(base: &str, location: &str) -> String {
    if location.starts_with("https://") {
        location.to_owned()
    } else {
        format!("{}{location}", origin_and_path(base).0)
    }
}

impl Browser {
    fn new(ztka_ca: &Path, idp_ca: &str) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        add_pem(&mut roots, &std::fs::read_to_string(ztka_ca).unwrap());
        add_pem(&mut roots, idp_ca);
        Self {
            http: HttpsClient::new(roots, None, Duration::from_secs(15)).unwrap(),
            jar: Vec::new(),
        }
    }

    fn cookie(&self, name: &str) -> Option<String> {
        self.jar
            .iter()
            .find(|(_, _, n, _)| n == name)
            .map(|(_, _, _, v)| v.clone())
    }

    async fn send(
        &mut self,
        method: &str,
        url: &str,
        form: Option<String>,
    ) -> hyper::Response<Bytes> {
        let (origin, path) = origin_and_path(url);
        let cookies: Vec<String> = self
            .jar
            .iter()
            .filter(|(o, p, _, _)| *o == origin && path.starts_with(p.as_str()))
            .map(|(_, _, n, v)| format!("{n}={v}"))
            .collect();
        let mut req = hyper::Request::builder().method(method).uri(url);
        if !cookies.is_empty() {
            req = req.header("cookie", cookies.join("; "));
        }
        if form.is_some() {
            req = req.header("content-type", "application/x-www-form-urlencoded");
        }
        let req = req
            .body(Full::new(Bytes::from(form.unwrap_or_default())))
            .unwrap();
        let res = self.http.send(req).await.unwrap();
        for set in res.headers().get_all("set-cookie") {
            let set = set.to_str().unwrap();
            let mut parts = set.split(';').map(str::trim);
            let (name, value) = parts.next().unwrap().split_once('=').unwrap();
            let mut cookie_path = "/".to_owned();
            let mut gone = value.is_empty();
            for attr in parts {
                let lower = attr.to_ascii_lowercase();
                if let Some(p) = attr
                    .strip_prefix("Path=")
                    .or_else(|| attr.strip_prefix("path="))
                {
                    cookie_path = p.to_owned();
                }
                if lower == "max-age=0" || lower.contains("1970") {
                    gone = true;
                }
            }
            self.jar
                .retain(|(o, p, n, _)| !(*o == origin && *p == cookie_path && n == name));
            if !gone {
                self.jar.push((
                    origin.clone(),
                    cookie_path,
                    name.to_owned(),
                    value.to_owned(),
                ));
            }
        }
        res
    }

    /// Signs in through `provider` from the console's button to ztka's last redirect.
    async fn sign_in(&mut self, ztka: &str, provider: &str, user: &str, password: &str) -> Landing {
        let mut url = format!("{ztka}/api/v1/auth/sso/{provider}/login?next=/kubeconfig");
        for _ in 0..12 {
            let res = self.send("GET", &url, None).await;
            let status = res.status().as_u16();
            if status == 303 || status == 302 {
                let location = res.headers()["location"].to_str().unwrap().to_owned();
                let from_ztka = url.starts_with(ztka);
                if from_ztka && location.starts_with('/') {
                    return landing(&location);
                }
                url = resolve(&url, &location);
                continue;
            }
            let html = String::from_utf8_lossy(res.body()).into_owned();
            assert_eq!(status, 200, "{url}: {html}");
            let action = html
                .split("action=\"")
                .nth(1)
                .and_then(|s| s.split('"').next())
                .unwrap_or_else(|| panic!("no form at {url}: {html}"));
            assert!(html.contains("Sign in to Test IdP"), "{html}");
            let form = format!("username={user}&password={password}");
            let target = resolve(&url, action);
            let res = self.send("POST", &target, Some(form)).await;
            assert_eq!(res.status(), 303, "the provider took the password");
            url = resolve(&target, res.headers()["location"].to_str().unwrap());
        }
        panic!("too many redirects");
    }
}

fn landing(location: &str) -> Landing {
    if let Some(id) = location.strip_prefix("/login?sso_error=") {
        return Landing::Error(id.to_owned());
    }
    let (path, csrf) = location
        .split_once("#sso=")
        .expect("the CSRF token in the fragment");
    Landing::Console {
        path: path.to_owned(),
        csrf: csrf.to_owned(),
    }
}

struct Setup {
    server: ServerProcess,
    _dir: tempfile::TempDir,
    idp: Idp,
    admin: ApiClient,
    base: String,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("https://localhost:{port}");
    let idp = Idp::start(&format!("{base}/api/v1/auth/sso/test-idp/callback"));
    let server = ServerProcess::start_at(
        dir.path(),
        &format!("127.0.0.1:{port}"),
        &["--external-url", &base],
        |_| {},
    );
    let mut admin = server.admin().await;
    for g in ["engineers", "operators", "manual"] {
        let (s, b) = admin.post("/api/v1/groups", json!({"name": g})).await;
        assert_eq!(s, 201, "{b}");
    }
    let (s, b) = admin
        .post(
            "/api/v1/sso/providers",
            json!({
                "name": "test-idp",
                "display_name": "Test IdP",
                "issuer": idp.issuer(),
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "scopes": ["openid", "email", "profile", "groups"],
                "allowed_domains": ["example.com"],
                "group_mapping": [
                    {"idp_group": "eng", "group": "engineers"},
                    {"idp_group": "ops", "group": "operators"},
                ],
                "ca_pem": idp.ca_pem,
            }),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(
        b["redirect_uri"],
        format!("{base}/api/v1/auth/sso/test-idp/callback")
    );
    assert_eq!(b["client_secret_set"], true);
    assert!(!b.to_string().contains(CLIENT_SECRET), "{b}");
    Setup {
        server,
        _dir: dir,
        idp,
        admin,
        base,
    }
}

impl Setup {
    fn browser(&self) -> Browser {
        Browser::new(&self.server.data_dir.join("ca.crt"), &self.idp.ca_pem)
    }

    /// The console's view of a signed-in browser.
    fn console(&self, browser: &Browser, csrf: &str) -> ApiClient {
        let mut c = ApiClient::new(browser.http.clone(), self.base.clone());
        c.cookie = Some(browser.cookie("ztka_session").expect("a session cookie"));
        c.csrf = Some(csrf.to_owned());
        c
    }

    async fn error(&self, landing: Landing) -> Value {
        let Landing::Error(id) = landing else {
            panic!("expected a refusal, got {landing:?}");
        };
        let mut anon = ApiClient::new(self.server.client(), self.base.clone());
        let (s, b) = anon.get(&format!("/api/v1/auth/sso/errors/{id}")).await;
        assert_eq!(s, 200, "{b}");
        let (again, _) = anon.get(&format!("/api/v1/auth/sso/errors/{id}")).await;
        assert_eq!(again, 404, "an error is shown once");
        b
    }

    /// Signs in through `provider` in a fresh browser, expecting a refusal; returns it.
    async fn refusal(&self, provider: &str, user: &str, password: &str) -> Value {
        let landing = self
            .browser()
            .sign_in(&self.base, provider, user, password)
            .await;
        self.error(landing).await
    }

    async fn members(&mut self, group: &str) -> Vec<String> {
        let (s, b) = self
            .admin
            .get(&format!("/api/v1/groups/{group}/members"))
            .await;
        assert_eq!(s, 200, "{b}");
        b["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap().to_owned())
            .collect()
    }

    async fn audit(&mut self, action: &str) -> Vec<Value> {
        let (s, b) = self
            .admin
            .get(&format!("/api/v1/audit?action={action}&limit=100"))
            .await;
        assert_eq!(s, 200, "{b}");
        b["items"].as_array().unwrap().clone()
    }
}

#[tokio::test]
async fn sso_sign_in_creates_the_user_and_follows_the_providers_groups() {
    let mut t = setup().await;
    let (s, b) = ApiClient::new(t.server.client(), t.base.clone())
        .get("/api/v1/auth/sso")
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        b["items"],
        json!([{"name": "test-idp", "display_name": "Test IdP", "login_url": "/api/v1/auth/sso/test-idp/login"}])
    );

    // An admin put a future SSO user in a group outside the mapping: sign-ins leave it alone.
    let mut browser = t.browser();
    let Landing::Console { path, csrf } = browser
        .sign_in(&t.base, "test-idp", "alice", "alice-pw")
        .await
    else {
        panic!("first sign-in refused");
    };
    assert_eq!(path, "/kubeconfig", "back where the sign-in started");
    assert!(
        browser.cookie("ztka_sso").is_none(),
        "the flow cookie is cleared"
    );
    let mut alice = t.console(&browser, &csrf);
    let (s, me) = alice.get("/api/v1/auth/me").await;
    assert_eq!(s, 200, "{me}");
    assert_eq!(me["user"]["name"], "alice@example.com");
    assert_eq!(me["user"]["kind"], "sso");
    assert_eq!(me["user"]["display_name"], "Alice Example");
    assert_eq!(me["user"]["sso_provider"], "test-idp");
    let mut groups: Vec<_> = me["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g.as_str().unwrap().to_owned())
        .collect();
    groups.sort();
    assert_eq!(groups, ["engineers", "operators"]);
    // The session works like a local user's, CSRF token included.
    let (s, b) = alice
        .post(
            "/api/v1/tokens",
            json!({"name": "laptop", "expires_in_secs": 3600}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, kubeconfig) = alice.get("/api/v1/kubeconfig").await;
    assert_eq!(
        s, 200,
        "an SSO user downloads a kubeconfig like a local user"
    );
    assert!(
        kubeconfig.to_string().contains("client-certificate-data"),
        "{kubeconfig}"
    );

    let (s, b) = t
        .admin
        .post(
            "/api/v1/groups/manual/members",
            json!({"user": "alice@example.com"}),
        )
        .await;
    assert_eq!(s, 204, "{b}");

    // The IdP stops asserting "ops": the next sign-in removes that membership only.
    t.idp
        .control(
            "PUT",
            "/__control/users/alice",
            json!({"claims": {"email": "alice@example.com", "email_verified": true,
                              "name": "Alice Example", "groups": ["eng"]}}),
        )
        .await;
    let mut second = t.browser();
    let Landing::Console { .. } = second
        .sign_in(&t.base, "test-idp", "alice", "alice-pw")
        .await
    else {
        panic!("second sign-in refused");
    };
    assert_eq!(t.members("engineers").await, ["alice@example.com"]);
    assert!(t.members("operators").await.is_empty());
    assert_eq!(
        t.members("manual").await,
        ["alice@example.com"],
        "unmapped groups stay"
    );
    let removed = t.audit("group.member.remove").await;
    assert_eq!(removed.len(), 1, "{removed:?}");
    assert_eq!(removed[0]["target"]["name"], "operators");
    assert_eq!(removed[0]["details"]["source"], "sso");
    let logins = t.audit("auth.sso.login").await;
    assert_eq!(logins.len(), 2);
    assert_eq!(logins[0]["details"]["groups_left"], json!(["operators"]));
    assert_eq!(logins[1]["details"]["created"], true);
    let (s, users) = t.admin.get("/api/v1/users").await;
    assert_eq!(s, 200);
    let ssos: Vec<_> = users["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["kind"] == "sso")
        .collect();
    assert_eq!(
        ssos.len(),
        1,
        "the second sign-in found the same user: {users}"
    );

    // A token without the groups claim (a scope dropped at the provider) changes no
    // memberships rather than removing them all.
    t.idp
        .control(
            "PUT",
            "/__control/users/alice",
            json!({"claims": {"email": "alice@example.com", "email_verified": true, "name": "Alice Example"}}),
        )
        .await;
    let mut no_groups = t.browser();
    let Landing::Console { .. } = no_groups
        .sign_in(&t.base, "test-idp", "alice", "alice-pw")
        .await
    else {
        panic!("sign-in without a groups claim refused");
    };
    assert_eq!(t.members("engineers").await, ["alice@example.com"]);
    // A mapped group cannot be deleted from under the mapping.
    let (s, b) = t.admin.delete("/api/v1/groups/engineers").await;
    assert_eq!(s, 409, "{b}");
    assert!(
        b["error"]["message"].as_str().unwrap().contains("test-idp"),
        "{b}"
    );

    // Key rotation: the provider restarts with a new signing key; ztka fetches the keys again.
    t.idp.restart();
    let mut third = t.browser();
    let Landing::Console { .. } = third
        .sign_in(&t.base, "test-idp", "alice", "alice-pw")
        .await
    else {
        panic!("sign-in after key rotation refused");
    };

    // A callback replayed, or delivered to a browser that did not start the sign-in, fails.
    let mut fourth = t.browser();
    let start = fourth
        .send(
            "GET",
            &format!("{}/api/v1/auth/sso/test-idp/login", t.base),
            None,
        )
        .await;
    assert_eq!(start.status(), 303);
    let set = start.headers()["set-cookie"].to_str().unwrap();
    assert!(
        set.starts_with("__Host-ztka_sso=") && set.contains("Path=/;"),
        "only this origin can set the flow cookie: {set}"
    );
    assert!(
        set.contains("HttpOnly") && set.contains("Secure") && set.contains("SameSite=Lax"),
        "{set}"
    );
    let mut url = resolve(&t.base, start.headers()["location"].to_str().unwrap());
    assert!(url.starts_with(&t.idp.issuer()), "{url}");
    assert!(
        url.contains("code_challenge_method=S256") && url.contains("nonce="),
        "{url}"
    );
    let callback = loop {
        let res = fourth.send("GET", &url, None).await;
        if res.status() == 200 {
            let html = String::from_utf8_lossy(res.body()).into_owned();
            let action = html
                .split("action=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap()
                .to_owned();
            let res = fourth
                .send(
                    "POST",
                    &resolve(&url, &action),
                    Some("username=alice&password=alice-pw".into()),
                )
                .await;
            url = resolve(&url, res.headers()["location"].to_str().unwrap());
            continue;
        }
        url = resolve(&url, res.headers()["location"].to_str().unwrap());
        if url.starts_with(&t.base) {
            break url;
        }
    };
    let mut stranger = t.browser();
    let res = stranger.send("GET", &callback, None).await;
    let refused = landing(res.headers()["location"].to_str().unwrap());
    assert_eq!(t.error(refused).await["code"], "sso_state_invalid");
    let res = fourth.send("GET", &callback, None).await;
    let again = landing(res.headers()["location"].to_str().unwrap());
    assert_eq!(
        t.error(again).await["code"],
        "sso_state_invalid",
        "each sign-in works once"
    );

    // An admin disables the SSO user: the provider's word is not enough any more.
    let (s, b) = t
        .admin
        .patch("/api/v1/users/alice@example.com", json!({"disabled": true}))
        .await;
    assert_eq!(s, 200, "{b}");
    let e = t.refusal("test-idp", "alice", "alice-pw").await;
    assert_eq!(e["code"], "account_disabled");
    assert!(e["message"].as_str().unwrap().contains("disabled"), "{e}");
    let (s, _) = alice.get("/api/v1/auth/me").await;
    assert_eq!(s, 401, "disabling ends the session");

    // The secret is in neither the API, the audit log nor the database file.
    let (s, providers) = t.admin.get("/api/v1/sso/providers").await;
    assert_eq!(s, 200, "{providers}");
    assert!(!providers["items"].as_array().unwrap().is_empty());
    let (s, export) = t.admin.get("/api/v1/audit/export").await;
    assert_eq!(s, 200);
    assert!(
        export
            .as_str()
            .is_some_and(|t| t.contains("auth.sso.login"))
    );
    for text in [providers.to_string(), export.to_string()] {
        assert!(!text.contains(CLIENT_SECRET));
        assert!(!text.contains(&csrf));
    }
    let db = std::fs::read(t.server.data_dir.join("ztka.redb")).unwrap();
    assert!(
        !db.windows(CLIENT_SECRET.len())
            .any(|w| w == CLIENT_SECRET.as_bytes()),
        "the client secret is sealed at rest"
    );
}

#[tokio::test]
async fn sso_refuses_tampered_foreign_and_stale_id_tokens() {
    let mut t = setup().await;
    for (fault, says) in [
        ("tamper", "signature"),
        ("nonce", "nonce"),
        ("expired", "expired"),
        ("audience", "another client"),
        ("issuer", "another issuer"),
    ] {
        t.idp.fault(fault).await;
        let mut browser = t.browser();
        let landing = browser
            .sign_in(&t.base, "test-idp", "alice", "alice-pw")
            .await;
        let e = t.error(landing).await;
        assert_eq!(e["code"], "sso_token_invalid", "{fault}: {e}");
        assert!(
            e["message"].as_str().unwrap().contains(says),
            "{fault}: {e}"
        );
        assert!(
            browser.cookie("ztka_session").is_none(),
            "{fault}: no session"
        );
    }
    let (s, users) = t.admin.get("/api/v1/users").await;
    assert_eq!(s, 200);
    assert!(
        users["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|u| u["kind"] != "sso"),
        "no refused token created a user: {users}"
    );
    let refusals = t.audit("auth.sso.login").await;
    assert_eq!(refusals.len(), 5);
    for r in &refusals {
        assert_eq!(r["status"], 401, "{r}");
        assert_eq!(r["outcome"], "denied", "{r}");
        assert_eq!(r["details"]["reason"], "sso_token_invalid", "{r}");
    }
    // With the faults gone the same provider signs in fine.
    let landing = t
        .browser()
        .sign_in(&t.base, "test-idp", "alice", "alice-pw")
        .await;
    assert!(matches!(landing, Landing::Console { .. }), "{landing:?}");
}

#[tokio::test]
async fn sso_errors_name_the_problem() {
    let mut t = setup().await;
    // A domain outside the allowed list.
    let e = t.refusal("test-idp", "bob", "bob-pw").await;
    assert_eq!(e["code"], "sso_domain_not_allowed");
    assert!(e["message"].as_str().unwrap().contains("other.org"), "{e}");

    // An email address the provider does not vouch for.
    t.idp
        .control(
            "PUT",
            "/__control/users/alice",
            json!({"claims": {"email": "alice@example.com", "email_verified": false, "groups": ["eng"]}}),
        )
        .await;
    let e = t.refusal("test-idp", "alice", "alice-pw").await;
    assert_eq!(e["code"], "sso_email_unverified", "{e}");
    t.idp
        .control(
            "PUT",
            "/__control/users/alice",
            json!({"claims": {"email": "alice@example.com", "groups": ["eng"]}}),
        )
        .await;
    let e = t.refusal("test-idp", "alice", "alice-pw").await;
    assert_eq!(
        e["code"], "sso_email_unverified",
        "no email_verified claim: {e}"
    );
    t.idp
        .control(
            "PUT",
            "/__control/users/alice",
            json!({"claims": {"email": "alice@example.com", "email_verified": true, "groups": ["eng"]}}),
        )
        .await;

    // A path that cannot name a provider is a plain 404: nothing is looked up or recorded.
    let mut anon = ApiClient::new(t.server.client(), t.base.clone());
    let (s, b) = anon
        .get(&format!("/api/v1/auth/sso/{}/login", "X".repeat(5000)))
        .await;
    assert_eq!(s, 404, "{b}");

    // A wrong client secret.
    let (s, b) = t
        .admin
        .patch(
            "/api/v1/sso/providers/test-idp",
            json!({"client_secret": "not-the-secret"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let e = t.refusal("test-idp", "alice", "alice-pw").await;
    assert_eq!(e["code"], "sso_client_rejected", "{e}");
    assert!(
        e["message"].as_str().unwrap().contains("client secret"),
        "{e}"
    );

    // A provider nobody answers for.
    let dead = free_port();
    let (s, b) = t
        .admin
        .post(
            "/api/v1/sso/providers",
            json!({"name": "gone", "issuer": format!("https://127.0.0.1:{dead}"),
                   "client_id": "x", "client_secret": "y"}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let e = t.refusal("gone", "alice", "alice-pw").await;
    assert_eq!(e["code"], "sso_provider_unreachable", "{e}");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains(&format!("127.0.0.1:{dead}")),
        "{e}"
    );
    let (s, b) = t
        .admin
        .post("/api/v1/sso/providers/gone/test", json!({}))
        .await;
    assert_eq!(s, 502, "{b}");
    let (s, b) = t
        .admin
        .post("/api/v1/sso/providers/test-idp/test", json!({}))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["issuer"], t.idp.issuer());

    // Unknown providers, and provider records that cannot work, are refused up front.
    assert_eq!(
        t.refusal("nope", "alice", "alice-pw").await["code"],
        "sso_unknown_provider"
    );
    for (body, field) in [
        (
            json!({"name": "a", "issuer": "http://idp.example", "client_id": "x", "client_secret": "y"}),
            "issuer",
        ),
        (
            json!({"name": "a", "issuer": "https://idp.example", "client_id": "x", "client_secret": ""}),
            "client_secret",
        ),
        (
            json!({"name": "a", "issuer": "https://idp.example", "client_id": "x", "client_secret": "y",
                "group_mapping": [{"idp_group": "g", "group": "no-such-group"}]}),
            "group_mapping",
        ),
        (
            json!({"name": "a", "issuer": "https://idp.example", "client_id": "x", "client_secret": "y",
                "allowed_domains": ["not a domain"]}),
            "allowed_domains",
        ),
        (
            json!({"name": "A", "issuer": "https://idp.example", "client_id": "x", "client_secret": "y"}),
            "name",
        ),
    ] {
        let (s, b) = t.admin.post("/api/v1/sso/providers", body).await;
        assert_eq!(s, 400, "{b}");
        assert_eq!(b["error"]["field"], field, "{b}");
    }
    let (s, b) = t
        .admin
        .post("/api/v1/sso/providers", json!({"name": "x", "issuer": "https://i.example", "client_id": "x", "client_secret": "y", "surprise": 1}))
        .await;
    assert_eq!(s, 400, "{b}");

    // Every refusal is in the audit log, and no secret or token is.
    let refusals = t.audit("auth.sso.login").await;
    let reasons: Vec<_> = refusals
        .iter()
        .map(|r| r["details"]["reason"].as_str().unwrap_or("").to_owned())
        .collect();
    for reason in [
        "sso_email_unverified",
        "sso_domain_not_allowed",
        "sso_client_rejected",
        "sso_provider_unreachable",
        "sso_unknown_provider",
    ] {
        assert!(
            reasons.iter().any(|r| r == reason),
            "{reason} in {reasons:?}"
        );
    }
    let text = serde_json::to_string(&refusals).unwrap();
    assert!(!text.contains("not-the-secret") && !text.contains(CLIENT_SECRET));
}
