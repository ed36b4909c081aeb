//! Importing a seed installation's `data/` folder (`localhostd import-seed`): its key-value
//! store (`storage.json`), its files (`files/` with `files_metadata.json`) and its programs
//! (`programs/` with `programs.json`), through the stores' own intake, in one step.
//!
//! The shapes of the seed's files are assumptions made from the seed's descriptions of its
//! stores (docs/seed-import.md); whatever does not fit is reported, never guessed at silently.
//! Every seed file is opened beneath the seed folder without following a symlink.
//!
//! All or nothing: the import runs against a copy of the database in a staging directory
//! (`programs/.import-seed-*`, which the daemon's start removes), with the file and program
//! stores rooted there too. Only when everything is staged are the new blobs and program
//! directories moved into the state directory, and then the copy of the database renamed over
//! the real one: that rename is the commit. A crash before it leaves the old database, and
//! blobs and program directories it does not name, which the daemon's startup recovery removes
//! (`Files::recover`, `Programs::sweep_orphans`). The caller holds the state directory's lock.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{AtFlags, OFlag, ResolveFlag};
use nix::sys::stat::{Mode, SFlag};
use std::sync::Arc;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::config::{Config, LiveConfig};
use crate::error::Error;
use crate::jobs::data::Data;
use crate::jobs::exec::Executor;
use crate::jobs::sandbox::Sandbox;
use crate::jobs::sandbox::beneath::open_beneath;
use crate::ops::metrics::Metrics;
use crate::store::audit::{Audit, Caller};
use crate::store::db::Db;
use crate::store::files::{Conditions, Files};
use crate::store::kv::{Cond, Kv, Op};
use crate::store::pins::BlobPins;
use crate::store::programs::{Programs, UploadMeta, valid_id};
use crate::store::stored::open_beneath_fd;
use crate::store::views::Views;
use crate::util::fs::sync_dir;
use crate::util::layout::{BLOBS_DIR, DB_FILE, FILES_DIR, MOUNTS_DIR, PROGRAMS_DIR};
use crate::util::time::parse_rfc3339;

/// The prefix of the staging directory in the state directory's `programs/` (the program
/// store removes every dot entry there when it opens, so a crash leaves nothing for long).
pub const STAGING_PREFIX: &str = ".import-seed-";
/// Largest seed JSON file read.
const MAX_JSON_BYTES: u64 = 64 << 20;
/// Bytes read at a time from a seed file.
const CHUNK: usize = 256 << 10;

/// Why the import could not be done at all (each item's trouble is in the [`Report`]).
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    NotSeed(String),
    #[error("{0}")]
    Io(String),
    #[error(transparent)]
    Store(#[from] Error),
}

fn io_ctx(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> SeedError {
    move |e| SeedError::Io(format!("{what}: {e}"))
}

/// What was imported, skipped (with why), in conflict, and not understood.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub source: String,
    pub dry_run: bool,
    /// The state directory was changed (false for a dry run, or when nothing was imported).
    pub committed: bool,
    pub imported: Counts,
    pub items: Vec<Item>,
    pub skipped: Vec<Item>,
    /// A name that already exists here (or twice in the seed): left as it is.
    pub conflicts: Vec<Item>,
    pub unknown_fields: Vec<UnknownField>,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Counts {
    pub keys: usize,
    pub files: usize,
    pub programs: usize,
}

/// One key, file or program of the seed.
#[derive(Debug, Clone, Serialize)]
pub struct Item {
    /// `key`, `file`, `program`, or `seed` (a whole seed file).
    pub kind: &'static str,
    pub name: String,
    /// Where it went (a program's id) or why it did not.
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct UnknownField {
    /// The seed file (`files_metadata.json`, `programs.json`).
    pub file: &'static str,
    /// The entry's key or index.
    pub entry: String,
    pub field: String,
}

impl Report {
    fn skip(&mut self, kind: &'static str, name: &str, why: impl Into<String>) {
        self.skipped.push(item(kind, name, why));
    }
    fn conflict(&mut self, kind: &'static str, name: &str, why: impl Into<String>) {
        self.conflicts.push(item(kind, name, why));
    }
    fn imported_total(&self) -> usize {
        self.imported.keys + self.imported.files + self.imported.programs
    }
}

fn item(kind: &'static str, name: &str, detail: impl Into<String>) -> Item {
    Item {
        kind,
        name: name.to_owned(),
        detail: detail.into(),
    }
}

/// Finds the seed's data folder: `PATH/data`, or `PATH` itself when it holds the seed's files.
pub fn data_folder(path: &Path) -> Result<SeedDir, SeedError> {
    let meta = std::fs::metadata(path)
        .map_err(|e| SeedError::NotFound(format!("{}: {e}", path.display())))?;
    if !meta.is_dir() {
        return Err(SeedError::NotFound(format!(
            "{} is not a directory",
            path.display()
        )));
    }
    let data = path.join("data");
    let dir = match std::fs::symlink_metadata(&data) {
        Ok(m) if m.file_type().is_symlink() => {
            return Err(SeedError::NotSeed(format!(
                "{} is a symlink; it is not followed (give its target instead)",
                data.display()
            )));
        }
        Ok(m) if m.is_dir() => data,
        _ => path.to_owned(),
    };
    let has = |n: &str| std::fs::symlink_metadata(dir.join(n)).is_ok();
    if !(has("storage.json") || has("files") || has("programs")) {
        return Err(SeedError::NotSeed(format!(
            "{} is not a seed data folder: it holds none of storage.json, files/, programs/",
            dir.display()
        )));
    }
    let fd = nix::fcntl::open(
        &dir,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        Mode::empty(),
    )
    .map_err(|e| SeedError::NotFound(format!("cannot open {}: {e}", dir.display())))?;
    Ok(SeedDir { fd, path: dir })
}

/// The seed data folder, held open: everything in it is reached through this descriptor
/// (beneath it, never following a symlink), so the import still reads it after it has become
/// the state directory's owner, who may not search the directories above it (`/root`, a home
/// directory): only the seed's own files and folders must be readable to that owner.
pub struct SeedDir {
    fd: OwnedFd,
    path: PathBuf,
}

/// What a seed entry is (not following a symlink).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
    Symlink,
    Other,
}

impl Kind {
    fn of(mode: libc::mode_t) -> Kind {
        match SFlag::from_bits_truncate(mode) & SFlag::S_IFMT {
            SFlag::S_IFDIR => Kind::Dir,
            SFlag::S_IFREG => Kind::File,
            SFlag::S_IFLNK => Kind::Symlink,
            _ => Kind::Other,
        }
    }
}

/// An entry of a seed directory.
struct Entry {
    name: String,
    kind: Kind,
    size: u64,
}

/// A folder of the seed (`files`, `programs`) whose methods take paths relative to it.
struct Under<'a> {
    seed: &'a SeedDir,
    base: &'static str,
}

