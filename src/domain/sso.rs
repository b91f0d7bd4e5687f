//! Single sign-on providers (OpenID Connect) and the rules that turn an ID token's claims
//! into a ztka user and group memberships.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

pub const DEFAULT_SCOPES: [&str; 3] = ["openid", "email", "profile"];
pub const DEFAULT_USERNAME_CLAIM: &str = "email";
pub const DEFAULT_GROUPS_CLAIM: &str = "groups";

/// An IdP group whose members become members of a ztka group.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct GroupMapping {
    /// The group name as the provider asserts it in the groups claim.
    pub idp_group: String,
    /// The ztka group's name.
    pub group: String,
}

#[derive(Clone, Serialize, Deserialize)]
pub struct SsoProvider {
    pub id: Uuid,
    /// DNS-1123 label; part of the sign-in and callback URLs.
    pub name: String,
    /// Shown on the sign-in button: "Sign in with <display_name>".
    pub display_name: String,
    pub issuer: String,
    pub client_id: String,
    /// Sealed with [`crate::pki::sealing::Sealer`]; never returned by the API.
    pub client_secret_sealed: String,
    pub scopes: Vec<String>,
    pub username_claim: String,
    pub groups_claim: String,
    /// Email domains allowed to sign in; empty allows every domain.
    #[serde(default)]
    pub allowed_domains: Vec<String>,
    #[serde(default)]
    pub group_mapping: Vec<GroupMapping>,
    /// Extra PEM roots for a provider behind a private CA.
    #[serde(default)]
    pub ca_pem: Option<String>,
    /// Refuse an email address the provider does not mark `email_verified: true` when the
    /// email names the user or decides the domain. Off only for providers that never send
    /// the claim and verify addresses themselves.
    #[serde(default = "yes")]
    pub require_verified_email: bool,
    pub enabled: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

fn yes() -> bool {
    true
}

impl std::fmt::Debug for SsoProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SsoProvider")
            .field("name", &self.name)
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// Links an SSO user to the provider's stable subject: the user is found again by
/// `(issuer, sub)`, never by an email address the provider may reassign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SsoLink {
    pub issuer: String,
    pub subject: String,
    /// The provider the user last signed in through.
    pub provider: String,
}

impl SsoLink {
    /// The key of the identity index.
    pub fn key(issuer: &str, subject: &str) -> String {
        format!("{issuer}\u{1f}{subject}")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    #[error("must be an https:// URL without query or fragment")]
    Issuer,
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {0} characters")]
    TooLong(usize),
    #[error("{0:?} is not a valid email domain")]
    Domain(String),
    #[error("{0:?} is not a valid scope")]
    Scope(String),
    #[error("{0:?} is not a valid claim name")]
    Claim(String),
}

/// `https://host[:port][/path]`, no query or fragment, no trailing slash issues: the issuer
/// must equal the `iss` the provider puts in its tokens.
pub fn check_issuer(issuer: &str) -> Result<(), ProviderError> {
    let url = url::Url::parse(issuer).map_err(|_| ProviderError::Issuer)?;
    if url.scheme() != "https"
        || url.host_str().is_none_or(str::is_empty)
        || url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
        || issuer.len() > 512
    {
        return Err(ProviderError::Issuer);
    }
    Ok(())
}

pub fn check_text(value: &str, max: usize) -> Result<(), ProviderError> {
    if value.trim().is_empty() {
        return Err(ProviderError::Empty);
    }
    if value.chars().count() > max {
        return Err(ProviderError::TooLong(max));
    }
    Ok(())
}

/// Scopes are RFC 6749 scope tokens; `openid` is always requested.
pub fn normalize_scopes(scopes: &[String]) -> Result<Vec<String>, ProviderError> {
    let mut out = vec!["openid".to_owned()];
    for s in scopes {
        let ok = !s.is_empty()
            && s.len() <= 128
            && s.bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\');
        if !ok {
            return Err(ProviderError::Scope(s.clone()));
        }
        if !out.contains(s) {
            out.push(s.clone());
        }
    }
    Ok(out)
}

pub fn check_claim(claim: &str) -> Result<(), ProviderError> {
    let ok = !claim.is_empty() && claim.len() <= 128 && claim.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(ProviderError::Claim(claim.to_owned()))
    }
}

/// Lower-cased, deduplicated domain names (`example.com`).
pub fn normalize_domains(domains: &[String]) -> Result<Vec<String>, ProviderError> {
    let mut out = BTreeSet::new();
    for d in domains {
        let d = d.trim().trim_start_matches('@').to_ascii_lowercase();
        let ok = !d.is_empty()
            && d.len() <= 253
            && d.contains('.')
            && d.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            });
        if !ok {
            return Err(ProviderError::Domain(d));
        }
        out.insert(d);
    }
    Ok(out.into_iter().collect())
}

/// The domain of an email address, lower-cased.
pub fn email_domain(email: &str) -> Option<String> {
    let (local, domain) = email.rsplit_once('@')?;
    (!local.is_empty() && !domain.is_empty()).then(|| domain.to_ascii_lowercase())
}

