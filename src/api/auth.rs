//! Sign-in, sign-out, the caller's own view, and password change.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::extract::Body;
use super::views::{GrantView, UserView};
use super::{ApiError, record, subject_name};
use crate::authn::caller::{Caller, ClientInfo, Via};
use crate::authn::throttle::Verdict;
use crate::authn::{SESSION_COOKIE, new_secret, password, sha256_hex};
use crate::domain::audit::{Durability, NewEvent, Target};
use crate::domain::org::Session;
use crate::domain::user::{UserKind, check_password_policy};
use crate::state::AppState;
use crate::store;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}

#[derive(Debug, Serialize)]
pub struct LoginResponse {
    pub user: UserView,
    /// Echo this in `X-CSRF-Token` on state-changing requests.
    pub csrf_token: String,
    pub must_change_password: bool,
}

/// A valid argon2id hash of a random string: unknown users cost the same verification time.
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| password::hash(&new_secret()).unwrap_or_default())
}

fn invalid_credentials() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
        "invalid username or password",
    )
}

pub async fn login(
    State(state): State<AppState>,
    client: ClientInfo,
    Body(req): Body<LoginRequest>,
) -> Result<Response, ApiError> {
    let name = req.username.trim().to_owned();
    let keys = vec![format!("user:{name}"), format!("ip:{}", client.addr)];
    let mut event = NewEvent::system(
        "auth.login",
        Target {
            kind: "session".into(),
            name: Some(name.clone()),
            ..Target::default()
        },
    );
    event.actor = client.actor(None);
    event.actor.user_name = Some(name.chars().take(64).collect());
    event.request_id = super::error::current_request_id();

    match state.throttle.check(&keys) {
        Verdict::Locked => {
            let mut e = event.clone().with_outcome(429);
            e.details = serde_json::json!({"reason": "throttled"});
            record(&state, e, Durability::Durable).await?;
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_attempts",
                "too many failed sign-ins; try again later",
            ));
        }
        Verdict::Proceed(delay) if !delay.is_zero() => tokio::time::sleep(delay).await,
        Verdict::Proceed(_) => {}
    }

    let lookup = name.clone();
    let user = state
        .store
        .read(move |txn| store::users::get_by_name(txn, &lookup))
        .await?;
    let hash = user
        .as_ref()
        .filter(|u| u.kind == UserKind::Local)
        .and_then(|u| u.password_hash.clone())
        .unwrap_or_else(|| dummy_hash().to_owned());
    let password = req.password;
    let verified = tokio::task::spawn_blocking(move || password::verify(&password, &hash))
        .await
        .unwrap_or(false);
    let user = match user {
        Some(u) if verified && u.kind == UserKind::Local => u,
        _ => {
            state.throttle.failure(&keys);
            let mut e = event.with_outcome(401);
            e.details = serde_json::json!({"reason": "invalid_credentials"});
            record(&state, e, Durability::Durable).await?;
            return Err(invalid_credentials());
        }
    };
    event.actor.user_id = Some(user.id);
    if user.disabled {
        let mut e = event.with_outcome(403);
        e.details = serde_json::json!({"reason": "account_disabled"});
        record(&state, e, Durability::Durable).await?;
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "account_disabled",
            "this account is disabled",
        ));
    }
    state.throttle.success(&keys[0]);

    let (headers, csrf) = start_session(&state, &user, &client).await?;
    record(&state, event.with_outcome(200), Durability::Durable).await?;
    let body = LoginResponse {
        user: UserView::from(&user),
        csrf_token: csrf,
        must_change_password: user.must_change_password,
    };
    Ok((StatusCode::OK, headers, axum::Json(body)).into_response())
}

