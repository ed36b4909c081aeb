//! The sandbox helper (`localhostd sandbox-helper`): a fresh, single-threaded process the
//! daemon starts for each job, so everything here may allocate and fork freely. It builds the
//! sandbox and reports how the job ended. Building it is where most of the sandbox's
//! `unsafe` code is (raw system calls); `zygote`, `spawn` and `net` hold the rest.
//!
//! Order (hakoniwa's, adapted): read the policy → drop to the job's uid (daemon as root) →
//! unshare user, mount, PID, network, IPC, UTS and cgroup namespaces → map uid/gid → fork the
//! namespace's init → init builds the root (read-only system dirs, tmpfs scratch, /tmp,
//! /dev/shm, a minimal /dev, its own /proc) and pivots into it → init forks the job → the job:
//! new session, rlimits, fds closed, no_new_privs, capabilities dropped, landlock, seccomp
//! last, execve. Init reaps; when the job ends init exits, and the kernel kills whatever is
//! left in the PID namespace.
//!
//! Init's first act is its parent-death signal, and then a check that the helper is still
//! there (the helper can be killed between the fork and that `prctl`, and a signal armed after
//! its death never comes); then it closes every descriptor it does not need (the report
//! socket among them: only the helper may hold it, so the daemon's read of it ends with the
//! helper), and the O_PATH handles on the host's system directories once the root is built.
//!
//! File descriptors from the daemon: 0 job stdin, 1 job stdout, 2 job stderr, 3 the policy
//! (JSON, read to EOF), 4 the report socket: a pidfd of init (carried by one newline byte)
//! right after init is forked, then the job's collected directories (below), then one JSON
//! line at the end. (Any other kind of fd 4 gets the report line only.)
//!
//! Jobs on data (`Policy::mount_root`, `mounts`, `files`, `collect`). The mount root (the
//! daemon's `$STATE_DIRECTORY/mounts`, under a directory a per-job uid may not traverse) is
//! opened with the daemon's credentials and made the cwd before unshare, like the first
//! read-only bind (and in its place when a policy has both: that bind is then opened by its
//! path), reopened as "." after unshare and bound read-only at `/.mounts` in the new root. A
//! warm sandbox is built with it (its warm line names it); a job built for itself binds it
//! only when it has mounts. Once the job's policy is known (built for it: after the root;
//! warm: after `read_job_policy`), init makes the skeleton root writable again, makes each
//! mount point (0755, never through a symlink), and mounts each of the job's mounts: a
//! read-only one is its source opened beneath `/.mounts` with openat2 (RESOLVE_BENEATH,
//! NO_SYMLINKS, NO_MAGICLINKS, NO_XDEV), cloned (open_tree OPEN_TREE_CLONE, no path
//! lookup), moved onto its mount point and remounted read-only keeping the flags the kernel
//! locked; a writable one is a tmpfs of its size and inodes owned by the job, filled with a
//! copy of its source (directories and regular files only, nothing followed or crossed,
//! bounded by the tmpfs). Then `/.mounts` is detached and removed and the root turns
//! read-only again; the inline files are written into the cwd (folders made, 0644 or 0755,
//! new files only, nothing followed). A symlink planted in a read-only source stays a
//! symlink, resolved in the job's own root, where nothing of the mount root is left.
//!
//! Collected directories: init passes the job's `collect` list (with its cwd, its writable
//! mounts and the device and inode of its root) to the helper after its status line. Once
//! init has been reaped (so nothing of the job is left to change them), the helper checks
//! that its root is the job's, checks each path again (in the cwd or a writable mount), opens
//! it (the cwd or mount from the root without following a symlink, the rest beneath it also
//! without crossing a mount; a missing one is skipped) and sends it on the report socket
//! after its index in `collect` and a `COLLECT_MARKER` byte, before the report. A job that
//! the daemon kills never gets there: its helper is gone.
//!
//! A job with a terminal (`Policy::terminal`) runs on a pseudo-terminal made inside its
//! sandbox. After unshare the helper creates a fresh devpts instance as a detached mount
//! (fsopen/fsmount: `newinstance`, `ptmxmode=0666`, `max=1`, nosuid, noexec; a user namespace
//! may mount devpts), opens its `ptmx` (the master), sets the window size on it and opens the
//! slave through it (TIOCGPTPEER, no path lookup). Init closes the master first thing, moves
//! the instance to `/dev/pts` in the job's root (with `/dev/ptmx` a link to `pts/ptmx` and the
//! host's `/dev/tty` node, which names whichever terminal controls the opener) and closes it;
//! it hands the slave to the job and closes its own. The job makes the slave its controlling
//! terminal (new session, TIOCSCTTY) and its 0–2 in place of the daemon's pipes. The helper
//! sends the master on the report socket right after init's pidfd, carried by one
//! `TERMINAL_MARKER` byte, then closes every part of the terminal it holds: from then on only
//! the job holds the slave and only the daemon the master, so the daemon reads EOF (EIO) once
//! the job's last process has let go of it. A failure to send the master fails the sandbox
//! (the job then ends with the helper).

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;

use serde::{Deserialize, Serialize};

use super::policy::Policy;
use super::seccomp;

/// How a job ended: the `kind` of a [`Report`]. On the wire (the JSON line on the report
/// socket) each is its lower-case name, as it was when the kind was a string.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReportKind {
    /// The job exited (`code`).
    Exit,
    /// A signal ended the job (`signal`).
    Signal,
    /// The sandbox could not be built (`message`).
    Error,
    /// No complete report came: the daemon's own verdict, never written by the helper. A kind
    /// the daemon does not know reads as this too, as any unknown kind string always did.
    #[default]
    #[serde(other)]
    Killed,
}

impl ReportKind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ReportKind::Exit => "exit",
            ReportKind::Signal => "signal",
            ReportKind::Error => "error",
            ReportKind::Killed => "killed",
        }
    }
}

/// Compares with a wire name.
impl PartialEq<&str> for ReportKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// How the job ended, as the helper saw it. Fields left out read as their defaults, so the
/// helper's last-resort line `{"kind":"error"}` still reads as an error report.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Report {
    pub kind: ReportKind,
    pub code: i32,
    pub signal: i32,
    pub cpu_ms: u64,
    pub max_rss_kb: u64,
    pub message: String,
    /// `full`, `partial` or `none` (only with `allow_degraded`).
    pub landlock: String,
    /// Whether the job got its own /proc.
    pub proc_mounted: bool,
    /// CLOCK_MONOTONIC (ns) when the job called execve: how long a start took, measured
    /// against the caller's own clock reading.
    #[serde(default)]
    pub exec_mono_ns: u64,
}

const POLICY_FD: RawFd = 3;
const REPORT_FD: RawFd = 4;

/// The byte that carries a terminal's master on the report socket (init's pidfd comes with
/// a newline). Whitespace to a JSON reader, like the newline, so neither can spoil the report.
pub const TERMINAL_MARKER: u8 = b'\r';

/// Test-only fault point, read from the environment the daemon hands the zygote (debug builds
/// only; see `fault_helper_dies_after_fork`).
pub const FAULT_ENV: &str = "LOCALHOSTD_TEST_FAULT";

/// With `LOCALHOSTD_TEST_FAULT=helper-dies-after-fork`, the helper SIGKILLs itself right after
/// forking init, and init waits before it arms its parent-death signal: the race a kill at the
/// job's deadline can hit (rarely) made certain, so a test can show the job still ends. Read
/// before the fork. Release builds (the packages) never read it: there it is always false and
/// the fault code is optimised out, so nothing in a production environment can turn it on.
fn fault_helper_dies_after_fork() -> bool {
    cfg!(debug_assertions)
        && std::env::var_os(FAULT_ENV).is_some_and(|v| v == "helper-dies-after-fork")
}

type R<T> = Result<T, String>;

fn errno_str() -> String {
    std::io::Error::last_os_error().to_string()
}

/// Checks a libc return value, naming the call on failure.
fn check(ret: libc::c_int, what: &str) -> R<libc::c_int> {
    if ret == -1 {
        Err(format!("{what}: {}", errno_str()))
    } else {
        Ok(ret)
    }
}

fn cstr(s: &str) -> R<CString> {
    CString::new(s).map_err(|_| format!("{s:?} contains a NUL byte"))
}

/// CLOCK_MONOTONIC in nanoseconds: the clock a report's `exec_mono_ns` is read on, so a
/// caller can time a start against its own reading.
pub fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime with a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    (now.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(now.tv_nsec as u64)
}

/// Entry point of `localhostd sandbox-helper` (and of a helper the zygote forks for a job).
pub fn main() -> ! {
    finish(run(false))
}

/// A pre-built ("warm") helper the zygote forks for the pool: it builds everything that does
/// not depend on the job, then waits for the job's policy. Used for one job only.
pub fn main_warm() -> ! {
    finish(run(true))
}

fn finish(result: R<Report>) -> ! {
    let report = match result {
        Ok(r) => r,
        Err(message) => Report {
            kind: ReportKind::Error,
            message,
            ..Report::default()
        },
    };
    // SAFETY: fd 4 was given to us by the daemon for this report; we own it from here on.
    let mut out = unsafe { std::fs::File::from_raw_fd(REPORT_FD) };
    let line = serde_json::to_string(&report).unwrap_or_else(|_| "{\"kind\":\"error\"}".into());
    let _ = out.write_all(line.as_bytes());
    std::process::exit(0)
}

fn set_pdeathsig() -> R<()> {
    check(
        // SAFETY: prctl with integer arguments only.
        unsafe {
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            )
        },
        "prctl(PR_SET_PDEATHSIG)",
    )?;
    Ok(())
}

fn read_policy() -> R<Policy> {
    // SAFETY: fd 3 is the policy pipe the daemon passed; we take ownership and close it.
    let mut f = unsafe { std::fs::File::from_raw_fd(POLICY_FD) };
    let mut text = String::new();
    f.read_to_string(&mut text)
        .map_err(|e| format!("reading the policy: {e}"))?;
    let p: Policy = serde_json::from_str(&text).map_err(|e| format!("bad policy: {e}"))?;
    p.validate()?;
    Ok(p)
}

