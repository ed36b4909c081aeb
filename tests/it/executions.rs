//! Executions (issue 27, background jobs) against the real daemon: `wait: false` answers 202
//! and the job is polled to its end with its output; the output stream replays what a running
//! job wrote and follows it to its result; a cancel ends a running job (no process left) and
//! keeps a queued one from starting; another token's execution is 404; the list's filters;
//! a restart marks the running job interrupted; output is kept for waited runs too (bounded,
//! and not below the free-disk floor) and shown for a program's runs.

use std::io::Read;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Daemon, Options, login_cookie, request_json, token_with};
use crate::http::{self, Response};

fn start(extra: &str) -> (Daemon, String) {
    let d = Daemon::start_with(Options {
        config: format!("[rate-limit]\nenabled = false\n{extra}"),
        ..Options::default()
    });
    let token = d.admin_token();
    (d, token)
}

fn call(d: &Daemon, token: &str, method: &str, path: &str, body: Option<&Value>) -> Response {
    match body {
        Some(b) => request_json(d, method, path, token, b),
        None => {
            let auth = format!("Bearer {token}");
            http::request(&d.tcp, method, path, &[("Authorization", &auth)], b"")
        }
    }
}

/// `POST path` with `body` (`wait: false` added): 202 with `{id, state, location}` and
/// `Location`; returns the id.
fn submit_to(d: &Daemon, token: &str, path: &str, body: Value) -> String {
    let mut body = body;
    body["wait"] = json!(false);
    let r = call(d, token, "POST", path, Some(&body));
    assert_eq!(r.status, 202, "{}", r.text());
    let j = r.json();
    let id = j["id"].as_str().unwrap().to_owned();
    let location = format!("/api/v1/executions/{id}");
    assert_eq!(j["location"], location.as_str(), "{j}");
    assert_eq!(r.header("location"), Some(location.as_str()));
    assert!(j["state"] == "queued" || j["state"] == "running", "{j}");
    id
}

fn submit(d: &Daemon, token: &str, body: Value) -> String {
    submit_to(d, token, "/api/v1/exec", body)
}

fn get(d: &Daemon, token: &str, id: &str) -> Response {
    call(d, token, "GET", &format!("/api/v1/executions/{id}"), None)
}

