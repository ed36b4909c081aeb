//! The program store against the real daemon: each fixture of tests/fixtures/programs runs
//! with the right output, arguments arrive verbatim, ZIP attacks are refused with nothing left
//! on disk, the stored program is read-only to its runs, runs do not share scratch, and a
//! delete during a run needs force.

use std::io::{Cursor, Write as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use zip::write::SimpleFileOptions;

use crate::harness::Daemon;
use crate::http;
use crate::sandbox::start_daemon;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/programs")
        .join(name)
}

fn upload(d: &Daemon, token: &str, query: &str, ct: &str, body: &[u8]) -> http::Response {
    let auth = format!("Bearer {token}");
    http::request(
        &d.tcp,
        "POST",
        &format!("/api/v1/programs{query}"),
        &[("Authorization", &auth), ("Content-Type", ct)],
        body,
    )
}

fn upload_file(d: &Daemon, token: &str, name: &str, body: &[u8]) -> Value {
    let r = upload(
        d,
        token,
        &format!("?name={name}"),
        "application/octet-stream",
        body,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()
}

fn upload_zip(d: &Daemon, token: &str, zip: &[u8]) -> http::Response {
    upload(d, token, "", "application/zip", zip)
}

fn call(d: &Daemon, token: &str, method: &str, path: &str, body: Option<&Value>) -> http::Response {
    let auth = format!("Bearer {token}");
    let text = body.map(|b| b.to_string()).unwrap_or_default();
    let mut headers = vec![("Authorization", auth.as_str())];
    if body.is_some() {
        headers.push(("Content-Type", "application/json"));
    }
    http::request(&d.tcp, method, path, &headers, text.as_bytes())
}

fn run(d: &Daemon, token: &str, id: &str, body: &Value) -> Value {
    let r = call(
        d,
        token,
        "POST",
        &format!("/api/v1/programs/{id}/runs"),
        Some(body),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

fn id(p: &Value) -> String {
    p["id"].as_str().unwrap().to_owned()
}

/// A ZIP of `entries` (name, bytes), deflated.
fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for (name, data) in entries {
        w.start_file(*name, opts).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// Replaces every occurrence of `from` with `to` (same length) in raw ZIP bytes: names the
/// writer would refuse are made this way.
fn patch(bytes: &mut [u8], from: &[u8], to: &[u8]) -> usize {
    assert_eq!(from.len(), to.len());
    let mut n = 0;
    let mut i = 0;
    while i + from.len() <= bytes.len() {
        if &bytes[i..i + from.len()] == from {
            bytes[i..i + from.len()].copy_from_slice(to);
            n += 1;
            i += from.len();
        } else {
            i += 1;
        }
    }
    n
}

/// What is under <state>/programs (names), hidden temp files included.
fn stored(d: &Daemon) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(d.state_dir().join("programs"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn each_fixture_runs_with_the_right_output() {
    let (mut d, token) = start_daemon(None);

    let py = upload_file(
        &d,
        &token,
        "hello.py",
        &std::fs::read(fixture("hello.py")).unwrap(),
    );
    assert_eq!(py["kind"], "file");
    assert_eq!(py["main"], "hello.py");
    assert_eq!(py["runtime"], "python3");
    assert_eq!(py["needs_main"], false);
    assert_eq!(py["sha256"].as_str().unwrap().len(), 64);
    let r = run(&d, &token, &id(&py), &json!({"args": ["x"]}));
    assert_eq!(r["status"], "ok", "{r}");
    assert_eq!(r["stdout"], "hello from python [\"x\"]\n");

    let sh = upload_file(
        &d,
        &token,
        "hello.sh",
        &std::fs::read(fixture("hello.sh")).unwrap(),
    );
    assert_eq!(sh["runtime"], "sh");
    let r = run(&d, &token, &id(&sh), &json!({}));
    assert_eq!(r["stdout"], "hello from sh: 0 args\n", "{r}");

    let input = std::fs::read(fixture("stdin_upper.py")).unwrap();
    let up = upload_file(&d, &token, "stdin_upper.py", &input);
    let r = run(&d, &token, &id(&up), &json!({"stdin": "shout this\n"}));
    assert_eq!(r["stdout"], "SHOUT THIS\n", "{r}");

    // A multi-file project importing its own package; main.py is found by name.
    let base = fixture("pyproject");
    let read = |p: &str| std::fs::read(base.join(p)).unwrap();
    let (m, i, g) = (
        read("main.py"),
        read("pkg/__init__.py"),
        read("pkg/greet.py"),
    );
    let zip = zip_of(&[
        ("pkg/", b""),
        ("pkg/__init__.py", &i),
        ("pkg/greet.py", &g),
        ("main.py", &m),
    ]);
    let r = upload_zip(&d, &token, &zip);
    assert_eq!(r.status, 201, "{}", r.text());
    let proj = r.json();
    assert_eq!(proj["kind"], "project");
    assert_eq!(proj["main"], "main.py");
    let files: Vec<&str> = proj["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(files, ["main.py", "pkg/__init__.py", "pkg/greet.py"]);
    let r = run(&d, &token, &id(&proj), &json!({}));
    assert_eq!(r["stdout"], "hello from the project package\n", "{r}");

    // Writes a file in its cwd (the scratch) and prints it.
    let w = upload_file(
        &d,
        &token,
        "write_cwd.py",
        &std::fs::read(fixture("write_cwd.py")).unwrap(),
    );
    let r = run(&d, &token, &id(&w), &json!({}));
    assert_eq!(
        r["stdout"], "fresh /work\nwritten in the scratch dir\n",
        "{r}"
    );

    // A compiled C program (gcc is on these machines and in CI).
    let tmp = tempfile::tempdir().unwrap();
    let exe = tmp.path().join("hello");
    let st = Command::new("gcc")
        .arg("-O1")
        .arg("-o")
        .arg(&exe)
        .arg(fixture("hello.c"))
        .status();
    match st {
        Ok(s) if s.success() => {
            let c = upload_file(&d, &token, "hello", &std::fs::read(&exe).unwrap());
            assert_eq!(c["runtime"], "elf");
            let r = run(&d, &token, &id(&c), &json!({"args": ["a", "b"]}));
            assert_eq!(r["stdout"], "hello from C with 2 args\n", "{r}");
        }
        _ => println!("SKIPPED: the C fixture (no working gcc)"),
    }

    // Node when it is installed.
    if Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        let js = upload_file(
            &d,
            &token,
            "hello.js",
            &std::fs::read(fixture("hello.js")).unwrap(),
        );
        assert_eq!(js["runtime"], "node");
        let r = run(&d, &token, &id(&js), &json!({"args": ["n"]}));
        assert_eq!(r["stdout"], "hello from node [\"n\"]\n", "{r}");
    } else {
        println!("SKIPPED: the Node fixture (node is not installed)");
    }

    // Listing, getting, the run history and its counters.
    let list = call(&d, &token, "GET", "/api/v1/programs?limit=2", None).json();
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    let next = list["next_cursor"].as_str().unwrap().to_owned();
    let more = call(
        &d,
        &token,
        "GET",
        &format!("/api/v1/programs?cursor={next}"),
        None,
    )
    .json();
    assert!(!more["items"].as_array().unwrap().is_empty());
    run(&d, &token, &id(&py), &json!({}));
    let got = call(
        &d,
        &token,
        "GET",
        &format!("/api/v1/programs/{}", id(&py)),
        None,
    )
    .json();
    assert_eq!(got["run_count"], 2);
    assert_eq!(got["last_run_status"], "ok");
    let hist = call(
        &d,
        &token,
        "GET",
        &format!("/api/v1/programs/{}/runs?limit=1", id(&py)),
        None,
    )
    .json();
    assert_eq!(hist["items"].as_array().unwrap().len(), 1);
    assert_eq!(hist["items"][0]["kind"], "program");
    assert_eq!(hist["items"][0]["program_id"], id(&py).as_str());
    assert!(hist["next_cursor"].is_string());
    assert_eq!(
        call(&d, &token, "GET", "/api/v1/programs/0123456789abcdef", None).status,
        404
    );
    assert_eq!(
        call(&d, &token, "GET", "/api/v1/programs/..%2F..", None).status,
        404
    );
    d.stop();
}

#[test]
fn arguments_arrive_verbatim_and_runs_stream() {
    let (mut d, token) = start_daemon(None);
    let p = upload_file(
        &d,
        &token,
        "hello.py",
        &std::fs::read(fixture("hello.py")).unwrap(),
    );
    let args = [
        "a b",
        "it's",
        "\"quoted\"",
        "x; rm -rf /",
        "$(id)",
        "`id`",
        "*",
        "",
        "ünï",
    ];
    let r = run(&d, &token, &id(&p), &json!({"args": args}));
    let printed = r["stdout"]
        .as_str()
        .unwrap()
        .trim_end()
        .strip_prefix("hello from python ")
        .unwrap()
        .to_owned();
    let got: Vec<String> = serde_json::from_str(&printed).unwrap();
    assert_eq!(got, args);

    let s = upload_file(
        &d,
        &token,
        "hello.sh",
        &std::fs::read(fixture("hello.sh")).unwrap(),
    );
    let r = run(&d, &token, &id(&s), &json!({"args": ["a b", "c;d"]}));
    assert_eq!(r["stdout"], "hello from sh: 2 args\n[a b]\n[c;d]\n", "{r}");

    // The same streaming option as /api/v1/exec.
    let auth = format!("Bearer {token}");
    let r = http::request(
        &d.tcp,
        "POST",
        &format!("/api/v1/programs/{}/runs", id(&s)),
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
            ("Accept", "text/event-stream"),
        ],
        json!({"args": ["z"]}).to_string().as_bytes(),
    );
    assert_eq!(r.status, 200);
    let text = r.text();
    assert!(text.contains("event: stdout"), "{text}");
    assert!(text.contains("event: result"), "{text}");
    assert!(text.contains("\"status\":\"ok\""), "{text}");

    // No body at all is a run without arguments.
    let r = http::request(
        &d.tcp,
        "POST",
        &format!("/api/v1/programs/{}/runs", id(&s)),
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["stdout"], "hello from sh: 0 args\n");
    d.stop();
}

#[test]
fn zip_attacks_are_refused_with_nothing_left_on_disk() {
    let (mut d, token) = start_daemon(None);
    let mut cases: Vec<(&str, Vec<u8>, &str)> = Vec::new();

    let mut slip = zip_of(&[("main.py", b"print(1)\n"), ("xx/evil.py", b"x")]);
    assert!(patch(&mut slip, b"xx/evil.py", b"../evil.py") >= 2);
    cases.push(("zip-slip", slip, "zip-slip"));

    let mut abs = zip_of(&[("Xetc/evil", b"x")]);
    assert!(patch(&mut abs, b"Xetc/evil", b"/etc/evil") >= 2);
    cases.push(("absolute path", abs, "absolute path"));

    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    w.start_file("main.py", SimpleFileOptions::default())
        .unwrap();
    w.write_all(b"print(1)\n").unwrap();
    w.add_symlink("passwd", "/etc/passwd", SimpleFileOptions::default())
        .unwrap();
    cases.push(("symlink", w.finish().unwrap().into_inner(), "symbolic link"));

    // A bomb declaring ~10 GB: 2 MiB of zeros deflated, its declared size patched to 10 GB.
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .large_file(true);
    w.start_file("bomb.bin", opts).unwrap();
    w.write_all(&vec![0u8; 2 << 20]).unwrap();
    let mut bomb = w.finish().unwrap().into_inner();
    let real = (2u64 << 20).to_le_bytes();
    let declared = 10_000_000_000u64.to_le_bytes();
    assert!(patch(&mut bomb, &real, &declared) >= 1);
    let mut check = zip::ZipArchive::new(Cursor::new(bomb.clone())).unwrap();
    assert_eq!(check.by_index(0).unwrap().size(), 10_000_000_000);
    cases.push(("10 GB bomb", bomb, "bomb.bin"));

    // 100k entries, each empty and stored (no compression work), well under the upload limit.
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::with_capacity(12 << 20)));
    let stored_opts =
        SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for i in 0..100_000 {
        w.start_file(format!("f{i}"), stored_opts).unwrap();
    }
    cases.push((
        "100k entries",
        w.finish().unwrap().into_inner(),
        "programs.max-files",
    ));

    for (what, bytes, needle) in cases {
        let r = upload_zip(&d, &token, &bytes);
        assert!(
            (400..500).contains(&r.status),
            "{what}: {} {}",
            r.status,
            r.text()
        );
        let msg = r.json()["error"]["message"].as_str().unwrap().to_owned();
        assert!(msg.contains(needle), "{what}: {msg}");
        assert!(stored(&d).is_empty(), "{what} left {:?}", stored(&d));
    }
    assert!(!d.state_dir().join("evil.py").exists());
    let list = call(&d, &token, "GET", "/api/v1/programs", None).json();
    assert_eq!(list["items"], json!([]));
    d.stop();
}

#[test]
fn a_nested_zip_stays_one_stored_file() {
    let (mut d, token) = start_daemon(None);
    let inner = zip_of(&[("a.txt", b"inside"), ("b.txt", b"inside too")]);
    let outer = zip_of(&[
        ("main.sh", b"ls /program; ls /program | wc -l\n"),
        ("inner.zip", &inner),
    ]);
    let r = upload_zip(&d, &token, &outer);
    assert_eq!(r.status, 201, "{}", r.text());
    let p = r.json();
    let files: Vec<&str> = p["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(files, ["inner.zip", "main.sh"]);
    let on_disk = std::fs::read(
        d.state_dir()
            .join("programs")
            .join(id(&p))
            .join("inner.zip"),
    )
    .unwrap();
    assert_eq!(on_disk, inner);
    let r = run(&d, &token, &id(&p), &json!({}));
    assert_eq!(r["stdout"], "inner.zip\nmain.sh\n2\n", "{r}");
    d.stop();
}

#[test]
fn runs_cannot_change_the_program_or_see_each_other() {
    let (mut d, token) = start_daemon(None);
    let src = std::fs::read(fixture("try_write.py")).unwrap();
    let p = upload_file(&d, &token, "try_write.py", &src);
    let r = run(&d, &token, &id(&p), &json!({"args": ["try_write.py"]}));
    let out = r["stdout"].as_str().unwrap();
    println!("write attempts: {out}");
    for line in out.lines() {
        assert!(
            line.ends_with(" EROFS") || line.ends_with(" EACCES"),
            "a run changed its program: {out}"
        );
    }
    assert!(out.contains("/program/x EROFS"), "{out}");
    let on_disk = d.state_dir().join("programs").join(id(&p));
    assert_eq!(std::fs::read(on_disk.join("try_write.py")).unwrap(), src);
    assert!(!on_disk.join("x").exists());

    // A file written by one run is not there for the next.
    let w = upload_file(
        &d,
        &token,
        "write_cwd.py",
        &std::fs::read(fixture("write_cwd.py")).unwrap(),
    );
    for _ in 0..2 {
        let r = run(&d, &token, &id(&w), &json!({}));
        assert!(r["stdout"].as_str().unwrap().starts_with("fresh "), "{r}");
    }
    d.stop();
}

#[test]
fn main_file_choice_and_unknown_types() {
    let (mut d, token) = start_daemon(None);
    let zip = zip_of(&[("a.py", b"print('a')\n"), ("b.py", b"print('b')\n")]);
    let r = upload_zip(&d, &token, &zip);
    assert_eq!(r.status, 201);
    let p = r.json();
    assert_eq!(p["needs_main"], true);
    assert_eq!(p["main"], Value::Null);
    let pid = id(&p);
    let r = call(
        &d,
        &token,
        "POST",
        &format!("/api/v1/programs/{pid}/runs"),
        Some(&json!({})),
    );
    assert_eq!(r.status, 409, "{}", r.text());
    let r = call(
        &d,
        &token,
        "PUT",
        &format!("/api/v1/programs/{pid}/main"),
        Some(&json!({"main": "c.py"})),
    );
    assert_eq!(r.status, 400);
    let r = call(
        &d,
        &token,
        "PUT",
        &format!("/api/v1/programs/{pid}/main"),
        Some(&json!({"main": "b.py"})),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["needs_main"], false);
    assert_eq!(run(&d, &token, &pid, &json!({}))["stdout"], "b\n");

    // An unknown type: 422 naming it.
    let u = upload_file(&d, &token, "data.xyz", b"just data\n");
    let r = call(
        &d,
        &token,
        "POST",
        &format!("/api/v1/programs/{}/runs", id(&u)),
        Some(&json!({})),
    );
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains(".xyz"), "{}", r.text());
    // A bad file name and a missing name.
    assert_eq!(
        upload(&d, &token, "?name=..", "text/plain", b"x").status,
        400
    );
    assert_eq!(upload(&d, &token, "", "text/plain", b"x").status, 400);
    assert_eq!(upload(&d, &token, "?name=a", "image/png", b"x").status, 415);
    d.stop();
}

#[test]
fn delete_during_a_run_needs_force() {
    let (mut d, token) = start_daemon(None);
    let p = upload_file(
        &d,
        &token,
        "sleep.sh",
        &std::fs::read(fixture("sleep.sh")).unwrap(),
    );
    let pid = id(&p);
    let (tcp, tok, pid2) = (d.tcp.clone(), token.clone(), pid.clone());
    let runner = std::thread::spawn(move || {
        let auth = format!("Bearer {tok}");
        http::request(
            &tcp,
            "POST",
            &format!("/api/v1/programs/{pid2}/runs"),
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            json!({"timeout_ms": 60000}).to_string().as_bytes(),
        )
    });
    std::thread::sleep(Duration::from_millis(1500));
    let r = call(
        &d,
        &token,
        "DELETE",
        &format!("/api/v1/programs/{pid}"),
        None,
    );
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(d.state_dir().join("programs").join(&pid).exists());
    let r = call(
        &d,
        &token,
        "DELETE",
        &format!("/api/v1/programs/{pid}?force=true"),
        None,
    );
    assert_eq!(r.status, 204, "{}", r.text());
    let done = runner.join().unwrap();
    assert_eq!(done.status, 200, "{}", done.text());
    let done = done.json();
    assert_eq!(done["status"], "killed", "{done}");
    assert_eq!(done["stdout"], "started\n");
    assert_eq!(
        call(&d, &token, "GET", &format!("/api/v1/programs/{pid}"), None).status,
        404
    );
    assert!(stored(&d).is_empty(), "{:?}", stored(&d));
    // Without a run, a plain delete works.
    let q = upload_file(&d, &token, "hello.sh", b"echo hi\n");
    let r = call(
        &d,
        &token,
        "DELETE",
        &format!("/api/v1/programs/{}", id(&q)),
        None,
    );
    assert_eq!(r.status, 204);
    d.stop();
}

#[test]
fn programs_run_when_the_daemon_is_unprivileged() {
    // The packaged unit runs as the localhostd user: jobs keep its uid outside.
    let (mut d, token) = start_daemon(Some(crate::sandbox::test_user()));
    let p = upload_file(
        &d,
        &token,
        "hello.py",
        &std::fs::read(fixture("hello.py")).unwrap(),
    );
    let r = run(&d, &token, &id(&p), &json!({"args": ["u"]}));
    assert_eq!(r["stdout"], "hello from python [\"u\"]\n", "{r}");
    let src = std::fs::read(fixture("try_write.py")).unwrap();
    let w = upload_file(&d, &token, "try_write.py", &src);
    let r = run(&d, &token, &id(&w), &json!({"args": ["try_write.py"]}));
    let out = r["stdout"].as_str().unwrap();
    assert!(!out.contains("WRITTEN"), "{out}");
    d.stop();
}

#[test]
fn uploads_past_the_limit_get_413_and_leave_nothing() {
    let d = Daemon::start_with(crate::harness::Options {
        config: "[rate-limit]\nenabled = false\n[programs]\nmax-upload-size = \"1KiB\"\n".into(),
        ..Default::default()
    });
    let token = d.admin_token();
    let r = upload(&d, &token, "?name=big.py", "text/plain", &[b'#'; 2048]);
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(
        r.text().contains("programs.max-upload-size"),
        "{}",
        r.text()
    );
    // Chunked, so only the streaming check can stop it.
    let auth = format!("Bearer {token}");
    let mut s = http::connect(&d.tcp);
    http::send_head(
        &mut *s,
        "POST",
        "/api/v1/programs?name=big.py",
        &[
            ("Authorization", &auth),
            ("Content-Type", "text/plain"),
            ("Transfer-Encoding", "chunked"),
        ],
        None,
    );
    let chunk = vec![b'#'; 1500];
    let _ = s.write_all(format!("{:x}\r\n", chunk.len()).as_bytes());
    let _ = s.write_all(&chunk);
    let _ = s.write_all(b"\r\n0\r\n\r\n");
    let r = http::read_response(&mut *s);
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(stored(&d).is_empty(), "{:?}", stored(&d));
}

#[test]
fn uploads_below_the_free_disk_floor_get_507_and_leave_nothing() {
    let d = Daemon::start_with(crate::harness::Options {
        config: "[rate-limit]\nenabled = false\n[storage]\nmin-free-disk = \"1000000TiB\"\n".into(),
        ..Default::default()
    });
    let token = d.admin_token();
    for r in [
        upload(&d, &token, "?name=a.py", "text/plain", b"print(1)\n"),
        upload_zip(&d, &token, &zip_of(&[("main.py", b"print(1)\n")])),
    ] {
        assert_eq!(r.status, 507, "{}", r.text());
        assert!(r.text().contains("storage.min-free-disk"), "{}", r.text());
    }
    assert!(stored(&d).is_empty(), "{:?}", stored(&d));
}

#[test]
fn download_as_zip_and_restart_keeps_programs_and_sweeps_orphans() {
    let (mut d, token) = start_daemon(None);
    let inner = zip_of(&[("a.txt", b"inside")]);
    let sh = b"#!/bin/sh\necho run\n";
    let r = upload_zip(
        &d,
        &token,
        &zip_of(&[("run.sh", sh), ("inner.zip", &inner)]),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let pid = id(&r.json());
    let auth = format!("Bearer {token}");
    let r = http::request(
        &d.tcp,
        "GET",
        &format!("/api/v1/programs/{pid}/archive"),
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/zip"));
    let mut z = zip::ZipArchive::new(Cursor::new(r.body.clone())).unwrap();
    let mut got = Vec::new();
    for i in 0..z.len() {
        let mut f = z.by_index(i).unwrap();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut f, &mut data).unwrap();
        got.push((
            f.name().unwrap().into_owned(),
            data,
            f.unix_mode().unwrap() & 0o777,
        ));
    }
    got.sort();
    assert_eq!(
        got,
        vec![
            ("inner.zip".to_owned(), inner.clone(), 0o644),
            ("run.sh".to_owned(), sh.to_vec(), 0o755),
        ]
    );

    // A directory without a row (a crash between rename and commit) is swept at startup.
    let orphan = d.state_dir().join("programs").join("0123456789abcdef");
    std::fs::create_dir(&orphan).unwrap();
    std::fs::write(orphan.join("x"), b"x").unwrap();
    d.stop();
    let dir = std::mem::replace(&mut d.dir, tempfile::tempdir().unwrap());
    drop(d);
    let _ = std::fs::remove_file(dir.path().join("http.sock"));
    let mut d = Daemon::start_with(crate::harness::Options {
        config: "[rate-limit]\nenabled = false\n".into(),
        dir: Some(dir),
        ..Default::default()
    });
    assert!(!orphan.exists());
    assert_eq!(stored(&d), vec![pid.clone()]);
    let r = run(&d, &token, &pid, &json!({}));
    assert_eq!(r["stdout"], "run\n", "{r}");
    d.stop();
}

/// One form part: name, filename, content type, bytes.
type Part<'a> = (&'a str, Option<&'a str>, Option<&'a str>, &'a [u8]);

/// A multipart/form-data body of `parts`.
fn form(parts: &[Part<'_>]) -> (String, Vec<u8>) {
    let boundary = "lhd-test-boundary-7f3a";
    let mut body = Vec::new();
    for (name, filename, ct, data) in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        let mut disp = format!("Content-Disposition: form-data; name=\"{name}\"");
        if let Some(f) = filename {
            disp.push_str(&format!("; filename=\"{f}\""));
        }
        body.extend_from_slice(disp.as_bytes());
        body.extend_from_slice(b"\r\n");
        if let Some(ct) = ct {
            body.extend_from_slice(format!("Content-Type: {ct}\r\n").as_bytes());
        }
        body.extend_from_slice(b"\r\n");
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

#[test]
fn multipart_uploads() {
    let (mut d, token) = start_daemon(None);
    let src = std::fs::read(fixture("hello.py")).unwrap();
    let (ct, body) = form(&[("file", Some("hello.py"), Some("text/x-python"), &src)]);
    let r = upload(&d, &token, "", &ct, &body);
    assert_eq!(r.status, 201, "{}", r.text());
    let p = r.json();
    assert_eq!(p["name"], "hello.py");
    let out = run(&d, &token, &id(&p), &json!({"args": ["m"]}));
    assert_eq!(out["stdout"], "hello from python [\"m\"]\n", "{out}");

    // A ZIP part, with the main file chosen in the form.
    let zip = zip_of(&[("a.sh", b"echo a\n"), ("b.sh", b"echo b\n")]);
    let (ct, body) = form(&[
        ("main", None, None, b"b.sh"),
        ("file", Some("proj.zip"), Some("application/zip"), &zip),
    ]);
    let r = upload(&d, &token, "", &ct, &body);
    assert_eq!(r.status, 201, "{}", r.text());
    let p = r.json();
    assert_eq!(p["kind"], "project");
    assert_eq!(p["main"], "b.sh");
    assert_eq!(run(&d, &token, &id(&p), &json!({}))["stdout"], "b\n");

    let (ct, body) = form(&[("main", None, None, b"x")]);
    assert_eq!(upload(&d, &token, "", &ct, &body).status, 400);
    assert!(stored(&d).len() == 2, "{:?}", stored(&d));
    d.stop();
}
