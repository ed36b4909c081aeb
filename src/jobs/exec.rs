//! Running jobs in the sandbox on behalf of a caller: profiles and their limits, the
//! concurrency cap with a bounded queue, a per-job uid when the daemon is root, output
//! capture with a cap, the wall-clock timeout that ends the whole tree, and the history of
//! every run: a row from its submission (queued, running, finished) with the output it kept.
//! A job runs in a task of its own, waited for or not (`run`, `submit`); while it is queued or
//! running, [`crate::jobs::exec::executions`] holds what its owner reaches. No HTTP here.
//! Long-running confined services (a tunnel's client) start with `start_service`, outside the
//! slots, the queue and the history, with a leased uid like a job's.

pub mod executions;

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::AsyncReadExt;
use tokio::sync::{Semaphore, mpsc};

use crate::config::{LiveConfig, SandboxProfile};
use crate::error::{Error, Result};
use crate::jobs::exec::executions::{Live, Registry, State, Stop};
use crate::jobs::sandbox::{
    JobCgroup, Limits, MemoryBudget, MemoryLimitedBy, Policy, Report, ReportKind, Running, SCRATCH,
    Sandbox, Terminal, TerminalSize, WarmSandbox,
};
use crate::store::audit::{self, Caller};
use crate::store::db::Db;
use crate::util::paging;
use crate::util::time::{now_unix, rfc3339};
use executions::Viewer;

/// Limits a request may ask for, each at most its profile's.
#[derive(Debug, Clone, Default)]
pub struct RequestLimits {
    pub cpu_ms: Option<u64>,
    pub memory_bytes: Option<u64>,
    pub output_bytes: Option<u64>,
    pub processes: Option<u64>,
    pub file_size_bytes: Option<u64>,
}

/// One job to run.
#[derive(Debug, Clone, Default)]
pub struct ExecRequest {
    pub argv: Vec<String>,
    pub stdin: Vec<u8>,
    pub env: Vec<(String, String)>,
    pub timeout: Option<Duration>,
    pub limits: RequestLimits,
    pub profile: Option<String>,
    /// Host directories shown read-only (program runs), as (host, inside).
    pub ro_binds: Vec<(String, String)>,
    /// Working directory inside (default: the scratch dir).
    pub cwd: Option<String>,
    /// What the history shows: the command line, or the program's name.
    pub label: String,
    /// `command` or `program`.
    pub kind: &'static str,
    pub program_id: Option<String>,
    /// Ends the job early (status `killed`) when notified, e.g. a program deleted with force.
    pub cancel: Option<Arc<tokio::sync::Notify>>,
    /// Mounts, outputs and inline files (`jobs::data`).
    pub data: crate::jobs::data::JobData,
    /// Who may see the execution, its output and its cancel besides admin: the owner key of
    /// the token that started it (the rule of terminal sessions, [`Viewer`]).
    pub owner: String,
    /// Kept until the execution ends, waited for or not (a program run's registration, so
    /// deleting the program sees the run).
    pub hold: Option<Arc<dyn std::any::Any + Send + Sync>>,
}

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    NonzeroExit,
    Timeout,
    CpuLimit,
    MemoryLimit,
    OutputLimit,
    Killed,
    SandboxError,
    /// Its owner cancelled it (`POST /api/v1/executions/{id}/cancel`).
    Cancelled,
    /// The daemon stopped while it was queued or running.
    Interrupted,
}

impl Status {
    /// Every status (the executions metric registers each one up front).
    pub const ALL: [Status; 10] = [
        Status::Ok,
        Status::NonzeroExit,
        Status::Timeout,
        Status::CpuLimit,
        Status::MemoryLimit,
        Status::OutputLimit,
        Status::Killed,
        Status::SandboxError,
        Status::Cancelled,
        Status::Interrupted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::NonzeroExit => "nonzero_exit",
            Status::Timeout => "timeout",
            Status::CpuLimit => "cpu_limit",
            Status::MemoryLimit => "memory_limit",
            Status::OutputLimit => "output_limit",
            Status::Killed => "killed",
            Status::SandboxError => "sandbox_error",
            Status::Cancelled => "cancelled",
            Status::Interrupted => "interrupted",
        }
    }
}

/// The outcome of one job.
#[derive(Debug, Clone)]
pub struct ExecResult {
    pub id: String,
    pub status: Status,
    pub exit_code: Option<i32>,
    pub signal: Option<String>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub truncated: bool,
    pub wall_ms: u64,
    pub cpu_ms: u64,
    pub max_rss_kb: u64,
    /// What went wrong building the sandbox (status `sandbox_error`).
    pub message: Option<String>,
    pub started_at: String,
    /// Output a streaming caller's channel had no room for when it came (the consumer fell
    /// behind); it is still in `stdout`/`stderr`. Zero when not streamed.
    pub dropped_bytes: u64,
    /// What held the job to its memory limit.
    pub memory_limited_by: MemoryLimitedBy,
    /// What became of the outputs (and read-write mounts) the request asked for.
    pub outputs: Option<crate::jobs::data::OutputsReport>,
}

/// A piece of output, for streaming callers.
#[derive(Debug, Clone)]
pub enum Chunk {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
}

/// An execution as the history lists it.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
#[schema(as = Execution)]
pub struct Record {
    pub id: String,
    pub kind: String,
    pub program_id: Option<String>,
    pub label: String,
    #[schema(value_type = Vec<String>)]
    pub argv: serde_json::Value,
    pub profile: String,
    pub actor: String,
    pub client: String,
    pub request_id: String,
    /// `queued`, `running` or `finished`.
    pub state: String,
    /// How it ended; null until it is finished.
    pub status: Option<String>,
    pub exit_code: Option<i64>,
    pub signal: Option<String>,
    /// When it started running (while queued: when it was submitted).
    pub started_at: String,
    /// When it finished (null until then, and for runs recorded before it was).
    pub finished_at: Option<String>,
    pub wall_ms: i64,
    pub cpu_ms: i64,
    pub max_rss_kb: i64,
    pub truncated: bool,
    pub stdout_bytes: i64,
    pub stderr_bytes: i64,
    pub message: String,
    /// `cgroup` or `rlimit` (empty for runs recorded before it was).
    pub memory_limited_by: String,
    /// Whether its stdout and stderr are kept (`exec.keep-output-size`,
    /// `exec.keep-output-within`): shown by `GET /api/v1/executions/{id}` and its output
    /// stream. While it runs: whether they will be.
    pub output_kept: bool,
    /// Why the output is not kept, or not whole (cut at `exec.keep-output-size`).
    pub output_reason: Option<String>,
    /// What the job brought back into the file store (`outputs` of the result, see
    /// `jobs::data`): absent when it asked for no outputs and no read-write mount.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::jobs::data::OutputsReport>)]
    pub outputs: Option<serde_json::Value>,
}

/// One execution with the output it kept (while it runs: what it has produced so far).
#[derive(Debug, Clone)]
pub struct View {
    pub record: Record,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// What the output stream of an execution reads: the execution in progress (replayed, then
/// followed) or the finished one's kept output.
pub enum OutputSource {
    Live(Arc<Live>),
    Finished(Box<View>),
}

/// Which executions a listing shows.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this program's runs.
    pub program_id: Option<String>,
    pub state: Option<State>,
    /// Only this actor's (a token's name).
    pub actor: Option<String>,
    /// Started at or after / at or before (unix seconds).
    pub since: Option<i64>,
    pub until: Option<i64>,
    /// Only this owner's executions; `None` (admin) for everyone's.
    pub owner: Option<String>,
}

pub struct Page {
    pub items: Vec<Record>,
    pub next_cursor: Option<String>,
}

/// Runs jobs. Cheap to clone.
#[derive(Clone)]
pub struct Executor {
    inner: Arc<Inner>,
}

struct Inner {
    sandbox: Sandbox,
    db: Db,
    live: Arc<LiveConfig>,
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    running: AtomicUsize,
    /// uids in use by running jobs and warm sandboxes (daemon as root).
    uids: Arc<Mutex<BTreeSet<u32>>>,
    /// Sandboxes built ahead of their job (`sandbox.warm-pool`), each with its uid.
    pool: Mutex<Vec<Pooled>>,
    /// Warm sandboxes being built now.
    warming: AtomicUsize,
    /// The mount root warm sandboxes are built with (`set_mount_root`).
    mount_root: std::sync::RwLock<Option<String>>,
    as_root: bool,
    /// Where per-job memory cgroups are made (a delegated cgroup v2 subtree or the cgroup v1
    /// memory controller), when there is one; without, rlimits limit memory.
    cgroups: Option<crate::jobs::sandbox::Cgroups>,
    /// Executions by status, their duration and the sandbox's spawn latency.
    metrics: crate::ops::metrics::Metrics,
    /// Mounts and outputs: the views jobs see, the file store outputs go to.
    data: crate::jobs::data::Data,
    /// Executions queued or running now.
    executions: Registry,
}

/// Environment every job gets; a request adds to it.
const BASE_ENV: &[(&str, &str)] = &[
    ("PATH", "/usr/local/bin:/usr/bin:/bin"),
    ("HOME", SCRATCH),
    ("TMPDIR", "/tmp"),
    ("LANG", "C.UTF-8"),
    ("USER", "sandbox"),
    ("LOGNAME", "sandbox"),
];

/// How long after its deadline a job's end may take (the helper, its init and the job's PID
/// namespace killed and gone, the report read). The answer comes by then whatever the job or
/// its sandbox does: a correctness bound, not a speed goal.
const END_GRACE: Duration = Duration::from_secs(1);

fn random_id() -> Result<String> {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).map_err(|e| Error::Internal(format!("no randomness: {e}")))?;
    Ok(hex::encode(b))
}

fn signal_name(sig: i32) -> String {
    nix::sys::signal::Signal::try_from(sig)
        .map(|s| s.as_str().to_owned())
        .unwrap_or_else(|_| format!("SIG{sig}"))
}

