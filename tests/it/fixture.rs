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
        let mut cmd = ztka();
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
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
