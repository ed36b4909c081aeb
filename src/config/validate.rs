//! Config validation: what the types cannot say (non-zero sizes, ordered limits, names,
//! absolute paths), one function per section. The first value refused is reported, by its
//! key; sections are checked in a fixed order, each in the order of its keys' checks.

use std::path::Path;
use std::time::Duration;

use super::{
    AlertsConfig, AuthConfig, BackupConfig, COLLECTORS, Config, ConfigError, ExecConfig,
    FilesConfig, KvConfig, LogConfig, MetricsConfig, ProgramsConfig, RateLimitConfig,
    SandboxConfig, ServerConfig, StorageConfig, TerminalsConfig, TunnelsConfig,
};

/// A refused value: its key and what is wrong with it (the file's path is added by
/// [`Config::validate`]).
type Refusal = (&'static str, String);

/// The outcome of checking one section.
type Checked = Result<(), Refusal>;

fn invalid(key: &'static str, message: &str) -> Refusal {
    (key, message.to_owned())
}

impl Config {
    /// Checks every section; `path` is only used in the error.
    pub(super) fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        self.check_sections()
            .map_err(|(key, message)| ConfigError::Invalid {
                path: path.to_owned(),
                key,
                message,
            })
    }

    fn check_sections(&self) -> Checked {
        server(&self.server)?;
        rate_limit(&self.rate_limit)?;
        auth(&self.auth)?;
        exec(&self.exec)?;
        sandbox(&self.sandbox)?;
        files(&self.files)?;
        kv(&self.kv)?;
        storage(&self.storage)?;
        programs(&self.programs)?;
        metrics(&self.metrics)?;
        alerts(&self.alerts)?;
        state_dir(self.state_dir.as_deref())?;
        backup(&self.backup)?;
        terminals(&self.terminals)?;
        tunnels(&self.tunnels)?;
        log(&self.log)
    }
}

/// `[tunnels]`.
fn tunnels(t: &TunnelsConfig) -> Checked {
    if !t.listen.ip().is_loopback() {
        return Err(invalid(
            "tunnels.listen",
            "must be a loopback address (the clients run on this host; nothing else should reach the public listener directly)",
        ));
    }
    if t.restart_delay.0.is_zero() || t.restart_delay.0 > t.max_restart_delay.0 {
        return Err(invalid(
            "tunnels.restart-delay",
            "must be longer than zero and at most tunnels.max-restart-delay",
        ));
    }
    if t.max_failures == 0 {
        return Err(invalid("tunnels.max-failures", "must be at least 1"));
    }
    if t.url_timeout.0.is_zero() {
        return Err(invalid("tunnels.url-timeout", "must be longer than zero"));
    }
    if t.memory.0 < 64 << 20 {
        return Err(invalid("tunnels.memory", "must be at least 64MiB"));
    }
    let paths: [(&'static str, Option<&Path>); 8] = [
        ("tunnels.ssh.path", t.ssh.path.as_deref()),
        ("tunnels.ssh.identity-file", t.ssh.identity_file.as_deref()),
        (
            "tunnels.ssh.known-hosts-file",
            t.ssh.known_hosts_file.as_deref(),
        ),
        ("tunnels.localtunnel.path", t.localtunnel.path.as_deref()),
        ("tunnels.cloudflared.path", t.cloudflared.path.as_deref()),
        (
            "tunnels.cloudflared.token-file",
            t.cloudflared.token_file.as_deref(),
        ),
        ("tunnels.ngrok.path", t.ngrok.path.as_deref()),
        (
            "tunnels.ngrok.authtoken-file",
            t.ngrok.authtoken_file.as_deref(),
        ),
    ];
    for (key, path) in paths {
        if path.is_some_and(|p| !p.is_absolute()) {
            return Err(invalid(key, "must be an absolute path"));
        }
    }
    let hostlike = |s: &str| {
        s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '[' | ']'))
    };
    if !hostlike(&t.ssh.host) || t.ssh.host.starts_with('-') {
        return Err(invalid(
            "tunnels.ssh.host",
            "must be a host name or address (letters, digits, '.', '-', ':')",
        ));
    }
    if !t
        .ssh
        .user
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        || t.ssh.user.starts_with('-')
    {
        return Err(invalid(
            "tunnels.ssh.user",
            "must be a user name (letters, digits, '.', '-', '_')",
        ));
    }
    if !hostlike(&t.ssh.remote_bind) || t.ssh.remote_bind.starts_with('-') {
        return Err(invalid("tunnels.ssh.remote-bind", "must be an address"));
    }
    if t.ssh.port == 0 {
        return Err(invalid("tunnels.ssh.port", "must be a port (1-65535)"));
    }
    for (key, url) in [
        ("tunnels.ssh.public-url", t.ssh.public_url.as_str()),
        ("tunnels.localtunnel.host", t.localtunnel.host.as_str()),
    ] {
        if !url.is_empty() && !url.starts_with("http://") && !url.starts_with("https://") {
            return Err(invalid(key, "must be an http:// or https:// URL"));
        }
    }
    for (key, name) in [
        (
            "tunnels.cloudflared.hostname",
            t.cloudflared.hostname.as_str(),
        ),
        ("tunnels.ngrok.domain", t.ngrok.domain.as_str()),
    ] {
        if !hostlike(name) || name.starts_with('-') || name.contains(':') {
            return Err(invalid(key, "must be a host name"));
        }
    }
    Ok(())
}

