//! SSO identities: finding the user an OpenID provider's subject is, creating them on first
//! sign-in, and applying the provider's group mapping — in one transaction.

use std::collections::BTreeSet;

use redb::{ReadableTable, WriteTransaction};
use time::OffsetDateTime;
use uuid::Uuid;

use super::named::{self, write};
use super::tables::SSO_IDENTITIES;
use super::{Result, StoreError};
use crate::domain::org::Group;
use crate::domain::sso::{Assertion, SsoLink, SsoProvider};
use crate::domain::user::{User, UserKind};

/// What a sign-in changed.
#[derive(Debug, Clone)]
pub struct SignIn {
    pub user: User,
    pub created: bool,
    /// ztka groups joined and left by this sign-in (names, with ids for the authorizer).
    pub joined: Vec<(Uuid, String)>,
    pub left: Vec<(Uuid, String)>,
    /// Groups named in the mapping that do not exist (skipped).
    pub missing: Vec<String>,
}

/// A sign-in the store refuses; nothing was changed.
#[derive(Debug)]
pub enum Refusal {
    Disabled(Box<User>),
    /// The user name is held by a user that is not this identity.
    NameTaken(String),
}

/// Finds or creates the user for `assertion` and applies `provider`'s group mapping. A
/// refused sign-in changes nothing.
pub fn sign_in(
    txn: &WriteTransaction,
    provider: &SsoProvider,
    assertion: &Assertion,
    now: OffsetDateTime,
) -> Result<Result<SignIn, Refusal>> {
    let key = SsoLink::key(&assertion.issuer, &assertion.subject);
    let linked = txn
        .open_table(SSO_IDENTITIES)?
        .get(key.as_str())?
        .map(|id| id.value().to_owned());
    let existing = match linked {
        Some(id) => write::by_id::<User>(txn, &id)?,
        None => None,
    };
    let (mut user, created) = match existing {
        Some(user) => (user, false),
        None => {
            if write::by_name::<User>(txn, &assertion.username)?.is_some() {
                return Ok(Err(Refusal::NameTaken(assertion.username.clone())));
            }
            let user = User::new(&assertion.username, UserKind::Sso, None, now);
            named::insert(txn, &user)?;
            txn.open_table(SSO_IDENTITIES)?
                .insert(key.as_str(), user.id.to_string().as_str())?;
            (user, true)
        }
    };
    if user.disabled {
        return Ok(Err(Refusal::Disabled(Box::new(user))));
    }
    user.display_name = assertion.display_name.clone();
    user.email = assertion.email.clone().unwrap_or_default();
    user.sso = Some(SsoLink {
        issuer: assertion.issuer.clone(),
        subject: assertion.subject.clone(),
        provider: provider.name.clone(),
    });
    user.updated_at = now;
    named::update(txn, &user)?;

    let mut out = SignIn {
        user,
        created,
        joined: Vec::new(),
        left: Vec::new(),
        missing: Vec::new(),
    };
    // Without a groups claim in the token, memberships stay as they are: a provider that
    // omits the claim (a dropped scope, too many groups) must not strip everyone's access.
    let Some(asserted) = &assertion.groups else {
        return Ok(Ok(out));
    };
    let (managed, wanted) = provider.mapped_groups(asserted);
    for name in managed {
        let Some(mut group) = write::by_name::<Group>(txn, &name)? else {
            if wanted.contains(&name) {
                out.missing.push(name);
            }
            continue;
        };
        let want = wanted.contains(&name);
        let changed = if want {
            group.members.insert(out.user.id)
        } else {
            group.members.remove(&out.user.id)
        };
        if changed {
            named::update(txn, &group)?;
            let entry = (group.id, group.name.clone());
            if want {
                out.joined.push(entry);
            } else {
                out.left.push(entry);
            }
        }
    }
    Ok(Ok(out))
}

/// Forgets the identity of a deleted user, so the next sign-in creates a new user.
pub fn unlink(txn: &WriteTransaction, user: &User) -> Result<()> {
    if let Some(link) = &user.sso {
        txn.open_table(SSO_IDENTITIES)?
            .remove(SsoLink::key(&link.issuer, &link.subject).as_str())?;
    }
    Ok(())
}

/// The names of groups that do not exist, among `names`.
pub fn missing_groups(
    txn: &redb::ReadTransaction,
    names: &BTreeSet<String>,
) -> Result<Vec<String>> {
    let mut missing = Vec::new();
    for n in names {
        if named::read::by_name::<Group>(txn, n)?.is_none() {
            missing.push(n.clone());
        }
    }
    Ok(missing)
}

/// Fails unless every group `provider` maps to exists. Run inside the write that stores the
/// provider: deleting a group checks the mappings in its own write, so whichever of the two
/// comes second sees the other.
pub fn check_mapped_groups(txn: &WriteTransaction, provider: &SsoProvider) -> Result<()> {
    for m in &provider.group_mapping {
        if write::by_name::<Group>(txn, &m.group)?.is_none() {
            return Err(StoreError::InUse(format!(
                "group {} no longer exists; the group mapping cannot name it",
                m.group
            )));
        }
    }
    Ok(())
}
