//! The authenticated caller of an API request: from `Authorization: Bearer <api token>` or
//! the session cookie (with CSRF protection on state-changing methods). Identity never
//! comes from any other header.

use axum::extract::{FromRequestParts, OriginalUri};
use axum::http::request::Parts;
use axum::http::{Method, header};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{API_TOKEN_PREFIX, CSRF_HEADER, SESSION_COOKIE, digest_eq, sha256_hex};
use crate::api::ApiError;
use crate::domain::audit::{Actor, NewEvent, Target};
use crate::domain::org::Session;
use crate::domain::user::User;
use crate::listener::ConnInfo;
use crate::state::AppState;
use crate::store;

/// Paths a user who must change their password may still use.
const PASSWORD_CHANGE_PATHS: &[&str] = &[
    "/api/v1/auth/me",
    "/api/v1/auth/logout",
    "/api/v1/auth/password",
];

#[derive(Debug, Clone)]
pub enum Via {
    Session { key_hash: String },
    Token { id: Uuid },
}

#[derive(Debug, Clone)]
pub struct Caller {
    pub user: User,
    pub via: Via,
    pub client: ClientInfo,
}

/// Where a request came from, as the server saw it.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub addr: String,
    pub user_agent: String,
}

impl ClientInfo {
    pub fn from_parts(parts: &Parts) -> Self {
        Self {
            addr: parts
                .extensions
                .get::<ConnInfo>()
                .map(|c| c.remote.ip().to_string())
                .unwrap_or_else(|| "unknown".to_owned()),
            user_agent: parts
                .headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(|s| s.chars().take(256).collect())
                .unwrap_or_default(),
        }
    }

    pub fn actor(&self, user: Option<&User>) -> Actor {
        Actor {
            user_id: user.map(|u| u.id),
            user_name: user.map(|u| u.name.clone()),
            groups: Vec::new(),
            client_addr: Some(self.addr.clone()),
            user_agent: (!self.user_agent.is_empty()).then(|| self.user_agent.clone()),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ClientInfo {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::from_parts(parts))
    }
}

impl Caller {
    /// An audit event performed by this caller.
    pub fn event(&self, action: &str, target: Target) -> NewEvent {
        let mut e = NewEvent::system(action, target);
        e.actor = self.client.actor(Some(&self.user));
        e.request_id = crate::api::error::current_request_id();
        e
    }
}

pub fn cookie_value<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn bearer(parts: &Parts) -> Result<Option<&str>, ApiError> {
    let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| ApiError::unauthorized("malformed Authorization header"))?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => Ok(Some(token.trim())),
        _ => Err(ApiError::unauthorized(
            "Authorization must be `Bearer <api token>`",
        )),
    }
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let client = ClientInfo::from_parts(parts);
        let now = OffsetDateTime::now_utc();
        let (user, via) = if let Some(token) = bearer(parts)? {
            authenticate_token(state, token, now).await?
        } else if let Some(cookie) = cookie_value(&parts.headers, SESSION_COOKIE) {
            let (user, key_hash, session) = authenticate_session(state, cookie, now).await?;
            if !is_safe(&parts.method) {
                check_csrf(parts, &session)?;
            }
            (user, Via::Session { key_hash })
        } else {
            return Err(ApiError::unauthorized(
                "sign in first (session cookie) or send an API token",
            ));
        };
        if user.must_change_password {
            let path = parts
                .extensions
                .get::<OriginalUri>()
                .map(|u| u.path().to_owned())
                .unwrap_or_else(|| parts.uri.path().to_owned());
            if !PASSWORD_CHANGE_PATHS.contains(&path.as_str()) {
                return Err(ApiError::new(
                    axum::http::StatusCode::FORBIDDEN,
                    "password_change_required",
                    "change your password first (POST /api/v1/auth/password)",
                ));
            }
        }
        Ok(Caller { user, via, client })
    }
}

