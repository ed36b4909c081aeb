//! What a job may do, as plain data: the command, its environment, limits and whether it has a
//! network. Built by the daemon, sent to the sandbox helper as JSON, validated on both sides.
//!
//! A confined service (a public tunnel's client) keeps the host's network namespace
//! (`host_network`), with landlock narrowing the TCP ports it may connect to and bind
//! (`net_ports`), and may run as another id inside its user namespace (`inside_id`); every
//! other part of the sandbox stays.

use serde::{Deserialize, Serialize};

/// Limits applied to one job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// CPU seconds (RLIMIT_CPU; SIGXCPU at the limit, SIGKILL a second later).
    pub cpu_s: u64,
    /// Data segment in bytes (RLIMIT_DATA: heap and private writable mappings).
    pub data_bytes: u64,
    /// Address space in bytes (RLIMIT_AS), set where no memory cgroup limits the job: it is
    /// what bounds shared mappings and the stack there. `None` with a cgroup.
    pub address_space_bytes: Option<u64>,
    /// Hard limit of the stack (RLIMIT_STACK); the soft limit starts at 8 MiB or this.
    pub stack_bytes: u64,
    /// Processes and threads of the job (RLIMIT_NPROC, counted in the job's user namespace).
    pub processes: u64,
    /// Largest file the job may write (RLIMIT_FSIZE).
    pub file_size_bytes: u64,
    /// Open files (RLIMIT_NOFILE).
    pub open_files: u64,
    /// Size of the scratch tmpfs (the working directory) and of /tmp and /dev/shm each.
    pub tmpfs_bytes: u64,
    /// Inodes on each tmpfs.
    pub tmpfs_inodes: u64,
}

/// What holds a job to its memory limit: a memory cgroup (every page it charges, tmpfs and
/// memfd included) or, without one, rlimits with the tmpfs mounts counted inside the limit
/// and memfd and System V shared memory refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MemoryLimitedBy {
    Cgroup,
    Rlimit,
}

impl MemoryLimitedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            MemoryLimitedBy::Cgroup => "cgroup",
            MemoryLimitedBy::Rlimit => "rlimit",
        }
    }
}

/// The stack's soft limit at the job's start (the usual default), below its hard limit.
const STACK_SOFT: u64 = 8 << 20;
const PAGE: u64 = 4096;

/// A job's memory before it is fitted to the mechanism that enforces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryBudget {
    /// The job's `memory_bytes`.
    pub memory_bytes: u64,
    /// The profile's size of each tmpfs (scratch, /tmp, /dev/shm).
    pub tmpfs_bytes: u64,
    /// Address space allowed above the limit for runtimes that reserve large virtual ranges
    /// they never touch (V8, the JVM, Go): `sandbox.address-space-headroom` for the program,
    /// plus the profile's `address-space-headroom`.
    pub headroom_bytes: u64,
}

impl MemoryBudget {
    /// The size of each of the three tmpfs mounts where rlimits limit the job: together at
    /// most half of the limit.
    pub fn rlimit_tmpfs_bytes(&self) -> u64 {
        (self.tmpfs_bytes.min(self.memory_bytes / 6) / PAGE * PAGE).max(PAGE)
    }

    /// Writes the memory limits of `by` into `limits`.
    ///
    /// With a cgroup every page the job charges counts (heap, shared memory, memfd, stack,
    /// tmpfs), so the tmpfs mounts keep the profile's size and the rlimits only back it up.
    /// Without one, the three tmpfs mounts together get at most half of the limit, and the
    /// rest bounds the data segment, the stack and the address space (plus the headroom,
    /// which only shared and read-only mappings can use: private memory stays within the
    /// data limit).
    pub fn apply(&self, limits: &mut Limits, by: MemoryLimitedBy) {
        let m = self.memory_bytes;
        match by {
            MemoryLimitedBy::Cgroup => {
                limits.tmpfs_bytes = self.tmpfs_bytes;
                limits.data_bytes = m;
                limits.address_space_bytes = None;
                limits.stack_bytes = m;
            }
            MemoryLimitedBy::Rlimit => {
                let tmpfs = self.rlimit_tmpfs_bytes();
                let room = m.saturating_sub(3 * tmpfs).max(PAGE);
                limits.tmpfs_bytes = tmpfs;
                limits.data_bytes = room;
                limits.address_space_bytes = Some(room.saturating_add(self.headroom_bytes));
                limits.stack_bytes = room;
            }
        }
    }
}

