//! Per-job memory cgroups. Two kinds:
//! - cgroup v2, where systemd delegated a writable subtree to us (`Delegate=yes`):
//!   `memory.max` (with swap off), `pids.max`, `cpu.max`. Layout under the daemon's own cgroup
//!   (cgroup v2 forbids processes in a cgroup that hands controllers to children): `daemon/`
//!   holds the daemon itself, `jobs/<id>/` each job.
//! - the cgroup v1 memory controller, when it is mounted and the daemon runs as root:
//!   `memory.limit_in_bytes` and, where swap is accounted, `memory.memsw.limit_in_bytes`, in
//!   `localhostd-<pid>/<id>/` under the daemon's own memory cgroup.
//!
//! Either way every page a job charges counts (heap, shared memory, memfd, stack, its tmpfs
//! files), and the OOM-kill count tells a `memory_limit` end apart. Without either, the
//! rlimits of `policy::MemoryBudget` hold the job.

use std::path::{Path, PathBuf};

/// Controllers we use, and must find delegated.
const NEEDED: &[&str] = &["memory", "pids"];

/// Where we may create job cgroups.
#[derive(Debug, Clone)]
pub struct Cgroups {
    jobs: PathBuf,
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A delegated cgroup v2 subtree; whether the cpu controller is there too.
    V2 { cpu: bool },
    /// The cgroup v1 memory controller; whether swap is accounted (`memory.memsw.*`).
    V1 { memsw: bool },
}

/// Limits written into a job's cgroup.
#[derive(Debug, Clone, Copy)]
pub struct CgroupLimits {
    pub memory_bytes: u64,
    pub pids: u64,
    /// CPU time per period, in CPUs (1.0 = one core).
    pub cpus: f64,
}

/// One job's cgroup; removed on drop (once its processes are gone).
#[derive(Debug)]
pub struct JobCgroup {
    dir: PathBuf,
    kind: Kind,
}

fn write(path: &Path, value: &str) -> Result<(), String> {
    std::fs::write(path, value).map_err(|e| format!("write {}: {e}", path.display()))
}

/// The cgroup path of `pid`-less self from /proc/self/cgroup (the unified "0::" line).
fn own_path(proc_self_cgroup: &str) -> Option<&str> {
    proc_self_cgroup.lines().find_map(|l| l.strip_prefix("0::"))
}

