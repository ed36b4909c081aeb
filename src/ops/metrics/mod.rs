//! Monitoring: the host sampler (procfs, each collector on its own deadline), the application
//! metrics registry (the `prometheus` crate), the Prometheus text exposition, the dashboard's
//! history (persisted rings) and the alerts. No HTTP here: `api/metrics.rs` is the thin side.
//!
//! - `collectors.rs`: one function per part of the host (and the daemon's own process).
//! - `sampler.rs`: runs the collectors every `metrics.interval`, each on a thread of its own
//!   bounded by `metrics.collector-timeout`, publishes the sample, feeds history and alerts.
//! - `expose.rs`: the text format: host metrics from the latest sample (node_exporter names),
//!   `process_*` read at scrape time, then the registry. A scrape never waits on a collector.
//! - `history.rs`, `alerts.rs`, `dashboard.rs`: the dashboard's data.

pub mod alerts;
pub mod collectors;
pub mod dashboard;
mod expose;
pub mod history;
mod sampler;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

use crate::config::LiveConfig;
use crate::error::{Error, Result};
use crate::store::db::Db;

pub use sampler::{Sample, load_history, run as run_sampler};

/// The `status` label of `localhostd_executions_total`: how a job can end, registered up front
/// so every series exists before the first job. The list lives with the metric so that metrics
/// names no job type; `jobs::exec` tests that it is exactly its statuses.
pub const EXECUTION_STATUSES: [&str; 10] = [
    "ok",
    "nonzero_exit",
    "timeout",
    "cpu_limit",
    "memory_limit",
    "output_limit",
    "killed",
    "sandbox_error",
    "cancelled",
    "interrupted",
];

/// Why terminal sessions end, as `localhostd_terminals_ended_total{reason}` labels (a fixed
/// set, registered up front; `jobs::terminals` tests that its reasons map onto it).
pub const TERMINAL_END_REASONS: [&str; 8] = [
    "exited",
    "deleted",
    "idle_timeout",
    "lifetime",
    "daemon_stopped",
    "sandbox_error",
    "program_deleted",
    "other",
];

/// Values derived from the last two samples, for the dashboard and the alerts.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, utoipa::ToSchema)]
pub struct Current {
    /// Share of CPU time not idle (all CPUs), since the previous sample.
    pub cpu_percent: Option<f64>,
    pub cpus: usize,
    pub load1: Option<f64>,
    pub load5: Option<f64>,
    pub load15: Option<f64>,
    pub memory_total_bytes: Option<u64>,
    pub memory_available_bytes: Option<u64>,
    pub memory_used_percent: Option<f64>,
    pub disk_used_percent: Option<f64>,
    pub net_rx_bytes_per_second: Option<f64>,
    pub net_tx_bytes_per_second: Option<f64>,
    pub boot_time: Option<u64>,
}

/// The metrics of the daemon; cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    http_in_flight: IntGauge,
    kv_keys: IntGauge,
    kv_bytes: IntGauge,
    files_count: IntGauge,
    files_bytes: IntGauge,
    files_quota: IntGauge,
    db_bytes: IntGauge,
    executions: IntCounterVec,
    exec_duration: Histogram,
    spawn_duration: Histogram,
    exec_queue: IntGauge,
    exec_running: IntGauge,
    terminals_running: IntGauge,
    terminals_started: IntCounter,
    terminals_ended: IntCounterVec,
    tunnel_up: IntGaugeVec,
    tunnel_restarts: IntCounterVec,
    backup_last_success: Gauge,
    alert_firing: IntGaugeVec,
    collector_success: IntGaugeVec,
    collector_duration: GaugeVec,
    collector_timeouts: IntCounterVec,
    /// Refused credentials, by how the audit trail holds them: `event` (one each) or
    /// `summarized` (counted into one event per client and window, over the failed-auth limit).
    auth_failures: IntCounterVec,
    /// Executions that ended other than `ok`, for the `executions_failing` alert.
    failed_executions: AtomicU64,
    /// Requests answered since start (all routes), for telling an idle daemon from a busy one.
    answered: AtomicU64,
    /// The newest complete sample; a scrape reads it and never waits for the next.
    latest: RwLock<Option<Arc<Sample>>>,
    current: RwLock<Current>,
    history: Mutex<history::History>,
    alerts: Mutex<alerts::Alerts>,
    /// The STATUS= line the daemon shows (`serving on …`); firing alerts are appended.
    status_base: Mutex<String>,
    db: Db,
    live: Arc<LiveConfig>,
    state_dir: PathBuf,
}

const HTTP_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const EXEC_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];
const SPAWN_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0,
];

fn reg<C: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: C) -> Result<C> {
    r.register(Box::new(c.clone()))
        .map_err(|e| Error::Internal(format!("metrics registry: {e}")))?;
    Ok(c)
}

