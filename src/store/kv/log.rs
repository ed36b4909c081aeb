//! The change log's storage: two generations of rows (`kv_log_a`, `kv_log_b`), and `kv_kept`.
//!
//! Changes go into the active generation (`kv_state.log_active`), with ids that only grow
//! across both. Trimming moves `kv_state.compacted` and deletes nothing: rows at or below it
//! are never read as history again. Once every row of the other (older) generation is at or
//! below `compacted`, the sweeper rotates: the puts that keys still point at move to
//! `kv_kept` under the same ids (so key rows need no update), the older generation is emptied
//! in one statement, and it becomes the active one. Deleting trimmed rows one by one cost the
//! writer about as much as writing them: a 1 KiB row is a third of a page, so nearly every
//! delete rebalanced the b-tree and rewrote its neighbours. Emptying a table frees its pages
//! without moving any cell. The generations and `kv_kept` hold disjoint id ranges: `kv_kept`
//! the lowest, then the older generation, then the active one. So on disk the log holds up to
//! about twice its history (`kv.history-max-changes`, `kv.history-window`).
//!
//! A key row's `change` is the id of the put holding its value, in either generation or in
//! `kv_kept`; [`value_of_key`] finds it, probing the three tables in turn (a miss is one
//! b-tree descent).

use rusqlite::{Connection, OptionalExtension, params};

use crate::error::Result;

/// The value of the put the key row `k` points at, wherever it is (a string literal, for
/// `concat!`).
macro_rules! value_of_key {
    () => {
        "coalesce((SELECT value FROM kv_log_a WHERE id = k.change),
                  (SELECT value FROM kv_log_b WHERE id = k.change),
                  (SELECT value FROM kv_kept WHERE id = k.change))"
    };
}
pub(crate) use value_of_key;

/// One generation of the change log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gen {
    A,
    B,
}

impl Gen {
    fn from_column(v: i64) -> Gen {
        if v == 1 { Gen::B } else { Gen::A }
    }

    fn column(self) -> i64 {
        match self {
            Gen::A => 0,
            Gen::B => 1,
        }
    }

    fn other(self) -> Gen {
        match self {
            Gen::A => Gen::B,
            Gen::B => Gen::A,
        }
    }

    fn insert_sql(self) -> &'static str {
        match self {
            Gen::A => {
                "INSERT INTO kv_log_a(id, revision, at, op, key, value)
                 VALUES ((SELECT coalesce(max(id) + 1, ?6) FROM kv_log_a), ?1, ?2, ?3, ?4, ?5)"
            }
            Gen::B => {
                "INSERT INTO kv_log_b(id, revision, at, op, key, value)
                 VALUES ((SELECT coalesce(max(id) + 1, ?6) FROM kv_log_b), ?1, ?2, ?3, ?4, ?5)"
            }
        }
    }

    fn newest_revision_sql(self) -> &'static str {
        match self {
            Gen::A => "SELECT max(revision) FROM kv_log_a",
            Gen::B => "SELECT max(revision) FROM kv_log_b",
        }
    }

    fn id_range_sql(self) -> &'static str {
        match self {
            Gen::A => "SELECT min(id), max(id) FROM kv_log_a",
            Gen::B => "SELECT min(id), max(id) FROM kv_log_b",
        }
    }

    /// The puts in this generation that keys point at, found from its rows (for when it has
    /// fewer than there are keys).
    fn pointed_at_sql(self) -> &'static str {
        match self {
            Gen::A => {
                "SELECT c.id FROM kv_log_a c CROSS JOIN kv k ON k.key = c.key AND k.change = c.id
                 WHERE c.op = 'put'"
            }
            Gen::B => {
                "SELECT c.id FROM kv_log_b c CROSS JOIN kv k ON k.key = c.key AND k.change = c.id
                 WHERE c.op = 'put'"
            }
        }
    }

    fn keep_sql(self) -> &'static str {
        match self {
            Gen::A => {
                "INSERT INTO kv_kept(id, revision, key, value)
                 SELECT c.id, c.revision, c.key, c.value
                 FROM kv_log_a c JOIN kv k ON k.key = c.key AND k.change = c.id WHERE c.id = ?1"
            }
            Gen::B => {
                "INSERT INTO kv_kept(id, revision, key, value)
                 SELECT c.id, c.revision, c.key, c.value
                 FROM kv_log_b c JOIN kv k ON k.key = c.key AND k.change = c.id WHERE c.id = ?1"
            }
        }
    }

    fn empty_sql(self) -> &'static str {
        // No WHERE: SQLite empties the table (and its index) page by page.
        match self {
            Gen::A => "DELETE FROM kv_log_a",
            Gen::B => "DELETE FROM kv_log_b",
        }
    }
}

