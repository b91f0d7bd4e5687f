//! The agent's identity: its private key and the certificate ztka issued for it, kept in a
//! 0600 file outside a cluster or in the `ztka-agent-identity` Secret inside one.

use std::path::PathBuf;

use http_body_util::Full;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::AgentError;
use crate::client::HttpsClient;
use crate::domain::cluster::{AGENT_ORGANIZATION, bootstrap_token_cluster};
use crate::tunnel::{IssuedIdentity, REGISTER_PATH, RegisterRequest, RenewRequest, renew_path};

pub const IDENTITY_FILE: &str = "identity.json";
const SECRET_KEY: &str = "identity.json";

#[derive(Clone, Serialize, Deserialize)]
pub struct Identity {
    pub cluster_id: Uuid,
    pub cluster: String,
    pub project: String,
    pub key_pem: String,
    pub certificate_pem: String,
    #[serde(with = "time::serde::rfc3339")]
    pub issued_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("cluster_id", &self.cluster_id)
            .field("cluster", &self.cluster)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl Identity {
    fn from_issued(issued: IssuedIdentity, key_pem: String) -> Self {
        Self {
            cluster_id: issued.cluster_id,
            cluster: issued.cluster,
            project: issued.project,
            key_pem,
            certificate_pem: issued.certificate,
            issued_at: OffsetDateTime::now_utc(),
            not_after: issued.not_after,
        }
    }

    /// The certificate chain and key for rustls.
    pub fn tls_identity(
        &self,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), AgentError> {
        let chain = CertificateDer::pem_slice_iter(self.certificate_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| AgentError::Identity(format!("stored certificate: {e}")))?;
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|e| AgentError::Identity(format!("stored key: {e}")))?;
        Ok((chain, key))
    }

    /// When to renew: once less than a third of the certificate's lifetime is left.
    pub fn renewal_due(&self) -> OffsetDateTime {
        let lifetime = self.not_after - self.issued_at;
        self.not_after - lifetime / 3
    }

    pub fn needs_renewal(&self, now: OffsetDateTime) -> bool {
        now > self.renewal_due()
    }
}

/// Where the identity lives.
pub enum IdentityStore {
    File(PathBuf),
    Secret {
        api: Box<kube::Api<k8s_openapi::api::core::v1::Secret>>,
        name: String,
    },
}

impl IdentityStore {
    pub fn describe(&self) -> String {
        match self {
            IdentityStore::File(p) => p.display().to_string(),
            IdentityStore::Secret { name, .. } => format!("Secret {name}"),
        }
    }

    pub async fn load(&self) -> Result<Option<Identity>, AgentError> {
        let raw: Option<Vec<u8>> = match self {
            IdentityStore::File(path) => match tokio::fs::read(path).await {
                Ok(bytes) => Some(bytes),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => {
                    return Err(AgentError::Identity(format!(
                        "cannot read {}: {e}",
                        path.display()
                    )));
                }
            },
            IdentityStore::Secret { api, name } => {
                let secret = api
                    .get_opt(name)
                    .await
                    .map_err(|e| AgentError::Identity(format!("cannot read Secret {name}: {e}")))?;
                secret
                    .and_then(|s| s.data)
                    .and_then(|mut d| d.remove(SECRET_KEY))
                    .map(|b| b.0)
            }
        };
        match raw {
            None => Ok(None),
            Some(bytes) if bytes.is_empty() => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                AgentError::Identity(format!("{} is unreadable: {e}", self.describe()))
            }),
        }
    }

    pub async fn save(&self, identity: &Identity) -> Result<(), AgentError> {
        let bytes =
            serde_json::to_vec_pretty(identity).map_err(|e| AgentError::Identity(e.to_string()))?;
        match self {
            IdentityStore::File(path) => write_private(path, &bytes).await,
            IdentityStore::Secret { api, name } => {
                use base64::Engine as _;
                let patch = serde_json::json!({
                    "data": { SECRET_KEY: base64::engine::general_purpose::STANDARD.encode(&bytes) }
                });
                api.patch(
                    name,
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(&patch),
                )
                .await
                .map(|_| ())
                .map_err(|e| AgentError::Identity(format!("cannot update Secret {name}: {e}")))
            }
        }
    }
}

/// Writes `bytes` to `path` with mode 0600, atomically (temporary file and rename).
async fn write_private(path: &std::path::Path, bytes: &[u8]) -> Result<(), AgentError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = path.to_owned();
    let bytes = bytes.to_vec();
    tokio::task::spawn_blocking(move || {
        let err = |e: std::io::Error| {
            AgentError::Identity(format!("cannot write {}: {e}", path.display()))
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let tmp = path.with_extension("tmp");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(err)?;
        file.write_all(&bytes).map_err(err)?;
        file.sync_all().map_err(err)?;
        std::fs::rename(&tmp, &path).map_err(err)
    })
    .await
    .map_err(|e| AgentError::Identity(e.to_string()))?
}

/// Spends the bootstrap token for a certificate.
pub async fn register(
    client: &HttpsClient,
    server: &str,
    token: &str,
) -> Result<Identity, AgentError> {
    let cluster_id = bootstrap_token_cluster(token).ok_or_else(|| {
        AgentError::Usage("the bootstrap token is malformed (expected ztkab_…)".into())
    })?;
    let (key, csr) = crate::pki::csr::create(&cluster_id.to_string(), AGENT_ORGANIZATION)
        .map_err(|e| AgentError::Identity(e.to_string()))?;
    let body = RegisterRequest {
        token: token.to_owned(),
        csr,
        agent_version: Some(env!("CARGO_PKG_VERSION").to_owned()),
    };
    let issued = post_json(client, &format!("{server}{REGISTER_PATH}"), &body).await?;
    Ok(Identity::from_issued(issued, key.serialize_pem()))
}

/// A fresh certificate for a fresh key, authenticated by the current certificate.
pub async fn renew(
    client: &HttpsClient,
    server: &str,
    current: &Identity,
) -> Result<Identity, AgentError> {
    let (key, csr) = crate::pki::csr::create(&current.cluster_id.to_string(), AGENT_ORGANIZATION)
        .map_err(|e| AgentError::Identity(e.to_string()))?;
    let url = format!("{server}{}", renew_path(current.cluster_id));
    let issued = post_json(client, &url, &RenewRequest { csr }).await?;
    Ok(Identity::from_issued(issued, key.serialize_pem()))
}

async fn post_json(
    client: &HttpsClient,
    url: &str,
    body: &impl Serialize,
) -> Result<IssuedIdentity, AgentError> {
    let json = serde_json::to_vec(body).map_err(|e| AgentError::Identity(e.to_string()))?;
    let req = hyper::Request::post(url)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(hyper::header::USER_AGENT, super::user_agent())
        .body(Full::new(bytes::Bytes::from(json)))
        .map_err(|e| AgentError::Usage(format!("invalid server URL {url}: {e}")))?;
    let res = client
        .send(req)
        .await
        .map_err(|e| AgentError::Unreachable(e.to_string()))?;
    if !res.status().is_success() {
        return Err(AgentError::Refused {
            status: res.status().as_u16(),
            message: super::error_message(res.body()),
        });
    }
    serde_json::from_slice(res.body())
        .map_err(|e| AgentError::Identity(format!("unreadable answer from the server: {e}")))
}
