//! Stored quotas through the real daemon: the data store's key count, total size and
//! free-disk floor, the file store's file count, the execution history's argv bound, and the
//! program upload's small form fields. Each refusal is a clear 4xx/507 that changes nothing.

use serde_json::{Value, json};

use crate::harness::{Daemon, Options, request_as};
use crate::http::Response;

struct D {
    d: Daemon,
    bearer: String,
}

fn start(extra: &str) -> D {
    let d = Daemon::start_with(Options {
        config: format!("[rate-limit]\nenabled = false\n{extra}"),
        ..Options::default()
    });
    let token = d.admin_token();
    D {
        d,
        bearer: format!("Bearer {token}"),
    }
}

impl D {
    fn req(&self, method: &str, path: &str, ct: Option<&str>, body: &[u8]) -> Response {
        request_as(&self.d.tcp, &self.bearer, method, path, ct, body)
    }
    fn put_key(&self, key: &str, v: &Value) -> Response {
        self.req(
            "PUT",
            &format!("/api/v1/data/{key}"),
            Some("application/json"),
            v.to_string().as_bytes(),
        )
    }
    fn keys(&self) -> Vec<(String, Value)> {
        let r = self.req("GET", "/api/v1/data?limit=1000", None, b"");
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| (i["key"].as_str().unwrap().to_owned(), i["value"].clone()))
            .collect()
    }
    fn put_file(&self, path: &str, body: &[u8]) -> Response {
        self.req(
            "PUT",
            &format!("/api/v1/files/{path}"),
            Some("application/octet-stream"),
            body,
        )
    }
}

fn refused(r: &Response, status: u16, code: &str, names: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], code, "{}", r.text());
    assert!(r.text().contains(names), "{}", r.text());
}

#[test]
fn kv_key_count_and_total_size_quotas_answer_507_and_shrinking_writes_pass() {
    let cfg = "[kv]\nmax-keys = 3\nmax-total-size = \"100B\"\nmax-value-size = \"40B\"\n";
    let mut s = start(cfg);
    for k in ["a", "b", "c"] {
        assert_eq!(s.put_key(k, &json!(1)).status, 201);
    }
    // A fourth key: refused; replacing one is not a new key.
    refused(
        &s.put_key("d", &json!(1)),
        507,
        "quota_exceeded",
        "kv.max-keys",
    );
    assert_eq!(s.put_key("a", &json!(2)).status, 200);
    // Bytes: 38 + 38 + 1, then a third 38-byte value passes 100.
    let big = json!("x".repeat(36));
    assert_eq!(s.put_key("a", &big).status, 200);
    assert_eq!(s.put_key("b", &big).status, 200);
    refused(
        &s.put_key("c", &big),
        507,
        "quota_exceeded",
        "kv.max-total-size",
    );
    // A write that shrinks the store always passes; then there is room again.
    assert_eq!(s.put_key("a", &json!(1)).status, 200);
    assert_eq!(s.put_key("c", &big).status, 200);
    // A batch that would add two keys changes nothing.
    let batch = json!({"ops": [
        {"op": "delete", "key": "a"},
        {"op": "put", "key": "e", "value": 1},
        {"op": "put", "key": "f", "value": 1},
    ]});
    let r = s.req(
        "POST",
        "/api/v1/data:batch",
        Some("application/json"),
        batch.to_string().as_bytes(),
    );
    refused(&r, 507, "quota_exceeded", "kv.max-keys");
    let before = s.keys();
    assert_eq!(
        before.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        ["a", "b", "c"]
    );
    // Deleting makes room for a new key.
    assert!(s.req("DELETE", "/api/v1/data/a", None, b"").status < 300);
    assert_eq!(s.put_key("d", &json!(1)).status, 201);
    // The usage is the database's, not a count since the start.
    s.d.stop();
    let dir = std::mem::replace(&mut s.d.dir, tempfile::tempdir().unwrap());
    let _ = std::fs::remove_file(dir.path().join("http.sock"));
    let d = Daemon::start_with(Options {
        config: format!("[rate-limit]\nenabled = false\n{cfg}"),
        dir: Some(dir),
        ..Options::default()
    });
    let s = D {
        d,
        bearer: s.bearer.clone(),
    };
    refused(
        &s.put_key("e", &json!(1)),
        507,
        "quota_exceeded",
        "kv.max-keys",
    );
    refused(
        &s.put_key("d", &big),
        507,
        "quota_exceeded",
        "kv.max-total-size",
    );
}

