//! The composition root's product: everything a handler may use, built once in `serve`.

use std::sync::Arc;

use crate::audit::AuditLog;
use crate::authn::throttle::Throttle;
use crate::authz::Authorizer;
use crate::config::ServeConfig;
use crate::domain::org::Settings;
use crate::pki::Pki;
use crate::shutdown::Shutdown;
use crate::store::Store;
use crate::tunnel::Tunnels;

/// Handlers get a clone per request: one reference count, not one per field.
#[derive(Clone)]
pub struct AppState(Arc<Parts>);

impl AppState {
    pub fn new(parts: Parts) -> Self {
        Self(Arc::new(parts))
    }
}

impl std::ops::Deref for AppState {
    type Target = Parts;
    fn deref(&self) -> &Parts {
        &self.0
    }
}

pub struct Parts {
    pub store: Store,
    pub audit: AuditLog,
    pub pki: Arc<Pki>,
    pub config: Arc<ServeConfig>,
    pub shutdown: Shutdown,
    pub authz: Arc<Authorizer>,
    pub throttle: Arc<Throttle>,
    /// Cached copy of the settings record; writers update both.
    pub settings: Arc<std::sync::RwLock<Settings>>,
    /// Live agent tunnels by cluster.
    pub tunnels: Arc<Tunnels>,
    /// Open relay streams, so revocation can end them.
    pub streams: Arc<crate::relay::streams::Streams>,
    /// Client certificates revoked one by one.
    pub revoked_serials: Arc<crate::relay::streams::RevokedSerials>,
    /// What the relay read for recent requests, valid while the store is unchanged.
    pub relay_lookups: Arc<crate::relay::lookups::Lookups>,
    /// Single sign-on: sign-ins in progress and the providers' discovered keys.
    pub sso: Arc<crate::sso::Sso>,
    /// Keeps a worker polling while relayed requests come and go.
    pub busy_poll: crate::busy_poll::BusyPoll,
}

impl Parts {
    pub fn settings(&self) -> Settings {
        self.settings
            .read()
            .map(|s| s.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }
}
