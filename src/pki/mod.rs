//! ztka's own certificate authority and TLS configuration.
//!
//! On first start the CA (ECDSA P-256) and a server certificate are written to the data
//! directory; later starts load them. The CA is never regenerated. The server certificate is
//! reissued only when the configured host is missing from it or it is about to expire. An
//! operator may supply their own server certificate instead.

pub mod csr;
mod files;
pub mod identity;
pub mod sealing;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use time::OffsetDateTime;

use crate::config::ExternalUrl;

pub const CA_CERT_FILE: &str = "ca.crt";
pub const CA_KEY_FILE: &str = "ca.key";
pub const SERVER_CERT_FILE: &str = "server.crt";
pub const SERVER_KEY_FILE: &str = "server.key";

const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
const SERVER_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
const SERVER_RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("TLS configuration failed: {0}")]
    Tls(String),
}

/// The loaded CA and the server's certificate and key.
pub struct Pki {
    ca_cert_pem: String,
    ca_cert_der: CertificateDer<'static>,
    ca_key: KeyPair,
    server_chain: Vec<CertificateDer<'static>>,
    server_key: PrivateKeyDer<'static>,
    /// True when the operator supplied the server certificate.
    pub operator_certificate: bool,
    /// Seals secrets stored in the database; keyed from the CA key.
    pub sealer: sealing::Sealer,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki")
            .field("operator_certificate", &self.operator_certificate)
            .finish_non_exhaustive()
    }
}

impl Pki {
    /// Loads the CA and server certificate from `data_dir`, creating what is missing.
    pub fn load_or_init(
        data_dir: &Path,
        external: &ExternalUrl,
        operator_files: Option<&(PathBuf, PathBuf)>,
    ) -> Result<Self, PkiError> {
        let (ca_cert_pem, ca_key) = load_or_create_ca(data_dir)?;
        let ca_cert_der = CertificateDer::from_pem_slice(ca_cert_pem.as_bytes()).map_err(|e| {
            PkiError::Invalid {
                path: data_dir.join(CA_CERT_FILE),
                message: e.to_string(),
            }
        })?;
        let (server_chain, server_key, operator_certificate) = match operator_files {
            Some((cert, key)) => {
                let (chain, key) = files::read_cert_and_key(cert, key)?;
                (chain, key, true)
            }
            None => {
                let (chain, key) = load_or_create_server_cert(
                    data_dir,
                    &ca_cert_pem,
                    &ca_key,
                    &server_names(external),
                )?;
                (chain, key, false)
            }
        };
        let sealer =
            sealing::Sealer::derive(&ca_key.serialize_der()).map_err(|e| PkiError::Invalid {
                path: data_dir.join(CA_KEY_FILE),
                message: e.to_string(),
            })?;
        Ok(Self {
            sealer,
            ca_cert_pem,
            ca_cert_der,
            ca_key,
            server_chain,
            server_key,
            operator_certificate,
        })
    }

    pub fn ca_cert_pem(&self) -> &str {
        &self.ca_cert_pem
    }

