//! The daemon's side: asking the zygote for a sandbox helper per job.
//!
//! The daemon is multi-threaded, so it never forks per job. It starts one zygote (our binary
//! re-executed in its single-threaded `sandbox-zygote` mode, see `zygote`) and sends it, per
//! job, the job's pipes, the policy pipe, the report pipe and the job's cgroup directory; the
//! zygote forks a helper and answers with its pid and a pidfd. The daemon watches the helper
//! through the pidfd (exit, SIGKILL): a pidfd names one process forever, so a kill can never
//! reach a recycled pid.
//!
//! The zygote is started, and talked to, from one dedicated thread that lives as long as the
//! process: the parent-death signal fires when the *thread* that forked exits, so a
//! short-lived blocking-pool thread would kill the zygote early. Chain of death when the
//! daemon dies (even by SIGKILL): zygote (parent-death signal) → helpers (theirs) → each
//! helper's init (its own) → the kernel ends the job's whole PID namespace. A zygote that
//! died is started again on the next job.
//!
//! The report comes back over a socket (not a pipe) so that the helper can also hand the
//! daemon a pidfd of the job's init right after forking it: at the job's end the daemon kills
//! that init itself and waits until its pidfd turns readable, which the kernel does only once
//! every process of the job's PID namespace has been killed and reaped. Every wait at the end
//! of a job has a deadline (`Running::finish`), so no helper, init or job can hold an answer.
//!
//! A job's collected directories (`Policy::collect`) come back on the same socket, each after
//! its index in `collect` and `child::COLLECT_MARKER`: at most one per index, at most
//! `collect.len()` in all (anything else is closed), kept only for a job that ended by itself
//! and handed out by `Running::collected`.

use std::io::{IoSlice, IoSliceMut, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Stdio;

use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg,
    sendmsg, socketpair,
};
use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::child::{Report, ReportKind};
use super::policy::Policy;
use super::zygote;
use crate::error::{Error, Result};

/// What the spawner thread hands the zygote for one job.
struct SpawnRequest {
    /// stdin (read end), stdout, stderr (write ends), policy (read end), report (the
    /// helper's end of a socket pair).
    fds: [OwnedFd; zygote::JOB_FDS],
    cgroup: Option<OwnedFd>,
    warm: bool,
    reply: oneshot::Sender<std::result::Result<(i32, OwnedFd), String>>,
}

/// Starts sandbox helpers. Cheap to clone.
#[derive(Clone)]
pub struct Sandbox {
    tx: std::sync::mpsc::Sender<SpawnRequest>,
}

/// The helper of a running job: its pid, and a pidfd to wait for it and to kill it.
pub struct Exit {
    pid: i32,
    pidfd: AsyncFd<OwnedFd>,
    exited: bool,
}

/// A job whose helper is running. Dropping it kills the helper (and so the job).
pub struct Running {
    pub exit: Exit,
    /// The job's stdout and stderr. A job with a terminal (`Sandbox::spawn_terminal`) writes
    /// to its terminal instead: these carry nothing of it and reach EOF once it has started.
    pub stdout: pipe::Receiver,
    pub stderr: pipe::Receiver,
    /// The daemon's end of the report socket (`finish` reads it).
    report: Option<OwnedFd>,
    /// What `spawn_terminal` read of the report socket before the terminal's master: init's
    /// pidfd, and report text (only when the sandbox failed before the terminal was sent).
    early_init: Option<OwnedFd>,
    early_text: Vec<u8>,
    /// The job's `collect` list, and what came of it once the job has ended (`collected`).
    collect: Vec<String>,
    collected: Vec<(String, OwnedFd)>,
}

/// Most a report may be: a JSON line with an error message.
const MAX_REPORT: usize = 1 << 20;

/// The zygote as the spawner thread holds it.
struct Zygote {
    sock: OwnedFd,
    child: std::process::Child,
}

fn pipe_cloexec() -> std::io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)
}

