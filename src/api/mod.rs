//! The HTTP surface: probes, the REST API under `/api/v1`, and the console fallback.

pub mod access;
pub mod agents;
pub mod audit;
pub mod auth;
pub mod clusters;
pub mod error;
pub mod extract;
pub mod grants;
pub mod groups;
pub mod kubeconfig;
pub mod openapi;
pub mod projects;
pub mod settings;
pub mod sso;
pub mod tokens;
pub mod users;
pub mod views;

use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower_http::request_id::PropagateRequestIdLayer;
use tower_http::sensitive_headers::SetSensitiveHeadersLayer;
use tower_http::trace::TraceLayer;

pub use error::ApiError;

use crate::authz::Permit;
use crate::domain::audit::{Durability, NewEvent};
use crate::domain::org::Subject;
use crate::state::AppState;
use crate::store::{ReadTransaction, StoreError, WriteTransaction};

pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");
/// Bodies above this get 413 before a handler sees them.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The whole application router.
pub fn app(state: AppState) -> Router {
    // DefaultBodyLimit (not a tower limit layer) so oversized bodies get our error shape.
    let api = openapi::routes()
        .into_iter()
        .fold(Router::new(), |r, (route, handler)| {
            r.route(route.path, handler)
        })
        .fallback(api_not_found)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES));

    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .nest("/api/v1", api)
        .nest(
            "/agent/v1",
            agents::routes()
                .fallback(api_not_found)
                .layer(axum::extract::DefaultBodyLimit::max(64 * 1024)),
        )
        .fallback(crate::web::serve)
        .layer(middleware::from_fn(security_headers))
        .layer(middleware::from_fn(request_id_scope))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &Request| {
                let id = req
                    .headers()
                    .get(REQUEST_ID_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
            }),
        )
        .layer(SetSensitiveHeadersLayer::new([
            header::AUTHORIZATION,
            header::COOKIE,
            header::SET_COOKIE,
            HeaderName::from_static("x-csrf-token"),
        ]))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID_HEADER))
        .layer(middleware::map_request(|mut req: Request| async move {
            assign_request_id(&mut req);
            req
        }))
        // Added after the layers, so they do not wrap it: kubectl needs no console headers
        // or cookie redaction, and the stack costs a measurable share of a small request.
        // The relay sets its own request id and span (`relay::entry`).
        .route("/k8s/{cluster}", axum::routing::any(crate::relay::entry))
        .route("/k8s/{cluster}/{*rest}", axum::routing::any(crate::relay::entry))
        .with_state(state)
}

/// Gives the request a fresh id, replacing any the client sent (a client-chosen id could
/// forge audit correlation), and returns it. Every route gets its id here, the relay's too.
pub(crate) fn assign_request_id(req: &mut Request) -> HeaderValue {
    // A version 4 id from the thread's CSPRNG (seeded by the OS): `Uuid::new_v4` asks the
    // kernel for every id, one system call per request.
    let uuid = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let id = HeaderValue::from_bytes(uuid.hyphenated().encode_lower(&mut text).as_bytes())
        .unwrap_or_else(|_| HeaderValue::from_static("-"));
    req.headers_mut().insert(REQUEST_ID_HEADER, id.clone());
    id
}

/// Makes the id visible to error responses. Always a fresh id: a client-sent `x-request-id` could otherwise forge audit correlation.
async fn request_id_scope(req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    error::REQUEST_ID.scope(id, next.run(req)).await
}

async fn security_headers(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=31536000"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    res
}

async fn healthz() -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(serde_json::json!({"status": "ok"})),
    )
}

