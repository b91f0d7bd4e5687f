//! Packaging: the DigitalOcean first-boot script run in a temporary root with a fake
//! metadata service, and the packaged default configuration.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::fixture::{BIN, mode};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// A fake droplet: a root directory holding the packaged config, a metadata directory laid
/// out like the metadata service, and a `systemctl` that only records what it was asked.
struct Droplet {
    _dir: tempfile::TempDir,
    root: PathBuf,
    metadata: PathBuf,
    systemctl_log: PathBuf,
    systemctl: PathBuf,
}

impl Droplet {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("etc/ztka")).unwrap();
        std::fs::copy(repo("systemd/ztka.toml"), root.join("etc/ztka/ztka.toml")).unwrap();
        let metadata = dir.path().join("metadata");
        std::fs::create_dir_all(metadata.join("interfaces/public/0/ipv4")).unwrap();
        let systemctl_log = dir.path().join("systemctl.log");
        let systemctl = dir.path().join("systemctl");
        std::fs::write(
            &systemctl,
            format!("#!/bin/sh\necho \"$*\" >> '{}'\n", systemctl_log.display()),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&systemctl, std::fs::Permissions::from_mode(0o755)).unwrap();
        Self {
            _dir: dir,
            root,
            metadata,
            systemctl_log,
            systemctl,
        }
    }

    fn set_metadata(&self, path: &str, content: &str) {
        std::fs::write(self.metadata.join(path), content).unwrap();
    }

    fn first_boot(&self) -> Output {
        Command::new("bash")
            .arg(repo("packaging/digitalocean/files/first-boot"))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("ZTKA_ROOT", &self.root)
            .env("ZTKA_METADATA", &self.metadata)
            .env("ZTKA_BIN", BIN)
            .env("ZTKA_SYSTEMCTL", &self.systemctl)
            .env("ZTKA_RUN_AS", "")
            .env("ZTKA_LOG", "warn")
            .output()
            .unwrap()
    }

    fn path(&self, p: &str) -> PathBuf {
        self.root.join(p)
    }

    fn read(&self, p: &str) -> String {
        std::fs::read_to_string(self.path(p)).unwrap_or_default()
    }

    fn systemctl_calls(&self) -> String {
        std::fs::read_to_string(&self.systemctl_log).unwrap_or_default()
    }

    fn config_check(&self) -> String {
        config_check(&self.path("etc/ztka/ztka.toml"))
    }
}