impl Cgroups {
    /// Looks for a usable delegated subtree: `sysfs` is the cgroup2 mount (/sys/fs/cgroup),
    /// `self_cgroup` the text of /proc/self/cgroup, `own_pid` ours (moved to `daemon/`).
    pub fn detect(sysfs: &Path, self_cgroup: &str, own_pid: u32) -> Result<Cgroups, String> {
        let rel =
            own_path(self_cgroup).ok_or("no cgroup v2 (unified) entry in /proc/self/cgroup")?;
        let rel = rel.trim().trim_start_matches('/');
        // Already moved by an earlier start in this cgroup: use the parent.
        let rel = rel.strip_suffix("/daemon").unwrap_or(rel);
        let base = sysfs.join(rel);
        let controllers = std::fs::read_to_string(base.join("cgroup.controllers"))
            .map_err(|e| format!("no cgroup v2 controllers file in {}: {e}", base.display()))?;
        let have: Vec<&str> = controllers.split_whitespace().collect();
        if let Some(missing) = NEEDED.iter().find(|c| !have.contains(c)) {
            return Err(format!(
                "controller {missing} is not delegated to {} (available: {controllers:?})",
                base.display()
            ));
        }
        let cpu = have.contains(&"cpu");
        let daemon = base.join("daemon");
        let jobs = base.join("jobs");
        for d in [&daemon, &jobs] {
            match std::fs::create_dir(d) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(format!(
                        "cannot create {} (is the subtree delegated?): {e}",
                        d.display()
                    ));
                }
            }
        }
        write(&daemon.join("cgroup.procs"), &own_pid.to_string())?;
        let mut enable: Vec<String> = NEEDED.iter().map(|c| format!("+{c}")).collect();
        if cpu {
            enable.push("+cpu".into());
        }
        let enable = enable.join(" ");
        write(&base.join("cgroup.subtree_control"), &enable)?;
        write(&jobs.join("cgroup.subtree_control"), &enable)?;
        Ok(Cgroups {
            jobs,
            kind: Kind::V2 { cpu },
        })
    }

    /// Looks for the cgroup v1 memory controller: `mounts` is the text of /proc/mounts,
    /// `self_cgroup` of /proc/self/cgroup, `own_pid` ours (it names our jobs' parent, so
    /// daemons sharing a cgroup never share it). Parents left by daemons that are gone
    /// (`alive` says no) are removed.
    pub fn detect_v1(
        mounts: &str,
        self_cgroup: &str,
        own_pid: u32,
        alive: impl Fn(u32) -> bool,
    ) -> Result<Cgroups, String> {
        let mount = mounts
            .lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() > 3 && f[2] == "cgroup" && f[3].split(',').any(|o| o == "memory"))
                    .then(|| PathBuf::from(f[1]))
            })
            .ok_or("no cgroup v1 memory controller in /proc/mounts")?;
        let rel = self_cgroup
            .lines()
            .find_map(|l| {
                let mut parts = l.splitn(3, ':');
                let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
                controllers
                    .split(',')
                    .any(|c| c == "memory")
                    .then_some(path)
            })
            .ok_or("no memory controller line in /proc/self/cgroup")?;
        let base = mount.join(rel.trim().trim_start_matches('/'));
        let memsw = base.join("memory.memsw.limit_in_bytes").exists();
        if !base.join("memory.limit_in_bytes").exists() {
            return Err(format!("{} has no memory.limit_in_bytes", base.display()));
        }
        if let Ok(dir) = std::fs::read_dir(&base) {
            for e in dir.flatten() {
                let name = e.file_name();
                let pid = name
                    .to_str()
                    .and_then(|n| n.strip_prefix("localhostd-"))
                    .and_then(|p| p.parse::<u32>().ok());
                if let Some(pid) = pid
                    && pid != own_pid
                    && !alive(pid)
                {
                    remove_tree(&e.path());
                }
            }
        }
        let jobs = base.join(format!("localhostd-{own_pid}"));
        match std::fs::create_dir(&jobs) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("cannot create {}: {e}", jobs.display())),
        }
        Ok(Cgroups {
            jobs,
            kind: Kind::V1 { memsw },
        })
    }

    /// The live system's: a delegated cgroup v2 subtree, else (as root) the cgroup v1 memory
    /// controller. The error says why neither is usable.
    pub fn detect_system() -> Result<Cgroups, String> {
        let text = std::fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| format!("read /proc/self/cgroup: {e}"))?;
        let v2 = match Cgroups::detect(Path::new("/sys/fs/cgroup"), &text, std::process::id()) {
            Ok(cg) => return Ok(cg),
            Err(e) => e,
        };
        if !nix::unistd::geteuid().is_root() {
            return Err(format!(
                "cgroup v2: {v2}; cgroup v1: only used when the daemon runs as root"
            ));
        }
        let mounts = std::fs::read_to_string("/proc/mounts")
            .map_err(|e| format!("read /proc/mounts: {e}"))?;
        Cgroups::detect_v1(&mounts, &text, std::process::id(), |pid| {
            Path::new(&format!("/proc/{pid}")).exists()
        })
        .map_err(|v1| format!("cgroup v2: {v2}; cgroup v1: {v1}"))
    }

    /// What the daemon's health says about these cgroups.
    pub fn describe(&self) -> String {
        match self.kind {
            Kind::V2 { .. } => format!(
                "delegated cgroup v2 subtree {}: jobs get memory.max, pids.max and cpu.max",
                self.jobs.display()
            ),
            Kind::V1 { memsw } => format!(
                "cgroup v1 memory controller {}: jobs get memory.limit_in_bytes{}",
                self.jobs.display(),
                if memsw {
                    " and memory.memsw.limit_in_bytes"
                } else {
                    " (swap is not accounted)"
                }
            ),
        }
    }

    /// Whether this is a delegated cgroup v2 subtree (else the v1 memory controller).
    pub fn delegated(&self) -> bool {
        matches!(self.kind, Kind::V2 { .. })
    }

    /// Creates `jobs/<id>` with the limits written.
    pub fn create(&self, id: &str, limits: CgroupLimits) -> Result<JobCgroup, String> {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(format!("invalid job id {id:?}"));
        }
        let dir = self.jobs.join(id);
        std::fs::create_dir(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let job = JobCgroup {
            dir,
            kind: self.kind,
        };
        job.limit(limits)?;
        Ok(job)
    }
}

