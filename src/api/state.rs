//! The shared request state: what every handler and middleware reaches, built once by the
//! daemon around its open database and handed to the router.

use std::sync::Arc;

use crate::api::ratelimit::RateLimits;
use crate::config::LiveConfig;
use crate::jobs::data::Data;
use crate::jobs::exec::Executor;
use crate::jobs::sandbox::Sandbox;
use crate::jobs::terminals::Terminals;
use crate::ops::backup::Backups;
use crate::ops::health::Health;
use crate::ops::metrics::Metrics;
use crate::store::audit::{Audit, Caller, Event};
use crate::store::auth::Auth;
use crate::store::db::Db;
use crate::store::files::Files;
use crate::store::kv::Kv;
use crate::store::pins::BlobPins;
use crate::store::programs::Programs;
use crate::store::views::Views;

/// What every request handler can reach: one shared `Services`. Cloning is one reference
/// count, because handlers and middleware clone it several times per request and cloning the
/// services one by one would be a reference count per service each time.
#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl std::ops::Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

/// The daemon's services, shared by every request through `AppState`.
pub struct Services {
    /// The state database (writer + readers).
    pub db: Db,
    /// The config in force; a SIGHUP swaps it.
    pub live: Arc<LiveConfig>,
    /// Readiness and the health report.
    pub health: Arc<Health>,
    /// Tokens and sessions.
    pub auth: Auth,
    /// The audit trail.
    pub audit: Audit,
    /// Rate-limit buckets.
    pub limits: Arc<RateLimits>,
    /// Runs jobs in the sandbox.
    pub exec: Executor,
    /// The key-value store (`/api/v1/data`).
    pub kv: Kv,
    /// The places for its change streams (`kv.max-watches`, `kv.max-watches-per-token`).
    pub watches: crate::store::kv::watches::WatchSlots,
    /// The file store under `$STATE_DIRECTORY/files`.
    pub files: Files,
    /// Stored programs (`/api/v1/programs`), under the state directory's `programs/`.
    pub programs: Programs,
    /// What jobs can run here (`/api/v1/runtimes`); versions asked once per config.
    pub runtimes: crate::jobs::runtimes::Runtimes,
    /// Host and application metrics, history and alerts (`/metrics`, the dashboard).
    pub metrics: Metrics,
    /// Backups (`/api/v1/backups`); shares its blob pins with `files` and `programs`.
    pub backups: Backups,
    /// Terminal sessions (`/api/v1/terminals`), jobs on a pseudo-terminal run by `exec`.
    pub terminals: Terminals,
    /// The top processes (`/api/v1/processes`): keeps the last reading of /proc, the base
    /// of the next request's CPU shares.
    pub processes: crate::ops::processes::Processes,
    /// Public tunnels (`/api/v1/tunnels`): supervised clients run by `exec`'s sandbox.
    pub tunnels: crate::ops::tunnels::Tunnels,
}

impl AppState {
    /// Builds the state every handler sees around an open database (and opens the program
    /// store and the terminals' recordings under `health.state_dir`).
    pub fn new(
        db: Db,
        live: Arc<LiveConfig>,
        health: Arc<Health>,
        sandbox: Sandbox,
        cgroups: Option<crate::jobs::sandbox::Cgroups>,
    ) -> crate::error::Result<AppState> {
        db.set_min_free_disk(live.get().storage.min_free_disk);
        let limits = Arc::new(RateLimits::new(&live.get().rate_limit));
        let metrics = Metrics::new(db.clone(), live.clone(), health.state_dir.clone())?;
        let pins = Arc::new(BlobPins::default());
        let files = Files::new(
            db.clone(),
            live.clone(),
            health.state_dir.join(crate::util::layout::FILES_DIR),
            pins.clone(),
        );
        // A cache of what jobs mount, emptied here (views are rebuilt on demand).
        let views = Views::open(
            health.state_dir.join(crate::util::layout::MOUNTS_DIR),
            files.clone(),
        )?;
        let data = Data::new(files.clone(), views.clone(), live.clone());
        let exec = Executor::new(
            sandbox,
            db.clone(),
            live.clone(),
            cgroups,
            metrics.clone(),
            data.clone(),
        );
        // Warm sandboxes are built with the views' directory, so jobs with mounts take them.
        exec.set_mount_root(Some(views.root().display().to_string()));
        let programs = Programs::open(
            db.clone(),
            live.clone(),
            &health.state_dir,
            exec.clone(),
            pins.clone(),
            views,
        )?;
        let of = programs.clone();
        data.set_programs(Box::new(move |id| {
            let programs = of.clone();
            Box::pin(async move { programs.view(&id).await })
        }));
        let runtimes = crate::jobs::runtimes::Runtimes::new(live.clone());
        let backups = Backups::new(health.state_dir.clone(), live.clone(), pins);
        let terminals = Terminals::new(exec.clone(), db.clone(), live.clone(), &health.state_dir)?;
        let tunnels = crate::ops::tunnels::Tunnels::new(
            db.clone(),
            live.clone(),
            exec.clone(),
            metrics.clone(),
        );
        Ok(AppState(Arc::new(Services {
            auth: Auth::new(db.clone()),
            audit: Audit::new(db.clone()),
            kv: Kv::new(db.clone(), live.get().kv.cache_size.0).with_free_disk_floor(live.clone()),
            watches: crate::store::kv::watches::WatchSlots::new(live.clone()),
            db,
            live,
            health,
            limits,
            exec,
            files,
            programs,
            runtimes,
            metrics,
            backups,
            terminals,
            processes: Default::default(),
            tunnels,
        })))
    }

    /// Records an audit event; a failure to store it is logged (the event is in the log anyway).
    pub async fn audit_event(&self, ev: Event) {
        if let Err(e) = self.audit.record(ev).await {
            tracing::error!(error = %e, "cannot store an audit event");
        }
    }

    /// Records a change made by `caller`, with the outcome of `result`.
    pub async fn audit_change<T>(
        &self,
        caller: &Caller,
        action: &str,
        target: &str,
        result: &crate::error::Result<T>,
        detail: &str,
    ) {
        let outcome = match result {
            Ok(_) => "ok".to_owned(),
            Err(e) => format!("error: {e}"),
        };
        self.audit_event(caller.event(action, target, &outcome, detail.to_owned()))
            .await;
    }
}
