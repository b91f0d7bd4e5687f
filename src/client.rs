//! A small HTTPS client over hyper (HTTP/1.1, one connection per request) used by
//! `ztka healthcheck` and, later, by the agent for registration. It trusts exactly the roots
//! it is given.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid URL {0}")]
    Url(String),
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(std::io::Error),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("request: {0}")]
    Request(#[from] hyper::http::Error),
    #[error("TLS configuration: {0}")]
    Config(String),
    #[error("timed out")]
    Timeout,
    #[error("the response is larger than {0} bytes")]
    TooLarge(usize),
}

#[derive(Clone)]
pub struct HttpsClient {
    tls: Arc<rustls::ClientConfig>,
    timeout: Duration,
    max_body: Option<usize>,
}

impl HttpsClient {
    pub fn new(
        roots: rustls::RootCertStore,
        identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
        let mut tls = match identity {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| ClientError::Config(e.to_string()))?,
            None => builder.with_no_client_auth(),
        };
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            tls: Arc::new(tls),
            timeout,
            max_body: None,
        })
    }

    /// Refuses response bodies larger than `limit` bytes.
    pub fn with_max_body(mut self, limit: usize) -> Self {
        self.max_body = Some(limit);
        self
    }

    /// Sends `req` (absolute URI) and returns the response with its whole body.
    pub async fn send(
        &self,
        req: hyper::Request<Full<Bytes>>,
    ) -> Result<hyper::Response<Bytes>, ClientError> {
        tokio::time::timeout(self.timeout, self.send_inner(req))
            .await
            .map_err(|_| ClientError::Timeout)?
    }

    /// Opens a TLS connection to the host of `uri` (HTTP/1.1 by ALPN).
    pub async fn connect(
        &self,
        uri: &hyper::Uri,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ClientError> {
        let host = uri
            .host()
            .ok_or_else(|| ClientError::Url(uri.to_string()))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(443);
        let addr = format!(
            "{}:{port}",
            if host.contains(':') {
                format!("[{host}]")
            } else {
                host.clone()
            }
        );
        let tcp = TcpStream::connect(&addr)
            .await
            .map_err(|source| ClientError::Connect {
                addr: addr.clone(),
                source,
            })?;
        // Small request/response exchanges (and the agent tunnel) must not wait on Nagle.
        let _ = tcp.set_nodelay(true);
        let name =
            ServerName::try_from(host.clone()).map_err(|_| ClientError::Url(uri.to_string()))?;
        TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(ClientError::Tls)
    }

    async fn send_inner(
        &self,
        mut req: hyper::Request<Full<Bytes>>,
    ) -> Result<hyper::Response<Bytes>, ClientError> {
        let uri = req.uri().clone();
        let tls = self.connect(&uri).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        set_origin_form(&mut req)?;
        let res = sender.send_request(req).await?;
        let (parts, body) = res.into_parts();
        let bytes = match self.max_body {
            Some(limit) => http_body_util::Limited::new(body, limit)
                .collect()
                .await
                .map_err(|e| match e.downcast::<hyper::Error>() {
                    Ok(e) => ClientError::Http(*e),
                    Err(_) => ClientError::TooLarge(limit),
                })?
                .to_bytes(),
            None => body.collect().await?.to_bytes(),
        };
        Ok(hyper::Response::from_parts(parts, bytes))
    }
}

/// Turns an absolute-URI request into origin form with a `Host` header, as HTTP/1.1 sends it.
pub fn set_origin_form<B>(req: &mut hyper::Request<B>) -> Result<(), ClientError> {
    let uri = req.uri().clone();
    let authority = uri
        .authority()
        .map(|a| a.to_string())
        .ok_or_else(|| ClientError::Url(uri.to_string()))?;
    let path = uri
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_else(|| "/".to_owned());
    *req.uri_mut() = path.parse().map_err(hyper::http::Error::from)?;
    req.headers_mut().insert(
        hyper::header::HOST,
        authority.parse().map_err(hyper::http::Error::from)?,
    );
    Ok(())
}

/// The public web PKI's roots, for servers with a publicly issued certificate.
pub fn public_roots() -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    roots
}

/// Adds every certificate in `pem` to `roots`; returns how many. Fails on text that is not
/// PEM and on a certificate rustls will not use as a root.
pub fn add_pem_roots(roots: &mut rustls::RootCertStore, pem: &[u8]) -> Result<usize, String> {
    use rustls::pki_types::pem::PemObject;
    let mut added = 0;
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| format!("is not PEM: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("holds an unusable certificate: {e}"))?;
        added += 1;
    }
    Ok(added)
}
