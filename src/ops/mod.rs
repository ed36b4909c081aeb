//! Running the host: [`metrics`] (sampler, registry, history, alerts, dashboard), [`backup`]
//! (snapshots, verify, restore) and [`health`] (the readiness report).

pub mod backup;
pub mod health;
pub mod metrics;
