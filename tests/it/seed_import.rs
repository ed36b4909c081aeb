//! `localhostd import-seed` with the real CLI and the real daemon: the seed fixture
//! (tests/it/fixtures/seed, the seed's documented layout) round trip — every key, file (same
//! SHA-256, original name and time) and program (runs, prints what it printed in the seed);
//! `--dry-run` changes nothing; each bad input kind is reported and leaves the state untouched;
//! a running daemon refuses it; no folder / not a seed folder fail.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::harness::{Daemon, Options, request_as, run_cli, sha_hex};

/// No real daemon's admin socket may answer these tests' CLI calls.
const CONFIG: &str =
    "[server]\nadmin-socket = \"/nonexistent/admin.sock\"\n[rate-limit]\nenabled = false\n";

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/fixtures/seed")
}

/// A test directory laid out as the harness does (config.toml, state/), the state dir made.
fn fresh(extra: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let cfg = dir.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "state-dir = {:?}\n{CONFIG}{extra}\n",
            state.display().to_string()
        ),
    )
    .unwrap();
    (dir, cfg.display().to_string())
}

fn import(cfg: &str, seed: &Path, dry: bool) -> (i32, String, String) {
    let seed = seed.display().to_string();
    let mut args = vec!["import-seed", "--config", cfg, &seed];
    if dry {
        args.push("--dry-run");
    }
    run_cli(&args, &[])
}

fn start(dir: tempfile::TempDir, extra: &str) -> (Daemon, String) {
    let d = Daemon::start_with(Options {
        config: format!("{CONFIG}{extra}"),
        dir: Some(dir),
        ..Options::default()
    });
    let bearer = format!("Bearer {}", d.admin_token());
    (d, bearer)
}

/// Stops the daemon and gives its directory back (for the CLI, which needs it stopped).
fn stop(mut d: Daemon) -> tempfile::TempDir {
    d.stop();
    let dir = std::mem::replace(&mut d.dir, tempfile::tempdir().unwrap());
    drop(d);
    // The test's copy of the unix listener's socket file, bound again by the next start.
    let _ = std::fs::remove_file(dir.path().join("http.sock"));
    dir
}