impl Limits {
    /// The stack's soft limit at the start of the job.
    pub fn stack_soft_bytes(&self) -> u64 {
        STACK_SOFT.min(self.stack_bytes)
    }
}

/// Everything the helper needs to build the sandbox and start the job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Policy {
    /// The program and its arguments; `argv[0]` is looked up in PATH when it has no `/`.
    pub argv: Vec<String>,
    /// The whole environment of the job (already filtered by the daemon).
    pub env: Vec<(String, String)>,
    /// Working directory inside the sandbox (the scratch tmpfs).
    pub cwd: String,
    pub limits: Limits,
    /// A network namespace with user-space egress; otherwise loopback only.
    pub network: bool,
    /// The unprivileged uid/gid to become before unsharing (when the daemon runs as root).
    pub run_as: Option<(u32, u32)>,
    /// Host directories shown read-only inside, as (host path, path inside).
    pub ro_binds: Vec<(String, String)>,
    /// Run without landlock when the kernel lacks it (config `sandbox.allow-degraded`).
    pub allow_degraded: bool,
    /// With `network`: the non-public IPv4 networks the job may reach all the same (the
    /// profile's `net-allow`).
    #[serde(default)]
    pub net_allow: Vec<Cidr>,
    /// Run the job on a pseudo-terminal of this size, made inside its sandbox
    /// (`Sandbox::spawn_terminal`), instead of on the stdio pipes. Left out of the JSON when
    /// absent, so a policy without one reads and writes as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminal: Option<TerminalSize>,
    /// The host directory the job's [`JobMount`]s come from (`$STATE_DIRECTORY/mounts`), bound
    /// out of the job's sight while its root is built and gone before the job starts. A warm
    /// sandbox is built with it, so a job with mounts can take one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_root: Option<String>,
    /// Directories of the mount root shown inside the job.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<JobMount>,
    /// Files written into the job's cwd before it starts (inline files of a one-off run).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<InlineFile>,
    /// Directories inside the job (under its cwd or a writable mount) handed back to the daemon
    /// as open descriptors once the job has ended, for its outputs to be read from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub collect: Vec<String>,
    /// Keep the host's network namespace (no network namespace of its own): the job reaches
    /// the host's loopback and whatever the host reaches, as narrowed by `net_ports`. Every
    /// other namespace, the filesystem rules, seccomp and the rlimits stay. Never with
    /// `network`; never in a warm sandbox.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub host_network: bool,
    /// Landlock's TCP port rules (landlock ABI 4, Linux 6.7): the job may connect only to
    /// these ports and bind only these. `None`: no port rule. A kernel without them fails
    /// the job, unless `allow_degraded` (then it runs and says the rule was not applied).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net_ports: Option<NetPorts>,
    /// The uid and gid the job has inside its user namespace; `None`: [`INSIDE_ID`]. Never 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inside_id: Option<u32>,
}

/// The TCP ports a job may use (`Policy::net_ports`); an empty list allows none. UDP and
/// other protocols are not governed by these rules.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetPorts {
    /// Remote ports it may connect to.
    #[serde(default)]
    pub connect: Vec<u16>,
    /// Local ports it may bind.
    #[serde(default)]
    pub bind: Vec<u16>,
}

/// A directory beneath the sandbox's mount root shown inside the job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobMount {
    /// Its path beneath the mount root: plain relative components naming a directory. Empty
    /// only for a writable mount that starts empty.
    pub source: String,
    /// Where the job sees it: an absolute path, outside the system directories.
    pub inside: String,
    /// `false`: a read-only bind of the source. `true`: a tmpfs of `size_bytes` and `inodes`
    /// holding a copy of the source, which the job may change (collect it to keep them).
    pub writable: bool,
    #[serde(default)]
    pub size_bytes: u64,
    #[serde(default)]
    pub inodes: u64,
}

/// A file placed in the job's cwd before it starts, owned by the job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InlineFile {
    /// Its path under the cwd: plain relative components (folders are made).
    pub name: String,
    /// Its contents (base64 on the wire).
    #[serde(with = "base64_bytes")]
    pub content: Vec<u8>,
    /// Mode 0755 rather than 0644.
    #[serde(default)]
    pub executable: bool,
    /// Mode 0600 (readable by the job alone: a private key its client checks the mode of).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub private: bool,
}

