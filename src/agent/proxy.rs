//! Relayed Kubernetes requests on the agent: each runs as the requesting user's service
//! account, never with the agent's own credentials.

use std::io;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use futures_util::StreamExt as _;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::{HeaderMap, Method, Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use uuid::Uuid;

use super::kube::Cluster;
use crate::domain::access::ClusterAccess;
use crate::tunnel::{
    ACCESS_HEADER, KUBE_PREFIX, SA_TTL_HEADER, STATUS_HEADER, UPGRADE_HEADER, USER_ID_HEADER,
    USER_NAME_HEADER, UserAccess,
};

use crate::tunnel::kube_status as status;

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// `/k8s/…` from the server.
pub async fn kube_request(cluster: &Cluster, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let h = &parts.headers;
    let user = header_str(h, USER_ID_HEADER).and_then(|v| Uuid::parse_str(v).ok());
    let name = header_str(h, USER_NAME_HEADER).unwrap_or("");
    let access: Option<ClusterAccess> =
        header_str(h, ACCESS_HEADER).and_then(|v| serde_json::from_str(v).ok());
    let (Some(user), Some(access)) = (user, access) else {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the relayed request carries no user identity",
        );
    };
    if let Some(ttl) = header_str(h, SA_TTL_HEADER).and_then(|v| v.parse::<u64>().ok()) {
        cluster.set_sa_ttl(Duration::from_secs(ttl.max(60)));
    }
    let token = match cluster.accounts.token(user, name, &access).await {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(%user, error = %e, "cannot prepare the user's service account");
            return status(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                format!("the agent cannot prepare the service account for {name}: {e}"),
            );
        }
    };
    let path = parts
        .uri
        .path()
        .strip_prefix(KUBE_PREFIX)
        .unwrap_or("/")
        .to_owned();
    let query = parts
        .uri
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let uri = format!("{}{path}{query}", cluster.upstream.base);
    let upgrade = h.get(UPGRADE_HEADER).cloned();
    // The request to the API server as the user's service account: the relayed request's
    // method and headers (less what must not travel), to `uri`, with `token`.
    let upstream = |token: &str| -> Result<Request<()>, hyper::http::Error> {
        let mut out = Request::builder()
            .method(parts.method.clone())
            .uri(&uri)
            .body(())?;
        for (k, v) in h.iter() {
            if let Some(v) = crate::tunnel::forwarded_request_header(k, v) {
                out.headers_mut().append(k.clone(), v);
            }
        }
        if let Ok(v) = header::HeaderValue::from_str(&format!("Bearer {token}")) {
            out.headers_mut().insert(header::AUTHORIZATION, v);
        }
        Ok(out)
    };
    let out = match upstream(&token) {
        Ok(r) => r,
        Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", e.to_string()),
    };
    let Some(protocol) = upgrade else {
        let client = &cluster.upstream.client;
        let awaiting = cluster.busy_poll.request();
        let mut answer = client.request(out.map(|()| Body::new(body))).await;
        // The API server no longer takes the cached token: its service account was deleted
        // or replaced behind the agent's back, or the token revoked. A fresh account and
        // token are made, at once for a read (which has no body and can be sent again),
        // else on the next request (at most every few seconds per user: see
        // `Accounts::forget`).
        if answer
            .as_ref()
            .is_ok_and(|r| r.status() == StatusCode::UNAUTHORIZED)
            && cluster.accounts.forget(user)
        {
            tracing::info!(%user, "the API server refused the user's token; renewing it");
            if matches!(parts.method, Method::GET | Method::HEAD)
                && let Ok(token) = cluster.accounts.token(user, name, &access).await
                && let Ok(again) = upstream(&token)
            {
                answer = client.request(again.map(|()| Body::empty())).await;
            }
        }
        drop(awaiting);
        return match answer {
            Ok(res) => {
                let (mut p, b) = res.into_parts();
                p.headers.retain_hop_by_hop();
                Response::from_parts(p, Body::new(b))
            }
            Err(e) => status(
                StatusCode::BAD_GATEWAY,
                "ServiceUnavailable",
                format!("the Kubernetes API server did not answer: {e}"),
            ),
        };
    };
    upgrade_request(cluster, out, protocol, body).await
}

