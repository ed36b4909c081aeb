//! Terminal sessions: a job on a pseudo-terminal, confined exactly like every job
//! (`Executor::start_terminal`), that clients attach to, leave and come back to. No HTTP here;
//! `api::terminals` and `api::ws` frame what this module offers.
//!
//! Per session, one task (`session::drive`) owns the job: it reads the terminal's master into
//! the scrollback ring (`ring`) and the recording (`recording`), no faster than
//! `terminals.output-rate` (past it the master is not read, so the job blocks on its own
//! writes while the daemon stays responsive), and ends the job on `DELETE`, the idle timeout
//! (no input and no client attached), the lifetime, the daemon's shutdown or the job's own
//! exit. Whatever ends it, the job is killed and waited for: nothing of it outlives the
//! session. Readers (WebSocket clients, `output?since=`) follow the ring at their own offsets
//! and never hold the session up; one that falls behind the ring learns how much it lost.
//!
//! Every session has a row in `terminals` (migration 13), written when it starts and when it
//! ends, so list and inspect work after the end and after a restart; rows a crash left
//! running are closed as `daemon stopped` at the next start (`recover`).
//!
//! Access: a session belongs to the token that created it (for local admin, the actor);
//! an admin sees every session, anyone else gets `NotFound` for sessions not theirs, so ids
//! cannot be probed.

mod recording;
mod ring;
mod session;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::config::LiveConfig;
use crate::error::{Error, Result};
use crate::jobs::exec::{ExecRequest, Executor};
use crate::jobs::sandbox::TerminalSize;
use crate::store::audit::{self, Caller};
use crate::store::db::Db;
use crate::util::disk::DiskFloor;
use crate::util::paging;
use crate::util::time::{now_unix, rfc3339};

pub use ring::Read;
pub use session::{Attachment, Ended, Session};

/// Who is asking: the session's owner key and whether they may see every session (the rule
/// executions share).
pub use crate::jobs::exec::executions::Viewer;

/// A session to start.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The job: argv, env, profile, limits, binds and cwd (a stored program's), label, kind,
    /// program id. `timeout` and `stdin` are not used.
    pub job: ExecRequest,
    pub size: TerminalSize,
    /// Asked-for idle timeout and lifetime (the configured defaults when `None`).
    pub idle_timeout: Option<Duration>,
    pub lifetime: Option<Duration>,
    /// Every attached client may type, not only one at a time.
    pub shared_write: bool,
    /// Kept until the session ends: what its origin needs held while it runs (a stored
    /// program's run registration, so deleting the program sees the session). `job.cancel`
    /// ends the session when notified.
    pub hold: Option<Arc<dyn std::any::Any + Send + Sync>>,
}

/// A session as listed and inspected.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = TerminalInfo)]
pub struct Info {
    pub id: String,
    /// `running` or `ended`.
    pub state: String,
    /// `command` or `program`.
    pub kind: String,
    pub program_id: Option<String>,
    pub argv: Vec<String>,
    pub profile: String,
    /// The creator's name (the token's name, or `local:uid=N`).
    pub creator: String,
    pub cols: u16,
    pub rows: u16,
    pub created_at: String,
    /// The last input, attach or detach (the end, once ended).
    pub last_activity: String,
    pub ended_at: Option<String>,
    /// `exited`, `deleted`, `idle timeout`, `lifetime`, `daemon stopped`, `sandbox error`.
    pub end_reason: Option<String>,
    pub exit_code: Option<i64>,
    pub signal: Option<String>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Clients attached over WebSocket now.
    pub attached: usize,
    pub shared_write: bool,
    /// When the idle timeout and the lifetime end the session (while it runs).
    pub idle_timeout_s: Option<u64>,
    pub expires_at: Option<String>,
    /// The recording's size so far; `recording_truncated` when it stopped at its bound.
    pub recording_bytes: u64,
    pub recording_truncated: bool,
}

/// A page of sessions.
pub struct Page {
    pub items: Vec<Info>,
    pub next_cursor: Option<String>,
}