/// What a warm helper knows before its job: the uid to run as (the daemon leased it) and the
/// size of the scratch, /tmp and /dev/shm tmpfs (the profile's; a job that asks for other
/// sizes gets them remounted).
/// `mount_root`: the mount root it binds out of sight (`Policy::mount_root`), so that jobs
/// with mounts beneath it can take it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Warm {
    pub run_as: Option<(u32, u32)>,
    pub tmpfs_bytes: u64,
    pub tmpfs_inodes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_root: Option<String>,
}

/// The limits a warm sandbox is built with; the job's own are applied when it arrives
/// (rlimits at its start, tmpfs sizes when its scratch is mounted).
const WARM_LIMITS: super::policy::Limits = super::policy::Limits {
    cpu_s: 1,
    data_bytes: 1 << 20,
    address_space_bytes: None,
    stack_bytes: 1 << 20,
    processes: 1,
    file_size_bytes: 1,
    open_files: 1,
    tmpfs_bytes: 1 << 20,
    tmpfs_inodes: 16,
};

/// Reads the warm line (one JSON line) from the policy pipe, leaving the rest (the job's
/// policy, sent later) for init.
fn read_warm() -> R<Policy> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        // SAFETY: a one-byte read from the policy pipe into a valid buffer.
        let n = unsafe { libc::read(POLICY_FD, b.as_mut_ptr().cast(), 1) };
        if n == 1 && b[0] != b'\n' && line.len() < 4096 {
            line.push(b[0]);
        } else if n == 1 && b[0] == b'\n' {
            break;
        } else if n < 0 && nix::errno::Errno::last() == nix::errno::Errno::EINTR {
            continue;
        } else {
            return Err("the warm line of the policy pipe is missing".into());
        }
    }
    let w: Warm = serde_json::from_slice(&line).map_err(|e| format!("bad warm line: {e}"))?;
    let template = Policy {
        argv: vec!["/bin/true".into()],
        env: Vec::new(),
        cwd: super::policy::SCRATCH.into(),
        limits: super::policy::Limits {
            tmpfs_bytes: w.tmpfs_bytes,
            tmpfs_inodes: w.tmpfs_inodes,
            ..WARM_LIMITS
        },
        network: false,
        run_as: w.run_as,
        ro_binds: Vec::new(),
        allow_degraded: false,
        net_allow: Vec::new(),
        terminal: None,
        mount_root: w.mount_root,
        mounts: Vec::new(),
        files: Vec::new(),
        collect: Vec::new(),
        host_network: false,
        net_ports: None,
        inside_id: None,
    };
    template.validate()?;
    Ok(template)
}

/// In a warm sandbox's init: the job's policy (the rest of the policy pipe), which must fit
/// what was built (no binds, no network of its own nor the host's, the scratch cwd, the same
/// uid outside and inside, mounts only from the mount root it was built with).
fn read_job_policy(template: &Policy) -> R<Policy> {
    let p = read_policy()?;
    if p.network
        || p.host_network
        || !p.ro_binds.is_empty()
        || p.cwd != template.cwd
        || p.run_as != template.run_as
        || p.inside_id() != template.inside_id()
    {
        return Err(
            "the job does not fit its warm sandbox (network, host network, binds, cwd or uid)"
                .into(),
        );
    }
    if !p.mounts.is_empty() && p.mount_root != template.mount_root {
        return Err("the job's mounts come from another mount root than its warm sandbox's".into());
    }
    // A terminal is made before init exists; a warm sandbox has none.
    if p.terminal.is_some() {
        return Err("a job with a terminal does not fit a warm sandbox".into());
    }
    Ok(p)
}

fn run(warm: bool) -> R<Report> {
    let mut policy = if warm { read_warm()? } else { read_policy()? };
    // A job built for itself binds the mount root only when it has mounts (a warm sandbox
    // always does: its job is not known yet).
    if !warm && policy.mounts.is_empty() {
        policy.mount_root = None;
    }
    let parent = nix::unistd::getppid();
    // The first read-only bind of a directory (a stored program) is opened with the daemon's
    // credentials: it lives under the state directory, which a per-job uid may not traverse.
    // It becomes the cwd before unshare, which moves the cwd into the new mount namespace,
    // where `open_bind_sources` opens it again as "." (a bind source must be a mount of the
    // caller's namespace).
    // The mount root (`Policy::mount_root`) is opened the same way, and takes the trick when
    // a policy has both (one cwd): the first bind is then opened by its path after unshare.
    let early_dir = match (&policy.mount_root, policy.ro_binds.first()) {
        (Some(root), _) => Some(open_path(root).map_err(|e| format!("the mount root: {e}"))?),
        (None, Some((host, _))) if std::fs::metadata(host).is_ok_and(|m| m.is_dir()) => {
            Some(open_path(host)?)
        }
        _ => None,
    };
    let mount_root_is_cwd = policy.mount_root.is_some();
    if let Some((uid, gid)) = policy.run_as {
        if uid == 0 || gid == 0 {
            return Err("refusing to run a job as uid or gid 0".into());
        }
        // SAFETY: plain credential syscalls with integer arguments.
        unsafe {
            check(libc::setgroups(0, std::ptr::null()), "setgroups")?;
            check(libc::setresgid(gid, gid, gid), "setresgid")?;
            check(libc::setresuid(uid, uid, uid), "setresuid")?;
        }
        // A credential change clears the parent-death signal and makes the process
        // non-dumpable (its /proc files then belong to root and the id maps cannot be
        // written): restore both.
        set_pdeathsig()?;
        check(
            // SAFETY: prctl with integer arguments.
            unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) },
            "prctl(PR_SET_DUMPABLE)",
        )?;
        if nix::unistd::getppid() != parent {
            return Err("the daemon went away".into());
        }
    }
    // SAFETY: getuid/getgid cannot fail.
    let (outer_uid, outer_gid) = unsafe { (libc::getuid(), libc::getgid()) };
    if outer_uid == 0 {
        return Err("refusing to run a job as uid 0 outside its namespace".into());
    }
    // The network profile's egress runs outside the job's namespaces: its starter is forked
    // now, before unshare.
    let egress = if policy.network {
        Some(super::net::prepare(&policy.net_allow)?)
    } else {
        None
    };
    let prefix = seccomp::prefix_filter();
    let deny = seccomp::deny_filter()?;

    if let Some(fd) = &early_dir {
        nix::unistd::fchdir(fd).map_err(|e| format!("fchdir to the bind source: {e}"))?;
    }
    // A confined service (`host_network`) stays in the host's network namespace.
    let net = if policy.host_network {
        0
    } else {
        libc::CLONE_NEWNET
    };
    let flags = libc::CLONE_NEWUSER
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | net
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWCGROUP;
    check(
        // SAFETY: unshare with flag arguments only; we are single-threaded (a fresh process).
        unsafe { libc::unshare(flags) },
        if policy.host_network {
            "unshare(user, mount, pid, ipc, uts, cgroup namespaces)"
        } else {
            "unshare(user, mount, pid, net, ipc, uts, cgroup namespaces)"
        },
    )
    .map_err(|e| format!("{e} (are unprivileged user namespaces enabled?)"))?;
    let inside = policy.inside_id();
    std::fs::write("/proc/self/setgroups", "deny")
        .map_err(|e| format!("write /proc/self/setgroups: {e}"))?;
    std::fs::write("/proc/self/uid_map", format!("{inside} {outer_uid} 1\n"))
        .map_err(|e| format!("write uid_map: {e}"))?;
    std::fs::write("/proc/self/gid_map", format!("{inside} {outer_gid} 1\n"))
        .map_err(|e| format!("write gid_map: {e}"))?;
    // Held until the report is written; slirp4netns ends with the helper.
    let _egress = egress.map(super::net::Egress::start).transpose()?;

    // Host paths to show inside are opened now, before any mount hides them.
    let binds = open_bind_sources(
        &policy,
        early_dir.is_some() && !mount_root_is_cwd,
        mount_root_is_cwd,
    )?;
    drop(early_dir);
    let pty = policy.terminal.map(make_terminal).transpose()?;

    let (status_r, status_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe2: {e}"))?;
    let fault = fault_helper_dies_after_fork();
    // SAFETY: we are single-threaded, so the child may run arbitrary code after fork.
    match unsafe { nix::unistd::fork() }.map_err(|e| format!("fork: {e}"))? {
        nix::unistd::ForkResult::Child => {
            if fault {
                let pause = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 200_000_000,
                };
                // SAFETY: nanosleep with a valid timespec and no remainder pointer.
                unsafe { libc::nanosleep(&pause, std::ptr::null_mut()) };
            }
            drop(status_r);
            // Parent-death signal first. If the helper died since the fork (the daemon kills
            // it at the job's deadline), the signal will never come, so init ends here instead
            // of running a job nobody watches. `getppid` cannot tell (it is 0 for a PID
            // namespace's init, whoever its parent is); the status pipe can: the helper holds
            // its only read end, and the kernel closes a dying process's descriptors before it
            // hands its children to a new parent (and signals the armed ones).
            if set_pdeathsig().is_err() || !has_reader(&status_w) {
                // SAFETY: _exit ends this process at once.
                unsafe { libc::_exit(0) }
            }
            let keep = status_w.as_raw_fd();
            let mut w = std::fs::File::from(status_w);
            let line = match init(&policy, binds, &prefix, &deny, warm, keep, pty) {
                Ok(line) => line,
                Err(e) => format!("error {e}"),
            };
            let _ = w.write_all(line.as_bytes());
            // SAFETY: _exit ends this process at once.
            unsafe { libc::_exit(0) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            if fault {
                // SAFETY: kill of this very process; it does not return.
                unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
            }
            send_init_pidfd(child.as_raw());
            if let Some(pty) = pty {
                send_terminal(&pty.master)?;
                // The mount, the master and the slave: the helper keeps none of them.
                drop(pty);
            }
            drop(status_w);
            drop(binds);
            quiet_stdio();
            let mut text = String::new();
            let _ = std::fs::File::from(status_r).read_to_string(&mut text);
            let mut status: libc::c_int = 0;
            // SAFETY: an all-zero rusage is a valid value for wait4 to fill in.
            let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
            check(
                // SAFETY: wait4 on our own child with valid out-pointers.
                unsafe { libc::wait4(child.as_raw(), &mut status, 0, &mut usage) },
                "wait4",
            )?;
            let cpu_ms = tv_ms(usage.ru_utime) + tv_ms(usage.ru_stime);
            let max_rss_kb = u64::try_from(usage.ru_maxrss).unwrap_or(0);
            let (status, collect) = split_status(&text);
            let report = parse_status(status, cpu_ms, max_rss_kb);
            if !collect.is_empty() {
                send_collected(collect);
            }
            Ok(report)
        }
    }
}