/// What the daemon enforces on a running job from outside.
#[derive(Clone, Copy)]
struct Bounds {
    output_limit: u64,
    timeout: Duration,
    memory: MemoryBudget,
}

/// A sandbox built ahead of its job, with its uid and, where jobs get cgroups, the cgroup
/// it was built in (its job's limits are written into it when the job arrives).
struct Pooled {
    sandbox: WarmSandbox,
    lease: UidLease,
    cgroup: Option<JobCgroup>,
}

/// A long-running confined process started by [`Executor::start_service`] for another domain
/// module (a public tunnel's client): outside the exec slots, the queue and the history, with
/// a uid of its own while it lives.
///
/// Read `running.stdout` and `running.stderr` as it runs; end it with
/// `running.finish(true, deadline)` (its PID namespace guarantees the whole tree is gone by
/// then). Dropping it kills the helper (and so the process) first, then gives the uid back:
/// the fields drop in this order.
pub struct Service {
    pub running: Running,
    lease: UidLease,
}

impl Service {
    /// The uid it runs as outside its namespaces: one of `sandbox.uid-range` when the daemon
    /// runs as root, `None` when it runs unprivileged (the daemon's own uid).
    pub fn uid(&self) -> Option<u32> {
        self.lease.uid
    }
}

/// A uid from `sandbox.uid-range`, given back when dropped.
struct UidLease {
    uids: Arc<Mutex<BTreeSet<u32>>>,
    uid: Option<u32>,
}

impl Drop for UidLease {
    fn drop(&mut self) {
        if let (Some(uid), Ok(mut set)) = (self.uid, self.uids.lock()) {
            set.remove(&uid);
        }
    }
}

impl Executor {
    pub fn new(
        sandbox: Sandbox,
        db: Db,
        live: Arc<LiveConfig>,
        cgroups: Option<crate::jobs::sandbox::Cgroups>,
        metrics: crate::ops::metrics::Metrics,
        data: crate::jobs::data::Data,
    ) -> Executor {
        let max = live.get().exec.max_concurrent;
        Executor {
            inner: Arc::new(Inner {
                sandbox,
                db,
                live,
                slots: Arc::new(Semaphore::new(max)),
                waiting: AtomicUsize::new(0),
                running: AtomicUsize::new(0),
                uids: Arc::new(Mutex::new(BTreeSet::new())),
                pool: Mutex::new(Vec::new()),
                warming: AtomicUsize::new(0),
                mount_root: std::sync::RwLock::new(None),
                as_root: nix::unistd::geteuid().is_root(),
                cgroups,
                metrics,
                data,
                executions: Registry::default(),
            }),
        }
    }

    /// The data plane jobs use (views, outputs).
    pub fn data(&self) -> &crate::jobs::data::Data {
        &self.inner.data
    }

    /// The daemon's metrics (terminal sessions count their starts and ends there).
    pub fn metrics(&self) -> &crate::ops::metrics::Metrics {
        &self.inner.metrics
    }

    /// Executions queued or running now (waited for or not).
    pub fn in_progress(&self) -> usize {
        self.inner.executions.len()
    }

    /// Jobs running now and jobs waiting for a slot.
    pub fn load(&self) -> (usize, usize) {
        (
            self.inner.running.load(Ordering::SeqCst),
            self.inner.waiting.load(Ordering::SeqCst),
        )
    }

    fn lease_uid(&self) -> Result<UidLease> {
        if !self.inner.as_root {
            return Ok(UidLease {
                uids: self.inner.uids.clone(),
                uid: None,
            });
        }
        let range = self.inner.live.get().sandbox.uid_range;
        let mut set = self
            .inner
            .uids
            .lock()
            .map_err(|_| Error::Internal("uid pool poisoned".into()))?;
        let uid = (range.first..=range.last)
            .find(|u| !set.contains(u))
            .ok_or_else(|| Error::Busy("every uid of sandbox.uid-range is in use".into()))?;
        set.insert(uid);
        Ok(UidLease {
            uids: self.inner.uids.clone(),
            uid: Some(uid),
        })
    }

    /// Starts `policy` as a confined service ([`Service`]): no slot, no queue, no history row,
    /// no cgroup (its `limits` are what bound it: give it `address_space_bytes`, as a job
    /// limited by rlimits has), always in a sandbox built for it, its stdin empty. Its uid is
    /// leased as a job's is (`run_as` is overwritten with it) and `allow_degraded` is the live
    /// `sandbox.allow-degraded`. The policy is validated (`Invalid` when it cannot run); a
    /// sandbox that cannot be built shows as the report `running.finish` returns.
    pub async fn start_service(&self, mut policy: Policy) -> Result<Service> {
        let lease = self.lease_uid()?;
        policy.run_as = lease.uid.map(|u| (u, u));
        policy.allow_degraded = self.inner.live.get().sandbox.allow_degraded;
        let running = self.inner.sandbox.spawn(&policy, Vec::new()).await?;
        Ok(Service { running, lease })
    }

    /// Sets the mount root (`Policy::mount_root`, `$STATE_DIRECTORY/mounts`) warm sandboxes
    /// are built with, so that jobs with mounts beneath it can take one; `None`: built without.
    /// Warm sandboxes already built for another root are dropped (and built again).
    pub fn set_mount_root(&self, root: Option<String>) {
        let changed = match self.inner.mount_root.write() {
            Ok(mut current) if *current != root => {
                *current = root;
                true
            }
            _ => false,
        };
        if changed && let Ok(mut pool) = self.inner.pool.lock() {
            pool.clear();
        }
    }

    /// The mount root set by `set_mount_root`.
    pub fn mount_root(&self) -> Option<String> {
        self.inner.mount_root.read().ok().and_then(|r| r.clone())
    }

    /// The mount root a warm sandbox is built with now: the one set, while it is a plain
    /// absolute path to a directory (a sandbox whose mount root cannot be opened would never
    /// be built).
    fn warm_mount_root(&self) -> Option<String> {
        self.mount_root().filter(|r| {
            r.strip_prefix('/')
                .is_some_and(crate::jobs::sandbox::policy::plain_relative)
                && std::fs::metadata(r).is_ok_and(|m| m.is_dir())
        })
    }

    /// Whether jobs like `policy` may take a warm sandbox: no network, no binds, the scratch
    /// cwd, mounts only from the mount root warm sandboxes are built with.
    fn poolable(&self, policy: &Policy) -> bool {
        self.inner.live.get().sandbox.warm_pool > 0
            && !policy.network
            && !policy.host_network
            && policy.inside_id.is_none()
            && policy.ro_binds.is_empty()
            && policy.cwd == SCRATCH
            && (policy.mounts.is_empty() || policy.mount_root == self.mount_root())
    }

    /// A live warm sandbox with its uid, if one is ready (dead ones are dropped).
    fn take_warm(&self) -> Option<Pooled> {
        let mut pool = self.inner.pool.lock().ok()?;
        while let Some(p) = pool.pop() {
            if p.sandbox.alive() {
                return Some(p);
            }
        }
        None
    }

    /// Builds warm sandboxes in the background until `sandbox.warm-pool` are ready.
    pub fn refill(&self) {
        let target = self.inner.live.get().sandbox.warm_pool;
        // Counted and claimed under the pool's lock, so concurrent calls never overfill it.
        let missing = match self.inner.pool.lock() {
            Ok(pool) => {
                let have = pool.len() + self.inner.warming.load(Ordering::SeqCst);
                let missing = target.saturating_sub(have);
                self.inner.warming.fetch_add(missing, Ordering::SeqCst);
                missing
            }
            Err(_) => 0,
        };
        for _ in 0..missing {
            let me = self.clone();
            tokio::spawn(async move {
                let built = async {
                    let lease = me.lease_uid()?;
                    let profile = me
                        .inner
                        .live
                        .get()
                        .sandbox
                        .profiles
                        .get("default")
                        .cloned()
                        .unwrap_or_default();
                    // Built in a cgroup with the profile's limits where jobs get cgroups
                    // (narrowed to the job's when it arrives), else with the tmpfs sizes a
                    // job of the profile gets under rlimits.
                    let cgroup = match &me.inner.cgroups {
                        Some(cg) => Some(
                            cg.create(
                                &random_id()?,
                                crate::jobs::sandbox::CgroupLimits {
                                    memory_bytes: profile.memory.bytes(),
                                    pids: profile.processes,
                                    cpus: 1.0,
                                },
                            )
                            .map_err(Error::Unavailable)?,
                        ),
                        None => None,
                    };
                    let tmpfs_bytes = if cgroup.is_some() {
                        profile.tmpfs_size.bytes()
                    } else {
                        MemoryBudget {
                            memory_bytes: profile.memory.bytes(),
                            tmpfs_bytes: profile.tmpfs_size.bytes(),
                            headroom_bytes: 0,
                        }
                        .rlimit_tmpfs_bytes()
                    };
                    let sandbox = me
                        .inner
                        .sandbox
                        .warm_in(
                            crate::jobs::sandbox::Warm {
                                run_as: lease.uid.map(|u| (u, u)),
                                tmpfs_bytes,
                                tmpfs_inodes: profile.tmpfs_inodes,
                                mount_root: me.warm_mount_root(),
                            },
                            cgroup.as_ref(),
                        )
                        .await?;
                    Ok::<_, Error>(Pooled {
                        sandbox,
                        lease,
                        cgroup,
                    })
                }
                .await;
                match built {
                    Ok(entry) => {
                        if let Ok(mut pool) = me.inner.pool.lock() {
                            pool.push(entry);
                        }
                        me.inner.warming.fetch_sub(1, Ordering::SeqCst);
                    }
                    // Jobs still run (built when they come); their own errors say why.
                    Err(e) => {
                        me.inner.warming.fetch_sub(1, Ordering::SeqCst);
                        tracing::debug!(error = %e, "could not build a warm sandbox");
                    }
                }
            });
        }
    }

