//! Public tunnels to this host's API: an SSH reverse tunnel, localtunnel, cloudflared or ngrok,
//! each a supervised client confined like a job (its own user, PID and mount namespaces,
//! landlock, seccomp, no state directory) but on the host's network, forwarding to the
//! daemon's public listener (`tunnels.listen`), where nothing is trusted as loopback.
//!
//! - [`provider`]: what each client is (its command line, where it says its public URL).
//! - `supervise`: one task per tunnel meant to be up: starts the client, reads its URL,
//!   restarts it with backoff when it ends, marks the tunnel failed after
//!   `tunnels.max-failures` failures in a row.
//!
//! The desired state of each tunnel (up with its options, or down) is stored in the
//! database, so a restarted daemon brings its tunnels back ([`Tunnels::resume`]). What is
//! running is only in memory.

pub mod provider;
mod supervise;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::watch;

pub use provider::Provider;
use provider::StartOptions;

use crate::config::LiveConfig;
use crate::error::{Error, Result};
use crate::jobs::exec::Executor;
use crate::ops::metrics::Metrics;
use crate::store::db::Db;

/// How many of a client's last output lines a tunnel keeps (shown with a failure).
pub const LAST_LINES: usize = 20;
/// The longest output line kept, in bytes (longer ones are cut).
pub const MAX_LINE: usize = 512;

/// Where a tunnel is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Not meant to run, and not running.
    Stopped,
    /// Its client is starting, or has started and not yet said its public URL.
    Starting,
    /// Its client runs and the public URL is known.
    Up,
    /// Its client ended (or gave no URL in time); it is started again after a pause.
    Restarting,
    /// Its client failed `tunnels.max-failures` times in a row; it is not restarted until the
    /// next start.
    Failed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Stopped => "stopped",
            State::Starting => "starting",
            State::Up => "up",
            State::Restarting => "restarting",
            State::Failed => "failed",
        }
    }
}

/// A tunnel as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TunnelView {
    /// `ssh`, `localtunnel`, `cloudflared` or `ngrok`.
    #[schema(value_type = String)]
    pub provider: Provider,
    /// Whether its client can run here (binary found, settings present).
    pub available: bool,
    /// Why not, naming the setting or package.
    pub unavailable_reason: Option<String>,
    /// The client binary it runs (when available).
    pub binary: Option<String>,
    /// `up` or `down`: what an admin asked for last (kept across restarts).
    #[schema(value_type = String)]
    pub desired: &'static str,
    pub state: State,
    /// The public URL, while up.
    pub url: Option<String>,
    /// When it entered its state (RFC 3339).
    pub since: Option<String>,
    /// Restarts of its client since the tunnel was started.
    pub restarts: u64,
    /// Why it last ended or failed.
    pub last_error: Option<String>,
    /// The client's last output lines (at most [`LAST_LINES`]).
    pub last_lines: Vec<String>,
    /// The options it was started with.
    #[schema(value_type = Object)]
    pub options: serde_json::Value,
}

/// All tunnels.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TunnelList {
    pub enabled: bool,
    /// The public listener the clients forward to (`tunnels.listen` as bound).
    pub target: Option<String>,
    pub items: Vec<TunnelView>,
}

/// What the supervisor reports of a tunnel.
#[derive(Debug, Clone)]
struct Status {
    state: State,
    url: Option<String>,
    since: SystemTime,
    restarts: u64,
    last_error: Option<String>,
    last_lines: Vec<String>,
}

impl Status {
    fn new(state: State) -> Status {
        Status {
            state,
            url: None,
            since: SystemTime::now(),
            restarts: 0,
            last_error: None,
            last_lines: Vec::new(),
        }
    }
}

