//! HTTP serving on hyper 1 + hyper-util: one accept loop per listener (TCP or Unix), HTTP/1.1
//! and h2c on every connection, a connection cap, a header-read timeout against slow clients,
//! graceful drain on shutdown, and an activity tracker for idle exit.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::api::App;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Semaphore, watch};

use crate::config::LiveConfig;
use crate::systemd::{NamedListener, StdListener};

/// Who is on the other end of a connection; inserted into every request's extensions.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub remote: Remote,
    /// The listener's name (systemd's FileDescriptorName or the bound address).
    pub listener: Arc<str>,
    /// Whether this is the admin socket, where root and our own user are trusted by their
    /// peer credentials.
    pub admin: bool,
    /// The peer's uid (SO_PEERCRED) on Unix sockets.
    pub peer_uid: Option<u32>,
    /// Our own address on this TCP connection (a Host naming it is ours).
    pub local_ip: Option<std::net::IpAddr>,
}

#[derive(Debug, Clone, Copy)]
pub enum Remote {
    Tcp(SocketAddr),
    /// A peer on a Unix socket (nginx on the same host, the CLI).
    Unix,
}

impl std::fmt::Display for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Remote::Tcp(a) => write!(f, "{a}"),
            Remote::Unix => f.write_str("unix"),
        }
    }
}

/// Counts open connections and remembers when the last one closed, for `idle-exit-after`.
#[derive(Debug)]
pub struct Activity {
    open: AtomicUsize,
    last_change: Mutex<Instant>,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            open: AtomicUsize::new(0),
            last_change: Mutex::new(Instant::now()),
        }
    }
}

impl Activity {
    fn opened(&self) {
        self.open.fetch_add(1, Ordering::SeqCst);
        self.touch();
    }
    fn closed(&self) {
        self.open.fetch_sub(1, Ordering::SeqCst);
        self.touch();
    }
    fn touch(&self) {
        if let Ok(mut t) = self.last_change.lock() {
            *t = Instant::now();
        }
    }
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
    /// How long there has been no open connection (zero while one is open).
    pub fn idle_for(&self) -> Duration {
        if self.open_connections() > 0 {
            return Duration::ZERO;
        }
        self.last_change
            .lock()
            .map(|t| t.elapsed())
            .unwrap_or(Duration::ZERO)
    }
}

enum Listener {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

fn into_tokio(l: StdListener) -> std::io::Result<Listener> {
    Ok(match l {
        StdListener::Tcp(l) => {
            l.set_nonblocking(true)?;
            Listener::Tcp(tokio::net::TcpListener::from_std(l)?)
        }
        StdListener::Unix(l) => {
            l.set_nonblocking(true)?;
            Listener::Unix(tokio::net::UnixListener::from_std(l)?)
        }
    })
}

struct Shared {
    app: App,
    live: Arc<LiveConfig>,
    limit: Arc<Semaphore>,
    activity: Arc<Activity>,
    graceful: Arc<GracefulShutdown>,
}

/// Serves `app` on every listener until `shutdown` turns true, then stops accepting, lets
/// in-flight requests finish for up to `server.shutdown-timeout`, and returns whether every
/// connection finished in time.
pub async fn serve(
    listeners: Vec<NamedListener>,
    app: App,
    live: Arc<LiveConfig>,
    activity: Arc<Activity>,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<bool> {
    let max = live.get().server.max_connections;
    let graceful = Arc::new(GracefulShutdown::new());
    let shared = Arc::new(Shared {
        app,
        live: live.clone(),
        limit: Arc::new(Semaphore::new(max)),
        activity,
        graceful: graceful.clone(),
    });
    let mut loops = tokio::task::JoinSet::new();
    for named in listeners {
        let name: Arc<str> = Arc::from(named.name.as_str());
        let admin = named.name == crate::systemd::ADMIN_FD_NAME;
        let listener = into_tokio(named.listener)?;
        loops.spawn(accept_loop(
            listener,
            name,
            admin,
            shared.clone(),
            shutdown.clone(),
        ));
    }
    drop(shared);
    while loops.join_next().await.is_some() {}
    // Every accept loop has returned, so no connection can be added any more.
    let open = graceful.count();
    let timeout = live.get().server.shutdown_timeout.get();
    tracing::info!(
        open_connections = open,
        timeout_s = timeout.as_secs_f64(),
        "draining connections"
    );
    let Ok(graceful) = Arc::try_unwrap(graceful) else {
        return Ok(false);
    };
    match tokio::time::timeout(timeout, graceful.shutdown()).await {
        Ok(()) => Ok(true),
        Err(_) => {
            tracing::warn!(
                timeout_s = timeout.as_secs_f64(),
                "connections still open at server.shutdown-timeout; closing them"
            );
            Ok(false)
        }
    }
}

async fn accept_loop(
    listener: Listener,
    name: Arc<str>,
    admin: bool,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let permit = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => break,
            p = shared.limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let accepted = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => break,
            r = accept(&listener) => r,
        };
        match accepted {
            Ok(Accepted::Tcp(stream, addr)) => {
                let _ = stream.set_nodelay(true);
                let info = ConnInfo {
                    remote: Remote::Tcp(addr),
                    listener: name.clone(),
                    admin,
                    peer_uid: None,
                    local_ip: stream.local_addr().ok().map(|a| a.ip()),
                };
                spawn_connection(stream, info, &shared, permit);
            }
            Ok(Accepted::Unix(stream)) => {
                let info = ConnInfo {
                    remote: Remote::Unix,
                    listener: name.clone(),
                    admin,
                    peer_uid: stream.peer_cred().ok().map(|c| c.uid()),
                    local_ip: None,
                };
                spawn_connection(stream, info, &shared, permit);
            }
            Err(e) => {
                // EMFILE/ENFILE/ECONNABORTED and friends: transient; back off instead of spinning.
                tracing::warn!(listener = %name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

enum Accepted {
    Tcp(tokio::net::TcpStream, SocketAddr),
    Unix(tokio::net::UnixStream),
}

async fn accept(l: &Listener) -> std::io::Result<Accepted> {
    match l {
        Listener::Tcp(l) => l.accept().await.map(|(s, a)| Accepted::Tcp(s, a)),
        Listener::Unix(l) => l.accept().await.map(|(s, _)| Accepted::Unix(s)),
    }
}

fn spawn_connection<S>(
    stream: S,
    info: ConnInfo,
    shared: &Shared,
    permit: tokio::sync::OwnedSemaphorePermit,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let app = shared.app.clone();
    let cfg = shared.live.get();
    let activity = shared.activity.clone();
    activity.opened();
    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let mut req = req.map(axum::body::Body::new);
        req.extensions_mut().insert(info.clone());
        crate::api::serve(&app, req)
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.server.header_timeout.get());
    builder.http2().timer(TokioTimer::new());
    let conn = builder
        .serve_connection(TokioIo::new(stream), svc)
        .into_owned();
    let watched = shared.graceful.watch(conn);
    tokio::spawn(async move {
        if let Err(e) = watched.await {
            tracing::debug!(error = %e, "connection ended with an error");
        }
        drop(permit);
        activity.closed();
    });
}
