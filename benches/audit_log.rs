//! Audit log throughput and query latency: `cargo bench --bench audit_log`.
//!
//! 1. Durable appends from many concurrent callers (each waits for its commit; group commit
//!    batches them), for a fixed time.
//! 2. Fast appends until the log holds 1,000,000 events (the rate includes the final flush).
//! 3. Query latency over those 1,000,000 events: filtered pages of 50, first page and pages
//!    at random cursors; then again with the longest unindexed tail the writer leaves
//!    behind by default (`AuditOptions::index_every` events), which queries scan.
//! 4. `verify` of the whole chain.
//!
//! The database lives under the cargo target directory (a real disk, so fsync counts).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use ztka::audit::{AuditLog, AuditOptions};
use ztka::domain::audit::{
    Actor, AuditQuery, Durability, EventKind, KubeRequest, NewEvent, Outcome, Target,
};
use ztka::store::Store;

const TOTAL: u64 = 1_000_000;
const DURABLE_SECS: u64 = 5;
/// Concurrent durable callers; `DURABLE_CALLERS` in the environment overrides it.
const DURABLE_CALLERS: usize = 512;
const FAST_CALLERS: usize = 4;
const USERS: u64 = 200;
const CLUSTERS: u64 = 20;

fn event(i: u64) -> NewEvent {
    let status = if i.is_multiple_of(50) { 403 } else { 200 };
    NewEvent {
        kind: EventKind::Kube,
        action: "kube.request".into(),
        actor: Actor {
            user_name: Some(format!("user-{}", i % USERS)),
            groups: vec!["developers".into()],
            client_addr: Some("10.1.2.3:51234".into()),
            user_agent: Some("kubectl/v1.33.0 (linux/amd64)".into()),
            ..Actor::default()
        },
        target: Target {
            kind: "pods".into(),
            name: Some(format!("web-{}", i % 1000)),
            project: Some(format!("project-{}", i % 10)),
            cluster: Some(format!("cluster-{}", i % CLUSTERS)),
            namespace: Some(format!("ns-{}", i % 50)),
        },
        outcome: Outcome::from_status(status),
        status,
        request_id: format!("{i:032x}"),
        details: serde_json::Value::Null,
        kube: Some(KubeRequest {
            method: "GET".into(),
            verb: "get".into(),
            api_version: "v1".into(),
            resource: "pods".into(),
            name: format!("web-{}", i % 1000),
            path: format!("/api/v1/namespaces/ns-{}/pods/web-{}", i % 50, i % 1000),
            bytes: 2048,
            duration_ms: 3.5,
            ..KubeRequest::default()
        }),
    }
}

fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn query_latency(
    log: &AuditLog,
    name: &str,
    base: AuditQuery,
    head: u64,
) -> anyhow::Result<()> {
    let mut times = Vec::new();
    for i in 0..300u64 {
        let mut q = base.clone();
        q.limit = 50;
        // First pages and deep pages (random cursors) alternate.
        if i % 2 == 1 {
            q.cursor = Some(rand::random_range(1..=head));
        }
        let start = Instant::now();
        let page = log.query(q).await?;
        times.push(start.elapsed());
        anyhow::ensure!(
            i % 2 == 1 || page.events.len() == 50,
            "{name}: short first page"
        );
    }
    times.sort();
    println!(
        "query {name:<48} limit 50: median {:>8.2?}  p99 {:>8.2?}",
        percentile(&times, 0.5),
        percentile(&times, 0.99)
    );
    Ok(())
}

