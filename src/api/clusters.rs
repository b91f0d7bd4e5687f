//! `/api/v1/projects/{project}/clusters`: import clusters and hand out bootstrap tokens.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::extract::{Body, Page, PageQuery, Path, Query};
use super::views::ClusterView;
use super::{ApiError, access, check_description, commit, find_named, validate_name};
use crate::authn::caller::Caller;
use crate::authz::{Act, Obj, Permit};
use crate::domain::audit::Target;
use crate::domain::cluster::{self, BootstrapToken, Cluster};
use crate::domain::org::Project;
use crate::manifest::{self, ManifestInput};
use crate::state::AppState;
use crate::store::{clusters, named};

/// The project and, for item routes, the cluster named in the path, after authorization.
struct Scoped {
    permit: Permit,
    project: Project,
}

async fn scoped(
    state: &AppState,
    caller: &Caller,
    project: &str,
    act: Act,
) -> Result<Scoped, ApiError> {
    let permit = access::project(state, caller, project, Obj::Clusters, act).await?;
    let project = find_named::<Project>(state, project.to_owned()).await?;
    Ok(Scoped { permit, project })
}

/// The cluster `name` of `project`; clusters of other projects are "not found" here.
async fn find_cluster(
    state: &AppState,
    project: &Project,
    name: String,
) -> Result<Cluster, ApiError> {
    let shown = format!("cluster {name} not found in project {}", project.name);
    match find_named::<Cluster>(state, name).await {
        Ok(c) if c.project_id == project.id => Ok(c),
        Ok(_) => Err(ApiError::not_found(shown)),
        Err(e) if e.status == StatusCode::NOT_FOUND => Err(ApiError::not_found(shown)),
        Err(e) => Err(e),
    }
}

fn view(state: &AppState, c: &Cluster, project: &Project) -> ClusterView {
    ClusterView::new(c, &project.name, state.tunnels.status(c.id))
}

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(project): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<axum::Json<Page<ClusterView>>, ApiError> {
    let limit = q.limit()?;
    let s = scoped(&state, &caller, &project, Act::Read).await?;
    let project_id = s.project.id;
    let mut items = state
        .store
        .read(move |txn| clusters::in_project(txn, project_id))
        .await?;
    if let Some(after) = q.cursor.as_deref() {
        items.retain(|c| c.name.as_str() > after);
    }
    items.truncate(limit + 1);
    let views = items.iter().map(|c| view(&state, c, &s.project)).collect();
    Ok(axum::Json(Page::from_overfetch(views, limit, |v| {
        v.name.clone()
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateCluster {
    pub name: String,
    #[serde(default)]
    pub description: String,
}

pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Path(project): Path<String>,
    Body(req): Body<CreateCluster>,
) -> Result<(StatusCode, axum::Json<ClusterView>), ApiError> {
    let s = scoped(&state, &caller, &project, Act::Create).await?;
    validate_name("name", &req.name)?;
    check_description(&req.description)?;
    let now = OffsetDateTime::now_utc();
    let cluster = Cluster {
        id: Uuid::now_v7(),
        name: req.name,
        project_id: s.project.id,
        description: req.description,
        created_at: now,
        updated_at: now,
        registered_at: None,
        agent_serials: Vec::new(),
        agent_version: None,
        kubernetes_version: None,
        last_seen: None,
    };
    let event = caller.event("cluster.create", Target::cluster(&cluster, &s.project.name));
    let stored = cluster.clone();
    commit(&state, &s.permit, event, move |txn| {
        named::insert(txn, &stored)
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(view(&state, &cluster, &s.project)),
    ))
}

pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path((project, name)): Path<(String, String)>,
) -> Result<axum::Json<ClusterView>, ApiError> {
    let s = scoped(&state, &caller, &project, Act::Read).await?;
    let cluster = find_cluster(&state, &s.project, name).await?;
    Ok(axum::Json(view(&state, &cluster, &s.project)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateCluster {
    pub description: Option<String>,
}

pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path((project, name)): Path<(String, String)>,
    Body(req): Body<UpdateCluster>,
) -> Result<axum::Json<ClusterView>, ApiError> {
    let s = scoped(&state, &caller, &project, Act::Update).await?;
    let cluster = find_cluster(&state, &s.project, name).await?;
    if let Some(d) = &req.description {
        check_description(d)?;
    }
    let event = caller.event("cluster.update", Target::cluster(&cluster, &s.project.name));
    let id = cluster.id;
    let updated = commit(&state, &s.permit, event, move |txn| {
        clusters::modify(txn, id, |c| {
            if let Some(d) = req.description {
                c.description = d;
            }
            c.updated_at = OffsetDateTime::now_utc();
        })
    })
    .await?;
    Ok(axum::Json(view(&state, &updated, &s.project)))
}

/// Deletes the cluster, revokes its bootstrap tokens and closes its tunnel; the agent's
/// certificate is refused from then on because its cluster no longer exists.
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path((project, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let s = scoped(&state, &caller, &project, Act::Delete).await?;
    let cluster = find_cluster(&state, &s.project, name).await?;
    let event = caller.event("cluster.delete", Target::cluster(&cluster, &s.project.name));
    let doomed = cluster.clone();
    commit(&state, &s.permit, event, move |txn| {
        clusters::delete(txn, &doomed)
    })
    .await?;
    state.tunnels.close(cluster.id);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize)]
pub struct Bootstrap {
    /// Shown once; only its digest is stored.
    pub token: String,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// The install manifest (multi-document YAML) with the token inside.
    pub manifest: String,
    /// A command that fetches the manifest by token and applies it.
    pub install_command: String,
}

/// Issues a new single-use bootstrap token (earlier ones of this cluster stop working) and
/// returns it with the install manifest.
pub async fn bootstrap(
    State(state): State<AppState>,
    caller: Caller,
    Path((project, name)): Path<(String, String)>,
) -> Result<(StatusCode, axum::Json<Bootstrap>), ApiError> {
    let s = scoped(&state, &caller, &project, Act::Update).await?;
    let cluster = find_cluster(&state, &s.project, name).await?;
    let token = cluster::bootstrap_token(cluster.id, &crate::authn::new_secret());
    let now = OffsetDateTime::now_utc();
    let record = BootstrapToken {
        cluster_id: cluster.id,
        created_at: now,
        expires_at: now + state.config.agents.bootstrap_token_ttl,
        spent_at: None,
        revoked: None,
    };
    let expires_at = record.expires_at;
    let hash = crate::authn::sha256_hex(&token);
    let mut event = caller.event(
        "cluster.bootstrap",
        Target::cluster(&cluster, &s.project.name),
    );
    event.details = serde_json::json!({ "token_expires_at": expires_at.unix_timestamp() });
    commit(&state, &s.permit, event, move |txn| {
        clusters::issue_token(txn, &hash, &record)
    })
    .await?;
    let manifest = render_manifest(&state, &cluster.name, &token)?;
    let install_command = manifest::install_command(
        &state.config.external_url.url,
        &token,
        &state.pki.server_key_pin(),
    );
    Ok((
        StatusCode::CREATED,
        axum::Json(Bootstrap {
            token,
            expires_at,
            manifest,
            install_command,
        }),
    ))
}

pub fn render_manifest(state: &AppState, cluster: &str, token: &str) -> Result<String, ApiError> {
    manifest::render(&ManifestInput {
        cluster,
        token,
        server_url: &state.config.external_url.url,
        server_ca: &state.pki.server_trust_pem(),
        image: &state.config.agents.image,
    })
    .map_err(ApiError::internal)
}
