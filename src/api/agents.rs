//! `/agent/v1`: where agents register, renew their certificates and open their tunnels.
//!
//! Registration is authenticated by a bootstrap token; everything else by the agent's client
//! certificate, whose subject (`CN=<cluster id>, O=ztka:agent`) was set by ztka's CA. A
//! certificate opens only the tunnel of the cluster it names, only while that cluster exists
//! and only while its serial is one the cluster currently admits.

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use time::OffsetDateTime;
use uuid::Uuid;

use super::extract::{Body, Path};
use super::{ApiError, record};
use crate::authn::caller::ClientInfo;
use crate::domain::audit::{Actor, Durability, NewEvent, Target};
use crate::domain::cluster::{self, AGENT_ORGANIZATION, Cluster, TokenRefusal};
use crate::domain::org::Project;
use crate::listener::ConnInfo;
use crate::pki::csr;
use crate::state::AppState;
use crate::store::{clusters, named};
use crate::tunnel::server::TunnelOwner;
use crate::tunnel::{
    AGENT_VERSION_HEADER, IssuedIdentity, RegisterRequest, RenewRequest, UPGRADE_PROTOCOL,
};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/register", post(register))
        .route("/manifests/{token}", get(manifest))
        .route("/clusters/{id}/renew", post(renew))
        .route("/clusters/{id}/tunnel", get(tunnel))
}

/// The connection facts the listener attached, if any.
struct Conn(Option<ConnInfo>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Conn {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Conn(parts.extensions.get::<ConnInfo>().cloned()))
    }
}

/// An agent's request, as the audit log names it.
fn agent_actor(client: &ClientInfo, cluster: Option<&Cluster>) -> Actor {
    let mut actor = client.actor(None);
    actor.user_name = Some(match cluster {
        Some(c) => format!("agent:{}", c.name),
        None => "agent".to_owned(),
    });
    actor
}

async fn project_name(state: &AppState, project_id: Uuid) -> Result<String, ApiError> {
    let found = state
        .store
        .read(move |txn| named::read::by_id::<Project>(txn, &project_id.to_string()))
        .await?;
    Ok(found.map(|p| p.name).unwrap_or_default())
}

/// Records a refusal and returns the error to send.
async fn refuse(
    state: &AppState,
    client: &ClientInfo,
    action: &str,
    target: Target,
    cluster: Option<&Cluster>,
    err: ApiError,
) -> ApiError {
    let mut event = NewEvent::system(action, target).with_outcome(err.status.as_u16());
    event.actor = agent_actor(client, cluster);
    event.request_id = super::error::current_request_id();
    event.details = serde_json::json!({ "reason": err.message });
    match record(state, event, Durability::Durable).await {
        Ok(()) => err,
        Err(e) => e,
    }
}

fn token_error(refusal: TokenRefusal) -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_token",
        format!(
            "{refusal}; create a new one with POST /api/v1/projects/{{project}}/clusters/{{cluster}}/bootstrap"
        ),
    )
}

/// What the CSR asks for must be exactly the identity the server would issue.
fn check_subject(req: &csr::SigningRequest, cluster_id: Uuid) -> Result<(), ApiError> {
    let expected = cluster_id.to_string();
    let cn = req.common_name.as_deref().unwrap_or("");
    if cn != expected {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "identity_mismatch",
            format!(
                "csr: the request asks for CN={cn:?}, but this agent may only ask for CN={expected:?}"
            ),
        ));
    }
    if req.organizations.iter().any(|o| o != AGENT_ORGANIZATION) || req.alt_names > 0 {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "identity_mismatch",
            format!(
                "csr: the request asks for more than the agent identity (only O={AGENT_ORGANIZATION:?} and no alternative names are allowed)"
            ),
        ));
    }
    Ok(())
}

fn parse_csr(pem: &str) -> Result<csr::SigningRequest, ApiError> {
    if pem.len() > 16 * 1024 {
        return Err(ApiError::invalid("csr", "is larger than 16 KiB"));
    }
    csr::parse(pem).map_err(|e| ApiError::invalid("csr", format!("is not usable: {e}")))
}

async fn issue(
    state: &AppState,
    req: &csr::SigningRequest,
    cluster_id: Uuid,
) -> Result<crate::pki::IssuedCert, ApiError> {
    state
        .pki
        .issue_client_cert(
            &req.public_key,
            &cluster_id.to_string(),
            &[AGENT_ORGANIZATION.to_owned()],
            state.config.agents.certificate_validity,
        )
        .map_err(ApiError::internal)
}

