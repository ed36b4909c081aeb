//! The audit trail: every change and every refused credential, as who (actor), did what
//! (action), to what (target), with what result, from where (client) and under which request
//! id. Each event goes to the database and to the log with `AUDIT=1` (journald fields).
//!
//! In the database an event lands in `audit_recent`, which has no index but its ids, and
//! [`Audit::seal`] (every second, `daemon.rs`) moves what is there into `audit_log`, which
//! has the indexes the listing filters walk (time, actor, action), in write jobs of at most
//! `SEAL_CHUNK` events, so the writes queued behind one are not held up for long. Indexed one
//! event at a time, inside the commits of the changes they record, those indexes added pages
//! to every commit of data writes (an append splits an index b-tree every few commits); moved
//! in bulk, each index page is written about once. Listings read both tables; the view
//! `audit` is the whole trail for SQL readers.
//!
//! Refused credentials from a client that is over its failed-authentication limit are not
//! recorded one by one (a flood would fill the table and the journal): [`Audit::tally_refusal`]
//! counts them per client address, and [`Audit::record_tallies`] writes one summary event per
//! client and [`TALLY_WINDOW`]. Every event, summaries too, obeys the free-disk floor
//! ([`Db::ensure_free`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::OptionalExtension;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::store::db::Db;
use crate::util::paging;
use crate::util::time::{now_unix, rfc3339};

/// One event to record.
#[derive(Debug, Clone, Default)]
pub struct Event {
    pub actor: String,
    pub action: String,
    pub target: String,
    pub result: String,
    pub client: String,
    pub request_id: String,
    pub detail: String,
}

/// Who is acting, as every change records it: the audit trail, the key-value store's audit
/// rows and the execution history. One type for all of them, made once per request by the
/// layer that authenticated the caller, so each store records the same three facts.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// The actor's name: a token's name, or `local:uid=N` for the admin socket.
    pub actor: String,
    /// The client's address (or `unix`), as the access checks saw it.
    pub client: String,
    /// The request's id, so an event can be found beside the request's log lines.
    pub request_id: String,
}

impl Caller {
    /// An audit event of this caller's.
    pub fn event(&self, action: &str, target: &str, result: &str, detail: String) -> Event {
        Event {
            actor: self.actor.clone(),
            action: action.to_owned(),
            target: target.to_owned(),
            result: result.to_owned(),
            client: self.client.clone(),
            request_id: self.request_id.clone(),
            detail,
        }
    }
}

/// One recorded event, as listed.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = AuditEvent)]
pub struct Record {
    pub id: i64,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub result: String,
    pub client: String,
    pub request_id: String,
    pub detail: String,
}

/// What to list.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub actor: Option<String>,
    pub action: Option<String>,
    /// RFC 3339 bounds, inclusive.
    pub since: Option<String>,
    pub until: Option<String>,
    pub limit: usize,
    pub cursor: Option<String>,
}

pub struct Page {
    pub items: Vec<Record>,
    pub next_cursor: Option<String>,
}

