//! The HTTPS listener and the request pipeline: authentication, request attributes, RBAC,
//! then the handlers for discovery, objects, reviews and streams.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use futures_util::FutureExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{Value, json};
use tokio::sync::watch;
use tower::ServiceExt;

use crate::objects::{self, ApiError};
use crate::rbac::{self, Attributes, User};
use crate::resources::{self, ResourceType};
use crate::store::{Key, Selector, status};
use crate::{Inner, TokenInfo, patch, stream, table};

pub(crate) fn router(inner: Arc<Inner>) -> Router {
    Router::new().fallback(handle).with_state(inner)
}

pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (tcp, _) = tokio::select! {
            _ = shutdown.changed() => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let router = router.clone();
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            let Ok(Ok(tls)) =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
            else {
                return;
            };
            let service =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    router.clone().oneshot(req.map(Body::new))
                });
            let builder = auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
            tokio::select! {
                _ = conn => {}
                _ = shutdown.changed() => {}
            }
        });
    }
}

pub(crate) fn json_response(code: u16, body: &Value) -> Response {
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

pub(crate) fn error_response_pub(e: ApiError) -> Response {
    error_response(e)
}

fn error_response(e: ApiError) -> Response {
    json_response(e.code, &e.body)
}

fn not_found_path() -> Response {
    json_response(
        404,
        &status(
            404,
            "NotFound",
            "the server could not find the requested resource",
            Some(json!({})),
        ),
    )
}

pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Query parameters; repeated keys (exec's `command`) keep every value.
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    fn parse(q: Option<&str>) -> Query {
        Query(
            q.unwrap_or("")
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (percent_decode(k), percent_decode(v))
                })
                .collect(),
        )
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn all(&self, key: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }
}

/// The bearer tokens a request presents, in the order the real server's authenticators try
/// them: the `Authorization` header, then a WebSocket subprotocol (browsers cannot set
/// headers on WebSockets, so the real server also reads a token from there).
fn bearers(headers: &HeaderMap) -> Vec<String> {
    let mut found = Vec::new();
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        && let Some(t) = v.strip_prefix("Bearer ")
    {
        found.push(t.trim().to_owned());
    }
    if let Some(protocols) = headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
    {
        found.extend(protocols.split(',').filter_map(|p| {
            let enc = p
                .trim()
                .strip_prefix("base64url.bearer.authorization.k8s.io.")?;
            let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(enc.trim_end_matches('='))
                .ok()?;
            String::from_utf8(raw).ok()
        }));
    }
    found
}

/// The first token that authenticates wins, as with the real server's union of
/// authenticators: an invalid `Authorization` token does not stop a valid one in a
/// WebSocket subprotocol.
pub(crate) fn authenticate(inner: &Inner, headers: &HeaderMap) -> Option<User> {
    bearers(headers)
        .iter()
        .find_map(|token| authenticate_token(inner, token))
}

fn authenticate_token(inner: &Inner, token: &str) -> Option<User> {
    if token == inner.admin_token {
        return Some(User {
            name: "kubesim-admin".into(),
            uid: "kubesim-admin".into(),
            groups: vec!["system:masters".into(), "system:authenticated".into()],
        });
    }
    let info = inner.tokens().get(token).cloned()?;
    if info.expires <= time::OffsetDateTime::now_utc() {
        return None;
    }
    let sa_rt = resources::lookup("", "v1", "serviceaccounts")?;
    let key = Key::new(sa_rt, &info.namespace, &info.service_account);
    let sa_uid = inner.store().objects.get(&key).and_then(|sa| {
        sa.pointer("/metadata/uid")
            .and_then(Value::as_str)
            .map(str::to_owned)
    });
    if sa_uid.as_deref() != Some(info.sa_uid.as_str()) {
        return None;
    }
    Some(User {
        name: format!(
            "system:serviceaccount:{}:{}",
            info.namespace, info.service_account
        ),
        uid: info.sa_uid,
        groups: vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{}", info.namespace),
            "system:authenticated".into(),
        ],
    })
}