    /// Builds the policy for `req` from its profile, refusing limits above the profile's.
    /// Its memory limits are fitted to the mechanism jobs get when their cgroup can be made;
    /// the budget comes back to fit them again when it cannot.
    fn policy(&self, req: &ExecRequest) -> Result<(Policy, String, u64, Duration, MemoryBudget)> {
        let cfg = self.inner.live.get();
        let name = req.profile.clone().unwrap_or_else(|| "default".into());
        let profile: &SandboxProfile = cfg.sandbox.profiles.get(&name).ok_or_else(|| {
            let known: Vec<&str> = cfg.sandbox.profiles.keys().map(String::as_str).collect();
            Error::Invalid(format!(
                "unknown profile {name:?}; configured: {}",
                known.join(", ")
            ))
        })?;
        let within = |asked: Option<u64>, max: u64, what: &str| -> Result<u64> {
            match asked {
                None => Ok(max),
                Some(0) => Err(Error::Invalid(format!("limits.{what} must be above zero"))),
                Some(v) if v <= max => Ok(v),
                Some(v) => Err(Error::Unprocessable(format!(
                    "limits.{what} = {v} is above the maximum of profile {name:?} ({max})"
                ))),
            }
        };
        let l = &req.limits;
        let cpu_ms = within(
            l.cpu_ms,
            profile.cpu_time.get().as_millis() as u64,
            "cpu_ms",
        )?;
        let output = within(
            l.output_bytes,
            cfg.exec.max_output_limit.bytes(),
            "output_bytes",
        )?;
        let output = if l.output_bytes.is_none() {
            cfg.exec.default_output_limit.bytes()
        } else {
            output
        };
        let memory = MemoryBudget {
            memory_bytes: within(l.memory_bytes, profile.memory.bytes(), "memory_bytes")?,
            tmpfs_bytes: profile.tmpfs_size.bytes(),
            headroom_bytes: runtime_headroom(&cfg.sandbox, &req.argv)
                .saturating_add(profile.address_space_headroom.bytes()),
        };
        let mut limits = Limits {
            cpu_s: cpu_ms.div_ceil(1000).max(1),
            data_bytes: memory.memory_bytes,
            address_space_bytes: None,
            stack_bytes: memory.memory_bytes,
            processes: within(l.processes, profile.processes, "processes")?,
            file_size_bytes: within(
                l.file_size_bytes,
                profile.file_size.bytes(),
                "file_size_bytes",
            )?,
            open_files: profile.open_files,
            tmpfs_bytes: profile.tmpfs_size.bytes(),
            tmpfs_inodes: profile.tmpfs_inodes,
        };
        memory.apply(
            &mut limits,
            if self.inner.cgroups.is_some() {
                MemoryLimitedBy::Cgroup
            } else {
                MemoryLimitedBy::Rlimit
            },
        );
        let timeout = match req.timeout {
            None => cfg.exec.default_timeout.get(),
            Some(t) if t.is_zero() => {
                return Err(Error::Invalid("timeout_ms must be above zero".into()));
            }
            Some(t) if t <= cfg.exec.max_timeout.get() => t,
            Some(t) => {
                return Err(Error::Unprocessable(format!(
                    "timeout_ms = {} is above exec.max-timeout ({})",
                    t.as_millis(),
                    cfg.exec.max_timeout
                )));
            }
        };
        let mut env: Vec<(String, String)> = BASE_ENV
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        for (k, v) in &req.env {
            env.retain(|(ek, _)| ek != k);
            env.push((k.clone(), v.clone()));
        }
        let policy = Policy {
            argv: req.argv.clone(),
            env,
            cwd: req.cwd.clone().unwrap_or_else(|| SCRATCH.into()),
            limits,
            network: profile.network,
            run_as: None,
            ro_binds: req.ro_binds.clone(),
            allow_degraded: cfg.sandbox.allow_degraded,
            net_allow: profile.net_allow.clone(),
            terminal: None,
            mount_root: None,
            mounts: Vec::new(),
            files: Vec::new(),
            collect: Vec::new(),
            host_network: false,
            net_ports: None,
            inside_id: None,
        };
        policy.validate().map_err(Error::Invalid)?;
        Ok((policy, name, output, timeout, memory))
    }

    /// Runs `req` and waits for its end: a slot when one is free, else a place in the queue
    /// (429-style `Busy` when the queue is full). Output goes to `stream` as it is produced
    /// when one is given. The job runs in a task of its own: a caller that goes away does not
    /// end it, and its record is written whatever happens to the caller.
    pub async fn run(
        &self,
        req: ExecRequest,
        caller: &Caller,
        stream: Option<mpsc::Sender<Chunk>>,
    ) -> Result<ExecResult> {
        let job = self.admit(req, caller, stream).await?;
        // The row is queued for the writer before the job can start, and committed before the
        // job's end is (one writer, in order): the job does not wait for it.
        let row = self.queued_row(&job)?;
        self.launch(job, Some(row))
            .await
            .map_err(|e| Error::Internal(format!("the execution's task failed: {e}")))?
    }

    /// Queues `req` to run in the background (`wait: false`), under the same slots and queue
    /// as `run`; answers once its row is written, with the row as it stands (queued, or
    /// already running).
    pub async fn submit(&self, req: ExecRequest, caller: &Caller) -> Result<Record> {
        let job = self.admit(req, caller, None).await?;
        let row = self.queued_row(&job)?;
        if let Err(e) = row.outcome().await {
            self.unadmit(&job);
            return Err(e);
        }
        let live = job.live.clone();
        drop(self.launch(job, None));
        Ok(live.record())
    }

    /// Checks `req` (its policy, a place in the queue) and makes its execution: an id, a row
    /// as queued, an entry among those in progress. The job holds its queue place
    /// (`waiting`) until it gets a slot or ends.
    async fn admit(
        &self,
        req: ExecRequest,
        caller: &Caller,
        stream: Option<mpsc::Sender<Chunk>>,
    ) -> Result<Job> {
        let (mut policy, profile, output_limit, timeout, mut memory) = self.policy(&req)?;
        // Mounts, inline files and collected directories into the policy; the views stay
        // until the job's `prepared` is dropped.
        let prepared = self.inner.data.prepare(&req.data, &mut policy).await?;
        memory.tmpfs_bytes = memory.tmpfs_bytes.min(policy.limits.tmpfs_bytes);
        let cfg = self.inner.live.get();
        let id = random_id()?;
        // A free slot is taken now: the job's row is written as running, in one write.
        let slot = self.inner.slots.clone().try_acquire_owned().ok();
        if slot.is_none()
            && self.inner.waiting.fetch_add(1, Ordering::SeqCst)
                >= cfg.exec.max_queue + self.inner.slots.available_permits()
        {
            self.inner.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(Error::Busy(format!(
                "{} jobs are running and {} waiting (exec.max-concurrent, exec.max-queue); retry shortly",
                cfg.exec.max_concurrent, cfg.exec.max_queue
            )));
        }
        let submitted = now_unix();
        let max_argv = cfg.exec.history_max_argv_size.bytes();
        let argv = history_argv(
            &policy.argv,
            usize::try_from(max_argv).unwrap_or(usize::MAX),
        );
        let keep = cfg.exec.keep_output_size.bytes();
        let record = Record {
            id,
            kind: req.kind.to_owned(),
            program_id: req.program_id.clone(),
            label: req.label.clone(),
            argv: serde_json::Value::from(argv),
            profile,
            actor: caller.actor.clone(),
            client: caller.client.clone(),
            request_id: caller.request_id.clone(),
            state: if slot.is_some() {
                State::Running
            } else {
                State::Queued
            }
            .as_str()
            .to_owned(),
            started_at: rfc3339(submitted),
            output_kept: keep > 0,
            ..Record::default()
        };
        let live = Live::new(record, req.owner.clone(), keep.min(output_limit));
        if let Err(e) = self.inner.executions.insert(live.clone()) {
            if slot.is_none() {
                self.inner.waiting.fetch_sub(1, Ordering::SeqCst);
            }
            return Err(e);
        }
        Ok(Job {
            req,
            policy,
            bounds: Bounds {
                output_limit,
                timeout,
                memory,
            },
            caller: caller.clone(),
            stream,
            live,
            submitted,
            slot,
            prepared: Mutex::new(Some(prepared)),
        })
    }

    /// Undoes `admit` for a job that will not run: its entry and its queue place go.
    fn unadmit(&self, job: &Job) {
        self.inner.executions.remove(&job.live.id);
        if job.slot.is_none() {
            self.inner.waiting.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Hands the execution's row (queued, or running when it got a slot at once) to the
    /// database writer.
    fn queued_row(&self, job: &Job) -> Result<crate::store::db::Queued<()>> {
        let r = job.live.record();
        let owner = job.req.owner.clone();
        let submitted = job.submitted;
        let argv = r.argv.to_string();
        let queued = self.inner.db.write_queued(move |c| {
            c.execute(
                "INSERT INTO executions(id, kind, program_id, label, argv, profile, actor, client, request_id, status,
                    started_at, wall_ms, cpu_ms, max_rss_kb, truncated, stdout_bytes, stderr_bytes, message, state, owner)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, '', ?10, 0, 0, 0, 0, 0, 0, '', ?12, ?11)
                 ON CONFLICT(id) DO NOTHING",
                rusqlite::params![
                    r.id, r.kind, r.program_id, r.label, argv, r.profile, r.actor, r.client,
                    r.request_id, submitted, owner, r.state,
                ],
            )?;
            Ok(())
        });
        if queued.is_err() {
            self.unadmit(job);
        }
        queued
    }

