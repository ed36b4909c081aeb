//! Backups of all state: one `.tar.gz` per backup holding a consistent copy of the database
//! (SQLite's online backup API, taken while the daemon serves), the file and program blobs that
//! copy refers to, and `manifest.json` (last) naming every entry with its size and SHA-256.
//! Verification, offline restore and retention; the pins that keep blobs a backup still has to
//! read from being unlinked are [`crate::store::pins`]. No HTTP here; `api/backups.rs` is the thin HTTP side and
//! `adminctl.rs` the CLI's.
//!
//! Creating: the blob pins go up first (a file or program deleted from now on keeps its blob
//! until the backup is done), then the database is copied in one backup step (one read
//! transaction: a snapshot that does not block the writer), then the blobs that snapshot names
//! are streamed into `.tmp-<id>.tar.gz` in the backup directory, hashed on the way; the manifest
//! closes the archive; fsync → rename to `<id>.tar.gz` → fsync of the directory. Only names
//! without the `.tmp-` prefix are backups, so an unfinished one is never listed; leftovers are
//! removed at the daemon's start and before the next backup.
//!
//! Restoring (offline: the service stopped, the state lock held) extracts into a staging
//! directory inside the state directory under strict entry rules (regular files only, no
//! absolute paths, no `..`, only the places a backup writes), checks every size and hash
//! against the manifest and the database's `integrity_check`, and only then renames the
//! database, `files/` and `programs/` into place (the old ones aside first; any failure renames
//! them back).

use std::collections::{BTreeMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{BackupConfig, LiveConfig};
use crate::store::pins::{BlobPins, remove_path};
use crate::store::stored::{BlobId, ProgramId, ProgramPath};
use crate::util::layout::{
    BACKUPS_DIR, BLOBS_DIR, DB_FILE, FILES_DIR, FILES_TMP_DIR, PROGRAMS_DIR, PROGRAMS_TRASH_PREFIX,
    RESTORE_DONE, RESTORE_JOURNAL, RESTORE_NEW, RESTORE_OLD,
};
use crate::util::time::rfc3339_at;

/// The archive layout this binary writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// The manifest's name in the archive (its last entry).
pub const MANIFEST: &str = "manifest.json";
/// The database's name in the archive (its name in the state directory: a restore moves the
/// extracted entries into place as they are).
pub const DB_ENTRY: &str = DB_FILE;
const SUFFIX: &str = ".tar.gz";
const TMP_PREFIX: &str = ".tmp-";
/// Largest manifest read back (a million entries fit in far less).
const MAX_MANIFEST: u64 = 256 << 20;
const IO_BUF: usize = 256 << 10;

/// What can go wrong with a backup, as the decisions a caller makes. `api/error.rs` maps these.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// No backup with that id.
    #[error("{0}")]
    NotFound(String),
    /// A malformed id or argument.
    #[error("{0}")]
    Invalid(String),
    /// Another backup is being made, or the operation needs the service stopped.
    #[error("{0}")]
    Conflict(String),
    /// The archive is damaged, incomplete or hostile; `entry` is the first bad entry.
    #[error("{archive}: entry {entry}: {reason}")]
    Corrupt {
        archive: String,
        entry: String,
        reason: String,
    },
    /// The archive is well-formed but this binary cannot restore it (a newer format or schema).
    #[error("{0}")]
    Unsupported(String),
    /// The disk holding the backup directory or the state directory is full.
    #[error("{0}")]
    NoSpace(String),
    #[error("database error: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("internal error: {0}")]
    Internal(String),
}

type Result<T, E = BackupError> = std::result::Result<T, E>;

fn io_ctx(context: impl Into<String>) -> impl FnOnce(io::Error) -> BackupError {
    let context = context.into();
    move |source| match source.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => {
            BackupError::NoSpace(format!("{context}: the disk is full"))
        }
        _ => BackupError::Io { context, source },
    }
}

// ---------------------------------------------------------------------------------------------
// Ids, names, listing.

/// A backup as listed.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BackupInfo {
    /// `20261125T214500Z-1a2b3c4d`: the creation time (UTC) and a random suffix.
    pub id: String,
    /// Creation time (RFC 3339 UTC).
    pub created: String,
    /// Archive size in bytes.
    pub size: u64,
    #[serde(skip)]
    pub created_at: SystemTime,
    #[serde(skip)]
    pub path: PathBuf,
}

/// Whether `id` has the shape of a backup id (so it can be joined to a path safely).
pub fn valid_id(id: &str) -> bool {
    parse_id_time(id).is_some()
}

fn parse_id_time(id: &str) -> Option<SystemTime> {
    let (stamp, rand) = id.split_once('-')?;
    if rand.len() != 8 || !rand.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let b = stamp.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let digits = |r: std::ops::Range<usize>| {
        b.get(r.clone())
            .filter(|s| s.iter().all(u8::is_ascii_digit))
            .and_then(|s| std::str::from_utf8(s).ok())
    };
    let text = format!(
        "{}-{}-{}T{}:{}:{}Z",
        digits(0..4)?,
        digits(4..6)?,
        digits(6..8)?,
        digits(9..11)?,
        digits(11..13)?,
        digits(13..15)?
    );
    humantime::parse_rfc3339(&text).ok()
}

fn new_id(at: SystemTime) -> Result<String> {
    let stamp: String = rfc3339_at(at)
        .chars()
        .filter(|c| !matches!(c, '-' | ':'))
        .collect();
    let mut r = [0u8; 4];
    getrandom::fill(&mut r).map_err(|e| BackupError::Internal(format!("no randomness: {e}")))?;
    Ok(format!("{stamp}-{}", hex::encode(r)))
}

/// The backup directory a config names: `backup.dir`, else `<state dir>/backups`.
pub fn backup_dir(cfg: &BackupConfig, state_dir: &Path) -> PathBuf {
    cfg.dir
        .clone()
        .unwrap_or_else(|| state_dir.join(BACKUPS_DIR))
}

/// The complete backups in `dir`, oldest first. A missing directory holds none.
pub fn list(dir: &Path) -> Result<Vec<BackupInfo>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_ctx(format!("cannot read {}", dir.display()))(e)),
    };
    let mut out = Vec::new();
    for e in rd {
        let e = e.map_err(io_ctx(format!("cannot read {}", dir.display())))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(id) = name.strip_suffix(SUFFIX) else {
            continue;
        };
        let Some(created_at) = parse_id_time(id) else {
            continue;
        };
        let Ok(meta) = e.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        out.push(BackupInfo {
            id: id.to_owned(),
            created: rfc3339_at(created_at),
            size: meta.len(),
            created_at,
            path: e.path(),
        });
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

/// The archive of backup `id` in `dir`.
pub fn find(dir: &Path, id: &str) -> Result<PathBuf> {
    if !valid_id(id) {
        return Err(BackupError::Invalid(format!(
            "{id:?} is not a backup id (like 20261125T214500Z-1a2b3c4d; see `localhostd backup list`)"
        )));
    }
    let p = dir.join(format!("{id}{SUFFIX}"));
    match std::fs::metadata(&p) {
        Ok(m) if m.is_file() => Ok(p),
        _ => Err(BackupError::NotFound(format!(
            "no backup {id} in {}",
            dir.display()
        ))),
    }
}

/// Removes what an interrupted backup left in `dir` (`.tmp-*`); returns how many.
pub fn clean_temps(dir: &Path) -> Result<usize> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io_ctx(format!("cannot read {}", dir.display()))(e)),
    };
    let mut n = 0;
    for e in rd.flatten() {
        if e.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
            remove_path(&e.path())
                .map_err(io_ctx(format!("cannot remove {}", e.path().display())))?;
            n += 1;
        }
    }
    if n > 0 {
        sync_dir(dir)?;
    }
    Ok(n)
}

