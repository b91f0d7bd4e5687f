//! `/api/v1/grants` and `/api/v1/roles`.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::extract::{Body, Page, Path, Query};
use super::views::GrantView;
use super::{ApiError, access, commit, subject_name};
use crate::authn::caller::Caller;
use crate::authz::{Act, Authorizer, Domain, Obj};
use crate::domain::audit::Target;
use crate::domain::org::{Grant, Group, KubeAccess, Project, Role, ScopeKind, Subject};
use crate::state::AppState;
use crate::store::{self, StoreError, WriteTransaction, named};

/// Grants about to be removed together with something else (a user, group or project),
/// with whether each one's policy rule is still needed by another grant.
#[derive(Clone)]
pub struct DoomedGrants {
    grants: Vec<(Grant, bool)>,
}

impl DoomedGrants {
    pub fn select(state: &AppState, pred: impl Fn(&Grant) -> bool) -> Self {
        let grants = state
            .authz
            .grants_matching(pred)
            .into_iter()
            .map(|g| {
                let needed = state.authz.rule_still_needed(&g);
                (g, needed)
            })
            .collect();
        Self { grants }
    }

    /// Deletes the grants and their rules inside the caller's transaction.
    pub fn delete_in(&self, txn: &WriteTransaction) -> Result<(), StoreError> {
        for (g, still_needed) in &self.grants {
            store::grants::delete_grant(txn, g.id)?;
            if !still_needed {
                store::casbin::remove(txn, "g", &Authorizer::grouping_rule(g))?;
            }
        }
        Ok(())
    }