/// Every file under `dir` with its bytes' SHA-256, and every directory.
fn tree(dir: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, at: &Path, out: &mut BTreeMap<String, String>) {
        for e in std::fs::read_dir(at).unwrap().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                out.insert(rel + "/", String::new());
                walk(root, &p, out);
            } else if ft.is_symlink() {
                out.insert(
                    rel,
                    format!("-> {}", std::fs::read_link(&p).unwrap().display()),
                );
            } else {
                out.insert(rel, sha_hex(&std::fs::read(&p).unwrap()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// A copy of the good fixture in a temp dir, for a bad variant.
fn seed_copy() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let ok = std::process::Command::new("cp")
        .arg("-a")
        .arg(fixture().join("data"))
        .arg(t.path())
        .status()
        .unwrap();
    assert!(ok.success());
    t
}

/// An empty seed data folder (files/ and programs/ with empty indexes, no storage.json).
fn empty_seed() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("data");
    std::fs::create_dir_all(d.join("files")).unwrap();
    std::fs::create_dir_all(d.join("programs")).unwrap();
    std::fs::write(d.join("files/files_metadata.json"), "{}").unwrap();
    std::fs::write(d.join("programs/programs.json"), "{}").unwrap();
    t
}

fn file_entry(stored: &str, name: &str, body: &[u8]) -> Value {
    json!({"filename": stored, "original_filename": name, "size": body.len(),
           "checksum": sha_hex(body), "upload_time": "2024-02-01T08:00:00"})
}

#[test]
fn round_trip_every_key_file_and_program_arrives() {
    let (dir, cfg) = fresh("");
    let (code, out, err) = import(&cfg, &fixture(), false);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("imported from") && out.contains("7 keys, 4 files, 2 programs"),
        "{out}"
    );
    assert!(
        out.contains("skipped: 0") && out.contains("conflicts: 0"),
        "{out}"
    );
    // The unknown field of the fixture is reported, not dropped silently.
    assert!(out.contains("field \"downloads\""), "{out}");
    assert!(out.contains("committed"), "{out}");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("state/programs"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "staging left behind: {leftovers:?}");

    let (d, bearer) = start(dir, "");
    let get = |path: &str| request_as(&d.tcp, &bearer, "GET", path, None, b"");
    // Every key, with its JSON value.
    let seed = fixture().join("data");
    let storage: Value =
        serde_json::from_slice(&std::fs::read(seed.join("storage.json")).unwrap()).unwrap();
    for (k, v) in storage.as_object().unwrap() {
        let r = get(&format!("/api/v1/data/{}", k.replace(':', "%3A")));
        assert_eq!(r.status, 200, "{k}: {}", r.text());
        assert_eq!(&r.json()["value"], v, "{k}");
    }
    // Every file under its original name, the same bytes, its seed upload time kept.
    let meta: Value =
        serde_json::from_slice(&std::fs::read(seed.join("files/files_metadata.json")).unwrap())
            .unwrap();
    for (stored, m) in meta.as_object().unwrap() {
        let name = m["original_filename"].as_str().unwrap();
        let bytes = std::fs::read(seed.join("files").join(stored)).unwrap();
        assert_eq!(m["checksum"], sha_hex(&bytes), "the fixture itself");
        let r = get(&format!("/api/v1/files/{name}"));
        assert_eq!(r.status, 200, "{name}: {}", r.text());
        assert_eq!(sha_hex(&r.body), sha_hex(&bytes), "{name}");
        let info = get(&format!("/api/v1/files/{name}?meta=1")).json();
        let when = m["upload_time"].as_str().unwrap();
        assert!(
            info["created"].as_str().unwrap().starts_with(&when[..19]),
            "{name}: {info} vs {when}"
        );
    }
    // Every program runs and prints what the seed program prints.
    let progs = get("/api/v1/programs").json();
    let items = progs["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{progs}");
    let by_name = |n: &str| {
        items
            .iter()
            .find(|p| p["name"] == n)
            .unwrap_or_else(|| panic!("no program {n}: {progs}"))
            .clone()
    };
    let run = |id: &str, body: &Value| {
        let r = request_as(
            &d.tcp,
            &bearer,
            "POST",
            &format!("/api/v1/programs/{id}/runs"),
            Some("application/json"),
            body.to_string().as_bytes(),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    };
    let hello = by_name("hello.py");
    assert_eq!(hello["kind"], "file");
    let out = run(hello["id"].as_str().unwrap(), &json!({"args": ["x"]}));
    assert_eq!(
        out["stdout"], "Hello from the seed!\nargs: ['x']\n",
        "{out}"
    );
    let calc = by_name("calculator");
    assert_eq!(calc["kind"], "project");
    assert_eq!(calc["main"], "main.py");
    assert_eq!(calc["files"].as_array().unwrap().len(), 2, "{calc}");
    let out = run(calc["id"].as_str().unwrap(), &json!({}));
    assert_eq!(out["stdout"], "calculator: 5 20\n", "{out}");
    // The daemon found nothing to recover: no orphan, no missing blob.
    let ready = crate::http::get(&d.tcp, "/ready");
    assert_eq!(ready.json()["status"], "ready", "{}", ready.text());
    // The import is in the audit trail.
    let audit = get("/api/v1/audit?action=seed.import").text();
    assert!(audit.contains("seed.import"), "{audit}");
}

#[test]
fn dry_run_changes_nothing() {
    let (dir, cfg) = fresh("");
    // A state made by a daemon, with a key of its own.
    let (d, bearer) = start(dir, "");
    let r = request_as(
        &d.tcp,
        &bearer,
        "PUT",
        "/api/v1/data/mine",
        Some("application/json"),
        b"1",
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let dir = stop(d);
    let state = dir.path().join("state");
    let before = tree(&state);
    let (code, out, err) = import(&cfg, &fixture(), true);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("would import") && out.contains("7 keys, 4 files, 2 programs"),
        "{out}"
    );
    assert!(out.contains("dry run: nothing was changed"), "{out}");
    assert_eq!(
        before,
        tree(&state),
        "a dry run changed the state directory"
    );
}

/// Runs one bad seed against a daemon-made state (with the key `counter` = 7 in it): exit 0,
/// `expect` in the report, the state directory byte for byte as before.
fn bad_leaves_state_untouched(seed: &Path, extra: &str, expect: &[&str]) {
    let (dir, cfg) = fresh(extra);
    let (d, bearer) = start(dir, extra);
    let r = request_as(
        &d.tcp,
        &bearer,
        "PUT",
        "/api/v1/data/counter",
        Some("application/json"),
        b"7",
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let dir = stop(d);
    let state = dir.path().join("state");
    let before = tree(&state);
    let (code, out, err) = import(&cfg, seed, false);
    assert_eq!(code, 0, "{out}{err}");
    for e in expect {
        assert!(out.contains(e), "{e:?} not in the report:\n{out}{err}");
    }
    assert!(out.contains("0 keys, 0 files, 0 programs"), "{out}");
    assert_eq!(before, tree(&state), "the state changed:\n{out}");
    // And the daemon still sees its own key, unchanged.
    let (d, bearer) = start(dir, extra);
    let r = request_as(&d.tcp, &bearer, "GET", "/api/v1/data/counter", None, b"");
    assert_eq!(r.json()["value"], 7);
}

#[test]
fn malformed_json_is_reported_and_changes_nothing() {
    let t = empty_seed();
    let d = t.path().join("data");
    std::fs::write(d.join("storage.json"), "{\"a\": 1,").unwrap();
    std::fs::write(d.join("files/files_metadata.json"), "[{\"filename\": ").unwrap();
    std::fs::write(d.join("programs/programs.json"), "not json").unwrap();
    bad_leaves_state_untouched(
        t.path(),
        "",
        &[
            "seed \"storage.json\": no key was imported: malformed JSON",
            "seed \"files/files_metadata.json\": no file was imported: malformed JSON",
            "seed \"programs/programs.json\": no program was imported: malformed JSON",
        ],
    );
}

#[test]
fn paths_escaping_the_folder_are_reported_and_not_followed() {
    let t = empty_seed();
    let d = t.path().join("data");
    std::fs::write(
        d.join("files/files_metadata.json"),
        json!({
            "a": file_entry("../../storage.json", "up.txt", b"x"),
            "b": file_entry("/etc/passwd", "passwd", b"x"),
        })
        .to_string(),
    )
    .unwrap();
    std::fs::write(
        d.join("programs/programs.json"),
        json!({
            "p": {"name": "up", "type": "file", "filename": "../../storage.json"},
            "q": {"name": "abs", "type": "project", "path": "/etc"},
        })
        .to_string(),
    )
    .unwrap();
    bad_leaves_state_untouched(
        t.path(),
        "",
        &[
            "file \"up.txt\": its path \"../../storage.json\" leaves the seed folder",
            "file \"passwd\": its path \"/etc/passwd\" leaves the seed folder",
            "program \"up\": its path \"../../storage.json\" leaves the seed folder",
            "program \"abs\": its path \"/etc\" leaves the seed folder",
        ],
    );
}

#[test]
fn symlinks_are_reported_and_never_followed() {
    let t = empty_seed();
    let d = t.path().join("data");
    let outside = t.path().join("secret.txt");
    std::fs::write(&outside, b"not for the import").unwrap();
    std::os::unix::fs::symlink(&outside, d.join("storage.json")).unwrap();
    std::os::unix::fs::symlink(&outside, d.join("files/link.txt")).unwrap();
    std::fs::write(
        d.join("files/files_metadata.json"),
        json!({"link.txt": file_entry("link.txt", "link.txt", b"not for the import")}).to_string(),
    )
    .unwrap();
    std::os::unix::fs::symlink(&outside, d.join("programs/run.py")).unwrap();
    std::fs::create_dir(d.join("programs/proj")).unwrap();
    std::fs::write(d.join("programs/proj/main.py"), b"print(1)\n").unwrap();
    std::os::unix::fs::symlink(&outside, d.join("programs/proj/data.txt")).unwrap();
    std::os::unix::fs::symlink(t.path(), d.join("programs/linkdir")).unwrap();
    std::fs::write(
        d.join("programs/programs.json"),
        json!({
            "run.py": {"name": "run.py", "type": "file", "filename": "run.py"},
            "proj": {"name": "proj", "type": "project", "path": "proj", "main_file": "main.py"},
            "linkdir": {"name": "linkdir", "type": "project", "path": "linkdir/data"},
        })
        .to_string(),
    )
    .unwrap();
    bad_leaves_state_untouched(
        t.path(),
        "",
        &[
            "seed \"storage.json\": no key was imported: it is a symlink; not followed",
            "file \"link.txt\": files/link.txt: it is a symlink (or under one); not followed",
            "program \"run.py\":",
            "program \"proj\": proj/data.txt is a symlink; not followed",
            "program \"linkdir\":",
        ],
    );
}

#[test]
fn files_and_programs_over_the_limits_are_reported() {
    let t = empty_seed();
    let d = t.path().join("data");
    let big = vec![7u8; 8192];
    std::fs::write(d.join("files/big.bin"), &big).unwrap();
    std::fs::write(
        d.join("files/files_metadata.json"),
        json!({"big.bin": file_entry("big.bin", "big.bin", &big)}).to_string(),
    )
    .unwrap();
    let mut prog = b"print('big')\n#".to_vec();
    prog.extend(std::iter::repeat_n(b'x', 8192));
    std::fs::write(d.join("programs/big.py"), &prog).unwrap();
    std::fs::write(
        d.join("programs/programs.json"),
        json!({"big.py": {"name": "big.py", "type": "file", "filename": "big.py"}}).to_string(),
    )
    .unwrap();
    bad_leaves_state_untouched(
        t.path(),
        "[files]\nmax-file-size = \"4KiB\"\n[programs]\nmax-upload-size = \"4KiB\"\n",
        &[
            "file \"big.bin\": 8192 bytes, over files.max-file-size",
            "program \"big.py\": 8206 bytes, over programs.max-upload-size",
        ],
    );
}

#[test]
fn a_checksum_mismatch_is_reported_and_the_file_skipped() {
    let t = seed_copy();
    let d = t.path().join("data");
    // Only the files, one of them changed after its checksum was recorded.
    std::fs::remove_file(d.join("storage.json")).unwrap();
    std::fs::remove_dir_all(d.join("programs")).unwrap();
    let meta_path = d.join("files/files_metadata.json");
    let mut meta: Value = serde_json::from_slice(&std::fs::read(&meta_path).unwrap()).unwrap();
    let m = meta.as_object_mut().unwrap();
    m.retain(|k, _| k == "20240106_090000_logo.png");
    std::fs::write(&meta_path, meta.to_string()).unwrap();
    for e in std::fs::read_dir(d.join("files")).unwrap().flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n != "20240106_090000_logo.png" && n != "files_metadata.json" {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
    let png = d.join("files/20240106_090000_logo.png");
    let mut bytes = std::fs::read(&png).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&png, bytes).unwrap();
    bad_leaves_state_untouched(
        t.path(),
        "",
        &["file \"logo.png\": checksum mismatch: the content's SHA-256 is"],
    );
}

#[test]
fn a_conflicting_key_is_skipped_and_reported_and_the_rest_imported() {
    // Alone: reported, nothing changed.
    let t = empty_seed();
    std::fs::write(
        t.path().join("data/storage.json"),
        r#"{"counter": 1, "bad\u0001key": 2}"#,
    )
    .unwrap();
    bad_leaves_state_untouched(
        t.path(),
        "",
        &[
            "key \"counter\": the key exists here; left as it is",
            "key \"bad\\u{1}key\": key has the control character U+0001",
            "conflicts: 1",
        ],
    );
    // With the whole fixture: the others arrive, the existing value stays.
    let (dir, cfg) = fresh("");
    let (d, bearer) = start(dir, "");
    let r = request_as(
        &d.tcp,
        &bearer,
        "PUT",
        "/api/v1/data/counter",
        Some("application/json"),
        b"7",
    );
    assert_eq!(r.status, 201);
    let dir = stop(d);
    let (code, out, err) = import(&cfg, &fixture(), false);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("6 keys, 4 files, 2 programs"), "{out}");
    assert!(
        out.contains("key \"counter\": the key exists here"),
        "{out}"
    );
    // Importing again: everything is a conflict, nothing changes.
    let before = tree(&dir.path().join("state"));
    let (code, out, _) = import(&cfg, &fixture(), false);
    assert_eq!(code, 0);
    assert!(
        out.contains("0 keys, 0 files, 0 programs") && out.contains("conflicts: 13"),
        "{out}"
    );
    assert_eq!(before, tree(&dir.path().join("state")));
    let (d, bearer) = start(dir, "");
    let r = request_as(&d.tcp, &bearer, "GET", "/api/v1/data/counter", None, b"");
    assert_eq!(r.json()["value"], 7);
    let r = request_as(&d.tcp, &bearer, "GET", "/api/v1/data/app_name", None, b"");
    assert_eq!(r.json()["value"], "My Localhost");
}

#[test]
fn a_running_daemon_refuses_the_import() {
    let (dir, cfg) = fresh("");
    let (d, _) = start(dir, "");
    let before = tree(&d.state_dir());
    let (code, out, err) = import(&cfg, &fixture(), false);
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        err.contains("stop the service") || err.contains("is locked"),
        "{err}"
    );
    let mut after = tree(&d.state_dir());
    // The running daemon's own database files may move on; the stores' do not.
    after.retain(|k, _| !k.starts_with("localhostd.db"));
    let mut b = before;
    b.retain(|k, _| !k.starts_with("localhostd.db"));
    assert_eq!(b, after);
}