/// The terminal sessions service. Cheap to clone.
#[derive(Clone)]
pub struct Terminals {
    inner: Arc<Inner>,
}

struct Inner {
    exec: Executor,
    db: Db,
    live: Arc<LiveConfig>,
    /// `$STATE_DIRECTORY/terminals`: the recordings.
    dir: PathBuf,
    floor: Arc<DiskFloor>,
    registry: Mutex<Registry>,
}

#[derive(Default)]
struct Registry {
    /// Live sessions, and ended ones for `LINGER` (late readers get the tail and the exit).
    sessions: HashMap<String, Arc<Session>>,
    /// Owners of sessions being started (they count against the limits already).
    starting: Vec<String>,
    /// The reader tasks, joined at shutdown.
    tasks: Vec<tokio::task::JoinHandle<()>>,
    closed: bool,
}

impl Registry {
    /// Keeps at most `keep` ended sessions in memory (the most recently ended), so sessions
    /// that start and end quickly cannot pile up scrollbacks for `LINGER`.
    fn forget_ended(&mut self, keep: usize) {
        let mut ended: Vec<(std::time::Duration, String)> = self
            .sessions
            .values()
            .filter_map(|s| s.ended_ago().map(|ago| (ago, s.id().to_owned())))
            .collect();
        if ended.len() <= keep {
            return;
        }
        ended.sort();
        for (_, id) in ended.split_off(keep) {
            self.sessions.remove(&id);
        }
    }
}

/// How long an ended session stays in memory for readers still following it.
const LINGER: Duration = Duration::from_secs(300);

/// TERM a session gets unless its request sets one.
const DEFAULT_TERM: &str = "xterm-256color";

fn random_id() -> Result<String> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| Error::Internal(format!("no randomness: {e}")))?;
    Ok(hex::encode(b))
}

fn not_found(id: &str) -> Error {
    Error::NotFound(format!("no terminal session {id}"))
}

/// Whether `id` has the shape of a session id (so it can be joined to a path).
fn valid_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// Why sessions end, as the API and the table say it.
pub const END_REASONS: [&str; 7] = [
    "exited",
    "deleted",
    "idle timeout",
    "lifetime",
    "daemon stopped",
    "sandbox error",
    "program deleted",
];

/// A session's end reason as its `localhostd_terminals_ended_total` label.
fn metric_reason(reason: &str) -> String {
    reason.replace(' ', "_")
}

