//! Authorization decisions per second with 10,000 users, 1,000 groups and 10,000 grants.
//! Run: `cargo bench --bench authz`.

use std::time::Instant;

use time::OffsetDateTime;
use uuid::Uuid;
use ztka::authz::{Act, Authorizer, Domain, Obj};
use ztka::domain::org::{Grant, Group, Project, Role, Subject};
use ztka::domain::user::User;
use ztka::store::{self, Store};

const USERS: usize = 10_000;
const GROUPS: usize = 1_000;
const PROJECTS: usize = 200;
const GRANTS: usize = 10_000;
const DECISIONS: usize = 200_000;

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run())
}

/// A small deterministic generator so runs are comparable.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % n
    }
}

async fn run() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path())?;
    let now = OffsetDateTime::now_utc();
    let mut rng = Lcg(42);
    let users: Vec<User> = (0..USERS)
        .map(|i| User::new_local(&format!("user-{i}"), String::new(), now))
        .collect();
    let mut groups: Vec<Group> = (0..GROUPS)
        .map(|i| Group {
            id: Uuid::now_v7(),
            name: format!("group-{i}"),
            description: String::new(),
            members: Default::default(),
            created_at: now,
        })
        .collect();
    // Each user is in two groups.
    for u in &users {
        for _ in 0..2 {
            let g = rng.next(GROUPS);
            groups[g].members.insert(u.id);
        }
    }
    let project_roles = [
        Role::ProjectAdmin,
        Role::ProjectReadOnly,
        Role::ClusterAdmin,
        Role::NamespaceAdmin,
        Role::NamespaceReadOnly,
    ];
    let grants: Vec<Grant> = (0..GRANTS)
        .map(|i| {
            let role = project_roles[rng.next(project_roles.len())];
            let subject = if i % 2 == 0 {
                Subject::User(users[rng.next(USERS)].id)
            } else {
                Subject::Group(groups[rng.next(GROUPS)].id)
            };
            Grant {
                id: Uuid::now_v7(),
                subject,
                role,
                project: Some(format!("project-{}", rng.next(PROJECTS))),
                namespaces: if role.scope() == ztka::domain::org::ScopeKind::Namespaces {
                    vec!["team-a".into()]
                } else {
                    Vec::new()
                },
                expires_at: None,
                created_at: now,
                created_by: None,
            }
        })
        .collect();
    let setup = Instant::now();
    {
        let (users, groups, grants) = (users.clone(), groups.clone(), grants.clone());
        store
            .write(move |txn| {
                for u in &users {
                    store::users::insert(txn, u)?;
                }
                for g in &groups {
                    store::named::insert(txn, g)?;
                }
                for i in 0..PROJECTS {
                    store::named::insert(
                        txn,
                        &Project {
                            id: Uuid::now_v7(),
                            name: format!("project-{i}"),
                            description: String::new(),
                            created_at: now,
                        },
                    )?;
                }
                for g in &grants {
                    store::grants::insert_grant(txn, g)?;
                    store::casbin::add(txn, "g", &Authorizer::grouping_rule(g))?;
                }
                Ok(())
            })
            .await?;
    }
    let load = Instant::now();
    let authz = Authorizer::load(&store)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let load_ms = load.elapsed().as_secs_f64() * 1e3;
    println!(
        "data: {USERS} users, {GROUPS} groups, {GRANTS} grants over {PROJECTS} projects (written in {:.0} ms)",
        (load - setup).as_secs_f64() * 1e3
    );
    println!("policy load: {load_ms:.0} ms");

    let objs = [Obj::Projects, Obj::Clusters, Obj::Grants, Obj::Audit];
    let acts = [Act::Read, Act::Update, Act::Create];
    let mut allowed = 0usize;
    let mut latencies = Vec::with_capacity(DECISIONS);
    let start = Instant::now();
    for _ in 0..DECISIONS {
        let user = users[rng.next(USERS)].id;
        let domain = Domain::Project(format!("project-{}", rng.next(PROJECTS)));
        let t = Instant::now();
        if authz
            .check(
                user,
                domain,
                objs[rng.next(objs.len())],
                acts[rng.next(acts.len())],
            )
            .await
            .is_some()
        {
            allowed += 1;
        }
        latencies.push(t.elapsed());
    }
    let secs = start.elapsed().as_secs_f64();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "decisions: {DECISIONS} in {secs:.2} s = {:.0}/s on one task ({allowed} allowed); p50 {:?}, p99 {:?}",
        DECISIONS as f64 / secs,
        pct(0.50),
        pct(0.99)
    );
    Ok(())
}