/// Logs `ev` (AUDIT=1) and inserts it with `c`: call it inside the write job of the change it
/// records, so the change and its audit row commit together (one transaction, one fsync).
/// Its id follows every id of both tables (`audit_recent` is emptied by each seal).
pub fn insert(c: &rusqlite::Connection, ev: &Event) -> Result<()> {
    log(ev);
    c.prepare_cached(
        "INSERT INTO audit_recent(id, at, actor, action, target, result, client, request_id, detail)
         VALUES (coalesce((SELECT max(id) FROM audit_recent), (SELECT max(id) FROM audit_log), 0) + 1,
                 ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(rusqlite::params![
        now_unix(),
        ev.actor,
        ev.action,
        ev.target,
        ev.result,
        ev.client,
        ev.request_id,
        ev.detail
    ])?;
    Ok(())
}

/// Writes `ev` to the log only (AUDIT=1, its fields as journal fields).
fn log(ev: &Event) {
    tracing::info!(
        audit = 1,
        actor = %ev.actor,
        action = %ev.action,
        // Not `target`: journald already has TARGET (the event's module path).
        audit_target = %ev.target,
        result = %ev.result,
        client = %ev.client,
        request_id = %ev.request_id,
        detail = %ev.detail,
        "audit"
    );
}

/// How long one summary of tallied refusals covers, per client: the period of the
/// failed-authentication limit (`rate-limit.failed-auth-per-minute`).
pub const TALLY_WINDOW: Duration = Duration::from_secs(60);

/// Most client addresses tallied in one window. Refusals from further addresses go into one
/// shared tally (client `*`), so a flood from many addresses cannot grow memory either.
const TALLY_MAX_CLIENTS: usize = 4096;

/// The client of the shared tally.
const TALLY_OVERFLOW: &str = "*";

/// Refusals of one client address in one window, not yet recorded.
struct Tally {
    opened: Instant,
    opened_at: i64,
    count: u64,
    /// The route of the first refusal (a flood usually aims at one).
    target: String,
}

impl Tally {
    fn summary(&self, client: &str) -> Event {
        Event {
            actor: "anonymous".into(),
            action: "auth.failed".into(),
            target: self.target.clone(),
            result: "rate_limited".into(),
            client: client.to_owned(),
            request_id: String::new(),
            // The count comes first: readers (and the tests) take it from there.
            detail: format!(
                "{} failed authentications refused while this address was over the failed-authentication limit, from {} to {}; counted here, not recorded one by one",
                self.count,
                rfc3339(self.opened_at),
                rfc3339(now_unix()),
            ),
        }
    }
}

#[derive(Default)]
struct Tallies {
    open: HashMap<String, Tally>,
    /// Summaries of windows that ended while their client was still refused, to be recorded.
    ended: Vec<Event>,
}

/// The columns of both tables, in their order.
const COLUMNS: &str = "id, at, actor, action, target, result, client, request_id, detail";

#[derive(Clone)]
pub struct Audit {
    db: Db,
    tallies: Arc<Mutex<Tallies>>,
}

fn parse_time(s: &str, what: &str) -> Result<i64> {
    crate::util::time::parse_rfc3339(s).map_err(|e| {
        Error::Invalid(format!(
            "{what} must be an RFC 3339 time such as 2026-01-31T12:00:00Z: {e}"
        ))
    })
}

/// The listing's SQL: a condition only for each filter given, so actor and action filters
/// walk `audit_actor` / `audit_action` newest first; the few unsealed events in `audit_recent`
/// are merged in by id.
fn list_query(
    actor: Option<&str>,
    action: Option<&str>,
    since: Option<i64>,
    until: Option<i64>,
    before: Option<i64>,
    take: i64,
) -> (String, Vec<rusqlite::types::Value>) {
    let mut w = crate::store::db::Conditions::default();
    if let Some(a) = actor {
        w.add("actor =", a.to_owned());
    }
    if let Some(a) = action {
        w.add("action =", a.to_owned());
    }
    if let Some(t) = since {
        w.add("at >=", t);
    }
    if let Some(t) = until {
        w.add("at <=", t);
    }
    if let Some(id) = before {
        w.add("id <", id);
    }
    let (filter, limit, args) = w.finish(take);
    let sql = format!(
        "SELECT {COLUMNS} FROM audit_log {filter}
         UNION ALL SELECT {COLUMNS} FROM audit_recent {filter}
         ORDER BY id DESC LIMIT ?{limit}"
    );
    (sql, args)
}

impl Audit {
    pub fn new(db: Db) -> Audit {
        Audit {
            db,
            tallies: Arc::default(),
        }
    }

    /// Logs the event (AUDIT=1) and stores it. Returns once it is committed. Below the
    /// free-disk floor it is only logged, and the error says why it was not stored.
    pub async fn record(&self, ev: Event) -> Result<()> {
        if let Err(e) = self.db.ensure_free(0) {
            log(&ev);
            return Err(e);
        }
        self.db.write(move |c| insert(c, &ev)).await
    }

    /// Counts a refused credential from `client` that is not recorded on its own (the client
    /// is over its failed-authentication limit). Costs no I/O: the count is recorded by
    /// [`Audit::record_tallies`], one event per client and window.
    pub fn tally_refusal(&self, client: &str, target: &str) {
        let now = Instant::now();
        let mut t = match self.tallies.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let Tallies { open, ended } = &mut *t;
        let key = if open.contains_key(client) || open.len() < TALLY_MAX_CLIENTS {
            client
        } else {
            TALLY_OVERFLOW
        };
        if let Some(tally) = open.get_mut(key) {
            if now.duration_since(tally.opened) < TALLY_WINDOW {
                tally.count += 1;
                return;
            }
            ended.push(tally.summary(key));
            open.remove(key);
        }
        open.insert(
            key.to_owned(),
            Tally {
                opened: now,
                opened_at: now_unix(),
                count: 1,
                target: target.to_owned(),
            },
        );
    }

    /// Records one summary event for each tally whose window has ended, or for every tally
    /// (`all`: at shutdown, so no count is lost), in one write. Returns how many.
    pub async fn record_tallies(&self, all: bool) -> Result<usize> {
        let events = {
            let now = Instant::now();
            let mut t = match self.tallies.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            let Tallies { open, ended } = &mut *t;
            let mut events = std::mem::take(ended);
            open.retain(|client, tally| {
                let due = all || now.duration_since(tally.opened) >= TALLY_WINDOW;
                if due {
                    events.push(tally.summary(client));
                }
                !due
            });
            events
        };
        if events.is_empty() {
            return Ok(0);
        }
        let n = events.len();
        if let Err(e) = self.db.ensure_free(0) {
            events.iter().for_each(log);
            return Err(e);
        }
        self.db
            .write(move |c| events.iter().try_for_each(|ev| insert(c, ev)))
            .await?;
        Ok(n)
    }

    /// Newest first, `limit` per page; the cursor continues after the last item.
    pub async fn list(&self, f: Filter) -> Result<Page> {
        let since = f
            .since
            .as_deref()
            .map(|s| parse_time(s, "since"))
            .transpose()?;
        let until = f
            .until
            .as_deref()
            .map(|s| parse_time(s, "until"))
            .transpose()?;
        let before = paging::parse_seq_cursor(f.cursor.as_deref(), 'a')?;
        let limit = f.limit;
        let (actor, action) = (f.actor, f.action);
        self.db
            .read(move |c| {
                let (sql, args) = list_query(
                    actor.as_deref(),
                    action.as_deref(),
                    since,
                    until,
                    before,
                    paging::take(limit),
                );
                let mut st = c.prepare_cached(&sql)?;
                let mut items = st
                    .query_map(rusqlite::params_from_iter(args), |r| {
                        Ok(Record {
                            id: r.get(0)?,
                            at: rfc3339(r.get(1)?),
                            actor: r.get(2)?,
                            action: r.get(3)?,
                            target: r.get(4)?,
                            result: r.get(5)?,
                            client: r.get(6)?,
                            request_id: r.get(7)?,
                            detail: r.get(8)?,
                        })
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                let next_cursor =
                    paging::next_cursor(&mut items, limit, |r| paging::seq_cursor('a', r.id));
                Ok(Page { items, next_cursor })
            })
            .await
    }

    /// Deletes events older than `keep_within` (`auth.audit-keep-within`).
    pub async fn prune(&self, keep_within: Duration) -> Result<usize> {
        let cutoff =
            now_unix().saturating_sub(i64::try_from(keep_within.as_secs()).unwrap_or(i64::MAX));
        self.db
            .write(move |c| {
                Ok(c.execute("DELETE FROM audit_log WHERE at < ?1", [cutoff])?
                    + c.execute("DELETE FROM audit_recent WHERE at < ?1", [cutoff])?)
            })
            .await
    }

    /// Moves every event in `audit_recent` into `audit_log` (and its indexes), `SEAL_CHUNK`
    /// events per write job; returns how many.
    pub async fn seal(&self) -> Result<usize> {
        self.seal_by(SEAL_CHUNK).await
    }

    async fn seal_by(&self, chunk: i64) -> Result<usize> {
        // A read first: an idle daemon's writer is left alone.
        let waiting = self
            .db
            .read(|c| {
                Ok(
                    c.prepare_cached("SELECT EXISTS (SELECT 1 FROM audit_recent)")?
                        .query_row([], |r| r.get::<_, bool>(0))?,
                )
            })
            .await?;
        if !waiting {
            return Ok(0);
        }
        let mut moved = 0;
        loop {
            // No savepoint: the job's only failure is a database error, which fails the group.
            let (n, more) = self
                .db
                .write_prechecked_then(move |c| seal_chunk(c, chunk), |_| {})
                .await?;
            moved += n;
            if !more {
                return Ok(moved);
            }
        }
    }
}

/// Most events one seal job moves. Moving one costs the writer a row and three index entries,
/// and the writes queued behind a seal job wait for all of it: one job for all of a busy
/// second's events held them up longer than anything else the store does, so a busy second
/// is moved in several jobs with other writes between them.
const SEAL_CHUNK: i64 = 1024;

/// Moves the oldest `chunk` events of `audit_recent` into `audit_log`, or all of them when
/// there are no more; returns how many, and whether any are left. Emptying the whole table is
/// a single b-tree clear (its pages go to the free list without being visited row by row); a
/// chunk is deleted by id range.
fn seal_chunk(c: &rusqlite::Connection, chunk: i64) -> Result<(usize, bool)> {
    // The first id this chunk leaves behind, if there is one.
    let rest_from: Option<i64> = c
        .prepare_cached("SELECT id FROM audit_recent ORDER BY id LIMIT 1 OFFSET ?1")?
        .query_row([chunk], |r| r.get(0))
        .optional()?;
    let moved = c
        .prepare_cached(
            "INSERT INTO audit_log(id, at, actor, action, target, result, client, request_id,
                                   detail)
             SELECT id, at, actor, action, target, result, client, request_id, detail
             FROM audit_recent WHERE id < ?1 ORDER BY id",
        )?
        .execute([rest_from.unwrap_or(i64::MAX)])?;
    match rest_from {
        Some(id) => {
            c.prepare_cached("DELETE FROM audit_recent WHERE id < ?1")?
                .execute([id])?;
        }
        None if moved > 0 => {
            c.prepare_cached("DELETE FROM audit_recent")?.execute([])?;
        }
        None => {}
    }
    Ok((moved, rest_from.is_some()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn filtered_listings_walk_their_index() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("t.db"), 1).unwrap();
        let plan = |actor: Option<&'static str>, action: Option<&'static str>| {
            let (sql, args) = list_query(actor, action, None, None, Some(10), 101);
            db.write(move |c| Ok(crate::store::db::query_plan(c, &sql, args)?))
        };
        // Each filter walks its index in audit_log and the recent table by id, both newest
        // first, merged: no sort step.
        let by_actor = plan(Some("ci"), None).await.unwrap();
        assert!(by_actor.contains("INDEX audit_actor"), "{by_actor}");
        assert!(!by_actor.contains("TEMP B-TREE"), "{by_actor}");
        let by_action = plan(None, Some("data.put")).await.unwrap();
        assert!(by_action.contains("INDEX audit_action"), "{by_action}");
        assert!(!by_action.contains("TEMP B-TREE"), "{by_action}");
        // Unfiltered: newest first along the tables themselves.
        let all = plan(None, None).await.unwrap();
        assert!(!all.contains("TEMP B-TREE"), "{all}");
        assert!(all.contains("MERGE"), "{all}");
        db.close();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn record_list_filter_paginate_prune() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("t.db"), 2).unwrap();
        let audit = Audit::new(db.clone());
        for i in 0..5 {
            audit
                .record(Event {
                    actor: if i % 2 == 0 {
                        "alice".into()
                    } else {
                        "bob".into()
                    },
                    action: "token.create".into(),
                    target: format!("t{i}"),
                    result: "ok".into(),
                    ..Event::default()
                })
                .await
                .unwrap();
            if i == 2 {
                // t0..t2 go to the indexed table, t3 and t4 stay recent: listings merge both.
                assert_eq!(audit.seal().await.unwrap(), 3);
            }
        }
        let p = audit
            .list(Filter {
                limit: 2,
                ..Filter::default()
            })
            .await
            .unwrap();
        assert_eq!(
            p.items
                .iter()
                .map(|r| r.target.as_str())
                .collect::<Vec<_>>(),
            ["t4", "t3"]
        );
        let p2 = audit
            .list(Filter {
                limit: 2,
                cursor: p.next_cursor,
                ..Filter::default()
            })
            .await
            .unwrap();
        assert_eq!(
            p2.items
                .iter()
                .map(|r| r.target.as_str())
                .collect::<Vec<_>>(),
            ["t2", "t1"]
        );
        let alice = audit
            .list(Filter {
                limit: 10,
                actor: Some("alice".into()),
                ..Filter::default()
            })
            .await
            .unwrap();
        assert_eq!(alice.items.len(), 3);
        assert!(alice.next_cursor.is_none());
        assert!(
            audit
                .list(Filter {
                    limit: 1,
                    cursor: Some("zz".into()),
                    ..Filter::default()
                })
                .await
                .is_err()
        );
        assert!(
            audit
                .list(Filter {
                    limit: 1,
                    since: Some("yesterday".into()),
                    ..Filter::default()
                })
                .await
                .is_err()
        );
        // One old event in each table: pruning finds both.
        db.write(|c| {
            Ok(c.execute_batch(
                "UPDATE audit_log SET at = at - 100000 WHERE target = 't0';
                 UPDATE audit_recent SET at = at - 100000 WHERE target = 't3';",
            )?)
        })
        .await
        .unwrap();
        assert_eq!(audit.prune(Duration::from_secs(3600)).await.unwrap(), 2);
        assert_eq!(
            newest(&audit, 10)
                .await
                .iter()
                .map(|r| r.target.as_str())
                .collect::<Vec<_>>(),
            ["t4", "t2", "t1"]
        );
        db.close();
    }

    /// The tallies' summary events as stored: (client, count from the detail), by client.
    async fn summaries(audit: &Audit) -> Vec<(String, u64)> {
        let mut s: Vec<(String, u64)> = newest(audit, 1000)
            .await
            .into_iter()
            .filter(|r| r.result == "rate_limited")
            .map(|r| {
                assert_eq!(
                    (r.action.as_str(), r.actor.as_str()),
                    ("auth.failed", "anonymous")
                );
                let n = r.detail.split(' ').next().unwrap().parse().unwrap();
                (r.client, n)
            })
            .collect();
        s.sort();
        s
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tallied_refusals_become_one_summary_per_client_and_window() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("t.db"), 2).unwrap();
        let audit = Audit::new(db.clone());
        for _ in 0..5 {
            audit.tally_refusal("198.51.100.1", "/api/v1/tokens");
        }
        audit.tally_refusal("198.51.100.2", "/api/v1/session");
        // Nothing is written while the windows last.
        assert_eq!(audit.record_tallies(false).await.unwrap(), 0);
        assert!(newest(&audit, 10).await.is_empty());
        // A window that ended: recorded by the next call; the next refusal opens a new one.
        audit
            .tallies
            .lock()
            .unwrap()
            .open
            .get_mut("198.51.100.1")
            .unwrap()
            .opened -= TALLY_WINDOW;
        audit.tally_refusal("198.51.100.1", "/api/v1/tokens");
        audit.tally_refusal("198.51.100.1", "/api/v1/tokens");
        assert_eq!(audit.record_tallies(false).await.unwrap(), 1);
        assert_eq!(summaries(&audit).await, [("198.51.100.1".to_owned(), 5)]);
        // At shutdown every open tally is recorded, so no count is lost.
        assert_eq!(audit.record_tallies(true).await.unwrap(), 2);
        assert_eq!(
            summaries(&audit).await,
            [
                ("198.51.100.1".to_owned(), 2),
                ("198.51.100.1".to_owned(), 5),
                ("198.51.100.2".to_owned(), 1)
            ]
        );
        assert_eq!(audit.record_tallies(true).await.unwrap(), 0);
        db.close();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tallies_from_too_many_addresses_share_one_entry() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("t.db"), 2).unwrap();
        let audit = Audit::new(db.clone());
        for i in 0..TALLY_MAX_CLIENTS + 3 {
            audit.tally_refusal(&format!("client-{i}"), "/x");
        }
        // A known client keeps its own entry.
        audit.tally_refusal("client-0", "/x");
        let t = audit.tallies.lock().unwrap();
        assert_eq!(t.open.len(), TALLY_MAX_CLIENTS + 1);
        assert_eq!(t.open[TALLY_OVERFLOW].count, 3);
        assert_eq!(t.open["client-0"].count, 2);
        drop(t);
        db.close();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_below_the_free_disk_floor_are_refused_and_write_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("t.db"), 2).unwrap();
        let audit = Audit::new(db.clone());
        db.set_min_free_disk(crate::config::ByteSize(u64::MAX));
        let e = audit.record(put_by_ci("a")).await.unwrap_err();
        assert!(matches!(e, Error::InsufficientStorage(_)), "{e}");
        audit.tally_refusal("198.51.100.1", "/x");
        assert!(matches!(
            audit.record_tallies(true).await,
            Err(Error::InsufficientStorage(_))
        ));
        assert!(newest(&audit, 10).await.is_empty());
        // Positive control: with room, the same event is stored.
        db.set_min_free_disk(crate::config::ByteSize(1));
        audit.record(put_by_ci("a")).await.unwrap();
        assert_eq!(newest(&audit, 10).await.len(), 1);
        db.close();
    }

    /// A successful `data.put` of `target` by `ci`.
    fn put_by_ci(target: &str) -> Event {
        Event {
            actor: "ci".into(),
            action: "data.put".into(),
            target: target.into(),
            result: "ok".into(),
            ..Event::default()
        }
    }

    /// The newest `limit` events, newest first.
    async fn newest(audit: &Audit, limit: usize) -> Vec<Record> {
        audit
            .list(Filter {
                limit,
                ..Filter::default()
            })
            .await
            .unwrap()
            .items
    }

    /// (ids of audit_log, ids of audit_recent, ids the `audit` view shows), each ascending.
    async fn ids(db: &Db) -> (Vec<i64>, Vec<i64>, Vec<i64>) {
        db.read(|c| {
            let ids = |sql: &str| -> rusqlite::Result<Vec<i64>> {
                c.prepare(sql)?
                    .query_map([], |r| r.get(0))?
                    .collect::<rusqlite::Result<Vec<i64>>>()
            };
            Ok((
                ids("SELECT id FROM audit_log ORDER BY id")?,
                ids("SELECT id FROM audit_recent ORDER BY id")?,
                ids("SELECT id FROM audit ORDER BY id")?,
            ))
        })
        .await
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sealing_moves_every_event_once_and_ids_keep_growing() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("t.db"), 2).unwrap();
        let audit = Audit::new(db.clone());
        let record = |target: &str| audit.record(put_by_ci(target));
        assert_eq!(audit.seal().await.unwrap(), 0);
        for t in ["a", "b", "c"] {
            record(t).await.unwrap();
        }
        assert_eq!(ids(&db).await, (vec![], vec![1, 2, 3], vec![1, 2, 3]));
        assert_eq!(audit.seal().await.unwrap(), 3);
        assert_eq!(ids(&db).await, (vec![1, 2, 3], vec![], vec![1, 2, 3]));
        assert_eq!(audit.seal().await.unwrap(), 0);
        // The recent table is empty: the next id still follows the sealed ones.
        record("d").await.unwrap();
        record("e").await.unwrap();
        assert_eq!(
            ids(&db).await,
            (vec![1, 2, 3], vec![4, 5], vec![1, 2, 3, 4, 5])
        );
        assert_eq!(audit.seal().await.unwrap(), 2);
        assert_eq!(
            ids(&db).await,
            (vec![1, 2, 3, 4, 5], vec![], vec![1, 2, 3, 4, 5])
        );
        // The moved rows are whole, in the indexed table.
        let by_action = audit
            .list(Filter {
                limit: 10,
                action: Some("data.put".into()),
                ..Filter::default()
            })
            .await
            .unwrap();
        assert_eq!(
            by_action
                .items
                .iter()
                .map(|r| (r.id, r.target.as_str(), r.actor.as_str(), r.result.as_str()))
                .collect::<Vec<_>>(),
            [
                (5, "e", "ci", "ok"),
                (4, "d", "ci", "ok"),
                (3, "c", "ci", "ok"),
                (2, "b", "ci", "ok"),
                (1, "a", "ci", "ok")
            ]
        );
        db.close();
    }

    /// A seal in chunks moves the oldest events first, leaves the rest listed in
    /// `audit_recent`, and ends with the table empty; new events keep following both tables.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sealing_in_chunks_moves_the_oldest_first_and_all_in_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("t.db"), 2).unwrap();
        let audit = Audit::new(db.clone());
        let record = |target: String| audit.record(put_by_ci(&target));
        for i in 1..=5 {
            record(format!("k{i}")).await.unwrap();
        }
        let one = db.write(|c| seal_chunk(c, 2)).await.unwrap();
        assert_eq!(one, (2, true));
        assert_eq!(
            ids(&db).await,
            (vec![1, 2], vec![3, 4, 5], vec![1, 2, 3, 4, 5])
        );
        assert_eq!(
            newest(&audit, 10)
                .await
                .iter()
                .map(|r| r.id)
                .collect::<Vec<_>>(),
            [5, 4, 3, 2, 1]
        );
        record("k6".into()).await.unwrap();
        // 3, 4 | 5, 6: the last chunk takes what is left.
        assert_eq!(audit.seal_by(2).await.unwrap(), 4);
        assert_eq!(
            ids(&db).await,
            (vec![1, 2, 3, 4, 5, 6], vec![], vec![1, 2, 3, 4, 5, 6])
        );
        // Exactly a chunk left: moved whole, nothing more to do.
        record("k7".into()).await.unwrap();
        record("k8".into()).await.unwrap();
        assert_eq!(db.write(|c| seal_chunk(c, 2)).await.unwrap(), (2, false));
        assert_eq!(db.write(|c| seal_chunk(c, 2)).await.unwrap(), (0, false));
        record("k9".into()).await.unwrap();
        let (log, recent, _) = ids(&db).await;
        assert_eq!((log.len(), recent), (8, vec![9]));
        assert_eq!(
            newest(&audit, 3)
                .await
                .iter()
                .map(|r| r.target.as_str())
                .collect::<Vec<_>>(),
            ["k9", "k8", "k7"]
        );
        db.close();
    }

    /// A schema-9 database: its audit rows stay listed, now in `audit_log`, and new events
    /// follow them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn migration_10_keeps_the_trail() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.db");
        crate::store::db::database_at_schema(
            &p,
            9,
            "INSERT INTO audit(id, at, actor, action, target, result, client, request_id, detail)
                 VALUES (7, 100, 'old', 'token.create', 'x', 'ok', '', '', ''),
                    (9, 200, 'old', 'data.put', 'y', 'ok', '', '', '');",
        );
        let db = Db::open(&p, 1).unwrap();
        let audit = Audit::new(db.clone());
        assert_eq!(ids(&db).await, (vec![7, 9], vec![], vec![7, 9]));
        audit
            .record(Event {
                actor: "new".into(),
                ..Event::default()
            })
            .await
            .unwrap();
        assert_eq!(ids(&db).await, (vec![7, 9], vec![10], vec![7, 9, 10]));
        let old = audit
            .list(Filter {
                limit: 10,
                actor: Some("old".into()),
                ..Filter::default()
            })
            .await
            .unwrap();
        assert_eq!(old.items.iter().map(|r| r.id).collect::<Vec<_>>(), [9, 7]);
        db.close();
    }
}
