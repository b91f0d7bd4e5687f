//! `/api/v1/tokens`: a user's own API tokens (for automation). The token is shown once.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::extract::{Body, Page, Path};
use super::views::TokenView;
use super::{ApiError, record};
use crate::authn::caller::Caller;
use crate::authn::{API_TOKEN_PREFIX, new_secret, sha256_hex};
use crate::domain::audit::{Durability, Target};
use crate::domain::org::ApiToken;
use crate::state::AppState;
use crate::store;

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<axum::Json<Page<TokenView>>, ApiError> {
    let user = caller.user.id;
    let mut tokens = state
        .store
        .read(move |txn| store::grants::tokens_of(txn, Some(user)))
        .await?;
    tokens.sort_by_key(|t| t.created_at);
    Ok(axum::Json(Page {
        items: tokens.iter().map(TokenView::from).collect(),
        next_cursor: None,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    pub name: String,
    /// Lifetime in seconds; defaults to 30 days, at most the `api_token_max_validity_secs` setting.
    pub expires_in_secs: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct CreatedToken {
    #[serde(flatten)]
    pub meta: TokenView,
    /// The secret, shown only in this response.
    pub token: String,
}

pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Body(req): Body<CreateToken>,
) -> Result<(StatusCode, axum::Json<CreatedToken>), ApiError> {
    let created = issue(&state, &caller, caller.user.id, req).await?;
    Ok((StatusCode::CREATED, axum::Json(created)))
}

/// `POST /api/v1/users/{name}/tokens`: an administrator issues a token to a service user
/// (which has no password to sign in with), e.g. for Argo CD or CI to fetch a kubeconfig.
pub async fn create_for_service_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Body(req): Body<CreateToken>,
) -> Result<(StatusCode, axum::Json<CreatedToken>), ApiError> {
    super::access::org(
        &state,
        &caller,
        crate::authz::Obj::Users,
        crate::authz::Act::Update,
    )
    .await?;
    let user = super::find_named::<crate::domain::user::User>(&state, name).await?;
    if user.kind != crate::domain::user::UserKind::Service {
        return Err(ApiError::conflict(format!(
            "{} is not a service user; people create their own tokens",
            user.name
        )));
    }
    if user.disabled {
        return Err(ApiError::conflict(format!("{} is disabled", user.name)));
    }
    let created = issue(&state, &caller, user.id, req).await?;
    Ok((StatusCode::CREATED, axum::Json(created)))
}

async fn issue(
    state: &AppState,
    caller: &Caller,
    owner: Uuid,
    req: CreateToken,
) -> Result<CreatedToken, ApiError> {
    let name = req.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 64 {
        return Err(ApiError::invalid("name", "must be 1 to 64 characters"));
    }
    let max = state.settings().api_token_max_validity_secs;
    let lifetime = req.expires_in_secs.unwrap_or(30 * 86400);
    if lifetime < 60 || lifetime > max {
        return Err(ApiError::invalid(
            "expires_in_secs",
            format!("must be between 60 and {max}"),
        ));
    }
    let secret = format!("{API_TOKEN_PREFIX}{}", new_secret());
    let now = OffsetDateTime::now_utc();
    let token = ApiToken {
        id: Uuid::now_v7(),
        user_id: owner,
        name,
        hash: sha256_hex(&secret),
        prefix: secret.chars().take(API_TOKEN_PREFIX.len() + 6).collect(),
        created_at: now,
        expires_at: now + time::Duration::seconds(lifetime as i64),
        last_used_at: None,
    };
    let stored = token.clone();
    state
        .store
        .write(move |txn| store::grants::insert_token(txn, &stored))
        .await?;
    let mut event = caller.event("token.create", Target::of("token", &token.name));
    event.details =
        serde_json::json!({"token_id": token.id, "prefix": token.prefix, "owner": owner});
    record(state, event, Durability::Durable).await?;
    Ok(CreatedToken {
        meta: TokenView::from(&token),
        token: secret,
    })
}

pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let not_found = || ApiError::not_found(format!("token {id} not found"));
    let tid: Uuid = id.parse().map_err(|_| not_found())?;
    let user = caller.user.id;
    let owned = state
        .store
        .read(move |txn| store::grants::tokens_of(txn, Some(user)))
        .await?
        .into_iter()
        .find(|t| t.id == tid)
        .ok_or_else(not_found)?;
    state
        .store
        .write(move |txn| store::grants::delete_token(txn, tid).map(|_| ()))
        .await?;
    let mut event = caller.event("token.delete", Target::of("token", &owned.name));
    event.details = serde_json::json!({"token_id": owned.id});
    record(&state, event, Durability::Durable).await?;
    Ok(StatusCode::NO_CONTENT)
}
