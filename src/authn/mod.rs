//! Authentication: passwords, console sessions, API tokens and login throttling. The
//! [`caller::Caller`] extractor turns a request into an authenticated user or a 401.

pub mod caller;
pub mod password;
pub mod throttle;

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// 32 random bytes, base64url without padding (43 characters).
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub fn sha256_hex(value: &str) -> String {
    hex::encode(Sha256::digest(value.as_bytes()))
}

/// Constant-time comparison of two hex digests.
pub fn digest_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

pub const SESSION_COOKIE: &str = "ztka_session";
pub const CSRF_HEADER: &str = "x-csrf-token";
pub const API_TOKEN_PREFIX: &str = "ztka_";