#[test]
fn kv_writes_below_the_free_disk_floor_answer_507() {
    let s = start("[storage]\nmin-free-disk = \"1000000TiB\"\n");
    refused(
        &s.put_key("k", &json!("v")),
        507,
        "insufficient_storage",
        "storage.min-free-disk",
    );
    assert!(s.keys().is_empty());
    // A delete is never refused for space (it frees some): here it finds nothing.
    assert_eq!(s.req("DELETE", "/api/v1/data/k", None, b"").status, 404);
}

#[test]
fn files_max_files_counts_empty_files_too() {
    let s = start("[files]\nmax-files = 3\n");
    for p in ["a", "b", "c"] {
        assert_eq!(s.put_file(p, b"").status, 201, "{p}");
    }
    refused(
        &s.put_file("d", b""),
        507,
        "quota_exceeded",
        "files.max-files",
    );
    // Replacing a file is not a new one.
    assert_eq!(s.put_file("a", b"new").status, 200);
    let usage = s.req("GET", "/api/v1/files?limit=10", None, b"").json();
    assert_eq!(usage["items"].as_array().unwrap().len(), 3);
    assert!(s.req("DELETE", "/api/v1/files/b", None, b"").status < 300);
    assert_eq!(s.put_file("d", b"").status, 201);
    let blobs = std::fs::read_dir(s.d.state_dir().join("files/blobs"))
        .unwrap()
        .count();
    assert_eq!(blobs, 3, "a refused upload left a blob");
}

#[test]
fn execution_history_keeps_a_bounded_argv() {
    let s = start("");
    let long = "a".repeat(100_000);
    let r = s.req(
        "POST",
        "/api/v1/exec",
        Some("application/json"),
        json!({"argv": ["/bin/true", "short", long]})
            .to_string()
            .as_bytes(),
    );
    if r.status != 200 {
        // The sandbox may be unavailable here; the history is what this test is about.
        eprintln!("exec answered {}: {}", r.status, r.text());
    }
    let h = s.req("GET", "/api/v1/executions?limit=1", None, b"").json();
    let argv = h["items"][0]["argv"].as_array().unwrap().clone();
    let stored = serde_json::to_string(&argv).unwrap();
    assert!(stored.len() <= 4096 + 200, "{} bytes kept", stored.len());
    assert_eq!(argv[0], "/bin/true");
    assert_eq!(argv[1], "short");
    let marker = argv.last().unwrap().as_str().unwrap();
    assert!(
        marker.contains("truncated") && marker.contains("exec.history-max-argv-size"),
        "{marker}"
    );
}

#[test]
fn a_program_uploads_form_fields_other_than_the_file_are_bounded() {
    let s = start("");
    let form = |main: &[u8]| {
        let b = "lhd-quota-boundary";
        let mut body = Vec::new();
        body.extend_from_slice(
            format!("--{b}\r\nContent-Disposition: form-data; name=\"main\"\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(main);
        body.extend_from_slice(
            format!(
                "\r\n--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"run.sh\"\r\n\r\n#!/bin/sh\necho hi\n\r\n--{b}--\r\n"
            )
            .as_bytes(),
        );
        (format!("multipart/form-data; boundary={b}"), body)
    };
    let (ct, body) = form(&vec![b'm'; 64 << 10]);
    let r = s.req("POST", "/api/v1/programs", Some(&ct), &body);
    refused(&r, 413, "payload_too_large", "main");
    assert!(
        r.text().contains("programs.max-name-length"),
        "{}",
        r.text()
    );
    let listed = s.req("GET", "/api/v1/programs", None, b"").json();
    assert!(listed["items"].as_array().unwrap().is_empty());
    // Control: a main of sane length is read.
    let (ct, body) = form(b"run.sh");
    let r = s.req("POST", "/api/v1/programs", Some(&ct), &body);
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["main"], "run.sh");
}
