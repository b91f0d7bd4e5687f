//! `ztka admin …`: offline operations on a data directory. They open the database
//! exclusively, so they refuse to run while a server holds it.

use std::path::Path;

use crate::audit::{AuditError, AuditLog, AuditOptions};
use crate::authn::password;
use crate::config::{Secret, read_secret_file};
use crate::domain::audit::{
    Actor, AuditQuery, Durability, EventKind, KubeRequest, NewEvent, Order, Target, VerifyReport,
};
use crate::domain::user::{UserKind, check_password_policy};
use crate::store::{self, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no user named {0:?}")]
    NoSuchUser(String),
    #[error("user {0:?} is not a local user and has no password")]
    NotLocal(String),
    #[error("new password {0}")]
    Policy(String),
    #[error("{0}")]
    Other(String),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error("cannot write {path}: {source}")]
    Output {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

impl AdminError {
    /// Problems the operator must fix (exit code 2), versus failures while working (1).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            AdminError::Store(
                StoreError::Locked(_)
                    | StoreError::NotWritable { .. }
                    | StoreError::TooNew { .. }
                    | StoreError::UpgradeRequired { .. }
            ) | AdminError::NoSuchUser(_)
                | AdminError::NotLocal(_)
                | AdminError::Policy(_)
                | AdminError::Other(_)
                | AdminError::Output { .. }
        )
    }
}

/// Opens the database of a data directory that must already hold one.
fn open_existing(data_dir: &Path) -> Result<Store, AdminError> {
    if !data_dir.join(store::DATABASE_FILE).exists() {
        return Err(AdminError::Other(format!(
            "{} holds no ztka database",
            data_dir.display()
        )));
    }
    Ok(Store::open(data_dir)?)
}

/// `ztka admin audit verify`.
pub fn audit_verify(data_dir: &Path) -> Result<VerifyReport, AdminError> {
    let store = open_existing(data_dir)?;
    Ok(crate::audit::verify_store(&store)?)
}

/// `ztka admin audit export`: JSON Lines, oldest first, to `output` (mode 0600) or stdout.
pub fn audit_export(
    data_dir: &Path,
    query: &AuditQuery,
    output: Option<&Path>,
) -> Result<u64, AdminError> {
    use std::io::BufWriter;
    let store = open_existing(data_dir)?;
    let mut query = query.clone();
    query.order = Order::OldestFirst;
    match output {
        Some(path) => {
            use std::os::unix::fs::OpenOptionsExt;
            let out_err = |source| AdminError::Output {
                path: path.to_owned(),
                source,
            };
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(path)
                .map_err(out_err)?;
            let mut out = BufWriter::new(file);
            let n = crate::audit::export_jsonl(&store, &query, &mut out)?;
            out.into_inner()
                .map_err(|e| out_err(e.into_error()))?
                .sync_all()
                .map_err(out_err)?;
            Ok(n)
        }
        None => {
            let stdout = std::io::stdout();
            let mut out = BufWriter::new(stdout.lock());
            Ok(crate::audit::export_jsonl(&store, &query, &mut out)?)
        }
    }
}

