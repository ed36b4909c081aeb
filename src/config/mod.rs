//! Configuration: TOML → validated, typed [`Config`]. The only module that reads config files
//! and the environment variables that choose them.
//!
//! Every field has a default, so no file is needed. Keys are kebab-case, unknown keys are
//! refused, sizes are written like `"10MiB"` and durations like `"30s"`. A bad file is reported
//! as `FILE:LINE:COLUMN: key `a.b`: what is wrong`.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

mod log_filter;
mod validate;
pub use log_filter::parse_log_filter;

/// Where the config file is looked for when neither `--config` nor `LOCALHOSTD_CONFIG` is given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/localhostd/config.toml";
/// Environment variable that names the config file.
pub const CONFIG_ENV: &str = "LOCALHOSTD_CONFIG";
/// The state directory used for a local run (`cargo run`) when nothing else names one.
pub const LOCAL_STATE_DIR: &str = "localhostd-state";

/// The whole configuration. Each subsystem receives only its own section.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct Config {
    /// Where state lives. `$STATE_DIRECTORY` (set by systemd's `StateDirectory=`) wins over this;
    /// with neither, a local `./localhostd-state` is used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<PathBuf>,
    pub server: ServerConfig,
    pub log: LogConfig,
    pub storage: StorageConfig,
    pub files: FilesConfig,
    pub auth: AuthConfig,
    pub rate_limit: RateLimitConfig,
    pub exec: ExecConfig,
    pub sandbox: SandboxConfig,
    pub kv: KvConfig,
    pub programs: ProgramsConfig,
    pub metrics: MetricsConfig,
    pub alerts: AlertsConfig,
    pub backup: BackupConfig,
    pub terminals: TerminalsConfig,
    pub ui: UiConfig,
    pub tunnels: TunnelsConfig,
    pub compat: CompatConfig,
}

/// `[compat]`: what localhostd keeps of the seed (the Flask "Localhost Web Server") for the
/// clients written against it (docs/seed-compat.md).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct CompatConfig {
    /// Answer the seed's routes (`/api/data`, `/api/files/upload`, `/api/execute`, …) with the
    /// v1 operation that does the same job (same access rule, scope, rate limit and audit).
    /// Off: those paths answer 404 (`/`, `/health`, `/metrics`, `/dashboard` stay).
    pub seed_routes: bool,
}

impl Default for CompatConfig {
    fn default() -> Self {
        CompatConfig { seed_routes: true }
    }
}

/// `[ui]`: the web UI served by the daemon (`/`, `/login`, … and its assets under `/ui/`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct UiConfig {
    /// Serve the web UI. Off: its routes answer 404 like any path without a route (the API
    /// is unaffected).
    pub enabled: bool,
}

impl Default for UiConfig {
    fn default() -> Self {
        UiConfig { enabled: true }
    }
}

/// The collectors of the host sampler, by name (`metrics.simulate-hang` names one).
pub const COLLECTORS: &[&str] = &[
    "cpu",
    "loadavg",
    "meminfo",
    "filesystem",
    "diskstats",
    "netdev",
    "pressure",
    "app",
];

/// `[metrics]`: the host sampler, `GET /metrics`, the dashboard's history.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct MetricsConfig {
    /// Run the sampler: host metrics on /metrics, the dashboard's history and the alerts.
    /// Off: /metrics shows only the daemon's own and the application metrics.
    pub enabled: bool,
    /// How often the sampler reads the host (/proc, statvfs, the database's counts).
    pub interval: HumanDuration,
    /// How long one collector may take (at most `interval`); past it that collector's part
    /// of the sample is left out (and `localhostd_collector_success` says so) while the
    /// others go on.
    pub collector_timeout: HumanDuration,
    /// Clients connected from a loopback address (a TCP peer that is not a trusted proxy;
    /// never a forwarded address) may read /metrics without a token; everyone else needs the
    /// `metrics` scope.
    pub public_on_loopback: bool,
    /// Test and diagnostic hook, never for production: the named collector (one of
    /// [`COLLECTORS`]) blocks forever, as statvfs does on a stale network mount, so that its
    /// timeout can be seen. Not shown by check-config unless set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub simulate_hang: Option<String>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: true,
            interval: HumanDuration(Duration::from_secs(10)),
            collector_timeout: HumanDuration(Duration::from_secs(2)),
            public_on_loopback: false,
            simulate_hang: None,
        }
    }
}

/// `[alerts]`: thresholds checked on every sample, and the hold time against flapping.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct AlertsConfig {
    pub enabled: bool,
    /// `disk_used`: the state directory's filesystem is more than this full (percent).
    pub disk_used_percent: f64,
    /// `memory_low`: less than this share of memory is available (percent).
    pub memory_available_percent: f64,
    /// `load_high`: the 1-minute load average divided by the CPU count is above this.
    pub load_per_cpu: f64,
    /// `executions_failing`: more executions than this per minute ended other than `ok`,
    /// averaged over `failed-executions-window`.
    pub failed_executions_per_minute: f64,
    pub failed_executions_window: HumanDuration,
    /// A condition must hold this long before its alert fires, and be gone this long before
    /// it resolves.
    pub hold: HumanDuration,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            enabled: true,
            disk_used_percent: 90.0,
            memory_available_percent: 10.0,
            load_per_cpu: 2.0,
            failed_executions_per_minute: 10.0,
            failed_executions_window: HumanDuration(Duration::from_secs(300)),
            hold: HumanDuration(Duration::from_secs(120)),
        }
    }
}

/// `[backup]`: where backups go, how hard they are compressed, and how many `prune` keeps.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct BackupConfig {
    /// The backup directory (absolute); unset: `backups/` in the state directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// gzip level 0-9. 2 is the fastest level that still builds Huffman tables per block
    /// (zlib-rs's level 1 uses fixed tables, which make incompressible blobs larger);
    /// see docs/benchmarks.md.
    pub compression_level: u32,
    /// `prune` keeps the newest this many backups (at least 1 is always kept)…
    pub keep_last: u64,
    /// …and every backup younger than this.
    pub keep_within: HumanDuration,
}

impl Default for BackupConfig {
    fn default() -> Self {
        BackupConfig {
            dir: None,
            compression_level: 2,
            keep_last: 7,
            keep_within: HumanDuration(Duration::from_secs(7 * 86400)),
        }
    }
}

