//! The daemon's life: startup order (state dir → lock → database → listeners → READY),
//! the task tree (server, signals, watchdog, idle exit), and shutdown order (STOPPING → drain
//! → close the database). No business rules.

use std::ffi::OsString;
use std::fs::File;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use nix::fcntl::{Flock, FlockArg};
use sd_notify::NotifyState;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::config::{Config, ConfigSource, LiveConfig};
use crate::db::Db;
use crate::health::Health;
use crate::logging::LogHandle;
use crate::server::{self, Activity};
use crate::systemd::{self, NamedListener};

/// What every request handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The state database (writer + readers).
    pub db: Db,
    /// The config in force; a SIGHUP swaps it.
    pub live: Arc<LiveConfig>,
    /// Readiness and the health report.
    pub health: Arc<Health>,
}

/// Everything `run` needs from the outside, so tests and systemd plug in the same way.
pub struct RunOptions {
    pub config: Config,
    /// Where the config came from, to re-read it on SIGHUP.
    pub source: ConfigSource,
    /// Sockets passed by systemd; `None` binds `server.listen`.
    pub activated: Option<Vec<NamedListener>>,
    /// `$STATE_DIRECTORY`, as systemd set it.
    pub state_directory_env: Option<OsString>,
    pub log: LogHandle,
}

/// The database file inside the state directory.
pub const DB_FILE: &str = "localhostd.db";
/// The lock file `serve` holds for its whole life; offline CLI commands honour it.
pub const LOCK_FILE: &str = "localhostd.lock";

/// Runs the daemon until SIGTERM/SIGINT (or idle exit), then shuts down in order.
pub async fn run(opts: RunOptions) -> anyhow::Result<()> {
    let started = Instant::now();
    let started_at = SystemTime::now();
    let RunOptions {
        config,
        source,
        activated,
        state_directory_env,
        log,
    } = opts;

    systemd::status("opening the state directory");
    let state_dir = config.state_dir(state_directory_env.as_deref());
    prepare_state_dir(&state_dir)?;
    let _lock = lock_state_dir(&state_dir)?;

    systemd::status("opening the database");
    let db_path = state_dir.join(DB_FILE);
    let readers = config.storage.db_readers;
    let db = tokio::task::spawn_blocking(move || Db::open(&db_path, readers))
        .await
        .context("database open task failed")?
        .context("cannot open the database")?;

    systemd::status("preparing listeners");
    let socket_activated = activated.is_some();
    let listeners = match activated {
        Some(l) => l,
        None => systemd::bind(&config.server.listen)?,
    };
    let (http, admin): (Vec<_>, Vec<_>) = listeners
        .into_iter()
        .partition(|l| l.name != systemd::ADMIN_FD_NAME);
    if !admin.is_empty() {
        tracing::info!("admin socket passed by systemd; it is not served by this version");
    }
    drop(admin);
    if http.is_empty() {
        anyhow::bail!("no HTTP listener: systemd passed only an admin socket");
    }
    let described: Vec<String> = http.iter().map(NamedListener::describe).collect();

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let live = Arc::new(LiveConfig::new(config));
    let health = Arc::new(Health {
        db: db.clone(),
        state_dir: state_dir.clone(),
        live: live.clone(),
        started,
        started_at,
        listeners: http.len(),
        socket_activated,
        shutting_down: shutdown_rx.clone(),
    });
    let state = AppState {
        db: db.clone(),
        live: live.clone(),
        health,
    };
    let app = crate::api::router(state);

    // Signals are installed before READY so that a stop request is never lost.
    let mut sigterm = signal(SignalKind::terminate()).context("cannot install SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot install SIGINT handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("cannot install SIGHUP handler")?;

    let activity = Arc::new(Activity::default());
    let server = tokio::spawn(server::serve(
        http,
        app,
        live.clone(),
        activity.clone(),
        shutdown_rx.clone(),
    ));

    let serving = format!("serving on {}", described.join(", "));
    systemd::notify(&[NotifyState::Ready, NotifyState::Status(&serving)]);
    tracing::info!(
        listeners = %described.join(", "),
        socket_activated,
        state_dir = %state_dir.display(),
        version = env!("CARGO_PKG_VERSION"),
        "localhostd ready"
    );

    if let Some(timeout) = systemd::watchdog_timeout() {
        tokio::spawn(watchdog(db.clone(), timeout, shutdown_rx.clone()));
    }
    if let Some(idle) = live
        .get()
        .server
        .idle_exit_after
        .filter(|_| socket_activated)
    {
        tokio::spawn(idle_exit(activity, idle.get(), shutdown_tx.clone()));
    }

    let mut stop = shutdown_rx.clone();
    loop {
        tokio::select! {
            _ = sigterm.recv() => { tracing::info!(signal = "SIGTERM", "stopping"); break; }
            _ = sigint.recv() => { tracing::info!(signal = "SIGINT", "stopping"); break; }
            _ = sighup.recv() => reload(&source, &live, &log, &serving),
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    let _ = shutdown_tx.send(true);
    systemd::notify(&[
        NotifyState::Stopping,
        NotifyState::Status("draining connections"),
    ]);

    let drained = match server.await {
        Ok(Ok(all)) => all,
        Ok(Err(e)) => return Err(e).context("serving failed"),
        Err(e) => return Err(anyhow::anyhow!("server task failed: {e}")),
    };
    systemd::status("closing the database");
    tokio::task::spawn_blocking(move || db.close())
        .await
        .context("database close task failed")?;
    tracing::info!(
        drained,
        uptime_s = started.elapsed().as_secs(),
        "localhostd stopped"
    );
    Ok(())
}

fn prepare_state_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create state directory {}", dir.display()))
}

fn lock_state_dir(dir: &Path) -> anyhow::Result<Flock<File>> {
    let path: PathBuf = dir.join(LOCK_FILE);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open lock file {}", path.display()))?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
        anyhow::anyhow!(
            "cannot lock {}: {errno} (another localhostd, or an offline localhostd command, is using this state directory)",
            path.display()
        )
    })
}