/// What the provider asserted about the person signing in, after the ID token verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assertion {
    pub issuer: String,
    pub subject: String,
    /// The ztka user name (from the username claim, lower-cased).
    pub username: String,
    pub email: Option<String>,
    pub display_name: String,
    /// The groups claim, as asserted; `None` when the token does not carry it (then
    /// memberships are left as they are rather than all removed).
    pub groups: Option<BTreeSet<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimsError {
    #[error("the ID token has no {0:?} claim to use as the user name")]
    MissingUsername(String),
    #[error("the {claim:?} claim {value:?} cannot be a ztka user name: {reason}")]
    BadUsername {
        claim: String,
        value: String,
        reason: String,
    },
    #[error("the provider does not vouch that the email address {0} is verified")]
    UnverifiedEmail(String),
    #[error("the email domain {domain} is not allowed to sign in (allowed: {allowed})")]
    DomainNotAllowed { domain: String, allowed: String },
}

impl ClaimsError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingUsername(_) | Self::BadUsername { .. } => "sso_bad_claims",
            Self::UnverifiedEmail(_) => "sso_email_unverified",
            Self::DomainNotAllowed { .. } => "sso_domain_not_allowed",
        }
    }
}

/// A claim by name, or by a dotted path into nested objects (`realm_access.roles`) when no
/// claim has that literal name (names such as `https://example.com/groups` contain dots).
pub fn claim<'a>(claims: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    claims.get(name).or_else(|| {
        name.split('.')
            .try_fold(claims, |v, part| v.get(part))
            .filter(|_| name.contains('.'))
    })
}

/// A user name an SSO user may have: an email address or a DNS-1123 label, lower case.
pub fn check_sso_username(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 254 {
        return Err("must be 1 to 254 characters".into());
    }
    let allowed = |b: u8| {
        b.is_ascii_lowercase()
            || b.is_ascii_digit()
            || matches!(b, b'.' | b'@' | b'-' | b'_' | b'+')
    };
    if !name.bytes().all(allowed) {
        return Err("may contain only lower-case letters, digits and . @ - _ +".into());
    }
    let first = name.as_bytes()[0];
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) || name.matches('@').count() > 1 {
        return Err("must start with a letter or digit and contain at most one @".into());
    }
    Ok(())
}

