//! The CLI's side of administration (`localhostd token …`): it asks the running daemon over
//! its admin socket (root or the daemon's user are trusted by peer credentials), and with no
//! daemon running it works offline: as the state directory's owner (so it never leaves
//! root-owned files behind), holding the lock `serve` honours, never creating a state dir.

use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::cli::{BackupAction, TokenAction};
use crate::config::Config;
use crate::ops::backup::{self, BackupError};
use crate::store::audit::{Audit, Event};
use crate::store::auth::{Auth, Scopes, parse_expiry};
use crate::store::db::Db;
use crate::util::layout::{DB_FILE, LOCAL_ADMIN_SOCKET, LOCK_FILE};

/// What went wrong, for the user.
pub type CliResult<T> = Result<T, String>;

/// Where the CLI found the daemon, or not.
enum Channel {
    Daemon(PathBuf),
    Offline,
}

fn find_channel(cfg: &Config, state_dir: &Path) -> Channel {
    for sock in [
        cfg.server.admin_socket.clone(),
        state_dir.join(LOCAL_ADMIN_SOCKET),
    ] {
        if UnixStream::connect(&sock).is_ok() {
            return Channel::Daemon(sock);
        }
    }
    Channel::Offline
}

/// Runs a `token` subcommand; prints its result.
pub fn token(cfg: &Config, state_dir: &Path, action: TokenAction) -> CliResult<()> {
    let result = match find_channel(cfg, state_dir) {
        Channel::Daemon(sock) => via_daemon(&sock, &action)?,
        Channel::Offline => offline(state_dir, &action)?,
    };
    print_result(&action, &result);
    Ok(())
}

fn via_daemon(sock: &Path, action: &TokenAction) -> CliResult<Value> {
    let (method, path, body) = match action {
        TokenAction::Create {
            name,
            scope,
            expires,
        } => {
            let scopes: Vec<&str> = scope
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect();
            (
                "POST",
                "/api/v1/tokens".to_owned(),
                Some(json!({"name": name, "scopes": scopes, "expires_in": expires})),
            )
        }
        TokenAction::List => ("GET", "/api/v1/tokens".to_owned(), None),
        TokenAction::Revoke { token } => (
            "DELETE",
            format!("/api/v1/tokens/{}", percent_encode(token)),
            None,
        ),
    };
    ask_daemon(sock, method, &path, body.as_ref(), Duration::from_secs(60))
}

/// `localhostd login-url`: asks the running daemon for a one-time login link and prints
/// `<base>/login#link=<secret>` (the secret in the fragment, which browsers never send).
pub fn login_url(cfg: &Config, state_dir: &Path, base: Option<&str>) -> CliResult<()> {
    let base = match base {
        Some(b) => check_base(b)?,
        None => default_base(cfg)?,
    };
    let Channel::Daemon(sock) = find_channel(cfg, state_dir) else {
        return Err(
            "no running daemon answers on its admin socket: login links are made by the \
             running daemon (start it first, e.g. `systemctl start localhostd`)"
                .into(),
        );
    };
    // No body: the route takes none (one it does not read could meet a closed socket).
    let v = ask_daemon(
        &sock,
        "POST",
        "/api/v1/session/links",
        None,
        Duration::from_secs(30),
    )?;
    let link = v["link"]
        .as_str()
        .ok_or("the daemon's answer has no link")?;
    println!("{base}/login#link={link}");
    eprintln!(
        "Open it in a browser to log in as the host's admin; it works once, until {}.",
        v["expires_at"].as_str().unwrap_or("it expires")
    );
    Ok(())
}

/// A `--base` as given: an http(s) URL, without a trailing slash.
fn check_base(b: &str) -> CliResult<String> {
    let b = b.trim().trim_end_matches('/');
    let rest = b
        .strip_prefix("http://")
        .or_else(|| b.strip_prefix("https://"))
        .ok_or_else(|| format!("--base {b:?}: expected an http:// or https:// URL"))?;
    if rest.is_empty() || rest.contains(|c: char| c.is_whitespace() || c == '#' || c == '?') {
        return Err(format!(
            "--base {b:?}: expected a URL such as https://host.example.com"
        ));
    }
    Ok(b.to_owned())
}

