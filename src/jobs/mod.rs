//! Work run on the host's behalf: [`exec`] queues, limits and records jobs (its
//! `executions` holds those in progress for their owners); [`data`] is what they see of the
//! user's data (mounts, inline files) and bring back (outputs); [`runtimes`] says which
//! interpreters jobs can run here; [`terminals`] are
//! interactive jobs on a pseudo-terminal that clients attach to; [`sandbox`] is the
//! confinement every job runs in (policy as data, spawn, the zygote, the helper that builds
//! it, seccomp, network, cgroups).

pub mod data;
pub mod exec;
pub mod runtimes;
pub mod sandbox;
pub mod terminals;
