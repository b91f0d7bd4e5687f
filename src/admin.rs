//! `ztka admin …`: offline operations on a data directory. They open the database
//! exclusively, so they refuse to run while a server holds it.

use std::path::Path;

use crate::authn::password;
use crate::config::{Secret, read_secret_file};
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
fn audit_offline(
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

fn open_existing(data_dir: &Path) -> Result<Store, AdminError> {
    if !data_dir.join(store::DATABASE_FILE).exists() {
        return Err(AdminError::Other(format!(
            "{} holds no ztka database",
            data_dir.display()
        )));
    }
    Ok(Store::open(data_dir)?)
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