impl Zygote {
    fn start(binary: &PathBuf) -> std::result::Result<Zygote, String> {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| format!("socketpair: {e}"))?;
        // A zygote that stops answering must not hang the spawner thread forever.
        let tv = nix::sys::time::TimeVal::new(10, 0);
        nix::sys::socket::setsockopt(&ours, nix::sys::socket::sockopt::ReceiveTimeout, &tv)
            .map_err(|e| format!("SO_RCVTIMEO: {e}"))?;
        let fd = theirs.as_raw_fd();
        // SAFETY: getpid cannot fail; read before the fork, compared after it.
        let parent = unsafe { libc::getpid() };
        let mut cmd = std::process::Command::new(binary);
        cmd.arg("sandbox-zygote")
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if cfg!(debug_assertions)
            && let Some(fault) = std::env::var_os(super::child::FAULT_ENV)
        {
            // Test builds only: a fault point the helper reads (`child::FAULT_ENV`).
            cmd.env(super::child::FAULT_ENV, fault);
        }
        // SAFETY: between fork and exec this closure calls only dup2, prctl, getppid and
        // _exit, all async-signal-safe; it allocates nothing and takes no lock.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(fd, zygote::SOCKET_FD) < 0 {
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
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {} sandbox-zygote: {e}", binary.display()))?;
        drop(theirs);
        Ok(Zygote { sock: ours, child })
    }

    /// One request, one reply: the helper's pid and pidfd.
    fn fork_helper(
        &self,
        fds: &[OwnedFd],
        cgroup: Option<&OwnedFd>,
        warm: bool,
    ) -> std::result::Result<(i32, OwnedFd), ZygoteError> {
        let mut raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
        if let Some(cg) = cgroup {
            raw.push(cg.as_raw_fd());
        }
        let mut flags = [0u8];
        if cgroup.is_some() {
            flags[0] |= zygote::FLAG_CGROUP;
        }
        if warm {
            flags[0] |= zygote::FLAG_WARM;
        }
        sendmsg::<()>(
            self.sock.as_raw_fd(),
            &[IoSlice::new(&flags)],
            &[ControlMessage::ScmRights(&raw)],
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .map_err(|e| ZygoteError::Gone(format!("send to the sandbox zygote: {e}")))?;
        let mut buf = [0u8; 4];
        let mut cmsg = nix::cmsg_space!([RawFd; 1]);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(
            self.sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(|e| ZygoteError::Gone(format!("no answer from the sandbox zygote: {e}")))?;
        let mut pidfd = None;
        for c in msg
            .cmsgs()
            .map_err(|e| ZygoteError::Gone(format!("sandbox zygote reply: {e}")))?
        {
            if let ControlMessageOwned::ScmRights(list) = c {
                for fd in list {
                    // SAFETY: the kernel just installed `fd` in our table for us.
                    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                    pidfd.get_or_insert(owned);
                }
            }
        }
        if msg.bytes != 4 {
            return Err(ZygoteError::Gone(
                "the sandbox zygote closed its socket".into(),
            ));
        }
        let pid = i32::from_ne_bytes(buf);
        match pidfd {
            Some(p) if pid > 0 => Ok((pid, p)),
            _ if pid < 0 => Err(ZygoteError::Refused(format!(
                "the sandbox zygote could not fork: {}",
                nix::errno::Errno::from_raw(-pid)
            ))),
            _ => Err(ZygoteError::Gone(
                "bad reply from the sandbox zygote".into(),
            )),
        }
    }
}

enum ZygoteError {
    /// The zygote is gone or broken: start a new one.
    Gone(String),
    /// It answered but could not fork (e.g. EAGAIN): report, keep it.
    Refused(String),
}

/// The spawner thread: keeps one zygote, starts another when it dies.
fn spawner(binary: PathBuf, rx: std::sync::mpsc::Receiver<SpawnRequest>) {
    let mut current: Option<Zygote> = None;
    while let Ok(req) = rx.recv() {
        let mut result = Err("the sandbox zygote is not running".to_owned());
        // A zygote found dead is replaced once per request.
        for _ in 0..2 {
            let z = match current.take() {
                Some(z) => z,
                None => match Zygote::start(&binary) {
                    Ok(z) => z,
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                },
            };
            match z.fork_helper(&req.fds, req.cgroup.as_ref(), req.warm) {
                Ok(ok) => {
                    result = Ok(ok);
                    current = Some(z);
                    break;
                }
                Err(ZygoteError::Refused(e)) => {
                    result = Err(e);
                    current = Some(z);
                    break;
                }
                Err(ZygoteError::Gone(e)) => {
                    tracing::warn!(error = %e, "sandbox zygote lost; starting a new one");
                    let Zygote { sock, mut child } = z;
                    drop(sock);
                    let _ = child.kill();
                    let _ = child.wait();
                    result = Err(e);
                }
            }
        }
        // The job's caller gave up waiting (its deadline passed): the helper it asked for is
        // nobody's, so it ends here rather than waiting on a policy that never comes.
        if let Err(Ok((_, pidfd))) = req.reply.send(result) {
            kill_pidfd(&pidfd);
        }
    }
    // The daemon is shutting down: closing the socket ends the zygote.
    if let Some(Zygote { sock, mut child }) = current {
        drop(sock);
        let _ = child.wait();
    }
}

impl Sandbox {
    /// `binary` is the executable to run as `binary sandbox-zygote`: `/proc/self/exe` in the
    /// daemon (the running binary, even if the file was replaced by an upgrade). The zygote
    /// itself starts with the first job.
    pub fn start(binary: PathBuf) -> Result<Sandbox> {
        let (tx, rx) = std::sync::mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("sandbox-spawner".into())
            .spawn(move || spawner(binary, rx))?;
        Ok(Sandbox { tx })
    }

    /// Starts the helper for `policy` (without a terminal); the job's stdin is fed from
    /// `stdin` in the background.
    pub async fn spawn(&self, policy: &Policy, stdin: Vec<u8>) -> Result<Running> {
        self.spawn_in(policy, stdin, None).await
    }

    /// Like `spawn`, the helper joining `cgroup` before it reads its policy (so before it
    /// starts anything).
    pub async fn spawn_in(
        &self,
        policy: &Policy,
        stdin: Vec<u8>,
        cgroup: Option<&super::JobCgroup>,
    ) -> Result<Running> {
        policy.validate().map_err(Error::Invalid)?;
        if policy.terminal.is_some() {
            return Err(Error::Internal(
                "a job with a terminal is started with spawn_terminal".into(),
            ));
        }
        let payload =
            serde_json::to_vec(policy).map_err(|e| Error::Internal(format!("policy: {e}")))?;
        let (mut running, feed) = self.launch(open_cgroup(cgroup)?, false).await?;
        running.collect = policy.collect.clone();
        feed.send(payload, stdin)?;
        Ok(running)
    }

    /// Starts a job on a pseudo-terminal made inside its sandbox, of the size
    /// `policy.terminal` gives, the helper joining `cgroup` first. The terminal is the job's
    /// stdin, stdout and stderr and its controlling terminal; the daemon gets its master in
    /// the returned `Terminal` (`Running::stdout` and `stderr` carry nothing). It is always
    /// built fresh, never from a warm sandbox. Waits for the master until `by`: a sandbox
    /// that cannot be built (or does not hand its terminal over by then) is ended, and its
    /// report's message is the error. `Running::finish` reports how the job ended, as for
    /// every job; dropping `Running` ends the job.
    pub async fn spawn_terminal(
        &self,
        policy: &Policy,
        cgroup: Option<&super::JobCgroup>,
        by: Instant,
    ) -> Result<(Running, Terminal)> {
        policy.validate().map_err(Error::Invalid)?;
        if policy.terminal.is_none() {
            return Err(Error::Internal(
                "spawn_terminal needs a policy with a terminal".into(),
            ));
        }
        let payload =
            serde_json::to_vec(policy).map_err(|e| Error::Internal(format!("policy: {e}")))?;
        let (mut running, feed) = self.launch(open_cgroup(cgroup)?, false).await?;
        running.collect = policy.collect.clone();
        // No stdin: the job reads its terminal.
        feed.send(payload, Vec::new())?;
        match running.take_terminal_master(by).await? {
            Some(master) => Ok((running, Terminal::new(master)?)),
            None => {
                // Built or not, the sandbox is ended here; a helper that already wrote its
                // report has exited, one that did not gets a moment after its SIGKILL.
                let grace = Instant::now() + std::time::Duration::from_secs(1);
                let report = running.finish(true, grace).await?;
                Err(Error::Unavailable(format!(
                    "the sandbox could not start the terminal job: {}",
                    if report.message.is_empty() {
                        "its helper ended without handing the terminal over"
                    } else {
                        &report.message
                    }
                )))
            }
        }
    }

    /// Builds a sandbox ahead of its job (run as `run_as`, no network, no binds, the
    /// scratch cwd, the mount root `warm.mount_root` bound out of sight): everything but the
    /// job's own scratch sizes, mounts, files and the job itself. It serves exactly one job
    /// (`WarmSandbox::start`); dropping it unused kills it.
    pub async fn warm(&self, warm: super::child::Warm) -> Result<WarmSandbox> {
        self.warm_in(warm, None).await
    }

    /// Like `warm`, the helper joining `cgroup` first (its job's limits are written into the
    /// cgroup when the job arrives).
    pub async fn warm_in(
        &self,
        warm: super::child::Warm,
        cgroup: Option<&super::JobCgroup>,
    ) -> Result<WarmSandbox> {
        let run_as = warm.run_as;
        let mount_root = warm.mount_root.clone();
        let line =
            serde_json::to_vec(&warm).map_err(|e| Error::Internal(format!("warm line: {e}")))?;
        let (running, mut feed) = self.launch(open_cgroup(cgroup)?, true).await?;
        feed.policy.write_all(&line)?;
        feed.policy.write_all(b"\n")?;
        Ok(WarmSandbox {
            running,
            feed,
            run_as,
            mount_root,
        })
    }

    /// Asks the zygote for a helper; returns it with the ends the job's input goes into.
    async fn launch(&self, cgroup: Option<OwnedFd>, warm: bool) -> Result<(Running, Feed)> {
        let (stdin_r, stdin_w) = pipe_cloexec()?;
        let (stdout_r, stdout_w) = pipe_cloexec()?;
        let (stderr_r, stderr_w) = pipe_cloexec()?;
        let (policy_r, policy_w) = pipe_cloexec()?;
        let (report_r, report_w) = socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(std::io::Error::from)?;
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(SpawnRequest {
                fds: [stdin_r, stdout_w, stderr_w, policy_r, report_w],
                cgroup,
                warm,
                reply,
            })
            .map_err(|_| Error::Unavailable("the sandbox spawner stopped".into()))?;
        let (pid, pidfd) = rx
            .await
            .map_err(|_| Error::Unavailable("the sandbox spawner stopped".into()))?
            .map_err(|e| Error::Internal(format!("cannot start the sandbox helper: {e}")))?;
        // SAFETY: `Exit` owns the pidfd for as long as it is registered and never replaces
        // or closes it while registered (it is closed when the AsyncFd drops).
        let pidfd =
            unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) }
                .map_err(|e| {
                    let (fd, e) = e.into_parts();
                    kill_pidfd(&fd);
                    Error::from(e)
                })?;
        let exit = Exit {
            pid,
            pidfd,
            exited: false,
        };
        // From here on, an early return drops `running`, which kills the helper.
        let running = Running {
            exit,
            stdout: pipe::Receiver::from_owned_fd(stdout_r)?,
            stderr: pipe::Receiver::from_owned_fd(stderr_r)?,
            report: Some(report_r),
            early_init: None,
            early_text: Vec::new(),
            collect: Vec::new(),
            collected: Vec::new(),
        };
        let feed = Feed {
            policy: std::fs::File::from(policy_w),
            stdin: stdin_w,
        };
        Ok((running, feed))
    }
}