/// `[exec]`: running commands: concurrency, defaults and maxima, history retention.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct ExecConfig {
    /// Jobs running at once.
    pub max_concurrent: usize,
    /// Jobs waiting for a slot; beyond that requests get 429.
    pub max_queue: usize,
    /// Wall-clock limit when a request names none.
    pub default_timeout: HumanDuration,
    /// Largest wall-clock limit a request may ask for.
    pub max_timeout: HumanDuration,
    /// stdout + stderr kept per job when the request names no limit.
    pub default_output_limit: ByteSize,
    /// Largest output limit a request may ask for.
    pub max_output_limit: ByteSize,
    /// Executions kept in the history (newest), and for how long.
    pub keep_last: u64,
    pub keep_within: HumanDuration,
    /// Bytes of a job's argv kept in its history record; the rest is cut and a marker says
    /// how much (the job itself gets its argv whole).
    pub history_max_argv_size: ByteSize,
    /// Inline files (`files` of a run) a request may give, and their bytes in all (decoded).
    pub max_inline_files: usize,
    pub max_inline_bytes: ByteSize,
    /// Regular files a job's outputs (and read-write mounts) may bring back into the file
    /// store in one run; past that nothing is written (outputs `failed`).
    pub max_output_files: usize,
    /// Mounts (of folders and programs) one request may name.
    pub max_mounts: usize,
    /// stdout + stderr kept per execution with its record (the first bytes, in the order the
    /// job wrote them; within the job's output limit). 0 keeps none.
    pub keep_output_size: ByteSize,
    /// How long an execution's kept output stays (its record stays for `keep-within`).
    pub keep_output_within: HumanDuration,
}

impl Default for ExecConfig {
    fn default() -> Self {
        ExecConfig {
            max_concurrent: 16,
            max_queue: 64,
            default_timeout: HumanDuration(Duration::from_secs(10)),
            max_timeout: HumanDuration(Duration::from_secs(600)),
            default_output_limit: ByteSize(1 << 20),
            max_output_limit: ByteSize(64 << 20),
            keep_last: 10_000,
            keep_within: HumanDuration(Duration::from_secs(30 * 86400)),
            history_max_argv_size: ByteSize(4 << 10),
            max_inline_files: 64,
            max_inline_bytes: ByteSize(1 << 20),
            max_output_files: 10_000,
            max_mounts: 16,
            keep_output_size: ByteSize(1 << 20),
            keep_output_within: HumanDuration(Duration::from_secs(7 * 86400)),
        }
    }
}

/// `[sandbox]`: how jobs are confined.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct SandboxConfig {
    /// When the daemon runs as root, each concurrent job gets its own uid (and gid) from this
    /// range, e.g. "200000-265535"; it never runs as uid 0 outside its namespace.
    pub uid_range: UidRange,
    /// Run jobs even when the kernel lacks landlock (loudly logged). Off: fail closed.
    pub allow_degraded: bool,
    /// Sandboxes kept built ahead of their job (namespaces, root, /proc: all but the job's
    /// scratch and the job), each used by one job only, so a command starts without waiting
    /// for them. Only for jobs without network and binds; with per-job cgroups each is built
    /// in its own. 0 turns it off.
    pub warm_pool: usize,
    /// Named profiles: limits (the maxima a request may ask for) and network access.
    pub profiles: std::collections::BTreeMap<String, SandboxProfile>,
    /// Per-job memory cgroups: `auto` uses a delegated cgroup v2 subtree, else (daemon as
    /// root) the cgroup v1 memory controller, else rlimits; `off` always uses rlimits.
    pub job_cgroups: JobCgroups,
    /// When creating a job's cgroup fails: off (default), the job is refused (503); on, it
    /// runs limited by rlimits, logged as a warning and recorded as `rlimit`.
    pub cgroup_fallback: bool,
    /// Address space allowed above a job's memory limit where rlimits limit it, by the file
    /// name of the job's program (`argv[0]`): runtimes that reserve large virtual ranges they
    /// never touch abort under a tight RLIMIT_AS. Only shared and read-only mappings can use
    /// it (private memory stays within the limit). Replaces the built-in table when set.
    pub address_space_headroom: std::collections::BTreeMap<String, ByteSize>,
}

/// `sandbox.job-cgroups`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobCgroups {
    Auto,
    Off,
}

/// The built-in `sandbox.address-space-headroom`: Node (V8's reservations) and the JVM
/// (heap, compressed class space and code cache reserved up front).
fn default_headroom() -> std::collections::BTreeMap<String, ByteSize> {
    [
        ("node", ByteSize(1 << 30)),
        ("nodejs", ByteSize(1 << 30)),
        ("java", ByteSize(4 << 30)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// `[sandbox.profiles.NAME]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct SandboxProfile {
    /// A network namespace with egress through slirp4netns to public IPv4 addresses only
    /// (never the host's own, loopback, link-local, private, shared or reserved ones);
    /// otherwise loopback only.
    pub network: bool,
    /// With `network`: IPv4 networks the job may reach although they are not public (a LAN,
    /// the host's own address), e.g. ["192.168.1.0/24"]. Empty: public addresses only.
    pub net_allow: Vec<crate::jobs::sandbox::Cidr>,
    pub cpu_time: HumanDuration,
    /// Memory of a job (`memory_bytes`): its memory cgroup's limit, or without one what its
    /// data segment, stack, address space and tmpfs mounts share.
    pub memory: ByteSize,
    pub processes: u64,
    pub file_size: ByteSize,
    pub open_files: u64,
    /// Size of each tmpfs (scratch, /tmp, /dev/shm).
    pub tmpfs_size: ByteSize,
    pub tmpfs_inodes: u64,
    /// Address space allowed above the memory limit for every job of this profile where
    /// rlimits limit it (e.g. a profile for Go programs), on top of the program's own
    /// `sandbox.address-space-headroom`.
    pub address_space_headroom: ByteSize,
}

impl Default for SandboxProfile {
    fn default() -> Self {
        SandboxProfile {
            network: false,
            net_allow: Vec::new(),
            cpu_time: HumanDuration(Duration::from_secs(60)),
            memory: ByteSize(1 << 30),
            processes: 128,
            file_size: ByteSize(256 << 20),
            open_files: 1024,
            tmpfs_size: ByteSize(256 << 20),
            tmpfs_inodes: 65_536,
            address_space_headroom: ByteSize(0),
        }
    }
}

impl Default for SandboxConfig {
    fn default() -> Self {
        let mut profiles = std::collections::BTreeMap::new();
        profiles.insert("default".to_owned(), SandboxProfile::default());
        profiles.insert(
            "net".to_owned(),
            SandboxProfile {
                network: true,
                ..SandboxProfile::default()
            },
        );
        SandboxConfig {
            uid_range: UidRange {
                first: 200_000,
                last: 265_535,
            },
            allow_degraded: false,
            warm_pool: 2,
            profiles,
            job_cgroups: JobCgroups::Auto,
            cgroup_fallback: false,
            address_space_headroom: default_headroom(),
        }
    }
}

/// An inclusive range of uids, written "FIRST-LAST".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UidRange {
    pub first: u32,
    pub last: u32,
}

impl fmt::Display for UidRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

impl FromStr for UidRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad =
            || format!("expected a uid range such as \"200000-265535\" (above 1000), got {s:?}");
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let (first, last): (u32, u32) = (
            a.trim().parse().map_err(|_| bad())?,
            b.trim().parse().map_err(|_| bad())?,
        );
        if first < 1000 || last < first || last == u32::MAX {
            return Err(bad());
        }
        Ok(UidRange { first, last })
    }
}

