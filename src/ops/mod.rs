//! Running the host: [`metrics`] (sampler, registry, history, alerts, dashboard), [`backup`]
//! (snapshots, verify, restore), [`health`] (the readiness report), [`system`] (the host's
//! facts) and [`processes`] (the top processes).

pub mod backup;
pub mod health;
pub mod metrics;
pub mod processes;
pub mod system;