impl Terminals {
    /// The service; recordings go to `state_dir/terminals` (made here).
    pub fn new(
        exec: Executor,
        db: Db,
        live: Arc<LiveConfig>,
        state_dir: &std::path::Path,
    ) -> Result<Terminals> {
        let dir = state_dir.join(crate::util::layout::TERMINALS_DIR);
        std::fs::create_dir_all(&dir)?;
        Ok(Terminals {
            inner: Arc::new(Inner {
                floor: Arc::new(DiskFloor::new(live.clone(), dir.clone())),
                exec,
                db,
                live,
                dir,
                registry: Mutex::new(Registry::default()),
            }),
        })
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        match self.inner.registry.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// At start: rows a crash left running are closed as `daemon stopped`.
    pub async fn recover(&self) -> Result<usize> {
        let now = now_unix();
        self.inner
            .db
            .write(move |c| {
                Ok(c.execute(
                    "UPDATE terminals SET ended_at = ?1, end_reason = 'daemon stopped' WHERE ended_at IS NULL",
                    [now],
                )?)
            })
            .await
    }

    /// Sessions running now (and being started).
    pub fn running(&self) -> usize {
        let reg = self.registry();
        reg.sessions.values().filter(|s| s.is_running()).count() + reg.starting.len()
    }

    /// Takes a place for `owner` within `terminals.max-total` and `max-per-token`.
    fn reserve(&self, owner: &str) -> Result<()> {
        let cfg = self.inner.live.get().terminals.clone();
        if !cfg.enabled {
            return Err(Error::Unavailable(
                "terminal sessions are turned off (terminals.enabled)".into(),
            ));
        }
        let mut reg = self.registry();
        if reg.closed {
            return Err(Error::Unavailable("shutting down".into()));
        }
        let live: Vec<&str> = reg
            .sessions
            .values()
            .filter(|s| s.is_running())
            .map(|s| s.owner())
            .chain(reg.starting.iter().map(String::as_str))
            .collect();
        if live.len() >= cfg.max_total {
            return Err(Error::Busy(format!(
                "{} terminal sessions are running (terminals.max-total); end one first",
                live.len()
            )));
        }
        let mine = live.iter().filter(|o| **o == owner).count();
        if mine >= cfg.max_per_token {
            return Err(Error::Busy(format!(
                "this token has {mine} terminal sessions running (terminals.max-per-token); end one first"
            )));
        }
        reg.starting.push(owner.to_owned());
        Ok(())
    }

    fn unreserve(&self, owner: &str) {
        let mut reg = self.registry();
        if let Some(i) = reg.starting.iter().position(|o| o == owner) {
            reg.starting.swap_remove(i);
        }
    }

    /// Starts a session for `viewer` (its owner), recorded as `caller`'s. The start runs as a
    /// task of its own: a caller that goes away (a request timed out or dropped) leaves it to
    /// finish, so no place stays reserved and no row stays `running` half made.
    pub async fn create(&self, spec: Spec, viewer: &Viewer, caller: &Caller) -> Result<Info> {
        self.reserve(&viewer.owner)?;
        let (me, viewer, caller) = (self.clone(), viewer.clone(), caller.clone());
        let task = tokio::spawn(async move {
            let started = me.start(spec, &viewer, &caller).await;
            me.unreserve(&viewer.owner);
            started
        });
        let session = task
            .await
            .map_err(|e| Error::Internal(format!("a terminal session's start failed: {e}")))??;
        Ok(session.info())
    }

    async fn start(
        &self,
        mut spec: Spec,
        viewer: &Viewer,
        caller: &Caller,
    ) -> Result<Arc<Session>> {
        let cfg = self.inner.live.get().terminals.clone();
        let idle = within(
            spec.idle_timeout,
            cfg.idle_timeout.get(),
            cfg.max_idle_timeout.get(),
            "idle_timeout_s",
            "terminals.max-idle-timeout",
        )?;
        let lifetime = within(
            spec.lifetime,
            cfg.lifetime.get(),
            cfg.max_lifetime.get(),
            "lifetime_s",
            "terminals.max-lifetime",
        )?;
        spec.size.validate().map_err(Error::Invalid)?;
        if !spec.job.env.iter().any(|(k, _)| k == "TERM") {
            spec.job.env.push(("TERM".into(), DEFAULT_TERM.into()));
        }
        let term = spec
            .job
            .env
            .iter()
            .rev()
            .find(|(k, _)| k == "TERM")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let id = random_id()?;
        // Refused before the sandbox is built: no room on disk for a recording.
        if cfg.recording {
            self.inner.floor.ensure(0)?;
        }
        let job = self.inner.exec.start_terminal(&spec.job, spec.size).await?;
        let recording = if cfg.recording {
            let header = recording::Header {
                cols: spec.size.cols,
                rows: spec.size.rows,
                timestamp: now_unix(),
                term: &term,
                title: &spec.job.label,
            };
            match recording::Recording::create(
                &self.inner.dir.join(format!("{id}.cast")),
                &header,
                cfg.recording_max_bytes.bytes(),
                &self.inner.floor,
            ) {
                Ok(r) => Some(r),
                Err(e) => {
                    // The job is ended before the refusal goes back.
                    let _ = job.end(true).await;
                    return Err(e);
                }
            }
        } else {
            None
        };
        // The argv kept (row, listing, audit) is bounded like the execution history's; the
        // job got it whole.
        let max_argv = self.inner.live.get().exec.history_max_argv_size.bytes();
        let argv = crate::jobs::exec::history_argv(
            &job.argv,
            usize::try_from(max_argv).unwrap_or(usize::MAX),
        );
        let session = Arc::new(Session::new(
            session::Identity {
                id: id.clone(),
                owner: viewer.owner.clone(),
                creator: caller.actor.clone(),
                kind: spec.job.kind.to_owned(),
                program_id: spec.job.program_id.clone(),
                argv,
                profile: job.profile.clone(),
                shared_write: spec.shared_write,
                created_at: now_unix(),
            },
            job.terminal.clone(),
            spec.size,
            &cfg,
            idle,
            lifetime,
        ));
        if let Err(e) = self.insert_row(&session, caller).await {
            let _ = job.end(true).await;
            if let Some(r) = recording {
                let path = r.path().to_owned();
                drop(r);
                let _ = std::fs::remove_file(path);
            }
            return Err(e);
        }
        let task = tokio::spawn(session::drive(
            session.clone(),
            job,
            recording,
            self.clone(),
            session::Origin {
                cancel: spec.job.cancel.take(),
                hold: spec.hold.take(),
            },
        ));
        self.inner.exec.metrics().terminal_started();
        let mut reg = self.registry();
        reg.tasks.retain(|t| !t.is_finished());
        reg.tasks.push(task);
        reg.sessions.insert(id, session.clone());
        reg.forget_ended(cfg.max_total);
        if reg.closed {
            session.kill("daemon stopped");
        }
        Ok(session)
    }

    async fn insert_row(&self, s: &Session, caller: &Caller) -> Result<()> {
        let argv = serde_json::to_string(&s.ident.argv).unwrap_or_default();
        let (id, owner, creator, kind, program_id, profile) = (
            s.ident.id.clone(),
            s.ident.owner.clone(),
            s.ident.creator.clone(),
            s.ident.kind.clone(),
            s.ident.program_id.clone(),
            s.ident.profile.clone(),
        );
        let size = s.size();
        let created = s.ident.created_at;
        let ev = caller.event(
            "terminal.create",
            &id,
            "ok",
            format!("{} ({})", s.ident.argv.join(" "), s.ident.profile),
        );
        let client = caller.client.clone();
        self.inner
            .db
            .write(move |c| {
                c.execute(
                    "INSERT INTO terminals(id, owner, actor, client, kind, program_id, argv, profile, cols, rows, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                    rusqlite::params![
                        id, owner, creator, client, kind, program_id, argv, profile,
                        size.cols, size.rows, created
                    ],
                )?;
                audit::insert(c, &ev)
            })
            .await
    }

