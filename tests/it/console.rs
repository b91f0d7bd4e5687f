//! The console in real headless Chromium against the real server: `web/e2e/console.mjs`
//! signs in, changes the initial password, creates a project, users, a group and grants,
//! signs in as the new user in a second browser context, finds those actions on the audit
//! page, and saves screenshots of every page in light and dark.
//!
//! Needs `node`, `web/node_modules` (`npm ci` in `web/`) and Debian's `chromium`; `.ci/test`
//! installs them. Screenshots go to `ZTKA_SCREENSHOTS_DIR` (e.g. `docs/screenshots`) or a
//! directory under the target dir. `ZTKA_E2E_CLUSTERS=1` with `ZTKA_E2E_AGENT_COMMAND` also
//! runs the cluster part (see the script's header); this test always runs it, with the
//! Kubernetes API simulator and a real `ztka agent`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::fixture::*;

const LIMIT: Duration = Duration::from_secs(300);

fn web_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("web")
}

#[test]
fn console_in_chromium_admin_and_second_user_flows() {
    let web = web_dir();
    assert!(
        web.join("node_modules/playwright-core").is_dir(),
        "web/node_modules is missing: run .ci/test, or `npm ci` in web/"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} is missing: run .ci/test, or `apt-get install chromium`"
    );

    let dir = tempfile::tempdir().unwrap();
    // A cluster for the cluster steps: the simulator, and an agent the script starts.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let sim = runtime
        .block_on(kubesim::KubeSim::start(Default::default()))
        .unwrap();
    let port = crate::fixture::free_port();
    let external = format!("https://localhost:{port}");
    let data = dir.path().join("data");
    // A real OpenID provider for the single sign-on steps.
    let idp = crate::sso::Idp::start(&format!("{external}/api/v1/auth/sso/test-idp/callback"));
    let idp_ca = dir.path().join("idp-ca.pem");
    std::fs::write(&idp_ca, &idp.ca_pem).unwrap();
    let server = ServerProcess::start_at(
        &data,
        &format!("127.0.0.1:{port}"),
        &["--external-url", &external],
        |_| {},
    );
    let agent_dir = dir.path().join("agent");
    let agent_command = format!(
        "kubectl --kubeconfig '{kc}' apply -f \"$ZTKA_BOOTSTRAP_MANIFEST\" >/dev/null && \
         printf %s \"$ZTKA_BOOTSTRAP_TOKEN\" > '{token}' && exec '{bin}' agent --server \"$ZTKA_SERVER_URL\" \
         --server-ca \"$ZTKA_CA_FILE\" --token-file '{token}' --state-dir '{state}' --kubeconfig '{kc}'",
        token = dir.path().join("token").display(),
        bin = env!("CARGO_BIN_EXE_ztka"),
        state = agent_dir.display(),
        kc = sim.kubeconfig_path().display(),
    );
    let shots = std::env::var_os("ZTKA_SCREENSHOTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots"));
    // Only this run's screenshots count: the directory outlives runs.
    let started = std::time::SystemTime::now();

    let mut child = Command::new("node")
        .current_dir(&web)
        .arg("e2e/console.mjs")
        .arg("--url")
        .arg(&external)
        .arg("--ca")
        .arg(data.join("ca.crt"))
        .arg("--password-file")
        .arg(data.join("initial-admin-password"))
        .arg("--clusters")
        .arg("--agent-command")
        .arg(&agent_command)
        .arg("--screenshots")
        .arg(&shots)
        .arg("--chromium")
        .arg(&chromium)
        .arg("--idp-issuer")
        .arg(idp.issuer())
        .arg("--idp-ca")
        .arg(&idp_ca)
        .arg("--idp-client-id")
        .arg(crate::sso::CLIENT_ID)
        .arg("--idp-client-secret")
        .arg(crate::sso::CLIENT_SECRET)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run node (is Node.js installed?)");

    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    match status {
        Some(s) if s.success() => {
            assert!(out.contains("steps passed"), "{out}");
            // Every page was captured in both schemes.
            for page in [
                "login",
                "login-error",
                "password-change",
                "overview-empty",
                "overview",
                "projects-empty",
                "projects",
                "project",
                "project-with-cluster",
                "cluster-import",
                "cluster-online",
                "cluster",
                "users",
                "user",
                "user-password-reset",
                "user-disabled",
                "groups",
                "group",
                "access",
                "tokens",
                "settings",
                "kubeconfig",
                "kubeconfig-alice",
                "kubeconfig-certificates",
                "account",
                "overview-alice",
                "audit",
                "audit-filtered",
                "sso",
                "login-sso",
                "not-found",
            ] {
                for scheme in ["light", "dark"] {
                    let f = shots.join(format!("{page}-{scheme}.png"));
                    let fresh = std::fs::metadata(&f)
                        .and_then(|m| m.modified())
                        .is_ok_and(|t| t >= started);
                    assert!(fresh, "missing screenshot {}", f.display());
                }
            }
        }
        Some(s) => panic!("console e2e failed ({s}):\n--- stdout\n{out}\n--- stderr\n{err}"),
        None => panic!(
            "console e2e did not finish within {LIMIT:?}:\n--- stdout\n{out}\n--- stderr\n{err}"
        ),
    }
    drop(server);
    drop(idp);
    drop(sim);
    drop(runtime);
}
