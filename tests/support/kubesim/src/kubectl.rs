//! Running real kubectl binaries in tests: the ones installed here, with a kubeconfig,
//! optional stdin, and a way to read a long-running command's output line by line.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

const CANDIDATES: &[&str] = &[
    // What a user runs. In the image it is the Cloud SDK's dispatcher (it reports
    // v1.32.4-dispatcher), which runs the pinned kubectl matching the server's version: 1.33
    // against the simulator. The pinned binaries below are run by their own names.
    "/usr/bin/kubectl",
    "/usr/lib/google-cloud-sdk/bin/kubectl.1.27",
    "/usr/lib/google-cloud-sdk/bin/kubectl.1.32",
    "/usr/lib/google-cloud-sdk/bin/kubectl.1.33",
    // Debian's kubernetes-client, installed beside the default by `.ci/test`: SPDY only for
    // exec, attach and port-forward.
    "/usr/bin/kubectl-1.20",
];

/// The kubectl binaries present on this machine (a missing one is skipped).
pub fn kubectls() -> Vec<PathBuf> {
    let found: Vec<PathBuf> = CANDIDATES
        .iter()
        .map(PathBuf::from)
        .filter(|p| p.exists())
        .collect();
    if found.is_empty() {
        eprintln!("no kubectl binary found; skipping");
    }
    found
}

/// kubectl 1.27 and 1.20 predate some v1 APIs (`auth whoami`).
pub fn is_recent(bin: &Path) -> bool {
    let name = bin.to_string_lossy();
    !(name.ends_with("1.27") || name.ends_with("1.20"))
}

pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// `bin ARGS` with only `kubeconfig` (and its directory as HOME) from the environment,
/// killed when dropped.
pub fn command(bin: &Path, kubeconfig: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin);
    cmd.env_clear()
        .env("KUBECONFIG", kubeconfig)
        .env("HOME", kubeconfig.parent().unwrap())
        .args(args)
        .kill_on_drop(true);
    cmd
}

pub async fn kubectl(bin: &Path, kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Out {
    let mut cmd = command(bin, kubeconfig, args);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn kubectl");
    if let Some(input) = stdin {
        let mut w = child.stdin.take().unwrap();
        w.write_all(input.as_bytes()).await.unwrap();
        drop(w);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("kubectl {args:?} timed out"))
        .unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub async fn ok(bin: &Path, kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let out = kubectl(bin, kubeconfig, args, stdin).await;
    assert_eq!(
        out.code,
        0,
        "{} {args:?} failed\nstdout: {}\nstderr: {}",
        bin.display(),
        out.stdout,
        out.stderr
    );
    out.stdout
}

/// Reads stdout lines of a long-running kubectl until `done` says so, then kills it.
pub async fn stream_until(
    bin: &Path,
    kubeconfig: &Path,
    args: &[&str],
    mut done: impl FnMut(&[String]) -> bool,
    mut after_first_line: Option<Box<dyn FnMut() + Send>>,
) -> Vec<String> {
    let mut child = command(bin, kubeconfig, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !done(&seen) {
        let line = tokio::time::timeout_at(deadline, lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("{args:?}: timed out; saw {seen:?}"))
            .unwrap();
        let Some(line) = line else {
            panic!("{args:?}: output ended early; saw {seen:?}")
        };
        seen.push(line);
        if seen.len() == 1
            && let Some(f) = after_first_line.as_mut()
        {
            f();
        }
    }
    child.kill().await.unwrap();
    seen
}

/// Runs `kubectl port-forward <target> 0:<port>` and sends `rounds` messages through the
/// forwarded local port, each on a new connection, expecting them echoed back.
pub async fn port_forward_round_trip(
    bin: &Path,
    kubeconfig: &Path,
    extra: &[&str],
    target: &str,
    port: u16,
    rounds: usize,
) {
    use tokio::io::AsyncReadExt;
    let mut child = command(bin, kubeconfig, &["port-forward"])
        .args(extra)
        .args([target, &format!("0:{port}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    // "Forwarding from 127.0.0.1:41234 -> 8080"
    let local: u16 = line
        .split_whitespace()
        .nth(2)
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected output {line:?}"));
    for round in 0..rounds {
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", local))
            .await
            .unwrap();
        let msg = format!("ping {round} from {}\n", bin.display());
        tcp.write_all(msg.as_bytes()).await.unwrap();
        let mut back = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(10), tcp.read_exact(&mut back))
            .await
            .unwrap_or_else(|_| panic!("{}: no echo", bin.display()))
            .unwrap();
        assert_eq!(String::from_utf8(back).unwrap(), msg);
    }
    child.kill().await.unwrap();
}