/// The directory of `cgroup`, to hand to the zygote.
fn open_cgroup(cgroup: Option<&super::JobCgroup>) -> Result<Option<OwnedFd>> {
    match cgroup {
        Some(cg) => Ok(Some(OwnedFd::from(
            std::fs::File::open(cg.path()).map_err(|e| {
                Error::Internal(format!(
                    "cannot open the job's cgroup {}: {e}",
                    cg.path().display()
                ))
            })?,
        ))),
        None => Ok(None),
    }
}

/// The write ends of a helper's policy pipe and of its job's stdin.
struct Feed {
    policy: std::fs::File,
    stdin: OwnedFd,
}

impl Feed {
    /// Sends the policy (then EOF) and feeds `stdin` in the background.
    fn send(self, payload: Vec<u8>, stdin: Vec<u8>) -> Result<()> {
        let Feed {
            policy: mut pw,
            stdin: stdin_w,
        } = self;
        // The policy is small; a pipe holds 64 KiB, larger ones are written off the runtime.
        if payload.len() < 60_000 {
            pw.write_all(&payload)?;
            drop(pw);
        } else {
            tokio::task::spawn_blocking(move || {
                let _ = pw.write_all(&payload);
            });
        }
        let mut input = pipe::Sender::from_owned_fd(stdin_w)?;
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let _ = input.write_all(&stdin).await;
        });
        Ok(())
    }
}

