//! The audit log from the outside: `ztka admin audit verify|export` on real database files,
//! tampering done with redb directly (as someone with the file would), and durability under
//! SIGKILL.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use redb::{ReadableTable, TableDefinition};
use ztka::audit::{AuditLog, AuditOptions};
use ztka::domain::audit::{
    Actor, AuditEvent, AuditQuery, Durability, NewEvent, Order, Target, VerifyReport, chain_hash,
};
use ztka::store::Store;

use crate::fixture::*;

const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("audit_events");

fn event(i: u64) -> NewEvent {
    let mut e = NewEvent::system(
        ["user.create", "grant.delete"][i as usize % 2],
        Target {
            kind: "user".into(),
            name: Some(format!("u{i}")),
            project: Some(["web", "data"][i as usize % 2].into()),
            cluster: Some(["prod", "staging", "dev"][i as usize % 3].into()),
            namespace: None,
        },
    )
    .with_outcome([200, 403][i as usize % 2]);
    e.actor = Actor {
        user_name: Some(["alice", "bob"][i as usize % 2].into()),
        ..Actor::default()
    };
    e.request_id = format!("req-{i}");
    e
}

/// Creates a data directory holding `n` audit events and closes it.
async fn populate(data: &Path, n: u64) {
    let store = Store::open(data).unwrap();
    let log = AuditLog::open_with(
        store,
        AuditOptions {
            retention_max_age: None,
            ..AuditOptions::default()
        },
    )
    .unwrap();
    for i in 1..=n {
        log.append(event(i), Durability::Fast).await.unwrap();
    }
    log.close().await.unwrap();
}

fn admin_audit(args: &[&str], data: &Path) -> Output {
    ztka()
        .args(["admin", "audit"])
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn tamper(data: &Path, f: impl FnOnce(&mut redb::Table<u64, &[u8]>)) {
    let db = redb::Database::open(data.join("ztka.redb")).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut table = txn.open_table(EVENTS).unwrap();
        f(&mut table);
    }
    txn.commit().unwrap();
}

fn read(table: &redb::Table<u64, &[u8]>, seq: u64) -> AuditEvent {
    serde_json::from_slice(table.get(seq).unwrap().unwrap().value()).unwrap()
}

fn put(table: &mut redb::Table<u64, &[u8]>, seq: u64, e: &AuditEvent) {
    table
        .insert(seq, serde_json::to_vec(e).unwrap().as_slice())
        .unwrap();
}

#[tokio::test]
async fn audit_verify_cli_detects_modified_removed_and_reordered_events() {
    type Tamper = fn(&mut redb::Table<u64, &[u8]>);
    let cases: [(&str, Tamper, u64, &str); 3] = [
        (
            "modified",
            |t| {
                let mut e = read(t, 12);
                e.event.actor.user_name = Some("mallory".into());
                put(t, 12, &e);
            },
            12,
            "modified",
        ),
        (
            "removed",
            |t| {
                t.remove(12).unwrap();
            },
            13,
            "missing",
        ),
        (
            "reordered",
            |t| {
                let (a, b) = (read(t, 12), read(t, 13));
                put(t, 12, &b);
                put(t, 13, &a);
            },
            12,
            "reordered",
        ),
    ];
    for (name, f, broken_at, reason) in cases {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        populate(&data, 30).await;

        let ok = admin_audit(&["verify"], &data);
        let stdout = text(&ok.stdout);
        assert_eq!(
            ok.status.code(),
            Some(0),
            "{name}: {stdout}{}",
            text(&ok.stderr)
        );
        assert!(
            stdout.contains("OK: 30 events") && stdout.contains("head seq 30"),
            "{stdout}"
        );

        tamper(&data, f);
        let bad = admin_audit(&["verify"], &data);
        let stderr = text(&bad.stderr);
        assert_eq!(bad.status.code(), Some(1), "{name}: {stderr}");
        assert!(
            stderr.contains(&format!("BROKEN at seq {broken_at}:")) && stderr.contains(reason),
            "{name}: {stderr}"
        );
    }
}

#[tokio::test]
async fn audit_export_cli_writes_json_lines_for_the_filters() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    populate(&data, 60).await;

    let file = dir.path().join("bob.jsonl");
    let out = ztka()
        .args([
            "admin",
            "audit",
            "export",
            "--user",
            "bob",
            "--cluster",
            "prod",
            "--output",
        ])
        .arg(&file)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(mode(&file), 0o600);
    let events: Vec<AuditEvent> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // bob: odd i; prod: i % 3 == 0 → i in {3, 9, …, 57}
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (3..=57).step_by(6).collect::<Vec<u64>>()
    );
    assert!(events.iter().all(|e| chain_hash(e).unwrap() == e.hash));

    let out = admin_audit(
        &["export", "--outcome", "denied", "--action", "grant.delete"],
        &data,
    );
    assert!(out.status.success());
    assert_eq!(text(&out.stdout).lines().count(), 30);

    let out = admin_audit(&["export", "--kind", "bogus"], &data);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("system or kube"));
}

