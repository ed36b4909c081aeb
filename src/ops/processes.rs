//! The top processes for `GET /api/v1/processes`: by CPU or by memory, from /proc/<pid>/stat.
//!
//! CPU is a rate, so it needs two readings. Like `top`, the share is measured between this
//! request's reading and the one before it: the last reading is kept, and when it is fresher
//! than [`MAX_AGE`] (a page polling every few seconds) the answer costs one pass over /proc;
//! otherwise (the first request, or one after a long pause) the request reads twice,
//! [`SAMPLE`] apart. The answer says which interval it measured. A share is of one CPU (a
//! process busy on two CPUs shows 200), as `top` and `ps` show it.
//!
//! Command lines can hold secrets: the route needs the admin scope, and only the listed
//! processes' command lines are read at all.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use procfs::Current;
use serde::Serialize;

use super::system::{self, Visibility};
use crate::error::{Error, Result};
use crate::util::time::rfc3339_at;

/// The interval of a request that has no recent reading to compare with.
pub const SAMPLE: Duration = Duration::from_millis(500);
/// A kept reading older than this is not used: the share would be an average over minutes.
pub const MAX_AGE: Duration = Duration::from_secs(30);
/// A kept reading younger than this is waited for until it is this old: fewer clock ticks
/// would not measure much.
pub const MIN_AGE: Duration = Duration::from_millis(200);
/// `limit` when the request gives none, and its bounds.
pub const DEFAULT_LIMIT: usize = 10;
pub const MAX_LIMIT: usize = 100;
/// Command lines are cut to this many characters.
const MAX_COMMAND: usize = 1024;

/// What to order by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SortBy {
    Cpu,
    Memory,
}

impl SortBy {
    pub fn parse(s: Option<&str>) -> Result<SortBy> {
        match s {
            None | Some("cpu") => Ok(SortBy::Cpu),
            Some("memory") => Ok(SortBy::Memory),
            Some(other) => Err(Error::Invalid(format!(
                "sort must be \"cpu\" or \"memory\", not {other:?}"
            ))),
        }
    }
}

/// Checks `limit`: 1 to [`MAX_LIMIT`], [`DEFAULT_LIMIT`] when absent.
pub fn parse_limit(limit: Option<&str>) -> Result<usize> {
    let Some(s) = limit else {
        return Ok(DEFAULT_LIMIT);
    };
    match s.parse::<usize>() {
        Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        _ => Err(Error::Invalid(format!(
            "limit must be a whole number from 1 to {MAX_LIMIT}, not {s:?}"
        ))),
    }
}

/// The answer of `GET /api/v1/processes`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Top {
    pub sort: SortBy,
    /// How `cpu_percent` was measured: "interval" (CPU time used between two readings of
    /// /proc, `interval_ms` apart, as `top` does).
    pub cpu_basis: &'static str,
    pub interval_ms: u64,
    /// Processes the daemon can see (not only those listed).
    pub total: usize,
    /// The host's memory, for `memory_percent`.
    pub memory_total_bytes: u64,
    /// Whether `total` and the list cover the whole host or only the daemon's own user.
    pub visibility: Visibility,
    /// At most `limit`, highest first.
    pub items: Vec<ProcessView>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProcessView {
    pub pid: i32,
    pub ppid: i32,
    /// The user name of its real uid, or the uid as a number when no name is known.
    pub user: String,
    pub uid: Option<u32>,
    /// The command's name (`comm`, at most 15 bytes).
    pub name: String,
    /// The command line, arguments joined by spaces, cut to 1024 characters; `[name]` for a
    /// kernel thread (which has none).
    pub command: String,
    /// R running, S sleeping, D disk sleep, Z zombie, T stopped, t traced, I idle, X dead.
    pub state: String,
    /// Share of one CPU over the interval (can pass 100 on several CPUs).
    pub cpu_percent: f64,
    pub rss_bytes: u64,
    /// rss / the host's memory.
    pub memory_percent: f64,
    pub threads: i64,
    /// RFC 3339 UTC.
    pub started_at: String,
}

