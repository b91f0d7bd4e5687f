//! The relay: `/k8s/{cluster}/…` is a Kubernetes API endpoint for kubectl. Each request is
//! authenticated by the user's client certificate, authorized against their grants, stripped
//! of every identity header a client could send, audited, and forwarded over the cluster's
//! tunnel with the user's identity and access level. The agent runs it as the user's
//! just-in-time service account.

mod body;
pub mod lookups;
pub mod request;
pub mod streams;

use std::io;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt as _;
use http_body_util::BodyExt as _;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use uuid::Uuid;

use crate::domain::access::ClusterAccess;
use crate::domain::audit::{Actor, Durability, EventKind, NewEvent, Target};
use crate::domain::cluster::{Cluster, USER_ORGANIZATION};
use crate::domain::org::{Group, Project};
use crate::domain::user::User;
use crate::listener::ConnInfo;
use crate::state::AppState;
use crate::store::named;
use crate::tunnel::{
    ACCESS_HEADER, KUBE_PREFIX, SA_TTL_HEADER, STATUS_HEADER, UPGRADE_HEADER, USER_ID_HEADER,
    USER_NAME_HEADER, UserAccess,
};
use body::{Record, RelayBody};
use request::RequestInfo;
use streams::StreamGuard;

/// How long the agent may take to answer with response headers.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// Certificates are backdated this much at issue (see `Pki::issue_client_cert`).
const CERT_BACKDATE_SECS: i64 = 300;

pub use crate::tunnel::kube_status as status;

/// Who is asking and where to.
struct Authorized {
    user: User,
    /// The client certificate (its serial names the streams it opens).
    certificate: std::sync::Arc<crate::pki::identity::PeerCertificate>,
    groups: Vec<String>,
    cluster: Cluster,
    project: String,
    access: ClusterAccess,
}

/// `/k8s/{cluster}` and everything below it. The route's entry does what the application's
/// layers do for other routes, cut to what a relayed request needs: the server's own
/// request id (in the task-local the audit event reads, on the response and on a tracing
/// span) and an error line for a 5xx.
pub async fn entry(state: State<AppState>, mut req: Request) -> Response {
    use tracing::Instrument as _;
    let value = crate::api::assign_request_id(&mut req);
    let id = value.to_str().unwrap_or_default().to_owned();
    let span = tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id);
    let mut res = crate::api::error::REQUEST_ID
        .scope(id, handle(state, req))
        .instrument(span.clone())
        .await;
    if res.status().is_server_error() {
        span.in_scope(|| tracing::error!(status = %res.status(), "response failed"));
    }
    res.headers_mut()
        .insert(crate::api::REQUEST_ID_HEADER, value);
    res
}