    /// Runs the job in a task of its own: it waits for a slot (or its stop), runs, and its
    /// record is written however it ended; then its entry goes. `row`: the queued row's
    /// write, when nobody waited for it (its failure is logged; the end record is written
    /// whole either way).
    fn launch(
        &self,
        mut job: Job,
        row: Option<crate::store::db::Queued<()>>,
    ) -> tokio::task::JoinHandle<Result<ExecResult>> {
        let me = self.clone();
        tokio::spawn(async move {
            if let Some(row) = row {
                let id = job.live.id.clone();
                tokio::spawn(async move {
                    if let Err(e) = row.outcome().await {
                        tracing::warn!(execution = %id, error = %e, "cannot record the execution as queued");
                    }
                });
            }
            let slot = job.slot.take();
            let outcome = me.wait_and_run(&job, slot).await;
            let recorded = me.finish(&job, &outcome).await;
            me.inner.executions.remove(&job.live.id);
            recorded?;
            outcome
        })
    }

    /// Waits for a slot (or for the job's stop or its request's cancel: then it never
    /// starts), then runs the job.
    async fn wait_and_run(
        &self,
        job: &Job,
        slot: Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> Result<ExecResult> {
        let live = &job.live;
        if let Some(_slot) = slot {
            self.inner.running.fetch_add(1, Ordering::SeqCst);
            let result = self.run_in_slot(job, false).await;
            self.inner.running.fetch_sub(1, Ordering::SeqCst);
            return result;
        }
        let cancel = async {
            match &job.req.cancel {
                Some(n) => n.notified().await,
                None => std::future::pending().await,
            }
        };
        let permit = tokio::select! {
            p = self.inner.slots.acquire() => Ok(p),
            why = live.stopped() => Err(why.status()),
            () = cancel => Err(Status::Killed),
        };
        self.inner.waiting.fetch_sub(1, Ordering::SeqCst);
        let _permit = match permit {
            Ok(p) => p.map_err(|_| Error::Unavailable("shutting down".into()))?,
            Err(status) => return Ok(never_started(live, status)),
        };
        self.inner.running.fetch_add(1, Ordering::SeqCst);
        let result = self.run_in_slot(job, true).await;
        self.inner.running.fetch_sub(1, Ordering::SeqCst);
        result
    }

    /// The job has its slot: recorded as running (when it `waited` as queued for it), then
    /// run in a warm sandbox when one fits, else in one built now.
    async fn run_in_slot(&self, job: &Job, waited: bool) -> Result<ExecResult> {
        let live = &job.live;
        if waited {
            self.mark_running(live);
        }
        let mut policy = job.policy.clone();
        let warm = if self.poolable(&policy) {
            let w = self.take_warm();
            self.refill();
            w
        } else {
            None
        };
        let (warm, lease) = match warm {
            Some(p) => (Some((p.sandbox, p.cgroup)), p.lease),
            None => (None, self.lease_uid()?),
        };
        policy.run_as = lease.uid.map(|u| (u, u));
        let r = self
            .run_confined(
                live,
                &policy,
                job.bounds,
                job.stream.clone(),
                job.req.cancel.clone(),
                (warm, job.req.stdin.clone()),
            )
            .await;
        drop(lease);
        let (mut result, collected) = r?;
        let prepared = job.prepared.lock().ok().and_then(|mut p| p.take());
        if let Some(prepared) = prepared {
            result.outputs = self
                .inner
                .data
                .finish(prepared, result.status.as_str(), collected, &job.caller)
                .await;
        }
        Ok(result)
    }

    /// A queued job got its slot: its entry and (queued for the writer, not awaited) its row
    /// say so.
    fn mark_running(&self, live: &Live) {
        let started = now_unix();
        live.set_running(rfc3339(started));
        let id = live.id.clone();
        if let Ok(q) = self.inner.db.write_queued(move |c| {
            c.execute(
                "UPDATE executions SET state = 'running', started_at = ?2 WHERE id = ?1 AND state = 'queued'",
                rusqlite::params![id, started],
            )?;
            Ok(())
        }) {
            let id = live.id.clone();
            tokio::spawn(async move {
                if let Err(e) = q.outcome().await {
                    tracing::warn!(execution = %id, error = %e, "cannot record the execution as running");
                }
            });
        }
    }

    /// Writes the execution's end: its row finished (with what it kept of its output, or why
    /// not), a program's counters and the audit event, in one transaction; then whoever
    /// follows its output gets the record.
    async fn finish(&self, job: &Job, outcome: &Result<ExecResult>) -> Result<()> {
        let cfg = self.inner.live.get();
        let live = &job.live;
        let finished = now_unix();
        let mut record = live.record();
        record.state = State::Finished.as_str().to_owned();
        record.finished_at = Some(rfc3339(finished));
        let (out, err, cut) = live.kept();
        match outcome {
            Ok(r) => {
                record.status = Some(r.status.as_str().to_owned());
                record.exit_code = r.exit_code.map(i64::from);
                record.signal = r.signal.clone();
                record.started_at = r.started_at.clone();
                record.wall_ms = r.wall_ms as i64;
                record.cpu_ms = r.cpu_ms as i64;
                record.max_rss_kb = r.max_rss_kb as i64;
                record.truncated = r.truncated;
                record.stdout_bytes = r.stdout.len() as i64;
                record.stderr_bytes = r.stderr.len() as i64;
                record.message = match (&r.message, r.status) {
                    (Some(m), _) => m.clone(),
                    (None, Status::Interrupted) => "the daemon stopped while it ran".into(),
                    (None, _) => String::new(),
                };
                record.memory_limited_by = r.memory_limited_by.as_str().to_owned();
            }
            Err(e) => {
                record.status = Some(Status::SandboxError.as_str().to_owned());
                record.message = e.to_string();
            }
        }
        let keep = cfg.exec.keep_output_size;
        let size = (out.len() + err.len()) as u64;
        let (kept, reason) = if keep.bytes() == 0 {
            (false, Some("exec.keep-output-size is 0".to_owned()))
        } else {
            match self.inner.db.ensure_free(size) {
                Err(e) => (false, Some(format!("not kept: {e}"))),
                Ok(()) if cut => (
                    true,
                    Some(format!(
                        "only the first {keep} of the output are kept (exec.keep-output-size)"
                    )),
                ),
                Ok(()) => (true, None),
            }
        };
        record.output_kept = kept;
        record.output_reason = reason;
        record.outputs = outcome
            .as_ref()
            .ok()
            .and_then(|r| r.outputs.as_ref())
            .and_then(|o| serde_json::to_value(o).ok());
        let started = match outcome {
            Ok(r) => crate::util::time::parse_rfc3339(&r.started_at).unwrap_or(job.submitted),
            Err(_) => job.submitted,
        };
        let (r, req_kind, owner) = (record.clone(), job.req.kind, job.req.owner.clone());
        let caller = job.caller.clone();
        let argv = r.argv.to_string();
        let written = self
            .inner
            .db
            .write(move |c| {
                c.execute(
                    "INSERT INTO executions(id, kind, program_id, label, argv, profile, actor, client, request_id, status,
                        exit_code, signal, started_at, wall_ms, cpu_ms, max_rss_kb, truncated, stdout_bytes, stderr_bytes, message,
                        memory_limited_by, state, owner, finished_at, output_kept, output_reason, outputs)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21,
                        'finished', ?22, ?23, ?24, ?25, ?26)
                     ON CONFLICT(id) DO UPDATE SET status = excluded.status, exit_code = excluded.exit_code,
                        signal = excluded.signal, started_at = excluded.started_at, wall_ms = excluded.wall_ms,
                        cpu_ms = excluded.cpu_ms, max_rss_kb = excluded.max_rss_kb, truncated = excluded.truncated,
                        stdout_bytes = excluded.stdout_bytes, stderr_bytes = excluded.stderr_bytes,
                        message = excluded.message, memory_limited_by = excluded.memory_limited_by,
                        state = 'finished', finished_at = excluded.finished_at,
                        output_kept = excluded.output_kept, output_reason = excluded.output_reason,
                        outputs = excluded.outputs",
                    rusqlite::params![
                        r.id,
                        req_kind,
                        r.program_id,
                        r.label,
                        argv,
                        r.profile,
                        r.actor,
                        r.client,
                        r.request_id,
                        r.status,
                        r.exit_code,
                        r.signal,
                        started,
                        r.wall_ms,
                        r.cpu_ms,
                        r.max_rss_kb,
                        r.truncated,
                        r.stdout_bytes,
                        r.stderr_bytes,
                        r.message,
                        r.memory_limited_by,
                        owner,
                        finished,
                        r.output_kept,
                        r.output_reason.clone().unwrap_or_default(),
                        r.outputs.as_ref().map(|v| v.to_string()),
                    ],
                )?;
                if r.output_kept && !(out.is_empty() && err.is_empty()) {
                    c.execute(
                        "INSERT OR REPLACE INTO execution_output(id, at, stdout, stderr) VALUES (?1, ?2, ?3, ?4)",
                        rusqlite::params![r.id, finished, out, err],
                    )?;
                }
                let status = r.status.clone().unwrap_or_default();
                // A stored program's counters commit with its history row (one transaction
                // per run, not two).
                if let Some(pid) = &r.program_id {
                    c.execute(
                        "UPDATE programs SET run_count = run_count + 1, last_run_status = ?2, last_run_at = ?3 WHERE id = ?1",
                        rusqlite::params![pid, status, finished],
                    )?;
                }
                audit::insert(
                    c,
                    &caller.event(&format!("{req_kind}.run"), &r.label, &status, format!("execution {}", r.id)),
                )
            })
            .await;
        if let Ok(result) = outcome {
            self.inner.metrics.execution_finished(
                result.status.as_str(),
                Duration::from_millis(result.wall_ms),
            );
            if result.status == Status::SandboxError {
                tracing::error!(execution = %result.id, error = result.message.as_deref().unwrap_or(""), "the sandbox could not be built");
            }
        }
        if let Err(e) = &written {
            tracing::error!(execution = %record.id, error = %e, "cannot record the end of an execution");
        }
        live.finish(record);
        written
    }
    /// `start`: the warm sandbox to use, if any, and the job's stdin. The steps, in order: the
    /// job's cgroup and the policy fitted to what limits its memory, the sandbox started (with
    /// the job's stdin), the output collected up to the deadline and the limits, the job ended
    /// and its report read, the spawn latency recorded, the result classified.
    async fn run_confined(
        &self,
        live: &Live,
        policy: &Policy,
        bounds: Bounds,
        stream: Option<mpsc::Sender<Chunk>>,
        cancel: Option<Arc<tokio::sync::Notify>>,
        start: (Option<(WarmSandbox, Option<JobCgroup>)>, Vec<u8>),
    ) -> Result<(ExecResult, Vec<(String, std::os::fd::OwnedFd)>)> {
        let Bounds {
            output_limit,
            timeout,
            memory,
        } = bounds;
        let (warm, stdin) = start;
        let id = live.id.clone();
        let started_at = rfc3339(now_unix());
        let start = Instant::now();
        // The job's clock starts before its sandbox is asked for: a slow start is the job's
        // time, and every wait from here to the answer ends by `due + END_GRACE`.
        let due = tokio::time::Instant::now() + timeout;
        let (warm, cgroup) = self.job_cgroup(&id, policy, memory, warm)?;
        let memory_limited_by = if cgroup.is_some() {
            MemoryLimitedBy::Cgroup
        } else {
            MemoryLimitedBy::Rlimit
        };
        let policy = fit_policy(policy, memory, cgroup.is_some());
        // Spawn latency is measured to the job's execve (its report carries the time): the
        // same for a warm sandbox and one built on demand.
        let spawn_start = crate::jobs::sandbox::child::monotonic_ns();
        let Some(mut running) = self
            .spawn(&policy, stdin, warm, cgroup.as_ref(), due)
            .await?
        else {
            return Ok((
                ExecResult {
                    id,
                    status: Status::Timeout,
                    exit_code: None,
                    signal: None,
                    stdout: Vec::new(),
                    stderr: Vec::new(),
                    truncated: false,
                    wall_ms: start.elapsed().as_millis() as u64,
                    cpu_ms: 0,
                    max_rss_kb: 0,
                    message: None,
                    started_at,
                    dropped_bytes: 0,
                    memory_limited_by,
                    outputs: None,
                },
                Vec::new(),
            ));
        };
        let output = collect_output(&mut running, output_limit, due, stream, cancel, live).await;
        // On a kill: SIGKILL to the helper and to the job's init, whose death ends everything
        // left in the job's PID namespace, and to its cgroup if it has one; the answer waits
        // for the namespace to be gone, but not past the grace.
        let kill = output.timed_out || output.overflow || output.stopped.is_some();
        if kill && let Some(cg) = &cgroup {
            cg.kill();
        }
        let report: Report = running.finish(kill, due + END_GRACE).await?;
        // The directories the job's outputs are read from (none after a kill).
        let collected = running.collected();
        let wall_ms = start.elapsed().as_millis() as u64;
        self.record_spawn_latency(&report, spawn_start);
        let cpu_limit_ms = policy.limits.cpu_s * 1000;
        let oom_killed = cgroup.as_ref().is_some_and(|cg| cg.oom_kills() > 0);
        drop(cgroup);
        let (status, exit_code, signal) = classify(&report, &output, oom_killed, cpu_limit_ms);
        Ok((
            ExecResult {
                id,
                status,
                exit_code,
                signal,
                stdout: output.out,
                stderr: output.err,
                truncated: output.overflow,
                wall_ms,
                cpu_ms: report.cpu_ms,
                max_rss_kb: report.max_rss_kb,
                message: (status == Status::SandboxError).then(|| report.message.clone()),
                started_at,
                dropped_bytes: output.dropped,
                memory_limited_by,
                outputs: None,
            },
            collected,
        ))
    }

    /// The warm sandbox the job may still use and the job's cgroup, if it gets one. A warm
    /// sandbox takes the job as it was built: in a cgroup (narrowed to the job's limits; one
    /// that cannot be is dropped for a fresh sandbox) or without one.
    fn job_cgroup(
        &self,
        id: &str,
        policy: &Policy,
        memory: MemoryBudget,
        warm: Option<(WarmSandbox, Option<JobCgroup>)>,
    ) -> Result<(Option<WarmSandbox>, Option<JobCgroup>)> {
        let limits = crate::jobs::sandbox::CgroupLimits {
            memory_bytes: memory.memory_bytes,
            pids: policy.limits.processes,
            cpus: 1.0,
        };
        let (warm, warm_cgroup) = match warm {
            Some((w, Some(cg))) => match cg.limit(limits) {
                Ok(()) => (Some(w), Some(cg)),
                Err(e) => {
                    tracing::debug!(error = %e, "a warm sandbox's cgroup could not take its job's limits");
                    (None, None)
                }
            },
            Some((w, None)) if self.inner.cgroups.is_none() => (Some(w), None),
            _ => (None, None),
        };
        let cgroup = match (&self.inner.cgroups, warm_cgroup) {
            (_, Some(cg)) => Some(cg),
            (None, None) => None,
            (Some(cg), None) => match cg.create(id, limits) {
                Ok(job) => Some(job),
                Err(e) if self.inner.live.get().sandbox.cgroup_fallback => {
                    tracing::warn!(execution = %id, error = %e, "cannot create the job's cgroup; it runs limited by rlimits (sandbox.cgroup-fallback)");
                    None
                }
                Err(e) => {
                    tracing::error!(execution = %id, error = %e, "cannot create the job's cgroup; the job is refused (sandbox.cgroup-fallback is off)");
                    return Err(Error::Unavailable(format!(
                        "cannot create the job's memory cgroup: {e}"
                    )));
                }
            },
        };
        Ok((warm, cgroup))
    }

    /// Starts the job (its stdin handed over) in the warm sandbox when it fits, else in one
    /// built now. `None`: not even started by its deadline (the helper asked for is killed
    /// when it comes).
    async fn spawn(
        &self,
        policy: &Policy,
        stdin: Vec<u8>,
        warm: Option<WarmSandbox>,
        cgroup: Option<&JobCgroup>,
        due: tokio::time::Instant,
    ) -> Result<Option<Running>> {
        Ok(Some(match warm {
            Some(w) if w.fits(policy) => w.start(policy, stdin)?,
            _ => {
                let spawn = self.inner.sandbox.spawn_in(policy, stdin, cgroup);
                match tokio::time::timeout_at(due, spawn).await {
                    Ok(running) => running?,
                    Err(_) => return Ok(None),
                }
            }
        }))
    }

    /// The sandbox's spawn latency, when the report says when the job called execve.
    fn record_spawn_latency(&self, report: &Report, spawn_start: u64) {
        if report.exec_mono_ns > spawn_start {
            self.inner
                .metrics
                .sandbox_spawned(Duration::from_nanos(report.exec_mono_ns - spawn_start));
        }
    }

    /// The history, newest first, narrowed by `filter`.
    pub async fn list(&self, filter: Filter, limit: usize, cursor: Option<String>) -> Result<Page> {
        let before = paging::parse_seq_cursor(cursor.as_deref(), 'e')?;
        let rows = self
            .inner
            .db
            .read(move |c| {
                let (sql, args) = history_query(&filter, before, paging::take(limit));
                let mut st = c.prepare_cached(&sql)?;
                let rows = st.query_map(rusqlite::params_from_iter(args), row_record)?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            })
            .await?;
        // A row written as queued may be running by now: the entry in progress says.
        let rows = rows
            .into_iter()
            .map(|(seq, _, r)| match self.inner.executions.get_any(&r.id) {
                Some(live) => (seq, live.record()),
                None => (seq, r),
            })
            .collect();
        let (items, next_cursor) =
            paging::keyed_page(rows, limit, |seq| paging::seq_cursor('e', *seq));
        Ok(Page { items, next_cursor })
    }

    /// One execution `viewer` may see (its owner, or admin), with the output it kept; while
    /// it runs, with what it has produced so far.
    pub async fn get(&self, id: &str, viewer: &Viewer) -> Result<View> {
        if let Some(live) = self.inner.executions.get(id, viewer) {
            let (stdout, stderr, _) = live.kept();
            return Ok(View {
                record: live.record(),
                stdout,
                stderr,
            });
        }
        let (idq, v) = (id.to_owned(), viewer.clone());
        let found = self
            .inner
            .db
            .read(move |c| {
                let mut st = c.prepare_cached(&format!("{SELECT} WHERE id = ?1"))?;
                let Some((_, owner, record)) =
                    st.query_map([&idq], row_record)?.next().transpose()?
                else {
                    return Ok(None);
                };
                if !(v.admin || owner == v.owner) {
                    return Ok(None);
                }
                let mut st =
                    c.prepare_cached("SELECT stdout, stderr FROM execution_output WHERE id = ?1")?;
                let output: Option<(Vec<u8>, Vec<u8>)> = st
                    .query_map([&idq], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .next()
                    .transpose()?;
                let (stdout, stderr) = output.unwrap_or_default();
                Ok(Some(View {
                    record,
                    stdout,
                    stderr,
                }))
            })
            .await?;
        match found {
            Some(view) => Ok(view),
            // Finished between the two looks: its row is written before its entry goes.
            None => match self.inner.executions.get(id, viewer) {
                Some(live) => {
                    let (stdout, stderr, _) = live.kept();
                    Ok(View {
                        record: live.record(),
                        stdout,
                        stderr,
                    })
                }
                None => Err(not_found(id)),
            },
        }
    }

    /// What the output stream of execution `id` reads, for `viewer`.
    pub async fn output(&self, id: &str, viewer: &Viewer) -> Result<OutputSource> {
        if let Some(live) = self.inner.executions.get(id, viewer) {
            return Ok(OutputSource::Live(live));
        }
        let view = self.get(id, viewer).await?;
        // Still in progress if it finished between the looks only in the other direction.
        match self.inner.executions.get(id, viewer) {
            Some(live) if view.record.state != State::Finished.as_str() => {
                Ok(OutputSource::Live(live))
            }
            _ => Ok(OutputSource::Finished(Box::new(view))),
        }
    }

    /// Cancels execution `id` for `viewer`: a queued one never starts, a running one is
    /// killed (status `cancelled`). Returns the record as it stands; a finished one is a
    /// conflict.
    pub async fn cancel(&self, id: &str, viewer: &Viewer, caller: &Caller) -> Result<Record> {
        let Some(live) = self.inner.executions.get(id, viewer) else {
            let view = self.get(id, viewer).await?;
            return Err(Error::Conflict(format!(
                "execution {id} is already finished ({})",
                view.record.status.as_deref().unwrap_or("")
            )));
        };
        let record = live.record();
        if live.stop(Stop::Cancelled) {
            let ev = caller.event(
                "execution.cancel",
                id,
                "ok",
                format!("{} was {}", record.label, record.state),
            );
            if let Err(e) = self.inner.db.write(move |c| audit::insert(c, &ev)).await {
                tracing::warn!(execution = %id, error = %e, "cannot record the cancel in the audit trail");
            }
        }
        Ok(record)
    }

    /// At start: executions the last daemon left queued or running are finished as
    /// `interrupted` (never run again). Returns how many.
    pub async fn recover(&self) -> Result<usize> {
        self.inner
            .db
            .write(|c| {
                let now = now_unix();
                c.execute(
                    "UPDATE programs SET
                        run_count = run_count + (SELECT count(*) FROM executions e
                                                 WHERE e.program_id = programs.id AND e.state <> 'finished'),
                        last_run_status = 'interrupted', last_run_at = ?1
                     WHERE id IN (SELECT program_id FROM executions WHERE state <> 'finished')",
                    [now],
                )?;
                Ok(c.execute(
                    "UPDATE executions SET state = 'finished', status = 'interrupted', finished_at = ?1,
                        message = 'the daemon stopped before the job finished', output_kept = 0,
                        output_reason = 'the daemon stopped before the job finished'
                     WHERE state <> 'finished'",
                    [now],
                )?)
            })
            .await
    }

    /// At daemon stop: takes no new job and ends every execution still queued or running
    /// (status `interrupted`, its record written), waiting up to `within` for their records.
    pub async fn shutdown(&self, within: Duration) {
        let n = self.inner.executions.close(Stop::Interrupted);
        if n == 0 {
            return;
        }
        tracing::info!(
            executions = n,
            "ending the executions still queued or running (interrupted)"
        );
        let until = tokio::time::Instant::now() + within;
        while !self.inner.executions.is_empty() && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = self.inner.executions.len();
        if left > 0 {
            tracing::warn!(
                executions = left,
                "executions not recorded by the shutdown timeout; the next start marks them interrupted"
            );
        }
    }

    /// Applies `exec.keep-last` and `exec.keep-within` to the history (finished executions
    /// only) and `exec.keep-output-within` to the output kept with it. Returns how many
    /// executions were deleted.
    pub async fn prune(&self) -> Result<usize> {
        let cfg = self.inner.live.get();
        let keep_last = i64::try_from(cfg.exec.keep_last).unwrap_or(i64::MAX);
        let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        let cutoff = now_unix().saturating_sub(secs(cfg.exec.keep_within.get()));
        let output_cutoff = now_unix().saturating_sub(secs(cfg.exec.keep_output_within.get()));
        let note = format!(
            "deleted after exec.keep-output-within ({})",
            cfg.exec.keep_output_within
        );
        self.inner
            .db
            .write(move |c| {
                let max: Option<i64> =
                    c.query_row("SELECT max(seq) FROM executions", [], |r| r.get(0))?;
                let floor = max.unwrap_or(0).saturating_sub(keep_last);
                c.execute(
                    "UPDATE executions SET output_kept = 0, output_reason = ?2
                     WHERE id IN (SELECT id FROM execution_output WHERE at < ?1)",
                    rusqlite::params![output_cutoff, note],
                )?;
                c.execute(
                    "DELETE FROM execution_output WHERE at < ?1
                        OR id IN (SELECT id FROM executions
                                  WHERE state = 'finished' AND (seq <= ?2 OR started_at < ?3))",
                    rusqlite::params![output_cutoff, floor, cutoff],
                )?;
                Ok(c.execute(
                    "DELETE FROM executions WHERE state = 'finished' AND (seq <= ?1 OR started_at < ?2)",
                    rusqlite::params![floor, cutoff],
                )?)
            })
            .await
    }
}

