use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

/// Minimum length of a local user's password.
pub const MIN_PASSWORD_LEN: usize = 12;
/// Name of the administrator created on first start.
pub const BOOTSTRAP_ADMIN: &str = "admin";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserKind {
    /// Signs in with a password stored as an argon2id hash.
    Local,
    /// No password; authenticates with API tokens (CI, Argo CD).
    Service,
    /// Signs in through an OpenID Connect provider.
    Sso,
}

#[derive(Clone, Serialize, Deserialize)]
pub struct User {
    pub id: Uuid,
    pub name: String,
    pub kind: UserKind,
    #[serde(default)]
    pub display_name: String,
    #[serde(default)]
    pub email: String,
    /// PHC string of the argon2id hash; `None` for service and SSO users.
    pub password_hash: Option<String>,
    pub must_change_password: bool,
    pub disabled: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// Credentials (sessions, client certificates) issued before this instant are void.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub credentials_revoked_at: Option<OffsetDateTime>,
    /// Overrides the organization's kubeconfig validity for this user.
    #[serde(default)]
    pub kubeconfig_validity_secs: Option<u64>,
    /// For SSO users: the provider's subject this user is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sso: Option<super::sso::SsoLink>,
}

/// A client certificate issued in a kubeconfig download, kept until it expires so that it
/// can be listed and revoked on its own (a lost laptop) without voiding the user's others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientCertificate {
    /// Lower-case hex of the serial number, as the relay reads it from the certificate.
    pub serial: String,
    pub user_id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    pub issued_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// The clusters the kubeconfig had contexts for when it was downloaded.
    pub clusters: Vec<String>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
}

impl ClientCertificate {
    /// Whether the relay accepts it from `user` (its owner): not revoked on its own, not
    /// voided by the user's credential revocation, and the user not disabled.
    pub fn is_accepted(&self, user: &User) -> bool {
        self.revoked_at.is_none()
            && !user.disabled
            && !user.revoked_credentials_issued_at(unix_millis(self.issued_at))
    }
}

/// Milliseconds since the epoch: the precision of a certificate's recorded issue time.
pub fn unix_millis(t: OffsetDateTime) -> i128 {
    t.unix_timestamp_nanos() / 1_000_000
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("disabled", &self.disabled)
            .finish_non_exhaustive()
    }
}

impl User {
    /// Whether a credential issued at `issued_ms` (unix milliseconds, as recorded in a
    /// kubeconfig certificate) was voided by the user's last credential revocation.
    pub fn revoked_credentials_issued_at(&self, issued_ms: i128) -> bool {
        self.credentials_revoked_at
            .is_some_and(|t| issued_ms < unix_millis(t))
    }

    pub fn new_local(name: &str, password_hash: String, now: OffsetDateTime) -> Self {
        Self::new(name, UserKind::Local, Some(password_hash), now)
    }

    /// A user of any kind with default settings.
    pub fn new(
        name: &str,
        kind: UserKind,
        password_hash: Option<String>,
        now: OffsetDateTime,
    ) -> Self {
        Self {
            id: Uuid::now_v7(),
            name: name.to_owned(),
            kind,
            display_name: String::new(),
            email: String::new(),
            password_hash,
            must_change_password: false,
            disabled: false,
            created_at: now,
            updated_at: now,
            credentials_revoked_at: None,
            kubeconfig_validity_secs: None,
            sso: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordPolicyError {
    #[error("must be at least {MIN_PASSWORD_LEN} characters")]
    TooShort,
    #[error("must be at most 1024 characters")]
    TooLong,
}

pub fn check_password_policy(password: &str) -> Result<(), PasswordPolicyError> {
    let len = password.chars().count();
    if len < MIN_PASSWORD_LEN {
        return Err(PasswordPolicyError::TooShort);
    }
    if len > 1024 {
        return Err(PasswordPolicyError::TooLong);
    }
    Ok(())
}
