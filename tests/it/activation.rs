//! Socket activation (TCP + Unix), readiness, graceful drain, bind-from-config, idle exit.

use std::io::Write;
use std::time::{Duration, Instant};

use crate::harness::{BIN, Daemon, Options, WriteLock};
use crate::http::{self, Target};

/// The `listeners` component of a `/api/v1/health` report.
fn listeners(health: &serde_json::Value) -> &serde_json::Value {
    health["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "listeners")
        .unwrap()
}

#[test]
fn socket_activated_daemon_serves_tcp_and_unix_then_stops_cleanly() {
    let mut d = Daemon::start();
    assert!(
        d.notes.iter().any(|m| m.contains("STATUS=serving on")),
        "{:?}",
        d.notes
    );

    let r = http::get(&d.tcp, "/health");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "ok");
    assert_eq!(r.header("content-type"), Some("application/json"));

    let r = http::get(&d.unix, "/api/v1/health");
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    assert_eq!(j["version"], env!("CARGO_PKG_VERSION"));
    let listeners = listeners(&j);
    assert_eq!(listeners["count"], 2);
    assert_eq!(listeners["socket_activated"], true);

    let r = http::get(&d.unix, "/ready");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"], "ready");

    d.stop();
    // READY came before STOPPING, and nothing after STOPPING said READY again.
    let ready = d
        .notes
        .iter()
        .position(|m| m.lines().any(|l| l == "READY=1"))
        .unwrap();
    let stopping = d
        .notes
        .iter()
        .position(|m| m.lines().any(|l| l == "STOPPING=1"))
        .unwrap();
    assert!(ready < stopping, "{:?}", d.notes);
    assert!(
        !d.notes[stopping..]
            .iter()
            .any(|m| m.lines().any(|l| l == "READY=1"))
    );
}

#[test]
fn request_events_are_logged_with_structured_fields_and_request_id_is_echoed() {
    let mut d = Daemon::start();
    let r = http::request(
        &d.tcp,
        "GET",
        "/health",
        &[("X-Request-Id", "test-id-123")],
        b"",
    );
    assert_eq!(r.header("x-request-id"), Some("test-id-123"));
    let r = http::get(&d.unix, "/nowhere");
    let generated = r.header("x-request-id").unwrap().to_owned();
    assert_eq!(r.json()["error"]["request_id"], generated.as_str());
    d.stop();
    let events = d.log_events();
    let ev = events
        .iter()
        .find(|e| e["request_id"] == "test-id-123")
        .unwrap_or_else(|| panic!("no event for the request id in:\n{}", d.logs()));
    assert_eq!(ev["message"], "request");
    assert_eq!(ev["method"], "GET");
    assert_eq!(ev["route"], "/health");
    assert_eq!(ev["status"], 200);
    assert!(ev["latency_ms"].as_f64().is_some());
    assert_eq!(ev["remote"], "127.0.0.1");
    let ev = events
        .iter()
        .find(|e| e["request_id"] == generated.as_str())
        .unwrap();
    assert_eq!(
        ev["route"], "unmatched",
        "raw paths never become the route label"
    );
    assert_eq!(ev["remote"], "unix");
    assert_eq!(ev["status"], 404);
}

/// SIGTERM arrives while a request is in flight (its database write is held up by a lock we
/// hold): the request still gets its complete response, then the daemon exits 0.
#[test]
fn sigterm_during_slow_request_lets_it_finish_and_exits_zero() {
    let mut d = Daemon::start();
    let lock = WriteLock::take(&d.state_dir());
    let tcp = d.tcp.clone();
    let slow = std::thread::spawn(move || {
        let start = Instant::now();
        let r = http::get(&tcp, "/ready");
        (r, start.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));
    d.signal(libc::SIGTERM);
    d.wait_notify("STOPPING=1", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        d.child.try_wait().unwrap().is_none(),
        "daemon exited while a request was in flight"
    );
    drop(lock);
    let (r, took) = slow.join().unwrap();
    assert!(
        took >= Duration::from_millis(500),
        "the request was not actually slow ({took:?})"
    );
    // A complete, well-formed answer: not ready, because shutdown had begun.
    assert_eq!(r.status, 503, "{}", r.text());
    let j = r.json();
    assert_eq!(j["error"]["code"], "unavailable");
    assert!(
        j["error"]["message"]
            .as_str()
            .unwrap()
            .contains("lifecycle: shutting down"),
        "{j}"
    );
    let status = d.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "log:\n{}", d.logs());
}

