//! The key-value store against the real binary: nothing acknowledged is lost when the daemon is
//! killed with SIGKILL in the middle of a write storm, and the database stays intact.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::harness::{Daemon, Options};
use crate::http::{self, Target};

const CONFIG: &str = "[rate-limit]\nenabled = false\n";

/// The crash test's: a change log of 200 changes swept every 20 ms, so its generations rotate
/// (and the puts of keys written once move to kv_kept) many times during the storm.
const STORM_CONFIG: &str = "[rate-limit]\nenabled = false\n\
                            [kv]\nhistory-max-changes = 200\nsweep-interval = \"20ms\"\n";

/// One request that may fail (the daemon dies under it): `None` unless a whole response came.
fn try_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    bearer: &str,
    body: &str,
) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nAuthorization: {bearer}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(head.as_bytes()).ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let (head, _) = text.split_once("\r\n\r\n")?;
    head.split(' ').nth(1)?.parse().ok()
}

#[test]
fn acknowledged_writes_survive_kill_9_mid_storm() {
    let mut d = Daemon::start_config(STORM_CONFIG);
    let Target::Tcp(addr) = d.tcp.clone() else {
        unreachable!()
    };
    let bearer = format!("Bearer {}", d.admin_token());
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for t in 0..8 {
        let (stop, bearer) = (stop.clone(), bearer.clone());
        writers.push(std::thread::spawn(move || {
            let mut acked: Vec<(String, String)> = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let key = format!("storm/{t}/{i}");
                let value = format!("{{\"t\":{t},\"i\":{i},\"pad\":\"{}\"}}", "x".repeat(200));
                // Odd writers overwrite one key too, so updates are checked as well as creates.
                let (path, body) = if i % 2 == 1 && t % 2 == 1 {
                    (format!("/api/v1/data/storm/{t}/hot"), value.clone())
                } else {
                    (format!("/api/v1/data/{key}"), value.clone())
                };
                match try_request(addr, "PUT", &path, &bearer, &body) {
                    Some(200 | 201) => {
                        let k = path.trim_start_matches("/api/v1/data/").to_owned();
                        acked.retain(|(old, _)| *old != k);
                        acked.push((k, body));
                    }
                    Some(s) => panic!("unexpected status {s}"),
                    None => {}
                }
                i += 1;
            }
            acked
        }));
    }
    std::thread::sleep(Duration::from_millis(1500));
    d.signal(libc::SIGKILL);
    let status = d.wait_exit(Duration::from_secs(10));
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    stop.store(true, Ordering::SeqCst);
    let acked: Vec<(String, String)> = writers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    assert!(
        acked.len() > 50,
        "only {} writes acknowledged before the kill: no storm",
        acked.len()
    );

    let dir = std::mem::replace(&mut d.dir, tempfile::tempdir().unwrap());
    drop(d);
    // The test's copy of the old listening socket is gone with `d`; its path is reused.
    let _ = std::fs::remove_file(dir.path().join("http.sock"));
    let mut d = Daemon::start_with(Options {
        config: STORM_CONFIG.to_owned(),
        dir: Some(dir),
        ..Options::default()
    });
    let bearer = format!("Bearer {}", d.admin_token());
    for (key, body) in &acked {
        let r = http::request(
            &d.tcp,
            "GET",
            &format!("/api/v1/data/{key}"),
            &[("Authorization", &bearer)],
            b"",
        );
        assert_eq!(r.status, 200, "acknowledged {key} is lost");
        let want: serde_json::Value = serde_json::from_str(body).unwrap();
        let got = r.json()["value"].clone();
        if key.ends_with("/hot") {
            // A later write may have committed without its answer arriving: never older.
            assert_eq!(got["t"], want["t"]);
            assert!(
                got["i"].as_u64() >= want["i"].as_u64(),
                "{key} went back from {want} to {got}"
            );
        } else {
            assert_eq!(got, want, "{key} has another value");
        }
    }
    d.stop();
    let c = rusqlite::Connection::open(d.state_dir().join("localhostd.db")).unwrap();
    let check: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let (kept, since): (i64, i64) = c
        .query_row(
            "SELECT (SELECT count(*) FROM kv_kept), log_since FROM kv_state",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert!(
        kept > 0 && since > 1,
        "the change log never rotated (kept {kept}, log_since {since})"
    );
    eprintln!(
        "{} acknowledged writes checked after kill -9 ({kept} puts kept past rotations)",
        acked.len()
    );
}