/// The store's counters, read by the writer at the start of a change set.
#[derive(Debug, Clone, Copy)]
pub struct Head {
    /// The new revision (already taken).
    pub revision: i64,
    pub compacted: i64,
    /// Where changes go, and the id its first one gets.
    pub active: Gen,
    pub since: i64,
}

/// Takes the next revision; returns it with the rest of the counters.
pub fn next_revision(c: &Connection) -> Result<Head> {
    // Not `UPDATE … RETURNING`: SQLite runs RETURNING as a trigger, which gives the statement
    // a statement journal (a copy of the page) and a temporary table each time, and every
    // change takes a revision.
    c.prepare_cached("UPDATE kv_state SET revision = revision + 1 WHERE id = 1")?
        .execute([])?;
    Ok(c.prepare_cached(
        "SELECT revision, compacted, log_active, log_since FROM kv_state WHERE id = 1",
    )?
    .query_row([], |r| {
        Ok(Head {
            revision: r.get(0)?,
            compacted: r.get(1)?,
            active: Gen::from_column(r.get(2)?),
            since: r.get(3)?,
        })
    })?)
}

/// Appends a change at `head.revision`; returns its id (a key row points at its put's).
pub fn append(
    c: &Connection,
    head: &Head,
    at: i64,
    op: &str,
    key: &str,
    value: Option<&str>,
) -> Result<i64> {
    let mut st = c.prepare_cached(head.active.insert_sql())?;
    st.execute(params![head.revision, at, op, key, value, head.since])?;
    Ok(c.last_insert_rowid())
}

/// A put that a key no longer points at, made at `version`, with id `change`: when it was
/// kept past trimming (in `kv_kept`) it goes now; in a generation it goes with the
/// generation.
pub fn release(c: &Connection, version: i64, change: i64, compacted: i64) -> Result<()> {
    if version <= compacted {
        c.prepare_cached("DELETE FROM kv_kept WHERE id = ?1")?
            .execute([change])?;
    }
    Ok(())
}

/// A change as stored: revision, op, key, value (a put's).
pub type Logged = (i64, String, String, Option<String>);