impl Serialize for UidRange {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for UidRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

/// `[terminals]`: interactive sessions, a job on a pseudo-terminal (`/api/v1/terminals`).
/// DESIGN.md calls this part "sessions"; the section is named like the API, so it is never
/// confused with the browser login (`auth.session-*`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct TerminalsConfig {
    /// Off: every terminal route answers 503.
    pub enabled: bool,
    /// Sessions running at once, in all and per token (an admin's own count too).
    pub max_total: usize,
    pub max_per_token: usize,
    /// The recent output each session keeps in memory for clients that attach late or
    /// again, and for `output?since=`.
    pub scrollback_bytes: ByteSize,
    /// A session with no input and no attached client for this long is ended; a request may
    /// ask for less or more, up to the max.
    pub idle_timeout: HumanDuration,
    pub max_idle_timeout: HumanDuration,
    /// How long a session may run in all; a request may ask for up to the max.
    pub lifetime: HumanDuration,
    pub max_lifetime: HumanDuration,
    /// Bytes per second a session's clients may type (bursts of one second's worth); more is
    /// refused (429, or WebSocket close 4429).
    pub input_rate: ByteSize,
    /// Bytes per second read from a session's terminal; past it the daemon stops reading
    /// until the budget is back, so a flooding job blocks on its own writes.
    pub output_rate: ByteSize,
    /// Largest input one request or WebSocket message may carry (413, or close 1009).
    pub max_message_size: ByteSize,
    /// Record every session as asciicast v2 under the state directory's `terminals/`.
    pub recording: bool,
    /// A recording stops growing at this size (its last event says so).
    pub recording_max_bytes: ByteSize,
    /// How long a recording is kept after its session ended; then it is deleted.
    pub recording_retention: HumanDuration,
}

impl Default for TerminalsConfig {
    fn default() -> Self {
        TerminalsConfig {
            enabled: true,
            max_total: 64,
            max_per_token: 8,
            scrollback_bytes: ByteSize(256 << 10),
            idle_timeout: HumanDuration(Duration::from_secs(15 * 60)),
            max_idle_timeout: HumanDuration(Duration::from_secs(4 * 3600)),
            lifetime: HumanDuration(Duration::from_secs(4 * 3600)),
            max_lifetime: HumanDuration(Duration::from_secs(24 * 3600)),
            input_rate: ByteSize(64 << 10),
            output_rate: ByteSize(1 << 20),
            max_message_size: ByteSize(64 << 10),
            recording: true,
            recording_max_bytes: ByteSize(16 << 20),
            recording_retention: HumanDuration(Duration::from_secs(7 * 24 * 3600)),
        }
    }
}

/// `[tunnels]`: public tunnels to this host's API through ngrok, localtunnel, cloudflared or
/// an SSH reverse tunnel, run as supervised, confined clients (`/api/v1/tunnels`). Off by
/// default: a tunnel publishes the API to the internet.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct TunnelsConfig {
    /// Off: every tunnel route answers 403 saying how to turn tunnels on, and no client runs.
    pub enabled: bool,
    /// The public listener the clients forward to: a loopback TCP address the daemon binds
    /// itself when tunnels are on (port 0: a free port, chosen at startup). Whatever arrives
    /// on it is treated as coming from the internet: never loopback, never a trusted proxy,
    /// never the local admin.
    pub listen: SocketAddr,
    /// The first pause before a client that ended is started again; it doubles with each
    /// failure in a row, up to `max-restart-delay`.
    pub restart_delay: HumanDuration,
    pub max_restart_delay: HumanDuration,
    /// Failures in a row (a client that ended, or gave no public URL within `url-timeout`)
    /// after which the tunnel is marked failed and no longer restarted.
    pub max_failures: u32,
    /// A client that has run this long counts as having started well: its failures are
    /// forgotten.
    pub stable_after: HumanDuration,
    /// How long a client has to report its public URL.
    pub url_timeout: HumanDuration,
    /// The data segment (RLIMIT_DATA) each client may grow to (node, which runs localtunnel's
    /// client, needs a few hundred MiB of address space).
    pub memory: ByteSize,
    pub ssh: SshTunnelConfig,
    pub localtunnel: LocaltunnelConfig,
    pub cloudflared: CloudflaredConfig,
    pub ngrok: NgrokConfig,
}

impl Default for TunnelsConfig {
    fn default() -> Self {
        TunnelsConfig {
            enabled: false,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            restart_delay: HumanDuration(Duration::from_secs(1)),
            max_restart_delay: HumanDuration(Duration::from_secs(60)),
            max_failures: 5,
            stable_after: HumanDuration(Duration::from_secs(60)),
            url_timeout: HumanDuration(Duration::from_secs(60)),
            memory: ByteSize(1 << 30),
            ssh: SshTunnelConfig::default(),
            localtunnel: LocaltunnelConfig::default(),
            cloudflared: CloudflaredConfig::default(),
            ngrok: NgrokConfig::default(),
        }
    }
}

/// `[tunnels.ssh]`: a reverse tunnel (`ssh -R`) to a machine the admin owns.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct SshTunnelConfig {
    /// The client binary; empty: `ssh` on the daemon's PATH.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// The SSH server (required to start this provider), its port and the user to log in as.
    pub host: String,
    pub port: u16,
    pub user: String,
    /// The private key to log in with (read by the daemon, handed to the client; the client
    /// never sees this path).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity_file: Option<PathBuf>,
    /// The server's host key(s) in known_hosts format; the client checks the server strictly
    /// against them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub known_hosts_file: Option<PathBuf>,
    /// The address the server listens on for the tunnel (`-R bind:port:…`); empty: the
    /// server's default (its loopback, unless its `GatewayPorts` says otherwise).
    pub remote_bind: String,
    /// The port the server listens on; 0: the server picks one (a start may ask for another).
    pub remote_port: u16,
    /// The URL the public reaches the tunnel at, `{port}` standing for the remote port (e.g.
    /// `https://tunnel.example.com` when a proxy on the server forwards to it); empty:
    /// `http://HOST:{port}`.
    pub public_url: String,
}

impl Default for SshTunnelConfig {
    fn default() -> Self {
        SshTunnelConfig {
            path: None,
            host: String::new(),
            port: 22,
            user: String::new(),
            identity_file: None,
            known_hosts_file: None,
            remote_bind: String::new(),
            remote_port: 0,
            public_url: String::new(),
        }
    }
}

/// `[tunnels.localtunnel]`: localtunnel's `lt` client (npm package `localtunnel`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct LocaltunnelConfig {
    /// The client; empty: `lt` on the daemon's PATH.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// The localtunnel server (`lt --host`).
    pub host: String,
}

impl Default for LocaltunnelConfig {
    fn default() -> Self {
        LocaltunnelConfig {
            path: None,
            host: "https://localtunnel.me".into(),
        }
    }
}

/// `[tunnels.cloudflared]`: Cloudflare's `cloudflared`, a quick tunnel (a random
/// trycloudflare.com name, no account) or a named tunnel (a token from the Cloudflare
/// dashboard).
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct CloudflaredConfig {
    /// The client; empty: `cloudflared` on the daemon's PATH.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// A file holding the named tunnel's token (`TUNNEL_TOKEN`); without one only quick
    /// tunnels can be started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// The public hostname the named tunnel is routed to in the dashboard (its URL).
    pub hostname: String,
}