/// Authorizes, records and forwards one request (see the module documentation).
async fn handle(State(state): State<AppState>, req: Request) -> Response {
    let started = Instant::now();
    let path = req.uri().path().to_owned();
    let Some(rest) = path.strip_prefix("/k8s/") else {
        return status(StatusCode::NOT_FOUND, "NotFound", "no cluster in the path");
    };
    let (cluster_name, api_path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let conn = req.extensions().get::<ConnInfo>().cloned();
    let client_addr = conn
        .as_ref()
        .map(|c| c.remote.ip().to_string())
        .unwrap_or_default();
    let user_agent: String = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .chars()
        .take(256)
        .collect();
    let info = RequestInfo::parse(req.method().as_str(), api_path, req.uri().query());
    let request_id = crate::api::error::current_request_id();
    let mut event = NewEvent::system("kube.request", Target::default());
    event.kind = EventKind::Kube;
    event.request_id = request_id.clone();
    event.actor = Actor {
        client_addr: Some(client_addr),
        user_agent: (!user_agent.is_empty()).then_some(user_agent),
        ..Actor::default()
    };
    event.target = Target {
        kind: if info.discovery { "discovery" } else { "kube" }.into(),
        name: (!info.name.is_empty()).then(|| info.name.clone()),
        project: None,
        cluster: Some(cluster_name.to_owned()),
        namespace: (!info.namespace.is_empty()).then(|| info.namespace.clone()),
    };
    let mut kube = info.to_event(req.method().as_str(), api_path);
    // The request is registered as the user's stream before it is forwarded, so an access
    // change that ends the user's streams also ends it; a write between the decision and
    // the registration (which that change's pass over the streams may have run before)
    // makes the relay decide again.
    let decided = loop {
        let generation = lookup_generation(&state);
        let decision = authorize(&state, conn.as_ref(), cluster_name)
            .await
            .map(|a| {
                let guard = state
                    .streams
                    .open(a.user.id, &a.project, &a.certificate, info.lasting);
                (a, guard)
            });
        if lookup_generation(&state) == generation {
            break decision;
        }
    };
    let (mut authorized, guard) = match decided {
        Ok(pair) => pair,
        Err(refusal) => {
            let (code, reason, message, user) = *refusal;
            if let Some(u) = user {
                event.actor.user_id = Some(u.id);
                event.actor.user_name = Some(u.name);
            }
            kube.duration_ms = started.elapsed().as_secs_f64() * 1000.0;
            event.kube = Some(kube);
            event = event.with_outcome(code.as_u16());
            event.details = serde_json::json!({ "reason": message });
            let _ = state.audit.append(event, Durability::Fast).await;
            return status(code, reason, message);
        }
    };
    event.actor.user_id = Some(authorized.user.id);
    event.actor.user_name = Some(authorized.user.name.clone());
    event.actor.groups = std::mem::take(&mut authorized.groups);
    event.target.project = Some(authorized.project.clone());
    if info.discovery {
        event.details = serde_json::json!({ "discovery": true });
    }
    // Mutations are on disk before they reach the cluster. A request whose answer stays
    // open (a watch, `logs -f`) is on record from its start too: its final event, with what
    // it was sent, comes when it ends.
    let mutating = info.is_mutating();
    if mutating || info.lasting {
        let mut before = event.clone();
        before.kube = Some(kube.clone());
        before.status = 0;
        before.outcome = crate::domain::audit::Outcome::Pending;
        let durability = if mutating {
            Durability::Durable
        } else {
            Durability::Fast
        };
        if let Err(e) = state.audit.append(before, durability).await {
            tracing::error!(error = %e, "cannot record a Kubernetes request; refusing it");
            return status(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "the audit log is unavailable; the request was not forwarded",
            );
        }
        event.action = "kube.response".into();
    }
    let awaiting = state.busy_poll.request();
    let (mut response, answer) = match forward(&state, &authorized, req, api_path, guard).await {
        Ok(pair) => pair,
        Err(res) => (res, None),
    };
    drop(awaiting);
    let code = response.status();
    // A server sends no body for these (a Content-Length names the resource's), and would
    // not read one to its end; nor does it read an empty one.
    let no_body =
        kube.method == "HEAD" || code == StatusCode::NO_CONTENT || code == StatusCode::NOT_MODIFIED;
    let answer = answer.filter(|(body, _)| !no_body && !body::at_end(body));
    let record = Record {
        audit: state.audit.clone(),
        event: event.with_outcome(code.as_u16()),
        kube,
        started,
    };
    match answer {
        // The event follows the end of the agent's answer, with its size.
        Some((body, guard)) => {
            let tasks = state.shutdown.tracker();
            *response.body_mut() = Body::new(RelayBody::new(body, guard, record, tasks));
        }
        // Nothing was relayed: the relay's own Status, an upgrade, or an empty answer.
        None => record.append().await,
    }
    response
}

type Refusal = Box<(StatusCode, &'static str, String, Option<User>)>;

async fn authorize(
    state: &AppState,
    conn: Option<&ConnInfo>,
    cluster_name: &str,
) -> Result<Authorized, Refusal> {
    let unauthorized: fn(&str) -> Refusal =
        |m| Box::new((StatusCode::UNAUTHORIZED, "Unauthorized", m.to_owned(), None));
    let Some(peer) = conn.and_then(|c| c.peer.as_ref()) else {
        return Err(unauthorized(
            "a client certificate from ztka is required: download a kubeconfig from the console or GET /api/v1/kubeconfig",
        ));
    };
    if !peer.organizations.iter().any(|o| o == USER_ORGANIZATION) {
        return Err(unauthorized(
            "this certificate is not a ztka user certificate",
        ));
    }
    let Ok(user_id) = Uuid::parse_str(&peer.common_name) else {
        return Err(unauthorized("this certificate does not name a user"));
    };
    let loaded = lookup(state, user_id, cluster_name).await;
    let (user, cluster, project, groups) = loaded.map_err(|e| {
        tracing::error!(error = %e, "relay lookup failed");
        Box::new((
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "internal error".to_owned(),
            None,
        ))
    })?;
    let Some(user) = user else {
        return Err(unauthorized(
            "the user of this certificate no longer exists",
        ));
    };
    if user.disabled {
        return Err(Box::new((
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            format!("user {} is disabled", user.name),
            Some(user),
        )));
    }
    // Exact issue time from the certificate; without it, whole seconds, and a certificate
    // from the second of the revocation counts as revoked.
    let revoked = match crate::domain::cluster::issued_millis(&peer.units) {
        Some(ms) => user.revoked_credentials_issued_at(ms),
        None => user
            .credentials_revoked_at
            .is_some_and(|t| (peer.not_before + CERT_BACKDATE_SECS) <= t.unix_timestamp()),
    };
    if revoked || state.revoked_serials.contains(&peer.serial) {
        return Err(Box::new((
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            format!(
                "this kubeconfig of user {} was revoked; download a new one",
                user.name
            ),
            Some(user),
        )));
    }
    let no_access = |user: User| {
        Err(Box::new((
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!("user {} has no access to cluster {cluster_name}", user.name),
            Some(user),
        )))
    };
    let (Some(cluster), Some(project)) = (cluster, project) else {
        return no_access(user);
    };
    let access = ClusterAccess::from_grants(&state.authz.effective_grants(user.id), &project.name);
    if access.is_none() {
        return no_access(user);
    }
    Ok(Authorized {
        user,
        certificate: peer.clone(),
        groups,
        cluster,
        project: project.name,
        access,
    })
}

/// Changes whenever what the relay's decision reads may have: both counters only grow, so
/// their sum changes whenever either does — a write to the store (users, clusters, groups)
/// or to the authorizer's memberships, which group names are read through.
fn lookup_generation(state: &AppState) -> u64 {
    state.store.generation() + state.authz.generation()
}

/// Everything the decision and the audit event need, in one read transaction — or from the
/// cache when nothing was written since the same user last reached the same cluster.
async fn lookup(
    state: &AppState,
    user_id: Uuid,
    cluster_name: &str,
) -> Result<lookups::Found, crate::store::StoreError> {
    let generation = lookup_generation(state);
    if let Some(hit) = state.relay_lookups.get(generation, user_id, cluster_name) {
        return Ok(hit);
    }
    let name = cluster_name.to_owned();
    let group_ids = state.authz.groups_of(user_id);
    let found = state
        .store
        .read(move |txn| {
            let user = crate::store::users::get(txn, user_id)?;
            let cluster = named::read::by_name::<Cluster>(txn, &name)?;
            let project = match &cluster {
                Some(c) => named::read::by_id::<Project>(txn, &c.project_id.to_string())?,
                None => None,
            };
            let mut groups = Vec::with_capacity(group_ids.len());
            for id in &group_ids {
                if let Some(g) = named::read::by_id::<Group>(txn, &id.to_string())? {
                    groups.push(g.name);
                }
            }
            Ok((user, cluster, project, groups))
        })
        .await?;
    state
        .relay_lookups
        .put(generation, user_id, cluster_name, found.clone());
    Ok(found)
}

/// The response, and the agent's answer for its body unless the response is whole already
/// (an upgrade: the bytes flow outside it).
type Forwarded = (Response, Option<(hyper::body::Incoming, StreamGuard)>);

/// Sends the request over the tunnel and turns the agent's answer into the response.
async fn forward(
    state: &AppState,
    who: &Authorized,
    req: Request,
    api_path: &str,
    guard: StreamGuard,
) -> Result<Forwarded, Response> {
    let Some(mut sender) = state.tunnels.sender(who.cluster.id) else {
        return Err(status(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            format!(
                "cluster {} is offline: its agent is not connected",
                who.cluster.name
            ),
        ));
    };
    let (mut parts, body) = req.into_parts();
    let upgrade = parts
        .headers
        .get(header::UPGRADE)
        .filter(|_| {
            parts.headers.get_all(header::CONNECTION).iter().any(|v| {
                v.to_str()
                    .is_ok_and(|v| v.to_ascii_lowercase().contains("upgrade"))
            })
        })
        .cloned();
    let on_upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
    let mut headers = HeaderMap::with_capacity(parts.headers.len() + 4);
    for (name, value) in parts.headers.iter() {
        if let Some(value) = crate::tunnel::forwarded_request_header(name, value) {
            headers.append(name.clone(), value);
        }
    }
    let ours = |v: String| HeaderValue::from_str(&v).ok();
    let access = serde_json::to_string(&who.access).unwrap_or_default();
    for (name, value) in [
        (USER_ID_HEADER, ours(who.user.id.to_string())),
        (USER_NAME_HEADER, ours(who.user.name.clone())),
        (ACCESS_HEADER, ours(access)),
        (
            SA_TTL_HEADER,
            ours(state.settings().service_account_ttl_secs.to_string()),
        ),
        (
            "x-request-id",
            ours(crate::api::error::current_request_id()).map(never_indexed),
        ),
    ] {
        if let Some(v) = value {
            headers.insert(HeaderName::from_static(name), v);
        }
    }
    let query = parts
        .uri
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let uri = format!("http://agent{KUBE_PREFIX}{api_path}{query}");
    // Upgrades carry the client's bytes in the request body once both sides switched.
    let (body, upstream_tx) = match (&upgrade, &on_upgrade) {
        (Some(u), Some(_)) => {
            headers.insert(HeaderName::from_static(UPGRADE_HEADER), u.clone());
            // The upgraded bytes follow in the body; a declared length would cut them off.
            headers.remove(header::CONTENT_LENGTH);
            let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
            let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|b| (Ok::<_, io::Error>(b), rx))
            });
            (Body::from_stream(stream), Some(tx))
        }
        _ => (body, None),
    };
    let mut out = hyper::Request::builder()
        .method(parts.method.clone())
        .uri(uri)
        .body(body)
        .map_err(|e| status(StatusCode::BAD_REQUEST, "BadRequest", e.to_string()))?;
    *out.headers_mut() = headers;
    let unavailable = |e: String| {
        status(
            StatusCode::BAD_GATEWAY,
            "ServiceUnavailable",
            format!(
                "the agent of cluster {} did not answer: {e}",
                who.cluster.name
            ),
        )
    };
    let sent = async {
        sender.ready().await.map_err(|e| e.to_string())?;
        sender.send_request(out).await.map_err(|e| e.to_string())
    };
    let answer = tokio::select! {
        answer = tokio::time::timeout(RESPONSE_TIMEOUT, sent) => answer,
        _ = guard.token.cancelled() => {
            if guard.shutting_down() {
                return Err(status(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailable",
                    "the ztka server is shutting down; try again",
                ));
            }
            return Err(status(
                StatusCode::FORBIDDEN,
                "Forbidden",
                format!(
                    "access of user {} to cluster {} ended during this request",
                    who.user.name, who.cluster.name
                ),
            ));
        }
    };
    let answer = match answer {
        Ok(Ok(res)) => res,
        Ok(Err(e)) => return Err(unavailable(e)),
        Err(_) => {
            return Err(status(
                StatusCode::GATEWAY_TIMEOUT,
                "Timeout",
                format!(
                    "the agent of cluster {} did not answer within {}s",
                    who.cluster.name,
                    RESPONSE_TIMEOUT.as_secs()
                ),
            ));
        }
    };
    let (res_parts, res_body) = answer.into_parts();
    let switched = res_parts
        .headers
        .get(STATUS_HEADER)
        .is_some_and(|v| v.as_bytes() == b"101");
    let mut response = Response::new(Body::empty());
    for (name, value) in res_parts.headers.iter() {
        if !crate::tunnel::is_hop_by_hop(name.as_str()) {
            response.headers_mut().append(name.clone(), value.clone());
        }
    }
    match (switched, upgrade, on_upgrade, upstream_tx) {
        (true, Some(protocol), Some(on_upgrade), Some(tx)) => {
            *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
            response.headers_mut().insert(header::UPGRADE, protocol);
            tokio::spawn(pipe(on_upgrade, tx, res_body, guard));
            Ok((response, None))
        }
        _ => {
            *response.status_mut() = res_parts.status;
            Ok((response, Some((res_body, guard))))
        }
    }
}

