//! The file store through the real daemon: byte-exact round trips, multipart, digests, path
//! rules, quotas mid-stream, disconnects, ranges, conditional GETs, concurrent replaces, and a
//! `kill -9` during a large upload. After every refusal the store's directories are checked:
//! no temp file, no blob, no metadata.

use std::io::Write;
use std::time::{Duration, Instant};

use crate::harness::{Daemon, Options, data, sha_hex};
use crate::http::{self, Response};

struct Store {
    d: Daemon,
    bearer: String,
}

fn start(extra: &str) -> Store {
    start_with(Options {
        config: format!("[rate-limit]\nenabled = false\n{extra}"),
        ..Options::default()
    })
}

fn start_with(opts: Options) -> Store {
    let d = Daemon::start_with(opts);
    let token = d.admin_token();
    Store {
        d,
        bearer: format!("Bearer {token}"),
    }
}

impl Store {
    fn req(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
        let mut h: Vec<(&str, &str)> = vec![("Authorization", self.bearer.as_str())];
        h.extend_from_slice(headers);
        http::request(&self.d.tcp, method, path, &h, body)
    }
    fn put(&self, name: &str, body: &[u8]) -> Response {
        self.req("PUT", &format!("/api/v1/files/{name}"), &[], body)
    }
    fn get(&self, name: &str, headers: &[(&str, &str)]) -> Response {
        self.req("GET", &format!("/api/v1/files/{name}"), headers, b"")
    }
    fn entries(&self, sub: &str) -> Vec<String> {
        match std::fs::read_dir(self.d.state_dir().join("files").join(sub)) {
            Ok(rd) => rd
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        }
    }
    fn usage(&self) -> serde_json::Value {
        let r = self.req("GET", "/api/v1/files:usage", &[], b"");
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }
    fn listed(&self) -> Vec<String> {
        let r = self.req("GET", "/api/v1/files?limit=1000", &[], b"");
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["path"].as_str().unwrap().to_owned())
            .collect()
    }
    /// Nothing of an upload remains: no temp file, no blob beyond `blobs`, no metadata beyond
    /// `files`.
    fn assert_clean(&self, blobs: usize, files: &[&str], what: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.entries("tmp").is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            self.entries("tmp"),
            Vec::<String>::new(),
            "{what}: temp files left"
        );
        assert_eq!(self.entries("blobs").len(), blobs, "{what}: blobs");
        let mut listed = self.listed();
        listed.sort();
        assert_eq!(listed, files, "{what}: metadata");
    }
}

/// Sends a request head and then `chunks` as a chunked body, ignoring write errors (the
/// daemon may answer and close early); returns whatever response arrived.
fn send_chunked(s: &Store, path: &str, headers: &[(&str, &str)], chunks: &[Vec<u8>]) -> Response {
    let mut conn = http::connect(&s.d.tcp);
    let mut h: Vec<(&str, &str)> = vec![
        ("Authorization", s.bearer.as_str()),
        ("Transfer-Encoding", "chunked"),
    ];
    h.extend_from_slice(headers);
    http::send_head(&mut *conn, "PUT", path, &h, None);
    for c in chunks {
        let mut framed = format!("{:x}\r\n", c.len()).into_bytes();
        framed.extend_from_slice(c);
        framed.extend_from_slice(b"\r\n");
        if conn.write_all(&framed).is_err() {
            break;
        }
    }
    let _ = conn.write_all(b"0\r\n\r\n");
    read_tolerant(&mut *conn)
}

/// A request whose body the daemon may refuse before reading it all: write errors are
/// ignored, whatever response arrived is returned.
fn send_tolerant(s: &Store, path: &str, body: &[u8]) -> Response {
    let mut conn = http::connect(&s.d.tcp);
    http::send_head(
        &mut *conn,
        "PUT",
        path,
        &[("Authorization", s.bearer.as_str())],
        Some(body.len()),
    );
    let _ = conn.write_all(body);
    read_tolerant(&mut *conn)
}

fn read_tolerant(conn: &mut dyn http::Stream) -> Response {
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    }
    http::parse(&raw)
}

