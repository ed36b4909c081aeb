//! The tunnels with their real clients, through the daemon's supervisor and sandbox: OpenSSH's
//! `ssh -R` to an sshd this test runs on loopback (its own host key, config and authorized
//! key), and npm's `lt` against the test localtunnel server (`lt_server.rs`). A request through
//! each reaches the daemon's public listener, where it is never loopback (`/metrics` with
//! `public-on-loopback` answers 401 there, 200 on the daemon's own listener). The ssh client is
//! killed from the host and comes back; a stop leaves no client process and closes the port.
//! Each test skips, saying why, only when its client is not installed (.ci/run installs them).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Daemon, Options, find_on_path, free_port, request_as, request_json};
use crate::http::{self, Response};
use crate::lt_server::LtServer;

/// How long any one wait here may take.
const WAIT: Duration = Duration::from_secs(30);

/// `GET path` to `addr` with `Host: host` (what a browser sends for the tunnel's URL).
fn get_via(addr: &str, host: &str, path: &str) -> std::io::Result<Response> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(15)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    if !raw.windows(4).any(|w| w == b"\r\n\r\n") {
        return Err(std::io::Error::other(format!(
            "not an HTTP response: {:?}",
            String::from_utf8_lossy(&raw)
        )));
    }
    Ok(http::parse(&raw))
}

/// `host:port` of an `http://` URL.
fn authority(url: &str) -> &str {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    rest.split('/').next().unwrap_or(rest)
}

/// One tunnel's view from `GET /api/v1/tunnels`.
fn tunnel(d: &Daemon, token: &str, provider: &str) -> Value {
    let r = request_json(d, "GET", "/api/v1/tunnels", token, &Value::Null);
    assert_eq!(r.status, 200, "{}", r.text());
    let list = r.json();
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["provider"] == provider)
        .cloned()
        .unwrap_or_else(|| panic!("no {provider} in {list}"))
}

