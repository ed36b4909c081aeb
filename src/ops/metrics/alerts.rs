//! Alerts: each threshold of `[alerts]` checked on every sample, through a small state machine
//! (ok → pending → firing → resolved) with `alerts.hold` on both edges so a value hovering
//! around its threshold does not flap. Transitions are logged with structured fields (`alert`,
//! `alert_state`, `value`, `threshold`, `hold_s`): firing at warn level (journald PRIORITY=4
//! through tracing-journald's level mapping), pending and resolved at info (PRIORITY=5).

use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::config::AlertsConfig;
use crate::util::time::rfc3339_at;

/// The alerts, in the order they are listed.
pub const NAMES: [&str; 4] = ["disk_used", "memory_low", "load_high", "executions_failing"];

/// The values an evaluation looks at; `None` when its collector had nothing this round
/// (the alert then keeps its state).
#[derive(Debug, Clone, Copy, Default)]
pub struct Inputs {
    pub disk_used_percent: Option<f64>,
    pub memory_available_percent: Option<f64>,
    pub load_per_cpu: Option<f64>,
    pub failed_executions_per_minute: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Never fired (or disabled).
    Ok,
    /// The condition holds since `since`; fires once it held for `alerts.hold`.
    Pending {
        since: Instant,
        back_to_resolved: bool,
    },
    /// Firing; `clearing` is when the condition last stopped holding, if it has.
    Firing { clearing: Option<Instant> },
    /// Fired once and is over.
    Resolved,
}

#[derive(Debug, Clone)]
struct Alert {
    name: &'static str,
    phase: Phase,
    value: Option<f64>,
    threshold: f64,
    changed_at: SystemTime,
    fired_at: Option<SystemTime>,
    resolved_at: Option<SystemTime>,
}

/// An alert as `GET /api/v1/alerts` lists it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = Alert)]
pub struct View {
    pub name: &'static str,
    /// `ok`, `pending`, `firing` or `resolved`.
    pub state: &'static str,
    pub description: String,
    pub value: Option<f64>,
    pub threshold: f64,
    /// When the alert entered its current state (RFC 3339).
    pub since: String,
    pub fired_at: Option<String>,
    pub resolved_at: Option<String>,
}

/// What changed in one evaluation, for STATUS= and the firing gauge.
#[derive(Debug, Clone, Default)]
pub struct Changes {
    pub fired: Vec<&'static str>,
    pub resolved: Vec<&'static str>,
}

impl Changes {
    pub fn any(&self) -> bool {
        !self.fired.is_empty() || !self.resolved.is_empty()
    }
}

#[derive(Debug)]
pub struct Alerts {
    list: Vec<Alert>,
}

impl Default for Alerts {
    fn default() -> Self {
        Alerts {
            list: NAMES
                .iter()
                .map(|name| Alert {
                    name,
                    phase: Phase::Ok,
                    value: None,
                    threshold: 0.0,
                    changed_at: SystemTime::now(),
                    fired_at: None,
                    resolved_at: None,
                })
                .collect(),
        }
    }
}

fn describe(name: &str, threshold: f64) -> String {
    match name {
        "disk_used" => format!("the state directory's filesystem is more than {threshold}% full"),
        "memory_low" => format!("less than {threshold}% of memory is available"),
        "load_high" => format!("the 1-minute load per CPU is above {threshold}"),
        _ => format!("more than {threshold} executions per minute fail"),
    }
}

impl Alerts {
    /// Checks every threshold against `inputs` at `now`; logs and returns the transitions.
    pub fn evaluate(&mut self, cfg: &AlertsConfig, inputs: &Inputs, now: Instant) -> Changes {
        let mut changes = Changes::default();
        let hold = cfg.hold.get();
        for a in &mut self.list {
            let (value, threshold, holds) = match a.name {
                "disk_used" => {
                    let v = inputs.disk_used_percent;
                    (
                        v,
                        cfg.disk_used_percent,
                        v.map(|v| v > cfg.disk_used_percent),
                    )
                }
                "memory_low" => {
                    let v = inputs.memory_available_percent;
                    (
                        v,
                        cfg.memory_available_percent,
                        v.map(|v| v < cfg.memory_available_percent),
                    )
                }
                "load_high" => {
                    let v = inputs.load_per_cpu;
                    (v, cfg.load_per_cpu, v.map(|v| v > cfg.load_per_cpu))
                }
                _ => {
                    let v = inputs.failed_executions_per_minute;
                    (
                        v,
                        cfg.failed_executions_per_minute,
                        v.map(|v| v > cfg.failed_executions_per_minute),
                    )
                }
            };
            a.threshold = threshold;
            if value.is_some() {
                a.value = value;
            }
            let holds = if cfg.enabled { holds } else { Some(false) };
            let Some(holds) = holds else { continue };
            let next = step(a.phase, holds, now, hold);
            if next == a.phase {
                continue;
            }
            let was_firing = matches!(a.phase, Phase::Firing { .. });
            let is_firing = matches!(next, Phase::Firing { .. });
            a.phase = next;
            if was_firing && is_firing {
                // Only the clearing mark moved.
                continue;
            }
            let wall = SystemTime::now();
            a.changed_at = wall;
            if is_firing {
                a.fired_at = Some(wall);
                changes.fired.push(a.name);
                tracing::warn!(
                    alert = a.name,
                    alert_state = "firing",
                    value = a.value.unwrap_or(f64::NAN),
                    threshold,
                    hold_s = hold.as_secs_f64(),
                    "alert firing: {}",
                    describe(a.name, threshold)
                );
            } else if was_firing {
                a.resolved_at = Some(wall);
                changes.resolved.push(a.name);
                tracing::info!(
                    alert = a.name,
                    alert_state = "resolved",
                    value = a.value.unwrap_or(f64::NAN),
                    threshold,
                    hold_s = hold.as_secs_f64(),
                    "alert resolved: {}",
                    describe(a.name, threshold)
                );
            } else if matches!(next, Phase::Pending { .. }) {
                tracing::info!(
                    alert = a.name,
                    alert_state = "pending",
                    value = a.value.unwrap_or(f64::NAN),
                    threshold,
                    hold_s = hold.as_secs_f64(),
                    "alert pending: {}",
                    describe(a.name, threshold)
                );
            }
        }
        changes
    }