/// A sandbox built ahead of its job (see `Sandbox::warm`).
pub struct WarmSandbox {
    running: Running,
    feed: Feed,
    run_as: Option<(u32, u32)>,
    mount_root: Option<String>,
}

impl WarmSandbox {
    /// The uid/gid it was built for.
    pub fn run_as(&self) -> Option<(u32, u32)> {
        self.run_as
    }

    /// The mount root it was built with.
    pub fn mount_root(&self) -> Option<&str> {
        self.mount_root.as_deref()
    }

    /// Whether `policy` can run in it: no network (its own or the host's), no binds, no
    /// terminal, the scratch cwd, its uid outside and the usual one inside, mounts only from
    /// its mount root (files and collected directories fit any).
    pub fn fits(&self, policy: &Policy) -> bool {
        !policy.network
            && !policy.host_network
            && policy.inside_id() == super::policy::INSIDE_ID
            && policy.terminal.is_none()
            && policy.ro_binds.is_empty()
            && policy.cwd == super::policy::SCRATCH
            && policy.run_as == self.run_as
            && (policy.mounts.is_empty() || policy.mount_root == self.mount_root)
    }

    /// Whether its helper is still there (a warm sandbox whose helper died is discarded).
    pub fn alive(&self) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.running.exit.pidfd.get_ref().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, no wait.
        let n = unsafe { libc::poll(&mut pfd, 1, 0) };
        n == 0
    }

    /// Starts its job: `policy` must fit (`fits`).
    pub fn start(self, policy: &Policy, stdin: Vec<u8>) -> Result<Running> {
        policy.validate().map_err(Error::Invalid)?;
        if !self.fits(policy) {
            return Err(Error::Internal(
                "a job was given a warm sandbox it does not fit".into(),
            ));
        }
        let payload =
            serde_json::to_vec(policy).map_err(|e| Error::Internal(format!("policy: {e}")))?;
        let WarmSandbox {
            mut running, feed, ..
        } = self;
        running.collect = policy.collect.clone();
        feed.send(payload, stdin)?;
        Ok(running)
    }
}