/// An execution admitted and not yet finished: its request, what it runs with, and its entry.
struct Job {
    req: ExecRequest,
    policy: Policy,
    bounds: Bounds,
    caller: Caller,
    stream: Option<mpsc::Sender<Chunk>>,
    live: Arc<Live>,
    /// When it was submitted (unix seconds).
    submitted: i64,
    /// The slot it took at once, if one was free (else it holds a queue place).
    slot: Option<tokio::sync::OwnedSemaphorePermit>,
    /// Its views (held while it lives) and what to bring back after it (`jobs::data`).
    prepared: Mutex<Option<crate::jobs::data::Prepared>>,
}

/// The result of an execution stopped before it got a slot: nothing ran.
fn never_started(live: &Live, status: Status) -> ExecResult {
    ExecResult {
        id: live.id.clone(),
        status,
        exit_code: None,
        signal: None,
        stdout: Vec::new(),
        stderr: Vec::new(),
        truncated: false,
        wall_ms: 0,
        cpu_ms: 0,
        max_rss_kb: 0,
        message: Some("stopped while queued: it never started".into()),
        started_at: live.record().started_at,
        dropped_bytes: 0,
        memory_limited_by: MemoryLimitedBy::Rlimit,
        outputs: None,
    }
}

fn not_found(id: &str) -> Error {
    Error::NotFound(format!("no execution {id}"))
}

