//! Integration tests: the real `localhostd` binary, started the way systemd starts it (passed
//! sockets, NOTIFY_SOCKET, signals), spoken to over real TCP and Unix sockets.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;
mod http;

mod access;
mod activation;
mod config_cli;
mod durability;
mod kv;
mod lifecycle;