/// Whether the pipe whose write end is `w` still has a reader (the kernel flags a write end
/// without one with POLLERR).
fn has_reader(w: &OwnedFd) -> bool {
    let mut pfd = libc::pollfd {
        fd: w.as_raw_fd(),
        events: 0,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no wait.
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    n >= 0 && pfd.revents & libc::POLLERR == 0
}

/// Hands the daemon a pidfd of init on the report socket, so that the daemon can end the job's
/// PID namespace and see it gone even when this helper is gone. Best effort: without it the
/// parent-death signals still end init.
fn send_init_pidfd(init: libc::pid_t) {
    // SAFETY: pidfd_open of our own child, which nothing reaps before the report is written.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, init, 0) };
    if fd < 0 {
        return;
    }
    // SAFETY: the syscall returned a new descriptor, which we now own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    let fds = [fd.as_raw_fd()];
    let _ = nix::sys::socket::sendmsg::<()>(
        REPORT_FD,
        &[std::io::IoSlice::new(b"\n")],
        &[nix::sys::socket::ControlMessage::ScmRights(&fds)],
        nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
        None,
    );
}

/// The job's terminal as the helper makes it (see the module comment).
struct Pty {
    /// The devpts instance, a detached mount until init moves it to the job's `/dev/pts`.
    devpts: OwnedFd,
    /// The master: the daemon's alone once the helper has sent it.
    master: OwnedFd,
    /// The slave, which becomes the job's 0–2.
    tty: JobTty,
}

/// What the job gets of its terminal.
struct JobTty {
    slave: OwnedFd,
    /// N of `/dev/pts/N` (0: the instance is the job's own).
    index: u32,
}

/// Kernel ABI of the mount API calls (linux/mount.h), absent from libc.
const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_FLAG: libc::c_uint = 0;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const MOUNT_ATTR_NOSUID: libc::c_uint = 0x2;
const MOUNT_ATTR_NOEXEC: libc::c_uint = 0x8;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

/// Takes ownership of a descriptor a syscall returned, naming the call on failure.
fn owned(ret: libc::c_long, what: &str) -> R<OwnedFd> {
    let fd = check(libc::c_int::try_from(ret).unwrap_or(-1), what)?;
    // SAFETY: the call just returned this new descriptor, which nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// In the helper, after unshare: a devpts instance of its own (detached, so nothing of it is
/// visible until init attaches it in the job's root), its master sized `size`, its slave.
/// `max=1`: the instance can never hold a second terminal, even if the job could reach its
/// `ptmx` (landlock does not let it).
fn make_terminal(size: super::policy::TerminalSize) -> R<Pty> {
    let fs = owned(
        // SAFETY: fsopen with a NUL-terminated name and a flag.
        unsafe { libc::syscall(libc::SYS_fsopen, c"devpts".as_ptr(), FSOPEN_CLOEXEC) },
        "fsopen(devpts)",
    )?;
    let config =
        |cmd: libc::c_uint, key: Option<&std::ffi::CStr>, value: Option<&std::ffi::CStr>| {
            let ptr = |c: Option<&std::ffi::CStr>| c.map_or(std::ptr::null(), |c| c.as_ptr());
            // SAFETY: fsconfig on our fs context with NUL-terminated strings or nulls.
            let ret = unsafe {
                libc::syscall(
                    libc::SYS_fsconfig,
                    fs.as_raw_fd(),
                    cmd,
                    ptr(key),
                    ptr(value),
                    0,
                )
            };
            check(ret as libc::c_int, "fsconfig(devpts)")
        };
    config(FSCONFIG_SET_FLAG, Some(c"newinstance"), None)?;
    config(FSCONFIG_SET_STRING, Some(c"ptmxmode"), Some(c"0666"))?;
    config(FSCONFIG_SET_STRING, Some(c"mode"), Some(c"0620"))?;
    config(FSCONFIG_SET_STRING, Some(c"max"), Some(c"1"))?;
    config(FSCONFIG_CMD_CREATE, None, None)?;
    let devpts = owned(
        // SAFETY: fsmount of our created fs context, flags and attributes only.
        unsafe {
            libc::syscall(
                libc::SYS_fsmount,
                fs.as_raw_fd(),
                FSMOUNT_CLOEXEC,
                MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC,
            )
        },
        "fsmount(devpts)",
    )?;
    drop(fs);
    let master = owned(
        // SAFETY: openat relative to the mount's root with a NUL-terminated name.
        libc::c_long::from(unsafe {
            libc::openat(
                devpts.as_raw_fd(),
                c"ptmx".as_ptr(),
                libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
            )
        }),
        "open ptmx",
    )?;
    let unlock: libc::c_int = 0;
    let mut index: libc::c_uint = 0;
    let winsize = libc::winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: terminal ioctls on our master, each with a valid pointer to its argument.
    unsafe {
        check(
            libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock),
            "TIOCSPTLCK",
        )?;
        check(
            libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut index),
            "TIOCGPTN",
        )?;
        // Set before the job exists, so it starts with its size (and no SIGWINCH).
        check(
            libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &winsize),
            "TIOCSWINSZ",
        )?;
    }
    let slave = owned(
        // SAFETY: TIOCGPTPEER takes open flags by value and returns a new descriptor.
        libc::c_long::from(unsafe {
            libc::ioctl(
                master.as_raw_fd(),
                libc::TIOCGPTPEER,
                libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
            )
        }),
        "TIOCGPTPEER",
    )?;
    Ok(Pty {
        devpts,
        master,
        tty: JobTty { slave, index },
    })
}

/// Hands the daemon the terminal's master on the report socket (see the module comment).
fn send_terminal(master: &OwnedFd) -> R<()> {
    let fds = [master.as_raw_fd()];
    nix::sys::socket::sendmsg::<()>(
        REPORT_FD,
        &[std::io::IoSlice::new(&[TERMINAL_MARKER])],
        &[nix::sys::socket::ControlMessage::ScmRights(&fds)],
        nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map_err(|e| format!("sending the terminal to the daemon: {e}"))?;
    Ok(())
}

/// In init, while it builds the root: attaches the terminal's devpts instance at `/dev/pts`
/// under `root`, with `/dev/ptmx` pointing into it.
fn mount_terminal(devpts: &OwnedFd, root: &str) -> R<()> {
    let target = format!("{root}/dev/pts");
    mkdir_p(&target)?;
    let t = cstr(&target)?;
    check(
        // SAFETY: move_mount of the detached mount we hold onto a valid C string path.
        unsafe {
            libc::syscall(
                libc::SYS_move_mount,
                devpts.as_raw_fd(),
                c"".as_ptr(),
                libc::AT_FDCWD,
                t.as_ptr(),
                MOVE_MOUNT_F_EMPTY_PATH,
            )
        } as libc::c_int,
        "move_mount devpts",
    )?;
    std::os::unix::fs::symlink("pts/ptmx", format!("{root}/dev/ptmx"))
        .map_err(|e| format!("symlink /dev/ptmx: {e}"))
}

/// In the job, after setsid: the slave becomes its controlling terminal and its 0–2 (the
/// slave's own descriptor is closed on exec).
fn take_terminal(tty: &JobTty) -> R<()> {
    let fd = tty.slave.as_raw_fd();
    check(
        // SAFETY: TIOCSCTTY with an integer argument (0: never steal) on our slave.
        unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 0) },
        "TIOCSCTTY",
    )?;
    for target in 0..=2 {
        // SAFETY: dup2 of the slave we hold onto the standard descriptors.
        check(unsafe { libc::dup2(fd, target) }, "dup2 the terminal")?;
    }
    Ok(())
}

/// Closes every descriptor but `keep` (and 0–2).
fn close_all_but(keep: &[RawFd]) -> R<()> {
    let mut keep: Vec<u32> = keep
        .iter()
        .filter_map(|&fd| u32::try_from(fd).ok())
        .collect();
    keep.extend([0, 1, 2]);
    keep.sort_unstable();
    keep.dedup();
    let close = |first: u32, last: u32| {
        check(
            // SAFETY: close_range with integer arguments; the descriptors closed are owned by
            // nothing that outlives this call (the callers keep what they still use).
            unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) } as libc::c_int,
            "close_range",
        )
    };
    let mut next = 0u32;
    for fd in keep {
        if fd > next {
            close(next, fd - 1)?;
        }
        next = fd + 1;
    }
    close(next, u32::MAX)?;
    Ok(())
}

fn tv_ms(tv: libc::timeval) -> u64 {
    u64::try_from(tv.tv_sec).unwrap_or(0) * 1000 + u64::try_from(tv.tv_usec).unwrap_or(0) / 1000
}

/// Init's status text: (the status, what to collect). Only a job that ended by itself (exit
/// or signal) has something to collect, on the line after its status; an error's message is
/// all of the text.
fn split_status(text: &str) -> (&str, &str) {
    match text.split_once('\n') {
        Some((s, c)) if s.starts_with("exit ") || s.starts_with("signal ") => (s, c),
        _ => (text, ""),
    }
}

