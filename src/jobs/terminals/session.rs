//! One session: its shared state (the scrollback, counters, who may type, the limits) and the
//! task that owns its job (`drive`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;

use super::Terminals;
use super::recording::Recording;
use super::ring::{Read, Ring};
use crate::config::TerminalsConfig;
use crate::error::{Error, Result};
use crate::jobs::exec::TerminalJob;
use crate::jobs::sandbox::{Terminal, TerminalSize};
use crate::util::time::{now_unix, rfc3339};

/// What a session is, fixed at its start.
pub(super) struct Identity {
    pub id: String,
    pub owner: String,
    pub creator: String,
    pub kind: String,
    pub program_id: Option<String>,
    pub argv: Vec<String>,
    pub profile: String,
    pub shared_write: bool,
    pub created_at: i64,
}

/// How a session ended.
#[derive(Debug, Clone, Serialize)]
pub struct Ended {
    /// Unix seconds.
    pub at: i64,
    pub reason: String,
    pub exit_code: Option<i64>,
    pub signal: Option<String>,
    /// What went wrong in the sandbox, if something did.
    pub message: Option<String>,
    pub recording_bytes: u64,
    pub recording_truncated: bool,
}

/// What changes while a session runs.
struct Live {
    size: TerminalSize,
    /// Input, attach or detach (for the idle timeout and `last_activity`).
    last_activity: Instant,
    last_activity_unix: i64,
    attached: usize,
    /// The attachment that may type (when writing is not shared).
    writer: Option<u64>,
    next_client: u64,
    bytes_in: u64,
    bytes_out: u64,
    /// The input-rate bucket: bytes that may still be typed, and when it was last filled.
    input_tokens: f64,
    input_at: Instant,
    ended_at: Option<Instant>,
    recording_bytes: u64,
}

/// A running (or lately ended) session. Shared by its task, its clients and the registry.
pub struct Session {
    pub(super) ident: Identity,
    term: Arc<Terminal>,
    /// One input at a time, so two clients' bytes never interleave.
    input_lock: tokio::sync::Mutex<()>,
    ring: Mutex<Ring>,
    /// The ring's end offset, for readers waiting for output.
    out_tx: watch::Sender<u64>,
    end_tx: watch::Sender<Option<Ended>>,
    /// Why the session is to end (set once).
    kill_tx: watch::Sender<Option<String>>,
    /// The size clients set, for the recording's resize events.
    size_tx: watch::Sender<TerminalSize>,
    live: Mutex<Live>,
    input_rate: f64,
    max_message: usize,
    output_rate: f64,
    idle: Duration,
    lifetime: Duration,
    deadline: Instant,
}

/// How long typed input may wait for room in the terminal's input queue (a job that does
/// not read its terminal) before the sender is told so.
const INPUT_WAIT: Duration = Duration::from_secs(5);

/// How long the terminal may stay open after the job's helper is gone (its last output).
const EOF_WAIT: Duration = Duration::from_secs(2);

impl Session {
    pub(super) fn new(
        ident: Identity,
        term: Arc<Terminal>,
        size: TerminalSize,
        cfg: &TerminalsConfig,
        idle: Duration,
        lifetime: Duration,
    ) -> Session {
        let now = Instant::now();
        let input_rate = cfg.input_rate.bytes() as f64;
        Session {
            ident,
            term,
            input_lock: tokio::sync::Mutex::new(()),
            ring: Mutex::new(Ring::new(
                usize::try_from(cfg.scrollback_bytes.bytes()).unwrap_or(usize::MAX),
            )),
            out_tx: watch::channel(0).0,
            end_tx: watch::channel(None).0,
            kill_tx: watch::channel(None).0,
            size_tx: watch::channel(size).0,
            live: Mutex::new(Live {
                size,
                last_activity: now,
                last_activity_unix: now_unix(),
                attached: 0,
                writer: None,
                next_client: 1,
                bytes_in: 0,
                bytes_out: 0,
                input_tokens: input_rate,
                input_at: now,
                ended_at: None,
                recording_bytes: 0,
            }),
            input_rate,
            max_message: usize::try_from(cfg.max_message_size.bytes()).unwrap_or(usize::MAX),
            output_rate: cfg.output_rate.bytes() as f64,
            idle,
            lifetime,
            deadline: now + lifetime,
        }
    }

    fn live(&self) -> std::sync::MutexGuard<'_, Live> {
        match self.live.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        match self.ring.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    pub fn id(&self) -> &str {
        &self.ident.id
    }

    pub(super) fn owner(&self) -> &str {
        &self.ident.owner
    }

    pub fn is_running(&self) -> bool {
        self.end_tx.borrow().is_none()
    }