/// `[tunnels.ngrok]`: the ngrok v3 agent.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct NgrokConfig {
    /// The agent; empty: `ngrok` on the daemon's PATH.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// A file holding the account's authtoken (required by ngrok).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authtoken_file: Option<PathBuf>,
    /// A reserved domain to use (`--url`); empty: the account's default.
    pub domain: String,
}

/// `[programs]`: the program store (`/api/v1/programs`): upload and ZIP limits, runtimes.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct ProgramsConfig {
    /// Largest upload (the single file or the ZIP as sent); the upload route's body limit.
    pub max_upload_size: ByteSize,
    /// Most files in one ZIP project.
    pub max_files: usize,
    /// Most bytes a ZIP project may unpack to (bytes actually written, not what headers say).
    pub max_unpacked_size: ByteSize,
    /// Largest uncompressed/compressed ratio one ZIP entry may reach (zip bombs).
    pub max_ratio: u64,
    /// Longest path (bytes) of a file in a project, and deepest directory nesting.
    pub max_name_length: usize,
    pub max_depth: usize,
    /// File extension → interpreter (a name found in /usr/local/bin, /usr/bin or /bin, or an
    /// absolute path). Files with a shebang or ELF executables run directly.
    pub runtimes: std::collections::BTreeMap<String, String>,
}

impl Default for ProgramsConfig {
    fn default() -> Self {
        let runtimes = [
            ("bash", "bash"),
            ("js", "node"),
            ("mjs", "node"),
            ("pl", "perl"),
            ("py", "python3"),
            ("rb", "ruby"),
            ("sh", "sh"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        ProgramsConfig {
            max_upload_size: ByteSize(100 << 20),
            max_files: 10_000,
            max_unpacked_size: ByteSize(1 << 30),
            max_ratio: 200,
            max_name_length: 1024,
            max_depth: 32,
            runtimes,
        }
    }
}

/// `[kv]`: the JSON key-value store (`/api/v1/data`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct KvConfig {
    /// Largest value (its JSON text) one key may hold. The data routes accept bodies this
    /// large plus a little room for the key and batch framing, whatever `server.max-body-size`.
    pub max_value_size: ByteSize,
    /// Most operations in one `POST /api/v1/data:batch`.
    pub max_batch_ops: usize,
    /// How far back `watch=true&since=N` can resume: changes older than this are forgotten
    /// (a client asking for them gets 410 and lists again).
    pub history_window: HumanDuration,
    /// …and at most this many changes are kept, whatever their age, so a write storm cannot
    /// grow the change log without bound (on disk up to about twice as many: trimmed changes
    /// leave a generation at a time, see `kv::log`).
    pub history_max_changes: u64,
    /// How often expired keys (`?ttl=`) are deleted and the change log is trimmed.
    pub sweep_interval: HumanDuration,
    /// Memory for the read cache of hot keys (0 turns it off; values larger than 1/128 of it
    /// are always read from the database). Needs a restart.
    pub cache_size: ByteSize,
    /// Most keys the store holds; a write that would add more is refused (507).
    pub max_keys: u64,
    /// Largest total of all values (their JSON text); a write that would pass it is refused
    /// (507). Writes that shrink the store always pass.
    pub max_total_size: ByteSize,
    /// Change streams (`watch=true`) one token may have open at once; one more is 429.
    pub max_watches_per_token: usize,
    /// Change streams open at once in all; one more is 503.
    pub max_watches: usize,
}

/// `[server]`: listeners, connection and request limits, shutdown behaviour.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct ServerConfig {
    /// Addresses to bind when systemd passes no sockets. `unix:/path` for a Unix socket.
    pub listen: Vec<ListenAddr>,
    /// How long in-flight requests may take to finish after SIGTERM before they are cut.
    pub shutdown_timeout: HumanDuration,
    /// Exit after this long without a connection, but only when socket-activated (systemd
    /// keeps the socket and starts us again on the next connection). Off when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_exit_after: Option<HumanDuration>,
    /// Connections each HTTP listener serves at once (every listener has its own budget);
    /// further ones wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Connections the admin socket serves at once for its non-root peers; root is always
    /// let in beyond it.
    pub admin_max_connections: usize,
    /// Time a client has to send a complete request head (stops slowloris clients); a
    /// connection with no request in flight (HTTP/1 keep-alive, HTTP/2 with no stream, a
    /// stalled HTTP/2 preface or header block) is closed after this long.
    pub header_timeout: HumanDuration,
    /// A connection whose peer takes no bytes for this long while the daemon has bytes to
    /// send (a client that stopped reading a stream) is closed.
    pub write_timeout: HumanDuration,
    /// Time a non-streaming request may take from head to response.
    pub request_timeout: HumanDuration,
    /// Largest request body accepted by JSON routes.
    pub max_body_size: ByteSize,
    /// Host names (besides localhost names and the listening addresses) that requests may be
    /// addressed to; anything else is refused, which stops DNS rebinding from a browser.
    pub server_names: Vec<String>,
    /// Where the CLI looks for the daemon's admin socket (systemd's localhostd-admin.socket).
    pub admin_socket: PathBuf,
}

/// `[auth]`: sessions, proxies, CORS, audit retention.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct AuthConfig {
    /// A browser session ends after this long without a request.
    pub session_idle_timeout: HumanDuration,
    /// …and after this long in any case.
    pub session_max_age: HumanDuration,
    /// Peers whose word on the client is believed (X-Real-IP, else the last X-Forwarded-For
    /// hop; X-Forwarded-Proto): `unix` (a peer on a Unix socket, e.g. nginx) and IP addresses
    /// or CIDR ranges. `Forwarded` is never read.
    pub trusted_proxies: Vec<ProxySpec>,
    /// Origins allowed to call the API from a browser page on another origin (CORS). Empty:
    /// no CORS headers at all.
    pub cors_origins: Vec<String>,
    /// Audit events older than this are deleted.
    pub audit_keep_within: HumanDuration,
    /// How long a one-time login link from `localhostd login-url` stays usable (10s to 1h).
    pub login_link_ttl: HumanDuration,
}

/// `[rate-limit]`: requests per token (or per client address when anonymous), by route class.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct RateLimitConfig {
    pub enabled: bool,
    pub read_per_second: u32,
    pub read_burst: u32,
    pub write_per_second: u32,
    pub write_burst: u32,
    pub upload_per_second: u32,
    pub upload_burst: u32,
    pub exec_per_second: u32,
    pub exec_burst: u32,
    /// Failed authentications per client address: far lower, against guessing.
    pub failed_auth_per_minute: u32,
    pub failed_auth_burst: u32,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            session_idle_timeout: HumanDuration(Duration::from_secs(30 * 60)),
            session_max_age: HumanDuration(Duration::from_secs(12 * 3600)),
            trusted_proxies: vec![ProxySpec::Unix],
            cors_origins: Vec::new(),
            audit_keep_within: HumanDuration(Duration::from_secs(90 * 86400)),
            login_link_ttl: HumanDuration(Duration::from_secs(5 * 60)),
        }
    }
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            enabled: true,
            read_per_second: 500,
            read_burst: 1000,
            write_per_second: 200,
            write_burst: 400,
            upload_per_second: 20,
            upload_burst: 40,
            exec_per_second: 20,
            exec_burst: 40,
            failed_auth_per_minute: 10,
            failed_auth_burst: 10,
        }
    }
}

