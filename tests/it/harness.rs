//! Starts the real binary the way systemd does: a pre-bound TCP socket and a Unix socket
//! passed as fds 3 and 4 (LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES), a NOTIFY_SOCKET datagram
//! socket the test reads, stderr captured as JSON log lines.

use std::fs::File;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::http::{self, Response, Stream, Target};

pub const BIN: &str = env!("CARGO_BIN_EXE_localhostd");

pub struct Daemon {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub tcp: Target,
    pub unix: Target,
    pub config_path: PathBuf,
    notify: UnixDatagram,
    /// Every notify message received so far, in order.
    pub notes: Vec<String>,
    // The test keeps its copies of the listening sockets, as systemd does.
    _tcp_listener: Option<TcpListener>,
    _unix_listener: Option<UnixListener>,
}

pub struct Options {
    /// TOML appended after `state-dir = …` (may open sections).
    pub config: String,
    /// Pass sockets as systemd would (else the daemon binds `server.listen` itself).
    pub activated: bool,
    pub env: Vec<(String, String)>,
    /// Wait for READY=1 before returning.
    pub wait_ready: bool,
    /// Use this directory instead of a new one (to share a state dir).
    pub dir: Option<tempfile::TempDir>,
    /// Run the daemon as this uid/gid (the test must be root); its directory is chowned.
    pub user: Option<(u32, u32)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            config: String::new(),
            activated: true,
            env: Vec::new(),
            wait_ready: true,
            dir: None,
            user: None,
        }
    }
}

impl Daemon {
    pub fn start() -> Daemon {
        Daemon::start_with(Options::default())
    }

    pub fn start_config(config: &str) -> Daemon {
        Daemon::start_with(Options {
            config: config.to_owned(),
            ..Options::default()
        })
    }