/// Marks a header whose value is new with every request so that HTTP/2 (the tunnel) sends it
/// as a literal that is never indexed: indexing it would only push the values that do repeat
/// (the user, the access level, the client's headers) out of the connection's header table,
/// and each of those would then be sent, and Huffman-coded, in full again.
fn never_indexed(mut value: HeaderValue) -> HeaderValue {
    value.set_sensitive(true);
    value
}

/// Copies bytes both ways between the client's upgraded connection and the tunnel stream
/// until either side ends or access is revoked.
async fn pipe(
    on_upgrade: hyper::upgrade::OnUpgrade,
    to_agent: tokio::sync::mpsc::Sender<Bytes>,
    from_agent: hyper::body::Incoming,
    guard: StreamGuard,
) {
    let client = match on_upgrade.await {
        Ok(io) => TokioIo::new(io),
        Err(e) => {
            tracing::debug!(error = %e, "client upgrade failed");
            return;
        }
    };
    let (mut read, mut write) = tokio::io::split(client);
    let upstream = async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to_agent
                        .send(Bytes::copy_from_slice(&buf[..n]))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    };
    let downstream = async move {
        let mut data = from_agent.into_data_stream();
        while let Some(Ok(chunk)) = data.next().await {
            if write.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = write.shutdown().await;
    };
    tokio::select! {
        _ = async { tokio::join!(upstream, downstream) } => {}
        _ = guard.token.cancelled() => {}
    }
}

