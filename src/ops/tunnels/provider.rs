//! What localhostd knows about each tunnel client, as data and pure functions: which
//! [`Provider`]s there are, the [`StartOptions`] a start request may give ([`options`]), whether
//! a client can run here ([`locate`]), the command line, files, environment and ports it runs
//! with ([`launch`] → [`Launch`]), and how its public URL is discovered ([`Discovery`]: from a
//! line of its output with [`url_from_line`], or by polling its local API with [`poll_url`]).
//!
//! The supervisor (`ops::tunnels`) runs what [`launch`] describes inside the sandbox: the client
//! sees `/usr`, `/bin`, `/lib*` and `/etc` read-only, a scratch `/work` (its cwd and `HOME`)
//! holding [`Launch::files`], the host's network namespace with landlock TCP rules
//! ([`Launch::connect_ports`], [`Launch::bind_ports`]), and, for a client installed elsewhere,
//! [`Launch::bind_dir`] read-only at [`CLIENT_DIR`]. It runs as uid 65534; the files must be
//! owned by that uid (OpenSSH refuses a private key readable by others, or owned by someone
//! else).
//!
//! URL discovery: feed every line of the client's stdout and stderr to [`url_from_line`]
//! (every provider has a line that names its URL); when [`Launch::discovery`] is not
//! [`Discovery::Output`], also call [`poll_url`] until it answers `Some` (ngrok's agent API,
//! cloudflared's metrics server: the clients' supported ways).
//!
//! The per-provider facts, each from the client's source or documentation:
//! - `ssh` (OpenSSH): `ssh -N -R [bind:]rport:127.0.0.1:TARGET`; with `rport` 0 the server picks
//!   the port and the client logs `Allocated port N for remote forward to HOST:PORT` at the
//!   default log level (openssh-portable `ssh.c`, `ssh_confirm_remote_forward`); with a fixed
//!   port the only success line is `debug1: remote forward success for: listen …` at
//!   `LogLevel=DEBUG1`, which we then ask for.
//! - `localtunnel` (npm `localtunnel`, `lt`): `lt --port P --local-host 127.0.0.1 --host H
//!   [--subdomain S]` prints `your url is: URL` (localtunnel `bin/lt.js`). `--local-host`
//!   also rewrites the `Host` header of what it forwards to `127.0.0.1`
//!   (`lib/HeaderHostTransformer.js`). Its connections are unrestricted: after asking the
//!   server over HTTP(S), it connects to a TCP port the server assigns per tunnel.
//! - `cloudflared`: a quick tunnel (`tunnel --url …`) logs its URL in a box
//!   (`cmd/cloudflared/tunnel/quick_tunnel.go`) and serves `{"hostname":…}` at
//!   `/quicktunnel` on its `--metrics` address (`metrics/metrics.go`); a named tunnel
//!   (`tunnel run`, token in `TUNNEL_TOKEN`) is up once it logs `Registered tunnel connection`
//!   (`connection/observer.go`) or `/ready` answers 200 (`metrics/readiness.go`); its URL is the
//!   configured hostname.
//! - `ngrok` (v3 agent): `ngrok http 127.0.0.1:P --config /work/ngrok.yml [--url URL]`, the
//!   config (`version: "3"`, `agent:` authtoken, web_addr, log to stdout as JSON) written into
//!   `/work`; its URL from the agent API's `GET /api/tunnels` (ngrok docs, agent/api). The log
//!   settings are config keys (agent/config/v3.mdx) rather than `--log`/`--log-format`, which
//!   the CLI docs list only among `ngrok api`'s flags.
//!
//! [`check`] tells early whether options fit the config (a named cloudflared tunnel needs
//! `token-file` and `hostname`); [`launch`] checks it again and reads the secrets (ssh key,
//! known_hosts, ngrok authtoken, cloudflared token) at each start.

use std::ffi::OsStr;
use std::fmt;
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::TunnelsConfig;

/// Where [`Launch::bind_dir`] appears inside the sandbox.
pub const CLIENT_DIR: &str = "/tunnel-client";
/// The client's scratch directory (cwd and `HOME`) inside the sandbox, where
/// [`Launch::files`] are written.
pub const WORK_DIR: &str = "/work";
/// The `PATH` a client gets (localtunnel's `lt` is `#!/usr/bin/env node`).
const CLIENT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// Largest response [`poll_url`] reads.
const POLL_MAX: usize = 64 * 1024;
/// How long one [`poll_url`] request may take.
const POLL_TIMEOUT: Duration = Duration::from_secs(2);

/// A tunnel client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Ssh,
    Localtunnel,
    Cloudflared,
    Ngrok,
}

impl Provider {
    pub const ALL: [Provider; 4] = [
        Provider::Ssh,
        Provider::Localtunnel,
        Provider::Cloudflared,
        Provider::Ngrok,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Ssh => "ssh",
            Provider::Localtunnel => "localtunnel",
            Provider::Cloudflared => "cloudflared",
            Provider::Ngrok => "ngrok",
        }
    }

    pub fn parse(s: &str) -> Option<Provider> {
        Provider::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// The client's program name, looked up on the PATH when no path is configured.
    pub fn program(self) -> &'static str {
        match self {
            Provider::Ssh => "ssh",
            Provider::Localtunnel => "lt",
            Provider::Cloudflared => "cloudflared",
            Provider::Ngrok => "ngrok",
        }
    }

    /// What to install when the program is missing.
    fn package(self) -> &'static str {
        match self {
            Provider::Ssh => "install the openssh-client package",
            Provider::Localtunnel => "install it with `npm install -g localtunnel`",
            Provider::Cloudflared => "install Cloudflare's cloudflared package",
            Provider::Ngrok => "install the ngrok v3 agent",
        }
    }

    fn configured_path(self, cfg: &TunnelsConfig) -> Option<&Path> {
        match self {
            Provider::Ssh => cfg.ssh.path.as_deref(),
            Provider::Localtunnel => cfg.localtunnel.path.as_deref(),
            Provider::Cloudflared => cfg.cloudflared.path.as_deref(),
            Provider::Ngrok => cfg.ngrok.path.as_deref(),
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a tunnel cannot start.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProviderError {
    /// The client or one of its prerequisites is missing (the reason names the config key or
    /// the package to install).
    #[error("{0}")]
    Unavailable(String),
    /// A start option is invalid, unknown, or belongs to another provider.
    #[error("{0}")]
    BadOption(String),
}

/// The options a start request may give (stored as JSON with the desired state). Each belongs
/// to one provider; [`options`] refuses another provider's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartOptions {
    /// ssh: the port the server listens on (0: the server picks); default `remote-port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_port: Option<u16>,
    /// localtunnel: the subdomain to ask for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subdomain: Option<String>,
    /// cloudflared: a named tunnel (needs `token-file` and `hostname`) instead of a quick one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub named: Option<bool>,
    /// ngrok: a reserved domain (`--url`); default the config's `domain`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
}

impl StartOptions {
    /// The options that are set, with the provider each belongs to.
    fn set(&self) -> Vec<(&'static str, Provider)> {
        let mut set = Vec::new();
        if self.remote_port.is_some() {
            set.push(("remote_port", Provider::Ssh));
        }
        if self.subdomain.is_some() {
            set.push(("subdomain", Provider::Localtunnel));
        }
        if self.named.is_some() {
            set.push(("named", Provider::Cloudflared));
        }
        if self.domain.is_some() {
            set.push(("domain", Provider::Ngrok));
        }
        set
    }

    fn is_named(&self) -> bool {
        self.named == Some(true)
    }
}

/// Reads and checks a start request's options for `p` (`null` or `{}`: none).
pub fn options(p: Provider, v: &serde_json::Value) -> Result<StartOptions, ProviderError> {
    let opts: StartOptions = if v.is_null() {
        StartOptions::default()
    } else if !v.is_object() {
        return Err(ProviderError::BadOption(format!(
            "options for {p} must be a JSON object"
        )));
    } else {
        serde_json::from_value(v.clone())
            .map_err(|e| ProviderError::BadOption(format!("bad options for {p}: {e}")))?
    };
    for (name, owner) in opts.set() {
        if owner != p {
            return Err(ProviderError::BadOption(format!(
                "`{name}` is an option of {owner}, not of {p}"
            )));
        }
    }
    if let Some(s) = &opts.subdomain
        && !valid_subdomain(s)
    {
        return Err(ProviderError::BadOption(format!(
            "subdomain {s:?}: 4 to 63 lowercase letters, digits and inner hyphens"
        )));
    }
    if let Some(d) = &opts.domain
        && !valid_domain(d)
    {
        return Err(ProviderError::BadOption(format!(
            "domain {d:?} is not a host name"
        )));
    }
    Ok(opts)
}

/// The subdomains localtunnel's server accepts (localtunnel/server `server.js`:
/// `/^(?:[a-z0-9][a-z0-9\-]{4,63}[a-z0-9]|[a-z0-9]{4,63})$/`), and at most 63 bytes (one DNS
/// label).
fn valid_subdomain(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if b.len() < 4 || b.len() > 63 || !b.iter().all(|c| alnum(c) || *c == b'-') {
        return false;
    }
    if b.iter().all(alnum) {
        return true;
    }
    // With a hyphen: alphanumeric ends around 4 or more inner characters.
    b.len() >= 6 && alnum(&b[0]) && alnum(&b[b.len() - 1])
}

/// A DNS host name: dot-separated labels of letters, digits and inner hyphens.
fn valid_domain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
        })
}

