//! Authorization at the API edge: turns a caller and a wanted action into a [`Permit`] or an
//! error, auditing denials. Project-scoped checks answer 404 for projects the caller cannot
//! see at all, so project names do not leak.

use axum::http::StatusCode;

use super::{ApiError, record};
use crate::authn::caller::Caller;
use crate::authz::{Act, Domain, Obj, Permit};
use crate::domain::audit::{Durability, Target};
use crate::state::AppState;

pub async fn org(
    state: &AppState,
    caller: &Caller,
    obj: Obj,
    act: Act,
) -> Result<Permit, ApiError> {
    match state
        .authz
        .check(caller.user.id, Domain::Org, obj, act)
        .await
    {
        Some(p) => Ok(p),
        None => Err(denied(state, caller, obj, act, None).await),
    }
}

pub async fn project(
    state: &AppState,
    caller: &Caller,
    project: &str,
    obj: Obj,
    act: Act,
) -> Result<Permit, ApiError> {
    let domain = Domain::Project(project.to_owned());
    if let Some(p) = state.authz.check(caller.user.id, domain, obj, act).await {
        return Ok(p);
    }
    if !state.authz.visibility(caller.user.id).contains(project) {
        return Err(ApiError::not_found(format!("project {project} not found")));
    }
    Err(denied(state, caller, obj, act, Some(project)).await)
}

async fn denied(
    state: &AppState,
    caller: &Caller,
    obj: Obj,
    act: Act,
    project: Option<&str>,
) -> ApiError {
    let mut target = Target {
        kind: obj.as_str().trim_end_matches('s').to_owned(),
        ..Target::default()
    };
    target.project = project.map(str::to_owned);
    let mut event = caller
        .event(&format!("{}.{}", target.kind, act.as_str()), target)
        .with_outcome(403);
    event.details = serde_json::json!({"reason": "forbidden"});
    if let Err(e) = record(state, event, Durability::Fast).await {
        return e;
    }
    ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!(
            "user {} may not {} {}{}",
            caller.user.name,
            act.as_str(),
            obj.as_str(),
            project
                .map(|p| format!(" in project {p}"))
                .unwrap_or_default()
        ),
    )
}