/// Longest sleep between two looks for grants that expired (a grant added meanwhile wakes
/// the watch early).
const EXPIRY_RECHECK: Duration = Duration::from_secs(300);

/// Ends access as grants expire. Expired grants stop counting at once for the relay's
/// decisions; this makes the holders' open streams end and the agents correct or remove
/// their service accounts at the expiry, as removing the grant would, and records the
/// expiry in the audit log. Runs until the server shuts down.
pub async fn expire_grants(state: AppState) {
    let mut since = time::OffsetDateTime::now_utc();
    loop {
        let now = time::OffsetDateTime::now_utc();
        let wait = match state.authz.next_expiry_after(since) {
            Some(t) if t <= now => Duration::ZERO,
            Some(t) => Duration::try_from(t - now)
                .unwrap_or(EXPIRY_RECHECK)
                .min(EXPIRY_RECHECK),
            None => EXPIRY_RECHECK,
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = state.authz.grant_was_added() => continue,
            _ = state.shutdown.triggered() => return,
        }
        let now = time::OffsetDateTime::now_utc();
        let expired = state
            .authz
            .grants_matching(|g| g.expires_at.is_some_and(|t| t > since && t <= now));
        since = now;
        if expired.is_empty() {
            continue;
        }
        let mut users: Vec<Uuid> = expired
            .iter()
            .flat_map(|g| state.authz.users_of(&g.subject))
            .collect();
        users.sort();
        users.dedup();
        for g in &expired {
            let mut target = Target::of("grant", &g.id.to_string());
            target.project = g.project.clone();
            let mut event = NewEvent::system("grant.expire", target);
            event.details = serde_json::json!({
                "role": g.role.name(),
                "subject": g.subject.policy_name(),
                "namespaces": g.namespaces,
            });
            if let Err(e) = state.audit.append(event, Durability::Durable).await {
                tracing::error!(error = %e, "cannot record a grant's expiry");
            }
        }
        tracing::info!(
            grants = expired.len(),
            users = users.len(),
            "grants expired; ending the access they gave"
        );
        access_changed(&state, users).await;
    }
}