    /// Called by a session's task once its job is gone: the row gets the end.
    async fn record_end(&self, s: &Session, end: &Ended) {
        let (id, at, reason, code, signal) = (
            s.ident.id.clone(),
            end.at,
            end.reason.clone(),
            end.exit_code,
            end.signal.clone(),
        );
        let (bytes_in, bytes_out) = s.bytes();
        let (rec_bytes, rec_cut) = (end.recording_bytes, end.recording_truncated);
        let ev = audit::Event {
            actor: s.ident.creator.clone(),
            action: "terminal.end".into(),
            target: id.clone(),
            result: reason.clone(),
            client: String::new(),
            request_id: String::new(),
            detail: match (&code, &signal) {
                (Some(c), _) => format!("exit code {c}"),
                (None, Some(sig)) => format!("signal {sig}"),
                _ => String::new(),
            },
        };
        let written = self
            .inner
            .db
            .write(move |c| {
                c.execute(
                    "UPDATE terminals SET ended_at = ?2, end_reason = ?3, exit_code = ?4, signal = ?5,
                        bytes_in = ?6, bytes_out = ?7, recording_bytes = ?8, recording_truncated = ?9
                     WHERE id = ?1",
                    rusqlite::params![
                        id,
                        at,
                        reason,
                        code,
                        signal,
                        bytes_in as i64,
                        bytes_out as i64,
                        rec_bytes as i64,
                        rec_cut
                    ],
                )?;
                audit::insert(c, &ev)
            })
            .await;
        if let Err(e) = written {
            tracing::error!(terminal = %s.ident.id, error = %e, "cannot record the end of a terminal session");
        }
    }

