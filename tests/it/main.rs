//! End-to-end tests: one binary, modules named after the capability they test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod accounts;
mod agent;
mod api;
mod audit;
mod backup;
mod console;
mod fixture;
mod listener;
mod packaging;
mod relay;
mod serve;
mod sso;
