//! The seed's routes through the real daemon, one test per row of docs/seed-compat.md's
//! tables: each answers as that document says (error cases included) through its v1 route's
//! guard (a token is needed); with `[compat] seed-routes = false` each is 404 while the native
//! `/`, `/health`, `/metrics` and `/dashboard` stay.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Daemon, request_as, request_json, sha_hex};
use crate::http;

fn start() -> (Daemon, String) {
    let d = Daemon::start();
    let t = d.admin_token();
    (d, t)
}

fn send(d: &Daemon, token: &str, method: &str, path: &str, body: &Value) -> http::Response {
    request_json(d, method, path, token, body)
}

fn bare(d: &Daemon, token: &str, method: &str, path: &str) -> http::Response {
    request_as(&d.tcp, &format!("Bearer {token}"), method, path, None, b"")
}

/// A multipart/form-data body of one `file` part and, when given, other text fields.
fn form(filename: &str, ct: &str, data: &[u8], fields: &[(&str, &str)]) -> (String, Vec<u8>) {
    let boundary = "lhd-compat-boundary-41c2";
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\nContent-Type: {ct}\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

fn upload(d: &Daemon, token: &str, path: &str, filename: &str, data: &[u8]) -> http::Response {
    let (ct, body) = form(filename, "application/octet-stream", data, &[]);
    request_as(
        &d.tcp,
        &format!("Bearer {token}"),
        "POST",
        path,
        Some(&ct),
        &body,
    )
}

/// Every seed route, with a body it accepts (for the 401 check).
const ALIASES: &[(&str, &str)] = &[
    ("GET", "/api/data"),
    ("POST", "/api/data"),
    ("GET", "/api/data/k"),
    ("DELETE", "/api/data/k"),
    ("POST", "/api/files/upload"),
    ("GET", "/api/files/list"),
    ("GET", "/api/files/download/a.txt"),
    ("DELETE", "/api/files/delete/a.txt"),
    ("GET", "/api/files/storage-info"),
    ("POST", "/api/programs/upload"),
    ("POST", "/api/programs/upload-zip"),
    ("GET", "/api/programs/list"),
    ("POST", "/api/programs/execute/p.sh"),
    ("POST", "/api/programs/execute-terminal/p.sh"),
    ("DELETE", "/api/programs/delete/p.sh"),
    ("POST", "/api/execute"),
    ("POST", "/api/execute/interactive"),
    ("POST", "/api/execute/send-input"),
    ("POST", "/api/execute/terminate-session"),
    ("POST", "/api/ngrok/start"),
    ("POST", "/api/ngrok/stop"),
    ("GET", "/api/ngrok/status"),
    ("POST", "/api/localtunnel/start"),
    ("POST", "/api/localtunnel/stop"),
    ("GET", "/api/localtunnel/status"),
    ("POST", "/api/cloudflared/start"),
    ("POST", "/api/cloudflared/stop"),
    ("GET", "/api/cloudflared/status"),
];

#[test]
fn every_seed_route_needs_a_token() {
    let (d, _t) = start();
    for (m, p) in ALIASES {
        let r = http::request(&d.tcp, m, p, &[("Content-Type", "application/json")], b"{}");
        assert_eq!(r.status, 401, "{m} {p}: {}", r.text());
        assert_eq!(r.json()["error"]["code"], "unauthorized", "{m} {p}");
    }
    // A token that is not valid is refused the same way.
    let r = send(&d, "lhd_not-a-token", "GET", "/api/data", &json!(null));
    assert_eq!(r.status, 401);
}

#[test]
fn data_get_all_is_one_object() {
    let (d, t) = start();
    let r = bare(&d, &t, "GET", "/api/data");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({}));
    for (k, v) in [
        ("a", json!(1)),
        ("b/c", json!({"x": [1, 2]})),
        ("n", json!(null)),
    ] {
        let r = send(&d, &t, "PUT", &format!("/api/v1/data/{k}"), &v);
        assert!(r.status == 201, "{}", r.text());
    }
    let r = bare(&d, &t, "GET", "/api/data");
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"a": 1, "b/c": {"x": [1, 2]}, "n": null}));
}

