//! The embedded console: files from `web-dist/` compiled into the binary (also in debug
//! builds), hashed assets cached forever, `index.html` never cached, and unknown non-API
//! GETs answered with `index.html` so client-side routes survive a reload. Missing files
//! under `assets/` are 404s: a stale page asking for an old bundle must not get HTML back.

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use rust_embed::RustEmbed;

use crate::api::ApiError;

#[derive(RustEmbed)]
#[folder = "web-dist/"]
struct Assets;

/// No inline script or style, nothing from other origins; the console's build emits only files.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; \
                   form-action 'self'; frame-ancestors 'none'; require-trusted-types-for 'script'";

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
    let hashed = key.starts_with("assets/");
    if let Some(file) = (!key.is_empty()).then(|| Assets::get(key)).flatten() {
        return asset_response(file, hashed);
    }
    if hashed {
        return ApiError::not_found(format!("no console asset {path}")).into_response();
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
    h.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        HeaderName::from_static("cross-origin-resource-policy"),
        HeaderValue::from_static("same-origin"),
    );
    res
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    async fn get(path: &str) -> Response {
        serve(Method::GET, path.parse().unwrap()).await
    }

    fn index_html() -> String {
        String::from_utf8(Assets::get("index.html").unwrap().data.into_owned()).unwrap()
    }

    #[tokio::test]
    async fn deep_links_get_the_uncached_index_with_the_policy() {
        let res = get("/projects/prod/clusters/eu-1").await;
        assert_eq!(res.status(), StatusCode::OK);
        let h = res.headers();
        assert_eq!(h[header::CACHE_CONTROL], "no-cache");
        assert_eq!(h[header::CONTENT_TYPE], "text/html");
        assert_eq!(h[header::CONTENT_SECURITY_POLICY], CSP);
        assert_eq!(h["cross-origin-opener-policy"], "same-origin");
    }

    #[tokio::test]
    async fn hashed_assets_are_immutable_and_missing_ones_are_not_found() {
        let asset = Assets::iter()
            .find(|k| k.starts_with("assets/") && k.ends_with(".js"))
            .expect("the console build has a script under assets/");
        let res = get(&format!("/{asset}")).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(
            res.headers()[header::CACHE_CONTROL],
            "public, max-age=31536000, immutable"
        );
        assert_eq!(res.headers()[header::CONTENT_TYPE], "text/javascript");

        let res = get("/assets/index-00000000.js").await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
        assert!(
            res.headers()
                .get(header::CACHE_CONTROL)
                .is_none_or(|v| !v.to_str().unwrap().contains("immutable"))
        );
    }

    /// The policy forbids inline code, so the committed build must not contain any, and every
    /// file `index.html` names must be embedded.
    #[test]
    fn the_committed_build_fits_the_policy() {
        let html = index_html();
        let lower = html.to_ascii_lowercase();
        assert!(!lower.contains("<style"), "inline <style> in index.html");
        assert!(
            !lower.contains(" style="),
            "inline style attribute in index.html"
        );
        assert!(
            !lower.contains("javascript:"),
            "javascript: URL in index.html"
        );
        let mut scripts = 0;
        for tag in lower.split("<script").skip(1) {
            let open = tag.split('>').next().unwrap();
            assert!(
                open.contains(" src="),
                "inline <script> in index.html: {open}"
            );
            scripts += 1;
        }
        assert!(scripts >= 1, "index.html loads no script");
        for attr in ["src=\"", "href=\""] {
            for part in html.split(attr).skip(1) {
                let url = part.split('"').next().unwrap();
                assert!(url.starts_with('/'), "{url} is not served by this origin");
                assert!(
                    Assets::get(url.trim_start_matches('/')).is_some(),
                    "index.html names {url}, which is not embedded"
                );
            }
        }
    }
}