/// `http://` and the first TCP address of `server.listen`, an unspecified address read as
/// loopback.
fn default_base(cfg: &Config) -> CliResult<String> {
    use crate::config::ListenAddr;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
    let tcp = cfg.server.listen.iter().find_map(|l| match l {
        ListenAddr::Tcp(a) => Some(*a),
        ListenAddr::Unix(_) => None,
    });
    let Some(mut addr) = tcp else {
        return Err(
            "server.listen has no TCP address: pass --base with the URL the browser uses (e.g. \
             nginx's https://host.example.com)"
                .into(),
        );
    };
    if addr.ip().is_unspecified() {
        let ip = match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        };
        addr = SocketAddr::new(ip, addr.port());
    }
    Ok(format!("http://{addr}"))
}

/// One request to the daemon; a non-2xx answer becomes the error, with the daemon's message.
fn ask_daemon(
    sock: &Path,
    method: &str,
    path: &str,
    body: Option<&Value>,
    timeout: Duration,
) -> CliResult<Value> {
    let (status, value) = http_unix(sock, method, path, body, timeout)
        .map_err(|e| format!("cannot talk to the daemon on {}: {e}", sock.display()))?;
    if !(200..300).contains(&status) {
        let msg = value["error"]["message"]
            .as_str()
            .unwrap_or("request failed");
        return Err(format!("the daemon refused ({status}): {msg}"));
    }
    Ok(value)
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'@') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// One HTTP/1.1 request over a Unix socket; returns the status and the JSON body.
fn http_unix(
    sock: &Path,
    method: &str,
    path: &str,
    body: Option<&Value>,
    timeout: Duration,
) -> std::io::Result<(u16, Value)> {
    let mut s = UnixStream::connect(sock)?;
    s.set_read_timeout(Some(timeout))?;
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nAccept: application/json\r\n"
    );
    if body.is_some() {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            payload.len()
        ));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    s.write_all(payload.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("incomplete response"))?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status line"))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let mut body = raw[end + 4..].to_vec();
    if chunked {
        body = dechunk(&body).ok_or_else(|| bad("bad chunked body"))?;
    }
    let value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).map_err(|e| bad(&e.to_string()))?
    };
    Ok((status, value))
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let nl = data.windows(2).position(|w| w == b"\r\n")?;
        let size = usize::from_str_radix(
            std::str::from_utf8(&data[..nl])
                .ok()?
                .split(';')
                .next()?
                .trim(),
            16,
        )
        .ok()?;
        data = data.get(nl + 2..)?;
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// Becomes the owner of `dir` when running as root, so files we create belong to the service.
fn become_owner(dir: &Path) -> CliResult<()> {
    let meta = std::fs::metadata(dir).map_err(|e| format!("cannot stat {}: {e}", dir.display()))?;
    let euid = nix::unistd::geteuid();
    if !euid.is_root() || meta.uid() == 0 {
        return Ok(());
    }
    let (uid, gid) = (
        nix::unistd::Uid::from_raw(meta.uid()),
        nix::unistd::Gid::from_raw(meta.gid()),
    );
    nix::unistd::setgroups(&[gid]).map_err(|e| format!("setgroups: {e}"))?;
    nix::unistd::setgid(gid).map_err(|e| format!("setgid({gid}): {e}"))?;
    nix::unistd::setuid(uid).map_err(|e| format!("setuid({uid}): {e}"))?;
    Ok(())
}

