//! The sampler: every `metrics.interval` it runs each collector on a thread of its own with
//! `metrics.collector-timeout` as its deadline, so one that blocks (statvfs on a stale mount)
//! costs only its own part of the sample. A collector still blocked from an earlier round is
//! not started again (at most one stuck thread per collector). The complete sample is then
//! published for scrapes, and fed to the history (one write job per finished slot) and the
//! alerts.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{oneshot, watch};

use super::collectors::{self, CpuStats, Disk, Filesystem, Load, Memory, NetDev, Pressure};
use super::{Current, Metrics, alerts, history};

/// Counts the application keeps in the database, read by the `app` collector.
#[derive(Debug, Clone, Copy, Default)]
pub struct AppStats {
    pub kv_keys: u64,
    pub kv_bytes: u64,
    pub files: u64,
    pub files_bytes: u64,
}

/// How one collector did in a sample.
#[derive(Debug, Clone)]
pub struct Run {
    pub name: &'static str,
    pub ok: bool,
    pub timed_out: bool,
    pub seconds: f64,
    pub error: Option<String>,
}

/// One round of the sampler: each part is `None` when its collector failed or timed out.
#[derive(Debug, Clone)]
pub struct Sample {
    pub at: SystemTime,
    pub cpu: Option<CpuStats>,
    pub load: Option<Load>,
    pub memory: Option<Memory>,
    pub filesystem: Option<Filesystem>,
    pub disk: Option<Disk>,
    pub net: Option<Vec<NetDev>>,
    pub pressure: Option<Pressure>,
    pub app: Option<AppStats>,
    pub runs: Vec<Run>,
}