/// After grants, memberships or the user changed: ends streams the user may no longer hold
/// and tells every connected agent the user's new access, so service accounts and bindings
/// follow (and are deleted where access is gone).
pub async fn access_changed(state: &AppState, users: Vec<Uuid>) {
    reconcile(state, users, false).await
}

/// After a user's kubeconfigs were revoked: every open stream of theirs ends and their
/// service accounts are removed (a new kubeconfig recreates them on first use).
pub async fn credentials_revoked(state: &AppState, user: Uuid) {
    reconcile(state, vec![user], true).await
}

async fn reconcile(state: &AppState, users: Vec<Uuid>, revoked: bool) {
    let clusters: Vec<(Uuid, String)> = state
        .store
        .read(crate::store::clusters::with_projects)
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|(c, project)| (c.id, project))
        .collect();
    for user_id in users {
        let user = state
            .store
            .read(move |txn| crate::store::users::get(txn, user_id))
            .await
            .ok()
            .flatten();
        let active = !revoked && user.as_ref().is_some_and(|u| !u.disabled);
        let grants = state.authz.effective_grants(user_id);
        let closed = state.streams.close_where(user_id, |project| {
            active && !ClusterAccess::from_grants(&grants, project).is_none()
        });
        if closed > 0 {
            tracing::info!(user = %user_id, closed, "closed relay streams after an access change");
        }
        let name = user.as_ref().map(|u| u.name.clone()).unwrap_or_default();
        push_access(state, &clusters, user_id, &name, active.then_some(&grants));
    }
}