fn parse_status(text: &str, cpu_ms: u64, max_rss_kb: u64) -> Report {
    let mut r = Report {
        cpu_ms,
        max_rss_kb,
        ..Report::default()
    };
    let mut parts = text.trim().splitn(2, ' ');
    let kind = parts.next().unwrap_or("");
    let rest = parts.next().unwrap_or("");
    match kind {
        "exit" | "signal" => {
            let mut f = rest.split(' ');
            let n: i32 = f.next().and_then(|v| v.parse().ok()).unwrap_or(-1);
            r.landlock = f.next().unwrap_or("").to_owned();
            r.proc_mounted = f.next() == Some("proc");
            r.exec_mono_ns = f.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            if kind == "exit" {
                r.kind = ReportKind::Exit;
                r.code = n
            } else {
                r.kind = ReportKind::Signal;
                r.signal = n
            }
        }
        "error" => {
            r.kind = ReportKind::Error;
            r.message = rest.to_owned();
        }
        _ => {
            r.kind = ReportKind::Error;
            r.message = "the sandbox's init ended without a report".into();
        }
    }
    r
}

/// Points fds 0–2 at /dev/null so only the job holds the daemon's pipes.
fn quiet_stdio() {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in 0..=2 {
            // SAFETY: dup2 onto the standard descriptors of this process.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
}

/// A host path to bind, opened as O_PATH before the mounts change the view.
struct Bind {
    fd: OwnedFd,
    inside: String,
    is_dir: bool,
}

/// System directories shown read-only. A name that is a symlink on the host (merged /usr)
/// becomes the same symlink inside.
pub const SYSTEM_DIRS: &[&str] = &[
    "/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
];
/// Device nodes a job may use.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom"];
/// Files and directories under /etc hidden from jobs.
const MASKED: &[&str] = &[
    "/etc/shadow",
    "/etc/gshadow",
    "/etc/shadow-",
    "/etc/gshadow-",
    "/etc/localhostd",
    "/etc/ssh",
    "/etc/sudoers",
    "/etc/sudoers.d",
];

struct Binds {
    list: Vec<Bind>,
    symlinks: Vec<(String, String)>,
}

fn open_path(path: &str) -> R<OwnedFd> {
    let c = cstr(path)?;
    let fd = check(
        // SAFETY: open with a valid C string; the fd is owned by the returned OwnedFd.
        unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) },
        &format!("open {path}"),
    )?;
    // SAFETY: fd was just returned by open and is not owned elsewhere.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `first_is_cwd`: the first read-only bind is the current directory (see `run`);
/// `mount_root_is_cwd`: the mount root is, and is bound at `MOUNTS_INSIDE`.
fn open_bind_sources(policy: &Policy, first_is_cwd: bool, mount_root_is_cwd: bool) -> R<Binds> {
    let mut list = Vec::new();
    let mut symlinks = Vec::new();
    for dir in SYSTEM_DIRS {
        match std::fs::symlink_metadata(dir) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = std::fs::read_link(dir).map_err(|e| format!("readlink {dir}: {e}"))?;
                symlinks.push((dir.to_string(), target.to_string_lossy().into_owned()));
            }
            Ok(m) if m.is_dir() => list.push(Bind {
                fd: open_path(dir)?,
                inside: dir.to_string(),
                is_dir: true,
            }),
            _ => {}
        }
    }
    for dev in DEVICES {
        let p = format!("/dev/{dev}");
        list.push(Bind {
            fd: open_path(&p)?,
            inside: p,
            is_dir: false,
        });
    }
    if policy.terminal.is_some() {
        list.push(Bind {
            fd: open_path("/dev/tty")?,
            inside: "/dev/tty".into(),
            is_dir: false,
        });
    }
    for (i, (host, inside)) in policy.ro_binds.iter().enumerate() {
        let source = if i == 0 && first_is_cwd { "." } else { host };
        let meta = std::fs::metadata(source).map_err(|e| format!("bind source {host}: {e}"))?;
        list.push(Bind {
            fd: open_path(source)?,
            inside: inside.clone(),
            is_dir: meta.is_dir(),
        });
    }
    if mount_root_is_cwd {
        list.push(Bind {
            fd: open_path(".")?,
            inside: MOUNTS_INSIDE.into(),
            is_dir: true,
        });
    }
    Ok(Binds { list, symlinks })
}

fn mount(
    src: Option<&str>,
    target: &str,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> R<()> {
    mount_raw(src, target, fstype, flags, data)?.map_err(|errno| {
        format!(
            "mount {} on {target}: {}",
            src.unwrap_or(fstype.unwrap_or("-")),
            std::io::Error::from_raw_os_error(errno)
        )
    })
}

/// mount(2), with its errno as the inner error (the outer one: a NUL byte in an argument).
fn mount_raw(
    src: Option<&str>,
    target: &str,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> R<Result<(), i32>> {
    let (s, t, f, d) = (
        src.map(cstr).transpose()?,
        cstr(target)?,
        fstype.map(cstr).transpose()?,
        data.map(cstr).transpose()?,
    );
    let ptr = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: every pointer is a valid C string or null, as mount(2) allows.
    let ret = unsafe { libc::mount(ptr(&s), t.as_ptr(), ptr(&f), flags, ptr(&d).cast()) };
    if ret == -1 {
        return Ok(Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO)));
    }
    Ok(Ok(()))
}

/// Hides `target` (a path in the job's root, which shows the host's /etc live): an empty
/// read-only tmpfs on a directory, /dev/null on anything else. The host may replace the file
/// while this runs (useradd renames a new /etc/gshadow over the old one), so a target that
/// vanishes between the look and the mount is looked at again; one that stays gone needs no
/// hiding.
fn mask(target: &str, root: &str) -> R<()> {
    let null = format!("{root}/dev/null");
    let mut last = 0;
    for _ in 0..5 {
        let attempt = match std::fs::symlink_metadata(target) {
            Ok(meta) if meta.is_dir() => mount_raw(
                Some("tmpfs"),
                target,
                Some("tmpfs"),
                libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
                Some("size=0,mode=000"),
            )?,
            Ok(_) => mount_raw(Some(&null), target, None, libc::MS_BIND, None)?,
            Err(_) => return Ok(()),
        };
        match attempt {
            Ok(()) => return Ok(()),
            Err(libc::ENOENT) => last = libc::ENOENT,
            Err(errno) => {
                return Err(format!(
                    "mask {target}: {}",
                    std::io::Error::from_raw_os_error(errno)
                ));
            }
        }
    }
    Err(format!(
        "mask {target}: {} (it kept vanishing while being hidden)",
        std::io::Error::from_raw_os_error(last)
    ))
}

/// Remounts a bind mount read-only, keeping the flags the kernel locked on it (nosuid, nodev,
/// noexec of the original), which a user namespace may not clear.
fn remount_ro(target: &str) -> R<()> {
    let st = nix::sys::statvfs::statvfs(target).map_err(|e| format!("statvfs {target}: {e}"))?;
    let f = st.flags();
    use nix::sys::statvfs::FsFlags;
    let mut flags =
        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV;
    if f.contains(FsFlags::ST_NOEXEC) {
        flags |= libc::MS_NOEXEC;
    }
    if f.contains(FsFlags::ST_NOATIME) {
        flags |= libc::MS_NOATIME;
    }
    if f.contains(FsFlags::ST_NODIRATIME) {
        flags |= libc::MS_NODIRATIME;
    }
    if f.contains(FsFlags::ST_RELATIME) {
        flags |= libc::MS_RELATIME;
    }
    mount(None, target, None, flags, None)
}

fn mkdir_p(path: &str) -> R<()> {
    std::fs::create_dir_all(path).map_err(|e| format!("mkdir {path}: {e}"))
}

fn touch(path: &str) -> R<()> {
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map(|_| ())
        .map_err(|e| format!("create {path}: {e}"))
}