impl SeedDir {
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn under(&self, base: &'static str) -> Under<'_> {
        Under { seed: self, base }
    }

    /// `lstat` of `rel` (a plain relative path whose directories were found to be ones).
    fn stat(&self, rel: &str) -> std::io::Result<(Kind, u64)> {
        let st = nix::sys::stat::fstatat(&self.fd, rel, AtFlags::AT_SYMLINK_NOFOLLOW)?;
        Ok((Kind::of(st.st_mode), u64::try_from(st.st_size).unwrap_or(0)))
    }

    /// Opens the regular file `rel` beneath the folder (no symlink anywhere, nothing outside).
    fn open_file(&self, rel: &str) -> std::io::Result<std::fs::File> {
        if !plain(rel) {
            return Err(std::io::Error::from_raw_os_error(libc::EXDEV));
        }
        open_beneath_fd(&self.fd, rel)
    }

    /// The entries of the directory `rel` beneath the folder (`""`: the folder), sorted by
    /// name, each as it is (a symlink is reported as one, never followed).
    fn list(&self, rel: &str) -> std::io::Result<Vec<Entry>> {
        let fd = if rel.is_empty() {
            nix::fcntl::openat(
                &self.fd,
                ".",
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )?
        } else {
            if !plain(rel) {
                return Err(std::io::Error::from_raw_os_error(libc::EXDEV));
            }
            open_beneath(
                &self.fd,
                rel,
                OFlag::O_RDONLY | OFlag::O_DIRECTORY,
                ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS,
            )?
        };
        let mut dir = nix::dir::Dir::from_fd(fd)?;
        let mut names = Vec::new();
        for e in dir.iter() {
            let name = e?.file_name().to_string_lossy().into_owned();
            if name != "." && name != ".." {
                names.push(name);
            }
        }
        names.sort();
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let st = nix::sys::stat::fstatat(&dir, name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW)?;
            out.push(Entry {
                name,
                kind: Kind::of(st.st_mode),
                size: u64::try_from(st.st_size).unwrap_or(0),
            });
        }
        Ok(out)
    }
}

impl Under<'_> {
    fn rel(&self, rel: &str) -> String {
        match (self.base, rel) {
            (base, "") => base.to_owned(),
            ("", rel) => rel.to_owned(),
            (base, rel) => format!("{base}/{rel}"),
        }
    }

    fn stat(&self, rel: &str) -> std::io::Result<(Kind, u64)> {
        self.seed.stat(&self.rel(rel))
    }

    fn open_file(&self, rel: &str) -> std::io::Result<std::fs::File> {
        self.seed.open_file(&self.rel(rel))
    }

    fn list(&self, rel: &str) -> std::io::Result<Vec<Entry>> {
        self.seed.list(&self.rel(rel))
    }
}