/// One process in one reading.
#[derive(Debug, Clone)]
struct Entry {
    pid: i32,
    ppid: i32,
    comm: String,
    state: char,
    /// utime + stime, clock ticks.
    ticks: u64,
    /// Since boot, clock ticks: with the pid, what tells a process from a later one.
    start: u64,
    rss_pages: u64,
    threads: i64,
}

/// CPU ticks used so far, by (pid, start time).
type Ticks = HashMap<(i32, u64), u64>;

struct Reading {
    at: Instant,
    entries: Ticks,
}

/// Keeps the last reading between requests.
#[derive(Default)]
pub struct Processes {
    last: Mutex<Option<Reading>>,
}

fn read_all() -> Vec<Entry> {
    let Ok(all) = procfs::process::all_processes() else {
        return Vec::new();
    };
    all.filter_map(|p| {
        // A process that ends while we read is simply left out.
        let stat = p.ok()?.stat().ok()?;
        Some(Entry {
            pid: stat.pid,
            ppid: stat.ppid,
            comm: stat.comm,
            state: stat.state,
            ticks: stat.utime.saturating_add(stat.stime),
            start: stat.starttime,
            rss_pages: stat.rss,
            threads: stat.num_threads,
        })
    })
    .collect()
}

fn ticks(entries: &[Entry]) -> Ticks {
    entries
        .iter()
        .map(|e| ((e.pid, e.start), e.ticks))
        .collect()
}

impl Processes {
    /// The kept reading to compare with, if it is usable now: when it was taken, and the
    /// CPU ticks of each process then.
    /// One younger than [`MIN_AGE`] is used after waiting until it is that old.
    fn previous(&self, now: Instant) -> Option<(Instant, Ticks)> {
        let (at, entries) = {
            let guard = self.last.lock().ok()?;
            let r = guard.as_ref()?;
            (r.at, r.entries.clone())
        };
        let age = now.checked_duration_since(at)?;
        if age > MAX_AGE {
            return None;
        }
        if age < MIN_AGE {
            std::thread::sleep(MIN_AGE - age);
        }
        Some((at, entries))
    }

    fn keep(&self, at: Instant, entries: &[Entry]) {
        if let Ok(mut g) = self.last.lock() {
            let newer = g.as_ref().is_none_or(|r| r.at < at);
            if newer {
                *g = Some(Reading {
                    at,
                    entries: ticks(entries),
                });
            }
        }
    }

    /// The top `limit` by `sort`. Blocking (reads /proc, may sleep [`SAMPLE`]): call it off
    /// the async runtime.
    pub fn top(&self, sort: SortBy, limit: usize) -> Result<Top> {
        let (before_at, before) = match self.previous(Instant::now()) {
            Some(p) => p,
            None => {
                let at = Instant::now();
                let entries = read_all();
                self.keep(at, &entries);
                std::thread::sleep(SAMPLE);
                (at, ticks(&entries))
            }
        };
        let at = Instant::now();
        let entries = read_all();
        self.keep(at, &entries);
        let interval = at.saturating_duration_since(before_at);
        let mem = procfs::Meminfo::current()
            .map_err(|e| Error::Internal(format!("/proc/meminfo: {e}")))?;
        let memory_total = mem.mem_total;
        let boot = system::boot_time()?;
        let tps = procfs::ticks_per_second().max(1);
        let page = procfs::page_size();
        let secs = interval.as_secs_f64().max(0.001);
        let total = entries.len();
        let mut scored: Vec<(f64, u64, Entry)> = entries
            .into_iter()
            .map(|e| {
                let used = match before.get(&(e.pid, e.start)) {
                    Some(&t) => e.ticks.saturating_sub(t),
                    // Not in the earlier reading: started since, all its time is new.
                    None => e.ticks,
                };
                let cpu = 100.0 * used as f64 / tps as f64 / secs;
                (cpu, e.rss_pages.saturating_mul(page), e)
            })
            .collect();
        match sort {
            SortBy::Cpu => scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.1.cmp(&a.1))),
            SortBy::Memory => scored.sort_by(|a, b| b.1.cmp(&a.1).then(b.0.total_cmp(&a.0))),
        }
        scored.truncate(limit);
        let mut users = HashMap::new();
        let items = scored
            .into_iter()
            .map(|(cpu, rss, e)| view(e, cpu, rss, memory_total, boot, tps, &mut users))
            .collect();
        Ok(Top {
            sort,
            cpu_basis: "interval",
            interval_ms: u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
            total,
            memory_total_bytes: memory_total,
            visibility: system::visibility(),
            items,
        })
    }
}