/// The read cache never answers with a state older than one a client was already given:
/// writers on several connections put new values on a few keys while readers on others read
/// them; a read that starts after a write was acknowledged must see that version or a newer
/// one, and a version a reader saw is never followed by an older one. A tiny `kv.cache-size`
/// makes evictions (and so refused stale fills) happen all the time; deletes are mixed in.
/// This shows the wiring under load (a write not recorded in the cache, or recorded after its
/// answer, fails it at once); the ordering rules for racing fills, whose windows are a few
/// microseconds wide, are shown deterministically by the unit tests in src/store/kv/cache.rs.
#[test]
fn reads_never_go_back_in_time_through_the_cache() {
    use std::sync::atomic::AtomicU64;
    let d = Daemon::start_with(Options {
        config: format!("{CONFIG}[kv]\ncache-size = \"4KiB\"\n"),
        ..Options::default()
    });
    let bearer = format!("Bearer {}", d.admin_token());
    let target = d.tcp.clone();
    const KEYS: usize = 4;
    // Per key: the newest acknowledged put version (deletes acknowledged set `deleted_at`).
    let acked: Arc<Vec<AtomicU64>> = Arc::new((0..KEYS).map(|_| AtomicU64::new(0)).collect());
    let deleted: Arc<Vec<AtomicU64>> = Arc::new((0..KEYS).map(|_| AtomicU64::new(0)).collect());
    // Per key: deletes started and deletes finished (a 404 is right while one is in flight).
    let del_started: Arc<Vec<AtomicU64>> = Arc::new((0..KEYS).map(|_| AtomicU64::new(0)).collect());
    let del_done: Arc<Vec<AtomicU64>> = Arc::new((0..KEYS).map(|_| AtomicU64::new(0)).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..3 {
        let (t, b, acked, deleted, stop) = (
            target.clone(),
            bearer.clone(),
            acked.clone(),
            deleted.clone(),
            stop.clone(),
        );
        let (started, done) = (del_started.clone(), del_done.clone());
        writers.push(std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let k = (n as usize + w) % KEYS;
                let path = format!("/api/v1/data/rw/{k}");
                let auth = [
                    ("Authorization", b.as_str()),
                    ("Content-Type", "application/json"),
                ];
                if n.is_multiple_of(13) {
                    started[k].fetch_add(1, Ordering::SeqCst);
                    let r = http::request(&t, "DELETE", &path, &auth, b"");
                    if r.status == 200 {
                        let v: u64 = r.json()["version"].as_str().unwrap().parse().unwrap();
                        deleted[k].fetch_max(v, Ordering::SeqCst);
                    }
                    done[k].fetch_add(1, Ordering::SeqCst);
                    continue;
                }
                let body = format!("{{\"w\":{w},\"n\":{n},\"pad\":\"{}\"}}", "x".repeat(300));
                let r = http::request(&t, "PUT", &path, &auth, body.as_bytes());
                assert!(
                    r.status == 200 || r.status == 201,
                    "PUT {}: {}",
                    r.status,
                    r.text()
                );
                let v: u64 = r.json()["version"].as_str().unwrap().parse().unwrap();
                acked[k].fetch_max(v, Ordering::SeqCst);
            }
        }));
    }
    let mut readers = Vec::new();
    for _ in 0..3 {
        let (t, b, acked, deleted, stop) = (
            target.clone(),
            bearer.clone(),
            acked.clone(),
            deleted.clone(),
            stop.clone(),
        );
        let (started, done) = (del_started.clone(), del_done.clone());
        readers.push(std::thread::spawn(move || {
            let mut seen = [0u64; KEYS];
            let mut reads = 0;
            while !stop.load(Ordering::Relaxed) {
                for k in 0..KEYS {
                    let done_before = done[k].load(Ordering::SeqCst);
                    let floor = acked[k].load(Ordering::SeqCst);
                    let del = deleted[k].load(Ordering::SeqCst);
                    let r = http::request(
                        &t,
                        "GET",
                        &format!("/api/v1/data/rw/{k}"),
                        &[("Authorization", b.as_str())],
                        b"",
                    );
                    reads += 1;
                    match r.status {
                        200 => {
                            let v: u64 = r.json()["version"].as_str().unwrap().parse().unwrap();
                            assert!(
                                v >= floor,
                                "key {k}: read version {v} after {floor} was acknowledged"
                            );
                            assert!(
                                v >= seen[k],
                                "key {k}: read version {v} after reading {}",
                                seen[k]
                            );
                            seen[k] = v;
                        }
                        // Absent is right only if no put was acknowledged yet, or a delete
                        // newer than the newest acknowledged put was acknowledged, or a delete
                        // was in flight at some point while this read ran.
                        404 => {
                            let in_flight = started[k].load(Ordering::SeqCst) > done_before;
                            assert!(
                                floor == 0 || del > floor || in_flight,
                                "key {k}: 404 after version {floor} was acknowledged"
                            );
                            seen[k] = seen[k].max(floor);
                        }
                        s => panic!("GET {s}: {}", r.text()),
                    }
                }
            }
            reads
        }));
    }
    std::thread::sleep(Duration::from_secs(4));
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.join().unwrap();
    }
    let reads: usize = readers.into_iter().map(|r| r.join().unwrap()).sum();
    assert!(reads > 100, "only {reads} reads");
    // After the storm, every key reads as the database has it.
    for k in 0..KEYS {
        let r = http::request(
            &target,
            "GET",
            &format!("/api/v1/data/rw/{k}"),
            &[("Authorization", bearer.as_str())],
            b"",
        );
        let put = acked[k].load(Ordering::SeqCst);
        let del = deleted[k].load(Ordering::SeqCst);
        if del > put {
            assert_eq!(r.status, 404, "key {k}");
        } else {
            assert_eq!(r.status, 200, "key {k}");
            let v: u64 = r.json()["version"].as_str().unwrap().parse().unwrap();
            assert_eq!(v, put, "key {k}");
        }
    }
}