/// Removes what an interrupted import left in the state directory (its staging directories).
pub fn clean_stale(state_dir: &Path) {
    if let Ok(rd) = std::fs::read_dir(state_dir.join(PROGRAMS_DIR)) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with(STAGING_PREFIX) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

/// A plain relative path (normal components only), as a string.
fn plain(rel: &str) -> bool {
    !rel.is_empty()
        && !rel.contains('\0')
        && Path::new(rel)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

/// Why a seed file could not be opened, for the report.
fn open_why(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ELOOP) => "it is a symlink (or under one); not followed".into(),
        Some(libc::EXDEV) => "its path leaves the seed folder; not followed".into(),
        Some(libc::ENOENT) => "it does not exist".into(),
        _ => format!("cannot open it: {e}"),
    }
}

/// Reads a seed JSON file beneath `dir`; `Ok(None)` when it is absent; an `Err` is the
/// reason it was skipped.
fn read_json(dir: &Under<'_>, name: &str) -> Result<Option<Value>, String> {
    match dir.stat(name) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Ok((Kind::Symlink, _)) => {
            return Err("it is a symlink; not followed".into());
        }
        _ => {}
    }
    let f = dir.open_file(name).map_err(|e| open_why(&e))?;
    let mut text = Vec::new();
    f.take(MAX_JSON_BYTES + 1)
        .read_to_end(&mut text)
        .map_err(|e| format!("cannot read it: {e}"))?;
    if text.len() as u64 > MAX_JSON_BYTES {
        return Err(format!("it is over {MAX_JSON_BYTES} bytes"));
    }
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|e| format!("malformed JSON: {e}"))
}

/// Entries of a seed index: an object keyed by id, an array, or either under `inner`.
fn entries(v: Value, inner: &str) -> Option<Vec<(String, Value)>> {
    match v {
        Value::Object(mut m) => {
            if m.len() == 1
                && let Some(x) = m.remove(inner)
            {
                return entries(x, "");
            }
            Some(m.into_iter().collect())
        }
        Value::Array(a) => Some(
            a.into_iter()
                .enumerate()
                .map(|(i, v)| (format!("#{i}"), v))
                .collect(),
        ),
        _ => None,
    }
}

fn str_of<'a>(m: &'a Map<String, Value>, names: &[&str]) -> Option<&'a str> {
    names.iter().find_map(|n| m.get(*n).and_then(Value::as_str))
}

/// A seed time (ms since the epoch): seconds since the epoch (a number), or ISO 8601 / RFC 3339
/// text, read as UTC when it has no offset (Python's `isoformat()`).
fn seed_time(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => {
            let s = n.as_f64()?;
            (s.is_finite() && (0.0..1e11).contains(&s)).then_some((s * 1000.0) as i64)
        }
        Value::String(s) => parse_rfc3339(s.trim()).ok().map(|t| t * 1000),
        _ => None,
    }
}

fn note_unknown(
    report: &mut Report,
    file: &'static str,
    entry: &str,
    m: &Map<String, Value>,
    known: &[&str],
) {
    for k in m.keys() {
        if !known.contains(&k.as_str()) {
            report.unknown_fields.push(UnknownField {
                file,
                entry: entry.to_owned(),
                field: k.clone(),
            });
        }
    }
}

/// The stores, opened on the staging copy.
struct Stores {
    db: Db,
    kv: Kv,
    files: Files,
    programs: Programs,
    caller: Caller,
    cfg: Arc<Config>,
}

/// Imports the seed data folder `data` (see [`data_folder`]) into `state_dir`, whose lock the
/// caller holds; with `dry_run` only the report is made. `actor` names who did it in the
/// audit trail.
pub async fn import(
    cfg: &Config,
    state_dir: &Path,
    data: &SeedDir,
    dry_run: bool,
    actor: &str,
) -> Result<Report, SeedError> {
    let mut report = Report {
        source: data.path.display().to_string(),
        dry_run,
        ..Report::default()
    };
    clean_stale(state_dir);
    let programs_root = state_dir.join(PROGRAMS_DIR);
    let fresh_programs_root = !programs_root.exists();
    mkdir(&programs_root)?;
    let staging = programs_root.join(format!("{STAGING_PREFIX}{}", hex_tag()?));
    let guard = RemoveOnDrop {
        path: Some(staging.clone()),
        also: fresh_programs_root.then(|| programs_root.clone()),
    };
    mkdir(&staging)?;
    let staged_db = staging.join(DB_FILE);
    copy_db(&state_dir.join(DB_FILE), &staged_db)?;

    let stores = open_stores(cfg, &staging, &staged_db, actor)?;
    let result = async {
        import_keys(&stores, data, &mut report).await?;
        import_files(&stores, data, &mut report).await?;
        import_programs(&stores, data, &mut report).await?;
        let n = &report.imported;
        let summary = format!(
            "from {}: {} keys, {} files, {} programs; {} skipped, {} conflicts",
            report.source,
            n.keys,
            n.files,
            n.programs,
            report.skipped.len(),
            report.conflicts.len()
        );
        Audit::new(stores.db.clone())
            .record(stores.caller.event("seed.import", "", "ok", summary))
            .await?;
        Ok::<_, SeedError>(())
    }
    .await;
    stores.db.close();
    drop(stores);
    result?;

    if dry_run || report.imported_total() == 0 {
        if !dry_run {
            report
                .notes
                .push("nothing was imported; the state directory is unchanged".into());
        }
        drop(guard);
        return Ok(report);
    }
    commit(state_dir, &staging, &staged_db)?;
    report.committed = true;
    drop(guard);
    Ok(report)
}