fn view(
    e: Entry,
    cpu: f64,
    rss: u64,
    memory_total: u64,
    boot: std::time::SystemTime,
    tps: u64,
    users: &mut HashMap<u32, String>,
) -> ProcessView {
    let proc = procfs::process::Process::new(e.pid).ok();
    let uid = proc.as_ref().and_then(|p| p.uid().ok());
    let user = match uid {
        Some(uid) => users
            .entry(uid)
            .or_insert_with(|| {
                nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                    .ok()
                    .flatten()
                    .map(|u| u.name)
                    .unwrap_or_else(|| uid.to_string())
            })
            .clone(),
        None => "?".into(),
    };
    let args = proc
        .as_ref()
        .and_then(|p| p.cmdline().ok())
        .unwrap_or_default();
    let command = if args.is_empty() {
        format!("[{}]", e.comm)
    } else {
        cut(&args.join(" "), MAX_COMMAND)
    };
    let round1 = |v: f64| (v * 10.0).round() / 10.0;
    ProcessView {
        pid: e.pid,
        ppid: e.ppid,
        user,
        uid,
        name: e.comm,
        command,
        state: e.state.to_string(),
        cpu_percent: round1(cpu),
        rss_bytes: rss,
        memory_percent: if memory_total > 0 {
            (1000.0 * rss as f64 / memory_total as f64).round() / 10.0
        } else {
            0.0
        },
        threads: e.threads,
        started_at: rfc3339_at(boot + Duration::from_millis(e.start.saturating_mul(1000) / tps)),
    }
}

/// `s` cut to at most `max` characters, with "…" when cut.
fn cut(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn limit_and_sort_are_checked() {
        assert_eq!(parse_limit(None).unwrap(), DEFAULT_LIMIT);
        assert_eq!(parse_limit(Some("1")).unwrap(), 1);
        assert_eq!(parse_limit(Some("100")).unwrap(), 100);
        for bad in ["0", "101", "-1", "ten", ""] {
            let e = parse_limit(Some(bad)).unwrap_err().to_string();
            assert!(e.contains("limit must be"), "{bad}: {e}");
        }
        assert_eq!(SortBy::parse(None).unwrap(), SortBy::Cpu);
        assert_eq!(SortBy::parse(Some("memory")).unwrap(), SortBy::Memory);
        assert!(
            SortBy::parse(Some("rss"))
                .unwrap_err()
                .to_string()
                .contains("\"rss\"")
        );
    }

    #[test]
    fn long_command_lines_are_cut_on_a_character_boundary() {
        assert_eq!(cut("abc", 3), "abc");
        assert_eq!(cut("abcd", 3), "abc…");
        assert_eq!(cut("ééééé", 2), "éé…");
    }

    #[test]
    fn a_busy_child_shows_cpu_and_this_process_shows_its_memory() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .unwrap();
        let procs = Processes::default();
        let top = procs.top(SortBy::Cpu, MAX_LIMIT);
        let _ = child.kill();
        let _ = child.wait();
        let top = top.unwrap();
        assert_eq!(top.cpu_basis, "interval");
        assert!(top.interval_ms >= MIN_AGE.as_millis() as u64, "{top:?}");
        let pid = i32::try_from(child.id()).unwrap();
        let busy = top.items.iter().find(|p| p.pid == pid);
        let busy = busy.unwrap_or_else(|| panic!("the busy child {pid} is not listed: {top:?}"));
        assert!(busy.cpu_percent > 0.0, "{busy:?}");
        assert!(
            top.items
                .windows(2)
                .all(|w| w[0].cpu_percent >= w[1].cpu_percent)
        );

        let mem = procs.top(SortBy::Memory, MAX_LIMIT).unwrap();
        assert!(
            mem.items
                .windows(2)
                .all(|w| w[0].rss_bytes >= w[1].rss_bytes)
        );
        assert!(mem.items.iter().all(|p| p.memory_percent <= 100.0));
    }
}
