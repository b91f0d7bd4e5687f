//! HTTPS to the kube-apiserver with credentials chosen per request, over a pool of
//! HTTP/1.1 keep-alive connections: one request at a time per connection, watches and
//! followed logs holding theirs as long as they run. Upgrades (exec, attach, port-forward)
//! dial a connection of their own, which they cannot share.
//!
//! Not HTTP/2: its header compression never indexes `Authorization` (a user's token of half
//! a kilobyte and more was Huffman-coded again for every request), and the API server does
//! more work per HTTP/2 request than per HTTP/1.1 one (the simulator, at one client: ~100
//! against ~75 µs of CPU).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use hyper::Uri;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::AgentError;

/// A TLS connection to the API server.
pub struct Stream {
    io: TokioIo<tokio_rustls::client::TlsStream<TcpStream>>,
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl hyper::rt::Read for Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Dials the API server (ALPN `http/1.1`); the pooled client calls it for new connections.
#[derive(Clone)]
pub struct Connector {
    tls: Arc<rustls::ClientConfig>,
    host: String,
    port: u16,
    server_name: ServerName<'static>,
}

impl Connector {
    pub async fn dial(&self) -> std::io::Result<Stream> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port)).await?;
        let _ = tcp.set_nodelay(true);
        let tls = TlsConnector::from(self.tls.clone())
            .connect(self.server_name.clone(), tcp)
            .await?;
        Ok(Stream {
            io: TokioIo::new(tls),
        })
    }
}

impl tower::Service<Uri> for Connector {
    type Response = Stream;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Stream>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let me = self.clone();
        Box::pin(async move { me.dial().await })
    }
}

pub struct Upstream {
    /// `https://host:port` plus any path prefix of the API server, without a trailing slash.
    pub base: String,
    /// HTTP/1.1 connections of their own, for upgrades.
    pub connector: Connector,
    /// Everything else, on pooled keep-alive connections.
    pub client: Client<Connector, Body>,
}

impl Upstream {
    pub fn new(config: &kube::Config) -> Result<Self, AgentError> {
        let invalid = |m: String| AgentError::Usage(format!("Kubernetes API server: {m}"));
        let url = &config.cluster_url;
        if url.scheme_str() != Some("https") {
            return Err(invalid(format!("{url} is not an https:// URL")));
        }
        let host = url
            .host()
            .ok_or_else(|| invalid(format!("{url} has no host")))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = url.port_u16().unwrap_or(443);
        let mut roots = rustls::RootCertStore::empty();
        match &config.root_cert {
            Some(certs) => {
                for der in certs {
                    roots
                        .add(CertificateDer::from(der.clone()))
                        .map_err(|e| invalid(format!("CA certificate: {e}")))?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        if config.accept_invalid_certs {
            return Err(invalid(
                "insecure-skip-tls-verify is not supported; give the CA certificate".into(),
            ));
        }
        let mut tls = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let name = config
            .tls_server_name
            .clone()
            .unwrap_or_else(|| host.clone());
        let server_name =
            ServerName::try_from(name).map_err(|e| invalid(format!("server name: {e}")))?;
        let connector = Connector {
            tls: Arc::new(tls),
            host,
            port,
            server_name,
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_max_idle_per_host(256)
            .build(connector.clone());
        let base = url.to_string().trim_end_matches('/').to_owned();
        Ok(Self {
            base,
            connector,
            client,
        })
    }
}