/// `Impersonate-User` / `Impersonate-Group`: allowed only with the `impersonate` verb on
/// the target users, groups or service accounts, as on a real server.
fn impersonate(inner: &Inner, user: User, headers: &HeaderMap) -> Result<User, ApiError> {
    let target = headers
        .get("impersonate-user")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let groups: Vec<String> = headers
        .get_all("impersonate-group")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_owned)
        .collect();
    let Some(target) = target else {
        if groups.is_empty() {
            return Ok(user);
        }
        return Err(ApiError::bad_request(
            "impersonating groups requires impersonating a user",
        ));
    };
    let mut checks = Vec::new();
    let mut new_groups = Vec::new();
    if let Some(rest) = target.strip_prefix("system:serviceaccount:") {
        let (ns, name) = rest.split_once(':').unwrap_or(("", rest));
        checks.push(Attributes {
            verb: "impersonate".into(),
            resource: "serviceaccounts".into(),
            namespace: ns.into(),
            name: name.into(),
            ..Attributes::default()
        });
        new_groups.push("system:serviceaccounts".to_owned());
        new_groups.push(format!("system:serviceaccounts:{ns}"));
    } else {
        checks.push(Attributes {
            verb: "impersonate".into(),
            resource: "users".into(),
            name: target.clone(),
            ..Attributes::default()
        });
    }
    for g in &groups {
        checks.push(Attributes {
            verb: "impersonate".into(),
            resource: "groups".into(),
            name: g.clone(),
            ..Attributes::default()
        });
        new_groups.push(g.clone());
    }
    {
        let store = inner.store();
        if let Some(denied) = checks.iter().find(|a| !rbac::authorize(&store, &user, a)) {
            return Err(forbidden_error(denied, &user));
        }
    }
    new_groups.push("system:authenticated".to_owned());
    new_groups.dedup();
    Ok(User {
        name: target,
        uid: String::new(),
        groups: new_groups,
    })
}

/// Parses a URL the way the real server's RequestInfo does. Returns None for non-resource
/// paths.
fn resource_attributes(method: &Method, path: &str, query: &Query) -> Option<Attributes> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match segs.as_slice() {
        ["api", _version, rest @ ..] if !rest.is_empty() => ("", rest),
        ["apis", group, _version, rest @ ..] if !rest.is_empty() => (*group, rest),
        _ => return None,
    };
    let mut a = Attributes {
        group: group.to_owned(),
        ..Attributes::default()
    };
    let mut rest: Vec<&str> = rest.to_vec();
    if rest[0] == "namespaces" && rest.len() >= 2 {
        a.namespace = rest[1].to_owned();
        if rest.len() >= 3 && !matches!(rest[2], "status" | "finalize") {
            rest.drain(0..2);
        }
    }
    a.resource = rest[0].to_owned();
    a.name = rest.get(1).map(|s| (*s).to_owned()).unwrap_or_default();
    a.subresource = rest.get(2).map(|s| (*s).to_owned()).unwrap_or_default();
    let watch = query.flag("watch");
    a.verb = match *method {
        Method::GET | Method::HEAD if watch => "watch",
        Method::GET | Method::HEAD if a.name.is_empty() => "list",
        Method::GET | Method::HEAD => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if a.name.is_empty() => "deletecollection",
        Method::DELETE => "delete",
        _ => "unknown",
    }
    .to_owned();
    if matches!(a.subresource.as_str(), "exec" | "attach" | "portforward") {
        // Upgrades come as GET (WebSocket) or POST (SPDY); both need `create`, as on
        // servers with the WebSocket authorization fix.
        a.verb = "create".into();
    }
    Some(a)
}

async fn handle(State(inner): State<Arc<Inner>>, req: Request) -> Response {
    let latency = *inner.latency.lock().unwrap_or_else(|p| p.into_inner());
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let method = req.method().to_string();
    let uri = req.uri().to_string();
    let tokens = bearers(req.headers()).len();
    let mut who = None;
    // A bug in a handler becomes a 500 Status for that request, not a dropped connection.
    let resp = match std::panic::AssertUnwindSafe(dispatch(&inner, req, &mut who))
        .catch_unwind()
        .await
    {
        Ok(resp) => resp,
        Err(_) => json_response(
            500,
            &status(
                500,
                "InternalError",
                "an internal error occurred in kubesim",
                None,
            ),
        ),
    };
    inner.record(crate::RequestRecord {
        user: who
            .as_ref()
            .map(|u: &User| u.name.clone())
            .unwrap_or_default(),
        groups: who.map(|u| u.groups).unwrap_or_default(),
        method,
        uri,
        status: resp.status().as_u16(),
        tokens,
    });
    resp
}