impl SsoProvider {
    /// Reads the claims of a verified ID token into an [`Assertion`], applying the username
    /// claim, email verification and the allowed domains.
    pub fn assertion(
        &self,
        issuer: &str,
        subject: &str,
        claims: &serde_json::Value,
    ) -> Result<Assertion, ClaimsError> {
        let raw = claim(claims, &self.username_claim)
            .and_then(|v| v.as_str())
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| ClaimsError::MissingUsername(self.username_claim.clone()))?;
        let username = raw.to_lowercase();
        check_sso_username(&username).map_err(|reason| ClaimsError::BadUsername {
            claim: self.username_claim.clone(),
            value: raw.chars().take(100).collect(),
            reason,
        })?;
        let email = claims
            .get("email")
            .and_then(|v| v.as_str())
            .map(|e| e.trim().to_lowercase());
        let verified = claims.get("email_verified").and_then(|v| match v {
            serde_json::Value::Bool(b) => Some(*b),
            serde_json::Value::String(s) => Some(s == "true"),
            _ => None,
        });
        // The address that names the user or decides the domain must be vouched for.
        let email_matters = self.username_claim == "email" || !self.allowed_domains.is_empty();
        if let Some(e) = &email {
            let refused = match verified {
                Some(v) => !v,
                None => email_matters && self.require_verified_email,
            };
            if refused {
                return Err(ClaimsError::UnverifiedEmail(e.clone()));
            }
        }
        if !self.allowed_domains.is_empty() {
            let address = email.as_deref().unwrap_or(&username);
            let domain = email_domain(address).unwrap_or_default();
            if !self.allowed_domains.contains(&domain) {
                return Err(ClaimsError::DomainNotAllowed {
                    domain: if domain.is_empty() {
                        "(none)".into()
                    } else {
                        domain
                    },
                    allowed: self.allowed_domains.join(", "),
                });
            }
        }
        let groups = match claim(claims, &self.groups_claim) {
            Some(serde_json::Value::Array(items)) => Some(
                items
                    .iter()
                    .filter_map(|g| g.as_str())
                    .map(str::to_owned)
                    .collect(),
            ),
            Some(serde_json::Value::String(one)) => Some(BTreeSet::from([one.clone()])),
            _ => None,
        };
        let display_name = claims
            .get("name")
            .and_then(|v| v.as_str())
            .map(|s| s.chars().take(128).collect())
            .unwrap_or_default();
        Ok(Assertion {
            issuer: issuer.to_owned(),
            subject: subject.to_owned(),
            username,
            email,
            display_name,
            groups,
        })
    }

    /// The ztka groups this provider manages (every group named in its mapping), and those
    /// the asserted IdP groups map to. Membership in a managed group follows the provider at
    /// each sign-in; groups outside the mapping are left to the admins.
    pub fn mapped_groups(
        &self,
        asserted: &BTreeSet<String>,
    ) -> (BTreeSet<String>, BTreeSet<String>) {
        let managed = self.group_mapping.iter().map(|m| m.group.clone()).collect();
        let wanted = self
            .group_mapping
            .iter()
            .filter(|m| asserted.contains(&m.idp_group))
            .map(|m| m.group.clone())
            .collect();
        (managed, wanted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn provider() -> SsoProvider {
        let now = OffsetDateTime::now_utc();
        SsoProvider {
            id: Uuid::now_v7(),
            name: "corp".into(),
            display_name: "Corp".into(),
            issuer: "https://idp.example".into(),
            client_id: "ztka".into(),
            client_secret_sealed: String::new(),
            scopes: vec!["openid".into()],
            username_claim: DEFAULT_USERNAME_CLAIM.into(),
            groups_claim: DEFAULT_GROUPS_CLAIM.into(),
            allowed_domains: vec!["example.com".into()],
            group_mapping: vec![
                GroupMapping {
                    idp_group: "eng".into(),
                    group: "engineers".into(),
                },
                GroupMapping {
                    idp_group: "ops".into(),
                    group: "operators".into(),
                },
            ],
            ca_pem: None,
            require_verified_email: true,
            enabled: true,
            created_at: now,
            updated_at: now,
        }
    }

    #[test]
    fn claims_become_an_assertion() {
        let p = provider();
        let a = p
            .assertion(
                "https://idp.example",
                "s1",
                &json!({"email": "Alice@Example.com", "email_verified": true, "name": "Alice", "groups": ["eng", "x"]}),
            )
            .unwrap();
        assert_eq!(a.username, "alice@example.com");
        assert_eq!(a.display_name, "Alice");
        let (managed, wanted) = p.mapped_groups(a.groups.as_ref().unwrap());
        assert_eq!(managed.len(), 2);
        assert_eq!(wanted, BTreeSet::from(["engineers".to_owned()]));
    }

    #[test]
    fn refusals_name_the_problem() {
        let p = provider();
        let e = p
            .assertion(
                "i",
                "s",
                &json!({"email": "bob@other.org", "email_verified": true}),
            )
            .unwrap_err();
        assert_eq!(e.code(), "sso_domain_not_allowed");
        assert!(e.to_string().contains("other.org"), "{e}");
        let e = p
            .assertion(
                "i",
                "s",
                &json!({"email": "bob@example.com", "email_verified": false}),
            )
            .unwrap_err();
        assert_eq!(e.code(), "sso_email_unverified");
        let e = p
            .assertion("i", "s", &json!({"email": "bob@example.com"}))
            .unwrap_err();
        assert_eq!(
            e.code(),
            "sso_email_unverified",
            "no email_verified claim: {e}"
        );
        let mut lenient = provider();
        lenient.require_verified_email = false;
        let a = lenient
            .assertion("i", "s", &json!({"email": "bob@example.com"}))
            .unwrap();
        assert_eq!(
            a.groups, None,
            "no groups claim: memberships stay as they are"
        );
        let e = p.assertion("i", "s", &json!({"name": "x"})).unwrap_err();
        assert_eq!(e, ClaimsError::MissingUsername("email".into()));
        let e = p
            .assertion("i", "s", &json!({"email": "a b@example.com"}))
            .unwrap_err();
        assert_eq!(e.code(), "sso_bad_claims");
    }

    #[test]
    fn nested_claims_by_path() {
        let claims = json!({"realm_access": {"roles": ["eng"]}, "https://x.example/groups": ["a"]});
        assert_eq!(claim(&claims, "realm_access.roles"), Some(&json!(["eng"])));
        assert_eq!(
            claim(&claims, "https://x.example/groups"),
            Some(&json!(["a"]))
        );
        assert_eq!(claim(&claims, "realm_access"), claims.get("realm_access"));
        assert_eq!(claim(&claims, "nope.roles"), None);
    }

    #[test]
    fn provider_fields_are_checked() {
        assert!(check_issuer("https://idp.example/realms/x").is_ok());
        for bad in [
            "http://idp.example",
            "https://idp.example?x=1",
            "idp",
            "https://",
        ] {
            assert!(check_issuer(bad).is_err(), "{bad}");
        }
        assert_eq!(
            normalize_scopes(&["email".into(), "openid".into(), "groups".into()]).unwrap(),
            vec!["openid", "email", "groups"]
        );
        assert!(normalize_scopes(&["a b".into()]).is_err());
        assert_eq!(
            normalize_domains(&["@Example.COM".into(), "example.com".into()]).unwrap(),
            vec!["example.com"]
        );
        assert!(normalize_domains(&["localhost".into()]).is_err());
        assert!(check_sso_username("alice@example.com").is_ok());
        assert!(check_sso_username("alice").is_ok());
        assert!(check_sso_username("-a").is_err());
        assert!(check_sso_username("a@b@c").is_err());
    }
}