/// The columns `row_record` reads.
const SELECT: &str = "SELECT seq, id, kind, program_id, label, argv, profile, actor, client, request_id, status,
        exit_code, signal, started_at, wall_ms, cpu_ms, max_rss_kb, truncated, stdout_bytes,
        stderr_bytes, message, memory_limited_by, state, owner, finished_at, output_kept, output_reason,
        outputs
    FROM executions";

/// A row of `SELECT` as (seq, owner, record).
fn row_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, String, Record)> {
    let argv: String = r.get(5)?;
    let state: String = r.get(22)?;
    let finished = state == State::Finished.as_str();
    let reason: String = r.get(26)?;
    Ok((
        r.get(0)?,
        r.get(23)?,
        Record {
            id: r.get(1)?,
            kind: r.get(2)?,
            program_id: r.get(3)?,
            label: r.get(4)?,
            argv: serde_json::from_str(&argv).unwrap_or(serde_json::Value::Null),
            profile: r.get(6)?,
            actor: r.get(7)?,
            client: r.get(8)?,
            request_id: r.get(9)?,
            status: finished.then(|| r.get(10)).transpose()?,
            exit_code: r.get(11)?,
            signal: r.get(12)?,
            started_at: rfc3339(r.get(13)?),
            wall_ms: r.get(14)?,
            cpu_ms: r.get(15)?,
            max_rss_kb: r.get(16)?,
            truncated: r.get(17)?,
            stdout_bytes: r.get(18)?,
            stderr_bytes: r.get(19)?,
            message: r.get(20)?,
            memory_limited_by: r.get(21)?,
            state,
            finished_at: r.get::<_, Option<i64>>(24)?.map(rfc3339),
            output_kept: r.get(25)?,
            output_reason: (!reason.is_empty()).then_some(reason),
            outputs: r
                .get::<_, Option<String>>(27)?
                .and_then(|t| serde_json::from_str(&t).ok()),
        },
    ))
}

/// A job on a pseudo-terminal (`Executor::start_terminal`): everything that confines it and
/// must live exactly as long as it (its uid, its cgroup), with the terminal's master.
pub struct TerminalJob {
    /// The terminal's master: reads are the job's output, writes its typed input. Shared, so
    /// that the session's clients write while its reader reads; the master closes when the
    /// last holder lets go (the job is ended by `end` whatever they do).
    pub terminal: Arc<Terminal>,
    /// The profile the job runs under and the argv it was given.
    pub profile: String,
    pub argv: Vec<String>,
    running: Running,
    cgroup: Option<JobCgroup>,
    /// Held until the job is gone, so no other job gets its uid meanwhile.
    _lease: UidLease,
    /// The views it mounts (a program's session: its program), held as long.
    _data: crate::jobs::data::Prepared,
}

/// How a terminal job ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TerminalExit {
    pub exit_code: Option<i32>,
    pub signal: Option<String>,
    /// What went wrong inside the sandbox, if something did.
    pub message: Option<String>,
}

impl TerminalJob {
    /// Resolves once the job's helper has exited (the job is over, or ending).
    pub async fn exited(&mut self) {
        self.running.exit.wait().await;
    }

    /// Ends the job (SIGKILL to the helper, its init and its cgroup when `kill`), waits until
    /// nothing of it is left (bounded by `END_GRACE`) and gives back how it ended. The uid and
    /// the cgroup are given back when this returns.
    pub async fn end(mut self, kill: bool) -> Result<TerminalExit> {
        if kill && let Some(cg) = &self.cgroup {
            cg.kill();
        }
        let by = tokio::time::Instant::now() + END_GRACE;
        let report = self.running.finish(kill, by).await?;
        if let Some(cg) = &self.cgroup {
            // Whatever the job left in its cgroup (a process that escaped the PID
            // namespace's end cannot, but the cgroup is the last word).
            cg.kill();
        }
        Ok(match report.kind {
            ReportKind::Exit => TerminalExit {
                exit_code: Some(report.code),
                ..TerminalExit::default()
            },
            ReportKind::Signal => TerminalExit {
                signal: Some(signal_name(report.signal)),
                ..TerminalExit::default()
            },
            ReportKind::Error => TerminalExit {
                message: Some(report.message),
                ..TerminalExit::default()
            },
            _ => TerminalExit {
                signal: Some(signal_name(libc::SIGKILL)),
                ..TerminalExit::default()
            },
        })
    }
}