fn hex_tag() -> Result<String, SeedError> {
    let mut b = [0u8; 6];
    getrandom::fill(&mut b).map_err(|e| SeedError::Io(format!("no randomness: {e}")))?;
    Ok(hex::encode(b))
}

fn mkdir(p: &Path) -> Result<(), SeedError> {
    match std::fs::DirBuilder::new().mode(0o700).create(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && p.is_dir() => Ok(()),
        Err(e) => Err(io_ctx(format!("cannot create {}", p.display()))(e)),
    }
}

/// Removes the staging directory (and a `programs/` made only for it) when dropped.
struct RemoveOnDrop {
    path: Option<PathBuf>,
    also: Option<PathBuf>,
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            let _ = std::fs::remove_dir_all(&p);
        }
        if let Some(p) = self.also.take() {
            // Only if still empty: a committed import put programs there.
            let _ = std::fs::remove_dir(&p);
        }
    }
}

/// Copies the state's database, page by page (its WAL included), to `to`; a state directory
/// without one gets a new, empty database there.
fn copy_db(from: &Path, to: &Path) -> Result<(), SeedError> {
    if !from.exists() {
        return Ok(());
    }
    let src =
        rusqlite::Connection::open_with_flags(from, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE)
            .map_err(|e| SeedError::Io(format!("cannot open {}: {e}", from.display())))?;
    let mut dst = rusqlite::Connection::open(to)
        .map_err(|e| SeedError::Io(format!("cannot create {}: {e}", to.display())))?;
    rusqlite::backup::Backup::new(&src, &mut dst)
        .and_then(|b| b.run_to_completion(256, std::time::Duration::ZERO, None))
        .map_err(|e| SeedError::Io(format!("cannot copy {}: {e}", from.display())))?;
    drop(dst);
    drop(src);
    Ok(())
}

fn open_stores(
    cfg: &Config,
    staging: &Path,
    staged_db: &Path,
    actor: &str,
) -> Result<Stores, SeedError> {
    let db = Db::open(staged_db, 2)?;
    db.set_min_free_disk(cfg.storage.min_free_disk);
    let live = Arc::new(LiveConfig::new(cfg.clone()));
    let pins = Arc::new(BlobPins::default());
    let files = Files::new(
        db.clone(),
        live.clone(),
        staging.join(FILES_DIR),
        pins.clone(),
    );
    let views = Views::open(staging.join(MOUNTS_DIR), files.clone())?;
    let metrics = Metrics::new(db.clone(), live.clone(), staging.to_owned())?;
    let data = Data::new(files.clone(), views.clone(), live.clone());
    // Never asked to run anything: the zygote starts with a first job only.
    let sandbox = Sandbox::start(PathBuf::from("/proc/self/exe"))?;
    let exec = Executor::new(sandbox, db.clone(), live.clone(), None, metrics, data);
    let programs = Programs::open(db.clone(), live.clone(), staging, exec, pins, views)?;
    Ok(Stores {
        kv: Kv::new(db.clone(), 0),
        db,
        files,
        programs,
        caller: Caller {
            actor: actor.to_owned(),
            client: "cli".into(),
            request_id: String::new(),
        },
        cfg: live.get(),
    })
}

async fn import_keys(s: &Stores, data: &SeedDir, report: &mut Report) -> Result<(), SeedError> {
    let v = match read_json(&data.under(""), "storage.json") {
        Ok(Some(v)) => v,
        Ok(None) => return Ok(()),
        Err(why) => {
            report.skip(
                "seed",
                "storage.json",
                format!("no key was imported: {why}"),
            );
            return Ok(());
        }
    };
    let Value::Object(map) = v else {
        report.skip(
            "seed",
            "storage.json",
            "no key was imported: it is not a JSON object (key → value)",
        );
        return Ok(());
    };
    for (key, value) in map {
        if let Err(e) = crate::store::kv::check_key(&key) {
            report.skip(
                "key",
                &key,
                format!("{e}; not imported (keys are not renamed)"),
            );
            continue;
        }
        if s.kv.get(&key).await?.is_some() {
            report.conflict("key", &key, "the key exists here; left as it is");
            continue;
        }
        let op = Op {
            key: key.clone(),
            value: Some(Arc::from(value.to_string())),
            cond: Cond::Absent,
            ttl: None,
        };
        match s.kv.apply(vec![op], s.caller.clone(), &s.cfg.kv).await {
            Ok(_) => {
                report.imported.keys += 1;
                report.items.push(item("key", &key, ""));
            }
            Err(e @ Error::Db(_)) | Err(e @ Error::Internal(_)) => return Err(e.into()),
            Err(e) => report.skip("key", &key, e.to_string()),
        }
    }
    Ok(())
}

