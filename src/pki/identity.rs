//! What a verified peer certificate says, parsed once per connection.

use std::time::Duration;

use rustls_pki_types::CertificateDer;
use x509_parser::prelude::*;

/// The identity a client certificate carries. Only present on a request when rustls verified
/// the chain to ztka's CA; handlers never see unverified certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCertificate {
    pub common_name: String,
    pub organizations: Vec<String>,
    pub units: Vec<String>,
    /// Lower-case hex of the serial number's bytes.
    pub serial: String,
    pub not_before: i64,
    pub not_after: i64,
}

impl PeerCertificate {
    pub fn parse(der: &CertificateDer<'_>) -> Result<Self, String> {
        let (_, cert) = X509Certificate::from_der(der.as_ref()).map_err(|e| e.to_string())?;
        let subject = cert.subject();
        let common_name = subject
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .unwrap_or_default()
            .to_owned();
        let organizations = subject
            .iter_organization()
            .filter_map(|o| o.as_str().ok().map(str::to_owned))
            .collect();
        let units = subject
            .iter_organizational_unit()
            .filter_map(|o| o.as_str().ok().map(str::to_owned))
            .collect();
        Ok(Self {
            common_name,
            organizations,
            units,
            serial: hex::encode(cert.raw_serial()),
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
        })
    }
}

/// Ok when the certificate names every one of `names` and stays valid for `margin`.
pub fn covers_and_fresh(
    der: &CertificateDer<'_>,
    names: &[String],
    margin: Duration,
) -> Result<(), String> {
    let (_, cert) = X509Certificate::from_der(der.as_ref()).map_err(|e| e.to_string())?;
    let deadline = ::time::OffsetDateTime::now_utc() + margin;
    if cert.validity().not_after.timestamp() < deadline.unix_timestamp() {
        return Err("it expires soon".into());
    }
    let mut present: Vec<String> = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => present.push(d.to_string()),
                GeneralName::IPAddress(bytes) => {
                    let ip = match bytes.len() {
                        4 => <[u8; 4]>::try_from(*bytes).map(std::net::IpAddr::from).ok(),
                        16 => <[u8; 16]>::try_from(*bytes)
                            .map(std::net::IpAddr::from)
                            .ok(),
                        _ => None,
                    };
                    if let Some(ip) = ip {
                        present.push(ip.to_string());
                    }
                }
                _ => {}
            }
        }
    }
    match names.iter().find(|n| !present.contains(n)) {
        Some(missing) => Err(format!("it does not name {missing}")),
        None => Ok(()),
    }
}

/// A DER certificate as PEM text.
pub fn to_pem(der: &CertificateDer<'_>) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}
