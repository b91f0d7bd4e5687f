//! Console authorization. casbin decides "may subject S do A on objects O in domain D"
//! from the built-in role policies (embedded from `assets/authz/`) and one grouping rule
//! per grant, persisted in redb. The [`Authorizer`] also mirrors grants and group
//! memberships so it can expire grants on time and list a user's effective access.
//!
//! A successful check yields a [`Permit`], the capability that mutation paths require;
//! nothing outside this module can construct one.

pub mod adapter;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use casbin::{CoreApi, DefaultModel, Enforcer, MgmtApi};
use time::OffsetDateTime;
use tokio::sync::RwLock;
use uuid::Uuid;

use crate::domain::org::{Grant, Group, ORG_DOMAIN, Role, Subject, project_domain};
use crate::store::{self, Store, StoreError};

pub const MODEL: &str = include_str!("../../assets/authz/model.conf");
pub const ROLE_POLICIES: &str = include_str!("../../assets/authz/roles.csv");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Obj {
    Users,
    Groups,
    Projects,
    Clusters,
    Grants,
    Settings,
    Audit,
}

impl Obj {
    pub const ALL: [Obj; 7] = [
        Obj::Users,
        Obj::Groups,
        Obj::Projects,
        Obj::Clusters,
        Obj::Grants,
        Obj::Settings,
        Obj::Audit,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Obj::Users => "users",
            Obj::Groups => "groups",
            Obj::Projects => "projects",
            Obj::Clusters => "clusters",
            Obj::Grants => "grants",
            Obj::Settings => "settings",
            Obj::Audit => "audit",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Act {
    Read,
    Create,
    Update,
    Delete,
}

impl Act {
    pub const ALL: [Act; 4] = [Act::Read, Act::Create, Act::Update, Act::Delete];
    pub fn as_str(self) -> &'static str {
        match self {
            Act::Read => "read",
            Act::Create => "create",
            Act::Update => "update",
            Act::Delete => "delete",
        }
    }
}

/// Where a permission applies.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Domain {
    Org,
    Project(String),
}

impl Domain {
    fn policy_name(&self) -> String {
        match self {
            Domain::Org => ORG_DOMAIN.to_owned(),
            Domain::Project(p) => project_domain(p),
        }
    }
}

/// Proof that `user` may perform `act` on `obj` in `domain`. Only [`Authorizer::check`]
/// creates one.
#[derive(Debug, Clone)]
pub struct Permit {
    user_id: Uuid,
    domain: Domain,
    obj: Obj,
    act: Act,
}

impl Permit {
    pub fn user_id(&self) -> Uuid {
        self.user_id
    }
    pub fn domain(&self) -> &Domain {
        &self.domain
    }
    pub fn obj(&self) -> Obj {
        self.obj
    }
    pub fn act(&self) -> Act {
        self.act
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthzError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("policy engine: {0}")]
    Casbin(#[from] casbin::Error),
}

/// Which projects a user can see at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Visibility {
    All,
    Projects(BTreeSet<String>),
}

impl Visibility {
    pub fn contains(&self, project: &str) -> bool {
        match self {
            Visibility::All => true,
            Visibility::Projects(set) => set.contains(project),
        }
    }
}

#[derive(Default)]
struct Mirror {
    grants: HashMap<Uuid, Grant>,
    /// user → groups
    memberships: HashMap<Uuid, BTreeSet<Uuid>>,
    /// Expiry instants of active grants, earliest first.
    expiries: BTreeMap<(OffsetDateTime, Uuid), ()>,
}

pub struct Authorizer {
    enforcer: RwLock<Enforcer>,
    mirror: std::sync::RwLock<Mirror>,
    /// Counts changes to the mirror (memberships, grants), for caches derived from it.
    generation: std::sync::atomic::AtomicU64,
    /// Signalled when a grant is added: it may expire before those already known.
    added: tokio::sync::Notify,
}

fn grouping_rule(g: &Grant) -> Vec<String> {
    vec![
        g.subject.policy_name(),
        format!("role:{}", g.role.name()),
        g.domain(),
    ]
}

fn role_rules() -> Vec<Vec<String>> {
    ROLE_POLICIES
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let mut parts = l.split(',').map(|s| s.trim().to_owned());
            (parts.next().as_deref() == Some("p")).then(|| parts.collect())
        })
        .collect()
}