    pub fn start_with(opts: Options) -> Daemon {
        let dir = opts.dir.unwrap_or_else(|| tempfile::tempdir().unwrap());
        let state = dir.path().join("state");
        let config_path = dir.path().join("config.toml");
        std::fs::write(
            &config_path,
            format!(
                "state-dir = {:?}\n{}\n",
                state.display().to_string(),
                opts.config
            ),
        )
        .unwrap();
        let notify_path = dir.path().join(format!("notify-{}.sock", rand_suffix()));
        let notify = UnixDatagram::bind(&notify_path).unwrap();
        notify
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let stderr = File::create(dir.path().join("stderr.log")).unwrap();

        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg("LISTEN_PID=$$; export LISTEN_PID; exec \"$0\" \"$@\"")
            .arg(BIN)
            .args(["serve", "--config"])
            .arg(&config_path)
            .args(["--log-target", "stderr", "--log-format", "json"])
            .env("NOTIFY_SOCKET", &notify_path)
            .env_remove("JOURNAL_STREAM")
            .env_remove("LOCALHOSTD_CONFIG")
            .env_remove("STATE_DIRECTORY")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_FDNAMES")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let (mut tcp_l, mut unix_l) = (None, None);
        let (tcp, unix);
        if opts.activated {
            let t = TcpListener::bind("127.0.0.1:0").unwrap();
            let u = UnixListener::bind(dir.path().join("http.sock")).unwrap();
            tcp = Target::Tcp(t.local_addr().unwrap());
            unix = Target::Unix(dir.path().join("http.sock"));
            let (tfd, ufd) = (t.as_raw_fd(), u.as_raw_fd());
            cmd.env("LISTEN_FDS", "2")
                .env("LISTEN_FDNAMES", "http:http-unix");
            // SAFETY: only async-signal-safe calls (fcntl, dup2, close) between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    let hi_t = libc::fcntl(tfd, libc::F_DUPFD, 100);
                    let hi_u = libc::fcntl(ufd, libc::F_DUPFD, 100);
                    if hi_t < 0 || hi_u < 0 || libc::dup2(hi_t, 3) < 0 || libc::dup2(hi_u, 4) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    libc::close(hi_t);
                    libc::close(hi_u);
                    Ok(())
                });
            }
            tcp_l = Some(t);
            unix_l = Some(u);
        } else {
            tcp = Target::Tcp("127.0.0.1:1".parse().unwrap());
            unix = Target::Unix(dir.path().join("own.sock"));
        }
        if let Some((uid, gid)) = opts.user {
            use std::os::unix::process::CommandExt as _;
            for entry in [
                dir.path().to_owned(),
                notify_path.clone(),
                dir.path().join("stderr.log"),
                config_path.clone(),
            ] {
                std::os::unix::fs::chown(&entry, Some(uid), Some(gid)).unwrap();
            }
            // std drops supplementary groups when a root parent sets the uid.
            cmd.uid(uid).gid(gid);
        }
        let child = cmd.spawn().unwrap();
        let mut d = Daemon {
            child,
            dir,
            tcp,
            unix,
            config_path,
            notify,
            notes: Vec::new(),
            _tcp_listener: tcp_l.take(),
            _unix_listener: unix_l.take(),
        };
        if opts.wait_ready {
            d.wait_notify("READY=1", Duration::from_secs(20));
        }
        d
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The admin token the daemon wrote on its first start.
    pub fn admin_token(&self) -> String {
        admin_token_in(&self.state_dir())
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// Log lines parsed as JSON objects.
    pub fn log_events(&self) -> Vec<serde_json::Value> {
        self.logs()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Reads notify messages until one contains `needle`; panics after `timeout`.
    pub fn wait_notify(&mut self, needle: &str, timeout: Duration) -> String {
        if let Some(m) = self.notes.iter().find(|m| m.lines().any(|l| l == needle)) {
            return m.clone();
        }
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(m) = self.recv_notify() {
                if m.lines().any(|l| l == needle) {
                    return m;
                }
            } else if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "daemon exited ({status}) before {needle}; notes {:?}; log:\n{}",
                    self.notes,
                    self.logs()
                );
            }
        }
        panic!(
            "no {needle} within {timeout:?}; notes {:?}; log:\n{}",
            self.notes,
            self.logs()
        );
    }

    /// One notify message if one arrives within 100 ms.
    pub fn recv_notify(&mut self) -> Option<String> {
        let mut buf = [0u8; 4096];
        match self.notify.recv(&mut buf) {
            Ok(n) => {
                let m = String::from_utf8_lossy(&buf[..n]).into_owned();
                self.notes.push(m.clone());
                Some(m)
            }
            Err(_) => None,
        }
    }

    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(rc, 0, "kill failed");
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                while self.recv_notify().is_some() {}
                return s;
            }
            if Instant::now() > deadline {
                panic!(
                    "daemon did not exit within {timeout:?}; log:\n{}",
                    self.logs()
                );
            }
            self.recv_notify();
        }
    }

    /// SIGTERM, expect STOPPING=1 and exit code 0.
    pub fn stop(&mut self) {
        self.signal(libc::SIGTERM);
        self.wait_notify("STOPPING=1", Duration::from_secs(20));
        let status = self.wait_exit(Duration::from_secs(40));
        assert_eq!(
            status.code(),
            Some(0),
            "exit status {status}; log:\n{}",
            self.logs()
        );
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// Runs the binary with `args` to completion; returns (exit code, stdout, stderr).
/// A loopback TCP port nothing listens on now (bound, then let go).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The first `name` on `PATH`.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A two-thread tokio runtime for the tests that drive the sandbox directly.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

pub fn run_cli(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("LOCALHOSTD_CONFIG")
        .env_remove("STATE_DIRECTORY");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Holds SQLite's write lock on the daemon's database until dropped, so its writer blocks.
pub struct WriteLock(rusqlite::Connection);

impl WriteLock {
    pub fn take(state_dir: &Path) -> WriteLock {
        let c = rusqlite::Connection::open(state_dir.join("localhostd.db")).unwrap();
        c.execute_batch("BEGIN IMMEDIATE").unwrap();
        WriteLock(c)
    }
}

impl Drop for WriteLock {
    fn drop(&mut self) {
        let _ = self.0.execute_batch("ROLLBACK");
    }
}

/// The admin token a daemon wrote into the state directory `state` on its first start. The
/// daemon listens before it writes the file (atomically, by rename), so a test that saw the
/// socket may be early: wait for the file, bounded.
pub fn admin_token_in(state: &Path) -> String {
    let path = state.join("initial-admin-token");
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        match std::fs::read_to_string(&path) {
            Ok(t) => return t.trim().to_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && Instant::now() < until => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("cannot read {}: {e}", path.display()),
        }
    }
}

/// A request with `bearer` (the whole `Authorization` value) and, when given, a content type.
pub fn request_as(
    target: &Target,
    bearer: &str,
    method: &str,
    path: &str,
    ct: Option<&str>,
    body: &[u8],
) -> Response {
    let mut h: Vec<(&str, &str)> = vec![("Authorization", bearer)];
    if let Some(ct) = ct {
        h.push(("Content-Type", ct));
    }
    http::request(target, method, path, &h, body)
}

/// A request to `d` over TCP with `token` and a JSON body; the whole response.
pub fn request_json(d: &Daemon, method: &str, path: &str, token: &str, body: &Value) -> Response {
    request_as(
        &d.tcp,
        &format!("Bearer {token}"),
        method,
        path,
        Some("application/json"),
        body.to_string().as_bytes(),
    )
}

/// `POST /api/v1/exec` to `d` over TCP with `token` and a JSON body; the whole response.
/// A browser login with `token` over TCP: the session cookie as `name=value`.
pub fn login_cookie(d: &Daemon, token: &str) -> String {
    let login = crate::http::request(
        &d.tcp,
        "POST",
        "/api/v1/session",
        &[("Content-Type", "application/json")],
        serde_json::json!({"token": token}).to_string().as_bytes(),
    );
    assert_eq!(login.status, 201, "{}", login.text());
    login
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

/// A token with `scopes`, made with `admin`'s token; its secret.
pub fn token_with(d: &Daemon, admin: &str, name: &str, scopes: &[&str]) -> String {
    let r = request_json(
        d,
        "POST",
        "/api/v1/tokens",
        admin,
        &serde_json::json!({"name": name, "scopes": scopes}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()["token"].as_str().unwrap().to_owned()
}

pub fn post_exec(d: &Daemon, token: &str, body: &Value) -> Response {
    post_exec_at(&d.tcp, token, body)
}

/// `post_exec` for a thread that holds only the daemon's address.
pub fn post_exec_at(target: &Target, token: &str, body: &Value) -> Response {
    request_as(
        target,
        &format!("Bearer {token}"),
        "POST",
        "/api/v1/exec",
        Some("application/json"),
        body.to_string().as_bytes(),
    )
}

/// Sends `POST /api/v1/exec` asking for its output as Server-Sent Events, head and `body`, on
/// `s`; the caller reads the stream.
pub fn send_exec_stream(s: &mut dyn Stream, token: &str, body: &str) {
    let auth = format!("Bearer {token}");
    http::send_head(
        s,
        "POST",
        "/api/v1/exec",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
            ("Accept", "text/event-stream"),
        ],
        Some(body.len()),
    );
    s.write_all(body.as_bytes()).unwrap();
}

/// Deterministic bytes that do not compress or repeat.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The SHA-256 of `b` in lowercase hex.
pub fn sha_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// A sandbox policy for the tests that drive `localhostd::jobs::sandbox` directly: `argv` run
/// as `run_as`, small limits, no network, no terminal.
pub fn sandbox_policy(
    argv: &[&str],
    run_as: Option<(u32, u32)>,
) -> localhostd::jobs::sandbox::Policy {
    use localhostd::jobs::sandbox::{Limits, Policy, SCRATCH};
    Policy {
        argv: argv.iter().map(|a| a.to_string()).collect(),
        env: vec![
            ("PATH".into(), "/usr/bin:/bin".into()),
            ("HOME".into(), SCRATCH.into()),
            ("TERM".into(), "dumb".into()),
        ],
        cwd: SCRATCH.into(),
        limits: Limits {
            cpu_s: 30,
            data_bytes: 1 << 30,
            address_space_bytes: None,
            stack_bytes: 8 << 20,
            processes: 64,
            file_size_bytes: 1 << 20,
            open_files: 64,
            tmpfs_bytes: 1 << 20,
            tmpfs_inodes: 64,
        },
        network: false,
        run_as,
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
