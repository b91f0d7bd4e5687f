//! `ztka healthcheck`: exit 0 when the server's /healthz (or, with `--agent`, a local agent's
//! /readyz) answers 200, 1 otherwise.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;

use crate::cli::HealthcheckArgs;
use crate::client::HttpsClient;
use crate::config::{DEFAULT_LISTEN, FileConfig, resolve_data_dir};

pub async fn run(file: &FileConfig, args: &HealthcheckArgs) -> Result<(), String> {
    if args.agent {
        let listen = args.health_listen.unwrap_or(std::net::SocketAddr::from((
            std::net::Ipv4Addr::LOCALHOST,
            crate::manifest::AGENT_HEALTH_PORT,
        )));
        return agent(listen, Duration::from_secs(args.timeout.max(1))).await;
    }
    let data_dir = resolve_data_dir(file, args.data.data_dir.as_ref());
    let url = match &args.url {
        Some(u) => u.clone(),
        None => {
            let listen: std::net::SocketAddr = file
                .server
                .listen
                .as_deref()
                .unwrap_or(DEFAULT_LISTEN)
                .parse()
                .map_err(|_| "listen address in the config file is invalid".to_string())?;
            // A wildcard listener is probed on loopback, which the server certificate names.
            let listen = loopback_if_wildcard(listen);
            let host = match listen {
                std::net::SocketAddr::V4(a) => a.ip().to_string(),
                std::net::SocketAddr::V6(a) => format!("[{}]", a.ip()),
            };
            format!("https://{host}:{}/healthz", listen.port())
        }
    };
    let mut roots = crate::client::public_roots();
    let mut ca_files = vec![data_dir.join(crate::pki::CA_CERT_FILE)];
    ca_files.extend(args.ca_file.clone());
    for path in ca_files.iter().filter(|p| p.exists()) {
        let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        crate::client::add_pem_roots(&mut roots, &pem)
            .map_err(|e| format!("{} {e}", path.display()))?;
    }
    let client = HttpsClient::new(roots, None, Duration::from_secs(args.timeout.max(1)))
        .map_err(|e| e.to_string())?;
    let req = hyper::Request::get(&url)
        .body(Full::new(Bytes::new()))
        .map_err(|e| format!("invalid URL {url}: {e}"))?;
    let res = client.send(req).await.map_err(|e| format!("{url}: {e}"))?;
    if res.status().is_success() {
        Ok(())
    } else {
        Err(format!("{url}: HTTP {}", res.status()))
    }
}

/// Probes the agent's plain-HTTP `/readyz` on the address it listens on (a wildcard address
/// on loopback).
async fn agent(listen: std::net::SocketAddr, timeout: Duration) -> Result<(), String> {
    let addr = loopback_if_wildcard(listen);
    let url = format!("http://{addr}/readyz");
    let probe = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let req = hyper::Request::get("/readyz")
            .header(hyper::header::HOST, addr.to_string())
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let res = sender.send_request(req).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(res.status())
    };
    match tokio::time::timeout(timeout, probe).await {
        Err(_) => Err(format!("{url}: no answer within {}s", timeout.as_secs())),
        Ok(Err(e)) => Err(format!("{url}: {e}")),
        Ok(Ok(status)) if status.is_success() => Ok(()),
        Ok(Ok(status)) => Err(format!("{url}: HTTP {status}")),
    }
}

/// A wildcard address becomes loopback of the same family; others stay as they are.
fn loopback_if_wildcard(mut addr: std::net::SocketAddr) -> std::net::SocketAddr {
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    addr
}