/// `[terminals]`.
fn terminals(t: &TerminalsConfig) -> Checked {
    if t.max_total == 0 {
        return Err(invalid("terminals.max-total", "must be at least 1"));
    }
    if t.max_per_token == 0 || t.max_per_token > t.max_total {
        return Err(invalid(
            "terminals.max-per-token",
            "must be between 1 and terminals.max-total",
        ));
    }
    if !(4096..=64 << 20).contains(&t.scrollback_bytes.bytes()) {
        return Err(invalid(
            "terminals.scrollback-bytes",
            "must be between 4KiB and 64MiB",
        ));
    }
    if t.idle_timeout.get().is_zero() || t.idle_timeout > t.max_idle_timeout {
        return Err(invalid(
            "terminals.idle-timeout",
            "must be longer than zero and at most terminals.max-idle-timeout",
        ));
    }
    if t.lifetime.get().is_zero() || t.lifetime > t.max_lifetime {
        return Err(invalid(
            "terminals.lifetime",
            "must be longer than zero and at most terminals.max-lifetime",
        ));
    }
    if t.input_rate.bytes() < 64 {
        return Err(invalid("terminals.input-rate", "must be at least 64B"));
    }
    if t.output_rate.bytes() < 1024 {
        return Err(invalid("terminals.output-rate", "must be at least 1KiB"));
    }
    if !(64..=16 << 20).contains(&t.max_message_size.bytes()) {
        return Err(invalid(
            "terminals.max-message-size",
            "must be between 64B and 16MiB",
        ));
    }
    if t.recording_max_bytes.bytes() < 1024 {
        return Err(invalid(
            "terminals.recording-max-bytes",
            "must be at least 1KiB",
        ));
    }
    Ok(())
}

/// `[server]`.
fn server(server: &ServerConfig) -> Checked {
    if server.listen.is_empty() {
        return Err(invalid("server.listen", "at least one address is needed"));
    }
    if server.max_connections == 0 {
        return Err(invalid("server.max-connections", "must be at least 1"));
    }
    if server.admin_max_connections == 0 {
        return Err(invalid(
            "server.admin-max-connections",
            "must be at least 1",
        ));
    }
    if server.header_timeout.get().is_zero() {
        return Err(invalid("server.header-timeout", "must be longer than zero"));
    }
    if server.write_timeout.get().is_zero() {
        return Err(invalid("server.write-timeout", "must be longer than zero"));
    }
    if server.request_timeout.get().is_zero() {
        return Err(invalid(
            "server.request-timeout",
            "must be longer than zero",
        ));
    }
    if server.idle_exit_after.is_some_and(|d| d.get().is_zero()) {
        return Err(invalid(
            "server.idle-exit-after",
            "must be longer than zero (leave it out to disable)",
        ));
    }
    if !server.admin_socket.is_absolute() {
        return Err(invalid("server.admin-socket", "must be an absolute path"));
    }
    Ok(())
}