async fn dispatch(inner: &Arc<Inner>, req: Request, who: &mut Option<User>) -> Response {
    let inner = inner.clone();
    let (mut parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    let Some(user) = authenticate(&inner, &parts.headers) else {
        // Like system:public-info-viewer for unauthenticated clients on a real server.
        let public = matches!(
            path.as_str(),
            "/healthz" | "/livez" | "/readyz" | "/version"
        );
        if public && bearers(&parts.headers).is_empty() && parts.method == Method::GET {
            return discovery(&inner, &path, &parts.headers);
        }
        return json_response(401, &status(401, "Unauthorized", "Unauthorized", None));
    };
    *who = Some(user.clone());
    let user = match impersonate(&inner, user, &parts.headers) {
        Ok(u) => u,
        Err(e) => return error_response(e),
    };
    *who = Some(user.clone());
    let query = Query::parse(parts.uri.query());
    let Some(attrs) = resource_attributes(&parts.method, &path, &query) else {
        let attrs = Attributes {
            verb: parts.method.as_str().to_lowercase(),
            path: Some(path.clone()),
            ..Attributes::default()
        };
        if !rbac::authorize(&inner.store(), &user, &attrs) {
            return forbidden(&attrs, &user);
        }
        return discovery(&inner, &path, &parts.headers);
    };
    if !rbac::authorize(&inner.store(), &user, &attrs) {
        return forbidden(&attrs, &user);
    }
    let version = path
        .trim_matches('/')
        .split('/')
        .nth(if attrs.group.is_empty() { 1 } else { 2 })
        .unwrap_or("")
        .to_owned();
    let body = match axum::body::to_bytes(body, 32 << 20).await {
        Ok(b) => b,
        Err(_) => return error_response(ApiError::bad_request("request body too large")),
    };
    let body = if body.starts_with(b"k8s\0") {
        match crate::proto::decode(&body) {
            Some(v) => bytes::Bytes::from(v.to_string()),
            None => {
                return error_response(ApiError::new(
                    415,
                    "UnsupportedMediaType",
                    "this server reads protobuf only for the kinds kubectl create sends that way; send application/json",
                ));
            }
        }
    } else {
        body
    };
    let Some(rt) = resources::lookup(&attrs.group, &version, &attrs.resource) else {
        if attrs.verb == "create" && attrs.name.is_empty() {
            return review(&inner, &user, &attrs, &body);
        }
        return not_found_path();
    };
    let cluster_wide_list =
        attrs.name.is_empty() && matches!(attrs.verb.as_str(), "list" | "watch");
    if (!rt.namespaced && !attrs.namespace.is_empty() && rt.name != "namespaces")
        || (rt.namespaced && attrs.namespace.is_empty() && !cluster_wide_list)
    {
        return not_found_path();
    }
    let accept = parts
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let ns = if rt.name == "namespaces" {
        String::new()
    } else {
        attrs.namespace.clone()
    };
    // `dryRun=All`: run the write against a copy of the store and throw it away.
    let dry_run = query.get("dryRun") == Some("All");
    let result = match (attrs.verb.as_str(), attrs.subresource.as_str()) {
        ("get", "") => get(&inner, rt, &ns, &attrs.name, &accept),
        ("get", "status") => get(&inner, rt, &ns, &attrs.name, &accept),
        ("list", "") => list(&inner, rt, &ns, &query, &accept),
        ("watch", "") => {
            return stream::watch(
                &inner,
                rt,
                &ns,
                &attrs.name,
                &query,
                table::wants_table(&accept),
            );
        }
        ("get", "log") if rt.name == "pods" => {
            return match pod_exists(&inner, rt, &ns, &attrs.name) {
                Ok(()) => stream::logs(&ns, &attrs.name, &query),
                Err(e) => error_response(e),
            };
        }
        ("create", "exec" | "attach" | "portforward") if rt.name == "pods" => {
            if let Err(e) = pod_exists(&inner, rt, &ns, &attrs.name) {
                return error_response(e);
            }
            let wants_spdy = parts
                .headers
                .get(header::UPGRADE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.eq_ignore_ascii_case("SPDY/3.1"));
            if wants_spdy {
                return spdy_upgrade(inner.clone(), &mut parts, &attrs, &ns, &query);
            }
            let ws = axum::extract::ws::WebSocketUpgrade::from_request_parts(&mut parts, &()).await;
            return match ws {
                Ok(ws) => stream::upgrade(
                    ws,
                    inner.clone(),
                    &attrs.subresource,
                    &ns,
                    &attrs.name,
                    &query,
                ),
                Err(_) => error_response(ApiError::new(
                    400,
                    "BadRequest",
                    "Upgrade request required: this server speaks the WebSocket stream protocols (v5.channel.k8s.io, v4.channel.k8s.io) only",
                )),
            };
        }
        ("get" | "update" | "patch", "scale")
            if matches!(rt.name, "deployments" | "replicasets") =>
        {
            scale(&inner, rt, &ns, &attrs, &content_type, &body)
        }
        ("create", "token") if rt.name == "serviceaccounts" => {
            token_request(&inner, &ns, &attrs.name, &body)
        }
        ("create", "") => parse(&body).and_then(|obj| {
            with_store(&inner, dry_run, |store| {
                check_rbac_write(store, &user, rt, &ns, &obj)?;
                objects::create(store, rt, &ns, obj).map(|o| (201, o))
            })
        }),
        ("update", "" | "status") => parse(&body).and_then(|obj| {
            with_store(&inner, dry_run, |store| {
                check_rbac_write(store, &user, rt, &ns, &obj)?;
                objects::update(
                    store,
                    rt,
                    &ns,
                    &attrs.name,
                    obj,
                    attrs.subresource == "status",
                )
                .map(|o| (200, o))
            })
        }),
        ("patch", "" | "status") => with_store(&inner, dry_run, |store| {
            patch_object(store, &user, rt, &ns, &attrs, &content_type, &body)
        }),
        ("delete", "") => {
            let opts: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let policy = query
                .get("propagationPolicy")
                .map(str::to_owned)
                .or_else(|| opts["propagationPolicy"].as_str().map(str::to_owned));
            let orphan = policy.as_deref() == Some("Orphan") || opts["orphanDependents"] == true;
            with_store(&inner, dry_run, |store| {
                objects::delete(store, rt, &ns, &attrs.name, orphan).map(|o| (200, o))
            })
        }
        ("deletecollection", "") => {
            let items = match matching(&inner, rt, &ns, &query) {
                Ok(items) => items,
                Err(e) => return error_response(e),
            };
            let mut store = inner.store();
            let mut deleted = Vec::new();
            for o in items {
                let name = o["metadata"]["name"].as_str().unwrap_or("");
                let o_ns = o["metadata"]["namespace"].as_str().unwrap_or("");
                if let Ok(d) = objects::delete(&mut store, rt, o_ns, name, false) {
                    deleted.push(d);
                }
            }
            Ok((200, list_object(rt, deleted, store.rv, None)))
        }
        _ => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )),
    };
    match result {
        Ok((code, v)) => json_response(code, &v),
        Err(e) => error_response(e),
    }
}

