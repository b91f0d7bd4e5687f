use std::collections::BTreeSet;

use uuid::Uuid;

use super::*;
use crate::domain::audit::GENESIS_HASH;
use crate::domain::audit::{
    Actor, EventKind, KubeRequest, Order, Outcome, Target, VerifyReport, chain_hash,
};
use crate::store::audit::tamper;

fn no_retention() -> AuditOptions {
    AuditOptions {
        retention_max_age: None,
        retention_max_events: None,
        ..AuditOptions::default()
    }
}

fn open(dir: &std::path::Path, options: AuditOptions) -> (Store, AuditLog) {
    let store = Store::open(dir).unwrap();
    let log = AuditLog::open_with(store.clone(), options).unwrap();
    (store, log)
}

const USERS: [&str; 3] = ["alice", "bob", "carol"];
const CLUSTERS: [&str; 2] = ["prod", "staging"];
const PROJECTS: [&str; 3] = ["web", "data", "ops"];

fn alice_id() -> Uuid {
    Uuid::from_u128(0xa11ce)
}

/// A varied event: user, cluster, project, namespace, kind, action and outcome all cycle
/// with different periods so every filter combination has some matches and some misses.
fn varied(i: usize) -> NewEvent {
    let user = USERS[i % 3];
    let kind = if i.is_multiple_of(4) {
        EventKind::System
    } else {
        EventKind::Kube
    };
    let status = [200u16, 403, 500, 201, 404][i % 5];
    NewEvent {
        kind,
        action: if kind == EventKind::System {
            ["user.create", "auth.login"][(i / 4) % 2].into()
        } else {
            "kube.request".into()
        },
        actor: Actor {
            user_id: (user == "alice").then(alice_id),
            user_name: Some(user.into()),
            ..Actor::default()
        },
        target: Target {
            kind: "pods".into(),
            name: Some(format!("p{i}")),
            project: (i % 7 != 6).then(|| PROJECTS[i % 3].to_owned()),
            cluster: Some(CLUSTERS[i % 2].into()),
            namespace: Some(["default", "kube-system", "team-a", "team-b"][i % 4].into()),
        },
        outcome: Outcome::from_status(status),
        status,
        request_id: format!("req-{i}"),
        details: serde_json::json!({"i": i, "z": "last", "a": "first"}),
        kube: (kind == EventKind::Kube).then(|| KubeRequest {
            method: "GET".into(),
            verb: ["get", "list", "watch"][i % 3].into(),
            resource: ["pods", "secrets"][i % 2].into(),
            duration_ms: 1.25 * i as f64,
            ..KubeRequest::default()
        }),
    }
}

/// Every match of `q`, following cursors with small pages.
async fn all_pages(log: &AuditLog, mut q: AuditQuery, page: usize) -> Vec<u64> {
    q.limit = page;
    let mut seqs = Vec::new();
    loop {
        let p = log.query(q.clone()).await.unwrap();
        assert!(p.events.len() <= page);
        seqs.extend(p.events.iter().map(|e| e.seq));
        match p.next_cursor {
            Some(c) => {
                assert_eq!(p.events.len(), page, "a non-final page is full");
                q.cursor = Some(c);
            }
            None => return seqs,
        }
    }
}

#[tokio::test]
async fn audit_append_assigns_sequence_numbers_and_links_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, log) = open(dir.path(), no_retention());
    assert_eq!(log.head().await.unwrap().seq, 0);
    let mut receipts = Vec::new();
    for i in 0..3 {
        receipts.push(log.append(varied(i), Durability::Durable).await.unwrap());
    }
    assert_eq!(
        receipts.iter().map(|r| r.seq).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(log.head().await.unwrap(), receipts[2]);
    let events = log.recent(10).await.unwrap();
    assert_eq!(events[2].prev_hash, GENESIS_HASH);
    assert_eq!(events[1].prev_hash, events[2].hash);
    assert_eq!(events[0].prev_hash, events[1].hash);
    for e in &events {
        assert_eq!(chain_hash(e).unwrap(), e.hash);
    }
    match log.verify().await.unwrap() {
        VerifyReport::Intact {
            count,
            head_seq,
            head_hash,
            anchor,
        } => {
            assert_eq!((count, head_seq, anchor), (3, 3, None));
            assert_eq!(head_hash, receipts[2].hash);
        }
        other => panic!("{other}"),
    }
}