/// SIGKILL through a pidfd (harmless once the process has exited).
fn kill_pidfd(pidfd: &OwnedFd) {
    // SAFETY: pidfd_send_signal on a pidfd we own, no siginfo.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
}

impl Exit {
    /// The helper's pid (it stays ours until the zygote reaps it after it exits).
    pub fn id(&self) -> u32 {
        self.pid as u32
    }

    /// SIGKILL to the helper; its init gets SIGKILL (parent death) and the kernel ends
    /// everything left in the job's PID namespace. Harmless once it has exited.
    pub fn kill(&self) {
        kill_pidfd(self.pidfd.get_ref());
    }

    /// Waits until the helper has exited (its pidfd turns readable).
    pub async fn wait(&mut self) {
        if self.exited {
            return;
        }
        if let Ok(guard) = self.pidfd.readable().await {
            // The pidfd stays readable once the process has exited; nothing to clear.
            drop(guard);
        }
        self.exited = true;
    }
}

impl Drop for Exit {
    fn drop(&mut self) {
        if !self.exited {
            self.kill();
        }
    }
}

impl Running {
    /// Ends the job and collects its report, by `by` at the latest whatever the job does:
    /// kills the helper when `kill` (the deadline passed, output overflowed, a cancel), waits
    /// for it to exit, reads the report socket to EOF (the report, and the pidfd of the job's
    /// init the helper sent after forking it), kills that init and waits until it has exited —
    /// the kernel signals that only once every process of the job's PID namespace is gone. A
    /// report missing at `by` counts as a killed helper (it is logged: it should not happen).
    pub async fn finish(&mut self, kill: bool, by: Instant) -> Result<Report> {
        let Some(fd) = self.report.take() else {
            return Err(Error::Internal("the report was already read".into()));
        };
        if kill {
            self.exit.kill();
        }
        if tokio::time::timeout_at(by, self.exit.wait()).await.is_err() {
            tracing::warn!(
                helper = self.exit.pid,
                "the sandbox helper did not exit by the job's end"
            );
        }
        let ReadReport {
            mut text,
            init,
            complete,
            collected,
        } = read_report(fd, by, self.collect.len()).await?;
        let init = self.early_init.take().or(init);
        text.splice(0..0, std::mem::take(&mut self.early_text));
        if let Some(init) = init {
            kill_pidfd(&init);
            let init = watch(init)?;
            if tokio::time::timeout_at(by, init.readable()).await.is_err() {
                tracing::warn!(
                    helper = self.exit.pid,
                    "the job's PID namespace was not gone by the job's end"
                );
            }
        }
        if !complete {
            tracing::warn!(
                helper = self.exit.pid,
                "no complete report from the sandbox helper by the job's end"
            );
        }
        if !complete || text.iter().all(u8::is_ascii_whitespace) {
            return Ok(Report {
                kind: ReportKind::Killed,
                ..Report::default()
            });
        }
        let report: Report = serde_json::from_slice(&text)
            .map_err(|e| Error::Internal(format!("bad report from the sandbox helper: {e}")))?;
        // Only a job that ended by itself hands anything back: a killed one (the deadline, a
        // cancel, the output limit) leaves its directories to close here, whatever came.
        if !kill && matches!(report.kind, ReportKind::Exit | ReportKind::Signal) {
            self.collected = collected
                .into_iter()
                .filter_map(|(i, fd)| self.collect.get(i).map(|p| (p.clone(), fd)))
                .collect();
        }
        Ok(report)
    }