/// Offline: refuses a state dir without a database (`need_db`; a restore only needs the
/// directory) and never creates one; becomes its owner and takes the lock `serve` honours.
fn take_state_dir(state_dir: &Path, need_db: bool) -> CliResult<nix::fcntl::Flock<std::fs::File>> {
    let no_db = || {
        format!(
            "no localhostd is running (its admin socket is not reachable) and {} holds no database; start the service first",
            state_dir.display()
        )
    };
    if !state_dir.is_dir() {
        return Err(format!(
            "no localhostd is running (its admin socket is not reachable) and the state directory {} does not exist; start the service first (its first start makes the directory), or name the right one: STATE_DIRECTORY=/var/lib/localhostd localhostd …",
            state_dir.display()
        ));
    }
    // First: root without CAP_DAC_OVERRIDE (the backup unit) cannot look inside a 0700
    // directory it does not own.
    become_owner(state_dir)?;
    if need_db && !state_dir.join(DB_FILE).exists() {
        return Err(no_db());
    }
    let lock_path = state_dir.join(LOCK_FILE);
    let lock_file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| format!("cannot open {}: {e}", lock_path.display()))?;
    let lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
        format!(
            "{} is locked ({e}): a daemon holds the state directory but its admin socket is not reachable; use the socket it listens on (server.admin-socket)",
            lock_path.display()
        )
    })?;
    Ok(lock)
}

fn offline(state_dir: &Path, action: &TokenAction) -> CliResult<Value> {
    let real_uid = nix::unistd::geteuid().as_raw();
    let _lock = take_state_dir(state_dir, true)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let db_path = state_dir.join(DB_FILE);
    runtime.block_on(async move {
        let db =
            Db::open(&db_path, 1).map_err(|e| format!("cannot open {}: {e}", db_path.display()))?;
        let auth = Auth::new(db.clone());
        let audit = Audit::new(db.clone());
        let actor = format!("local:uid={real_uid} (offline)");
        let (action_name, target, result) = match action {
            TokenAction::Create {
                name,
                scope,
                expires,
            } => {
                let r = async {
                    let scopes = Scopes::parse_list(scope)?;
                    let expires = expires.as_deref().map(parse_expiry).transpose()?;
                    auth.create_token(name, scopes, expires).await
                }
                .await;
                ("token.create", name.clone(), r.map(|t| json!(t)))
            }
            TokenAction::List => (
                "",
                String::new(),
                auth.list_tokens().await.map(|t| json!({"items": t})),
            ),
            TokenAction::Revoke { token } => (
                "token.revoke",
                token.clone(),
                auth.revoke_token(token).await.map(|t| json!(t)),
            ),
        };
        if !action_name.is_empty() {
            let outcome = match &result {
                Ok(_) => "ok".to_owned(),
                Err(e) => format!("error: {e}"),
            };
            let ev = Event {
                actor,
                action: action_name.into(),
                target,
                result: outcome,
                client: "cli".into(),
                ..Event::default()
            };
            if let Err(e) = audit.record(ev).await {
                eprintln!("localhostd: warning: cannot store the audit event: {e}");
            }
        }
        db.close();
        result.map_err(|e| e.to_string())
    })
}

fn print_result(action: &TokenAction, v: &Value) {
    let s = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    let scopes = |v: &Value| {
        v["scopes"]
            .as_array()
            .map(|a| a.iter().map(s).collect::<Vec<_>>().join(","))
            .unwrap_or_default()
    };
    match action {
        TokenAction::Create { .. } => {
            println!("{}", s(&v["token"]));
            eprintln!(
                "created token {} (id {}) with scopes {}, expires {}; this is the only time it is shown",
                s(&v["name"]),
                s(&v["id"]),
                scopes(v),
                v["expires_at"].as_str().unwrap_or("never")
            );
        }
        TokenAction::List => {
            println!(
                "{:<16}  {:<24}  {:<26}  {:<20}  {:<20}  {:<20}",
                "ID", "NAME", "SCOPES", "EXPIRES", "REVOKED", "LAST USED"
            );
            for t in v["items"].as_array().into_iter().flatten() {
                println!(
                    "{:<16}  {:<24}  {:<26}  {:<20}  {:<20}  {:<20}",
                    s(&t["id"]),
                    s(&t["name"]),
                    scopes(t),
                    s(&t["expires_at"]),
                    s(&t["revoked_at"]),
                    s(&t["last_used_at"])
                );
            }
        }
        TokenAction::Revoke { .. } => {
            println!("revoked token {} (id {})", s(&v["name"]), s(&v["id"]))
        }
    }
}