#[tokio::test]
async fn audit_query_every_filter_matches_a_full_scan() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, log) = open(dir.path(), no_retention());
    let n = 300;
    // Three time slices so `from`/`to` have something to cut.
    let mut cuts = Vec::new();
    for i in 0..n {
        if i == 100 || i == 200 {
            tokio::time::sleep(Duration::from_millis(5)).await;
            cuts.push(OffsetDateTime::now_utc());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        log.append(varied(i), Durability::Fast).await.unwrap();
    }
    log.flush().await.unwrap();
    let everything = log.recent(n).await.unwrap();
    assert_eq!(everything.len(), n);

    let base = AuditQuery::default;
    let queries = vec![
        (
            "user name",
            AuditQuery {
                user: Some("bob".into()),
                ..base()
            },
        ),
        (
            "user id",
            AuditQuery {
                user: Some(alice_id().to_string()),
                ..base()
            },
        ),
        (
            "cluster",
            AuditQuery {
                cluster: Some("staging".into()),
                ..base()
            },
        ),
        (
            "project",
            AuditQuery {
                project: Some("data".into()),
                ..base()
            },
        ),
        (
            "namespace",
            AuditQuery {
                namespace: Some("team-a".into()),
                ..base()
            },
        ),
        (
            "kind",
            AuditQuery {
                kind: Some(EventKind::System),
                ..base()
            },
        ),
        (
            "action",
            AuditQuery {
                action: Some("auth.login".into()),
                ..base()
            },
        ),
        (
            "outcome",
            AuditQuery {
                outcome: Some(Outcome::Denied),
                ..base()
            },
        ),
        (
            "verb",
            AuditQuery {
                verb: Some("watch".into()),
                ..base()
            },
        ),
        (
            "resource",
            AuditQuery {
                resource: Some("secrets".into()),
                ..base()
            },
        ),
        (
            "status",
            AuditQuery {
                status: Some(404),
                ..base()
            },
        ),
        (
            "from",
            AuditQuery {
                from: Some(cuts[0]),
                ..base()
            },
        ),
        (
            "to",
            AuditQuery {
                to: Some(cuts[0]),
                ..base()
            },
        ),
        (
            "from..to",
            AuditQuery {
                from: Some(cuts[0]),
                to: Some(cuts[1]),
                ..base()
            },
        ),
        (
            "visible projects",
            AuditQuery {
                projects_visible: Some(vec!["web".into(), "ops".into()]),
                ..base()
            },
        ),
        (
            "combined",
            AuditQuery {
                user: Some("alice".into()),
                cluster: Some("prod".into()),
                kind: Some(EventKind::Kube),
                outcome: Some(Outcome::Success),
                from: Some(cuts[0]),
                ..base()
            },
        ),
        (
            "project outside visible set",
            AuditQuery {
                project: Some("data".into()),
                projects_visible: Some(vec!["web".into()]),
                ..base()
            },
        ),
    ];
    for (name, q) in queries {
        let mut expected: Vec<u64> = everything
            .iter()
            .filter(|e| q.matches(e))
            .map(|e| e.seq)
            .collect();
        if name == "project outside visible set" {
            assert!(expected.is_empty());
        } else {
            assert!(
                !expected.is_empty() && expected.len() < n,
                "{name}: the filter must select some but not all ({})",
                expected.len()
            );
        }
        let newest = all_pages(&log, q.clone(), 7).await;
        assert_eq!(newest, expected, "{name}, newest first");
        expected.reverse();
        let oldest = all_pages(
            &log,
            AuditQuery {
                order: Order::OldestFirst,
                ..q
            },
            7,
        )
        .await;
        assert_eq!(oldest, expected, "{name}, oldest first");
    }

    // Spot checks against the generator, not only against `matches`.
    let bob = all_pages(
        &log,
        AuditQuery {
            user: Some("bob".into()),
            ..base()
        },
        50,
    )
    .await;
    assert_eq!(bob.len(), n / 3);
    let middle = all_pages(
        &log,
        AuditQuery {
            from: Some(cuts[0]),
            to: Some(cuts[1]),
            ..base()
        },
        50,
    )
    .await;
    assert_eq!(middle, (101..=200).rev().collect::<Vec<u64>>());
    let none = log
        .query(AuditQuery {
            projects_visible: Some(vec![]),
            ..base()
        })
        .await
        .unwrap();
    assert!(none.events.is_empty() && none.next_cursor.is_none());
}

