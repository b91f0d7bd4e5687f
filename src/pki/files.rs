//! Reading and writing key material with the right permissions.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::PkiError;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_owned(),
        source,
    }
}

pub fn read_to_string(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(io(path))
}

/// Writes atomically (temporary file, fsync, rename) with the given mode.
fn write_with_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<(), PkiError> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), PkiError> {
    write_with_mode(path, bytes, 0o600)
}

pub fn write_public(path: &Path, bytes: &[u8]) -> Result<(), PkiError> {
    write_with_mode(path, bytes, 0o644)
}

/// A key file someone loosened by hand is tightened again rather than served from.
pub fn ensure_private(path: &Path) -> Result<(), PkiError> {
    let meta = std::fs::metadata(path).map_err(io(path))?;
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(path = %path.display(), "key file was readable by others; setting mode 0600");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io(path))?;
    }
    Ok(())
}

pub fn read_cert_and_key(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), PkiError> {
    let pem = std::fs::read(cert).map_err(io(cert))?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::Invalid {
            path: cert.to_owned(),
            message: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(PkiError::Invalid {
            path: cert.to_owned(),
            message: "no CERTIFICATE block found".into(),
        });
    }
    let key_pem = std::fs::read(key).map_err(io(key))?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| PkiError::Invalid {
        path: key.to_owned(),
        message: format!("no usable private key: {e}"),
    })?;
    Ok((chain, key_der))
}
