//! The sandbox zygote (`localhostd sandbox-zygote`): one small, single-threaded process the
//! daemon starts once, which forks a sandbox helper for every job.
//!
//! Why: forking the daemon itself for each job copies the page tables of a large
//! multi-threaded process (then copy-on-write faults and TLB-shootdown IPIs in every daemon
//! thread), and re-executing our binary costs a dynamic load and startup each time. A fork of
//! this small process costs a fraction of both. Nothing is reused between jobs: every helper
//! is a fresh fork that builds its own namespaces, mounts and processes (`child`).
//!
//! Protocol over the `SOCK_SEQPACKET` socket on fd 3 (one message per request, one reply):
//! - request: one byte of flags (`FLAG_CGROUP`, `FLAG_WARM`) and, as `SCM_RIGHTS`, the job's stdin (read
//!   end), stdout and stderr (write ends), the policy pipe (read end), the report pipe (write
//!   end) and, with `FLAG_CGROUP`, the job's cgroup directory;
//! - reply: the helper's pid as 4 bytes (native endian; the negated errno when the fork
//!   failed) and, on success, a pidfd of the helper as `SCM_RIGHTS`.
//!
//! The fork's child puts those descriptors on 0–4 (as `child` expects), moves itself into the
//! cgroup by writing "0" to its `cgroup.procs`, closes every other descriptor, sets its parent-
//! death signal and becomes the helper. The zygote takes the pidfd before it reaps anything,
//! so the pid cannot have been reused; it reaps its children between requests. It exits when
//! the daemon closes its end of the socket, and dies with the daemon (parent-death signal set
//! by the daemon before exec), which kills every helper in turn (theirs).

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};

/// The zygote's end of the request socket.
pub const SOCKET_FD: RawFd = 3;
/// Request flag: a cgroup directory follows the five job descriptors.
pub const FLAG_CGROUP: u8 = 1;
/// Request flag: a warm helper (`child::main_warm`), built before its job is known.
pub const FLAG_WARM: u8 = 2;
/// Descriptors in a request without / with a cgroup.
pub const JOB_FDS: usize = 5;
const MAX_FDS: usize = JOB_FDS + 1;
/// Descriptors the zygote moves received fds above, so that putting them on 0–4 in the
/// child never overwrites one not yet placed.
const HIGH_FD: RawFd = 64;

/// Entry point of `localhostd sandbox-zygote`.
pub fn main() -> ! {
    // SAFETY: getppid cannot fail.
    let parent = unsafe { libc::getppid() };
    if parent == 1 {
        // The daemon is already gone (its parent-death signal raced with our exec).
        std::process::exit(0);
    }
    // Orphans below us (a helper's slirp4netns when the helper is gone) are reparented to us
    // and reaped here, not left to PID 1.
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    // Anything the daemon held without close-on-exec (its socket-activation descriptors are
    // such) is not ours to keep: only 0–2 and the request socket stay.
    // SAFETY: closes descriptors from 4 up; none is in use by this fresh process.
    unsafe { libc::syscall(libc::SYS_close_range, 4u32, u32::MAX, 0) };
    loop {
        reap();
        let mut pfd = libc::pollfd {
            fd: SOCKET_FD,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd; a timeout so exited helpers are reaped while idle.
        let n = unsafe { libc::poll(&mut pfd, 1, 200) };
        if n == 0 || (n < 0 && nix::errno::Errno::last() == nix::errno::Errno::EINTR) {
            continue;
        }
        if n < 0 {
            std::process::exit(1);
        }
        match serve_one() {
            Ok(true) => {}
            // The daemon closed its end, or the socket broke: nothing more will come.
            Ok(false) | Err(_) => {
                reap();
                std::process::exit(0)
            }
        }
    }
}

/// Reaps every helper that has exited (their exit status is in their report, not here).
fn reap() {
    loop {
        let mut status = 0;
        // SAFETY: waitpid with a valid out-pointer and WNOHANG.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return;
        }
    }
}