impl JobCgroup {
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Writes `limits` (again: a warm sandbox's cgroup is narrowed to its job's limits when
    /// the job arrives).
    pub fn limit(&self, limits: CgroupLimits) -> Result<(), String> {
        match self.kind {
            Kind::V2 { cpu } => {
                write(
                    &self.dir.join("memory.max"),
                    &limits.memory_bytes.to_string(),
                )?;
                write(&self.dir.join("memory.swap.max"), "0")?;
                write(&self.dir.join("pids.max"), &limits.pids.to_string())?;
                if cpu {
                    let period: u64 = 100_000;
                    let quota = ((limits.cpus.max(0.01)) * period as f64).round() as u64;
                    write(&self.dir.join("cpu.max"), &format!("{quota} {period}"))?;
                }
            }
            Kind::V1 { memsw } => {
                let (memory, both) = (
                    self.dir.join("memory.limit_in_bytes"),
                    self.dir.join("memory.memsw.limit_in_bytes"),
                );
                let value = limits.memory_bytes.to_string();
                // memory+swap may never be below memory: lowering goes memory first,
                // raising memory+swap first.
                if !memsw {
                    write(&memory, &value)?;
                } else if write(&memory, &value).is_ok() {
                    write(&both, &value)?;
                } else {
                    write(&both, &value)?;
                    write(&memory, &value)?;
                }
            }
        }
        Ok(())
    }

    /// Moves `pid` (the job's helper, before it starts anything) into this cgroup.
    pub fn add(&self, pid: u32) -> Result<(), String> {
        write(&self.dir.join("cgroup.procs"), &pid.to_string())
    }

    /// SIGKILL to every process in this cgroup: the job's end reaches whatever of it left the
    /// PID namespace (its slirp4netns). `cgroup.kill` (v2, Linux 5.14 and later) kills them
    /// atomically; a v1 cgroup has no such file, so each pid listed in `cgroup.procs` is sent
    /// SIGKILL (a process forked meanwhile is in the PID namespace, which ends on its own).
    /// Best effort: the PID namespace's end does not depend on it.
    pub fn kill(&self) {
        if write(&self.dir.join("cgroup.kill"), "1").is_ok() {
            return;
        }
        let Ok(procs) = std::fs::read_to_string(self.dir.join("cgroup.procs")) else {
            return;
        };
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }

    /// How many times the kernel's OOM killer struck in this cgroup (`memory.events` in v2,
    /// `memory.oom_control` in v1; both have an `oom_kill` line).
    pub fn oom_kills(&self) -> u64 {
        std::fs::read_to_string(self.dir.join("memory.events"))
            .or_else(|_| std::fs::read_to_string(self.dir.join("memory.oom_control")))
            .ok()
            .and_then(|t| {
                t.lines().find_map(|l| {
                    l.strip_prefix("oom_kill ")
                        .and_then(|n| n.trim().parse().ok())
                })
            })
            .unwrap_or(0)
    }
}

/// Removes a v1 parent left by a daemon that is gone: its job cgroups (empty once their
/// processes are gone), then itself.
fn remove_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                let _ = std::fs::remove_dir(e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

impl Drop for JobCgroup {
    fn drop(&mut self) {
        // On cgroupfs rmdir works once the processes are gone; on a plain directory (tests)
        // the files we wrote are removed first.
        if std::fs::remove_dir(&self.dir).is_err() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_tree(controllers: &str) -> (tempfile::TempDir, String) {
        let root = tempfile::tempdir().unwrap();
        let svc = root.path().join("system.slice/localhostd.service");
        std::fs::create_dir_all(&svc).unwrap();
        std::fs::write(svc.join("cgroup.controllers"), controllers).unwrap();
        (root, "0::/system.slice/localhostd.service\n".into())
    }

    #[test]
    fn detect_moves_the_daemon_and_enables_controllers() {
        let (root, text) = fake_tree("cpuset cpu io memory pids\n");
        let cg = Cgroups::detect(root.path(), &text, 4242).unwrap();
        let svc = root.path().join("system.slice/localhostd.service");
        assert_eq!(
            std::fs::read_to_string(svc.join("daemon/cgroup.procs")).unwrap(),
            "4242"
        );
        assert_eq!(
            std::fs::read_to_string(svc.join("cgroup.subtree_control")).unwrap(),
            "+memory +pids +cpu"
        );
        assert_eq!(
            std::fs::read_to_string(svc.join("jobs/cgroup.subtree_control")).unwrap(),
            "+memory +pids +cpu"
        );

        let job = cg
            .create(
                "abc123",
                CgroupLimits {
                    memory_bytes: 256 << 20,
                    pids: 64,
                    cpus: 0.5,
                },
            )
            .unwrap();
        let read = |f: &str| std::fs::read_to_string(job.path().join(f)).unwrap();
        assert_eq!(read("memory.max"), (256u64 << 20).to_string());
        assert_eq!(read("memory.swap.max"), "0");
        assert_eq!(read("pids.max"), "64");
        assert_eq!(read("cpu.max"), "50000 100000");
        job.add(777).unwrap();
        assert_eq!(read("cgroup.procs"), "777");
        assert_eq!(job.oom_kills(), 0);
        std::fs::write(
            job.path().join("memory.events"),
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
        )
        .unwrap();
        assert_eq!(job.oom_kills(), 1);
        let dir = job.path().to_owned();
        drop(job);
        assert!(!dir.exists(), "job cgroup not removed");
        assert!(
            cg.create(
                "../escape",
                CgroupLimits {
                    memory_bytes: 1,
                    pids: 1,
                    cpus: 1.0
                }
            )
            .is_err()
        );
    }

    #[test]
    fn detect_refuses_without_the_needed_controllers() {
        let (root, text) = fake_tree("cpu io\n");
        let e = Cgroups::detect(root.path(), &text, 1).unwrap_err();
        assert!(e.contains("memory"), "{e}");
        assert!(Cgroups::detect(root.path(), "1:name=systemd:/x\n", 1).is_err());
    }

    #[test]
    fn a_restart_inside_the_daemon_leaf_uses_the_parent() {
        let (root, _) = fake_tree("memory pids\n");
        let cg = Cgroups::detect(
            root.path(),
            "0::/system.slice/localhostd.service/daemon\n",
            9,
        )
        .unwrap();
        assert_eq!(cg.kind, Kind::V2 { cpu: false });
        assert!(
            root.path()
                .join("system.slice/localhostd.service/jobs")
                .is_dir()
        );
    }

    #[test]
    fn v1_memory_controller_gives_each_daemon_its_parent_and_writes_the_limits() {
        let root = tempfile::tempdir().unwrap();
        let mem = root.path().join("memory");
        let own = mem.join("process_api/abc");
        std::fs::create_dir_all(own.join("localhostd-7/oldjob")).unwrap();
        std::fs::create_dir_all(own.join("localhostd-8")).unwrap();
        for f in ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"] {
            std::fs::write(own.join(f), "9223372036854771712").unwrap();
        }
        let mounts = format!(
            "cgroup {}/cpu cgroup rw,relatime,cpu 0 0\ncgroup {} cgroup rw,relatime,memory 0 0\n",
            root.path().display(),
            mem.display()
        );
        let text = "5:cpu:/\n4:memory:/process_api/abc\n0::/\n";
        let cg = Cgroups::detect_v1(&mounts, text, 42, |pid| pid == 8).unwrap();
        assert!(!cg.delegated());
        assert!(
            cg.describe().contains("memory.memsw.limit_in_bytes"),
            "{}",
            cg.describe()
        );
        assert!(
            !own.join("localhostd-7").exists(),
            "a dead daemon's parent stays"
        );
        assert!(
            own.join("localhostd-8").exists(),
            "a live daemon's parent was removed"
        );
        let job = cg
            .create(
                "j1",
                CgroupLimits {
                    memory_bytes: 64 << 20,
                    pids: 10,
                    cpus: 1.0,
                },
            )
            .unwrap();
        assert_eq!(job.path(), own.join("localhostd-42/j1"));
        let read = |f: &str| std::fs::read_to_string(job.path().join(f)).unwrap();
        assert_eq!(read("memory.limit_in_bytes"), (64u64 << 20).to_string());
        assert_eq!(
            read("memory.memsw.limit_in_bytes"),
            (64u64 << 20).to_string()
        );
        assert!(!job.path().join("pids.max").exists());
        std::fs::write(
            job.path().join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        )
        .unwrap();
        assert_eq!(job.oom_kills(), 2);

        let e = Cgroups::detect_v1("cgroup /x cgroup rw,cpu 0 0\n", text, 1, |_| true).unwrap_err();
        assert!(e.contains("memory"), "{e}");
    }
}
