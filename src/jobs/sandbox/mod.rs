//! The sandbox: every job (command, program run) runs as a child in its own user, PID, mount,
//! network, IPC, UTS and cgroup namespaces, sees the system read-only, has tmpfs scratch,
//! /tmp and /dev/shm, no capabilities, landlock, a seccomp deny-list and rlimits.
//!
//! - `policy`: what a job may do, as plain data.
//! - `seccomp`: the filters, built as data.
//! - `net`: the `net` profile's egress (slirp4netns outside the job's network namespace) and its
//!   reach (public IPv4 only, routes in the job's namespace).
//! - `cgroup`: per-job cgroup v2 limits where a subtree is delegated (optional).
//! - `spawn`: the daemon's side (asks the zygote for a helper per job, watches it by pidfd).
//! - `zygote`: a small single-threaded process started once that forks a helper per job.
//! - `child`: the helper's side, a single-threaded re-exec of our binary that builds the
//!   sandbox.
//!
//! The system calls no safe wrapper offers are `unsafe`, each with its `// SAFETY:` comment:
//! most are in `child`, the rest in `zygote`, `spawn` and `net`; `policy`, `seccomp` and
//! `cgroup` have none.

pub mod beneath;
pub mod cgroup;
pub mod child;
mod net;
pub mod policy;
pub mod seccomp;
mod spawn;
pub mod zygote;

pub use cgroup::{CgroupLimits, Cgroups, JobCgroup};
pub use child::{Report, ReportKind, Warm};
pub use policy::{
    Cidr, InlineFile, JobMount, Limits, MemoryBudget, MemoryLimitedBy, NOBODY_ID, NetPorts, Policy,
    SCRATCH, TerminalSize,
};
pub use spawn::{Exit, Running, Sandbox, Terminal, WarmSandbox};