const FILE_FIELDS: &[&str] = &[
    "filename",
    "stored_name",
    "stored_filename",
    "original_filename",
    "original_name",
    "name",
    "size",
    "checksum",
    "sha256",
    "upload_time",
    "uploaded_at",
    "upload_date",
    "created_at",
    "content_type",
    "mime_type",
    "path",
];

async fn import_files(s: &Stores, data: &SeedDir, report: &mut Report) -> Result<(), SeedError> {
    let dir = data.under("files");
    match dir.stat("") {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            report.skip(
                "seed",
                "files",
                format!("cannot read it: {e}; no file was imported"),
            );
            return Ok(());
        }
        Ok((kind, _)) if kind != Kind::Dir => {
            report.skip(
                "seed",
                "files",
                "it is not a directory (a symlink is not followed); no file was imported",
            );
            return Ok(());
        }
        Ok(_) => {}
    }
    let list = match read_json(&dir, "files_metadata.json") {
        Ok(Some(v)) => match entries(v, "files") {
            Some(e) => e,
            None => {
                report.skip(
                    "seed",
                    "files/files_metadata.json",
                    "not an object or array of file entries; no file was imported",
                );
                return Ok(());
            }
        },
        Ok(None) => {
            report.skip(
                "seed",
                "files/files_metadata.json",
                "missing; no file was imported",
            );
            Vec::new()
        }
        Err(why) => {
            report.skip(
                "seed",
                "files/files_metadata.json",
                format!("no file was imported: {why}"),
            );
            return Ok(());
        }
    };
    let max = s.cfg.files.max_file_size;
    let mut listed = BTreeSet::new();
    let mut taken = BTreeSet::new();
    for (key, v) in list {
        let Value::Object(m) = v else {
            report.skip(
                "file",
                &key,
                "its files_metadata.json entry is not an object",
            );
            continue;
        };
        note_unknown(report, "files_metadata.json", &key, &m, FILE_FIELDS);
        let stored = str_of(&m, &["filename", "stored_name", "stored_filename", "path"])
            .unwrap_or(&key)
            .to_owned();
        listed.insert(stored.clone());
        let name = str_of(&m, &["original_filename", "original_name", "name"])
            .unwrap_or(&stored)
            .to_owned();
        if !plain(&stored) {
            report.skip(
                "file",
                &name,
                format!("its path {stored:?} leaves the seed folder; not followed"),
            );
            continue;
        }
        if let Err(e) = crate::store::files::validate_path(&name) {
            report.skip("file", &name, e.to_string());
            continue;
        }
        if !taken.insert(name.clone()) {
            report.conflict(
                "file",
                &name,
                "the seed names this file twice; the first was taken",
            );
            continue;
        }
        let file = match dir.open_file(&stored) {
            Ok(f) => f,
            Err(e) => {
                report.skip("file", &name, format!("files/{stored}: {}", open_why(&e)));
                continue;
            }
        };
        let size = file
            .metadata()
            .map_err(io_ctx(format!("files/{stored}")))?
            .len();
        if size > max.bytes() {
            report.skip(
                "file",
                &name,
                format!("{size} bytes, over files.max-file-size ({max})"),
            );
            continue;
        }
        if s.files.meta(&name).await.is_ok() {
            report.conflict(
                "file",
                &name,
                "a file of that name exists here; left as it is",
            );
            continue;
        }
        let sha = str_of(&m, &["checksum", "sha256"]).map(|c| c.trim().to_ascii_lowercase());
        if sha.is_none() {
            report
                .notes
                .push(format!("file {name:?}: no checksum recorded; not verified"));
        }
        let time = ["upload_time", "uploaded_at", "upload_date", "created_at"]
            .iter()
            .find_map(|k| m.get(*k));
        let ms = time.and_then(seed_time);
        if let (Some(t), None) = (time, ms) {
            report.notes.push(format!(
                "file {name:?}: its time {t} is not understood; stored with the import's time"
            ));
        }
        let mut batch = s.files.batch(
            Conditions {
                create_only: true,
                if_match: None,
            },
            s.caller.clone(),
            Some(size),
        )?;
        let body =
            tokio_util::io::ReaderStream::with_capacity(tokio::fs::File::from_std(file), CHUNK);
        let added = batch.add(&name, body, Some(size), sha.clone()).await;
        let done = match added {
            Ok(()) => {
                if let Some(ms) = ms {
                    batch.keep_time(&name, ms)?;
                }
                batch.commit().await.map(|_| ())
            }
            Err(e) => Err(e),
        };
        match done {
            Ok(()) => {
                report.imported.files += 1;
                report.items.push(item("file", &name, ""));
            }
            Err(Error::Unprocessable(m)) if sha.is_some() => {
                report.skip("file", &name, format!("checksum mismatch: {m}"))
            }
            Err(e @ Error::Db(_)) | Err(e @ Error::Internal(_)) => return Err(e.into()),
            Err(e) => report.skip("file", &name, e.to_string()),
        }
    }
    // What files_metadata.json does not list is not imported (its name is unknown).
    if let Ok(rd) = dir.list("") {
        let extra: Vec<String> = rd
            .into_iter()
            .map(|e| e.name)
            .filter(|n| n != "files_metadata.json" && !listed.contains(n))
            .collect();
        for n in extra {
            report.skip(
                "file",
                &n,
                "files/ holds it but files_metadata.json does not list it",
            );
        }
    }
    Ok(())
}