fn sync_dir(dir: &Path) -> Result<()> {
    crate::util::fs::sync_dir(dir).map_err(io_ctx(format!("cannot sync {}", dir.display())))
}

// ---------------------------------------------------------------------------------------------
// The manifest.

/// `manifest.json`: what the archive holds, written last.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub daemon_version: String,
    /// When the database copy was taken (RFC 3339 UTC).
    pub created: String,
    /// The database's schema version (`PRAGMA user_version`) in the copy.
    pub schema_version: i64,
    /// Every other entry, in archive order.
    pub entries: Vec<ManifestEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ManifestEntry {
    pub path: String,
    pub size: u64,
    /// Hex SHA-256 of the entry's bytes.
    pub sha256: String,
}

/// What an entry of a backup is, by its path; anything else is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
enum EntryKind {
    Manifest,
    Database,
    /// `files/blobs/<blob>`
    FileBlob,
    /// `programs/<id>/<path…>`
    ProgramFile,
}

/// Checks an entry path against the layout this module writes. Refuses absolute paths, `..`,
/// `.`, empty segments and anything outside the database, `files/blobs/` and `programs/<id>/`.
fn classify(path: &str) -> Result<EntryKind, String> {
    if path.is_empty() {
        return Err("empty path".into());
    }
    if path.starts_with('/') {
        return Err("absolute path: refused (entries must stay inside the state directory)".into());
    }
    if path.contains('\0') || path.contains('\\') {
        return Err("NUL or backslash in the path: refused".into());
    }
    let segs: Vec<&str> = path.split('/').collect();
    if segs.contains(&"..") {
        return Err(
            "a `..` segment: refused (entries must stay inside the state directory)".into(),
        );
    }
    if segs.iter().any(|s| s.is_empty() || *s == ".") {
        return Err("an empty or `.` segment: refused".into());
    }
    for c in Path::new(path).components() {
        if !matches!(c, Component::Normal(_)) {
            return Err("not a plain relative path: refused".into());
        }
    }
    match segs.as_slice() {
        [MANIFEST] => Ok(EntryKind::Manifest),
        [DB_ENTRY] => Ok(EntryKind::Database),
        ["files", "blobs", blob] if BlobId::parse(blob).is_ok() => Ok(EntryKind::FileBlob),
        ["programs", id, _, ..] if ProgramId::parse(id).is_ok() => Ok(EntryKind::ProgramFile),
        _ => Err(
            "not a place a backup writes (localhostd.db, files/blobs/<blob>, programs/<id>/…): refused"
                .into(),
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// Creating.

/// A finished backup. `completed_at` is the hook for the last-success metric.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Created {
    pub id: String,
    /// When the database copy was taken.
    pub created: String,
    /// When the archive was complete (renamed into place).
    pub completed: String,
    /// The archive's size in bytes.
    pub size: u64,
    /// Entries besides the manifest (the database, blobs, program files).
    pub entries: usize,
    /// Uncompressed bytes of those entries.
    pub data_bytes: u64,
    pub files: u64,
    pub programs: u64,
    pub schema_version: i64,
    pub duration_ms: u64,
    /// Files whose metadata exists but whose blob was already missing (not in the backup).
    pub missing_blobs: Vec<String>,
    #[serde(skip)]
    pub completed_at: SystemTime,
}

impl Created {
    /// Seconds since the epoch at completion (what `localhostd_backup_last_success_timestamp_seconds` shows).
    pub fn completed_unix_seconds(&self) -> f64 {
        self.completed_at
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    }
}

/// Where a backup reads from.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The live database file.
    pub db: PathBuf,
    /// `$STATE_DIRECTORY/files/blobs`.
    pub blobs: PathBuf,
    /// `$STATE_DIRECTORY/programs`.
    pub programs: PathBuf,
}

impl Sources {
    pub fn in_state_dir(state_dir: &Path) -> Sources {
        Sources {
            db: state_dir.join(DB_FILE),
            blobs: state_dir.join(FILES_DIR).join(BLOBS_DIR),
            programs: state_dir.join(PROGRAMS_DIR),
        }
    }
}

/// Reads through to a SHA-256, counting bytes.
struct Hashing<R> {
    inner: R,
    hasher: Option<Sha256>,
    n: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let k = self.inner.read(buf)?;
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..k]);
        }
        self.n += k as u64;
        Ok(k)
    }
}

/// Removes a file when dropped unless disarmed.
struct TempPath(Option<PathBuf>);

impl Drop for TempPath {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = remove_path(&p);
        }
    }
}

/// Opens a regular file without following a symlink at its last component.
fn open_nofollow(p: &Path) -> io::Result<File> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(p)?;
    if !f.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok(f)
}

