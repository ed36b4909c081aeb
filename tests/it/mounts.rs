//! Jobs on the user's data through the real daemon: file-store folders and programs mounted
//! read-only (views of hard links), read-write mounts and outputs committed back in one
//! transaction (or not at all), inline files, the scopes a mount needs, and the view cache.

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Daemon, Options, data, post_exec, send_exec_stream, sha_hex, token_with};
use crate::http::{self, Response};

fn start(extra: &str) -> (Daemon, String) {
    let d = Daemon::start_with(Options {
        config: format!("[rate-limit]\nenabled = false\n{extra}"),
        ..Options::default()
    });
    let t = d.admin_token();
    (d, t)
}

fn req(d: &Daemon, token: &str, method: &str, path: &str, ct: &str, body: &[u8]) -> Response {
    let auth = format!("Bearer {token}");
    let mut h = vec![("Authorization", auth.as_str())];
    if !ct.is_empty() {
        h.push(("Content-Type", ct));
    }
    http::request(&d.tcp, method, path, &h, body)
}

fn put_file(d: &Daemon, token: &str, path: &str, body: &[u8]) {
    let r = req(
        d,
        token,
        "PUT",
        &format!("/api/v1/files/{path}"),
        "application/octet-stream",
        body,
    );
    assert!(r.status == 201 || r.status == 200, "{}", r.text());
}