/// `[rate-limit]`.
fn rate_limit(rl: &RateLimitConfig) -> Checked {
    for (key, v) in [
        ("rate-limit.read-per-second", rl.read_per_second),
        ("rate-limit.read-burst", rl.read_burst),
        ("rate-limit.write-per-second", rl.write_per_second),
        ("rate-limit.write-burst", rl.write_burst),
        ("rate-limit.upload-per-second", rl.upload_per_second),
        ("rate-limit.upload-burst", rl.upload_burst),
        ("rate-limit.exec-per-second", rl.exec_per_second),
        ("rate-limit.exec-burst", rl.exec_burst),
        (
            "rate-limit.failed-auth-per-minute",
            rl.failed_auth_per_minute,
        ),
        ("rate-limit.failed-auth-burst", rl.failed_auth_burst),
    ] {
        if v == 0 {
            return Err(invalid(
                key,
                "must be at least 1 (set rate-limit.enabled = false to turn limits off)",
            ));
        }
    }
    Ok(())
}

/// `[auth]`.
fn auth(auth: &AuthConfig) -> Checked {
    if auth.session_idle_timeout.get().is_zero() || auth.session_max_age.get().is_zero() {
        return Err(invalid(
            "auth.session-idle-timeout",
            "session timeouts must be longer than zero",
        ));
    }
    let ttl = auth.login_link_ttl.get();
    if ttl < Duration::from_secs(10) || ttl > Duration::from_secs(3600) {
        return Err(invalid(
            "auth.login-link-ttl",
            "must be between 10s and 1h (a login link is for logging in now)",
        ));
    }
    for origin in &auth.cors_origins {
        let ok = (origin.starts_with("http://") || origin.starts_with("https://"))
            && !origin
                .trim_end_matches('/')
                .contains(|c: char| c.is_whitespace())
            && origin.matches('/').count() == 2;
        if !ok {
            return Err(invalid(
                "auth.cors-origins",
                &format!("{origin:?} is not an origin like https://example.com"),
            ));
        }
    }
    Ok(())
}

/// `[exec]`.
fn exec(exec: &ExecConfig) -> Checked {
    if exec.max_concurrent == 0 {
        return Err(invalid("exec.max-concurrent", "must be at least 1"));
    }
    if exec.default_timeout > exec.max_timeout || exec.default_timeout.get().is_zero() {
        return Err(invalid(
            "exec.default-timeout",
            "must be longer than zero and at most exec.max-timeout",
        ));
    }
    if exec.default_output_limit > exec.max_output_limit {
        return Err(invalid(
            "exec.default-output-limit",
            "must be at most exec.max-output-limit",
        ));
    }
    let argv = exec.history_max_argv_size.bytes();
    if !(256..=1 << 20).contains(&argv) {
        return Err(invalid(
            "exec.history-max-argv-size",
            "must be between 256B and 1MiB",
        ));
    }
    if exec.max_inline_files > 10_000 {
        return Err(invalid("exec.max-inline-files", "must be at most 10000"));
    }
    if exec.max_inline_bytes.bytes() > 64 << 20 {
        return Err(invalid(
            "exec.max-inline-bytes",
            "must be at most 64MiB (inline files travel in the request body and the job's policy)",
        ));
    }
    if exec.max_output_files == 0 || exec.max_output_files > 1_000_000 {
        return Err(invalid(
            "exec.max-output-files",
            "must be between 1 and 1000000",
        ));
    }
    if exec.max_mounts > 64 {
        return Err(invalid("exec.max-mounts", "must be at most 64"));
    }
    // Kept in one database row per execution, read whole when it is shown.
    if exec.keep_output_size.bytes() > 64 << 20 {
        return Err(invalid("exec.keep-output-size", "must be at most 64MiB"));
    }
    Ok(())
}

