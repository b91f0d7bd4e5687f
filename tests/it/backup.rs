//! `ztka admin backup` / `restore`: a backup taken from a running server restores into a
//! fresh data directory with the same users, clusters, CA and audit chain; bad input exits 2.

use std::path::Path;
use std::process::Output;

use serde_json::json;

use crate::fixture::{
    ADMIN_PASSWORD, ApiClient, InProcess, ServerProcess, client_trusting, mode, ztka,
};

fn run(args: &[&str], paths: &[&Path]) -> Output {
    let mut cmd = ztka();
    cmd.env("ZTKA_LOG", "error").args(args);
    for p in paths {
        cmd.arg(p);
    }
    cmd.output().unwrap()
}

/// Runs and requires success; returns stdout.
fn run_ok(args: &[&str], paths: &[&Path]) -> String {
    let out = run(args, paths);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout(&out)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Exit code 2 and exactly one line on stderr that contains `needle`.
fn assert_usage_error(o: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "stderr: {err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one line expected: {err}"
    );
    assert!(err.starts_with("ztka: ") && err.contains(needle), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn backup_of_a_running_server_restores_users_clusters_ca_and_audit_chain() {
    let app = InProcess::start().await;
    let mut admin = app.admin().await;
    let (s, b) = admin
        .post(
            "/api/v1/users",
            json!({"name": "carol", "password": "carol-initial-pass"}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = admin
        .post("/api/v1/projects", json!({"name": "shop"}))
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = admin
        .post("/api/v1/projects/shop/clusters", json!({"name": "prod"}))
        .await;
    assert_eq!(s, 201, "{b}");
    let data_dir = app.server.state.config.data_dir.clone();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("backup");

    // Writers keep committing while the backup runs: the copy must still be one state.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (audit, stop) = (app.server.state.audit.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let event = ztka::domain::audit::NewEvent::system(
                        "test.load",
                        ztka::domain::audit::Target::of("load", &format!("{w}-{n}")),
                    );
                    audit
                        .append(event, ztka::domain::audit::Durability::Durable)
                        .await
                        .unwrap();
                    n += 1;
                }
                n
            })
        })
        .collect();
    let args = (data_dir.clone(), dest.clone());
    let printed = tokio::task::spawn_blocking(move || {
        run_ok(&["admin", "backup", "--data-dir"], &[&args.0, &args.1])
    })
    .await
    .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut appended = 0;
    for w in writers {
        appended += w.await.unwrap();
    }
    assert!(appended > 0, "the writers ran");
    assert!(printed.contains("from the running server"), "{}", printed);
    assert_eq!(mode(&dest), 0o700);
    assert_eq!(mode(&dest.join("ca.key")), 0o600);
    assert_eq!(mode(&dest.join("ztka.redb")), 0o600);
    let mut files: Vec<String> = std::fs::read_dir(&dest)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "ca.crt",
            "ca.key",
            "server.crt",
            "server.key",
            "ztka-backup.json",
            "ztka.redb"
        ]
    );
    let leftovers = std::fs::read_dir(&data_dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(".backup-")
        })
        .count();
    assert_eq!(leftovers, 0, "the server removes its snapshot file");

    // A change after the backup is not in it.
    let (s, b) = admin
        .post(
            "/api/v1/users",
            json!({"name": "dave", "password": "dave-initial-pass"}),
        )
        .await;
    assert_eq!(s, 201, "{b}");

    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dest.join("ztka-backup.json")).unwrap()).unwrap();
    assert_eq!(manifest["online"], true);
    assert_eq!(manifest["snapshot"]["users"], 2);
    let head_seq = manifest["snapshot"]["audit_head_seq"].as_u64().unwrap();
    let head_hash = manifest["snapshot"]["audit_head_hash"]
        .as_str()
        .unwrap()
        .to_owned();
    // The backup's chain head is the running server's event, which records the backup.
    let event = app
        .server
        .state
        .store
        .read(move |txn| ztka::store::audit::get(txn, head_seq))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(event.hash, head_hash);
    let mut original = Vec::new();
    let oldest_first = ztka::domain::audit::AuditQuery {
        order: ztka::domain::audit::Order::OldestFirst,
        ..Default::default()
    };
    ztka::audit::export_jsonl(&app.server.state.store, &oldest_first, &mut original).unwrap();
    let original = String::from_utf8(original).unwrap();

    let restored = dir.path().join("restored");
    let printed = run_ok(&["admin", "restore", "--data-dir"], &[&restored, &dest]);
    assert!(
        printed.contains(&format!("OK: {head_seq} events verified")),
        "{}",
        printed
    );
    assert_eq!(mode(&restored.join("ca.key")), 0o600);
    assert_eq!(
        std::fs::read(data_dir.join("ca.crt")).unwrap(),
        std::fs::read(restored.join("ca.crt")).unwrap()
    );

    let users = run_ok(&["admin", "user", "list", "--data-dir"], &[&restored]);
    assert!(
        users.contains("admin") && users.contains("carol"),
        "{users}"
    );
    assert!(!users.contains("dave"), "{users}");

    // The same chain, event for event, then the record of the restore.
    let exported = run_ok(&["admin", "audit", "export", "--data-dir"], &[&restored]);
    let restored_lines: Vec<&str> = exported.lines().collect();
    let original_lines: Vec<&str> = original.lines().collect();
    assert_eq!(restored_lines.len() as u64, head_seq + 1);
    assert_eq!(
        restored_lines[..head_seq as usize],
        original_lines[..head_seq as usize]
    );
    assert!(restored_lines[head_seq as usize].contains("\"backup.restore\""));
    assert!(
        restored_lines[..head_seq as usize]
            .iter()
            .any(|l| l.contains("\"backup.create\"")),
        "the backup records itself"
    );
    run_ok(&["admin", "audit", "verify", "--data-dir"], &[&restored]);

    // The restored server serves the same accounts with the same CA.
    drop(admin);
    let server = ServerProcess::start(&restored, &[]);
    let mut client = ApiClient {
        http: client_trusting(&[data_dir.join("ca.crt")], None),
        base: format!("https://localhost:{}", server.addr.port()),
        cookie: None,
        csrf: None,
        bearer: None,
        user_agent: "ztka-tests/1".into(),
    };
    let (s, b) = client
        .post(
            "/api/v1/auth/login",
            json!({"username": "admin", "password": ADMIN_PASSWORD}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = client.get("/api/v1/projects/shop/clusters/prod").await;
    assert_eq!(s, 200, "{b}");
    let (s, _) = client
        .post(
            "/api/v1/auth/login",
            json!({"username": "carol", "password": "carol-initial-pass"}),
        )
        .await;
    assert_eq!(s, 200);
    assert!(server.stop().success());
}

#[test]
fn offline_backup_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let backup = dir.path().join("backup");

    assert_usage_error(
        &run(&["admin", "backup", "--data-dir"], &[&data, &backup]),
        "holds no ztka database",
    );
    assert!(!backup.exists(), "a failed backup leaves nothing behind");

    let printed = run_ok(&["admin", "init", "--data-dir"], &[&data]);
    assert!(
        !printed.contains(
            std::fs::read_to_string(data.join("initial-admin-password"))
                .unwrap()
                .trim()
        ),
        "init never prints the password"
    );
    let printed = run_ok(&["admin", "backup", "--data-dir"], &[&data, &backup]);
    assert!(printed.contains("(offline)"), "{printed}");

    assert_usage_error(
        &run(&["admin", "backup", "--data-dir"], &[&data, &backup]),
        "is not empty",
    );
    assert_usage_error(
        &run(&["admin", "restore", "--data-dir"], &[&data, &backup]),
        "fresh data directory",
    );
    assert_usage_error(
        &run(
            &["admin", "restore", "--data-dir"],
            &[&dir.path().join("x"), &data],
        ),
        "not a complete ztka backup",
    );

    // A damaged backup is refused before anything is written.
    let mut key = std::fs::read(backup.join("ca.key")).unwrap();
    key[40] ^= 1;
    std::fs::write(backup.join("ca.key"), key).unwrap();
    let fresh = dir.path().join("fresh");
    assert_usage_error(
        &run(&["admin", "restore", "--data-dir"], &[&fresh, &backup]),
        "does not match the backup manifest",
    );
    assert!(!fresh.join("ztka.redb").exists());
}
