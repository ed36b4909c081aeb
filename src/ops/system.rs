//! System facts for `GET /api/v1/system`: who the host is (hostname, OS, kernel, CPU, boot
//! time), what it has (memory, swap, filesystems, network interfaces) and what the daemon can
//! see of it. Read fresh from procfs, sysfs, statvfs and getifaddrs on each call, because the
//! facts are cheap to read and a cache would only add a staleness rule.
//!
//! Two things bound the work of a call: statvfs runs on a thread of its own per mount with a
//! deadline (a stale network mount can block it for ever), and a mount still blocked from an
//! earlier call is not asked again until that thread returns; the lists are capped.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use procfs::{Current, CurrentSI};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::util::time::rfc3339_at;

/// How long one statvfs may take before its filesystem is reported without sizes.
const STATVFS_DEADLINE: Duration = Duration::from_secs(1);
/// At most this many filesystems and interfaces are listed (the rest is counted).
const MAX_LISTED: usize = 64;

/// Filesystem types that hold no user data: kernel interfaces and memory-backed scratch. They
/// are left out of the list (the response counts them in `pseudo_filesystems`).
const PSEUDO_FS: &[&str] = &[
    "autofs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devpts",
    "devtmpfs",
    "efivarfs",
    "fusectl",
    "hugetlbfs",
    "mqueue",
    "nsfs",
    "proc",
    "pstore",
    "ramfs",
    "rpc_pipefs",
    "securityfs",
    "selinuxfs",
    "squashfs",
    "sysfs",
    "tmpfs",
    "tracefs",
];