/// `[sandbox]` and its profiles.
fn sandbox(sandbox: &SandboxConfig) -> Checked {
    if !sandbox.profiles.contains_key("default") {
        return Err(invalid(
            "sandbox.profiles",
            "a profile named \"default\" is needed",
        ));
    }
    for (name, p) in &sandbox.profiles {
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(invalid(
                "sandbox.profiles",
                &format!("profile name {name:?}: letters, digits, - and _ only"),
            ));
        }
        if p.processes == 0
            || p.open_files < 16
            || p.cpu_time.get().as_secs() == 0
            || p.memory.bytes() < (16 << 20)
        {
            return Err(invalid(
                "sandbox.profiles",
                &format!("profile {name:?}: limits too small to start a program"),
            ));
        }
        if !p.net_allow.is_empty() && !p.network {
            return Err(invalid(
                "sandbox.profiles",
                &format!("profile {name:?}: net-allow needs network = true"),
            ));
        }
        if let Some(c) = p.net_allow.iter().find(|c| {
            crate::jobs::sandbox::Cidr::new([127, 0, 0, 0], 8).contains(c)
                || crate::jobs::sandbox::Cidr::new([10, 0, 2, 0], 24).contains(c)
        }) {
            return Err(invalid(
                "sandbox.profiles",
                &format!(
                    "profile {name:?}: net-allow {c} lies inside the job's own loopback or slirp4netns network (127.0.0.0/8, 10.0.2.0/24)"
                ),
            ));
        }
    }
    for name in sandbox.address_space_headroom.keys() {
        if name.is_empty() || name.contains('/') || name.contains('\0') {
            return Err(invalid(
                "sandbox.address-space-headroom",
                &format!("{name:?}: a program's file name, without /"),
            ));
        }
    }
    Ok(())
}

/// `[files]`.
fn files(files: &FilesConfig) -> Checked {
    if files.max_file_size.bytes() == 0 {
        return Err(invalid("files.max-file-size", "must be larger than zero"));
    }
    if files.max_file_size > files.max_total_size {
        return Err(invalid(
            "files.max-file-size",
            "must be at most files.max-total-size",
        ));
    }
    if files.max_files == 0 {
        return Err(invalid("files.max-files", "must be at least 1"));
    }
    if files.upload_idle_timeout.get().is_zero() {
        return Err(invalid(
            "files.upload-idle-timeout",
            "must be longer than zero",
        ));
    }
    Ok(())
}

/// `[kv]`.
fn kv(kv: &KvConfig) -> Checked {
    if kv.max_keys == 0 {
        return Err(invalid("kv.max-keys", "must be at least 1"));
    }
    if kv.max_total_size < kv.max_value_size {
        return Err(invalid(
            "kv.max-total-size",
            "must be at least kv.max-value-size",
        ));
    }
    if kv.max_value_size.bytes() == 0 || kv.max_value_size.bytes() > 64 << 20 {
        return Err(invalid("kv.max-value-size", "must be between 1B and 64MiB"));
    }
    if kv.max_batch_ops == 0 || kv.max_batch_ops > 100_000 {
        return Err(invalid("kv.max-batch-ops", "must be between 1 and 100000"));
    }
    if kv.history_window.get().is_zero() {
        return Err(invalid("kv.history-window", "must be longer than zero"));
    }
    if kv.history_max_changes == 0 {
        return Err(invalid("kv.history-max-changes", "must be at least 1"));
    }
    if kv.sweep_interval.get() < Duration::from_millis(10) {
        return Err(invalid("kv.sweep-interval", "must be at least 10ms"));
    }
    if kv.max_watches_per_token == 0 {
        return Err(invalid("kv.max-watches-per-token", "must be at least 1"));
    }
    if kv.max_watches < kv.max_watches_per_token {
        return Err(invalid(
            "kv.max-watches",
            "must be at least kv.max-watches-per-token",
        ));
    }
    Ok(())
}

/// `[storage]`.
fn storage(storage: &StorageConfig) -> Checked {
    if storage.db_readers == 0 || storage.db_readers > 64 {
        return Err(invalid("storage.db-readers", "must be between 1 and 64"));
    }
    Ok(())
}