/// Builds the job's root under `root` (a fresh tmpfs) and pivots into it. Returns whether a
/// private /proc could be mounted.
/// Builds the job's root; `devpts`: the terminal's instance, if the job has one.
fn build_root(policy: &Policy, binds: &Binds, devpts: Option<&OwnedFd>) -> R<bool> {
    let root = "/tmp";
    mount(None, "/", None, libc::MS_REC | libc::MS_PRIVATE, None)?;
    mount(
        Some("tmpfs"),
        root,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV,
        Some("mode=0755,size=1m,nr_inodes=1024"),
    )?;
    for (link, target) in &binds.symlinks {
        std::os::unix::fs::symlink(target, format!("{root}{link}"))
            .map_err(|e| format!("symlink {link}: {e}"))?;
    }
    mkdir_p(&format!("{root}/dev"))?;
    for b in &binds.list {
        let target = format!("{root}{}", b.inside);
        if b.is_dir {
            mkdir_p(&target)?;
        } else {
            if let Some(parent) = std::path::Path::new(&target).parent() {
                mkdir_p(&parent.to_string_lossy())?;
            }
            touch(&target)?;
        }
        let src = format!("/proc/self/fd/{}", b.fd.as_raw_fd());
        mount(
            Some(&src),
            &target,
            None,
            libc::MS_BIND | libc::MS_REC,
            None,
        )?;
        if b.inside.starts_with("/dev/") {
            // Device nodes keep their read-write bind; nodev is locked off only for them.
            continue;
        }
        remount_ro(&target)?;
    }
    // Hide what jobs must never read, even where file modes would allow it.
    for m in MASKED {
        mask(&format!("{root}{m}"), root)?;
    }
    if policy.network {
        // The host's resolver may be on its loopback, which the job cannot reach: the job
        // asks slirp4netns's DNS forwarder. Only where /etc/resolv.conf is a plain file (a
        // symlink into /run, as with systemd-resolved, points outside the sandbox).
        let target = format!("{root}/etc/resolv.conf");
        if std::fs::symlink_metadata(&target).is_ok_and(|m| m.is_file()) {
            let src = format!("{root}/.resolv.conf");
            std::fs::write(&src, super::net::RESOLV_CONF)
                .map_err(|e| format!("write resolv.conf: {e}"))?;
            mount(Some(&src), &target, None, libc::MS_BIND, None)?;
            remount_ro(&target)?;
            // Not unlinked: an unlinked file in use would keep the root from turning
            // read-only below.
        }
    }
    for dir in [policy.cwd.as_str(), "/tmp", "/dev/shm"] {
        mkdir_p(&format!("{root}{dir}"))?;
    }
    // A warm sandbox's come from its warm line; a job asking for other sizes gets them
    // remounted (`resize_scratch`).
    mount_scratch(policy, root)?;
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        std::os::unix::fs::symlink(target, format!("{root}/dev/{name}"))
            .map_err(|e| format!("symlink /dev/{name}: {e}"))?;
    }
    if let Some(devpts) = devpts {
        mount_terminal(devpts, root)?;
    }
    let proc_dir = format!("{root}/proc");
    mkdir_p(&proc_dir)?;
    let proc_flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    // Our own procfs, never the host's. Under systemd's ProtectKernelTunables the kernel may
    // refuse a full one; then try the pid-only subset, then go without /proc.
    let proc_mounted = mount(
        Some("proc"),
        &proc_dir,
        Some("proc"),
        proc_flags,
        Some("hidepid=invisible"),
    )
    .is_ok()
        || mount(
            Some("proc"),
            &proc_dir,
            Some("proc"),
            proc_flags,
            Some("hidepid=invisible,subset=pid"),
        )
        .is_ok();

    let old = format!("{root}/.oldroot");
    mkdir_p(&old)?;
    let (new_c, old_c) = (cstr(root)?, cstr(&old)?);
    check(
        // SAFETY: pivot_root via syscall with two valid C strings.
        unsafe { libc::syscall(libc::SYS_pivot_root, new_c.as_ptr(), old_c.as_ptr()) }
            as libc::c_int,
        "pivot_root",
    )?;
    std::env::set_current_dir("/").map_err(|e| format!("chdir /: {e}"))?;
    let old_inside = cstr("/.oldroot")?;
    check(
        // SAFETY: umount2 with a valid C string.
        unsafe { libc::umount2(old_inside.as_ptr(), libc::MNT_DETACH) },
        "umount the old root",
    )?;
    std::fs::remove_dir("/.oldroot").map_err(|e| format!("rmdir /.oldroot: {e}"))?;
    // The skeleton itself becomes read-only: no new top-level names.
    remount_root(true)?;
    Ok(proc_mounted)
}

/// The job's scratch (its cwd), /tmp and /dev/shm: tmpfs with the job's size and inode
/// limits, under `root` (the new root before pivot_root, "" after).
fn mount_scratch(policy: &Policy, root: &str) -> R<()> {
    let l = &policy.limits;
    let id = policy.inside_id();
    for (dir, mode) in [
        (policy.cwd.as_str(), "0700"),
        ("/tmp", "1777"),
        ("/dev/shm", "1777"),
    ] {
        let opts = format!(
            "mode={mode},size={},nr_inodes={},uid={id},gid={id}",
            l.tmpfs_bytes, l.tmpfs_inodes
        );
        mount(
            Some("tmpfs"),
            &format!("{root}{dir}"),
            Some("tmpfs"),
            libc::MS_NOSUID | libc::MS_NODEV,
            Some(&opts),
        )?;
    }
    Ok(())
}

/// In a warm sandbox: the job's tmpfs sizes where they differ from the ones it was built with.
fn resize_scratch(built: &Policy, job: &Policy) -> R<()> {
    let (b, j) = (&built.limits, &job.limits);
    if (b.tmpfs_bytes, b.tmpfs_inodes) == (j.tmpfs_bytes, j.tmpfs_inodes) {
        return Ok(());
    }
    for dir in [job.cwd.as_str(), "/tmp", "/dev/shm"] {
        let opts = format!("size={},nr_inodes={}", j.tmpfs_bytes, j.tmpfs_inodes);
        mount(
            None,
            dir,
            None,
            libc::MS_REMOUNT | libc::MS_NOSUID | libc::MS_NODEV,
            Some(&opts),
        )?;
    }
    Ok(())
}

/// Where the mount root (`Policy::mount_root`) is bound in the job's root while it is built;
/// detached and removed before the job starts.
const MOUNTS_INSIDE: &str = "/.mounts";

/// The byte that carries a collected directory on the report socket, after the directory's
/// index in the job's `collect` list (decimal digits). Whitespace to a JSON reader, like the
/// other markers; the daemon takes the digits and the marker out of the report's text.
pub const COLLECT_MARKER: u8 = b'\t';

/// open_tree(2)'s flag for a detached copy of the mount (linux/mount.h, absent from libc).
const OPEN_TREE_CLONE: libc::c_uint = 1;

/// Lookups that never follow a symlink, never leave the starting directory and never cross
/// into another mount.
fn strict() -> nix::fcntl::ResolveFlag {
    use nix::fcntl::ResolveFlag;
    ResolveFlag::RESOLVE_BENEATH
        | ResolveFlag::RESOLVE_NO_SYMLINKS
        | ResolveFlag::RESOLVE_NO_MAGICLINKS
        | ResolveFlag::RESOLVE_NO_XDEV
}

/// openat2 beneath `dir` with `resolve` (the same rules walked by hand where a filter refuses
/// openat2: `sandbox::beneath::open_beneath`).
fn open_beneath<P: ?Sized + nix::NixPath>(
    dir: &OwnedFd,
    path: &P,
    flags: nix::fcntl::OFlag,
    resolve: nix::fcntl::ResolveFlag,
) -> nix::Result<OwnedFd> {
    crate::jobs::sandbox::beneath::open_beneath(dir, path, flags, resolve)
}

/// The skeleton root (a 1 MiB tmpfs), read-only or writable again.
fn remount_root(read_only: bool) -> R<()> {
    let ro = if read_only { libc::MS_RDONLY } else { 0 };
    mount(
        None,
        "/",
        None,
        libc::MS_REMOUNT | ro | libc::MS_NOSUID | libc::MS_NODEV,
        Some("mode=0755,size=1m,nr_inodes=1024"),
    )
}

/// In init, once the job's policy is known (a cold sandbox: right after its root is built; a
/// warm one: when its job comes): the job's mounts, made from the mount root bound at
/// `MOUNTS_INSIDE` (`mounts_bound`), which is then detached and removed; then its inline
/// files. A sandbox built without a mount root and a job without files change nothing here.
fn apply_data(policy: &Policy, mounts_bound: bool) -> R<()> {
    if mounts_bound {
        remount_root(false)?;
        let root = nix::fcntl::open(
            MOUNTS_INSIDE,
            nix::fcntl::OFlag::O_PATH
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_NOFOLLOW
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| format!("open {MOUNTS_INSIDE}: {e}"))?;
        for m in &policy.mounts {
            job_mount(&root, m, policy.inside_id())?;
        }
        drop(root);
        nix::mount::umount2(MOUNTS_INSIDE, nix::mount::MntFlags::MNT_DETACH)
            .map_err(|e| format!("umount {MOUNTS_INSIDE}: {e}"))?;
        std::fs::remove_dir(MOUNTS_INSIDE).map_err(|e| format!("rmdir {MOUNTS_INSIDE}: {e}"))?;
        remount_root(true)?;
    } else if !policy.mounts.is_empty() {
        return Err("the job's mounts need a sandbox built with their mount root".into());
    }
    write_files(policy)
}

/// Makes the directory `path` (absolute) and its missing parents, 0755, never through a
/// symlink.
fn mount_point(path: &str) -> R<()> {
    let mut at = String::new();
    for c in path.split('/').filter(|c| !c.is_empty()) {
        at.push('/');
        at.push_str(c);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.is_dir() => continue,
            Ok(_) => return Err(format!("mount point {path}: {at} is not a directory")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir(&at).map_err(|e| format!("mkdir {at}: {e}"))?;
                std::fs::set_permissions(&at, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                    .map_err(|e| format!("chmod {at}: {e}"))?;
            }
            Err(e) => return Err(format!("mount point {path}: {at}: {e}")),
        }
    }
    Ok(())
}

/// One of the job's mounts, from `root` (the mount root): a read-only bind of its source, or
/// a tmpfs the job owns holding a copy of it.
fn job_mount(root: &OwnedFd, m: &super::policy::JobMount, id: u32) -> R<()> {
    use nix::fcntl::OFlag;
    mount_point(&m.inside)?;
    let target = cstr(&m.inside)?;
    if !m.writable {
        let source = open_beneath(
            root,
            m.source.as_str(),
            OFlag::O_PATH | OFlag::O_DIRECTORY,
            strict(),
        )
        .map_err(|e| format!("mount source {}: {e}", m.source))?;
        let tree = owned(
            // SAFETY: open_tree of a descriptor we own, an empty path, flags only.
            unsafe {
                libc::syscall(
                    libc::SYS_open_tree,
                    source.as_raw_fd(),
                    c"".as_ptr(),
                    OPEN_TREE_CLONE
                        | libc::O_CLOEXEC as libc::c_uint
                        | libc::AT_EMPTY_PATH as libc::c_uint,
                )
            },
            &format!("open_tree {}", m.source),
        )?;
        check(
            // SAFETY: move_mount of the detached tree we hold onto a valid C string path.
            unsafe {
                libc::syscall(
                    libc::SYS_move_mount,
                    tree.as_raw_fd(),
                    c"".as_ptr(),
                    libc::AT_FDCWD,
                    target.as_ptr(),
                    MOVE_MOUNT_F_EMPTY_PATH,
                )
            } as libc::c_int,
            &format!("move_mount {} to {}", m.source, m.inside),
        )?;
        return remount_ro(&m.inside);
    }
    let opts = format!(
        "mode=0755,size={},nr_inodes={},uid={id},gid={id}",
        m.size_bytes, m.inodes
    );
    mount(
        Some("tmpfs"),
        &m.inside,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV,
        Some(&opts),
    )?;
    if m.source.is_empty() {
        return Ok(());
    }
    let from = open_beneath(
        root,
        m.source.as_str(),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY,
        strict(),
    )
    .map_err(|e| format!("mount source {}: {e}", m.source))?;
    let to = nix::fcntl::open(
        m.inside.as_str(),
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| format!("open {}: {e}", m.inside))?;
    copy_tree(&from, &to).map_err(|e| {
        format!(
            "copying {} into the writable mount at {} ({} bytes, {} inodes): {e}",
            m.source, m.inside, m.size_bytes, m.inodes
        )
    })
}

