//! Backups through the real daemon and the real CLI: a round trip (create → wipe → restore →
//! every key, file byte and program identical), damaged and truncated archives refused naming
//! the entry, hostile archives refused, `kill -9` during a backup, a failed restore leaving the
//! state untouched, a backup taken during a write storm, and the CLI online and offline.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::harness::{Daemon, Options, data, request_as, run_cli, sha_hex};
use crate::http::{self, Response, Target};
use serde_json::{Value, json};

/// No real daemon's admin socket may answer these tests' CLI calls.
const NO_SYSTEM_SOCKET: &str = "[server]\nadmin-socket = \"/nonexistent/admin.sock\"\n";

struct B {
    d: Daemon,
    bearer: String,
    extra: String,
}

fn config(extra: &str) -> String {
    format!("{NO_SYSTEM_SOCKET}[rate-limit]\nenabled = false\n{extra}")
}

fn start(extra: &str) -> B {
    start_in(extra, None)
}

fn start_in(extra: &str, dir: Option<tempfile::TempDir>) -> B {
    let d = Daemon::start_with(Options {
        config: config(extra),
        dir,
        ..Options::default()
    });
    let token = d.admin_token();
    B {
        d,
        bearer: format!("Bearer {token}"),
        extra: extra.to_owned(),
    }
}

impl B {
    fn req(&self, method: &str, path: &str, ct: Option<&str>, body: &[u8]) -> Response {
        request_as(&self.d.tcp, &self.bearer, method, path, ct, body)
    }
    fn put_key(&self, key: &str, v: &Value) {
        let r = self.req(
            "PUT",
            &format!("/api/v1/data/{key}"),
            Some("application/json"),
            v.to_string().as_bytes(),
        );
        assert!(r.status == 200 || r.status == 201, "{}", r.text());
    }
    fn key(&self, key: &str) -> Response {
        self.req("GET", &format!("/api/v1/data/{key}"), None, b"")
    }
    fn put_file(&self, path: &str, body: &[u8]) {
        let r = self.req(
            "PUT",
            &format!("/api/v1/files/{path}"),
            Some("application/octet-stream"),
            body,
        );
        assert!(r.status == 200 || r.status == 201, "{}", r.text());
    }
    fn file(&self, path: &str) -> Response {
        self.req("GET", &format!("/api/v1/files/{path}"), None, b"")
    }
    fn upload_program(&self, name: &str, body: &[u8]) -> String {
        let r = self.req(
            "POST",
            &format!("/api/v1/programs?name={name}"),
            Some("application/octet-stream"),
            body,
        );
        assert_eq!(r.status, 201, "{}", r.text());
        r.json()["id"].as_str().unwrap().to_owned()
    }
    fn create_backup(&self) -> Value {
        let r = self.req("POST", "/api/v1/backups", None, b"");
        assert_eq!(r.status, 201, "{}", r.text());
        r.json()
    }
    fn backups(&self) -> Vec<String> {
        let r = self.req("GET", "/api/v1/backups", None, b"");
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["id"].as_str().unwrap().to_owned())
            .collect()
    }
    fn verify(&self, id: &str, read_data: bool) -> Response {
        self.req(
            "POST",
            &format!("/api/v1/backups/{id}/verify?read_data={read_data}"),
            None,
            b"",
        )
    }
    fn backup_dir(&self) -> PathBuf {
        self.d.state_dir().join("backups")
    }
    fn cfg(&self) -> String {
        self.d.config_path.to_str().unwrap().to_owned()
    }
    /// Stops the daemon and hands back its directory for the CLI and a restart.
    fn stop(mut self) -> (tempfile::TempDir, String, String) {
        self.d.stop();
        let cfg = self.cfg();
        let dir = std::mem::replace(&mut self.d.dir, tempfile::tempdir().unwrap());
        let _ = std::fs::remove_file(dir.path().join("http.sock"));
        (dir, cfg, self.extra.clone())
    }
    /// Everything a user can see: every key, every file's bytes, every program and its files.
    fn snapshot(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let keys = self.req("GET", "/api/v1/data?limit=1000", None, b"").json();
        for item in keys["items"].as_array().unwrap() {
            let k = item["key"].as_str().unwrap().to_owned();
            let v = self.key(&k);
            assert_eq!(v.status, 200);
            out.insert(format!("kv:{k}"), v.text());
        }
        let files = self
            .req("GET", "/api/v1/files?limit=1000", None, b"")
            .json();
        for item in files["items"].as_array().unwrap() {
            let p = item["path"].as_str().unwrap().to_owned();
            let f = self.file(&p);
            assert_eq!(f.status, 200, "{p}");
            out.insert(format!("file:{p}"), sha_hex(&f.body));
        }
        let progs = self.req("GET", "/api/v1/programs", None, b"").json();
        for item in progs["items"].as_array().unwrap() {
            let id = item["id"].as_str().unwrap().to_owned();
            let mut meta = item.clone();
            meta.as_object_mut().unwrap().remove("run_count");
            out.insert(format!("program:{id}"), meta.to_string());
            for f in item["files"].as_array().unwrap() {
                let rel = f["path"].as_str().unwrap();
                let bytes =
                    std::fs::read(self.d.state_dir().join("programs").join(&id).join(rel)).unwrap();
                out.insert(format!("program:{id}/{rel}"), sha_hex(&bytes));
            }
        }
        out
    }
}