/// A trusted proxy: a Unix-socket peer, or an address range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxySpec {
    Unix,
    Net { addr: std::net::IpAddr, prefix: u8 },
}

impl ProxySpec {
    /// Whether `ip` lies in this range (never true for `Unix`).
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let ProxySpec::Net { addr, prefix } = self else {
            return false;
        };
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(*prefix)).unwrap_or(0);
                u32::from(*a) & mask == u32::from(b) & mask
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(*prefix)).unwrap_or(0);
                u128::from(*a) & mask == u128::from(b) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for ProxySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxySpec::Unix => f.write_str("unix"),
            ProxySpec::Net { addr, prefix } => write!(f, "{addr}/{prefix}"),
        }
    }
}

impl FromStr for ProxySpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "unix" {
            return Ok(ProxySpec::Unix);
        }
        let bad = || {
            format!(
                "expected \"unix\", an IP address or a CIDR range such as 127.0.0.1/32, got {s:?}"
            )
        };
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, p)) => (ip, Some(p.parse::<u8>().map_err(|_| bad())?)),
            None => (s, None),
        };
        let addr: std::net::IpAddr = ip.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(bad());
        }
        Ok(ProxySpec::Net { addr, prefix })
    }
}

impl Serialize for ProxySpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ProxySpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

/// `[log]`: where logs go and how much.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct LogConfig {
    /// Text for people or JSON lines for machines (stderr only; journald has its own format).
    pub format: LogFormat,
    /// `auto` picks journald when stderr is connected to it (systemd sets JOURNAL_STREAM).
    pub target: LogTarget,
    /// The log filter: `info`, `debug`, `localhostd=debug,info`… (`parse_log_filter`).
    pub level: String,
}

/// `[storage]`: limits that protect the state directory's filesystem.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct StorageConfig {
    /// Below this much free space `/ready` fails and writes are refused.
    pub min_free_disk: ByteSize,
    /// Read-only database connections kept for concurrent readers.
    pub db_readers: usize,
}

/// `[files]`: the file store's quotas and how long an upload may stall.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct FilesConfig {
    /// Largest single file; a bigger upload is refused (413) as soon as it crosses this.
    pub max_file_size: ByteSize,
    /// Largest total of all stored files; an upload that would pass it is refused (507).
    pub max_total_size: ByteSize,
    /// An upload whose body sends nothing for this long is aborted (uploads are not bounded by
    /// `server.request-timeout`: a 1 GiB body may take minutes, but it must keep moving).
    pub upload_idle_timeout: HumanDuration,
    /// Most files stored (each is a row and an audit event, whatever its size); an upload of
    /// a new file past it is refused (507).
    pub max_files: u64,
}

impl Default for FilesConfig {
    fn default() -> Self {
        FilesConfig {
            max_file_size: ByteSize(1 << 30),
            max_total_size: ByteSize(5 << 30),
            upload_idle_timeout: HumanDuration(Duration::from_secs(60)),
            max_files: 1_000_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogTarget {
    Auto,
    Journald,
    Stderr,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: vec![ListenAddr::Tcp(SocketAddr::from(([127, 0, 0, 1], 8080)))],
            shutdown_timeout: HumanDuration(Duration::from_secs(30)),
            idle_exit_after: None,
            max_connections: 1024,
            admin_max_connections: 64,
            header_timeout: HumanDuration(Duration::from_secs(10)),
            write_timeout: HumanDuration(Duration::from_secs(30)),
            request_timeout: HumanDuration(Duration::from_secs(60)),
            max_body_size: ByteSize(1 << 20),
            server_names: Vec::new(),
            admin_socket: PathBuf::from("/run/localhostd/admin.sock"),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            target: LogTarget::Auto,
            level: "info".to_owned(),
        }
    }
}

impl Default for KvConfig {
    fn default() -> Self {
        KvConfig {
            max_value_size: ByteSize(1 << 20),
            max_batch_ops: 1000,
            history_window: HumanDuration(Duration::from_secs(3600)),
            history_max_changes: 100_000,
            sweep_interval: HumanDuration(Duration::from_secs(1)),
            cache_size: ByteSize(64 << 20),
            max_keys: 1_000_000,
            max_total_size: ByteSize(1 << 30),
            max_watches_per_token: 16,
            max_watches: 256,
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            min_free_disk: ByteSize(100 << 20),
            db_readers: 4,
        }
    }
}

/// A listen address: TCP `host:port` or `unix:/absolute/path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(a) => write!(f, "{a}"),
            ListenAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl FromStr for ListenAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            let p = PathBuf::from(path);
            if !p.is_absolute() {
                return Err(format!("unix socket path must be absolute, got {path:?}"));
            }
            return Ok(ListenAddr::Unix(p));
        }
        s.parse::<SocketAddr>().map(ListenAddr::Tcp).map_err(|_| {
            format!("expected host:port (e.g. 127.0.0.1:8080) or unix:/path, got {s:?}")
        })
    }
}

impl Serialize for ListenAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ListenAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