#[test]
fn round_trips_are_byte_exact_for_0_1_1mib_and_100mib() {
    let s = start("");
    for (i, len) in [0usize, 1, 1 << 20, 100 << 20].into_iter().enumerate() {
        let body = data(len, i as u64 + 1);
        let name = format!("round/trip-{len}.bin");
        let r = s.put(&name, &body);
        assert_eq!(r.status, 201, "{len} B: {}", r.text());
        let meta = r.json();
        assert_eq!(meta["size"], len as u64);
        assert_eq!(meta["sha256"], sha_hex(&body));
        assert_eq!(r.header("etag").unwrap(), format!("\"{}\"", sha_hex(&body)));
        let g = s.get(&name, &[]);
        assert_eq!(g.status, 200);
        assert_eq!(g.body.len(), len, "{len} B: length");
        assert!(g.body == body, "{len} B: content differs");
        assert_eq!(g.header("content-length").unwrap(), len.to_string());
        assert_eq!(g.header("etag").unwrap(), format!("\"{}\"", sha_hex(&body)));
    }
    s.assert_clean(
        4,
        &[
            "round/trip-0.bin",
            "round/trip-1.bin",
            "round/trip-1048576.bin",
            "round/trip-104857600.bin",
        ],
        "after round trips",
    );
    assert_eq!(s.usage()["used_bytes"], 1u64 + (1 << 20) + (100 << 20));
}

fn multipart(boundary: &str, parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, filename, content) in parts {
        out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        match filename {
            Some(f) => out.extend_from_slice(
                format!(
                    "Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                )
                .as_bytes(),
            ),
            None => out.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
            ),
        }
        out.extend_from_slice(content);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    out
}

