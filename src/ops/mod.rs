//! Running the host: [`metrics`] (sampler, registry, history, alerts, dashboard), [`backup`]
//! (snapshots, verify, restore), [`health`] (the readiness report), [`system`] (the host's
//! facts), [`processes`] (the top processes), [`tunnels`] (supervised public tunnels) and
//! [`seed_import`] (a seed installation's data brought in).

pub mod backup;
pub mod health;
pub mod metrics;
pub mod processes;
pub mod seed_import;
pub mod system;
pub mod tunnels;
