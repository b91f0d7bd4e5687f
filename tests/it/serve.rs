//! The foundation: first start, restart, one HTTPS port, client certificates, config errors,
//! offline admin commands, health probes and signals.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use ztka::config::ExternalUrl;
use ztka::pki::Pki;
use ztka::store::Store;

use crate::fixture::*;

fn admin_password_verifies(data_dir: &std::path::Path, password: &str) -> bool {
    let store = Store::open(data_dir).unwrap();
    let admin = store
        .read_blocking(|t| ztka::store::users::get_by_name(t, "admin"))
        .unwrap()
        .unwrap();
    ztka::authn::password::verify(password, admin.password_hash.as_deref().unwrap())
}

fn printed_password(stdout: &[String]) -> String {
    let line = stdout
        .iter()
        .find(|l| l.contains("created user \"admin\" with password: "))
        .expect("password line");
    line.rsplit(' ').next().unwrap().to_owned()
}

#[tokio::test]
async fn first_start_creates_ca_certificates_and_admin() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = ServerProcess::start(&data, &[]);

    let res = server.get("/healthz").await;
    assert_eq!(res.status(), 200);
    assert_eq!(server.get("/readyz").await.status(), 200);

    let pw_file = data.join("initial-admin-password");
    assert_eq!(mode(&pw_file), 0o600);
    assert_eq!(mode(&data.join("ca.key")), 0o600);
    assert_eq!(mode(&data.join("server.key")), 0o600);
    assert_eq!(mode(&data.join("ztka.redb")), 0o600);
    assert_eq!(mode(&data), 0o700);
    let password = printed_password(&server.stdout);
    assert!(password.len() >= 12);
    assert_eq!(std::fs::read_to_string(&pw_file).unwrap().trim(), password);
    assert!(server.stop().success());
    assert!(admin_password_verifies(&data, &password));
}

#[tokio::test]
async fn restart_reuses_ca_server_certificate_and_admin() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let first = ServerProcess::start(&data, &[]);
    let password = printed_password(&first.stdout);
    assert!(first.stop().success());
    let ca = std::fs::read(data.join("ca.crt")).unwrap();
    let server_cert = std::fs::read(data.join("server.crt")).unwrap();

    let second = ServerProcess::start(&data, &[]);
    assert!(
        !second.stdout.iter().any(|l| l.contains("password")),
        "a restart must not print or create a password: {:?}",
        second.stdout
    );
    assert_eq!(second.get("/healthz").await.status(), 200);
    assert!(second.stop().success());
    assert_eq!(std::fs::read(data.join("ca.crt")).unwrap(), ca);
    assert_eq!(std::fs::read(data.join("server.crt")).unwrap(), server_cert);
    assert!(admin_password_verifies(&data, &password));
}

#[tokio::test]
async fn second_server_on_the_same_data_dir_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]);
    let out = ztka()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("in use by another process"), "{stderr}");
    // The first server is unaffected.
    assert_eq!(server.get("/healthz").await.status(), 200);
}

#[tokio::test]
async fn unusable_data_dir_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let out = ztka()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(file.join("data"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is not writable"), "{stderr}");
}

fn foreign_client_identity() -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut ca = CertificateParams::default();
    ca.distinguished_name.push(DnType::CommonName, "ztka CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let issuer = Issuer::new(ca, &ca_key);
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut leaf = CertificateParams::default();
    leaf.distinguished_name.push(DnType::CommonName, "admin");
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    (
        vec![cert.der().clone()],
        PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap(),
    )
}

#[tokio::test]
async fn client_certificates_must_chain_to_the_ztka_ca() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]);
    let ca = dir.path().join("ca.crt");

    // A certificate from a look-alike CA (same subject name) is refused at the TLS layer.
    let foreign = client_trusting(std::slice::from_ref(&ca), Some(foreign_client_identity()));
    let err = foreign.send(get(&server.url("/healthz"))).await;
    assert!(err.is_err(), "a foreign client certificate must be refused");

    // One issued by ztka's CA is accepted.
    let pki = Pki::load_or_init(
        dir.path(),
        &ExternalUrl::parse("https://localhost:8443").unwrap(),
        None,
    )
    .unwrap();
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let issued = pki
        .issue_client_cert(&key, "someone", &[], Duration::from_secs(600))
        .unwrap();
    let ours = client_trusting(
        &[ca],
        Some((
            vec![CertificateDer::from_pem_slice(issued.pem.as_bytes()).unwrap()],
            PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap(),
        )),
    );
    let res = ours.send(get(&server.url("/healthz"))).await.unwrap();
    assert_eq!(res.status(), 200);

    // And no client certificate at all is fine for the console and API.
    assert_eq!(server.get("/healthz").await.status(), 200);
}

