//! The JSON key-value store: the rules for keys and values, versions taken from one store-wide
//! revision, compare-and-set, atomic batches, expiry, and the change log that watches read.
//!
//! Every change runs inside [`Db::write`], so it is on disk before the caller hears of it, and
//! its audit row commits with it. A batch takes one revision; every key it touches gets that
//! revision as its version, and the change log holds one row per touched key: a put's row holds
//! the value, and the key's row points at it (the value is written once). Watchers are woken
//! through a `tokio::sync::watch` channel after each commit, and always read the change log
//! itself (in one read snapshot), so they never miss or reorder a change however the
//! acknowledging tasks are scheduled.

mod cache;
pub mod follow;
mod log;
mod quota;
pub mod watches;

pub use log::newest as newest_changes;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::watch;

use crate::config::{KvConfig, LiveConfig};
use crate::error::{Error, Result};
use crate::store::audit::{self, Caller, Event};
use crate::store::db::Db;
use crate::util::disk::DiskFloor;
use crate::util::paging;
use crate::util::time::now_ms;

/// Longest key, in bytes of UTF-8.
pub const MAX_KEY_BYTES: usize = 1024;
/// Most revisions one read of the change log returns (a watcher catching up reads in pages).
const CHANGE_PAGE_REVISIONS: u64 = 256;
/// Most keys one sweep expires (the rest wait for the next sweep).
const SWEEP_BATCH: usize = 1000;

/// Checks the key rules: 1–1024 bytes of UTF-8, no control characters.
pub fn check_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::InvalidKey(
            "key must not be empty (keys are 1 to 1024 bytes of UTF-8)".into(),
        ));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(Error::InvalidKey(format!(
            "key is {} bytes long; keys are at most {MAX_KEY_BYTES} bytes",
            key.len()
        )));
    }
    if let Some((at, c)) = key.char_indices().find(|(_, c)| c.is_control()) {
        return Err(Error::InvalidKey(format!(
            "key has the control character U+{:04X} at byte {at}; keys must not contain control characters",
            u32::from(c)
        )));
    }
    Ok(())
}

/// Checks a value's size (its JSON text, already known to be valid JSON).
pub fn check_value(key: &str, json: &str, cfg: &KvConfig) -> Result<()> {
    let max = cfg.max_value_size;
    if json.len() as u64 > max.bytes() {
        return Err(Error::TooLarge(format!(
            "the value for key {key:?} is {} bytes; kv.max-value-size is {max}",
            json.len()
        )));
    }
    Ok(())
}

/// Parses a time to live such as `60s` or `5m`.
pub fn parse_ttl(text: &str) -> Result<Duration> {
    let d = humantime::parse_duration(text).map_err(|e| {
        Error::Invalid(format!(
            "ttl {text:?} is not a duration: {e} (write e.g. \"60s\", \"5m\", \"1h\")"
        ))
    })?;
    if d.is_zero() || d > Duration::from_secs(10 * 365 * 86400) {
        return Err(Error::Invalid(format!(
            "ttl must be longer than zero and at most 10 years, got {text:?}"
        )));
    }
    Ok(d)
}

/// Parses a version as clients send it (`7` or `"7"`); `0` means "must not exist".
pub fn parse_version(text: &str) -> Result<Cond> {
    let t = text.trim();
    let t = t.strip_prefix("W/").unwrap_or(t).trim_matches('"');
    if t == "*" {
        return Ok(Cond::Exists);
    }
    match t.parse::<u64>() {
        Ok(0) => Ok(Cond::Absent),
        Ok(n) => Ok(Cond::Version(n)),
        Err(_) => Err(Error::Invalid(format!(
            "version {text:?} is not a version: send one a response gave, such as \"7\""
        ))),
    }
}

/// What must hold for a change to be applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cond {
    /// Nothing (a delete still needs the key to exist).
    Any,
    /// The key exists at exactly this version (`If-Match: "7"`).
    Version(u64),
    /// The key exists, at any version (`If-Match: *`).
    Exists,
    /// The key does not exist (`If-None-Match: *`, `"if_version": "0"`).
    Absent,
}

/// One change asked for.
#[derive(Debug, Clone)]
pub struct Op {
    pub key: String,
    /// The new value's JSON text; `None` deletes the key. Shared with the read cache, which
    /// records it after the commit without a copy.
    pub value: Option<Arc<str>>,
    pub cond: Cond,
    /// The key expires this long after the change (puts only).
    pub ttl: Option<Duration>,
}

/// The result of one applied op.
#[derive(Debug, Clone)]
pub struct Written {
    pub key: String,
    /// The key's new version: the revision of the change (also for a delete).
    pub version: u64,
    /// Whether a put made a key that did not exist.
    pub created: bool,
    /// When a put's key expires (ms since the epoch), if it was given a TTL.
    pub expires_at: Option<i64>,
}

/// An applied change set: its revision and one result per op, in order.
#[derive(Debug, Clone)]
pub struct Applied {
    pub revision: u64,
    pub written: Vec<Written>,
}

/// A live entry.
#[derive(Debug, Clone)]
pub struct Entry {
    pub key: String,
    /// The value's JSON text (`None` when only keys were asked for). Shared with the read
    /// cache: a cached GET copies the value once, into the response.
    pub value: Option<Arc<str>>,
    pub version: u64,
}

/// One page of a listing.
#[derive(Debug, Clone)]
pub struct Page {
    pub items: Vec<Entry>,
    pub next_cursor: Option<String>,
    /// The store's revision when the page was read: watch from here to miss nothing.
    pub revision: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Put,
    Delete,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Put => "put",
            ChangeKind::Delete => "delete",
        }
    }
}

/// One change from the change log.
#[derive(Debug, Clone)]
pub struct Change {
    pub revision: u64,
    pub kind: ChangeKind,
    pub key: String,
    /// The JSON text put (`None` for a delete).
    pub value: Option<String>,
    /// Whether this is the last change of its revision in this read (a resumable point).
    pub last_of_revision: bool,
}

