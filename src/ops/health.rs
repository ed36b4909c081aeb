//! Health and readiness of the daemon's parts, as data: whether the database writer commits,
//! whether the state directory's filesystem has room, and what the daemon is.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tokio::sync::watch;

use crate::config::LiveConfig;
use crate::store::db::{self, Db};
use crate::util::disk::free_bytes;

/// How long a readiness probe waits for the database before calling it failed.
const DB_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Facts fixed at startup plus handles to probe the live parts.
pub struct Health {
    pub db: Db,
    pub state_dir: PathBuf,
    pub live: Arc<LiveConfig>,
    pub started: Instant,
    pub started_at: SystemTime,
    /// Number of sockets we serve on, and whether systemd passed them.
    pub listeners: usize,
    pub socket_activated: bool,
    /// Whether jobs get cgroup limits, and why not.
    pub job_cgroups: String,
    /// Whether a delegated cgroup v2 subtree limits jobs (else the v1 memory controller or
    /// rlimits).
    pub cgroups_delegated: bool,
    /// What holds jobs to their memory limit: a memory cgroup or rlimits.
    pub memory_limited_by: crate::jobs::sandbox::MemoryLimitedBy,
    /// Turns true when shutdown starts: from then on we are not ready.
    pub shutting_down: watch::Receiver<bool>,
}

/// One component's state.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

/// `GET /api/v1/health`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Report {
    pub status: &'static str,
    pub version: &'static str,
    pub started_at: String,
    pub uptime_s: u64,
    pub components: Vec<Component>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Component {
    pub name: &'static str,
    pub status: &'static str,
    #[serde(flatten)]
    #[schema(value_type = std::collections::HashMap<String, crate::util::schema::AnyJson>)]
    pub facts: serde_json::Map<String, serde_json::Value>,
}

impl Health {
    /// Readiness: the database commits a real write (a heartbeat row, fsync'd) within
    /// `DB_CHECK_TIMEOUT`, the state dir has more free space than `storage.min-free-disk`,
    /// and shutdown has not begun.
    pub async fn readiness(&self) -> Vec<Check> {
        let mut checks = Vec::with_capacity(3);
        let now = crate::util::time::rfc3339_at(SystemTime::now());
        let write = self.db.write(move |c| {
            c.execute(
                "INSERT INTO meta(key, value) VALUES ('last_ready_check', ?1)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                [now],
            )?;
            Ok(())
        });
        checks.push(match tokio::time::timeout(DB_CHECK_TIMEOUT, write).await {
            Ok(Ok(())) => Check {
                name: "database",
                ok: true,
                detail: "write transaction committed".into(),
            },
            Ok(Err(e)) => Check {
                name: "database",
                ok: false,
                detail: format!("write transaction failed: {e}"),
            },
            Err(_) => Check {
                name: "database",
                ok: false,
                detail: format!(
                    "write transaction did not commit within {}s",
                    DB_CHECK_TIMEOUT.as_secs()
                ),
            },
        });
        checks.push(self.disk_check());
        let stopping = *self.shutting_down.borrow();
        checks.push(Check {
            name: "lifecycle",
            ok: !stopping,
            detail: if stopping {
                "shutting down".into()
            } else {
                "serving".into()
            },
        });
        checks
    }

    fn disk_check(&self) -> Check {
        let floor = self.live.get().storage.min_free_disk;
        match free_bytes(&self.state_dir) {
            Ok(free) if free >= floor.bytes() => Check {
                name: "disk",
                ok: true,
                detail: format!(
                    "{free} bytes free in {} (floor {floor})",
                    self.state_dir.display()
                ),
            },
            Ok(free) => Check {
                name: "disk",
                ok: false,
                detail: format!(
                    "only {free} bytes free in {}, below storage.min-free-disk ({floor})",
                    self.state_dir.display()
                ),
            },
            Err(e) => Check {
                name: "disk",
                ok: false,
                detail: format!("cannot stat {}: {e}", self.state_dir.display()),
            },
        }
    }

    /// The JSON health report: version, uptime and each component's state. Secrets never appear.
    pub async fn report(&self) -> Report {
        let writer_ok = self.db.writer_answers(DB_CHECK_TIMEOUT).await;
        let mut components = Vec::new();
        let mut db_facts = serde_json::Map::new();
        db_facts.insert("schema_version".into(), db::SCHEMA_VERSION.into());
        db_facts.insert(
            "writer".into(),
            if writer_ok {
                "answering"
            } else {
                "not answering"
            }
            .into(),
        );
        components.push(Component {
            name: "database",
            status: ok_str(writer_ok),
            facts: db_facts,
        });
        let disk = self.disk_check();
        let mut disk_facts = serde_json::Map::new();
        if let Ok(free) = free_bytes(&self.state_dir) {
            disk_facts.insert("free_bytes".into(), free.into());
        }
        disk_facts.insert(
            "min_free_bytes".into(),
            self.live.get().storage.min_free_disk.bytes().into(),
        );
        components.push(Component {
            name: "disk",
            status: ok_str(disk.ok),
            facts: disk_facts,
        });
        let mut l = serde_json::Map::new();
        l.insert("count".into(), self.listeners.into());
        l.insert("socket_activated".into(), self.socket_activated.into());
        components.push(Component {
            name: "listeners",
            status: "ok",
            facts: l,
        });
        let mut cg = serde_json::Map::new();
        cg.insert("delegated".into(), self.cgroups_delegated.into());
        cg.insert(
            "memory_limited_by".into(),
            self.memory_limited_by.as_str().into(),
        );
        cg.insert("detail".into(), self.job_cgroups.clone().into());
        components.push(Component {
            name: "job_cgroups",
            status: "ok",
            facts: cg,
        });
        let all_ok = components.iter().all(|c| c.status == "ok");
        Report {
            status: if all_ok { "ok" } else { "degraded" },
            version: env!("CARGO_PKG_VERSION"),
            started_at: crate::util::time::rfc3339_at(self.started_at),
            uptime_s: self.started.elapsed().as_secs(),
            components,
        }
    }
}

fn ok_str(ok: bool) -> &'static str {
    if ok { "ok" } else { "failing" }
}
