//! localhostd: one host's HTTP API and web UI for data, files, sandboxed programs and
//! commands, monitoring and backups, run as a systemd service.
//!
//! # Layout
//!
//! Dependencies point inward: [`api`] → domain modules → [`db`].
//!
//! - `main.rs` parses the command line, loads [`config`], starts [`logging`], builds the
//!   runtime and calls [`daemon::run`].
//! - [`daemon`] owns the startup and shutdown order and the task tree; [`systemd`] owns what
//!   systemd hands us (sockets) and what we tell it (sd_notify); [`server`] owns accepting and
//!   serving connections with hyper.
//! - [`api`] is the HTTP surface: router, middleware, thin handlers, the one error mapping.
//! - [`health`], [`exec`], [`kv`], [`files`], [`programs`], [`metrics`], [`backup`] and later
//!   domain modules own one area each and know nothing of HTTP.
//! - [`db`] owns the SQLite file: migrations, the group-committing writer, the readers;
//!   [`stored`] owns the names read back from it that become paths, and opening what they name.

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