/// Changes with `after < revision <= upto`, in order.
pub fn read_range(c: &Connection, after: i64, upto: i64) -> Result<Vec<Logged>> {
    let mut st = c.prepare_cached(
        "SELECT revision, op, key, value, id FROM kv_log_a WHERE revision > ?1 AND revision <= ?2
         UNION ALL
         SELECT revision, op, key, value, id FROM kv_log_b WHERE revision > ?1 AND revision <= ?2
         ORDER BY 1, 5",
    )?;
    let rows = st.query_map(params![after, upto], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The id of the first change after revision `compacted`, and the newest id.
pub fn id_span(c: &Connection, compacted: i64) -> Result<(Option<i64>, Option<i64>)> {
    let lo: Option<i64> = c
        .prepare_cached(
            "SELECT id, revision FROM kv_log_a WHERE revision > ?1
             UNION ALL SELECT id, revision FROM kv_log_b WHERE revision > ?1
             ORDER BY 2, 1 LIMIT 1",
        )?
        .query_row([compacted], |r| r.get(0))
        .optional()?;
    let hi: Option<i64> = c
        .prepare_cached(
            "SELECT max(m) FROM (SELECT max(id) AS m FROM kv_log_a
                                 UNION ALL SELECT max(id) FROM kv_log_b)",
        )?
        .query_row([], |r| r.get(0))?;
    Ok((lo, hi))
}

/// The revision of the newest change with an id at most `id`.
pub fn revision_at_or_before(c: &Connection, id: i64) -> Result<Option<i64>> {
    Ok(c.prepare_cached(
        "SELECT revision, id FROM kv_log_a WHERE id <= ?1
         UNION ALL SELECT revision, id FROM kv_log_b WHERE id <= ?1
         ORDER BY 2 DESC LIMIT 1",
    )?
    .query_row([id], |r| r.get(0))
    .optional()?)
}

/// The newest revision after `compacted` whose changes are all older than `oldest_ok` (ms),
/// among the next 10,000 changes.
pub fn window_cut(c: &Connection, compacted: i64, oldest_ok: i64) -> Result<Option<i64>> {
    let mut st = c.prepare_cached(
        "SELECT revision, at, id FROM kv_log_a WHERE revision > ?1
         UNION ALL SELECT revision, at, id FROM kv_log_b WHERE revision > ?1
         ORDER BY 1, 3 LIMIT 10000",
    )?;
    let mut rows = st.query([compacted])?;
    let mut cut = None;
    while let Some(r) = rows.next()? {
        let (rev, at): (i64, i64) = (r.get(0)?, r.get(1)?);
        if at >= oldest_ok {
            break;
        }
        cut = Some(rev);
    }
    Ok(cut)
}

/// Trimming: changes up to `cut` are no longer history. Returns the new `compacted`.
pub fn trim_to(c: &Connection, cut: i64) -> Result<i64> {
    c.prepare_cached("UPDATE kv_state SET compacted = max(compacted, ?1) WHERE id = 1")?
        .execute([cut])?;
    Ok(
        c.prepare_cached("SELECT compacted FROM kv_state WHERE id = 1")?
            .query_row([], |r| r.get(0))?,
    )
}

/// A rotation found possible by a read: the generation to empty, the puts in it that keys
/// pointed at then, and the `log_since` it was found under (a rotation since voids it).
#[derive(Debug, Clone)]
pub struct Rotation {
    older: Gen,
    since: i64,
    kept: Vec<i64>,
}

/// Whether the older generation is all trimmed (or empty while the active one is not): then
/// the rotation to do. A read; the writer checks again in [`rotate`].
pub fn rotation_plan(c: &Connection) -> Result<Option<Rotation>> {
    let tx = c.unchecked_transaction()?;
    let (compacted, active, since): (i64, i64, i64) = tx
        .prepare_cached("SELECT compacted, log_active, log_since FROM kv_state WHERE id = 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    let active = Gen::from_column(active);
    let older = active.other();
    if !rotatable(&tx, older, active, compacted)? {
        return Ok(None);
    }
    // The generations and kv_kept hold disjoint id ranges, so the keys pointing into the older
    // generation are those whose change is in its range. Whichever of the two is smaller is
    // scanned: the keys (max rowid bounds their count) or the generation's rows.
    let (lo, hi) = id_range(&tx, older)?;
    let kept = match (lo, hi) {
        (Some(lo), Some(hi)) => {
            let keys: Option<i64> = tx
                .prepare_cached("SELECT max(rowid) FROM kv")?
                .query_row([], |r| r.get(0))?;
            if keys.unwrap_or(0) <= hi - lo + 1 {
                tx.prepare_cached("SELECT change FROM kv WHERE change >= ?1 AND change <= ?2")?
                    .query_map([lo, hi], |r| r.get(0))?
                    .collect::<rusqlite::Result<Vec<i64>>>()?
            } else {
                tx.prepare_cached(older.pointed_at_sql())?
                    .query_map([], |r| r.get(0))?
                    .collect::<rusqlite::Result<Vec<i64>>>()?
            }
        }
        _ => Vec::new(),
    };
    Ok(Some(Rotation { older, since, kept }))
}

fn rotatable(c: &Connection, older: Gen, active: Gen, compacted: i64) -> Result<bool> {
    let newest_older: Option<i64> = c
        .prepare_cached(older.newest_revision_sql())?
        .query_row([], |r| r.get(0))?;
    if newest_older.is_some_and(|r| r > compacted) {
        return Ok(false);
    }
    Ok(id_range(c, active)?.1.is_some())
}

/// The lowest and highest id in a generation (none when it is empty).
fn id_range(c: &Connection, g: Gen) -> Result<(Option<i64>, Option<i64>)> {
    Ok(c.prepare_cached(g.id_range_sql())?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?)
}

/// Carries out `plan` in the writer's transaction if it still holds: moves the puts keys
/// point at into `kv_kept`, empties the older generation and makes it the active one.
/// Returns whether it rotated.
pub fn rotate(c: &Connection, plan: &Rotation) -> Result<bool> {
    let (compacted, active, since): (i64, i64, i64) = c
        .prepare_cached("SELECT compacted, log_active, log_since FROM kv_state WHERE id = 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    let active = Gen::from_column(active);
    if since != plan.since || active != plan.older.other() {
        return Ok(false);
    }
    // Keys can only have moved off the older generation since the plan was read (new puts go
    // to the active one), so its list holds every put still pointed at; each is checked again.
    if !rotatable(c, plan.older, active, compacted)? {
        return Ok(false);
    }
    let mut keep = c.prepare_cached(plan.older.keep_sql())?;
    for id in &plan.kept {
        keep.execute([id])?;
    }
    c.execute(plan.older.empty_sql(), [])?;
    let next_since = id_range(c, active)?.1.map_or(since, |m| m + 1);
    c.prepare_cached("UPDATE kv_state SET log_active = ?1, log_since = ?2 WHERE id = 1")?
        .execute(params![plan.older.column(), next_since])?;
    Ok(true)
}

/// The newest changes, newest first, at most `limit`: (revision, op, key, at).
pub fn newest(c: &Connection, limit: i64) -> Result<Vec<(i64, String, String, i64)>> {
    let mut st = c.prepare(
        "SELECT revision, op, key, at, id FROM kv_log_a
         UNION ALL SELECT revision, op, key, at, id FROM kv_log_b
         ORDER BY 1 DESC, 5 DESC LIMIT ?1",
    )?;
    let rows = st.query_map([limit], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}