/// Makes a backup of `src` in `dir` (created if missing) with gzip `level`. Blocking. Blob
/// removals wait while it runs (`pins`). `cancel` stops it early (the temp file is removed).
pub fn create(
    src: &Sources,
    dir: &Path,
    level: u32,
    pins: &Arc<BlobPins>,
    cancel: &AtomicBool,
) -> Result<Created> {
    let started = std::time::Instant::now();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_ctx(format!("cannot create {}", dir.display())))?;
    clean_temps(dir)?;
    let _pin = pins.pin();
    let created_at = SystemTime::now();
    let id = new_id(created_at)?;

    // 1. The database, as one consistent snapshot.
    let db_tmp = dir.join(format!("{TMP_PREFIX}{id}.db"));
    let _db_tmp_guard = TempPath(Some(db_tmp.clone()));
    let (schema_version, blobs, program_ids) = snapshot_db(&src.db, &db_tmp)?;

    // 2. The archive.
    let tmp = dir.join(format!("{TMP_PREFIX}{id}{SUFFIX}"));
    let mut tmp_guard = TempPath(Some(tmp.clone()));
    let out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_ctx(format!("cannot create {}", tmp.display())))?;
    let gz = flate2::write::GzEncoder::new(
        BufWriter::with_capacity(IO_BUF, out),
        flate2::Compression::new(level),
    );
    let mut tar = tar::Builder::new(gz);
    tar.follow_symlinks(false);
    let mtime = created_at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut entries: Vec<ManifestEntry> = Vec::new();
    let write_err = |what: &str| io_ctx(format!("cannot write {} ({what})", tmp.display()));
    let mut add = |tar: &mut tar::Builder<_>, path: &str, file: File, mode: u32| -> Result<()> {
        if cancel.load(Ordering::Relaxed) {
            return Err(BackupError::Conflict(
                "the backup was cancelled (the daemon is stopping)".into(),
            ));
        }
        let size = file
            .metadata()
            .map_err(io_ctx(format!("cannot stat {path}")))?
            .len();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(size);
        h.set_mode(mode);
        h.set_mtime(mtime);
        h.set_uid(0);
        h.set_gid(0);
        let mut r = Hashing {
            inner: BufReader::with_capacity(IO_BUF, file).take(size),
            hasher: Some(Sha256::new()),
            n: 0,
        };
        tar.append_data(&mut h, path, &mut r)
            .map_err(write_err(path))?;
        if r.n != size {
            return Err(BackupError::Internal(format!(
                "{path} changed size while it was read"
            )));
        }
        let sha = r.hasher.take().map(|h| hex::encode(h.finalize()));
        entries.push(ManifestEntry {
            path: path.to_owned(),
            size,
            sha256: sha.unwrap_or_default(),
        });
        Ok(())
    };
    let db_file = File::open(&db_tmp).map_err(io_ctx("cannot reopen the database copy"))?;
    add(&mut tar, DB_ENTRY, db_file, 0o600)?;

    let mut missing_blobs = Vec::new();
    let mut data_files = 0u64;
    for (path, blob) in &blobs {
        // Beneath `blobs/`, never through a symlink.
        match crate::store::stored::open_beneath(&src.blobs, blob.as_str()) {
            Ok(f) => {
                add(&mut tar, &format!("files/blobs/{blob}"), f, 0o600)?;
                data_files += 1;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                tracing::error!(
                    path,
                    blob = blob.as_str(),
                    "backup: the file's blob is missing; not in the backup"
                );
                missing_blobs.push(path.clone());
            }
            Err(e) => return Err(io_ctx(format!("cannot read the blob of {path}"))(e)),
        }
    }
    for pid in &program_ids {
        // A delete in progress renames the directory to `.del-<id>` before its row goes (and
        // back if that fails): hold the directory open and read through the descriptor, which
        // follows it across renames (its removal waits for the pin).
        let dir_fd = open_program_dir(&src.programs, pid)?;
        let root = PathBuf::from(format!("/proc/self/fd/{}", dir_fd.as_raw_fd()));
        let mut files = Vec::new();
        walk(&root, Path::new(""), &mut files)?;
        files.sort();
        for rel in files {
            let p = root.join(&rel);
            let f = open_nofollow(&p)
                .map_err(io_ctx(format!("cannot read program file {}", p.display())))?;
            let mode = f
                .metadata()
                .map(|m| if m.mode() & 0o100 != 0 { 0o755 } else { 0o644 })
                .unwrap_or(0o644);
            add(
                &mut tar,
                &format!("programs/{pid}/{}", rel.to_string_lossy()),
                f,
                mode,
            )?;
        }
    }

    let data_bytes = entries.iter().map(|e| e.size).sum();
    let entry_count = entries.len();
    let manifest = Manifest {
        format: FORMAT_VERSION,
        daemon_version: env!("CARGO_PKG_VERSION").to_owned(),
        created: rfc3339_at(created_at),
        schema_version,
        entries,
    };
    let json = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| BackupError::Internal(format!("manifest: {e}")))?;
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(json.len() as u64);
    h.set_mode(0o600);
    h.set_mtime(mtime);
    tar.append_data(&mut h, MANIFEST, json.as_slice())
        .map_err(write_err(MANIFEST))?;
    let gz = tar.into_inner().map_err(write_err("end of archive"))?;
    let buf = gz.finish().map_err(write_err("gzip trailer"))?;
    let out = buf
        .into_inner()
        .map_err(|e| write_err("flush")(e.into_error()))?;
    out.sync_all().map_err(write_err("fsync"))?;
    let size = out.metadata().map(|m| m.len()).unwrap_or(0);
    drop(out);
    let final_path = dir.join(format!("{id}{SUFFIX}"));
    std::fs::rename(&tmp, &final_path).map_err(io_ctx(format!(
        "cannot rename into {}",
        final_path.display()
    )))?;
    tmp_guard.0 = None;
    sync_dir(dir)?;
    let completed_at = SystemTime::now();
    Ok(Created {
        id,
        created: rfc3339_at(created_at),
        completed: rfc3339_at(completed_at),
        size,
        entries: entry_count,
        data_bytes,
        files: data_files,
        programs: program_ids.len() as u64,
        schema_version,
        duration_ms: started.elapsed().as_millis() as u64,
        missing_blobs,
        completed_at,
    })
}

/// Opens program `pid`'s directory, at `<pid>` or, while a delete is in progress, `.del-<pid>`.
fn open_program_dir(programs: &Path, pid: &ProgramId) -> Result<File> {
    let open = |p: PathBuf| {
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(p)
    };
    let mut last = None;
    for _ in 0..3 {
        for p in [
            pid.path_in(programs),
            programs.join(format!("{PROGRAMS_TRASH_PREFIX}{pid}")),
        ] {
            match open(p) {
                Ok(f) => return Ok(f),
                Err(e) if e.kind() == io::ErrorKind::NotFound => last = Some(e),
                Err(e) => return Err(io_ctx(format!("cannot open program {pid}"))(e)),
            }
        }
    }
    Err(io_ctx(format!("cannot open program {pid}"))(
        last.unwrap_or_else(|| io::Error::from(io::ErrorKind::NotFound)),
    ))
}

/// Regular files under `root` (relative paths), not following symlinks; anything else is
/// skipped with a warning (the program store never makes such entries).
fn walk(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let dir = root.join(rel);
    let rd = std::fs::read_dir(&dir).map_err(io_ctx(format!("cannot read {}", dir.display())))?;
    for e in rd {
        let e = e.map_err(io_ctx(format!("cannot read {}", dir.display())))?;
        let ft = e
            .file_type()
            .map_err(io_ctx(format!("cannot stat {}", e.path().display())))?;
        let r = rel.join(e.file_name());
        if ft.is_dir() {
            walk(root, &r, out)?;
        } else if ft.is_file() {
            out.push(r);
        } else {
            tracing::warn!(path = %e.path().display(), "backup: not a regular file or directory; skipped (symlinks are never followed)");
        }
    }
    Ok(())
}

type Snapshot = (i64, Vec<(String, BlobId)>, Vec<ProgramId>);