#[test]
fn multipart_form_stores_several_files_together() {
    let s = start("");
    let (a, b, c) = (
        b"first file\n".to_vec(),
        data(300_000, 7),
        b"--not-a-boundary\r\n".to_vec(),
    );
    let boundary = "lhdBoundary7MA4YWxkTrZu0gW";
    let body = multipart(
        boundary,
        &[
            ("note", None, b"a text field, not a file"),
            ("file", Some("a.txt"), &a),
            ("file", Some("b.bin"), &b),
            ("file", Some("c.txt"), &c),
        ],
    );
    let ct = format!("multipart/form-data; boundary={boundary}");
    let r = s.req(
        "POST",
        "/api/v1/files?prefix=docs",
        &[("Content-Type", &ct)],
        &body,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let items = r.json()["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 3);
    for (name, content) in [("docs/a.txt", &a), ("docs/b.bin", &b), ("docs/c.txt", &c)] {
        let g = s.get(name, &[]);
        assert_eq!(g.status, 200, "{name}");
        assert!(g.body == *content, "{name}: content differs");
    }
    // A form with a bad name in it stores none of its files.
    let body = multipart(
        boundary,
        &[
            ("file", Some("ok.txt"), b"fine"),
            ("file", Some("../escape.txt"), b"refused"),
        ],
    );
    let r = s.req("POST", "/api/v1/files", &[("Content-Type", &ct)], &body);
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "invalid_path");
    // A form with no file part, and a body that is not multipart.
    let body = multipart(boundary, &[("note", None, b"x")]);
    let r = s.req("POST", "/api/v1/files", &[("Content-Type", &ct)], &body);
    assert_eq!(r.status, 400, "{}", r.text());
    let r = s.req(
        "POST",
        "/api/v1/files",
        &[("Content-Type", "application/json")],
        b"{}",
    );
    assert_eq!(r.status, 415, "{}", r.text());
    s.assert_clean(
        3,
        &["docs/a.txt", "docs/b.bin", "docs/c.txt"],
        "after forms",
    );
}

#[test]
fn digest_mismatch_is_422_and_stores_nothing() {
    use base64::Engine as _;
    let s = start("");
    let body = data(200_000, 3);
    let good = sha_hex(&body);
    let wrong = sha_hex(b"something else");
    let b64 = |h: &str| base64::engine::general_purpose::STANDARD.encode(hex::decode(h).unwrap());
    let cases = [
        ("Content-Digest", format!("sha-256=:{}:", b64(&wrong))),
        ("X-Checksum-Sha256", wrong.clone()),
    ];
    for (h, v) in &cases {
        let r = s.req("PUT", "/api/v1/files/d/x.bin", &[(h, v)], &body);
        assert_eq!(r.status, 422, "{h}: {}", r.text());
        assert_eq!(r.json()["error"]["code"], "unprocessable");
        assert!(r.text().contains(&good), "{}", r.text());
        s.assert_clean(0, &[], h);
    }
    // The right digest stores it; a wrong one on a replace keeps the old content.
    let ok = s.req(
        "PUT",
        "/api/v1/files/d/x.bin",
        &[("Content-Digest", &format!("sha-256=:{}:", b64(&good)))],
        &body,
    );
    assert_eq!(ok.status, 201, "{}", ok.text());
    let r = s.req(
        "PUT",
        "/api/v1/files/d/x.bin",
        &[("X-Checksum-Sha256", &wrong)],
        b"replacement",
    );
    assert_eq!(r.status, 422);
    assert!(s.get("d/x.bin", &[]).body == body, "old content kept");
    s.assert_clean(1, &["d/x.bin"], "after a refused replace");
    let r = s.req(
        "PUT",
        "/api/v1/files/d/y.bin",
        &[("X-Checksum-Sha256", "not-a-digest")],
        b"x",
    );
    assert_eq!(r.status, 400, "malformed digest header");
}

#[test]
fn bad_paths_are_refused_naming_the_rule() {
    let s = start("");
    let long_name = "n".repeat(256);
    let long_path = vec!["p".repeat(200); 6].join("/");
    let cases: Vec<(String, &str)> = vec![
        ("a//b.txt".into(), "empty segment"),
        ("a/b/".into(), "empty segment"),
        ("./a.txt".into(), "\".\""),
        ("a/./b.txt".into(), "\".\""),
        ("../a.txt".into(), "\"..\""),
        ("a/../../b.txt".into(), "\"..\""),
        ("a/%2e%2e/b.txt".into(), "\"..\""),
        ("..".into(), "\"..\""),
        ("/etc/passwd".into(), "absolute"),
        ("%2Fetc%2Fpasswd".into(), "absolute"),
        ("a%00b.txt".into(), "NUL"),
        ("a%01b.txt".into(), "U+0001"),
        ("tab%09.txt".into(), "U+0009"),
        ("del%7F.txt".into(), "U+007F"),
        ("nl%0A.txt".into(), "U+000A"),
        (long_name.clone(), "255"),
        (format!("dir/{long_name}"), "255"),
        (long_path, "1024"),
        ("bad%FF.txt".into(), "not valid"),
    ];
    for (path, rule) in &cases {
        for method in ["PUT", "GET", "DELETE"] {
            let body: &[u8] = if method == "PUT" { b"x" } else { b"" };
            let r = s.req(method, &format!("/api/v1/files/{path}"), &[], body);
            assert_eq!(r.status, 400, "{method} {path}: {}", r.text());
            assert_eq!(r.json()["error"]["code"], "invalid_path", "{method} {path}");
            let msg = r.json()["error"]["message"].as_str().unwrap().to_owned();
            assert!(
                msg.contains(rule),
                "{method} {path}: {msg:?} does not name {rule}"
            );
        }
    }
    // Positive control: names that look odd but break no rule are stored.
    for ok in [
        "a..b/c.d",
        ".hidden",
        "with space/ünï.txt",
        "a/b/c/d/e/f.txt",
    ] {
        let r = s.put(&ok.replace(' ', "%20"), b"ok");
        assert_eq!(r.status, 201, "{ok}: {}", r.text());
    }
    assert_eq!(s.entries("tmp").len(), 0);
    assert_eq!(s.entries("blobs").len(), 4);
}

#[test]
fn quotas_abort_mid_stream_leaving_no_temp_file_and_no_metadata() {
    let s = start("[files]\nmax-file-size = \"1MiB\"\nmax-total-size = \"3MiB\"\n");
    let mib = |n: usize, seed| data(n << 20, seed);
    let chunks =
        |body: Vec<u8>| -> Vec<Vec<u8>> { body.chunks(64 << 10).map(<[u8]>::to_vec).collect() };

    // File limit: up front from Content-Length, and mid-stream without one.
    let r = send_tolerant(&s, "/api/v1/files/big.bin", &data((1 << 20) + 1, 1));
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "payload_too_large");
    s.assert_clean(0, &[], "413 up front");
    let r = send_chunked(&s, "/api/v1/files/big.bin", &[], &chunks(mib(2, 2)));
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.text().contains("files.max-file-size"), "{}", r.text());
    s.assert_clean(0, &[], "413 mid-stream");

    // Exactly the limit is fine; the store fills to exactly its quota.
    for name in ["a.bin", "b.bin", "c.bin"] {
        let r = send_chunked(
            &s,
            &format!("/api/v1/files/{name}"),
            &[],
            &chunks(mib(1, 3)),
        );
        assert_eq!(r.status, 201, "{name}: {}", r.text());
    }
    // Store limit: mid-stream (chunked) and up front.
    let r = send_chunked(&s, "/api/v1/files/d.bin", &[], &chunks(data(4096, 4)));
    assert_eq!(r.status, 507, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "quota_exceeded");
    let r = send_tolerant(&s, "/api/v1/files/d.bin", &data(10, 4));
    assert_eq!(r.status, 507, "{}", r.text());
    s.assert_clean(3, &["a.bin", "b.bin", "c.bin"], "507");
    // Replacing a file counts its old size as freed.
    let r = send_chunked(&s, "/api/v1/files/a.bin", &[], &chunks(mib(1, 5)));
    assert_eq!(r.status, 200, "replace at full quota: {}", r.text());
    s.assert_clean(3, &["a.bin", "b.bin", "c.bin"], "after replace");
    assert_eq!(s.usage()["used_bytes"], 3u64 << 20);
    // Deleting frees room again.
    assert_eq!(s.req("DELETE", "/api/v1/files/b.bin", &[], b"").status, 204);
    assert_eq!(s.put("d.bin", &data(1000, 6)).status, 201);
}