/// `Upgrade: SPDY/3.1` for exec, attach and port-forward from older kubectl.
fn spdy_upgrade(
    inner: Arc<Inner>,
    parts: &mut axum::http::request::Parts,
    attrs: &Attributes,
    ns: &str,
    query: &Query,
) -> Response {
    let offered: Vec<String> = parts
        .headers
        .get_all("x-stream-protocol-version")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_owned())
        .collect();
    let wanted = if attrs.subresource == "portforward" {
        "portforward.k8s.io"
    } else {
        "v4.channel.k8s.io"
    };
    if !offered.iter().any(|p| p == wanted) {
        return error_response(ApiError::new(
            403,
            "Forbidden",
            &format!(
                "unable to upgrade: this server supports only the {wanted} SPDY stream protocol"
            ),
        ));
    }
    let Some(on_upgrade) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
        return error_response(ApiError::bad_request("connection cannot be upgraded"));
    };
    let subresource = attrs.subresource.clone();
    let (ns, pod) = (ns.to_owned(), attrs.name.clone());
    let mut command = query.all("command");
    if subresource == "attach" {
        command = vec!["cat".to_owned()];
    }
    let flags = [
        query.flag("stdin"),
        query.flag("stdout"),
        query.flag("stderr"),
        query.flag("tty"),
    ];
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let io = crate::spdy::IoTransport(TokioIo::new(upgraded));
        if subresource == "portforward" {
            crate::spdy::portforward(io).await;
        } else {
            crate::spdy::exec(io, inner, command, ns, pod, flags).await;
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "SPDY/3.1")
        .header("X-Stream-Protocol-Version", wanted)
        .body(Body::empty())
        .unwrap_or_default()
}

fn with_store<R>(inner: &Inner, dry_run: bool, f: impl FnOnce(&mut crate::store::Store) -> R) -> R {
    let mut guard = inner.store();
    if dry_run {
        let mut scratch = guard.scratch();
        drop(guard);
        f(&mut scratch)
    } else {
        f(&mut guard)
    }
}