#[test]
fn data_post_stores_a_key_durably_and_versioned() {
    let (d, t) = start();
    let r = send(
        &d,
        &t,
        "POST",
        "/api/data",
        &json!({"key": "greeting", "value": {"text": "hi"}}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["key"], "greeting");
    let v1 = r.json()["version"].clone();
    let r = send(
        &d,
        &t,
        "POST",
        "/api/data",
        &json!({"key": "greeting", "value": 2}),
    );
    assert_eq!(r.status, 200);
    assert_ne!(r.json()["version"], v1);
    // The v1 route sees it.
    let r = bare(&d, &t, "GET", "/api/v1/data/greeting");
    assert_eq!(r.json()["value"], 2);
    // Bad JSON: 400 invalid_json; no key: 400.
    let r = request_as(
        &d.tcp,
        &format!("Bearer {t}"),
        "POST",
        "/api/data",
        Some("application/json"),
        b"{\"key\": ",
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], "invalid_json");
    let r = send(&d, &t, "POST", "/api/data", &json!({"value": 1}));
    assert_eq!(r.status, 400, "{}", r.text());
}

#[test]
fn data_get_by_key_and_missing_key_404() {
    let (d, t) = start();
    send(
        &d,
        &t,
        "POST",
        "/api/data",
        &json!({"key": "a/b", "value": [1]}),
    );
    let r = bare(&d, &t, "GET", "/api/data/a/b");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["key"], "a/b");
    assert_eq!(r.json()["value"], json!([1]));
    assert!(r.header("ETag").is_some());
    let r = bare(&d, &t, "GET", "/api/data/missing");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "not_found");
}

#[test]
fn data_delete_by_key_and_missing_key_404() {
    let (d, t) = start();
    send(
        &d,
        &t,
        "POST",
        "/api/data",
        &json!({"key": "gone", "value": 1}),
    );
    let r = bare(&d, &t, "DELETE", "/api/data/gone");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(bare(&d, &t, "GET", "/api/v1/data/gone").status, 404);
    let r = bare(&d, &t, "DELETE", "/api/data/gone");
    assert_eq!(r.status, 404);
    // Audited like the v1 route (the same domain call).
    let audit = bare(&d, &t, "GET", "/api/v1/audit").text();
    assert!(audit.contains("gone"), "{audit}");
}

#[test]
fn files_upload_takes_the_file_part() {
    let (d, t) = start();
    let data = b"seed file\n".repeat(100);
    let r = upload(&d, &t, "/api/files/upload", "notes.txt", &data);
    assert_eq!(r.status, 201, "{}", r.text());
    let item = &r.json()["items"][0];
    assert_eq!(item["path"], "notes.txt");
    assert_eq!(item["sha256"], sha_hex(&data));
    // A body that is not a form: 415 (the v1 route's body types).
    let r = send(&d, &t, "POST", "/api/files/upload", &json!({}));
    assert_eq!(r.status, 415, "{}", r.text());
    // A form without a file: 400.
    let r = request_as(
        &d.tcp,
        &format!("Bearer {t}"),
        "POST",
        "/api/files/upload",
        Some("multipart/form-data; boundary=x"),
        b"--x\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nb\r\n--x--\r\n",
    );
    assert_eq!(r.status, 400, "{}", r.text());
}

#[test]
fn files_list_is_every_file_with_its_checksum() {
    let (d, t) = start();
    assert_eq!(bare(&d, &t, "GET", "/api/files/list").json(), json!([]));
    upload(&d, &t, "/api/files/upload", "b.txt", b"bee");
    upload(&d, &t, "/api/v1/files", "a.txt", b"ay");
    let r = bare(&d, &t, "GET", "/api/files/list");
    assert_eq!(r.status, 200, "{}", r.text());
    let list = r.json();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["filename"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a.txt", "b.txt"]);
    assert_eq!(list[1]["size"], 3);
    assert_eq!(list[1]["checksum"], sha_hex(b"bee"));
    assert!(list[1]["uploaded_at"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn files_download_and_missing_404() {
    let (d, t) = start();
    upload(&d, &t, "/api/files/upload", "dl.bin", b"\x00\x01binary");
    let r = bare(&d, &t, "GET", "/api/files/download/dl.bin");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"\x00\x01binary");
    let r = bare(&d, &t, "GET", "/api/files/download/nope.bin");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "not_found");
}

#[test]
fn files_delete_and_missing_404() {
    let (d, t) = start();
    upload(&d, &t, "/api/files/upload", "x.txt", b"x");
    let r = bare(&d, &t, "DELETE", "/api/files/delete/x.txt");
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(bare(&d, &t, "GET", "/api/v1/files/x.txt").status, 404);
    assert_eq!(
        bare(&d, &t, "DELETE", "/api/files/delete/x.txt").status,
        404
    );
}

#[test]
fn files_storage_info_is_the_usage() {
    let (d, t) = start();
    upload(&d, &t, "/api/files/upload", "u.txt", b"12345");
    let r = bare(&d, &t, "GET", "/api/files/storage-info");
    assert_eq!(r.status, 200, "{}", r.text());
    // The v1 answer's fields (free_disk_bytes moves with the machine's other writers).
    let (seed, v1) = (r.json(), bare(&d, &t, "GET", "/api/v1/files:usage").json());
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&seed), keys(&v1));
    for k in ["file_count", "used_bytes", "quota_bytes", "quota_files"] {
        assert_eq!(seed[k], v1[k], "{k}");
    }
    assert_eq!(r.json()["used_bytes"], 5);
}