/// `POST /agent/v1/register`: spends a bootstrap token for a certificate.
async fn register(
    State(state): State<AppState>,
    client: ClientInfo,
    Body(req): Body<RegisterRequest>,
) -> Result<axum::Json<IssuedIdentity>, ApiError> {
    let target = Target {
        kind: "cluster".into(),
        ..Target::default()
    };
    let Some(cluster_id) = cluster::bootstrap_token_cluster(&req.token) else {
        let err = token_error(TokenRefusal::Unknown);
        return Err(refuse(&state, &client, "agent.register", target, None, err).await);
    };
    let known = state
        .store
        .read(move |txn| named::read::by_id::<Cluster>(txn, &cluster_id.to_string()))
        .await?;
    let target = match &known {
        Some(c) => Target::cluster(c, &project_name(&state, c.project_id).await?),
        None => target,
    };
    let signing = match parse_csr(&req.csr).and_then(|r| check_subject(&r, cluster_id).map(|()| r))
    {
        Ok(r) => r,
        Err(err) => {
            return Err(refuse(
                &state,
                &client,
                "agent.register",
                target,
                known.as_ref(),
                err,
            )
            .await);
        }
    };
    let issued = issue(&state, &signing, cluster_id).await?;
    let hash = crate::authn::sha256_hex(&req.token);
    let serial = issued.serial.clone();
    let agent_version = req.agent_version.clone();
    let outcome = state
        .store
        .write(move |txn| {
            let now = OffsetDateTime::now_utc();
            Ok(match clusters::spend_token(txn, &hash, now)? {
                Ok(c) => Ok(clusters::modify(txn, c.id, |c| {
                    c.admit_serial(serial, false);
                    c.registered_at = Some(now);
                    c.agent_version = agent_version;
                })?),
                Err(refusal) => Err(refusal),
            })
        })
        .await?;
    let cluster = match outcome {
        Ok(c) => c,
        Err(refusal) => {
            let err = token_error(refusal);
            return Err(refuse(
                &state,
                &client,
                "agent.register",
                target,
                known.as_ref(),
                err,
            )
            .await);
        }
    };
    // A re-registration replaces the agent: its earlier certificates no longer open the tunnel.
    state.tunnels.close(cluster.id);
    let project = project_name(&state, cluster.project_id).await?;
    hand_over(&state, &client, "agent.register", cluster, project, issued).await
}

/// Records the issued certificate and returns it to the agent.
async fn hand_over(
    state: &AppState,
    client: &ClientInfo,
    action: &str,
    cluster: Cluster,
    project: String,
    issued: crate::pki::IssuedCert,
) -> Result<axum::Json<IssuedIdentity>, ApiError> {
    let mut event = NewEvent::system(action, Target::cluster(&cluster, &project));
    event.actor = agent_actor(client, Some(&cluster));
    event.request_id = super::error::current_request_id();
    event.details = serde_json::json!({ "serial": issued.serial });
    record(state, event, Durability::Durable).await?;
    Ok(axum::Json(IssuedIdentity {
        cluster_id: cluster.id,
        cluster: cluster.name,
        project,
        certificate: issued.pem,
        ca: state.pki.ca_cert_pem().to_owned(),
        not_after: issued.not_after,
    }))
}

/// `GET /agent/v1/manifests/{token}`: the install manifest for a usable bootstrap token,
/// for the one-line install command. The token is not spent by this.
async fn manifest(
    State(state): State<AppState>,
    client: ClientInfo,
    Path(token): Path<String>,
) -> Result<Response, ApiError> {
    let hash = crate::authn::sha256_hex(&token);
    let found = state
        .store
        .read(move |txn| clusters::token(txn, &hash))
        .await?;
    let now = OffsetDateTime::now_utc();
    let cluster = match found {
        None => Err(TokenRefusal::Unknown),
        Some((record, cluster)) => record
            .usable(now)
            .and_then(|()| cluster.ok_or(TokenRefusal::ClusterDeleted)),
    };
    let cluster = match cluster {
        Ok(c) => c,
        Err(refusal) => {
            let target = Target {
                kind: "cluster".into(),
                ..Target::default()
            };
            let err = token_error(refusal);
            return Err(refuse(&state, &client, "cluster.manifest", target, None, err).await);
        }
    };
    let text = super::clusters::render_manifest(&state, &cluster.name, &token)?;
    let project = project_name(&state, cluster.project_id).await?;
    let mut event = NewEvent::system("cluster.manifest", Target::cluster(&cluster, &project));
    event.actor = agent_actor(&client, None);
    event.request_id = super::error::current_request_id();
    record(&state, event, Durability::Fast).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/yaml"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        text,
    )
        .into_response())
}

