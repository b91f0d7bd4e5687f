//! ztka: zero-trust access to Kubernetes clusters for small teams.

pub mod admin;
pub mod agent;
pub mod api;
pub mod audit;
pub mod authn;
pub mod authz;
pub mod backup;
pub mod busy_poll;
pub mod cli;
pub mod client;
pub mod config;
pub mod domain;
pub mod healthcheck;
pub mod listener;
pub mod manifest;
pub mod pki;
pub mod relay;
pub mod sdnotify;
pub mod serve;
pub mod shutdown;
pub mod sso;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod tunnel;
pub mod web;

/// Installs aws-lc-rs as the process's rustls provider. Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
