//! Executions in progress: each queued or running job's entry, from its submission until its
//! record is written. An entry is what its owner reaches while the job runs: its state, the
//! output it has produced so far (what will be kept with its record, bounded by
//! `exec.keep-output-size`) for the output stream to replay and follow, and the stop that
//! cancels it (or interrupts it at daemon stop). No HTTP here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::watch;

use crate::jobs::exec::{Record, Status};

/// Who is asking about an execution or a terminal session: the owner key of the token behind
/// the request (`token:<id>`, or `actor:<name>` for local admin) and whether they may see
/// everyone's.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub owner: String,
    pub admin: bool,
}

/// Where an execution is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Queued,
    Running,
    Finished,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Running => "running",
            State::Finished => "finished",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        match s {
            "queued" => Some(State::Queued),
            "running" => Some(State::Running),
            "finished" => Some(State::Finished),
            _ => None,
        }
    }
}

/// Why an execution is stopped before its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Its owner (or admin) cancelled it.
    Cancelled,
    /// The daemon is stopping.
    Interrupted,
}

impl Stop {
    pub fn status(self) -> Status {
        match self {
            Stop::Cancelled => Status::Cancelled,
            Stop::Interrupted => Status::Interrupted,
        }
    }
}

/// One piece of output, as the job wrote it.
#[derive(Debug, Clone)]
pub struct Piece {
    pub stderr: bool,
    pub bytes: Bytes,
}

/// The output kept so far and, once written, the final record.
struct Log {
    pieces: Vec<Piece>,
    kept: u64,
    cap: u64,
    /// Output came past `cap` (it is not kept; the record's byte counts say how much came).
    cut: bool,
    done: Option<Record>,
}