/// The answer of `GET /api/v1/system`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SystemFacts {
    pub hostname: String,
    pub os: Os,
    pub kernel: Kernel,
    /// When the host booted (RFC 3339 UTC).
    pub boot_time: String,
    /// Seconds since boot (suspended time included).
    pub uptime_s: u64,
    pub cpu: Cpu,
    pub load: Load,
    pub memory: Memory,
    /// Real filesystems as the daemon's mount namespace has them, one per device (the
    /// shortest mount point, as `df` lists them), mount point order.
    pub filesystems: Vec<Filesystem>,
    /// Mounts left out of `filesystems`: kernel and memory-backed filesystems (proc, sysfs,
    /// cgroup, tmpfs…), squashfs images, and filesystems past the list's cap (64).
    pub pseudo_filesystems: usize,
    pub interfaces: Vec<Interface>,
    /// What the daemon can see of the host.
    pub visibility: Visibility,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Os {
    /// `PRETTY_NAME` of os-release (e.g. "Debian GNU/Linux 13 (trixie)"); "Linux" without one.
    pub name: String,
    /// `ID` of os-release (e.g. "debian").
    pub id: Option<String>,
    /// `VERSION_ID` of os-release (e.g. "13").
    pub version_id: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Kernel {
    /// The release (`uname -r`).
    pub release: String,
    /// The build string (`uname -v`).
    pub version: String,
    /// The machine (`uname -m`, e.g. "x86_64").
    pub arch: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Cpu {
    /// The model name of the first CPU in /proc/cpuinfo; null when the architecture names none.
    pub model: Option<String>,
    /// Logical CPUs online.
    pub count: usize,
    /// Logical CPUs this daemon may run on (its affinity mask and cgroup quota).
    pub usable: usize,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Load {
    pub one: f64,
    pub five: f64,
    pub fifteen: f64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Memory {
    pub total_bytes: u64,
    /// MemAvailable: what can be allocated without swapping (null on kernels before 3.14).
    pub available_bytes: Option<u64>,
    pub swap_total_bytes: u64,
    pub swap_free_bytes: u64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Filesystem {
    pub mountpoint: String,
    pub fstype: String,
    /// The mount source (a device path, a server share…), "none" when there is none.
    pub device: String,
    /// Bytes; null when statvfs failed or did not answer in time (see `error`).
    pub size_bytes: Option<u64>,
    pub used_bytes: Option<u64>,
    /// Bytes an unprivileged user may still write.
    pub avail_bytes: Option<u64>,
    /// used / (used + avail), as `df` shows it.
    pub used_percent: Option<f64>,
    pub readonly: bool,
    /// Why the sizes are missing.
    pub error: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Interface {
    pub name: String,
    /// Administratively up and with a carrier (IFF_UP and IFF_RUNNING).
    pub up: bool,
    /// The kernel's operational state from sysfs ("up", "down", "unknown" for loopback…).
    pub operstate: Option<String>,
    pub loopback: bool,
    /// The hardware address, when it has one.
    pub mac: Option<String>,
    pub mtu: Option<u32>,
    pub addresses: Vec<Address>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Address {
    /// "inet" or "inet6".
    pub family: &'static str,
    pub address: String,
    /// The prefix length of its netmask.
    pub prefix: u8,
}

/// What the daemon can see, so a page can say when a list is partial.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Visibility {
    /// "all": every process of the host; "own": only processes of the daemon's own user
    /// (/proc mounted with hidepid, as the packaged unit's `ProtectProc=invisible` does).
    pub processes: &'static str,
    /// Why, in a sentence for people; null when everything is visible.
    pub reason: Option<String>,
    /// The user the daemon runs as.
    pub user: String,
    /// Filesystems are those of the daemon's own mount namespace: under the packaged unit
    /// that is the host's, with /tmp private and some paths read-only.
    pub mounts: &'static str,
}

/// Reads everything. Blocking (procfs, statvfs): call it off the async runtime.
pub fn facts() -> Result<SystemFacts> {
    let internal = |what: &str, e: &dyn std::fmt::Display| Error::Internal(format!("{what}: {e}"));
    let uname = nix::sys::utsname::uname().map_err(|e| internal("uname", &e))?;
    let uptime = procfs::Uptime::current().map_err(|e| internal("/proc/uptime", &e))?;
    let stat = procfs::KernelStats::current().map_err(|e| internal("/proc/stat", &e))?;
    let load = procfs::LoadAverage::current().map_err(|e| internal("/proc/loadavg", &e))?;
    let mem = procfs::Meminfo::current().map_err(|e| internal("/proc/meminfo", &e))?;
    let (filesystems, pseudo) = filesystems()?;
    let two = |v: f32| (f64::from(v) * 100.0).round() / 100.0;
    Ok(SystemFacts {
        hostname: uname.nodename().to_string_lossy().into_owned(),
        os: os_release(),
        kernel: Kernel {
            release: uname.release().to_string_lossy().into_owned(),
            version: uname.version().to_string_lossy().into_owned(),
            arch: uname.machine().to_string_lossy().into_owned(),
        },
        boot_time: rfc3339_at(UNIX_EPOCH + Duration::from_secs(stat.btime)),
        uptime_s: uptime.uptime as u64,
        cpu: cpu(stat.cpu_time.len()),
        load: Load {
            one: two(load.one),
            five: two(load.five),
            fifteen: two(load.fifteen),
        },
        memory: Memory {
            total_bytes: mem.mem_total,
            available_bytes: mem.mem_available,
            swap_total_bytes: mem.swap_total,
            swap_free_bytes: mem.swap_free,
        },
        filesystems,
        pseudo_filesystems: pseudo,
        interfaces: interfaces()?,
        visibility: visibility(),
    })
}

/// PRETTY_NAME, ID and VERSION_ID of /etc/os-release (else /usr/lib/os-release).
fn os_release() -> Os {
    let text = std::fs::read_to_string("/etc/os-release")
        .or_else(|_| std::fs::read_to_string("/usr/lib/os-release"))
        .unwrap_or_default();
    let fields = parse_os_release(&text);
    Os {
        name: fields
            .get("PRETTY_NAME")
            .or_else(|| fields.get("NAME"))
            .cloned()
            .unwrap_or_else(|| "Linux".into()),
        id: fields.get("ID").cloned(),
        version_id: fields.get("VERSION_ID").cloned(),
    }
}

/// `KEY=value` lines, values unquoted (single or double quotes, backslash escapes).
fn parse_os_release(text: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim();
        let unquoted = match v.as_bytes().first() {
            Some(q @ (b'"' | b'\'')) if v.len() >= 2 && v.as_bytes().last() == Some(q) => {
                let inner = &v[1..v.len() - 1];
                let mut s = String::with_capacity(inner.len());
                let mut chars = inner.chars();
                while let Some(c) = chars.next() {
                    if c == '\\' {
                        if let Some(n) = chars.next() {
                            s.push(n);
                        }
                    } else {
                        s.push(c);
                    }
                }
                s
            }
            _ => v.to_owned(),
        };
        out.insert(k.trim().to_owned(), unquoted);
    }
    out
}

fn cpu(count_from_stat: usize) -> Cpu {
    let info = procfs::CpuInfo::current().ok();
    let model = info.as_ref().and_then(|i| {
        ["model name", "Model", "Hardware", "cpu model", "cpu"]
            .iter()
            .find_map(|f| i.get_field(0, f))
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    });
    let count = info
        .as_ref()
        .map(|i| i.num_cores())
        .filter(|&n| n > 0)
        .unwrap_or(count_from_stat);
    Cpu {
        model,
        count,
        usable: std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(count),
    }
}

/// Whether a filesystem type holds no user data (see [`PSEUDO_FS`]).
pub fn is_pseudo(fstype: &str) -> bool {
    PSEUDO_FS.contains(&fstype)
}

/// Mounts of /proc/self/mountinfo: real ones, one per device, sized with statvfs.
fn filesystems() -> Result<(Vec<Filesystem>, usize)> {
    let infos = procfs::process::Process::myself()
        .and_then(|p| p.mountinfo())
        .map_err(|e| Error::Internal(format!("/proc/self/mountinfo: {e}")))?;
    let mut pseudo = 0;
    // Device number → its mount with the shortest mount point (bind mounts of one
    // filesystem, as a hardened unit makes many of, count once).
    let mut by_device: BTreeMap<String, procfs::process::MountInfo> = BTreeMap::new();
    for m in infos {
        if is_pseudo(&m.fs_type) {
            pseudo += 1;
            continue;
        }
        let key = m.majmin.clone();
        let shorter = by_device
            .get(&key)
            .is_none_or(|b| m.mount_point.as_os_str().len() < b.mount_point.as_os_str().len());
        if shorter {
            by_device.insert(key, m);
        }
    }
    let mut mounts: Vec<_> = by_device.into_values().collect();
    mounts.sort_by(|a, b| a.mount_point.cmp(&b.mount_point));
    if mounts.len() > MAX_LISTED {
        pseudo += mounts.len() - MAX_LISTED;
        mounts.truncate(MAX_LISTED);
    }
    Ok((mounts.iter().map(sized).collect(), pseudo))
}

/// The mounts whose statvfs is blocked in a thread from an earlier call.
fn stuck() -> &'static Mutex<HashSet<String>> {
    static STUCK: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    STUCK.get_or_init(Default::default)
}

fn sized(m: &procfs::process::MountInfo) -> Filesystem {
    let mountpoint = m.mount_point.display().to_string();
    let mut fs = Filesystem {
        mountpoint: mountpoint.clone(),
        fstype: m.fs_type.clone(),
        device: m.mount_source.clone().unwrap_or_else(|| "none".into()),
        size_bytes: None,
        used_bytes: None,
        avail_bytes: None,
        used_percent: None,
        readonly: m.mount_options.contains_key("ro"),
        error: None,
    };
    match statvfs_bounded(&mountpoint) {
        Ok(st) => {
            let frsize = st.fragment_size();
            let size = st.blocks().saturating_mul(frsize);
            let free = st.blocks_free().saturating_mul(frsize);
            let avail = st.blocks_available().saturating_mul(frsize);
            let used = size.saturating_sub(free);
            fs.size_bytes = Some(size);
            fs.used_bytes = Some(used);
            fs.avail_bytes = Some(avail);
            let denom = used.saturating_add(avail);
            fs.used_percent =
                (denom > 0).then(|| (1000.0 * used as f64 / denom as f64).round() / 10.0);
            fs.readonly |= st.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY);
        }
        Err(e) => fs.error = Some(e),
    }
    fs
}

/// statvfs on a thread of its own, waited for at most [`STATVFS_DEADLINE`].
fn statvfs_bounded(path: &str) -> std::result::Result<nix::sys::statvfs::Statvfs, String> {
    {
        let stuck = stuck().lock().map_err(|_| "internal lock poisoned")?;
        if stuck.contains(path) {
            return Err("statvfs is still blocked since an earlier request".into());
        }
    }
    let (tx, rx) = mpsc::channel();
    let owned = path.to_owned();
    let spawned = std::thread::Builder::new()
        .name("statvfs".into())
        .spawn(move || {
            let r = nix::sys::statvfs::statvfs(Path::new(&owned));
            if tx.send(r).is_err() {
                // The caller gave up: this mount is no longer stuck.
                if let Ok(mut s) = stuck().lock() {
                    s.remove(&owned);
                }
            }
        });
    if let Err(e) = spawned {
        return Err(format!("cannot start a thread: {e}"));
    }
    match rx.recv_timeout(STATVFS_DEADLINE) {
        Ok(Ok(st)) => Ok(st),
        Ok(Err(e)) => Err(format!("statvfs: {e}")),
        Err(_) => {
            if let Ok(mut s) = stuck().lock() {
                s.insert(path.to_owned());
            }
            // The thread may have finished between the timeout and the insert.
            if let Ok(r) = rx.try_recv() {
                if let Ok(mut s) = stuck().lock() {
                    s.remove(path);
                }
                return r.map_err(|e| format!("statvfs: {e}"));
            }
            Err(format!(
                "statvfs did not answer within {} ms",
                STATVFS_DEADLINE.as_millis()
            ))
        }
    }
}

/// getifaddrs for names, flags and addresses; /proc/net/dev for byte counts; sysfs for the
/// operational state, hardware address and MTU.
fn interfaces() -> Result<Vec<Interface>> {
    use nix::net::if_::InterfaceFlags;
    let addrs =
        nix::ifaddrs::getifaddrs().map_err(|e| Error::Internal(format!("getifaddrs: {e}")))?;
    let mut by_name: BTreeMap<String, Interface> = BTreeMap::new();
    for a in addrs {
        let entry = by_name
            .entry(a.interface_name.clone())
            .or_insert_with(|| Interface {
                name: a.interface_name.clone(),
                up: false,
                operstate: None,
                loopback: false,
                mac: None,
                mtu: None,
                addresses: Vec::new(),
                rx_bytes: 0,
                tx_bytes: 0,
            });
        entry.up = a.flags.contains(InterfaceFlags::IFF_UP)
            && a.flags.contains(InterfaceFlags::IFF_RUNNING);
        entry.loopback = a.flags.contains(InterfaceFlags::IFF_LOOPBACK);
        let ip = a.address.as_ref().and_then(|s| {
            s.as_sockaddr_in()
                .map(|v4| IpAddr::V4(v4.ip()))
                .or_else(|| s.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
        });
        if let Some(ip) = ip {
            let prefix = a
                .netmask
                .as_ref()
                .and_then(|m| {
                    m.as_sockaddr_in()
                        .map(|v4| u32::from(v4.ip()).count_ones())
                        .or_else(|| {
                            m.as_sockaddr_in6()
                                .map(|v6| u128::from(v6.ip()).count_ones())
                        })
                })
                .unwrap_or(0);
            entry.addresses.push(Address {
                family: if ip.is_ipv4() { "inet" } else { "inet6" },
                address: ip.to_string(),
                prefix: u8::try_from(prefix).unwrap_or(0),
            });
        }
    }
    let counters = procfs::net::dev_status().unwrap_or_default();
    let mut out: Vec<Interface> = by_name.into_values().take(MAX_LISTED).collect();
    for i in &mut out {
        if let Some(c) = counters.get(&i.name) {
            i.rx_bytes = c.recv_bytes;
            i.tx_bytes = c.sent_bytes;
        }
        let sys = Path::new("/sys/class/net").join(&i.name);
        let read = |f: &str| {
            std::fs::read_to_string(sys.join(f))
                .ok()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
        };
        i.operstate = read("operstate");
        i.mtu = read("mtu").and_then(|s| s.parse().ok());
        i.mac = read("address").filter(|m| m != "00:00:00:00:00:00");
    }
    Ok(out)
}

/// Whether /proc hides other users' processes from the daemon: hidepid on the /proc mount
/// (the packaged unit's `ProtectProc=invisible`), unless the daemon holds CAP_SYS_PTRACE,
/// which sees through it.
pub fn visibility() -> Visibility {
    let user = nix::unistd::User::from_uid(nix::unistd::geteuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| nix::unistd::geteuid().to_string());
    let hidepid = procfs::process::Process::myself()
        .and_then(|p| p.mountinfo())
        .ok()
        .and_then(|infos| {
            infos
                .into_iter()
                .rfind(|m| m.mount_point == Path::new("/proc") && m.fs_type == "proc")
        })
        .and_then(|m| m.super_options.get("hidepid").cloned().flatten());
    let hidden = matches!(
        hidepid.as_deref(),
        Some("1" | "2" | "noaccess" | "invisible")
    );
    let ptrace = caps::has_cap(
        None,
        caps::CapSet::Effective,
        caps::Capability::CAP_SYS_PTRACE,
    )
    .unwrap_or(false);
    let mounts = "the daemon's own mount namespace";
    if hidden && !ptrace {
        let how = hidepid.unwrap_or_default();
        Visibility {
            processes: "own",
            reason: Some(format!(
                "/proc is mounted with hidepid={how} (the service's ProtectProc=invisible): \
                 only processes of the daemon's own user ({user}) are visible"
            )),
            user,
            mounts,
        }
    } else {
        Visibility {
            processes: "all",
            reason: None,
            user,
            mounts,
        }
    }
}

/// The boot time as a `SystemTime`, for process start times.
pub fn boot_time() -> Result<SystemTime> {
    let stat =
        procfs::KernelStats::current().map_err(|e| Error::Internal(format!("/proc/stat: {e}")))?;
    Ok(UNIX_EPOCH + Duration::from_secs(stat.btime))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn os_release_values_are_unquoted_and_unescaped() {
        let f = parse_os_release(
            "# comment\nPRETTY_NAME=\"Debian GNU/Linux 13 (trixie)\"\nID=debian\n\
             VERSION_ID='13'\nQUOTE=\"a \\\"b\\\" c\"\nBROKEN\n",
        );
        assert_eq!(f["PRETTY_NAME"], "Debian GNU/Linux 13 (trixie)");
        assert_eq!(f["ID"], "debian");
        assert_eq!(f["VERSION_ID"], "13");
        assert_eq!(f["QUOTE"], "a \"b\" c");
        assert!(!f.contains_key("BROKEN"));
        assert!(!f.contains_key("# comment"));
    }

    #[test]
    fn pseudo_filesystems_are_told_from_real_ones() {
        for t in ["proc", "sysfs", "cgroup2", "tmpfs", "devtmpfs", "overlay"] {
            let expected = t != "overlay";
            assert_eq!(is_pseudo(t), expected, "{t}");
        }
        for t in ["ext4", "xfs", "btrfs", "nfs4", "vfat", "zfs"] {
            assert!(!is_pseudo(t), "{t}");
        }
    }
}