    /// A live (or lingering) session `viewer` may see.
    pub fn session(&self, id: &str, viewer: &Viewer) -> Result<Arc<Session>> {
        let reg = self.registry();
        reg.sessions
            .get(id)
            .filter(|s| viewer.admin || s.owner() == viewer.owner)
            .cloned()
            .ok_or_else(|| not_found(id))
    }

    /// One session, live or from its row.
    pub async fn get(&self, id: &str, viewer: &Viewer) -> Result<Info> {
        if let Ok(s) = self.session(id, viewer) {
            return Ok(s.info());
        }
        if !valid_id(id) {
            return Err(not_found(id));
        }
        let (idq, v) = (id.to_owned(), viewer.clone());
        let row = self
            .inner
            .db
            .read(move |c| {
                let mut st = c.prepare_cached(&format!("{SELECT} WHERE id = ?1"))?;
                let mut rows = st.query_map([&idq], row_info)?;
                Ok(rows.next().transpose()?)
            })
            .await?;
        match row {
            Some((_, owner, info)) if v.admin || owner == v.owner => Ok(info),
            _ => Err(not_found(id)),
        }
    }

    /// The sessions `viewer` may see, newest first.
    pub async fn list(
        &self,
        viewer: &Viewer,
        limit: usize,
        cursor: Option<String>,
    ) -> Result<Page> {
        let before = paging::parse_seq_cursor(cursor.as_deref(), 't')?;
        let v = viewer.clone();
        let rows = self
            .inner
            .db
            .read(move |c| {
                let mut w = crate::store::db::Conditions::default();
                if !v.admin {
                    w.add("owner =", v.owner.clone());
                }
                if let Some(b) = before {
                    w.add("rowid <", b);
                }
                let (filter, lim, args) = w.finish(paging::take(limit));
                let mut st = c.prepare_cached(&format!(
                    "{SELECT} {filter} ORDER BY rowid DESC LIMIT ?{lim}"
                ))?;
                let rows = st.query_map(rusqlite::params_from_iter(args), row_info)?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            })
            .await?;
        let live: HashMap<String, Arc<Session>> = self.registry().sessions.clone();
        let rows = rows
            .into_iter()
            .map(|(seq, _, info)| {
                let info = match live.get(&info.id) {
                    Some(s) => s.info(),
                    None => info,
                };
                (seq, info)
            })
            .collect();
        let (items, next_cursor) =
            paging::keyed_page(rows, limit, |seq| paging::seq_cursor('t', *seq));
        Ok(Page { items, next_cursor })
    }

    /// Ends a session (`DELETE`): its job is killed; resolves once it is gone.
    pub async fn kill(&self, id: &str, viewer: &Viewer) -> Result<Info> {
        let s = match self.session(id, viewer) {
            Ok(s) => s,
            // An ended session's row answers as it is.
            Err(_) => return self.get(id, viewer).await,
        };
        s.kill("deleted");
        s.wait_ended().await;
        Ok(s.info())
    }

    /// The recording's path, for a session `viewer` may see (a running session's recording
    /// is flushed about every second).
    pub async fn recording(&self, id: &str, viewer: &Viewer) -> Result<PathBuf> {
        let info = self.get(id, viewer).await?;
        let path = self.inner.dir.join(format!("{}.cast", info.id));
        if !valid_id(&info.id) || !path.is_file() {
            return Err(Error::NotFound(format!(
                "terminal session {id} has no recording (terminals.recording is off, or it was deleted after terminals.recording-retention)"
            )));
        }
        Ok(path)
    }

