//! Terminal sessions through the real daemon (issue 25): a shell and `python3 -i` driven over
//! WebSocket (typing, resize, Ctrl-C as a byte and as a signal message, the exit status),
//! detach and reattach with the scrollback, the HTTP fallback alone, a stored program that
//! asks for input, every way a session ends leaving no process (idle timeout, lifetime,
//! DELETE, the daemon killed), access (another token's session is 404, a cookie-authenticated
//! attach from a foreign Origin is refused), limits, the recording as asciicast v2,
//! confinement inside a session, and an output flood with a client that never reads.

use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tungstenite::client::IntoClientRequest;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

use crate::harness::{Daemon, login_cookie, request_as, request_json, token_with};
use crate::http::{self, Target};

fn addr(d: &Daemon) -> std::net::SocketAddr {
    match &d.tcp {
        Target::Tcp(a) => *a,
        Target::Unix(_) => panic!("a TCP listener is needed"),
    }
}

/// `POST /api/v1/terminals` with `body`; the 201 answer.
fn create(d: &Daemon, token: &str, body: Value) -> Value {
    let r = request_json(d, "POST", "/api/v1/terminals", token, &body);
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()
}

fn get(d: &Daemon, token: &str, path: &str) -> http::Response {
    request_as(&d.tcp, &format!("Bearer {token}"), "GET", path, None, b"")
}

fn post_bytes(d: &Daemon, token: &str, path: &str, body: &[u8]) -> http::Response {
    request_as(
        &d.tcp,
        &format!("Bearer {token}"),
        "POST",
        path,
        Some("application/octet-stream"),
        body,
    )
}

