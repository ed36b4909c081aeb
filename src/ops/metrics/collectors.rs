//! Host collectors: each reads one part of the host (procfs, statvfs) into plain data. They
//! block (a statvfs on a stale network mount can block for ever), so the sampler runs each on
//! a thread of its own with a deadline; nothing here knows about threads or time limits.

use std::path::{Path, PathBuf};

use procfs::{Current, CurrentSI};

/// The modes of `node_cpu_seconds_total`, in /proc/stat's order.
pub const CPU_MODES: [&str; 8] = [
    "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
];

/// /proc/stat: CPU time per CPU and mode (seconds), boot time, counters.
#[derive(Debug, Clone)]
pub struct CpuStats {
    /// One entry per CPU line (`cpu0`, `cpu1`…), seconds per mode of [`CPU_MODES`].
    pub per_cpu: Vec<[f64; 8]>,
    /// Seconds since the epoch.
    pub boot_time: u64,
    pub context_switches: u64,
    pub forks: u64,
    pub procs_running: Option<u32>,
    pub procs_blocked: Option<u32>,
}

impl CpuStats {
    /// (busy, total) seconds over all CPUs; idle and iowait count as not busy.
    pub fn busy_total(&self) -> (f64, f64) {
        let mut busy = 0.0;
        let mut total = 0.0;
        for c in &self.per_cpu {
            let sum: f64 = c.iter().sum();
            total += sum;
            busy += sum - c[3] - c[4];
        }
        (busy, total)
    }
}

pub fn cpu() -> Result<CpuStats, String> {
    let ks = procfs::KernelStats::current().map_err(|e| format!("/proc/stat: {e}"))?;
    let tps = procfs::ticks_per_second().max(1) as f64;
    let per_cpu = ks
        .cpu_time
        .iter()
        .map(|c| {
            [
                c.user,
                c.nice,
                c.system,
                c.idle,
                c.iowait.unwrap_or(0),
                c.irq.unwrap_or(0),
                c.softirq.unwrap_or(0),
                c.steal.unwrap_or(0),
            ]
            .map(|ticks| ticks as f64 / tps)
        })
        .collect();
    Ok(CpuStats {
        per_cpu,
        boot_time: ks.btime,
        context_switches: ks.ctxt,
        forks: ks.processes,
        procs_running: ks.procs_running,
        procs_blocked: ks.procs_blocked,
    })
}

/// /proc/loadavg.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub one: f64,
    pub five: f64,
    pub fifteen: f64,
}

pub fn loadavg() -> Result<Load, String> {
    let l = procfs::LoadAverage::current().map_err(|e| format!("/proc/loadavg: {e}"))?;
    // /proc/loadavg has two decimals; procfs parses them into f32.
    let two = |v: f32| (f64::from(v) * 100.0).round() / 100.0;
    Ok(Load {
        one: two(l.one),
        five: two(l.five),
        fifteen: two(l.fifteen),
    })
}