/// Copies the database at `db` into `dest` in one step of SQLite's online backup (a single
/// read transaction: a consistent snapshot that does not block the writer), then reads from
/// the copy its schema version, the files' blobs and the program ids.
fn snapshot_db(db: &Path, dest: &Path) -> Result<Snapshot> {
    if !db.exists() {
        return Err(BackupError::NotFound(format!(
            "no database at {}",
            db.display()
        )));
    }
    let src = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    src.busy_timeout(Duration::from_secs(10))?;
    let mut dst = Connection::open(dest)?;
    {
        let b = rusqlite::backup::Backup::new(&src, &mut dst)?;
        let mut tries = 0;
        loop {
            match b.step(-1)? {
                rusqlite::backup::StepResult::Done => break,
                _ if tries < 600 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
                _ => {
                    return Err(BackupError::Conflict(
                        "the database stayed locked for 30s; try again".into(),
                    ));
                }
            }
        }
    }
    drop(src);
    // A self-contained file: no -wal beside it in the archive or after a restore.
    let _: String = dst.pragma_update_and_check(None, "journal_mode", "DELETE", |r| r.get(0))?;
    let schema: i64 = dst.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let has_table = |name: &str| -> rusqlite::Result<bool> {
        dst.query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [name],
            |r| r.get::<_, i64>(0),
        )
        .map(|n| n > 0)
    };
    let mut blobs = Vec::new();
    if has_table("files")? {
        let mut st = dst.prepare("SELECT path, blob FROM files ORDER BY blob")?;
        blobs = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<Vec<(String, String)>>>()?;
    }
    let mut programs = Vec::new();
    if has_table("programs")? {
        let mut st = dst.prepare("SELECT id FROM programs ORDER BY id")?;
        programs = st
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<String>>>()?;
    }
    let blobs = blobs
        .into_iter()
        .map(|(path, b)| match BlobId::parse(&b) {
            Ok(id) => Ok((path, id)),
            Err(e) => Err(BackupError::Internal(format!(
                "the files table names {e} for {path}"
            ))),
        })
        .collect::<Result<Vec<_>>>()?;
    let programs = programs
        .iter()
        .map(|p| {
            ProgramId::parse(p)
                .map_err(|e| BackupError::Internal(format!("the programs table holds {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    dst.close().map_err(|(_, e)| BackupError::Db(e))?;
    File::open(dest)
        .and_then(|f| f.sync_all())
        .map_err(io_ctx("cannot sync the database copy"))?;
    Ok((schema, blobs, programs))
}

// ---------------------------------------------------------------------------------------------
// Reading: verify and extract.

/// What a verification found.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Verified {
    /// The backup's id, or the file's path for `--file`.
    pub backup: String,
    /// Every byte re-read and every SHA-256 recomputed (else: structure, sizes and gzip CRC).
    pub read_data: bool,
    pub entries: usize,
    pub data_bytes: u64,
    pub created: String,
    pub daemon_version: String,
    pub schema_version: i64,
    pub format: u32,
}

/// Walks the archive at `path`: every entry's path and type against the layout, its bytes
/// through (hashed when `hash`), the manifest against what was seen. With `extract_to`, each
/// entry's bytes are written there (at its path) instead of discarded. Returns the manifest.
fn walk_archive(
    path: &Path,
    label: &str,
    hash: bool,
    extract_to: Option<&Path>,
) -> Result<(Manifest, u64)> {
    let file = File::open(path).map_err(io_ctx(format!("cannot open {}", path.display())))?;
    let gz = flate2::read::GzDecoder::new(BufReader::with_capacity(IO_BUF, file));
    let mut archive = tar::Archive::new(gz);
    let mut walk = Walk {
        label,
        hash,
        extract_to,
        seen: Vec::new(),
        names: HashSet::new(),
        manifest: None,
    };
    let entries = archive
        .entries()
        .map_err(|e| walk.corrupt("(the first entry)", e.to_string()))?;
    let mut buf = vec![0u8; IO_BUF];
    for entry in entries {
        let (entry, name) = walk.read_entry(entry)?;
        let (class, size) = walk.classify_entry(&entry, &name)?;
        if class == EntryKind::Manifest {
            walk.manifest = Some(walk.read_manifest(entry, &name, size)?);
            continue;
        }
        let seen = walk.copy_entry(entry, name, size, &mut buf)?;
        walk.seen.push(seen);
    }
    drop(buf);
    // The rest of the gzip stream: its CRC-32 and length are checked when it ends.
    // A bad checksum is reported after the entries' hashes, which name the entry.
    let mut rest = archive.into_inner();
    let trailer = io::copy(&mut rest, &mut io::sink()).map_err(|e| {
        walk.corrupt(
            &format!("(gzip trailer after {})", walk.after()),
            describe(&e),
        )
    });
    let Some(manifest) = walk.manifest.take() else {
        trailer?;
        return Err(walk.corrupt(
            MANIFEST,
            "is missing: the archive is incomplete (truncated, or not a localhostd backup)".into(),
        ));
    };
    walk.check_against(&manifest)?;
    trailer?;
    if !walk.names.contains(DB_ENTRY) {
        return Err(walk.corrupt(DB_ENTRY, "is missing from the archive".into()));
    }
    let bytes = walk.seen.iter().map(|(_, s, _)| s).sum();
    Ok((manifest, bytes))
}

/// The decompressed stream an archive's entries are read from.
type Gz = flate2::read::GzDecoder<BufReader<File>>;

/// A regular entry as walked: its path, its size and (when hashed) its SHA-256.
type Seen = (String, u64, Option<String>);

/// One walk through an archive: how it treats entries and what it has seen so far (which
/// also names the place of an error that has no entry name).
struct Walk<'a> {
    label: &'a str,
    hash: bool,
    extract_to: Option<&'a Path>,
    seen: Vec<Seen>,
    names: HashSet<String>,
    manifest: Option<Manifest>,
}

impl Walk<'_> {
    fn corrupt(&self, entry: &str, reason: String) -> BackupError {
        BackupError::Corrupt {
            archive: self.label.to_owned(),
            entry: entry.to_owned(),
            reason,
        }
    }

    /// Where the walk is, for an error before an entry's name is known.
    fn after(&self) -> String {
        match (self.seen.last(), self.manifest.is_some()) {
            (_, true) => format!("(after {MANIFEST})"),
            (Some((p, _, _)), false) => format!("(after {p})"),
            (None, false) => "(the first entry)".to_owned(),
        }
    }

    /// The next entry and its path.
    fn read_entry<'e>(
        &self,
        entry: io::Result<tar::Entry<'e, Gz>>,
    ) -> Result<(tar::Entry<'e, Gz>, String)> {
        let entry = entry.map_err(|e| self.corrupt(&self.after(), describe(&e)))?;
        let name = String::from_utf8(entry.path_bytes().into_owned())
            .map_err(|_| self.corrupt(&self.after(), "the entry's path is not UTF-8".into()))?;
        Ok((entry, name))
    }

    /// What the entry is by its path, and its size: only regular files on the layout's paths,
    /// none after the manifest, none twice.
    fn classify_entry(
        &mut self,
        entry: &tar::Entry<'_, Gz>,
        name: &str,
    ) -> Result<(EntryKind, u64)> {
        let kind = entry.header().entry_type();
        if kind != tar::EntryType::Regular {
            let what = match kind {
                tar::EntryType::Symlink => "a symbolic link".to_owned(),
                tar::EntryType::Link => "a hard link".to_owned(),
                tar::EntryType::Directory => "a directory".to_owned(),
                tar::EntryType::Char | tar::EntryType::Block => "a device".to_owned(),
                tar::EntryType::Fifo => "a FIFO".to_owned(),
                other => format!("of type {:?}", other.as_byte() as char),
            };
            return Err(self.corrupt(
                name,
                format!("is {what}; a backup holds only regular files: refused"),
            ));
        }
        let class = classify(name).map_err(|r| self.corrupt(name, r))?;
        if self.manifest.is_some() {
            return Err(self.corrupt(name, format!("comes after {MANIFEST}: refused")));
        }
        if !self.names.insert(name.to_owned()) {
            return Err(self.corrupt(name, "appears twice: refused".into()));
        }
        let size = entry
            .header()
            .size()
            .map_err(|e| self.corrupt(name, format!("bad size in its header: {e}")))?;
        Ok((class, size))
    }

    /// The manifest entry, parsed (at most `MAX_MANIFEST` bytes).
    fn read_manifest(
        &self,
        mut entry: tar::Entry<'_, Gz>,
        name: &str,
        size: u64,
    ) -> Result<Manifest> {
        if size > MAX_MANIFEST {
            return Err(self.corrupt(name, format!("is {size} bytes: too large")));
        }
        let mut json = Vec::with_capacity(size as usize);
        (&mut entry)
            .take(MAX_MANIFEST)
            .read_to_end(&mut json)
            .map_err(|e| self.corrupt(name, describe(&e)))?;
        serde_json::from_slice(&json)
            .map_err(|e| self.corrupt(name, format!("is not a valid manifest: {e}")))
    }

    /// Reads a data entry's bytes through: hashed when the walk hashes, written to its file
    /// when it extracts (then synced), else discarded; its length checked against its header.
    fn copy_entry(
        &self,
        mut entry: tar::Entry<'_, Gz>,
        name: String,
        size: u64,
        buf: &mut [u8],
    ) -> Result<Seen> {
        let mut out = match self.extract_to {
            Some(root) => Some(
                create_extracted(root, &name, entry.header().mode().unwrap_or(0o600)).map_err(
                    |e| match e {
                        BackupError::Io { context, source } => BackupError::Io {
                            context: format!("{name}: {context}"),
                            source,
                        },
                        other => other,
                    },
                )?,
            ),
            None => None,
        };
        let mut hasher = self.hash.then(Sha256::new);
        let mut n: u64 = 0;
        loop {
            let k = match entry.read(buf) {
                Ok(0) => break,
                Ok(k) => k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.corrupt(&name, describe(&e))),
            };
            n += k as u64;
            if let Some(h) = &mut hasher {
                h.update(&buf[..k]);
            }
            if let Some(f) = &mut out {
                f.write_all(&buf[..k])
                    .map_err(io_ctx(format!("cannot write the restored {name}")))?;
            }
        }
        if n != size {
            return Err(self.corrupt(
                &name,
                format!("holds {n} bytes, its header says {size} (truncated?)"),
            ));
        }
        if let Some(f) = out {
            let f = f
                .into_inner()
                .map_err(|e| io_ctx(format!("cannot write the restored {name}"))(e.into_error()))?;
            f.sync_all()
                .map_err(io_ctx(format!("cannot sync the restored {name}")))?;
        }
        Ok((name, n, hasher.map(|h| hex::encode(h.finalize()))))
    }

    /// The manifest against what was seen: its format, every entry listed with its size and
    /// (when hashed) its SHA-256, every listed entry present.
    fn check_against(&self, manifest: &Manifest) -> Result<()> {
        if manifest.format != FORMAT_VERSION {
            return Err(BackupError::Unsupported(format!(
                "{}: archive format {} is not the format {FORMAT_VERSION} this localhostd reads",
                self.label, manifest.format
            )));
        }
        let listed: BTreeMap<&str, &ManifestEntry> = manifest
            .entries
            .iter()
            .map(|e| (e.path.as_str(), e))
            .collect();
        for (name, size, sha) in &self.seen {
            let Some(m) = listed.get(name.as_str()) else {
                return Err(self.corrupt(name, format!("is not listed in {MANIFEST}")));
            };
            if m.size != *size {
                return Err(self.corrupt(
                    name,
                    format!("holds {size} bytes, the manifest says {}", m.size),
                ));
            }
            if let Some(sha) = sha
                && !sha.eq_ignore_ascii_case(&m.sha256)
            {
                return Err(self.corrupt(
                    name,
                    format!("SHA-256 is {sha}, the manifest says {}", m.sha256),
                ));
            }
        }
        for m in &manifest.entries {
            if !self.names.contains(&m.path) {
                return Err(self.corrupt(
                    &m.path,
                    format!("is listed in {MANIFEST} but missing from the archive"),
                ));
            }
        }
        Ok(())
    }
}