/// Whether a process whose command line matches `pattern` (pgrep -f) runs.
fn running(pattern: &str) -> bool {
    let o = Command::new("pgrep")
        .args(["-f", pattern])
        .output()
        .unwrap();
    !String::from_utf8_lossy(&o.stdout).trim().is_empty()
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A WebSocket client attached to a session: the terminal's output as read so far, and the
/// control messages the server sent.
#[derive(Debug)]
struct Ws {
    ws: WebSocket<TcpStream>,
    seen: String,
    controls: Vec<Value>,
    closed: Option<(CloseCode, String)>,
}

fn attach_with(d: &Daemon, id: &str, query: &str, headers: &[(&str, &str)]) -> Ws {
    try_attach(d, id, query, headers).unwrap_or_else(|e| panic!("attach: {e}"))
}

fn try_attach(
    d: &Daemon,
    id: &str,
    query: &str,
    headers: &[(&str, &str)],
) -> Result<Ws, tungstenite::Error> {
    let a = addr(d);
    let mut req = format!("ws://{a}/api/v1/terminals/{id}/attach{query}")
        .into_client_request()
        .unwrap();
    for (k, v) in headers {
        req.headers_mut().insert(
            http_name(k),
            tungstenite::http::HeaderValue::from_str(v).unwrap(),
        );
    }
    let stream = TcpStream::connect(a).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let (ws, _) = tungstenite::client::client(req, stream).map_err(|e| match e {
        tungstenite::HandshakeError::Failure(e) => e,
        tungstenite::HandshakeError::Interrupted(_) => {
            tungstenite::Error::Io(std::io::ErrorKind::WouldBlock.into())
        }
    })?;
    Ok(Ws {
        ws,
        seen: String::new(),
        controls: Vec::new(),
        closed: None,
    })
}

fn http_name(k: &str) -> tungstenite::http::HeaderName {
    tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap()
}

fn attach(d: &Daemon, token: &str, id: &str, write: bool) -> Ws {
    let auth = format!("Bearer {token}");
    attach_with(
        d,
        id,
        if write { "?write=true" } else { "" },
        &[("Authorization", &auth)],
    )
}

impl Ws {
    /// Reads one message (or nothing within the socket's read timeout).
    fn pump(&mut self) {
        match self.ws.read() {
            Ok(Message::Binary(b)) => self.seen.push_str(&String::from_utf8_lossy(&b)),
            Ok(Message::Text(t)) => self.controls.push(serde_json::from_str(&t).unwrap()),
            Ok(Message::Close(f)) => {
                self.closed = Some(
                    f.map(|f| (f.code, f.reason.to_string()))
                        .unwrap_or((CloseCode::Status, String::new())),
                );
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                if self.closed.is_none() {
                    self.closed = Some((CloseCode::Abnormal, "closed".into()));
                }
            }
            Err(e) => {
                if self.closed.is_none() {
                    self.closed = Some((CloseCode::Abnormal, e.to_string()));
                }
            }
        }
    }

    /// Reads until the output holds `needle`; returns it up to and including the needle.
    fn expect(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(at) = self.seen.find(needle) {
                return self.seen.drain(..at + needle.len()).collect();
            }
            assert!(
                Instant::now() < deadline && self.closed.is_none(),
                "no {needle:?} in the output; got {:?} (closed: {:?})",
                self.seen,
                self.closed
            );
            self.pump();
        }
    }

    /// Reads until a control message of `kind` comes.
    fn control(&mut self, kind: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(i) = self.controls.iter().position(|c| c["type"] == kind) {
                return self.controls.remove(i);
            }
            assert!(
                Instant::now() < deadline && self.closed.is_none(),
                "no {kind} message; controls {:?}, output {:?}, closed {:?}",
                self.controls,
                self.seen,
                self.closed
            );
            self.pump();
        }
    }

    /// Reads until the server closes; its code and reason.
    fn close_frame(&mut self) -> (CloseCode, String) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.closed.is_none() {
            assert!(Instant::now() < deadline, "not closed: {:?}", self.seen);
            self.pump();
        }
        self.closed.clone().unwrap()
    }

    fn send(&mut self, bytes: &[u8]) {
        self.ws
            .send(Message::Binary(bytes.to_vec().into()))
            .unwrap();
    }

    fn type_line(&mut self, line: &str) {
        self.send(format!("{line}\n").as_bytes());
    }

    fn control_send(&mut self, v: Value) {
        self.ws.send(Message::Text(v.to_string().into())).unwrap();
    }

    /// Types `line` and returns the lines printed before `marker` (written `EN''D` in the
    /// command, so the echo of the typed line never matches). A line may start with the
    /// shell's prompt, which can come before or after the echo of what was typed.
    fn run(&mut self, line: &str, marker: &str) -> Vec<String> {
        self.type_line(line);
        lines(&self.expect(marker))
    }
}

fn lines(s: &str) -> Vec<String> {
    s.split("\r\n").map(str::to_owned).collect()
}