impl Authorizer {
    /// Loads policies from redb, replaces the role policies with the embedded ones (so an
    /// upgrade can change built-in roles), and mirrors grants and memberships.
    pub async fn load(store: &Store) -> Result<Self, AuthzError> {
        let wanted = role_rules();
        store
            .write({
                let wanted = wanted.clone();
                move |txn| {
                    store::casbin::remove_filtered(txn, "p", 0, &[])?;
                    for rule in &wanted {
                        store::casbin::add(txn, "p", rule)?;
                    }
                    Ok(())
                }
            })
            .await?;
        let model = DefaultModel::from_str(MODEL).await?;
        let mut enforcer = Enforcer::new(model, adapter::RedbAdapter::new(store.clone())).await?;
        // Mutations write rules in the same redb transaction as the grant; the enforcer
        // only mirrors them in memory.
        enforcer.enable_auto_save(false);

        let (grants, groups) = store
            .read(|txn| {
                Ok((
                    store::grants::all_grants(txn)?,
                    store::named::read::every::<Group>(txn)?,
                ))
            })
            .await?;
        let mut mirror = Mirror::default();
        for group in &groups {
            for member in &group.members {
                mirror
                    .memberships
                    .entry(*member)
                    .or_default()
                    .insert(group.id);
            }
        }
        for grant in grants {
            if let Some(t) = grant.expires_at {
                mirror.expiries.insert((t, grant.id), ());
            }
            mirror.grants.insert(grant.id, grant);
        }
        let this = Self {
            enforcer: RwLock::new(enforcer),
            mirror: std::sync::RwLock::new(mirror),
            generation: Default::default(),
            added: tokio::sync::Notify::new(),
        };
        this.prune_expired().await?;
        Ok(this)
    }

