//! The daemon's life: startup order (state dir → lock → database → listeners → file store
//! recovery → READY), the task tree (server, signals, watchdog, idle exit), and shutdown order
//! (STOPPING → drain → close the database). No business rules.

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

use crate::api::server::{self, Activity};
use crate::api::state::AppState;
use crate::config::{Config, ConfigSource, LiveConfig};
use crate::jobs::sandbox::Sandbox;
use crate::logging::LogHandle;
use crate::ops::health::Health;
use crate::ops::metrics::Metrics;
use crate::store::audit::Event;
use crate::store::auth::{Scope, Scopes};
use crate::store::db::Db;
use crate::systemd::{self, NamedListener};
use crate::util::layout::{DB_FILE, INITIAL_TOKEN_FILE, LOCAL_ADMIN_SOCKET, LOCK_FILE};

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
    // A restore a crash cut in its swap is finished before anything reads the state.
    match crate::ops::backup::recover_restore(&state_dir) {
        Ok(None) => {}
        Ok(Some(tag)) => {
            tracing::warn!(
                tag,
                "finished a backup restore that a crash had interrupted"
            )
        }
        Err(e @ crate::ops::backup::BackupError::Conflict(_)) => {
            tracing::error!(error = %e, "state set aside by an earlier restore needs a look")
        }
        Err(e) => {
            return Err(anyhow::Error::new(e)).context("cannot finish an interrupted restore");
        }
    }

    systemd::status("opening the database");
    let db_path = state_dir.join(DB_FILE);
    let readers = config.storage.db_readers;
    let db = tokio::task::spawn_blocking(move || Db::open(&db_path, readers))
        .await
        .context("database open task failed")?
        .context("cannot open the database")?;

    systemd::status("preparing listeners");
    let socket_activated = activated.is_some();
    let mut listeners = match activated {
        Some(l) => l,
        None => {
            let mut l = systemd::bind(&config.server.listen)?;
            l.push(bind_admin_socket(&state_dir)?);
            l
        }
    };
    let http_count = listeners
        .iter()
        .filter(|l| l.name != systemd::ADMIN_FD_NAME && l.name != systemd::TUNNEL_FD_NAME)
        .count();
    if http_count == 0 {
        anyhow::bail!("no HTTP listener: systemd passed only an admin socket");
    }
    // The tunnels' public listener: bound by the daemon itself (also under socket
    // activation), only when tunnels are on. What arrives on it is never trusted as local.
    let tunnel_target = if config.tunnels.enabled {
        let mut l = systemd::bind(&[crate::config::ListenAddr::Tcp(config.tunnels.listen)])?;
        let mut public = l.pop().context("the tunnels' listener was not bound")?;
        public.name = systemd::TUNNEL_FD_NAME.to_owned();
        let addr = match &public.listener {
            systemd::StdListener::Tcp(t) => t.local_addr().ok(),
            systemd::StdListener::Unix(_) => None,
        };
        listeners.push(public);
        addr
    } else {
        None
    };
    let described: Vec<String> = listeners.iter().map(NamedListener::describe).collect();

    // Per-job memory cgroups: a subtree systemd delegated (Delegate=yes), else (as root) the
    // cgroup v1 memory controller; without either, rlimits hold jobs to their memory limit.
    let (cgroups, cgroup_detail) = match config.sandbox.job_cgroups {
        crate::config::JobCgroups::Off => (
            None,
            "off (sandbox.job-cgroups): jobs are limited by rlimits".to_owned(),
        ),
        crate::config::JobCgroups::Auto => match crate::jobs::sandbox::Cgroups::detect_system() {
            Ok(cg) => {
                let d = cg.describe();
                (Some(cg), d)
            }
            Err(e) => (
                None,
                format!("not available ({e}); jobs are limited by rlimits"),
            ),
        },
    };
    let memory_limited_by = if cgroups.is_some() {
        crate::jobs::sandbox::MemoryLimitedBy::Cgroup
    } else {
        crate::jobs::sandbox::MemoryLimitedBy::Rlimit
    };
    tracing::info!(cgroups = %cgroup_detail, memory_limited_by = memory_limited_by.as_str(), "job cgroups");

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let live = Arc::new(LiveConfig::new(config));
    let health = Arc::new(Health {
        db: db.clone(),
        state_dir: state_dir.clone(),
        live: live.clone(),
        started,
        started_at,
        listeners: http_count,
        socket_activated,
        job_cgroups: cgroup_detail,
        cgroups_delegated: cgroups.as_ref().is_some_and(|c| c.delegated()),
        memory_limited_by,
        shutting_down: shutdown_rx.clone(),
    });
    // Jobs are forked by a zygote: the running binary (even if an upgrade replaced the file)
    // re-executed once in its single-threaded sandbox-zygote mode.
    let sandbox = Sandbox::start(PathBuf::from("/proc/self/exe"))?;
    let state = AppState::new(db.clone(), live.clone(), health, sandbox, cgroups)
        .context("cannot open the program store")?;
    ensure_initial_admin_token(&state, &state_dir).await?;
    // Sandboxes built ahead of the first commands (sandbox.warm-pool).
    state.exec.refill();
    // localhostd_backup_last_success_timestamp_seconds from the backups already on disk
    // (the backup timer's runs, offline ones included).
    if let Some(t) = state.backups.last_success()
        && let Ok(d) = t.duration_since(std::time::UNIX_EPOCH)
    {
        state.metrics.backup_succeeded(d.as_secs());
    }
    systemd::status("recovering the file store");
    recover_files(&state).await?;
    match state.programs.sweep_orphans().await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(
            removed = n,
            "removed program directories without a database row"
        ),
        Err(e) => tracing::error!(error = %e, "cannot sweep the program store"),
    }
    match state.exec.recover().await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(
            interrupted = n,
            "executions left queued or running by the last daemon are recorded as interrupted (not run again)"
        ),
        Err(e) => {
            tracing::error!(error = %e, "cannot close the executions of the last daemon")
        }
    }
    match state.terminals.recover().await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(
            closed = n,
            "terminal sessions left running by the last daemon are recorded as ended (daemon stopped)"
        ),
        Err(e) => {
            tracing::error!(error = %e, "cannot close the terminal sessions of the last daemon")
        }
    }
    match state.backups.recover().await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(removed = n, "removed what an interrupted backup left"),
        Err(e) => tracing::error!(error = %e, "cannot clean the backup directory"),
    }
    if let Some(addr) = tunnel_target {
        state.tunnels.set_target(addr);
        tracing::info!(listen = %addr, "tunnels are enabled: their clients forward to this public listener");
    }
    let tunnels = state.tunnels.clone();
    let backups = state.backups.clone();
    let terminals = state.terminals.clone();
    let exec = state.exec.clone();
    let app = crate::api::router(state.clone());

    // Signals are installed before READY so that a stop request is never lost.
    let mut sigterm = signal(SignalKind::terminate()).context("cannot install SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot install SIGINT handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("cannot install SIGHUP handler")?;

    let activity = Arc::new(Activity::default());
    let server = tokio::spawn(server::serve(
        listeners,
        app,
        live.clone(),
        activity.clone(),
        shutdown_rx.clone(),
    ));
    tokio::spawn(kv_sweeper(state.clone(), shutdown_rx.clone()));
    tokio::spawn(audit_sealer(state.clone(), shutdown_rx.clone()));
    let metrics = state.metrics.clone();
    // The sampler writes its last history slot when shutdown starts; the database is closed
    // only after it finished.
    if live.get().metrics.enabled {
        crate::ops::metrics::load_history(&metrics).await;
    }
    let sampler = live.get().metrics.enabled.then(|| {
        tokio::spawn(crate::ops::metrics::run_sampler(
            metrics.clone(),
            shutdown_rx.clone(),
        ))
    });
    tokio::spawn(trim_when_idle(state.clone(), shutdown_rx.clone()));
    let audit = state.audit.clone();
    tokio::spawn(housekeeping(state, shutdown_rx.clone()));

    let serving = format!("serving on {}", described.join(", "));
    metrics.set_status_base(&serving);
    systemd::notify(&[
        NotifyState::Ready,
        NotifyState::Status(&metrics.status_line()),
    ]);
    tracing::info!(
        listeners = %described.join(", "),
        socket_activated,
        state_dir = %state_dir.display(),
        version = env!("CARGO_PKG_VERSION"),
        "localhostd ready"
    );

    // The tunnels that were up before the restart (in the background: a client that cannot
    // start only restarts with its pauses, it never holds up the daemon).
    match tunnels.resume().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(tunnels = n, "tunnels meant to be up are starting"),
        Err(e) => tracing::error!(error = %e, "cannot read the tunnels meant to be up"),
    }
    if let Some(timeout) = systemd::watchdog_timeout() {
        tokio::spawn(watchdog(db.clone(), timeout, shutdown_rx.clone()));
    }
    if let Some(idle) = live
        .get()
        .server
        .idle_exit_after
        .filter(|_| socket_activated)
    {
        tokio::spawn(idle_exit(
            activity,
            terminals.clone(),
            tunnels.clone(),
            exec.clone(),
            idle.get(),
            shutdown_tx.clone(),
        ));
    }

    let mut stop = shutdown_rx.clone();
    loop {
        tokio::select! {
            _ = sigterm.recv() => { tracing::info!(signal = "SIGTERM", "stopping"); break; }
            _ = sigint.recv() => { tracing::info!(signal = "SIGINT", "stopping"); break; }
            _ = sighup.recv() => reload(&source, &live, &log, &metrics, &db),
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    let _ = shutdown_tx.send(true);
    backups.cancel();
    systemd::notify(&[
        NotifyState::Stopping,
        NotifyState::Status("draining connections"),
    ]);
    // Terminal sessions end first: their jobs are killed (nothing of them outlives the
    // daemon), their rows say `daemon stopped`, and their attached clients and output streams
    // end, so the drain below does not wait for them.
    terminals
        .shutdown(live.get().server.shutdown_timeout.get())
        .await;
    // Tunnel clients end (their whole PID namespaces); what is stored stays, so the next
    // daemon starts them again.
    tunnels.shutdown().await;

    let drained = match server.await {
        Ok(Ok(all)) => all,
        Ok(Err(e)) => return Err(e).context("serving failed"),
        Err(e) => return Err(anyhow::anyhow!("server task failed: {e}")),
    };
    // Jobs no request waits for any more (background ones, and those whose client the drain
    // closed) end as waited ones do at a stop: killed, their records saying `interrupted`.
    exec.shutdown(live.get().server.shutdown_timeout.get())
        .await;
    if let Some(s) = sampler
        && let Err(e) = s.await
    {
        tracing::error!(error = %e, "metrics sampler task failed");
    }
    // Every request has been answered: the refusals still only counted get their summaries.
    if let Err(e) = audit.record_tallies(true).await {
        tracing::error!(error = %e, "cannot store the summaries of refused credentials");
    }
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

fn bind_admin_socket(state_dir: &Path) -> anyhow::Result<NamedListener> {
    use std::os::unix::fs::PermissionsExt;
    let path = state_dir.join(LOCAL_ADMIN_SOCKET);
    let mut l = systemd::bind(&[crate::config::ListenAddr::Unix(path.clone())])?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot restrict {}", path.display()))?;
    let mut admin = l.pop().context("admin socket not bound")?;
    admin.name = systemd::ADMIN_FD_NAME.to_owned();
    Ok(admin)
}

/// On first start (no token at all), makes an admin token and writes it to
/// `$STATE_DIRECTORY/initial-admin-token` (mode 0600); the log says where, never what.
async fn ensure_initial_admin_token(state: &AppState, state_dir: &Path) -> anyhow::Result<()> {
    use std::io::{IsTerminal, Write};
    use std::os::unix::fs::OpenOptionsExt;
    if state.auth.token_count().await? > 0 {
        return Ok(());
    }
    let token = state
        .auth
        .create_initial_token("initial-admin", Scopes::of(&[Scope::Admin]))
        .await?;
    let path = state_dir.join(INITIAL_TOKEN_FILE);
    let tmp = state_dir.join(format!(".{INITIAL_TOKEN_FILE}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(format!("{}\n", token.token).as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    crate::util::fs::sync_dir(state_dir)?;
    state
        .audit_event(Event {
            actor: "localhostd".into(),
            action: "token.create".into(),
            target: "initial-admin".into(),
            result: "ok".into(),
            client: "-".into(),
            request_id: String::new(),
            detail: format!("first start: written to {}", path.display()),
        })
        .await;
    tracing::warn!(path = %path.display(), "no API token existed: created the admin token \"initial-admin\" and wrote it to this file (mode 0600); revoke it once you have made your own");
    if std::io::stderr().is_terminal() {
        eprintln!(
            "\nInitial admin token (also in {}):\n\n    {}\n",
            path.display(),
            token.token
        );
    }
    Ok(())
}

/// Before serving: removes what a crash left of unfinished uploads and says what it found.
async fn recover_files(state: &AppState) -> anyhow::Result<()> {
    let r = state
        .files
        .recover()
        .await
        .context("cannot recover the file store")?;
    tracing::info!(
        temp_files_removed = r.temp_files_removed,
        orphan_blobs_removed = r.orphan_blobs_removed,
        files = r.file_count,
        used_bytes = r.used_bytes,
        "file store recovered"
    );
    if !r.missing.is_empty() {
        tracing::error!(
            missing = r.missing.len(),
            paths = %r.missing.iter().take(20).cloned().collect::<Vec<_>>().join(", "),
            "file store: metadata without content (reported as degraded by /ready)"
        );
    }
    Ok(())
}

/// How often the daemon looks whether it went idle, to hand freed heap memory back.
const IDLE_TRIM_EVERY: Duration = Duration::from_secs(2);

/// Hands SQLite's page caches and then the heap memory that is free back to the kernel once
/// the daemon goes idle (no
/// request answered for `IDLE_TRIM_EVERY`) after having worked. `serve` sets glibc's trim
/// threshold high so a busy daemon does not give memory back and fault it in again on every
/// burst (madvise's TLB shootdowns were a tenth of the write path); this is the other half:
/// what a burst left free is not kept while nothing happens.
async fn trim_when_idle(state: AppState, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(IDLE_TRIM_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // `answered` at the last tick, and at the last trim (None: never trimmed yet).
    let (mut seen, mut trimmed_at) = (state.metrics.answered(), None);
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            _ = tick.tick() => {}
        }
        let now = state.metrics.answered();
        if now == seen && trimmed_at != Some(now) {
            // SQLite's page caches first: what they free is then free heap.
            if let Err(e) = state.db.shrink_memory().await {
                tracing::debug!(error = %e, "cannot shrink the database caches");
            }
            // Inline: a few ms at most, on a runtime with nothing else to do (a blocking
            // thread started for it would cost a stack, perhaps an arena).
            let released = release_free_heap();
            tracing::debug!(released, "idle: free heap memory handed back");
            trimmed_at = Some(now);
        }
        seen = now;
    }
}

/// glibc's `malloc_trim(0)`: free memory at the top of every arena's heaps is unmapped and free
/// pages inside them are given back (MADV_DONTNEED). Whether anything was released.
fn release_free_heap() -> bool {
    // SAFETY: malloc_trim takes an integer and only works on the allocator's own state, under
    // the allocator's locks; it is safe to call from any thread at any time.
    unsafe { libc::malloc_trim(0) == 1 }
}

/// Periodic upkeep: forget idle rate-limit buckets and ended terminal sessions; delete old
/// terminal recordings, executions and their kept output, audit events and dead sessions.
async fn housekeeping(state: AppState, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            _ = tick.tick() => {}
        }
        state.limits.housekeep();
        let removed = state.terminals.housekeep();
        if removed > 0 {
            tracing::info!(
                removed,
                "terminal recordings deleted (terminals.recording-retention)"
            );
        }
        if n.is_multiple_of(60) {
            let cfg = state.live.get();
            match state.exec.prune().await {
                Ok(0) => {}
                Ok(k) => tracing::info!(
                    deleted = k,
                    "old executions deleted (exec.keep-last, exec.keep-within)"
                ),
                Err(e) => tracing::warn!(error = %e, "cannot prune the execution history"),
            }
            match state.audit.prune(cfg.auth.audit_keep_within.get()).await {
                Ok(0) => {}
                Ok(k) => tracing::info!(
                    deleted = k,
                    "old audit events deleted (auth.audit-keep-within)"
                ),
                Err(e) => tracing::warn!(error = %e, "cannot prune the audit trail"),
            }
            if let Err(e) = state
                .auth
                .prune_sessions(cfg.auth.session_max_age.get())
                .await
            {
                tracing::warn!(error = %e, "cannot prune sessions");
            }
        }
        n += 1;
    }
}

/// How often the audit events recorded since are moved into the indexed trail
/// ([`Audit::seal`](crate::store::audit::Audit::seal)).
const AUDIT_SEAL_EVERY: Duration = Duration::from_secs(1);

/// Every `AUDIT_SEAL_EVERY`: the new audit events go into the indexed trail, in one job.
async fn audit_sealer(state: AppState, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(AUDIT_SEAL_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = state.audit.record_tallies(false).await {
            tracing::error!(error = %e, "cannot store the summaries of refused credentials");
        }
        if let Err(e) = state.audit.seal().await {
            tracing::warn!(error = %e, "cannot move audit events into the indexed trail");
        }
    }
}

/// Every `kv.sweep-interval`: expired keys are deleted (watchers see a delete) and the change
/// log is trimmed to `kv.history-window` / `kv.history-max-changes`.
async fn kv_sweeper(state: AppState, mut shutdown: watch::Receiver<bool>) {
    loop {
        let interval = state.live.get().kv.sweep_interval.get();
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let cfg = state.live.get();
        match state.kv.sweep(&cfg.kv).await {
            Ok(s) if s.expired > 0 => tracing::debug!(expired = s.expired, "expired keys deleted"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot sweep the key-value store"),
        }
    }
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
fn reload(source: &ConfigSource, live: &LiveConfig, log: &LogHandle, metrics: &Metrics, db: &Db) {
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
            db.set_min_free_disk(new.storage.min_free_disk);
            live.replace(new);
            tracing::info!(config = %source.path.display(), "configuration reloaded");
        }
        Err(e) => {
            tracing::error!(error = %e, "new configuration refused; keeping the one in force");
        }
    }
    systemd::notify(&[
        NotifyState::Ready,
        NotifyState::Status(&metrics.status_line()),
    ]);
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
async fn idle_exit(
    activity: Arc<Activity>,
    terminals: crate::jobs::terminals::Terminals,
    tunnels: crate::ops::tunnels::Tunnels,
    exec: crate::jobs::exec::Executor,
    idle: Duration,
    shutdown: watch::Sender<bool>,
) {
    let tick = idle.min(Duration::from_secs(1));
    loop {
        tokio::time::sleep(tick).await;
        if *shutdown.borrow() {
            return;
        }
        // A running terminal session keeps the daemon up: its clients may be detached (an
        // attached WebSocket no longer counts as a connection once upgraded). So does a job
        // queued or running in the background, which no connection waits for, and a tunnel
        // meant to be up (socket activation would bring the daemon back only on a local
        // connection, never for the tunnel's).
        if terminals.running() == 0
            && exec.in_progress() == 0
            && !tunnels.wanted()
            && activity.idle_for() >= idle
        {
            tracing::info!(
                idle_s = idle.as_secs_f64(),
                "no connection for server.idle-exit-after; exiting until the next one"
            );
            let _ = shutdown.send(true);
            return;
        }
    }
}