/// Copies the tree under `from` into `to`: directories (0755) and regular files (0755 when
/// the source is executable, else 0644), nothing else (symlinks, devices, fifos, sockets
/// are left out), no symlink followed, no mount crossed. The tmpfs it fills bounds it: a
/// source too large fails with ENOSPC. Directories wait in a list of paths, so neither the
/// stack nor the open descriptors grow with the tree's depth or breadth.
fn copy_tree(from: &OwnedFd, to: &OwnedFd) -> R<()> {
    use nix::fcntl::OFlag;
    use nix::sys::stat::{Mode, SFlag};
    use std::os::unix::ffi::OsStrExt;
    let mut pending = vec![std::path::PathBuf::from(".")];
    while let Some(rel) = pending.pop() {
        let dir = open_beneath(from, &rel, OFlag::O_RDONLY | OFlag::O_DIRECTORY, strict())
            .map_err(|e| format!("{}: {e}", rel.display()))?;
        let out = open_beneath(to, &rel, OFlag::O_PATH | OFlag::O_DIRECTORY, strict())
            .map_err(|e| format!("{}: {e}", rel.display()))?;
        let listing = dir.try_clone().map_err(|e| format!("dup: {e}"))?;
        let names: Vec<CString> = nix::dir::Dir::from_fd(listing)
            .map_err(|e| format!("{}: {e}", rel.display()))?
            .into_iter()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_owned())
            .filter(|n| n.as_bytes() != b"." && n.as_bytes() != b"..")
            .collect();
        for name in names {
            let path = rel.join(std::ffi::OsStr::from_bytes(name.as_bytes()));
            let st = nix::sys::stat::fstatat(
                &dir,
                name.as_c_str(),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(|e| format!("{}: {e}", path.display()))?;
            let kind = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
            if kind == SFlag::S_IFDIR {
                nix::sys::stat::mkdirat(&out, name.as_c_str(), Mode::from_bits_truncate(0o700))
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                let made = open_beneath(
                    &out,
                    name.as_c_str(),
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY,
                    strict(),
                )
                .map_err(|e| format!("{}: {e}", path.display()))?;
                nix::sys::stat::fchmod(&made, Mode::from_bits_truncate(0o755))
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                pending.push(path);
            } else if kind == SFlag::S_IFREG {
                copy_file(&dir, &out, &name, st.st_mode & 0o111 != 0)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
    }
    Ok(())
}

/// Copies the regular file `name` of `from` to a new file of that name in `to`.
fn copy_file(from: &OwnedFd, to: &OwnedFd, name: &std::ffi::CStr, executable: bool) -> R<()> {
    use nix::fcntl::OFlag;
    use nix::sys::stat::Mode;
    let src = open_beneath(
        from,
        name,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK,
        strict(),
    )
    .map_err(|e| e.to_string())?;
    let mut src = std::fs::File::from(src);
    // Looked at again through the descriptor: it may have been replaced since the listing.
    if !src.metadata().map_err(|e| e.to_string())?.is_file() {
        return Ok(());
    }
    let mode = if executable { 0o755 } else { 0o644 };
    let dst = nix::fcntl::openat(
        to,
        name,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(mode),
    )
    .map_err(|e| e.to_string())?;
    nix::sys::stat::fchmod(&dst, Mode::from_bits_truncate(mode)).map_err(|e| e.to_string())?;
    let mut dst = std::fs::File::from(dst);
    std::io::copy(&mut src, &mut dst).map_err(|e| e.to_string())?;
    Ok(())
}

/// The job's inline files, in its cwd: folders made (0755), each file new (0644 or 0755; 0600
/// or 0700 when private),
/// owned by the job (init's uid inside is the job's), no symlink followed.
fn write_files(policy: &Policy) -> R<()> {
    use nix::fcntl::{OFlag, ResolveFlag};
    use nix::sys::stat::Mode;
    if policy.files.is_empty() {
        return Ok(());
    }
    let cwd = nix::fcntl::open(
        policy.cwd.as_str(),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("open {}: {e}", policy.cwd))?;
    let beneath = ResolveFlag::RESOLVE_BENEATH
        | ResolveFlag::RESOLVE_NO_SYMLINKS
        | ResolveFlag::RESOLVE_NO_MAGICLINKS;
    for f in &policy.files {
        let what = |e: nix::Error| format!("inline file {}: {e}", f.name);
        let (folders, leaf) = f.name.rsplit_once('/').unwrap_or(("", f.name.as_str()));
        let mut dir = cwd.try_clone().map_err(|e| format!("dup: {e}"))?;
        for c in folders.split('/').filter(|c| !c.is_empty()) {
            let made = match nix::sys::stat::mkdirat(&dir, c, Mode::from_bits_truncate(0o700)) {
                Ok(()) => true,
                Err(nix::errno::Errno::EEXIST) => false,
                Err(e) => return Err(what(e)),
            };
            dir = open_beneath(&dir, c, OFlag::O_RDONLY | OFlag::O_DIRECTORY, beneath)
                .map_err(what)?;
            if made {
                nix::sys::stat::fchmod(&dir, Mode::from_bits_truncate(0o755)).map_err(what)?;
            }
        }
        let mode = Mode::from_bits_truncate(match (f.private, f.executable) {
            (true, true) => 0o700,
            (true, false) => 0o600,
            (false, true) => 0o755,
            (false, false) => 0o644,
        });
        let fd = nix::fcntl::openat(
            &dir,
            leaf,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            mode,
        )
        .map_err(what)?;
        nix::sys::stat::fchmod(&fd, mode).map_err(what)?;
        std::fs::File::from(fd)
            .write_all(&f.content)
            .map_err(|e| format!("inline file {}: {e}", f.name))?;
    }
    Ok(())
}

/// What init tells the helper to collect once the job has ended, after its status line:
/// empty without a `collect` list.
#[derive(Debug, Serialize, Deserialize)]
struct CollectRequest {
    /// The job's `collect` list, in its order.
    collect: Vec<String>,
    /// Its cwd and its writable mounts: the only places a collected directory may be.
    cwd: String,
    writable: Vec<String>,
    /// Device and inode of init's root (the job's), which the helper checks it sees too.
    root: (u64, u64),
}

/// In init: the line (with its leading newline) that tells the helper what to collect.
fn collect_request(policy: &Policy) -> R<String> {
    if policy.collect.is_empty() {
        return Ok(String::new());
    }
    let root = std::fs::metadata("/").map_err(|e| format!("stat /: {e}"))?;
    let req = CollectRequest {
        collect: policy.collect.clone(),
        cwd: policy.cwd.clone(),
        writable: policy
            .mounts
            .iter()
            .filter(|m| m.writable)
            .map(|m| m.inside.clone())
            .collect(),
        root: (root.dev(), root.ino()),
    };
    let json = serde_json::to_string(&req).map_err(|e| format!("collect request: {e}"))?;
    Ok(format!("\n{json}"))
}

/// In the helper, once init has been reaped (so no process of the job is left to change
/// them): opens each directory `text` (init's collect request) names, in the job's mount
/// namespace, and hands it to the daemon after its index and a `COLLECT_MARKER`. Each is
/// checked again: a plain absolute path in the job's cwd or a writable mount. The directory
/// holding it (the cwd or the mount) is opened from the root without following a symlink,
/// the rest beneath it without following one or crossing a mount; one that is missing (or
/// not a directory) is skipped. Nothing is sent when the helper's root is not the job's.
fn send_collected(text: &str) {
    use nix::fcntl::{OFlag, ResolveFlag};
    let Ok(req) = serde_json::from_str::<CollectRequest>(text) else {
        return;
    };
    let Ok(root) = nix::fcntl::open(
        "/",
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    ) else {
        return;
    };
    match nix::sys::stat::fstat(&root) {
        Ok(st) if (st.st_dev, st.st_ino) == req.root => {}
        _ => return,
    }
    for (i, path) in req.collect.iter().enumerate() {
        let base = req
            .writable
            .iter()
            .filter(|w| super::policy::is_within(path, w))
            .max_by_key(|w| w.len())
            .or_else(|| super::policy::is_within(path, &req.cwd).then_some(&req.cwd));
        let Some(base) = base else { continue };
        if !(super::policy::plain_relative(path.trim_start_matches('/'))
            && path.starts_with('/')
            && super::policy::plain_relative(base.trim_start_matches('/')))
        {
            continue;
        }
        let Ok(dir) = open_beneath(
            &root,
            base.trim_start_matches('/'),
            OFlag::O_PATH | OFlag::O_DIRECTORY,
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        ) else {
            continue;
        };
        let rest = path[base.len()..].trim_start_matches('/');
        let rest = if rest.is_empty() { "." } else { rest };
        let Ok(fd) = open_beneath(&dir, rest, OFlag::O_RDONLY | OFlag::O_DIRECTORY, strict())
        else {
            continue;
        };
        let fds = [fd.as_raw_fd()];
        let mut msg = i.to_string().into_bytes();
        msg.push(COLLECT_MARKER);
        let _ = nix::sys::socket::sendmsg::<()>(
            REPORT_FD,
            &[std::io::IoSlice::new(&msg)],
            &[nix::sys::socket::ControlMessage::ScmRights(&fds)],
            nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
            None,
        );
    }
}

fn loopback_up() -> R<()> {
    let s = check(
        // SAFETY: socket() with constant arguments; the fd is closed below.
        unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) },
        "socket",
    )?;
    // SAFETY: s was just created; OwnedFd closes it.
    let _s = unsafe { OwnedFd::from_raw_fd(s) };
    // SAFETY: an all-zero ifreq is valid; we set the name and flags fields.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (i, b) in b"lo".iter().enumerate() {
        req.ifr_name[i] = *b as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS with a valid ifreq for interface "lo".
    unsafe {
        check(
            libc::ioctl(s, libc::SIOCGIFFLAGS, &mut req),
            "SIOCGIFFLAGS lo",
        )?;
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        check(libc::ioctl(s, libc::SIOCSIFFLAGS, &req), "SIOCSIFFLAGS lo")?;
    }
    Ok(())
}