    /// Every alert with its state.
    pub fn list(&self) -> Vec<View> {
        self.list
            .iter()
            .map(|a| View {
                name: a.name,
                state: match a.phase {
                    Phase::Ok => "ok",
                    Phase::Pending { .. } => "pending",
                    Phase::Firing { .. } => "firing",
                    Phase::Resolved => "resolved",
                },
                description: describe(a.name, a.threshold),
                value: a.value,
                threshold: a.threshold,
                since: rfc3339_at(a.changed_at),
                fired_at: a.fired_at.map(rfc3339_at),
                resolved_at: a.resolved_at.map(rfc3339_at),
            })
            .collect()
    }

    /// Names and values of the alerts firing now, e.g. `disk_used (93.1 > 90)`.
    pub fn firing(&self) -> Vec<String> {
        self.list
            .iter()
            .filter(|a| matches!(a.phase, Phase::Firing { .. }))
            .map(|a| match a.value {
                Some(v) => format!("{} ({v:.1} vs {})", a.name, a.threshold),
                None => a.name.to_owned(),
            })
            .collect()
    }

    /// Whether `name` fires now.
    pub fn is_firing(&self, name: &str) -> bool {
        self.list
            .iter()
            .any(|a| a.name == name && matches!(a.phase, Phase::Firing { .. }))
    }
}

/// One step of the state machine.
fn step(phase: Phase, holds: bool, now: Instant, hold: Duration) -> Phase {
    match (phase, holds) {
        (Phase::Ok, true) => Phase::Pending {
            since: now,
            back_to_resolved: false,
        },
        (Phase::Resolved, true) => Phase::Pending {
            since: now,
            back_to_resolved: true,
        },
        (Phase::Ok | Phase::Resolved, false) => phase,
        (Phase::Pending { since, .. }, true) if now.duration_since(since) >= hold => {
            Phase::Firing { clearing: None }
        }
        (Phase::Pending { .. }, true) => phase,
        (
            Phase::Pending {
                back_to_resolved, ..
            },
            false,
        ) => {
            if back_to_resolved {
                Phase::Resolved
            } else {
                Phase::Ok
            }
        }
        (Phase::Firing { .. }, true) => Phase::Firing { clearing: None },
        (Phase::Firing { clearing: None }, false) => Phase::Firing {
            clearing: Some(now),
        },
        (Phase::Firing { clearing: Some(t) }, false) if now.duration_since(t) >= hold => {
            Phase::Resolved
        }
        (Phase::Firing { .. }, false) => phase,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(hold_s: u64) -> AlertsConfig {
        AlertsConfig {
            disk_used_percent: 50.0,
            hold: crate::config::HumanDuration(Duration::from_secs(hold_s)),
            ..AlertsConfig::default()
        }
    }

    fn disk(v: f64) -> Inputs {
        Inputs {
            disk_used_percent: Some(v),
            ..Inputs::default()
        }
    }

    fn state(a: &Alerts) -> &'static str {
        a.list()[0].state
    }

    #[test]
    fn fires_only_after_hold_and_resolves_only_after_hold() {
        let c = cfg(60);
        let mut a = Alerts::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert!(!a.evaluate(&c, &disk(70.0), at(0)).any());
        assert_eq!(state(&a), "pending");
        // Dips below before the hold: back to ok, nothing fired (no flapping).
        a.evaluate(&c, &disk(40.0), at(30));
        assert_eq!(state(&a), "ok");
        a.evaluate(&c, &disk(70.0), at(40));
        assert!(!a.evaluate(&c, &disk(70.0), at(90)).any());
        let ch = a.evaluate(&c, &disk(70.0), at(100));
        assert_eq!(ch.fired, vec!["disk_used"]);
        assert_eq!(state(&a), "firing");
        assert_eq!(a.firing().len(), 1);
        // Clears briefly: still firing; comes back: the clearing mark is forgotten.
        a.evaluate(&c, &disk(40.0), at(110));
        a.evaluate(&c, &disk(70.0), at(150));
        a.evaluate(&c, &disk(40.0), at(160));
        assert!(!a.evaluate(&c, &disk(40.0), at(200)).any());
        assert_eq!(state(&a), "firing");
        let ch = a.evaluate(&c, &disk(40.0), at(220));
        assert_eq!(ch.resolved, vec!["disk_used"]);
        assert_eq!(state(&a), "resolved");
        assert!(a.list()[0].fired_at.is_some() && a.list()[0].resolved_at.is_some());
        // A missing value keeps the state.
        a.evaluate(&c, &Inputs::default(), at(300));
        assert_eq!(state(&a), "resolved");
    }

    #[test]
    fn memory_fires_below_and_disabled_alerts_never_fire() {
        let mut c = cfg(0);
        let mut a = Alerts::default();
        let low = Inputs {
            memory_available_percent: Some(5.0),
            ..Inputs::default()
        };
        let t = Instant::now();
        a.evaluate(&c, &low, t);
        a.evaluate(&c, &low, t);
        assert!(a.is_firing("memory_low"));
        c.enabled = false;
        a.evaluate(&c, &low, t);
        a.evaluate(&c, &low, t);
        assert!(!a.is_firing("memory_low"));
    }
}