/// Changes read from the log, and the revision the read reached.
#[derive(Debug, Clone)]
pub struct Changes {
    pub changes: Vec<Change>,
    /// Every change up to and including this revision has been returned (or filtered out).
    pub upto: u64,
}

/// What one sweep did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Swept {
    pub expired: usize,
    pub trimmed_to: Option<u64>,
    /// The change log's older generation was emptied (see `log`).
    pub rotated: bool,
}

/// Handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Kv {
    db: Db,
    /// Hot keys in memory; see `cache` for why it can never serve a stale value.
    cache: Arc<cache::Cache>,
    /// Woken after every committed change (value: a committed revision); watchers wait on it.
    wake: Arc<watch::Sender<u64>>,
    /// Keys and value bytes held, against `kv.max-keys` and `kv.max-total-size`.
    usage: Arc<quota::Usage>,
    /// `storage.min-free-disk` for writes that add data (none in tests that do not ask).
    disk: Option<Arc<DiskFloor>>,
}

fn as_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn as_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn precondition(key: &str, cond: Cond, live: Option<i64>) -> Result<()> {
    let ok = match cond {
        Cond::Any => true,
        Cond::Version(n) => live == Some(as_i64(n)),
        Cond::Exists => live.is_some(),
        Cond::Absent => live.is_none(),
    };
    if ok {
        return Ok(());
    }
    let now = match live {
        Some(v) => format!("is at version {v}"),
        None => "does not exist".to_owned(),
    };
    let wanted = match cond {
        Cond::Version(n) => format!("version {n} was required"),
        Cond::Exists => "it must exist".to_owned(),
        Cond::Absent => "it must not exist".to_owned(),
        Cond::Any => String::new(),
    };
    Err(Error::PreconditionFailed(format!(
        "key {key:?} {now}; {wanted}"
    )))
}