#[tokio::test]
async fn malformed_config_file_names_the_offending_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("ztka.toml");
    std::fs::write(
        &cfg,
        "data_dir = \"/tmp/x\"\n[server]\nlisten = \"127.0.0.1:0\"\nlisten_adress = \"oops\"\n",
    )
    .unwrap();
    for args in [&["config", "check"][..], &["serve"][..]] {
        let out = ztka()
            .args(args)
            .arg("--config")
            .arg(&cfg)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("listen_adress"), "{args:?}: {stderr}");
        assert_eq!(
            stderr.trim().lines().count(),
            1,
            "one-line message: {stderr}"
        );
    }

    std::fs::write(&cfg, "[server]\nexternal_url = \"http://plain\"\n").unwrap();
    let out = ztka()
        .args(["config", "check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("external_url"));

    // Precedence: file < environment < flag.
    std::fs::write(
        &cfg,
        "[server]\nlisten = \"127.0.0.1:7001\"\nexternal_url = \"https://file.example\"\n",
    )
    .unwrap();
    let out = ztka()
        .args(["config", "check", "--config"])
        .arg(&cfg)
        .env("ZTKA_LISTEN", "127.0.0.1:7002")
        .env("ZTKA_EXTERNAL_URL", "https://env.example")
        .args(["--external-url", "https://flag.example"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("listen = \"127.0.0.1:7002\""), "{stdout}");
    assert!(
        stdout.contains("external_url = \"https://flag.example\""),
        "{stdout}"
    );
}

#[tokio::test]
async fn admin_reset_password_works_offline_only() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]);
    let old = printed_password(&server.stdout);

    // While the server runs, the database is held and the command says so.
    let out = ztka()
        .args(["admin", "reset-password", "admin", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use by another process"));
    assert!(server.stop().success());

    let out = ztka()
        .args(["admin", "reset-password", "admin", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let new = stdout
        .lines()
        .find_map(|l| l.strip_prefix("new password for admin: "))
        .expect("new password printed")
        .to_owned();
    assert!(!admin_password_verifies(dir.path(), &old));
    assert!(admin_password_verifies(dir.path(), &new));

    // From a file, with the policy enforced.
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "short\n").unwrap();
    let out = ztka()
        .args(["admin", "reset-password", "admin", "--password-file"])
        .arg(&pw)
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 12"));
    std::fs::write(&pw, "a long enough passphrase\n").unwrap();
    let out = ztka()
        .args(["admin", "reset-password", "admin", "--password-file"])
        .arg(&pw)
        .env("ZTKA_DATA_DIR", dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(admin_password_verifies(
        dir.path(),
        "a long enough passphrase"
    ));

    let out = ztka()
        .args(["admin", "reset-password", "nobody", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no user named \"nobody\""));
}

#[tokio::test]
async fn healthcheck_reports_running_and_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]);
    let url = server.url("/healthz");
    let run = || {
        ztka()
            .args(["healthcheck", "--url", &url, "--data-dir"])
            .arg(dir.path())
            .output()
            .unwrap()
    };
    assert!(run().status.success());
    assert!(server.stop().success());
    let out = run();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unhealthy"));
}

#[tokio::test]
async fn systemd_notify_ready_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let data = dir.path().join("data");
    let server = ServerProcess::start_with(&data, &[], |cmd| {
        cmd.env("NOTIFY_SOCKET", &sock_path);
    });
    let mut buf = [0u8; 256];
    let n = sock.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"READY=1");
    assert!(server.stop().success());
    let n = sock.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"STOPPING=1");
}

#[tokio::test]
async fn a_stalled_handshake_does_not_block_other_clients() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]);
    // Several connections that never speak TLS.
    let mut stalled = Vec::new();
    for _ in 0..8 {
        stalled.push(tokio::net::TcpStream::connect(server.addr).await.unwrap());
    }
    assert_eq!(server.get("/healthz").await.status(), 200);
    drop(stalled);
}

#[tokio::test]
async fn operator_supplied_server_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut ca = CertificateParams::default();
    ca.distinguished_name
        .push(DnType::CommonName, "Operator CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, &ca_key);
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    let (cert_path, key_path, ca_path) = (
        dir.path().join("op.crt"),
        dir.path().join("op.key"),
        dir.path().join("op-ca.crt"),
    );
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    std::fs::write(&ca_path, ca_cert.pem()).unwrap();

    let data = dir.path().join("data");
    let server = ServerProcess::start(
        &data,
        &[
            "--tls-cert",
            cert_path.to_str().unwrap(),
            "--tls-key",
            key_path.to_str().unwrap(),
        ],
    );
    let client = client_trusting(&[ca_path], None);
    let res = client.send(get(&server.url("/healthz"))).await.unwrap();
    assert_eq!(res.status(), 200);
    // ztka's own CA cannot vouch for the operator's certificate.
    assert!(
        server
            .client()
            .send(get(&server.url("/healthz")))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn routing_errors_use_the_api_shape_and_the_console_falls_back() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]);
    let res = server.get("/api/v1/does-not-exist").await;
    assert_eq!(res.status(), 404);
    let body: serde_json::Value = serde_json::from_slice(res.body()).unwrap();
    assert_eq!(body["error"]["code"], "not_found");
    let request_id = res.headers()["x-request-id"].to_str().unwrap();
    assert_eq!(body["error"]["request_id"], request_id);

    let res = server.get("/projects/some/deep/link").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-cache");
    assert!(
        res.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
    assert!(String::from_utf8_lossy(res.body()).contains("<html"));
    // Every answer, page or API, forbids framing and insists on HTTPS.
    for path in ["/projects/some/deep/link", "/api/v1/nope", "/healthz"] {
        let res = server.get(path).await;
        let h = res.headers();
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        let hsts = h["strict-transport-security"].to_str().unwrap();
        assert!(
            hsts.starts_with("max-age=") && !hsts.starts_with("max-age=0"),
            "{path}: {hsts}"
        );
    }

    // A client cannot choose its own request id.
    let mut req = get(&server.url("/healthz"));
    req.headers_mut()
        .insert("x-request-id", "forged".parse().unwrap());
    let res = server.client().send(req).await.unwrap();
    assert_ne!(res.headers()["x-request-id"], "forged");
}