/// How long the CLI waits for the daemon to make or verify a backup.
const BACKUP_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// Runs a `backup` subcommand; prints its result.
pub fn backup(cfg: &Config, state_dir: &Path, action: BackupAction) -> CliResult<()> {
    // A file is verified right here: it needs neither the daemon nor the state directory.
    if let BackupAction::Verify {
        file: Some(file),
        read_data,
        ..
    } = &action
    {
        let label = file.display().to_string();
        let v = backup::verify(file, &label, *read_data).map_err(|e| e.to_string())?;
        print_backup(&action, &json!(v));
        return Ok(());
    }
    let result = match find_channel(cfg, state_dir) {
        Channel::Daemon(sock) => backup_via_daemon(&sock, &action)?,
        Channel::Offline => backup_offline(cfg, state_dir, &action)?,
    };
    print_backup(&action, &result);
    Ok(())
}

fn backup_via_daemon(sock: &Path, action: &BackupAction) -> CliResult<Value> {
    let (method, path) = match action {
        BackupAction::Create => ("POST", "/api/v1/backups".to_owned()),
        BackupAction::List => ("GET", "/api/v1/backups".to_owned()),
        BackupAction::Verify { id, read_data, .. } => (
            "POST",
            format!(
                "/api/v1/backups/{}/verify?read_data={read_data}",
                percent_encode(id.as_deref().unwrap_or_default())
            ),
        ),
        BackupAction::Restore { id } => (
            "POST",
            format!("/api/v1/backups/{}/restore", percent_encode(id)),
        ),
        BackupAction::Prune => ("POST", "/api/v1/backups:prune".to_owned()),
    };
    ask_daemon(sock, method, &path, None, BACKUP_TIMEOUT)
}