mod base64_bytes {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map_err(serde::de::Error::custom)
    }
}

/// Where no job mount may go: the system directories the sandbox shows from the host, its own
/// special directories, and the hidden mount root.
pub const RESERVED_INSIDE: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/dev", "/proc",
    "/sys", "/tmp", "/run", "/var", "/.mounts",
];

/// Whether `p` is a plain relative path: non-empty components, none `.` or `..`, no NUL.
pub fn plain_relative(p: &str) -> bool {
    !p.is_empty()
        && !p.contains('\0')
        && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

/// Whether `p` is a normalized absolute path other than `/`.
fn plain_absolute(p: &str) -> bool {
    p.strip_prefix('/').is_some_and(plain_relative)
}

/// Whether `p` is `dir` or beneath it.
pub fn is_within(p: &str, dir: &str) -> bool {
    p == dir || (p.starts_with(dir) && p.as_bytes().get(dir.len()) == Some(&b'/'))
}

/// A terminal's size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalSize {
    pub cols: u16,
    pub rows: u16,
}

impl TerminalSize {
    /// The largest number of columns or rows a terminal may have.
    pub const MAX: u16 = 1000;

    /// Refuses a size with no cells or more than `MAX` in either direction.
    pub fn validate(&self) -> Result<(), String> {
        let ok = |n: u16| (1..=Self::MAX).contains(&n);
        if ok(self.cols) && ok(self.rows) {
            Ok(())
        } else {
            Err(format!(
                "a terminal has 1 to {} columns and rows, not {}x{}",
                Self::MAX,
                self.cols,
                self.rows
            ))
        }
    }
}

/// An IPv4 network, written "A.B.C.D/N" (or a bare address for /32), with no host bits set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    pub addr: std::net::Ipv4Addr,
    pub prefix: u8,
}

impl Cidr {
    pub const fn new(a: [u8; 4], prefix: u8) -> Cidr {
        Cidr {
            addr: std::net::Ipv4Addr::new(a[0], a[1], a[2], a[3]),
            prefix,
        }
    }

    fn mask(prefix: u8) -> u32 {
        u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
    }

    /// Whether every address of `other` is in `self`.
    pub fn contains(&self, other: &Cidr) -> bool {
        self.prefix <= other.prefix
            && u32::from(other.addr) & Self::mask(self.prefix) == u32::from(self.addr)
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Cidr, String> {
        let (a, p) = s.split_once('/').unwrap_or((s, "32"));
        let addr: std::net::Ipv4Addr = a.trim().parse().map_err(|_| {
            format!("expected an IPv4 network such as \"192.168.1.0/24\" (IPv6 egress is not offered), got {s:?}")
        })?;
        let prefix: u8 = p
            .trim()
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to 32"))?;
        let net = u32::from(addr) & Self::mask(prefix);
        if net != u32::from(addr) {
            return Err(format!(
                "{s:?} has host bits set (did you mean \"{}/{prefix}\"?)",
                std::net::Ipv4Addr::from(net)
            ));
        }
        Ok(Cidr { addr, prefix })
    }
}

impl Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Cidr, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The uid and gid the job has inside its user namespace.
pub const INSIDE_ID: u32 = 1000;
/// The id of `nobody`, present in every /etc/passwd (a client such as OpenSSH's refuses to
/// run as a uid it cannot look up): what a confined service runs as inside.
pub const NOBODY_ID: u32 = 65534;
/// The scratch directory inside (the job's cwd and HOME).
pub const SCRATCH: &str = "/work";

impl Policy {
    /// The uid and gid the job has inside its user namespace.
    pub fn inside_id(&self) -> u32 {
        self.inside_id.unwrap_or(INSIDE_ID)
    }

    /// Rejects what cannot be run: an empty argv, NUL bytes, bad environment names, relative
    /// or overlapping bind targets.
    pub fn validate(&self) -> Result<(), String> {
        if self.argv.is_empty() || self.argv[0].is_empty() {
            return Err("argv must name a program".into());
        }
        if self.argv.iter().any(|a| a.contains('\0')) {
            return Err("arguments must not contain NUL bytes".into());
        }
        for (k, v) in &self.env {
            let ok = !k.is_empty()
                && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && !k.as_bytes()[0].is_ascii_digit();
            if !ok || v.contains('\0') {
                return Err(format!("invalid environment variable name {k:?}"));
            }
        }
        for (host, inside) in &self.ro_binds {
            if !host.starts_with('/')
                || !inside.starts_with('/')
                || inside.contains("..")
                || host.contains("..")
            {
                return Err(format!(
                    "bind {host:?} -> {inside:?} must use absolute paths without .."
                ));
            }
        }
        if let Some(t) = &self.terminal {
            t.validate()?;
        }
        if self.host_network && self.network {
            return Err(
                "a job either keeps the host's network (host_network) or gets its own with egress (network), not both"
                    .into(),
            );
        }
        if self.inside_id == Some(0) {
            return Err("a job cannot be uid 0 inside its namespace".into());
        }
        self.validate_data()
    }