#[tokio::test]
async fn audit_pagination_is_stable_while_new_events_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, log) = open(dir.path(), no_retention());
    for i in 0..100 {
        log.append(varied(i), Durability::Fast).await.unwrap();
    }
    log.flush().await.unwrap();

    let q = AuditQuery {
        cluster: Some("prod".into()),
        limit: 8,
        ..AuditQuery::default()
    };
    let mut seen = Vec::new();
    let mut cursor = None;
    let mut extra = 100;
    loop {
        let page = log
            .query(AuditQuery {
                cursor,
                ..q.clone()
            })
            .await
            .unwrap();
        seen.extend(page.events.iter().map(|e| e.seq));
        // New matching events land between every two pages.
        for _ in 0..6 {
            log.append(varied(extra), Durability::Durable)
                .await
                .unwrap();
            extra += 1;
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let expected: Vec<u64> = (1..=100u64).rev().filter(|s| (s - 1) % 2 == 0).collect();
    assert_eq!(
        seen, expected,
        "newest first: exactly the events present at the start"
    );

    // Oldest first walks into the new events without skipping or repeating any.
    let mut seen = Vec::new();
    let mut cursor = None;
    for _ in 0..10 {
        let page = log
            .query(AuditQuery {
                cursor,
                order: Order::OldestFirst,
                ..q.clone()
            })
            .await
            .unwrap();
        seen.extend(page.events.iter().map(|e| e.seq));
        log.append(varied(extra), Durability::Durable)
            .await
            .unwrap();
        extra += 1;
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let unique: BTreeSet<u64> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len());
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(
        &seen[..50],
        &(1..=100u64)
            .filter(|s| (s - 1) % 2 == 0)
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn audit_durable_append_is_committed_when_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let (store, log) = open(dir.path(), no_retention());
    let mut tasks = Vec::new();
    for i in 0..64 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            log.append(varied(i), Durability::Durable).await.unwrap()
        }));
    }
    for t in tasks {
        let r = t.await.unwrap();
        // Read straight from the store: no writer involved.
        let stored = store
            .read_blocking(|txn| crate::store::audit::get(txn, r.seq))
            .unwrap()
            .expect("acknowledged event is committed");
        assert_eq!(stored.hash, r.hash);
    }
    assert!(log.verify().await.unwrap().is_intact());
}

#[tokio::test]
async fn audit_fast_events_are_committed_when_the_log_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (_store, log) = open(dir.path(), no_retention());
        for i in 0..2000 {
            log.append(varied(i), Durability::Fast).await.unwrap();
        }
    }
    let (store, log) = open(dir.path(), no_retention());
    assert_eq!(
        store.read_blocking(crate::store::audit::count).unwrap(),
        2000
    );
    // The chain continues across restarts.
    let r = log.append(varied(1), Durability::Durable).await.unwrap();
    assert_eq!(r.seq, 2001);
    match log.verify().await.unwrap() {
        VerifyReport::Intact {
            count, head_seq, ..
        } => assert_eq!((count, head_seq), (2001, 2001)),
        other => panic!("{other}"),
    }
    log.close().await.unwrap();
    assert!(matches!(
        log.append(varied(2), Durability::Fast).await,
        Err(AuditError::Closed)
    ));
}

