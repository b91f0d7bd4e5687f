//! The one HTTPS listener. Each accepted connection gets its own task, in which the TLS
//! handshake runs under a timeout, so a stalled client never blocks the accept loop. The
//! verified client certificate (if any) and the peer address ride on every request as a
//! [`ConnInfo`] extension; nothing a client sends in headers can set them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::pki::identity::PeerCertificate;
use crate::shutdown::Shutdown;

/// Facts about the connection a request arrived on, established by the server itself.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub remote: SocketAddr,
    /// The client certificate, present only if it verified against ztka's CA.
    pub peer: Option<Arc<PeerCertificate>>,
}

pub struct TlsServer {
    pub listener: TcpListener,
    pub tls: Arc<rustls::ServerConfig>,
    pub app: Router,
    pub handshake_timeout: Duration,
}

impl TlsServer {
    /// Accepts connections until `shutdown` triggers; connections are then asked to finish
    /// (HTTP/2 GOAWAY, HTTP/1 close after the current response) and tracked by `shutdown`.
    pub async fn run(self, shutdown: Shutdown) {
        let acceptor = TlsAcceptor::from(self.tls);
        loop {
            let (tcp, remote) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = shutdown.triggered() => break,
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let app = self.app.clone();
            let timeout = self.handshake_timeout;
            let conn_shutdown = shutdown.clone();
            shutdown.spawn(async move {
                serve_connection(tcp, remote, acceptor, app, timeout, conn_shutdown).await;
            });
        }
    }
}

async fn serve_connection(
    tcp: tokio::net::TcpStream,
    remote: SocketAddr,
    acceptor: TlsAcceptor,
    app: Router,
    handshake_timeout: Duration,
    shutdown: Shutdown,
) {
    let tls = match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(%remote, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%remote, "TLS handshake timed out");
            return;
        }
    };
    let (_, session) = tls.get_ref();
    let peer = session
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|der| match PeerCertificate::parse(der) {
            Ok(p) => Some(Arc::new(p)),
            Err(e) => {
                tracing::debug!(%remote, error = %e, "unparseable client certificate");
                None
            }
        });
    let info = ConnInfo { remote, peer };
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(info.clone());
        app.clone().oneshot(req)
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = shutdown.triggered() => {
            conn.as_mut().graceful_shutdown();
            conn.as_mut().await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%remote, error = %e, "connection ended with an error");
    }
}