impl Executor {
    /// Starts `req` on a pseudo-terminal of `size`, with exactly a job's confinement: the
    /// policy built from its profile as for `run` (limits within the profile's), a uid of its
    /// own, its memory cgroup (or the rlimits that stand for it), then
    /// `Sandbox::spawn_terminal`. It takes no job slot: a terminal lives for minutes or hours
    /// and `terminals.max-total` bounds them instead. `req.timeout` is not used (a terminal's
    /// lifetime is its owner's business); `req.stdin` neither (the terminal is its input).
    pub async fn start_terminal(
        &self,
        req: &ExecRequest,
        size: TerminalSize,
    ) -> Result<TerminalJob> {
        size.validate().map_err(Error::Invalid)?;
        let (mut policy, profile, _output, _timeout, mut memory) = self.policy(req)?;
        let data = self.inner.data.prepare(&req.data, &mut policy).await?;
        if data.wants_outputs() {
            return Err(Error::Invalid(
                "a terminal session brings no outputs back: run the job instead".into(),
            ));
        }
        memory.tmpfs_bytes = memory.tmpfs_bytes.min(policy.limits.tmpfs_bytes);
        let lease = self.lease_uid()?;
        policy.run_as = lease.uid.map(|u| (u, u));
        policy.terminal = Some(size);
        let id = random_id()?;
        let (_, cgroup) = self.job_cgroup(&id, &policy, memory, None)?;
        let policy = fit_policy(&policy, memory, cgroup.is_some());
        let by = tokio::time::Instant::now() + TERMINAL_START;
        let (running, terminal) = self
            .inner
            .sandbox
            .spawn_terminal(&policy, cgroup.as_ref(), by)
            .await?;
        Ok(TerminalJob {
            terminal: Arc::new(terminal),
            profile,
            argv: policy.argv.clone(),
            running,
            cgroup,
            _lease: lease,
            _data: data,
        })
    }
}

/// How long a terminal job's sandbox may take to hand its terminal over.
const TERMINAL_START: Duration = Duration::from_secs(20);

/// The policy fitted to rlimits when the job has no cgroup: it was fitted to a cgroup.
fn fit_policy(policy: &Policy, memory: MemoryBudget, in_cgroup: bool) -> Cow<'_, Policy> {
    if !in_cgroup && policy.limits.address_space_bytes.is_none() {
        let mut p = policy.clone();
        memory.apply(&mut p.limits, MemoryLimitedBy::Rlimit);
        Cow::Owned(p)
    } else {
        Cow::Borrowed(policy)
    }
}

/// A job's output as collected, and why the collection ended early, if it did.
struct Output {
    out: Vec<u8>,
    err: Vec<u8>,
    /// Bytes a streaming caller's channel had no room for.
    dropped: u64,
    timed_out: bool,
    overflow: bool,
    /// Ended early: `killed` (its request's cancel), `cancelled` or `interrupted` (its stop).
    stopped: Option<Status>,
}