/// Polls the tunnel until `done` holds; panics (with `more()` and the daemon's log) after
/// [`WAIT`].
fn wait_tunnel(
    d: &Daemon,
    token: &str,
    provider: &str,
    what: &str,
    more: &dyn Fn() -> String,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let t = tunnel(d, token, provider);
        if done(&t) {
            return t;
        }
        if Instant::now() > deadline {
            panic!(
                "{provider}: not {what} within {WAIT:?}: {t:#}\n{}\nlog:\n{}",
                more(),
                d.logs()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `POST …/start` with `options` as its JSON body, or with no body at all.
fn start(d: &Daemon, token: &str, provider: &str, options: Option<&Value>) {
    let path = format!("/api/v1/tunnels/{provider}/start");
    let r = match options {
        Some(o) => request_json(d, "POST", &path, token, o),
        None => request_as(&d.tcp, &format!("Bearer {token}"), "POST", &path, None, b""),
    };
    assert!(
        r.status == 200 || r.status == 202,
        "start {provider}: {} {}\nlog:\n{}",
        r.status,
        r.text(),
        d.logs()
    );
}

fn stop(d: &Daemon, token: &str, provider: &str) {
    let r = request_as(
        &d.tcp,
        &format!("Bearer {token}"),
        "POST",
        &format!("/api/v1/tunnels/{provider}/stop"),
        None,
        b"",
    );
    assert!(
        r.status == 200 || r.status == 202,
        "stop {provider}: {} {}",
        r.status,
        r.text()
    );
}

/// Host processes whose argv satisfies `matches` (a /proc scan).
fn processes(matches: impl Fn(&[String]) -> bool) -> Vec<i32> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(raw) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let argv: Vec<String> = raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if !argv.is_empty() && matches(&argv) {
            found.push(pid);
        }
    }
    found
}

/// The ssh clients forwarding to the daemon's public listener at port `target`.
fn ssh_clients(target: u16) -> Vec<i32> {
    let to = format!(":{target}");
    processes(|argv| {
        Path::new(&argv[0]).file_name().is_some_and(|n| n == "ssh")
            && argv.iter().any(|a| a == "-R")
            && argv.iter().any(|a| a.ends_with(&to))
    })
}

/// The lt clients (node running lt) forwarding to port `target`.
fn lt_clients(target: u16) -> Vec<i32> {
    let port = target.to_string();
    processes(|argv| {
        argv.iter().take(2).any(|a| {
            Path::new(a)
                .file_name()
                .is_some_and(|n| n == "lt" || n == "lt.js")
        }) && argv.windows(2).any(|w| w[0] == "--port" && w[1] == port)
    })
}

/// Waits until `list()` is empty; panics after [`WAIT`].
fn wait_gone(what: &str, d: &Daemon, list: impl Fn() -> Vec<i32>) {
    let deadline = Instant::now() + WAIT;
    while !list().is_empty() {
        if Instant::now() > deadline {
            panic!("{what} still running: {:?}\nlog:\n{}", list(), d.logs());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether something accepts connections on 127.0.0.1:`port`.
fn listening(port: u16) -> bool {
    TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(2),
    )
    .is_ok()
}

/// The value of the sample `metric{provider="…"}` on the daemon's own listener.
fn metric(d: &Daemon, metric: &str, provider: &str) -> Option<f64> {
    let r = http::get(&d.tcp, "/metrics");
    assert_eq!(r.status, 200, "{}", r.text());
    let prefix = format!("{metric}{{provider=\"{provider}\"}} ");
    r.text()
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

/// The daemon's public listener's port, from `GET /api/v1/tunnels`' `target`.
fn target_port(d: &Daemon, token: &str) -> u16 {
    let r = request_json(d, "GET", "/api/v1/tunnels", token, &Value::Null);
    let list = r.json();
    let target = list["target"].as_str().unwrap_or_else(|| panic!("{list}"));
    target.rsplit(':').next().unwrap().parse().unwrap()
}

/// Through the tunnel, `/health` reaches the daemon and `/metrics` is refused: the public
/// listener never counts as loopback. The same `/metrics` on the daemon's own TCP listener
/// (loopback, `public-on-loopback = true`) answers 200: the positive control.
fn check_public(d: &Daemon, get: impl Fn(&str) -> std::io::Result<Response>) {
    let health = get("/health").unwrap_or_else(|e| panic!("{e}\nlog:\n{}", d.logs()));
    assert_eq!(health.status, 200, "{}\nlog:\n{}", health.text(), d.logs());
    assert_eq!(health.json()["status"], "ok", "{}", health.text());
    let metrics = get("/metrics").unwrap();
    assert_eq!(metrics.status, 401, "{}", metrics.text());
    assert_eq!(http::get(&d.tcp, "/metrics").status, 200);
}

/// An sshd of the test's own on 127.0.0.1: its host key, its config, one authorized key
/// (root's, with `prohibit-password`). Dropping it kills it and its connection processes.
struct Sshd {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Sshd {
    fn keygen(path: &Path) {
        let out = Command::new("ssh-keygen")
            .args([
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "localhostd-test",
                "-f",
            ])
            .arg(path)
            .output()
            .unwrap();
        assert!(out.status.success(), "ssh-keygen: {out:?}");
    }

    fn start() -> Sshd {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        Self::keygen(&p.join("host_ed25519"));
        Self::keygen(&p.join("client_ed25519"));
        std::fs::copy(p.join("client_ed25519.pub"), p.join("authorized_keys")).unwrap();
        // sshd's privilege separation directory (Debian's unit makes it: RuntimeDirectory).
        std::fs::create_dir_all("/run/sshd").unwrap();
        let port = free_port();
        let host_pub = std::fs::read_to_string(p.join("host_ed25519.pub")).unwrap();
        let mut fields = host_pub.split_whitespace();
        let (kind, key) = (fields.next().unwrap(), fields.next().unwrap());
        std::fs::write(
            p.join("known_hosts"),
            format!("[127.0.0.1]:{port} {kind} {key}\n"),
        )
        .unwrap();
        let d = p.display();
        std::fs::write(
            p.join("sshd_config"),
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_ed25519\n\
                 PidFile {d}/sshd.pid\nAuthorizedKeysFile {d}/authorized_keys\n\
                 StrictModes no\nUsePAM no\nPermitRootLogin prohibit-password\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 AllowTcpForwarding remote\nGatewayPorts no\nX11Forwarding no\n\
                 AllowAgentForwarding no\nPrintMotd no\nLogLevel VERBOSE\n"
            ),
        )
        .unwrap();
        let log = std::fs::File::create(p.join("sshd.log")).unwrap();
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(p.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut sshd = Sshd { child, dir, port };
        // Up once it greets.
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut greeting = [0u8; 8];
                if s.read_exact(&mut greeting).is_ok() && greeting.starts_with(b"SSH-2.0") {
                    break;
                }
            }
            if let Ok(Some(status)) = sshd.child.try_wait() {
                panic!("sshd exited ({status}):\n{}", sshd.log());
            }
            if Instant::now() > deadline {
                panic!("sshd did not listen on {port}:\n{}", sshd.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        sshd
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("sshd.log")).unwrap_or_default()
    }

    /// sshd's descendants (its connection processes), by parent pid.
    fn descendants(&self) -> Vec<i32> {
        let mut parents = vec![self.child.id() as i32];
        let mut found = Vec::new();
        let ppid_of = |pid: i32| -> Option<i32> {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // After the command's closing parenthesis: state, then ppid.
            stat.rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        };
        let all = processes(|_| true);
        while let Some(parent) = parents.pop() {
            for &pid in &all {
                if ppid_of(pid) == Some(parent) && !found.contains(&pid) {
                    found.push(pid);
                    parents.push(pid);
                }
            }
        }
        found
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        for pid in self.descendants() {
            // SAFETY: kill(2) on a process this test's sshd forked.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn ssh_forwards_to_the_public_listener_and_comes_back_when_killed() {
    let missing: Vec<&str> = [
        ("/usr/sbin/sshd", Path::new("/usr/sbin/sshd").is_file()),
        ("ssh", find_on_path("ssh").is_some()),
        ("ssh-keygen", find_on_path("ssh-keygen").is_some()),
    ]
    .into_iter()
    .filter(|(_, there)| !there)
    .map(|(name, _)| name)
    .collect();
    if !missing.is_empty() {
        println!(
            "skipped: {missing:?} not installed (openssh-server and openssh-client provide \
             them; .ci/run installs them)"
        );
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        println!("skipped: the test's sshd logs in as root and needs root to run");
        return;
    }
    let sshd = Sshd::start();
    let d = Daemon::start_with(Options {
        config: format!(
            "[metrics]\npublic-on-loopback = true\n\
             [tunnels]\nenabled = true\nurl-timeout = \"20s\"\nrestart-delay = \"200ms\"\n\
             [tunnels.ssh]\nhost = \"127.0.0.1\"\nport = {}\nuser = \"root\"\n\
             identity-file = {:?}\nknown-hosts-file = {:?}\n",
            sshd.port,
            sshd.path("client_ed25519").display().to_string(),
            sshd.path("known_hosts").display().to_string(),
        ),
        ..Options::default()
    });
    let token = d.admin_token();
    let target = target_port(&d, &token);
    let sshd_log = || format!("sshd log:\n{}", sshd.log());
    let fail = |what: &str, t: &Value| -> String {
        format!(
            "{what}: {t:#}\nsshd log:\n{}\ndaemon log:\n{}",
            sshd.log(),
            d.logs()
        )
    };

    // Remote port 0: sshd picks one and ssh says "Allocated port N".
    start(&d, &token, "ssh", Some(&json!({})));
    let t = wait_tunnel(&d, &token, "ssh", "up", &sshd_log, |t| t["state"] == "up");
    let url = t["url"]
        .as_str()
        .unwrap_or_else(|| panic!("{}", fail("no url", &t)));
    assert!(url.starts_with("http://127.0.0.1:"), "{}", fail(url, &t));
    let first = authority(url).to_owned();
    assert_ne!(first, format!("127.0.0.1:{target}"), "{}", fail(url, &t));
    check_public(&d, |path| get_via(&first, &first, path));
    assert_eq!(t["restarts"], 0, "{}", fail("restarts", &t));
    assert_eq!(
        metric(&d, "localhostd_tunnel_up", "ssh"),
        Some(1.0),
        "{}",
        fail("localhostd_tunnel_up", &t)
    );

    // The client, killed from the host: the supervisor starts it again (sshd picks a port
    // anew).
    let clients = ssh_clients(target);
    assert_eq!(clients.len(), 1, "{}", fail("ssh clients", &t));
    // SAFETY: kill(2) on the ssh client the daemon started for this test.
    assert_eq!(unsafe { libc::kill(clients[0], libc::SIGKILL) }, 0);
    let t = wait_tunnel(&d, &token, "ssh", "restarted and up", &sshd_log, |t| {
        t["state"] == "up" && t["restarts"].as_u64().unwrap_or(0) >= 1
    });
    // It went through `restarting`, saying why (the state's log event; `last_error` is
    // cleared once it is up again).
    let restarting = d.log_events().into_iter().find(|e| {
        e["message"] == "tunnel state changed"
            && e["provider"] == "ssh"
            && e["state"] == "restarting"
    });
    assert!(
        restarting.as_ref().is_some_and(|e| e["restarts"] == 1
            && e["error"]
                .as_str()
                .is_some_and(|r| r.contains("killed by signal 9"))),
        "{}",
        fail(&format!("the restarting event {restarting:?}"), &t)
    );
    assert!(
        metric(&d, "localhostd_tunnel_restarts_total", "ssh").is_some_and(|n| n >= 1.0),
        "{}",
        fail("localhostd_tunnel_restarts_total", &t)
    );
    let second = authority(t["url"].as_str().unwrap()).to_owned();
    check_public(&d, |path| get_via(&second, &second, path));
    assert!(
        !ssh_clients(target).contains(&clients[0]),
        "{}",
        fail("the killed client", &t)
    );

    // Stop: stopped, no client left, the forwarded port closed (sshd's session ended).
    stop(&d, &token, "ssh");
    let t = wait_tunnel(&d, &token, "ssh", "stopped", &sshd_log, |t| {
        t["state"] == "stopped"
    });
    assert!(t["url"].is_null(), "{}", fail("url after stop", &t));
    assert_eq!(
        metric(&d, "localhostd_tunnel_up", "ssh"),
        Some(0.0),
        "{}",
        fail("localhostd_tunnel_up after stop", &t)
    );
    wait_gone("the ssh client", &d, || ssh_clients(target));
    let port: u16 = second.rsplit(':').next().unwrap().parse().unwrap();
    let deadline = Instant::now() + WAIT;
    while listening(port) {
        assert!(
            Instant::now() < deadline,
            "{}",
            fail("the forwarded port still listens", &t)
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // A fixed remote port: up once ssh logs (at debug1) the forward's success.
    let fixed = free_port();
    start(&d, &token, "ssh", Some(&json!({"remote_port": fixed})));
    let t = wait_tunnel(&d, &token, "ssh", "up on the fixed port", &sshd_log, |t| {
        t["state"] == "up"
    });
    assert_eq!(
        t["url"],
        format!("http://127.0.0.1:{fixed}"),
        "{}",
        fail("fixed url", &t)
    );
    let addr = format!("127.0.0.1:{fixed}");
    let health = get_via(&addr, &addr, "/health").unwrap();
    assert_eq!(health.status, 200, "{}", fail(&health.text(), &t));
    stop(&d, &token, "ssh");
    wait_tunnel(&d, &token, "ssh", "stopped", &sshd_log, |t| {
        t["state"] == "stopped"
    });
    wait_gone("the ssh client", &d, || ssh_clients(target));
}

#[test]
fn localtunnel_forwards_through_the_real_lt_client() {
    if find_on_path("lt").is_none() {
        println!(
            "skipped: `lt` is not on the PATH (npm install -g localtunnel@2.0.2 provides it; \
             .ci/run installs it)"
        );
        return;
    }
    let server = LtServer::start();
    let d = Daemon::start_with(Options {
        config: format!(
            "[metrics]\npublic-on-loopback = true\n\
             [tunnels]\nenabled = true\nurl-timeout = \"20s\"\nrestart-delay = \"200ms\"\n\
             [tunnels.localtunnel]\nhost = {:?}\n",
            server.api_url()
        ),
        ..Options::default()
    });
    let token = d.admin_token();
    let target = target_port(&d, &token);

    start(&d, &token, "localtunnel", None);
    let t = wait_tunnel(&d, &token, "localtunnel", "up", &String::new, |t| {
        t["state"] == "up"
    });
    let id = server
        .wait_client(WAIT)
        .unwrap_or_else(|| panic!("lt opened no tunnel socket: {t:#}\nlog:\n{}", d.logs()));
    assert_eq!(t["url"], server.url_for(&id), "{t:#}");
    let host = authority(t["url"].as_str().unwrap()).to_owned();
    // The test server answers with the status and body; the headers are not needed here.
    check_public(&d, |path| {
        let (status, body) = server.request(path, &host)?;
        Ok(Response {
            status,
            headers: Vec::new(),
            body,
        })
    });
    assert_eq!(lt_clients(target).len(), 1, "{t:#}");

    stop(&d, &token, "localtunnel");
    let t = wait_tunnel(&d, &token, "localtunnel", "stopped", &String::new, |t| {
        t["state"] == "stopped"
    });
    assert!(t["url"].is_null(), "{t:#}");
    wait_gone("the lt client", &d, || lt_clients(target));
}