/// Every row of every table but the audit trail's (`audit_log`, `audit_recent`), as text, sorted.
fn tables_but_audit(db: &Path) -> Vec<String> {
    let c = rusqlite::Connection::open(db).unwrap();
    let tables: Vec<String> = c
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table'
             AND name NOT IN ('audit_log', 'audit_recent') AND name NOT LIKE 'sqlite_%'
             ORDER BY name",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    let mut out = Vec::new();
    for t in tables {
        let mut st = c.prepare(&format!("SELECT * FROM \"{t}\"")).unwrap();
        let n = st.column_count();
        let rows = st
            .query_map([], |r| {
                let cols: Vec<String> = (0..n)
                    .map(|i| format!("{:?}", r.get_ref(i).unwrap()))
                    .collect();
                Ok(format!("{t}: {}", cols.join(" | ")))
            })
            .unwrap()
            .collect::<rusqlite::Result<Vec<_>>>()
            .unwrap();
        out.extend(rows);
    }
    out.sort();
    out
}

fn cli(args: &[&str]) -> (i32, String, String) {
    run_cli(args, &[])
}

/// Removes the state (database, files, programs), keeping the backups and the config.
fn wipe(state: &Path) {
    for name in ["localhostd.db", "localhostd.db-wal", "localhostd.db-shm"] {
        let _ = std::fs::remove_file(state.join(name));
    }
    for d in ["files", "programs"] {
        let _ = std::fs::remove_dir_all(state.join(d));
    }
}

fn fill(b: &B) -> String {
    for i in 0..20 {
        b.put_key(&format!("k/{i}"), &json!({"n": i, "s": "x".repeat(i * 10)}));
    }
    b.put_file("docs/a.txt", b"hello backup\n");
    b.put_file("big.bin", &data(300_000, 7));
    b.put_file("empty", b"");
    b.upload_program("hello.sh", b"#!/bin/sh\necho hello from a backup\n")
}

fn entries_named(dir: &Path, prefix: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn round_trip_create_wipe_restore_gives_identical_state() {
    let b = start("");
    fill(&b);
    let before = b.snapshot();
    assert!(before.len() > 20, "{before:?}");
    let created = b.create_backup();
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(created["completed"].as_str().unwrap().ends_with('Z'));
    assert_eq!(created["files"], 3);
    assert_eq!(created["programs"], 1);
    assert_eq!(b.backups(), vec![id.clone()]);
    let v = b.verify(&id, true);
    assert_eq!(v.status, 200, "{}", v.text());
    assert_eq!(v.json()["read_data"], true);

    // Changes after the backup are undone by the restore.
    b.put_key("after", &json!(1));
    assert_eq!(
        b.req("DELETE", "/api/v1/files/docs/a.txt", None, b"")
            .status,
        204
    );
    let r = b.req("POST", &format!("/api/v1/backups/{id}/restore"), None, b"");
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains("stopped"), "{}", r.text());

    let (dir, cfg, extra) = b.stop();
    let state = dir.path().join("state");
    wipe(&state);
    let (code, out, err) = cli(&["backup", "restore", "--config", &cfg, &id]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&id), "{out}");
    assert!(
        entries_named(&state, ".restore").is_empty(),
        "staging left behind"
    );

    let b = start_in(&extra, Some(dir));
    let after = b.snapshot();
    assert_eq!(before, after, "the restored state differs");
    assert_eq!(b.key("after").status, 404);
    let ready = http::get(&b.d.tcp, "/ready");
    assert_eq!(ready.json()["status"], "ready", "{}", ready.text());
}

/// Flips one byte in the middle of `src` into `dest`.
fn flipped(src: &Path, dest: &Path) {
    let mut bytes = std::fs::read(src).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(dest, bytes).unwrap();
}

/// A made-up id that sorts after real ones.
fn fake_id(n: u32) -> String {
    format!("29991231T2359{n:02}Z-0000000{n}")
}