/// `deployments/scale` and `replicasets/scale` (`kubectl scale`).
fn scale(
    inner: &Inner,
    rt: &'static ResourceType,
    ns: &str,
    attrs: &Attributes,
    content_type: &str,
    body: &[u8],
) -> Result<(u16, Value), ApiError> {
    let mut store = inner.store();
    let obj = store
        .objects
        .get(&Key::new(rt, ns, &attrs.name))
        .cloned()
        .ok_or_else(|| ApiError::not_found(rt, &attrs.name))?;
    let mut view = objects::scale_of(&obj);
    match attrs.verb.as_str() {
        "get" => return Ok((200, view)),
        "update" => view = parse(body)?,
        _ => {
            let p = parse(body)?;
            if content_type.starts_with("application/json-patch+json") {
                patch::json_patch(&mut view, &p).map_err(|e| ApiError::new(422, "Invalid", &e))?;
            } else {
                patch::merge(&mut view, &p);
            }
        }
    }
    let sent_rv = view
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str);
    if attrs.verb == "update"
        && sent_rv.is_some_and(|v| {
            !v.is_empty() && Some(v) != obj["metadata"]["resourceVersion"].as_str()
        })
    {
        return Err(ApiError::conflict(rt, &attrs.name));
    }
    let replicas = view
        .pointer("/spec/replicas")
        .and_then(Value::as_u64)
        .ok_or_else(|| ApiError::invalid(rt, &attrs.name, "spec.replicas: Required value"))?;
    let mut next = obj.clone();
    next["spec"]["replicas"] = json!(replicas);
    let updated = objects::update(&mut store, rt, ns, &attrs.name, next, false)?;
    Ok((200, objects::scale_of(&updated)))
}

fn forbidden(attrs: &Attributes, user: &User) -> Response {
    error_response(forbidden_error(attrs, user))
}

fn forbidden_error(attrs: &Attributes, user: &User) -> ApiError {
    let mut details = json!({});
    if !attrs.name.is_empty() {
        details["name"] = json!(attrs.name);
    }
    if attrs.path.is_none() {
        details["kind"] = json!(attrs.resource);
        if !attrs.group.is_empty() {
            details["group"] = json!(attrs.group);
        }
    }
    ApiError {
        code: 403,
        body: status(
            403,
            "Forbidden",
            &attrs.forbidden_message(user),
            Some(details),
        ),
    }
}

fn parse(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(&format!("the body is not valid JSON: {e}")))
}

fn pod_exists(inner: &Inner, rt: &ResourceType, ns: &str, name: &str) -> Result<(), ApiError> {
    if inner.store().objects.contains_key(&Key::new(rt, ns, name)) {
        Ok(())
    } else {
        Err(ApiError::not_found(rt, name))
    }
}

fn discovery(inner: &Inner, path: &str, headers: &HeaderMap) -> Response {
    let path = path.trim_end_matches('/');
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let doc = match segs.as_slice() {
        ["version"] => Some(json!({
            "major": "1", "minor": "33", "gitVersion": "v1.33.0-kubesim",
            "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
            "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24.0", "compiler": "gc",
            "platform": "linux/amd64"})),
        ["api"] => Some(resources::api_versions(&inner.server_address)),
        ["api", version] => resources::resource_list("", version),
        ["apis"] => Some(resources::api_group_list()),
        ["apis", group] => resources::api_group(group),
        ["apis", group, version] => resources::resource_list(group, version),
        ["openapi", "v3"] => Some(resources::openapi_v3_root()),
        ["openapi", "v2"] => {
            let accept = headers
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if accept.contains("protobuf") {
                return (
                    StatusCode::OK,
                    [(
                        header::CONTENT_TYPE,
                        "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
                    )],
                    resources::openapi_v2_protobuf(),
                )
                    .into_response();
            }
            Some(resources::openapi_v2_json())
        }
        ["openapi", "v3", rest @ ..] => resources::openapi_v3_gv(&rest.join("/")),
        ["healthz" | "livez" | "readyz"] => {
            return (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                "ok",
            )
                .into_response();
        }
        _ => None,
    };
    match doc {
        Some(d) => json_response(200, &d),
        None => not_found_path(),
    }
}