/// The hidden `ztka admin audit stress-append`: `writers` tasks append durably and print
/// each acknowledged seq on its own line, while one more appends `Fast` events; runs until
/// killed or `count` acknowledgements. Crash tests kill it at random moments.
pub async fn audit_stress_append(
    data_dir: &Path,
    writers: usize,
    count: Option<u64>,
) -> Result<(), AdminError> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    let store = Store::open(data_dir)?;
    let options = AuditOptions {
        retention_max_age: None,
        retention_max_events: None,
        ..AuditOptions::default()
    };
    let log = AuditLog::open_with(store, options)?;
    let acked = Arc::new(AtomicU64::new(0));
    let limit = count.unwrap_or(u64::MAX);
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..writers.max(1) + 1 {
        let log = log.clone();
        let acked = acked.clone();
        let durable = w < writers.max(1);
        tasks.spawn(async move {
            let mut i = 0u64;
            while acked.load(Ordering::Relaxed) < limit {
                i += 1;
                let event = stress_event(w, i);
                if durable {
                    let receipt = log.append(event, Durability::Durable).await?;
                    acked.fetch_add(1, Ordering::Relaxed);
                    println!("{}", receipt.seq);
                } else {
                    log.append(event, Durability::Fast).await?;
                    tokio::task::yield_now().await;
                }
            }
            Ok::<_, AuditError>(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.map_err(|e| AdminError::Other(e.to_string()))??;
    }
    log.close().await?;
    Ok(())
}

/// `stress-append --fast-only N`: appends `n` `Fast` events, prints the last seq, then holds
/// the log open until killed. Nobody waits for those events, so they reach the disk by the
/// writer's own sync within `fast_sync_interval`.
pub async fn audit_stress_fast(data_dir: &Path, n: u64) -> Result<(), AdminError> {
    let store = Store::open(data_dir)?;
    let log = AuditLog::open_with(store, AuditOptions::default())?;
    let mut last = 0;
    for i in 0..n {
        last = log.append(stress_event(0, i), Durability::Fast).await?.seq;
    }
    println!("{last}");
    std::future::pending::<()>().await;
    Ok(())
}

fn stress_event(writer: usize, i: u64) -> NewEvent {
    NewEvent {
        kind: EventKind::Kube,
        action: "kube.request".into(),
        actor: Actor {
            user_name: Some(format!("stress-{writer}")),
            ..Actor::default()
        },
        target: Target {
            kind: "pods".into(),
            name: Some(format!("pod-{i}")),
            project: Some("stress".into()),
            cluster: Some(format!("cluster-{}", i % 3)),
            namespace: Some("default".into()),
        },
        outcome: crate::domain::audit::Outcome::Success,
        status: 200,
        request_id: format!("{writer}-{i}"),
        details: serde_json::Value::Null,
        kube: Some(KubeRequest {
            method: "GET".into(),
            verb: "get".into(),
            resource: "pods".into(),
            ..KubeRequest::default()
        }),
    }
}

/// Sets a new password (generated unless given) and requires a change at next sign-in.
/// Sessions and certificates issued before now stop working. Returns the generated password.
pub fn reset_password(
    data_dir: &Path,
    name: &str,
    password_file: Option<&Path>,
) -> Result<Option<Secret>, AdminError> {
    let (secret, generated) = match password_file {
        Some(p) => (
            read_secret_file("password_file", p).map_err(|e| AdminError::Other(e.to_string()))?,
            false,
        ),
        None => (password::generate(), true),
    };
    check_password_policy(secret.expose()).map_err(|e| AdminError::Policy(e.to_string()))?;
    if !data_dir.join(store::DATABASE_FILE).exists() {
        return Err(AdminError::Other(format!(
            "{} holds no ztka database",
            data_dir.display()
        )));
    }
    let store = Store::open(data_dir)?;
    let hash = password::hash(secret.expose()).map_err(|e| AdminError::Other(e.to_string()))?;
    let name_owned = name.to_owned();
    store
        .write_blocking(move |txn| {
            let Some(mut user) = store::users::get_by_name_for_update(txn, &name_owned)? else {
                return Err(StoreError::NotFound);
            };
            if user.kind != UserKind::Local {
                return Err(StoreError::Conflict(format!("non-local user {name_owned}")));
            }
            let now = time::OffsetDateTime::now_utc();
            user.password_hash = Some(hash);
            user.must_change_password = true;
            user.credentials_revoked_at = Some(now);
            user.updated_at = now;
            store::users::update(txn, &user)
        })
        .map_err(|e| match e {
            StoreError::NotFound => AdminError::NoSuchUser(name.to_owned()),
            StoreError::Conflict(_) => AdminError::NotLocal(name.to_owned()),
            other => AdminError::Store(other),
        })?;
    Ok(generated.then_some(secret))
}

/// Records an offline administrative action in the audit log.
pub(crate) fn audit_offline(
    store: &Store,
    action: &str,
    target: crate::domain::audit::Target,
) -> Result<(), AdminError> {
    let log = crate::audit::AuditLog::open(store.clone())
        .map_err(|e| AdminError::Other(e.to_string()))?;
    let mut event = crate::domain::audit::NewEvent::system(action, target);
    event.actor.user_name = Some("ztka-admin-cli".into());
    event.details = serde_json::json!({"via": "ztka admin"});
    let append = log.append(event, crate::domain::audit::Durability::Durable);
    let result = match tokio::runtime::Handle::try_current() {
        Ok(handle) => tokio::task::block_in_place(|| handle.block_on(append)),
        Err(_) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| AdminError::Other(e.to_string()))?
            .block_on(append),
    };
    result
        .map(|_| ())
        .map_err(|e| AdminError::Other(e.to_string()))
}

/// Creates a user; returns the generated password of a local user, if one was generated.
pub fn create_user(
    data_dir: &Path,
    name: &str,
    service: bool,
    password_file: Option<&Path>,
    display_name: &str,
) -> Result<Option<Secret>, AdminError> {
    crate::domain::names::validate_name(name)
        .map_err(|e| AdminError::Other(format!("user name {e}")))?;
    let (secret, generated) = match (service, password_file) {
        (true, _) => (None, false),
        (false, Some(p)) => (
            Some(
                read_secret_file("password_file", p)
                    .map_err(|e| AdminError::Other(e.to_string()))?,
            ),
            false,
        ),
        (false, None) => (Some(password::generate()), true),
    };
    let hash = match &secret {
        Some(s) => {
            check_password_policy(s.expose()).map_err(|e| AdminError::Policy(e.to_string()))?;
            Some(password::hash(s.expose()).map_err(|e| AdminError::Other(e.to_string()))?)
        }
        None => None,
    };
    let store = open_existing(data_dir)?;
    let now = time::OffsetDateTime::now_utc();
    let mut user = crate::domain::user::User::new_local(name, String::new(), now);
    user.password_hash = hash;
    user.kind = if service {
        UserKind::Service
    } else {
        UserKind::Local
    };
    user.must_change_password = !service;
    user.display_name = display_name.to_owned();
    store
        .write_blocking(|txn| store::users::insert(txn, &user))
        .map_err(|e| match e {
            StoreError::Conflict(_) => {
                AdminError::Other(format!("a user named {name:?} already exists"))
            }
            other => AdminError::Store(other),
        })?;
    audit_offline(
        &store,
        "user.create",
        crate::domain::audit::Target::user(name),
    )?;
    Ok(if generated { secret } else { None })
}

pub fn list_users(data_dir: &Path) -> Result<Vec<crate::domain::user::User>, AdminError> {
    let store = open_existing(data_dir)?;
    Ok(store.read_blocking(store::named::read::every::<crate::domain::user::User>)?)
}

pub fn set_disabled(data_dir: &Path, name: &str, disabled: bool) -> Result<(), AdminError> {
    let store = open_existing(data_dir)?;
    let owned = name.to_owned();
    store
        .write_blocking(move |txn| {
            let mut user =
                store::users::get_by_name_for_update(txn, &owned)?.ok_or(StoreError::NotFound)?;
            user.disabled = disabled;
            user.updated_at = time::OffsetDateTime::now_utc();
            store::users::update(txn, &user)
        })
        .map_err(|e| match e {
            StoreError::NotFound => AdminError::NoSuchUser(name.to_owned()),
            other => AdminError::Store(other),
        })?;
    let action = if disabled {
        "user.disable"
    } else {
        "user.enable"
    };
    audit_offline(&store, action, crate::domain::audit::Target::user(name))
}

pub fn grant(
    data_dir: &Path,
    args: &crate::cli::GrantArgs,
) -> Result<crate::domain::org::Grant, AdminError> {
    use crate::domain::org::{Grant, Group, Project, Role, Subject, check_grant_scope};
    let role = Role::parse(&args.role).ok_or_else(|| {
        AdminError::Other(format!(
            "unknown role {:?}; one of {}",
            args.role,
            Role::ALL.map(|r| r.name()).join(", ")
        ))
    })?;
    check_grant_scope(role, args.project.as_deref(), &args.namespaces)
        .map_err(|(field, msg)| AdminError::Other(format!("{field}: {msg}")))?;
    let store = open_existing(data_dir)?;
    let subject = store.read_blocking(|txn| {
        if let Some(p) = &args.project
            && store::named::read::by_name::<Project>(txn, p)?.is_none()
        {
            return Ok(Err(format!("no project named {p:?}")));
        }
        Ok(match (&args.user, &args.group) {
            (Some(u), _) => store::users::get_by_name(txn, u)?
                .map(|u| Subject::User(u.id))
                .ok_or_else(|| format!("no user named {u:?}")),
            (None, Some(g)) => store::named::read::by_name::<Group>(txn, g)?
                .map(|g| Subject::Group(g.id))
                .ok_or_else(|| format!("no group named {g:?}")),
            (None, None) => Err("give --user or --group".to_owned()),
        })
    })?;
    let subject = subject.map_err(AdminError::Other)?;
    let mut namespaces = args.namespaces.clone();
    namespaces.sort();
    namespaces.dedup();
    let grant = Grant {
        id: uuid::Uuid::now_v7(),
        subject,
        role,
        project: args.project.clone(),
        namespaces,
        expires_at: None,
        created_at: time::OffsetDateTime::now_utc(),
        created_by: None,
    };
    store.write_blocking(|txn| {
        store::grants::insert_grant(txn, &grant)?;
        store::casbin::add(txn, "g", &crate::authz::Authorizer::grouping_rule(&grant))?;
        Ok(())
    })?;
    let mut target = crate::domain::audit::Target::of("grant", &grant.id.to_string());
    target.project = grant.project.clone();
    audit_offline(&store, "grant.create", target)?;
    Ok(grant)
}