#[test]
fn disk_floor_refuses_uploads_with_507() {
    let s = start("[storage]\nmin-free-disk = \"1000000TiB\"\n");
    let r = s.put("x.bin", b"hello");
    assert_eq!(r.status, 507, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "insufficient_storage");
    assert!(r.text().contains("storage.min-free-disk"), "{}", r.text());
    s.assert_clean(0, &[], "disk floor");
}

#[test]
fn client_disconnect_mid_upload_leaves_nothing() {
    let s = start("");
    let mut conn = http::connect(&s.d.tcp);
    http::send_head(
        &mut *conn,
        "PUT",
        "/api/v1/files/cut.bin",
        &[("Authorization", &s.bearer)],
        Some(64 << 20),
    );
    conn.write_all(&data(4 << 20, 9)).unwrap();
    // The upload is under way: its temp file exists (so the check below means something).
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.entries("tmp").is_empty() {
        assert!(Instant::now() < deadline, "no temp file during the upload");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(conn);
    s.assert_clean(0, &[], "after the client went away");
    assert_eq!(s.usage()["used_bytes"], 0);
    // The in-flight bytes were given back: a file as large as the whole quota still fits.
    assert_eq!(s.put("after.bin", b"ok").status, 201);
}

#[test]
fn range_requests_edge_cases() {
    let s = start("");
    let body = data(1000, 11);
    assert_eq!(s.put("r.bin", &body).status, 201);
    let cases: &[(&str, usize, usize)] = &[
        ("bytes=0-0", 0, 0),
        ("bytes=999-999", 999, 999),
        ("bytes=999-", 999, 999),
        ("bytes=-1", 999, 999),
        ("bytes=-10", 990, 999),
        ("bytes=-5000", 0, 999),
        ("bytes=100-199", 100, 199),
        ("bytes=500-99999", 500, 999),
    ];
    for (range, first, last) in cases {
        let r = s.get("r.bin", &[("Range", range)]);
        assert_eq!(r.status, 206, "{range}");
        assert_eq!(
            r.header("content-range").unwrap(),
            format!("bytes {first}-{last}/1000"),
            "{range}"
        );
        assert!(r.body == body[*first..=*last], "{range}: wrong bytes");
    }
    for range in ["bytes=1000-", "bytes=1000-1001", "bytes=-0"] {
        let r = s.get("r.bin", &[("Range", range)]);
        assert_eq!(r.status, 416, "{range}: {}", r.text());
        assert_eq!(r.header("content-range").unwrap(), "bytes */1000");
        assert_eq!(r.json()["error"]["code"], "range_not_satisfiable");
    }
    // Not one byte range: the whole file (RFC 9110 lets a server ignore such a Range).
    for range in ["bytes=0-1,5-6", "bytes=5-1", "lines=1-2"] {
        let r = s.get("r.bin", &[("Range", range)]);
        assert_eq!(r.status, 200, "{range}");
        assert!(r.body == body);
    }
    // If-Range: the range holds only for the version named.
    let etag = format!("\"{}\"", sha_hex(&body));
    let r = s.get("r.bin", &[("Range", "bytes=0-9"), ("If-Range", &etag)]);
    assert_eq!(r.status, 206);
    let r = s.get(
        "r.bin",
        &[("Range", "bytes=0-9"), ("If-Range", "\"stale\"")],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 1000);
    // An empty file has no byte to give.
    assert_eq!(s.put("empty", b"").status, 201);
    assert_eq!(s.get("empty", &[("Range", "bytes=0-")]).status, 416);
    assert_eq!(s.get("empty", &[]).status, 200);
}

#[test]
fn conditional_gets_answer_304() {
    let s = start("");
    let body = b"conditional".to_vec();
    assert_eq!(s.put("c.txt", &body).status, 201);
    let first = s.get("c.txt", &[]);
    let etag = first.header("etag").unwrap().to_owned();
    let lm = first.header("last-modified").unwrap().to_owned();
    let weak = format!("W/{etag}");
    let list = format!("\"other\", {etag}");
    let not_modified: &[&[(&str, &str)]] = &[
        &[("If-None-Match", &etag)],
        &[("If-None-Match", &weak)],
        &[("If-None-Match", &list)],
        &[("If-None-Match", "*")],
        &[("If-Modified-Since", &lm)],
        &[("If-Modified-Since", "Fri, 01 Jan 2100 00:00:00 GMT")],
    ];
    for h in not_modified {
        let r = s.get("c.txt", h);
        assert_eq!(r.status, 304, "{h:?}");
        assert!(r.body.is_empty());
        assert_eq!(r.header("etag").unwrap(), etag);
    }
    let modified: &[&[(&str, &str)]] = &[
        &[("If-None-Match", "\"other\"")],
        &[("If-Modified-Since", "Sat, 01 Jan 2000 00:00:00 GMT")],
        // If-None-Match wins over If-Modified-Since.
        &[("If-None-Match", "\"other\""), ("If-Modified-Since", &lm)],
    ];
    for h in modified {
        let r = s.get("c.txt", h);
        assert_eq!(r.status, 200, "{h:?}");
        assert!(r.body == body);
    }
    // A replace changes the ETag: the old one no longer matches.
    assert_eq!(s.put("c.txt", b"changed").status, 200);
    assert_eq!(s.get("c.txt", &[("If-None-Match", &etag)]).status, 200);
}

#[test]
fn create_only_and_if_match_preconditions() {
    let s = start("");
    let r = s.req(
        "PUT",
        "/api/v1/files/p.txt",
        &[("If-None-Match", "*")],
        b"one",
    );
    assert_eq!(r.status, 201);
    let etag = r.header("etag").unwrap().to_owned();
    let r = s.req(
        "PUT",
        "/api/v1/files/p.txt",
        &[("If-None-Match", "*")],
        b"two",
    );
    assert_eq!(r.status, 412, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "precondition_failed");
    assert_eq!(s.get("p.txt", &[]).body, b"one");
    let r = s.req(
        "PUT",
        "/api/v1/files/p.txt",
        &[("If-Match", "\"nope\"")],
        b"three",
    );
    assert_eq!(r.status, 412);
    let r = s.req("PUT", "/api/v1/files/q.txt", &[("If-Match", "*")], b"three");
    assert_eq!(r.status, 412, "If-Match: * needs an existing file");
    let r = s.req(
        "PUT",
        "/api/v1/files/p.txt",
        &[("If-Match", &etag)],
        b"four",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(s.get("p.txt", &[]).body, b"four");
    s.assert_clean(1, &["p.txt"], "after preconditions");
}

#[test]
fn concurrent_uploads_to_one_path_end_with_one_complete_file() {
    let s = std::sync::Arc::new(start(""));
    let len = 4 << 20;
    let writers: Vec<_> = (0..8u8)
        .map(|i| {
            let s = s.clone();
            std::thread::spawn(move || {
                let r = s.put("same.bin", &vec![i; len]);
                assert!(r.status == 200 || r.status == 201, "{}", r.text());
            })
        })
        .collect();
    // Readers during the race see one whole version or none, never a mix.
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let s = s.clone();
            std::thread::spawn(move || {
                for _ in 0..10 {
                    let r = s.get("same.bin", &[]);
                    if r.status == 404 {
                        continue;
                    }
                    assert_eq!(r.status, 200);
                    assert_eq!(r.body.len(), len);
                    assert!(
                        r.body.iter().all(|b| *b == r.body[0]),
                        "a mixed file was served"
                    );
                }
            })
        })
        .collect();
    for t in writers.into_iter().chain(readers) {
        t.join().unwrap();
    }
    let r = s.get("same.bin", &[]);
    assert_eq!(r.body.len(), len);
    assert!(
        r.body.iter().all(|b| *b == r.body[0]),
        "the final file is a mix"
    );
    assert_eq!(
        r.header("etag").unwrap(),
        format!("\"{}\"", sha_hex(&r.body))
    );
    s.assert_clean(1, &["same.bin"], "after the race");
    assert_eq!(s.usage()["used_bytes"], len as u64);
}

