//! `/api/v1/settings`: organization-wide settings.

use axum::extract::State;
use serde::Deserialize;

use super::extract::Body;
use super::{ApiError, access, commit};
use crate::authn::caller::Caller;
use crate::authz::{Act, Obj};
use crate::domain::audit::Target;
use crate::domain::org::Settings;
use crate::state::AppState;
use crate::store;

pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<axum::Json<Settings>, ApiError> {
    access::org(&state, &caller, Obj::Settings, Act::Read).await?;
    Ok(axum::Json(state.settings()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateSettings {
    pub session_idle_timeout_secs: Option<u64>,
    pub session_absolute_timeout_secs: Option<u64>,
    pub kubeconfig_validity_secs: Option<u64>,
    pub service_account_ttl_secs: Option<u64>,
    pub api_token_max_validity_secs: Option<u64>,
}

pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Body(req): Body<UpdateSettings>,
) -> Result<axum::Json<Settings>, ApiError> {
    let permit = access::org(&state, &caller, Obj::Settings, Act::Update).await?;
    let mut s = state.settings();
    let before = serde_json::to_value(&s).unwrap_or_default();
    macro_rules! set {
        ($($f:ident),*) => {$( if let Some(v) = req.$f { s.$f = v; } )*};
    }
    set!(
        session_idle_timeout_secs,
        session_absolute_timeout_secs,
        kubeconfig_validity_secs,
        service_account_ttl_secs,
        api_token_max_validity_secs
    );
    s.validate()
        .map_err(|(field, msg)| ApiError::invalid(field, msg))?;
    let mut event = caller.event("settings.update", Target::of("settings", "organization"));
    event.details = serde_json::json!({"before": before, "after": s});
    let stored = s.clone();
    commit(&state, &permit, event, move |txn| {
        store::grants::put_settings(txn, &stored)
    })
    .await?;
    if let Ok(mut cached) = state.settings.write() {
        *cached = s.clone();
    }
    Ok(axum::Json(s))
}
