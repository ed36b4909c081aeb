//! The `net` profile's egress: user-space networking for the job's own network namespace by
//! slirp4netns (Debian's `slirp4netns`), in the sandbox helper.
//!
//! The job keeps its own network namespace; slirp4netns, running outside it as the job's
//! (outer) uid, gives it a `tap0` (10.0.2.100/24, gateway 10.0.2.2, DNS forwarder 10.0.2.3)
//! and makes the job's connections from the host's network stack as ordinary sockets. So
//! whatever address the job's own kernel lets through to `tap0` is reached *from the host*:
//! the gate has to be in the job's namespace, before any packet reaches slirp4netns, which
//! has no destination filter of its own.
//!
//! The job reaches globally reachable IPv4 addresses only. In its namespace, once slirp4netns
//! has configured `tap0` and before the job exists, the helper (which holds CAP_NET_ADMIN in
//! the job's user namespace; the job has no capability and cannot change them) adds, over
//! rtnetlink, `prohibit` routes in the main table (a connect or send to them fails at once
//! with EACCES, TCP and UDP alike, nothing is sent):
//! - every IPv4 range the IANA special-purpose registry marks as not globally reachable
//!   ([`DENY`]: "this network", RFC 1918 private, RFC 6598 shared 100.64.0.0/10 with other
//!   clouds' metadata address 100.100.100.200, loopback, link-local 169.254.0.0/16 with the
//!   usual metadata address, documentation, benchmarking, reserved, multicast, broadcast);
//! - each of the host's own IPv4 addresses (a /32 each, read with getifaddrs when the job
//!   starts, before unshare), since those reach the host's services bound to any address;
//! - the profile's `net-allow` networks get ordinary routes via the gateway instead: a deny
//!   entry an allowed network contains is left out, and an allowed network inside a deny
//!   range wins by being the longer prefix;
//! - slirp4netns's own network 10.0.2.0/24 keeps its connected route (longer than 10/8).
//!
//! slirp4netns answers ARP only for its own gateway and DNS addresses, so a socket bound to
//! `tap0` (SO_BINDTODEVICE makes the kernel treat any destination as on-link) gets no further.
//! The host's loopback: `--disable-host-loopback` (10.0.2.2 and the rest of 10.0.2.0/24 are not
//! mapped to 127.0.0.1; the job's own 127.0.0.1 is its own namespace's). IPv6 is not offered:
//! slirp4netns runs without `--enable-ipv6`, IPv6 is turned off on `tap0` (no link-local
//! address, no neighbour discovery) and a `prohibit ::/0` route refuses every IPv6 destination
//! but the job's own ::1.
//!
//! slirp4netns itself runs as the job's outer uid with `--enable-seccomp` (its own syscall
//! allow-list), but without `--enable-sandbox`: run unprivileged, that option joins the
//! target's user namespace and switches to uid and gid 0 there (`setegid(0)`) to build its
//! mount namespace, and the job's user namespace maps only the job's uid (uid 0 stays
//! unmapped so that nothing in it can be root), so slirp4netns fails with "setegid(0)".
//!
//! Order: `prepare` reads the host's addresses and forks the starter before `unshare` (both
//! must happen in the host's namespaces) → the helper unshares → `Egress::start` tells the
//! starter to exec slirp4netns for the helper's pid and waits for its ready byte → routes.
//! slirp4netns dies with the helper (parent-death signal, and its exit fd closes when the
//! helper exits).

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::policy::Cidr;

type R<T> = Result<T, String>;

/// Where Debian (and Fedora) install it; the job's PATH is not trusted for this.
const SLIRP4NETNS: &str = "/usr/bin/slirp4netns";
/// The job's resolver: slirp4netns's DNS forwarder.
pub const RESOLV_CONF: &str = "nameserver 10.0.2.3\n";
/// How long slirp4netns may take to configure the interface.
const READY_TIMEOUT_MS: libc::c_int = 5000;

/// slirp4netns's gateway (the default route's next hop).
const GATEWAY: [u8; 4] = [10, 0, 2, 2];
/// slirp4netns's own network (gateway, DNS forwarder, the job's address).
const SLIRP_NET: Cidr = Cidr::new([10, 0, 2, 0], 24);

/// IPv4 ranges the IANA special-purpose address registry marks as not globally reachable,
/// plus multicast: the `net` profile refuses them unless `net-allow` names them.
pub const DENY: [Cidr; 15] = [
    Cidr::new([0, 0, 0, 0], 8),       // "this network" (RFC 791)
    Cidr::new([10, 0, 0, 0], 8),      // private (RFC 1918)
    Cidr::new([100, 64, 0, 0], 10),   // shared address space (RFC 6598), 100.100.100.200
    Cidr::new([127, 0, 0, 0], 8),     // loopback
    Cidr::new([169, 254, 0, 0], 16),  // link-local, 169.254.169.254
    Cidr::new([172, 16, 0, 0], 12),   // private (RFC 1918)
    Cidr::new([192, 0, 0, 0], 24),    // IETF protocol assignments
    Cidr::new([192, 0, 2, 0], 24),    // documentation (TEST-NET-1)
    Cidr::new([192, 88, 99, 0], 24),  // deprecated 6to4 relay anycast
    Cidr::new([192, 168, 0, 0], 16),  // private (RFC 1918)
    Cidr::new([198, 18, 0, 0], 15),   // benchmarking
    Cidr::new([198, 51, 100, 0], 24), // documentation (TEST-NET-2)
    Cidr::new([203, 0, 113, 0], 24),  // documentation (TEST-NET-3)
    Cidr::new([224, 0, 0, 0], 4),     // multicast
    Cidr::new([240, 0, 0, 0], 4),     // reserved, broadcast
];

