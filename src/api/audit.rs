//! `/api/v1/audit` and `/api/v1/audit/export`: reading the audit log is itself audited.
//! Organization auditors see everything; project-scoped roles see their projects' events.

use axum::body::Body as HttpBody;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::extract::Query;
use super::{ApiError, record};
use crate::authn::caller::Caller;
use crate::authz::{Act, Domain, Obj, Visibility};
use crate::domain::audit::{
    AuditEvent, AuditQuery, Durability, EventKind, MAX_PAGE, Order, Outcome, Target,
};
use crate::state::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub from: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub to: Option<OffsetDateTime>,
    pub user: Option<String>,
    pub cluster: Option<String>,
    pub project: Option<String>,
    pub namespace: Option<String>,
    pub kind: Option<EventKind>,
    pub action: Option<String>,
    pub outcome: Option<Outcome>,
    pub verb: Option<String>,
    pub resource: Option<String>,
    pub status: Option<u16>,
    pub cursor: Option<u64>,
    pub limit: Option<usize>,
    /// `newest_first` (default) or `oldest_first`.
    pub order: Option<Order>,
}

impl AuditParams {
    fn into_query(self) -> Result<AuditQuery, ApiError> {
        let limit = match self.limit {
            None => 0,
            Some(n) if (1..=MAX_PAGE).contains(&n) => n,
            Some(_) => {
                return Err(ApiError::invalid(
                    "limit",
                    format!("must be between 1 and {MAX_PAGE}"),
                ));
            }
        };
        if let (Some(f), Some(t)) = (self.from, self.to)
            && f >= t
        {
            return Err(ApiError::invalid("from", "must be before to"));
        }
        Ok(AuditQuery {
            from: self.from,
            to: self.to,
            user: self.user,
            cluster: self.cluster,
            project: self.project,
            namespace: self.namespace,
            kind: self.kind,
            action: self.action,
            outcome: self.outcome,
            verb: self.verb,
            resource: self.resource,
            status: self.status,
            projects_visible: None,
            cursor: self.cursor,
            limit,
            order: self.order.unwrap_or_default(),
        })
    }
}

/// Limits the query to what the caller may read, or refuses.
async fn scope(state: &AppState, caller: &Caller, query: &mut AuditQuery) -> Result<(), ApiError> {
    let user = caller.user.id;
    if state
        .authz
        .allowed(user, &Domain::Org, Obj::Audit, Act::Read)
        .await
    {
        return Ok(());
    }
    let mut readable = Vec::new();
    if let Visibility::Projects(set) = state.authz.visibility(user) {
        for p in set {
            if state
                .authz
                .allowed(user, &Domain::Project(p.clone()), Obj::Audit, Act::Read)
                .await
            {
                readable.push(p);
            }
        }
    }
    if readable.is_empty() {
        super::access::org(state, caller, Obj::Audit, Act::Read).await?;
    }
    query.projects_visible = Some(readable);
    Ok(())
}

/// Recorded durably: the record of who read the log is on disk before the data leaves.
async fn audit_the_read(
    state: &AppState,
    caller: &Caller,
    action: &str,
    query: &AuditQuery,
) -> Result<(), ApiError> {
    let mut event = caller.event(
        action,
        Target {
            kind: "audit".into(),
            ..Target::default()
        },
    );
    event.details = serde_json::to_value(query).unwrap_or_default();
    record(state, event, Durability::Durable).await
}

#[derive(Debug, Serialize)]
pub struct Head {
    pub seq: u64,
    pub hash: String,
}

#[derive(Debug, Serialize)]
pub struct AuditList {
    pub items: Vec<AuditEvent>,
    pub next_cursor: Option<String>,
    /// The chain's current head: copy it somewhere the server cannot rewrite.
    pub head: Head,
}

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(params): Query<AuditParams>,
) -> Result<axum::Json<AuditList>, ApiError> {
    let mut query = params.into_query()?;
    scope(&state, &caller, &mut query).await?;
    audit_the_read(&state, &caller, "audit.read", &query).await?;
    let page = state.audit.query(query).await.map_err(ApiError::internal)?;
    let head = state.audit.head().await.map_err(ApiError::internal)?;
    Ok(axum::Json(AuditList {
        items: page.events,
        next_cursor: page.next_cursor.map(|c| c.to_string()),
        head: Head {
            seq: head.seq,
            hash: head.hash,
        },
    }))
}

/// JSON Lines of every matching event (not paginated), for SIEM import.
pub async fn export(
    State(state): State<AppState>,
    caller: Caller,
    Query(params): Query<AuditParams>,
) -> Result<Response, ApiError> {
    let mut query = params.into_query()?;
    scope(&state, &caller, &mut query).await?;
    audit_the_read(&state, &caller, "audit.export", &query).await?;
    let rx = state.audit.export_stream(query);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|item| (item.map_err(std::io::Error::other), rx))
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"ztka-audit.jsonl\"",
            ),
            (header::CACHE_CONTROL, "no-store"),
        ],
        HttpBody::from_stream(stream),
    )
        .into_response())
}