/// SIGHUP: re-read the config; apply what can change live, name what needs a restart, and keep
/// the old config when the new one is invalid.
fn reload(source: &ConfigSource, live: &LiveConfig, log: &LogHandle, serving: &str) {
    systemd::reloading();
    systemd::status("reloading configuration");
    match source.load() {
        Ok(new) => {
            let old = live.get();
            let restart = old.restart_needed_for(&new);
            if old.log.level != new.log.level
                && let Err(e) = log.set_level(&new.log.level)
            {
                tracing::error!(error = %e, "cannot apply the new log.level");
            }
            if !restart.is_empty() {
                tracing::warn!(settings = %restart.join(", "), "these changed settings take effect only after a restart");
            }
            live.replace(new);
            tracing::info!(config = %source.path.display(), "configuration reloaded");
        }
        Err(e) => {
            tracing::error!(error = %e, "new configuration refused; keeping the one in force");
        }
    }
    systemd::notify(&[NotifyState::Ready, NotifyState::Status(serving)]);
}

/// Pings the systemd watchdog at half its timeout, but only while the database writer
/// answers: a stuck writer must let systemd restart us.
async fn watchdog(db: Db, timeout: Duration, mut shutdown: watch::Receiver<bool>) {
    let period = timeout / 2;
    tracing::info!(
        period_ms = period.as_millis() as u64,
        "systemd watchdog enabled"
    );
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(period) => {}
        }
        if db.writer_answers(period / 2).await {
            systemd::notify(&[NotifyState::Watchdog]);
        } else {
            tracing::error!("database writer does not answer; withholding the watchdog ping");
        }
    }
}

/// Exits after `idle` without any open connection (socket activation only: systemd keeps the
/// listening socket and starts us again on the next connection).
async fn idle_exit(activity: Arc<Activity>, idle: Duration, shutdown: watch::Sender<bool>) {
    let tick = idle.min(Duration::from_secs(1));
    loop {
        tokio::time::sleep(tick).await;
        if *shutdown.borrow() {
            return;
        }
        if activity.idle_for() >= idle {
            tracing::info!(
                idle_s = idle.as_secs_f64(),
                "no connection for server.idle-exit-after; exiting until the next one"
            );
            let _ = shutdown.send(true);
            return;
        }
    }
}