/// Reads the job's stdout and stderr (streamed to `stream` as they come, and kept in `live`
/// up to its bound) until both end and the helper exits, or until the deadline, a cancel, the
/// execution's stop or more output than `output_limit`.
async fn collect_output(
    running: &mut Running,
    output_limit: u64,
    due: tokio::time::Instant,
    stream: Option<mpsc::Sender<Chunk>>,
    cancel: Option<Arc<tokio::sync::Notify>>,
    live: &Live,
) -> Output {
    let deadline = tokio::time::sleep_until(due);
    tokio::pin!(deadline);
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let (mut ob, mut eb) = (vec![0u8; 16 * 1024], vec![0u8; 16 * 1024]);
    let (mut o_done, mut e_done) = (false, false);
    let (mut timed_out, mut overflow, mut stopped) = (false, false, None);
    let cancel_wait = async {
        match &cancel {
            Some(n) => n.notified().await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(cancel_wait);
    let stop_wait = live.stopped();
    tokio::pin!(stop_wait);
    let mut total: u64 = 0;
    let mut dropped: u64 = 0;
    let mut exited = None;
    loop {
        if o_done && e_done && exited.is_some() {
            break;
        }
        let chunk = tokio::select! {
            r = running.stdout.read(&mut ob), if !o_done => match r {
                Ok(0) | Err(_) => { o_done = true; None }
                Ok(n) => Some((true, n)),
            },
            r = running.stderr.read(&mut eb), if !e_done => match r {
                Ok(0) | Err(_) => { e_done = true; None }
                Ok(n) => Some((false, n)),
            },
            _ = running.exit.wait(), if exited.is_none() => { exited = Some(()); None },
            _ = &mut deadline => { timed_out = true; break; }
            _ = &mut cancel_wait => { stopped = Some(Status::Killed); break; }
            why = &mut stop_wait => { stopped = Some(why.status()); break; }
        };
        let Some((is_out, n)) = chunk else { continue };
        let room = output_limit.saturating_sub(total) as usize;
        let take = n.min(room);
        let bytes = if is_out { &ob[..take] } else { &eb[..take] };
        if is_out {
            out.extend_from_slice(bytes)
        } else {
            err.extend_from_slice(bytes)
        }
        live.push(!is_out, bytes);
        total += n as u64;
        if let Some(tx) = &stream
            && take > 0
        {
            let c = if is_out {
                Chunk::Stdout(bytes.to_vec())
            } else {
                Chunk::Stderr(bytes.to_vec())
            };
            // Never wait for the consumer: this loop is what watches the deadline. A
            // consumer that falls behind loses output (counted, said in the result); a
            // gone one does not stop the job, whose result is still recorded.
            match tx.try_send(c) {
                Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
                Err(mpsc::error::TrySendError::Full(_)) => dropped += take as u64,
            }
        }
        if total > output_limit {
            overflow = true;
            break;
        }
    }
    Output {
        out,
        err,
        dropped,
        timed_out,
        overflow,
        stopped,
    }
}

/// The job's status, exit code and signal, from its report and how its output ended.
fn classify(
    report: &Report,
    output: &Output,
    oom_killed: bool,
    cpu_limit_ms: u64,
) -> (Status, Option<i32>, Option<String>) {
    // An OOM kill in the job's cgroup ends the job whichever of its processes the kernel
    // chose (the job's init or helper included, whose death ends the job): memory_limit.
    if oom_killed {
        (
            Status::MemoryLimit,
            None,
            Some(signal_name(report.signal.max(libc::SIGKILL))),
        )
    } else if report.kind == ReportKind::Error {
        (Status::SandboxError, None, None)
    } else if output.timed_out {
        (Status::Timeout, None, Some("SIGKILL".to_owned()))
    } else if let Some(status) = output.stopped {
        (status, None, Some("SIGKILL".to_owned()))
    } else if output.overflow {
        (Status::OutputLimit, None, Some("SIGKILL".to_owned()))
    } else if report.kind == ReportKind::Signal {
        let cpu = report.signal == libc::SIGXCPU
            || (report.signal == libc::SIGKILL && report.cpu_ms + 50 >= cpu_limit_ms);
        (
            if cpu {
                Status::CpuLimit
            } else {
                Status::Killed
            },
            None,
            Some(signal_name(report.signal)),
        )
    } else if report.kind == ReportKind::Exit {
        (
            if report.code == 0 {
                Status::Ok
            } else {
                Status::NonzeroExit
            },
            Some(report.code),
            None,
        )
    } else {
        (Status::Killed, None, None)
    }
}

/// The address space headroom of a job's program (`sandbox.address-space-headroom`, by the
/// file name of argv[0]).
fn runtime_headroom(sandbox: &crate::config::SandboxConfig, argv: &[String]) -> u64 {
    argv.first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .and_then(|n| n.to_str())
        .and_then(|n| sandbox.address_space_headroom.get(n))
        .map_or(0, |b| b.bytes())
}

/// The history listing's SQL: with a program, a walk down `executions_program (program_id,
/// seq)` from the cursor; with an owner (a caller who is not admin), down `executions_owner
/// (owner, seq)`; else down the table itself. The other filters are checked on the way.
fn history_query(
    f: &Filter,
    before: Option<i64>,
    take: i64,
) -> (String, Vec<rusqlite::types::Value>) {
    let mut w = crate::store::db::Conditions::default();
    if let Some(p) = &f.program_id {
        w.add("program_id =", p.clone());
    }
    if let Some(o) = &f.owner {
        w.add("owner =", o.clone());
    }
    if let Some(s) = f.state {
        w.add("state =", s.as_str().to_owned());
    }
    if let Some(a) = &f.actor {
        w.add("actor =", a.clone());
    }
    if let Some(t) = f.since {
        w.add("started_at >=", t);
    }
    if let Some(t) = f.until {
        w.add("started_at <=", t);
    }
    if let Some(b) = before {
        w.add("seq <", b);
    }
    let (filter, limit, args) = w.finish(take);
    let sql = format!("{SELECT} {filter} ORDER BY seq DESC LIMIT ?{limit}");
    (sql, args)
}

/// The argv a history record keeps: the arguments in order up to `max` bytes in all (the
/// one that crosses it cut at a character boundary), then, if anything was cut, a last
/// element saying how much. The job itself always gets its argv whole.
pub fn history_argv(argv: &[String], max: usize) -> Vec<String> {
    let total: usize = argv.iter().map(String::len).sum();
    if total <= max {
        return argv.to_vec();
    }
    let mut kept = Vec::new();
    let mut room = max;
    for a in argv {
        if room == 0 {
            break;
        }
        if a.len() <= room {
            room -= a.len();
            kept.push(a.clone());
        } else {
            let mut end = room;
            while !a.is_char_boundary(end) {
                end -= 1;
            }
            kept.push(a[..end].to_owned());
            room = 0;
        }
    }
    let left: usize = total - kept.iter().map(String::len).sum::<usize>();
    kept.push(format!(
        "[truncated: {left} more bytes of argv not kept (exec.history-max-argv-size)]"
    ));
    kept
}

#[cfg(test)]
mod history_argv_tests {
    use super::history_argv;

    #[test]
    fn a_long_argv_is_cut_at_the_bound_with_a_marker_and_a_short_one_kept_whole() {
        let short = vec!["echo".to_owned(), "hi".to_owned()];
        assert_eq!(history_argv(&short, 256), short);
        let argv = vec!["sh".to_owned(), "é".repeat(1000), "tail".to_owned()];
        let kept = history_argv(&argv, 257);
        assert_eq!(kept.len(), 3);
        assert_eq!(kept[0], "sh");
        // 255 bytes are left for the second argument: cut at a character boundary (254).
        assert_eq!(kept[1], "é".repeat(127));
        assert!(kept[2].contains("1750 more bytes"), "{}", kept[2]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The executions metric registers its `status` labels from a list of its own (metrics
    /// names no job type): it must be exactly the statuses a job can end with.
    #[test]
    fn the_executions_metric_lists_every_status() {
        let ours: Vec<&str> = Status::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(ours, crate::ops::metrics::EXECUTION_STATUSES);
    }

    /// An executor on the database at `path` (no job runs: the sandbox binary is absent).
    fn executor(dir: &std::path::Path, db: &Db, cfg: crate::config::Config) -> Executor {
        let live = Arc::new(LiveConfig::new(cfg));
        let sandbox = Sandbox::start(std::path::PathBuf::from("/nonexistent/localhostd")).unwrap();
        let metrics =
            crate::ops::metrics::Metrics::new(db.clone(), live.clone(), dir.to_owned()).unwrap();
        let pins = Arc::new(crate::store::pins::BlobPins::default());
        let files =
            crate::store::files::Files::new(db.clone(), live.clone(), dir.join("files"), pins);
        let views = crate::store::views::Views::open(dir.join("mounts"), files.clone()).unwrap();
        let data = crate::jobs::data::Data::new(files, views, live.clone());
        Executor::new(sandbox, db.clone(), live, None, metrics, data)
    }

    fn admin() -> Viewer {
        Viewer {
            owner: "token:admin".into(),
            admin: true,
        }
    }

    fn owner(o: &str) -> Viewer {
        Viewer {
            owner: o.into(),
            admin: false,
        }
    }

    /// A schema-14 database: its runs stay listed, finished, with no owner (only admin sees
    /// them) and no kept output, saying why; runs recorded after the migration keep theirs.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn migration_15_keeps_the_history_finished_and_owned_by_nobody() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.db");
        crate::store::db::database_at_schema(
            &p,
            14,
            "INSERT INTO executions(id, kind, program_id, label, argv, profile, actor, client, request_id,
                status, exit_code, signal, started_at, wall_ms, cpu_ms, max_rss_kb, truncated,
                stdout_bytes, stderr_bytes, message, memory_limited_by)
             VALUES ('00000000000000aa', 'command', NULL, 'echo hi', '[\"echo\",\"hi\"]', 'default',
                'old', '127.0.0.1', 'r1', 'ok', 0, NULL, 1700000000, 5, 1, 1000, 0, 3, 0, '', 'cgroup');",
        );
        let db = Db::open(&p, 1).unwrap();
        let exec = executor(dir.path(), &db, crate::config::Config::default());
        let v = exec.get("00000000000000aa", &admin()).await.unwrap();
        assert_eq!(v.record.state, "finished");
        assert_eq!(v.record.status.as_deref(), Some("ok"));
        assert_eq!(v.record.argv, serde_json::json!(["echo", "hi"]));
        assert!(!v.record.output_kept);
        assert_eq!(
            v.record.output_reason.as_deref(),
            Some("recorded before outputs were kept")
        );
        assert!(v.stdout.is_empty());
        assert!(matches!(
            exec.get("00000000000000aa", &owner("token:t1")).await,
            Err(Error::NotFound(_))
        ));
        let mine = Filter {
            owner: Some("token:t1".into()),
            ..Filter::default()
        };
        assert!(exec.list(mine, 10, None).await.unwrap().items.is_empty());
        let all = exec.list(Filter::default(), 10, None).await.unwrap();
        assert_eq!(all.items.len(), 1);
        db.close();
    }

    /// Rows the last daemon left queued or running are finished as `interrupted` at start,
    /// their program's counters with them; finished rows are left alone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn recovery_marks_what_was_in_progress_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("t.db"), 1).unwrap();
        db.write(|c| {
            c.execute_batch(
                "INSERT INTO programs(id, name, kind, files, size, sha256, created_at, run_count)
                     VALUES ('p1', 'x.py', 'file', '[]', 1, '', 1, 4);
                 INSERT INTO executions(id, kind, program_id, label, argv, profile, actor, client,
                     request_id, status, started_at, wall_ms, cpu_ms, max_rss_kb, truncated,
                     stdout_bytes, stderr_bytes, message, state, owner)
                 VALUES ('0000000000000001', 'program', 'p1', 'x.py', '[]', 'default', 'a', '', '', '',
                         10, 0, 0, 0, 0, 0, 0, '', 'running', 'token:t1'),
                        ('0000000000000002', 'command', NULL, 'true', '[]', 'default', 'a', '', '', '',
                         10, 0, 0, 0, 0, 0, 0, '', 'queued', 'token:t1'),
                        ('0000000000000003', 'command', NULL, 'true', '[]', 'default', 'a', '', '', 'ok',
                         10, 0, 0, 0, 0, 0, 0, '', 'finished', 'token:t1');",
            )?;
            Ok(())
        })
        .await
        .unwrap();
        let exec = executor(dir.path(), &db, crate::config::Config::default());
        assert_eq!(exec.recover().await.unwrap(), 2);
        assert_eq!(exec.recover().await.unwrap(), 0);
        let mine = owner("token:t1");
        for id in ["0000000000000001", "0000000000000002"] {
            let r = exec.get(id, &mine).await.unwrap().record;
            assert_eq!(r.state, "finished", "{r:?}");
            assert_eq!(r.status.as_deref(), Some("interrupted"), "{r:?}");
            assert!(!r.output_kept && r.finished_at.is_some(), "{r:?}");
        }
        let r = exec.get("0000000000000003", &mine).await.unwrap().record;
        assert_eq!(r.status.as_deref(), Some("ok"));
        let (count, last): (i64, String) = db
            .read(|c| {
                Ok(c.query_row(
                    "SELECT run_count, last_run_status FROM programs WHERE id = 'p1'",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?)
            })
            .await
            .unwrap();
        assert_eq!((count, last.as_str()), (5, "interrupted"));
        let filter = Filter {
            state: Some(State::Finished),
            owner: Some("token:t1".into()),
            ..Filter::default()
        };
        assert_eq!(exec.list(filter, 10, None).await.unwrap().items.len(), 3);
        db.close();
    }

    /// Kept output goes after `exec.keep-output-within` (the row says so) and with its row
    /// after `exec.keep-last`; rows still in progress are never pruned.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pruning_deletes_old_output_and_old_rows_but_not_unfinished_ones() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("t.db"), 1).unwrap();
        let now = now_unix();
        db.write(move |c| {
            for (i, state, at) in [
                (1, "queued", now - 100),
                (2, "finished", now - 100),
                (3, "finished", now - 10 * 86400),
                (4, "finished", now),
                (5, "finished", now),
            ] {
                let id = format!("{i:016x}");
                c.execute(
                    "INSERT INTO executions(id, kind, label, argv, profile, actor, client, request_id,
                         status, started_at, wall_ms, cpu_ms, max_rss_kb, truncated, stdout_bytes,
                         stderr_bytes, message, state, owner, output_kept)
                     VALUES (?1, 'command', 'x', '[]', 'default', 'a', '', '', 'ok', ?2, 0, 0, 0, 0, 1, 0,
                             '', ?3, 'token:t', 1)",
                    rusqlite::params![id, at, state],
                )?;
                c.execute(
                    "INSERT INTO execution_output(id, at, stdout, stderr) VALUES (?1, ?2, x'41', x'')",
                    rusqlite::params![id, at],
                )?;
            }
            Ok(())
        })
        .await
        .unwrap();
        let mut cfg = crate::config::Config::default();
        cfg.exec.keep_last = 3;
        let exec = executor(dir.path(), &db, cfg);
        // keep-last 3 of max seq 5: seq 1 and 2 go, but 1 is queued; 3 keeps its row (within
        // 30 days) but not its output (older than 7 days).
        assert_eq!(exec.prune().await.unwrap(), 1);
        let v = owner("token:t");
        assert!(matches!(
            exec.get(&format!("{:016x}", 2), &v).await,
            Err(Error::NotFound(_))
        ));
        let queued = exec.get(&format!("{:016x}", 1), &v).await.unwrap();
        assert_eq!(queued.stdout, b"A");
        let old = exec.get(&format!("{:016x}", 3), &v).await.unwrap();
        assert!(
            !old.record.output_kept && old.stdout.is_empty(),
            "{:?}",
            old.record
        );
        assert!(
            old.record
                .output_reason
                .as_deref()
                .is_some_and(|r| r.contains("exec.keep-output-within")),
            "{:?}",
            old.record
        );
        let fresh = exec.get(&format!("{:016x}", 5), &v).await.unwrap();
        assert!(fresh.record.output_kept && fresh.stdout == b"A");
        let outputs: i64 = db
            .read(|c| Ok(c.query_row("SELECT count(*) FROM execution_output", [], |r| r.get(0))?))
            .await
            .unwrap();
        assert_eq!(outputs, 3);
        db.close();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_programs_history_walks_its_index() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("t.db"), 1).unwrap();
        let filter = Filter {
            program_id: Some("p1".into()),
            ..Filter::default()
        };
        let (sql, args) = history_query(&filter, Some(40), 101);
        let plan = db
            .write(move |c| Ok(crate::store::db::query_plan(c, &sql, args)?))
            .await
            .unwrap();
        assert!(
            plan.contains(
                "SEARCH executions USING INDEX executions_program (program_id=? AND seq<?)"
            ),
            "{plan}"
        );
        db.close();
    }
}