fn get(
    inner: &Inner,
    rt: &'static ResourceType,
    ns: &str,
    name: &str,
    accept: &str,
) -> Result<(u16, Value), ApiError> {
    let store = inner.store();
    let obj = store
        .objects
        .get(&Key::new(rt, ns, name))
        .cloned()
        .ok_or_else(|| ApiError::not_found(rt, name))?;
    if table::wants_table(accept) {
        let rv = obj["metadata"]["resourceVersion"].clone();
        return Ok((
            200,
            table::table(rt, &[obj], json!({"resourceVersion": rv})),
        ));
    }
    Ok((200, obj))
}

pub(crate) fn selectors(query: &Query) -> Result<(Selector, Selector), ApiError> {
    let labels = Selector::parse(query.get("labelSelector").unwrap_or(""))
        .map_err(|e| ApiError::bad_request(&format!("unable to parse labelSelector: {e}")))?;
    let fields = Selector::parse(query.get("fieldSelector").unwrap_or(""))
        .map_err(|e| ApiError::bad_request(&format!("unable to parse fieldSelector: {e}")))?;
    Ok((labels, fields))
}

fn matching(
    inner: &Inner,
    rt: &ResourceType,
    ns: &str,
    query: &Query,
) -> Result<Vec<Value>, ApiError> {
    let (labels, fields) = selectors(query)?;
    let resource = format!("{}/{}", rt.group, rt.name);
    Ok(inner
        .store()
        .list(&resource, Some(ns))
        .into_iter()
        .map(|(_, o)| o)
        .filter(|o| {
            labels.matches_labels(o.pointer("/metadata/labels")) && fields.matches_fields(o)
        })
        .cloned()
        .collect())
}

fn list_object(
    rt: &ResourceType,
    items: Vec<Value>,
    rv: u64,
    cont: Option<(String, usize)>,
) -> Value {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if let Some((token, remaining)) = cont {
        meta["continue"] = json!(token);
        meta["remainingItemCount"] = json!(remaining);
    }
    json!({"kind": format!("{}List", rt.kind), "apiVersion": rt.api_version(),
        "metadata": meta, "items": items})
}

fn list(
    inner: &Inner,
    rt: &'static ResourceType,
    ns: &str,
    query: &Query,
    accept: &str,
) -> Result<(u16, Value), ApiError> {
    let rv = inner.store().rv;
    let mut items = matching(inner, rt, ns, query)?;
    // Continue tokens are the base64 of the last returned `namespace/name`.
    if let Some(token) = query.get("continue").filter(|t| !t.is_empty()) {
        let after = base64::engine::general_purpose::STANDARD
            .decode(token)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| ApiError::bad_request("invalid continue token"))?;
        items.retain(|o| {
            let k = format!(
                "{}/{}",
                o["metadata"]["namespace"].as_str().unwrap_or(""),
                o["metadata"]["name"].as_str().unwrap_or("")
            );
            k > after
        });
    }
    let limit = query
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    let mut cont = None;
    if let Some(limit) = limit
        && items.len() > limit
    {
        let remaining = items.len() - limit;
        items.truncate(limit);
        if let Some(last) = items.last() {
            let k = format!(
                "{}/{}",
                last["metadata"]["namespace"].as_str().unwrap_or(""),
                last["metadata"]["name"].as_str().unwrap_or("")
            );
            cont = Some((
                base64::engine::general_purpose::STANDARD.encode(k),
                remaining,
            ));
        }
    }
    if table::wants_table(accept) {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if let Some((token, _)) = &cont {
            meta["continue"] = json!(token);
        }
        return Ok((200, table::table(rt, &items, meta)));
    }
    Ok((200, list_object(rt, items, rv, cont)))
}

fn patch_object(
    store: &mut crate::store::Store,
    user: &User,
    rt: &'static ResourceType,
    ns: &str,
    attrs: &Attributes,
    content_type: &str,
    body: &[u8],
) -> Result<(u16, Value), ApiError> {
    let patch_doc = parse(body)?;
    let key = Key::new(rt, ns, &attrs.name);
    let current = store.objects.get(&key).cloned();
    let ct = content_type.split(';').next().unwrap_or("").trim();
    let Some(current) = current else {
        if ct == "application/apply-patch+yaml" {
            check_rbac_write(store, user, rt, ns, &patch_doc)?;
            return objects::create(store, rt, ns, patch_doc).map(|o| (201, o));
        }
        return Err(ApiError::not_found(rt, &attrs.name));
    };
    let mut next = current.clone();
    match ct {
        "application/json-patch+json" => patch::json_patch(&mut next, &patch_doc)
            .map_err(|e| ApiError::new(422, "Invalid", &e))?,
        "application/merge-patch+json" | "application/apply-patch+yaml" => {
            patch::merge(&mut next, &patch_doc)
        }
        "application/strategic-merge-patch+json" => patch::strategic(&mut next, &patch_doc),
        other => {
            return Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                &format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {other:?})"
                ),
            ));
        }
    }
    // A patch may name a resourceVersion as a precondition; otherwise it applies to the
    // current object.
    let sent = patch_doc.pointer("/metadata/resourceVersion").is_some()
        || ct == "application/json-patch+json";
    if !sent && let Some(meta) = next.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert(
            "resourceVersion".to_owned(),
            current["metadata"]["resourceVersion"].clone(),
        );
    }
    check_rbac_write(store, user, rt, ns, &next)?;
    objects::update(
        store,
        rt,
        ns,
        &attrs.name,
        next,
        attrs.subresource == "status",
    )
    .map(|o| (200, o))
}