/// A batch of fast events waits for `fast_commit_wait`, but a durable append, a flush or a
/// shutdown ends that wait: with an hour-long window they all return, and take every fast
/// event queued before them along.
#[tokio::test]
async fn audit_fast_batch_wait_is_ended_by_durable_appends_flushes_and_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let options = AuditOptions {
        fast_commit_wait: Duration::from_secs(3600),
        ..no_retention()
    };
    let stored = |store: &Store| store.read_blocking(crate::store::audit::count).unwrap();
    fn within<F: std::future::Future>(f: F) -> tokio::time::Timeout<F> {
        tokio::time::timeout(Duration::from_secs(30), f)
    }
    {
        let (store, log) = open(dir.path(), options.clone());
        let fast = log.append(varied(0), Durability::Fast).await.unwrap();
        // The writer is now waiting on a batch nobody waits for.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            stored(&store),
            0,
            "a fast-only batch is held for its window"
        );
        let durable = within(log.append(varied(1), Durability::Durable))
            .await
            .expect("a durable append ends the wait")
            .unwrap();
        assert_eq!((fast.seq, durable.seq), (1, 2));
        assert_eq!(
            stored(&store),
            2,
            "the fast event went with the durable one"
        );
        // The writer saw a durable caller; let that pass out of its recent batches.
        for i in 0..20 {
            log.append(varied(i), Durability::Fast).await.unwrap();
            within(log.flush())
                .await
                .expect("a flush ends the wait")
                .unwrap();
        }
        assert_eq!(stored(&store), 22);
        log.append(varied(2), Durability::Fast).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        within(log.close())
            .await
            .expect("shutdown ends the wait")
            .unwrap();
        assert_eq!(stored(&store), 23, "shutdown commits the held batch");
    }
    // A short window commits fast events on its own.
    let options = AuditOptions {
        fast_commit_wait: Duration::from_millis(20),
        ..no_retention()
    };
    let (store, log) = open(dir.path(), options);
    log.append(varied(3), Durability::Fast).await.unwrap();
    let start = std::time::Instant::now();
    while stored(&store) < 24 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "a fast event was never committed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(log.verify().await.unwrap().is_intact());
}

/// Room is taken at once while the queue has it, `try_room` says when it is full (so the
/// caller can wait with `room`), and events appended into it continue the same chain.
#[tokio::test]
async fn audit_room_is_taken_at_once_or_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    let options = AuditOptions {
        fast_commit_wait: Duration::from_secs(3600),
        queue_capacity: 3,
        ..no_retention()
    };
    let (store, log) = open(dir.path(), options);
    for i in 0..3 {
        let room = log.try_room().expect("room in the queue");
        assert_eq!(log.append_in(room, varied(i)).unwrap().seq, i as u64 + 1);
    }
    assert!(log.try_room().is_none(), "the queue is full");
    let waiting = {
        let log = log.clone();
        tokio::spawn(async move { log.room().await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiting.is_finished(), "room while the queue is full");
    // A flush commits the held batch and frees its room.
    tokio::time::timeout(Duration::from_secs(30), log.flush())
        .await
        .unwrap()
        .unwrap();
    let room = tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(log.append_in(room, varied(3)).unwrap().seq, 4);
    log.append(varied(4), Durability::Durable).await.unwrap();
    assert_eq!(store.read_blocking(crate::store::audit::count).unwrap(), 5);
    assert!(log.verify().await.unwrap().is_intact());
    log.close().await.unwrap();
    let room = log.try_room().expect("room, though the log is closed");
    assert!(matches!(
        log.append_in(room, varied(5)),
        Err(AuditError::Closed)
    ));
}

/// While fast events keep coming the writer sleeps out each gathering window instead of
/// blocking on its queue, so appends never have to wake it; once they stop it blocks again
/// (and does not poll an idle queue).
#[tokio::test]
async fn audit_a_steady_flow_of_fast_events_does_not_wake_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let options = AuditOptions {
        fast_commit_wait: Duration::from_millis(50),
        ..no_retention()
    };
    let (store, log) = open(dir.path(), options);
    log.append(varied(0), Durability::Fast).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let before = log.blocking_receives();
    // About 30 gathering windows' worth of appends, 5 ms apart (a window finds nothing only
    // if the test stalls for 50 ms).
    for i in 0..300 {
        log.append(varied(i), Durability::Fast).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let during = log.blocking_receives() - before;
    assert!(
        during <= 3,
        "the writer blocked {during} times during the flow"
    );
    let stored = |store: &Store| store.read_blocking(crate::store::audit::count).unwrap();
    let start = std::time::Instant::now();
    while stored(&store) < 301 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "events not committed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Idle: back to one blocking receive, not a poll every window.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle = log.blocking_receives();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        log.blocking_receives() - idle <= 1,
        "the writer polls an idle queue"
    );
    assert!(log.verify().await.unwrap().is_intact());
}