/// Ready when the database answers and the server is not draining.
async fn readyz(State(state): State<AppState>) -> Response {
    if state.shutdown.is_triggered() {
        return ApiError::unavailable("shutting down").into_response();
    }
    let probe = tokio::time::timeout(
        Duration::from_secs(2),
        state.store.read(crate::store::users::count),
    )
    .await;
    match probe {
        Ok(Ok(_)) => (
            StatusCode::OK,
            [(header::CACHE_CONTROL, "no-store")],
            axum::Json(serde_json::json!({"status": "ready"})),
        )
            .into_response(),
        Ok(Err(e)) => ApiError::internal(e).into_response(),
        Err(_) => ApiError::unavailable("database did not answer in time").into_response(),
    }
}

async fn api_not_found(req: Request) -> ApiError {
    ApiError::not_found(format!(
        "no API route for {} {}",
        req.method(),
        req.uri().path()
    ))
}

/// Appends an audit event; failure to record is an error for the request.
pub async fn record(
    state: &AppState,
    event: NewEvent,
    durability: Durability,
) -> Result<(), ApiError> {
    state
        .audit
        .append(event, durability)
        .await
        .map(|_| ())
        .map_err(ApiError::internal)
}

/// The one path for permitted changes: runs `change` in a write transaction, then records
/// `event` durably. Requiring the [`Permit`] means no handler can change state without
/// having passed authorization.
pub async fn commit<T, F>(
    state: &AppState,
    permit: &Permit,
    mut event: NewEvent,
    change: F,
) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&WriteTransaction) -> Result<T, StoreError> + Send + 'static,
{
    debug_assert_eq!(event.actor.user_id, Some(permit.user_id()));
    match state.store.write(change).await {
        Ok(value) => {
            record(state, event, Durability::Durable).await?;
            Ok(value)
        }
        Err(e) => {
            let err = ApiError::from(e);
            event = event.with_outcome(err.status.as_u16());
            event.details = serde_json::json!({"error": err.code});
            record(state, event, Durability::Durable).await?;
            Err(err)
        }
    }
}

/// Names are DNS-1123 labels.
pub fn validate_name(field: &str, name: &str) -> Result<(), ApiError> {
    crate::domain::names::validate_name(name).map_err(|e| ApiError::invalid(field, e))
}

/// A grant subject's current name (or its id, if it no longer exists).
pub fn subject_name(txn: &ReadTransaction, subject: &Subject) -> Result<String, StoreError> {
    Ok(match subject {
        Subject::User(id) => crate::store::users::get(txn, *id)?.map(|u| u.name),
        Subject::Group(id) => {
            crate::store::named::read::by_id::<crate::domain::org::Group>(txn, &id.to_string())?
                .map(|g| g.name)
        }
    }
    .unwrap_or_else(|| match subject {
        Subject::User(id) | Subject::Group(id) => id.to_string(),
    }))
}

/// Free-text descriptions are bounded so a record stays small.
pub fn check_description(description: &str) -> Result<(), ApiError> {
    if description.chars().count() > 512 {
        return Err(ApiError::invalid(
            "description",
            "must be at most 512 characters",
        ));
    }
    Ok(())
}

/// Looks up a user, group or project by name, or answers 404 naming it.
pub async fn find_named<T>(state: &AppState, name: String) -> Result<T, ApiError>
where
    T: crate::store::named::Named + Send + 'static,
{
    let shown = name.clone();
    state
        .store
        .read(move |txn| crate::store::named::read::by_name::<T>(txn, &name))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("{} {shown} not found", T::KIND)))
}

/// One page of users, groups or projects in name order.
pub async fn page_named<T, V>(
    state: &AppState,
    q: extract::PageQuery,
    view: impl Fn(&T) -> V,
    name_of: impl Fn(&V) -> String,
) -> Result<axum::Json<extract::Page<V>>, ApiError>
where
    T: crate::store::named::Named + Send + 'static,
{
    let limit = q.limit()?;
    let items: Vec<T> = state
        .store
        .read(move |txn| crate::store::named::read::page(txn, q.cursor.as_deref(), limit + 1))
        .await?;
    let views = items.iter().map(view).collect();
    Ok(axum::Json(extract::Page::from_overfetch(
        views, limit, name_of,
    )))
}