    pub(super) fn ended_before(&self, ago: Duration) -> bool {
        self.ended_ago().is_some_and(|t| t >= ago)
    }

    /// How long ago the session ended, if it has.
    pub(super) fn ended_ago(&self) -> Option<Duration> {
        self.live().ended_at.map(|t| t.elapsed())
    }

    pub fn size(&self) -> TerminalSize {
        self.live().size
    }

    /// (bytes typed, bytes the job wrote).
    pub fn bytes(&self) -> (u64, u64) {
        let l = self.live();
        (l.bytes_in, l.bytes_out)
    }

    /// Asks the session's task to end the job, for `reason` (the first reason given wins).
    pub fn kill(&self, reason: &str) {
        self.kill_tx.send_if_modified(|k| {
            if k.is_none() {
                *k = Some(reason.to_owned());
                true
            } else {
                false
            }
        });
    }

    /// Resolves once the session has ended and its row says so.
    pub async fn wait_ended(&self) {
        let mut rx = self.end_tx.subscribe();
        let _ = rx.wait_for(Option::is_some).await;
    }

    /// How it ended, once it has.
    pub fn ended(&self) -> Option<Ended> {
        self.end_tx.borrow().clone()
    }

    /// The ring's end offset changes.
    pub fn subscribe_output(&self) -> watch::Receiver<u64> {
        self.out_tx.subscribe()
    }

    /// The end, when it comes.
    pub fn subscribe_end(&self) -> watch::Receiver<Option<Ended>> {
        self.end_tx.subscribe()
    }

    /// Up to `max` bytes of output from offset `since`.
    pub fn read(&self, since: u64, max: usize) -> Read {
        self.ring().read(since, max)
    }

    /// The offset after the last byte of output.
    pub fn end_offset(&self) -> u64 {
        self.ring().end()
    }

    /// Waits until there is output after `since`, the session has ended, or `until`.
    pub async fn wait_output(&self, since: u64, until: Instant) {
        let mut out = self.subscribe_output();
        let mut end = self.subscribe_end();
        let more = out.wait_for(|e| *e > since);
        let over = end.wait_for(Option::is_some);
        tokio::select! {
            _ = more => {}
            _ = over => {}
            _ = tokio::time::sleep_until(until) => {}
        }
    }

    /// A client attaches; it may type if writing is shared, or if `want_write` and nobody
    /// else holds the keyboard.
    pub fn attach(self: &Arc<Session>, want_write: bool) -> Attachment {
        let mut l = self.live();
        let client = l.next_client;
        l.next_client += 1;
        l.attached += 1;
        l.last_activity = Instant::now();
        l.last_activity_unix = now_unix();
        let writer = self.ident.shared_write
            || (want_write && l.writer.is_none() && {
                l.writer = Some(client);
                true
            });
        Attachment {
            session: self.clone(),
            client,
            writer,
            wanted_write: want_write,
        }
    }

    fn detach(&self, client: u64) {
        let mut l = self.live();
        l.attached = l.attached.saturating_sub(1);
        if l.writer == Some(client) {
            l.writer = None;
        }
        l.last_activity = Instant::now();
        l.last_activity_unix = now_unix();
    }

