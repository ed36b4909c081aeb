//! A job's deadline holds whatever happens inside its sandbox: every request answers by the
//! job's timeout plus a grace, and nothing of the job outlives the answer — also when the
//! helper dies in the instant between forking the job's init and init arming its parent-death
//! signal (issue 23, point 1).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Daemon, Options};
use crate::http::Target;

/// How long after its deadline the daemon answers at the latest, whatever the job does.
const GRACE: Duration = Duration::from_secs(1);
/// What the HTTP exchange and the history write may add on a busy machine: the bound the test
/// asserts is deadline + GRACE + SLACK (a correctness bound, not a speed goal).
const SLACK: Duration = Duration::from_secs(2);
/// Concurrent clients: `exec.max-concurrent` (its default), so every slot is busy.
const CLIENTS: usize = 16;

fn start(fault: bool) -> (Daemon, String) {
    let mut config = "[rate-limit]\nenabled = false\n".to_owned();
    let mut env = Vec::new();
    if fault {
        // Warm helpers would hit the fault too, and be thrown away unused.
        config.push_str("[sandbox]\nwarm-pool = 0\n");
        env.push((
            "LOCALHOSTD_TEST_FAULT".to_owned(),
            "helper-dies-after-fork".to_owned(),
        ));
    }
    let d = Daemon::start_with(Options {
        config,
        env,
        ..Options::default()
    });
    let token = d.admin_token();
    (d, token)
}

/// `POST /api/v1/exec`, giving up after `limit`: (status, body, time to the answer).
fn exec_within(
    target: &Target,
    token: &str,
    body: &Value,
    limit: Duration,
) -> Result<(u16, Value, Duration), String> {
    let Target::Tcp(addr) = target else {
        unreachable!()
    };
    let t = Instant::now();
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(limit)).unwrap();
    let body = body.to_string();
    let head = format!(
        "POST /api/v1/exec HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())
        .and_then(|()| s.write_all(body.as_bytes()))
        .map_err(|e| format!("send: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .map_err(|e| format!("no answer after {:?}: {e}", t.elapsed()))?;
    let took = t.elapsed();
    let r = crate::http::parse(&raw);
    let json = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    Ok((r.status, json, took))
}

/// Live processes whose command line is `sleep <marker>`.
fn marker_pids(marker: &str) -> Vec<i32> {
    let want = format!("sleep\0{marker}\0");
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        if std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == want.as_bytes()) {
            pids.push(pid);
        }
    }
    pids
}

/// Live (not zombie) children of `pid`.
fn live_children(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(c) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(c.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
            }
        }
    }
    out.retain(|c| {
        std::fs::read_to_string(format!("/proc/{c}/stat")).is_ok_and(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| !r.trim_start().starts_with('Z'))
        })
    });
    out
}

/// A process the test's own daemon started and that outlived it: ended here, by pid, so a
/// failing run leaves nothing behind.
fn kill_all(pids: &[i32]) {
    for p in pids {
        // SAFETY: kill(2) with a pid and a signal number.
        unsafe { libc::kill(*p, libc::SIGKILL) };
    }
}

/// `jobs` requests `sleep <marker>` with `timeout_ms`, CLIENTS at a time; returns what went
/// wrong (no answer, a late one, an unexpected status).
fn storm(d: &Daemon, token: &str, marker: &str, jobs: usize, timeout_ms: u64) -> Vec<String> {
    let limit = Duration::from_millis(timeout_ms) + GRACE + SLACK;
    let body = json!({"argv": ["sleep", marker], "timeout_ms": timeout_ms});
    let workers: Vec<_> = (0..CLIENTS)
        .map(|w| {
            let (target, token, body) = (d.tcp.clone(), token.to_owned(), body.clone());
            std::thread::spawn(move || {
                let mut bad = Vec::new();
                for i in (w..jobs).step_by(CLIENTS) {
                    match exec_within(&target, &token, &body, limit) {
                        Ok((200, j, took)) if took <= limit => {
                            if j["status"] != "timeout" && j["status"] != "killed" {
                                bad.push(format!("job {i}: {j}"));
                            }
                        }
                        Ok((status, j, took)) => {
                            bad.push(format!("job {i}: {status} after {took:?}: {j}"))
                        }
                        Err(e) => bad.push(format!("job {i}: {e}")),
                    }
                }
                bad
            })
        })
        .collect();
    workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect()
}

/// Hundreds of 1 ms jobs at the concurrency limit: each answers within its deadline plus the
/// grace, and once all have answered no process of any of them exists. The control shows the
/// scan sees a job's process while it runs.
#[test]
fn a_storm_of_1ms_jobs_answers_in_time_and_leaves_no_process() {
    let (mut d, token) = start(false);
    let marker = format!("77.7{}", std::process::id());
    let (target, t2, m2) = (d.tcp.clone(), token.clone(), marker.clone());
    let control = std::thread::spawn(move || {
        exec_within(
            &target,
            &t2,
            &json!({"argv": ["sleep", m2], "timeout_ms": 5000}),
            Duration::from_secs(5) + GRACE + SLACK,
        )
    });
    let seen = Instant::now();
    while marker_pids(&marker).is_empty() {
        assert!(
            seen.elapsed() < Duration::from_secs(5),
            "control: the running job's sleep was never seen"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let (status, j, _) = control.join().unwrap().unwrap();
    assert_eq!(
        (status, j["status"].as_str()),
        (200, Some("timeout")),
        "{j}"
    );

    let failures = storm(&d, &token, &marker, 400, 1);
    let left = marker_pids(&marker);
    kill_all(&left);
    assert!(
        failures.is_empty(),
        "{} of 400 requests failed, first: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(
        left.is_empty(),
        "job processes outlived their answer: {left:?}"
    );
    d.stop();
}

/// The race behind a job that outlived its timeout, made certain by a test-only fault point
/// (debug builds, `LOCALHOSTD_TEST_FAULT`): the helper dies right after forking the job's init
/// and before init sets its parent-death signal. Init must notice and end, and the daemon
/// must answer without waiting on anything init holds; nothing is left below the zygote.
#[test]
fn a_helper_dying_before_init_arms_its_death_signal_still_ends_the_job() {
    if !cfg!(debug_assertions) {
        eprintln!("SKIPPED: the fault point exists in debug builds only");
        return;
    }
    let (mut d, token) = start(true);
    let marker = format!("77.8{}", std::process::id());
    // A deadline every helper reaches its fork (and the fault) well before.
    let failures = storm(&d, &token, &marker, 2 * CLIENTS, 1000);
    let left = marker_pids(&marker);
    let zygotes: Vec<i32> = live_children(d.pid());
    let below: Vec<i32> = zygotes.iter().flat_map(|z| live_children(*z)).collect();
    kill_all(&left);
    kill_all(&below);
    assert!(
        failures.is_empty(),
        "{} of {} requests failed, first: {:?}",
        failures.len(),
        2 * CLIENTS,
        &failures[..failures.len().min(5)]
    );
    assert!(
        left.is_empty(),
        "job processes outlived their answer: {left:?}"
    );
    assert!(
        below.is_empty(),
        "processes left below the zygote: {below:?}"
    );
    d.stop();
}