fn backup_offline(cfg: &Config, state_dir: &Path, action: &BackupAction) -> CliResult<Value> {
    // Before the lock makes this process the state directory's owner.
    let actor = format!("local:uid={} (offline)", nix::unistd::geteuid().as_raw());
    let dir = backup::backup_dir(&cfg.backup, state_dir);
    let s = |e: BackupError| e.to_string();
    match action {
        // Reading only: no lock needed.
        BackupAction::List => {
            let mut items = backup::list(&dir).map_err(s)?;
            items.reverse();
            Ok(json!({"items": items}))
        }
        BackupAction::Verify { id, read_data, .. } => {
            let id = id.as_deref().unwrap_or_default();
            let path = backup::find(&dir, id).map_err(s)?;
            Ok(json!(backup::verify(&path, id, *read_data).map_err(s)?))
        }
        BackupAction::Create => {
            let _lock = take_state_dir(state_dir, true)?;
            let pins = std::sync::Arc::new(crate::store::pins::BlobPins::default());
            let cancel = std::sync::atomic::AtomicBool::new(false);
            let created = backup::create(
                &backup::Sources::in_state_dir(state_dir),
                &dir,
                cfg.backup.compression_level,
                &pins,
                &cancel,
            );
            let target = created.as_ref().map(|c| c.id.clone()).unwrap_or_default();
            audit_offline(state_dir, &actor, "backup.create", &target, &created, "");
            Ok(json!(created.map_err(s)?))
        }
        BackupAction::Restore { id } => {
            let _lock = take_state_dir(state_dir, false)?;
            let path = backup::find(&dir, id).map_err(s)?;
            // Into the restored database when it worked, the untouched one when not.
            let r = backup::restore(state_dir, &path, id);
            audit_offline(state_dir, &actor, "backup.restore", id, &r, "");
            Ok(json!(r.map_err(s)?))
        }
        BackupAction::Prune => {
            let _lock = take_state_dir(state_dir, true)?;
            let gone = backup::prune(&dir, &cfg.backup, std::time::SystemTime::now());
            // As the API's prune records it: the ids removed.
            let detail = match &gone {
                Ok(g) => g
                    .iter()
                    .map(|b| b.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                Err(_) => String::new(),
            };
            audit_offline(state_dir, &actor, "backup.prune", "", &gone, &detail);
            Ok(json!({"removed": gone.map_err(s)?}))
        }
    }
}

/// Runs `import-seed`: offline only (like a restore), as the state directory's owner holding
/// its lock; a state directory without a database gets a new one. Prints the report.
pub fn import_seed(cfg: &Config, state_dir: &Path, path: &Path, dry_run: bool) -> CliResult<()> {
    use crate::ops::seed_import;
    if let Channel::Daemon(sock) = find_channel(cfg, state_dir) {
        return Err(format!(
            "a localhostd is running (its admin socket {} answers): stop the service first; import-seed works offline only",
            sock.display()
        ));
    }
    // Before the lock makes this process the state directory's owner (who may not read it).
    let data = seed_import::data_folder(path).map_err(|e| e.to_string())?;
    let actor = format!("local:uid={} (offline)", nix::unistd::geteuid().as_raw());
    let _lock = take_state_dir(state_dir, false)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let report = runtime
        .block_on(seed_import::import(cfg, state_dir, &data, dry_run, &actor))
        .map_err(|e| format!("import-seed: nothing was changed: {e}"))?;
    print_seed_report(&report);
    Ok(())
}

fn print_seed_report(r: &crate::ops::seed_import::Report) {
    let n = &r.imported;
    let verb = if r.dry_run {
        "would import"
    } else {
        "imported"
    };
    println!(
        "{verb} from {}: {} keys, {} files, {} programs",
        r.source, n.keys, n.files, n.programs
    );
    for i in &r.items {
        if i.detail.is_empty() {
            println!("  {} {:?}", i.kind, i.name);
        } else {
            println!("  {} {:?} ({})", i.kind, i.name, i.detail);
        }
    }
    println!("skipped: {}", r.skipped.len());
    for i in &r.skipped {
        println!("  {} {:?}: {}", i.kind, i.name, i.detail);
    }
    println!("conflicts: {}", r.conflicts.len());
    for i in &r.conflicts {
        println!("  {} {:?}: {}", i.kind, i.name, i.detail);
    }
    println!("unknown fields: {}", r.unknown_fields.len());
    for u in &r.unknown_fields {
        println!(
            "  {} entry {:?}: field {:?} (not imported)",
            u.file, u.entry, u.field
        );
    }
    for note in &r.notes {
        println!("note: {note}");
    }
    if r.dry_run {
        println!("dry run: nothing was changed");
    } else if r.committed {
        println!("the import is committed; start the service again");
    }
}

/// Records an offline change in the state directory's audit trail (and the log), as the
/// daemon does for the same action through its API. Opens the database directly: no
/// migrations run from here. A failure to record is a warning; the action itself stands.
fn audit_offline<T, E: std::fmt::Display>(
    state_dir: &Path,
    actor: &str,
    action: &str,
    target: &str,
    result: &Result<T, E>,
    detail: &str,
) {
    let ev = Event {
        actor: actor.to_owned(),
        action: action.to_owned(),
        target: target.to_owned(),
        result: match result {
            Ok(_) => "ok".to_owned(),
            Err(e) => format!("error: {e}"),
        },
        client: "cli".into(),
        detail: detail.to_owned(),
        ..Event::default()
    };
    let db = state_dir.join(DB_FILE);
    let stored =
        rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE)
            .map_err(|e| e.to_string())
            .and_then(|c| {
                c.busy_timeout(Duration::from_secs(5))
                    .map_err(|e| e.to_string())?;
                crate::store::audit::insert(&c, &ev).map_err(|e| e.to_string())
            });
    if let Err(e) = stored {
        eprintln!(
            "localhostd: warning: cannot store the audit event in {}: {e}",
            db.display()
        );
    }
}