/// Creates a console session for `user`: stores it (cookie and CSRF token hashed) and
/// returns the `Set-Cookie` headers and the CSRF token to hand to the console.
pub async fn start_session(
    state: &AppState,
    user: &crate::domain::user::User,
    client: &ClientInfo,
) -> Result<(HeaderMap, String), ApiError> {
    let cookie = new_secret();
    let csrf = new_secret();
    let now = OffsetDateTime::now_utc();
    let session = Session {
        user_id: user.id,
        csrf_hash: sha256_hex(&csrf),
        created_at: now,
        last_seen_at: now,
        client_addr: client.addr.clone(),
    };
    let key = sha256_hex(&cookie);
    state
        .store
        .write(move |txn| store::grants::put_session(txn, &key, &session))
        .await?;
    let max_age = state.settings().session_absolute_timeout_secs;
    let mut headers = HeaderMap::new();
    let cookie_header = format!(
        "{SESSION_COOKIE}={cookie}; Path=/; Max-Age={max_age}; HttpOnly; Secure; SameSite=Strict"
    );
    headers.insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie_header).map_err(ApiError::internal)?,
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok((headers, csrf))
}

pub async fn logout(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    if let Via::Session { key_hash } = &caller.via {
        let key = key_hash.clone();
        state
            .store
            .write(move |txn| store::grants::delete_session(txn, &key))
            .await?;
    }
    record(
        &state,
        caller.event(
            "auth.logout",
            Target {
                kind: "session".into(),
                name: Some(caller.user.name.clone()),
                ..Target::default()
            },
        ),
        Durability::Durable,
    )
    .await?;
    let clear = format!("{SESSION_COOKIE}=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Strict");
    let mut headers = HeaderMap::new();
    headers.insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&clear).map_err(ApiError::internal)?,
    );
    Ok((StatusCode::NO_CONTENT, headers).into_response())
}

#[derive(Debug, Serialize)]
pub struct MeResponse {
    pub user: UserView,
    pub groups: Vec<String>,
    pub grants: Vec<GrantView>,
}

pub async fn me(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<axum::Json<MeResponse>, ApiError> {
    let group_ids = state.authz.groups_of(caller.user.id);
    let grants = state.authz.effective_grants(caller.user.id);
    let (groups, views) = state
        .store
        .read(move |txn| {
            let mut groups = Vec::new();
            for id in group_ids {
                if let Some(g) =
                    store::named::read::by_id::<crate::domain::org::Group>(txn, &id.to_string())?
                {
                    groups.push(g.name);
                }
            }
            let mut views = Vec::new();
            for g in &grants {
                views.push(GrantView::new(g, subject_name(txn, &g.subject)?));
            }
            Ok((groups, views))
        })
        .await?;
    Ok(axum::Json(MeResponse {
        user: UserView::from(&caller.user),
        groups,
        grants: views,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangePassword {
    pub current_password: String,
    pub new_password: String,
}

pub async fn change_password(
    State(state): State<AppState>,
    caller: Caller,
    Body(req): Body<ChangePassword>,
) -> Result<StatusCode, ApiError> {
    if caller.user.kind != UserKind::Local {
        return Err(ApiError::conflict("only local users have a password"));
    }
    check_password_policy(&req.new_password).map_err(|e| ApiError::invalid("new_password", e))?;
    if req.new_password == req.current_password {
        return Err(ApiError::invalid(
            "new_password",
            "must differ from the current password",
        ));
    }
    let hash = caller.user.password_hash.clone().unwrap_or_default();
    let current = req.current_password;
    let ok = tokio::task::spawn_blocking(move || password::verify(&current, &hash))
        .await
        .unwrap_or(false);
    if !ok {
        record(
            &state,
            caller
                .event("auth.password.change", Target::user(&caller.user.name))
                .with_outcome(403),
            Durability::Durable,
        )
        .await?;
        return Err(ApiError::invalid("current_password", "is not correct"));
    }
    let new_hash = {
        let pw = req.new_password;
        tokio::task::spawn_blocking(move || password::hash(&pw))
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::internal)?
    };
    let id = caller.user.id;
    state
        .store
        .write(move |txn| {
            let mut user =
                store::named::write::by_id::<crate::domain::user::User>(txn, &id.to_string())?
                    .ok_or(store::StoreError::NotFound)?;
            user.password_hash = Some(new_hash);
            user.must_change_password = false;
            user.updated_at = OffsetDateTime::now_utc();
            store::users::update(txn, &user)
        })
        .await?;
    record(
        &state,
        caller.event("auth.password.change", Target::user(&caller.user.name)),
        Durability::Durable,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