/// An execution from its submission until its record is written.
pub struct Live {
    pub id: String,
    owner: String,
    record: Mutex<Record>,
    log: Mutex<Log>,
    /// Bumped on every change (output, state, end), for followers of the output.
    changed: watch::Sender<u64>,
    stop: watch::Sender<Option<Stop>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl Live {
    /// A queued execution described by `record`, owned by `owner`, keeping up to `cap` bytes
    /// of output.
    pub fn new(record: Record, owner: String, cap: u64) -> Arc<Live> {
        Arc::new(Live {
            id: record.id.clone(),
            owner,
            record: Mutex::new(record),
            log: Mutex::new(Log {
                pieces: Vec::new(),
                kept: 0,
                cap,
                cut: false,
                done: None,
            }),
            changed: watch::channel(0).0,
            stop: watch::channel(None).0,
        })
    }

    fn visible_to(&self, viewer: &Viewer) -> bool {
        viewer.admin || self.owner == viewer.owner
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The record as it stands (state, and once running its start).
    pub fn record(&self) -> Record {
        lock(&self.record).clone()
    }

    /// The job has its slot and starts now.
    pub fn set_running(&self, started_at: String) {
        {
            let mut r = lock(&self.record);
            r.state = State::Running.as_str().to_owned();
            r.started_at = started_at;
        }
        self.bump();
    }

    /// Output as the job wrote it: kept while the total stays within the cap.
    pub fn push(&self, stderr: bool, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        {
            let mut log = lock(&self.log);
            let room = log.cap.saturating_sub(log.kept);
            let take = bytes.len().min(usize::try_from(room).unwrap_or(usize::MAX));
            if take < bytes.len() {
                log.cut = true;
            }
            if take == 0 {
                return;
            }
            log.kept += take as u64;
            log.pieces.push(Piece {
                stderr,
                bytes: Bytes::copy_from_slice(&bytes[..take]),
            });
        }
        self.bump();
    }

    /// The pieces from the `next`th on and, once the execution is over, its final record.
    pub fn read_from(&self, next: usize) -> (Vec<Piece>, Option<Record>) {
        let log = lock(&self.log);
        (
            log.pieces
                .get(next..)
                .map(<[Piece]>::to_vec)
                .unwrap_or_default(),
            log.done.clone(),
        )
    }

    /// What is kept so far: (stdout, stderr, whether output came past the cap).
    pub fn kept(&self) -> (Vec<u8>, Vec<u8>, bool) {
        let log = lock(&self.log);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        for p in &log.pieces {
            if p.stderr {
                err.extend_from_slice(&p.bytes);
            } else {
                out.extend_from_slice(&p.bytes);
            }
        }
        (out, err, log.cut)
    }

    /// Wakes whoever follows the output on every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Asks the execution to stop; false when it was already asked.
    pub fn stop(&self, why: Stop) -> bool {
        self.stop.send_if_modified(|s| {
            if s.is_none() {
                *s = Some(why);
                true
            } else {
                false
            }
        })
    }

    /// Resolves once the execution is asked to stop, with why.
    pub async fn stopped(&self) -> Stop {
        let mut rx = self.stop.subscribe();
        loop {
            if let Some(why) = *rx.borrow_and_update() {
                return why;
            }
            // The sender lives as long as `self`: this never errs while we wait on it.
            if rx.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// The record is written: followers get it and end.
    pub fn finish(&self, record: Record) {
        *lock(&self.record) = record.clone();
        lock(&self.log).done = Some(record);
        self.bump();
    }
}

/// The executions in progress, by id.
#[derive(Default)]
pub struct Registry {
    live: Mutex<HashMap<String, Arc<Live>>>,
    /// Set at daemon stop: nothing new is taken.
    closed: AtomicBool,
}

impl Registry {
    /// Adds an execution; refused once the daemon is stopping.
    pub fn insert(&self, live: Arc<Live>) -> crate::error::Result<()> {
        let mut map = lock(&self.live);
        if self.closed.load(Ordering::SeqCst) {
            return Err(crate::error::Error::Unavailable(
                "the daemon is stopping".into(),
            ));
        }
        map.insert(live.id.clone(), live);
        Ok(())
    }

    pub fn remove(&self, id: &str) {
        lock(&self.live).remove(id);
    }

    /// The execution `id` if it is in progress and `viewer` may see it.
    pub fn get(&self, id: &str, viewer: &Viewer) -> Option<Arc<Live>> {
        lock(&self.live)
            .get(id)
            .filter(|l| l.visible_to(viewer))
            .cloned()
    }

    /// The execution `id` if it is in progress, whoever owns it.
    pub fn get_any(&self, id: &str) -> Option<Arc<Live>> {
        lock(&self.live).get(id).cloned()
    }

    pub fn len(&self) -> usize {
        lock(&self.live).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes nothing new and asks every execution in progress to stop with `why`.
    pub fn close(&self, why: Stop) -> usize {
        let all: Vec<Arc<Live>> = {
            let map = lock(&self.live);
            self.closed.store(true, Ordering::SeqCst);
            map.values().cloned().collect()
        };
        for l in &all {
            l.stop(why);
        }
        all.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> Record {
        Record {
            id: id.into(),
            state: "queued".into(),
            ..Record::default()
        }
    }

    #[test]
    fn output_is_kept_up_to_the_cap_in_order_and_read_from_any_piece() {
        let l = Live::new(record("a"), "token:t".into(), 10);
        l.push(false, b"abc");
        l.push(true, b"de");
        l.push(false, b"fghijk");
        l.push(true, b"x");
        let (out, err, cut) = l.kept();
        assert_eq!(out, b"abcfghij");
        assert_eq!(err, b"de");
        assert!(cut);
        let (rest, done) = l.read_from(1);
        assert_eq!(rest.len(), 2);
        assert!(rest[0].stderr && &rest[0].bytes[..] == b"de");
        assert!(done.is_none());
        assert!(l.read_from(9).0.is_empty());
    }

    #[test]
    fn only_the_owner_and_admin_see_an_execution() {
        let reg = Registry::default();
        reg.insert(Live::new(record("a"), "token:t1".into(), 0))
            .unwrap();
        let mine = Viewer {
            owner: "token:t1".into(),
            admin: false,
        };
        let other = Viewer {
            owner: "token:t2".into(),
            admin: false,
        };
        let admin = Viewer {
            owner: "token:t3".into(),
            admin: true,
        };
        assert!(reg.get("a", &mine).is_some());
        assert!(reg.get("a", &other).is_none());
        assert!(reg.get("a", &admin).is_some());
        assert!(reg.get("b", &admin).is_none());
    }

    #[tokio::test]
    async fn a_stop_is_seen_once_with_its_reason_and_a_closed_registry_takes_nothing() {
        let reg = Registry::default();
        let l = Live::new(record("a"), String::new(), 0);
        reg.insert(l.clone()).unwrap();
        assert_eq!(reg.close(Stop::Interrupted), 1);
        assert!(!l.stop(Stop::Cancelled));
        assert_eq!(l.stopped().await, Stop::Interrupted);
        assert!(matches!(
            reg.insert(Live::new(record("b"), String::new(), 0)),
            Err(crate::error::Error::Unavailable(_))
        ));
    }
}