    /// The job's collected directories (`Policy::collect`) as the helper opened them once
    /// the job had ended, each with its path from `collect` (one that was missing or not a
    /// directory is left out), read-only (O_RDONLY | O_DIRECTORY). Filled by `finish` for a
    /// job that exited or was ended by a signal of its own; empty for a killed job, and
    /// before `finish`. Taken: a second call returns nothing. The descriptors keep the job's
    /// tmpfs alive after its namespaces are gone.
    pub fn collected(&mut self) -> Vec<(String, OwnedFd)> {
        std::mem::take(&mut self.collected)
    }
}

impl Running {
    /// Reads the report socket up to the terminal's master (sent by the helper right after
    /// init's pidfd, see `child`), until `by`. What comes before it is kept for `finish`.
    /// `None` when the socket ends or `by` passes first: the sandbox failed.
    async fn take_terminal_master(&mut self, by: Instant) -> Result<Option<OwnedFd>> {
        let Some(fd) = self.report.take() else {
            return Err(Error::Internal("the report was already read".into()));
        };
        let sock = watch(fd)?;
        let mut master = None;
        let mut buf = [0u8; 4096];
        while master.is_none() {
            let Ok(guard) = tokio::time::timeout_at(by, sock.readable()).await else {
                break;
            };
            let mut guard = guard?;
            let mut cmsg = nix::cmsg_space!([RawFd; 1]);
            let mut iov = [IoSliceMut::new(&mut buf)];
            let (got, fds) = match recvmsg::<()>(
                sock.get_ref().as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(msg) => {
                    let mut fds = Vec::new();
                    for c in msg.cmsgs().into_iter().flatten() {
                        if let ControlMessageOwned::ScmRights(list) = c {
                            for raw in list {
                                // SAFETY: the kernel just installed `raw` in our table for us.
                                fds.push(unsafe { OwnedFd::from_raw_fd(raw) });
                            }
                        }
                    }
                    (msg.bytes, fds)
                }
                Err(nix::errno::Errno::EAGAIN) => {
                    guard.clear_ready();
                    continue;
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    return Err(Error::Internal(format!(
                        "reading the sandbox helper's report: {e}"
                    )));
                }
            };
            if got == 0 {
                break;
            }
            let bytes = &buf[..got];
            // A descriptor comes with one marker byte, which names it; a read never joins
            // two descriptor-carrying messages.
            match (bytes.split_last(), fds.into_iter().next()) {
                (Some((&super::child::TERMINAL_MARKER, text)), Some(fd)) => {
                    self.early_text.extend_from_slice(text);
                    master = Some(fd);
                }
                (Some((_, _)), Some(fd)) => {
                    self.early_text.extend_from_slice(bytes);
                    self.early_init.get_or_insert(fd);
                }
                _ => self.early_text.extend_from_slice(bytes),
            }
            if self.early_text.len() > MAX_REPORT {
                return Err(Error::Internal(
                    "the sandbox helper's report is too large".into(),
                ));
            }
        }
        self.report = Some(sock.into_inner());
        Ok(master)
    }
}

