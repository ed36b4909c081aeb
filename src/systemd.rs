//! Everything systemd hands us or expects back: the listening sockets (socket activation via
//! `listenfd`, else bind from config), `sd_notify` readiness/status/watchdog/stopping.

use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::time::Duration;

use sd_notify::NotifyState;

use crate::config::ListenAddr;

/// A listening socket, still as a std type so it can be taken before the runtime starts.
#[derive(Debug)]
pub enum StdListener {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener),
}

/// A listener with the name systemd gave it (`FileDescriptorName=`) or its address.
#[derive(Debug)]
pub struct NamedListener {
    pub name: String,
    pub listener: StdListener,
}

impl NamedListener {
    /// The local address as text, for logs.
    pub fn describe(&self) -> String {
        match &self.listener {
            StdListener::Tcp(l) => l
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|_| "tcp:?".into()),
            StdListener::Unix(l) => l
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(|p| format!("unix:{}", p.display())))
                .unwrap_or_else(|| "unix:?".into()),
        }
    }
}

/// The name systemd gives the admin socket (`FileDescriptorName=admin`); every other passed
/// socket serves the HTTP API.
pub const ADMIN_FD_NAME: &str = "admin";
/// The name of the tunnels' public listener (`tunnels.listen`, bound by the daemon itself).
pub const TUNNEL_FD_NAME: &str = "tunnel";

/// Sockets passed by systemd (LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES). `None` when not
/// socket-activated. Must run before any other thread exists: it clears those variables from
/// the environment so children do not inherit them.
pub fn take_activated_listeners() -> io::Result<Option<Vec<NamedListener>>> {
    let names: Vec<String> = std::env::var("LISTEN_FDNAMES")
        .map(|v| v.split(':').map(str::to_owned).collect())
        .unwrap_or_default();
    // SAFETY: called from main before the runtime or any other thread starts, so nothing can
    // read the environment concurrently.
    unsafe { std::env::remove_var("LISTEN_FDNAMES") };
    let mut fds = listenfd::ListenFd::from_env();
    if fds.len() == 0 {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(fds.len());
    for idx in 0..fds.len() {
        let name = names
            .get(idx)
            .cloned()
            .unwrap_or_else(|| format!("fd{}", idx + 3));
        let listener = match fds.take_tcp_listener(idx) {
            Ok(Some(l)) => StdListener::Tcp(l),
            Ok(None) => continue,
            Err(_) => match fds.take_unix_listener(idx) {
                Ok(Some(l)) => StdListener::Unix(l),
                Ok(None) => continue,
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!(
                            "socket {name:?} (fd {}) passed by systemd is neither a TCP nor a Unix stream listener: {e}",
                            idx + 3
                        ),
                    ));
                }
            },
        };
        out.push(NamedListener { name, listener });
    }
    Ok(Some(out))
}

/// Binds the configured addresses (when systemd passed none).
pub fn bind(addrs: &[ListenAddr]) -> io::Result<Vec<NamedListener>> {
    addrs
        .iter()
        .map(|addr| {
            let listener = match addr {
                ListenAddr::Tcp(a) => std::net::TcpListener::bind(a)
                    .map(StdListener::Tcp)
                    .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {a}: {e}")))?,
                ListenAddr::Unix(p) => bind_unix(p).map(StdListener::Unix)?,
            };
            Ok(NamedListener {
                name: addr.to_string(),
                listener,
            })
        })
        .collect()
}

fn bind_unix(path: &Path) -> io::Result<std::os::unix::net::UnixListener> {
    let ctx = |e: io::Error| {
        io::Error::new(
            e.kind(),
            format!("cannot listen on unix:{}: {e}", path.display()),
        )
    };
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(ctx(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "a non-socket file is in the way",
            )));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(ctx(io::Error::new(
                io::ErrorKind::AddrInUse,
                "another process is listening there",
            )));
        }
        // A stale socket left by a previous run that did not clean up.
        std::fs::remove_file(path).map_err(ctx)?;
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(ctx)?;
    }
    std::os::unix::net::UnixListener::bind(path).map_err(ctx)
}

/// Sends a state to the service manager; a no-op outside systemd. Failures are logged, never fatal.
pub fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}

/// `STATUS=` line shown by `systemctl status`.
pub fn status(text: &str) {
    notify(&[NotifyState::Status(text)]);
}

/// The watchdog interval systemd expects pings at (WATCHDOG_USEC for this PID), if enabled.
pub fn watchdog_timeout() -> Option<Duration> {
    sd_notify::watchdog_enabled()
}

/// Tells systemd a reload started; `MONOTONIC_USEC` is required by `Type=notify-reload`.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[NotifyState::Reloading, now]),
        Err(_) => notify(&[NotifyState::Reloading]),
    }
}