const PROGRAM_FIELDS: &[&str] = &[
    "id",
    "name",
    "filename",
    "path",
    "project_dir",
    "directory",
    "type",
    "kind",
    "main_file",
    "main",
    "files",
    "size",
    "created_at",
    "uploaded_at",
    "upload_time",
    "language",
    "description",
    "execution_count",
    "last_executed",
    "last_execution",
];

/// A seed project's files (relative paths), walked without following anything; a symlink or
/// other non-regular entry anywhere refuses the project.
fn walk_project(root: &Under<'_>, rel: &str, out: &mut Vec<(String, u64)>) -> Result<(), String> {
    let rd = root
        .list(rel)
        .map_err(|e| format!("cannot read {rel}: {e}"))?;
    for e in rd {
        let child = format!("{rel}/{}", e.name);
        match e.kind {
            Kind::Symlink => return Err(format!("{child} is a symlink; not followed")),
            Kind::Dir => walk_project(root, &child, out)?,
            Kind::File => out.push((child, e.size)),
            Kind::Other => return Err(format!("{child} is not a regular file")),
        }
    }
    Ok(())
}

/// Streams the seed file `rel` (beneath `root`) into an upload.
async fn feed(
    staging: &mut crate::store::programs::Staging,
    root: &Under<'_>,
    rel: &str,
) -> Result<(), String> {
    let mut f = root
        .open_file(rel)
        .map_err(|e| format!("{rel}: {}", open_why(&e)))?;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = f.read(&mut buf).map_err(|e| format!("{rel}: {e}"))?;
        if n == 0 {
            return Ok(());
        }
        staging.write(&buf[..n]).await.map_err(|e| e.to_string())?;
    }
}

/// The seed project `files` (beneath `root`) as a ZIP (stored, with the files' modes), the
/// way an upload brings a project.
fn zip_project(root: &Under<'_>, loc: &str, files: &[(String, u64)]) -> Result<Vec<u8>, String> {
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (rel, _) in files {
        let mut f = root
            .open_file(rel)
            .map_err(|e| format!("{rel}: {}", open_why(&e)))?;
        let mode = f.metadata().map_err(|e| format!("{rel}: {e}"))?.mode() & 0o777;
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored)
            .large_file(true)
            .unix_permissions(mode);
        let inner = rel.strip_prefix(loc).unwrap_or(rel).trim_start_matches('/');
        w.start_file(inner, opts)
            .map_err(|e| format!("{rel}: {e}"))?;
        let mut data = Vec::new();
        f.read_to_end(&mut data)
            .map_err(|e| format!("{rel}: {e}"))?;
        w.write_all(&data).map_err(|e| format!("{rel}: {e}"))?;
    }
    w.finish()
        .map(|c| c.into_inner())
        .map_err(|e| format!("cannot build the project's archive: {e}"))
}