/// A job's pseudo-terminal as the daemon holds it: the master side, non-blocking and driven
/// by the runtime. Reads and writes take `&self`, so one task may read while another writes.
/// Dropping it closes the master; the job's processes then see their terminal hung up.
pub struct Terminal {
    master: AsyncFd<OwnedFd>,
}

impl Terminal {
    fn new(master: OwnedFd) -> Result<Terminal> {
        let fd = master.as_raw_fd();
        // SAFETY: fcntl on a descriptor we own, integer arguments only.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        // SAFETY: as above.
        if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        // SAFETY: the Terminal owns the master for as long as it is registered and never
        // replaces or closes it while registered (it is closed when the AsyncFd drops).
        let master = unsafe {
            AsyncFd::register_with_interest(
                master,
                tokio::io::Interest::READABLE | tokio::io::Interest::WRITABLE,
            )
        }
        .map_err(|e| Error::from(e.into_parts().1))?;
        Ok(Terminal { master })
    }

    /// Reads what the job wrote to its terminal. `Ok(0)` once no process of the job holds
    /// the terminal any more (the kernel answers EIO on the master then).
    pub async fn read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let mut guard = self.master.readable().await?;
            let got = guard.try_io(|m| {
                // SAFETY: read into a valid buffer of its own length from our master.
                let n = unsafe {
                    libc::read(m.get_ref().as_raw_fd(), buf.as_mut_ptr().cast(), buf.len())
                };
                if n < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match got {
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Ok(0),
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    /// Writes to the job's terminal (as typed keys: the line discipline echoes and edits).
    pub async fn write(&self, buf: &[u8]) -> std::io::Result<usize> {
        loop {
            let mut guard = self.master.writable().await?;
            let put = guard.try_io(|m| {
                // SAFETY: write of a valid buffer of its own length to our master.
                let n =
                    unsafe { libc::write(m.get_ref().as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
                if n < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match put {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    /// Writes all of `buf`, waiting while the terminal's input queue is full.
    pub async fn write_all(&self, mut buf: &[u8]) -> std::io::Result<()> {
        while !buf.is_empty() {
            let n = self.write(buf).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            buf = &buf[n..];
        }
        Ok(())
    }

    /// Sets the terminal's size; the kernel sends SIGWINCH to its foreground process group.
    pub fn resize(&self, size: super::TerminalSize) -> Result<()> {
        size.validate().map_err(Error::Invalid)?;
        let winsize = libc::winsize {
            ws_row: size.rows,
            ws_col: size.cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ on our master with a valid pointer to a winsize.
        let ret = unsafe {
            libc::ioctl(
                self.master.get_ref().as_raw_fd(),
                libc::TIOCSWINSZ,
                &winsize,
            )
        };
        if ret < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        Ok(())
    }

    /// Sends `signal` to the terminal's foreground process group, as its keys would (`Ctrl-C`,
    /// `Ctrl-\`, `Ctrl-Z`) but even when the job has turned those keys off (raw mode). TIOCSIG on
    /// a pty master: Linux accepts only SIGINT, SIGQUIT and SIGTSTP there (EINVAL for the
    /// rest), so those are the signals offered; ending the job is `Exit::kill`. The kernel
    /// sends the signal itself, across the job's PID and user namespaces.
    pub fn signal(&self, signal: i32) -> Result<()> {
        if ![libc::SIGINT, libc::SIGQUIT, libc::SIGTSTP].contains(&signal) {
            return Err(Error::Invalid(format!(
                "a terminal's signal is SIGINT, SIGQUIT or SIGTSTP, not {signal}"
            )));
        }
        // SAFETY: TIOCSIG on our master; its argument is the signal number by value.
        let ret = unsafe {
            libc::ioctl(
                self.master.get_ref().as_raw_fd(),
                libc::TIOCSIG,
                signal as libc::c_ulong,
            )
        };
        if ret < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        Ok(())
    }
}

/// Registers `fd` with the runtime, to wait until it is readable.
fn watch(fd: OwnedFd) -> Result<AsyncFd<OwnedFd>> {
    // SAFETY: the AsyncFd owns `fd` for as long as it is registered and never replaces or
    // closes it while registered (it is closed when the AsyncFd drops).
    unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(|e| Error::from(e.into_parts().1))
}

/// What the report socket carried.
struct ReadReport {
    /// The report's text (the collected directories' indices and markers taken out).
    text: Vec<u8>,
    /// Init's pidfd, if one came.
    init: Option<OwnedFd>,
    /// Whether EOF was reached.
    complete: bool,
    /// Collected directories by their index in the job's `collect` list.
    collected: Vec<(usize, OwnedFd)>,
}

/// The index a collected directory's message carries (`child::COLLECT_MARKER`): `bytes` is a
/// read that ended with a descriptor; (the text before the message, the index).
fn collect_message(bytes: &[u8]) -> Option<(&[u8], usize)> {
    let rest = bytes.strip_suffix(&[super::child::COLLECT_MARKER])?;
    let digits = rest.iter().rev().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 6 {
        return None;
    }
    let (text, index) = rest.split_at(rest.len() - digits);
    let index = std::str::from_utf8(index).ok()?.parse().ok()?;
    Some((text, index))
}

/// Reads the report socket until EOF or `by`; at most `max_collected` collected directories
/// are kept (one per index), any other descriptor is closed.
async fn read_report(fd: OwnedFd, by: Instant, max_collected: usize) -> Result<ReadReport> {
    let fd = watch(fd)?;
    let mut text = Vec::new();
    let mut init = None;
    let mut collected: Vec<(usize, OwnedFd)> = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let Ok(guard) = tokio::time::timeout_at(by, fd.readable()).await else {
            return Ok(ReadReport {
                text,
                init,
                complete: false,
                collected,
            });
        };
        let mut guard = guard?;
        let mut cmsg = nix::cmsg_space!([RawFd; 1]);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let mut fds = Vec::new();
        let got = match recvmsg::<()>(
            fd.get_ref().as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(msg) => {
                if let Ok(cmsgs) = msg.cmsgs() {
                    for c in cmsgs {
                        if let ControlMessageOwned::ScmRights(list) = c {
                            for raw in list {
                                // SAFETY: the kernel just installed `raw` in our table for us.
                                fds.push(unsafe { OwnedFd::from_raw_fd(raw) });
                            }
                        }
                    }
                }
                msg.bytes
            }
            Err(nix::errno::Errno::EAGAIN) => {
                guard.clear_ready();
                continue;
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                return Err(Error::Internal(format!(
                    "reading the sandbox helper's report: {e}"
                )));
            }
        };
        // A descriptor rides on the byte sent with it, and a read ends with the first one
        // that carries descriptors: `\n` carries init's pidfd, `TERMINAL_MARKER` (never
        // in the JSON, which escapes control characters) a terminal's master, which a reader
        // that comes late (past `spawn_terminal`'s deadline) must not take for the pidfd;
        // dropping it closes it. `COLLECT_MARKER` after an index carries a collected
        // directory.
        let mut bytes = &buf[..got];
        match collect_message(bytes) {
            Some((before, index)) if !fds.is_empty() => {
                bytes = before;
                let fresh = index < max_collected && collected.iter().all(|(i, _)| *i != index);
                if fresh && let Some(f) = fds.into_iter().next() {
                    collected.push((index, f));
                }
            }
            _ if !bytes.contains(&super::child::TERMINAL_MARKER) => {
                for f in fds {
                    init.get_or_insert(f);
                }
            }
            _ => {}
        }
        if got == 0 {
            return Ok(ReadReport {
                text,
                init,
                complete: true,
                collected,
            });
        }
        if text.len() + bytes.len() > MAX_REPORT {
            return Err(Error::Internal(
                "the sandbox helper's report is too large".into(),
            ));
        }
        text.extend_from_slice(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collected_directories_are_told_from_the_report_by_their_marker() {
        let m = super::super::child::COLLECT_MARKER;
        assert_eq!(collect_message(&[b'3', m]), Some((&b""[..], 3)));
        assert_eq!(
            collect_message(&[b' ', b'1', b'2', m]),
            Some((&b" "[..], 12))
        );
        // Init's pidfd, a terminal's master and the report itself are not.
        assert_eq!(collect_message(b"\n"), None);
        assert_eq!(
            collect_message(&[super::super::child::TERMINAL_MARKER]),
            None
        );
        assert_eq!(collect_message(br#"{"kind":"exit"}"#), None);
        // A marker without an index, or an absurd one, names nothing.
        assert_eq!(collect_message(&[m]), None);
        assert_eq!(
            collect_message(&[b'1'; 7].iter().chain([&m]).copied().collect::<Vec<_>>()),
            None
        );
    }
}
