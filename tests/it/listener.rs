//! The TLS listener in-process: the verified client certificate reaches handlers as
//! `ConnInfo`, and only the certificate, never a header, decides it.

use std::time::Duration;

use axum::Extension;
use axum::Router;
use axum::routing::get as route_get;
use rcgen::KeyPair;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use ztka::config::ExternalUrl;
use ztka::listener::{ConnInfo, TlsServer};
use ztka::pki::Pki;
use ztka::shutdown::Shutdown;

use crate::fixture::{client_trusting, get};

async fn whoami(Extension(info): Extension<ConnInfo>) -> String {
    match info.peer {
        Some(p) => format!("cn={}", p.common_name),
        None => "anonymous".to_owned(),
    }
}

#[tokio::test]
async fn verified_client_identity_reaches_handlers() {
    ztka::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::load_or_init(
        dir.path(),
        &ExternalUrl::parse("https://localhost:1").unwrap(),
        None,
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let shutdown = Shutdown::new();
    let server = TlsServer {
        listener,
        tls: pki.server_config().unwrap(),
        app: Router::new().route("/whoami", route_get(whoami)),
        handshake_timeout: Duration::from_secs(5),
    };
    let task = tokio::spawn(server.run(shutdown.clone()));
    let url = format!("https://localhost:{port}/whoami");
    let ca = dir.path().join("ca.crt");

    let anon = client_trusting(std::slice::from_ref(&ca), None);
    let mut req = get(&url);
    req.headers_mut()
        .insert("x-ssl-client-cn", "admin".parse().unwrap());
    let res = anon.send(req).await.unwrap();
    assert_eq!(res.body().as_ref(), b"anonymous");

    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let issued = pki
        .issue_client_cert(&key, "user:alice", &[], Duration::from_secs(600))
        .unwrap();
    let alice = client_trusting(
        &[ca],
        Some((
            vec![CertificateDer::from_pem_slice(issued.pem.as_bytes()).unwrap()],
            PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap(),
        )),
    );
    let res = alice.send(get(&url)).await.unwrap();
    assert_eq!(res.body().as_ref(), b"cn=user:alice");

    shutdown.trigger();
    task.await.unwrap();
    assert!(shutdown.drain(Duration::from_secs(5)).await);
}
