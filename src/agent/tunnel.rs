//! The agent's end of the tunnel: dial the server with the agent certificate, upgrade, then
//! serve HTTP/2 on the connection until it ends.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode, header};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio_util::sync::CancellationToken;

use super::{AgentError, Context};
use crate::client::HttpsClient;
use crate::tunnel::{
    ACCOUNTS_PATH, AGENT_VERSION_HEADER, AgentAccounts, HEARTBEAT_PATH, Heartbeat,
    KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT, KUBE_PREFIX, UPGRADE_PROTOCOL, tunnel_path,
};

/// Opens the tunnel and serves it; returns how long it was up once it ends, however it ended
/// (failing to open it is the error).
pub async fn run_once(
    ctx: &Arc<Context>,
    client: &HttpsClient,
    stop: &CancellationToken,
) -> Result<Duration, AgentError> {
    let identity = ctx.identity();
    let url = format!("{}{}", ctx.server, tunnel_path(identity.cluster_id));
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| AgentError::Usage(format!("invalid server URL {url}: {e}")))?;
    let tls = client
        .connect(&uri)
        .await
        .map_err(|e| AgentError::Unreachable(e.to_string()))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| AgentError::Unreachable(e.to_string()))?;
    tokio::spawn(conn.with_upgrades());
    let mut req = Request::get(uri)
        .header(header::UPGRADE, UPGRADE_PROTOCOL)
        .header(header::CONNECTION, "upgrade")
        .header(header::USER_AGENT, super::user_agent())
        .header(AGENT_VERSION_HEADER, env!("CARGO_PKG_VERSION"))
        .body(Empty::<Bytes>::new())
        .map_err(|e| AgentError::Usage(e.to_string()))?;
    crate::client::set_origin_form(&mut req).map_err(|e| AgentError::Usage(e.to_string()))?;
    let res = tokio::time::timeout(Duration::from_secs(15), sender.send_request(req))
        .await
        .map_err(|_| {
            AgentError::Unreachable("the server did not answer the tunnel request".into())
        })?
        .map_err(|e| AgentError::Unreachable(e.to_string()))?;
    if res.status() != StatusCode::SWITCHING_PROTOCOLS {
        let status = res.status().as_u16();
        let body = res
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        return Err(AgentError::Refused {
            status,
            message: super::error_message(&body),
        });
    }
    let upgraded = hyper::upgrade::on(res)
        .await
        .map_err(|e| AgentError::Unreachable(format!("upgrade failed: {e}")))?;
    let since = Instant::now();
    tracing::info!(cluster = %identity.cluster, server = %ctx.server, "tunnel open");
    ctx.set_connected(true);
    let service_ctx = ctx.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let ctx = service_ctx.clone();
        async move { Ok::<_, Infallible>(handle(ctx, req).await) }
    });
    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .max_concurrent_streams(10_000)
        .initial_stream_window_size(1 << 20)
        .initial_connection_window_size(4 << 20)
        .serve_connection(crate::tunnel::coalesce::Coalesce::new(upgraded), service);
    tokio::pin!(conn);
    let ended = tokio::select! {
        r = conn.as_mut() => match r {
            Ok(()) => "the server closed it".to_owned(),
            Err(e) => format!("the connection failed: {e}"),
        },
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), conn.as_mut()).await;
            "the agent closed it".to_owned()
        }
    };
    ctx.set_connected(false);
    tracing::info!(cluster = %identity.cluster, reason = %ended, "tunnel closed");
    Ok(since.elapsed())
}

/// Requests the server sends over the tunnel.
async fn handle(ctx: Arc<Context>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    if let Some(kube) = &ctx.kube {
        if path.starts_with(KUBE_PREFIX) && path[KUBE_PREFIX.len()..].starts_with('/') {
            return super::proxy::kube_request(kube, req).await;
        }
        if let Some(user) = path
            .strip_prefix("/v1/users/")
            .and_then(|r| r.strip_suffix("/access"))
            && req.method() == hyper::Method::POST
        {
            return super::proxy::user_access(kube, user, req).await;
        }
    }
    match req.uri().path() {
        HEARTBEAT_PATH => {
            let beat = Heartbeat {
                agent_version: env!("CARGO_PKG_VERSION").to_owned(),
                kubernetes_version: match &ctx.kube {
                    Some(k) => k.version().await,
                    None => None,
                },
            };
            json_response(StatusCode::OK, &beat)
        }
        ACCOUNTS_PATH => {
            let accounts = AgentAccounts {
                users: ctx
                    .kube
                    .as_ref()
                    .map(|k| k.accounts.users())
                    .unwrap_or_default(),
            };
            json_response(StatusCode::OK, &accounts)
        }
        path => json_response(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"error": {"code": "not_found", "message": format!("the agent has no route {path}")}}),
        ),
    }
}

fn json_response(status: StatusCode, value: &impl serde::Serialize) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut res = Response::new(Body::from(body));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    res
}
