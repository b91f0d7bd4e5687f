//! Pure types and rules: no axum, redb, kube or rustls here.

pub mod access;
pub mod audit;
pub mod cluster;
pub mod names;
pub mod org;
pub mod sso;
pub mod user;