/// A supervisor task and the way to end it.
struct Run {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

struct Slot {
    desired_up: bool,
    options: StartOptions,
    options_json: serde_json::Value,
    status: Status,
    run: Option<Run>,
}

impl Slot {
    fn new() -> Slot {
        Slot {
            desired_up: false,
            options: StartOptions::default(),
            options_json: serde_json::json!({}),
            status: Status::new(State::Stopped),
            run: None,
        }
    }
}

/// The tunnels of this daemon. Cheap to clone.
#[derive(Clone)]
pub struct Tunnels {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    live: Arc<LiveConfig>,
    exec: Executor,
    metrics: Metrics,
    /// The public listener's address, once bound.
    target: RwLock<Option<SocketAddr>>,
    slots: Mutex<BTreeMap<Provider, Slot>>,
    /// The public host names of the tunnels that are up (lowercase, no port): the Host check
    /// lets them in while they are.
    hosts: RwLock<Vec<(Provider, String)>>,
    /// Start and stop one at a time, so a stop cannot interleave with a start of the same
    /// tunnel.
    changes: tokio::sync::Mutex<()>,
}

impl Tunnels {
    pub fn new(db: Db, live: Arc<LiveConfig>, exec: Executor, metrics: Metrics) -> Tunnels {
        let slots = Provider::ALL
            .into_iter()
            .map(|p| (p, Slot::new()))
            .collect();
        for p in Provider::ALL {
            metrics.set_tunnel_up(p.as_str(), false);
        }
        Tunnels {
            inner: Arc::new(Inner {
                db,
                live,
                exec,
                metrics,
                target: RwLock::new(None),
                slots: Mutex::new(slots),
                hosts: RwLock::new(Vec::new()),
                changes: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// The public listener the clients forward to (set by the daemon once it is bound).
    pub fn set_target(&self, addr: SocketAddr) {
        if let Ok(mut t) = self.inner.target.write() {
            *t = Some(addr);
        }
    }

    fn target(&self) -> Option<SocketAddr> {
        self.inner.target.read().ok().and_then(|t| *t)
    }

    fn slots(&self) -> MutexGuard<'_, BTreeMap<Provider, Slot>> {
        match self.inner.slots.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Every provider: whether it can run, what was asked, what runs.
    pub fn list(&self) -> TunnelList {
        let cfg = self.inner.live.get();
        let path = std::env::var_os("PATH").unwrap_or_default();
        let slots = self.slots();
        let items = Provider::ALL
            .into_iter()
            .map(|p| {
                let located = provider::locate(p, &cfg.tunnels, &path);
                let slot = slots.get(&p);
                let status = slot.map(|s| s.status.clone());
                let status = status.unwrap_or_else(|| Status::new(State::Stopped));
                TunnelView {
                    provider: p,
                    available: located.is_ok(),
                    binary: located.as_ref().ok().map(|b| b.display().to_string()),
                    unavailable_reason: located.err(),
                    desired: if slot.is_some_and(|s| s.desired_up) {
                        "up"
                    } else {
                        "down"
                    },
                    state: status.state,
                    url: status.url,
                    since: Some(crate::util::time::rfc3339_at(status.since)),
                    restarts: status.restarts,
                    last_error: status.last_error,
                    last_lines: status.last_lines,
                    options: slot.map_or(serde_json::json!({}), |s| s.options_json.clone()),
                }
            })
            .collect();
        TunnelList {
            enabled: cfg.tunnels.enabled,
            target: self.target().map(|a| a.to_string()),
            items,
        }
    }

    /// One provider's view.
    pub fn get(&self, p: Provider) -> Result<TunnelView> {
        self.list()
            .items
            .into_iter()
            .find(|t| t.provider == p)
            .ok_or_else(|| Error::NotFound(format!("no tunnel provider {}", p.as_str())))
    }

    /// Starts (or, with other options, restarts) a tunnel and stores that it is meant to be
    /// up. Refused when tunnels are off, the provider cannot run here (`Unprocessable`, with
    /// the reason) or an option is wrong (`Invalid`).
    pub async fn start(
        &self,
        p: Provider,
        options: &serde_json::Value,
        by: &str,
    ) -> Result<TunnelView> {
        let _one = self.inner.changes.lock().await;
        let cfg = self.inner.live.get();
        if !cfg.tunnels.enabled {
            return Err(Error::Unavailable(disabled_message()));
        }
        let Some(_) = self.target() else {
            return Err(Error::Unavailable(
                "the public listener (tunnels.listen) is not bound; restart the daemon after enabling tunnels".into(),
            ));
        };
        let opts = provider::options(p, options).map_err(|e| Error::Invalid(e.to_string()))?;
        let path = std::env::var_os("PATH").unwrap_or_default();
        provider::locate(p, &cfg.tunnels, &path).map_err(|reason| {
            Error::Unprocessable(format!(
                "the {} tunnel cannot run here: {reason}",
                p.as_str()
            ))
        })?;
        provider::check(p, &cfg.tunnels, &opts).map_err(|e| {
            Error::Unprocessable(format!("the {} tunnel cannot run here: {e}", p.as_str()))
        })?;
        let options_json = serde_json::to_value(&opts)
            .map_err(|e| Error::Internal(format!("tunnel options: {e}")))?;
        let running_same = {
            let slots = self.slots();
            slots.get(&p).is_some_and(|s| {
                s.desired_up
                    && s.options == opts
                    && s.run.is_some()
                    && s.status.state != State::Failed
            })
        };
        self.store(p, true, &options_json, by).await?;
        if !running_same {
            self.end_run(p).await;
            {
                let mut slots = self.slots();
                if let Some(s) = slots.get_mut(&p) {
                    s.desired_up = true;
                    s.options = opts.clone();
                    s.options_json = options_json;
                }
            }
            self.spawn_run(p, opts);
        }
        self.get(p)
    }

    /// Stops a tunnel (its client and everything it started) and stores that it is meant to
    /// be down. Stopping a stopped tunnel is no error.
    pub async fn stop(&self, p: Provider, by: &str) -> Result<TunnelView> {
        let _one = self.inner.changes.lock().await;
        if !self.inner.live.get().tunnels.enabled {
            return Err(Error::Unavailable(disabled_message()));
        }
        let options_json = {
            let slots = self.slots();
            slots
                .get(&p)
                .map_or(serde_json::json!({}), |s| s.options_json.clone())
        };
        self.store(p, false, &options_json, by).await?;
        if let Some(s) = self.slots().get_mut(&p) {
            s.desired_up = false;
        }
        self.end_run(p).await;
        self.set_status(p, |s| {
            s.state = State::Stopped;
            s.url = None;
            s.since = SystemTime::now();
        });
        self.get(p)
    }

    /// Starts the tunnels the database says are meant to be up (at startup). Tunnels that
    /// are off in the config are only logged.
    pub async fn resume(&self) -> Result<usize> {
        let rows = self
            .inner
            .db
            .read(|c| {
                let mut st = c.prepare("SELECT provider, desired, options FROM tunnels")?;
                let rows = st
                    .query_map([], |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?,
                        ))
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(rows)
            })
            .await?;
        let enabled = self.inner.live.get().tunnels.enabled;
        let mut started = 0;
        for (name, desired, options) in rows {
            let Some(p) = Provider::parse(&name) else {
                tracing::warn!(provider = %name, "a stored tunnel of an unknown provider is ignored");
                continue;
            };
            let json: serde_json::Value =
                serde_json::from_str(&options).unwrap_or_else(|_| serde_json::json!({}));
            let opts = match provider::options(p, &json) {
                Ok(o) => o,
                Err(e) => {
                    tracing::error!(provider = p.as_str(), error = %e, "the stored options of a tunnel are refused; it stays down");
                    continue;
                }
            };
            {
                let mut slots = self.slots();
                if let Some(s) = slots.get_mut(&p) {
                    s.desired_up = desired == "up";
                    s.options = opts.clone();
                    s.options_json = json;
                }
            }
            if desired != "up" {
                continue;
            }
            if !enabled {
                tracing::warn!(
                    provider = p.as_str(),
                    "a tunnel is meant to be up but tunnels.enabled is false; it stays down"
                );
                continue;
            }
            if self.target().is_none() {
                continue;
            }
            tracing::info!(
                provider = p.as_str(),
                "starting a tunnel that was up before the restart"
            );
            self.spawn_run(p, opts);
            started += 1;
        }
        Ok(started)
    }

    /// Whether a tunnel is meant to be up (the daemon then does not exit when idle).
    pub fn wanted(&self) -> bool {
        self.slots()
            .values()
            .any(|s| s.desired_up && s.run.is_some())
    }

    /// Ends every client (at shutdown); what is stored is left as it is, so the next daemon
    /// starts them again.
    pub async fn shutdown(&self) {
        let _one = self.inner.changes.lock().await;
        for p in Provider::ALL {
            self.end_run(p).await;
        }
    }

    /// Whether `host` (a Host header's name, without port) is the public host of a tunnel
    /// that is up now.
    pub fn public_host(&self, host: &str) -> bool {
        self.inner
            .hosts
            .read()
            .is_ok_and(|h| h.iter().any(|(_, n)| n.eq_ignore_ascii_case(host)))
    }

    async fn store(
        &self,
        p: Provider,
        up: bool,
        options: &serde_json::Value,
        by: &str,
    ) -> Result<()> {
        let name = p.as_str();
        let desired = if up { "up" } else { "down" };
        let options = options.to_string();
        let by = by.to_owned();
        let now = crate::util::time::now_unix();
        self.inner
            .db
            .write(move |c| {
                c.execute(
                    "INSERT INTO tunnels(provider, desired, options, changed_at, changed_by)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT(provider) DO UPDATE SET desired = excluded.desired,
                        options = excluded.options, changed_at = excluded.changed_at,
                        changed_by = excluded.changed_by",
                    rusqlite::params![name, desired, options, now, by],
                )?;
                Ok(())
            })
            .await
    }

    fn spawn_run(&self, p: Provider, opts: StartOptions) {
        let (stop, rx) = watch::channel(false);
        self.set_status(p, |s| {
            *s = Status::new(State::Starting);
        });
        let task = tokio::spawn(supervise::run(self.clone(), p, opts, rx));
        if let Some(s) = self.slots().get_mut(&p) {
            s.run = Some(Run { stop, task });
        }
    }

    /// Ends the supervisor of `p` (which ends its client and waits for its PID namespace to
    /// be gone) and waits for it.
    async fn end_run(&self, p: Provider) {
        let run = self.slots().get_mut(&p).and_then(|s| s.run.take());
        if let Some(run) = run {
            let _ = run.stop.send(true);
            let mut task = run.task;
            if tokio::time::timeout(Duration::from_secs(15), &mut task)
                .await
                .is_err()
            {
                tracing::error!(
                    provider = p.as_str(),
                    "a tunnel's supervisor did not end in 15 s; aborting it"
                );
                task.abort();
            }
        }
        self.set_url(p, None);
    }

    /// Changes the status of `p` (the supervisor's reports), logging and exporting a change
    /// of state.
    fn set_status(&self, p: Provider, f: impl FnOnce(&mut Status)) {
        let mut slots = self.slots();
        let Some(slot) = slots.get_mut(&p) else {
            return;
        };
        let before = slot.status.state;
        f(&mut slot.status);
        let after = slot.status.clone();
        drop(slots);
        if before != after.state {
            self.inner
                .metrics
                .set_tunnel_up(p.as_str(), after.state == State::Up);
            let url = after.url.as_deref().unwrap_or("");
            let error = after.last_error.as_deref().unwrap_or("");
            match after.state {
                State::Failed | State::Restarting => tracing::warn!(
                    provider = p.as_str(),
                    state = after.state.as_str(),
                    restarts = after.restarts,
                    error,
                    "tunnel state changed"
                ),
                _ => tracing::info!(
                    provider = p.as_str(),
                    state = after.state.as_str(),
                    url,
                    restarts = after.restarts,
                    "tunnel state changed"
                ),
            }
        }
    }

    /// Sets (or clears) the public URL of `p`, and with it the host the Host check lets in.
    fn set_url(&self, p: Provider, url: Option<String>) {
        let host = url.as_deref().and_then(host_of);
        if let Ok(mut hosts) = self.inner.hosts.write() {
            hosts.retain(|(q, _)| *q != p);
            if let Some(h) = host {
                hosts.push((p, h));
            }
        }
        if let Some(s) = self.slots().get_mut(&p) {
            s.status.url = url;
        }
    }
}

/// What an enabled `[tunnels]` exposes, for `localhostd check-config`.
pub fn exposure(cfg: &crate::config::TunnelsConfig) -> String {
    let listen = if cfg.listen.port() == 0 {
        format!("{} (a free port chosen at startup)", cfg.listen.ip())
    } else {
        cfg.listen.to_string()
    };
    format!(
        "tunnels are ENABLED: an admin (a token with the admin scope) can publish this host's \
         API and web UI to the internet with POST /api/v1/tunnels/{{ssh,localtunnel,cloudflared,ngrok}}/start. \
         While a tunnel is up:\n\
         - anyone on the internet who has its URL reaches every route of the API through the \
         public listener {listen}; each request still needs a token or a login, like any \
         other, and is rate-limited as one client (\"tunnel\");\n\
         - nothing arriving there is trusted as local: no loopback privileges \
         (metrics.public-on-loopback does not apply), no trusted-proxy headers, never the \
         admin socket's local admin;\n\
         - the tunnel's public host name passes the Host check (only while it is up);\n\
         - /health, /health/ready and the login page are public, as on any listener;\n\
         - the client runs confined (no state directory, landlock, seccomp, uid 65534 \
         inside) but on the host's network; the ssh key, known_hosts and tokens named in \
         [tunnels.*] are read by the daemon and handed to it.\n\
         Tunnels meant to be up keep the daemon from exiting when idle and come back after a \
         restart; docs/security.md has the details."
    )
}

/// The message of every refusal while tunnels are off.
pub fn disabled_message() -> String {
    "tunnels are disabled on this host; an admin enables them with `[tunnels] enabled = true` \
     in /etc/localhostd/config.toml and a restart (docs/security.md says what a tunnel exposes)"
        .into()
}

/// The host name of a URL, lowercase, without scheme, credentials, port or path.
pub fn host_of(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        authority.split(':').next()?
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_of_urls() {
        assert_eq!(
            host_of("https://Abc.trycloudflare.com").as_deref(),
            Some("abc.trycloudflare.com")
        );
        assert_eq!(
            host_of("http://tunnel.example.com:8022/x?y").as_deref(),
            Some("tunnel.example.com")
        );
        assert_eq!(host_of("http://[::1]:80/").as_deref(), Some("::1"));
        assert_eq!(
            host_of("https://u:p@h.example/").as_deref(),
            Some("h.example")
        );
        assert_eq!(host_of("https://"), None);
    }
}