/// PID 1 of the job's namespace (its parent-death signal already armed): builds the root,
/// starts the job, reaps, reports on `status` (the status pipe).
fn init(
    template: &Policy,
    binds: Binds,
    prefix: &seccompiler::BpfProgram,
    deny: &seccompiler::BpfProgram,
    warm: bool,
    status: RawFd,
    pty: Option<Pty>,
) -> R<String> {
    // Not dumpable: a job running as the same uid cannot open our /proc/1/mem.
    check(
        // SAFETY: prctl with integer arguments.
        unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) },
        "prctl(PR_SET_DUMPABLE)",
    )?;
    // Only the job's stdio, the status pipe, the bind sources and (warm) the rest of the
    // policy stay: the report socket is the helper's alone, and whatever else the helper held
    // (slirp4netns's exit pipe among them) must not live on in init.
    let mut keep: Vec<RawFd> = binds.list.iter().map(|b| b.fd.as_raw_fd()).collect();
    keep.push(status);
    if warm {
        keep.push(POLICY_FD);
    }
    // The terminal's master is the daemon's alone; init keeps the instance until it is in
    // the root and the slave until the job has it.
    let (devpts, tty) = match pty {
        Some(Pty {
            devpts,
            master,
            tty,
        }) => {
            drop(master);
            keep.extend([devpts.as_raw_fd(), tty.slave.as_raw_fd()]);
            (Some(devpts), Some(tty))
        }
        None => (None, None),
    };
    close_all_but(&keep)?;
    let proc_mounted = build_root(template, &binds, devpts.as_ref())?;
    // The root is built: the handles on the host's unmasked /etc, /usr… are not needed again.
    drop(binds);
    drop(devpts);
    let mounts_bound = template.mount_root.is_some();
    if !warm {
        apply_data(template, mounts_bound)?;
    }
    nix::unistd::sethostname("sandbox").map_err(|e| format!("sethostname: {e}"))?;
    // The host's network namespace (a confined service) is not ours to configure.
    if !template.host_network {
        loopback_up()?;
    }
    // A warm sandbox is complete here; it waits for its one job.
    let job_policy;
    let policy = if warm {
        job_policy = read_job_policy(template)?;
        resize_scratch(template, &job_policy)?;
        apply_data(&job_policy, mounts_bound)?;
        &job_policy
    } else {
        template
    };
    // What the helper collects once the job has ended (see `collect_dirs`).
    let collect_line = collect_request(policy)?;
    let (err_r, err_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe2: {e}"))?;
    // SAFETY: init is single-threaded; the child runs arbitrary code after fork.
    let job = match unsafe { nix::unistd::fork() }.map_err(|e| format!("fork: {e}"))? {
        nix::unistd::ForkResult::Child => {
            drop(err_r);
            let mut w = std::fs::File::from(err_w);
            let msg = match exec_job(policy, proc_mounted, prefix, deny, &mut w, tty.as_ref()) {
                Err(msg) => msg,
                Ok(never) => match never {},
            };
            let _ = w.write_all(msg.as_bytes());
            let _ = writeln!(
                std::io::stderr(),
                "localhostd sandbox: {}",
                msg.trim_start_matches("exec: ")
            );
            // SAFETY: _exit ends the failed job at once.
            unsafe { libc::_exit(127) }
        }
        nix::unistd::ForkResult::Parent { child } => child,
    };
    drop(tty);
    drop(err_w);
    quiet_stdio();
    // The job writes "landlock:<status>" just before execve, or an error when it fails.
    let mut from_job = String::new();
    let _ = std::fs::File::from(err_r).read_to_string(&mut from_job);
    let (landlock, exec_ns, setup_error) = match from_job.strip_prefix("landlock:") {
        Some(rest) => {
            let (status, err) = rest.split_once('\n').unwrap_or((rest, ""));
            let (status, ns) = status.split_once(' ').unwrap_or((status, "0"));
            (status.to_owned(), ns.to_owned(), err.to_owned())
        }
        None => ("none".to_owned(), "0".to_owned(), from_job),
    };
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: waitpid for any child of init with a valid out-pointer.
        let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
        if pid == -1 {
            return Err(format!("waitpid: {}", errno_str()));
        }
        if pid == job.as_raw() {
            let tail = format!(
                "{landlock} {} {exec_ns}",
                if proc_mounted { "proc" } else { "noproc" }
            );
            if libc::WIFEXITED(status) {
                // A program that cannot be started is the job's failure (exit 127, like a
                // shell); anything else that failed before execve is the sandbox's.
                if libc::WEXITSTATUS(status) == 127
                    && !setup_error.is_empty()
                    && !setup_error.starts_with("exec: ")
                {
                    return Err(setup_error);
                }
                return Ok(format!(
                    "exit {} {tail}{collect_line}",
                    libc::WEXITSTATUS(status)
                ));
            }
            if libc::WIFSIGNALED(status) {
                return Ok(format!(
                    "signal {} {tail}{collect_line}",
                    libc::WTERMSIG(status)
                ));
            }
        }
    }
}

fn set_rlimit(resource: libc::__rlimit_resource_t, soft: u64, hard: u64, name: &str) -> R<()> {
    let lim = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    check(
        // SAFETY: setrlimit with a valid rlimit struct.
        unsafe { libc::setrlimit(resource, &lim) },
        &format!("setrlimit({name})"),
    )?;
    Ok(())
}

fn find_program(argv0: &str, env: &[(String, String)]) -> R<String> {
    if argv0.contains('/') {
        return Ok(argv0.to_owned());
    }
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())
        .unwrap_or("/usr/bin:/bin");
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let candidate = format!("{dir}/{argv0}");
        if let Ok(m) = std::fs::metadata(&candidate)
            && m.is_file()
            && m.mode() & 0o111 != 0
        {
            return Ok(candidate);
        }
    }
    Err(format!("exec: {argv0}: command not found"))
}

/// The landlock ABI version the kernel offers (0 without landlock).
fn landlock_abi() -> i64 {
    /// LANDLOCK_CREATE_RULESET_VERSION (linux/landlock.h).
    const VERSION: libc::c_uint = 1;
    // SAFETY: landlock_create_ruleset with a null attribute, size 0 and the VERSION flag
    // only returns the ABI version (or -1); it creates nothing.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            VERSION,
        )
    };
    v.max(0)
}

/// The first landlock ABI with TCP port rules (Linux 6.7).
const LANDLOCK_NET_ABI: i64 = 4;

/// The job's TCP port rules (`Policy::net_ports`) as landlock rules: each port with the rights
/// it is listed for. `None`: no port rule to apply (none asked for, or, with
/// `allow_degraded`, a kernel without them: the job is told so on its stderr). A kernel
/// without them fails the job otherwise.
fn net_port_rules(
    policy: &Policy,
) -> R<Option<std::collections::BTreeMap<u16, landlock::BitFlags<landlock::AccessNet>>>> {
    use landlock::AccessNet;
    let Some(ports) = &policy.net_ports else {
        return Ok(None);
    };
    let abi = landlock_abi();
    if abi < LANDLOCK_NET_ABI {
        let why = format!(
            "the job's TCP port rules (net_ports) need landlock ABI {LANDLOCK_NET_ABI} (Linux 6.7); this kernel's is {abi}"
        );
        if !policy.allow_degraded {
            return Err(format!("landlock: {why}"));
        }
        let _ = writeln!(
            std::io::stderr(),
            "localhostd sandbox: WARNING: TCP port rules not applied: {why} (sandbox.allow-degraded)"
        );
        return Ok(None);
    }
    let mut rules = std::collections::BTreeMap::new();
    for (list, access) in [
        (&ports.connect, AccessNet::ConnectTcp),
        (&ports.bind, AccessNet::BindTcp),
    ] {
        for port in list {
            *rules
                .entry(*port)
                .or_insert_with(landlock::BitFlags::<AccessNet>::empty) |= access;
        }
    }
    Ok(Some(rules))
}