/// Marks a collector busy while its thread runs; cleared by the thread when it finishes
/// (also if it panics).
struct Busy(Arc<AtomicBool>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// One busy flag per collector.
#[derive(Default)]
struct Slots(std::collections::HashMap<&'static str, Arc<AtomicBool>>);

impl Slots {
    fn flag(&mut self, name: &'static str) -> Arc<AtomicBool> {
        self.0.entry(name).or_default().clone()
    }
}

fn hang_forever() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Runs blocking `f` on its own thread (not the runtime's blocking pool: a thread that never
/// returns must not hold up the runtime's shutdown) and waits at most `timeout` for it.
async fn blocking<T, F>(
    flag: Arc<AtomicBool>,
    name: &'static str,
    timeout: Duration,
    hang: bool,
    f: F,
) -> (Option<T>, Run)
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, String> + Send + 'static,
{
    let start = Instant::now();
    if flag.swap(true, Ordering::SeqCst) {
        return (
            None,
            Run {
                name,
                ok: false,
                timed_out: true,
                seconds: timeout.as_secs_f64(),
                error: Some("still blocked since an earlier sample".into()),
            },
        );
    }
    let (tx, rx) = oneshot::channel();
    let busy = Busy(flag);
    let spawned = std::thread::Builder::new()
        .name(format!("collect-{name}"))
        .spawn(move || {
            let _busy = busy;
            if hang {
                hang_forever();
            }
            let _ = tx.send(f());
        });
    if let Err(e) = spawned {
        return (
            None,
            failed(name, start, format!("cannot start a thread: {e}")),
        );
    }
    finish(name, start, timeout, async {
        rx.await
            .unwrap_or_else(|_| Err("collector thread ended without a result".into()))
    })
    .await
}

fn failed(name: &'static str, start: Instant, error: String) -> Run {
    Run {
        name,
        ok: false,
        timed_out: false,
        seconds: start.elapsed().as_secs_f64(),
        error: Some(error),
    }
}

async fn finish<T>(
    name: &'static str,
    start: Instant,
    timeout: Duration,
    fut: impl Future<Output = Result<T, String>>,
) -> (Option<T>, Run) {
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(v)) => (
            Some(v),
            Run {
                name,
                ok: true,
                timed_out: false,
                seconds: start.elapsed().as_secs_f64(),
                error: None,
            },
        ),
        Ok(Err(e)) => (None, failed(name, start, e)),
        Err(_) => (
            None,
            Run {
                name,
                ok: false,
                timed_out: true,
                seconds: timeout.as_secs_f64(),
                error: Some(format!(
                    "did not finish within metrics.collector-timeout ({})",
                    humantime::format_duration(timeout)
                )),
            },
        ),
    }
}

async fn app_stats(m: &Metrics, hang: bool) -> Result<AppStats, String> {
    if hang {
        std::future::pending::<()>().await;
    }
    m.inner
        .db
        .read(|c| {
            let (kv_keys, kv_bytes) = crate::store::kv::key_count_and_bytes(c)?;
            let (files, files_bytes): (i64, i64) = c.query_row(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM files",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            let n = |v: i64| u64::try_from(v).unwrap_or(0);
            Ok(AppStats {
                kv_keys: n(kv_keys),
                kv_bytes: n(kv_bytes),
                files: n(files),
                files_bytes: n(files_bytes),
            })
        })
        .await
        .map_err(|e| e.to_string())
}

async fn collect(m: &Metrics, slots: &mut Slots) -> Sample {
    let cfg = m.inner.live.get();
    let t = cfg
        .metrics
        .collector_timeout
        .get()
        .min(cfg.metrics.interval.get());
    let hang = |name: &str| cfg.metrics.simulate_hang.as_deref() == Some(name);
    let dir = m.inner.state_dir.clone();
    let dir2 = dir.clone();
    let app_start = Instant::now();
    let (cpu, load, memory, filesystem, disk, net, pressure, app) = tokio::join!(
        blocking(slots.flag("cpu"), "cpu", t, hang("cpu"), collectors::cpu),
        blocking(
            slots.flag("loadavg"),
            "loadavg",
            t,
            hang("loadavg"),
            collectors::loadavg
        ),
        blocking(
            slots.flag("meminfo"),
            "meminfo",
            t,
            hang("meminfo"),
            collectors::meminfo
        ),
        blocking(
            slots.flag("filesystem"),
            "filesystem",
            t,
            hang("filesystem"),
            move || { collectors::filesystem(&dir) }
        ),
        blocking(
            slots.flag("diskstats"),
            "diskstats",
            t,
            hang("diskstats"),
            move || { collectors::diskstats(&dir2) }
        ),
        blocking(
            slots.flag("netdev"),
            "netdev",
            t,
            hang("netdev"),
            collectors::netdev
        ),
        blocking(
            slots.flag("pressure"),
            "pressure",
            t,
            hang("pressure"),
            collectors::pressure
        ),
        finish("app", app_start, t, app_stats(m, hang("app"))),
    );
    let runs = vec![
        cpu.1,
        load.1,
        memory.1,
        filesystem.1,
        disk.1,
        net.1,
        pressure.1,
        app.1,
    ];
    Sample {
        at: SystemTime::now(),
        cpu: cpu.0,
        load: load.0,
        memory: memory.0,
        filesystem: filesystem.0,
        disk: disk.0.flatten(),
        net: net.0,
        pressure: pressure.0.flatten(),
        app: app.0,
        runs,
    }
}

/// What the sampler remembers between rounds to turn counters into rates.
#[derive(Default)]
struct Prev {
    cpu: Option<(f64, f64)>,
    net: Option<(Instant, u64, u64)>,
    failures: VecDeque<(Instant, u64)>,
}

fn derive(
    sample: &Sample,
    prev: &mut Prev,
    now: Instant,
    window: Duration,
    failed: u64,
) -> (Current, alerts::Inputs) {
    let mut c = Current::default();
    if let Some(cpu) = &sample.cpu {
        let (busy, total) = cpu.busy_total();
        if let Some((pb, pt)) = prev.cpu
            && total > pt
        {
            c.cpu_percent = Some((100.0 * (busy - pb) / (total - pt)).clamp(0.0, 100.0));
        }
        prev.cpu = Some((busy, total));
        c.cpus = cpu.per_cpu.len();
        c.boot_time = Some(cpu.boot_time);
    }
    if c.cpus == 0 {
        c.cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
    }
    if let Some(l) = &sample.load {
        c.load1 = Some(l.one);
        c.load5 = Some(l.five);
        c.load15 = Some(l.fifteen);
    }
    if let Some(m) = &sample.memory {
        c.memory_total_bytes = Some(m.total);
        c.memory_available_bytes = m.available;
        if let Some(a) = m.available
            && m.total > 0
        {
            c.memory_used_percent = Some(100.0 * (1.0 - a as f64 / m.total as f64));
        }
    }
    c.disk_used_percent = sample
        .filesystem
        .as_ref()
        .and_then(Filesystem::used_percent);
    if let Some(net) = &sample.net {
        let (rx, tx) = net
            .iter()
            .filter(|d| d.device != "lo")
            .fold((0u64, 0u64), |(r, t), d| {
                (r.wrapping_add(d.rx_bytes), t.wrapping_add(d.tx_bytes))
            });
        if let Some((pt, prx, ptx)) = prev.net {
            let dt = now.duration_since(pt).as_secs_f64();
            if dt > 0.0 && rx >= prx && tx >= ptx {
                c.net_rx_bytes_per_second = Some((rx - prx) as f64 / dt);
                c.net_tx_bytes_per_second = Some((tx - ptx) as f64 / dt);
            }
        }
        prev.net = Some((now, rx, tx));
    }
    prev.failures.push_back((now, failed));
    while prev
        .failures
        .front()
        .is_some_and(|(t, _)| now.duration_since(*t) > window)
    {
        prev.failures.pop_front();
    }
    let oldest = prev.failures.front().map(|(_, n)| *n).unwrap_or(failed);
    let inputs = alerts::Inputs {
        disk_used_percent: c.disk_used_percent,
        memory_available_percent: c.memory_used_percent.map(|u| 100.0 - u),
        load_per_cpu: c.load1.map(|l| l / c.cpus.max(1) as f64),
        failed_executions_per_minute: Some(
            failed.saturating_sub(oldest) as f64 * 60.0 / window.as_secs_f64().max(1.0),
        ),
    };
    (c, inputs)
}

impl Metrics {
    /// Publishes a sample: gauges, derived values, alerts; returns the history rows it
    /// finished.
    fn publish(&self, sample: Sample, prev: &mut Prev, now: Instant) -> Vec<history::Row> {
        let i = &self.inner;
        let cfg = i.live.get();
        for r in &sample.runs {
            i.collector_success
                .with_label_values(&[r.name])
                .set(i64::from(r.ok));
            i.collector_duration
                .with_label_values(&[r.name])
                .set(r.seconds);
            if r.timed_out {
                i.collector_timeouts.with_label_values(&[r.name]).inc();
            }
            if let Some(e) = &r.error {
                tracing::debug!(collector = r.name, error = %e, "collector failed");
            }
        }
        if let Some(a) = &sample.app {
            let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
            i.kv_keys.set(n(a.kv_keys));
            i.kv_bytes.set(n(a.kv_bytes));
            i.files_count.set(n(a.files));
            i.files_bytes.set(n(a.files_bytes));
        }
        i.files_quota
            .set(i64::try_from(cfg.files.max_total_size.bytes()).unwrap_or(i64::MAX));
        let db_path = i.db.path();
        let mut wal = db_path.as_os_str().to_owned();
        wal.push("-wal");
        let db_size = std::fs::metadata(db_path).map(|m| m.len()).unwrap_or(0)
            + std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        i.db_bytes.set(i64::try_from(db_size).unwrap_or(i64::MAX));

        let failed = i.failed_executions.load(Ordering::Relaxed);
        let (current, inputs) = derive(
            &sample,
            prev,
            now,
            cfg.alerts.failed_executions_window.get(),
            failed,
        );
        if let Ok(mut c) = i.current.write() {
            *c = current;
        }
        if let Ok(mut l) = i.latest.write() {
            *l = Some(Arc::new(sample));
        }
        let changes = match i.alerts.lock() {
            Ok(mut a) => {
                let ch = a.evaluate(&cfg.alerts, &inputs, now);
                for name in alerts::NAMES {
                    i.alert_firing
                        .with_label_values(&[name])
                        .set(i64::from(a.is_firing(name)));
                }
                ch
            }
            Err(_) => alerts::Changes::default(),
        };
        if changes.any() {
            crate::systemd::status(&self.status_line());
        }
        let values = [
            current.cpu_percent,
            current.memory_used_percent,
            current.disk_used_percent,
            current.load1,
            current.net_rx_bytes_per_second,
            current.net_tx_bytes_per_second,
        ];
        match i.history.lock() {
            Ok(mut h) => h.add(crate::util::time::now_unix(), values),
            Err(_) => Vec::new(),
        }
    }

    async fn store_history(&self, rows: Vec<history::Row>) {
        if rows.is_empty() {
            return;
        }
        let now = crate::util::time::now_unix();
        if let Err(e) = self
            .inner
            .db
            .write(move |c| history::store(c, &rows, now))
            .await
        {
            tracing::warn!(error = %e, "cannot store the metrics history");
        }
    }
}

/// Loads the stored history (the daemon awaits this before READY=1, so the first request
/// after a restart already sees it).
pub async fn load_history(m: &Metrics) {
    let now = crate::util::time::now_unix();
    match m.inner.db.read(move |c| history::load(c, now)).await {
        Ok(rows) => {
            let n = rows.len();
            if let Ok(mut h) = m.inner.history.lock() {
                *h = history::History::from_rows(rows);
            }
            tracing::debug!(points = n, "metrics history loaded");
        }
        Err(e) => tracing::warn!(error = %e, "cannot load the metrics history; starting empty"),
    }
}

/// The sampler task: samples every `metrics.interval` until shutdown, then writes the slots
/// in progress (before the database closes).
pub async fn run(m: Metrics, mut shutdown: watch::Receiver<bool>) {
    let mut slots = Slots::default();
    let mut prev = Prev::default();
    loop {
        let started = Instant::now();
        let sample = collect(&m, &mut slots).await;
        // Rates and hold times count from when the sample was complete.
        let rows = m.publish(sample, &mut prev, Instant::now());
        if !rows.is_empty() {
            // Not awaited here: a stalled database writer must not stop the sampling (the
            // scrape and the disk alert go on); the writer takes the job when it can.
            let m = m.clone();
            tokio::spawn(async move { m.store_history(rows).await });
        }
        let interval = m.inner.live.get().metrics.interval.get();
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => break,
            _ = tokio::time::sleep_until((started + interval).into()) => {}
        }
    }
    let rows = match m.inner.history.lock() {
        Ok(mut h) => h.flush(),
        Err(_) => Vec::new(),
    };
    m.store_history(rows).await;
}