/// Whether `p` can run here: its binary (the configured path, else `p.program()` on
/// `path_env`) and the config it needs (ssh: host, user, identity-file and known-hosts-file
/// set, the files readable; ngrok: a readable authtoken-file). Returns the binary's resolved
/// path; `Err` is the reason shown to admins, naming the config key or the package.
pub fn locate(p: Provider, cfg: &TunnelsConfig, path_env: &OsStr) -> Result<PathBuf, String> {
    let section = format!("[tunnels.{p}]");
    let binary = match p.configured_path(cfg) {
        Some(path) => {
            if !is_executable(path) {
                return Err(format!(
                    "{section} path {} is not an executable file",
                    path.display()
                ));
            }
            path.to_path_buf()
        }
        None => std::env::split_paths(path_env)
            .filter(|d| d.is_absolute())
            .map(|d| d.join(p.program()))
            .find(|c| is_executable(c))
            .ok_or_else(|| {
                format!(
                    "{} is not on the PATH ({}): {}, or set {section} path",
                    p.program(),
                    path_env.to_string_lossy(),
                    p.package()
                )
            })?,
    };
    let binary = std::fs::canonicalize(&binary)
        .map_err(|e| format!("{section}: cannot resolve {}: {e}", binary.display()))?;
    match p {
        Provider::Ssh => {
            let ssh = &cfg.ssh;
            for (key, value) in [("host", &ssh.host), ("user", &ssh.user)] {
                if value.is_empty() {
                    return Err(format!("{section} {key} is not set"));
                }
                if value.starts_with('-') || value.chars().any(|c| c.is_whitespace()) {
                    return Err(format!("{section} {key} {value:?} is not a valid {key}"));
                }
            }
            readable(&section, "identity-file", ssh.identity_file.as_deref())?;
            readable(
                &section,
                "known-hosts-file",
                ssh.known_hosts_file.as_deref(),
            )?;
        }
        Provider::Ngrok => {
            readable(
                &section,
                "authtoken-file",
                cfg.ngrok.authtoken_file.as_deref(),
            )?;
        }
        Provider::Localtunnel | Provider::Cloudflared => {}
    }
    Ok(binary)
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn readable(section: &str, key: &str, path: Option<&Path>) -> Result<(), String> {
    let path = path.ok_or_else(|| format!("{section} {key} is not set"))?;
    std::fs::File::open(path)
        .map(drop)
        .map_err(|e| format!("{section} {key} {}: {e}", path.display()))
}

fn read_file(section: &str, key: &str, path: Option<&Path>) -> Result<Vec<u8>, ProviderError> {
    let path =
        path.ok_or_else(|| ProviderError::Unavailable(format!("{section} {key} is not set")))?;
    std::fs::read(path)
        .map_err(|e| ProviderError::Unavailable(format!("{section} {key} {}: {e}", path.display())))
}

/// A secret held in a file: its first line, trimmed.
fn read_secret(section: &str, key: &str, path: Option<&Path>) -> Result<String, ProviderError> {
    let bytes = read_file(section, key, path)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| ProviderError::Unavailable(format!("{section} {key} does not hold text")))?;
    let secret = text.lines().next().unwrap_or("").trim().to_string();
    if secret.is_empty() {
        return Err(ProviderError::Unavailable(format!(
            "{section} {key} is empty"
        )));
    }
    Ok(secret)
}

/// Checks options against the config they need (a named cloudflared tunnel needs
/// `token-file` and `hostname`). [`launch`] checks this too; call it at start to refuse early.
pub fn check(p: Provider, cfg: &TunnelsConfig, opts: &StartOptions) -> Result<(), ProviderError> {
    if p == Provider::Cloudflared && opts.is_named() {
        if cfg.cloudflared.token_file.is_none() {
            return Err(ProviderError::Unavailable(
                "a named tunnel needs [tunnels.cloudflared] token-file".into(),
            ));
        }
        if cfg.cloudflared.hostname.is_empty() {
            return Err(ProviderError::Unavailable(
                "a named tunnel needs [tunnels.cloudflared] hostname (its public host)".into(),
            ));
        }
    }
    Ok(())
}

/// How a client's public URL becomes known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discovery {
    /// Only from its output ([`url_from_line`]).
    Output,
    /// ngrok's agent API on its `web_addr`: `GET /api/tunnels`.
    NgrokApi(SocketAddr),
    /// cloudflared's metrics server: `GET /quicktunnel` (a quick tunnel).
    CloudflaredMetrics(SocketAddr),
    /// cloudflared's metrics server: `GET /ready` answering 200 with connections; the URL is
    /// then the configured hostname's (a named tunnel).
    CloudflaredReady { metrics: SocketAddr, url: String },
    /// Known in advance.
    Fixed(String),
}

/// How to run one client (see the module docs for the sandbox it runs in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// The command line; `argv[0]` as the client sees it inside the sandbox.
    pub argv: Vec<String>,
    /// A host directory to bind read-only at [`CLIENT_DIR`]: the client is installed outside
    /// `/usr`, `/bin`, `/sbin` and `/lib*`.
    pub bind_dir: Option<PathBuf>,
    /// The whole environment (`HOME`, `PATH`, and cloudflared's `TUNNEL_TOKEN`).
    pub env: Vec<(String, String)>,
    /// Files written into [`WORK_DIR`] before the start: (name, content, private: mode 0600,
    /// else 0644), owned by the client's uid.
    pub files: Vec<(String, Vec<u8>, bool)>,
    /// The TCP ports it may connect to; `None`: any (localtunnel: its server assigns a port
    /// per tunnel). Port 53 is in every list: a resolver retries over TCP when a reply is
    /// truncated.
    pub connect_ports: Option<Vec<u16>>,
    /// The TCP ports it may bind (ngrok's `web_addr`, cloudflared's `--metrics`).
    pub bind_ports: Vec<u16>,
    pub discovery: Discovery,
}

/// The directories the sandbox shows the client as they are on the host.
fn visible_in_sandbox(path: &Path) -> bool {
    let mut components = path.components();
    components.next(); // the root
    components.next().is_some_and(|c| {
        let first = c.as_os_str().to_string_lossy();
        matches!(first.as_ref(), "usr" | "bin" | "sbin") || first.starts_with("lib")
    })
}

/// argv[0] and the directory to bind for a binary: itself when the sandbox shows it, else
/// its directory at [`CLIENT_DIR`]; for localtunnel's `…/localtunnel/bin/lt.js`, the
/// package's directory (lt.js loads `../localtunnel.js` and `../node_modules`).
fn placement(p: Provider, binary: &Path) -> Result<(String, Option<PathBuf>), ProviderError> {
    let text = |path: &Path| {
        path.to_str().map(str::to_string).ok_or_else(|| {
            ProviderError::Unavailable(format!("{}: not a UTF-8 path", path.display()))
        })
    };
    if visible_in_sandbox(binary) {
        return Ok((text(binary)?, None));
    }
    let parent = binary.parent().unwrap_or(Path::new("/"));
    let dir = if p == Provider::Localtunnel && parent.file_name() == Some(OsStr::new("bin")) {
        parent.parent().unwrap_or(parent)
    } else {
        parent
    };
    let inside = binary.strip_prefix(dir).unwrap_or(binary);
    Ok((
        format!("{CLIENT_DIR}/{}", text(inside)?),
        Some(dir.to_path_buf()),
    ))
}