/// /proc/meminfo: the fields node_exporter names `node_memory_<Field>_bytes`, in bytes.
#[derive(Debug, Clone)]
pub struct Memory {
    pub fields: Vec<(&'static str, u64)>,
    pub total: u64,
    pub available: Option<u64>,
}

pub fn meminfo() -> Result<Memory, String> {
    let m = procfs::Meminfo::current().map_err(|e| format!("/proc/meminfo: {e}"))?;
    let all: [(&'static str, Option<u64>); 20] = [
        ("MemTotal", Some(m.mem_total)),
        ("MemFree", Some(m.mem_free)),
        ("MemAvailable", m.mem_available),
        ("Buffers", Some(m.buffers)),
        ("Cached", Some(m.cached)),
        ("SwapCached", Some(m.swap_cached)),
        ("Active", Some(m.active)),
        ("Inactive", Some(m.inactive)),
        ("SwapTotal", Some(m.swap_total)),
        ("SwapFree", Some(m.swap_free)),
        ("Dirty", Some(m.dirty)),
        ("Writeback", Some(m.writeback)),
        ("AnonPages", m.anon_pages),
        ("Mapped", Some(m.mapped)),
        ("Shmem", m.shmem),
        ("Slab", Some(m.slab)),
        ("SReclaimable", m.s_reclaimable),
        ("SUnreclaim", m.s_unreclaim),
        ("Committed_AS", Some(m.committed_as)),
        ("PageTables", m.page_tables),
    ];
    Ok(Memory {
        fields: all
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect(),
        total: m.mem_total,
        available: m.mem_available,
    })
}

/// The filesystem holding the state directory (statvfs), with its mount's labels.
#[derive(Debug, Clone)]
pub struct Filesystem {
    pub mountpoint: String,
    pub fstype: String,
    pub device: String,
    pub size: u64,
    pub free: u64,
    pub avail: u64,
    pub files: u64,
    pub files_free: u64,
    pub readonly: bool,
}

impl Filesystem {
    /// Used share as `df` shows it: used / (used + available to unprivileged users).
    pub fn used_percent(&self) -> Option<f64> {
        let used = self.size.saturating_sub(self.free);
        let denom = used + self.avail;
        (denom > 0).then(|| 100.0 * used as f64 / denom as f64)
    }
}

/// The mount (from /proc/self/mountinfo) whose mount point is the longest prefix of `path`;
/// the last one wins among mounts stacked on one point.
fn mount_of(path: &Path) -> Result<procfs::process::MountInfo, String> {
    let path: PathBuf = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    let infos = procfs::process::Process::myself()
        .and_then(|p| p.mountinfo())
        .map_err(|e| format!("/proc/self/mountinfo: {e}"))?;
    let mut best: Option<procfs::process::MountInfo> = None;
    for m in infos {
        if !path.starts_with(&m.mount_point) {
            continue;
        }
        let better = best
            .as_ref()
            .is_none_or(|b| m.mount_point.as_os_str().len() >= b.mount_point.as_os_str().len());
        if better {
            best = Some(m);
        }
    }
    best.ok_or_else(|| format!("no mount holds {}", path.display()))
}

pub fn filesystem(dir: &Path) -> Result<Filesystem, String> {
    let mount = mount_of(dir)?;
    let st =
        nix::sys::statvfs::statvfs(dir).map_err(|e| format!("statvfs {}: {e}", dir.display()))?;
    let frsize = st.fragment_size();
    let readonly = st.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY)
        || mount.mount_options.contains_key("ro");
    Ok(Filesystem {
        mountpoint: mount.mount_point.display().to_string(),
        fstype: mount.fs_type.clone(),
        device: mount.mount_source.clone().unwrap_or_else(|| "none".into()),
        size: (st.blocks() as u64).saturating_mul(frsize),
        free: (st.blocks_free() as u64).saturating_mul(frsize),
        avail: (st.blocks_available() as u64).saturating_mul(frsize),
        files: st.files() as u64,
        files_free: st.files_free() as u64,
        readonly,
    })
}

/// /proc/diskstats of the block device holding the state directory.
#[derive(Debug, Clone)]
pub struct Disk {
    pub device: String,
    pub reads: u64,
    pub writes: u64,
    pub read_bytes: u64,
    pub written_bytes: u64,
    pub read_time_s: f64,
    pub write_time_s: f64,
    pub io_time_s: f64,
    pub io_now: u64,
}

/// `None` when the state directory is on no block device (tmpfs, overlay, btrfs subvolumes
/// show a device number that /proc/diskstats does not list).
pub fn diskstats(dir: &Path) -> Result<Option<Disk>, String> {
    let mount = mount_of(dir)?;
    let (major, minor) = mount
        .majmin
        .split_once(':')
        .and_then(|(a, b)| Some((a.parse::<i32>().ok()?, b.parse::<i32>().ok()?)))
        .ok_or_else(|| format!("bad device number {:?} in mountinfo", mount.majmin))?;
    let stats = procfs::DiskStats::current().map_err(|e| format!("/proc/diskstats: {e}"))?;
    Ok(stats
        .0
        .into_iter()
        .find(|d| d.major == major && d.minor == minor)
        .map(|d| Disk {
            device: d.name,
            reads: d.reads,
            writes: d.writes,
            // diskstats counts 512-byte sectors whatever the device's sector size.
            read_bytes: d.sectors_read.saturating_mul(512),
            written_bytes: d.sectors_written.saturating_mul(512),
            read_time_s: d.time_reading as f64 / 1000.0,
            write_time_s: d.time_writing as f64 / 1000.0,
            io_time_s: d.time_in_progress as f64 / 1000.0,
            io_now: d.in_progress,
        }))
}

/// One interface of /proc/net/dev.
#[derive(Debug, Clone)]
pub struct NetDev {
    pub device: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errs: u64,
    pub rx_drop: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errs: u64,
    pub tx_drop: u64,
}

pub fn netdev() -> Result<Vec<NetDev>, String> {
    let map = procfs::net::dev_status().map_err(|e| format!("/proc/net/dev: {e}"))?;
    let mut out: Vec<NetDev> = map
        .into_values()
        .map(|d| NetDev {
            device: d.name,
            rx_bytes: d.recv_bytes,
            rx_packets: d.recv_packets,
            rx_errs: d.recv_errs,
            rx_drop: d.recv_drop,
            tx_bytes: d.sent_bytes,
            tx_packets: d.sent_packets,
            tx_errs: d.sent_errs,
            tx_drop: d.sent_drop,
        })
        .collect();
    out.sort_by(|a, b| a.device.cmp(&b.device));
    Ok(out)
}

/// /proc/pressure (PSI): total stall time in seconds.
#[derive(Debug, Clone, Copy)]
pub struct Pressure {
    pub cpu_some: f64,
    pub memory_some: f64,
    pub memory_full: f64,
    pub io_some: f64,
    pub io_full: f64,
}

/// `None` when the kernel has no PSI (or it is switched off with `psi=0`).
pub fn pressure() -> Result<Option<Pressure>, String> {
    if !Path::new("/proc/pressure/cpu").exists() {
        return Ok(None);
    }
    let us = |t: u64| t as f64 / 1e6;
    let cpu = procfs::CpuPressure::current().map_err(|e| format!("/proc/pressure/cpu: {e}"))?;
    let mem =
        procfs::MemoryPressure::current().map_err(|e| format!("/proc/pressure/memory: {e}"))?;
    let io = procfs::IoPressure::current().map_err(|e| format!("/proc/pressure/io: {e}"))?;
    Ok(Some(Pressure {
        cpu_some: us(cpu.some.total),
        memory_some: us(mem.some.total),
        memory_full: us(mem.full.total),
        io_some: us(io.some.total),
        io_full: us(io.full.total),
    }))
}

/// The daemon's own process, read at scrape time (/proc/self).
#[derive(Debug, Clone)]
pub struct OwnProcess {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub open_fds: u64,
    pub max_fds: Option<u64>,
    pub threads: u64,
    pub start_time: f64,
}

/// The boot time (seconds since the epoch), read from /proc/stat once.
fn boot_time() -> Result<u64, String> {
    static BOOT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    if let Some(b) = BOOT.get() {
        return Ok(*b);
    }
    let b = procfs::KernelStats::current()
        .map(|k| k.btime)
        .map_err(|e| format!("/proc/stat: {e}"))?;
    Ok(*BOOT.get_or_init(|| b))
}

pub fn own_process() -> Result<OwnProcess, String> {
    let me = procfs::process::Process::myself().map_err(|e| format!("/proc/self: {e}"))?;
    let stat = me.stat().map_err(|e| format!("/proc/self/stat: {e}"))?;
    let tps = procfs::ticks_per_second().max(1) as f64;
    let boot = boot_time()?;
    let max_fds = me
        .limits()
        .ok()
        .and_then(|l| match l.max_open_files.soft_limit {
            procfs::process::LimitValue::Value(v) => Some(v),
            procfs::process::LimitValue::Unlimited => None,
        });
    Ok(OwnProcess {
        cpu_seconds: (stat.utime + stat.stime) as f64 / tps,
        resident_bytes: stat.rss.saturating_mul(procfs::page_size()),
        virtual_bytes: stat.vsize,
        open_fds: me
            .fd_count()
            .map(|n| n as u64)
            .map_err(|e| format!("/proc/self/fd: {e}"))?,
        max_fds,
        threads: u64::try_from(stat.num_threads).unwrap_or(0),
        start_time: boot as f64 + stat.starttime as f64 / tps,
    })
}