    /// Types `bytes` into the terminal, as client `from` (an attachment) or over HTTP (`None`:
    /// allowed unless an attached client holds the keyboard). Refused past the message size,
    /// the input rate, or when the job does not take its input for `INPUT_WAIT`.
    pub async fn input(&self, bytes: &[u8], from: Option<&Attachment>) -> Result<()> {
        if !self.is_running() {
            return Err(Error::Conflict(format!(
                "terminal session {} has ended",
                self.ident.id
            )));
        }
        if bytes.len() > self.max_message {
            return Err(Error::TooLarge(format!(
                "input of {} bytes is larger than terminals.max-message-size ({} bytes)",
                bytes.len(),
                self.max_message
            )));
        }
        {
            let mut l = self.live();
            match from {
                Some(a) if !a.writer => {
                    // Say which of the two it is: a watcher that never asked to type, or one
                    // that asked while another client held the keyboard.
                    let why = if a.wanted_write {
                        "another client holds this session's keyboard (ask for shared_write when creating it)"
                    } else {
                        "this client attached to watch: attach with ?write=true to type"
                    };
                    return Err(Error::Conflict(why.into()));
                }
                None if !self.ident.shared_write && l.writer.is_some() => {
                    return Err(Error::Conflict(
                        "an attached client holds this session's keyboard".into(),
                    ));
                }
                _ => {}
            }
            let now = Instant::now();
            let dt = now.duration_since(l.input_at).as_secs_f64();
            l.input_tokens = (l.input_tokens + dt * self.input_rate).min(self.input_rate);
            l.input_at = now;
            let n = bytes.len() as f64;
            if n > l.input_tokens {
                return Err(Error::Busy(format!(
                    "input faster than terminals.input-rate ({} bytes/s)",
                    self.input_rate as u64
                )));
            }
            l.input_tokens -= n;
            l.bytes_in += bytes.len() as u64;
            l.last_activity = now;
            l.last_activity_unix = now_unix();
        }
        let write = async {
            let _one = self.input_lock.lock().await;
            self.term.write_all(bytes).await
        };
        match tokio::time::timeout(INPUT_WAIT, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Error::Conflict(format!(
                "terminal session {} has ended",
                self.ident.id
            ))),
            Err(_) => Err(Error::Unavailable(
                "the terminal's input queue is full: the job is not reading its input".into(),
            )),
        }
    }

    /// Sets the terminal's size (the job gets SIGWINCH).
    pub fn resize(&self, size: TerminalSize) -> Result<()> {
        if !self.is_running() {
            return Err(Error::Conflict(format!(
                "terminal session {} has ended",
                self.ident.id
            )));
        }
        self.term.resize(size)?;
        self.live().size = size;
        self.size_tx.send_replace(size);
        Ok(())
    }

    /// Sends `INT`, `QUIT` or `TSTP` (with or without `SIG`) to the terminal's foreground
    /// process group, as Ctrl-C, Ctrl-\ and Ctrl-Z would.
    pub fn signal(&self, name: &str) -> Result<()> {
        let sig = match name.trim_start_matches("SIG") {
            "INT" => libc::SIGINT,
            "QUIT" => libc::SIGQUIT,
            "TSTP" => libc::SIGTSTP,
            _ => {
                return Err(Error::Invalid(format!(
                    "a terminal takes the signals INT, QUIT and TSTP, not {name:?}; DELETE ends the session"
                )));
            }
        };
        if !self.is_running() {
            return Err(Error::Conflict(format!(
                "terminal session {} has ended",
                self.ident.id
            )));
        }
        self.term.signal(sig)
    }

    fn idle_expired(&self) -> bool {
        let l = self.live();
        l.attached == 0 && l.last_activity.elapsed() >= self.idle
    }

    fn push_output(&self, bytes: &[u8]) {
        let end = {
            let mut r = self.ring();
            r.push(bytes);
            r.end()
        };
        self.live().bytes_out += bytes.len() as u64;
        self.out_tx.send_replace(end);
    }

    pub fn info(&self) -> super::Info {
        let ended = self.ended();
        let l = self.live();
        let running = ended.is_none();
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        super::Info {
            id: self.ident.id.clone(),
            state: if running { "running" } else { "ended" }.into(),
            kind: self.ident.kind.clone(),
            program_id: self.ident.program_id.clone(),
            argv: self.ident.argv.clone(),
            profile: self.ident.profile.clone(),
            creator: self.ident.creator.clone(),
            cols: l.size.cols,
            rows: l.size.rows,
            created_at: rfc3339(self.ident.created_at),
            last_activity: rfc3339(ended.as_ref().map_or(l.last_activity_unix, |e| e.at)),
            ended_at: ended.as_ref().map(|e| rfc3339(e.at)),
            end_reason: ended.as_ref().map(|e| e.reason.clone()),
            exit_code: ended.as_ref().and_then(|e| e.exit_code),
            signal: ended.as_ref().and_then(|e| e.signal.clone()),
            bytes_in: l.bytes_in,
            bytes_out: l.bytes_out,
            attached: l.attached,
            shared_write: self.ident.shared_write,
            idle_timeout_s: running.then_some(self.idle.as_secs()),
            expires_at: running
                .then(|| rfc3339(now_unix().saturating_add(remaining.as_secs() as i64))),
            recording_bytes: ended
                .as_ref()
                .map_or(l.recording_bytes, |e| e.recording_bytes),
            recording_truncated: ended.as_ref().is_some_and(|e| e.recording_truncated),
        }
    }

    /// The lifetime the session was given.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }
}

/// A client attached to a session (a WebSocket); detaches when dropped.
pub struct Attachment {
    session: Arc<Session>,
    client: u64,
    /// Whether this client may type.
    pub writer: bool,
    /// Whether it asked to (`?write=true`).
    wanted_write: bool,
}

impl Attachment {
    pub fn session(&self) -> &Arc<Session> {
        &self.session
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        self.session.detach(self.client);
    }
}