/// `host` for a URL or an ssh forward: an IPv6 address in brackets.
fn host_part(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

fn ip_part(ip: IpAddr) -> String {
    host_part(&ip.to_string())
}

fn sorted(mut ports: Vec<u16>) -> Vec<u16> {
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// What it takes to run `p` (`binary` from [`locate`]) forwarding to `target`, the daemon's
/// public listener. `free_port` picks a free loopback port for a client's local server.
pub fn launch(
    p: Provider,
    binary: &Path,
    cfg: &TunnelsConfig,
    opts: &StartOptions,
    target: SocketAddr,
    free_port: &mut dyn FnMut() -> std::io::Result<u16>,
) -> Result<Launch, ProviderError> {
    check(p, cfg, opts)?;
    let (argv0, bind_dir) = placement(p, binary)?;
    let mut env = vec![
        ("HOME".to_string(), WORK_DIR.to_string()),
        ("PATH".to_string(), CLIENT_PATH.to_string()),
    ];
    let target_host = ip_part(target.ip());
    let tport = target.port();
    let section = format!("[tunnels.{p}]");
    let mut port = || {
        free_port().map_err(|e| {
            ProviderError::Unavailable(format!("no free loopback port for {p}'s local server: {e}"))
        })
    };
    let launch = match p {
        Provider::Ssh => {
            let ssh = &cfg.ssh;
            let key = read_file(&section, "identity-file", ssh.identity_file.as_deref())?;
            let known = read_file(
                &section,
                "known-hosts-file",
                ssh.known_hosts_file.as_deref(),
            )?;
            let rport = opts.remote_port.unwrap_or(ssh.remote_port);
            let forward = if ssh.remote_bind.is_empty() {
                format!("{rport}:{target_host}:{tport}")
            } else {
                format!(
                    "{}:{rport}:{target_host}:{tport}",
                    host_part(&ssh.remote_bind)
                )
            };
            let mut argv: Vec<String> = [
                argv0.as_str(),
                "-N",
                "-T",
                "-F",
                "/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "ExitOnForwardFailure=yes",
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "UserKnownHostsFile=/work/known_hosts",
                "-o",
                "GlobalKnownHostsFile=/dev/null",
                "-o",
                "ServerAliveInterval=15",
                "-o",
                "ServerAliveCountMax=3",
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "IdentityFile=/work/id",
            ]
            .map(String::from)
            .into();
            if rport != 0 {
                // A fixed port's success is logged at debug level only (ssh.c,
                // ssh_confirm_remote_forward).
                argv.extend(["-o".into(), "LogLevel=DEBUG1".into()]);
            }
            argv.extend([
                "-p".into(),
                ssh.port.to_string(),
                "-R".into(),
                forward,
                format!("{}@{}", ssh.user, ssh.host),
            ]);
            Launch {
                argv,
                bind_dir,
                env,
                files: vec![
                    ("id".into(), key, true),
                    ("known_hosts".into(), known, false),
                ],
                connect_ports: Some(sorted(vec![ssh.port, tport, 53])),
                bind_ports: vec![],
                discovery: Discovery::Output,
            }
        }
        Provider::Localtunnel => {
            let mut argv = vec![
                argv0,
                "--port".into(),
                tport.to_string(),
                "--local-host".into(),
                target.ip().to_string(),
                "--host".into(),
                cfg.localtunnel.host.clone(),
            ];
            if let Some(s) = &opts.subdomain {
                argv.extend(["--subdomain".into(), s.clone()]);
            }
            Launch {
                argv,
                bind_dir,
                env,
                files: vec![],
                // The server answers with a TCP port of its own per tunnel
                // (localtunnel/server lib/TunnelAgent.js listens on any free port).
                connect_ports: None,
                bind_ports: vec![],
                discovery: Discovery::Output,
            }
        }
        Provider::Cloudflared => {
            let mport = port()?;
            let metrics = SocketAddr::from(([127, 0, 0, 1], mport));
            let local = format!("http://{target_host}:{tport}");
            let mut argv = vec![
                argv0,
                "tunnel".into(),
                "--no-autoupdate".into(),
                "--metrics".into(),
                metrics.to_string(),
            ];
            let discovery = if opts.is_named() {
                let token = read_secret(
                    &section,
                    "token-file",
                    cfg.cloudflared.token_file.as_deref(),
                )?;
                env.push(("TUNNEL_TOKEN".into(), token));
                argv.extend(["run".into(), "--url".into(), local]);
                Discovery::CloudflaredReady {
                    metrics,
                    url: format!("https://{}", cfg.cloudflared.hostname),
                }
            } else {
                argv.extend(["--url".into(), local]);
                Discovery::CloudflaredMetrics(metrics)
            };
            Launch {
                argv,
                bind_dir,
                env,
                files: vec![],
                // 443: the quick-tunnel service and HTTPS; 7844: the edge over HTTP/2
                // (QUIC is UDP); 853: DNS over TLS, its fallback for the edge's SRV lookup
                // (edgediscovery/allregions/discovery.go).
                connect_ports: Some(sorted(vec![53, 443, 853, 7844, tport])),
                bind_ports: vec![mport],
                discovery,
            }
        }
        Provider::Ngrok => {
            let mport = port()?;
            let web = SocketAddr::from(([127, 0, 0, 1], mport));
            let token = read_secret(
                &section,
                "authtoken-file",
                cfg.ngrok.authtoken_file.as_deref(),
            )?;
            let mut argv = vec![
                argv0,
                "http".into(),
                format!("{target_host}:{tport}"),
                "--config".into(),
                format!("{WORK_DIR}/ngrok.yml"),
            ];
            let domain = opts.domain.as_deref().unwrap_or(&cfg.ngrok.domain);
            if !domain.is_empty() {
                let url = if domain.contains("://") {
                    domain.to_string()
                } else {
                    format!("https://{domain}")
                };
                argv.extend(["--url".into(), url]);
            }
            Launch {
                argv,
                bind_dir,
                env,
                files: vec![(
                    "ngrok.yml".into(),
                    ngrok_config(&token, web).into_bytes(),
                    true,
                )],
                connect_ports: Some(sorted(vec![53, 443, tport])),
                bind_ports: vec![mport],
                discovery: Discovery::NgrokApi(web),
            }
        }
    };
    Ok(launch)
}

/// ngrok's v3 agent config (ngrok-docs agent/config/v3.mdx): the authtoken, the agent API on
/// `web`, no update check, no console UI, JSON log records on stdout. Strings are JSON-quoted
/// (a YAML double-quoted scalar).
pub fn ngrok_config(authtoken: &str, web: SocketAddr) -> String {
    let q = |s: &str| serde_json::Value::String(s.to_string()).to_string();
    format!(
        "version: \"3\"\nagent:\n  authtoken: {}\n  web_addr: {}\n  update_check: false\n  \
         console_ui: false\n  log: stdout\n  log_format: json\n  log_level: info\n",
        q(authtoken),
        q(&web.to_string())
    )
}

/// The ssh tunnel's public URL for remote port `port`: `public-url` with `{port}`, else
/// `http://HOST:PORT`.
fn ssh_url(cfg: &TunnelsConfig, port: u16) -> String {
    if cfg.ssh.public_url.is_empty() {
        format!("http://{}:{port}", host_part(&cfg.ssh.host))
    } else {
        cfg.ssh.public_url.replace("{port}", &port.to_string())
    }
}

/// The public URL, when `line` (one line of the client's stdout or stderr) announces it.
pub fn url_from_line(
    p: Provider,
    line: &str,
    cfg: &TunnelsConfig,
    opts: &StartOptions,
) -> Option<String> {
    let line = line.trim_end_matches(['\r', '\n']);
    match p {
        Provider::Ssh => {
            // ssh.c: logit("Allocated port %u for remote forward to %s:%d", ...)
            if let Some(rest) = after(line, "Allocated port ") {
                let port = rest.split(' ').next()?.parse::<u16>().ok()?;
                if rest.contains(" for remote forward to ") {
                    return Some(ssh_url(cfg, port));
                }
            }
            // ssh.c: debug("remote forward %s for: listen %s%s%d, connect %s:%d", "success", ...)
            let fixed = opts.remote_port.unwrap_or(cfg.ssh.remote_port);
            if fixed != 0 {
                let rest = after(line, "remote forward success for: listen ")?;
                let listen = rest.split(", connect ").next()?;
                let port = listen.rsplit(':').next()?.parse::<u16>().ok()?;
                if port == fixed {
                    return Some(ssh_url(cfg, port));
                }
            }
            None
        }
        Provider::Localtunnel => {
            // bin/lt.js: console.log('your url is: %s', tunnel.url)
            let url = line.strip_prefix("your url is: ")?.trim();
            is_http_url(url).then(|| url.to_string())
        }
        Provider::Cloudflared => {
            if opts.is_named() {
                // connection/observer.go: Msg("Registered tunnel connection")
                return (line.contains("Registered tunnel connection")
                    && !cfg.cloudflared.hostname.is_empty())
                .then(|| format!("https://{}", cfg.cloudflared.hostname));
            }
            // quick_tunnel.go: the URL alone on a line of an ASCII box (cliutil.LogTable):
            // "|  https://NAME.trycloudflare.com  |".
            let at = line.find("https://")?;
            if !line[..at].trim_end().ends_with('|') {
                return None;
            }
            let url = line[at..]
                .split(|c: char| c.is_whitespace() || c == '|')
                .next()?;
            let host = &url["https://".len()..];
            (host.ends_with(".trycloudflare.com")
                && host != "api.trycloudflare.com"
                && valid_domain(host))
            .then(|| url.to_string())
        }
        Provider::Ngrok => {
            // log_format json: {"lvl":"info","msg":"started tunnel",...,"url":"https://…"}
            if let Ok(serde_json::Value::Object(record)) =
                serde_json::from_str::<serde_json::Value>(line.trim())
            {
                if record.get("msg").and_then(|m| m.as_str()) != Some("started tunnel") {
                    return None;
                }
                let url = record.get("url")?.as_str()?;
                return is_http_url(url).then(|| url.to_string());
            }
            // log_format logfmt: t=… lvl=info msg="started tunnel" obj=tunnels … url=https://…
            if !line.contains("msg=\"started tunnel\"") {
                return None;
            }
            let url = line
                .split_whitespace()
                .find_map(|field| field.strip_prefix("url="))?;
            is_http_url(url).then(|| url.to_string())
        }
    }
}

/// The text after the first `needle` in `line`.
fn after<'a>(line: &'a str, needle: &str) -> Option<&'a str> {
    line.find(needle).map(|i| &line[i + needle.len()..])
}

