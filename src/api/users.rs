//! `/api/v1/users`: local and service users.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::extract::{Body, Page, PageQuery, Path, Query};
use super::views::UserView;
use super::{ApiError, access, commit, find_named, validate_name};
use crate::authn::caller::Caller;
use crate::authn::password;
use crate::authz::{Act, Obj};
use crate::domain::audit::Target;
use crate::domain::org::{Group, Subject};
use crate::domain::user::{User, UserKind, check_password_policy};
use crate::state::AppState;
use crate::store::{self, named};

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<PageQuery>,
) -> Result<axum::Json<Page<UserView>>, ApiError> {
    access::org(&state, &caller, Obj::Users, Act::Read).await?;
    super::page_named(
        &state,
        q,
        |u: &User| UserView::from(u),
        |v: &UserView| v.name.clone(),
    )
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    pub name: String,
    #[serde(default = "local")]
    pub kind: UserKind,
    #[serde(default)]
    pub display_name: String,
    #[serde(default)]
    pub email: String,
    /// Required for local users.
    pub password: Option<String>,
    /// Defaults to true for local users: they choose their own password at first sign-in.
    pub must_change_password: Option<bool>,
}

fn local() -> UserKind {
    UserKind::Local
}

fn check_profile(display_name: &str, email: &str) -> Result<(), ApiError> {
    if display_name.chars().count() > 128 {
        return Err(ApiError::invalid(
            "display_name",
            "must be at most 128 characters",
        ));
    }
    if email.len() > 254 || (!email.is_empty() && !email.contains('@')) {
        return Err(ApiError::invalid("email", "must be an email address"));
    }
    Ok(())
}

pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Body(req): Body<CreateUser>,
) -> Result<(StatusCode, axum::Json<UserView>), ApiError> {
    let permit = access::org(&state, &caller, Obj::Users, Act::Create).await?;
    validate_name("name", &req.name)?;
    check_profile(&req.display_name, &req.email)?;
    let hash = match (req.kind, &req.password) {
        (UserKind::Local, Some(pw)) => {
            check_password_policy(pw).map_err(|e| ApiError::invalid("password", e))?;
            let pw = pw.clone();
            Some(
                tokio::task::spawn_blocking(move || password::hash(&pw))
                    .await
                    .map_err(ApiError::internal)?
                    .map_err(ApiError::internal)?,
            )
        }
        (UserKind::Local, None) => {
            return Err(ApiError::invalid("password", "is required for local users"));
        }
        (UserKind::Service, None) => None,
        (UserKind::Service, Some(_)) => {
            return Err(ApiError::invalid(
                "password",
                "service users have no password; use API tokens",
            ));
        }
        (UserKind::Sso, _) => {
            return Err(ApiError::invalid(
                "kind",
                "SSO users are created by signing in",
            ));
        }
    };
    let now = OffsetDateTime::now_utc();
    let mut user = User::new_local(&req.name, String::new(), now);
    user.kind = req.kind;
    user.password_hash = hash;
    user.display_name = req.display_name;
    user.email = req.email;
    user.must_change_password =
        req.kind == UserKind::Local && req.must_change_password.unwrap_or(true);
    let event = caller.event("user.create", Target::user(&user.name));
    let stored = user.clone();
    commit(&state, &permit, event, move |txn| {
        store::users::insert(txn, &stored)
    })
    .await?;
    Ok((StatusCode::CREATED, axum::Json(UserView::from(&user))))
}

pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<axum::Json<UserView>, ApiError> {
    access::org(&state, &caller, Obj::Users, Act::Read).await?;
    Ok(axum::Json(UserView::from(
        &find_named::<User>(&state, name).await?,
    )))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    pub display_name: Option<String>,
    pub email: Option<String>,
    pub disabled: Option<bool>,
    /// Seconds a kubeconfig of this user stays valid; 0 returns to the organization's setting.
    pub kubeconfig_validity_secs: Option<u64>,
}

pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Body(req): Body<UpdateUser>,
) -> Result<axum::Json<UserView>, ApiError> {
    let permit = access::org(&state, &caller, Obj::Users, Act::Update).await?;
    let mut user = find_named::<User>(&state, name).await?;
    if req.disabled == Some(true) && user.id == caller.user.id {
        return Err(ApiError::conflict("you cannot disable your own account"));
    }
    if let Some(d) = req.display_name {
        user.display_name = d;
    }
    if let Some(e) = req.email {
        user.email = e;
    }
    check_profile(&user.display_name, &user.email)?;
    let action = match req.disabled {
        Some(true) if !user.disabled => "user.disable",
        Some(false) if user.disabled => "user.enable",
        _ => "user.update",
    };
    if let Some(d) = req.disabled {
        user.disabled = d;
    }
    match req.kubeconfig_validity_secs {
        Some(0) => user.kubeconfig_validity_secs = None,
        Some(s) if (300..=crate::api::kubeconfig::MAX_VALIDITY_SECS).contains(&s) => {
            user.kubeconfig_validity_secs = Some(s)
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "kubeconfig_validity_secs",
                format!(
                    "must be 0 or between 300 and {}",
                    crate::api::kubeconfig::MAX_VALIDITY_SECS
                ),
            ));
        }
        None => {}
    }
    user.updated_at = OffsetDateTime::now_utc();
    let event = caller.event(action, Target::user(&user.name));
    let stored = user.clone();
    commit(&state, &permit, event, move |txn| {
        store::users::update(txn, &stored)
    })
    .await?;
    if action == "user.disable" {
        crate::relay::credentials_revoked(&state, user.id).await;
    }
    Ok(axum::Json(UserView::from(&user)))
}

pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let permit = access::org(&state, &caller, Obj::Users, Act::Delete).await?;
    let user = find_named::<User>(&state, name).await?;
    if user.id == caller.user.id {
        return Err(ApiError::conflict("you cannot delete your own account"));
    }
    let doomed_grants =
        super::grants::DoomedGrants::select(&state, |g| g.subject == Subject::User(user.id));
    let event = caller.event("user.delete", Target::user(&user.name));
    let doomed = user.clone();
    let to_delete = doomed_grants.clone();
    commit(&state, &permit, event, move |txn| {
        named::delete(txn, &doomed)?;
        store::sso::unlink(txn, &doomed)?;
        to_delete.delete_in(txn)?;
        store::grants::delete_tokens_of(txn, doomed.id)?;
        for mut group in named::write::every::<Group>(txn)? {
            if group.members.remove(&doomed.id) {
                named::update(txn, &group)?;
            }
        }
        Ok(())
    })
    .await?;
    doomed_grants.forget(&state).await?;
    state.authz.forget_user(user.id);
    crate::relay::credentials_revoked(&state, user.id).await;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResetPassword {
    /// The new password; generated when omitted.
    pub password: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ResetPasswordResponse {
    /// Present only when the server generated the password; shown once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    pub must_change_password: bool,
}

pub async fn reset_password(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Body(req): Body<ResetPassword>,
) -> Result<axum::Json<ResetPasswordResponse>, ApiError> {
    let permit = access::org(&state, &caller, Obj::Users, Act::Update).await?;
    let mut user = find_named::<User>(&state, name).await?;
    if user.kind != UserKind::Local {
        return Err(ApiError::conflict(format!(
            "user {} has no password",
            user.name
        )));
    }
    let (secret, generated) = match req.password {
        Some(pw) => {
            check_password_policy(&pw).map_err(|e| ApiError::invalid("password", e))?;
            (pw, false)
        }
        None => (password::generate().expose().to_owned(), true),
    };
    let pw = secret.clone();
    let hash = tokio::task::spawn_blocking(move || password::hash(&pw))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    let now = OffsetDateTime::now_utc();
    user.password_hash = Some(hash);
    user.must_change_password = true;
    user.credentials_revoked_at = Some(now);
    user.updated_at = now;
    let event = caller.event("user.password.reset", Target::user(&user.name));
    let id = user.id;
    commit(&state, &permit, event, move |txn| {
        store::users::update(txn, &user)
    })
    .await?;
    // The reset voids the user's kubeconfigs too: their open streams end now.
    crate::relay::credentials_revoked(&state, id).await;
    Ok(axum::Json(ResetPasswordResponse {
        password: generated.then_some(secret),
        must_change_password: true,
    }))
}

/// Voids every credential issued to the user until now: kubeconfig certificates, sessions
/// and API tokens created before this instant.
pub async fn revoke_kubeconfig(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let permit = access::org(&state, &caller, Obj::Users, Act::Update).await?;
    let mut user = find_named::<User>(&state, name).await?;
    let now = OffsetDateTime::now_utc();
    user.credentials_revoked_at = Some(now);
    user.updated_at = now;
    let event = caller.event("kubeconfig.revoke", Target::user(&user.name));
    let id = user.id;
    commit(&state, &permit, event, move |txn| {
        store::users::update(txn, &user)
    })
    .await?;
    crate::relay::credentials_revoked(&state, id).await;
    Ok(StatusCode::NO_CONTENT)
}