async fn queries(log: &AuditLog, head: u64, note: &str) -> anyhow::Result<()> {
    let q = AuditQuery::default;
    query_latency(
        log,
        &format!("user (1 in 200){note}"),
        AuditQuery {
            user: Some("user-42".into()),
            ..q()
        },
        head,
    )
    .await?;
    query_latency(
        log,
        &format!("cluster (1 in 20){note}"),
        AuditQuery {
            cluster: Some("cluster-7".into()),
            ..q()
        },
        head,
    )
    .await?;
    query_latency(
        log,
        &format!("user + cluster (1 in 200){note}"),
        AuditQuery {
            user: Some("user-42".into()),
            cluster: Some("cluster-2".into()),
            ..q()
        },
        head,
    )
    .await?;
    query_latency(
        log,
        &format!("outcome denied (1 in 50){note}"),
        AuditQuery {
            outcome: Some(Outcome::Denied),
            ..q()
        },
        head,
    )
    .await?;
    query_latency(log, &format!("no filter{note}"), q(), head).await?;

    Ok(())
}

async fn run() -> anyhow::Result<()> {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).context("temp dir")?;
    let store = Store::open(dir.path())?;
    let options = AuditOptions {
        retention_max_age: None,
        ..AuditOptions::default()
    };
    let log = AuditLog::open_with(store.clone(), options)?;
    let counter = Arc::new(AtomicU64::new(0));

    // 1. Durable, many callers.
    let callers = std::env::var("DURABLE_CALLERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DURABLE_CALLERS);
    let deadline = Instant::now() + Duration::from_secs(DURABLE_SECS);
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..callers {
        let log = log.clone();
        let counter = counter.clone();
        tasks.spawn(async move {
            while Instant::now() < deadline {
                let i = counter.fetch_add(1, Ordering::Relaxed);
                log.append(event(i), Durability::Durable).await?;
            }
            Ok::<_, anyhow::Error>(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    let durable = counter.load(Ordering::Relaxed);
    let secs = start.elapsed().as_secs_f64();
    println!(
        "durable appends, {callers} concurrent callers: {durable} in {secs:.2} s = {:.0}/s",
        durable as f64 / secs
    );
    if std::env::var_os("DURABLE_ONLY").is_some() {
        return Ok(());
    }

    // 2. Fast, up to TOTAL events.
    let start = Instant::now();
    for _ in 0..FAST_CALLERS {
        let log = log.clone();
        let counter = counter.clone();
        tasks.spawn(async move {
            loop {
                let i = counter.fetch_add(1, Ordering::Relaxed);
                if i >= TOTAL {
                    return Ok(());
                }
                log.append(event(i), Durability::Fast).await?;
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    log.flush().await?;
    let fast = TOTAL - durable;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "fast appends, {FAST_CALLERS} callers (incl. final flush): {fast} in {secs:.2} s = {:.0}/s",
        fast as f64 / secs
    );
    let head = log.head().await?.seq;
    anyhow::ensure!(head == TOTAL, "head {head}");
    let size = std::fs::metadata(store.path())?.len();
    println!(
        "database: {TOTAL} events, {:.0} MiB",
        size as f64 / (1024.0 * 1024.0)
    );

    // 3. Queries over TOTAL events, all indexed.
    queries(&log, head, "").await?;

    // 3b. The same with the longest unindexed tail the writer leaves by default (it indexes
    // every `index_every` events): queries scan the tail before the posting lists take over.
    log.close().await?;
    drop(log);
    let tail = AuditOptions::default().index_every as u64;
    let log = AuditLog::open_with(
        store.clone(),
        AuditOptions {
            retention_max_age: None,
            index_every: usize::MAX,
            index_idle: Duration::from_secs(3600),
            ..AuditOptions::default()
        },
    )?;
    for i in 0..tail {
        let durability = if i + 1 == tail {
            Durability::Durable
        } else {
            Durability::Fast
        };
        log.append(event(TOTAL + i), durability).await?;
    }
    queries(&log, head + tail, &format!(", {tail} unindexed")).await?;

    // 4. Verify.
    let start = Instant::now();
    let report = log.verify().await?;
    anyhow::ensure!(report.is_intact(), "{report}");
    println!("verify {} events: {:.2?}", TOTAL + tail, start.elapsed());
    log.close().await?;
    Ok(())
}