fn describe(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => {
            "the archive ends in the middle of it (truncated)".to_owned()
        }
        _ => format!("cannot be read: {e} (the archive is damaged)"),
    }
}

/// Creates the file for entry `name` under `root` (directories as needed, never following
/// anything: `root` is a directory this restore made, and every path was classified first).
fn create_extracted(root: &Path, name: &str, mode: u32) -> Result<BufWriter<File>> {
    let mode = if !name.starts_with("programs/") {
        0o600
    } else if mode & 0o100 != 0 {
        0o755
    } else {
        0o644
    };
    let target = root.join(name);
    if let Some(parent) = target.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .map_err(io_ctx(format!("cannot create {}", parent.display())))?;
    }
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(mode)
        .open(&target)
        .map_err(io_ctx(format!("cannot create {}", target.display())))?;
    Ok(BufWriter::with_capacity(IO_BUF, f))
}

/// Verifies the archive at `path` (`label` names it in errors): structure, sizes and the gzip
/// checksum; with `read_data`, every entry's SHA-256 too. Blocking.
pub fn verify(path: &Path, label: &str, read_data: bool) -> Result<Verified> {
    let (m, bytes) = walk_archive(path, label, read_data, None)?;
    Ok(Verified {
        backup: label.to_owned(),
        read_data,
        entries: m.entries.len(),
        data_bytes: bytes,
        created: m.created,
        daemon_version: m.daemon_version,
        schema_version: m.schema_version,
        format: m.format,
    })
}

// ---------------------------------------------------------------------------------------------
// Restoring (offline).

/// A finished restore.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Restored {
    pub backup: String,
    pub entries: usize,
    pub data_bytes: u64,
    pub created: String,
    pub schema_version: i64,
}

/// Replaces the state in `state_dir` by the backup at `archive`. The caller holds the state
/// lock (no daemon runs). Everything is extracted and checked before anything in the state
/// directory changes; a failure at any point leaves the old state as it was. Blocking.
pub fn restore(state_dir: &Path, archive: &Path, label: &str) -> Result<Restored> {
    if let Some(tag) = recover_restore(state_dir)? {
        tracing::warn!(tag, "finished a restore that a crash had interrupted");
    }
    let mut r = [0u8; 4];
    getrandom::fill(&mut r).map_err(|e| BackupError::Internal(format!("no randomness: {e}")))?;
    let tag = hex::encode(r);
    let staging = state_dir.join(format!("{RESTORE_NEW}{tag}"));
    let staging_guard = TempPath(Some(staging.clone()));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&staging)
        .map_err(io_ctx(format!("cannot create {}", staging.display())))?;

    // 1. Extract and check every entry against the manifest.
    let (manifest, bytes) = walk_archive(archive, label, true, Some(&staging))?;
    if manifest.schema_version > crate::store::db::SCHEMA_VERSION {
        return Err(BackupError::Unsupported(format!(
            "{label}: its database has schema version {}, this localhostd knows up to {}: restore it with a newer release",
            manifest.schema_version,
            crate::store::db::SCHEMA_VERSION
        )));
    }
    // 2. The database itself, and what it refers to.
    let files_dir = staging.join(FILES_DIR);
    let programs_dir = staging.join(PROGRAMS_DIR);
    for d in [
        files_dir.join(BLOBS_DIR),
        files_dir.join(FILES_TMP_DIR),
        programs_dir.clone(),
    ] {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&d)
            .map_err(io_ctx(format!("cannot create {}", d.display())))?;
    }
    for d in [&files_dir, &programs_dir] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700))
            .map_err(io_ctx(format!("cannot set the mode of {}", d.display())))?;
    }
    check_restored_db(&staging, label)?;
    sync_tree(&staging)?;

    // 3. Swap: the old state aside, the new one in, the database last. The journal names
    // this restore first, so a crash in the middle is finished (forward: the new state is
    // complete and checked) by the next restore or the daemon's next start.
    let old = state_dir.join(format!("{RESTORE_OLD}{tag}"));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&old)
        .map_err(io_ctx(format!("cannot create {}", old.display())))?;
    write_journal(state_dir, &tag)?;
    if let Err(e) = swap_forward(state_dir, &staging, &old) {
        // An error (not a crash): put the old state back, item by item.
        let back = swap_back(state_dir, &staging, &old);
        if back.is_ok() {
            let _ = std::fs::remove_dir(&old);
            let _ = std::fs::remove_file(state_dir.join(RESTORE_JOURNAL));
            let _ = sync_dir(state_dir);
        }
        let what = match back {
            Ok(()) => "the old state was put back".to_owned(),
            Err(b) => format!(
                "putting the old state back failed too ({b}); the next restore or daemon start finishes this restore"
            ),
        };
        return Err(io_ctx(format!(
            "cannot swap the restored state into {} ({what})",
            state_dir.display()
        ))(e));
    }
    finish_swap(state_dir, &tag)?;
    drop(staging_guard);
    Ok(Restored {
        backup: label.to_owned(),
        entries: manifest.entries.len(),
        data_bytes: bytes,
        created: manifest.created,
        schema_version: manifest.schema_version,
    })
}

