//! `GET /api/v1/kubeconfig`: the caller's kubeconfig, with one cluster and context per
//! cluster they can reach through the relay and a freshly issued client certificate.

use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;

use super::extract::{Page, Path, Query};
use super::{ApiError, access, find_named, record};
use crate::authn::caller::Caller;
use crate::authz::{Act, Obj};
use crate::domain::access::ClusterAccess;
use crate::domain::audit::{Durability, Target};
use crate::domain::cluster::{ISSUED_PREFIX, USER_ORGANIZATION};
use crate::domain::user::{ClientCertificate, User};
use crate::state::AppState;

/// Longest validity an administrator can set for one user (one year).
pub const MAX_VALIDITY_SECS: u64 = 365 * 24 * 3600;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubeconfigQuery {
    /// Only this cluster.
    pub cluster: Option<String>,
    /// Default namespace of the contexts.
    pub namespace: Option<String>,
}

pub async fn download(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<KubeconfigQuery>,
) -> Result<Response, ApiError> {
    if let Some(ns) = &q.namespace {
        super::validate_name("namespace", ns)?;
    }
    let clusters = state
        .store
        .read(crate::store::clusters::with_projects)
        .await?;
    let grants = state.authz.effective_grants(caller.user.id);
    let reachable: Vec<(String, String)> = clusters
        .into_iter()
        .map(|(c, project)| (c.name, project))
        .filter(|(_, project)| !ClusterAccess::from_grants(&grants, project).is_none())
        .filter(|(name, _)| q.cluster.as_ref().is_none_or(|c| c == name))
        .collect();
    if let Some(wanted) = &q.cluster
        && reachable.is_empty()
    {
        return Err(ApiError::not_found(format!(
            "cluster {wanted} not found or not reachable by {}",
            caller.user.name
        )));
    }
    let validity = caller
        .user
        .kubeconfig_validity_secs
        .unwrap_or(state.settings().kubeconfig_validity_secs);
    let key = rcgen::KeyPair::generate().map_err(ApiError::internal)?;
    // The issue time, to the millisecond, in the certificate and in its record: a
    // revocation voids what was issued before it.
    let now = OffsetDateTime::now_utc();
    let issued_at = now - time::Duration::nanoseconds(i64::from(now.nanosecond() % 1_000_000));
    let issued_ms = crate::domain::user::unix_millis(issued_at);
    let cert = state
        .pki
        .issue_client_cert_with_unit(
            &key,
            &caller.user.id.to_string(),
            &[USER_ORGANIZATION.to_owned()],
            Some(&format!("{ISSUED_PREFIX}{issued_ms}")),
            Duration::from_secs(validity),
        )
        .map_err(ApiError::internal)?;
    let issued = ClientCertificate {
        serial: cert.serial.clone(),
        user_id: caller.user.id,
        issued_at,
        expires_at: cert.not_after,
        clusters: reachable.iter().map(|(n, _)| n.clone()).collect(),
        revoked_at: None,
    };
    state
        .store
        .write(move |txn| crate::store::certs::insert(txn, &issued))
        .await?;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    let ca = b64(&state.pki.server_trust_pem());
    let user = format!("ztka-{}", caller.user.name);
    let base = &state.config.external_url.url;
    let mut kube_clusters = Vec::new();
    let mut contexts = Vec::new();
    for (name, _) in &reachable {
        kube_clusters.push(json!({
            "name": name,
            "cluster": {"server": format!("{base}/k8s/{name}"), "certificate-authority-data": ca},
        }));
        let mut context = json!({"cluster": name, "user": user});
        if let Some(ns) = &q.namespace {
            context["namespace"] = json!(ns);
        }
        contexts.push(json!({"name": name, "context": context}));
    }
    let doc = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": kube_clusters,
        "contexts": contexts,
        "current-context": reachable.first().map(|(n, _)| n.clone()).unwrap_or_default(),
        "users": [{
            "name": user,
            "user": {
                "client-certificate-data": b64(&cert.pem),
                "client-key-data": b64(&key.serialize_pem()),
            },
        }],
        "preferences": {},
    });
    let yaml = serde_saphyr::to_string(&doc).map_err(ApiError::internal)?;
    let mut event = caller.event(
        "kubeconfig.download",
        Target {
            kind: "kubeconfig".into(),
            name: Some(caller.user.name.clone()),
            cluster: q.cluster.clone(),
            namespace: q.namespace.clone(),
            ..Target::default()
        },
    );
    event.details = json!({
        "serial": cert.serial,
        "not_after": cert.not_after.unix_timestamp(),
        "clusters": reachable.iter().map(|(n, _)| n).collect::<Vec<_>>(),
    });
    record(&state, event, Durability::Durable).await?;
    let filename = match &q.cluster {
        Some(c) => format!("attachment; filename=\"{user}-{c}.kubeconfig\""),
        None => format!("attachment; filename=\"{user}.kubeconfig\""),
    };
    Ok((
        [
            (header::CONTENT_TYPE, "application/yaml".to_owned()),
            (header::CACHE_CONTROL, "no-store".to_owned()),
            (header::CONTENT_DISPOSITION, filename),
        ],
        yaml,
    )
        .into_response())
}