/// The number of key rows and the bytes of their values (from each row's `size`: the values
/// themselves are not read). Keys expired but not yet swept count until the sweep.
pub fn key_count_and_bytes(c: &Connection) -> Result<(i64, i64)> {
    Ok(
        c.query_row("SELECT count(*), coalesce(sum(size), 0) FROM kv", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?,
    )
}

/// Applies `ops` in the writer's transaction: all of them at one new revision, or none. Every
/// check comes before the first change, so a refused batch has changed nothing (it runs
/// without a savepoint: `Db::write_prechecked_then`).
fn apply_in(
    c: &Connection,
    ops: &[Op],
    caller: &Caller,
    cfg: &KvConfig,
    usage: &quota::Usage,
) -> Result<Applied> {
    let now = now_ms();
    let mut found = Vec::with_capacity(ops.len());
    // What the batch changes in keys held and value bytes (a key row counts until it is
    // gone, expired or not, as `key_count_and_bytes` counts it).
    let (mut keys, mut bytes) = (0i64, 0i64);
    for op in ops {
        // The row's rowid too: the change below writes it by rowid, without a second search
        // by key (a batch names each key once, so it stays valid).
        let row: Option<(i64, Option<i64>, i64, i64, i64)> = c
            .prepare_cached(
                "SELECT version, expires_at, change, rowid, size FROM kv WHERE key = ?1",
            )?
            .query_row([&op.key], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .optional()?;
        let expired = matches!(row, Some((_, Some(e), _, _, _)) if e <= now);
        let live = row.filter(|_| !expired).map(|(v, _, _, _, _)| v);
        precondition(&op.key, op.cond, live)?;
        if op.value.is_none() && live.is_none() {
            return Err(Error::NotFound(format!("no key {:?}", op.key)));
        }
        let old_size = row.map_or(0, |(_, _, _, _, size)| size);
        match &op.value {
            Some(v) => {
                keys += i64::from(row.is_none());
                bytes += i64::try_from(v.len()).unwrap_or(i64::MAX) - old_size;
            }
            None => {
                keys -= 1;
                bytes -= old_size;
            }
        }
        found.push((expired, live, row.map(|(v, _, ch, id, _)| (v, ch, id))));
    }
    // The last check before the first change.
    usage.admit(c, cfg, keys, bytes)?;
    let head = log::next_revision(c)?;
    let revision = head.revision;
    let mut written = Vec::with_capacity(ops.len());
    for (op, (expired, live, old)) in ops.iter().zip(found) {
        if let Some((version, change, _)) = old {
            log::release(c, version, change, head.compacted)?;
        }
        // The key's row, when it is there and live.
        let mut rowid = old.map(|(_, _, id)| id);
        if expired {
            // Not yet swept: it ends here, and watchers see it go before what replaces it.
            c.prepare_cached("DELETE FROM kv WHERE rowid = ?1")?
                .execute([rowid])?;
            rowid = None;
            log::append(c, &head, now, ChangeKind::Delete.as_str(), &op.key, None)?;
        }
        let mut expires = None;
        let (action, kind) = match &op.value {
            Some(value) => {
                let expires_at = op
                    .ttl
                    .map(|t| now.saturating_add(i64::try_from(t.as_millis()).unwrap_or(i64::MAX)));
                // The value goes into the log only; the key row points at it.
                let put = ChangeKind::Put.as_str();
                let change = log::append(c, &head, now, put, &op.key, Some(value))?;
                let size = i64::try_from(value.len()).unwrap_or(i64::MAX);
                match rowid {
                    Some(id) => c
                        .prepare_cached(
                            "UPDATE kv SET version = ?2, change = ?3, expires_at = ?4, size = ?5
                             WHERE rowid = ?1",
                        )?
                        .execute(params![id, revision, change, expires_at, size])?,
                    None => c
                        .prepare_cached(
                            "INSERT INTO kv(key, version, change, expires_at, size)
                             VALUES (?1, ?2, ?3, ?4, ?5)",
                        )?
                        .execute(params![op.key, revision, change, expires_at, size])?,
                };
                expires = expires_at;
                ("data.put", ChangeKind::Put)
            }
            None => {
                // Checked above: a delete's key is live.
                c.prepare_cached("DELETE FROM kv WHERE rowid = ?1")?
                    .execute([rowid])?;
                log::append(c, &head, now, ChangeKind::Delete.as_str(), &op.key, None)?;
                ("data.delete", ChangeKind::Delete)
            }
        };
        audit::insert(
            c,
            &caller.event(action, &op.key, "ok", format!("version {revision}")),
        )?;
        written.push(Written {
            key: op.key.clone(),
            version: as_u64(revision),
            created: kind == ChangeKind::Put && live.is_none(),
            expires_at: expires,
        });
    }
    Ok(Applied {
        revision: as_u64(revision),
        written,
    })
}

/// Reads the change log after `after` (within one snapshot), filtered by key prefix.
fn changes_in(c: &Connection, after: u64, prefix: &str) -> Result<Changes> {
    let tx = c.unchecked_transaction()?;
    let (revision, compacted): (i64, i64) = tx
        .prepare_cached("SELECT revision, compacted FROM kv_state WHERE id = 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let (revision, compacted) = (as_u64(revision), as_u64(compacted));
    if after < compacted {
        return Err(Error::Gone(format!(
            "changes up to revision {compacted} are no longer kept (kv.history-window, \
             kv.history-max-changes); list the keys again and watch from the revision the list returns"
        )));
    }
    let upto = revision.min(after.saturating_add(CHANGE_PAGE_REVISIONS));
    let rows = log::read_range(&tx, as_i64(after), as_i64(upto))?;
    let mut changes: Vec<Change> = Vec::new();
    for (rev, op, key, value) in rows {
        if !key.starts_with(prefix) {
            continue;
        }
        let kind = if op == "put" {
            ChangeKind::Put
        } else {
            ChangeKind::Delete
        };
        changes.push(Change {
            revision: as_u64(rev),
            kind,
            key,
            value,
            last_of_revision: true,
        });
    }
    for i in 1..changes.len() {
        if changes[i].revision == changes[i - 1].revision {
            changes[i - 1].last_of_revision = false;
        }
    }
    Ok(Changes { changes, upto })
}

/// The revision the change log is trimmed to: changes after it are all kept.
fn compacted(c: &Connection) -> Result<i64> {
    Ok(
        c.prepare_cached("SELECT compacted FROM kv_state WHERE id = 1")?
            .query_row([], |r| r.get(0))?,
    )
}

/// What the sweeper has to do, found with a read: keys due, and the revision to trim the change
/// log to (whole revisions only). Only the changes after `compacted` count: the rows at or
/// below it are the puts that keys still point at.
fn sweep_plan(c: &Connection, cfg: &KvConfig, now: i64) -> Result<(bool, Option<i64>)> {
    let due: bool = c
        .prepare_cached(
            "SELECT EXISTS(SELECT 1 FROM kv WHERE expires_at IS NOT NULL AND expires_at <= ?1)",
        )?
        .query_row([now], |r| r.get(0))?;
    let mut cut: Option<i64> = None;
    let compacted = compacted(c)?;
    let (lo, hi) = log::id_span(c, compacted)?;
    if let (Some(lo), Some(hi)) = (lo, hi) {
        let keep = as_i64(cfg.history_max_changes);
        if hi - lo + 1 > keep {
            cut = log::revision_at_or_before(c, hi - keep)?;
        }
        let window = i64::try_from(cfg.history_window.get().as_millis()).unwrap_or(i64::MAX);
        if let Some(rev) = log::window_cut(c, compacted, now.saturating_sub(window))? {
            cut = Some(cut.map_or(rev, |c| c.max(rev)));
        }
    }
    Ok((due, cut))
}

fn expire_in(c: &Connection, now: i64) -> Result<usize> {
    let keys: Vec<(String, i64, i64)> = c
        .prepare_cached(
            "SELECT key, version, change FROM kv
             WHERE expires_at IS NOT NULL AND expires_at <= ?1 LIMIT ?2",
        )?
        .query_map(params![now, SWEEP_BATCH as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    if keys.is_empty() {
        return Ok(0);
    }
    let head = log::next_revision(c)?;
    let revision = head.revision;
    for (key, version, change) in &keys {
        log::release(c, *version, *change, head.compacted)?;
        c.prepare_cached("DELETE FROM kv WHERE key = ?1")?
            .execute([key])?;
        log::append(c, &head, now, ChangeKind::Delete.as_str(), key, None)?;
        audit::insert(
            c,
            &Event {
                actor: "localhostd".into(),
                action: "data.expire".into(),
                target: key.clone(),
                result: "ok".into(),
                client: "-".into(),
                request_id: String::new(),
                detail: format!("ttl ran out; version {revision}"),
            },
        )?;
    }
    Ok(keys.len())
}

impl Kv {
    /// `cache_bytes`: the read cache's budget (`kv.cache-size`; 0 turns it off).
    pub fn new(db: Db, cache_bytes: u64) -> Kv {
        let (wake, _) = watch::channel(0);
        Kv {
            db,
            cache: Arc::new(cache::Cache::new(cache_bytes)),
            wake: Arc::new(wake),
            usage: Arc::default(),
            disk: None,
        }
    }

    /// Refuses writes that add data while the database's filesystem is below
    /// `storage.min-free-disk` (read from `live` at each check).
    pub fn with_free_disk_floor(mut self, live: Arc<LiveConfig>) -> Kv {
        let dir = self
            .db
            .path()
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default();
        self.disk = Some(Arc::new(DiskFloor::new(live, dir)));
        self
    }

    /// A receiver woken after every committed change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.wake.subscribe()
    }

    fn woke(&self, revision: u64) {
        self.wake.send_if_modified(|v| {
            if revision > *v {
                *v = revision;
                true
            } else {
                false
            }
        });
    }

    /// The store's current revision.
    pub async fn revision(&self) -> Result<u64> {
        self.db
            .read(|c| {
                let r: i64 = c
                    .prepare_cached("SELECT revision FROM kv_state WHERE id = 1")?
                    .query_row([], |r| r.get(0))?;
                Ok(as_u64(r))
            })
            .await
    }

    /// The live entry under `key`, if any.
    pub async fn get(&self, key: &str) -> Result<Option<Entry>> {
        check_key(key)?;
        let now = now_ms();
        match self.cache.get(key, now) {
            cache::Lookup::Live(value, version) => {
                return Ok(Some(Entry {
                    key: key.to_owned(),
                    value: Some(value),
                    version,
                }));
            }
            cache::Lookup::Absent => return Ok(None),
            cache::Lookup::Miss => {}
        }
        let key = key.to_owned();
        let cache = self.cache.clone();
        self.db
            .read(move |c| {
                // One statement, so the store revision and the row come from one snapshot.
                let (snapshot, row) = c
                    .prepare_cached(concat!(
                        "SELECT s.revision, k.version, ",
                        log::value_of_key!(),
                        ", k.expires_at FROM kv_state s LEFT JOIN kv k ON k.key = ?1
                             WHERE s.id = 1"
                    ))?
                    .query_row([&key], |r| {
                        let snapshot = as_u64(r.get::<_, i64>(0)?);
                        let row = match r.get::<_, Option<i64>>(1)? {
                            Some(version) => Some((
                                r.get::<_, Option<String>>(2)?,
                                as_u64(version),
                                r.get::<_, Option<i64>>(3)?,
                            )),
                            None => None,
                        };
                        Ok((snapshot, row))
                    })?;
                let row = match row {
                    Some((Some(value), version, expires_at)) => Some((value, version, expires_at)),
                    Some((None, version, _)) => {
                        return Err(Error::Internal(format!(
                            "key {key:?} (version {version}) has no value row in the change log"
                        )));
                    }
                    None => None,
                };
                let entry = match row {
                    Some((value, version, expires_at)) => {
                        let value: Arc<str> = Arc::from(value);
                        cache.fill(
                            &key,
                            snapshot,
                            version,
                            cache::State::Live {
                                value: value.clone(),
                                expires_at,
                            },
                        );
                        expires_at.is_none_or(|e| e > now).then_some(Entry {
                            key,
                            value: Some(value),
                            version,
                        })
                    }
                    None => {
                        cache.fill(&key, snapshot, snapshot, cache::State::Gone);
                        None
                    }
                };
                Ok(entry)
            })
            .await
    }

    /// Forgets the read cache (after the database was replaced, e.g. by a restore).
    pub fn clear_cache(&self) {
        self.cache.clear();
        self.usage.forget();
    }

    /// Keys and bytes in the read cache.
    pub fn cache_usage(&self) -> (usize, usize) {
        self.cache.usage()
    }

    /// Live entries whose key starts with `prefix`, in key order, `limit` per page.
    pub async fn list(
        &self,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
        keys_only: bool,
    ) -> Result<Page> {
        let after = cursor
            .map(|c| paging::parse_key_cursor(c, 'k'))
            .transpose()?
            .unwrap_or_default();
        let prefix = prefix.to_owned();
        let upper = crate::store::db::prefix_upper(&prefix);
        self.db
            .read(move |c| {
                let tx = c.unchecked_transaction()?;
                let revision: i64 = tx
                    .prepare_cached("SELECT revision FROM kv_state WHERE id = 1")?
                    .query_row([], |r| r.get(0))?;
                // Values from the puts the keys point at.
                let value_col = if keys_only {
                    "NULL"
                } else {
                    log::value_of_key!()
                };
                let bound = if upper.is_some() {
                    "AND k.key < ?5"
                } else {
                    ""
                };
                let sql = format!(
                    "SELECT k.key, {value_col}, k.version FROM kv k
                     WHERE k.key >= ?1 AND k.key > ?2 {bound}
                       AND (k.expires_at IS NULL OR k.expires_at > ?3)
                     ORDER BY k.key LIMIT ?4"
                );
                let mut st = tx.prepare_cached(&sql)?;
                let take = paging::take(limit);
                let map = |r: &rusqlite::Row<'_>| {
                    Ok(Entry {
                        key: r.get(0)?,
                        value: r.get_ref(1)?.as_str_or_null()?.map(Arc::from),
                        version: as_u64(r.get(2)?),
                    })
                };
                let mut items: Vec<Entry> = match &upper {
                    Some(u) => st
                        .query_map(params![prefix, after, now_ms(), take, u], map)?
                        .collect::<rusqlite::Result<_>>()?,
                    None => st
                        .query_map(params![prefix, after, now_ms(), take], map)?
                        .collect::<rusqlite::Result<_>>()?,
                };
                let next_cursor =
                    paging::next_cursor(&mut items, limit, |e| paging::key_cursor('k', &e.key));
                Ok(Page {
                    items,
                    next_cursor,
                    revision: as_u64(revision),
                })
            })
            .await
    }

    /// Applies `ops` atomically at one new revision: all or none. The first op whose condition
    /// fails names its key in the error, and nothing is changed.
    pub async fn apply(&self, ops: Vec<Op>, caller: Caller, cfg: &KvConfig) -> Result<Applied> {
        if ops.is_empty() {
            return Err(Error::Invalid("a batch needs at least one op".into()));
        }
        if ops.len() > cfg.max_batch_ops {
            return Err(Error::Invalid(format!(
                "a batch has {} ops; kv.max-batch-ops is {}",
                ops.len(),
                cfg.max_batch_ops
            )));
        }
        let mut seen = HashSet::with_capacity(ops.len());
        for op in &ops {
            check_key(&op.key)?;
            if let Some(v) = &op.value {
                check_value(&op.key, v, cfg)?;
            }
            if !seen.insert(op.key.as_str()) {
                return Err(Error::Invalid(format!(
                    "key {:?} appears more than once in the batch",
                    op.key
                )));
            }
        }
        let adding: u64 = ops
            .iter()
            .filter_map(|op| op.value.as_ref().map(|v| v.len() as u64))
            .sum();
        if let Some(disk) = &self.disk
            && ops.iter().any(|op| op.value.is_some())
        {
            disk.ensure(adding)?;
        }
        let ops = Arc::new(ops);
        let (ours, cache) = (ops.clone(), self.cache.clone());
        let (cfg, usage) = (cfg.clone(), self.usage.clone());
        let applied = self
            .db
            .write_prechecked_then(
                move |c| apply_in(c, &ours, &caller, &cfg, &usage),
                // On the writer thread, after the commit, before anyone is answered.
                move |applied: &Applied| {
                    for (op, w) in ops.iter().zip(&applied.written) {
                        let state = match &op.value {
                            Some(v) => cache::State::Live {
                                value: v.clone(),
                                expires_at: w.expires_at,
                            },
                            None => cache::State::Gone,
                        };
                        cache.record(&op.key, w.version, state);
                    }
                },
            )
            .await
            .inspect_err(|e| {
                // A refusal came before any change; anything else may have rolled back a
                // group whose usage was already counted: count again from the database.
                if matches!(e, Error::Db(_) | Error::Internal(_) | Error::Unavailable(_)) {
                    self.usage.forget();
                }
            })?;
        self.woke(applied.revision);
        Ok(applied)
    }

    /// Changes after revision `after` whose key starts with `prefix`, a page at a time;
    /// `Gone` when changes after `after` are no longer all kept.
    pub async fn changes(&self, after: u64, prefix: &str) -> Result<Changes> {
        let prefix = prefix.to_owned();
        self.db.read(move |c| changes_in(c, after, &prefix)).await
    }

    /// Deletes expired keys (watchers see a delete), trims the change log to
    /// `kv.history-window` / `kv.history-max-changes`, and empties its older generation once
    /// all of it is trimmed (see `log`). Writes only when there is work.
    pub async fn sweep(&self, cfg: &KvConfig) -> Result<Swept> {
        let now = now_ms();
        let c2 = cfg.clone();
        let (due, cut) = self.db.read(move |c| sweep_plan(c, &c2, now)).await?;
        let mut swept = Swept::default();
        if due {
            swept.expired = self.db.write(move |c| expire_in(c, now)).await?;
            if swept.expired > 0 {
                self.usage.forget();
                let rev = self.revision().await?;
                self.woke(rev);
            }
        }
        if let Some(cut) = cut {
            let to = self.db.write(move |c| log::trim_to(c, cut)).await?;
            swept.trimmed_to = Some(as_u64(to));
        }
        if let Some(plan) = self.db.read(log::rotation_plan).await? {
            swept.rotated = self.db.write(move |c| log::rotate(c, &plan)).await?;
        }
        Ok(swept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> (tempfile::TempDir, Kv) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("t.db"), 2).unwrap();
        (dir, Kv::new(db, 1 << 20))
    }

    fn put(key: &str, json: &str) -> Op {
        Op {
            key: key.into(),
            value: Some(json.into()),
            cond: Cond::Any,
            ttl: None,
        }
    }

    #[test]
    fn key_rules() {
        assert!(check_key("a").is_ok());
        assert!(check_key("a/b/c").is_ok());
        assert!(check_key("ünïcödé/🔑").is_ok());
        assert!(check_key(&"k".repeat(1024)).is_ok());
        for (bad, why) in [
            (String::new(), "empty"),
            ("k".repeat(1025), "at most 1024"),
            ("a\nb".into(), "U+000A"),
            ("a\u{7f}".into(), "U+007F"),
            ("\u{0}".into(), "U+0000"),
        ] {
            match check_key(&bad) {
                Err(Error::InvalidKey(m)) => assert!(m.contains(why), "{m}"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn prefix_ranges_cover_exactly_the_prefix() {
        use crate::store::db::prefix_upper;
        assert_eq!(prefix_upper("ab").as_deref(), Some("ac"));
        assert_eq!(prefix_upper("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_upper("\u{D7FF}").as_deref(), Some("\u{E000}"));
        assert_eq!(prefix_upper(""), None);
        for k in ["ab", "ab/", "ab\u{10FFFF}", "abzz"] {
            assert!(("ab".."ac").contains(&k));
        }
    }

    #[test]
    fn versions_parse() {
        assert_eq!(parse_version("\"7\"").unwrap(), Cond::Version(7));
        assert_eq!(parse_version("7").unwrap(), Cond::Version(7));
        assert_eq!(parse_version("W/\"7\"").unwrap(), Cond::Version(7));
        assert_eq!(parse_version("\"0\"").unwrap(), Cond::Absent);
        assert_eq!(parse_version("*").unwrap(), Cond::Exists);
        assert!(parse_version("seven").is_err());
        assert!(parse_ttl("0s").is_err());
        assert_eq!(parse_ttl("2s").unwrap(), Duration::from_secs(2));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_change_below_the_free_disk_floor_is_refused_and_writes_nothing() {
        let (_d, kv) = open();
        let cfg = KvConfig::default();
        // Positive control: the same put with no floor is stored.
        kv.apply(vec![put("a", "1")], Caller::default(), &cfg)
            .await
            .unwrap();
        let before = kv.revision().await.unwrap();
        let mut floor = crate::config::Config::default();
        floor.storage.min_free_disk = crate::config::ByteSize(u64::MAX);
        let kv = kv.with_free_disk_floor(Arc::new(crate::config::LiveConfig::new(floor)));
        let e = kv
            .apply(vec![put("a", "2"), put("b", "3")], Caller::default(), &cfg)
            .await
            .unwrap_err();
        assert!(
            matches!(e, Error::InsufficientStorage(ref m) if m.contains("storage.min-free-disk")),
            "{e}"
        );
        assert_eq!(kv.revision().await.unwrap(), before);
        assert!(kv.get("b").await.unwrap().is_none());
        assert_eq!(
            kv.get("a").await.unwrap().unwrap().value.as_deref(),
            Some("1")
        );
        let log_rows: i64 = kv
            .db
            .read(|c| {
                Ok(c.query_row(
                    "SELECT (SELECT count(*) FROM kv_log_a) + (SELECT count(*) FROM kv_log_b)",
                    [],
                    |r| r.get(0),
                )?)
            })
            .await
            .unwrap();
        assert_eq!(log_rows, 1, "the change log grew");
        // Deletes are how space is freed: not refused.
        let del = Op {
            value: None,
            ..put("a", "null")
        };
        kv.apply(vec![del], Caller::default(), &cfg).await.unwrap();
        assert!(kv.get("a").await.unwrap().is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn revisions_strictly_increase_and_failed_batches_change_nothing() {
        let (_d, kv) = open();
        let cfg = KvConfig::default();
        let a = kv
            .apply(vec![put("a", "1")], Caller::default(), &cfg)
            .await
            .unwrap();
        let b = kv
            .apply(vec![put("b", "2"), put("c", "3")], Caller::default(), &cfg)
            .await
            .unwrap();
        assert!(b.revision > a.revision);
        assert!(
            b.written
                .iter()
                .all(|w| w.version == b.revision && w.created)
        );
        let bad = kv
            .apply(
                vec![
                    put("d", "4"),
                    Op {
                        cond: Cond::Version(a.revision + 100),
                        ..put("a", "5")
                    },
                ],
                Caller::default(),
                &cfg,
            )
            .await;
        match bad {
            Err(Error::PreconditionFailed(m)) => assert!(m.contains("\"a\""), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(kv.get("d").await.unwrap().is_none(), "nothing of the batch");
        assert_eq!(kv.revision().await.unwrap(), b.revision, "no revision used");
        let c = kv
            .apply(vec![put("a", "6")], Caller::default(), &cfg)
            .await
            .unwrap();
        assert_eq!(c.revision, b.revision + 1);
        let ch = kv.changes(0, "").await.unwrap();
        let revs: Vec<u64> = ch.changes.iter().map(|c| c.revision).collect();
        assert_eq!(revs, vec![1, 2, 2, 3]);
        assert_eq!(
            ch.changes
                .iter()
                .map(|c| c.last_of_revision)
                .collect::<Vec<_>>(),
            vec![true, false, true, true]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn trimming_the_change_log_makes_older_resumes_gone() {
        let (_d, kv) = open();
        let cfg = KvConfig {
            history_max_changes: 3,
            ..KvConfig::default()
        };
        for i in 0..6 {
            kv.apply(vec![put(&format!("k{i}"), "1")], Caller::default(), &cfg)
                .await
                .unwrap();
        }
        let s = kv.sweep(&cfg).await.unwrap();
        assert_eq!(s.trimmed_to, Some(3));
        assert!(matches!(kv.changes(2, "").await, Err(Error::Gone(_))));
        let ch = kv.changes(3, "").await.unwrap();
        assert_eq!(ch.changes.len(), 3);
        assert_eq!(ch.upto, 6);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn trimming_keeps_whole_revisions() {
        let (_d, kv) = open();
        let cfg = KvConfig {
            history_max_changes: 4,
            ..KvConfig::default()
        };
        // Revisions 1..=3 hold one change each, 4 holds three, 5..=7 one each: 9 rows.
        for i in 0..3 {
            kv.apply(vec![put(&format!("a{i}"), "1")], Caller::default(), &cfg)
                .await
                .unwrap();
        }
        kv.apply(
            vec![put("b0", "1"), put("b1", "1"), put("b2", "1")],
            Caller::default(),
            &cfg,
        )
        .await
        .unwrap();
        for i in 0..3 {
            kv.apply(vec![put(&format!("c{i}"), "1")], Caller::default(), &cfg)
                .await
                .unwrap();
        }
        // Keeping 4 of 9 rows cuts at revision 4 (it goes whole: 3 rows stay).
        let s = kv.sweep(&cfg).await.unwrap();
        assert_eq!(s.trimmed_to, Some(4));
        assert!(matches!(kv.changes(3, "").await, Err(Error::Gone(_))));
        let ch = kv.changes(4, "").await.unwrap();
        let revs: Vec<u64> = ch.changes.iter().map(|c| c.revision).collect();
        assert_eq!(revs, vec![5, 6, 7]);
        // Revision 4 went whole (its rows stay only as the values keys point at), and a second
        // sweep has nothing to do.
        let s = kv.sweep(&cfg).await.unwrap();
        assert_eq!(s.trimmed_to, None);
    }

    /// Ids of the rows in each of the log's tables: (kv_log_a, kv_log_b, kv_kept), with
    /// revisions.
    async fn log_rows(kv: &Kv) -> [Vec<(i64, i64)>; 3] {
        kv.db
            .read(|c| {
                let rows = |table: &str| -> rusqlite::Result<Vec<(i64, i64)>> {
                    c.prepare(&format!("SELECT id, revision FROM {table} ORDER BY id"))?
                        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                        .collect()
                };
                Ok([rows("kv_log_a")?, rows("kv_log_b")?, rows("kv_kept")?])
            })
            .await
            .unwrap()
    }

    async fn assert_reads(kv: &Kv, want: &[(&str, Option<(&str, u64)>)]) {
        for cached in [true, false] {
            if !cached {
                kv.clear_cache();
            }
            for (key, w) in want {
                let got = kv.get(key).await.unwrap();
                let got = got
                    .as_ref()
                    .map(|e| (e.value.as_deref().unwrap(), e.version));
                assert_eq!(got, *w, "{key} (cached: {cached})");
            }
        }
        let page = kv.list("", None, 100, false).await.unwrap();
        let listed: Vec<(&str, &str, u64)> = page
            .items
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_deref().unwrap(), e.version))
            .collect();
        let mut expect: Vec<(&str, &str, u64)> = want
            .iter()
            .filter_map(|(k, w)| w.map(|(v, n)| (*k, v, n)))
            .collect();
        expect.sort();
        assert_eq!(listed, expect);
    }

    /// A key's value lives in its put's change-log row. Trimming deletes nothing; once all of
    /// the older generation is trimmed, the puts keys still point at move to kv_kept (same
    /// ids), the generation is emptied and becomes the active one; reads (cache or not) find
    /// every value wherever it is, and a kept put goes when its key moves on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn trimming_keeps_the_values_keys_point_at() {
        let (_d, kv) = open();
        let cfg = KvConfig {
            history_max_changes: 1,
            ..KvConfig::default()
        };
        let o = Caller::default;
        kv.apply(vec![put("old", "\"first\"")], o(), &cfg)
            .await
            .unwrap(); // 1
        for i in 0..5 {
            kv.apply(vec![put("hot", &i.to_string())], o(), &cfg)
                .await
                .unwrap(); // 2..=6
        }
        kv.apply(vec![put("gone", "1")], o(), &cfg).await.unwrap(); // 7
        let del = Op {
            value: None,
            ..put("gone", "0")
        };
        kv.apply(vec![del], o(), &cfg).await.unwrap(); // 8
        let s = kv.sweep(&cfg).await.unwrap();
        assert_eq!(s.trimmed_to, Some(7));
        // Generation b was empty: a starts being the older one, nothing moved or emptied.
        assert!(s.rotated);
        let [a, b, kept] = log_rows(&kv).await;
        assert_eq!(a.len(), 8);
        assert!(b.is_empty() && kept.is_empty());
        assert!(matches!(kv.changes(6, "").await, Err(Error::Gone(_))));
        let ch = kv.changes(7, "").await.unwrap();
        assert_eq!(ch.changes.len(), 1);
        assert_eq!(ch.changes[0].kind, ChangeKind::Delete);
        assert_reads(
            &kv,
            &[
                ("old", Some(("\"first\"", 1))),
                ("hot", Some(("4", 6))),
                ("gone", None),
            ],
        )
        .await;
        // Revision 8 is still history: generation a stays.
        assert!(!kv.sweep(&cfg).await.unwrap().rotated);

        kv.apply(vec![put("hot", "5")], o(), &cfg).await.unwrap(); // 9
        kv.apply(vec![put("new", "true")], o(), &cfg).await.unwrap(); // 10
        let s = kv.sweep(&cfg).await.unwrap();
        assert_eq!(s.trimmed_to, Some(9));
        assert!(s.rotated);
        let [a, b, kept] = log_rows(&kv).await;
        assert!(a.is_empty(), "the older generation emptied");
        assert_eq!(b, vec![(9, 9), (10, 10)]);
        assert_eq!(kept, vec![(1, 1)], "the put 'old' points at, same id");
        assert_eq!(kv.changes(9, "").await.unwrap().changes.len(), 1);
        assert_reads(
            &kv,
            &[
                ("old", Some(("\"first\"", 1))),
                ("hot", Some(("5", 9))),
                ("new", Some(("true", 10))),
            ],
        )
        .await;

        // The next change goes into a, after every id in b; the kept put goes when its key
        // moves on.
        kv.apply(vec![put("old", "2")], o(), &cfg).await.unwrap(); // 11
        let [a, b, kept] = log_rows(&kv).await;
        assert_eq!(a, vec![(11, 11)]);
        assert_eq!(b.len(), 2);
        assert!(kept.is_empty());
        let ch = kv.changes(9, "").await.unwrap();
        let revs: Vec<u64> = ch.changes.iter().map(|c| c.revision).collect();
        assert_eq!(revs, vec![10, 11], "history reads across both generations");
        assert_reads(
            &kv,
            &[
                ("old", Some(("2", 11))),
                ("hot", Some(("5", 9))),
                ("new", Some(("true", 10))),
            ],
        )
        .await;
    }

    /// Many rotations under a mix of puts, batches and deletes: every read matches a model of
    /// the store, every id is unique, and the history after `compacted` is whole. With more
    /// keys than a generation holds (the kept puts found from the generation's rows) and with
    /// fewer (found from the keys).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rotations_keep_every_value_and_the_history_whole() {
        rotations_against_a_model(23, 7).await;
        rotations_against_a_model(3, 40).await;
    }

    async fn rotations_against_a_model(keys: u64, history: u64) {
        let (_d, kv) = open();
        let cfg = KvConfig {
            history_max_changes: history,
            ..KvConfig::default()
        };
        let mut model: std::collections::BTreeMap<String, (String, u64)> = Default::default();
        let mut rotations = 0;
        let mut kept_seen = 0;
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for step in 0..400u64 {
            let key = format!("k{}", next() % keys);
            let ops = match next() % 5 {
                0 if model.contains_key(&key) => vec![Op {
                    value: None,
                    ..put(&key, "0")
                }],
                1 => {
                    let other = format!("k{}", (next() % keys) + 100);
                    vec![put(&key, &step.to_string()), put(&other, "[]")]
                }
                _ => vec![put(&key, &format!("\"v{step}\""))],
            };
            let applied = kv
                .apply(ops.clone(), Caller::default(), &cfg)
                .await
                .unwrap();
            for op in &ops {
                match &op.value {
                    Some(v) => {
                        model.insert(op.key.clone(), (v.to_string(), applied.revision));
                    }
                    None => {
                        model.remove(&op.key);
                    }
                }
            }
            if step % 5 == 4 {
                rotations += usize::from(kv.sweep(&cfg).await.unwrap().rotated);
                let [a, b, kept] = log_rows(&kv).await;
                kept_seen = kept_seen.max(kept.len());
                let mut ids: Vec<i64> = a.iter().chain(&b).chain(&kept).map(|r| r.0).collect();
                let n = ids.len();
                ids.sort_unstable();
                ids.dedup();
                assert_eq!(ids.len(), n, "ids are unique across the tables");
                let compacted: i64 = kv.db.read(compacted).await.unwrap();
                let ch = kv.changes(as_u64(compacted), "").await.unwrap();
                let mut revs: Vec<u64> = ch.changes.iter().map(|c| c.revision).collect();
                revs.dedup();
                let want: Vec<u64> = (as_u64(compacted) + 1..=ch.upto).collect();
                assert_eq!(revs, want, "no gap after compacted {compacted}");
            }
        }
        assert!(rotations > 5, "only {rotations} rotations");
        assert!(kept_seen > 0, "no put was ever kept past its generation");
        kv.clear_cache();
        let page = kv.list("", None, 1000, false).await.unwrap();
        let listed: Vec<(String, String, u64)> = page
            .items
            .iter()
            .map(|e| {
                (
                    e.key.clone(),
                    e.value.as_deref().unwrap().to_owned(),
                    e.version,
                )
            })
            .collect();
        let totals = (
            model.len() as i64,
            model.values().map(|(v, _)| v.len() as i64).sum::<i64>(),
        );
        let want: Vec<(String, String, u64)> =
            model.into_iter().map(|(k, (v, n))| (k, v, n)).collect();
        assert_eq!(listed, want);
        // The totals kept in the key rows match the values they describe.
        assert_eq!(kv.db.read(key_count_and_bytes).await.unwrap(), totals);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_in_one_group_commit_never_pass_max_keys() {
        let (_dir, kv) = open();
        let cfg = KvConfig {
            max_keys: 10,
            ..KvConfig::default()
        };
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let (kv, cfg) = (kv.clone(), cfg.clone());
                tokio::spawn(async move {
                    kv.apply(vec![put(&format!("k{i}"), "1")], Caller::default(), &cfg)
                        .await
                })
            })
            .collect();
        let mut ok = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => ok += 1,
                Err(Error::QuotaExceeded(m)) => assert!(m.contains("kv.max-keys"), "{m}"),
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(ok, 10);
        assert_eq!(kv.db.read(key_count_and_bytes).await.unwrap(), (10, 10));
        // A delete frees a key; a put that replaces one needs none.
        let del = Op {
            value: None,
            ..put("k0", "1")
        };
        let first = kv.list("", None, 1, true).await.unwrap().items[0]
            .key
            .clone();
        let del = Op {
            key: first.clone(),
            ..del
        };
        kv.apply(vec![del], Caller::default(), &cfg).await.unwrap();
        kv.apply(vec![put("new", "1")], Caller::default(), &cfg)
            .await
            .unwrap();
        kv.apply(vec![put("new", "22")], Caller::default(), &cfg)
            .await
            .unwrap();
        assert!(matches!(
            kv.apply(vec![put(&first, "1")], Caller::default(), &cfg)
                .await,
            Err(Error::QuotaExceeded(_))
        ));
    }

    /// Migration 8 moves values out of the key rows into the change log: a key whose put is
    /// still logged points at it; one whose put was trimmed gets it back, at its revision (at
    /// or below `compacted`, so no watch replays it).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn migration_8_keeps_every_value_in_the_change_log() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.db");
        crate::store::db::database_at_schema(
            &p,
            7,
            "INSERT INTO kv(key, value, version, expires_at) VALUES
                    ('trimmed', '\"old\"', 2, NULL), ('logged', '[1,2]', 5, 4102444800000);
                 INSERT INTO kv_changes(revision, at, op, key, value) VALUES
                    (4, 10, 'put', 'x', '0'), (4, 10, 'delete', 'logged', NULL),
                    (5, 11, 'put', 'logged', '[1,2]'), (6, 12, 'delete', 'x', NULL);
             UPDATE kv_state SET revision = 6, compacted = 3;",
        );
        let db = Db::open(&p, 1).unwrap();
        let rows: Vec<(String, i64, i64, String, i64)> = db
            .read(|c| {
                let mut st = c.prepare(
                    "SELECT k.key, k.version, c.revision, c.value, c.at
                     FROM kv k JOIN kv_log_a c ON c.id = k.change ORDER BY k.key",
                )?;
                let rows = st
                    .query_map([], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(rows)
            })
            .await
            .unwrap();
        assert_eq!(
            rows,
            vec![
                ("logged".into(), 5, 5, "[1,2]".into(), 11),
                ("trimmed".into(), 2, 2, "\"old\"".into(), 0),
            ]
        );
        let kv = Kv::new(db.clone(), 0);
        let e = kv.get("trimmed").await.unwrap().unwrap();
        assert_eq!((e.value.as_deref(), e.version), (Some("\"old\""), 2));
        let revs: Vec<u64> = kv
            .changes(3, "")
            .await
            .unwrap()
            .changes
            .iter()
            .map(|c| c.revision)
            .collect();
        assert_eq!(revs, vec![4, 4, 5, 6], "the watch history is unchanged");
        let expiry: i64 = db
            .read(|c| {
                Ok(
                    c.query_row("SELECT expires_at FROM kv WHERE key = 'logged'", [], |r| {
                        r.get(0)
                    })?,
                )
            })
            .await
            .unwrap();
        assert_eq!(expiry, 4_102_444_800_000);
        db.close();
    }

    /// A schema-10 database: each key row gets the size of the value it points at, wherever
    /// that is (either generation or kv_kept; a multi-byte value counts its bytes).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn migration_11_gives_key_rows_their_value_size() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.db");
        crate::store::db::database_at_schema(
            &p,
            10,
            "INSERT INTO kv_kept(id, revision, key, value) VALUES (1, 1, 'kept', '\"é\"');
                 INSERT INTO kv_log_a(id, revision, at, op, key, value)
                     VALUES (2, 2, 0, 'put', 'a', '[1,2,3]');
                 INSERT INTO kv_log_b(id, revision, at, op, key, value)
                     VALUES (3, 3, 0, 'put', 'b', 'true');
                 INSERT INTO kv(key, version, change, expires_at) VALUES
                     ('kept', 1, 1, NULL), ('a', 2, 2, NULL), ('b', 3, 3, NULL);
             UPDATE kv_state SET revision = 3, log_active = 1, log_since = 3;",
        );
        let db = Db::open(&p, 1).unwrap();
        let sizes: Vec<(String, i64)> = db
            .read(|c| {
                let mut st = c.prepare("SELECT key, size FROM kv ORDER BY key")?;
                let rows = st
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(rows)
            })
            .await
            .unwrap();
        assert_eq!(
            sizes,
            vec![("a".into(), 7), ("b".into(), 4), ("kept".into(), 4)]
        );
        assert_eq!(db.read(key_count_and_bytes).await.unwrap(), (3, 15));
        db.close();
    }
}