/// The real server's escalation prevention for RBAC objects.
fn check_rbac_write(
    store: &crate::store::Store,
    user: &User,
    rt: &ResourceType,
    ns: &str,
    obj: &Value,
) -> Result<(), ApiError> {
    if rt.group != "rbac.authorization.k8s.io" || user.is_superuser() {
        return Ok(());
    }
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_owned();
    let may = |verb: &str, resource: &str, target: &str, namespace: &str| {
        rbac::authorize(
            store,
            user,
            &Attributes {
                verb: verb.into(),
                group: rt.group.into(),
                resource: resource.into(),
                namespace: namespace.into(),
                name: target.into(),
                ..Attributes::default()
            },
        )
    };
    let wanted: Vec<rbac::Rule> = match rt.name {
        "roles" | "clusterroles" => {
            if may("escalate", rt.name, &name, ns) {
                return Ok(());
            }
            obj["rules"]
                .as_array()
                .map(|rules| rules.iter().map(rbac::Rule::from_json).collect())
                .unwrap_or_default()
        }
        "rolebindings" | "clusterrolebindings" => {
            let kind = obj["roleRef"]["kind"].as_str().unwrap_or("");
            let role = obj["roleRef"]["name"].as_str().unwrap_or("");
            let resource = if kind == "ClusterRole" {
                "clusterroles"
            } else {
                "roles"
            };
            if may("bind", resource, role, ns) {
                return Ok(());
            }
            let role_ns = if kind == "ClusterRole" { "" } else { ns };
            let Some(role_rt) = resources::lookup(rt.group, "v1", resource) else {
                return Ok(());
            };
            match store.objects.get(&Key::new(role_rt, role_ns, role)) {
                Some(r) => r["rules"]
                    .as_array()
                    .map(|rules| rules.iter().map(rbac::Rule::from_json).collect())
                    .unwrap_or_default(),
                None => return Err(ApiError::not_found(role_rt, role)),
            }
        }
        _ => return Ok(()),
    };
    let owner = rbac::rules_for(store, user, ns);
    let missing = rbac::uncovered(&owner, &wanted);
    if missing.is_empty() {
        return Ok(());
    }
    let message = format!(
        "{} {name:?} is forbidden: user {:?} (groups={}) is attempting to grant RBAC permissions not currently held:\n{}",
        rt.qualified(),
        user.name,
        user.groups_display(),
        rbac::describe(&missing)
    );
    let mut details = json!({"name": name, "group": rt.group, "kind": rt.name});
    if name.is_empty() {
        details["name"] = Value::Null;
    }
    Err(ApiError {
        code: 403,
        body: status(403, "Forbidden", &message, Some(details)),
    })
}

