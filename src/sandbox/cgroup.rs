//! Per-job cgroup v2 limits where systemd delegated a writable subtree to us (`Delegate=yes`):
//! `memory.max` (with swap off), `pids.max`, `cpu.max`, and the OOM-kill count that tells a
//! `memory_limit` end apart. Optional: without a delegated subtree the rlimits still apply.
//!
//! Layout under the daemon's own cgroup (cgroup v2 forbids processes in a cgroup that hands
//! controllers to children): `daemon/` holds the daemon itself, `jobs/<id>/` each job.

use std::path::{Path, PathBuf};

/// Controllers we use, and must find delegated.
const NEEDED: &[&str] = &["memory", "pids"];

/// A delegated subtree we may create job cgroups in.
#[derive(Debug, Clone)]
pub struct Cgroups {
    jobs: PathBuf,
    cpu: bool,
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
        Ok(Cgroups { jobs, cpu })
    }

    /// The live system's subtree, if delegated to us.
    pub fn detect_system() -> Result<Cgroups, String> {
        let text = std::fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| format!("read /proc/self/cgroup: {e}"))?;
        Cgroups::detect(Path::new("/sys/fs/cgroup"), &text, std::process::id())
    }

    /// Creates `jobs/<id>` with the limits written.
    pub fn create(&self, id: &str, limits: CgroupLimits) -> Result<JobCgroup, String> {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(format!("invalid job id {id:?}"));
        }
        let dir = self.jobs.join(id);
        std::fs::create_dir(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let job = JobCgroup { dir };
        write(
            &job.dir.join("memory.max"),
            &limits.memory_bytes.to_string(),
        )?;
        write(&job.dir.join("memory.swap.max"), "0")?;
        write(&job.dir.join("pids.max"), &limits.pids.to_string())?;
        if self.cpu {
            let period: u64 = 100_000;
            let quota = ((limits.cpus.max(0.01)) * period as f64).round() as u64;
            write(&job.dir.join("cpu.max"), &format!("{quota} {period}"))?;
        }
        Ok(job)
    }
}

impl JobCgroup {
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Moves `pid` (the job's helper, before it starts anything) into this cgroup.
    pub fn add(&self, pid: u32) -> Result<(), String> {
        write(&self.dir.join("cgroup.procs"), &pid.to_string())
    }

    /// SIGKILL to every process in this cgroup (`cgroup.kill`, Linux 5.14 and later): the
    /// job's end reaches whatever of it left the PID namespace (its slirp4netns). Best effort:
    /// the PID namespace's end does not depend on it.
    pub fn kill(&self) {
        let _ = write(&self.dir.join("cgroup.kill"), "1");
    }

    /// How many times the kernel's OOM killer struck in this cgroup.
    pub fn oom_kills(&self) -> u64 {
        std::fs::read_to_string(self.dir.join("memory.events"))
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
        assert!(!cg.cpu);
        assert!(
            root.path()
                .join("system.slice/localhostd.service/jobs")
                .is_dir()
        );
    }
}
