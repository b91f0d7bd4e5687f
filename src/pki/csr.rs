//! Certificate signing requests: the agent creates them, the server reads them. The server
//! takes only the public key and checks the requested subject; every field of the issued
//! certificate is the server's own choice.

use rcgen::{CertificateParams, CertificateSigningRequestParams, DnType, DnValue, KeyPair};
use rustls_pki_types::CertificateSigningRequestDer;
use rustls_pki_types::pem::PemObject;

/// What a verified CSR asks for.
#[derive(Debug)]
pub struct SigningRequest {
    pub public_key: rcgen::PublicKey,
    pub common_name: Option<String>,
    pub organizations: Vec<String>,
    /// Subject alternative names requested (client certificates never carry any).
    pub alt_names: usize,
}

/// Parses a PEM CSR and verifies its self-signature (proof that the sender holds the key).
pub fn parse(pem: &str) -> Result<SigningRequest, String> {
    let der = CertificateSigningRequestDer::from_pem_slice(pem.as_bytes())
        .map_err(|_| "it is not a PEM-encoded PKCS#10 certificate request".to_owned())?;
    parse_der(&der)
}

fn parse_der(der: &CertificateSigningRequestDer<'_>) -> Result<SigningRequest, String> {
    let csr = CertificateSigningRequestParams::from_der(der).map_err(|e| match e {
        rcgen::Error::InvalidCertificationRequestSignature => {
            "its signature does not match its public key".to_owned()
        }
        _ => "it is not a PEM-encoded PKCS#10 certificate request".to_owned(),
    })?;
    let mut common_name = None;
    let mut organizations = Vec::new();
    for (kind, value) in csr.params.distinguished_name.iter() {
        let text = dn_text(value).ok_or("its subject has a value that is not text")?;
        match kind {
            DnType::CommonName if common_name.is_none() => common_name = Some(text),
            DnType::OrganizationName => organizations.push(text),
            _ => return Err(format!("its subject asks for an unexpected field {kind:?}")),
        }
    }
    Ok(SigningRequest {
        public_key: csr.public_key,
        common_name,
        organizations,
        alt_names: csr.params.subject_alt_names.len(),
    })
}

fn dn_text(value: &DnValue) -> Option<String> {
    match value {
        DnValue::Utf8String(s) => Some(s.clone()),
        DnValue::PrintableString(s) => Some(s.as_str().to_owned()),
        DnValue::Ia5String(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// A new P-256 key and a CSR for `CN=common_name, O=organization`, PEM-encoded.
pub fn create(common_name: &str, organization: &str) -> Result<(KeyPair, String), rcgen::Error> {
    let key = KeyPair::generate()?;
    let pem = request_for(&key, common_name, organization)?;
    Ok((key, pem))
}

/// A CSR for an existing key.
pub fn request_for(
    key: &KeyPair,
    common_name: &str,
    organization: &str,
) -> Result<String, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params
        .distinguished_name
        .push(DnType::OrganizationName, organization);
    params.serialize_request(key)?.pem()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let (_, pem) = create("abc", "ztka:agent").unwrap();
        let req = parse(&pem).unwrap();
        assert_eq!(req.common_name.as_deref(), Some("abc"));
        assert_eq!(req.organizations, ["ztka:agent"]);
        assert_eq!(req.alt_names, 0);

        assert!(parse("not a csr").unwrap_err().contains("PKCS#10"));
        // A CSR whose body was altered after signing fails the signature check.
        let der = CertificateSigningRequestDer::from_pem_slice(pem.as_bytes()).unwrap();
        let mut bytes = der.as_ref().to_vec();
        let at = bytes.windows(3).position(|w| w == b"abc").unwrap();
        bytes[at] = b'x';
        let tampered = CertificateSigningRequestDer::from(bytes);
        assert!(parse_der(&tampered).unwrap_err().contains("signature"));
    }
}