    fn mirror(&self) -> std::sync::RwLockReadGuard<'_, Mirror> {
        self.mirror.read().unwrap_or_else(|p| p.into_inner())
    }

    fn mirror_mut(&self) -> std::sync::RwLockWriteGuard<'_, Mirror> {
        let guard = self.mirror.write().unwrap_or_else(|p| p.into_inner());
        // Bumped while the lock is held: a reader that sees the new count sees the change.
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        guard
    }

    /// Changes with every change to memberships or grants.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The policy subjects acting for a user: the user and each of their groups.
    pub fn subjects(&self, user: Uuid) -> Vec<String> {
        let m = self.mirror();
        let mut out = vec![Subject::User(user).policy_name()];
        if let Some(groups) = m.memberships.get(&user) {
            out.extend(groups.iter().map(|g| Subject::Group(*g).policy_name()));
        }
        out
    }

    pub fn groups_of(&self, user: Uuid) -> BTreeSet<Uuid> {
        self.mirror()
            .memberships
            .get(&user)
            .cloned()
            .unwrap_or_default()
    }

    /// Decides, and on success hands out the capability.
    pub async fn check(&self, user: Uuid, domain: Domain, obj: Obj, act: Act) -> Option<Permit> {
        self.allowed(user, &domain, obj, act)
            .await
            .then_some(Permit {
                user_id: user,
                domain,
                obj,
                act,
            })
    }

    pub async fn allowed(&self, user: Uuid, domain: &Domain, obj: Obj, act: Act) -> bool {
        if let Err(e) = self.prune_expired().await {
            tracing::error!(error = %e, "expiring grants failed");
            return false;
        }
        let dom = domain.policy_name();
        let subjects = self.subjects(user);
        let enforcer = self.enforcer.read().await;
        subjects.iter().any(|s| {
            enforcer
                .enforce((s.as_str(), dom.as_str(), obj.as_str(), act.as_str()))
                .unwrap_or(false)
        })
    }

    /// Active grants that apply to the user directly or through a group.
    pub fn effective_grants(&self, user: Uuid) -> Vec<Grant> {
        let now = OffsetDateTime::now_utc();
        let m = self.mirror();
        let groups = m.memberships.get(&user).cloned().unwrap_or_default();
        let mut out: Vec<Grant> = m
            .grants
            .values()
            .filter(|g| g.is_active(now))
            .filter(|g| match g.subject {
                Subject::User(u) => u == user,
                Subject::Group(id) => groups.contains(&id),
            })
            .cloned()
            .collect();
        out.sort_by_key(|g| g.id);
        out
    }

    pub fn visibility(&self, user: Uuid) -> Visibility {
        let mut set = BTreeSet::new();
        for g in self.effective_grants(user) {
            match (&g.project, g.role) {
                (None, Role::Admin | Role::AdminReadOnly) => return Visibility::All,
                (Some(p), _) => {
                    set.insert(p.clone());
                }
                (None, _) => {}
            }
        }
        Visibility::Projects(set)
    }

    /// Mirrors a grant that was just committed (with its rule) to the store.
    pub async fn grant_added(&self, grant: &Grant) -> Result<(), AuthzError> {
        {
            let mut m = self.mirror_mut();
            if let Some(t) = grant.expires_at {
                m.expiries.insert((t, grant.id), ());
            }
            m.grants.insert(grant.id, grant.clone());
        }
        if grant.is_active(OffsetDateTime::now_utc()) {
            let mut e = self.enforcer.write().await;
            e.add_grouping_policy(grouping_rule(grant)).await?;
        }
        self.added.notify_one();
        Ok(())
    }

    /// The earliest expiry of a known grant later than `after`.
    pub fn next_expiry_after(&self, after: OffsetDateTime) -> Option<OffsetDateTime> {
        self.mirror()
            .grants
            .values()
            .filter_map(|g| g.expires_at)
            .filter(|t| *t > after)
            .min()
    }

    /// Returns once a grant was added since the last call returned (at once if one was).
    pub async fn grant_was_added(&self) {
        self.added.notified().await
    }

    /// True when another active grant still yields the same grouping rule.
    pub fn rule_still_needed(&self, removed: &Grant) -> bool {
        let now = OffsetDateTime::now_utc();
        let rule = grouping_rule(removed);
        self.mirror()
            .grants
            .values()
            .any(|g| g.id != removed.id && g.is_active(now) && grouping_rule(g) == rule)
    }

    pub fn grouping_rule(grant: &Grant) -> Vec<String> {
        grouping_rule(grant)
    }

    /// Mirrors a grant removal that was just committed.
    pub async fn grant_removed(&self, grant: &Grant) -> Result<(), AuthzError> {
        let still_needed = self.rule_still_needed(grant);
        {
            let mut m = self.mirror_mut();
            m.grants.remove(&grant.id);
            if let Some(t) = grant.expires_at {
                m.expiries.remove(&(t, grant.id));
            }
        }
        if !still_needed {
            let mut e = self.enforcer.write().await;
            e.remove_grouping_policy(grouping_rule(grant)).await?;
        }
        Ok(())
    }

    pub fn grants_matching(&self, pred: impl Fn(&Grant) -> bool) -> Vec<Grant> {
        let mut out: Vec<Grant> = self
            .mirror()
            .grants
            .values()
            .filter(|g| pred(g))
            .cloned()
            .collect();
        out.sort_by_key(|g| g.id);
        out
    }

    /// The users a grant subject stands for: the user, or the group's members.
    pub fn users_of(&self, subject: &Subject) -> Vec<Uuid> {
        match subject {
            Subject::User(u) => vec![*u],
            Subject::Group(g) => self
                .mirror()
                .memberships
                .iter()
                .filter(|(_, groups)| groups.contains(g))
                .map(|(u, _)| *u)
                .collect(),
        }
    }

    pub fn set_membership(&self, user: Uuid, group: Uuid, member: bool) {
        let mut m = self.mirror_mut();
        if member {
            m.memberships.entry(user).or_default().insert(group);
        } else if let Some(set) = m.memberships.get_mut(&user) {
            set.remove(&group);
        }
    }

    pub fn forget_group(&self, group: Uuid) {
        let mut m = self.mirror_mut();
        for set in m.memberships.values_mut() {
            set.remove(&group);
        }
    }

    pub fn forget_user(&self, user: Uuid) {
        self.mirror_mut().memberships.remove(&user);
    }

    /// Drops the rules of grants whose expiry has passed, so they stop applying on time.
    async fn prune_expired(&self) -> Result<(), AuthzError> {
        let now = OffsetDateTime::now_utc();
        let due: Vec<Grant> = {
            let m = self.mirror();
            match m.expiries.keys().next() {
                Some((t, _)) if *t <= now => m
                    .expiries
                    .keys()
                    .take_while(|(t, _)| *t <= now)
                    .filter_map(|(_, id)| m.grants.get(id).cloned())
                    .collect(),
                _ => return Ok(()),
            }
        };
        {
            let mut m = self.mirror_mut();
            for g in &due {
                if let Some(t) = g.expires_at {
                    m.expiries.remove(&(t, g.id));
                }
            }
        }
        for g in &due {
            if !self.rule_still_needed(g) {
                let mut e = self.enforcer.write().await;
                e.remove_grouping_policy(grouping_rule(g)).await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::org::Group;

    /// What SPEC.md §2 says each role may do in the console, written independently of
    /// `assets/authz/roles.csv`: (object, action) pairs allowed *within the role's scope*.
    fn expected(role: Role, obj: Obj, act: Act) -> bool {
        use Act::*;
        use Obj::*;
        match role {
            Role::Admin => true,
            Role::AdminReadOnly => act == Read,
            Role::ProjectAdmin => matches!(
                (obj, act),
                (Projects, Read | Update)
                    | (Clusters, _)
                    | (Grants, Read | Create | Delete)
                    | (Audit, Read)
            ),
            Role::ProjectReadOnly => {
                act == Read && matches!(obj, Projects | Clusters | Grants | Audit)
            }
            Role::ClusterAdmin => matches!(
                (obj, act),
                (Projects, Read) | (Clusters, Read | Update) | (Audit, Read)
            ),
            Role::NamespaceAdmin | Role::NamespaceReadOnly => {
                act == Read && matches!(obj, Projects | Clusters)
            }
        }
    }

    fn grant(subject: Subject, role: Role) -> Grant {
        Grant {
            id: Uuid::now_v7(),
            subject,
            role,
            project: (role.scope() != crate::domain::org::ScopeKind::Organization)
                .then(|| "in-scope".to_owned()),
            namespaces: Vec::new(),
            expires_at: None,
            created_at: OffsetDateTime::now_utc(),
            created_by: None,
        }
    }

    async fn authorizer_with(
        grants: &[Grant],
        groups: &[Group],
    ) -> (tempfile::TempDir, Authorizer) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (grants, groups) = (grants.to_vec(), groups.to_vec());
        store
            .write(move |txn| {
                for g in &groups {
                    store::named::insert(txn, g)?;
                }
                for g in &grants {
                    store::grants::insert_grant(txn, g)?;
                    store::casbin::add(txn, "g", &grouping_rule(g))?;
                }
                Ok(())
            })
            .await
            .unwrap();
        let authz = Authorizer::load(&store).await.unwrap();
        (dir, authz)
    }

    #[tokio::test]
    async fn every_role_every_action_in_and_out_of_scope() {
        for role in Role::ALL {
            // Directly, and through a group.
            let user = Uuid::now_v7();
            let group = Group {
                id: Uuid::now_v7(),
                name: "g".into(),
                description: String::new(),
                members: [user].into(),
                created_at: OffsetDateTime::now_utc(),
            };
            for subject in [Subject::User(user), Subject::Group(group.id)] {
                let (_dir, authz) =
                    authorizer_with(&[grant(subject, role)], std::slice::from_ref(&group)).await;
                for obj in Obj::ALL {
                    for act in Act::ALL {
                        let org_scoped =
                            role.scope() == crate::domain::org::ScopeKind::Organization;
                        let cases = [
                            (Domain::Project("in-scope".into()), expected(role, obj, act)),
                            (
                                Domain::Project("other".into()),
                                org_scoped && expected(role, obj, act),
                            ),
                            (Domain::Org, org_scoped && expected(role, obj, act)),
                        ];
                        for (domain, want) in cases {
                            let got = authz.check(user, domain.clone(), obj, act).await.is_some();
                            assert_eq!(
                                got,
                                want,
                                "{} via {subject:?}: {} {} in {domain:?}",
                                role.name(),
                                act.as_str(),
                                obj.as_str()
                            );
                        }
                    }
                }
                // Nobody else gains anything.
                let stranger = Uuid::now_v7();
                assert!(
                    authz
                        .check(stranger, Domain::Org, Obj::Projects, Act::Read)
                        .await
                        .is_none()
                );
            }
        }
    }

    #[tokio::test]
    async fn removing_one_of_two_identical_grants_keeps_access() {
        let user = Uuid::now_v7();
        let a = grant(Subject::User(user), Role::ProjectReadOnly);
        let b = grant(Subject::User(user), Role::ProjectReadOnly);
        let (_dir, authz) = authorizer_with(&[a.clone(), b.clone()], &[]).await;
        let dom = Domain::Project("in-scope".into());
        authz.grant_removed(&a).await.unwrap();
        assert!(
            authz
                .check(user, dom.clone(), Obj::Projects, Act::Read)
                .await
                .is_some()
        );
        authz.grant_removed(&b).await.unwrap();
        assert!(
            authz
                .check(user, dom, Obj::Projects, Act::Read)
                .await
                .is_none()
        );
    }

    #[tokio::test]
    async fn expired_grants_are_ignored_at_load() {
        let user = Uuid::now_v7();
        let mut g = grant(Subject::User(user), Role::Admin);
        g.expires_at = Some(OffsetDateTime::now_utc() - time::Duration::seconds(1));
        let (_dir, authz) = authorizer_with(&[g], &[]).await;
        assert!(
            authz
                .check(user, Domain::Org, Obj::Users, Act::Read)
                .await
                .is_none()
        );
        assert!(authz.effective_grants(user).is_empty());
    }
}