fn is_http_url(url: &str) -> bool {
    (url.starts_with("https://") || url.starts_with("http://"))
        && url.len() > "https://".len()
        && !url.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// ngrok's agent API answer (`GET /api/tunnels`: `tunnels[].public_url`; also the newer
/// `GET /api/endpoints`: `endpoints[].url`): the first https URL, else the first URL.
pub fn url_from_ngrok_api(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let mut urls = Vec::new();
    for (list, field) in [("tunnels", "public_url"), ("endpoints", "url")] {
        for item in v.get(list).and_then(|l| l.as_array()).into_iter().flatten() {
            if let Some(url) = item.get(field).and_then(|u| u.as_str())
                && is_http_url(url)
            {
                urls.push(url.to_string());
            }
        }
    }
    let https = urls.iter().position(|u| u.starts_with("https://"));
    https
        .or((!urls.is_empty()).then_some(0))
        .map(|i| urls.swap_remove(i))
}

/// cloudflared's `GET /quicktunnel` answer (`{"hostname":"NAME.trycloudflare.com"}`; empty
/// until the quick tunnel is created): `https://NAME.trycloudflare.com`.
pub fn url_from_cloudflared_quicktunnel(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let host = v.get("hostname")?.as_str()?;
    let host = host.strip_prefix("https://").unwrap_or(host);
    valid_domain(host).then(|| format!("https://{host}"))
}

/// cloudflared's `GET /ready`: 200 with `readyConnections` > 0 once connected.
fn cloudflared_ready(status: u16, body: &[u8]) -> bool {
    status == 200
        && serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("readyConnections")?.as_u64())
            .is_some_and(|n| n > 0)
}

/// Asks the client's local server for the public URL (one request; `Ok(None)` while it is not
/// listening yet or has no URL yet). [`Discovery::Output`]: always `Ok(None)`.
pub async fn poll_url(d: &Discovery) -> Result<Option<String>, String> {
    match d {
        Discovery::Output => Ok(None),
        Discovery::Fixed(url) => Ok(Some(url.clone())),
        Discovery::NgrokApi(addr) => Ok(match get(*addr, "/api/tunnels").await? {
            Some((200, body)) => url_from_ngrok_api(&body),
            _ => None,
        }),
        Discovery::CloudflaredMetrics(addr) => Ok(match get(*addr, "/quicktunnel").await? {
            Some((200, body)) => url_from_cloudflared_quicktunnel(&body),
            _ => None,
        }),
        Discovery::CloudflaredReady { metrics, url } => Ok(match get(*metrics, "/ready").await? {
            Some((status, body)) if cloudflared_ready(status, &body) => Some(url.clone()),
            _ => None,
        }),
    }
}

/// One `GET` over HTTP/1.1 to a loopback server: the status and body, `None` when nothing
/// listens there yet.
async fn get(addr: SocketAddr, path: &str) -> Result<Option<(u16, Vec<u8>)>, String> {
    let exchange = async {
        let mut stream = match tokio::net::TcpStream::connect(addr).await {
            Ok(s) => s,
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => return Ok(None),
            Err(e) => return Err(format!("connect to {addr}: {e}")),
        };
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\n\
             Connection: close\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("GET http://{addr}{path}: {e}"))?;
        let mut response = Vec::new();
        let mut limited = (&mut stream).take(POLL_MAX as u64 + 1);
        limited
            .read_to_end(&mut response)
            .await
            .map_err(|e| format!("GET http://{addr}{path}: {e}"))?;
        if response.len() > POLL_MAX {
            return Err(format!("GET http://{addr}{path}: more than 64 KiB"));
        }
        parse_response(&response)
            .map(Some)
            .ok_or_else(|| format!("GET http://{addr}{path}: not an HTTP response"))
    };
    tokio::time::timeout(POLL_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("GET http://{addr}{path}: no answer within 2 s"))?
}

/// A whole HTTP/1.x response (the connection closed after it): status and body, the body
/// de-chunked when sent chunked.
fn parse_response(raw: &[u8]) -> Option<(u16, Vec<u8>)> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let body = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let mut parts = status_line.split(' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let status = parts.next()?.parse::<u16>().ok()?;
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        let (name, value) = line.split_once(':')?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("content-length") {
            length = value.parse::<usize>().ok();
        }
    }
    if chunked {
        return dechunk(body).map(|b| (status, b));
    }
    let body = match length {
        Some(n) => body.get(..n)?,
        None => body,
    };
    Some((status, body.to_vec()))
}

fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = body.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&body[..eol]).ok()?;
        let size_text = size_text.split(';').next()?.trim();
        let size = usize::from_str_radix(size_text, 16).ok()?;
        body = &body[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use serde_json::json;
    use std::os::unix::fs::PermissionsExt;

    fn target() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 8080))
    }

    fn ports(list: &[u16]) -> impl FnMut() -> std::io::Result<u16> + '_ {
        let mut i = 0;
        move || {
            i += 1;
            Ok(list[i - 1])
        }
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// A config whose ssh key and known_hosts files exist in `dir`.
    fn ssh_config(dir: &Path) -> TunnelsConfig {
        std::fs::write(
            dir.join("id"),
            b"-----BEGIN OPENSSH PRIVATE KEY-----\nkey\n",
        )
        .unwrap();
        std::fs::write(dir.join("known"), b"tunnel.example.com ssh-ed25519 AAAA\n").unwrap();
        let mut cfg = TunnelsConfig::default();
        cfg.ssh.host = "tunnel.example.com".into();
        cfg.ssh.user = "tun".into();
        cfg.ssh.port = 2222;
        cfg.ssh.identity_file = Some(dir.join("id"));
        cfg.ssh.known_hosts_file = Some(dir.join("known"));
        cfg
    }

    fn executable(dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn providers_have_stable_names() {
        for p in Provider::ALL {
            assert_eq!(Provider::parse(p.as_str()), Some(p));
            assert_eq!(serde_json::to_value(p).unwrap(), json!(p.as_str()));
        }
        assert_eq!(Provider::parse("Ngrok"), None);
        assert_eq!(Provider::parse("lt"), None);
    }

    #[test]
    fn options_are_checked_per_provider() {
        assert_eq!(
            options(Provider::Ssh, &serde_json::Value::Null).unwrap(),
            StartOptions::default()
        );
        assert_eq!(
            options(Provider::Ssh, &json!({"remote_port": 8022})).unwrap(),
            StartOptions {
                remote_port: Some(8022),
                ..Default::default()
            }
        );
        assert_eq!(
            options(Provider::Localtunnel, &json!({"subdomain": "my-host1"}))
                .unwrap()
                .subdomain
                .as_deref(),
            Some("my-host1")
        );
        assert_eq!(
            options(Provider::Cloudflared, &json!({"named": true}))
                .unwrap()
                .named,
            Some(true)
        );
        assert_eq!(
            options(Provider::Ngrok, &json!({"domain": "api.example.com"}))
                .unwrap()
                .domain
                .as_deref(),
            Some("api.example.com")
        );
        // Another provider's option is refused, naming it and its provider.
        let err = options(Provider::Ngrok, &json!({"subdomain": "abcd"})).unwrap_err();
        assert_eq!(
            err,
            ProviderError::BadOption(
                "`subdomain` is an option of localtunnel, not of ngrok".into()
            )
        );
        let err = options(Provider::Ssh, &json!({"named": false})).unwrap_err();
        assert!(
            err.to_string()
                .contains("`named` is an option of cloudflared"),
            "{err}"
        );
        // Unknown fields and wrong types are refused.
        let err = options(Provider::Ssh, &json!({"port": 1})).unwrap_err();
        assert!(err.to_string().contains("unknown field `port`"), "{err}");
        assert!(options(Provider::Ssh, &json!({"remote_port": 70000})).is_err());
        assert!(options(Provider::Ssh, &json!([1])).is_err());
        // localtunnel's server's subdomain rule.
        for good in ["abcd", "a1b2c3", "my-app", "x".repeat(63).as_str()] {
            assert!(valid_subdomain(good), "{good}");
        }
        for bad in [
            "abc",
            "ABCD",
            "-abcd",
            "abcd-",
            "ab-c",
            "a_bcd",
            "x".repeat(64).as_str(),
        ] {
            assert!(
                options(Provider::Localtunnel, &json!({ "subdomain": bad })).is_err(),
                "{bad}"
            );
        }
        for bad in ["", "a..b", "-a.com", "a b.com", "https://a.com"] {
            assert!(
                options(Provider::Ngrok, &json!({ "domain": bad })).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn locate_finds_the_binary_and_names_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let path_env = OsStr::new(bin.to_str().unwrap()).to_owned();
        let cfg = ssh_config(dir.path());

        // Not on the PATH: the package and the config key.
        let err = locate(Provider::Ssh, &cfg, &path_env).unwrap_err();
        assert!(err.contains("ssh is not on the PATH"), "{err}");
        assert!(err.contains("openssh-client"), "{err}");
        assert!(err.contains("[tunnels.ssh] path"), "{err}");
        let err = locate(Provider::Localtunnel, &cfg, &path_env).unwrap_err();
        assert!(err.contains("npm install -g localtunnel"), "{err}");

        let ssh = executable(&bin, "ssh");
        assert_eq!(
            locate(Provider::Ssh, &cfg, &path_env).unwrap(),
            ssh.canonicalize().unwrap()
        );

        // A file that is not executable is not a client.
        std::fs::write(bin.join("lt"), b"").unwrap();
        assert!(locate(Provider::Localtunnel, &cfg, &path_env).is_err());

        // Each ssh prerequisite, named by its key.
        let mut c = cfg.clone();
        c.ssh.host.clear();
        assert_eq!(
            locate(Provider::Ssh, &c, &path_env).unwrap_err(),
            "[tunnels.ssh] host is not set"
        );
        let mut c = cfg.clone();
        c.ssh.user.clear();
        assert_eq!(
            locate(Provider::Ssh, &c, &path_env).unwrap_err(),
            "[tunnels.ssh] user is not set"
        );
        let mut c = cfg.clone();
        c.ssh.host = "-oProxyCommand=x".into();
        assert!(
            locate(Provider::Ssh, &c, &path_env)
                .unwrap_err()
                .contains("not a valid host")
        );
        let mut c = cfg.clone();
        c.ssh.identity_file = None;
        assert_eq!(
            locate(Provider::Ssh, &c, &path_env).unwrap_err(),
            "[tunnels.ssh] identity-file is not set"
        );
        let mut c = cfg.clone();
        c.ssh.known_hosts_file = Some(dir.path().join("absent"));
        let err = locate(Provider::Ssh, &c, &path_env).unwrap_err();
        assert!(err.starts_with("[tunnels.ssh] known-hosts-file "), "{err}");
        assert!(err.contains("absent"), "{err}");

        // ngrok needs its authtoken file; cloudflared needs nothing for a quick tunnel.
        executable(&bin, "ngrok");
        executable(&bin, "cloudflared");
        assert_eq!(
            locate(Provider::Ngrok, &cfg, &path_env).unwrap_err(),
            "[tunnels.ngrok] authtoken-file is not set"
        );
        assert!(locate(Provider::Cloudflared, &cfg, &path_env).is_ok());

        // A configured path wins over the PATH, and must be executable.
        let mut c = cfg.clone();
        let elsewhere = executable(dir.path(), "cloudflared-2026");
        c.cloudflared.path = Some(elsewhere.clone());
        assert_eq!(
            locate(Provider::Cloudflared, &c, OsStr::new("")).unwrap(),
            elsewhere.canonicalize().unwrap()
        );
        c.cloudflared.path = Some(dir.path().join("id"));
        let err = locate(Provider::Cloudflared, &c, &path_env).unwrap_err();
        assert!(err.contains("[tunnels.cloudflared] path"), "{err}");
    }

    #[test]
    fn launch_ssh_with_a_port_the_server_picks() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = ssh_config(dir.path());
        let l = launch(
            Provider::Ssh,
            Path::new("/usr/bin/ssh"),
            &cfg,
            &StartOptions::default(),
            target(),
            &mut ports(&[]),
        )
        .unwrap();
        assert_eq!(
            l.argv,
            strings(&[
                "/usr/bin/ssh",
                "-N",
                "-T",
                "-F",
                "/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "ExitOnForwardFailure=yes",
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "UserKnownHostsFile=/work/known_hosts",
                "-o",
                "GlobalKnownHostsFile=/dev/null",
                "-o",
                "ServerAliveInterval=15",
                "-o",
                "ServerAliveCountMax=3",
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "IdentityFile=/work/id",
                "-p",
                "2222",
                "-R",
                "0:127.0.0.1:8080",
                "tun@tunnel.example.com",
            ])
        );
        assert_eq!(l.bind_dir, None);
        assert_eq!(
            l.files,
            vec![
                (
                    "id".to_string(),
                    b"-----BEGIN OPENSSH PRIVATE KEY-----\nkey\n".to_vec(),
                    true
                ),
                (
                    "known_hosts".to_string(),
                    b"tunnel.example.com ssh-ed25519 AAAA\n".to_vec(),
                    false
                ),
            ]
        );
        assert_eq!(l.connect_ports, Some(vec![53, 2222, 8080]));
        assert!(l.bind_ports.is_empty());
        assert_eq!(l.discovery, Discovery::Output);
        assert_eq!(
            l.env,
            vec![
                ("HOME".to_string(), "/work".to_string()),
                (
                    "PATH".to_string(),
                    "/usr/local/bin:/usr/bin:/bin".to_string()
                )
            ]
        );
    }

    #[test]
    fn launch_ssh_with_a_fixed_port_and_bind_address_asks_for_debug_lines() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = ssh_config(dir.path());
        cfg.ssh.remote_bind = "::".into();
        cfg.ssh.remote_port = 9000;
        let opts = options(Provider::Ssh, &json!({"remote_port": 8022})).unwrap();
        let l = launch(
            Provider::Ssh,
            Path::new("/usr/bin/ssh"),
            &cfg,
            &opts,
            target(),
            &mut ports(&[]),
        )
        .unwrap();
        assert_eq!(
            l.argv[l.argv.len() - 8..],
            strings(&[
                "IdentityFile=/work/id",
                "-o",
                "LogLevel=DEBUG1",
                "-p",
                "2222",
                "-R",
                "[::]:8022:127.0.0.1:8080",
                "tun@tunnel.example.com",
            ])
        );
        // An unreadable key is a reason, naming the key.
        cfg.ssh.identity_file = Some(dir.path().join("gone"));
        let err = launch(
            Provider::Ssh,
            Path::new("/usr/bin/ssh"),
            &cfg,
            &opts,
            target(),
            &mut ports(&[]),
        )
        .unwrap_err();
        assert!(
            err.to_string().starts_with("[tunnels.ssh] identity-file "),
            "{err}"
        );
    }

    #[test]
    fn launch_localtunnel() {
        let mut cfg = TunnelsConfig::default();
        cfg.localtunnel.host = "http://127.0.0.1:3000".into();
        let opts = options(Provider::Localtunnel, &json!({"subdomain": "myhost"})).unwrap();
        let l = launch(
            Provider::Localtunnel,
            Path::new("/usr/local/lib/node_modules/localtunnel/bin/lt.js"),
            &cfg,
            &opts,
            target(),
            &mut ports(&[]),
        )
        .unwrap();
        assert_eq!(
            l.argv,
            strings(&[
                "/usr/local/lib/node_modules/localtunnel/bin/lt.js",
                "--port",
                "8080",
                "--local-host",
                "127.0.0.1",
                "--host",
                "http://127.0.0.1:3000",
                "--subdomain",
                "myhost",
            ])
        );
        assert_eq!(l.bind_dir, None);
        assert_eq!(l.connect_ports, None);
        assert_eq!(l.discovery, Discovery::Output);
        assert!(l.files.is_empty());

        // Installed outside /usr: the package directory is bound (lt.js loads ../ files).
        let l = launch(
            Provider::Localtunnel,
            Path::new("/opt/node/lib/node_modules/localtunnel/bin/lt.js"),
            &cfg,
            &StartOptions::default(),
            target(),
            &mut ports(&[]),
        )
        .unwrap();
        assert_eq!(l.argv[0], "/tunnel-client/bin/lt.js");
        assert_eq!(
            l.bind_dir.as_deref(),
            Some(Path::new("/opt/node/lib/node_modules/localtunnel"))
        );
        assert_eq!(l.argv.len(), 7);
    }

    #[test]
    fn launch_cloudflared_quick_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = TunnelsConfig::default();
        let l = launch(
            Provider::Cloudflared,
            Path::new("/opt/cloudflared/cloudflared"),
            &cfg,
            &StartOptions::default(),
            target(),
            &mut ports(&[20241]),
        )
        .unwrap();
        assert_eq!(
            l.argv,
            strings(&[
                "/tunnel-client/cloudflared",
                "tunnel",
                "--no-autoupdate",
                "--metrics",
                "127.0.0.1:20241",
                "--url",
                "http://127.0.0.1:8080",
            ])
        );
        assert_eq!(l.bind_dir.as_deref(), Some(Path::new("/opt/cloudflared")));
        assert_eq!(l.connect_ports, Some(vec![53, 443, 853, 7844, 8080]));
        assert_eq!(l.bind_ports, vec![20241]);
        assert_eq!(
            l.discovery,
            Discovery::CloudflaredMetrics("127.0.0.1:20241".parse().unwrap())
        );
        assert_eq!(l.env.len(), 2);

        // Named: refused without its config, then run with the token in the environment.
        let named = options(Provider::Cloudflared, &json!({"named": true})).unwrap();
        let err = launch(
            Provider::Cloudflared,
            Path::new("/usr/bin/cloudflared"),
            &cfg,
            &named,
            target(),
            &mut ports(&[20242]),
        )
        .unwrap_err();
        assert_eq!(
            err,
            ProviderError::Unavailable(
                "a named tunnel needs [tunnels.cloudflared] token-file".into()
            )
        );
        std::fs::write(dir.path().join("token"), b"eyJhIjoiYiJ9\n").unwrap();
        cfg.cloudflared.token_file = Some(dir.path().join("token"));
        assert!(
            check(Provider::Cloudflared, &cfg, &named)
                .unwrap_err()
                .to_string()
                .contains("hostname")
        );
        cfg.cloudflared.hostname = "api.example.com".into();
        let l = launch(
            Provider::Cloudflared,
            Path::new("/usr/bin/cloudflared"),
            &cfg,
            &named,
            target(),
            &mut ports(&[20242]),
        )
        .unwrap();
        assert_eq!(
            l.argv,
            strings(&[
                "/usr/bin/cloudflared",
                "tunnel",
                "--no-autoupdate",
                "--metrics",
                "127.0.0.1:20242",
                "run",
                "--url",
                "http://127.0.0.1:8080",
            ])
        );
        assert_eq!(l.bind_dir, None);
        assert!(
            l.env
                .contains(&("TUNNEL_TOKEN".to_string(), "eyJhIjoiYiJ9".to_string()))
        );
        assert_eq!(
            l.discovery,
            Discovery::CloudflaredReady {
                metrics: "127.0.0.1:20242".parse().unwrap(),
                url: "https://api.example.com".into()
            }
        );
    }

    #[test]
    fn launch_ngrok() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = TunnelsConfig::default();
        std::fs::write(dir.path().join("authtoken"), b"2abc\"def\n").unwrap();
        cfg.ngrok.authtoken_file = Some(dir.path().join("authtoken"));
        let l = launch(
            Provider::Ngrok,
            Path::new("/usr/local/bin/ngrok"),
            &cfg,
            &StartOptions::default(),
            target(),
            &mut ports(&[4041]),
        )
        .unwrap();
        assert_eq!(
            l.argv,
            strings(&[
                "/usr/local/bin/ngrok",
                "http",
                "127.0.0.1:8080",
                "--config",
                "/work/ngrok.yml",
            ])
        );
        assert_eq!(
            l.files,
            vec![(
                "ngrok.yml".to_string(),
                b"version: \"3\"\nagent:\n  authtoken: \"2abc\\\"def\"\n  web_addr: \"127.0.0.1:4041\"\n  update_check: false\n  console_ui: false\n  log: stdout\n  log_format: json\n  log_level: info\n".to_vec(),
                true
            )]
        );
        assert_eq!(l.connect_ports, Some(vec![53, 443, 8080]));
        assert_eq!(l.bind_ports, vec![4041]);
        assert_eq!(
            l.discovery,
            Discovery::NgrokApi("127.0.0.1:4041".parse().unwrap())
        );

        // The start option's domain, else the config's.
        cfg.ngrok.domain = "fixed.ngrok.app".into();
        let l = launch(
            Provider::Ngrok,
            Path::new("/usr/local/bin/ngrok"),
            &cfg,
            &StartOptions::default(),
            target(),
            &mut ports(&[4041]),
        )
        .unwrap();
        assert_eq!(l.argv[5..], strings(&["--url", "https://fixed.ngrok.app"]));
        let opts = options(Provider::Ngrok, &json!({"domain": "other.example.com"})).unwrap();
        let l = launch(
            Provider::Ngrok,
            Path::new("/usr/local/bin/ngrok"),
            &cfg,
            &opts,
            target(),
            &mut ports(&[4041]),
        )
        .unwrap();
        assert_eq!(
            l.argv[5..],
            strings(&["--url", "https://other.example.com"])
        );

        // No free port: unavailable, saying why.
        let err = launch(
            Provider::Ngrok,
            Path::new("/usr/local/bin/ngrok"),
            &cfg,
            &opts,
            target(),
            &mut || Err(std::io::Error::other("none left")),
        )
        .unwrap_err();
        assert!(err.to_string().contains("none left"), "{err}");
    }
}

