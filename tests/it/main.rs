//! The one integration-test binary: real gateways on loopback, driven over HTTP.

mod api;
mod auth;
mod backends;
mod browser;
mod chronos;
mod compat;
mod cron;
mod cron_batch;
mod dashboard;
mod deploy;
mod drain;
mod files;
mod net;
mod operator;
mod process;
mod responses;
mod runs;
mod sessions;
mod soak;
mod support;
mod tickets;
mod tidy;
mod wire;
