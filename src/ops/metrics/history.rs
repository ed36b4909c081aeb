//! The dashboard's history: one point per 10 s for the last hour and one per minute for the
//! last day, each the mean of the samples that fell into its slot, kept in bounded rings and
//! in the `metrics_history` table (so a restart keeps them). A finished slot is written as
//! one row batch per sample round: one write job, not one per series.

use std::collections::VecDeque;

use rusqlite::{Connection, params};
use serde::Serialize;

use crate::error::{Error, Result};

/// Seconds per point of the fine and the coarse ring.
pub const FINE_S: i64 = 10;
pub const COARSE_S: i64 = 60;
/// How far back each ring reaches.
pub const FINE_SPAN_S: i64 = 3600;
pub const COARSE_SPAN_S: i64 = 86_400;

/// The series a point carries, in column order.
pub const SERIES: [&str; 6] = ["cpu", "memory", "disk", "load1", "net_rx", "net_tx"];
/// What each series measures (for the API's `units`).
pub const UNITS: [&str; 6] = [
    "percent busy (all CPUs)",
    "percent of memory in use (not available)",
    "percent of the state directory's filesystem in use",
    "1-minute load average",
    "bytes/s received (all interfaces but lo)",
    "bytes/s sent (all interfaces but lo)",
];

/// One point: the slot's start (unix seconds) and the mean of each series.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point {
    pub at: i64,
    pub values: [Option<f64>; 6],
}

/// Sums of one slot in progress.
#[derive(Debug, Clone, Copy)]
struct Acc {
    slot: i64,
    sum: [f64; 6],
    n: [u32; 6],
}

impl Acc {
    fn new(slot: i64) -> Acc {
        Acc {
            slot,
            sum: [0.0; 6],
            n: [0; 6],
        }
    }
    fn add(&mut self, values: &[Option<f64>; 6]) {
        for (i, v) in values.iter().enumerate() {
            if let Some(v) = v.filter(|v| v.is_finite()) {
                self.sum[i] += v;
                self.n[i] += 1;
            }
        }
    }
    fn point(&self) -> Point {
        let mut values = [None; 6];
        for (i, v) in values.iter_mut().enumerate() {
            if self.n[i] > 0 {
                *v = Some(self.sum[i] / f64::from(self.n[i]));
            }
        }
        Point {
            at: self.slot,
            values,
        }
    }
    fn is_empty(&self) -> bool {
        self.n.iter().all(|n| *n == 0)
    }
}

/// A row to persist: (resolution in seconds, point).
pub type Row = (i64, Point);

/// The two rings and the slots in progress.
#[derive(Debug, Default)]
pub struct History {
    fine: VecDeque<Point>,
    coarse: VecDeque<Point>,
    fine_acc: Option<Acc>,
    coarse_acc: Option<Acc>,
}

fn push(ring: &mut VecDeque<Point>, p: Point, span: i64) {
    // A point for a slot already present (a restart inside one slot) replaces it.
    if let Some(last) = ring.back_mut()
        && last.at == p.at
    {
        *last = p;
    } else {
        ring.push_back(p);
    }
    while ring.front().is_some_and(|f| f.at <= p.at - span) {
        ring.pop_front();
    }
}

impl History {
    /// Rings filled from stored rows (oldest first).
    pub fn from_rows(rows: Vec<Row>) -> History {
        let mut h = History::default();
        for (res, p) in rows {
            if res == FINE_S {
                push(&mut h.fine, p, FINE_SPAN_S);
            } else if res == COARSE_S {
                push(&mut h.coarse, p, COARSE_SPAN_S);
            }
        }
        h
    }

    /// Adds a sample taken at `now` (unix seconds); returns the rows of slots it finished.
    pub fn add(&mut self, now: i64, values: [Option<f64>; 6]) -> Vec<Row> {
        let mut rows = Vec::new();
        let slot = now - now.rem_euclid(FINE_S);
        match &mut self.fine_acc {
            Some(acc) if acc.slot == slot => acc.add(&values),
            _ => {
                if let Some(done) = self.fine_acc.take() {
                    rows.extend(self.finish_fine(done));
                }
                let mut acc = Acc::new(slot);
                acc.add(&values);
                self.fine_acc = Some(acc);
            }
        }
        rows
    }

    fn finish_fine(&mut self, done: Acc) -> Vec<Row> {
        let mut rows = Vec::new();
        if done.is_empty() {
            return rows;
        }
        let p = done.point();
        push(&mut self.fine, p, FINE_SPAN_S);
        rows.push((FINE_S, p));
        let minute = p.at - p.at.rem_euclid(COARSE_S);
        match &mut self.coarse_acc {
            Some(acc) if acc.slot == minute => acc.add(&p.values),
            _ => {
                if let Some(prev) = self.coarse_acc.take()
                    && !prev.is_empty()
                {
                    let cp = prev.point();
                    push(&mut self.coarse, cp, COARSE_SPAN_S);
                    rows.push((COARSE_S, cp));
                }
                let mut acc = Acc::new(minute);
                acc.add(&p.values);
                self.coarse_acc = Some(acc);
            }
        }
        rows
    }

    /// Finishes the slots in progress (at shutdown) and returns their rows; the minute in
    /// progress is written as far as it got.
    pub fn flush(&mut self) -> Vec<Row> {
        let mut rows = Vec::new();
        if let Some(done) = self.fine_acc.take() {
            rows.extend(self.finish_fine(done));
        }
        if let Some(acc) = self.coarse_acc.take()
            && !acc.is_empty()
        {
            let p = acc.point();
            push(&mut self.coarse, p, COARSE_SPAN_S);
            rows.push((COARSE_S, p));
        }
        rows
    }