#[test]
fn a_flipped_byte_is_named_and_a_truncated_archive_refused() {
    let b = start("");
    b.put_key("a", &json!("b"));
    b.put_file("random.bin", &data(1 << 20, 3));
    let id = b.create_backup()["id"].as_str().unwrap().to_owned();
    let good = b.backup_dir().join(format!("{id}.tar.gz"));
    for rd in [false, true] {
        let v = b.verify(&id, rd);
        assert_eq!(v.status, 200, "{}", v.text());
    }

    // One byte flipped inside the big blob's data: the hash names the entry.
    let bad_id = fake_id(1);
    let bad = b.backup_dir().join(format!("{bad_id}.tar.gz"));
    flipped(&good, &bad);
    let v = b.verify(&bad_id, true);
    assert_eq!(v.status, 422, "{}", v.text());
    let msg = v.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(msg.contains("files/blobs/"), "{msg}");
    let (code, _, err) = cli(&[
        "backup",
        "verify",
        "--read-data",
        "--file",
        bad.to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("files/blobs/"), "{err}");
    let (code, out, err) = cli(&[
        "backup",
        "verify",
        "--read-data",
        "--file",
        good.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ok"), "{out}");

    // Truncated: refused with or without --read-data, and never restored.
    let cut_id = fake_id(2);
    let cut = b.backup_dir().join(format!("{cut_id}.tar.gz"));
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    for rd in [false, true] {
        let v = b.verify(&cut_id, rd);
        assert_eq!(v.status, 422, "{}", v.text());
        assert!(v.text().contains("truncated"), "{}", v.text());
    }
    // Cut right before the gzip trailer: every entry is there but the archive is incomplete.
    let tail_id = fake_id(3);
    std::fs::write(
        b.backup_dir().join(format!("{tail_id}.tar.gz")),
        &bytes[..bytes.len() - 4],
    )
    .unwrap();
    let v = b.verify(&tail_id, false);
    assert_eq!(v.status, 422, "{}", v.text());
    // Unknown and malformed ids.
    assert_eq!(b.verify(&fake_id(9), false).status, 404);
    assert_eq!(b.verify("..%2Fetc", false).status, 400);
}

/// A tar.gz with one entry whose header is written raw (so `..` and absolute names survive).
fn hostile_archive(dest: &Path, name: &str, kind: tar::EntryType, link: Option<&str>) {
    let f = std::fs::File::create(dest).unwrap();
    let gz = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
    let mut t = tar::Builder::new(gz);
    let db = b"not really a database";
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(db.len() as u64);
    h.set_mode(0o600);
    h.set_path("localhostd.db").unwrap();
    h.set_cksum();
    t.append(&h, &db[..]).unwrap();
    let mut h = tar::Header::new_old();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    h.set_entry_type(kind);
    h.set_mode(0o644);
    if let Some(l) = link {
        h.as_old_mut().linkname[..l.len()].copy_from_slice(l.as_bytes());
    }
    let body: &[u8] = if kind == tar::EntryType::Regular {
        b"evil"
    } else {
        b""
    };
    h.set_size(body.len() as u64);
    h.set_cksum();
    t.append(&h, body).unwrap();
    t.into_inner().unwrap().finish().unwrap();
}

#[test]
fn a_failed_restore_leaves_the_current_state_untouched() {
    let b = start("");
    b.put_key("keep", &json!("me"));
    b.put_file("random.bin", &data(1 << 20, 5));
    let id = b.create_backup()["id"].as_str().unwrap().to_owned();
    let good = b.backup_dir().join(format!("{id}.tar.gz"));
    b.put_key("after-backup", &json!(true));
    let before = b.snapshot();
    let backups = b.backup_dir();

    let flip = fake_id(1);
    flipped(&good, &backups.join(format!("{flip}.tar.gz")));
    let mut hostile: Vec<(String, &str)> = Vec::new();
    let cases: [(&str, tar::EntryType, Option<&str>); 4] = [
        ("../evil", tar::EntryType::Regular, None),
        ("/tmp/evil-abs", tar::EntryType::Regular, None),
        (
            "files/blobs/abc",
            tar::EntryType::Symlink,
            Some("/etc/passwd"),
        ),
        (
            "programs/0123456789abcdef/x",
            tar::EntryType::Link,
            Some("/etc/passwd"),
        ),
    ];
    for (i, (name, kind, link)) in cases.into_iter().enumerate() {
        let hid = fake_id(2 + i as u32);
        hostile_archive(&backups.join(format!("{hid}.tar.gz")), name, kind, link);
        hostile.push((hid, name));
    }

    let (dir, cfg, extra) = b.stop();
    let state = dir.path().join("state");
    let db_before = tables_but_audit(&state.join("localhostd.db"));
    let (code, _, err) = cli(&["backup", "restore", "--config", &cfg, &flip]);
    assert_ne!(code, 0);
    assert!(err.contains("files/blobs/"), "{err}");
    for (hid, name) in &hostile {
        let (code, _, err) = cli(&["backup", "restore", "--config", &cfg, hid]);
        assert_ne!(code, 0, "{name} restored");
        assert!(
            err.contains(name) && err.contains("refused"),
            "{name}: {err}"
        );
    }
    assert!(!dir.path().join("evil").exists() && !Path::new("/tmp/evil-abs").exists());
    assert_eq!(
        tables_but_audit(&state.join("localhostd.db")),
        db_before,
        "the database changed"
    );
    // What changed: the audit trail, one refused restore each (the CLI audits offline
    // changes, failed ones too).
    let c = rusqlite::Connection::open(state.join("localhostd.db")).unwrap();
    let refused: Vec<String> = c
        .prepare("SELECT target FROM audit WHERE action = 'backup.restore' AND result LIKE 'error:%' ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    let mut expected = vec![flip.clone()];
    expected.extend(hostile.iter().map(|(hid, _)| hid.clone()));
    assert_eq!(refused, expected);
    drop(c);
    assert!(entries_named(&state, ".restore").is_empty());

    let b = start_in(&extra, Some(dir));
    assert_eq!(b.snapshot(), before);
}

#[test]
fn kill_9_during_a_backup_leaves_no_listed_backup_and_no_temp_file() {
    let b = start("");
    for i in 0..6 {
        b.put_file(&format!("big/{i}.bin"), &data(8 << 20, 100 + i));
    }
    let tcp = b.d.tcp.clone();
    let bearer = b.bearer.clone();
    let bg = std::thread::spawn(move || {
        let mut s = http::connect(&tcp);
        http::send_head(
            &mut *s,
            "POST",
            "/api/v1/backups",
            &[("Authorization", &bearer)],
            Some(0),
        );
        // The answer never comes: the daemon dies first.
        let _ = std::io::Read::read(&mut *s, &mut [0u8; 16]);
    });
    let dir = b.backup_dir();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let grown = entries_named(&dir, ".tmp-").iter().any(|n| {
            n.ends_with(".tar.gz")
                && std::fs::metadata(dir.join(n)).is_ok_and(|m| m.len() > (1 << 20))
        });
        if grown {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the backup's temp file did not grow"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    b.d.signal(libc::SIGKILL);
    let mut b = b;
    b.d.wait_exit(Duration::from_secs(10));
    let _ = bg.join();
    assert!(
        !entries_named(&dir, ".tmp-").is_empty(),
        "the crash left its temp file (the test's premise)"
    );
    let (code, out, err) = cli(&["backup", "list", "--config", &b.cfg()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 1, "only the header: {out}");

    let extra = b.extra.clone();
    let d = std::mem::replace(&mut b.d.dir, tempfile::tempdir().unwrap());
    let _ = std::fs::remove_file(d.path().join("http.sock"));
    let b = start_in(&extra, Some(d));
    assert!(b.backups().is_empty());
    assert!(
        entries_named(&b.backup_dir(), ".tmp-").is_empty(),
        "temp files left after the restart"
    );
    // And the next one works.
    let id = b.create_backup()["id"].as_str().unwrap().to_owned();
    assert_eq!(b.backups(), vec![id]);
}

#[test]
fn a_backup_taken_during_a_write_storm_restores_consistently() {
    let b = Arc::new(start(""));
    for i in 0..20 {
        b.put_file(&format!("storm/seed-{i}"), &data(50_000, i));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for w in 0..3u64 {
        let (b, stop, writes) = (b.clone(), stop.clone(), writes.clone());
        workers.push(std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                b.put_key(&format!("storm/{w}/{}", n % 50), &json!({"w": w, "n": n}));
                n += 1;
                writes.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for w in 0..2u64 {
        let (b, stop, writes) = (b.clone(), stop.clone(), writes.clone());
        workers.push(std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let body = data(20_000 + (n as usize % 7) * 10_000, w * 1000 + n);
                b.put_file(&format!("storm/{w}/{}", n % 10), &body);
                // Deletes while a backup may run: their blobs must stay until it is done.
                if n.is_multiple_of(3) {
                    let seed = (w * 10 + n) % 20;
                    let _ = b.req(
                        "DELETE",
                        &format!("/api/v1/files/storm/seed-{seed}"),
                        None,
                        b"",
                    );
                }
                n += 1;
                writes.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut ids = Vec::new();
    for _ in 0..2 {
        let before = writes.load(Ordering::Relaxed);
        ids.push(b.create_backup()["id"].as_str().unwrap().to_owned());
        assert!(
            writes.load(Ordering::Relaxed) > before,
            "no write happened while the backup ran"
        );
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    for id in &ids {
        let v = b.verify(id, true);
        assert_eq!(v.status, 200, "{}", v.text());
    }
    let b = Arc::try_unwrap(b).ok().unwrap();
    let (dir, cfg, extra) = b.stop();
    let state = dir.path().join("state");
    for id in &ids {
        wipe(&state);
        let (code, out, err) = cli(&["backup", "restore", "--config", &cfg, id]);
        assert_eq!(code, 0, "{out}{err}");
        let c = rusqlite::Connection::open(state.join("localhostd.db")).unwrap();
        let check: String = c
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
        let mut st = c.prepare("SELECT path, blob, sha256 FROM files").unwrap();
        let rows: Vec<(String, String, String)> = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert!(rows.len() >= 10, "{}", rows.len());
        for (path, blob, sha) in rows {
            let bytes = std::fs::read(state.join("files/blobs").join(&blob))
                .unwrap_or_else(|e| panic!("{path}: blob {blob}: {e}"));
            assert_eq!(sha_hex(&bytes), sha, "{path}");
        }
        let keys: i64 = c
            .query_row(
                "SELECT count(*) FROM kv WHERE key LIKE 'storm/%'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(keys > 0);
    }
    // The daemon starts on the restored state, ready.
    let b = start_in(&extra, Some(dir));
    let ready = http::get(&b.d.tcp, "/ready");
    assert_eq!(ready.json()["status"], "ready", "{}", ready.text());
}

#[test]
fn cli_works_through_the_admin_socket_and_offline() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("own.sock");
    let elsewhere = dir.path().join("elsewhere");
    let mut d = Daemon::start_with(Options {
        config: format!(
            "[server]\nlisten = [\"unix:{}\"]\nadmin-socket = \"/nonexistent/admin.sock\"\n\
             [backup]\ndir = {:?}\nkeep-last = 1\nkeep-within = \"0s\"\n",
            sock.display(),
            elsewhere.display().to_string()
        ),
        activated: false,
        dir: Some(dir),
        ..Options::default()
    });
    let cfg = d.config_path.to_str().unwrap().to_owned();
    let bearer = format!("Bearer {}", d.admin_token());
    let target = Target::Unix(sock.clone());
    let r = http::request(
        &target,
        "PUT",
        "/api/v1/data/cli",
        &[
            ("Authorization", &bearer),
            ("Content-Type", "application/json"),
        ],
        b"\"online\"",
    );
    assert!(r.status == 201 || r.status == 200, "{}", r.text());

    // Online: the daemon makes it (its audit trail says so) in backup.dir.
    let (code, out, err) = cli(&["backup", "create", "--config", &cfg]);
    assert_eq!(code, 0, "{err}");
    let first = out.trim().to_owned();
    assert!(err.contains("complete at"), "{err}");
    assert!(elsewhere.join(format!("{first}.tar.gz")).is_file());
    let (code, out, _) = cli(&["backup", "list", "--config", &cfg]);
    assert_eq!(code, 0);
    assert!(out.contains(&first), "{out}");
    let (code, out, err) = cli(&["backup", "verify", "--read-data", "--config", &cfg, &first]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("every byte read"), "{out}");
    let (code, _, err) = cli(&["backup", "restore", "--config", &cfg, &first]);
    assert_ne!(code, 0);
    assert!(
        err.contains("409") && err.contains("systemctl stop"),
        "{err}"
    );
    let (code, out, err) = cli(&["backup", "prune", "--config", &cfg]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("nothing to prune"), "{out}");
    let audit = http::request(
        &target,
        "GET",
        "/api/v1/audit?action=backup.create",
        &[("Authorization", &bearer)],
        b"",
    )
    .json();
    let row = &audit["items"][0];
    assert_eq!(row["target"], first.as_str(), "{audit}");
    assert!(row["actor"].as_str().unwrap().starts_with("local"), "{row}");
    // A token without admin may not.
    let r = http::request(
        &target,
        "POST",
        "/api/v1/tokens",
        &[
            ("Authorization", &bearer),
            ("Content-Type", "application/json"),
        ],
        br#"{"name":"rw","scopes":["read","write","exec"]}"#,
    );
    let rw = format!("Bearer {}", r.json()["token"].as_str().unwrap());
    for (m, p) in [
        ("POST", "/api/v1/backups".to_owned()),
        ("GET", "/api/v1/backups".to_owned()),
        ("POST", format!("/api/v1/backups/{first}/verify")),
        ("POST", format!("/api/v1/backups/{first}/restore")),
        ("POST", "/api/v1/backups:prune".to_owned()),
    ] {
        let r = http::request(&target, m, &p, &[("Authorization", &rw)], b"");
        assert_eq!(r.status, 403, "{m} {p}: {}", r.text());
    }

    // Offline: the CLI takes the lock and works on the state directory itself.
    d.stop();
    std::thread::sleep(Duration::from_millis(1100)); // a new second: a distinct, later id
    let (code, out, err) = cli(&["backup", "create", "--config", &cfg]);
    assert_eq!(code, 0, "{err}");
    let second = out.trim().to_owned();
    assert_ne!(first, second);
    let (code, out, _) = cli(&["backup", "list", "--config", &cfg]);
    assert_eq!(code, 0);
    assert!(out.contains(&first) && out.contains(&second), "{out}");
    let (code, _, err) = cli(&["backup", "verify", "--config", &cfg, &second]);
    assert_eq!(code, 0, "{err}");
    // keep-last 1, keep-within 0s: the older one goes.
    let (code, out, err) = cli(&["backup", "prune", "--config", &cfg]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("removed {first}")), "{out}");
    let (code, out, _) = cli(&["backup", "list", "--config", &cfg]);
    assert_eq!(code, 0);
    assert!(!out.contains(&first) && out.contains(&second), "{out}");
    // The offline changes are in the audit trail, as the API's are.
    let offline_events = || {
        let c = rusqlite::Connection::open(d.state_dir().join("localhostd.db")).unwrap();
        let mut st = c
            .prepare(
                "SELECT action, target, result, detail FROM audit
                 WHERE actor LIKE 'local:uid=%(offline)' ORDER BY id",
            )
            .unwrap();
        st.query_map([], |r| {
            Ok(format!(
                "{} {} {} {}",
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?
            ))
        })
        .unwrap()
        .collect::<rusqlite::Result<Vec<_>>>()
        .unwrap()
    };
    assert_eq!(
        offline_events(),
        vec![
            format!("backup.create {second} ok "),
            format!("backup.prune  ok {first}")
        ]
    );
    let (code, out, err) = cli(&["backup", "restore", "--config", &cfg, &second]);
    assert_eq!(code, 0, "{out}{err}");
    let c = rusqlite::Connection::open(d.state_dir().join("localhostd.db")).unwrap();
    let v: String = c
        .query_row(
            "SELECT coalesce((SELECT value FROM kv_log_a WHERE id = k.change),
                             (SELECT value FROM kv_log_b WHERE id = k.change),
                             (SELECT value FROM kv_kept WHERE id = k.change))
             FROM kv k WHERE k.key = 'cli'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(v, "\"online\"");
    // The restored database predates those two events; it records its own restore.
    assert_eq!(
        offline_events(),
        vec![format!("backup.restore {second} ok ")]
    );
    // A state directory that does not exist is never created.
    let missing = tempfile::tempdir().unwrap();
    let cfg2 = missing.path().join("c.toml");
    let nostate = missing.path().join("no-state");
    std::fs::write(
        &cfg2,
        format!(
            "state-dir = {:?}\n{NO_SYSTEM_SOCKET}",
            nostate.display().to_string()
        ),
    )
    .unwrap();
    let (code, _, err) = cli(&["backup", "create", "--config", cfg2.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("start the service first"), "{err}");
    assert!(!nostate.exists());
}

/// The entries of the backup at `src`, in order: (path, type, bytes, link target).
type Entries = Vec<(String, tar::EntryType, Vec<u8>, Option<String>)>;

fn read_entries(src: &Path) -> Entries {
    let f = std::fs::File::open(src).unwrap();
    let mut a = tar::Archive::new(flate2::read::GzDecoder::new(f));
    let mut out = Vec::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().to_string_lossy().into_owned();
        let mut body = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut body).unwrap();
        out.push((path, e.header().entry_type(), body, None));
    }
    out
}

/// Writes `entries` as a backup at `dest`, with a manifest that matches them (so only what a
/// restore checks beyond sizes and hashes can refuse it).
fn write_backup(dest: &Path, entries: &Entries) {
    let f = std::fs::File::create(dest).unwrap();
    let mut t = tar::Builder::new(flate2::write::GzEncoder::new(
        f,
        flate2::Compression::fast(),
    ));
    let mut manifest: Option<Value> = None;
    let mut listed = Vec::new();
    for (path, kind, body, link) in entries {
        if path == "manifest.json" {
            manifest = Some(serde_json::from_slice(body).unwrap());
            continue;
        }
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(*kind);
        h.set_size(body.len() as u64);
        h.set_mode(0o600);
        if let Some(l) = link {
            h.set_link_name(l).unwrap();
        }
        t.append_data(&mut h, path, &body[..]).unwrap();
        listed.push(json!({"path": path, "size": body.len(), "sha256": sha_hex(body)}));
    }
    let mut m = manifest.unwrap();
    m["entries"] = Value::Array(listed);
    let m = serde_json::to_vec(&m).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(m.len() as u64);
    h.set_mode(0o600);
    t.append_data(&mut h, "manifest.json", &m[..]).unwrap();
    t.into_inner().unwrap().finish().unwrap();
}

/// The backup at `src` with `sql` run on its database, written to `dest`.
fn doctored(src: &Path, dest: &Path, sql: &str) {
    let mut entries = read_entries(src);
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("x.db");
    let at = entries
        .iter()
        .position(|(p, ..)| p == "localhostd.db")
        .unwrap();
    std::fs::write(&db, &entries[at].2).unwrap();
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch(sql).unwrap();
    c.close().unwrap();
    entries[at].2 = std::fs::read(&db).unwrap();
    write_backup(dest, &entries);
}

#[test]
fn a_backup_whose_database_names_paths_outside_the_store_is_refused_and_changes_nothing() {
    let b = start("");
    b.put_key("keep", &json!("me"));
    b.put_file("x.txt", b"user data\n");
    b.upload_program("hello.sh", b"#!/bin/sh\necho hello\n");
    let id = b.create_backup()["id"].as_str().unwrap().to_owned();
    let good = b.backup_dir().join(format!("{id}.tar.gz"));
    let before = b.snapshot();
    let backups = b.backup_dir();
    let token = "../../initial-admin-token";
    let up3 = "../../../initial-admin-token";
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "a blob id with ../",
            format!("UPDATE files SET blob = '{token}'"),
            token,
        ),
        (
            "an absolute blob id",
            "UPDATE files SET blob = '/etc/passwd'".into(),
            "/etc/passwd",
        ),
        (
            "a bad program id",
            "UPDATE programs SET id = '../../x'".into(),
            "../../x",
        ),
        (
            "a program file with ../",
            format!(
                "UPDATE programs SET files = '[{{\"path\":\"{up3}\",\"size\":1,\"executable\":false}}]'"
            ),
            up3,
        ),
        (
            "a main with ../",
            format!("UPDATE programs SET main = '{up3}'"),
            up3,
        ),
    ];
    let mut bad: Vec<(String, &str, &str)> = Vec::new();
    for (i, (what, sql, needle)) in cases.iter().enumerate() {
        let fid = format!("29991231T2358{i:02}Z-{:08x}", 16 + i);
        doctored(&good, &backups.join(format!("{fid}.tar.gz")), sql);
        bad.push((fid, what, needle));
    }
    // A blob that is a symbolic link to the admin token instead of a file.
    let mut entries = read_entries(&good);
    let blob = entries
        .iter_mut()
        .find(|(p, ..)| p.starts_with("files/blobs/"))
        .unwrap();
    let blob_name = blob.0.clone();
    blob.1 = tar::EntryType::Symlink;
    blob.2.clear();
    blob.3 = Some(format!("../{token}"));
    let sid = "29991231T235800Z-000000ff".to_owned();
    write_backup(&backups.join(format!("{sid}.tar.gz")), &entries);
    bad.push((sid, "a symlink blob", &blob_name));

    let (dir, cfg, extra) = b.stop();
    let state = dir.path().join("state");
    let db_before = tables_but_audit(&state.join("localhostd.db"));
    for (fid, what, needle) in &bad {
        let (code, _, err) = cli(&["backup", "restore", "--config", &cfg, fid]);
        assert_ne!(code, 0, "{what}: restored");
        assert!(
            err.contains(needle) && err.contains("refused"),
            "{what}: the error does not name {needle:?} and say refused: {err}"
        );
        assert_eq!(
            tables_but_audit(&state.join("localhostd.db")),
            db_before,
            "{what}: the database changed"
        );
        assert!(entries_named(&state, ".restore").is_empty(), "{what}");
    }
    // Control: the untouched backup restores.
    let (code, _, err) = cli(&["backup", "restore", "--config", &cfg, &id]);
    assert_eq!(code, 0, "{err}");
    let b = start_in(&extra, Some(dir));
    assert_eq!(b.snapshot(), before);
}

#[test]
fn a_live_database_naming_paths_outside_the_store_gets_errors_not_other_files() {
    let b = start("");
    let state = b.d.state_dir();
    let token = b.d.admin_token();
    // A directory tree outside the store that a DELETE must never remove.
    let canary = b.d.dir.path().join("canary");
    std::fs::create_dir_all(canary.join("sub")).unwrap();
    std::fs::write(canary.join("sub/keep"), b"keep").unwrap();
    let canary_file = b.d.dir.path().join("canary-file");
    std::fs::write(&canary_file, b"keep").unwrap();

    b.put_file("x.txt", b"user data\n");
    let pid = b.upload_program("hello.sh", b"#!/bin/sh\necho hello\n");
    // Controls: the stored file and the program's archive are served.
    let r = b.file("x.txt");
    assert_eq!((r.status, r.text().as_str()), (200, "user data\n"));
    let r = b.req("GET", &format!("/api/v1/programs/{pid}/archive"), None, b"");
    assert_eq!(r.status, 200, "{}", r.text());

    let db = rusqlite::Connection::open(state.join("localhostd.db")).unwrap();
    db.busy_timeout(Duration::from_secs(10)).unwrap();
    let blob: String = db
        .query_row("SELECT blob FROM files WHERE path = 'x.txt'", [], |r| {
            r.get(0)
        })
        .unwrap();
    let leaks = |r: &Response| {
        let body = String::from_utf8_lossy(&r.body).into_owned();
        body.contains(&token) || body.contains("keep")
    };
    let intact = |what: &str| {
        assert!(state.join("initial-admin-token").is_file(), "{what}");
        assert_eq!(
            std::fs::read(canary.join("sub/keep")).unwrap(),
            b"keep",
            "{what}"
        );
        assert_eq!(std::fs::read(&canary_file).unwrap(), b"keep", "{what}");
    };
    let canary_s = canary.to_str().unwrap().to_owned();
    let canary_file_s = canary_file.to_str().unwrap().to_owned();
    for bad in [
        "../../initial-admin-token".to_owned(),
        canary_file_s.clone(),
        canary_s.clone(),
        "../../../canary".to_owned(),
    ] {
        db.execute("UPDATE files SET blob = ?1 WHERE path = 'x.txt'", [&bad])
            .unwrap();
        let r = b.file("x.txt");
        assert!(
            r.status >= 400 && !leaks(&r),
            "GET with blob {bad:?}: {} {}",
            r.status,
            r.text()
        );
        let r = b.req("DELETE", "/api/v1/files/x.txt", None, b"");
        assert!(r.status >= 400, "DELETE with blob {bad:?}: {}", r.status);
        intact(&bad);
    }
    // The blob id is right but the blob is a symlink to the token.
    db.execute("UPDATE files SET blob = ?1 WHERE path = 'x.txt'", [&blob])
        .unwrap();
    let blob_path = state.join("files/blobs").join(&blob);
    std::fs::remove_file(&blob_path).unwrap();
    std::os::unix::fs::symlink(state.join("initial-admin-token"), &blob_path).unwrap();
    let r = b.file("x.txt");
    assert!(
        r.status >= 400 && !leaks(&r),
        "GET of a symlink blob: {} {}",
        r.status,
        r.text()
    );
    intact("symlink blob");

    // Programs: a files entry and a main that climb out, an id that is a path.
    let up = "../../../initial-admin-token";
    let files_json = format!(r#"[{{"path":"{up}","size":1,"executable":false}}]"#);
    let (good_files, good_main): (String, String) = db
        .query_row(
            "SELECT files, main FROM programs WHERE id = ?1",
            [&pid],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    for (col, value) in [("files", files_json.as_str()), ("main", up)] {
        db.execute(
            &format!("UPDATE programs SET files = ?2, main = ?3, {col} = ?4 WHERE id = ?1"),
            [&pid, &good_files, &good_main, &value.to_owned()],
        )
        .unwrap();
        let r = b.req("GET", &format!("/api/v1/programs/{pid}/archive"), None, b"");
        assert!(
            r.status >= 400 && !leaks(&r),
            "archive with {col} {value:?}: {} {}",
            r.status,
            r.text()
        );
        let r = b.req(
            "POST",
            &format!("/api/v1/programs/{pid}/runs"),
            Some("application/json"),
            b"{}",
        );
        assert!(
            r.status >= 400 && !leaks(&r),
            "run with {col} {value:?}: {} {}",
            r.status,
            r.text()
        );
        intact(col);
    }
    db.execute(
        "UPDATE programs SET files = ?2, main = ?3, id = '../../../canary' WHERE id = ?1",
        [&pid, &good_files, &good_main],
    )
    .unwrap();
    let r = b.req(
        "DELETE",
        "/api/v1/programs/..%2F..%2F..%2Fcanary",
        None,
        b"",
    );
    assert!(r.status >= 400, "DELETE of a path id: {}", r.status);
    intact("program id");
}
