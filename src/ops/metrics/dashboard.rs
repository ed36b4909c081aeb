//! The dashboard's data: current system figures, storage use, recent activity (from the
//! executions and files tables, the change log), alerts and the last hour of history.

use std::collections::BTreeMap;

use serde::Serialize;

use super::history::{Point, SERIES, UNITS};
use super::{Current, Metrics, alerts};
use crate::error::Result;
use crate::util::time::{rfc3339, rfc3339_at, rfc3339_ms};

/// History as the API returns it: one timestamp list and a column per series.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct HistoryView {
    /// Seconds per point: 10 up to a range of 1h, else 60.
    pub resolution_s: i64,
    pub range_s: i64,
    /// Start of each point's slot (RFC 3339 UTC), oldest first.
    pub timestamps: Vec<String>,
    /// Series name → one value (the slot's mean) per timestamp; null where nothing was
    /// measured.
    pub series: BTreeMap<&'static str, Vec<Option<f64>>>,
    pub units: BTreeMap<&'static str, &'static str>,
}

fn round(v: Option<f64>) -> Option<f64> {
    v.map(|v| (v * 100.0).round() / 100.0)
}

impl HistoryView {
    pub fn new(resolution_s: i64, range_s: i64, series: &[usize], points: &[Point]) -> HistoryView {
        let timestamps = points.iter().map(|p| rfc3339(p.at)).collect();
        let mut out = BTreeMap::new();
        let mut units = BTreeMap::new();
        for &i in series {
            if let (Some(name), Some(unit)) = (SERIES.get(i), UNITS.get(i)) {
                out.insert(
                    *name,
                    points
                        .iter()
                        .map(|p| round(p.values.get(i).copied().flatten()))
                        .collect(),
                );
                units.insert(*name, *unit);
            }
        }
        HistoryView {
            resolution_s,
            range_s,
            timestamps,
            series: out,
            units,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Filesystem {
    pub mountpoint: String,
    pub fstype: String,
    pub device: String,
    pub size_bytes: u64,
    pub free_bytes: u64,
    pub avail_bytes: u64,
    pub used_percent: Option<f64>,
    pub readonly: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Storage {
    pub state_dir: String,
    pub filesystem: Option<Filesystem>,
    pub kv_keys: Option<u64>,
    pub kv_bytes: Option<u64>,
    pub files: Option<u64>,
    pub files_bytes: Option<u64>,
    pub files_quota_bytes: u64,
    pub database_bytes: u64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RecentExecution {
    pub id: String,
    pub kind: String,
    pub label: String,
    pub status: String,
    pub started_at: String,
    pub wall_ms: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RecentUpload {
    pub path: String,
    pub size: i64,
    pub modified_at: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RecentChange {
    pub revision: i64,
    pub op: String,
    pub key: String,
    pub at: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Activity {
    pub executions: Vec<RecentExecution>,
    pub uploads: Vec<RecentUpload>,
    pub kv_changes: Vec<RecentChange>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Dashboard {
    pub generated_at: String,
    /// When the newest sample was taken; null before the first (or with metrics.enabled off).
    pub sampled_at: Option<String>,
    pub system: Current,
    pub storage: Storage,
    pub activity: Activity,
    pub alerts: Vec<alerts::View>,
    /// The last hour of cpu, memory and disk.
    pub history: HistoryView,
}

/// How many items each recent-activity list shows.
const RECENT: i64 = 10;

fn recent(c: &rusqlite::Connection) -> Result<Activity> {
    let executions = c
        .prepare(
            "SELECT id, kind, label, CASE WHEN state = 'finished' THEN status ELSE state END, started_at, wall_ms
             FROM executions ORDER BY seq DESC LIMIT ?1",
        )?
        .query_map([RECENT], |r| {
            Ok(RecentExecution {
                id: r.get(0)?,
                kind: r.get(1)?,
                label: r.get(2)?,
                status: r.get(3)?,
                started_at: rfc3339(r.get(4)?),
                wall_ms: r.get(5)?,
            })
        })?
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let uploads = c
        .prepare(
            "SELECT path, size, modified_ms FROM files ORDER BY modified_ms DESC, path LIMIT ?1",
        )?
        .query_map([RECENT], |r| {
            Ok(RecentUpload {
                path: r.get(0)?,
                size: r.get(1)?,
                modified_at: rfc3339_ms(r.get(2)?),
            })
        })?
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let kv_changes = crate::store::kv::newest_changes(c, RECENT)?
        .into_iter()
        .map(|(revision, op, key, at)| RecentChange {
            revision,
            op,
            key,
            at: rfc3339_ms(at),
        })
        .collect();
    Ok(Activity {
        executions,
        uploads,
        kv_changes,
    })
}

impl Metrics {
    /// Everything the dashboard shows, from the newest sample and the database.
    pub async fn dashboard(&self) -> Result<Dashboard> {
        let activity = self.inner.db.read(recent).await?;
        let sample = self.latest();
        let cfg = self.inner.live.get();
        let fs = sample.as_ref().and_then(|s| s.filesystem.as_ref());
        let app = sample.as_ref().and_then(|s| s.app);
        let storage = Storage {
            state_dir: self.inner.state_dir.display().to_string(),
            filesystem: fs.map(|f| Filesystem {
                mountpoint: f.mountpoint.clone(),
                fstype: f.fstype.clone(),
                device: f.device.clone(),
                size_bytes: f.size,
                free_bytes: f.free,
                avail_bytes: f.avail,
                used_percent: round(f.used_percent()),
                readonly: f.readonly,
            }),
            kv_keys: app.map(|a| a.kv_keys),
            kv_bytes: app.map(|a| a.kv_bytes),
            files: app.map(|a| a.files),
            files_bytes: app.map(|a| a.files_bytes),
            files_quota_bytes: cfg.files.max_total_size.bytes(),
            database_bytes: u64::try_from(self.inner.db_bytes.get()).unwrap_or(0),
        };
        Ok(Dashboard {
            generated_at: rfc3339(crate::util::time::now_unix()),
            sampled_at: sample.as_ref().map(|s| rfc3339_at(s.at)),
            system: self.current().rounded(),
            storage,
            activity,
            alerts: self.alerts(),
            history: self.history(&[0, 1, 2], super::history::FINE_SPAN_S),
        })
    }
}