/// Polls the execution until `done` holds (bounded: a correctness bound, not a timing).
fn wait_for(d: &Daemon, token: &str, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = get(d, token, id);
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        if done(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: {v}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn finished(d: &Daemon, token: &str, id: &str) -> Value {
    wait_for(d, token, id, "not finished", |v| v["state"] == "finished")
}

/// Whether a process whose command line matches `pattern` (pgrep -f) runs.
fn running(pattern: &str) -> bool {
    let o = Command::new("pgrep")
        .args(["-f", pattern])
        .output()
        .unwrap();
    !String::from_utf8_lossy(&o.stdout).trim().is_empty()
}

fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A number no other test's `sleep` uses.
fn marker(offset: u32) -> u32 {
    700_000 + (std::process::id() % 90_000) + offset * 100_000
}

/// Server-Sent Events of a whole stream: (event, data as JSON).
fn events(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter_map(|block| {
            let mut ev = None;
            let mut data = String::new();
            for l in block.lines() {
                if let Some(e) = l.strip_prefix("event: ") {
                    ev = Some(e.to_owned());
                } else if let Some(x) = l.strip_prefix("data: ") {
                    data.push_str(x);
                }
            }
            ev.map(|e| (e, serde_json::from_str(&data).unwrap_or(Value::Null)))
        })
        .collect()
}

/// The concatenated `stdout` and `stderr` data of `evs` (all UTF-8 here).
fn streams(evs: &[(String, Value)]) -> (String, String) {
    let (mut out, mut err) = (String::new(), String::new());
    for (e, v) in evs {
        if e == "stdout" || e == "stderr" {
            assert_eq!(v["encoding"], "utf-8", "{v}");
            let s = v["data"].as_str().unwrap();
            if e == "stdout" {
                out.push_str(s)
            } else {
                err.push_str(s)
            }
        }
    }
    (out, err)
}

/// Opens the output stream of `id`; the caller reads it.
fn open_output(d: &Daemon, token: &str, id: &str) -> Box<dyn http::Stream> {
    let mut s = http::connect(&d.tcp);
    let auth = format!("Bearer {token}");
    http::send_head(
        &mut *s,
        "GET",
        &format!("/api/v1/executions/{id}/output"),
        &[("Authorization", &auth), ("Accept", "text/event-stream")],
        None,
    );
    s
}

/// Reads from `s` into `raw` until `raw` contains every one of `needles`.
fn read_until(s: &mut dyn http::Stream, raw: &mut Vec<u8>, needles: &[&str]) {
    let mut buf = [0u8; 4096];
    while !needles
        .iter()
        .all(|n| String::from_utf8_lossy(raw).contains(n))
    {
        let n = s.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "the stream ended early: {}",
            String::from_utf8_lossy(raw)
        );
        raw.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn a_background_job_answers_202_and_is_polled_to_its_end_with_its_output() {
    let (mut d, token) = start("");
    let id = submit(
        &d,
        &token,
        json!({"command": "echo hello; echo oops >&2; exit 3"}),
    );
    let v = finished(&d, &token, &id);
    assert_eq!(v["status"], "nonzero_exit", "{v}");
    assert_eq!(v["exit_code"], 3, "{v}");
    assert_eq!(v["stdout"], "hello\n", "{v}");
    assert_eq!(v["stdout_encoding"], "utf-8");
    assert_eq!(v["stderr"], "oops\n", "{v}");
    assert_eq!(v["stdout_bytes"], 6);
    assert_eq!(v["output_kept"], true);
    assert!(v["output_reason"].is_null(), "{v}");
    assert!(v["finished_at"].is_string(), "{v}");
    // The output stream of a finished one: the kept stdout, the kept stderr, the result.
    let r = call(
        &d,
        &token,
        "GET",
        &format!("/api/v1/executions/{id}/output"),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let evs = events(&r.text());
    assert_eq!(streams(&evs), ("hello\n".into(), "oops\n".into()));
    let (last, result) = evs.last().unwrap();
    assert_eq!(last, "result");
    assert_eq!(result["status"], "nonzero_exit", "{result}");
    assert_eq!(result["id"], id.as_str());
    // Not found, and not a finished one to cancel.
    assert_eq!(get(&d, &token, "0123456789abcdef").status, 404);
    let r = call(
        &d,
        &token,
        "POST",
        &format!("/api/v1/executions/{id}/cancel"),
        None,
    );
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "conflict");
    d.stop();
}

#[test]
fn the_output_stream_replays_a_running_job_then_follows_it_to_its_result() {
    let (mut d, token) = start("");
    let m = marker(0);
    let id = submit(
        &d,
        &token,
        json!({
            "command": format!("echo out1; sleep 0.5; echo out2; echo err1 >&2; exec sleep {m}"),
            "timeout_ms": 600_000,
        }),
    );
    // out1 is written before the stream opens: replayed.
    wait_for(&d, &token, &id, "no out1 yet", |v| v["stdout"] == "out1\n");
    let mut s = open_output(&d, &token, &id);
    let mut raw = Vec::new();
    read_until(&mut *s, &mut raw, &["out1", "out2", "err1"]);
    // The stream is open while the job runs: the rest follows it live.
    let v = get(&d, &token, &id).json();
    assert_eq!(v["state"], "running", "{v}");
    assert!(v["status"].is_null(), "{v}");
    wait_until("the job's sleep did not start", || {
        running(&format!("^sleep {m}$"))
    });
    let r = call(
        &d,
        &token,
        "POST",
        &format!("/api/v1/executions/{id}/cancel"),
        None,
    );
    assert_eq!(r.status, 202, "{}", r.text());
    s.read_to_end(&mut raw).unwrap();
    let text = http::parse(&raw).text();
    let evs = events(&text);
    assert_eq!(
        streams(&evs),
        ("out1\nout2\n".into(), "err1\n".into()),
        "{text}"
    );
    let (last, result) = evs.last().unwrap();
    assert_eq!(last, "result", "{text}");
    assert_eq!(result["state"], "finished", "{result}");
    assert_eq!(result["status"], "cancelled", "{result}");
    assert!(
        !running(&format!("^sleep {m}$")),
        "the cancelled job is still running"
    );
    d.stop();
}

#[test]
fn a_cancel_ends_a_running_job_and_keeps_a_queued_one_from_starting() {
    let (mut d, token) = start("[exec]\nmax-concurrent = 1\nmax-queue = 1\n");
    let (m1, m2) = (marker(1), marker(1) + 1);
    let first = submit(
        &d,
        &token,
        json!({"argv": ["sleep", m1.to_string()], "timeout_ms": 600_000}),
    );
    wait_until("the first job did not start", || {
        running(&format!("^sleep {m1}$"))
    });
    let second = submit(
        &d,
        &token,
        json!({"argv": ["sleep", m2.to_string()], "timeout_ms": 600_000}),
    );
    let v = get(&d, &token, &second).json();
    assert_eq!(v["state"], "queued", "{v}");
    // The queue is full: the same 429 as a waited job gets.
    let r = call(
        &d,
        &token,
        "POST",
        "/api/v1/exec",
        Some(&json!({"argv": ["true"], "wait": false})),
    );
    assert_eq!(r.status, 429, "{}", r.text());
    let list = call(&d, &token, "GET", "/api/v1/executions?state=queued", None).json();
    let ids: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [second.as_str()], "{list}");

    // The queued one: cancelled, it never starts, even once the slot is free.
    let r = call(
        &d,
        &token,
        "POST",
        &format!("/api/v1/executions/{second}/cancel"),
        None,
    );
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.json()["state"], "queued");
    let v = finished(&d, &token, &second);
    assert_eq!(v["status"], "cancelled", "{v}");
    assert_eq!(v["wall_ms"], 0, "{v}");
    // The running one: killed with everything it started.
    let r = call(
        &d,
        &token,
        "POST",
        &format!("/api/v1/executions/{first}/cancel"),
        None,
    );
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.json()["state"], "running");
    let v = finished(&d, &token, &first);
    assert_eq!(v["status"], "cancelled", "{v}");
    assert_eq!(v["signal"], "SIGKILL", "{v}");
    wait_until("the cancelled job left its process", || {
        !running(&format!("^sleep {m1}$"))
    });
    assert!(
        !running(&format!("^sleep {m2}$")),
        "the cancelled queued job ran"
    );
    // The slot is free again and nothing is queued.
    let r = call(
        &d,
        &token,
        "POST",
        "/api/v1/exec",
        Some(&json!({"argv": ["true"]})),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        !running(&format!("^sleep {m2}$")),
        "the cancelled queued job ran"
    );
    let audit = call(
        &d,
        &token,
        "GET",
        "/api/v1/audit?action=execution.cancel",
        None,
    )
    .json();
    assert_eq!(audit["items"].as_array().unwrap().len(), 2, "{audit}");
    d.stop();
}