#[tokio::test]
async fn audit_cli_refuses_a_database_in_use_or_missing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    populate(&data, 3).await;
    let held = Store::open(&data).unwrap();
    for args in [&["verify"][..], &["export"][..]] {
        let out = admin_audit(args, &data);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            text(&out.stderr).contains("in use"),
            "{}",
            text(&out.stderr)
        );
    }
    drop(held);
    let out = admin_audit(&["verify"], &dir.path().join("nothing-here"));
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("holds no ztka database"));
}

/// `ztka admin audit stress-append ARGS --data-dir DATA`, its output piped.
fn stress_append(args: &[&str], data: &Path) -> std::process::Child {
    ztka()
        .args(["admin", "audit", "stress-append"])
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Fast events alone are committed without a sync, but the writer syncs them within
/// `fast_sync_interval` (200 ms): killed a second later, the process has lost none.
#[test]
fn audit_fast_events_alone_reach_the_disk_before_a_later_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut child = stress_append(&["--fast-only", "500"], &data);
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "500", "the last fast event's seq");
    std::thread::sleep(Duration::from_secs(1));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let store = Store::open(&data).unwrap();
    match ztka::audit::verify_store(&store).unwrap() {
        VerifyReport::Intact { count, .. } => assert_eq!(count, 500),
        report => panic!("{report}"),
    }
}

#[test]
fn audit_survives_sigkill_at_random_moments() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut acked: Vec<u64> = Vec::new();
    let rounds = 24;
    for round in 0..rounds {
        let mut child = stress_append(&["--writers", "8"], &data);
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<u64>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                tx.send(line.trim().parse().unwrap()).unwrap();
            }
        });
        // Kill only once it is appending, at a random moment within its stream of commits.
        let first = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("first acknowledgement");
        std::thread::sleep(Duration::from_millis(rand::random_range(0..120)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        let mut this_round = vec![first];
        this_round.extend(rx.try_iter());
        let previous_max = acked.iter().copied().max().unwrap_or(0);
        assert!(
            this_round.iter().all(|s| *s > previous_max),
            "round {round}: sequence numbers continue after a restart"
        );
        acked.extend(this_round);

        let store = Store::open(&data).unwrap();
        let report = ztka::audit::verify_store(&store).unwrap();
        let VerifyReport::Intact { count, .. } = report else {
            panic!("round {round}: {report}");
        };
        assert!(count >= acked.len() as u64);
        store
            .read_blocking(|txn| {
                for seq in &acked {
                    assert!(
                        ztka::store::audit::get(txn, *seq)?.is_some(),
                        "round {round}: acknowledged event {seq} is missing"
                    );
                }
                Ok(())
            })
            .unwrap();
        // Events committed after the last indexing are indexed when the log opens; every
        // acknowledged event is then found through the index.
        let log = AuditLog::open_with(store.clone(), AuditOptions::default()).unwrap();
        drop(log);
        let unindexed = store
            .write_log_blocking(ztka::store::audit::index_tail)
            .unwrap();
        assert_eq!(
            unindexed, 0,
            "round {round}: the tail was not indexed at open"
        );
        let mut found = std::collections::BTreeSet::new();
        for cluster in ["cluster-0", "cluster-1", "cluster-2"] {
            // This round's events: those after the previous round's newest.
            let mut q = AuditQuery {
                cluster: Some(cluster.into()),
                limit: 1000,
                order: Order::OldestFirst,
                cursor: Some(previous_max),
                ..AuditQuery::default()
            };
            loop {
                let page = store
                    .read_blocking(|txn| ztka::store::audit::query(txn, &q))
                    .unwrap();
                found.extend(page.events.iter().map(|e| e.seq));
                match page.next_cursor {
                    Some(c) => q.cursor = Some(c),
                    None => break,
                }
            }
        }
        for seq in acked.iter().filter(|s| **s > previous_max) {
            assert!(
                found.contains(seq),
                "round {round}: event {seq} is not in the index"
            );
        }
    }
    assert!(acked.len() > rounds, "acknowledged {} events", acked.len());
}