/// The session's task: reads the terminal into the ring and the recording within the output
/// rate, and ends the job when it exits, is deleted, idles out, reaches its lifetime or the
/// daemon stops. Then the job is killed and waited for, the recording closed, the row
/// written, and the end announced to every client.
/// What the session's origin asked to keep while it runs (see `Spec::hold`).
pub(super) struct Origin {
    /// Ends the session when notified (its program deleted with `?force=true`).
    pub cancel: Option<Arc<tokio::sync::Notify>>,
    /// Dropped when the session has ended.
    pub hold: Option<Arc<dyn std::any::Any + Send + Sync>>,
}

pub(super) async fn drive(
    s: Arc<Session>,
    mut job: TerminalJob,
    mut rec: Option<Recording>,
    svc: Terminals,
    origin: Origin,
) {
    let floor = svc.inner.floor.clone();
    let mut buf = vec![0u8; 16 << 10];
    let mut kill_rx = s.kill_tx.subscribe();
    let mut size_rx = s.size_tx.subscribe();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The output-rate bucket: bytes that may be read now, refilled at the rate, at most one
    // second's worth.
    let rate = s.output_rate;
    let mut budget = rate;
    let mut budget_at = Instant::now();
    let mut helper_gone: Option<Instant> = None;
    let (reason, kill) = loop {
        let now = Instant::now();
        budget = (budget + rate * now.duration_since(budget_at).as_secs_f64()).min(rate);
        budget_at = now;
        // Past the rate, wait for a tenth of a second's worth rather than for one byte, so a
        // flooding job costs a few wakeups a second, not one per byte read.
        let chunk = (rate / 10.0).clamp(1.0, buf.len() as f64);
        let throttled = budget < chunk;
        let wake = now + Duration::from_secs_f64(((chunk - budget) / rate).max(0.001));
        let max = (budget.max(1.0) as usize).min(buf.len());
        let eof_by = helper_gone.map_or(s.deadline, |t| t + EOF_WAIT);
        tokio::select! {
            r = kill_rx.wait_for(Option::is_some) => {
                let why = r.ok().and_then(|k| k.clone()).unwrap_or_else(|| "deleted".into());
                break (why, true);
            }
            _ = tokio::time::sleep_until(s.deadline) => break ("lifetime".into(), true),
            () = async { if let Some(c) = &origin.cancel { c.notified().await } }, if origin.cancel.is_some() => {
                break ("program deleted".into(), true);
            }
            _ = tokio::time::sleep_until(eof_by), if helper_gone.is_some() => break ("exited".into(), false),
            _ = tick.tick() => {
                if let Some(r) = &mut rec {
                    r.flush();
                    s.live().recording_bytes = r.size().0;
                }
                if s.idle_expired() {
                    break ("idle timeout".into(), true);
                }
            }
            Ok(()) = size_rx.changed() => {
                let size = *size_rx.borrow_and_update();
                if let Some(r) = &mut rec {
                    r.resize(size.cols, size.rows, &floor);
                }
            }
            _ = tokio::time::sleep_until(wake), if throttled => {}
            n = s.term.read(&mut buf[..max]), if !throttled => match n {
                Ok(0) | Err(_) => break ("exited".into(), false),
                Ok(n) => {
                    budget -= n as f64;
                    s.push_output(&buf[..n]);
                    if let Some(r) = &mut rec {
                        r.output(&buf[..n], &floor);
                    }
                }
            },
            _ = job.exited(), if helper_gone.is_none() => helper_gone = Some(Instant::now()),
        }
    };
    let exit = job.end(kill).await;
    let (recording_bytes, recording_truncated) = rec.map_or((0, false), Recording::finish);
    let (exit_code, signal, message) = match exit {
        Ok(e) => (e.exit_code.map(i64::from), e.signal, e.message),
        Err(e) => {
            tracing::error!(terminal = %s.ident.id, error = %e, "ending a terminal job failed");
            (None, None, Some(e.to_string()))
        }
    };
    let reason = if reason == "exited" && message.is_some() {
        "sandbox error".to_owned()
    } else {
        reason
    };
    let ended = Ended {
        at: now_unix(),
        reason,
        exit_code,
        signal,
        message,
        recording_bytes,
        recording_truncated,
    };
    svc.record_end(&s, &ended).await;
    svc.inner
        .exec
        .metrics()
        .terminal_ended(&super::metric_reason(&ended.reason));
    tracing::info!(terminal = %s.ident.id, reason = %ended.reason, exit_code = ?ended.exit_code, signal = ?ended.signal, "terminal session ended");
    {
        let mut l = s.live();
        l.ended_at = Some(Instant::now());
        l.recording_bytes = recording_bytes;
    }
    s.end_tx.send_replace(Some(ended));
    // Only now may the program be deleted (its run is over).
    drop(origin.hold);
}
