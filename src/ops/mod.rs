//! Running the host: [`metrics`] (sampler, registry, history, alerts, dashboard), [`backup`]
//! (snapshots, verify, restore), [`health`] (the readiness report), [`system`] (the host's
//! facts), [`processes`] (the top processes) and [`tunnels`] (supervised public tunnels).

pub mod backup;
pub mod health;
pub mod metrics;
pub mod processes;
pub mod system;
pub mod tunnels;
