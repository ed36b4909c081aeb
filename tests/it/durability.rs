//! A 2xx for a write means the data is on disk: the fsync of the write happens before the
//! response is sent. `kill -9` cannot show this (the page cache survives it), so we watch the
//! syscalls with strace and check their order. For an upload the order is: fsync of the temp
//! file → rename into blobs/ → fsync of blobs/ → fsync of the WAL (metadata) → the 201.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{BIN, admin_token_in};
use crate::http::{self, Target};

fn strace_available() -> bool {
    Command::new("strace")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Trace lines (in time order, all threads) for the syscalls that matter here, with the path of
/// every file descriptor (`-y`), so a sync can be told to be the WAL's.
fn trace_requests(paths: &[&str]) -> (Vec<String>, Vec<http::Response>) {
    trace_with(&["-y"], |target, _| {
        paths.iter().map(|p| http::get(target, p)).collect()
    })
}

/// Like `trace_requests`, for (method, path, JSON body) sent with the admin token.
fn trace(reqs: &[(&str, &str, &str)]) -> (Vec<String>, Vec<http::Response>) {
    trace_with(&["-y"], |target, state| {
        let bearer = format!("Bearer {}", admin_token_in(state));
        reqs.iter()
            .map(|(method, path, body)| {
                let mut headers = vec![("Authorization", bearer.as_str())];
                if !body.is_empty() {
                    headers.push(("Content-Type", "application/json"));
                }
                http::request(target, method, path, &headers, body.as_bytes())
            })
            .collect()
    })
}

/// Runs the daemon under strace (`extra` strace arguments), lets `requests` talk to it
/// (given its socket and state dir), stops it and returns the trace lines.
fn trace_with(
    extra: &[&str],
    requests: impl FnOnce(&Target, &std::path::Path) -> Vec<http::Response>,
) -> (Vec<String>, Vec<http::Response>) {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("http.sock");
    let cfg = dir.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "state-dir = {:?}\n[server]\nlisten = [\"unix:{}\"]\n",
            dir.path().join("state").display().to_string(),
            sock.display()
        ),
    )
    .unwrap();
    let trace = dir.path().join("trace");
    let mut child = Command::new("strace")
        .args([
            "-f",
            "-qq",
            "-s",
            "64",
            "-e",
            "trace=fsync,fdatasync,sync_file_range,read,recvfrom,write,writev,sendto,sendmsg,rename,renameat,renameat2",
        ])
        .args(extra)
        .arg("-o")
        .arg(&trace)
        .arg(BIN)
        .args(["serve", "--log-target", "stderr", "--config"])
        .arg(&cfg)
        .env_remove("NOTIFY_SOCKET")
        .env_remove("LISTEN_FDS")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !sock.exists() {
        assert!(
            Instant::now() < deadline,
            "daemon under strace did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(200));
    let target = Target::Unix(sock);
    let responses = requests(&target, &dir.path().join("state"));
    // strace blocks fatal signals while it runs a command (-I3), so stop the traced daemon
    // itself: strace's only child.
    let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", child.id()))
        .unwrap_or_default();
    let daemon: i32 = children
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    if daemon > 0 {
        // SAFETY: kill(2) on the daemon we started under strace.
        unsafe { libc::kill(daemon, libc::SIGTERM) };
    } else {
        let _ = child.kill();
    }
    let _ = child.wait();
    let text = std::fs::read_to_string(&trace).unwrap();
    (text.lines().map(str::to_owned).collect(), responses)
}

fn index_of(lines: &[String], from: usize, pred: impl Fn(&str) -> bool, what: &str) -> usize {
    lines[from..]
        .iter()
        .position(|l| pred(l))
        .map(|i| i + from)
        .unwrap_or_else(|| {
            panic!(
                "no {what} in trace after line {from}:\n{}",
                lines.join("\n")
            )
        })
}

fn is_sync(l: &str) -> bool {
    l.contains(" fsync(") || l.contains(" fdatasync(") || l.contains(" sync_file_range(")
}

#[test]
fn fsync_of_a_write_happens_before_its_2xx_is_sent() {
    if !strace_available() {
        assert!(
            std::env::var_os("CI").is_none(),
            "strace is missing in CI: .ci/run must install it"
        );
        eprintln!("SKIPPED: strace not installed (Debian package strace)");
        return;
    }
    // /ready commits a heartbeat row (a real write); /health writes nothing. The second
    // request is the control: it must show no sync, so the check can tell the two apart.
    let (lines, responses) = trace_requests(&["/ready", "/health"]);
    assert_eq!(responses[0].status, 200, "{}", responses[0].text());
    assert_eq!(responses[1].status, 200);
    let req = index_of(
        &lines,
        0,
        |l| l.contains("GET /ready HTTP/1.1"),
        "read of the /ready request",
    );
    let resp = index_of(
        &lines,
        req,
        |l| l.contains("HTTP/1.1 200 OK"),
        "write of the /ready response",
    );
    let syncs: Vec<&String> = lines[req..resp].iter().filter(|l| is_sync(l)).collect();
    assert!(
        !syncs.is_empty(),
        "no fsync between request and 2xx:\n{}",
        lines[req..=resp].join("\n")
    );
    assert!(
        !lines[resp..]
            .iter()
            .take_while(|l| !l.contains("GET /health"))
            .any(|l| is_sync(l) && l.contains("-wal")),
        "trace shows the WAL synced only after the response"
    );

    let req2 = index_of(
        &lines,
        resp,
        |l| l.contains("GET /health HTTP/1.1"),
        "read of the /health request",
    );
    let resp2 = index_of(
        &lines,
        req2,
        |l| l.contains("HTTP/1.1 200 OK"),
        "write of the /health response",
    );
    assert!(
        !lines[req2..resp2].iter().any(|l| is_sync(l)),
        "a request that writes nothing synced:\n{}",
        lines[req2..=resp2].join("\n")
    );
}

#[test]
fn an_upload_is_fsynced_renamed_dir_synced_and_committed_before_its_201() {
    if !strace_available() {
        assert!(
            std::env::var_os("CI").is_none(),
            "strace is missing in CI: .ci/run must install it"
        );
        eprintln!("SKIPPED: strace not installed (Debian package strace)");
        return;
    }
    // -y: file descriptors with their paths, to tell the blob, its directory and the WAL apart.
    let (lines, responses) = trace_with(&["-y"], |target, state| {
        let bearer = format!("Bearer {}", admin_token_in(state));
        vec![
            http::request(
                target,
                "PUT",
                "/api/v1/files/durable.bin",
                &[("Authorization", &bearer)],
                &vec![7u8; 256 << 10],
            ),
            http::get(target, "/health"),
        ]
    });
    assert_eq!(responses[0].status, 201, "{}", responses[0].text());
    let req = index_of(
        &lines,
        0,
        |l| l.contains("\"PUT /api/v1/files/"),
        "read of the PUT request",
    );
    let blob = index_of(
        &lines,
        req,
        |l| is_sync(l) && l.contains("/files/tmp/"),
        "fsync of the temp file",
    );
    let rename = index_of(
        &lines,
        blob,
        |l| l.contains("rename") && l.contains("/files/blobs/"),
        "rename into blobs/",
    );
    let dir = index_of(
        &lines,
        rename,
        |l| is_sync(l) && l.contains("/files/blobs>"),
        "fsync of the blobs directory",
    );
    let wal = index_of(
        &lines,
        dir,
        |l| is_sync(l) && l.contains("-wal>"),
        "fsync of the WAL (metadata commit)",
    );
    let resp = index_of(
        &lines,
        req,
        |l| l.contains("HTTP/1.1 201 Created"),
        "write of the 201",
    );
    assert!(
        wal < resp,
        "the 201 was written before the metadata commit synced:\n{}",
        lines[req..=resp.max(wal)].join("\n")
    );
}

/// The data routes: a PUT and a batch are answered only after their fsync. A GET first uses
/// the token, so its once-a-minute last-use write cannot stand in for the PUT's own sync.
#[test]
fn fsync_of_a_put_and_a_batch_happens_before_their_2xx() {
    if !strace_available() {
        assert!(
            std::env::var_os("CI").is_none(),
            "strace is missing in CI: .ci/run must install it"
        );
        eprintln!("SKIPPED: strace not installed (Debian package strace)");
        return;
    }
    let (lines, responses) = trace(&[
        ("GET", "/api/v1/data?limit=1", ""),
        ("PUT", "/api/v1/data/durable", "{\"v\":1}"),
        (
            "POST",
            "/api/v1/data:batch",
            "{\"ops\":[{\"op\":\"put\",\"key\":\"b1\",\"value\":1},{\"op\":\"delete\",\"key\":\"durable\"}]}",
        ),
        ("GET", "/api/v1/data/b1", ""),
    ]);
    assert_eq!(responses[0].status, 200, "{}", responses[0].text());
    assert_eq!(responses[1].status, 201, "{}", responses[1].text());
    assert_eq!(responses[2].status, 200, "{}", responses[2].text());
    assert_eq!(responses[3].status, 200, "{}", responses[3].text());
    let mut at = 0;
    for (request, status) in [
        ("PUT /api/v1/data/durable", "HTTP/1.1 201 Created"),
        ("POST /api/v1/data:batch", "HTTP/1.1 200 OK"),
    ] {
        let req = index_of(&lines, at, |l| l.contains(request), request);
        let resp = index_of(&lines, req, |l| l.contains(status), status);
        assert!(
            lines[req..resp].iter().any(|l| is_sync(l)),
            "no fsync between {request} and its 2xx:\n{}",
            lines[req..=resp].join("\n")
        );
        // The commit's sync is an fdatasync of the WAL: the bundled SQLite is built with
        // HAVE_FDATASYNC (.cargo/config.toml); without it every commit is an fsync, which
        // also writes the inode for the mtime the WAL write changed.
        assert!(
            lines[req..resp]
                .iter()
                .any(|l| l.contains(" fdatasync(") && l.contains("-wal")),
            "the commit of {request} is not an fdatasync of the WAL (SQLite built without \
             HAVE_FDATASYNC?):\n{}",
            lines[req..=resp].join("\n")
        );
        at = resp;
    }
    // The control: a read after them syncs nothing.
    let req = index_of(&lines, at, |l| l.contains("GET /api/v1/data/b1"), "GET b1");
    let resp = index_of(&lines, req, |l| l.contains("HTTP/1.1 200 OK"), "GET b1 200");
    assert!(
        !lines[req..resp].iter().any(|l| is_sync(l)),
        "a read synced:\n{}",
        lines[req..=resp].join("\n")
    );
}