#[test]
fn no_folder_or_not_a_seed_folder_fails_clearly() {
    let (_dir, cfg) = fresh("");
    let (code, _, err) = import(&cfg, Path::new("/nonexistent/seed"), false);
    assert_ne!(code, 0);
    assert!(err.contains("/nonexistent/seed"), "{err}");
    let empty = tempfile::tempdir().unwrap();
    let (code, _, err) = import(&cfg, empty.path(), false);
    assert_ne!(code, 0);
    assert!(err.contains("not a seed data folder"), "{err}");
    // The data folder itself is accepted too.
    let (code, out, err) = import(&cfg, &fixture().join("data"), true);
    assert_eq!(code, 0, "{out}{err}");
}

/// As root, with the state directory owned by another user (as `localhostd` owns
/// /var/lib/localhostd): the import becomes that owner, yet still reads a seed folder under a
/// directory only root may enter (`/root`, a 0700 home): it holds the folder open from before.
#[test]
fn a_seed_under_a_directory_the_owner_cannot_enter_is_still_read() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if !nix::unistd::geteuid().is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "the seed import's owner test must run as root in CI"
        );
        eprintln!("SKIPPED: becoming the state directory's owner needs root");
        return;
    }
    let (uid, gid) = crate::sandbox::test_user();
    let (dir, cfg) = fresh("");
    // The state directory's owner can reach it (its parent is 0755), not the seed.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let state = dir.path().join("state");
    std::os::unix::fs::chown(&state, Some(uid), Some(gid)).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    let private = tempfile::tempdir().unwrap();
    std::fs::set_permissions(private.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(fixture())
        .arg(private.path().join("seed"))
        .status()
        .unwrap();
    assert!(st.success());
    let seed = private.path().join("seed");

    let (code, out, err) = import(&cfg, &seed, false);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(": 7 keys, 4 files, 2 programs"),
        "not everything was read:\n{out}{err}"
    );
    assert!(out.contains("skipped: 0"), "{out}");
    // What it made belongs to the state directory's owner.
    for made in ["localhostd.db", "files", "programs"] {
        let m = std::fs::metadata(state.join(made)).unwrap();
        assert_eq!((m.uid(), m.gid()), (uid, gid), "{made}");
    }
}
