//! The embedded console: files from `web-dist/` compiled into the binary (also in debug
//! builds), hashed assets cached forever, `index.html` never cached, and unknown non-API
//! GETs answered with `index.html` so client-side routes survive a reload.

use axum::body::Body;
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use rust_embed::RustEmbed;

use crate::api::ApiError;

#[derive(RustEmbed)]
#[folder = "web-dist/"]
struct Assets;

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; \
                   form-action 'self'; frame-ancestors 'none'";

/// Paths owned by other parts of the server; they never fall back to the console.
const RESERVED_PREFIXES: &[&str] = &["/api/", "/k8s/", "/agent/"];

pub async fn serve(method: Method, uri: Uri) -> Response {
    let path = uri.path();
    if RESERVED_PREFIXES.iter().any(|p| path.starts_with(p)) {
        return ApiError::not_found(format!("no route for {method} {path}")).into_response();
    }
    if method != Method::GET && method != Method::HEAD {
        return ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{method} is not allowed on {path}"),
        )
        .into_response();
    }
    let key = path.trim_start_matches('/');
    if let Some(file) = (!key.is_empty()).then(|| Assets::get(key)).flatten() {
        let immutable = key.starts_with("assets/");
        return asset_response(file, immutable);
    }
    match Assets::get("index.html") {
        Some(index) => asset_response(index, false),
        None => ApiError::not_found("the console is not part of this build").into_response(),
    }
}

fn asset_response(file: rust_embed::EmbeddedFile, immutable: bool) -> Response {
    let mime = file.metadata.mimetype().to_owned();
    let mut res = Response::new(Body::from(file.data.into_owned()));
    let h = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&mime) {
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if immutable {
            "public, max-age=31536000, immutable"
        } else {
            "no-cache"
        }),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    res
}