    /// Mirrors the committed deletion into the authorizer, then lets the relay and the
    /// agents catch up with the users who lost access.
    pub async fn forget(&self, state: &AppState) -> Result<(), ApiError> {
        let mut affected: Vec<uuid::Uuid> = self
            .grants
            .iter()
            .flat_map(|(g, _)| state.authz.users_of(&g.subject))
            .collect();
        affected.sort();
        affected.dedup();
        for (g, _) in &self.grants {
            state
                .authz
                .grant_removed(g)
                .await
                .map_err(ApiError::internal)?;
        }
        crate::relay::access_changed(state, affected).await;
        Ok(())
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantQuery {
    pub project: Option<String>,
    pub limit: Option<usize>,
    pub cursor: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<GrantQuery>,
) -> Result<axum::Json<Page<GrantView>>, ApiError> {
    let limit = crate::api::extract::PageQuery {
        limit: q.limit,
        cursor: None,
    }
    .limit()?;
    let org_reader = state
        .authz
        .allowed(caller.user.id, &Domain::Org, Obj::Grants, Act::Read)
        .await;
    if let Some(p) = &q.project {
        access::project(&state, &caller, p, Obj::Grants, Act::Read).await?;
    }
    // Projects whose grants this caller may read (all of them for organization readers).
    let mut readable = std::collections::BTreeSet::new();
    if !org_reader
        && let crate::authz::Visibility::Projects(set) = state.authz.visibility(caller.user.id)
    {
        {
            for p in set {
                if state
                    .authz
                    .allowed(
                        caller.user.id,
                        &Domain::Project(p.clone()),
                        Obj::Grants,
                        Act::Read,
                    )
                    .await
                {
                    readable.insert(p);
                }
            }
        }
    }
    let after: Option<Uuid> = match &q.cursor {
        Some(c) => Some(
            c.parse()
                .map_err(|_| ApiError::invalid("cursor", "is not a grant id"))?,
        ),
        None => None,
    };
    let grants = state.authz.grants_matching(|g| {
        let in_filter = q
            .project
            .as_ref()
            .is_none_or(|p| g.project.as_ref() == Some(p));
        let visible = org_reader || g.project.as_ref().is_some_and(|p| readable.contains(p));
        in_filter && visible && after.is_none_or(|a| g.id > a)
    });
    let page: Vec<Grant> = grants.into_iter().take(limit + 1).collect();
    let views = state
        .store
        .read(move |txn| {
            page.iter()
                .map(|g| Ok(GrantView::new(g, subject_name(txn, &g.subject)?)))
                .collect::<Result<Vec<_>, StoreError>>()
        })
        .await?;
    Ok(axum::Json(Page::from_overfetch(
        views,
        limit,
        |g: &GrantView| g.id.to_string(),
    )))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateGrant {
    /// Name of the user to grant to (exactly one of `user`, `group`).
    pub user: Option<String>,
    pub group: Option<String>,
    pub role: String,
    /// Required for project and namespace roles; absent for organization roles.
    pub project: Option<String>,
    #[serde(default)]
    pub namespaces: Vec<String>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
}

pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Body(req): Body<CreateGrant>,
) -> Result<(StatusCode, axum::Json<GrantView>), ApiError> {
    let role = Role::parse(&req.role).ok_or_else(|| {
        ApiError::invalid(
            "role",
            format!(
                "unknown role; one of {}",
                Role::ALL.map(|r| r.name()).join(", ")
            ),
        )
    })?;
    crate::domain::org::check_grant_scope(role, req.project.as_deref(), &req.namespaces)
        .map_err(|(field, msg)| ApiError::invalid(field, msg))?;
    if req
        .expires_at
        .is_some_and(|t| t <= OffsetDateTime::now_utc())
    {
        return Err(ApiError::invalid("expires_at", "must be in the future"));
    }
    let permit = match &req.project {
        Some(p) => access::project(&state, &caller, p, Obj::Grants, Act::Create).await?,
        None => access::org(&state, &caller, Obj::Grants, Act::Create).await?,
    };
    let (user, group) = (req.user.clone(), req.group.clone());
    let project = req.project.clone();
    let (subject, subject_label) = state
        .store
        .read(move |txn| {
            if let Some(p) = &project
                && named::read::by_name::<Project>(txn, p)?.is_none()
            {
                {
                    return Ok(Err(ApiError::invalid(
                        "project",
                        format!("no project named {p}"),
                    )));
                }
            }
            Ok(match (user, group) {
                (Some(u), None) => match store::users::get_by_name(txn, &u)? {
                    Some(user) => Ok((Subject::User(user.id), user.name)),
                    None => Err(ApiError::invalid("user", format!("no user named {u}"))),
                },
                (None, Some(g)) => match named::read::by_name::<Group>(txn, &g)? {
                    Some(group) => Ok((Subject::Group(group.id), group.name)),
                    None => Err(ApiError::invalid("group", format!("no group named {g}"))),
                },
                _ => Err(ApiError::invalid(
                    "user",
                    "give exactly one of user or group",
                )),
            })
        })
        .await??;
    let mut namespaces = req.namespaces;
    namespaces.sort();
    namespaces.dedup();
    let grant = Grant {
        id: Uuid::now_v7(),
        subject,
        role,
        project: req.project,
        namespaces,
        expires_at: req.expires_at,
        created_at: OffsetDateTime::now_utc(),
        created_by: Some(caller.user.id),
    };
    let mut target = Target::of("grant", &grant.id.to_string());
    target.project = grant.project.clone();
    let mut event = caller.event("grant.create", target);
    event.details = serde_json::json!({
        "subject": subject_label, "role": role.name(), "namespaces": grant.namespaces,
        "expires_at": grant.expires_at.and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok()),
    });
    let stored = grant.clone();
    commit(&state, &permit, event, move |txn| {
        store::grants::insert_grant(txn, &stored)?;
        store::casbin::add(txn, "g", &Authorizer::grouping_rule(&stored))?;
        Ok(())
    })
    .await?;
    state
        .authz
        .grant_added(&grant)
        .await
        .map_err(ApiError::internal)?;
    Ok((
        StatusCode::CREATED,
        axum::Json(GrantView::new(&grant, subject_label)),
    ))
}

async fn find(
    state: &AppState,
    caller: &Caller,
    id: &str,
    act: Act,
) -> Result<(Grant, crate::authz::Permit), ApiError> {
    let id: Uuid = id
        .parse()
        .map_err(|_| ApiError::not_found(format!("grant {id} not found")))?;
    let grant = state
        .store
        .read(move |txn| store::grants::get_grant(txn, id))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("grant {id} not found")))?;
    let permit = match &grant.project {
        Some(p) => access::project(state, caller, p, Obj::Grants, act).await?,
        None => access::org(state, caller, Obj::Grants, act).await?,
    };
    Ok((grant, permit))
}

pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<GrantView>, ApiError> {
    let (grant, _) = find(&state, &caller, &id, Act::Read).await?;
    let subject = grant.subject;
    let name = state
        .store
        .read(move |txn| subject_name(txn, &subject))
        .await?;
    Ok(axum::Json(GrantView::new(&grant, name)))
}

pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let (grant, permit) = find(&state, &caller, &id, Act::Delete).await?;
    let doomed = DoomedGrants::select(&state, |g| g.id == grant.id);
    let mut target = Target::of("grant", &grant.id.to_string());
    target.project = grant.project.clone();
    let mut event = caller.event("grant.delete", target);
    event.details = serde_json::json!({"role": grant.role.name()});
    let to_delete = doomed.clone();
    commit(&state, &permit, event, move |txn| to_delete.delete_in(txn)).await?;
    doomed.forget(&state).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize)]
pub struct RoleView {
    pub name: &'static str,
    pub scope: ScopeKind,
    pub kubernetes_access: KubeAccess,
    pub description: &'static str,
}

pub async fn roles(_caller: Caller) -> axum::Json<Page<RoleView>> {
    axum::Json(Page {
        items: Role::ALL
            .iter()
            .map(|r| RoleView {
                name: r.name(),
                scope: r.scope(),
                kubernetes_access: r.kube_access(),
                description: r.description(),
            })
            .collect(),
        next_cursor: None,
    })
}