#[tokio::test]
async fn audit_retention_by_count_keeps_the_chain_verifiable() {
    let dir = tempfile::tempdir().unwrap();
    let options = AuditOptions {
        retention_max_events: Some(50),
        retention_max_age: None,
        ..AuditOptions::default()
    };
    let (store, log) = open(dir.path(), options.clone());
    for i in 0..120 {
        log.append(varied(i), Durability::Fast).await.unwrap();
    }
    assert_eq!(log.sweep().await.unwrap(), 70);
    match log.verify().await.unwrap() {
        VerifyReport::Intact {
            count,
            head_seq,
            anchor,
            ..
        } => {
            assert_eq!((count, head_seq), (50, 120));
            assert_eq!(anchor.unwrap().seq, 70);
        }
        other => panic!("{other}"),
    }
    // Index entries went with the events.
    let bob = all_pages(
        &log,
        AuditQuery {
            user: Some("bob".into()),
            ..AuditQuery::default()
        },
        100,
    )
    .await;
    assert!(bob.iter().all(|s| *s > 70) && !bob.is_empty());
    let old = log
        .query(AuditQuery {
            to: Some(OffsetDateTime::now_utc()),
            order: Order::OldestFirst,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(old.events[0].seq, 71);

    // After a restart the chain continues from the remaining events and still verifies.
    drop(log);
    drop(store);
    let (_store, log) = open(dir.path(), options);
    log.append(varied(7), Durability::Durable).await.unwrap();
    assert_eq!(log.sweep().await.unwrap(), 1);
    assert!(log.verify().await.unwrap().is_intact());
}

#[tokio::test]
async fn audit_retention_by_age_removes_only_old_events_and_can_empty_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let options = AuditOptions {
        retention_max_age: Some(Duration::from_millis(300)),
        retention_max_events: None,
        ..AuditOptions::default()
    };
    let (_store, log) = open(dir.path(), options);
    for i in 0..10 {
        log.append(varied(i), Durability::Fast).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    for i in 10..15 {
        log.append(varied(i), Durability::Fast).await.unwrap();
    }
    assert_eq!(log.sweep().await.unwrap(), 10);
    assert!(log.verify().await.unwrap().is_intact());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(log.sweep().await.unwrap(), 5);
    match log.verify().await.unwrap() {
        VerifyReport::Intact {
            count,
            head_seq,
            anchor,
            ..
        } => {
            assert_eq!((count, head_seq), (0, 15));
            assert_eq!(anchor.unwrap().seq, 15);
        }
        other => panic!("{other}"),
    }
    let r = log.append(varied(1), Durability::Durable).await.unwrap();
    assert_eq!(r.seq, 16);
    assert!(log.verify().await.unwrap().is_intact());
}

async fn tampered(
    f: impl FnOnce(&crate::store::WriteTransaction),
) -> (VerifyReport, Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (store, log) = open(dir.path(), no_retention());
    for i in 0..20 {
        log.append(varied(i), Durability::Fast).await.unwrap();
    }
    log.close().await.unwrap();
    store
        .write_blocking(|txn| {
            f(txn);
            Ok(())
        })
        .unwrap();
    let report = verify_store(&store).unwrap();
    (report, store, dir)
}

#[tokio::test]
async fn audit_verify_reports_the_first_broken_link() {
    let (r, _, _) = tampered(|txn| {
        let mut e = tamper::read(txn, 7);
        e.event.target.namespace = Some("innocent".into());
        tamper::write(txn, 7, &e);
    })
    .await;
    assert!(
        matches!(&r, VerifyReport::Broken { seq: 7, reason } if reason.contains("modified")),
        "{r}"
    );

    // Rehashing the modified event moves the break to its successor.
    let (r, _, _) = tampered(|txn| {
        let mut e = tamper::read(txn, 7);
        e.event.status = 200;
        e.hash = chain_hash(&e).unwrap();
        tamper::write(txn, 7, &e);
    })
    .await;
    assert!(matches!(&r, VerifyReport::Broken { seq: 8, .. }), "{r}");

    let (r, _, _) = tampered(|txn| {
        tamper::remove(txn, 9);
    })
    .await;
    assert!(
        matches!(&r, VerifyReport::Broken { seq: 10, reason } if reason.contains("missing")),
        "{r}"
    );

    let (r, _, _) = tampered(|txn| {
        let (a, b) = (tamper::read(txn, 4), tamper::read(txn, 5));
        tamper::write(txn, 4, &b);
        tamper::write(txn, 5, &a);
    })
    .await;
    assert!(
        matches!(&r, VerifyReport::Broken { seq: 4, reason } if reason.contains("reordered")),
        "{r}"
    );

    let (r, _, _) = tampered(|txn| {
        tamper::remove(txn, 20);
    })
    .await;
    assert!(
        matches!(&r, VerifyReport::Broken { seq: 20, reason } if reason.contains("end")),
        "{r}"
    );

    let (r, _, _) = tampered(|txn| {
        tamper::remove(txn, 1);
    })
    .await;
    assert!(matches!(&r, VerifyReport::Broken { seq: 2, .. }), "{r}");
}

#[tokio::test]
async fn audit_retention_refuses_to_anchor_on_a_tampered_event() {
    let (_, store, _dir) = tampered(|txn| {
        let mut e = tamper::read(txn, 3);
        e.event.action = "nothing.happened".into();
        tamper::write(txn, 3, &e);
    })
    .await;
    let err = store
        .write_blocking(|txn| crate::store::audit::sweep(txn, None, Some(5), 100))
        .unwrap_err();
    assert!(err.to_string().contains("does not verify"), "{err}");
    assert_eq!(store.read_blocking(crate::store::audit::count).unwrap(), 20);
}

#[tokio::test]
async fn audit_export_writes_json_lines_for_the_filter() {
    let dir = tempfile::tempdir().unwrap();
    let (store, log) = open(dir.path(), no_retention());
    for i in 0..2500 {
        log.append(varied(i), Durability::Fast).await.unwrap();
    }
    log.flush().await.unwrap();
    let q = AuditQuery {
        cluster: Some("prod".into()),
        order: Order::OldestFirst,
        ..AuditQuery::default()
    };
    let mut out = Vec::new();
    assert_eq!(export_jsonl(&store, &q, &mut out).unwrap(), 1250);
    let lines: Vec<AuditEvent> = out
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1250);
    assert!(
        lines
            .iter()
            .all(|e| e.event.target.cluster.as_deref() == Some("prod"))
    );
    assert!(lines.windows(2).all(|w| w[0].seq < w[1].seq));
    // Exported events still carry what verifies them.
    assert!(lines.iter().all(|e| chain_hash(e).unwrap() == e.hash));

    let mut rx = log.export_stream(q);
    let mut streamed = Vec::new();
    let mut chunks = 0;
    while let Some(chunk) = rx.recv().await {
        streamed.extend_from_slice(&chunk.unwrap());
        chunks += 1;
    }
    assert_eq!(streamed, out);
    assert!(chunks >= 2, "streamed a page at a time");

    use futures_util::StreamExt;
    let q = AuditQuery {
        user: Some("carol".into()),
        ..AuditQuery::default()
    };
    let body: Vec<Bytes> = log
        .export_byte_stream(q)
        .map(|c| c.unwrap())
        .collect()
        .await;
    let lines = body
        .iter()
        .map(|b| b.split(|c| *c == b'\n').filter(|l| !l.is_empty()).count())
        .sum::<usize>();
    assert_eq!(lines, 2500 / 3);
}

#[tokio::test]
async fn audit_retention_runs_periodically_in_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let options = AuditOptions {
        retention_max_events: Some(10),
        retention_max_age: None,
        sweep_interval: Duration::from_millis(50),
        ..AuditOptions::default()
    };
    let (store, log) = open(dir.path(), options);
    for i in 0..30 {
        log.append(varied(i), Durability::Fast).await.unwrap();
    }
    log.flush().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while store.read_blocking(crate::store::audit::count).unwrap() > 10 {
        assert!(Instant::now() < deadline, "the periodic sweep did not run");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(log.verify().await.unwrap().is_intact());
}

#[test]
fn audit_query_from_a_request_cannot_widen_project_visibility() {
    let q: AuditQuery =
        serde_json::from_str(r#"{"user":"bob","projects_visible":["secret-project"]}"#).unwrap();
    assert_eq!(q.user.as_deref(), Some("bob"));
    assert_eq!(q.projects_visible, None);
}

/// Queries that the index answers, compared with a scan of `events` in both orders, paged.
async fn assert_index_matches_scan(log: &AuditLog, events: &[AuditEvent], page: usize) {
    let base = AuditQuery::default;
    let queries = [
        AuditQuery {
            user: Some("bob".into()),
            ..base()
        },
        AuditQuery {
            user: Some(alice_id().to_string()),
            cluster: Some("staging".into()),
            ..base()
        },
        AuditQuery {
            outcome: Some(Outcome::Denied),
            namespace: Some("team-a".into()),
            ..base()
        },
        AuditQuery {
            kind: Some(EventKind::System),
            action: Some("auth.login".into()),
            ..base()
        },
        AuditQuery {
            projects_visible: Some(vec!["web".into(), "ops".into()]),
            ..base()
        },
    ];
    for q in queries {
        for order in [Order::NewestFirst, Order::OldestFirst] {
            let q = AuditQuery { order, ..q.clone() };
            let mut want: Vec<u64> = events
                .iter()
                .filter(|e| q.matches(e))
                .map(|e| e.seq)
                .collect();
            want.sort_unstable();
            if order == Order::NewestFirst {
                want.reverse();
            }
            assert!(!want.is_empty(), "{q:?}");
            assert_eq!(all_pages(log, q.clone(), page).await, want, "{q:?}");
        }
    }
}

#[tokio::test]
async fn audit_index_spans_many_blocks_and_retention_trims_it() {
    let dir = tempfile::tempdir().unwrap();
    let options = AuditOptions {
        retention_max_events: Some(1000),
        retention_max_age: None,
        // Small batches: a key's block is extended by many transactions.
        max_batch: 97,
        ..AuditOptions::default()
    };
    let (store, log) = open(dir.path(), options);
    let n = 3100;
    for i in 0..n {
        log.append(varied(i), Durability::Fast).await.unwrap();
    }
    log.flush().await.unwrap();
    let everything = log.recent(n).await.unwrap();
    assert_index_matches_scan(&log, &everything, 211).await;

    // 2100 removed: the cut falls inside an index block.
    assert_eq!(log.sweep().await.unwrap(), 2100);
    assert!(log.verify().await.unwrap().is_intact());
    let kept = log.recent(n).await.unwrap();
    assert_eq!(kept.len(), 1000);
    assert_index_matches_scan(&log, &kept, 64).await;
    let stale = store
        .read_blocking(|txn| Ok(tamper::index_entries(txn)))
        .unwrap();
    assert!(!stale.is_empty());
    assert!(
        stale.iter().all(|(_, seq)| *seq > 2100),
        "index entries of removed events are left: {:?}",
        stale.iter().find(|(_, seq)| *seq <= 2100)
    );
}

#[tokio::test]
async fn audit_database_with_the_first_index_format_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let (store, log) = open(dir.path(), no_retention());
    for i in 0..1500 {
        log.append(varied(i), Durability::Fast).await.unwrap();
    }
    log.close().await.unwrap();
    drop(log);
    // Put the database back to schema version 3: the old per-event index, no posting lists.
    store
        .write_blocking(|txn| {
            tamper::downgrade_to_row_index(txn);
            Ok(())
        })
        .unwrap();
    drop(store);

    let (store, log) = open(dir.path(), no_retention());
    assert_eq!(tamper::schema_version(&store), crate::store::SCHEMA_VERSION);
    assert!(log.verify().await.unwrap().is_intact());
    let everything = log.recent(1500).await.unwrap();
    assert_index_matches_scan(&log, &everything, 100).await;
    let r = log.append(varied(1500), Durability::Durable).await.unwrap();
    assert_eq!(r.seq, 1501);
    assert!(log.verify().await.unwrap().is_intact());
}

#[tokio::test]
async fn audit_queries_cover_the_unindexed_tail_and_open_indexes_it() {
    let dir = tempfile::tempdir().unwrap();
    let options = AuditOptions {
        // Only a flush indexes: the tail below stays out of the posting lists.
        index_every: usize::MAX,
        index_idle: Duration::from_secs(3600),
        max_batch: 97,
        ..no_retention()
    };
    let (store, log) = open(dir.path(), options.clone());
    for i in 0..1200 {
        log.append(varied(i), Durability::Fast).await.unwrap();
    }
    log.flush().await.unwrap();
    for i in 1200..2500 {
        log.append(varied(i), Durability::Fast).await.unwrap();
    }
    // Commits everything queued before it, without indexing.
    log.append(varied(2500), Durability::Durable).await.unwrap();
    let newest_indexed = |store: &Store| {
        store
            .read_blocking(|txn| Ok(tamper::index_entries(txn)))
            .unwrap()
            .into_iter()
            .map(|(_, seq)| seq)
            .max()
    };
    assert_eq!(newest_indexed(&store), Some(1200));
    let everything = log.recent(3000).await.unwrap();
    assert_eq!(everything.len(), 2501);
    // Small pages cross from the tail into the indexed part and back.
    assert_index_matches_scan(&log, &everything, 37).await;

    // The file as a crash would leave it: the tail committed but never indexed.
    let crashed = tempfile::tempdir().unwrap();
    std::fs::copy(
        dir.path().join(crate::store::DATABASE_FILE),
        crashed.path().join(crate::store::DATABASE_FILE),
    )
    .unwrap();
    let (copy, reopened) = open(crashed.path(), options);
    assert_eq!(newest_indexed(&copy), Some(2501));
    assert_index_matches_scan(&reopened, &everything, 200).await;
    assert!(reopened.verify().await.unwrap().is_intact());

    // A clean shutdown indexes the tail too.
    log.append(varied(2501), Durability::Durable).await.unwrap();
    log.close().await.unwrap();
    assert_eq!(newest_indexed(&store), Some(2502));
}