    pub fn ca_cert_der(&self) -> &CertificateDer<'static> {
        &self.ca_cert_der
    }

    /// PEM of the certificates a client should trust for the server: ztka's CA, or with an
    /// operator-supplied certificate, the last certificate of its chain.
    pub fn server_trust_pem(&self) -> String {
        if !self.operator_certificate {
            return self.ca_cert_pem.clone();
        }
        self.server_chain
            .last()
            .map(|c| identity::to_pem(c))
            .unwrap_or_else(|| self.ca_cert_pem.clone())
    }

    /// Base64 SHA-256 of the server certificate's public key (curl's `--pinnedpubkey`).
    pub fn server_key_pin(&self) -> String {
        use base64::Engine as _;
        use sha2::Digest as _;
        let spki = self
            .server_chain
            .first()
            .and_then(|der| {
                x509_parser::parse_x509_certificate(der.as_ref())
                    .ok()
                    .map(|(_, c)| c.public_key().raw.to_vec())
            })
            .unwrap_or_default();
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(spki))
    }

    /// Issues a certificate for `public_key` signed by the CA, e.g. a user's or an agent's
    /// client certificate. The identity goes into the subject; nothing else is trusted.
    pub fn issue_client_cert(
        &self,
        public_key: &impl rcgen::PublicKeyData,
        common_name: &str,
        organizations: &[String],
        validity: Duration,
    ) -> Result<IssuedCert, PkiError> {
        self.issue_client_cert_with_unit(public_key, common_name, organizations, None, validity)
    }

    /// As [`Pki::issue_client_cert`], with an organizational unit (`OU`) in the subject.
    pub fn issue_client_cert_with_unit(
        &self,
        public_key: &impl rcgen::PublicKeyData,
        common_name: &str,
        organizations: &[String],
        unit: Option<&str>,
        validity: Duration,
    ) -> Result<IssuedCert, PkiError> {
        let mut params = CertificateParams::default();
        if let Some(unit) = unit {
            params
                .distinguished_name
                .push(DnType::OrganizationalUnitName, unit);
        }
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        for org in organizations {
            params
                .distinguished_name
                .push(DnType::OrganizationName, org.as_str());
        }
        let now = OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(5);
        params.not_after = now + validity;
        params.serial_number = Some(random_serial());
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let issuer = Issuer::from_ca_cert_pem(&self.ca_cert_pem, &self.ca_key)?;
        let cert = params.signed_by(public_key, &issuer)?;
        let serial = params
            .serial_number
            .as_ref()
            .map(|s| hex::encode(s.as_ref()))
            .unwrap_or_default();
        Ok(IssuedCert {
            pem: cert.pem(),
            serial,
            not_after: params.not_after,
        })
    }

    /// The rustls configuration for the one HTTPS listener: TLS 1.2 and 1.3, ALPN h2 and
    /// http/1.1, client certificates optional but, when sent, they must chain to ztka's CA.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, PkiError> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.ca_cert_der.clone())
            .map_err(|e| PkiError::Tls(e.to_string()))?;
        let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
            .allow_unauthenticated()
            .build()
            .map_err(|e| PkiError::Tls(e.to_string()))?;
        let mut config = rustls::ServerConfig::builder_with_protocol_versions(&[
            &rustls::version::TLS13,
            &rustls::version::TLS12,
        ])
        .with_client_cert_verifier(verifier)
        .with_single_cert(self.server_chain.clone(), self.server_key.clone_key())
        .map_err(|e| PkiError::Tls(e.to_string()))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

pub struct IssuedCert {
    pub pem: String,
    pub serial: String,
    pub not_after: OffsetDateTime,
}

/// Names the server certificate must cover: the external host plus loopback, so local
/// probes (`ztka healthcheck`, tests) verify too.
pub fn server_names(external: &ExternalUrl) -> Vec<String> {
    let mut names = vec![external.host.clone()];
    for n in ["localhost", "127.0.0.1", "::1"] {
        if !names.iter().any(|x| x == n) {
            names.push(n.to_owned());
        }
    }
    names
}

/// A positive 16-byte serial (the top bit cleared so DER does not read it as negative).
fn random_serial() -> SerialNumber {
    use rand::RngCore;
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

fn load_or_create_ca(data_dir: &Path) -> Result<(String, KeyPair), PkiError> {
    let cert_path = data_dir.join(CA_CERT_FILE);
    let key_path = data_dir.join(CA_KEY_FILE);
    if cert_path.exists() || key_path.exists() {
        let cert = files::read_to_string(&cert_path)?;
        let key_pem = files::read_to_string(&key_path)?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| PkiError::Invalid {
            path: key_path.clone(),
            message: e.to_string(),
        })?;
        files::ensure_private(&key_path)?;
        return Ok((cert, key));
    }
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "ztka CA");
    params
        .distinguished_name
        .push(DnType::OrganizationName, "ztka");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + CA_VALIDITY;
    params.serial_number = Some(random_serial());
    let cert = params.self_signed(&key)?;
    // Key first: a crash between the two writes leaves a key without a certificate, which the
    // next start reports instead of silently minting a second CA.
    files::write_private(&key_path, key.serialize_pem().as_bytes())?;
    files::write_public(&cert_path, cert.pem().as_bytes())?;
    tracing::info!(path = %cert_path.display(), "created certificate authority");
    Ok((cert.pem(), key))
}