/// `ztka --config FILE config check`, which must pass; returns what it prints.
fn config_check(file: &Path) -> String {
    let out = Command::new(BIN)
        .arg("--config")
        .arg(file)
        .args(["config", "check"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "first-boot failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn first_boot_configures_the_droplet_from_its_public_address_once() {
    let d = Droplet::new();
    d.set_metadata("interfaces/public/0/ipv4/address", "203.0.113.10\n");
    let out = d.first_boot();
    assert_ok(&out);

    let config = d.read("etc/ztka/ztka.toml");
    assert!(
        config.contains("\nexternal_url = \"https://203.0.113.10\"\n"),
        "{config}"
    );
    assert!(config.contains("\nlisten = \"0.0.0.0:443\"\n"), "{config}");
    let effective = d.config_check();
    assert!(
        effective.contains("external_url = \"https://203.0.113.10\""),
        "{effective}"
    );

    let password = d.path("var/lib/ztka/initial-admin-password");
    assert_eq!(mode(&password), 0o600);
    let secret = d.read("var/lib/ztka/initial-admin-password");
    assert!(secret.trim().len() >= 16, "a generated password");
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains(secret.trim())
            && !String::from_utf8_lossy(&out.stdout).contains(secret.trim()),
        "the password is never printed"
    );
    assert_eq!(mode(&d.path("var/lib/ztka")), 0o700);
    assert_eq!(mode(&d.path("var/lib/ztka/ca.key")), 0o600);
    assert_eq!(
        d.systemctl_calls(),
        "stop ztka.service\nenable ztka.service\nstart --no-block ztka.service\n"
    );

    // The login message names the URL and where the password is.
    let motd = d.path("etc/update-motd.d/90-ztka");
    assert_eq!(mode(&motd), 0o755);
    let shown = Command::new("sh")
        .arg(&motd)
        .env("ZTKA_CONFIG", d.path("etc/ztka/ztka.toml"))
        .env("ZTKA_DATA_DIR", d.path("var/lib/ztka"))
        .output()
        .unwrap();
    let shown = String::from_utf8(shown.stdout).unwrap();
    assert!(shown.contains("https://203.0.113.10/"), "{shown}");
    assert!(shown.contains("initial-admin-password"), "{shown}");

    // A second run changes nothing, even if the address changed meanwhile.
    let before = (
        config.clone(),
        secret.clone(),
        d.read("var/lib/ztka/ca.crt"),
        d.read("var/lib/ztka/server.crt"),
    );
    d.set_metadata("interfaces/public/0/ipv4/address", "198.51.100.7\n");
    let out = d.first_boot();
    assert_ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("already done"));
    let after = (
        d.read("etc/ztka/ztka.toml"),
        d.read("var/lib/ztka/initial-admin-password"),
        d.read("var/lib/ztka/ca.crt"),
        d.read("var/lib/ztka/server.crt"),
    );
    assert_eq!(before, after);
    assert_eq!(d.systemctl_calls().lines().count(), 3);

    // Without the mark (say, a crash before the end) the steps repeat safely: same CA,
    // same admin password.
    d.set_metadata("interfaces/public/0/ipv4/address", "203.0.113.10\n");
    std::fs::remove_file(d.path("var/lib/ztka/.first-boot-done")).unwrap();
    assert_ok(&d.first_boot());
    assert_eq!(d.read("var/lib/ztka/initial-admin-password"), secret);
    assert_eq!(d.read("var/lib/ztka/ca.crt"), before.2);
    assert_eq!(d.read("etc/ztka/ztka.toml"), config);
}

#[test]
fn first_boot_prefers_a_host_name_from_user_data() {
    let d = Droplet::new();
    d.set_metadata("interfaces/public/0/ipv4/address", "203.0.113.10\n");
    d.set_metadata(
        "user-data",
        "#!/bin/bash\n# ztka settings\nZTKA_HOSTNAME=ztka.example.com\necho hello\n",
    );
    assert_ok(&d.first_boot());
    assert!(
        d.config_check()
            .contains("external_url = \"https://ztka.example.com\"")
    );
}

#[test]
fn first_boot_refuses_bad_metadata_and_changes_nothing() {
    for (ip, user_data) in [
        (Some("not-an-address\n"), None),
        (Some("203.0.113.300\n"), None),
        (None, None),
        (Some("203.0.113.10\n"), Some("ZTKA_HOSTNAME=bad_name;rm\n")),
    ] {
        let d = Droplet::new();
        if let Some(ip) = ip {
            d.set_metadata("interfaces/public/0/ipv4/address", ip);
        }
        if let Some(u) = user_data {
            d.set_metadata("user-data", u);
        }
        let packaged = d.read("etc/ztka/ztka.toml");
        let out = d.first_boot();
        assert_eq!(out.status.code(), Some(1), "{ip:?} {user_data:?}");
        assert_eq!(d.read("etc/ztka/ztka.toml"), packaged);
        assert!(!d.path("var/lib/ztka/.first-boot-done").exists());
        assert!(d.systemctl_calls().is_empty());
    }
}

