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
//!   `/work`; its URL from the agent API's `GET /api/tunnels` (ngrok docs, agent/api).

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