    /// The mounts, inline files and collected directories: plain paths, no mount in a system
    /// directory or inside another, no two files of one name, every collected directory in
    /// the cwd or a writable mount.
    fn validate_data(&self) -> Result<(), String> {
        if !self.mounts.is_empty() && self.mount_root.is_none() {
            return Err("mounts need a mount root".into());
        }
        if let Some(root) = &self.mount_root
            && !plain_absolute(root)
        {
            return Err(format!(
                "the mount root {root:?} must be an absolute plain path"
            ));
        }
        for (i, m) in self.mounts.iter().enumerate() {
            if !(plain_relative(&m.source) || (m.writable && m.source.is_empty())) {
                return Err(format!(
                    "mount source {:?} must be a plain relative path",
                    m.source
                ));
            }
            if !plain_absolute(&m.inside) {
                return Err(format!(
                    "mount point {:?} must be an absolute path without ., .. or empty names",
                    m.inside
                ));
            }
            if let Some(r) = RESERVED_INSIDE.iter().find(|r| is_within(&m.inside, r)) {
                return Err(format!(
                    "mount point {:?} is in {r}, which the sandbox shows from the host or keeps for itself",
                    m.inside
                ));
            }
            if m.inside == self.cwd {
                return Err(format!(
                    "mount point {:?} is the job's working directory",
                    m.inside
                ));
            }
            if m.writable && (m.size_bytes == 0 || m.inodes == 0) {
                return Err(format!(
                    "the writable mount at {:?} needs a size and inodes",
                    m.inside
                ));
            }
            if let Some(o) = self.mounts[..i]
                .iter()
                .find(|o| is_within(&m.inside, &o.inside) || is_within(&o.inside, &m.inside))
            {
                return Err(format!(
                    "mount points {:?} and {:?} overlap",
                    o.inside, m.inside
                ));
            }
        }
        for (i, f) in self.files.iter().enumerate() {
            if !plain_relative(&f.name) {
                return Err(format!(
                    "file name {:?} must be a plain relative path",
                    f.name
                ));
            }
            if self.files[..i].iter().any(|o| o.name == f.name) {
                return Err(format!("file {:?} is given twice", f.name));
            }
        }
        for c in &self.collect {
            let in_writable = self
                .mounts
                .iter()
                .any(|m| m.writable && is_within(c, &m.inside));
            if !plain_absolute(c) || !(is_within(c, &self.cwd) || in_writable) {
                return Err(format!(
                    "{c:?} cannot be collected: only the working directory ({}) and writable mounts are",
                    self.cwd
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn sample() -> Policy {
        Policy {
            argv: vec!["/bin/true".into()],
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            cwd: SCRATCH.into(),
            limits: Limits {
                cpu_s: 10,
                data_bytes: 1 << 30,
                address_space_bytes: None,
                stack_bytes: 1 << 30,
                processes: 64,
                file_size_bytes: 1 << 26,
                open_files: 256,
                tmpfs_bytes: 1 << 26,
                tmpfs_inodes: 4096,
            },
            network: false,
            run_as: None,
            ro_binds: vec![],
            allow_degraded: false,
            net_allow: vec![],
            terminal: None,
            mount_root: None,
            mounts: vec![],
            files: vec![],
            collect: vec![],
            host_network: false,
            net_ports: None,
            inside_id: None,
        }
    }

    #[test]
    fn without_a_cgroup_tmpfs_data_stack_and_address_space_share_the_limit() {
        let budget = MemoryBudget {
            memory_bytes: 128 << 20,
            tmpfs_bytes: 256 << 20,
            headroom_bytes: 0,
        };
        let mut l = sample().limits;
        budget.apply(&mut l, MemoryLimitedBy::Rlimit);
        let tmpfs_total = 3 * l.tmpfs_bytes;
        assert!(tmpfs_total <= 64 << 20, "{l:?}");
        assert_eq!(l.data_bytes + tmpfs_total, budget.memory_bytes);
        assert_eq!(l.address_space_bytes, Some(l.data_bytes));
        assert_eq!(l.stack_bytes, l.data_bytes);
        assert_eq!(l.stack_soft_bytes(), 8 << 20);
        // A small profile tmpfs is kept as it is; headroom widens the address space only.
        let mut l = sample().limits;
        MemoryBudget {
            memory_bytes: 1 << 30,
            tmpfs_bytes: 16 << 20,
            headroom_bytes: 1 << 30,
        }
        .apply(&mut l, MemoryLimitedBy::Rlimit);
        assert_eq!(l.tmpfs_bytes, 16 << 20);
        assert_eq!(l.data_bytes, (1 << 30) - (48 << 20));
        assert_eq!(l.address_space_bytes, Some(l.data_bytes + (1 << 30)));
    }

    #[test]
    fn with_a_cgroup_the_tmpfs_keeps_its_size_and_no_address_space_limit_is_set() {
        let mut l = sample().limits;
        MemoryBudget {
            memory_bytes: 64 << 20,
            tmpfs_bytes: 256 << 20,
            headroom_bytes: 1 << 30,
        }
        .apply(&mut l, MemoryLimitedBy::Cgroup);
        assert_eq!(l.tmpfs_bytes, 256 << 20);
        assert_eq!(l.address_space_bytes, None);
        assert_eq!((l.data_bytes, l.stack_bytes), (64 << 20, 64 << 20));
        assert_eq!(MemoryLimitedBy::Cgroup.as_str(), "cgroup");
    }

    #[test]
    fn cidrs_parse_canonical_ipv4_networks_only() {
        let c: Cidr = "192.168.1.0/24".parse().unwrap();
        assert_eq!(c, Cidr::new([192, 168, 1, 0], 24));
        assert_eq!("10.1.2.3".parse::<Cidr>().unwrap().prefix, 32);
        assert!("192.168.1.5/24".parse::<Cidr>().is_err());
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("fd00::/8".parse::<Cidr>().is_err());
        assert!(c.contains(&Cidr::new([192, 168, 1, 7], 32)));
        assert!(!c.contains(&Cidr::new([192, 168, 0, 0], 16)));
        assert!(Cidr::new([0, 0, 0, 0], 0).contains(&c));
    }

    #[test]
    fn validation_refuses_what_cannot_run() {
        assert!(sample().validate().is_ok());
        let mut p = sample();
        p.argv.clear();
        assert!(p.validate().is_err());
        let mut p = sample();
        p.argv.push("a\0b".into());
        assert!(p.validate().is_err());
        let mut p = sample();
        p.env.push(("BAD-NAME".into(), "x".into()));
        assert!(p.validate().is_err());
        let mut p = sample();
        p.ro_binds.push(("/srv/p".into(), "/prog/../etc".into()));
        assert!(p.validate().is_err());
    }

    #[test]
    fn a_terminal_is_optional_on_the_wire_and_bounded() {
        // A policy written before terminals existed reads as one without a terminal, and one
        // without a terminal is written as before.
        let mut v = serde_json::to_value(sample()).unwrap();
        assert!(v.get("terminal").is_none(), "{v}");
        v.as_object_mut().unwrap().remove("terminal");
        let p: Policy = serde_json::from_value(v).unwrap();
        assert_eq!(p.terminal, None);
        let mut p = sample();
        p.terminal = Some(TerminalSize { cols: 80, rows: 24 });
        let back: Policy = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back.terminal, p.terminal);
        assert!(p.validate().is_ok());
        for (cols, rows) in [(0, 24), (80, 0), (1001, 24), (80, 1001)] {
            p.terminal = Some(TerminalSize { cols, rows });
            assert!(p.validate().is_err(), "{cols}x{rows}");
        }
        p.terminal = Some(TerminalSize {
            cols: TerminalSize::MAX,
            rows: 1,
        });
        assert!(p.validate().is_ok());
    }

    #[test]
    fn mounts_files_and_collected_directories_are_checked() {
        let mount = |inside: &str, writable: bool| JobMount {
            source: "views/abc".into(),
            inside: inside.into(),
            writable,
            size_bytes: if writable { 1 << 20 } else { 0 },
            inodes: if writable { 64 } else { 0 },
        };
        let mut p = sample();
        p.mount_root = Some("/var/lib/localhostd/mounts".into());
        p.mounts = vec![mount("/data", false), mount("/work/out", true)];
        p.files = vec![InlineFile {
            name: "src/main.py".into(),
            content: b"print(1)".to_vec(),
            executable: false,
            private: false,
        }];
        p.collect = vec!["/work/out".into(), "/work/results".into()];
        p.validate().unwrap();
        // The wire form round-trips, inline contents as base64.
        let text = serde_json::to_string(&p).unwrap();
        assert!(text.contains("\"cHJpbnQoMSk=\""), "{text}");
        let back: Policy = serde_json::from_str(&text).unwrap();
        assert_eq!(back.files, p.files);
        assert_eq!(back.mounts, p.mounts);
        // A policy without any of them is written as before.
        let plain = serde_json::to_value(sample()).unwrap();
        for k in ["mount_root", "mounts", "files", "collect"] {
            assert!(plain.get(k).is_none(), "{k}");
        }
        let bad = |f: &dyn Fn(&mut Policy)| {
            let mut q = p.clone();
            f(&mut q);
            q.validate().unwrap_err()
        };
        assert!(bad(&|q| q.mount_root = None).contains("mount root"));
        assert!(bad(&|q| q.mounts[0].source = "../x".into()).contains("plain relative"));
        assert!(bad(&|q| q.mounts[0].source = String::new()).contains("plain relative"));
        assert!(bad(&|q| q.mounts[0].inside = "/lib/x".into()).contains("/lib"));
        assert!(bad(&|q| q.mounts[0].inside = "/etc".into()).contains("/etc"));
        assert!(bad(&|q| q.mounts[0].inside = "/data/../etc".into()).contains("absolute"));
        assert!(bad(&|q| q.mounts[0].inside = "/".into()).contains("absolute"));
        assert!(bad(&|q| q.mounts[0].inside = "/work".into()).contains("working directory"));
        assert!(bad(&|q| q.mounts[1].inside = "/data/sub".into()).contains("overlap"));
        assert!(bad(&|q| q.mounts[1].size_bytes = 0).contains("size"));
        assert!(bad(&|q| q.files[0].name = "/etc/x".into()).contains("plain relative"));
        assert!(bad(&|q| q.files.push(q.files[0].clone())).contains("twice"));
        assert!(bad(&|q| q.collect.push("/data".into())).contains("collected"));
        assert!(bad(&|q| q.collect.push("/workshop".into())).contains("collected"));
        // An empty writable mount is allowed; an empty read-only one is not.
        let mut q = p.clone();
        q.mounts[1].source = String::new();
        q.validate().unwrap();
        assert!(is_within("/work/out/a", "/work/out") && !is_within("/work/outer", "/work/out"));
    }

    #[test]
    fn host_network_ports_and_inside_id_are_optional_on_the_wire_and_checked() {
        // A policy without them is written as before, and reads back without them.
        let v = serde_json::to_value(sample()).unwrap();
        for k in ["host_network", "net_ports", "inside_id"] {
            assert!(v.get(k).is_none(), "{k}: {v}");
        }
        let p: Policy = serde_json::from_value(v).unwrap();
        assert!(!p.host_network && p.net_ports.is_none() && p.inside_id.is_none());
        assert_eq!(p.inside_id(), INSIDE_ID);
        let mut p = sample();
        p.host_network = true;
        p.net_ports = Some(NetPorts {
            connect: vec![22, 443],
            bind: vec![],
        });
        p.inside_id = Some(NOBODY_ID);
        p.validate().unwrap();
        let back: Policy = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert!(back.host_network);
        assert_eq!(back.net_ports, p.net_ports);
        assert_eq!(back.inside_id(), NOBODY_ID);
        // Missing port lists read as empty (none allowed).
        let ports: NetPorts = serde_json::from_str("{}").unwrap();
        assert_eq!(ports, NetPorts::default());

        let mut both = p.clone();
        both.network = true;
        assert!(both.validate().unwrap_err().contains("host_network"));
        let mut root = p.clone();
        root.inside_id = Some(0);
        assert!(root.validate().unwrap_err().contains("uid 0"));
        // Port rules alone (in the job's own network namespace) are fine.
        let mut own = sample();
        own.net_ports = Some(NetPorts::default());
        own.validate().unwrap();
    }
}