fn token_request(inner: &Inner, ns: &str, sa: &str, body: &[u8]) -> Result<(u16, Value), ApiError> {
    let req: Value = serde_json::from_slice(body)
        .ok()
        .filter(Value::is_object)
        .unwrap_or(json!({}));
    let Some(sa_rt) = resources::lookup("", "v1", "serviceaccounts") else {
        return Err(ApiError::bad_request("no serviceaccounts"));
    };
    let sa_uid = inner
        .store()
        .objects
        .get(&Key::new(sa_rt, ns, sa))
        .and_then(|o| o["metadata"]["uid"].as_str().map(str::to_owned))
        .ok_or_else(|| ApiError::not_found(sa_rt, sa))?;
    let secs = req
        .pointer("/spec/expirationSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(3600);
    if secs < 1 {
        return Err(ApiError::new(
            422,
            "Invalid",
            "spec.expirationSeconds: Invalid value: must be positive",
        ));
    }
    // Whole seconds from now, not from the start of this second: a one-second token must
    // work for (almost) a second.
    let now = time::OffsetDateTime::now_utc();
    let expires = now + time::Duration::seconds(secs);
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let claims = json!({
        "aud": req.pointer("/spec/audiences").cloned().unwrap_or(json!(["https://kubernetes.default.svc"])),
        "exp": expires.unix_timestamp(), "iat": now.unix_timestamp(),
        "iss": "https://kubernetes.default.svc", "jti": uuid::Uuid::new_v4().to_string(),
        "kubernetes.io": {"namespace": ns, "serviceaccount": {"name": sa, "uid": sa_uid}},
        "nbf": now.unix_timestamp(), "sub": format!("system:serviceaccount:{ns}:{sa}"),
    });
    let token = format!(
        "{}.{}.{}",
        b64(&json!({"alg": "RS256", "kid": "kubesim"})),
        b64(&claims),
        crate::random_token()
    );
    inner.tokens().insert(
        token.clone(),
        TokenInfo {
            namespace: ns.to_owned(),
            service_account: sa.to_owned(),
            sa_uid,
            expires,
        },
    );
    let ts = expires
        .replace_nanosecond(0)
        .unwrap_or(expires)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let mut spec = req
        .get("spec")
        .filter(|s| s.is_object())
        .cloned()
        .unwrap_or(json!({}));
    spec["expirationSeconds"] = json!(secs);
    let out = json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "metadata": {"name": sa, "namespace": ns, "creationTimestamp": null},
        "spec": spec,
        "status": {"token": token, "expirationTimestamp": ts},
    });
    Ok((201, out))
}

fn review(inner: &Inner, user: &User, attrs: &Attributes, body: &[u8]) -> Response {
    let req: Value = serde_json::from_slice(body)
        .ok()
        .filter(Value::is_object)
        .unwrap_or(json!({}));
    let mut out = req.clone();
    if !out.get("metadata").is_some_and(Value::is_object) {
        out["metadata"] = json!({"creationTimestamp": null});
    }
    match (attrs.group.as_str(), attrs.resource.as_str()) {
        ("authorization.k8s.io", "selfsubjectaccessreviews") => {
            let a = if let Some(ra) = req.pointer("/spec/resourceAttributes") {
                let s = |k: &str| ra[k].as_str().unwrap_or("").to_owned();
                Attributes {
                    verb: s("verb"),
                    group: s("group"),
                    resource: s("resource"),
                    subresource: s("subresource"),
                    namespace: s("namespace"),
                    name: s("name"),
                    path: None,
                }
            } else if let Some(na) = req.pointer("/spec/nonResourceAttributes") {
                Attributes {
                    verb: na["verb"].as_str().unwrap_or("").to_owned(),
                    path: Some(na["path"].as_str().unwrap_or("").to_owned()),
                    ..Attributes::default()
                }
            } else {
                return error_response(ApiError::invalid(
                    resources::lookup("", "v1", "pods").unwrap_or(&resources::RESOURCES[0]),
                    "",
                    "spec: Invalid value: exactly one of nonResourceAttributes or resourceAttributes must be specified",
                ));
            };
            let allowed = rbac::authorize(&inner.store(), user, &a);
            out["status"] = if allowed {
                json!({"allowed": true, "reason": "allowed by RBAC"})
            } else {
                json!({"allowed": false})
            };
            json_response(201, &out)
        }
        ("authorization.k8s.io", "selfsubjectrulesreviews") => {
            let ns = req
                .pointer("/spec/namespace")
                .and_then(Value::as_str)
                .unwrap_or("");
            let rules = rbac::rules_for(&inner.store(), user, ns);
            let (nonres, res): (Vec<_>, Vec<_>) = rules
                .into_iter()
                .partition(|r| !r.non_resource_urls.is_empty());
            out["status"] = json!({
                "resourceRules": res.iter().map(rbac::Rule::to_json).collect::<Vec<_>>(),
                "nonResourceRules": nonres.iter().map(rbac::Rule::to_json).collect::<Vec<_>>(),
                "incomplete": false,
            });
            json_response(201, &out)
        }
        ("authentication.k8s.io", "selfsubjectreviews") => {
            out["apiVersion"] = json!("authentication.k8s.io/v1");
            out["kind"] = json!("SelfSubjectReview");
            out["status"] = json!({"userInfo": {"username": user.name, "uid": user.uid, "groups": user.groups}});
            json_response(201, &out)
        }
        _ => not_found_path(),
    }
}