fn print_backup(action: &BackupAction, v: &Value) {
    let s = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    };
    match action {
        BackupAction::Create => {
            println!("{}", s(&v["id"]));
            eprintln!(
                "backup {} complete at {}: {} entries ({} files, {} programs), {} bytes read, archive {} bytes, {} ms",
                s(&v["id"]),
                s(&v["completed"]),
                s(&v["entries"]),
                s(&v["files"]),
                s(&v["programs"]),
                s(&v["data_bytes"]),
                s(&v["size"]),
                s(&v["duration_ms"])
            );
            if let Some(m) = v["missing_blobs"].as_array().filter(|m| !m.is_empty()) {
                eprintln!(
                    "warning: {} file(s) had no content in the store already and are not in the backup",
                    m.len()
                );
            }
        }
        BackupAction::List => {
            println!("{:<26}  {:<20}  {:>14}", "ID", "CREATED", "SIZE");
            for b in v["items"].as_array().into_iter().flatten() {
                println!(
                    "{:<26}  {:<20}  {:>14}",
                    s(&b["id"]),
                    s(&b["created"]),
                    s(&b["size"])
                );
            }
        }
        BackupAction::Verify { .. } => {
            let how = if v["read_data"].as_bool().unwrap_or(false) {
                "every byte read and every SHA-256 matches its manifest"
            } else {
                "structure, sizes and gzip checksum match its manifest (add --read-data to check every SHA-256)"
            };
            println!(
                "{}: ok: {} entries, {} bytes; {how}",
                s(&v["backup"]),
                s(&v["entries"]),
                s(&v["data_bytes"])
            );
        }
        BackupAction::Restore { .. } => {
            println!(
                "restored backup {} (made {}, schema version {}): {} entries, {} bytes; start the service again",
                s(&v["backup"]),
                s(&v["created"]),
                s(&v["schema_version"]),
                s(&v["entries"]),
                s(&v["data_bytes"])
            );
        }
        BackupAction::Prune => {
            let gone = v["removed"].as_array().cloned().unwrap_or_default();
            if gone.is_empty() {
                println!("nothing to prune");
            }
            for b in gone {
                println!("removed {}", s(&b["id"]));
            }
        }
    }
}

#[cfg(test)]
mod login_url_tests {
    use super::*;
    use crate::config::ListenAddr;

    #[test]
    fn the_base_is_given_or_the_first_tcp_listen_address() {
        let mut cfg = Config::default();
        cfg.server.listen = vec![
            ListenAddr::Unix("/run/x.sock".into()),
            ListenAddr::Tcp("0.0.0.0:9000".parse().unwrap()),
        ];
        assert_eq!(default_base(&cfg).unwrap(), "http://127.0.0.1:9000");
        cfg.server.listen = vec![ListenAddr::Tcp("[::]:8080".parse().unwrap())];
        assert_eq!(default_base(&cfg).unwrap(), "http://[::1]:8080");
        cfg.server.listen = vec![ListenAddr::Tcp("192.0.2.1:80".parse().unwrap())];
        assert_eq!(default_base(&cfg).unwrap(), "http://192.0.2.1:80");
        cfg.server.listen = vec![ListenAddr::Unix("/run/x.sock".into())];
        assert!(default_base(&cfg).unwrap_err().contains("--base"));

        assert_eq!(
            check_base("https://h.example.com/").unwrap(),
            "https://h.example.com"
        );
        assert_eq!(
            check_base("http://h:8080/localhostd").unwrap(),
            "http://h:8080/localhostd"
        );
        for bad in ["h.example.com", "ftp://h", "https://", "https://h/#x"] {
            assert!(check_base(bad).is_err(), "{bad}");
        }
    }
}