#[test]
fn an_execution_is_its_tokens_and_admins_and_the_list_filters() {
    let (mut d, admin) = start("");
    let alice = token_with(&d, &admin, "alice", &["read", "exec"]);
    let bob = token_with(&d, &admin, "bob", &["read", "exec"]);
    let mine = submit(&d, &alice, json!({"argv": ["echo", "alice"]}));
    let waited = call(
        &d,
        &alice,
        "POST",
        "/api/v1/exec",
        Some(&json!({"argv": ["echo", "again"]})),
    );
    assert_eq!(waited.status, 200, "{}", waited.text());
    let waited = waited.json()["id"].as_str().unwrap().to_owned();
    let theirs = submit(&d, &bob, json!({"argv": ["echo", "bob"]}));
    finished(&d, &alice, &mine);
    finished(&d, &bob, &theirs);

    // Bob: not found, whatever he asks of it.
    for (method, path) in [
        ("GET", format!("/api/v1/executions/{mine}")),
        ("GET", format!("/api/v1/executions/{mine}/output")),
        ("POST", format!("/api/v1/executions/{mine}/cancel")),
    ] {
        let r = call(&d, &bob, method, &path, None);
        assert_eq!(r.status, 404, "{method} {path}: {}", r.text());
        assert_eq!(r.json()["error"]["code"], "not_found");
    }
    // Admin sees it, output and all.
    let v = get(&d, &admin, &mine).json();
    assert_eq!(v["stdout"], "alice\n", "{v}");
    assert_eq!(v["actor"], "alice");
    // A browser login made with alice's token is alice.
    let cookie = login_cookie(&d, &alice);
    let r = http::request(
        &d.tcp,
        "GET",
        &format!("/api/v1/executions/{mine}"),
        &[("Cookie", &cookie)],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["stdout"], "alice\n");

    let ids = |token: &str, query: &str| -> Vec<String> {
        let r = call(
            &d,
            token,
            "GET",
            &format!("/api/v1/executions{query}"),
            None,
        );
        assert_eq!(r.status, 200, "{query}: {}", r.text());
        r.json()["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                assert!(i.get("stdout").is_none(), "the list carries output: {i}");
                i["id"].as_str().unwrap().to_owned()
            })
            .collect()
    };
    assert_eq!(ids(&alice, ""), [waited.as_str(), mine.as_str()]);
    assert_eq!(ids(&bob, ""), [theirs.as_str()]);
    assert_eq!(
        ids(&admin, ""),
        [theirs.as_str(), waited.as_str(), mine.as_str()]
    );
    assert_eq!(ids(&admin, "?actor=bob"), [theirs.as_str()]);
    assert_eq!(ids(&admin, "?actor=alice&limit=1"), [waited.as_str()]);
    assert_eq!(
        ids(&alice, "?state=finished"),
        [waited.as_str(), mine.as_str()]
    );
    assert!(ids(&alice, "?state=running").is_empty());
    assert!(ids(&admin, "?since=2999-01-01T00:00:00Z").is_empty());
    assert!(ids(&admin, "?until=2000-01-01T00:00:00Z").is_empty());
    assert_eq!(
        ids(
            &admin,
            "?since=2000-01-01T00:00:00Z&until=2999-01-01T00:00:00Z"
        )
        .len(),
        3
    );
    assert!(ids(&admin, "?program=0123456789abcdef").is_empty());
    for bad in ["?state=done", "?since=yesterday", "?until=1"] {
        let r = call(&d, &admin, "GET", &format!("/api/v1/executions{bad}"), None);
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
    }
    // A token without `exec` cannot reach one execution at all.
    let reader = token_with(&d, &admin, "reader", &["read"]);
    assert_eq!(get(&d, &reader, &mine).status, 403);
    d.stop();
}