async fn import_programs(s: &Stores, data: &SeedDir, report: &mut Report) -> Result<(), SeedError> {
    let dir = data.under("programs");
    match dir.stat("") {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            report.skip(
                "seed",
                "programs",
                format!("cannot read it: {e}; no program was imported"),
            );
            return Ok(());
        }
        Ok((kind, _)) if kind != Kind::Dir => {
            report.skip(
                "seed",
                "programs",
                "it is not a directory (a symlink is not followed); no program was imported",
            );
            return Ok(());
        }
        Ok(_) => {}
    }
    let list = match read_json(&dir, "programs.json") {
        Ok(Some(v)) => match entries(v, "programs") {
            Some(e) => e,
            None => {
                report.skip(
                    "seed",
                    "programs/programs.json",
                    "not an object or array of program entries; no program was imported",
                );
                return Ok(());
            }
        },
        Ok(None) => {
            report.skip(
                "seed",
                "programs/programs.json",
                "missing; no program was imported",
            );
            Vec::new()
        }
        Err(why) => {
            report.skip(
                "seed",
                "programs/programs.json",
                format!("no program was imported: {why}"),
            );
            return Ok(());
        }
    };
    // The names here already (a program's name is how the seed's clients name it).
    let mut taken = BTreeSet::new();
    let mut cursor = None;
    loop {
        let page = s.programs.list(1000, cursor).await?;
        taken.extend(page.items.into_iter().map(|p| p.name));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let cfg = &s.cfg.programs;
    let mut listed = BTreeSet::new();
    let mut seen = BTreeMap::new();
    for (key, v) in list {
        let Value::Object(m) = v else {
            report.skip("program", &key, "its programs.json entry is not an object");
            continue;
        };
        note_unknown(report, "programs.json", &key, &m, PROGRAM_FIELDS);
        let loc = str_of(&m, &["path", "project_dir", "directory", "filename", "id"])
            .unwrap_or(&key)
            .trim_end_matches('/')
            .to_owned();
        let label = str_of(&m, &["name"]).unwrap_or(&loc).to_owned();
        if !plain(&loc) {
            report.skip(
                "program",
                &label,
                format!("its path {loc:?} leaves the seed folder; not followed"),
            );
            continue;
        }
        if let Some(first) = loc.split('/').next() {
            listed.insert(first.to_owned());
        }
        // Every step beneath programs/ must be a plain directory or the file itself.
        let mut at = String::new();
        let mut kind = None;
        for c in loc.split('/') {
            if !at.is_empty() {
                at.push('/');
            }
            at.push_str(c);
            match dir.stat(&at) {
                Ok((Kind::Symlink, _)) => {
                    kind = Some(Err(format!("programs/{at} is a symlink; not followed")));
                    break;
                }
                Ok((k, _)) => kind = Some(Ok(k == Kind::Dir)),
                Err(e) => {
                    kind = Some(Err(format!("programs/{loc}: {e}")));
                    break;
                }
            }
        }
        let is_dir = match kind {
            Some(Ok(d)) => d,
            Some(Err(why)) => {
                report.skip("program", &label, why);
                continue;
            }
            None => continue,
        };
        let said = str_of(&m, &["type", "kind"]).unwrap_or("");
        let said_project = matches!(said, "project" | "zip" | "directory");
        if !said.is_empty() && said_project != is_dir {
            report.skip(
                "program",
                &label,
                format!(
                    "programs.json says it is a {said}, but programs/{loc} is {}",
                    if is_dir { "a directory" } else { "a file" }
                ),
            );
            continue;
        }
        // A single file is named by its file name (the store keeps it under that name).
        let name = if is_dir {
            label.clone()
        } else {
            loc.rsplit('/').next().unwrap_or(&loc).to_owned()
        };
        if taken.contains(&name) {
            let why = if seen.contains_key(&name) {
                "the seed names two programs so; the first was taken"
            } else {
                "a program of that name exists here; left as it is"
            };
            report.conflict("program", &name, why);
            continue;
        }
        let max = cfg.max_upload_size;
        let mut upload = s.programs.begin_upload().await?;
        let fed = if is_dir {
            let mut files = Vec::new();
            match walk_project(&dir, &loc, &mut files) {
                Err(why) => Err(why),
                Ok(()) if files.is_empty() => Err("the project has no files".into()),
                Ok(()) => {
                    let total: u64 = files.iter().map(|f| f.1).sum();
                    if total > max.bytes() {
                        Err(format!(
                            "{total} bytes, over programs.max-upload-size ({max})"
                        ))
                    } else {
                        match zip_project(&dir, &loc, &files) {
                            Ok(z) => upload.write(&z).await.map_err(|e| e.to_string()),
                            Err(why) => Err(why),
                        }
                    }
                }
            }
        } else {
            let size = dir.stat(&loc).map(|(_, size)| size).unwrap_or(0);
            if size > max.bytes() {
                Err(format!(
                    "{size} bytes, over programs.max-upload-size ({max})"
                ))
            } else {
                feed(&mut upload, &dir, &loc).await
            }
        };
        if let Err(why) = fed {
            report.skip("program", &name, why);
            continue;
        }
        let main = if is_dir {
            str_of(&m, &["main_file", "main"]).map(str::to_owned)
        } else {
            None
        };
        let meta = UploadMeta {
            name: name.clone(),
            zip: is_dir,
            main: main.clone(),
        };
        match s.programs.finish_upload(upload, meta, &s.caller).await {
            Ok(p) => {
                if main.is_some() && p.main != main {
                    report.notes.push(format!(
                        "program {name:?}: main file {:?} asked, {:?} kept",
                        main, p.main
                    ));
                }
                taken.insert(name.clone());
                seen.insert(name.clone(), p.id.clone());
                report.imported.programs += 1;
                report
                    .items
                    .push(item("program", &name, format!("id {}", p.id)));
            }
            Err(e @ Error::Db(_)) | Err(e @ Error::Internal(_)) => return Err(e.into()),
            Err(e) => report.skip("program", &name, e.to_string()),
        }
    }
    if let Ok(rd) = dir.list("") {
        let db_dir = rd.iter().any(|e| e.name == "db" && e.kind == Kind::Dir);
        let extra: Vec<String> = rd
            .into_iter()
            .map(|e| e.name)
            .filter(|n| n != "programs.json" && n != "db" && !listed.contains(n))
            .collect();
        for n in extra {
            report.skip(
                "program",
                &n,
                "programs/ holds it but programs.json does not list it",
            );
        }
        if db_dir {
            report.notes.push(
                "programs/db/ (the seed's own metrics and error databases) is not imported".into(),
            );
        }
    }
    Ok(())
}

