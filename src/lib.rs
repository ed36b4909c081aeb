//! localhostd: one host's HTTP API and web UI for data, files, sandboxed programs and
//! commands, monitoring and backups, run as a systemd service.
//!
//! # Layout
//!
//! Three layers under a composition root. Dependencies point down only: nothing below
//! [`api`] imports it, no module imports a layer above its own, and no two units of one layer
//! import each other in a circle (`tests/it/layers.rs` checks all three on every test run).
//! docs/architecture.md has the full map and where the coming parts go.
//!
//! - Composition root: `main.rs` parses the command line ([`cli`]), loads [`config`], starts
//!   [`logging`], builds the runtime and calls [`daemon::run`]; [`daemon`] owns the startup
//!   and shutdown order and the task tree and builds the services; [`adminctl`] is the CLI's
//!   admin side (over the admin socket, or offline under the state lock).
//! - [`api`], the HTTP surface: [`api::server`] (accepting and serving connections with
//!   hyper), [`api::state`] (the shared request state), [`api::routes`] (the route table),
//!   [`api::access`] (the guard: who may call what), [`api::ratelimit`], [`api::request_id`],
//!   [`api::extract`] (body and caller extractors), [`api::error`] (the one Error → HTTP
//!   mapping), [`api::openapi`] (the OpenAPI document, from the handlers), and thin handlers,
//!   one private module per area (data, files, programs, exec, tokens, session, audit,
//!   backups, metrics, health).
//! - Domain, no HTTP: [`store::kv`] (the JSON key-value data: versions, compare-and-set, the
//!   change log, watches), [`store::files`] (the file store), [`store::programs`] (stored
//!   programs and their runs), [`store::auth`] (tokens, browser logins),
//!   [`store::audit`] (the audit trail and who is acting, [`store::audit::Caller`]);
//!   [`jobs::exec`] (the job queue, limits, statuses, history); [`ops::metrics`] (sampler,
//!   registry, history, alerts, dashboard), [`ops::backup`] (snapshots, verify, restore),
//!   [`ops::health`] (readiness and the health report).
//! - Infrastructure: [`util`] ([`util::time`], [`util::fs`] durability, [`util::disk`] free
//!   space and its floor, [`util::paging`] keyset pages, [`util::layout`] the state
//!   directory's names), [`config`] (TOML → validated types), [`logging`], [`error`] (the
//!   domain error), [`systemd`] (sockets handed to us, sd_notify), [`store::db`] (the SQLite
//!   file: migrations, the group-committing writer, the readers), [`store::stored`] (names
//!   read back from the database that become paths), [`store::pins`] (blobs a backup is
//!   reading, kept from deletion) and [`jobs::sandbox`] (the confinement every job runs in).

// Tests may panic on a broken expectation; production code may not (lints in Cargo.toml).
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod adminctl;
pub mod api;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod error;
pub mod jobs;
pub mod logging;
pub mod ops;
pub mod store;
pub mod systemd;
pub mod util;