#[test]
fn output_is_kept_for_waited_runs_bounded_and_shown_for_a_programs_runs() {
    let (mut d, token) = start("[exec]\nkeep-output-size = \"1KiB\"\n");
    // A waited command keeps its output too.
    let r = call(
        &d,
        &token,
        "POST",
        "/api/v1/exec",
        Some(&json!({"command": "echo waited; echo warn >&2"})),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let v = get(&d, &token, &id).json();
    assert_eq!(
        (v["stdout"].as_str(), v["stderr"].as_str()),
        (Some("waited\n"), Some("warn\n"))
    );
    // Past exec.keep-output-size: the first bytes are kept, the record says so.
    let r = call(
        &d,
        &token,
        "POST",
        "/api/v1/exec",
        Some(&json!({"command": "head -c 3000 /dev/zero | tr '\\0' x"})),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    assert_eq!(
        j["stdout"].as_str().unwrap().len(),
        3000,
        "the answer is whole"
    );
    let v = get(&d, &token, j["id"].as_str().unwrap()).json();
    assert_eq!(v["stdout"].as_str().unwrap(), "x".repeat(1024));
    assert_eq!(v["stdout_bytes"], 3000);
    assert_eq!(v["output_kept"], true);
    assert!(
        v["output_reason"]
            .as_str()
            .is_some_and(|r| r.contains("exec.keep-output-size")),
        "{v}"
    );

    // A program's runs, waited for and not: the history lists them light, each has its output.
    let auth = format!("Bearer {token}");
    let up = http::request(
        &d.tcp,
        "POST",
        "/api/v1/programs?name=hello.py",
        &[("Authorization", &auth), ("Content-Type", "text/x-python")],
        b"import sys\nprint('hello', *sys.argv[1:])\nprint('to err', file=sys.stderr)\n",
    );
    assert_eq!(up.status, 201, "{}", up.text());
    let pid = up.json()["id"].as_str().unwrap().to_owned();
    let runs_path = format!("/api/v1/programs/{pid}/runs");
    let r = call(
        &d,
        &token,
        "POST",
        &runs_path,
        Some(&json!({"args": ["one"]})),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let waited = r.json()["id"].as_str().unwrap().to_owned();
    let bg = submit_to(&d, &token, &runs_path, json!({"args": ["two"]}));
    let v = finished(&d, &token, &bg);
    assert_eq!(v["status"], "ok", "{v}");
    assert_eq!(v["kind"], "program");
    assert_eq!(v["stdout"], "hello two\n", "{v}");
    assert_eq!(v["stderr"], "to err\n", "{v}");
    let runs = call(&d, &token, "GET", &runs_path, None).json();
    let items = runs["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{runs}");
    assert_eq!(items[0]["id"], bg.as_str());
    assert_eq!(items[1]["id"], waited.as_str());
    assert_eq!(items[1]["stdout_bytes"], 10);
    assert!(
        items[1].get("stdout").is_none(),
        "the history carries output: {runs}"
    );
    let v = get(&d, &token, &waited).json();
    assert_eq!(v["stdout"], "hello one\n", "{v}");
    let listed = call(
        &d,
        &token,
        "GET",
        &format!("/api/v1/executions?program={pid}"),
        None,
    )
    .json();
    assert_eq!(listed["items"].as_array().unwrap().len(), 2, "{listed}");
    let p = call(&d, &token, "GET", &format!("/api/v1/programs/{pid}"), None).json();
    assert_eq!(p["run_count"], 2, "{p}");

    // Below the free-disk floor, the output is not kept and the record says why.
    let state = d.state_dir();
    std::fs::write(
        &d.config_path,
        format!(
            "state-dir = {:?}\n[rate-limit]\nenabled = false\n[storage]\nmin-free-disk = {}\n",
            state.display().to_string(),
            u64::MAX / 4
        ),
    )
    .unwrap();
    d.signal(libc::SIGHUP);
    wait_until("the floor was not reloaded", || {
        d.logs().contains("configuration reloaded")
    });
    let r = call(
        &d,
        &token,
        "POST",
        "/api/v1/exec",
        Some(&json!({"argv": ["echo", "lost"]})),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["stdout"], "lost\n", "the answer still has it");
    let v = get(&d, &token, r.json()["id"].as_str().unwrap()).json();
    assert_eq!(v["output_kept"], false, "{v}");
    assert_eq!(v["stdout"], "", "{v}");
    assert!(
        v["output_reason"]
            .as_str()
            .is_some_and(|r| r.contains("storage.min-free-disk")),
        "{v}"
    );
    d.stop();
}

/// A restart on the same state directory.
fn restart(d: Daemon) -> Daemon {
    let mut d = d;
    let dir = std::mem::replace(&mut d.dir, tempfile::tempdir().unwrap());
    drop(d);
    // The listening socket's file the test bound for the first daemon.
    let _ = std::fs::remove_file(dir.path().join("http.sock"));
    Daemon::start_with(Options {
        config: "[rate-limit]\nenabled = false\n".into(),
        dir: Some(dir),
        ..Options::default()
    })
}

#[test]
fn a_job_running_when_the_daemon_stops_or_dies_is_recorded_interrupted() {
    let (mut d, token) = start("");
    let (m1, m2) = (marker(2), marker(2) + 1);
    // Stopped (SIGTERM): the job is ended with the daemon and recorded as it goes.
    let id1 = submit(
        &d,
        &token,
        json!({"command": format!("echo before; exec sleep {m1}"), "timeout_ms": 600_000}),
    );
    wait_until("the job did not start", || {
        running(&format!("^sleep {m1}$"))
    });
    d.stop();
    assert!(
        !running(&format!("^sleep {m1}$")),
        "the job outlived the daemon"
    );
    let d = restart(d);
    let v = get(&d, &token, &id1).json();
    assert_eq!(v["state"], "finished", "{v}");
    assert_eq!(v["status"], "interrupted", "{v}");
    assert_eq!(v["stdout"], "before\n", "{v}");

    // Killed (SIGKILL): nothing records it then; the next start does, and does not run it.
    let id2 = submit(
        &d,
        &token,
        json!({"argv": ["sleep", m2.to_string()], "timeout_ms": 600_000}),
    );
    wait_until("the job did not start", || {
        running(&format!("^sleep {m2}$"))
    });
    d.signal(libc::SIGKILL);
    let mut d = d;
    let _ = d.wait_exit(Duration::from_secs(10));
    wait_until("the job outlived the daemon", || {
        !running(&format!("^sleep {m2}$"))
    });
    let mut d = restart(d);
    let v = get(&d, &token, &id2).json();
    assert_eq!(v["state"], "finished", "{v}");
    assert_eq!(v["status"], "interrupted", "{v}");
    assert_eq!(v["output_kept"], false, "{v}");
    assert!(
        !running(&format!("^sleep {m2}$")),
        "the interrupted job was run again"
    );
    assert!(
        d.logs().contains("recorded as interrupted"),
        "no log line:\n{}",
        d.logs()
    );
    d.stop();
}