/// `tty`: N of the job's `/dev/pts/N`, if it has a terminal.
fn landlock_restrict(policy: &Policy, proc_mounted: bool, tty: Option<u32>) -> R<&'static str> {
    use landlock::{
        ABI, Access, AccessFs, AccessNet, CompatLevel, Compatible, NetPort, RulesetAttr,
        RulesetCreatedAttr, RulesetStatus, Scope, path_beneath_rules,
    };
    let abi = ABI::V6;
    let level = if policy.allow_degraded {
        CompatLevel::BestEffort
    } else {
        CompatLevel::HardRequirement
    };
    let le = |e: landlock::RulesetError| format!("landlock: {e}");
    let read_exec = AccessFs::from_read(abi);
    let mut ro: Vec<String> = SYSTEM_DIRS
        .iter()
        .filter(|d| std::fs::symlink_metadata(d).is_ok_and(|m| m.is_dir()))
        .map(|d| d.to_string())
        .collect();
    ro.extend(policy.ro_binds.iter().map(|(_, inside)| inside.clone()));
    ro.extend(
        policy
            .mounts
            .iter()
            .filter(|m| !m.writable)
            .map(|m| m.inside.clone()),
    );
    if proc_mounted {
        ro.push("/proc".into());
    }
    let mut rw = vec![policy.cwd.clone(), "/tmp".into(), "/dev/shm".into()];
    rw.extend(
        policy
            .mounts
            .iter()
            .filter(|m| m.writable)
            .map(|m| m.inside.clone()),
    );
    let devices: Vec<String> = DEVICES.iter().map(|d| format!("/dev/{d}")).collect();
    // The job may reopen its own terminal (a shell opens /dev/tty) and use its ioctls (those
    // that inject input stay refused by seccomp); never `ptmx`, so it cannot make another.
    let terminal: Vec<String> = tty
        .map(|n| vec!["/dev/tty".into(), format!("/dev/pts/{n}")])
        .unwrap_or_default();
    let net = net_port_rules(policy)?;
    let ruleset = landlock::Ruleset::default()
        .set_compatibility(level)
        .handle_access(AccessFs::from_all(abi))
        .map_err(le)?
        .scope(Scope::from_all(abi))
        .map_err(le)?;
    // TCP connect and bind handled (ABI 4's rights: UDP stays ungoverned) when the job has
    // port rules: then only the listed ports are allowed.
    let ruleset = match &net {
        Some(_) => ruleset
            .handle_access(AccessNet::from_all(ABI::V4))
            .map_err(le)?,
        None => ruleset,
    };
    let mut created = ruleset.create().map_err(le)?;
    for (port, access) in net.iter().flatten() {
        created = created.add_rule(NetPort::new(*port, *access)).map_err(le)?;
    }
    let status = created
        .add_rules(path_beneath_rules(&ro, read_exec))
        .map_err(le)?
        .add_rules(path_beneath_rules(&rw, AccessFs::from_all(abi)))
        .map_err(le)?
        .add_rules(path_beneath_rules(
            &devices,
            AccessFs::from_read(abi) | AccessFs::WriteFile,
        ))
        .map_err(le)?
        .add_rules(path_beneath_rules(
            &terminal,
            AccessFs::from_read(abi) | AccessFs::WriteFile | AccessFs::IoctlDev,
        ))
        .map_err(le)?
        // Listing directories is harmless here: the root holds only what we mounted.
        .add_rules(path_beneath_rules(["/"], AccessFs::ReadDir))
        .map_err(le)?
        .restrict_self()
        .map_err(le)?;
    let skipped_ports = policy.net_ports.is_some() && net.is_none();
    Ok(match status.ruleset {
        RulesetStatus::FullyEnforced if skipped_ports => "partial",
        RulesetStatus::FullyEnforced => "full",
        RulesetStatus::PartiallyEnforced => "partial",
        RulesetStatus::NotEnforced => "none",
    })
}

/// The job after fork: everything up to execve. Returns only on failure.
/// Every signal back to its default action and none blocked, so the job starts as a fresh
/// process would whatever the daemon inherited: a shell that starts a program in the
/// background without job control makes it ignore SIGINT and SIGQUIT, an ignored signal stays
/// ignored across execve, and a terminal's ^C would then interrupt nothing in the job.
fn reset_signals() -> R<()> {
    for sig in 1..=libc::SIGRTMAX() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: setting a signal's action to SIG_DFL; the numbers the C library keeps for
        // itself answer EINVAL, which leaves them as they are.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
    nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    )
    .map_err(|e| format!("sigprocmask: {e}"))
}

fn exec_job(
    policy: &Policy,
    proc_mounted: bool,
    prefix: &seccompiler::BpfProgram,
    deny: &seccompiler::BpfProgram,
    report: &mut std::fs::File,
    tty: Option<&JobTty>,
) -> R<std::convert::Infallible> {
    nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
    reset_signals()?;
    if let Some(tty) = tty {
        take_terminal(tty)?;
    }
    std::env::set_current_dir(&policy.cwd).map_err(|e| format!("chdir {}: {e}", policy.cwd))?;
    let l = &policy.limits;
    set_rlimit(libc::RLIMIT_CPU, l.cpu_s, l.cpu_s + 1, "RLIMIT_CPU")?;
    set_rlimit(libc::RLIMIT_DATA, l.data_bytes, l.data_bytes, "RLIMIT_DATA")?;
    set_rlimit(libc::RLIMIT_NPROC, l.processes, l.processes, "RLIMIT_NPROC")?;
    set_rlimit(
        libc::RLIMIT_FSIZE,
        l.file_size_bytes,
        l.file_size_bytes,
        "RLIMIT_FSIZE",
    )?;
    set_rlimit(
        libc::RLIMIT_NOFILE,
        l.open_files,
        l.open_files,
        "RLIMIT_NOFILE",
    )?;
    set_rlimit(libc::RLIMIT_CORE, 0, 0, "RLIMIT_CORE")?;
    set_rlimit(
        libc::RLIMIT_STACK,
        l.stack_soft_bytes(),
        l.stack_bytes,
        "RLIMIT_STACK",
    )?;
    if let Some(a) = l.address_space_bytes {
        set_rlimit(libc::RLIMIT_AS, a, a, "RLIMIT_AS")?;
    }
    let program = find_program(&policy.argv[0], &policy.env)?;
    let path = cstr(&program)?;
    let argv: Vec<CString> = policy.argv.iter().map(|a| cstr(a)).collect::<R<_>>()?;
    let envp: Vec<CString> = policy
        .env
        .iter()
        .map(|(k, v)| cstr(&format!("{k}={v}")))
        .collect::<R<_>>()?;
    // Every inherited descriptor above 2 is closed on exec.
    check(
        // SAFETY: close_range with integer arguments.
        unsafe {
            libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            )
        } as libc::c_int,
        "close_range",
    )?;
    caps::clear(None, caps::CapSet::Ambient)
        .map_err(|e| format!("clear ambient capabilities: {e}"))?;
    caps::clear(None, caps::CapSet::Inheritable)
        .map_err(|e| format!("clear inheritable capabilities: {e}"))?;
    for cap in caps::all() {
        caps::drop(None, caps::CapSet::Bounding, cap)
            .map_err(|e| format!("drop {cap} from the bounding set: {e}"))?;
    }
    check(
        // SAFETY: prctl with integer arguments.
        unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) },
        "prctl(PR_SET_NO_NEW_PRIVS)",
    )?;
    let landlock = landlock_restrict(policy, proc_mounted, tty.map(|t| t.index))?;
    if landlock == "none" {
        let _ = writeln!(
            std::io::stderr(),
            "localhostd sandbox: WARNING: landlock is not enforced (sandbox.allow-degraded)"
        );
    }
    caps::clear(None, caps::CapSet::Effective)
        .map_err(|e| format!("clear effective capabilities: {e}"))?;
    caps::clear(None, caps::CapSet::Permitted)
        .map_err(|e| format!("clear permitted capabilities: {e}"))?;
    seccompiler::apply_filter(prefix).map_err(|e| format!("seccomp (prefix): {e}"))?;
    seccompiler::apply_filter(deny).map_err(|e| format!("seccomp (deny-list): {e}"))?;
    // Without a memory cgroup nothing would count memfd or System V shared memory.
    if l.address_space_bytes.is_some() {
        seccompiler::apply_filter(&seccomp::unbounded_memory_filter())
            .map_err(|e| format!("seccomp (unbounded memory): {e}"))?;
    }
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut envp_ptrs: Vec<*const libc::c_char> = envp.iter().map(|e| e.as_ptr()).collect();
    envp_ptrs.push(std::ptr::null());
    let _ = writeln!(report, "landlock:{landlock} {}", monotonic_ns());
    // SAFETY: NUL-terminated arrays of valid C strings that outlive the call.
    unsafe { libc::execve(path.as_ptr(), argv_ptrs.as_ptr(), envp_ptrs.as_ptr()) };
    Err(format!("exec: cannot execute {program}: {}", errno_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_parse() {
        let r = parse_status("exit 3 full proc", 5, 6);
        assert_eq!(
            (r.kind.as_str(), r.code, r.landlock.as_str(), r.proc_mounted),
            ("exit", 3, "full", true)
        );
        let r = parse_status("signal 9 full noproc", 0, 0);
        assert_eq!(
            (r.kind.as_str(), r.signal, r.proc_mounted),
            ("signal", 9, false)
        );
        let r = parse_status("error mount x: EPERM", 0, 0);
        assert_eq!(
            (r.kind.as_str(), r.message.as_str()),
            ("error", "mount x: EPERM")
        );
        assert_eq!(parse_status("", 0, 0).kind, "error");
        // What to collect follows a job's own end, never an error.
        let (status, collect) = split_status("exit 0 full proc 12\n{\"collect\":[]}");
        assert_eq!(parse_status(status, 0, 0).exec_mono_ns, 12);
        assert_eq!(collect, "{\"collect\":[]}");
        assert_eq!(split_status("signal 9 full proc 1\n{}").1, "{}");
        assert_eq!(split_status("error a\nb"), ("error a\nb", ""));
        assert_eq!(
            split_status("exit 0 full proc 1"),
            ("exit 0 full proc 1", "")
        );
    }

    #[test]
    fn report_kinds_keep_their_wire_names() {
        for (kind, wire) in [
            (ReportKind::Exit, "\"exit\""),
            (ReportKind::Signal, "\"signal\""),
            (ReportKind::Error, "\"error\""),
            (ReportKind::Killed, "\"killed\""),
        ] {
            assert_eq!(serde_json::to_string(&kind).unwrap(), wire);
            assert_eq!(serde_json::from_str::<ReportKind>(wire).unwrap(), kind);
        }
        // A kind the daemon does not know ends the job as killed, as before.
        assert_eq!(
            serde_json::from_str::<ReportKind>("\"vanished\"").unwrap(),
            ReportKind::Killed
        );
        let line = r#"{"kind":"exit","code":3,"signal":0,"cpu_ms":1,"max_rss_kb":2,"message":"","landlock":"full","proc_mounted":true}"#;
        let r: Report = serde_json::from_str(line).unwrap();
        assert_eq!((r.kind, r.code), (ReportKind::Exit, 3));
        let fallback: Report = serde_json::from_str(r#"{"kind":"error"}"#).unwrap();
        assert_eq!(fallback.kind, ReportKind::Error);
    }
}