trait RetainHopByHop {
    fn retain_hop_by_hop(&mut self);
}

impl RetainHopByHop for HeaderMap {
    fn retain_hop_by_hop(&mut self) {
        let names: Vec<_> = self
            .keys()
            .filter(|k| crate::tunnel::is_hop_by_hop(k.as_str()))
            .cloned()
            .collect();
        for n in names {
            self.remove(n);
        }
    }
}

/// exec, attach, port-forward: a dedicated connection upgraded with the API server; the
/// tunnel stream's bodies carry the bytes both ways.
async fn upgrade_request(
    cluster: &Cluster,
    req: Request<()>,
    protocol: header::HeaderValue,
    from_server: Incoming,
) -> Response<Body> {
    let failed = |e: String| {
        status(
            StatusCode::BAD_GATEWAY,
            "ServiceUnavailable",
            format!("cannot reach the Kubernetes API server: {e}"),
        )
    };
    let io = match cluster.upstream.connector.dial().await {
        Ok(io) => io,
        Err(e) => return failed(e.to_string()),
    };
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(io).await {
        Ok(pair) => pair,
        Err(e) => return failed(e.to_string()),
    };
    tokio::spawn(conn.with_upgrades());
    let (mut p, ()) = req.into_parts();
    p.headers.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("Upgrade"),
    );
    p.headers.insert(header::UPGRADE, protocol);
    let mut req = Request::from_parts(p, http_body_util::Empty::<Bytes>::new());
    if let Err(e) = crate::client::set_origin_form(&mut req) {
        return failed(e.to_string());
    }
    let res = match sender.send_request(req).await {
        Ok(r) => r,
        Err(e) => return failed(e.to_string()),
    };
    if res.status() != StatusCode::SWITCHING_PROTOCOLS {
        let (mut p, b) = res.into_parts();
        p.headers.retain_hop_by_hop();
        return Response::from_parts(p, Body::new(b));
    }
    let mut headers = res.headers().clone();
    headers.retain_hop_by_hop();
    let upgraded = match hyper::upgrade::on(res).await {
        Ok(u) => u,
        Err(e) => return failed(e.to_string()),
    };
    let (read, mut write) = tokio::io::split(TokioIo::new(upgraded));
    tokio::spawn(async move {
        let mut data = from_server.into_data_stream();
        while let Some(Ok(chunk)) = data.next().await {
            if write.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = write.shutdown().await;
    });
    let stream = futures_util::stream::unfold(read, |mut read| async move {
        let mut buf = vec![0u8; 32 * 1024];
        match read.read(&mut buf).await {
            Ok(0) | Err(_) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, io::Error>(Bytes::from(buf)), read))
            }
        }
    });
    let mut response = Response::new(Body::from_stream(stream));
    *response.headers_mut() = headers;
    response
        .headers_mut()
        .insert(STATUS_HEADER, header::HeaderValue::from_static("101"));
    response
}

/// `POST /v1/users/{id}/access`.
pub async fn user_access(cluster: &Cluster, user: &str, req: Request<Incoming>) -> Response<Body> {
    let Ok(user) = Uuid::parse_str(user) else {
        return status(StatusCode::BAD_REQUEST, "BadRequest", "not a user id");
    };
    let body = match http_body_util::Limited::new(req.into_body(), 64 * 1024)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", e.to_string()),
    };
    let Ok(change) = serde_json::from_slice::<UserAccess>(&body) else {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "unreadable access change",
        );
    };
    match cluster
        .accounts
        .apply(user, &change.user, &change.access)
        .await
    {
        Ok(()) => {
            let mut res = Response::new(Body::empty());
            *res.status_mut() = StatusCode::NO_CONTENT;
            res
        }
        Err(e) => status(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", e),
    }
}
