//! End-to-end tests: one binary, modules named after the capability they test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api;
mod audit;
mod console;
mod fixture;
mod listener;
mod serve;