/// Handles one request. `Ok(false)` when the daemon has closed the socket.
fn serve_one() -> nix::Result<bool> {
    let mut flags = [0u8; 1];
    let mut cmsg = nix::cmsg_space!([RawFd; MAX_FDS]);
    let mut fds: Vec<OwnedFd> = Vec::with_capacity(MAX_FDS);
    let got = {
        let mut iov = [IoSliceMut::new(&mut flags)];
        let msg = recvmsg::<()>(
            SOCKET_FD,
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        for c in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(list) = c {
                for fd in list {
                    // SAFETY: the kernel just installed `fd` in our table for us.
                    fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        msg.bytes
    };
    if got == 0 && fds.is_empty() {
        return Ok(false);
    }
    let want = if flags[0] & FLAG_CGROUP != 0 {
        JOB_FDS + 1
    } else {
        JOB_FDS
    };
    if got != 1 || fds.len() != want {
        reply(-libc::EINVAL, None)?;
        return Ok(true);
    }
    let mut high = Vec::with_capacity(fds.len());
    for fd in &fds {
        // SAFETY: F_DUPFD_CLOEXEC on a descriptor we own.
        let h = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, HIGH_FD) };
        if h < 0 {
            reply(-nix::errno::Errno::last_raw(), None)?;
            return Ok(true);
        }
        // SAFETY: fcntl just returned this new descriptor.
        high.push(unsafe { OwnedFd::from_raw_fd(h) });
    }
    drop(fds);
    // SAFETY: getpid cannot fail.
    let me = unsafe { libc::getpid() };
    // SAFETY: this process is single-threaded, so the child may run any code after fork.
    match unsafe { libc::fork() } {
        0 => become_helper(&high, me, flags[0] & FLAG_WARM != 0),
        -1 => reply(-nix::errno::Errno::last_raw(), None)?,
        pid => {
            // SAFETY: pidfd_open on our own unreaped child (nothing reaps before this).
            let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
            if pidfd < 0 {
                let e = nix::errno::Errno::last_raw();
                // SAFETY: kill of our own child, which has not been reaped.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                reply(-e, None)?;
            } else {
                // SAFETY: the syscall returned a new descriptor, which we now own.
                let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) };
                reply(pid, Some(&pidfd))?;
            }
        }
    }
    Ok(true)
}

fn reply(pid: i32, pidfd: Option<&OwnedFd>) -> nix::Result<()> {
    let bytes = pid.to_ne_bytes();
    let iov = [IoSlice::new(&bytes)];
    let raw = pidfd.map(|f| [f.as_raw_fd()]);
    let cmsgs: Vec<ControlMessage> = raw.iter().map(|r| ControlMessage::ScmRights(r)).collect();
    sendmsg::<()>(SOCKET_FD, &iov, &cmsgs, MsgFlags::empty(), None)?;
    Ok(())
}

/// In the fork's child: descriptors to 0–4, into the cgroup, nothing else open, parent-death
/// signal, then the helper proper.
fn become_helper(fds: &[OwnedFd], zygote: libc::pid_t, warm: bool) -> ! {
    for (target, fd) in fds.iter().take(JOB_FDS).enumerate() {
        // SAFETY: dup2 of a descriptor we own onto one of 0–4 (the socket on 3 is replaced).
        if unsafe { libc::dup2(fd.as_raw_fd(), target as RawFd) } < 0 {
            // SAFETY: _exit ends this process at once; the daemon sees an empty report.
            unsafe { libc::_exit(1) }
        }
    }
    if let Some(cg) = fds.get(JOB_FDS)
        && let Err(e) = join_cgroup(cg)
    {
        fail(&format!("cannot move the job into its cgroup: {e}"));
    }
    // SAFETY: closes every descriptor from 5 up (ours above HIGH_FD included); 0–4 stay.
    if unsafe { libc::syscall(libc::SYS_close_range, JOB_FDS as u32, u32::MAX, 0) } < 0 {
        fail("close_range failed");
    }
    // SAFETY: prctl with integer arguments only.
    let r = unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    // SAFETY: getppid cannot fail.
    if r < 0 || unsafe { libc::getppid() } != zygote {
        // SAFETY: _exit ends this process at once.
        unsafe { libc::_exit(1) }
    }
    if warm {
        super::child::main_warm()
    } else {
        super::child::main()
    }
}

fn join_cgroup(dir: &OwnedFd) -> Result<(), String> {
    let name = c"cgroup.procs";
    // SAFETY: openat relative to a directory descriptor we own, with a NUL-terminated name.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_WRONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(format!("open cgroup.procs: {}", nix::errno::Errno::last()));
    }
    // SAFETY: openat just returned this descriptor.
    let f = unsafe { OwnedFd::from_raw_fd(fd) };
    // "0" moves the writing process.
    nix::unistd::write(&f, b"0").map_err(|e| format!("write cgroup.procs: {e}"))?;
    Ok(())
}

/// Writes an error report (fd 4) and exits: the daemon reports a sandbox error.
fn fail(message: &str) -> ! {
    let report = super::child::Report {
        kind: super::child::ReportKind::Error,
        message: message.into(),
        ..Default::default()
    };
    let line = serde_json::to_string(&report).unwrap_or_else(|_| "{\"kind\":\"error\"}".into());
    let _ = nix::unistd::write(
        // SAFETY: fd 4 is the report pipe, placed there just before.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(4) },
        line.as_bytes(),
    );
    // SAFETY: _exit ends this process at once.
    unsafe { libc::_exit(0) }
}
