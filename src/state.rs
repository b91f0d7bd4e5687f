//! The composition root's product: everything a handler may use, built once in `serve`.

use std::sync::Arc;

use crate::audit::AuditLog;
use crate::config::ServeConfig;
use crate::pki::Pki;
use crate::shutdown::Shutdown;
use crate::store::Store;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub audit: AuditLog,
    pub pki: Arc<Pki>,
    pub config: Arc<ServeConfig>,
    pub shutdown: Shutdown,
}