/// A size in bytes, written as an integer or with a unit: `"512KiB"`, `"10MiB"`, `"1GB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let bad = || {
            format!(
                "invalid size {s:?}: expected a number of bytes with an optional unit (B, KB, KiB, MB, MiB, GB, GiB, TB, TiB), e.g. \"10MiB\""
            )
        };
        let n: u64 = num.parse().map_err(|_| bad())?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "KB" | "kB" => 1_000,
            "KiB" | "K" => 1 << 10,
            "MB" => 1_000_000,
            "MiB" | "M" => 1 << 20,
            "GB" => 1_000_000_000,
            "GiB" | "G" => 1 << 30,
            "TB" => 1_000_000_000_000,
            "TiB" | "T" => 1 << 40,
            _ => return Err(bad()),
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("size {s:?} is too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 4] = [
            ("TiB", 1 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ];
        for (unit, size) in UNITS {
            if self.0 >= size && self.0.is_multiple_of(size) {
                return write!(f, "{}{unit}", self.0 / size);
            }
        }
        write!(f, "{}B", self.0)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"10MiB\" or a number of bytes")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("size must not be negative, got {v}")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A duration written like `"30s"`, `"5m"`, `"1h 30m"`, `"250ms"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub fn get(self) -> Duration {
        self.0
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl FromStr for HumanDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        humantime::parse_duration(s)
            .map(HumanDuration)
            .map_err(|e| {
                format!("invalid duration {s:?}: {e} (write e.g. \"30s\", \"5m\", \"250ms\")")
            })
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"30s\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<HumanDuration, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

/// A config that could not be loaded; its `Display` names the file, the line and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read config file: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {key}{message}")]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        /// `key `a.b`: ` or empty when the error is not about one key (bad TOML syntax).
        key: String,
        message: String,
    },
    #[error("{path}: key `{key}`: {message}")]
    Invalid {
        path: PathBuf,
        key: &'static str,
        message: String,
    },
}

/// Where the config comes from: an explicit path (flag or env), or the default path, which may
/// be absent.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    pub path: PathBuf,
    /// Whether a missing file is an error (true when the user named it).
    pub required: bool,
}

impl ConfigSource {
    /// Resolves `--config`, then `$LOCALHOSTD_CONFIG`, then the default path.
    pub fn resolve(flag: Option<PathBuf>) -> ConfigSource {
        if let Some(path) = flag {
            return ConfigSource {
                path,
                required: true,
            };
        }
        if let Some(path) = std::env::var_os(CONFIG_ENV).filter(|v| !v.is_empty()) {
            return ConfigSource {
                path: PathBuf::from(path),
                required: true,
            };
        }
        ConfigSource {
            path: PathBuf::from(DEFAULT_CONFIG_PATH),
            required: false,
        }
    }

    /// Reads and validates the config. A missing default file means built-in defaults.
    pub fn load(&self) -> Result<Config, ConfigError> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => Config::parse(&text, &self.path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !self.required => {
                Ok(Config::default())
            }
            Err(source) => Err(ConfigError::Read {
                path: self.path.clone(),
                source,
            }),
        }
    }
}

impl Config {
    /// Parses and validates TOML text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let de = toml::Deserializer::parse(text)
            .map_err(|e| parse_error(path, text, String::new(), &e))?;
        let cfg: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            // The path already ends with an unknown key's own name.
            let key = match unknown_field(inner.message()) {
                Some(field) if key == "." => field,
                _ => key,
            };
            let key = if key == "." || key.is_empty() {
                String::new()
            } else {
                format!("key `{key}`: ")
            };
            parse_error(path, text, key, &inner)
        })?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    /// The effective config as TOML (what `check-config` prints).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }

    /// Which state directory to use: `$STATE_DIRECTORY` (first entry), then `state-dir`, then
    /// `./localhostd-state`. `state_directory_env` is the value of `$STATE_DIRECTORY`.
    pub fn state_dir(&self, state_directory_env: Option<&std::ffi::OsStr>) -> PathBuf {
        if let Some(env) = state_directory_env.and_then(|v| v.to_str())
            && let Some(first) = env.split(':').find(|p| !p.is_empty())
        {
            return PathBuf::from(first);
        }
        self.state_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(LOCAL_STATE_DIR))
    }

    /// Names of settings that differ from `new` and need a restart to take effect.
    pub fn restart_needed_for(&self, new: &Config) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.state_dir != new.state_dir {
            out.push("state-dir");
        }
        if self.server.listen != new.server.listen {
            out.push("server.listen");
        }
        if self.server.idle_exit_after != new.server.idle_exit_after {
            out.push("server.idle-exit-after");
        }
        if self.tunnels.enabled != new.tunnels.enabled {
            out.push("tunnels.enabled");
        }
        if self.tunnels.listen != new.tunnels.listen {
            out.push("tunnels.listen");
        }
        if self.server.max_connections != new.server.max_connections {
            out.push("server.max-connections");
        }
        if self.server.admin_max_connections != new.server.admin_max_connections {
            out.push("server.admin-max-connections");
        }
        if self.log.format != new.log.format {
            out.push("log.format");
        }
        if self.log.target != new.log.target {
            out.push("log.target");
        }
        if self.storage.db_readers != new.storage.db_readers {
            out.push("storage.db-readers");
        }
        if self.auth.cors_origins != new.auth.cors_origins {
            out.push("auth.cors-origins");
        }
        if self.exec.max_concurrent != new.exec.max_concurrent {
            out.push("exec.max-concurrent");
        }
        if self.sandbox.uid_range != new.sandbox.uid_range {
            out.push("sandbox.uid-range");
        }
        if self.sandbox.job_cgroups != new.sandbox.job_cgroups {
            out.push("sandbox.job-cgroups");
        }
        if self.kv.cache_size != new.kv.cache_size {
            out.push("kv.cache-size");
        }
        if self.metrics.enabled != new.metrics.enabled {
            out.push("metrics.enabled");
        }
        if self.metrics.simulate_hang != new.metrics.simulate_hang {
            out.push("metrics.simulate-hang");
        }
        // The router is built once, at startup.
        if self.compat.seed_routes != new.compat.seed_routes {
            out.push("compat.seed-routes");
        }
        out
    }
}

/// `$STATE_DIRECTORY` as systemd set it (`StateDirectory=`), if it did.
pub fn state_directory_env() -> Option<std::ffi::OsString> {
    std::env::var_os("STATE_DIRECTORY").filter(|v| !v.is_empty())
}

/// The config in force, shared by the running daemon. A SIGHUP reload swaps in a new one;
/// readers take a cheap snapshot per request or per connection.
#[derive(Debug)]
pub struct LiveConfig {
    current: std::sync::RwLock<std::sync::Arc<Config>>,
}

impl LiveConfig {
    pub fn new(cfg: Config) -> LiveConfig {
        LiveConfig {
            current: std::sync::RwLock::new(std::sync::Arc::new(cfg)),
        }
    }

    /// The config in force now.
    pub fn get(&self) -> std::sync::Arc<Config> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Puts `cfg` in force for everything that reads it from now on.
    pub fn replace(&self, cfg: Config) {
        let new = std::sync::Arc::new(cfg);
        match self.current.write() {
            Ok(mut g) => *g = new,
            Err(poisoned) => *poisoned.into_inner() = new,
        }
    }
}

fn unknown_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split('`').next().map(str::to_owned)
}

