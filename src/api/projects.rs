//! `/api/v1/projects`: everyone sees the projects they have access to.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use time::OffsetDateTime;
use uuid::Uuid;

use super::extract::{Body, Page, PageQuery, Path, Query};
use super::views::ProjectView;
use super::{ApiError, access, check_description, commit, find_named, validate_name};
use crate::authn::caller::Caller;
use crate::authz::{Act, Obj};
use crate::domain::audit::Target;
use crate::domain::cluster::Cluster;
use crate::domain::org::Project;
use crate::state::AppState;
use crate::store::{StoreError, named};

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<PageQuery>,
) -> Result<axum::Json<Page<ProjectView>>, ApiError> {
    let limit = q.limit()?;
    let visible = state.authz.visibility(caller.user.id);
    // Walk in name order, keeping only visible projects, until the page is full.
    let projects = state
        .store
        .read(move |txn| {
            let mut out = Vec::new();
            let mut cursor = q.cursor.clone();
            loop {
                let batch: Vec<Project> = named::read::page(txn, cursor.as_deref(), 256)?;
                let done = batch.len() < 256;
                cursor = batch.last().map(|p| p.name.clone());
                out.extend(batch.into_iter().filter(|p| visible.contains(&p.name)));
                if done || out.len() > limit {
                    break;
                }
            }
            Ok(out)
        })
        .await?;
    let views = projects.iter().map(ProjectView::from).collect();
    Ok(axum::Json(Page::from_overfetch(
        views,
        limit,
        |p: &ProjectView| p.name.clone(),
    )))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateProject {
    pub name: String,
    #[serde(default)]
    pub description: String,
}

pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Body(req): Body<CreateProject>,
) -> Result<(StatusCode, axum::Json<ProjectView>), ApiError> {
    let permit = access::org(&state, &caller, Obj::Projects, Act::Create).await?;
    validate_name("name", &req.name)?;
    check_description(&req.description)?;
    let project = Project {
        id: Uuid::now_v7(),
        name: req.name,
        description: req.description,
        created_at: OffsetDateTime::now_utc(),
    };
    let event = caller.event(
        "project.create",
        Target::of("project", &project.name).in_project(&project.name),
    );
    let stored = project.clone();
    commit(&state, &permit, event, move |txn| {
        named::insert(txn, &stored)
    })
    .await?;
    Ok((StatusCode::CREATED, axum::Json(ProjectView::from(&project))))
}

pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<axum::Json<ProjectView>, ApiError> {
    access::project(&state, &caller, &name, Obj::Projects, Act::Read).await?;
    Ok(axum::Json(ProjectView::from(
        &find_named::<Project>(&state, name).await?,
    )))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateProject {
    pub description: Option<String>,
}

pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Body(req): Body<UpdateProject>,
) -> Result<axum::Json<ProjectView>, ApiError> {
    let permit = access::project(&state, &caller, &name, Obj::Projects, Act::Update).await?;
    let mut project = find_named::<Project>(&state, name).await?;
    if let Some(d) = req.description {
        check_description(&d)?;
        project.description = d;
    }
    let event = caller.event(
        "project.update",
        Target::of("project", &project.name).in_project(&project.name),
    );
    let stored = project.clone();
    commit(&state, &permit, event, move |txn| {
        named::update(txn, &stored)
    })
    .await?;
    Ok(axum::Json(ProjectView::from(&project)))
}

pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let permit = access::project(&state, &caller, &name, Obj::Projects, Act::Delete).await?;
    let project = find_named::<Project>(&state, name).await?;
    let pname = project.name.clone();
    let doomed_grants = super::grants::DoomedGrants::select(&state, |g| {
        g.project.as_deref() == Some(pname.as_str())
    });
    let event = caller.event(
        "project.delete",
        Target::of("project", &project.name).in_project(&project.name),
    );
    let doomed = project.clone();
    let to_delete = doomed_grants.clone();
    commit(&state, &permit, event, move |txn| {
        let clusters: Vec<String> = named::write::every::<Cluster>(txn)?
            .into_iter()
            .filter(|c| c.project_id == doomed.id)
            .map(|c| c.name)
            .collect();
        if !clusters.is_empty() {
            return Err(StoreError::InUse(format!(
                "project {} still has clusters ({}); delete them first",
                doomed.name,
                clusters.join(", ")
            )));
        }
        named::delete(txn, &doomed)?;
        to_delete.delete_in(txn)?;
        Ok(())
    })
    .await?;
    doomed_grants.forget(&state).await?;
    Ok(StatusCode::NO_CONTENT)
}