/// A route the helper adds in the job's namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `prohibit NET`: refused with EACCES.
    Prohibit(Cidr),
    /// `NET via 10.0.2.2`: an allowed network.
    Allow(Cidr),
}

/// The IPv4 routes for a job: the deny ranges and the host's own addresses refused, less what
/// `allow` contains; each allowed network routed through the gateway.
pub fn plan(host: &[std::net::Ipv4Addr], allow: &[Cidr]) -> Vec<Route> {
    let mut deny: Vec<Cidr> = DENY.to_vec();
    for a in host {
        let c = Cidr {
            addr: *a,
            prefix: 32,
        };
        // The host's loopback is never reachable (its own namespace's lo answers 127/8), and
        // addresses inside slirp4netns's network are shadowed by it.
        if !a.is_loopback() && !SLIRP_NET.contains(&c) && !deny.contains(&c) {
            deny.push(c);
        }
    }
    let mut out: Vec<Route> = deny
        .into_iter()
        .filter(|d| !allow.iter().any(|a| a.contains(d)))
        .map(Route::Prohibit)
        .collect();
    for a in allow {
        // /0 is the default route already there.
        if a.prefix > 0 && !out.contains(&Route::Allow(*a)) {
            out.push(Route::Allow(*a));
        }
    }
    out
}

/// The host's own IPv4 addresses (every interface), read in the host's network namespace.
fn host_addresses() -> R<Vec<std::net::Ipv4Addr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs with a valid out-pointer; the list is freed below.
    if unsafe { libc::getifaddrs(&mut head) } < 0 {
        return Err(format!("getifaddrs: {}", nix::errno::Errno::last()));
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: cur is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        let family = if ifa.ifa_addr.is_null() {
            None
        } else {
            // SAFETY: ifa_addr, when set, points to a sockaddr whose family says its type.
            Some(i32::from(unsafe { (*ifa.ifa_addr).sa_family }))
        };
        if family == Some(libc::AF_INET) {
            // SAFETY: an AF_INET address is a sockaddr_in.
            let sin = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_in>() };
            out.push(std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)));
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: head came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// The starter forked before `unshare`, waiting to exec slirp4netns.
pub struct Egress {
    go: std::fs::File,
    ready: OwnedFd,
    /// Held by the helper: slirp4netns exits when it closes.
    _exit: OwnedFd,
    routes: Vec<Route>,
}

fn pipe() -> R<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe2: {e}"))
}

/// Reads the host's addresses and forks the starter (in the host's namespaces, as the job's
/// outer uid). Call before unshare.
pub fn prepare(allow: &[Cidr]) -> R<Egress> {
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
    let routes = plan(&host_addresses()?, allow);
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
                routes,
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
        // No IPv6 on tap0: no link-local address, no neighbour discovery towards slirp4netns.
        std::fs::write("/proc/sys/net/ipv6/conf/tap0/disable_ipv6", "1")
            .map_err(|e| format!("turning IPv6 off on tap0: {e}"))?;
        let nl = Netlink::open()?;
        nl.add_route(libc::AF_INET6, &[0; 16], 0, libc::RTN_PROHIBIT, None)
            .map_err(|e| format!("adding the route prohibit ::/0: {e}"))?;
        for r in &self.routes {
            let (c, kind, via) = match r {
                Route::Prohibit(c) => (c, libc::RTN_PROHIBIT, None),
                Route::Allow(c) => (c, libc::RTN_UNICAST, Some(GATEWAY)),
            };
            nl.add_route(libc::AF_INET, &c.addr.octets(), c.prefix, kind, via)
                .map_err(|e| format!("adding the route for {c}: {e}"))?;
        }
        Ok(EgressRunning { _exit: self._exit })
    }
}

/// Keeps slirp4netns running for as long as it is held (the helper holds it to the end).
pub struct EgressRunning {
    _exit: OwnedFd,
}

/// An rtnetlink socket in our network namespace.
struct Netlink(OwnedFd);

/// Appends one route attribute (type, payload), padded to 4 bytes.
fn rta(msg: &mut Vec<u8>, kind: u16, data: &[u8]) {
    let len = 4 + data.len();
    msg.extend_from_slice(&(len as u16).to_ne_bytes());
    msg.extend_from_slice(&kind.to_ne_bytes());
    msg.extend_from_slice(data);
    msg.resize(msg.len().next_multiple_of(4), 0);
}

