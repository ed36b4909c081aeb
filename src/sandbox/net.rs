//! The `net` profile's egress: user-space networking for the job's own network namespace by
//! slirp4netns (Debian's `slirp4netns`), in the sandbox helper.
//!
//! The job keeps its own network namespace; slirp4netns, running outside it as the job's
//! (outer) uid, gives it a `tap0` (10.0.2.100/24, gateway 10.0.2.2, DNS forwarder 10.0.2.3)
//! and makes the job's connections from the host's network stack as ordinary sockets. What
//! the job may not reach:
//! - the host's loopback: `--disable-host-loopback` (10.0.2.2 is not mapped to 127.0.0.1; the
//!   job's own 127.0.0.1 is its own namespace's);
//! - link-local addresses (169.254.0.0/16, cloud metadata services among them): a reject
//!   route in the job's namespace, added before the job starts (the job has no capability to
//!   remove it);
//! - no IPv6 (slirp4netns without `--enable-ipv6`).
//!
//! Order: `prepare` forks the starter before `unshare` (it must stay in the host's namespaces)
//! → the helper unshares → `Egress::start` tells the starter to exec slirp4netns for the
//! helper's pid and waits for its ready byte → routes. slirp4netns dies with the helper
//! (parent-death signal, and its exit fd closes when the helper exits).

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

type R<T> = Result<T, String>;

/// Where Debian (and Fedora) install it; the job's PATH is not trusted for this.
const SLIRP4NETNS: &str = "/usr/bin/slirp4netns";
/// The job's resolver: slirp4netns's DNS forwarder.
pub const RESOLV_CONF: &str = "nameserver 10.0.2.3\n";
/// How long slirp4netns may take to configure the interface.
const READY_TIMEOUT_MS: libc::c_int = 5000;

/// The starter forked before `unshare`, waiting to exec slirp4netns.
pub struct Egress {
    go: std::fs::File,
    ready: OwnedFd,
    /// Held by the helper: slirp4netns exits when it closes.
    _exit: OwnedFd,
}

fn pipe() -> R<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe2: {e}"))
}

/// Forks the starter (in the host's namespaces, as the job's outer uid). Call before unshare.
pub fn prepare() -> R<Egress> {
    if std::fs::metadata(SLIRP4NETNS).is_err() {
        return Err(format!(
            "the network profile needs {SLIRP4NETNS} (Debian package slirp4netns), which is not installed"
        ));
    }
    // slirp4netns opens it as the job's uid inside the job's namespaces; find out now, with
    // a clear message, whether that can work (Debian's udev makes it 0666; systemd's
    // PrivateDevices= hides it).
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
    {
        return Err(format!(
            "the network profile needs /dev/net/tun open to the job's uid (mode 0666, as Debian's udev sets it; hidden by systemd's PrivateDevices=): {e}"
        ));
    }
    let (go_r, go_w) = pipe()?;
    let (ready_r, ready_w) = pipe()?;
    let (exit_r, exit_w) = pipe()?;
    // SAFETY: getpid cannot fail.
    let helper = unsafe { libc::getpid() };
    // SAFETY: the helper is single-threaded, so the child may run any code after fork.
    match unsafe { nix::unistd::fork() }.map_err(|e| format!("fork: {e}"))? {
        nix::unistd::ForkResult::Child => {
            drop((go_w, ready_r, exit_w));
            let e = starter(helper, go_r, ready_w, exit_r);
            let _ = writeln!(std::io::stderr(), "localhostd sandbox: {e}");
            // SAFETY: _exit ends the starter at once.
            unsafe { libc::_exit(127) }
        }
        nix::unistd::ForkResult::Parent { .. } => {
            drop((go_r, ready_w, exit_r));
            Ok(Egress {
                go: std::fs::File::from(go_w),
                ready: ready_r,
                _exit: exit_w,
            })
        }
    }
}