/// Sends each connected agent the user's access for its cluster (none when `grants` is None).
fn push_access(
    state: &AppState,
    clusters: &[(Uuid, String)],
    user_id: Uuid,
    name: &str,
    grants: Option<&Vec<crate::domain::org::Grant>>,
) {
    for (cluster, project) in clusters {
        let access = grants
            .map(|g| ClusterAccess::from_grants(g, project))
            .unwrap_or_default();
        push_to(state, *cluster, user_id, name, access);
    }
}

/// When an agent connects, the users it keeps service accounts for get their current
/// access pushed, so bindings follow grants that changed while it was away and the
/// accounts of users who lost access meanwhile are removed now instead of after the TTL:
/// users deleted or disabled, without a grant reaching the cluster, or whose kubeconfigs
/// were revoked and who have not downloaded a new one since (a user with a newer
/// kubeconfig may be using the account over the new tunnel already).
pub async fn agent_connected(state: &AppState, cluster: Uuid, accounts: Vec<Uuid>) {
    if accounts.is_empty() {
        return;
    }
    let found = state
        .store
        .read(move |txn| {
            let Some(c) = named::read::by_id::<Cluster>(txn, &cluster.to_string())? else {
                return Ok(None);
            };
            let Some(p) = named::read::by_id::<Project>(txn, &c.project_id.to_string())? else {
                return Ok(None);
            };
            let mut users = Vec::with_capacity(accounts.len());
            for id in accounts {
                let user = crate::store::users::get(txn, id)?;
                // A kubeconfig the relay still accepts, when the user's were revoked.
                let renewed = match &user {
                    Some(u) if u.credentials_revoked_at.is_some() => {
                        crate::store::certs::of_user(txn, id)?
                            .iter()
                            .any(|c| c.is_accepted(u))
                    }
                    _ => true,
                };
                users.push((id, user, renewed));
            }
            Ok(Some((p.name, users)))
        })
        .await;
    let (project, users) = match found {
        Ok(Some(found)) => found,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(%cluster, error = %e, "cannot check the agent's service accounts");
            return;
        }
    };
    for (id, user, renewed) in users {
        let access = match &user {
            Some(u) if !u.disabled && renewed => {
                ClusterAccess::from_grants(&state.authz.effective_grants(id), &project)
            }
            _ => ClusterAccess::default(),
        };
        let name = user.map(|u| u.name).unwrap_or_default();
        push_to(state, cluster, id, &name, access);
    }
}

/// Tells the cluster's agent, if connected, the user's access there (none: remove).
fn push_to(state: &AppState, cluster: Uuid, user_id: Uuid, name: &str, access: ClusterAccess) {
    let Some(mut sender) = state.tunnels.sender(cluster) else {
        return;
    };
    let body = serde_json::to_vec(&UserAccess {
        user: name.to_owned(),
        access,
    })
    .unwrap_or_default();
    let Ok(req) = hyper::Request::post(format!(
        "http://agent{}",
        crate::tunnel::user_access_path(user_id)
    ))
    .header(header::CONTENT_TYPE, "application/json")
    .body(Body::from(body)) else {
        return;
    };
    tokio::spawn(async move {
        let sent = async {
            sender.ready().await?;
            sender.send_request(req).await
        };
        match tokio::time::timeout(Duration::from_secs(30), sent).await {
            Ok(Ok(res)) if res.status().is_success() => {}
            Ok(Ok(res)) => {
                tracing::warn!(%cluster, status = %res.status(), "agent could not apply an access change")
            }
            Ok(Err(e)) => {
                tracing::warn!(%cluster, error = %e, "cannot reach the agent for an access change")
            }
            Err(_) => tracing::warn!(%cluster, "the agent did not confirm an access change"),
        }
    });
}
