//! The audit trail: every change and every refused credential, as who (actor), did what
//! (action), to what (target), with what result, from where (client) and under which request
//! id. Each event goes to the `audit` table and to the log with `AUDIT=1` (journald fields).

use std::time::Duration;

use serde::Serialize;

use crate::auth::{now_unix, rfc3339};
use crate::db::Db;
use crate::error::{Error, Result};

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

/// Who asked, for the audit trail (and the execution history).
#[derive(Debug, Clone, Default)]
pub struct Caller {
    pub actor: String,
    pub client: String,
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
#[derive(Debug, Clone, Serialize)]
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
pub fn insert(c: &rusqlite::Connection, ev: &Event) -> Result<()> {
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
    c.prepare_cached(
        "INSERT INTO audit(at, actor, action, target, result, client, request_id, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
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

#[derive(Clone)]
pub struct Audit {
    db: Db,
}

fn parse_time(s: &str, what: &str) -> Result<i64> {
    let t = humantime::parse_rfc3339_weak(s).map_err(|e| {
        Error::Invalid(format!(
            "{what} must be an RFC 3339 time such as 2026-01-31T12:00:00Z: {e}"
        ))
    })?;
    Ok(t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0))
}

/// The listing's SQL: a condition only for each filter given, so actor and action filters
/// walk `audit_actor` / `audit_action` newest first.
fn list_query(
    actor: Option<&str>,
    action: Option<&str>,
    since: Option<i64>,
    until: Option<i64>,
    before: Option<i64>,
    take: i64,
) -> (String, Vec<rusqlite::types::Value>) {
    let mut w = crate::db::Conditions::default();
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
        "SELECT id, at, actor, action, target, result, client, request_id, detail FROM audit
         {filter} ORDER BY id DESC LIMIT ?{limit}"
    );
    (sql, args)
}

impl Audit {
    pub fn new(db: Db) -> Audit {
        Audit { db }
    }

    /// Logs the event (AUDIT=1) and stores it. Returns once it is committed.
    pub async fn record(&self, ev: Event) -> Result<()> {
        self.db.write(move |c| insert(c, &ev)).await
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
        let before = crate::db::seq_cursor(f.cursor.as_deref(), 'a')?;
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
                    limit as i64 + 1,
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
                let next_cursor = if items.len() > limit {
                    items.truncate(limit);
                    items.last().map(|r| format!("a{}", r.id))
                } else {
                    None
                };
                Ok(Page { items, next_cursor })
            })
            .await
    }

    /// Deletes events older than `keep_within` (`auth.audit-keep-within`).
    pub async fn prune(&self, keep_within: Duration) -> Result<usize> {
        let cutoff =
            now_unix().saturating_sub(i64::try_from(keep_within.as_secs()).unwrap_or(i64::MAX));
        self.db
            .write(move |c| Ok(c.execute("DELETE FROM audit WHERE at < ?1", [cutoff])?))
            .await
    }
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
            db.write(move |c| Ok(crate::db::query_plan(c, &sql, args)?))
        };
        let by_actor = plan(Some("ci"), None).await.unwrap();
        assert!(by_actor.contains("INDEX audit_actor"), "{by_actor}");
        let by_action = plan(None, Some("data.put")).await.unwrap();
        assert!(by_action.contains("INDEX audit_action"), "{by_action}");
        // Unfiltered: newest first along the table itself, no sort step.
        let all = plan(None, None).await.unwrap();
        assert!(!all.contains("TEMP B-TREE"), "{all}");
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
        db.write(|c| {
            Ok(c.execute(
                "UPDATE audit SET at = at - 100000 WHERE target IN ('t0', 't1')",
                [],
            )?)
        })
        .await
        .unwrap();
        assert_eq!(audit.prune(Duration::from_secs(3600)).await.unwrap(), 2);
        db.close();
    }
}