/// The format tests: URL discovery against samples of the clients' real output and API
/// answers, each taken from the client's source or documentation (cited above it).
#[cfg(test)]
mod format_tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use tokio::io::AsyncWriteExt;

    fn none() -> StartOptions {
        StartOptions::default()
    }

    fn ssh_cfg(public_url: &str, remote_port: u16) -> TunnelsConfig {
        let mut cfg = TunnelsConfig::default();
        cfg.ssh.host = "tunnel.example.com".into();
        cfg.ssh.public_url = public_url.into();
        cfg.ssh.remote_port = remote_port;
        cfg
    }

    // openssh/openssh-portable ssh.c, ssh_confirm_remote_forward, at commit
    // 0ef0f5a839831c213f24e3f2ae434765c607fb50:
    //   logit("Allocated port %u for remote forward to %s:%d", ...)
    // written to stderr by log.c's do_log as "%s\r\n" (no prefix at INFO level).
    const SSH_ALLOCATED: &str = "Allocated port 41273 for remote forward to 127.0.0.1:8080\r";
    // The same function at the same commit, at LogLevel=DEBUG1 (log.c prefixes "debug1: "):
    //   debug("remote forward %s for: listen %s%s%d, connect %s:%d", "success", ...)
    const SSH_SUCCESS_FIXED: &str =
        "debug1: remote forward success for: listen 8022, connect 127.0.0.1:8080\r";
    const SSH_SUCCESS_BOUND: &str =
        "debug1: remote forward success for: listen 0.0.0.0:8022, connect 127.0.0.1:8080\r";
    // With port 0 the success line names port 0: the Allocated line is the one to use.
    const SSH_SUCCESS_ZERO: &str =
        "debug1: remote forward success for: listen 0, connect 127.0.0.1:8080\r";
    // ssh.c at the same commit, a refused forward without ExitOnForwardFailure:
    //   logit("Warning: remote port forwarding failed for listen port %d", ...)
    const SSH_FAILED: &str = "Warning: remote port forwarding failed for listen port 8022\r";

    #[test]
    fn format_ssh_allocated_port() {
        let cfg = ssh_cfg("", 0);
        assert_eq!(
            url_from_line(Provider::Ssh, SSH_ALLOCATED, &cfg, &none()).as_deref(),
            Some("http://tunnel.example.com:41273")
        );
        let cfg = ssh_cfg("https://t{port}.example.net/", 0);
        assert_eq!(
            url_from_line(Provider::Ssh, SSH_ALLOCATED, &cfg, &none()).as_deref(),
            Some("https://t41273.example.net/")
        );
        assert_eq!(
            url_from_line(Provider::Ssh, SSH_SUCCESS_ZERO, &cfg, &none()),
            None
        );
        assert_eq!(
            url_from_line(Provider::Ssh, SSH_FAILED, &cfg, &none()),
            None
        );
    }

    #[test]
    fn format_ssh_fixed_port_success() {
        let cfg = ssh_cfg("https://tunnel.example.com", 8022);
        for line in [SSH_SUCCESS_FIXED, SSH_SUCCESS_BOUND] {
            assert_eq!(
                url_from_line(Provider::Ssh, line, &cfg, &none()).as_deref(),
                Some("https://tunnel.example.com"),
                "{line}"
            );
        }
        // The start option's port is the one expected.
        let opts = StartOptions {
            remote_port: Some(9000),
            ..Default::default()
        };
        assert_eq!(
            url_from_line(Provider::Ssh, SSH_SUCCESS_FIXED, &cfg, &opts),
            None
        );
        assert_eq!(
            url_from_line(Provider::Ssh, SSH_FAILED, &cfg, &none()),
            None
        );
        // Without a fixed port a success line says nothing.
        assert_eq!(
            url_from_line(Provider::Ssh, SSH_SUCCESS_FIXED, &ssh_cfg("", 0), &none()),
            None
        );
    }

    // localtunnel/localtunnel bin/lt.js at commit 1f47bd6ae7a6cb71974b50fe9188b3884aff5789
    // (2.0.2): console.log('your url is: %s', tunnel.url); the URL as localtunnel/server
    // server.js (commit 78c06f8fc43ce0eacea2aeb88f2d1d63afaf4e19) makes it:
    // schema + '://' + info.id + '.' + ctx.request.host, the id from human-readable-ids.
    const LT_URL: &str = "your url is: https://wise-deer-62.loca.lt";
    // The next line lt.js may print, for a caching proxy server.
    const LT_CACHED: &str = "your cachedUrl is: https://cache.example.com/wise-deer-62";

    #[test]
    fn format_localtunnel_url_line() {
        let cfg = TunnelsConfig::default();
        assert_eq!(
            url_from_line(Provider::Localtunnel, LT_URL, &cfg, &none()).as_deref(),
            Some("https://wise-deer-62.loca.lt")
        );
        assert_eq!(
            url_from_line(Provider::Localtunnel, LT_CACHED, &cfg, &none()),
            None
        );
        assert_eq!(
            url_from_line(Provider::Localtunnel, "your url is: ", &cfg, &none()),
            None
        );
    }

    // cloudflare/cloudflared at commit d1df7985bdf189c4caf34e290bafbf8f411e603b:
    // cmd/cloudflared/tunnel/quick_tunnel.go logs, through cliutil.LogTable (asciiBox with
    // padding 2, cmd/cloudflared/cliutil/logger.go), one Info line per box row; the console
    // writer (logger/create.go: zerolog.ConsoleWriter, NoColor off a terminal, RFC 3339 time)
    // prefixes "TIME INF ".
    const CF_QUICK_BOX: [&str; 4] = [
        "2026-08-20T10:00:01Z INF +--------------------------------------------------------------------------------------------+",
        "2026-08-20T10:00:01Z INF |  Your quick Tunnel has been created! Visit it at (it may take some time to be reachable):  |",
        "2026-08-20T10:00:01Z INF |  https://gadgets-richmond-fog-prepared.trycloudflare.com                                   |",
        "2026-08-20T10:00:01Z INF +--------------------------------------------------------------------------------------------+",
    ];
    // quick_tunnel.go, same commit: the lines before the box, and its failure (which names the
    // quick-tunnel service's own URL: not the tunnel's).
    const CF_QUICK_OTHER: [&str; 3] = [
        "2026-08-20T10:00:00Z INF Requesting new quick Tunnel on trycloudflare.com...",
        "2026-08-20T10:00:00Z INF Thank you for trying Cloudflare Tunnel. Doing so, without a Cloudflare account, is a quick way to experiment and try it out. However, be aware that these account-less Tunnels have no uptime guarantee, are subject to the Cloudflare Online Services Terms of Use (https://www.cloudflare.com/website-terms/), and Cloudflare reserves the right to investigate your use of Tunnels for violations of such terms. If you intend to use Tunnels in production you should use a pre-created named tunnel by following: https://developers.cloudflare.com/cloudflare-one/connections/connect-apps",
        "2026-08-20T10:00:00Z ERR failed to request quick Tunnel: Post \"https://api.trycloudflare.com/tunnel\": dial tcp: lookup api.trycloudflare.com: no such host",
    ];
    // connection/observer.go logConnected, same commit: Msg("Registered tunnel connection")
    // with fields connIndex, connection, event, ip, location, protocol (the console writer
    // sorts them).
    const CF_REGISTERED: &str = "2026-08-20T10:00:02Z INF Registered tunnel connection connIndex=0 connection=4f1c7c2e-5d8a-4b53-9d71-0c3c8e2a1f10 event=0 ip=198.41.200.13 location=ams08 protocol=quic";

    #[test]
    fn format_cloudflared_quick_tunnel_banner() {
        let cfg = TunnelsConfig::default();
        let found: Vec<_> = CF_QUICK_BOX
            .iter()
            .chain(CF_QUICK_OTHER.iter())
            .chain([CF_REGISTERED].iter())
            .filter_map(|l| url_from_line(Provider::Cloudflared, l, &cfg, &none()))
            .collect();
        assert_eq!(
            found,
            ["https://gadgets-richmond-fog-prepared.trycloudflare.com"]
        );
    }

    #[test]
    fn format_cloudflared_named_registered_connection() {
        let mut cfg = TunnelsConfig::default();
        cfg.cloudflared.hostname = "api.example.com".into();
        let named = StartOptions {
            named: Some(true),
            ..Default::default()
        };
        assert_eq!(
            url_from_line(Provider::Cloudflared, CF_REGISTERED, &cfg, &named).as_deref(),
            Some("https://api.example.com")
        );
        for line in CF_QUICK_OTHER {
            assert_eq!(
                url_from_line(Provider::Cloudflared, line, &cfg, &named),
                None
            );
        }
        // A quick tunnel's banner is not a named tunnel's URL.
        assert_eq!(
            url_from_line(Provider::Cloudflared, CF_QUICK_BOX[2], &cfg, &named),
            None
        );
    }

    // metrics/metrics.go, same commit:
    //   fmt.Fprintf(w, `{"hostname":"%s"}`, config.QuickTunnelHostname)
    // (the hostname as the quick-tunnel service returned it; empty for a named tunnel).
    const CF_QUICKTUNNEL: &str =
        r#"{"hostname":"gadgets-richmond-fog-prepared.trycloudflare.com"}"#;
    const CF_QUICKTUNNEL_EMPTY: &str = r#"{"hostname":""}"#;
    // metrics/readiness.go, same commit: json.Marshal of {status, readyConnections,
    // connectorId}, 200 with connections, else 503.
    const CF_READY: &str = r#"{"status":200,"readyConnections":1,"connectorId":"0b0e1e50-8a44-4c33-9f0d-1b8a4c1c5b6e"}"#;
    const CF_NOT_READY: &str = r#"{"status":503,"readyConnections":0,"connectorId":"0b0e1e50-8a44-4c33-9f0d-1b8a4c1c5b6e"}"#;

    #[test]
    fn format_cloudflared_metrics_quicktunnel_and_ready() {
        assert_eq!(
            url_from_cloudflared_quicktunnel(CF_QUICKTUNNEL.as_bytes()).as_deref(),
            Some("https://gadgets-richmond-fog-prepared.trycloudflare.com")
        );
        assert_eq!(
            url_from_cloudflared_quicktunnel(CF_QUICKTUNNEL_EMPTY.as_bytes()),
            None
        );
        assert_eq!(url_from_cloudflared_quicktunnel(b"OK\n"), None);
        assert!(cloudflared_ready(200, CF_READY.as_bytes()));
        assert!(!cloudflared_ready(503, CF_NOT_READY.as_bytes()));
    }

    // ngrok/ngrok-docs agent/api.mdx at commit 56a5f9960f4e7c7e134fbc0412f74b51b2df5eca,
    // "List tunnels", example response of GET /api/tunnels (verbatim).
    const NGROK_TUNNELS: &str = r#"{
    "tunnels": [
        {
            "name": "command_line",
            "uri": "/api/tunnels/command_line",
            "public_url": "https://d95211d2.ngrok.app",
            "proto": "https",
            "config": {
                "addr": "localhost:80",
                "inspect": true
            },
            "metrics": {
                "conns": {
                    "count": 0,
                    "gauge": 0,
                    "rate1": 0,
                    "rate5": 0,
                    "rate15": 0,
                    "p50": 0,
                    "p90": 0,
                    "p95": 0,
                    "p99": 0
                },
                "http": {
                    "count": 0,
                    "rate1": 0,
                    "rate5": 0,
                    "rate15": 0,
                    "p50": 0,
                    "p90": 0,
                    "p95": 0,
                    "p99": 0
                }
            }
        }
    ],
    "uri": "/api/tunnels"
}"#;
    // The same file, "List endpoints", example response of GET /api/endpoints (verbatim).
    const NGROK_ENDPOINTS: &str = r#"{
  "endpoints": [
    {
      "name": "command_line",
      "uri": "/api/endpoints/command_line",
      "url": "https://871e40f2d4c2.ngrok.paid.lan",
      "upstream": {
        "url": "http://localhost:8000",
        "protocol": "https"
      },
      "inspect": true,
      "traffic_policy": "on_http_request:\n - actions:\n - type: custom-response\n config:\n status_code: 200\n body: Hello, World!\n",
      "pooling_enabled": true
    }
  ]
}"#;

    #[test]
    fn format_ngrok_agent_api() {
        assert_eq!(
            url_from_ngrok_api(NGROK_TUNNELS.as_bytes()).as_deref(),
            Some("https://d95211d2.ngrok.app")
        );
        assert_eq!(
            url_from_ngrok_api(NGROK_ENDPOINTS.as_bytes()).as_deref(),
            Some("https://871e40f2d4c2.ngrok.paid.lan")
        );
        // Before the tunnel starts the list is empty; https is preferred over http.
        assert_eq!(
            url_from_ngrok_api(br#"{"tunnels":[],"uri":"/api/tunnels"}"#),
            None
        );
        let both = br#"{"tunnels":[{"public_url":"http://a.ngrok.app"},{"public_url":"https://a.ngrok.app"}]}"#;
        assert_eq!(
            url_from_ngrok_api(both).as_deref(),
            Some("https://a.ngrok.app")
        );
    }

    // ngrok's agent is not open source and its docs show no log record: this one is quoted
    // from alexdlaird/pyngrok docs/troubleshooting.rst at commit
    // 8604c65b12b2cd65b2d3fb23738b158c142f07b6 (pyngrok runs the agent with logfmt records on
    // stdout and prints them after its own prefix, kept here; `<pub_sub>` is in the source).
    const NGROK_LOGFMT: &str = "2023-09-14 08:33:25,594 - pyngrok.process.ngrok - INFO - t=2023-09-14T08:33:25-0500 lvl=info msg=\"started tunnel\" obj=tunnels name=http-80-7ce9805f-b438-48d0-92ab-ac305ba14869 addr=http://localhost:80 url=https://<pub_sub>.ngrok.app";
    // The same record with `log_format: json` (what launch() configures): the same keys as a
    // JSON object, one per line (ngrok-docs agent/config/v3.mdx: "newline-separated JSON
    // objects"). Constructed from the record above, not captured.
    const NGROK_JSON: &str = r#"{"addr":"http://localhost:80","lvl":"info","msg":"started tunnel","name":"http-80-7ce9805f-b438-48d0-92ab-ac305ba14869","obj":"tunnels","t":"2023-09-14T08:33:25-0500","url":"https://d95211d2.ngrok.app"}"#;

    #[test]
    fn format_ngrok_started_tunnel_log_record() {
        let cfg = TunnelsConfig::default();
        assert_eq!(
            url_from_line(Provider::Ngrok, NGROK_LOGFMT, &cfg, &none()).as_deref(),
            Some("https://<pub_sub>.ngrok.app")
        );
        assert_eq!(
            url_from_line(Provider::Ngrok, NGROK_JSON, &cfg, &none()).as_deref(),
            Some("https://d95211d2.ngrok.app")
        );
        for other in [
            r#"{"lvl":"info","msg":"starting web service","obj":"web","addr":"127.0.0.1:4040","url":"http://127.0.0.1:4040"}"#,
            r#"t=2023-09-14T08:33:25-0500 lvl=info msg="starting web service" obj=web addr=127.0.0.1:4040 url=http://127.0.0.1:4040"#,
        ] {
            assert_eq!(
                url_from_line(Provider::Ngrok, other, &cfg, &none()),
                None,
                "{other}"
            );
        }
    }

    /// Serves `response` once per connection on a loopback port.
    async fn serve(response: Vec<u8>) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(&response).await;
            }
        });
        addr
    }

    fn chunked(status: &str, body: &str) -> Vec<u8> {
        let (a, b) = body.split_at(body.len() / 2);
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
            a.len(),
            b.len()
        )
        .into_bytes()
    }

    fn plain(status: &str, body: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    #[tokio::test]
    async fn format_poll_url_reads_the_clients_local_apis() {
        let ngrok = serve(chunked("200 OK", NGROK_TUNNELS)).await;
        assert_eq!(
            poll_url(&Discovery::NgrokApi(ngrok))
                .await
                .unwrap()
                .as_deref(),
            Some("https://d95211d2.ngrok.app")
        );
        let quick = serve(plain("200 OK", CF_QUICKTUNNEL)).await;
        assert_eq!(
            poll_url(&Discovery::CloudflaredMetrics(quick))
                .await
                .unwrap()
                .as_deref(),
            Some("https://gadgets-richmond-fog-prepared.trycloudflare.com")
        );
        let ready = serve(plain("200 OK", CF_READY)).await;
        let d = Discovery::CloudflaredReady {
            metrics: ready,
            url: "https://api.example.com".into(),
        };
        assert_eq!(
            poll_url(&d).await.unwrap().as_deref(),
            Some("https://api.example.com")
        );
        let not_ready = serve(plain("503 Service Unavailable", CF_NOT_READY)).await;
        let d = Discovery::CloudflaredReady {
            metrics: not_ready,
            url: "https://api.example.com".into(),
        };
        assert_eq!(poll_url(&d).await.unwrap(), None);

        // Nothing listening yet: not there yet, no error.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        assert_eq!(poll_url(&Discovery::NgrokApi(closed)).await.unwrap(), None);
        assert_eq!(poll_url(&Discovery::Output).await.unwrap(), None);

        // Too big, or not HTTP: an error.
        let big = serve(plain("200 OK", &"x".repeat(70 * 1024))).await;
        assert!(
            poll_url(&Discovery::NgrokApi(big))
                .await
                .unwrap_err()
                .contains("64 KiB")
        );
        let junk = serve(b"SSH-2.0-OpenSSH_9.2\r\n".to_vec()).await;
        assert!(poll_url(&Discovery::NgrokApi(junk)).await.is_err());
    }
}
