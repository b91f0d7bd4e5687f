//! Secrets ztka must be able to read back (an OpenID provider's client secret) are sealed
//! before they reach the database: AES-256-GCM under a key derived with HKDF-SHA256 from the
//! CA's private key, with the record's id as associated data so a sealed value cannot be moved
//! to another record. The database alone (a copied file, a backup without the key files)
//! does not reveal them; the CA key, which can impersonate everything anyway, does.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hkdf;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;

const PREFIX: &str = "sealed:v1:";
const INFO: &[u8] = b"ztka sealed secrets v1";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("the sealed value is malformed")]
    Malformed,
    #[error("the sealed value does not open with this server's key (was the CA key replaced?)")]
    Open,
    #[error("sealing failed")]
    Seal,
}

pub struct Sealer {
    key: LessSafeKey,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer")
    }
}

struct KeyLen;
impl hkdf::KeyType for KeyLen {
    fn len(&self) -> usize {
        32
    }
}

impl Sealer {
    /// Derives the sealing key from secret input key material (the CA key's DER).
    pub fn derive(ikm: &[u8]) -> Result<Self, SealError> {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"ztka").extract(ikm);
        let mut key = [0u8; 32];
        prk.expand(&[INFO], KeyLen)
            .and_then(|okm| okm.fill(&mut key))
            .map_err(|_| SealError::Seal)?;
        let unbound = UnboundKey::new(&AES_256_GCM, &key).map_err(|_| SealError::Seal)?;
        Ok(Self {
            key: LessSafeKey::new(unbound),
        })
    }

    /// `sealed:v1:` + base64(nonce ‖ ciphertext ‖ tag).
    pub fn seal(&self, plaintext: &str, context: &str) -> Result<String, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| SealError::Seal)?;
        let mut data = plaintext.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut data,
            )
            .map_err(|_| SealError::Seal)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        Ok(format!("{PREFIX}{}", STANDARD_NO_PAD.encode(out)))
    }

    pub fn open(&self, sealed: &str, context: &str) -> Result<String, SealError> {
        let raw = sealed
            .strip_prefix(PREFIX)
            .and_then(|b| STANDARD_NO_PAD.decode(b).ok())
            .filter(|r| r.len() >= NONCE_LEN + AES_256_GCM.tag_len())
            .ok_or(SealError::Malformed)?;
        let (nonce, rest) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Malformed)?;
        let mut data = rest.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut data)
            .map_err(|_| SealError::Open)?;
        String::from_utf8(plain.to_vec()).map_err(|_| SealError::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let a = Sealer::derive(b"key material a").unwrap();
        let b = Sealer::derive(b"key material b").unwrap();
        let sealed = a.seal("client-secret", "provider-1").unwrap();
        assert!(sealed.starts_with(PREFIX));
        assert!(!sealed.contains("client-secret"));
        assert_ne!(
            sealed,
            a.seal("client-secret", "provider-1").unwrap(),
            "fresh nonce"
        );
        assert_eq!(a.open(&sealed, "provider-1").unwrap(), "client-secret");
        assert_eq!(a.open(&sealed, "provider-2"), Err(SealError::Open));
        assert_eq!(b.open(&sealed, "provider-1"), Err(SealError::Open));
        assert_eq!(
            a.open("client-secret", "provider-1"),
            Err(SealError::Malformed)
        );
        let mut tampered = sealed.clone();
        let last = tampered.pop().unwrap();
        tampered.push(if last == 'A' { 'B' } else { 'A' });
        assert!(a.open(&tampered, "provider-1").is_err());
    }
}