#[test]
fn a_shell_and_python_over_websocket_type_resize_interrupt_exit_and_are_recorded() {
    let mut d = Daemon::start();
    let token = d.admin_token();
    let s = create(
        &d,
        &token,
        json!({"argv": ["/bin/sh"], "cols": 100, "rows": 30, "env": {"PS1": "$ "}}),
    );
    let id = s["id"].as_str().unwrap().to_owned();
    assert_eq!(s["state"], "running");
    assert_eq!(
        s["urls"]["attach"],
        format!("/api/v1/terminals/{id}/attach")
    );
    let mut t = attach(&d, &token, &id, true);
    let hello = t.control("attached");
    assert_eq!(hello["writer"], true);
    t.expect("$ ");
    let out = t.run("echo hi-EN''D1", "hi-END1");
    assert!(out.iter().any(|l| l.ends_with("hi-END1")), "{out:?}");
    let out = t.run("stty size; echo EN''D2", "END2");
    assert!(out.iter().any(|l| l.ends_with("30 100")), "{out:?}");

    // Resize by control message: the job's terminal has the new size.
    t.control_send(json!({"type": "resize", "cols": 120, "rows": 40}));
    let out = t.run("stty size; echo EN''D3", "END3");
    assert!(
        out.iter().any(|l| l.ends_with("40 120")),
        "after resize: {out:?}"
    );

    // Ctrl-C as a byte interrupts a running sleep; the shell goes on.
    t.type_line("sleep 100");
    std::thread::sleep(Duration::from_millis(500));
    t.send(b"\x03");
    // (Typed while the sleep ran, the line may be echoed before the next prompt, whose line
    // the output then shares.)
    let out = t.run("echo alive-EN''D4", "alive-END4");
    assert!(out.iter().any(|l| l.ends_with("alive-END4")), "{out:?}");
    // …and as a signal message.
    t.type_line("sleep 100");
    std::thread::sleep(Duration::from_millis(500));
    t.control_send(json!({"type": "signal", "name": "INT"}));
    let out = t.run("echo alive-EN''D5", "alive-END5");
    assert!(out.iter().any(|l| l.ends_with("alive-END5")), "{out:?}");
    // A signal a terminal cannot send is refused, the connection stays.
    t.control_send(json!({"type": "signal", "name": "KILL"}));
    let err = t.control("error");
    assert_eq!(err["code"], "bad_request", "{err}");

    // `exit 3`: the exit message, then a normal close; the session says so.
    t.type_line("exit 3");
    let exit = t.control("exit");
    assert_eq!(exit["code"], 3, "{exit}");
    assert_eq!(exit["reason"], "exited", "{exit}");
    let (code, _) = t.close_frame();
    assert_eq!(code, CloseCode::Normal);
    let info = get(&d, &token, &format!("/api/v1/terminals/{id}")).json();
    assert_eq!(info["state"], "ended", "{info}");
    assert_eq!(info["exit_code"], 3, "{info}");
    assert!(info["bytes_in"].as_u64().unwrap() > 20, "{info}");

    // The recording: asciicast v2, the output in its "o" events, a resize event.
    let r = get(&d, &token, &format!("/api/v1/terminals/{id}/recording"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/x-asciicast"));
    let text = r.text();
    let mut rec = text.lines();
    let head: Value = serde_json::from_str(rec.next().unwrap()).unwrap();
    assert_eq!(head["version"], 2, "{head}");
    assert_eq!(
        (head["width"].as_u64(), head["height"].as_u64()),
        (Some(100), Some(30))
    );
    assert_eq!(head["env"]["TERM"], "xterm-256color");
    let mut output = String::new();
    let mut last_t = 0.0;
    let mut resized = false;
    for line in rec {
        let ev: Value = serde_json::from_str(line).unwrap();
        let t = ev[0].as_f64().unwrap();
        assert!(t >= last_t, "times go forward: {line}");
        last_t = t;
        match ev[1].as_str().unwrap() {
            "o" => output.push_str(ev[2].as_str().unwrap()),
            "r" => resized |= ev[2] == "120x40",
            other => panic!("unexpected event {other}: {line}"),
        }
    }
    assert!(
        output.contains("hi-END1") && output.contains("40 120"),
        "{output:?}"
    );
    assert!(resized, "no resize event");
    let cast = d.state_dir().join(format!("terminals/{id}.cast"));
    assert!(cast.is_file());
    // `asciinema cat` opens /dev/tty: `script` gives it a terminal of its own.
    let play = format!("asciinema cat {}", cast.display());
    match Command::new("asciinema").arg("--version").output() {
        Ok(_) => {
            let o = Command::new("script")
                .args(["-q", "-e", "-c", &play, "/dev/null"])
                .stdin(std::process::Stdio::null())
                .output()
                .unwrap();
            let shown = String::from_utf8_lossy(&o.stdout);
            assert!(
                o.status.success() && shown.contains("hi-END1"),
                "asciinema cat: {shown:?} {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        Err(e) => eprintln!("SKIPPED asciinema cat: asciinema is not installed ({e})"),
    }

    // python3 -i: a dialogue, then exit() ends it with status 0.
    let s = create(&d, &token, json!({"argv": ["python3", "-i", "-q"]}));
    let id = s["id"].as_str().unwrap().to_owned();
    let mut t = attach(&d, &token, &id, true);
    t.expect(">>> ");
    t.type_line("print(6 * 7)");
    t.expect("42\r\n");
    t.expect(">>> ");
    t.type_line("exit()");
    let exit = t.control("exit");
    assert_eq!(exit["code"], 0, "{exit}");
    d.stop();
}

#[test]
fn a_reattached_client_gets_the_scrollback_then_live_output_and_one_writer_types() {
    // A short header timeout: an attached WebSocket is no request in flight, and must not be
    // closed as an idle connection.
    let mut d = Daemon::start_config("[server]\nheader-timeout = \"1s\"\n");
    let token = d.admin_token();
    let s = create(
        &d,
        &token,
        json!({"argv": ["/bin/sh"], "env": {"PS1": "$ "}}),
    );
    let id = s["id"].as_str().unwrap().to_owned();
    let mut t = attach(&d, &token, &id, true);
    t.expect("$ ");
    t.run("echo one-EN''D", "one-END");
    // A second client is a viewer while the first holds the keyboard.
    let mut viewer = attach(&d, &token, &id, true);
    assert_eq!(viewer.control("attached")["writer"], false);
    viewer.send(b"echo nope\n");
    let refused = viewer.control("error");
    assert_eq!(refused["code"], "conflict");
    let why = refused["message"].as_str().unwrap_or_default();
    assert!(why.contains("another client holds"), "{refused}");
    // A client that attached to watch is told how to type instead.
    let mut watcher = attach(&d, &token, &id, false);
    assert_eq!(watcher.control("attached")["writer"], false);
    watcher.send(b"echo nope\n");
    let refused = watcher.control("error");
    assert_eq!(refused["code"], "conflict");
    let why = refused["message"].as_str().unwrap_or_default();
    assert!(why.contains("?write=true"), "{refused}");
    drop(watcher);
    // So is HTTP input.
    let path = format!("/api/v1/terminals/{id}/input");
    assert_eq!(post_bytes(&d, &token, &path, b"echo x\n").status, 409);
    drop(viewer);
    // Detach; output produced meanwhile waits in the scrollback.
    drop(t);
    std::thread::sleep(Duration::from_millis(300));
    let r = post_bytes(&d, &token, &path, b"echo two-EN''D\n");
    assert_eq!(r.status, 204, "{}", r.text());
    wait_until("no output while detached", Duration::from_secs(10), || {
        let o = get(
            &d,
            &token,
            &format!("/api/v1/terminals/{id}/output?wait_ms=0"),
        )
        .json();
        o["data"].as_str().unwrap_or("").contains("two-END")
    });
    let mut again = attach(&d, &token, &id, true);
    let replay = again.expect("two-END");
    assert!(replay.contains("one-END"), "scrollback: {replay:?}");
    // Then live output.
    std::thread::sleep(Duration::from_millis(2500));
    let out = again.run("echo three-EN''D", "three-END");
    assert!(out.iter().any(|l| l.ends_with("three-END")), "{out:?}");
    let info = get(&d, &token, &format!("/api/v1/terminals/{id}")).json();
    assert_eq!(info["attached"], 1, "{info}");
    d.stop();
}

/// The HTTP fallback alone: input, output?since= (long poll), resize, signal, the exit.
#[test]
fn the_http_fallback_runs_the_same_dialogue() {
    let mut d = Daemon::start();
    let token = d.admin_token();
    let s = create(
        &d,
        &token,
        json!({"command": "exec /bin/sh", "env": {"PS1": "$ "}, "cols": 90, "rows": 20}),
    );
    let id = s["id"].as_str().unwrap().to_owned();
    let base = format!("/api/v1/terminals/{id}");
    let mut since = 0u64;
    let mut seen = String::new();
    let mut read_until = |needle: &str| -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(at) = seen.find(needle) {
                return seen.drain(..at + needle.len()).collect();
            }
            assert!(Instant::now() < deadline, "no {needle:?}: {seen:?}");
            let r = get(
                &d,
                &token,
                &format!("{base}/output?since={since}&wait_ms=2000"),
            );
            assert_eq!(r.status, 200, "{}", r.text());
            let o = r.json();
            assert_eq!(o["from"], since, "{o}");
            assert_eq!(o["lost"], 0, "{o}");
            since = o["next"].as_u64().unwrap();
            assert_eq!(o["encoding"], "utf-8");
            seen.push_str(o["data"].as_str().unwrap());
            if !o["exit"].is_null() {
                seen.push_str(&format!("\u{0}EXIT {}", o["exit"]));
            }
        }
    };
    read_until("$ ");
    let input = |bytes: &[u8]| {
        let r = post_bytes(&d, &token, &format!("{base}/input"), bytes);
        assert_eq!(r.status, 204, "{}", r.text());
    };
    input(b"stty size; echo EN''D1\n");
    assert!(read_until("END1").contains("20 90"));
    let r = request_json(
        &d,
        "POST",
        &format!("{base}/resize"),
        &token,
        &json!({"cols": 132, "rows": 43}),
    );
    assert_eq!(r.status, 204, "{}", r.text());
    input(b"stty size; echo EN''D2\n");
    assert!(read_until("END2").contains("43 132"));
    input(b"sleep 100\n");
    std::thread::sleep(Duration::from_millis(500));
    let r = request_json(
        &d,
        "POST",
        &format!("{base}/signal"),
        &token,
        &json!({"name": "INT"}),
    );
    assert_eq!(r.status, 204, "{}", r.text());
    input(b"echo back-EN''D3\n");
    read_until("back-END3");
    // Ctrl-C as a byte at the prompt: the shell prints a new one (typing on before it would
    // race the line discipline's flush of pending input).
    input(b"\x03");
    read_until("^C");
    read_until("$ ");
    input(b"exit 7\n");
    let end = read_until("EXIT ");
    assert!(end.contains('\u{0}'), "{end:?}");
    let tail = read_until("}");
    let exit: Value = serde_json::from_str(&tail).unwrap();
    assert_eq!(exit["code"], 7, "{exit}");
    // Input after the end is refused.
    let r = post_bytes(&d, &token, &format!("{base}/input"), b"x");
    assert_eq!(r.status, 409, "{}", r.text());
    // The same output as Server-Sent Events: output events from the offset asked for, then
    // the exit, then the stream ends.
    let auth = format!("Bearer {token}");
    let r = http::request(
        &d.tcp,
        "GET",
        &format!("{base}/output?since=0"),
        &[("Authorization", &auth), ("Accept", "text/event-stream")],
        b"",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let events = r.text();
    let mut output = String::new();
    let mut exit = None;
    let mut kind = "";
    for line in events.lines() {
        if let Some(k) = line.strip_prefix("event: ") {
            kind = if k == "output" { "output" } else { "exit" };
            assert!(k == "output" || k == "exit", "{events}");
        } else if let Some(data) = line.strip_prefix("data: ") {
            let v: Value = serde_json::from_str(data).unwrap();
            if kind == "output" {
                output.push_str(v["data"].as_str().unwrap());
            } else {
                exit = Some(v);
            }
        }
    }
    assert!(
        output.contains("43 132") && output.contains("back-END3"),
        "{events}"
    );
    assert_eq!(exit.unwrap()["code"], 7, "{events}");
    d.stop();
}

#[test]
fn a_stored_program_that_asks_for_input_is_answered_through_a_session() {
    let mut d = Daemon::start();
    let token = d.admin_token();
    let r = request_as(
        &d.tcp,
        &format!("Bearer {token}"),
        "POST",
        "/api/v1/programs?name=ask.py",
        Some("application/octet-stream"),
        b"import os\nname = input('name? ')\nprint('hello ' + name, os.getcwd())\n",
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let pid = r.json()["id"].as_str().unwrap().to_owned();
    let r = request_json(
        &d,
        "POST",
        &format!("/api/v1/programs/{pid}/terminals"),
        &token,
        &json!({}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let s = r.json();
    assert_eq!(s["kind"], "program");
    assert_eq!(s["program_id"], pid.as_str());
    let id = s["id"].as_str().unwrap().to_owned();
    let mut t = attach(&d, &token, &id, true);
    t.expect("name? ");
    t.type_line("bob");
    t.expect("hello bob /work");
    assert_eq!(t.control("exit")["code"], 0);
    // While a session of the program runs, deleting the program is refused (409); with
    // force it ends the session ("program deleted") and then deletes.
    let r = request_json(
        &d,
        "POST",
        &format!("/api/v1/programs/{pid}/terminals"),
        &token,
        &json!({}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let mut t = attach(&d, &token, &id, true);
    t.expect("name? ");
    let del = |q: &str| {
        request_as(
            &d.tcp,
            &format!("Bearer {token}"),
            "DELETE",
            &format!("/api/v1/programs/{pid}{q}"),
            None,
            b"",
        )
    };
    let r = del("");
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains("in progress"), "{}", r.text());
    let r = del("?force=true");
    assert_eq!(r.status, 204, "{}", r.text());
    let info = get(&d, &token, &format!("/api/v1/terminals/{id}")).json();
    assert_eq!(info["state"], "ended", "{info}");
    assert_eq!(info["end_reason"], "program deleted", "{info}");
    drop(t);
    // An unknown program is 404.
    let r = request_json(
        &d,
        "POST",
        "/api/v1/programs/nope/terminals",
        &token,
        &json!({}),
    );
    assert_eq!(r.status, 404, "{}", r.text());
    d.stop();
}

#[test]
fn idle_timeout_lifetime_delete_and_a_killed_daemon_leave_no_process() {
    let d = Daemon::start();
    let token = d.admin_token();
    let marker = 700_000 + (std::process::id() % 90_000);
    let start = |n: u32, extra: Value| -> String {
        let mut body = json!({"command": format!("sleep {n}")});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let id = create(&d, &token, body)["id"].as_str().unwrap().to_owned();
        wait_until(
            "the session's job did not start",
            Duration::from_secs(10),
            || running(&format!("^sleep {n}$")),
        );
        id
    };
    let ended = |id: &str, reason: &str, n: u32| {
        wait_until(
            &format!("session {id} did not end with {reason}"),
            Duration::from_secs(15),
            || get(&d, &token, &format!("/api/v1/terminals/{id}")).json()["state"] == "ended",
        );
        let info = get(&d, &token, &format!("/api/v1/terminals/{id}")).json();
        assert_eq!(info["end_reason"], reason, "{info}");
        assert!(
            !running(&format!("^sleep {n}$")),
            "{reason} left the job running"
        );
    };
    let idle = start(marker, json!({"idle_timeout_s": 1}));
    ended(&idle, "idle timeout", marker);
    let life = start(marker + 1, json!({"lifetime_s": 2}));
    // An attached client does not keep a session past its lifetime.
    let mut t = attach(&d, &token, &life, false);
    let exit = t.control("exit");
    assert_eq!(exit["reason"], "lifetime");
    ended(&life, "lifetime", marker + 1);
    let del = start(marker + 2, json!({}));
    let r = request_as(
        &d.tcp,
        &format!("Bearer {token}"),
        "DELETE",
        &format!("/api/v1/terminals/{del}"),
        None,
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["end_reason"], "deleted");
    assert!(
        !running(&format!("^sleep {}$", marker + 2)),
        "DELETE left the job running"
    );
    // Killing the daemon: nothing of the session survives it; the next start says why it
    // ended.
    let kept = start(marker + 3, json!({}));
    d.signal(libc::SIGKILL);
    wait_until(
        "a session's job outlived the daemon",
        Duration::from_secs(5),
        || !running(&format!("^sleep {}$", marker + 3)),
    );
    let mut d = d;
    let _ = d.wait_exit(Duration::from_secs(5));
    let dir = std::mem::replace(&mut d.dir, tempfile::tempdir().unwrap());
    // The listening socket's file the test bound for the first daemon.
    let _ = std::fs::remove_file(dir.path().join("http.sock"));
    let d2 = Daemon::start_with(crate::harness::Options {
        dir: Some(dir),
        ..Default::default()
    });
    let info = get(&d2, &token, &format!("/api/v1/terminals/{kept}")).json();
    assert_eq!(info["state"], "ended", "{info}");
    assert_eq!(info["end_reason"], "daemon stopped", "{info}");
    let list = get(&d2, &token, "/api/v1/terminals").json();
    assert_eq!(list["items"].as_array().unwrap().len(), 4, "{list}");
    let mut d2 = d2;
    d2.stop();
}

#[test]
fn access_is_per_token_and_a_foreign_origin_cookie_attach_is_refused() {
    let mut d =
        Daemon::start_config("[terminals]\nmax-per-token = 1\nmax-message-size = \"1KiB\"\n");
    let admin = d.admin_token();
    let alice = token_with(&d, &admin, "alice", &["exec"]);
    let bob = token_with(&d, &admin, "bob", &["exec"]);
    let reader = token_with(&d, &admin, "reader", &["read"]);
    let s = create(
        &d,
        &alice,
        json!({"argv": ["/bin/sh"], "env": {"PS1": "$ "}}),
    );
    let id = s["id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/terminals/{id}");
    // Another token: 404 everywhere, and its list is empty; admin sees it.
    assert_eq!(get(&d, &bob, &path).status, 404);
    assert_eq!(
        post_bytes(&d, &bob, &format!("{path}/input"), b"x").status,
        404
    );
    assert_eq!(get(&d, &bob, &format!("{path}/recording")).status, 404);
    let e = try_attach(&d, &id, "", &[("Authorization", &format!("Bearer {bob}"))]);
    assert!(
        matches!(e, Err(tungstenite::Error::Http(ref r)) if r.status() == 404),
        "{e:?}"
    );
    assert_eq!(
        get(&d, &bob, "/api/v1/terminals").json()["items"],
        json!([])
    );
    assert_eq!(
        get(&d, &alice, "/api/v1/terminals").json()["items"][0]["id"],
        id.as_str()
    );
    assert_eq!(get(&d, &admin, &path).status, 200);
    // Without the exec scope: 403.
    assert_eq!(get(&d, &reader, &path).status, 403);

    // Limits answer with their errors: the per-token count, the message size (HTTP and
    // WebSocket).
    let r = request_json(
        &d,
        "POST",
        "/api/v1/terminals",
        &alice,
        &json!({"argv": ["/bin/sh"]}),
    );
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(r.text().contains("terminals.max-per-token"), "{}", r.text());
    let r = post_bytes(&d, &alice, &format!("{path}/input"), &[b'a'; 2048]);
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(
        r.text().contains("terminals.max-message-size"),
        "{}",
        r.text()
    );
    let r = request_json(
        &d,
        "POST",
        "/api/v1/terminals",
        &bob,
        &json!({"argv": ["/bin/sh"], "lifetime_s": 10_000_000}),
    );
    assert_eq!(r.status, 422, "{}", r.text());
    let mut t = attach(&d, &alice, &id, true);
    t.control("attached");
    t.send(&[b'a'; 1500]);
    let (code, reason) = t.close_frame();
    assert_eq!(code, CloseCode::Size, "{reason}");
    assert!(reason.contains("max-message-size"), "{reason}");

    // A browser login made with alice's token: its cookie attaches from our own origin, and
    // is refused from a foreign one (cross-site WebSocket hijacking).
    let cookie = login_cookie(&d, &alice);
    let a = addr(&d);
    let foreign = try_attach(
        &d,
        &id,
        "",
        &[("Cookie", &cookie), ("Origin", "http://evil.example")],
    );
    assert!(
        matches!(foreign, Err(tungstenite::Error::Http(ref r)) if r.status() == 403),
        "{foreign:?}"
    );
    let none = try_attach(&d, &id, "", &[("Cookie", &cookie)]);
    assert!(
        matches!(none, Err(tungstenite::Error::Http(ref r)) if r.status() == 403),
        "{none:?}"
    );
    let ours = format!("http://{a}");
    let mut t = attach_with(&d, &id, "", &[("Cookie", &cookie), ("Origin", &ours)]);
    t.control("attached");
    d.stop();
}

#[test]
fn inside_a_session_the_job_is_confined_like_every_job() {
    let mut d = Daemon::start();
    let token = d.admin_token();
    let s = create(
        &d,
        &token,
        json!({"argv": ["/bin/sh"], "env": {"PS1": "$ "}}),
    );
    let id = s["id"].as_str().unwrap().to_owned();
    let mut t = attach(&d, &token, &id, true);
    t.expect("$ ");
    let out = t.run(
        "grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status | tr -s ' \\t' ' '; echo EN''D1",
        "END1",
    );
    assert!(out.iter().any(|l| l.ends_with("NoNewPrivs: 1")), "{out:?}");
    assert!(out.iter().any(|l| l.ends_with("Seccomp: 2")), "{out:?}");
    let out = t.run("echo PTS $(ls -A /dev/pts); echo EN''D2", "END2");
    assert!(out.iter().any(|l| l.ends_with("PTS 0 ptmx")), "{out:?}");
    let out = t.run(
        "python3 -c \"import fcntl, termios, errno\ntry:\n  fcntl.ioctl(0, termios.TIOCSTI, b'x'); print('STI OK')\nexcept OSError as e: print('STI', errno.errorcode[e.errno])\"; echo EN''D3",
        "END3",
    );
    // (The shell's continuation prompts come before the output on its line.)
    assert!(out.iter().any(|l| l.ends_with("> STI EPERM")), "{out:?}");
    // The hostile suite's kind of probe: the host's processes and files are out of reach.
    let out = t.run(
        "echo PIDS $(ls /proc | grep -c '^[0-9]'); cat /etc/shadow 2>&1 | head -c 40; echo; echo EN''D4",
        "END4",
    );
    let pids: usize = out
        .iter()
        .find_map(|l| l.split("PIDS ").nth(1).and_then(|n| n.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no count: {out:?}"));
    assert!(pids < 10, "the session sees {pids} processes: {out:?}");
    // /etc/shadow is unreadable or hidden (masked) in the sandbox: its lines never show.
    assert!(!out.iter().any(|l| l.starts_with("root:")), "{out:?}");
    d.stop();
}

#[test]
fn an_output_flood_with_a_client_that_never_reads_leaves_the_daemon_responsive() {
    let mut d = Daemon::start_config("[terminals]\noutput-rate = \"256KiB\"\n");
    let token = d.admin_token();
    let marker = 600_000 + (std::process::id() % 90_000);
    let s = create(
        &d,
        &token,
        json!({"command": format!("yes flood-{marker}")}),
    );
    let id = s["id"].as_str().unwrap().to_owned();
    let created = Instant::now();
    // Attached, never reading.
    let t = attach(&d, &token, &id, false);
    // The daemon keeps answering while the flood runs. No speed is asserted (a loaded CI
    // machine may be slow); the bound only tells a hang from an answer.
    for _ in 0..10 {
        let started = Instant::now();
        let r = http::get(&d.tcp, "/health");
        assert_eq!(r.status, 200);
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "/health did not answer during the flood (hung for {:?})",
            started.elapsed()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let info = get(&d, &token, &format!("/api/v1/terminals/{id}")).json();
    assert_eq!(info["state"], "running", "the flood ended early: {info}");
    // Throttled: no more than the output rate over the time it ran (and a second's burst)
    // was read; `yes` alone writes far more.
    let info = get(&d, &token, &format!("/api/v1/terminals/{id}")).json();
    let out = info["bytes_out"].as_u64().unwrap();
    let ran = created.elapsed().as_secs() + 2;
    assert!(out > 0, "{info}");
    assert!(
        out <= 256 * 1024 * ran,
        "read {out} bytes in about {ran} s: {info}"
    );
    let r = request_as(
        &d.tcp,
        &format!("Bearer {token}"),
        "DELETE",
        &format!("/api/v1/terminals/{id}"),
        None,
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        !running(&format!("yes flood-{marker}")),
        "the flood outlived DELETE"
    );
    drop(t);
    d.stop();
}
