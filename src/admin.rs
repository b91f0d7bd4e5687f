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