const SCRIPT: &[u8] = b"#!/bin/sh\necho \"args:$#\"; for a in \"$@\"; do echo \"[$a]\"; done\necho oops >&2\nexit 3\n";

fn upload_program(d: &Daemon, t: &str, path: &str, name: &str, data: &[u8], ct: &str) -> Value {
    let (ct, body) = form(name, ct, data, &[]);
    let r = request_as(
        &d.tcp,
        &format!("Bearer {t}"),
        "POST",
        path,
        Some(&ct),
        &body,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()
}

#[test]
fn programs_upload_takes_the_file_part() {
    let (d, t) = start();
    let p = upload_program(
        &d,
        &t,
        "/api/programs/upload",
        "p.sh",
        SCRIPT,
        "text/x-shellscript",
    );
    assert_eq!(p["name"], "p.sh");
    assert_eq!(p["kind"], "file");
    // A form with an unknown field: 400 (the v1 route's rule).
    let (ct, body) = form("q.sh", "text/plain", SCRIPT, &[("other", "x")]);
    let r = request_as(
        &d.tcp,
        &format!("Bearer {t}"),
        "POST",
        "/api/programs/upload",
        Some(&ct),
        &body,
    );
    assert_eq!(r.status, 400, "{}", r.text());
}

/// A ZIP of `files` (stored, no compression).
fn zip_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    use std::io::Write;
    let mut out = std::io::Cursor::new(Vec::new());
    {
        let mut z = zip::ZipWriter::new(&mut out);
        let opts: zip::write::SimpleFileOptions = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored)
            .unix_permissions(0o755);
        for (name, data) in files {
            z.start_file(*name, opts).unwrap();
            z.write_all(data).unwrap();
        }
        z.finish().unwrap();
    }
    out.into_inner()
}

#[test]
fn programs_upload_zip_makes_a_project() {
    let (d, t) = start();
    let zip = zip_of(&[
        ("main.sh", b"#!/bin/sh\necho project-ran\n"),
        ("lib.txt", b"x"),
    ]);
    let p = upload_program(
        &d,
        &t,
        "/api/programs/upload-zip",
        "proj.zip",
        &zip,
        "application/zip",
    );
    assert_eq!(p["kind"], "project", "{p}");
    assert_eq!(p["name"], "proj.zip");
    // Named by the seed's project_name field.
    let (ct, body) = form(
        "x.zip",
        "application/zip",
        &zip,
        &[("project_name", "my-project")],
    );
    let r = request_as(
        &d.tcp,
        &format!("Bearer {t}"),
        "POST",
        "/api/programs/upload-zip",
        Some(&ct),
        &body,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["name"], "my-project");
    assert_eq!(r.json()["kind"], "project");
    let r = send(
        &d,
        &t,
        "POST",
        &format!("/api/programs/execute/{}", p["id"].as_str().unwrap()),
        &json!({}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["stdout"], "project-ran\n");
    // Not a ZIP: 422.
    let (ct, body) = form("bad.zip", "application/zip", b"not a zip", &[]);
    let r = request_as(
        &d.tcp,
        &format!("Bearer {t}"),
        "POST",
        "/api/programs/upload-zip",
        Some(&ct),
        &body,
    );
    assert!(
        r.status == 422 || r.status == 400,
        "{} {}",
        r.status,
        r.text()
    );
}

#[test]
fn programs_list_is_the_v1_page() {
    let (d, t) = start();
    upload_program(&d, &t, "/api/programs/upload", "p.sh", SCRIPT, "text/plain");
    let r = bare(&d, &t, "GET", "/api/programs/list");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["items"][0]["name"], "p.sh");
    assert_eq!(r.json(), bare(&d, &t, "GET", "/api/v1/programs").json());
}

