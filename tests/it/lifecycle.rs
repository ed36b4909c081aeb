//! Reload on SIGHUP, the watchdog tied to the database writer, the state-dir lock, schema
//! refusal, and the error shape of requests the router refuses.

use std::time::{Duration, Instant};

use crate::harness::{Daemon, Options, WriteLock};
use crate::http;

#[test]
fn sighup_applies_new_limits_and_keeps_old_config_when_new_one_is_invalid() {
    let mut d = Daemon::start();
    let body = vec![b'x'; 64];
    let r = http::request(&d.tcp, "GET", "/health", &[], &body);
    assert_eq!(r.status, 200, "64 bytes are under the default limit");

    let state = d.state_dir();
    let valid = format!(
        "state-dir = {:?}\n[server]\nmax-body-size = \"16B\"\n",
        state.display().to_string()
    );
    std::fs::write(&d.config_path, &valid).unwrap();
    d.signal(libc::SIGHUP);
    d.wait_notify("RELOADING=1", Duration::from_secs(10));
    let after = d.notes.len();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !d.notes[after..]
        .iter()
        .any(|m| m.lines().any(|l| l == "READY=1"))
    {
        assert!(
            Instant::now() < deadline,
            "no READY=1 after reload: {:?}",
            d.notes
        );
        d.recv_notify();
    }
    let r = http::request(&d.tcp, "GET", "/health", &[], &body);
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "payload_too_large");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("server.max-body-size (16B)")
    );

    // An invalid file is refused and the limit in force stays.
    std::fs::write(&d.config_path, format!("{valid}\n[bogus]\n")).unwrap();
    d.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !d.logs().contains("new configuration refused") {
        assert!(
            Instant::now() < deadline,
            "refusal not logged:\n{}",
            d.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = http::request(&d.tcp, "GET", "/health", &[], &body);
    assert_eq!(r.status, 413);
    assert_eq!(http::get(&d.tcp, "/health").status, 200);
    d.stop();
}

#[test]
fn watchdog_pings_only_while_the_database_writer_answers() {
    let mut d = Daemon::start_with(Options {
        env: vec![("WATCHDOG_USEC".into(), "400000".into())],
        ..Options::default()
    });
    let count = |d: &mut Daemon, for_: Duration| {
        let start = d.notes.len();
        let deadline = Instant::now() + for_;
        while Instant::now() < deadline {
            d.recv_notify();
        }
        d.notes[start..]
            .iter()
            .filter(|m| m.lines().any(|l| l == "WATCHDOG=1"))
            .count()
    };
    let healthy = count(&mut d, Duration::from_millis(1500));
    assert!(
        healthy >= 3,
        "expected pings every 200ms, got {healthy}: {:?}",
        d.notes
    );

    let lock = WriteLock::take(&d.state_dir());
    // Let a ping that was already under way finish, then count.
    count(&mut d, Duration::from_millis(500));
    let stuck = count(&mut d, Duration::from_millis(1500));
    assert_eq!(stuck, 0, "pinged while the writer was blocked");
    assert!(
        d.logs().contains("database writer does not answer"),
        "{}",
        d.logs()
    );
    drop(lock);
    let recovered = count(&mut d, Duration::from_millis(6000));
    assert!(recovered >= 1, "no ping after the writer recovered");
    d.stop();
}

#[test]
fn a_second_daemon_on_the_same_state_dir_is_refused() {
    let mut first = Daemon::start();
    let shared = first.state_dir();
    let second_dir = tempfile::tempdir().unwrap();
    let mut second = Daemon::start_with(Options {
        config: String::new(),
        wait_ready: false,
        dir: Some(second_dir),
        ..Options::default()
    });
    // Point the second at the first one's state directory.
    drop(second.child.kill());
    let _ = second.child.wait();
    std::fs::write(
        &second.config_path,
        format!("state-dir = {:?}\n", shared.display().to_string()),
    )
    .unwrap();
    let (code, _, err) = crate::harness::run_cli(
        &[
            "serve",
            "--log-target",
            "stderr",
            "--config",
            second.config_path.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot lock"), "{err}");
    assert_eq!(http::get(&first.tcp, "/health").status, 200);
    first.stop();
}

#[test]
fn a_database_from_a_newer_release_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let db = state.join("localhostd.db");
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch("CREATE TABLE future(x); PRAGMA user_version = 999;")
            .unwrap();
    }
    let mut d = Daemon::start_with(Options {
        wait_ready: false,
        dir: Some(dir),
        ..Options::default()
    });
    let status = d.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(1));
    assert!(!d.notes.iter().any(|m| m.lines().any(|l| l == "READY=1")));
    let logs = d.logs();
    assert!(
        logs.contains("schema version 999") && logs.contains("downgrades are not supported"),
        "{logs}"
    );
    let c = rusqlite::Connection::open(&db).unwrap();
    let v: i64 = c
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(v, 999);
}

#[test]
fn refused_requests_get_the_one_error_shape() {
    let mut d = Daemon::start();
    let r = http::get(&d.tcp, "/api/v1/nothing-here");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "not_found");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/api/v1/nothing-here")
    );

    let r = http::request(&d.tcp, "DELETE", "/health", &[], b"");
    assert_eq!(r.status, 405);
    assert_eq!(r.json()["error"]["code"], "method_not_allowed");
    let allow = r.header("allow").unwrap();
    assert!(allow.contains("GET") && allow.contains("HEAD"), "{allow}");

    // Refused from Content-Length alone, before the body is sent (so nothing waits on it).
    let mut s = http::connect(&d.tcp);
    http::send_head(
        &mut *s,
        "GET",
        "/health",
        &[("Content-Type", "application/json")],
        Some(2 << 20),
    );
    let r = http::read_response(&mut *s);
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"]["code"], "payload_too_large");

    let r = http::request(&d.tcp, "HEAD", "/health", &[], b"");
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    for r in [
        http::get(&d.unix, "/nope"),
        http::request(&d.unix, "PUT", "/ready", &[], b"x"),
    ] {
        let j = r.json();
        assert!(
            j["error"]["request_id"]
                .as_str()
                .is_some_and(|s| !s.is_empty()),
            "{j}"
        );
    }
    d.stop();
}