#[test]
fn metadata_listing_head_download_delete_usage_and_audit() {
    let s = start("");
    for (name, len) in [
        ("docs/b.txt", 30),
        ("docs/a.json", 10),
        ("img/c.png", 20),
        ("z", 5),
    ] {
        assert_eq!(s.put(name, &data(len, len as u64)).status, 201);
    }
    let m = s.get("docs/a.json", &[]);
    assert_eq!(m.header("content-type").unwrap(), "application/json");
    let m = s
        .req("GET", "/api/v1/files/docs/b.txt?meta=1", &[], b"")
        .json();
    assert_eq!(m["path"], "docs/b.txt");
    assert_eq!(m["size"], 30);
    assert_eq!(m["content_type"], "text/plain");
    assert_eq!(m["sha256"], sha_hex(&data(30, 30)));
    assert!(m["created"].as_str().unwrap().ends_with('Z'));
    assert!(m["modified"].as_str().unwrap().ends_with('Z'));
    // HEAD: the headers of a GET, no body.
    let h = s.req("HEAD", "/api/v1/files/img/c.png", &[], b"");
    assert_eq!(h.status, 200);
    assert_eq!(h.header("content-length").unwrap(), "20");
    assert_eq!(h.header("content-type").unwrap(), "image/png");
    assert!(h.body.is_empty());
    // ?download=1: an attachment with a safely encoded name.
    assert_eq!(
        s.put("x/r%C3%A9sum%C3%A9%20%22v2%22.pdf", b"%PDF").status,
        201
    );
    let d = s.req(
        "GET",
        "/api/v1/files/x/r%C3%A9sum%C3%A9%20%22v2%22.pdf?download=1",
        &[],
        b"",
    );
    assert_eq!(
        d.header("content-disposition").unwrap(),
        "attachment; filename=\"r_sum_ _v2_.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9%20%22v2%22.pdf"
    );
    assert!(
        d.header("content-security-policy")
            .unwrap()
            .contains("sandbox")
    );
    // Listing: prefix, sort, pagination.
    let page = |q: &str| s.req("GET", &format!("/api/v1/files?{q}"), &[], b"").json();
    let names = |j: &serde_json::Value| -> Vec<String> {
        j["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["path"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(&page("prefix=docs/")), ["docs/a.json", "docs/b.txt"]);
    assert_eq!(
        names(&page("sort=size&prefix=docs/")),
        ["docs/a.json", "docs/b.txt"]
    );
    let p1 = page("sort=size&limit=2");
    assert_eq!(names(&p1), ["x/résumé \"v2\".pdf", "z"]);
    let cursor = p1["next_cursor"].as_str().unwrap().to_owned();
    let p2 = page(&format!("sort=size&limit=2&cursor={cursor}"));
    assert_eq!(names(&p2), ["docs/a.json", "img/c.png"]);
    let p3 = page(&format!(
        "sort=size&limit=2&cursor={}",
        p2["next_cursor"].as_str().unwrap()
    ));
    assert_eq!(names(&p3), ["docs/b.txt"]);
    assert!(p3["next_cursor"].is_null());
    let by_mod = names(&page("sort=modified"));
    assert_eq!(by_mod.first().unwrap(), "docs/b.txt");
    assert_eq!(
        s.req("GET", "/api/v1/files?sort=colour", &[], b"").status,
        400
    );
    // files:usage.
    let u = s.usage();
    assert_eq!(u["used_bytes"], 30 + 10 + 20 + 5 + 4);
    assert_eq!(u["file_count"], 5);
    assert_eq!(u["quota_bytes"], 5u64 << 30);
    assert!(u["free_disk_bytes"].as_u64().unwrap() > 0);
    // Delete.
    assert_eq!(s.req("DELETE", "/api/v1/files/z", &[], b"").status, 204);
    assert_eq!(s.get("z", &[]).status, 404);
    let again = s.req("DELETE", "/api/v1/files/z", &[], b"");
    assert_eq!(again.status, 404);
    assert_eq!(again.json()["error"]["code"], "not_found");
    assert_eq!(s.usage()["file_count"], 4);
    s.assert_clean(
        4,
        &[
            "docs/a.json",
            "docs/b.txt",
            "img/c.png",
            "x/résumé \"v2\".pdf",
        ],
        "after delete",
    );
    // Every change is in the audit trail.
    let audit = s.req("GET", "/api/v1/audit?limit=100", &[], b"").json();
    let actions: Vec<(String, String)> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["target"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        actions.contains(&("file.create".into(), "docs/a.json".into())),
        "{actions:?}"
    );
    assert!(
        actions.contains(&("file.delete".into(), "z".into())),
        "{actions:?}"
    );
}

#[test]
fn scopes_guard_the_file_routes() {
    let s = start("");
    assert_eq!(s.put("x", b"x").status, 201);
    let anon = http::request(&s.d.tcp, "GET", "/api/v1/files/x", &[], b"");
    assert_eq!(anon.status, 401);
    let t = s.req(
        "POST",
        "/api/v1/tokens",
        &[("Content-Type", "application/json")],
        br#"{"name": "reader", "scopes": ["read"]}"#,
    );
    assert_eq!(t.status, 201, "{}", t.text());
    let bearer = format!("Bearer {}", t.json()["token"].as_str().unwrap());
    let auth = [("Authorization", bearer.as_str())];
    let r = http::request(&s.d.tcp, "GET", "/api/v1/files/x", &auth, b"");
    assert_eq!(r.status, 200, "read scope reads");
    for (method, path) in [("PUT", "/api/v1/files/y"), ("DELETE", "/api/v1/files/x")] {
        let body: &[u8] = if method == "PUT" { b"y" } else { b"" };
        let r = http::request(&s.d.tcp, method, path, &auth, body);
        assert_eq!(r.status, 403, "{method}: {}", r.text());
    }
    s.assert_clean(1, &["x"], "after refused writes");
}

#[test]
fn kill_9_during_a_large_upload_then_restart_leaves_no_partial_file() {
    let mut s = start("");
    assert_eq!(s.put("kept.bin", &data(123_456, 1)).status, 201);
    let mut conn = http::connect(&s.d.tcp);
    http::send_head(
        &mut *conn,
        "PUT",
        "/api/v1/files/crash.bin",
        &[("Authorization", &s.bearer)],
        Some(512 << 20),
    );
    let chunk = data(8 << 20, 2);
    for _ in 0..8 {
        conn.write_all(&chunk).unwrap();
    }
    // 64 MiB are on their way to disk: the temp file exists and has grown.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let tmp = s.entries("tmp");
        let grown = tmp.first().is_some_and(|t| {
            std::fs::metadata(s.d.state_dir().join("files/tmp").join(t))
                .is_ok_and(|m| m.len() > (16 << 20))
        });
        if grown {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the upload's temp file did not grow"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    s.d.signal(libc::SIGKILL);
    s.d.wait_exit(Duration::from_secs(10));
    drop(conn);
    assert_eq!(
        s.entries("tmp").len(),
        1,
        "the crash left its temp file (the test's premise)"
    );
    // A blob without metadata, as a crash between rename and commit leaves it.
    std::fs::write(
        s.d.state_dir()
            .join("files/blobs/0123456789abcdef0123456789abcdef"),
        b"orphan",
    )
    .unwrap();

    let dir = std::mem::replace(&mut s.d.dir, tempfile::tempdir().unwrap());
    // The first daemon's socket file; the restarted one gets a fresh socket there.
    std::fs::remove_file(dir.path().join("http.sock")).unwrap();
    let s = start_with(Options {
        config: "[rate-limit]\nenabled = false\n".into(),
        dir: Some(dir),
        ..Options::default()
    });
    s.assert_clean(1, &["kept.bin"], "after restart");
    assert_eq!(s.get("crash.bin", &[]).status, 404);
    let u = s.usage();
    assert_eq!(u["used_bytes"], 123_456);
    assert_eq!(u["file_count"], 1);
    let rec =
        s.d.log_events()
            .into_iter()
            .find(|e| e["message"] == "file store recovered")
            .unwrap_or_else(|| panic!("no recovery log line:\n{}", s.d.logs()));
    assert_eq!(rec["temp_files_removed"], 1, "{rec}");
    assert_eq!(rec["orphan_blobs_removed"], 1, "{rec}");
    assert!(s.get("kept.bin", &[]).body == data(123_456, 1));
    let ready = http::get(&s.d.tcp, "/ready");
    assert_eq!(ready.json()["status"], "ready", "{}", ready.text());
}

#[test]
fn metadata_without_its_blob_makes_ready_degraded() {
    let mut s = start("");
    assert_eq!(s.put("lost.txt", b"gone soon").status, 201);
    assert_eq!(s.put("fine.txt", b"stays").status, 201);
    let ready = http::get(&s.d.tcp, "/ready");
    assert_eq!(ready.json()["status"], "ready");
    s.d.stop();
    let lost_blob = {
        let c = rusqlite::Connection::open(s.d.state_dir().join("localhostd.db")).unwrap();
        c.query_row("SELECT blob FROM files WHERE path = 'lost.txt'", [], |r| {
            r.get::<_, String>(0)
        })
        .unwrap()
    };
    std::fs::remove_file(s.d.state_dir().join("files/blobs").join(lost_blob)).unwrap();
    let dir = std::mem::replace(&mut s.d.dir, tempfile::tempdir().unwrap());
    // The first daemon's socket file; the restarted one gets a fresh socket there.
    std::fs::remove_file(dir.path().join("http.sock")).unwrap();
    let s = start_with(Options {
        config: "[rate-limit]\nenabled = false\n".into(),
        dir: Some(dir),
        ..Options::default()
    });
    let ready = http::get(&s.d.tcp, "/ready");
    assert_eq!(ready.status, 200, "degraded still serves: {}", ready.text());
    let j = ready.json();
    assert_eq!(j["status"], "degraded");
    assert!(
        j["degraded"][0].as_str().unwrap().contains("lost.txt"),
        "{j}"
    );
    let health = http::get(&s.d.tcp, "/api/v1/health").json();
    assert_eq!(health["status"], "degraded");
    assert_eq!(s.usage()["missing_blobs"], 1);
    assert_eq!(s.get("fine.txt", &[]).body, b"stays");
    assert_eq!(s.get("lost.txt", &[]).status, 500);
    // Deleting (or uploading again) the broken entry clears the report.
    assert_eq!(
        s.req("DELETE", "/api/v1/files/lost.txt", &[], b"").status,
        204
    );
    assert_eq!(http::get(&s.d.tcp, "/ready").json()["status"], "ready");
}