#[test]
fn programs_execute_by_name_with_an_args_string_in_the_sandbox() {
    let (d, t) = start();
    let p = upload_program(&d, &t, "/api/programs/upload", "p.sh", SCRIPT, "text/plain");
    let r = send(
        &d,
        &t,
        "POST",
        "/api/programs/execute/p.sh",
        &json!({"args": "one 'two words' \"three\""}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let out = r.json();
    assert_eq!(
        out["stdout"], "args:3\n[one]\n[two words]\n[three]\n",
        "{out}"
    );
    assert_eq!(out["stderr"], "oops\n");
    assert_eq!(out["exit_code"], 3);
    assert_eq!(out["status"], "nonzero_exit");
    // By id, with no body.
    let id = p["id"].as_str().unwrap();
    let r = bare(&d, &t, "POST", &format!("/api/programs/execute/{id}"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["stdout"], "args:0\n");
    // The run is in the v1 history.
    let runs = bare(&d, &t, "GET", &format!("/api/v1/programs/{id}/runs")).json();
    assert_eq!(runs["items"].as_array().unwrap().len(), 2, "{runs}");
    // No such program: 404; an unclosed quote: 400; bad JSON: 400.
    let r = send(&d, &t, "POST", "/api/programs/execute/nope.sh", &json!({}));
    assert_eq!(r.status, 404);
    let r = send(
        &d,
        &t,
        "POST",
        "/api/programs/execute/p.sh",
        &json!({"args": "'open"}),
    );
    assert_eq!(r.status, 400);
    let r = request_as(
        &d.tcp,
        &format!("Bearer {t}"),
        "POST",
        "/api/programs/execute/p.sh",
        Some("application/json"),
        b"{",
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], "invalid_json");
    // Two programs of one name: 409 naming both.
    upload_program(&d, &t, "/api/programs/upload", "p.sh", SCRIPT, "text/plain");
    let r = send(&d, &t, "POST", "/api/programs/execute/p.sh", &json!({}));
    assert_eq!(r.status, 409, "{}", r.text());
}

/// Reads a terminal's output until it holds `needle` (the v1 long poll).
fn terminal_output(d: &Daemon, t: &str, id: &str, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut out = String::new();
    let mut since = 0u64;
    while Instant::now() < deadline {
        let r = bare(
            d,
            t,
            "GET",
            &format!("/api/v1/terminals/{id}/output?since={since}&wait_ms=2000"),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        out.push_str(v["data"].as_str().unwrap_or(""));
        since = v["next"].as_u64().unwrap();
        if out.contains(needle) {
            return out;
        }
    }
    panic!("no {needle:?} in the terminal's output: {out:?}");
}

#[test]
fn programs_execute_terminal_starts_a_session() {
    let (d, t) = start();
    let script = b"#!/bin/sh\nread x\necho \"got:$x:$1\"\n";
    upload_program(
        &d,
        &t,
        "/api/programs/upload",
        "ask.sh",
        script,
        "text/plain",
    );
    let r = send(
        &d,
        &t,
        "POST",
        "/api/programs/execute-terminal/ask.sh",
        &json!({"args": "A"}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let r = send(
        &d,
        &t,
        "POST",
        "/api/execute/send-input",
        &json!({"session_id": id, "input": "yes"}),
    );
    assert_eq!(r.status, 204, "{}", r.text());
    terminal_output(&d, &t, &id, "got:yes:A");
    let r = send(
        &d,
        &t,
        "POST",
        "/api/programs/execute-terminal/none.sh",
        &json!({}),
    );
    assert_eq!(r.status, 404);
}

#[test]
fn programs_delete_by_name_and_missing_404() {
    let (d, t) = start();
    upload_program(
        &d,
        &t,
        "/api/programs/upload",
        "del.sh",
        SCRIPT,
        "text/plain",
    );
    let r = bare(&d, &t, "DELETE", "/api/programs/delete/del.sh");
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(
        bare(&d, &t, "GET", "/api/v1/programs").json()["items"],
        json!([])
    );
    assert_eq!(
        bare(&d, &t, "DELETE", "/api/programs/delete/del.sh").status,
        404
    );
}

#[test]
fn execute_runs_the_command_in_the_sandbox() {
    let (d, t) = start();
    let r = send(
        &d,
        &t,
        "POST",
        "/api/execute",
        &json!({"command": "echo hi; echo err >&2; exit 2"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let out = r.json();
    assert_eq!(out["stdout"], "hi\n", "{out}");
    assert_eq!(out["stderr"], "err\n");
    assert_eq!(out["exit_code"], 2);
    // In the v1 history.
    let h = bare(&d, &t, "GET", "/api/v1/executions").json();
    assert_eq!(h["items"].as_array().unwrap().len(), 1, "{h}");
    // No command, an unknown field, bad JSON: 400.
    assert_eq!(send(&d, &t, "POST", "/api/execute", &json!({})).status, 400);
    assert_eq!(
        send(
            &d,
            &t,
            "POST",
            "/api/execute",
            &json!({"command": "true", "x": 1})
        )
        .status,
        400
    );
    let r = request_as(
        &d.tcp,
        &format!("Bearer {t}"),
        "POST",
        "/api/execute",
        Some("application/json"),
        b"nope",
    );
    assert_eq!(r.json()["error"]["code"], "invalid_json");
}

#[test]
fn execute_interactive_send_input_and_terminate() {
    let (d, t) = start();
    let r = send(
        &d,
        &t,
        "POST",
        "/api/execute/interactive",
        &json!({"command": "while read l; do echo \"echo:$l\"; done"}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let r = send(
        &d,
        &t,
        "POST",
        "/api/execute/send-input",
        &json!({"session_id": id, "input": "ping"}),
    );
    assert_eq!(r.status, 204, "{}", r.text());
    terminal_output(&d, &t, &id, "echo:ping");
    let r = send(
        &d,
        &t,
        "POST",
        "/api/execute/terminate-session",
        &json!({"session_id": id}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["id"], id.as_str());
    let state = bare(&d, &t, "GET", &format!("/api/v1/terminals/{id}")).json();
    assert_ne!(state["state"], "running", "{state}");
    // Unknown sessions: 404.
    let r = send(
        &d,
        &t,
        "POST",
        "/api/execute/send-input",
        &json!({"session_id": "nope", "input": "x"}),
    );
    assert_eq!(r.status, 404, "{}", r.text());
    let r = send(
        &d,
        &t,
        "POST",
        "/api/execute/terminate-session",
        &json!({"session_id": "nope"}),
    );
    assert_eq!(r.status, 404, "{}", r.text());
    // No command: 400.
    let r = send(&d, &t, "POST", "/api/execute/interactive", &json!({}));
    assert_eq!(r.status, 400);
}

#[test]
fn tunnels_answer_403_while_tunnels_are_off() {
    let (d, t) = start();
    for p in ["ngrok", "localtunnel", "cloudflared"] {
        for (m, a) in [("POST", "start"), ("POST", "stop"), ("GET", "status")] {
            let r = send(&d, &t, m, &format!("/api/{p}/{a}"), &json!({}));
            assert_eq!(r.status, 403, "{m} /api/{p}/{a}: {}", r.text());
            assert_eq!(r.json()["error"]["code"], "forbidden");
        }
    }
}

fn fakes() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/tunnel_fakes")
}

/// Polls `/api/{p}/status` until `ok`, for up to 30 s.
fn wait_status(d: &Daemon, t: &str, p: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = bare(d, t, "GET", &format!("/api/{p}/status"));
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        if ok(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{p}: {v}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn tunnels_start_status_stop_with_the_fake_clients() {
    let dir = tempfile::tempdir().unwrap();
    let authtoken = dir.path().join("ngrok.authtoken");
    std::fs::write(&authtoken, "2abcTESTtoken\n").unwrap();
    let cfg = format!(
        "[tunnels]\nenabled = true\nurl-timeout = \"20s\"\nrestart-delay = \"100ms\"\nmax-restart-delay = \"200ms\"\n\
         [tunnels.cloudflared]\npath = {:?}\n\
         [tunnels.ngrok]\npath = {:?}\nauthtoken-file = {:?}\n\
         [tunnels.localtunnel]\npath = {:?}\n",
        fakes().join("cloudflared").display().to_string(),
        fakes().join("ngrok").display().to_string(),
        authtoken.display().to_string(),
        dir.path().join("no-such-lt").display().to_string(),
    );
    let d = Daemon::start_config(&cfg);
    let t = d.admin_token();
    for p in ["cloudflared", "ngrok"] {
        let s = bare(&d, &t, "GET", &format!("/api/{p}/status")).json();
        assert_eq!(s["provider"], p);
        assert_eq!(s["state"], "stopped", "{s}");
        let r = bare(&d, &t, "POST", &format!("/api/{p}/start"));
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["provider"], p);
        let up = wait_status(&d, &t, p, |v| v["state"] == "up");
        assert!(up["url"].as_str().unwrap().starts_with("https://"), "{up}");
        // The v1 list says the same.
        let list = bare(&d, &t, "GET", "/api/v1/tunnels").json();
        let item = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["provider"] == p)
            .unwrap()
            .clone();
        assert_eq!(item["url"], up["url"]);
        let r = bare(&d, &t, "POST", &format!("/api/{p}/stop"));
        assert_eq!(r.status, 200, "{}", r.text());
        wait_status(&d, &t, p, |v| v["state"] == "stopped");
    }
    // localtunnel's client is missing here: 422 saying so, and its status says why.
    let r = bare(&d, &t, "POST", "/api/localtunnel/start");
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "unprocessable");
    let s = bare(&d, &t, "GET", "/api/localtunnel/status").json();
    assert_eq!(s["available"], false, "{s}");
    // A non-admin token: 403 (the v1 route's scope).
    let r = send(
        &d,
        &t,
        "POST",
        "/api/v1/tokens",
        &json!({"name": "reader", "scopes": ["read", "write", "exec"]}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let reader = r.json()["token"].as_str().unwrap().to_owned();
    assert_eq!(bare(&d, &reader, "GET", "/api/ngrok/status").status, 403);
}

#[test]
fn seed_routes_off_answer_404_and_native_routes_stay() {
    let d = Daemon::start_config("[compat]\nseed-routes = false\n");
    let t = d.admin_token();
    for (m, p) in ALIASES {
        let r = send(&d, &t, m, p, &json!({}));
        assert_eq!(r.status, 404, "{m} {p}: {}", r.text());
        assert_eq!(r.json()["error"]["code"], "not_found", "{m} {p}");
    }
    // Native: the UI's home, the probes, the metrics, the dashboard page and its data.
    assert_eq!(http::get(&d.tcp, "/").status, 200);
    assert_eq!(http::get(&d.tcp, "/health").status, 200);
    assert_eq!(http::get(&d.tcp, "/api/v1/health").status, 200);
    assert_eq!(bare(&d, &t, "GET", "/metrics").status, 200);
    assert_eq!(bare(&d, &t, "GET", "/api/v1/dashboard").status, 200);
    let r = http::get(&d.tcp, "/dashboard");
    assert_eq!(r.status, 308);
    assert_eq!(r.header("Location"), Some("/"));
}

#[test]
fn system_routes_health_metrics_dashboard() {
    let (d, t) = start();
    assert_eq!(http::get(&d.tcp, "/health").status, 200);
    assert_eq!(http::get(&d.tcp, "/api/v1/health").status, 200);
    let r = http::get(&d.tcp, "/");
    assert_eq!(r.status, 200);
    assert!(
        r.text().contains("<html") || r.text().contains("<!doctype"),
        "{}",
        r.text()
    );
    let r = http::get(&d.tcp, "/dashboard");
    assert_eq!(r.status, 308);
    assert_eq!(r.header("Location"), Some("/"));
    // Monitoring needs a token (or metrics.public-on-loopback).
    assert_eq!(http::get(&d.tcp, "/api/v1/dashboard").status, 401);
    assert_eq!(bare(&d, &t, "GET", "/api/v1/dashboard").status, 200);
    let m = bare(&d, &t, "GET", "/metrics");
    assert_eq!(m.status, 200);
    assert!(m.text().contains("# TYPE"), "{}", m.text());
}