impl Netlink {
    fn open() -> R<Netlink> {
        // SAFETY: socket() with constant arguments; the fd is owned below.
        let s = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if s < 0 {
            return Err(format!("netlink socket: {}", nix::errno::Errno::last()));
        }
        // SAFETY: s was just created and is ours.
        Ok(Netlink(unsafe { OwnedFd::from_raw_fd(s) }))
    }

    /// `ip route add TYPE DST/PREFIX [via GW]` in the main table, and waits for the kernel's
    /// acknowledgement.
    fn add_route(
        &self,
        family: libc::c_int,
        dst: &[u8],
        prefix: u8,
        kind: u8,
        via: Option<[u8; 4]>,
    ) -> Result<(), nix::errno::Errno> {
        let mut msg = vec![0u8; 16];
        // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
        msg.extend_from_slice(&[
            family as u8,
            prefix,
            0,
            0,
            libc::RT_TABLE_MAIN,
            libc::RTPROT_STATIC,
            libc::RT_SCOPE_UNIVERSE,
            kind,
        ]);
        msg.extend_from_slice(&0u32.to_ne_bytes());
        if prefix > 0 {
            rta(&mut msg, libc::RTA_DST, dst);
        }
        if let Some(gw) = via {
            rta(&mut msg, libc::RTA_GATEWAY, &gw);
        }
        let len = msg.len() as u32;
        let flags =
            (libc::NLM_F_REQUEST | libc::NLM_F_ACK | libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16;
        msg[0..4].copy_from_slice(&len.to_ne_bytes());
        msg[4..6].copy_from_slice(&libc::RTM_NEWROUTE.to_ne_bytes());
        msg[6..8].copy_from_slice(&flags.to_ne_bytes());
        msg[8..12].copy_from_slice(&1u32.to_ne_bytes());
        // SAFETY: an all-zero sockaddr_nl (pid 0: the kernel) with its family set.
        let mut to: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        to.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: sendto with a valid buffer and a sockaddr_nl of the right size.
        let n = unsafe {
            libc::sendto(
                self.0.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&raw const to).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(nix::errno::Errno::last());
        }
        let mut buf = [0u8; 1024];
        // SAFETY: recv into a valid buffer of its length.
        let n = unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(nix::errno::Errno::last());
        }
        // The answer is one NLMSG_ERROR: a header, then the error (0 is the acknowledgement).
        let n = n as usize;
        if n < 20 || u16::from_ne_bytes([buf[4], buf[5]]) != libc::NLMSG_ERROR as u16 {
            return Err(nix::errno::Errno::EPROTO);
        }
        let err = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
        if err == 0 {
            Ok(())
        } else {
            Err(nix::errno::Errno::from_raw(-err))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_refuses_special_ranges_and_host_addresses_less_the_allow_list() {
        let host = [
            std::net::Ipv4Addr::new(127, 0, 0, 1),
            std::net::Ipv4Addr::new(198, 51, 100, 7),
            std::net::Ipv4Addr::new(8, 8, 4, 4),
            std::net::Ipv4Addr::new(10, 0, 2, 15),
        ];
        let p = plan(&host, &[]);
        for d in DENY {
            assert!(p.contains(&Route::Prohibit(d)), "{d}");
        }
        // A public host address gets its own /32; loopback and slirp's network do not.
        assert!(p.contains(&Route::Prohibit(Cidr::new([8, 8, 4, 4], 32))));
        assert!(
            !p.iter()
                .any(|r| *r == Route::Prohibit(Cidr::new([127, 0, 0, 1], 32)))
        );
        assert!(
            !p.iter()
                .any(|r| *r == Route::Prohibit(Cidr::new([10, 0, 2, 15], 32)))
        );
        assert!(!p.iter().any(|r| matches!(r, Route::Allow(_))));

        // Allowing the host's address and a LAN: the /32 deny goes, the allowed routes come,
        // and a deny range the allowed network only partly covers stays (longest prefix).
        let allow = [
            Cidr::new([8, 8, 4, 4], 32),
            Cidr::new([192, 168, 1, 0], 24),
            Cidr::new([10, 0, 0, 0], 7),
        ];
        let p = plan(&host, &allow);
        assert!(!p.contains(&Route::Prohibit(Cidr::new([8, 8, 4, 4], 32))));
        assert!(p.contains(&Route::Allow(Cidr::new([8, 8, 4, 4], 32))));
        assert!(p.contains(&Route::Prohibit(Cidr::new([192, 168, 0, 0], 16))));
        assert!(p.contains(&Route::Allow(Cidr::new([192, 168, 1, 0], 24))));
        assert!(!p.contains(&Route::Prohibit(Cidr::new([10, 0, 0, 0], 8))));
        // Everything allowed: no deny left, and no second default route.
        let p = plan(&host, &[Cidr::new([0, 0, 0, 0], 0)]);
        assert!(p.is_empty(), "{p:?}");
    }
}
