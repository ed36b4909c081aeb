//! Running the host: [`metrics`] (sampler, registry, history, alerts, dashboard), [`backup`]
//! (snapshots, verify, restore), [`health`] (the readiness report), [`system`] (the host's
//! facts), [`processes`] (the top processes) and [`tunnels`] (public tunnels to the API).

pub mod backup;
pub mod health;
pub mod metrics;
pub mod processes;
pub mod system;
pub mod tunnels;