    /// Points newer than `now - range_s`, at 10 s resolution for up to an hour, else 1 min.
    pub fn range(&self, now: i64, range_s: i64) -> (i64, Vec<Point>) {
        let (res, ring) = if range_s <= FINE_SPAN_S {
            (FINE_S, &self.fine)
        } else {
            (COARSE_S, &self.coarse)
        };
        let from = now - range_s;
        (res, ring.iter().filter(|p| p.at > from).copied().collect())
    }
}

/// Writes `rows` and forgets rows older than each ring's span, in the caller's transaction.
pub fn store(c: &Connection, rows: &[Row], now: i64) -> Result<()> {
    let mut ins = c.prepare_cached(
        "INSERT OR REPLACE INTO metrics_history(resolution, at, cpu, memory, disk, load1, net_rx, net_tx)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    for (res, p) in rows {
        let v = &p.values;
        ins.execute(params![res, p.at, v[0], v[1], v[2], v[3], v[4], v[5]])?;
    }
    c.execute(
        "DELETE FROM metrics_history WHERE (resolution = ?1 AND at <= ?2) OR (resolution = ?3 AND at <= ?4)",
        params![FINE_S, now - FINE_SPAN_S, COARSE_S, now - COARSE_SPAN_S],
    )?;
    Ok(())
}

/// The stored rows still inside their ring's span, oldest first.
pub fn load(c: &Connection, now: i64) -> Result<Vec<Row>> {
    let mut st = c.prepare(
        "SELECT resolution, at, cpu, memory, disk, load1, net_rx, net_tx FROM metrics_history
         WHERE (resolution = ?1 AND at > ?2) OR (resolution = ?3 AND at > ?4)
         ORDER BY resolution, at",
    )?;
    let rows = st
        .query_map(
            params![FINE_S, now - FINE_SPAN_S, COARSE_S, now - COARSE_SPAN_S],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    Point {
                        at: r.get(1)?,
                        values: [
                            r.get(2)?,
                            r.get(3)?,
                            r.get(4)?,
                            r.get(5)?,
                            r.get(6)?,
                            r.get(7)?,
                        ],
                    },
                ))
            },
        )?
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Parses `?series=cpu,memory` into column indexes (all when absent).
pub fn parse_series(list: Option<&str>) -> Result<Vec<usize>> {
    let Some(list) = list.filter(|l| !l.trim().is_empty()) else {
        return Ok((0..SERIES.len()).collect());
    };
    list.split(',')
        .map(|name| {
            let name = name.trim();
            SERIES.iter().position(|s| *s == name).ok_or_else(|| {
                Error::Invalid(format!(
                    "unknown series {name:?}; series are {}",
                    SERIES.join(", ")
                ))
            })
        })
        .collect()
}

/// Parses `?range=1h` (a duration up to 24h; default 1h) into seconds.
pub fn parse_range(text: Option<&str>) -> Result<i64> {
    let Some(text) = text else {
        return Ok(FINE_SPAN_S);
    };
    let d = humantime::parse_duration(text).map_err(|e| {
        Error::Invalid(format!(
            "invalid range {text:?}: {e} (write e.g. \"15m\", \"1h\", \"24h\")"
        ))
    })?;
    let s = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    if !(FINE_S..=COARSE_SPAN_S).contains(&s) {
        return Err(Error::Invalid(format!(
            "range {text:?} is outside 10s..24h (history keeps 10 s points for 1h and 1 min points for 24h)"
        )));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(x: f64) -> [Option<f64>; 6] {
        [Some(x), Some(x), None, None, None, None]
    }

    #[test]
    fn slots_average_their_samples_and_rings_stay_bounded() {
        let mut h = History::default();
        assert!(h.add(1000, v(10.0)).is_empty());
        assert!(h.add(1005, v(20.0)).is_empty());
        let rows = h.add(1010, v(30.0));
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].0, FINE_S);
        assert_eq!(rows[0].1.at, 1000);
        assert_eq!(rows[0].1.values[0], Some(15.0));
        assert_eq!(rows[0].1.values[2], None);
        // Two hours of samples: the fine ring keeps one hour, minutes are written as they end.
        let mut coarse = 0;
        for t in (1020..1020 + 7200).step_by(5) {
            coarse += h
                .add(t, v(1.0))
                .iter()
                .filter(|(r, _)| *r == COARSE_S)
                .count();
        }
        assert!(h.fine.len() <= (FINE_SPAN_S / FINE_S) as usize);
        assert!((119..=121).contains(&coarse), "{coarse}");
        let (res, pts) = h.range(8220, 3600);
        assert_eq!(res, FINE_S);
        assert!(pts.len() >= 355, "{}", pts.len());
        let (res, pts) = h.range(8220, 7200);
        assert_eq!(res, COARSE_S);
        assert!(pts.len() >= 115, "{}", pts.len());
    }

    #[test]
    fn flush_writes_the_slots_in_progress() {
        let mut h = History::default();
        h.add(1003, v(4.0));
        let rows = h.flush();
        assert_eq!(rows.len(), 2);
        assert!(rows.iter().any(|(r, p)| *r == FINE_S && p.at == 1000));
        assert!(rows.iter().any(|(r, p)| *r == COARSE_S && p.at == 960));
    }

    #[test]
    fn queries_are_checked() {
        assert_eq!(parse_series(Some("cpu,disk")).unwrap(), vec![0, 2]);
        assert!(parse_series(Some("cpu,gpu")).is_err());
        assert_eq!(parse_range(Some("1h")).unwrap(), 3600);
        assert_eq!(parse_range(None).unwrap(), 3600);
        assert!(parse_range(Some("25h")).is_err());
        assert!(parse_range(Some("soon")).is_err());
    }
}