async fn load_active_user(state: &AppState, id: Uuid) -> Result<User, ApiError> {
    let user = state
        .store
        .read(move |txn| store::users::get(txn, id))
        .await?
        .ok_or_else(|| ApiError::unauthorized("the account no longer exists"))?;
    if user.disabled {
        return Err(ApiError::unauthorized("the account is disabled"));
    }
    Ok(user)
}

async fn authenticate_token(
    state: &AppState,
    token: &str,
    now: OffsetDateTime,
) -> Result<(User, Via), ApiError> {
    if !token.starts_with(API_TOKEN_PREFIX) {
        return Err(ApiError::unauthorized("invalid API token"));
    }
    let hash = sha256_hex(token);
    let record = state
        .store
        .read(move |txn| store::grants::token_by_hash(txn, &hash))
        .await?
        .ok_or_else(|| ApiError::unauthorized("invalid API token"))?;
    if record.expires_at <= now {
        return Err(ApiError::new(
            axum::http::StatusCode::UNAUTHORIZED,
            "token_expired",
            "the API token has expired",
        ));
    }
    let user = load_active_user(state, record.user_id).await?;
    if user
        .credentials_revoked_at
        .is_some_and(|t| t > record.created_at)
    {
        return Err(ApiError::unauthorized("the API token was revoked"));
    }
    // Record use at most once a minute to keep reads cheap.
    if record
        .last_used_at
        .is_none_or(|t| now - t > time::Duration::minutes(1))
    {
        let mut updated = record.clone();
        updated.last_used_at = Some(now);
        let _ = state
            .store
            .write(move |txn| store::grants::update_token(txn, &updated))
            .await;
    }
    Ok((user, Via::Token { id: record.id }))
}

async fn authenticate_session(
    state: &AppState,
    cookie: &str,
    now: OffsetDateTime,
) -> Result<(User, String, Session), ApiError> {
    let key_hash = sha256_hex(cookie);
    let lookup = key_hash.clone();
    let session = state
        .store
        .read(move |txn| store::grants::get_session(txn, &lookup))
        .await?
        .ok_or_else(|| session_expired("the session has ended; sign in again"))?;
    let settings = state.settings();
    let idle = time::Duration::seconds(settings.session_idle_timeout_secs as i64);
    let absolute = time::Duration::seconds(settings.session_absolute_timeout_secs as i64);
    if now - session.last_seen_at > idle || now - session.created_at > absolute {
        let doomed = key_hash.clone();
        let _ = state
            .store
            .write(move |txn| store::grants::delete_session(txn, &doomed))
            .await;
        return Err(session_expired("the session has expired; sign in again"));
    }
    let user = load_active_user(state, session.user_id).await?;
    if user
        .credentials_revoked_at
        .is_some_and(|t| t > session.created_at)
    {
        return Err(session_expired("the session was revoked; sign in again"));
    }
    if now - session.last_seen_at > time::Duration::seconds(30) {
        let mut touched = session.clone();
        touched.last_seen_at = now;
        let key = key_hash.clone();
        let _ = state
            .store
            .write(move |txn| store::grants::put_session(txn, &key, &touched))
            .await;
    }
    Ok((user, key_hash, session))
}

fn session_expired(message: &str) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::UNAUTHORIZED,
        "session_expired",
        message,
    )
}

/// The session was loaded by `authenticate_session`; the token is compared to its hash.
fn check_csrf(parts: &Parts, session: &Session) -> Result<(), ApiError> {
    let sent = parts
        .headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| csrf_error("missing X-CSRF-Token header"))?;
    if !digest_eq(&sha256_hex(sent), &session.csrf_hash) {
        return Err(csrf_error("X-CSRF-Token does not match the session"));
    }
    Ok(())
}

fn csrf_error(message: &str) -> ApiError {
    ApiError::new(axum::http::StatusCode::FORBIDDEN, "csrf_failed", message)
}