/// In the starter: wait for the helper's namespaces, then become slirp4netns.
fn starter(helper: libc::pid_t, go: OwnedFd, ready: OwnedFd, exit: OwnedFd) -> String {
    // SAFETY: prctl with integer arguments only.
    if unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )
    } < 0
        // SAFETY: getppid cannot fail.
        || unsafe { libc::getppid() } != helper
    {
        return "the sandbox helper went away".into();
    }
    let mut byte = [0u8; 1];
    if std::fs::File::from(go).read_exact(&mut byte).is_err() {
        // The helper failed before its namespaces existed: nothing to do.
        // SAFETY: _exit ends the starter at once.
        unsafe { libc::_exit(0) }
    }
    // slirp4netns gets /dev/null for stdio, the ready fd on 3, the exit fd on 4, nothing else
    // (none of the job's pipes: the daemon waits for their EOF).
    let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    else {
        return "open /dev/null failed".into();
    };
    let moves: [(RawFd, RawFd); 5] = [
        (null.as_raw_fd(), 0),
        (null.as_raw_fd(), 1),
        (null.as_raw_fd(), 2),
        (ready.as_raw_fd(), 3),
        (exit.as_raw_fd(), 4),
    ];
    // Move the sources above the targets first so no dup2 overwrites a source still needed.
    let mut high = Vec::new();
    for (src, _) in moves {
        // SAFETY: F_DUPFD_CLOEXEC of a descriptor we hold.
        let h = unsafe { libc::fcntl(src, libc::F_DUPFD_CLOEXEC, 64) };
        if h < 0 {
            return "fcntl(F_DUPFD) failed".into();
        }
        high.push(h);
    }
    for (h, (_, target)) in high.iter().zip(moves) {
        // SAFETY: dup2 onto 0–4 of this process; the results are not close-on-exec.
        if unsafe { libc::dup2(*h, target) } < 0 {
            return "dup2 failed".into();
        }
    }
    // SAFETY: closes everything from 5 up (the copies above, the helper's descriptors).
    unsafe { libc::syscall(libc::SYS_close_range, 5u32, u32::MAX, 0) };
    let pid = helper.to_string();
    let args = [
        SLIRP4NETNS,
        "--configure",
        "--mtu=65520",
        "--disable-host-loopback",
        "--enable-seccomp",
        "--ready-fd=3",
        "--exit-fd=4",
        &pid,
        "tap0",
    ];
    let Ok(c_args) = args
        .iter()
        .map(|a| std::ffi::CString::new(*a))
        .collect::<Result<Vec<_>, _>>()
    else {
        return "bad slirp4netns argument".into();
    };
    let mut ptrs: Vec<*const libc::c_char> = c_args.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    let env: [*const libc::c_char; 1] = [std::ptr::null()];
    // SAFETY: NUL-terminated argv and envp arrays of valid C strings that outlive the call.
    unsafe { libc::execve(ptrs[0], ptrs.as_ptr(), env.as_ptr()) };
    format!("cannot run {SLIRP4NETNS}: {}", nix::errno::Errno::last())
}

impl Egress {
    /// After `unshare` and the id maps: starts slirp4netns for our namespaces and waits until
    /// the interface is configured.
    pub fn start(mut self) -> R<EgressRunning> {
        self.go
            .write_all(b"g")
            .map_err(|e| format!("starting slirp4netns: {e}"))?;
        let mut pfd = libc::pollfd {
            fd: self.ready.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, READY_TIMEOUT_MS) };
        if n <= 0 {
            return Err("slirp4netns did not configure the network in time".into());
        }
        let mut byte = [0u8; 1];
        match std::fs::File::from(self.ready).read(&mut byte) {
            Ok(1) => {}
            _ => return Err("slirp4netns failed to configure the network".into()),
        }
        reject_route([169, 254, 0, 0], [255, 255, 0, 0])?;
        Ok(EgressRunning { _exit: self._exit })
    }
}

/// Keeps slirp4netns running for as long as it is held (the helper holds it to the end).
pub struct EgressRunning {
    _exit: OwnedFd,
}

/// Adds an IPv4 reject route (`ip route add unreachable NET/MASK`) in our network namespace.
fn reject_route(net: [u8; 4], mask: [u8; 4]) -> R<()> {
    // SAFETY: socket() with constant arguments; the fd is owned below.
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if s < 0 {
        return Err(format!("socket: {}", nix::errno::Errno::last()));
    }
    // SAFETY: s was just created.
    let s = unsafe { OwnedFd::from_raw_fd(s) };
    let sin = |a: [u8; 4]| {
        // SAFETY: an all-zero sockaddr_in is valid; family and address set below.
        let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        sa.sin_family = libc::AF_INET as libc::sa_family_t;
        sa.sin_addr.s_addr = u32::from_ne_bytes(a);
        // SAFETY: sockaddr_in and sockaddr have the same size and a compatible layout.
        unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sa) }
    };
    // SAFETY: an all-zero rtentry is valid; the fields the kernel reads are set below.
    let mut rt: libc::rtentry = unsafe { std::mem::zeroed() };
    rt.rt_dst = sin(net);
    rt.rt_genmask = sin(mask);
    rt.rt_gateway = sin([0, 0, 0, 0]);
    rt.rt_flags = libc::RTF_UP | libc::RTF_REJECT;
    // SAFETY: SIOCADDRT with a valid rtentry.
    if unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCADDRT, &rt) } < 0 {
        return Err(format!(
            "adding the reject route for {}.{}.{}.{}: {}",
            net[0],
            net[1],
            net[2],
            net[3],
            nix::errno::Errno::last()
        ));
    }
    Ok(())
}
