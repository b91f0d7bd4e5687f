//! `GET /api/v1/kubeconfig`: the caller's kubeconfig, with one cluster and context per
//! cluster they can reach through the relay and a freshly issued client certificate.

use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::json;

use super::extract::Query;
use super::{ApiError, record};
use crate::authn::caller::Caller;
use crate::domain::access::ClusterAccess;
use crate::domain::audit::{Durability, Target};
use crate::domain::cluster::{ISSUED_PREFIX, USER_ORGANIZATION};
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
    let cert = state
        .pki
        .issue_client_cert_with_unit(
            &key,
            &caller.user.id.to_string(),
            &[USER_ORGANIZATION.to_owned()],
            Some(&format!(
                "{ISSUED_PREFIX}{}",
                time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000
            )),
            Duration::from_secs(validity),
        )
        .map_err(ApiError::internal)?;
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
