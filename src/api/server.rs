//! HTTP serving on hyper 1 + hyper-util: one accept loop per listener (TCP or Unix), HTTP/1.1
//! and h2c on every connection, a connection budget per listener (the admin socket always has
//! room for root), bounds against slow and idle clients on both protocols (header read, idle
//! connection, stalled writes), graceful drain on shutdown, and an activity tracker for idle
//! exit.
//!
//! Slow clients are bounded where the connection is, not in each handler: a connection with
//! no request in flight is closed after `server.header-timeout` (hyper bounds only HTTP/1's
//! head read; an HTTP/2 connection could otherwise sit on a preface or a half-sent header
//! block forever), and a connection whose peer takes no bytes for `server.write-timeout` is
//! closed, which also ends whatever stream it carried.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::api::App;
use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

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
    /// The tunnels' public listener (`tunnels.listen`): whatever arrives here comes from the
    /// internet, however local the peer's address.
    pub public: bool,
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
    let server = live.get().server.clone();
    let graceful = Arc::new(GracefulShutdown::new());
    let shared = Arc::new(Shared {
        app,
        live: live.clone(),
        activity,
        graceful: graceful.clone(),
    });
    let mut loops = tokio::task::JoinSet::new();
    for named in listeners {
        let name: Arc<str> = Arc::from(named.name.as_str());
        let admin = named.name == crate::systemd::ADMIN_FD_NAME;
        let public = named.name == crate::systemd::TUNNEL_FD_NAME;
        // Each listener has its own budget, so connections on one (say the public TCP
        // port) can never take the room of another (nginx's socket, the admin socket).
        let budget = if admin {
            server.admin_max_connections
        } else {
            server.max_connections
        };
        let listener = into_tokio(named.listener)?;
        loops.spawn(accept_loop(
            listener,
            Endpoint {
                name,
                admin,
                public,
                budget: Arc::new(Semaphore::new(budget)),
            },
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

/// One listener as its accept loop sees it.
struct Endpoint {
    /// The listener's name, for `ConnInfo` and logs.
    name: Arc<str>,
    /// The admin socket: its budget is taken after accepting, when the peer is known.
    admin: bool,
    /// The tunnels' public listener.
    public: bool,
    /// Connections this listener may have open at once.
    budget: Arc<Semaphore>,
}

async fn accept_loop(
    listener: Listener,
    ep: Endpoint,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        // An HTTP listener waits for room before accepting, so further clients wait in the
        // kernel's accept queue. The admin socket accepts first: root always gets in.
        let early = if ep.admin {
            None
        } else {
            tokio::select! {
                _ = shutdown.wait_for(|s| *s) => break,
                p = ep.budget.clone().acquire_owned() => match p { Ok(p) => Some(p), Err(_) => break },
            }
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
                    listener: ep.name.clone(),
                    admin: ep.admin,
                    public: ep.public,
                    peer_uid: None,
                    local_ip: stream.local_addr().ok().map(|a| a.ip()),
                };
                let Some(permit) = early.or_else(|| admitted(&ep, None)) else {
                    continue;
                };
                spawn_connection(stream, info, &shared, Some(permit));
            }
            Ok(Accepted::Unix(stream)) => {
                let uid = stream.peer_cred().ok().map(|c| c.uid());
                let info = ConnInfo {
                    remote: Remote::Unix,
                    listener: ep.name.clone(),
                    admin: ep.admin,
                    public: ep.public,
                    peer_uid: uid,
                    local_ip: None,
                };
                let permit = match early.or_else(|| admitted(&ep, uid)) {
                    Some(p) => Some(p),
                    // Root is never refused on the admin socket: whatever holds the budget,
                    // the host's administrator can still reach the daemon.
                    None if uid == Some(0) => None,
                    None => continue,
                };
                spawn_connection(stream, info, &shared, permit);
            }
            Err(e) => {
                // EMFILE/ENFILE/ECONNABORTED and friends: transient; back off instead of spinning.
                tracing::warn!(listener = %ep.name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// A permit from the listener's budget for a connection accepted before asking (the admin
/// socket), or `None` (the connection is dropped; logged) when the budget is spent.
fn admitted(ep: &Endpoint, uid: Option<u32>) -> Option<OwnedSemaphorePermit> {
    match ep.budget.clone().try_acquire_owned() {
        Ok(p) => Some(p),
        Err(_) if uid == Some(0) => {
            tracing::debug!(listener = %ep.name, "admin socket budget spent; root let in beyond it");
            None
        }
        Err(_) => {
            tracing::warn!(listener = %ep.name, peer_uid = ?uid, "connection refused: server.admin-max-connections reached");
            None
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
    permit: Option<OwnedSemaphorePermit>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let app = shared.app.clone();
    let cfg = shared.live.get();
    let header_timeout = cfg.server.header_timeout.get();
    let activity = shared.activity.clone();
    activity.opened();
    let (in_flight, idle_rx) = watch::channel(InFlight::default());
    let in_flight = Arc::new(in_flight);
    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let guard = RequestGuard::start(&in_flight);
        let mut req = req.map(axum::body::Body::new);
        req.extensions_mut().insert(info.clone());
        let response = crate::api::serve(&app, req);
        async move {
            let response = response.await?;
            Ok::<_, std::convert::Infallible>(response.map(|body| Tracked {
                body,
                _guard: guard,
            }))
        }
    });
    let io = WriteBound::new(stream, cfg.server.write_timeout.get());
    let writes_blocked = io.blocked.clone();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    // Pings find a peer that is gone while a stream is open (an idle connection is closed
    // by the watch below, which pings would not do: a live peer answers them).
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(header_timeout)
        .keep_alive_timeout(header_timeout);
    // With upgrades: a WebSocket (terminal attach) takes the connection over after its 101;
    // the connection's task then ends and the socket lives on in the WebSocket's task.
    let conn = builder
        .serve_connection_with_upgrades(TokioIo::new(io), svc)
        .into_owned();
    let watched = shared.graceful.watch(conn);
    tokio::spawn(async move {
        tokio::select! {
            r = watched => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
            }
            () = idle(idle_rx, writes_blocked, header_timeout) => {
                tracing::debug!("closing a connection with no request in flight for server.header-timeout");
            }
        }
        drop(permit);
        activity.closed();
    });
}

/// Requests in flight on one connection, and how many have started (so a request that came
/// and went between two looks still counts as activity).
#[derive(Debug, Default, Clone, Copy)]
struct InFlight {
    open: usize,
    started: u64,
}

/// One request in flight, from the service call until hyper drops its response body (the
/// whole response is written, or the connection is gone): a streamed response (SSE, a
/// download) keeps its connection busy for as long as it runs.
struct RequestGuard(Arc<watch::Sender<InFlight>>);

impl RequestGuard {
    fn start(tx: &Arc<watch::Sender<InFlight>>) -> RequestGuard {
        tx.send_modify(|f| {
            f.open += 1;
            f.started += 1;
        });
        RequestGuard(tx.clone())
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.send_modify(|f| f.open = f.open.saturating_sub(1));
    }
}

/// A response body that holds its request's place in the connection's in-flight count.
struct Tracked {
    body: axum::body::Body,
    _guard: RequestGuard,
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Returns once the connection has had no request in flight for `after` (never while the
/// last response is still being written to a slow reader: the write bound governs that).
/// Covers what hyper leaves open: an HTTP/2 connection that sent only a preface, a stalled
/// preface or header block, or no stream at all.
async fn idle(mut rx: watch::Receiver<InFlight>, writes_blocked: Arc<AtomicBool>, after: Duration) {
    loop {
        if rx.borrow_and_update().open > 0 {
            if rx.changed().await.is_err() {
                return std::future::pending().await;
            }
            continue;
        }
        match tokio::time::timeout(after, rx.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return std::future::pending().await,
            Err(_) if writes_blocked.load(Ordering::Relaxed) => {}
            Err(_) => return,
        }
    }
}

/// A connection's socket with a bound on stalled writes: when the peer takes no bytes for
/// `timeout` (it stopped reading, its window stays full), writing fails with `TimedOut` and
/// hyper closes the connection. Progress of any size starts the bound again, so a slow but
/// steady reader is served.
struct WriteBound<S> {
    inner: S,
    timeout: Duration,
    /// Running while a write waits for the peer.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Whether the last write is waiting for the peer (read by the idle watch).
    blocked: Arc<AtomicBool>,
}

impl<S> WriteBound<S> {
    fn new(inner: S, timeout: Duration) -> WriteBound<S> {
        WriteBound {
            inner,
            timeout,
            stalled: None,
            blocked: Arc::new(AtomicBool::new(false)),
        }
    }

    fn bound<T>(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        match r {
            Poll::Pending => {
                self.blocked.store(true, Ordering::Relaxed);
                let timeout = self.timeout;
                let stall = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if stall.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the peer took no data for server.write-timeout",
                    )));
                }
                Poll::Pending
            }
            ready => {
                if self.stalled.take().is_some() {
                    self.blocked.store(false, Ordering::Relaxed);
                }
                ready
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteBound<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteBound<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.bound(cx, r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.bound(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_flush(cx);
        this.bound(cx, r)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.bound(cx, r)
    }
}