fn parse_error(path: &Path, text: &str, key: String, e: &toml::de::Error) -> ConfigError {
    let (line, column) = e
        .span()
        .map(|span| line_col(text, span.start))
        .unwrap_or((1, 1));
    ConfigError::Parse {
        path: path.to_owned(),
        line,
        column,
        key,
        message: e.message().trim().to_owned(),
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..offset.min(text.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let col = before.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new("/etc/localhostd/config.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn net_allow_takes_ipv4_networks_of_network_profiles_only() {
        let base = "[sandbox.profiles.default]\n[sandbox.profiles.net]\n";
        let c = parse(&format!(
            "{base}network = true\nnet-allow = [\"192.168.1.0/24\", \"192.0.2.2\"]\n"
        ))
        .unwrap();
        assert_eq!(
            c.sandbox.profiles["net"].net_allow,
            vec![
                crate::jobs::sandbox::Cidr::new([192, 168, 1, 0], 24),
                crate::jobs::sandbox::Cidr::new([192, 0, 2, 2], 32)
            ]
        );
        for bad in [
            "network = true\nnet-allow = [\"192.168.1.5/24\"]",
            "network = true\nnet-allow = [\"fd00::/8\"]",
            "network = true\nnet-allow = [\"10.0.2.0/25\"]",
            "network = true\nnet-allow = [\"127.0.0.1\"]",
            "network = false\nnet-allow = [\"192.168.1.0/24\"]",
        ] {
            let e = parse(&format!("{base}{bad}\n")).unwrap_err();
            assert!(
                e.contains("sandbox.profiles") || e.contains("net-allow"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn empty_file_gives_defaults() {
        assert_eq!(parse("").unwrap(), Config::default());
    }

    #[test]
    fn full_file_is_parsed_with_units() {
        let c = parse(
            r#"
state-dir = "/srv/lh"
[server]
listen = ["127.0.0.1:9000", "unix:/run/x.sock", "[::1]:9001"]
shutdown-timeout = "5s"
idle-exit-after = "10m"
max-body-size = "2MiB"
[log]
format = "json"
level = "debug"
[storage]
min-free-disk = 1048576
"#,
        )
        .unwrap();
        assert_eq!(c.state_dir.as_deref(), Some(Path::new("/srv/lh")));
        assert_eq!(c.server.listen.len(), 3);
        assert_eq!(c.server.listen[1], ListenAddr::Unix("/run/x.sock".into()));
        assert_eq!(c.server.shutdown_timeout.get(), Duration::from_secs(5));
        assert_eq!(
            c.server.idle_exit_after.map(|d| d.get()),
            Some(Duration::from_secs(600))
        );
        assert_eq!(c.server.max_body_size.bytes(), 2 << 20);
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.storage.min_free_disk.bytes(), 1 << 20);
    }

    #[test]
    fn unknown_top_level_key_names_line_and_key() {
        let e = parse("\n\nfrobnicate = 1\n").unwrap_err();
        assert!(
            e.starts_with("/etc/localhostd/config.toml:3:1: key `frobnicate`: unknown field"),
            "{e}"
        );
    }

    #[test]
    fn unknown_nested_key_names_full_path() {
        let e = parse("[server]\nlisten = [\"127.0.0.1:1\"]\nlisen = 3\n").unwrap_err();
        assert!(
            e.starts_with("/etc/localhostd/config.toml:3:1: key `server.lisen`: unknown field"),
            "{e}"
        );
    }

    #[test]
    fn wrong_type_names_line_and_key() {
        let e = parse("[server]\nmax-connections = \"many\"\n").unwrap_err();
        assert!(
            e.starts_with(
                "/etc/localhostd/config.toml:2:19: key `server.max-connections`: invalid type"
            ),
            "{e}"
        );
    }

    #[test]
    fn bad_size_names_line_and_key() {
        let e = parse("[server]\n\nmax-body-size = \"10 parsecs\"\n").unwrap_err();
        assert!(
            e.starts_with(
                "/etc/localhostd/config.toml:3:17: key `server.max-body-size`: invalid size"
            ),
            "{e}"
        );
    }

    #[test]
    fn bad_duration_names_line_and_key() {
        let e = parse("[server]\nshutdown-timeout = \"soon\"\n").unwrap_err();
        assert!(
            e.contains(":2:") && e.contains("key `server.shutdown-timeout`: invalid duration"),
            "{e}"
        );
    }

    #[test]
    fn bad_listen_address_names_line_and_key() {
        let e = parse("[server]\nlisten = [\"localhost\"]\n").unwrap_err();
        assert!(
            e.contains(":2:") && e.contains("key `server.listen[0]`"),
            "{e}"
        );
        let e = parse("[server]\nlisten = [\"unix:relative.sock\"]\n").unwrap_err();
        assert!(e.contains("must be absolute"), "{e}");
    }

    #[test]
    fn bad_enum_value_names_key() {
        let e = parse("[log]\nformat = \"xml\"\n").unwrap_err();
        assert!(e.contains(":2:") && e.contains("key `log.format`"), "{e}");
    }

    #[test]
    fn syntax_error_names_line() {
        let e = parse("[server\nlisten = 1\n").unwrap_err();
        assert!(e.starts_with("/etc/localhostd/config.toml:1:"), "{e}");
    }

    #[test]
    fn semantic_errors_name_key() {
        assert!(
            parse("[server]\nlisten = []\n")
                .unwrap_err()
                .contains("key `server.listen`")
        );
        assert!(
            parse("[server]\nmax-connections = 0\n")
                .unwrap_err()
                .contains("server.max-connections")
        );
        assert!(
            parse("state-dir = \"rel\"\n")
                .unwrap_err()
                .contains("key `state-dir`")
        );
        assert!(
            parse("[log]\nlevel = \"[[[\"\n")
                .unwrap_err()
                .contains("key `log.level`")
        );
        assert!(
            parse("[server]\nidle-exit-after = \"0s\"\n")
                .unwrap_err()
                .contains("server.idle-exit-after")
        );
    }

    #[test]
    fn files_section_has_defaults_units_and_checks() {
        let c = Config::default();
        assert_eq!(c.files.max_file_size.bytes(), 1 << 30);
        assert_eq!(c.files.max_total_size.bytes(), 5 << 30);
        assert_eq!(c.files.upload_idle_timeout.get(), Duration::from_secs(60));
        let c = parse(
            "[files]\nmax-file-size = \"10MiB\"\nmax-total-size = \"1GiB\"\nupload-idle-timeout = \"5s\"\n",
        )
        .unwrap();
        assert_eq!(c.files.max_file_size.bytes(), 10 << 20);
        assert_eq!(c.files.max_total_size.bytes(), 1 << 30);
        assert_eq!(c.files.upload_idle_timeout.get(), Duration::from_secs(5));
        for (text, key) in [
            ("[files]\nmax-file-size = 0\n", "files.max-file-size"),
            (
                "[files]\nmax-file-size = \"2GiB\"\nmax-total-size = \"1GiB\"\n",
                "files.max-file-size",
            ),
            (
                "[files]\nupload-idle-timeout = \"0s\"\n",
                "files.upload-idle-timeout",
            ),
            ("[files]\nmax-size = 1\n", "files.max-size"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(key), "{text}: {e}");
        }
    }

    #[test]
    fn effective_config_round_trips() {
        let c = Config::default();
        let text = c.to_toml();
        assert_eq!(parse(&text).unwrap(), c, "{text}");
    }

    #[test]
    fn programs_section_parses_and_is_validated() {
        let c = parse("[programs]\nmax-upload-size = \"5MiB\"\nmax-ratio = 50\n").unwrap();
        assert_eq!(c.programs.max_upload_size.bytes(), 5 << 20);
        assert_eq!(c.programs.max_ratio, 50);
        assert_eq!(
            c.programs.runtimes.get("py").map(String::as_str),
            Some("python3")
        );
        for (text, key) in [
            ("[programs]\nmax-files = 0\n", "programs.max-files"),
            ("[programs]\nmax-ratio = 1\n", "programs.max-ratio"),
            ("[programs]\nmax-depth = 0\n", "programs.max-depth"),
            (
                "[programs.runtimes]\npy = \"python 3\"\n",
                "programs.runtimes",
            ),
            ("[programs]\nmax-filez = 1\n", "programs.max-filez"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(key), "{text}: {e}");
        }
    }

    #[test]
    fn backup_section_parses_and_is_validated() {
        let d = Config::default();
        assert_eq!(d.backup.dir, None);
        assert_eq!(d.backup.compression_level, 2);
        let c = parse(
            "[backup]\ndir = \"/srv/b\"\nkeep-last = 3\nkeep-within = \"2days\"\ncompression-level = 9\n",
        )
        .unwrap();
        assert_eq!(
            c.backup.dir.as_deref(),
            Some(std::path::Path::new("/srv/b"))
        );
        assert_eq!(c.backup.keep_last, 3);
        assert_eq!(c.backup.keep_within.get(), Duration::from_secs(2 * 86400));
        for (text, key) in [
            ("[backup]\ndir = \"rel/b\"\n", "backup.dir"),
            (
                "[backup]\ncompression-level = 10\n",
                "backup.compression-level",
            ),
            ("[backup]\nkeep-last = 0\n", "backup.keep-last"),
            ("[backup]\nkeep-lats = 1\n", "backup.keep-lats"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(key), "{text}: {e}");
        }
    }

    #[test]
    fn kv_section_parses_with_units_and_defaults() {
        let c = parse(
            "[kv]\nmax-value-size = \"2MiB\"\nhistory-window = \"10m\"\nhistory-max-changes = 500\n",
        )
        .unwrap();
        assert_eq!(c.kv.max_value_size.bytes(), 2 << 20);
        assert_eq!(c.kv.history_window.get(), Duration::from_secs(600));
        assert_eq!(c.kv.history_max_changes, 500);
        assert_eq!(c.kv.max_batch_ops, KvConfig::default().max_batch_ops);
        assert_eq!(KvConfig::default().max_value_size.bytes(), 1 << 20);
        let e = parse("[kv]\nmax-valu-size = 1\n").unwrap_err();
        assert!(e.contains("kv.max-valu-size"), "{e}");
    }

    #[test]
    fn kv_limits_are_validated() {
        for (text, key) in [
            ("[kv]\nmax-value-size = 0\n", "kv.max-value-size"),
            ("[kv]\nmax-value-size = \"1GiB\"\n", "kv.max-value-size"),
            ("[kv]\nmax-batch-ops = 0\n", "kv.max-batch-ops"),
            ("[kv]\nhistory-window = \"0s\"\n", "kv.history-window"),
            ("[kv]\nhistory-max-changes = 0\n", "kv.history-max-changes"),
            ("[kv]\nsweep-interval = \"1ms\"\n", "kv.sweep-interval"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(&format!("key `{key}`")), "{text}: {e}");
        }
    }

    #[test]
    fn metrics_and_alerts_sections_parse_and_are_validated() {
        let c = parse(
            "[metrics]\ninterval = \"1s\"\npublic-on-loopback = true\n[alerts]\ndisk-used-percent = 80.5\nhold = \"30s\"\n",
        )
        .unwrap();
        assert_eq!(c.metrics.interval.get(), Duration::from_secs(1));
        assert!(c.metrics.public_on_loopback);
        assert_eq!(c.alerts.disk_used_percent, 80.5);
        assert_eq!(c.alerts.hold.get(), Duration::from_secs(30));
        assert!(!c.to_toml().contains("simulate-hang"));
        for (text, key) in [
            ("[metrics]\ninterval = \"10ms\"\n", "metrics.interval"),
            (
                "[metrics]\ncollector-timeout = \"0s\"\n",
                "metrics.collector-timeout",
            ),
            (
                "[metrics]\nsimulate-hang = \"nfs\"\n",
                "metrics.simulate-hang",
            ),
            (
                "[alerts]\ndisk-used-percent = 101\n",
                "alerts.disk-used-percent",
            ),
            ("[alerts]\nload-per-cpu = -1\n", "alerts.load-per-cpu"),
            ("[alerts]\nholdd = \"1s\"\n", "alerts.holdd"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(key), "{text}: {e}");
        }
    }

    #[test]
    fn sizes_parse_and_print() {
        assert_eq!("10MiB".parse::<ByteSize>().unwrap().bytes(), 10 << 20);
        assert_eq!("1GB".parse::<ByteSize>().unwrap().bytes(), 1_000_000_000);
        assert_eq!("0".parse::<ByteSize>().unwrap().bytes(), 0);
        assert!("-1MiB".parse::<ByteSize>().is_err());
        assert!("99999999999TiB".parse::<ByteSize>().is_err());
        assert_eq!(ByteSize(3 << 20).to_string(), "3MiB");
        assert_eq!(ByteSize(1000).to_string(), "1000B");
    }

    #[test]
    fn state_dir_precedence() {
        let mut c = Config::default();
        assert_eq!(c.state_dir(None), PathBuf::from(LOCAL_STATE_DIR));
        c.state_dir = Some("/srv/a".into());
        assert_eq!(c.state_dir(None), PathBuf::from("/srv/a"));
        assert_eq!(
            c.state_dir(Some("/var/lib/localhostd".as_ref())),
            PathBuf::from("/var/lib/localhostd")
        );
    }

    #[test]
    fn proxy_specs_parse_and_match() {
        let net: ProxySpec = "10.0.0.0/8".parse().unwrap();
        assert!(net.contains("10.1.2.3".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.0.0.1".parse().unwrap()));
        let one: ProxySpec = "::1".parse().unwrap();
        assert!(one.contains("::1".parse().unwrap()));
        assert!(!one.contains("::2".parse().unwrap()));
        assert!(!ProxySpec::Unix.contains("127.0.0.1".parse().unwrap()));
        let all: ProxySpec = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("1.2.3.4".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<ProxySpec>().is_err());
        assert!("nginx".parse::<ProxySpec>().is_err());
        let e = parse("[auth]\ntrusted-proxies = [\"unix\", \"localhost\"]\n").unwrap_err();
        assert!(
            e.contains(":2:") && e.contains("key `auth.trusted-proxies[1]`"),
            "{e}"
        );
    }

    #[test]
    fn zero_rates_and_bad_origins_are_refused() {
        assert!(
            parse("[rate-limit]\nexec-burst = 0\n")
                .unwrap_err()
                .contains("rate-limit.exec-burst")
        );
        assert!(
            parse("[auth]\ncors-origins = [\"example.com\"]\n")
                .unwrap_err()
                .contains("auth.cors-origins")
        );
        assert!(parse("[auth]\ncors-origins = [\"https://example.com\"]\n").is_ok());
    }

    #[test]
    fn the_ui_section_and_the_login_link_ttl() {
        assert!(Config::default().ui.enabled);
        assert!(!parse("[ui]\nenabled = false\n").unwrap().ui.enabled);
        assert!(
            parse("[ui]\nenable = false\n")
                .unwrap_err()
                .contains("ui.enable")
        );
        assert_eq!(
            Config::default().auth.login_link_ttl.get(),
            Duration::from_secs(300)
        );
        let ttl = parse("[auth]\nlogin-link-ttl = \"30s\"\n").unwrap();
        assert_eq!(ttl.auth.login_link_ttl.get(), Duration::from_secs(30));
        for bad in ["0s", "5s", "2h"] {
            let e = parse(&format!("[auth]\nlogin-link-ttl = \"{bad}\"\n")).unwrap_err();
            assert!(e.contains("auth.login-link-ttl"), "{bad}: {e}");
        }
    }

    #[test]
    fn restart_needed_lists_only_static_settings() {
        let a = Config::default();
        let mut b = a.clone();
        b.log.level = "debug".into();
        b.server.max_body_size = ByteSize(5);
        assert!(a.restart_needed_for(&b).is_empty());
        b.server.listen = vec!["127.0.0.1:1".parse().unwrap()];
        assert_eq!(a.restart_needed_for(&b), vec!["server.listen"]);
    }
}