/// The cluster an agent certificate may act for, or the refusal to send.
async fn authenticate(
    state: &AppState,
    conn: Option<&ConnInfo>,
    cluster_id: &str,
) -> Result<(Cluster, String), (ApiError, Option<Cluster>)> {
    let Some(peer) = conn.and_then(|c| c.peer.as_ref()) else {
        return Err((
            ApiError::unauthorized(
                "a client certificate issued to this cluster's agent is required",
            ),
            None,
        ));
    };
    if !peer.organizations.iter().any(|o| o == AGENT_ORGANIZATION) {
        return Err((
            ApiError::forbidden("this certificate is not an agent certificate"),
            None,
        ));
    }
    let cert_cluster = peer.common_name.clone();
    let found = state
        .store
        .read(move |txn| named::read::by_id::<Cluster>(txn, &cert_cluster))
        .await
        .map_err(|e| (ApiError::from(e), None))?;
    let Some(cluster) = found else {
        return Err((
            ApiError::forbidden("the cluster this certificate was issued for no longer exists"),
            None,
        ));
    };
    if cluster.id.to_string() != cluster_id {
        return Err((
            ApiError::forbidden(format!(
                "this certificate belongs to cluster {}, not to {cluster_id}",
                cluster.name
            )),
            Some(cluster),
        ));
    }
    if !cluster.agent_serials.contains(&peer.serial) {
        return Err((
            ApiError::forbidden(
                "this agent certificate was replaced by a newer registration; register again with a new bootstrap token",
            ),
            Some(cluster),
        ));
    }
    let project = project_name(state, cluster.project_id)
        .await
        .map_err(|e| (e, None))?;
    Ok((cluster, project))
}

async fn authenticated(
    state: &AppState,
    client: &ClientInfo,
    conn: Option<&ConnInfo>,
    cluster_id: &str,
    action: &str,
) -> Result<(Cluster, String), ApiError> {
    match authenticate(state, conn, cluster_id).await {
        Ok(ok) => Ok(ok),
        Err((err, cluster)) => {
            let target = match &cluster {
                Some(c) => Target::cluster(c, &project_name(state, c.project_id).await?),
                None => Target {
                    kind: "cluster".into(),
                    name: Some(cluster_id.to_owned()),
                    ..Target::default()
                },
            };
            Err(refuse(state, client, action, target, cluster.as_ref(), err).await)
        }
    }
}

/// `POST /agent/v1/clusters/{id}/renew`: a fresh certificate for a fresh key, authenticated
/// by the current certificate. The previous certificate stays valid until it expires.
async fn renew(
    State(state): State<AppState>,
    client: ClientInfo,
    Conn(conn): Conn,
    Path(id): Path<String>,
    Body(renewal): Body<RenewRequest>,
) -> Result<axum::Json<IssuedIdentity>, ApiError> {
    let (cluster, project) =
        authenticated(&state, &client, conn.as_ref(), &id, "agent.renew").await?;
    let signing = match parse_csr(&renewal.csr)
        .and_then(|r| check_subject(&r, cluster.id).map(|()| r))
    {
        Ok(r) => r,
        Err(err) => {
            let target = Target::cluster(&cluster, &project);
            return Err(refuse(&state, &client, "agent.renew", target, Some(&cluster), err).await);
        }
    };
    let issued = issue(&state, &signing, cluster.id).await?;
    let serial = issued.serial.clone();
    let id = cluster.id;
    let cluster = state
        .store
        .write(move |txn| clusters::modify(txn, id, |c| c.admit_serial(serial, true)))
        .await?;
    hand_over(&state, &client, "agent.renew", cluster, project, issued).await
}

/// `GET /agent/v1/clusters/{id}/tunnel` with `Upgrade: ztka-tunnel/1`: switches the
/// connection to the reversed HTTP/2 tunnel.
async fn tunnel(
    State(state): State<AppState>,
    client: ClientInfo,
    Path(id): Path<String>,
    mut req: Request,
) -> Result<Response, ApiError> {
    let conn = req.extensions().get::<ConnInfo>().cloned();
    let (cluster, project) =
        authenticated(&state, &client, conn.as_ref(), &id, "agent.tunnel").await?;
    let wants_tunnel = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(UPGRADE_PROTOCOL));
    let Some(on_upgrade) = req
        .extensions_mut()
        .remove::<hyper::upgrade::OnUpgrade>()
        .filter(|_| wants_tunnel)
    else {
        return Err(ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "upgrade_required",
            format!("the tunnel needs an HTTP/1.1 request with Upgrade: {UPGRADE_PROTOCOL}"),
        ));
    };
    let agent_version = req
        .headers()
        .get(AGENT_VERSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.chars().take(64).collect());
    // `authenticated` admitted the connection only with a verified certificate.
    let certificate_expires = conn
        .as_ref()
        .and_then(|c| c.peer.as_ref())
        .and_then(|p| time::OffsetDateTime::from_unix_timestamp(p.not_after).ok());
    let owner = TunnelOwner {
        actor: agent_actor(&client, Some(&cluster)),
        cluster,
        project,
        agent_version,
        certificate_expires,
    };
    let tunnel_state = state.clone();
    state.shutdown.spawn(async move {
        crate::tunnel::server::run(tunnel_state, owner, on_upgrade).await;
    });
    let mut res = StatusCode::SWITCHING_PROTOCOLS.into_response();
    res.headers_mut()
        .insert(header::UPGRADE, HeaderValue::from_static(UPGRADE_PROTOCOL));
    res.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    Ok(res)
}