/// Moves the staged blobs and program directories into the state directory, then the staged
/// database over the real one (the commit). Undoes the moves when anything before the commit
/// fails; a crash leaves them to the daemon's startup recovery.
fn commit(state_dir: &Path, staging: &Path, staged_db: &Path) -> Result<(), SeedError> {
    let files_root = state_dir.join(FILES_DIR);
    let blobs = files_root.join(BLOBS_DIR);
    let programs = state_dir.join(PROGRAMS_DIR);
    let mut moved: Vec<PathBuf> = Vec::new();
    let r = (|| -> Result<(), SeedError> {
        for d in [&files_root, &blobs] {
            mkdir(d)?;
        }
        // The staged database must have no WAL left (closing it checkpointed it).
        let wal = |db: &Path| PathBuf::from(format!("{}-wal", db.display()));
        let shm = |db: &Path| PathBuf::from(format!("{}-shm", db.display()));
        if std::fs::metadata(wal(staged_db)).is_ok_and(|m| m.len() > 0) {
            return Err(SeedError::Io(
                "the staged database still has a write-ahead log; nothing was changed".into(),
            ));
        }
        std::fs::File::open(staged_db)
            .and_then(|f| f.sync_all())
            .map_err(io_ctx(format!("cannot sync {}", staged_db.display())))?;
        let staged_blobs = staging.join(FILES_DIR).join(BLOBS_DIR);
        if let Ok(rd) = std::fs::read_dir(&staged_blobs) {
            for e in rd.flatten() {
                let to = blobs.join(e.file_name());
                std::fs::rename(e.path(), &to)
                    .map_err(io_ctx(format!("cannot move a blob to {}", to.display())))?;
                moved.push(to);
            }
        }
        sync_dir(&blobs).map_err(io_ctx(format!("cannot sync {}", blobs.display())))?;
        for e in std::fs::read_dir(staging.join(PROGRAMS_DIR))
            .map_err(io_ctx("cannot read the staged programs"))?
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if valid_id(&name) {
                let to = programs.join(&name);
                std::fs::rename(e.path(), &to)
                    .map_err(io_ctx(format!("cannot move a program to {}", to.display())))?;
                moved.push(to);
            }
        }
        sync_dir(&programs).map_err(io_ctx(format!("cannot sync {}", programs.display())))?;
        // The real database: closed by everyone (we hold the lock, and our copy is done), so
        // a WAL beside it is empty; it and its index must not be read with the new file.
        let real = state_dir.join(DB_FILE);
        if std::fs::metadata(wal(&real)).is_ok_and(|m| m.len() > 0) {
            return Err(SeedError::Io(format!(
                "{} has a write-ahead log with changes not yet checkpointed; start and stop the service once, then import again",
                real.display()
            )));
        }
        for p in [wal(&real), shm(&real)] {
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_ctx(format!("cannot remove {}", p.display()))(e)),
            }
        }
        std::fs::rename(staged_db, &real).map_err(io_ctx(format!(
            "cannot move the new database to {}",
            real.display()
        )))?;
        Ok(())
    })();
    if let Err(e) = r {
        for p in moved {
            let _ = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
        }
        return Err(e);
    }
    // Committed: its durability is the directory's.
    sync_dir(state_dir).map_err(io_ctx(format!("cannot sync {}", state_dir.display())))?;
    let _ = std::fs::set_permissions(&programs, std::fs::Permissions::from_mode(0o700));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn seed_times_are_read_as_utc_or_epoch_seconds() {
        assert_eq!(seed_time(&json!("1970-01-01T00:01:00")), Some(60_000));
        assert_eq!(seed_time(&json!("1970-01-01T00:01:00.5Z")), Some(60_000));
        assert_eq!(seed_time(&json!(60.25)), Some(60_250));
        assert_eq!(seed_time(&json!("yesterday")), None);
        assert_eq!(seed_time(&json!(-1)), None);
    }

    #[test]
    fn only_plain_relative_paths_pass() {
        assert!(plain("a.txt") && plain("dir/a.txt"));
        for bad in ["", "../a", "a/../../b", "/etc/passwd", "./a", "a\0b"] {
            assert!(!plain(bad), "{bad:?}");
        }
    }

    #[test]
    fn indexes_may_be_objects_arrays_or_wrapped() {
        let keys = |v| {
            entries(v, "files")
                .unwrap()
                .into_iter()
                .map(|e| e.0)
                .collect::<Vec<_>>()
        };
        assert_eq!(keys(json!({"a": {}, "b": {}})), ["a", "b"]);
        assert_eq!(keys(json!([{}, {}])), ["#0", "#1"]);
        assert_eq!(keys(json!({"files": {"x": {}}})), ["x"]);
        assert!(entries(json!(3), "files").is_none());
    }
}
