//! localhostd: one host's HTTP API and web UI for data, files, sandboxed programs and
//! commands, monitoring and backups, run as a systemd service.
//!
//! # Layout
//!
//! Three layers under a composition root; dependencies point down only (nothing below
//! [`api`] imports it, no module imports a layer above its own, no cycle within a layer;
//! `tests/it/layers.rs` checks it). docs/architecture.md has the full map.
//!
//! - Composition root: `main.rs` parses the command line ([`cli`]), loads [`config`],
//!   starts [`logging`], builds the runtime and calls [`daemon::run`]; [`daemon`] owns the
//!   startup and shutdown order and the task tree and builds the services; [`adminctl`] is
//!   the CLI's admin side (over the admin socket, or offline under the state lock).
//! - [`api`]: the HTTP surface: [`api::state`] (the shared request state), [`api::server`]
//!   (accepting and serving connections with hyper), the route table, access guard, rate
//!   limits and request ids, thin handlers one file per area, [`api::error`] (the one
//!   Error → HTTP mapping), [`api::extract`], and `api::openapi` (the OpenAPI document).
//! - Domain, no HTTP: [`store`]'s [`store::kv`], [`store::files`], [`store::programs`],
//!   [`store::auth`] and [`store::audit`]; [`jobs::exec`] (queue, limits, history of jobs);
//!   [`ops`]'s [`ops::metrics`], [`ops::backup`] and [`ops::health`].
//! - Infrastructure: `util` (time, fs durability, free disk, keyset paging, the state dir
//!   layout), [`config`], [`logging`], [`error`] (the domain error), [`systemd`] (sockets
//!   handed to us, sd_notify), [`store::db`] (the SQLite file: migrations, the
//!   group-committing writer, the readers), [`store::stored`] (names read back from the
//!   database that become paths) and [`jobs::sandbox`] (the confinement every job runs in).

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