#[test]
fn packaged_config_is_valid_and_documents_every_setting() {
    let shown = config_check(&repo("systemd/ztka.toml"));
    assert!(shown.contains("listen = \"0.0.0.0:443\""), "{shown}");
    assert!(shown.contains("data_dir = \"/var/lib/ztka\""), "{shown}");
    let text = std::fs::read_to_string(repo("systemd/ztka.toml")).unwrap();
    // Every optional field of the `File*` structs in config.rs is a setting of the file.
    let source = std::fs::read_to_string(repo("src/config.rs")).unwrap();
    let mut keys = Vec::new();
    for block in source.split("pub struct File").skip(1) {
        let body = &block[..block.find("\n}").unwrap()];
        for line in body.lines() {
            if let Some(rest) = line.trim().strip_prefix("pub ")
                && let Some((name, ty)) = rest.split_once(": ")
                && ty.starts_with("Option<")
            {
                keys.push(name.to_owned());
            }
        }
    }
    assert!(keys.len() >= 16, "found only {keys:?}");
    for key in keys {
        let line = text
            .lines()
            .position(|l| l.trim_start_matches("# ").starts_with(&format!("{key} =")))
            .unwrap_or_else(|| panic!("{key} is not in the packaged config"));
        let above = text.lines().nth(line.saturating_sub(1)).unwrap_or("");
        assert!(above.starts_with('#'), "{key} has no comment above it");
    }
}

#[test]
fn under_systemd_the_admin_password_stays_out_of_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    // systemd sets JOURNAL_STREAM when stdout goes to the journal.
    let server = crate::fixture::ServerProcess::start_with(dir.path(), &[], |cmd| {
        cmd.env("JOURNAL_STREAM", "8:12345");
    });
    let password = std::fs::read_to_string(dir.path().join("initial-admin-password")).unwrap();
    let printed = server.stdout.join("\n");
    assert!(!printed.contains(password.trim()), "{printed}");
    assert!(printed.contains("initial-admin-password"), "{printed}");
    assert!(server.stop().success());
}

/// ztka-agent.service is `Type=notify`: the agent must say READY=1 even while the server is
/// still unreachable (it retries), and STOPPING=1 on SIGTERM.
#[tokio::test]
async fn agent_tells_systemd_it_is_ready_and_stopping() {
    let sim = kubesim::KubeSim::start(Default::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = tokio::net::UnixDatagram::bind(&sock_path).unwrap();
    let token = dir.path().join("token");
    // Well formed (a malformed token is refused before READY=1), but no server will take it.
    std::fs::write(&token, "ztkab_0123456789abcdef0123456789abcdef_unused\n").unwrap();
    let mut agent = crate::fixture::ztka()
        // Nothing listens on port 1: registration keeps retrying.
        .args(["agent", "--server", "https://127.0.0.1:1", "--token-file"])
        .arg(&token)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--kubeconfig")
        .arg(sim.kubeconfig_path())
        .env("NOTIFY_SOCKET", &sock_path)
        .env("ZTKA_LOG", "error")
        .spawn()
        .unwrap();
    let limit = std::time::Duration::from_secs(20);
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(limit, sock.recv(&mut buf))
        .await
        .expect("READY=1 in time")
        .unwrap();
    assert_eq!(&buf[..n], b"READY=1");
    unsafe {
        libc::kill(agent.id() as i32, libc::SIGTERM);
    }
    let n = tokio::time::timeout(limit, sock.recv(&mut buf))
        .await
        .expect("STOPPING=1 in time")
        .unwrap();
    assert_eq!(&buf[..n], b"STOPPING=1");
    let status = tokio::task::spawn_blocking(move || {
        crate::fixture::wait_timeout(&mut agent, std::time::Duration::from_secs(20))
    })
    .await
    .unwrap();
    assert!(status.code().is_some(), "the agent exits on SIGTERM");
}

/// A token that cannot be a ztka bootstrap token is a usage error, reported at once (exit 2,
/// one line), before the agent tells systemd it is ready or starts retrying.
#[test]
fn agent_refuses_a_malformed_token_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let out = crate::fixture::ztka()
        .args(["agent", "--server", "https://127.0.0.1:1", "--token"])
        .arg("ztkab_not-a-real-token")
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--kubeconfig")
        .arg(dir.path().join("missing-kubeconfig"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("bootstrap token is malformed"), "{stderr}");
    assert!(
        !stderr.contains("not-a-real-token"),
        "the token is not echoed: {stderr}"
    );
}
