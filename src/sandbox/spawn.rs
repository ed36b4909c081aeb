//! The parent side: starting the sandbox helper for a job.
//!
//! The daemon is multi-threaded, so between fork and exec only async-signal-safe calls run:
//! `dup2` of two prepared descriptors and `prctl(PR_SET_PDEATHSIG)`; everything else (the
//! policy, pipes, the command line) is prepared before the fork. The helper is our own binary
//! re-executed in its single-threaded `sandbox-helper` mode, where building the sandbox may
//! allocate freely.
//!
//! Spawns happen on one dedicated thread that lives as long as the process: the parent-death
//! signal fires when the *thread* that forked exits, so a short-lived blocking-pool thread
//! would kill jobs early. When the daemon dies (even by SIGKILL) the helper gets SIGKILL,
//! its init gets SIGKILL in turn, and the kernel ends the job's whole PID namespace.

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::Stdio;

use tokio::sync::oneshot;

use super::child::Report;
use super::policy::Policy;
use crate::error::{Error, Result};

struct SpawnRequest {
    cmd: tokio::process::Command,
    reply: oneshot::Sender<std::io::Result<tokio::process::Child>>,
}

/// Starts sandbox helpers. Cheap to clone.
#[derive(Clone)]
pub struct Sandbox {
    tx: std::sync::mpsc::Sender<SpawnRequest>,
    helper: PathBuf,
}

/// A job whose helper is running.
pub struct Running {
    pub child: tokio::process::Child,
    pub stdout: tokio::process::ChildStdout,
    pub stderr: tokio::process::ChildStderr,
    report: OwnedFd,
}

impl Sandbox {
    /// `helper` is the binary to run as `helper sandbox-helper`: `/proc/self/exe` in the
    /// daemon (the running binary, even if the file was replaced by an upgrade).
    pub fn start(helper: PathBuf, runtime: tokio::runtime::Handle) -> Result<Sandbox> {
        let (tx, rx) = std::sync::mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("sandbox-spawner".into())
            .spawn(move || {
                let _guard = runtime.enter();
                while let Ok(mut req) = rx.recv() {
                    let _ = req.reply.send(req.cmd.spawn());
                }
            })?;
        Ok(Sandbox { tx, helper })
    }

    /// Starts the helper for `policy`; the job's stdin is fed from `stdin` in the background.
    pub async fn spawn(&self, policy: &Policy, stdin: Vec<u8>) -> Result<Running> {
        self.spawn_in(policy, stdin, None).await
    }

    /// Like `spawn`, moving the helper into `cgroup` before it reads its policy (so before it
    /// starts anything).
    pub async fn spawn_in(
        &self,
        policy: &Policy,
        stdin: Vec<u8>,
        cgroup: Option<&super::JobCgroup>,
    ) -> Result<Running> {
        policy.validate().map_err(Error::Invalid)?;
        let payload =
            serde_json::to_vec(policy).map_err(|e| Error::Internal(format!("policy: {e}")))?;
        let (policy_r, policy_w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)?;
        let (report_r, report_w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)?;
        let (pr, rw) = (policy_r.as_raw_fd(), report_w.as_raw_fd());
        // SAFETY: getpid cannot fail; read before the fork, compared after it.
        let parent = unsafe { libc::getpid() };
        let mut cmd = tokio::process::Command::new(&self.helper);
        cmd.arg("sandbox-helper")
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // SAFETY: between fork and exec this closure calls only dup2, prctl, getppid and
        // _exit, all async-signal-safe; it allocates nothing and takes no lock.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(pr, 3) < 0 || libc::dup2(rw, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                ) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(SpawnRequest { cmd, reply })
            .map_err(|_| Error::Unavailable("the sandbox spawner stopped".into()))?;
        let mut child = rx
            .await
            .map_err(|_| Error::Unavailable("the sandbox spawner stopped".into()))?
            .map_err(|e| {
                Error::Internal(format!(
                    "cannot start the sandbox helper {}: {e}",
                    self.helper.display()
                ))
            })?;
        drop(policy_r);
        drop(report_w);
        if let (Some(cg), Some(pid)) = (cgroup, child.id())
            && let Err(e) = cg.add(pid)
        {
            let _ = child.start_kill();
            return Err(Error::Internal(format!(
                "cannot move the job into its cgroup: {e}"
            )));
        }
        // The policy is small; a pipe holds 64 KiB, larger ones are written off the runtime.
        let mut pw = std::fs::File::from(policy_w);
        if payload.len() < 60_000 {
            pw.write_all(&payload)?;
            drop(pw);
        } else {
            tokio::task::spawn_blocking(move || {
                let _ = pw.write_all(&payload);
            });
        }
        let (stdout, stderr) = match (child.stdout.take(), child.stderr.take()) {
            (Some(o), Some(e)) => (o, e),
            _ => return Err(Error::Internal("helper pipes missing".into())),
        };
        if let Some(mut input) = child.stdin.take() {
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                let _ = input.write_all(&stdin).await;
            });
        }
        Ok(Running {
            child,
            stdout,
            stderr,
            report: report_r,
        })
    }
}

impl Running {
    /// The helper's report, once it has exited (reads its report pipe to EOF).
    pub async fn report(self) -> Result<Report> {
        let fd = self.report;
        let text = tokio::task::spawn_blocking(move || {
            use std::io::Read;
            let mut s = String::new();
            std::fs::File::from(fd).read_to_string(&mut s).map(|_| s)
        })
        .await
        .map_err(|e| Error::Internal(format!("report reader: {e}")))??;
        if text.trim().is_empty() {
            return Ok(Report {
                kind: "killed".into(),
                ..Report::default()
            });
        }
        serde_json::from_str(&text)
            .map_err(|e| Error::Internal(format!("bad report from the sandbox helper: {e}")))
    }
}