#[test]
fn without_passed_sockets_it_binds_the_configured_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("own.sock");
    let mut d = Daemon::start_with(Options {
        config: format!("[server]\nlisten = [\"unix:{}\"]\n", sock.display()),
        activated: false,
        dir: Some(dir),
        ..Options::default()
    });
    let r = http::get(&Target::Unix(sock.clone()), "/api/v1/health");
    assert_eq!(r.status, 200);
    let j = r.json();
    let listeners = listeners(&j);
    assert_eq!(listeners["socket_activated"], false);
    assert_eq!(listeners["count"], 1);
    d.stop();
}

#[test]
fn idle_exit_after_quiet_period_when_socket_activated() {
    let mut d = Daemon::start_config("[server]\nidle-exit-after = \"1s\"\n");
    // A connection in use keeps it alive past the idle period.
    let mut held = http::connect(&d.unix);
    std::thread::sleep(Duration::from_millis(1800));
    assert!(
        d.child.try_wait().unwrap().is_none(),
        "exited while a connection was open"
    );
    http::send_head(&mut *held, "GET", "/health", &[], None);
    assert_eq!(http::read_response(&mut *held).status, 200);
    drop(held);
    let status = d.wait_exit(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0));
    assert!(d.notes.iter().any(|m| m.lines().any(|l| l == "STOPPING=1")));
    assert!(
        d.logs()
            .contains("no connection for server.idle-exit-after"),
        "{}",
        d.logs()
    );
}

#[test]
fn idle_exit_is_ignored_without_socket_activation() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("own.sock");
    let mut d = Daemon::start_with(Options {
        config: format!(
            "[server]\nlisten = [\"unix:{}\"]\nidle-exit-after = \"1s\"\n",
            sock.display()
        ),
        activated: false,
        dir: Some(dir),
        ..Options::default()
    });
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        d.child.try_wait().unwrap().is_none(),
        "exited although nobody would restart it"
    );
    d.stop();
}

/// The acceptance command: `systemd-socket-activate -l ADDR localhostd serve` serves /health on
/// the first connection (the daemon is started by that connection).
#[test]
fn systemd_socket_activate_starts_it_on_first_connection() {
    let tool = "/usr/bin/systemd-socket-activate";
    if !std::path::Path::new(tool).exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{tool} is missing in CI: .ci/run must install systemd"
        );
        eprintln!("SKIPPED: {tool} not installed (Debian package systemd)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "state-dir = {:?}\n",
            dir.path().join("state").display().to_string()
        ),
    )
    .unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr = format!("127.0.0.1:{port}");
    let log = std::fs::File::create(dir.path().join("log")).unwrap();
    let child = std::process::Command::new(tool)
        .args([
            "-l",
            &addr,
            BIN,
            "serve",
            "--log-target",
            "stderr",
            "--log-format",
            "json",
            "--config",
        ])
        .arg(&cfg)
        .env_remove("NOTIFY_SOCKET")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    let stream = loop {
        match std::net::TcpStream::connect(&addr) {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("cannot connect to {addr}: {e}"),
        }
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut s: Box<dyn http::Stream> = Box::new(stream);
    s.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let r = http::read_response(&mut *s);
    let read_log = || std::fs::read_to_string(dir.path().join("log")).unwrap_or_default();
    assert_eq!(r.status, 200, "log:\n{}", read_log());
    // The "ready" event may be written just after the first response.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !read_log().contains("\"socket_activated\":true") {
        assert!(Instant::now() < deadline, "log:\n{}", read_log());
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
    let status = child.0.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

/// Kills a child process that a failing test leaves behind.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