/// What a restore moves into the state directory, the database last.
const SWAPPED: [&str; 3] = [FILES_DIR, PROGRAMS_DIR, DB_ENTRY];

fn write_journal(state_dir: &Path, tag: &str) -> Result<()> {
    let tmp = state_dir.join(format!("{RESTORE_JOURNAL}.tmp"));
    let ctx = || format!("cannot write {}", tmp.display());
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_ctx(ctx()))?;
    f.write_all(tag.as_bytes()).map_err(io_ctx(ctx()))?;
    f.sync_all().map_err(io_ctx(ctx()))?;
    std::fs::rename(&tmp, state_dir.join(RESTORE_JOURNAL)).map_err(io_ctx(ctx()))?;
    sync_dir(state_dir)
}

/// Moves each item still in `staging` into place, the current one (and, for the database, its
/// `-wal` and `-shm`) into `old` first. Idempotent: run again after a crash, it finishes.
fn swap_forward(state_dir: &Path, staging: &Path, old: &Path) -> io::Result<()> {
    let exists = |p: &Path| std::fs::symlink_metadata(p).is_ok();
    for it in SWAPPED {
        if !exists(&staging.join(it)) {
            continue;
        }
        let mut aside = vec![it.to_owned()];
        if it == DB_ENTRY {
            aside.push(format!("{DB_ENTRY}-wal"));
            aside.push(format!("{DB_ENTRY}-shm"));
        }
        for a in &aside {
            if exists(&state_dir.join(a)) {
                if exists(&old.join(a)) {
                    return Err(io::Error::other(format!(
                        "{a} is both in the state directory and set aside in {}",
                        old.display()
                    )));
                }
                std::fs::rename(state_dir.join(a), old.join(a))?;
            }
        }
        std::fs::rename(staging.join(it), state_dir.join(it))?;
    }
    crate::util::fs::sync_dir(state_dir)
}

/// Undoes [`swap_forward`]: what was moved in goes back to `staging`, what was set aside
/// comes back.
fn swap_back(state_dir: &Path, staging: &Path, old: &Path) -> io::Result<()> {
    let exists = |p: &Path| std::fs::symlink_metadata(p).is_ok();
    for it in SWAPPED.iter().rev() {
        let aside_all = [it.to_string(), format!("{it}-wal"), format!("{it}-shm")];
        if !exists(&staging.join(it)) && exists(&state_dir.join(it)) {
            std::fs::rename(state_dir.join(it), staging.join(it))?;
        }
        for a in aside_all {
            if exists(&old.join(&a)) {
                std::fs::rename(old.join(&a), state_dir.join(&a))?;
            }
        }
    }
    crate::util::fs::sync_dir(state_dir)
}

/// After a complete swap: the old state and the journal go.
fn finish_swap(state_dir: &Path, tag: &str) -> Result<()> {
    let old = state_dir.join(format!("{RESTORE_OLD}{tag}"));
    let done = state_dir.join(format!("{RESTORE_DONE}{tag}"));
    if std::fs::symlink_metadata(&old).is_ok() {
        std::fs::rename(&old, &done).map_err(io_ctx(format!("cannot rename {}", old.display())))?;
    }
    std::fs::remove_file(state_dir.join(RESTORE_JOURNAL))
        .or_else(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                Ok(())
            } else {
                Err(e)
            }
        })
        .map_err(io_ctx("cannot remove the restore journal"))?;
    sync_dir(state_dir)?;
    let _ = remove_path(&done);
    let _ = remove_path(&state_dir.join(format!("{RESTORE_NEW}{tag}")));
    Ok(())
}

/// Before the state directory is used (daemon start, a restore): finishes a restore a crash
/// interrupted in its swap (returns its tag), and removes what an interrupted extraction or
/// clean-up left. A non-empty `.restore-old-*` without a journal is never touched: a restore
/// refuses to run while one exists.
pub fn recover_restore(state_dir: &Path) -> Result<Option<String>> {
    let journal = state_dir.join(RESTORE_JOURNAL);
    let mut finished = None;
    match std::fs::read_to_string(&journal) {
        Ok(tag) => {
            let tag = tag.trim().to_owned();
            if tag.is_empty() || !tag.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(BackupError::Internal(format!(
                    "{} does not name a restore",
                    journal.display()
                )));
            }
            let staging = state_dir.join(format!("{RESTORE_NEW}{tag}"));
            let old = state_dir.join(format!("{RESTORE_OLD}{tag}"));
            if std::fs::symlink_metadata(&staging).is_ok() {
                swap_forward(state_dir, &staging, &old).map_err(io_ctx(format!(
                    "cannot finish the interrupted restore in {}",
                    state_dir.display()
                )))?;
            }
            finish_swap(state_dir, &tag)?;
            finished = Some(tag);
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_ctx(format!("cannot read {}", journal.display()))(e)),
    }
    for e in std::fs::read_dir(state_dir)
        .map_err(io_ctx(format!("cannot read {}", state_dir.display())))?
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(RESTORE_NEW) || name.starts_with(RESTORE_DONE) {
            remove_path(&e.path())
                .map_err(io_ctx(format!("cannot remove {}", e.path().display())))?;
        } else if name.starts_with(RESTORE_OLD) && std::fs::remove_dir(e.path()).is_err() {
            return Err(BackupError::Conflict(format!(
                "{} holds state set aside by a restore whose journal is gone: move its contents \
                 back into {} (or remove it if the current state is good) and try again",
                e.path().display(),
                state_dir.display()
            )));
        }
    }
    Ok(finished)
}