/// A client certificate from a kubeconfig download, as the API shows it.
#[derive(Debug, Serialize)]
pub struct CertificateView {
    pub serial: String,
    #[serde(with = "time::serde::rfc3339")]
    pub issued_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    pub clusters: Vec<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    /// Accepted by the relay: neither revoked on its own nor issued before the user's
    /// credentials were revoked.
    pub active: bool,
}

async fn certificates(
    state: &AppState,
    user: &User,
) -> Result<axum::Json<Page<CertificateView>>, ApiError> {
    let id = user.id;
    let certs = state
        .store
        .read(move |txn| crate::store::certs::of_user(txn, id))
        .await?;
    let items = certs
        .into_iter()
        .map(|c| CertificateView {
            active: c.is_accepted(user),
            serial: c.serial,
            issued_at: c.issued_at,
            expires_at: c.expires_at,
            clusters: c.clusters,
            revoked_at: c.revoked_at,
        })
        .collect();
    Ok(axum::Json(Page {
        items,
        next_cursor: None,
    }))
}

/// `GET /api/v1/kubeconfig/certificates`: the caller's unexpired certificates.
pub async fn own_certificates(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<axum::Json<Page<CertificateView>>, ApiError> {
    certificates(&state, &caller.user).await
}

/// `GET /api/v1/users/{name}/kubeconfig/certificates`.
pub async fn user_certificates(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<axum::Json<Page<CertificateView>>, ApiError> {
    access::org(&state, &caller, Obj::Users, Act::Read).await?;
    let user = find_named::<User>(&state, name).await?;
    certificates(&state, &user).await
}

/// `POST /api/v1/kubeconfig/certificates/{serial}/revoke`: one of the caller's own (a lost
/// laptop), leaving their other kubeconfigs working.
pub async fn revoke_own_certificate(
    State(state): State<AppState>,
    caller: Caller,
    Path(serial): Path<String>,
) -> Result<axum::http::StatusCode, ApiError> {
    revoke_certificate(&state, &caller, &caller.user, &serial).await
}

/// `POST /api/v1/users/{name}/kubeconfig/certificates/{serial}/revoke`.
pub async fn revoke_user_certificate(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, serial)): Path<(String, String)>,
) -> Result<axum::http::StatusCode, ApiError> {
    access::org(&state, &caller, Obj::Users, Act::Update).await?;
    let user = find_named::<User>(&state, name).await?;
    revoke_certificate(&state, &caller, &user, &serial).await
}

/// Revokes one certificate: the relay refuses it from before the change is committed, and
/// the streams opened with it end once it is.
async fn revoke_certificate(
    state: &AppState,
    caller: &Caller,
    user: &User,
    serial: &str,
) -> Result<axum::http::StatusCode, ApiError> {
    let serial = serial.to_ascii_lowercase();
    if serial.is_empty() || serial.len() > 64 || !serial.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::invalid(
            "serial",
            "must be the certificate's serial number in hex",
        ));
    }
    let set = state.revoked_serials.clone();
    let (id, at, key) = (user.id, OffsetDateTime::now_utc(), serial.clone());
    let revoked = state
        .store
        .write(move |txn| {
            let cert = crate::store::certs::revoke(txn, id, &key, at)?;
            // The relay refuses it from before the commit: a request deciding meanwhile
            // sees the serial here, or the committed change (which makes it decide again).
            if let Some(c) = &cert {
                set.insert(&c.serial, c.expires_at);
            }
            Ok(cert)
        })
        .await;
    let cert = match revoked {
        Ok(Some(cert)) => cert,
        Ok(None) => {
            let mut event = caller
                .event("kubeconfig.revoke", Target::user(&user.name))
                .with_outcome(404);
            event.details = json!({ "serial": serial });
            record(state, event, Durability::Fast).await?;
            return Err(ApiError::not_found(format!(
                "user {} has no unexpired certificate with serial {serial}",
                user.name
            )));
        }
        Err(e) => {
            // The serial may be in the set without the commit: it stays only if the store
            // has it revoked (by this call or another).
            let key = serial.clone();
            let stored = state
                .store
                .read(move |txn| crate::store::certs::is_revoked(txn, &key))
                .await;
            if matches!(stored, Ok(false)) {
                state.revoked_serials.remove(&serial);
            }
            return Err(e.into());
        }
    };
    let closed = state.streams.close_serial(&serial);
    if closed > 0 {
        tracing::info!(user = %user.name, closed, "closed relay streams of a revoked certificate");
    }
    let mut event = caller.event("kubeconfig.revoke", Target::user(&user.name));
    event.details = json!({
        "serial": cert.serial,
        "issued_at": cert.issued_at.unix_timestamp(),
    });
    record(state, event, Durability::Durable).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}
