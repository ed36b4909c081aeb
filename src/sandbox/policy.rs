//! What a job may do, as plain data: the command, its environment, limits and whether it has a
//! network. Built by the daemon, sent to the sandbox helper as JSON, validated on both sides.

use serde::{Deserialize, Serialize};

/// Limits applied to one job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// CPU seconds (RLIMIT_CPU; SIGXCPU at the limit, SIGKILL a second later).
    pub cpu_s: u64,
    /// Data segment in bytes (RLIMIT_DATA: heap and private mappings; RLIMIT_AS would break
    /// JIT runtimes).
    pub data_bytes: u64,
    /// Processes and threads of the job (RLIMIT_NPROC, counted in the job's user namespace).
    pub processes: u64,
    /// Largest file the job may write (RLIMIT_FSIZE).
    pub file_size_bytes: u64,
    /// Open files (RLIMIT_NOFILE).
    pub open_files: u64,
    /// Size of the scratch tmpfs (the working directory) and of /tmp and /dev/shm each.
    pub tmpfs_bytes: u64,
    /// Inodes on each tmpfs.
    pub tmpfs_inodes: u64,
}

/// Everything the helper needs to build the sandbox and start the job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Policy {
    /// The program and its arguments; `argv[0]` is looked up in PATH when it has no `/`.
    pub argv: Vec<String>,
    /// The whole environment of the job (already filtered by the daemon).
    pub env: Vec<(String, String)>,
    /// Working directory inside the sandbox (the scratch tmpfs).
    pub cwd: String,
    pub limits: Limits,
    /// A network namespace with user-space egress; otherwise loopback only.
    pub network: bool,
    /// The unprivileged uid/gid to become before unsharing (when the daemon runs as root).
    pub run_as: Option<(u32, u32)>,
    /// Host directories shown read-only inside, as (host path, path inside).
    pub ro_binds: Vec<(String, String)>,
    /// Run without landlock when the kernel lacks it (config `sandbox.allow-degraded`).
    pub allow_degraded: bool,
}

/// The uid and gid the job has inside its user namespace.
pub const INSIDE_ID: u32 = 1000;
/// The scratch directory inside (the job's cwd and HOME).
pub const SCRATCH: &str = "/work";

impl Policy {
    /// Rejects what cannot be run: an empty argv, NUL bytes, bad environment names, relative
    /// or overlapping bind targets.
    pub fn validate(&self) -> Result<(), String> {
        if self.argv.is_empty() || self.argv[0].is_empty() {
            return Err("argv must name a program".into());
        }
        if self.argv.iter().any(|a| a.contains('\0')) {
            return Err("arguments must not contain NUL bytes".into());
        }
        for (k, v) in &self.env {
            let ok = !k.is_empty()
                && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && !k.as_bytes()[0].is_ascii_digit();
            if !ok || v.contains('\0') {
                return Err(format!("invalid environment variable name {k:?}"));
            }
        }
        for (host, inside) in &self.ro_binds {
            if !host.starts_with('/')
                || !inside.starts_with('/')
                || inside.contains("..")
                || host.contains("..")
            {
                return Err(format!(
                    "bind {host:?} -> {inside:?} must use absolute paths without .."
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn sample() -> Policy {
        Policy {
            argv: vec!["/bin/true".into()],
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            cwd: SCRATCH.into(),
            limits: Limits {
                cpu_s: 10,
                data_bytes: 1 << 30,
                processes: 64,
                file_size_bytes: 1 << 26,
                open_files: 256,
                tmpfs_bytes: 1 << 26,
                tmpfs_inodes: 4096,
            },
            network: false,
            run_as: None,
            ro_binds: vec![],
            allow_degraded: false,
        }
    }

    #[test]
    fn validation_refuses_what_cannot_run() {
        assert!(sample().validate().is_ok());
        let mut p = sample();
        p.argv.clear();
        assert!(p.validate().is_err());
        let mut p = sample();
        p.argv.push("a\0b".into());
        assert!(p.validate().is_err());
        let mut p = sample();
        p.env.push(("BAD-NAME".into(), "x".into()));
        assert!(p.validate().is_err());
        let mut p = sample();
        p.ro_binds.push(("/srv/p".into(), "/prog/../etc".into()));
        assert!(p.validate().is_err());
    }
}