    /// Periodic upkeep: forgets sessions that ended more than `LINGER` ago and deletes
    /// recordings older than `terminals.recording-retention` whose session is not running.
    pub fn housekeep(&self) -> usize {
        let running: Vec<String> = {
            let mut reg = self.registry();
            reg.sessions.retain(|_, s| !s.ended_before(LINGER));
            reg.sessions
                .values()
                .filter(|s| s.is_running())
                .map(|s| s.ident.id.clone())
                .collect()
        };
        let retention = self.inner.live.get().terminals.recording_retention.get();
        let Ok(entries) = std::fs::read_dir(&self.inner.dir) else {
            return 0;
        };
        let mut removed = 0;
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".cast")) else {
                continue;
            };
            if running.iter().any(|r| r == id) {
                continue;
            }
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|m| m.elapsed().ok())
                .is_some_and(|age| age > retention);
            if old && std::fs::remove_file(e.path()).is_ok() {
                removed += 1;
            }
        }
        removed
    }

    /// Ends every session (`daemon stopped`) and waits for their tasks, up to `by`.
    pub async fn shutdown(&self, by: Duration) {
        let (sessions, tasks) = {
            let mut reg = self.registry();
            reg.closed = true;
            (
                reg.sessions.values().cloned().collect::<Vec<_>>(),
                std::mem::take(&mut reg.tasks),
            )
        };
        for s in &sessions {
            s.kill("daemon stopped");
        }
        let all = futures_util::future::join_all(tasks);
        if tokio::time::timeout(by, all).await.is_err() {
            tracing::warn!("terminal sessions did not all end in time at shutdown");
        }
    }
}

/// An asked-for duration, the default when none, refused above `max`.
fn within(
    asked: Option<Duration>,
    default: Duration,
    max: Duration,
    what: &str,
    setting: &str,
) -> Result<Duration> {
    match asked {
        None => Ok(default),
        Some(d) if d.is_zero() => Err(Error::Invalid(format!("{what} must be above zero"))),
        Some(d) if d <= max => Ok(d),
        Some(d) => Err(Error::Unprocessable(format!(
            "{what} = {} is above {setting} ({})",
            d.as_secs(),
            humantime::format_duration(max)
        ))),
    }
}

const SELECT: &str = "SELECT rowid, owner, id, kind, program_id, argv, profile, actor, cols, rows, created_at,
        ended_at, end_reason, exit_code, signal, bytes_in, bytes_out, recording_bytes, recording_truncated
     FROM terminals";

/// A row as (seq, owner, info).
fn row_info(r: &rusqlite::Row) -> rusqlite::Result<(i64, String, Info)> {
    let argv: String = r.get(5)?;
    let created: i64 = r.get(10)?;
    let ended: Option<i64> = r.get(11)?;
    Ok((
        r.get(0)?,
        r.get(1)?,
        Info {
            id: r.get(2)?,
            state: if ended.is_some() { "ended" } else { "running" }.into(),
            kind: r.get(3)?,
            program_id: r.get(4)?,
            argv: serde_json::from_str(&argv).unwrap_or_default(),
            profile: r.get(6)?,
            creator: r.get(7)?,
            cols: r.get(8)?,
            rows: r.get(9)?,
            created_at: rfc3339(created),
            last_activity: rfc3339(ended.unwrap_or(created)),
            ended_at: ended.map(rfc3339),
            end_reason: r.get(12)?,
            exit_code: r.get(13)?,
            signal: r.get(14)?,
            bytes_in: r.get::<_, i64>(15)?.max(0) as u64,
            bytes_out: r.get::<_, i64>(16)?.max(0) as u64,
            attached: 0,
            shared_write: false,
            idle_timeout_s: None,
            expires_at: None,
            recording_bytes: r.get::<_, i64>(17)?.max(0) as u64,
            recording_truncated: r.get(18)?,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every end reason has its own label in the metric's fixed set (none falls to `other`).
    #[test]
    fn every_end_reason_has_a_metric_label() {
        for reason in END_REASONS {
            let label = metric_reason(reason);
            assert!(
                crate::ops::metrics::TERMINAL_END_REASONS.contains(&label.as_str()),
                "{reason:?} → {label:?}"
            );
        }
        assert_eq!(
            END_REASONS.len() + 1,
            crate::ops::metrics::TERMINAL_END_REASONS.len()
        );
    }
}