/// `integrity_check` of the extracted database; every name in it that the daemon turns into a
/// path (blob ids, program ids, program file lists and main files) valid, else the archive
/// is refused naming the value; every program it names present.
fn check_restored_db(staging: &Path, label: &str) -> Result<()> {
    let bad = |reason: String| BackupError::Corrupt {
        archive: label.to_owned(),
        entry: DB_ENTRY.to_owned(),
        reason,
    };
    let db = staging.join(DB_ENTRY);
    let c = Connection::open_with_flags(&db, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
    let check: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(|e| bad(format!("is not a usable database: {e}")))?;
    if check != "ok" {
        return Err(bad(format!("fails integrity_check: {check}")));
    }
    let tables: HashSet<String> = c
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    if tables.contains("files") {
        let mut st = c.prepare("SELECT path, blob FROM files")?;
        let rows = st
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        for (path, blob) in rows {
            let id = BlobId::parse(&blob)
                .map_err(|e| bad(format!("names {e} for the file {path:?}: refused")))?;
            if !id
                .path_in(&staging.join(FILES_DIR).join(BLOBS_DIR))
                .is_file()
            {
                tracing::warn!(
                    path,
                    "restore: the file's blob is not in the backup (it was missing when the backup was made)"
                );
            }
        }
    }
    if tables.contains("programs") {
        let mut st = c.prepare("SELECT id, files, main FROM programs")?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        for (id, files, main) in rows {
            let pid = ProgramId::parse(&id).map_err(|e| bad(format!("names {e}: refused")))?;
            let files: Vec<crate::store::programs::FileEntry> = serde_json::from_str(&files)
                .map_err(|e| {
                    bad(format!(
                        "has a file list for program {pid} that is not one ({e}): refused"
                    ))
                })?;
            for f in &files {
                ProgramPath::parse(&f.path)
                    .map_err(|e| bad(format!("lists {e} in program {pid}: refused")))?;
            }
            if let Some(m) = &main {
                ProgramPath::parse(m)
                    .map_err(|e| bad(format!("names as main of program {pid} {e}: refused")))?;
                if !files.iter().any(|f| &f.path == m) {
                    return Err(bad(format!(
                        "names as main of program {pid} {m:?}, not one of its files: refused"
                    )));
                }
            }
            if !pid.path_in(&staging.join(PROGRAMS_DIR)).is_dir() {
                return Err(bad(format!(
                    "names program {pid}, whose files are not in the archive"
                )));
            }
        }
    }
    c.close().map_err(|(_, e)| BackupError::Db(e))?;
    Ok(())
}

/// fsync of every directory under `root` (the files were synced as they were written).
fn sync_tree(root: &Path) -> Result<()> {
    sync_dir(root)?;
    let rd = std::fs::read_dir(root).map_err(io_ctx(format!("cannot read {}", root.display())))?;
    for e in rd.flatten() {
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            sync_tree(&e.path())?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Retention.

/// Which backups `prune` removes: those neither among the newest `keep_last` nor younger than
/// `keep_within` at `now`. The newest backup is always kept.
pub fn to_prune(
    backups: &[BackupInfo],
    keep_last: u64,
    keep_within: Duration,
    now: SystemTime,
) -> Vec<BackupInfo> {
    let mut newest_first: Vec<&BackupInfo> = backups.iter().collect();
    newest_first.sort_by(|a, b| b.id.cmp(&a.id));
    let keep_last = usize::try_from(keep_last.max(1)).unwrap_or(usize::MAX);
    newest_first
        .into_iter()
        .enumerate()
        .filter(|(i, b)| {
            let young = now
                .duration_since(b.created_at)
                .map(|age| age <= keep_within)
                .unwrap_or(true);
            *i >= keep_last && !young
        })
        .map(|(_, b)| b.clone())
        .collect()
}

/// Applies `backup.keep-last` and `backup.keep-within` in `dir`; returns what was removed.
pub fn prune(dir: &Path, cfg: &BackupConfig, now: SystemTime) -> Result<Vec<BackupInfo>> {
    let all = list(dir)?;
    let gone = to_prune(&all, cfg.keep_last, cfg.keep_within.get(), now);
    for b in &gone {
        std::fs::remove_file(&b.path)
            .map_err(io_ctx(format!("cannot remove {}", b.path.display())))?;
    }
    if !gone.is_empty() {
        sync_dir(dir)?;
    }
    Ok(gone)
}

// ---------------------------------------------------------------------------------------------
// The daemon's handle.

/// The running daemon's backups; cheap to clone.
#[derive(Clone)]
pub struct Backups {
    inner: Arc<Inner>,
}

struct Inner {
    state_dir: PathBuf,
    live: Arc<LiveConfig>,
    pins: Arc<BlobPins>,
    /// One backup at a time.
    running: AtomicBool,
    /// Set when the daemon stops: a backup in progress gives up (its temp file goes).
    cancel: AtomicBool,
    /// When the last backup this daemon made completed.
    last_success: Mutex<Option<SystemTime>>,
}

/// Clears `running` when dropped.
struct Running<'a>(&'a AtomicBool);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

impl Backups {
    pub fn new(state_dir: PathBuf, live: Arc<LiveConfig>, pins: Arc<BlobPins>) -> Backups {
        Backups {
            inner: Arc::new(Inner {
                state_dir,
                live,
                pins,
                running: AtomicBool::new(false),
                cancel: AtomicBool::new(false),
                last_success: Mutex::new(None),
            }),
        }
    }

    /// The backup directory in force.
    pub fn dir(&self) -> PathBuf {
        backup_dir(&self.inner.live.get().backup, &self.inner.state_dir)
    }

    async fn blocking<T: Send + 'static>(
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| BackupError::Internal(format!("backup task failed: {e}")))?
    }

    /// Startup: removes what an interrupted backup left.
    pub async fn recover(&self) -> Result<usize> {
        let dir = self.dir();
        Self::blocking(move || clean_temps(&dir)).await
    }

    /// Makes a backup now (one at a time: a second caller gets `Conflict`).
    pub async fn create(&self) -> Result<Created> {
        if self
            .inner
            .running
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return Err(BackupError::Conflict(
                "a backup is being made already; try again when it is done".into(),
            ));
        }
        let inner = self.inner.clone();
        let dir = self.dir();
        let level = inner.live.get().backup.compression_level;
        let created = Self::blocking(move || {
            let _running = Running(&inner.running);
            let src = Sources::in_state_dir(&inner.state_dir);
            create(&src, &dir, level, &inner.pins, &inner.cancel)
        })
        .await?;
        if let Ok(mut last) = self.inner.last_success.lock() {
            *last = Some(created.completed_at);
        }
        Ok(created)
    }

    /// The complete backups, oldest first.
    pub async fn list(&self) -> Result<Vec<BackupInfo>> {
        let dir = self.dir();
        Self::blocking(move || list(&dir)).await
    }

    pub async fn verify(&self, id: &str, read_data: bool) -> Result<Verified> {
        let dir = self.dir();
        let id = id.to_owned();
        Self::blocking(move || {
            let path = find(&dir, &id)?;
            verify(&path, &id, read_data)
        })
        .await
    }

    /// Restoring replaces the database the daemon holds open: it is done offline. Answers
    /// `NotFound` for an unknown id, else `Conflict` saying how.
    pub async fn restore(&self, id: &str) -> Result<Restored> {
        let dir = self.dir();
        let id2 = id.to_owned();
        Self::blocking(move || find(&dir, &id2).map(|_| ())).await?;
        Err(BackupError::Conflict(format!(
            "a restore replaces the database and the blobs this running daemon holds open, so it \
             runs with the service stopped: `systemctl stop localhostd.socket localhostd-admin.socket localhostd.service`, \
             then `STATE_DIRECTORY={} localhostd backup restore {id}`, then start the sockets again",
            self.inner.state_dir.display()
        )))
    }

    /// Applies the retention settings; returns what was removed.
    pub async fn prune(&self) -> Result<Vec<BackupInfo>> {
        let dir = self.dir();
        let cfg = self.inner.live.get().backup.clone();
        Self::blocking(move || prune(&dir, &cfg, SystemTime::now())).await
    }

    /// When the newest backup completed: the last one this daemon made, else the newest
    /// archive's modification time (made offline or before a restart). The hook for the
    /// `localhostd_backup_last_success_timestamp_seconds` gauge.
    pub fn last_success(&self) -> Option<SystemTime> {
        let mine = self.inner.last_success.lock().ok().and_then(|l| *l);
        let on_disk = list(&self.dir()).ok().and_then(|all| {
            all.iter()
                .filter_map(|b| std::fs::metadata(&b.path).and_then(|m| m.modified()).ok())
                .max()
        });
        mine.max(on_disk)
    }

    /// Makes a backup in progress give up (the daemon is stopping).
    pub fn cancel(&self) {
        self.inner.cancel.store(true, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn ids_round_trip_and_reject_junk() {
        let t = UNIX_EPOCH + Duration::from_secs(1_764_107_100);
        let id = new_id(t).unwrap();
        assert!(valid_id(&id), "{id}");
        assert_eq!(parse_id_time(&id), Some(t));
        for bad in [
            "",
            "../x",
            "20261125T214500Z",
            "20261125T214500Z-xyz",
            "2026112xT214500Z-1a2b3c4d",
            "20261125T214500Z-1a2b3c4d/..",
        ] {
            assert!(!valid_id(bad), "{bad}");
        }
    }

    #[test]
    fn hostile_entry_paths_are_refused() {
        for bad in [
            "/etc/passwd",
            "../evil",
            "files/../../evil",
            "files/blobs/../x",
            "files/blobs/a/b",
            "programs/0123456789abcdef",
            "programs/nothex/x",
            "localhostd.lock",
            "./localhostd.db",
            "files//blobs/x",
            "initial-admin-token",
        ] {
            assert!(classify(bad).is_err(), "{bad} accepted");
        }
        assert_eq!(classify("localhostd.db"), Ok(EntryKind::Database));
        assert_eq!(classify("manifest.json"), Ok(EntryKind::Manifest));
        assert_eq!(classify("files/blobs/0123abcd"), Ok(EntryKind::FileBlob));
        assert_eq!(
            classify("programs/0123456789abcdef/src/.env"),
            Ok(EntryKind::ProgramFile)
        );
    }

    fn info(id_secs: u64) -> BackupInfo {
        let t = UNIX_EPOCH + Duration::from_secs(id_secs);
        BackupInfo {
            id: new_id(t).unwrap(),
            created: rfc3339_at(t),
            size: 1,
            created_at: t,
            path: PathBuf::new(),
        }
    }

    #[test]
    fn prune_keeps_the_newest_and_the_young() {
        let day = 86_400;
        let now = UNIX_EPOCH + Duration::from_secs(100 * day);
        let all: Vec<BackupInfo> = (90..100).map(|d| info(d * day)).collect();
        // keep-last 3, keep-within 5 days: days 95..=99 are young; 97..99 are the newest three.
        let gone = to_prune(&all, 3, Duration::from_secs(5 * day), now);
        let gone_days: Vec<u64> = gone
            .iter()
            .map(|b| b.created_at.duration_since(UNIX_EPOCH).unwrap().as_secs() / day)
            .collect();
        assert_eq!(gone_days, vec![94, 93, 92, 91, 90]);
        // Nothing young, keep-last 0 still keeps the newest.
        let gone = to_prune(&all, 0, Duration::ZERO, now);
        assert_eq!(gone.len(), 9);
        assert!(!gone.iter().any(|b| b.id == all[9].id));
    }

    /// A state directory with an old state, a checked restore staged, the journal written:
    /// where a restore stands right before its swap.
    fn staged_restore() -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let st = d.path().to_owned();
        let tag = "0a0b0c0d";
        let staging = st.join(format!("{RESTORE_NEW}{tag}"));
        let old = st.join(format!("{RESTORE_OLD}{tag}"));
        for (root, v) in [(&st, "old"), (&staging, "new")] {
            std::fs::create_dir_all(root.join("files/blobs")).unwrap();
            std::fs::create_dir_all(root.join("programs/p")).unwrap();
            std::fs::write(root.join("files/blobs/b"), v).unwrap();
            std::fs::write(root.join("programs/p/main.sh"), v).unwrap();
            std::fs::write(root.join(DB_ENTRY), v).unwrap();
        }
        std::fs::write(st.join(format!("{DB_ENTRY}-wal")), "old").unwrap();
        std::fs::write(st.join(format!("{DB_ENTRY}-shm")), "old").unwrap();
        std::fs::create_dir(&old).unwrap();
        write_journal(&st, tag).unwrap();
        (d, st, staging, old)
    }

    /// The renames of a swap, in order, as (from, to).
    fn swap_steps(st: &Path, staging: &Path, old: &Path) -> Vec<(PathBuf, PathBuf)> {
        let wal = format!("{DB_ENTRY}-wal");
        let shm = format!("{DB_ENTRY}-shm");
        vec![
            (st.join("files"), old.join("files")),
            (staging.join("files"), st.join("files")),
            (st.join("programs"), old.join("programs")),
            (staging.join("programs"), st.join("programs")),
            (st.join(DB_ENTRY), old.join(DB_ENTRY)),
            (st.join(&wal), old.join(&wal)),
            (st.join(&shm), old.join(&shm)),
            (staging.join(DB_ENTRY), st.join(DB_ENTRY)),
        ]
    }

    fn state_is(st: &Path, v: &str) {
        for f in ["files/blobs/b", "programs/p/main.sh", DB_ENTRY] {
            assert_eq!(std::fs::read_to_string(st.join(f)).unwrap(), v, "{f}");
        }
    }

    #[test]
    fn a_swap_cut_by_a_crash_at_any_step_is_finished_forward_at_the_next_start() {
        for k in 0..=8 {
            let (_d, st, staging, old) = staged_restore();
            for (from, to) in swap_steps(&st, &staging, &old).into_iter().take(k) {
                std::fs::rename(from, to).unwrap();
            }
            assert_eq!(recover_restore(&st).unwrap().as_deref(), Some("0a0b0c0d"));
            state_is(&st, "new");
            assert!(
                !st.join(format!("{DB_ENTRY}-wal")).exists(),
                "old WAL left at step {k}"
            );
            let left: Vec<String> = std::fs::read_dir(&st)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with('.'))
                .collect();
            assert!(left.is_empty(), "step {k}: left {left:?}");
            // Nothing more to do the next time.
            assert_eq!(recover_restore(&st).unwrap(), None);
        }
    }

    #[test]
    fn a_swap_that_fails_at_any_step_is_put_back_exactly() {
        for k in 0..=8 {
            let (_d, st, staging, old) = staged_restore();
            for (from, to) in swap_steps(&st, &staging, &old).into_iter().take(k) {
                std::fs::rename(from, to).unwrap();
            }
            swap_back(&st, &staging, &old).unwrap();
            state_is(&st, "old");
            for f in [format!("{DB_ENTRY}-wal"), format!("{DB_ENTRY}-shm")] {
                assert_eq!(std::fs::read_to_string(st.join(f)).unwrap(), "old");
            }
            assert_eq!(std::fs::read_dir(&old).unwrap().count(), 0, "step {k}");
        }
    }

    #[test]
    fn state_set_aside_without_a_journal_is_never_removed() {
        let d = tempfile::tempdir().unwrap();
        let old = d.path().join(format!("{RESTORE_OLD}1234"));
        std::fs::create_dir(&old).unwrap();
        std::fs::write(old.join(DB_ENTRY), "precious").unwrap();
        std::fs::create_dir(d.path().join(format!("{RESTORE_NEW}99"))).unwrap();
        assert!(matches!(
            recover_restore(d.path()),
            Err(BackupError::Conflict(_))
        ));
        assert!(old.join(DB_ENTRY).exists());
    }
}