/// Paths and digests listed under `prefix`.
fn listed(d: &Daemon, token: &str, prefix: &str) -> Vec<(String, String)> {
    let r = req(
        d,
        token,
        "GET",
        &format!("/api/v1/files?limit=1000&prefix={prefix}"),
        "",
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["path"].as_str().unwrap().to_owned(),
                i["sha256"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn download(d: &Daemon, token: &str, path: &str) -> Vec<u8> {
    let r = req(d, token, "GET", &format!("/api/v1/files/{path}"), "", b"");
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    r.body
}

fn exec(d: &Daemon, token: &str, body: &Value) -> Value {
    let r = post_exec(d, token, body);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

fn upload_program(d: &Daemon, token: &str, name: &str, body: &[u8]) -> String {
    let r = req(
        d,
        token,
        "POST",
        &format!("/api/v1/programs?name={name}"),
        "application/octet-stream",
        body,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()["id"].as_str().unwrap().to_owned()
}

fn run_program(d: &Daemon, token: &str, id: &str, body: &Value) -> Response {
    req(
        d,
        token,
        "POST",
        &format!("/api/v1/programs/{id}/runs"),
        "application/json",
        body.to_string().as_bytes(),
    )
}

/// The views under the state directory's `mounts/`, by name, with their inodes.
fn views(d: &Daemon, kind: char) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = std::fs::read_dir(d.state_dir().join("mounts"))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().starts_with(kind))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().ino(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn a_program_sums_a_csv_through_a_read_only_mount_that_cannot_be_written() {
    let (mut d, t) = start("");
    put_file(&d, &t, "reports/2026/nums.csv", b"a,b\n1,2\n3,4\n");
    put_file(&d, &t, "reports/secret.txt", b"not in the folder");
    let prog = br#"import csv, errno, os
rows = list(csv.reader(open('/data/nums.csv')))
print(sum(int(x) for r in rows[1:] for x in r))
print(sorted(os.listdir('/data')))
try:
    open('/data/new.txt', 'w')
    print('written')
except OSError as e:
    print(errno.errorcode[e.errno])
try:
    open('/data/nums.csv', 'a')
    print('appended')
except OSError as e:
    print('refused')
print(os.path.exists('/.mounts'))
"#;
    let id = upload_program(&d, &t, "sum.py", prog);
    let r = run_program(
        &d,
        &t,
        &id,
        &json!({"mounts": [{"files": "reports/2026/", "at": "/data", "mode": "ro"}]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["status"], "ok", "{v}");
    assert_eq!(
        v["stdout"], "10\n['nums.csv']\nEROFS\nrefused\nFalse\n",
        "{v}"
    );
    assert!(v.get("outputs").is_none(), "no outputs asked: {v}");
    // The store is as it was: nothing of the job's attempts reached it.
    assert_eq!(listed(&d, &t, "reports/2026/").len(), 1);
    d.stop();
}

#[test]
fn outputs_become_files_of_the_store_with_their_digests() {
    let (mut d, t) = start("");
    let v = exec(
        &d,
        &t,
        &json!({
            "command": "mkdir -p out/sub && printf hello > out/a.txt && head -c 100000 /dev/urandom > out/sub/b.bin && ln -s /etc/passwd out/x && (ln /etc/passwd out/y 2>/dev/null || true) && ln out/a.txt out/a2.txt && mkfifo out/f",
            "outputs": [{"from": "/work/out/", "to": "results/run-1/"}]
        }),
    );
    assert_eq!(v["status"], "ok", "{v}");
    let o = &v["outputs"];
    assert_eq!(o["state"], "committed", "{v}");
    let mut files: Vec<(String, String)> = o["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_owned(),
                f["sha256"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    files.sort();
    let paths: Vec<&str> = files.iter().map(|f| f.0.as_str()).collect();
    assert_eq!(paths, vec!["results/run-1/sub/b.bin"], "{v}");
    let skipped: Vec<&str> = o["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["path"].as_str().unwrap())
        .collect();
    // The symlink, the fifo and both names of the hard-linked file: none reaches the store
    // (and a hard link to /etc/passwd cannot even be made: another filesystem).
    for p in [
        "/work/out/x",
        "/work/out/f",
        "/work/out/a.txt",
        "/work/out/a2.txt",
    ] {
        assert!(skipped.contains(&p), "{p} not reported skipped: {v}");
    }
    assert_eq!(listed(&d, &t, "results/"), files);
    let body = download(&d, &t, "results/run-1/sub/b.bin");
    assert_eq!(body.len(), 100_000);
    assert_eq!(sha_hex(&body), files[0].1);
    d.stop();
}

#[test]
fn a_timeout_or_a_quota_crossed_leaves_nothing() {
    let (mut d, t) = start("[files]\nmax-total-size = \"64KiB\"\nmax-file-size = \"64KiB\"\n");
    // Timed out after writing: nothing.
    let v = exec(
        &d,
        &t,
        &json!({
            "command": "mkdir out && echo x > out/a && sleep 5",
            "timeout_ms": 500,
            "outputs": [{"from": "/work/out", "to": "t/"}],
            "keep_outputs": "on_exit"
        }),
    );
    assert_eq!(v["status"], "timeout", "{v}");
    assert_eq!(v["outputs"]["state"], "discarded", "{v}");
    // A non-zero exit with the default keep_outputs (on_success): nothing.
    let v = exec(
        &d,
        &t,
        &json!({
            "command": "mkdir out && echo x > out/a && exit 3",
            "outputs": [{"from": "/work/out", "to": "t/"}]
        }),
    );
    assert_eq!(v["status"], "nonzero_exit", "{v}");
    assert_eq!(v["outputs"]["state"], "discarded", "{v}");
    assert!(listed(&d, &t, "t/").is_empty());
    // More than the quota leaves: the job's staging area is bounded by it (the write
    // fails), and nothing is written.
    let v = exec(
        &d,
        &t,
        &json!({
            "command": "mkdir out && head -c 200000 /dev/zero > out/big",
            "outputs": [{"from": "/work/out", "to": "q/"}]
        }),
    );
    assert_ne!(v["status"], "ok", "{v}");
    assert_eq!(v["outputs"]["state"], "discarded", "{v}");
    assert!(listed(&d, &t, "q/").is_empty());
    // The quota taken while the job ran: checked again at the commit, nothing written.
    let mut s = http::connect(&d.tcp);
    let body = json!({
        "command": "mkdir out && head -c 40000 /dev/zero > out/a && echo ready && sleep 1",
        "outputs": [{"from": "/work/out", "to": "q/"}]
    })
    .to_string();
    send_exec_stream(&mut *s, &t, &body);
    let seen = read_until(&mut *s, "ready");
    put_file(&d, &t, "other.bin", &data(40_000, 1));
    let rest = read_all(&mut *s, seen);
    let result = result_event(&rest);
    assert_eq!(result["status"], "ok", "{result}");
    assert_eq!(result["outputs"]["state"], "failed", "{result}");
    assert!(
        result["outputs"]["reason"]
            .as_str()
            .unwrap()
            .contains("files.max-total-size"),
        "{result}"
    );
    assert!(listed(&d, &t, "q/").is_empty());
    // Nothing left behind in the store's directories.
    assert_eq!(
        std::fs::read_dir(d.state_dir().join("files/tmp"))
            .unwrap()
            .count(),
        0
    );
    d.stop();
}

/// Reads the stream until `needle` has been seen; returns what was read.
fn read_until(s: &mut dyn http::Stream, needle: &str) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let until = Instant::now() + Duration::from_secs(20);
    while !String::from_utf8_lossy(&buf).contains(needle) {
        assert!(
            Instant::now() < until,
            "no {needle}: {}",
            String::from_utf8_lossy(&buf)
        );
        let n = s.read(&mut chunk).unwrap();
        assert!(
            n > 0,
            "stream ended before {needle}: {}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
    buf
}

fn read_all(s: &mut dyn http::Stream, mut buf: Vec<u8>) -> String {
    s.read_to_end(&mut buf).unwrap();
    String::from_utf8_lossy(&buf).into_owned()
}

/// The `result` event's JSON in an SSE body (chunked framing may split lines: the event's
/// data line is found whole in practice, as the daemon writes it in one chunk).
fn result_event(text: &str) -> Value {
    let at = text
        .find("event: result")
        .unwrap_or_else(|| panic!("no result event: {text}"));
    let line = text[at..]
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap_or_else(|| panic!("no data: {text}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

#[test]
fn two_runs_writing_one_folder_do_not_interleave() {
    let (mut d, t) = start("");
    let target = d.tcp.clone();
    let runs: Vec<_> = ["A", "B"]
        .into_iter()
        .map(|tag| {
            let (target, t) = (target.clone(), t.clone());
            std::thread::spawn(move || {
                let r = crate::harness::post_exec_at(
                    &target,
                    &t,
                    &json!({
                        "command": format!("mkdir out && for i in $(seq 0 29); do printf {tag}$i > out/f$i; done"),
                        "outputs": [{"from": "/work/out", "to": "shared/"}]
                    }),
                );
                assert_eq!(r.status, 200, "{}", r.text());
                r.json()
            })
        })
        .collect();
    for r in runs {
        let v = r.join().unwrap();
        assert_eq!(v["outputs"]["state"], "committed", "{v}");
        assert_eq!(v["outputs"]["files"].as_array().unwrap().len(), 30);
    }
    let files = listed(&d, &t, "shared/");
    assert_eq!(files.len(), 30);
    let tags: std::collections::BTreeSet<u8> =
        files.iter().map(|(p, _)| download(&d, &t, p)[0]).collect();
    assert_eq!(tags.len(), 1, "files from both runs: {tags:?}");
    d.stop();
}

#[test]
fn read_write_mounts_commit_changes_and_deletions_or_nothing_on_a_conflict() {
    let (mut d, t) = start("");
    put_file(&d, &t, "proj/keep.txt", b"keep");
    put_file(&d, &t, "proj/change.txt", b"old");
    put_file(&d, &t, "proj/gone.txt", b"bye");
    let v = exec(
        &d,
        &t,
        &json!({
            "command": "cd /p && printf new > change.txt && rm gone.txt && mkdir -p d && printf x > d/added.txt && ln -s /etc/passwd link",
            "mounts": [{"files": "proj", "at": "/p", "mode": "rw"}],
            // The same directory as an output too: a snapshot of what the job left.
            "outputs": [{"from": "/p", "to": "snap/"}]
        }),
    );
    assert_eq!(v["status"], "ok", "{v}");
    let o = &v["outputs"];
    assert_eq!(o["state"], "committed", "{v}");
    let mut written: Vec<&str> = o["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    written.sort();
    assert_eq!(
        written,
        vec![
            "proj/change.txt",
            "proj/d/added.txt",
            "snap/change.txt",
            "snap/d/added.txt",
            "snap/keep.txt"
        ],
        "{v}"
    );
    assert_eq!(o["deleted"], json!(["proj/gone.txt"]), "{v}");
    assert_eq!(o["skipped"][0]["path"], "/p/link", "{v}");
    let paths: Vec<String> = listed(&d, &t, "proj/").into_iter().map(|f| f.0).collect();
    assert_eq!(
        paths,
        vec!["proj/change.txt", "proj/d/added.txt", "proj/keep.txt"]
    );
    assert_eq!(download(&d, &t, "proj/change.txt"), b"new");
    // The folder changes while a job has it: the job's changes are refused whole.
    let mut s = http::connect(&d.tcp);
    let body = json!({
        "command": "printf mine > /p/keep.txt && printf z > /p/z.txt && echo ready && sleep 1",
        "mounts": [{"files": "proj/", "at": "/p", "mode": "rw"}]
    })
    .to_string();
    send_exec_stream(&mut *s, &t, &body);
    let seen = read_until(&mut *s, "ready");
    put_file(&d, &t, "proj/theirs.txt", b"theirs");
    let result = result_event(&read_all(&mut *s, seen));
    assert_eq!(result["outputs"]["state"], "conflict", "{result}");
    assert_eq!(download(&d, &t, "proj/keep.txt"), b"keep");
    let paths: Vec<String> = listed(&d, &t, "proj/").into_iter().map(|f| f.0).collect();
    assert!(!paths.contains(&"proj/z.txt".to_owned()), "{paths:?}");
    d.stop();
}

#[test]
fn mounts_need_their_scopes() {
    let (mut d, admin) = start("");
    let id = upload_program(&d, &admin, "hello.sh", b"#!/bin/sh\necho hi\n");
    let reader = token_with(&d, &admin, "reader", &["read", "exec"]);
    let runner = token_with(&d, &admin, "runner", &["exec"]);
    // read + exec: a read-only mount runs, a read-write one is refused, naming the scope.
    let v = exec(
        &d,
        &reader,
        &json!({"command": "ls /d", "mounts": [{"files": "x/", "at": "/d"}]}),
    );
    assert_eq!(v["status"], "ok", "{v}");
    let r = post_exec(
        &d,
        &reader,
        &json!({"command": "true", "mounts": [{"files": "x/", "at": "/d", "mode": "rw"}]}),
    );
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("`write`"), "{}", r.text());
    // exec alone: no program (and no folder) may be mounted.
    let r = post_exec(
        &d,
        &runner,
        &json!({"command": "ls /opt/x", "mounts": [{"program": id, "at": "/opt/x"}]}),
    );
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("`read`"), "{}", r.text());
    let v = exec(
        &d,
        &reader,
        &json!({"command": "cat /opt/x/hello.sh", "mounts": [{"program": id, "at": "/opt/x"}]}),
    );
    assert_eq!(v["stdout"], "#!/bin/sh\necho hi\n", "{v}");
    // An unknown program is 404; a mount in a system directory 400.
    let r = post_exec(
        &d,
        &reader,
        &json!({"command": "true", "mounts": [{"program": "0123456789abcdef0123456789abcdef", "at": "/x"}]}),
    );
    assert_eq!(r.status, 404, "{}", r.text());
    let r = post_exec(
        &d,
        &reader,
        &json!({"command": "true", "mounts": [{"files": "", "at": "/etc/x"}]}),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    d.stop();
}

#[test]
fn inline_files_run_and_are_bounded() {
    let (mut d, t) = start("[exec]\nmax-inline-files = 3\n");
    let v = exec(
        &d,
        &t,
        &json!({
            "argv": ["python3", "main.py"],
            "files": [
                {"name": "main.py", "content": "from lib.util import n\nprint(open('data.bin','rb').read().hex(), n)"},
                {"name": "lib/util.py", "content": "n = 6 * 7"},
                {"name": "data.bin", "content": "AAH/", "encoding": "base64"}
            ]
        }),
    );
    assert_eq!(v["status"], "ok", "{v}");
    assert_eq!(v["stdout"], "0001ff 42\n", "{v}");
    let four: Vec<Value> = (0..4)
        .map(|i| json!({"name": format!("f{i}"), "content": ""}))
        .collect();
    let r = post_exec(&d, &t, &json!({"command": "true", "files": four}));
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains("exec.max-inline-files"), "{}", r.text());
    let r = post_exec(
        &d,
        &t,
        &json!({"command": "true", "files": [{"name": "../x", "content": ""}]}),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    d.stop();
}

#[test]
fn a_folder_view_is_reused_until_the_folder_changes() {
    let (mut d, t) = start("");
    for i in 0..20 {
        put_file(&d, &t, &format!("in/{i}.txt"), format!("{i}").as_bytes());
    }
    let body = json!({"command": "cat /in/7.txt; echo; ls /in | wc -l", "mounts": [{"files": "in", "at": "/in"}]});
    let v = exec(&d, &t, &body);
    assert_eq!(v["stdout"], "7\n20\n", "{v}");
    let first = views(&d, 'f');
    assert_eq!(first.len(), 1, "{first:?}");
    // Unchanged: the same directory (name and inode), not built again.
    let v = exec(&d, &t, &body);
    assert_eq!(v["stdout"], "7\n20\n", "{v}");
    assert_eq!(views(&d, 'f'), first);
    // A change elsewhere does not matter; one in the folder makes a new view, and the old
    // one (held by no job) goes.
    put_file(&d, &t, "elsewhere.txt", b"x");
    exec(&d, &t, &body);
    assert_eq!(views(&d, 'f'), first);
    put_file(&d, &t, "in/7.txt", b"seven");
    let v = exec(&d, &t, &body);
    assert_eq!(v["stdout"], "seven\n20\n", "{v}");
    let until = Instant::now() + Duration::from_secs(10);
    let now = loop {
        let now = views(&d, 'f');
        if now.len() == 1 || Instant::now() > until {
            break now;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(now.len(), 1, "{now:?}");
    assert_ne!(now[0].0, first[0].0);
    // A restart empties the cache.
    d.stop();
    let dir = std::mem::replace(&mut d.dir, tempfile::tempdir().unwrap());
    std::fs::remove_file(dir.path().join("http.sock")).unwrap();
    let mut d = Daemon::start_with(Options {
        dir: Some(dir),
        ..Options::default()
    });
    assert!(views(&d, 'f').is_empty());
    d.stop();
}

#[test]
fn a_deleted_program_takes_its_view_along() {
    let (mut d, t) = start("");
    let id = upload_program(&d, &t, "p.sh", b"#!/bin/sh\ncat /program/p.sh | wc -l\n");
    let r = run_program(&d, &t, &id, &json!({}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["stdout"], "2\n", "{}", r.text());
    assert_eq!(views(&d, 'p').len(), 1);
    let r = req(&d, &t, "DELETE", &format!("/api/v1/programs/{id}"), "", b"");
    assert_eq!(r.status, 204, "{}", r.text());
    let until = Instant::now() + Duration::from_secs(10);
    while !views(&d, 'p').is_empty() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(views(&d, 'p').is_empty());
    d.stop();
}

#[test]
fn mounts_and_outputs_work_when_the_daemon_is_unprivileged() {
    // The packaged unit runs as the localhostd user: jobs keep its uid outside, the views
    // and the blobs are its own.
    let d = Daemon::start_with(Options {
        config: "[rate-limit]\nenabled = false\n".into(),
        user: Some(crate::sandbox::test_user()),
        ..Options::default()
    });
    let mut d = d;
    let t = d.admin_token();
    put_file(&d, &t, "in/a.txt", b"21");
    let v = exec(
        &d,
        &t,
        &json!({
            "command": "mkdir out && echo $(( $(cat /in/a.txt) * 2 )) > out/r.txt && echo x >> /rw/a.txt && (echo y > /in/b.txt 2>/dev/null || echo refused)",
            "mounts": [{"files": "in", "at": "/in"}, {"files": "in", "at": "/rw", "mode": "rw"}],
            "outputs": [{"from": "/work/out", "to": "res"}]
        }),
    );
    assert_eq!(v["status"], "ok", "{v}");
    assert_eq!(v["stdout"], "refused\n", "{v}");
    assert_eq!(v["outputs"]["state"], "committed", "{v}");
    assert_eq!(download(&d, &t, "res/r.txt"), b"42\n");
    assert_eq!(download(&d, &t, "in/a.txt"), b"21x\n");
    d.stop();
}

/// A background run (`wait: false`) commits its outputs like a waited one, and its record
/// (`GET /api/v1/executions/{id}`, where the caller learns how it ended) carries the report.
#[test]
fn a_background_runs_outputs_are_in_its_record() {
    let (mut d, t) = start("");
    let body = json!({
        "command": "mkdir -p out && printf bg > out/r.txt",
        "outputs": [{"from": "/work/out/", "to": "results/bg/"}],
        "wait": false
    });
    let r = req(
        &d,
        &t,
        "POST",
        "/api/v1/exec",
        "application/json",
        body.to_string().as_bytes(),
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let v = loop {
        let v = req(&d, &t, "GET", &format!("/api/v1/executions/{id}"), "", b"").json();
        if v["state"] == "finished" {
            break v;
        }
        assert!(std::time::Instant::now() < deadline, "never finished: {v}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(v["status"], "ok", "{v}");
    assert_eq!(v["outputs"]["state"], "committed", "{v}");
    assert_eq!(v["outputs"]["files"][0]["path"], "results/bg/r.txt", "{v}");
    assert_eq!(download(&d, &t, "results/bg/r.txt"), b"bg");
    // A run without outputs has none in its record.
    let plain = exec(&d, &t, &json!({"argv": ["true"]}));
    let id = plain["id"].as_str().unwrap();
    let v = req(&d, &t, "GET", &format!("/api/v1/executions/{id}"), "", b"").json();
    assert!(v.get("outputs").is_none(), "{v}");
    d.stop();
}