/// `[programs]`.
fn programs(pr: &ProgramsConfig) -> Checked {
    if pr.max_upload_size.bytes() == 0 {
        return Err(invalid("programs.max-upload-size", "must be above zero"));
    }
    if pr.max_files == 0 || pr.max_files > 1_000_000 {
        return Err(invalid(
            "programs.max-files",
            "must be between 1 and 1000000",
        ));
    }
    if pr.max_unpacked_size.bytes() == 0 {
        return Err(invalid("programs.max-unpacked-size", "must be above zero"));
    }
    if pr.max_ratio < 2 {
        return Err(invalid("programs.max-ratio", "must be at least 2"));
    }
    if pr.max_name_length < 16 || pr.max_name_length > 4096 {
        return Err(invalid(
            "programs.max-name-length",
            "must be between 16 and 4096",
        ));
    }
    if pr.max_depth == 0 || pr.max_depth > 256 {
        return Err(invalid("programs.max-depth", "must be between 1 and 256"));
    }
    for (ext, interp) in &pr.runtimes {
        let ext_ok = !ext.is_empty() && ext.bytes().all(|b| b.is_ascii_alphanumeric());
        let interp_ok = !interp.is_empty()
            && !interp.contains(char::is_whitespace)
            && (interp.starts_with('/') || !interp.contains('/'));
        if !ext_ok || !interp_ok {
            return Err(invalid(
                "programs.runtimes",
                "extensions are letters and digits; interpreters a command name or an absolute path",
            ));
        }
    }
    Ok(())
}

/// `[metrics]`.
fn metrics(m: &MetricsConfig) -> Checked {
    if m.interval.get() < Duration::from_millis(100) || m.interval.get() > Duration::from_secs(3600)
    {
        return Err(invalid("metrics.interval", "must be between 100ms and 1h"));
    }
    if m.collector_timeout.get().is_zero() {
        return Err(invalid(
            "metrics.collector-timeout",
            "must be longer than zero",
        ));
    }
    if let Some(name) = &m.simulate_hang
        && !COLLECTORS.contains(&name.as_str())
    {
        return Err(invalid(
            "metrics.simulate-hang",
            &format!(
                "{name:?} is not a collector; collectors: {}",
                COLLECTORS.join(", ")
            ),
        ));
    }
    Ok(())
}

/// `[alerts]`.
fn alerts(a: &AlertsConfig) -> Checked {
    for (key, v) in [
        ("alerts.disk-used-percent", a.disk_used_percent),
        (
            "alerts.memory-available-percent",
            a.memory_available_percent,
        ),
    ] {
        if !(0.0..=100.0).contains(&v) {
            return Err(invalid(key, "must be a percentage between 0 and 100"));
        }
    }
    for (key, v) in [
        ("alerts.load-per-cpu", a.load_per_cpu),
        (
            "alerts.failed-executions-per-minute",
            a.failed_executions_per_minute,
        ),
    ] {
        if !v.is_finite() || v < 0.0 {
            return Err(invalid(key, "must be a number of at least 0"));
        }
    }
    if a.failed_executions_window.get() < Duration::from_secs(1) {
        return Err(invalid(
            "alerts.failed-executions-window",
            "must be at least 1s",
        ));
    }
    Ok(())
}

/// The top-level `state-dir`.
fn state_dir(state_dir: Option<&Path>) -> Checked {
    if let Some(dir) = state_dir
        && !dir.is_absolute()
    {
        return Err(invalid("state-dir", "must be an absolute path"));
    }
    Ok(())
}

/// `[backup]`.
fn backup(backup: &BackupConfig) -> Checked {
    if let Some(dir) = &backup.dir
        && !dir.is_absolute()
    {
        return Err(invalid("backup.dir", "must be an absolute path"));
    }
    if backup.compression_level > 9 {
        return Err(invalid(
            "backup.compression-level",
            "must be between 0 and 9",
        ));
    }
    if backup.keep_last == 0 {
        return Err(invalid("backup.keep-last", "must be at least 1"));
    }
    Ok(())
}

/// `[log]`.
fn log(log: &LogConfig) -> Checked {
    super::parse_log_filter(&log.level)
        .map_err(|e| invalid("log.level", &format!("not a valid filter: {e}")))?;
    Ok(())
}