fn load_or_create_server_cert(
    data_dir: &Path,
    ca_pem: &str,
    ca_key: &KeyPair,
    names: &[String],
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), PkiError> {
    let cert_path = data_dir.join(SERVER_CERT_FILE);
    let key_path = data_dir.join(SERVER_KEY_FILE);
    if cert_path.exists() && key_path.exists() {
        let (chain, key) = files::read_cert_and_key(&cert_path, &key_path)?;
        files::ensure_private(&key_path)?;
        match identity::covers_and_fresh(&chain[0], names, SERVER_RENEW_BEFORE) {
            Ok(()) => return Ok((chain, key)),
            Err(reason) => tracing::info!(%reason, "reissuing the server certificate"),
        }
    }
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::new(names.to_vec())?;
    params
        .distinguished_name
        .push(DnType::CommonName, names[0].as_str());
    let now = OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + SERVER_VALIDITY;
    params.serial_number = Some(random_serial());
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let issuer = Issuer::from_ca_cert_pem(ca_pem, ca_key)?;
    let cert = params.signed_by(&key, &issuer)?;
    files::write_private(&key_path, key.serialize_pem().as_bytes())?;
    files::write_public(&cert_path, cert.pem().as_bytes())?;
    tracing::info!(names = ?names, "issued server certificate");
    let chain = vec![cert.der().clone()];
    let key = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).map_err(|e| {
        PkiError::Invalid {
            path: key_path,
            message: e.to_string(),
        }
    })?;
    Ok((chain, key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn ext(host: &str) -> ExternalUrl {
        ExternalUrl::parse(&format!("https://{host}:8443")).unwrap()
    }

    #[test]
    fn first_start_creates_then_reuses() {
        let dir = tempfile::tempdir().unwrap();
        let a = Pki::load_or_init(dir.path(), &ext("ztka.example"), None).unwrap();
        let mode = |f: &str| {
            std::fs::metadata(dir.path().join(f))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode(CA_KEY_FILE), 0o600);
        assert_eq!(mode(SERVER_KEY_FILE), 0o600);
        let server1 = std::fs::read(dir.path().join(SERVER_CERT_FILE)).unwrap();
        let b = Pki::load_or_init(dir.path(), &ext("ztka.example"), None).unwrap();
        assert_eq!(a.ca_cert_pem(), b.ca_cert_pem());
        assert_eq!(
            server1,
            std::fs::read(dir.path().join(SERVER_CERT_FILE)).unwrap()
        );
        // A new external host reissues the server certificate but never the CA.
        let c = Pki::load_or_init(dir.path(), &ext("other.example"), None).unwrap();
        assert_eq!(a.ca_cert_pem(), c.ca_cert_pem());
        assert_ne!(
            server1,
            std::fs::read(dir.path().join(SERVER_CERT_FILE)).unwrap()
        );
        c.server_config().unwrap();
    }

    #[test]
    fn client_cert_carries_identity() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::load_or_init(dir.path(), &ext("localhost"), None).unwrap();
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let issued = pki
            .issue_client_cert(
                &key,
                "user:1234",
                &["ztka:users".into()],
                Duration::from_secs(3600),
            )
            .unwrap();
        let der = CertificateDer::from_pem_slice(issued.pem.as_bytes()).unwrap();
        let id = identity::PeerCertificate::parse(&der).unwrap();
        assert_eq!(id.common_name, "user:1234");
        assert_eq!(id.organizations, vec!["ztka:users".to_string()]);
        assert_eq!(id.serial, issued.serial);
    }
}