fn perr(e: prometheus::Error) -> Error {
    Error::Internal(format!("metrics: {e}"))
}

/// HTTP methods as a fixed label set: anything else is `other`, so a client cannot make
/// series with made-up methods.
fn method_label(m: &str) -> &'static str {
    match m {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    }
}

/// Counts a request while it is in flight (drop = done, also when the client went away).
pub struct InFlight(IntGauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Current {
    /// The same figures with percentages, loads and rates rounded to two decimals (for
    /// people; /metrics has the exact counters).
    pub fn rounded(self) -> Current {
        let r = |v: Option<f64>| v.map(|v| (v * 100.0).round() / 100.0);
        Current {
            cpu_percent: r(self.cpu_percent),
            load1: r(self.load1),
            load5: r(self.load5),
            load15: r(self.load15),
            memory_used_percent: r(self.memory_used_percent),
            disk_used_percent: r(self.disk_used_percent),
            net_rx_bytes_per_second: r(self.net_rx_bytes_per_second),
            net_tx_bytes_per_second: r(self.net_tx_bytes_per_second),
            ..self
        }
    }
}

impl Metrics {
    /// The registry with every application metric, and empty host state (the sampler fills it).
    pub fn new(db: Db, live: Arc<LiveConfig>, state_dir: PathBuf) -> Result<Metrics> {
        let r = Registry::new();
        let http_requests = reg(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "localhostd_http_requests_total",
                    "HTTP requests answered, by method, route template (\"unmatched\" when no route matched) and status.",
                ),
                &["method", "route", "status"],
            )
            .map_err(perr)?,
        )?;
        let http_duration = reg(
            &r,
            HistogramVec::new(
                HistogramOpts::new(
                    "localhostd_http_request_duration_seconds",
                    "Time from a request's head to its response head, by method and route template.",
                )
                .buckets(HTTP_BUCKETS.to_vec()),
                &["method", "route"],
            )
            .map_err(perr)?,
        )?;
        let gauge = |name: &str, help: &str| -> Result<IntGauge> {
            reg(&r, IntGauge::new(name, help).map_err(perr)?)
        };
        let http_in_flight = gauge(
            "localhostd_http_requests_in_flight",
            "HTTP requests being served now.",
        )?;
        let kv_keys = gauge("localhostd_kv_keys", "Keys in the key-value store.")?;
        let kv_bytes = gauge(
            "localhostd_kv_bytes",
            "Bytes of the key-value store's values (their JSON text).",
        )?;
        let files_count = gauge("localhostd_files", "Files in the file store.")?;
        let files_bytes = gauge(
            "localhostd_files_bytes",
            "Bytes of the files in the file store.",
        )?;
        let files_quota = gauge(
            "localhostd_files_quota_bytes",
            "The file store's quota (files.max-total-size).",
        )?;
        let db_bytes = gauge(
            "localhostd_database_bytes",
            "Size of the state database with its write-ahead log.",
        )?;
        let executions = reg(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "localhostd_executions_total",
                    "Sandboxed executions (commands and program runs) that ended, by status.",
                ),
                &["status"],
            )
            .map_err(perr)?,
        )?;
        let exec_duration = reg(
            &r,
            Histogram::with_opts(
                HistogramOpts::new(
                    "localhostd_execution_duration_seconds",
                    "Wall-clock time of sandboxed executions.",
                )
                .buckets(EXEC_BUCKETS.to_vec()),
            )
            .map_err(perr)?,
        )?;
        let spawn_duration = reg(
            &r,
            Histogram::with_opts(
                HistogramOpts::new(
                    "localhostd_sandbox_spawn_duration_seconds",
                    "Time to build a job's sandbox and start it (until the job runs).",
                )
                .buckets(SPAWN_BUCKETS.to_vec()),
            )
            .map_err(perr)?,
        )?;
        let exec_queue = gauge(
            "localhostd_exec_queue_length",
            "Jobs waiting for a slot (exec.max-concurrent).",
        )?;
        let exec_running = gauge("localhostd_exec_running", "Jobs running now.")?;
        let terminals_running = gauge(
            "localhostd_terminals_running",
            "Terminal sessions running now (and starting).",
        )?;
        let terminals_started = reg(
            &r,
            IntCounter::new(
                "localhostd_terminals_started_total",
                "Terminal sessions started.",
            )
            .map_err(perr)?,
        )?;
        let terminals_ended = reg(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "localhostd_terminals_ended_total",
                    "Terminal sessions that ended, by why.",
                ),
                &["reason"],
            )
            .map_err(perr)?,
        )?;
        for reason in TERMINAL_END_REASONS {
            terminals_ended.with_label_values(&[reason]).reset();
        }
        let tunnel_up = reg(
            &r,
            IntGaugeVec::new(
                Opts::new(
                    "localhostd_tunnel_up",
                    "Whether a public tunnel is up (its client runs and gave its URL), by provider.",
                ),
                &["provider"],
            )
            .map_err(perr)?,
        )?;
        let tunnel_restarts = reg(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "localhostd_tunnel_restarts_total",
                    "Restarts of a tunnel's client after it ended or gave no URL, by provider.",
                ),
                &["provider"],
            )
            .map_err(perr)?,
        )?;
        let backup_last_success = reg(
            &r,
            Gauge::new(
                "localhostd_backup_last_success_timestamp_seconds",
                "When the last backup succeeded (unix seconds); 0 when none has since the start.",
            )
            .map_err(perr)?,
        )?;
        let build_info = reg(
            &r,
            IntGaugeVec::new(
                Opts::new(
                    "localhostd_build_info",
                    "Always 1; the labels say which build runs.",
                ),
                &["version", "profile"],
            )
            .map_err(perr)?,
        )?;
        let profile = if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        };
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), profile])
            .set(1);
        let alert_firing = reg(
            &r,
            IntGaugeVec::new(
                Opts::new(
                    "localhostd_alert_firing",
                    "1 while the alert fires, else 0 (see GET /api/v1/alerts).",
                ),
                &["alert"],
            )
            .map_err(perr)?,
        )?;
        for name in alerts::NAMES {
            alert_firing.with_label_values(&[name]).set(0);
        }
        let collector_success = reg(
            &r,
            IntGaugeVec::new(
                Opts::new(
                    "localhostd_collector_success",
                    "1 when the collector finished within metrics.collector-timeout in the last sample.",
                ),
                &["collector"],
            )
            .map_err(perr)?,
        )?;
        let collector_duration = reg(
            &r,
            GaugeVec::new(
                Opts::new(
                    "localhostd_collector_duration_seconds",
                    "How long the collector took in the last sample (the timeout when it did not finish).",
                ),
                &["collector"],
            )
            .map_err(perr)?,
        )?;
        let collector_timeouts = reg(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "localhostd_collector_timeouts_total",
                    "Samples in which the collector did not finish within metrics.collector-timeout.",
                ),
                &["collector"],
            )
            .map_err(perr)?,
        )?;
        for name in crate::config::COLLECTORS {
            collector_timeouts.with_label_values(&[name]).reset();
        }
        let auth_failures = reg(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "localhostd_auth_failures_total",
                    "Refused credentials, by how the audit trail holds them: an event each, or summarized (the client was over its failed-authentication limit).",
                ),
                &["audit"],
            )
            .map_err(perr)?,
        )?;
        for how in ["event", "summarized"] {
            auth_failures.with_label_values(&[how]).reset();
        }
        for status in EXECUTION_STATUSES {
            executions.with_label_values(&[status]).reset();
        }
        Ok(Metrics {
            inner: Arc::new(Inner {
                registry: r,
                http_requests,
                http_duration,
                http_in_flight,
                kv_keys,
                kv_bytes,
                files_count,
                files_bytes,
                files_quota,
                db_bytes,
                executions,
                exec_duration,
                spawn_duration,
                exec_queue,
                exec_running,
                terminals_running,
                terminals_started,
                terminals_ended,
                tunnel_up,
                tunnel_restarts,
                backup_last_success,
                alert_firing,
                collector_success,
                collector_duration,
                collector_timeouts,
                auth_failures,
                failed_executions: AtomicU64::new(0),
                answered: AtomicU64::new(0),
                latest: RwLock::new(None),
                current: RwLock::new(Current::default()),
                history: Mutex::new(history::History::default()),
                alerts: Mutex::new(alerts::Alerts::default()),
                status_base: Mutex::new(String::new()),
                db,
                live,
                state_dir,
            }),
        })
    }

    /// Requests answered since start.
    pub fn answered(&self) -> u64 {
        self.inner.answered.load(Ordering::Relaxed)
    }

    /// Marks a request in flight until the returned guard is dropped.
    pub fn http_in_flight(&self) -> InFlight {
        self.inner.http_in_flight.inc();
        InFlight(self.inner.http_in_flight.clone())
    }

    /// Counts an answered request. `route` must be a route template or "unmatched", never a
    /// raw path (the caller takes it from the router's matched path).
    pub fn http_observe(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        self.inner.answered.fetch_add(1, Ordering::Relaxed);
        let method = method_label(method);
        let status = status.to_string();
        self.inner
            .http_requests
            .with_label_values(&[method, route, status.as_str()])
            .inc();
        self.inner
            .http_duration
            .with_label_values(&[method, route])
            .observe(elapsed.as_secs_f64());
    }

    /// Records how a sandboxed execution ended and how long it took.
    pub fn execution_finished(&self, status: &str, wall: Duration) {
        self.inner.executions.with_label_values(&[status]).inc();
        self.inner.exec_duration.observe(wall.as_secs_f64());
        // A job its owner cancelled did not fail.
        if status != "ok" && status != "cancelled" {
            self.inner.failed_executions.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a refused credential; `summarized` when it was only counted in the audit trail.
    pub fn auth_failed(&self, summarized: bool) {
        let how = if summarized { "summarized" } else { "event" };
        self.inner.auth_failures.with_label_values(&[how]).inc();
    }

    /// Records the time from asking for a sandbox to the job running.
    pub fn sandbox_spawned(&self, elapsed: Duration) {
        self.inner.spawn_duration.observe(elapsed.as_secs_f64());
    }

    /// Jobs running and waiting now (read at scrape time).
    pub fn set_exec_load(&self, running: usize, waiting: usize) {
        self.inner
            .exec_running
            .set(i64::try_from(running).unwrap_or(i64::MAX));
        self.inner
            .exec_queue
            .set(i64::try_from(waiting).unwrap_or(i64::MAX));
    }

    /// Terminal sessions running now (read at scrape time).
    pub fn set_terminals_running(&self, running: usize) {
        self.inner
            .terminals_running
            .set(i64::try_from(running).unwrap_or(i64::MAX));
    }

    /// A terminal session started.
    pub fn terminal_started(&self) {
        self.inner.terminals_started.inc();
    }

    /// A terminal session ended, for `reason`: one of [`TERMINAL_END_REASONS`] (anything else
    /// counts as `other`, so the label set stays fixed).
    pub fn terminal_ended(&self, reason: &str) {
        let label = TERMINAL_END_REASONS
            .iter()
            .find(|r| **r == reason)
            .copied()
            .unwrap_or("other");
        self.inner.terminals_ended.with_label_values(&[label]).inc();
    }

    /// Whether the tunnel of `provider` is up (`localhostd_tunnel_up`).
    pub fn set_tunnel_up(&self, provider: &str, up: bool) {
        self.inner
            .tunnel_up
            .with_label_values(&[provider])
            .set(i64::from(up));
        // The restart counter's series exists from the start, at 0.
        self.inner.tunnel_restarts.with_label_values(&[provider]);
    }

    /// The client of the tunnel of `provider` was started again.
    pub fn tunnel_restarted(&self, provider: &str) {
        self.inner
            .tunnel_restarts
            .with_label_values(&[provider])
            .inc();
    }

    /// The backup module calls this when a backup has succeeded, with the time it finished
    /// (unix seconds): `localhostd_backup_last_success_timestamp_seconds`.
    pub fn backup_succeeded(&self, unix_secs: u64) {
        self.inner.backup_last_success.set(unix_secs as f64);
    }

    /// The Prometheus text exposition (format 0.0.4) of everything.
    pub fn render(&self) -> String {
        expose::render(self)
    }

    /// Values derived from the newest samples.
    pub fn current(&self) -> Current {
        match self.inner.current.read() {
            Ok(c) => *c,
            Err(p) => *p.into_inner(),
        }
    }

    /// The newest complete sample, if the sampler has made one.
    pub fn latest(&self) -> Option<Arc<Sample>> {
        match self.inner.latest.read() {
            Ok(l) => l.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Every alert with its state.
    pub fn alerts(&self) -> Vec<alerts::View> {
        match self.inner.alerts.lock() {
            Ok(a) => a.list(),
            Err(p) => p.into_inner().list(),
        }
    }

    /// Sets the daemon's STATUS= text (e.g. `serving on …`) that [`Metrics::status_line`]
    /// appends the firing alerts to.
    pub fn set_status_base(&self, base: &str) {
        if let Ok(mut b) = self.inner.status_base.lock() {
            *b = base.to_owned();
        }
    }

    /// The STATUS= line: the daemon's base text plus the alerts firing now.
    pub fn status_line(&self) -> String {
        let base = self
            .inner
            .status_base
            .lock()
            .map(|b| b.clone())
            .unwrap_or_default();
        let firing = match self.inner.alerts.lock() {
            Ok(a) => a.firing(),
            Err(p) => p.into_inner().firing(),
        };
        if firing.is_empty() {
            base
        } else {
            format!("{base}; alerts firing: {}", firing.join(", "))
        }
    }

    /// The history of `series` (indexes into [`history::SERIES`]) over the last `range_s`.
    pub fn history(&self, series: &[usize], range_s: i64) -> dashboard::HistoryView {
        let now = crate::util::time::now_unix();
        let (res, points) = match self.inner.history.lock() {
            Ok(h) => h.range(now, range_s),
            Err(p) => p.into_inner().range(now, range_s),
        };
        dashboard::HistoryView::new(res, range_s, series, &points)
    }
}
