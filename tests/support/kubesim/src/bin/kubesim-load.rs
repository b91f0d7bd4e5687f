//! A small load generator: N concurrent clients, each on its own keep-alive HTTPS
//! connection, repeating one GET for a while; prints requests/s and latency percentiles.
//!
//! kubesim-load --kubeconfig PATH [--clients 16] [--duration 10] [--path /version] [--h2]
//! kubesim-load --url https://HOST:PORT --token T --ca-file ca.pem ...
//! kubesim-load --url https://HOST/k8s/CLUSTER --ca-file ca.pem --cert-file c.pem --key-file k.pem
//! kubesim-load --url http://127.0.0.1:8001 ...            (plain HTTP, e.g. `kubectl proxy`)
//! kubesim-load ... --h2 --watches 5000 --path /api/v1/namespaces/default/pods
//!     opens that many watches (spread over --clients connections), holds them for
//!     --duration, and reports how many the server accepted.
//!
//! A kubeconfig may carry a token or a client certificate (`client-certificate-data`,
//! `client-key-data`), as ztka's do.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

struct Args {
    url: String,
    token: String,
    ca_pem: Vec<u8>,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    clients: usize,
    duration: Duration,
    path: String,
    h2: bool,
    watches: usize,
}

fn parse_args() -> Result<Args, BoxError> {
    let mut args = Args {
        url: String::new(),
        token: String::new(),
        ca_pem: Vec::new(),
        cert_pem: Vec::new(),
        key_pem: Vec::new(),
        clients: 16,
        duration: Duration::from_secs(10),
        path: "/version".into(),
        h2: false,
        watches: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--kubeconfig" => {
                let text = std::fs::read_to_string(value()?)?;
                for line in text.lines().map(str::trim) {
                    if let Some(v) = line.strip_prefix("server: ") {
                        args.url = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("certificate-authority-data: ") {
                        args.ca_pem = base64::engine::general_purpose::STANDARD.decode(v.trim())?;
                    } else if let Some(v) = line.strip_prefix("client-certificate-data: ") {
                        args.cert_pem =
                            base64::engine::general_purpose::STANDARD.decode(v.trim())?;
                    } else if let Some(v) = line.strip_prefix("client-key-data: ") {
                        args.key_pem =
                            base64::engine::general_purpose::STANDARD.decode(v.trim())?;
                    } else if let Some(v) = line.strip_prefix("token: ") {
                        args.token = v.trim().to_owned();
                    }
                }
            }
            "--url" => args.url = value()?,
            "--token" => args.token = value()?,
            "--ca-file" => args.ca_pem = std::fs::read(value()?)?,
            "--cert-file" => args.cert_pem = std::fs::read(value()?)?,
            "--key-file" => args.key_pem = std::fs::read(value()?)?,
            "--clients" => args.clients = value()?.parse()?,
            "--duration" => args.duration = Duration::from_secs_f64(value()?.parse()?),
            "--path" => args.path = value()?,
            "--h2" => args.h2 = true,
            "--watches" => args.watches = value()?.parse()?,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    if args.url.is_empty() {
        return Err("give --kubeconfig or --url".into());
    }
    Ok(args)
}

trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

/// Connects to the URL's host (TLS for https://, plain for http://); returns the IO and
/// the absolute URI of `path` under the URL.
async fn connect(
    args: &Args,
    config: Arc<rustls::ClientConfig>,
    path: &str,
) -> Result<(TokioIo<Box<dyn Stream>>, String), BoxError> {
    let (tls, rest) = match (
        args.url.strip_prefix("https://"),
        args.url.strip_prefix("http://"),
    ) {
        (Some(r), _) => (true, r),
        (None, Some(r)) => (false, r),
        _ => return Err("the URL must start with https:// or http://".into()),
    };
    let authority = rest.split('/').next().unwrap_or_default().to_owned();
    let host = authority
        .rsplit_once(':')
        .map_or(authority.as_str(), |(h, _)| h)
        .trim_matches(['[', ']'])
        .to_owned();
    let base_path = rest
        .find('/')
        .map(|i| rest[i..].trim_end_matches('/').to_owned())
        .unwrap_or_default();
    let scheme = if tls { "https" } else { "http" };
    let uri = format!("{scheme}://{authority}{base_path}{path}");
    let tcp = tokio::net::TcpStream::connect(&authority).await?;
    tcp.set_nodelay(true)?;
    let io: Box<dyn Stream> = if tls {
        Box::new(
            tokio_rustls::TlsConnector::from(config)
                .connect(ServerName::try_from(host)?, tcp)
                .await?,
        )
    } else {
        Box::new(tcp)
    };
    Ok((TokioIo::new(io), uri))
}

/// Opens `count` watches on one HTTP/2 connection; returns how many were accepted. The
/// watches stay open until `deadline`.
async fn watcher(
    args: Arc<Args>,
    config: Arc<rustls::ClientConfig>,
    count: usize,
    deadline: Instant,
) -> Result<usize, BoxError> {
    let sep = if args.path.contains('?') { '&' } else { '?' };
    let (io, uri) = connect(&args, config, &format!("{}{sep}watch=true", args.path)).await?;
    let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
    tokio::spawn(conn);
    let mut opened = 0;
    let mut bodies = Vec::new();
    for _ in 0..count {
        let mut sender = sender.clone();
        sender.ready().await?;
        let mut req = hyper::Request::get(&uri).header("accept", "application/json");
        if !args.token.is_empty() {
            req = req.header("authorization", format!("Bearer {}", args.token));
        }
        let resp = sender
            .send_request(req.body(Empty::<Bytes>::new())?)
            .await?;
        if resp.status().is_success() {
            opened += 1;
            let mut body = resp.into_body();
            bodies.push(tokio::spawn(async move {
                while let Some(Ok(_)) = body.frame().await {}
            }));
        }
    }
    tokio::time::sleep_until(deadline.into()).await;
    for b in bodies {
        b.abort();
    }
    Ok(opened)
}

async fn client(
    args: Arc<Args>,
    config: Arc<rustls::ClientConfig>,
    deadline: Instant,
) -> Result<(Vec<Duration>, u64), BoxError> {
    let (io, uri) = connect(&args, config, &args.path).await?;
    let mut latencies = Vec::new();
    let mut errors = 0;
    macro_rules! run {
        ($sender:expr) => {{
            let mut sender = $sender;
            while Instant::now() < deadline {
                let mut req = hyper::Request::get(&uri).header("accept", "application/json");
                if !args.token.is_empty() {
                    req = req.header("authorization", format!("Bearer {}", args.token));
                }
                let req = req.body(Empty::<Bytes>::new())?;
                let started = Instant::now();
                match sender.send_request(req).await {
                    Ok(resp) => {
                        let ok = resp.status().is_success();
                        let _ = resp.into_body().collect().await?;
                        if ok {
                            latencies.push(started.elapsed());
                        } else {
                            errors += 1;
                        }
                    }
                    Err(_) => {
                        errors += 1;
                        break;
                    }
                }
            }
        }};
    }
    if args.h2 {
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
        tokio::spawn(conn);
        run!(sender);
    } else {
        let (sender, conn) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(conn);
        run!(sender);
    }
    Ok((latencies, errors))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = Arc::new(parse_args()?);
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&args.ca_pem) {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut config = if args.cert_pem.is_empty() {
        builder.with_no_client_auth()
    } else {
        let chain =
            CertificateDer::pem_slice_iter(&args.cert_pem).collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_slice(&args.key_pem)?;
        builder.with_client_auth_cert(chain, key)?
    };
    config.alpn_protocols = vec![if args.h2 {
        b"h2".to_vec()
    } else {
        b"http/1.1".to_vec()
    }];
    let config = Arc::new(config);
    if args.watches > 0 {
        let per = args.watches.div_ceil(args.clients.max(1));
        let deadline = Instant::now() + args.duration;
        let tasks: Vec<_> = (0..args.clients.max(1))
            .map(|i| {
                let n = per.min(args.watches.saturating_sub(i * per));
                tokio::spawn(watcher(args.clone(), config.clone(), n, deadline))
            })
            .collect();
        let mut opened = 0;
        for t in tasks {
            match t.await? {
                Ok(n) => opened += n,
                Err(e) => eprintln!("watcher failed: {e}"),
            }
        }
        println!("watches requested={} opened={opened}", args.watches);
        return Ok(());
    }
    let started = Instant::now();
    let deadline = started + args.duration;
    let tasks: Vec<_> = (0..args.clients)
        .map(|_| tokio::spawn(client(args.clone(), config.clone(), deadline)))
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        match t.await? {
            Ok((lat, err)) => {
                all.extend(lat);
                errors += err;
            }
            Err(e) => {
                eprintln!("client failed: {e}");
                errors += 1;
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "clients={} duration={:.1}s path={} requests={} errors={} rps={:.0} p50={:.2}ms p99={:.2}ms",
        args.clients,
        elapsed,
        args.path,
        all.len(),
        errors,
        all.len() as f64 / elapsed,
        ms(percentile(&all, 0.50)),
        ms(percentile(&all, 0.99)),
    );
    Ok(())
}
