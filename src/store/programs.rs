//! The program store: uploaded single files and ZIP projects kept under
//! `$STATE_DIRECTORY/programs/<id>/`, ZIP safety while extracting, main-file and runtime
//! detection, runs through the executor with the program read-only at `/program`, and which
//! programs are running now (a delete waits for `force`). No HTTP here.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, mpsc};

use crate::config::{LiveConfig, ProgramsConfig};
use crate::error::{Error, Result};
use crate::jobs::data::{JobData, MountSource, MountSpec};
use crate::jobs::exec::{Chunk, ExecRequest, ExecResult, Executor, RequestLimits};
use crate::jobs::runtimes;
use crate::store::audit::{self, Caller};
use crate::store::db::Db;
use crate::store::pins::BlobPins;
use crate::store::stored::{ProgramId, ProgramPath, open_beneath};
use crate::store::views::{ViewLease, Views};
use crate::util::time::{now_unix, rfc3339};
use crate::util::{layout, paging};

/// Where a program's files appear inside its job.
pub const INSIDE: &str = "/program";
/// Entries written past this size must keep within `programs.max-ratio` (small files compress
/// far better than any sane ratio, so the ratio only matters for large outputs).
const RATIO_GRACE: u64 = 1 << 20;
/// Candidate main files, in order of preference.
const MAIN_NAMES: &[&str] = &["main.py", "__main__.py", "main.sh", "index.js", "main.js"];

/// One stored file of a program.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, utoipa::ToSchema)]
pub struct FileEntry {
    pub path: String,
    pub size: u64,
    pub executable: bool,
}

/// A stored program as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Program {
    pub id: String,
    pub name: String,
    /// `file` or `project`.
    pub kind: String,
    pub files: Vec<FileEntry>,
    pub main: Option<String>,
    /// How the main file runs: an interpreter name, `shebang` or `elf`; null when unknown.
    pub runtime: Option<String>,
    pub needs_main: bool,
    pub size: u64,
    pub sha256: String,
    pub created_at: String,
    pub run_count: i64,
    pub last_run_status: Option<String>,
    pub last_run_at: Option<String>,
}

pub struct Page {
    pub items: Vec<Program>,
    pub next_cursor: Option<String>,
}

/// What an upload is, said by the caller.
#[derive(Debug, Clone)]
pub struct UploadMeta {
    pub name: String,
    /// A ZIP project (else a single file).
    pub zip: bool,
    /// The main file chosen at upload.
    pub main: Option<String>,
}

/// One run of a stored program.
#[derive(Debug, Clone, Default)]
pub struct RunRequest {
    pub args: Vec<String>,
    pub stdin: Vec<u8>,
    pub timeout: Option<Duration>,
    pub limits: RequestLimits,
    pub profile: Option<String>,
    /// Mounts (besides the program's own at `/program`), outputs and inline files.
    pub data: JobData,
    /// Who may see the execution besides admin ([`ExecRequest::owner`]).
    pub owner: String,
}

#[derive(Default)]
struct Active {
    runs: HashMap<u64, Arc<Notify>>,
    deleting: bool,
}

struct Inner {
    db: Db,
    root: PathBuf,
    live: Arc<LiveConfig>,
    exec: Executor,
    active: Mutex<HashMap<String, Active>>,
    next_run: AtomicU64,
    /// Removals of deleted programs wait while a backup runs (it may still read them).
    pins: Arc<BlobPins>,
    /// The views jobs mount: a run sees its program through one.
    views: Views,
}

/// The program store. Cheap to clone.
#[derive(Clone)]
pub struct Programs {
    inner: Arc<Inner>,
}

fn random_hex(n: usize) -> Result<String> {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).map_err(|e| Error::Internal(format!("no randomness: {e}")))?;
    Ok(hex::encode(b))
}

/// Whether `id` is a program id ([`ProgramId`]).
pub fn valid_id(id: &str) -> bool {
    ProgramId::parse(id).is_ok()
}

/// A program record read back from the database, checked before any of its names is joined
/// to its directory: every file path and the main file plain relative paths, the main one of
/// the files. The database may have been restored from an archive or edited.
fn check_record(p: &Program) -> Result<()> {
    let broken = |what: String| {
        Error::Internal(format!(
            "the record of program {} {what}; it is not used",
            p.id
        ))
    };
    for f in &p.files {
        ProgramPath::parse(&f.path).map_err(|e| broken(format!("lists {e}")))?;
    }
    if let Some(m) = &p.main {
        ProgramPath::parse(m).map_err(|e| broken(format!("names as main {e}")))?;
        if !p.files.iter().any(|f| &f.path == m) {
            return Err(broken(format!("names as main {m:?}, not one of its files")));
        }
    }
    Ok(())
}

/// The first bytes of the program file `rel` in `dir`, opened beneath `dir` without following
/// a symlink (empty when it cannot be read so).
fn stored_head(dir: &Path, rel: &ProgramPath) -> Vec<u8> {
    let mut buf = vec![0u8; 256];
    let n = open_beneath(dir, rel.as_str())
        .and_then(|mut f| f.read(&mut buf))
        .unwrap_or(0);
    buf.truncate(n);
    buf
}

fn not_found(id: &str) -> Error {
    Error::NotFound(format!("no program {id:?}"))
}

/// Removes a directory tree when dropped unless disarmed: nothing half-made is left behind.
struct Cleanup(Option<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
        }
    }
}

/// An upload on its way to disk: bytes go to a temp file in the store's filesystem while
/// their SHA-256 is computed. Dropping it removes the temp file.
pub struct Staging {
    file: tokio::fs::File,
    hasher: Sha256,
    size: u64,
    max: u64,
    /// The store's directory and `storage.min-free-disk`, checked every `DISK_CHECK_EVERY`.
    root: PathBuf,
    floor: crate::config::ByteSize,
    checked_at: u64,
    _cleanup: Cleanup,
    path: PathBuf,
}

impl Staging {
    /// Appends a chunk; past `programs.max-upload-size` the upload is refused.
    pub async fn write(&mut self, chunk: &[u8]) -> Result<()> {
        use tokio::io::AsyncWriteExt;
        self.size += chunk.len() as u64;
        if self.size > self.max {
            return Err(Error::TooLarge(format!(
                "the upload is larger than programs.max-upload-size ({} bytes)",
                self.max
            )));
        }
        if self.size - self.checked_at >= DISK_CHECK_EVERY {
            self.checked_at = self.size;
            crate::util::disk::ensure_free(&self.root, self.floor, DISK_CHECK_EVERY)?;
        }
        self.hasher.update(chunk);
        self.file.write_all(chunk).await?;
        Ok(())
    }
}

/// How often (in bytes received) an upload checks the free-disk floor again.
const DISK_CHECK_EVERY: u64 = 8 << 20;

/// A name for a single-file program: one path component, no NUL, not `.`/`..`.
fn check_file_name(name: &str, max: usize) -> Result<()> {
    if name.is_empty()
        || name == "."
        || name == ".."
        || name.contains('/')
        || name.contains('\\')
        || name.contains('\0')
        || name.len() > max.min(255)
    {
        return Err(Error::Invalid(format!(
            "invalid program file name {name:?}: one path component of 1 to {} bytes, without / \\ or NUL, not . or ..",
            max.min(255)
        )));
    }
    Ok(())
}

fn head_bytes(path: &Path) -> Vec<u8> {
    let mut buf = vec![0u8; 256];
    let n = File::open(path)
        .and_then(|mut f| f.read(&mut buf))
        .unwrap_or(0);
    buf.truncate(n);
    buf
}

fn is_elf(head: &[u8]) -> bool {
    head.starts_with(b"\x7fELF")
}

fn is_shebang(head: &[u8]) -> bool {
    head.starts_with(b"#!")
}

/// Refuses a ZIP entry, naming it and the rule it breaks.
fn refuse(entry: &str, rule: &str) -> Error {
    Error::Invalid(format!("refused ZIP entry {entry:?}: {rule}"))
}

/// Checks an entry name and returns its normalized relative path (no trailing slash).
fn check_entry_name(raw: &[u8], cfg: &ProgramsConfig) -> Result<String> {
    let shown = String::from_utf8_lossy(raw).into_owned();
    let name = std::str::from_utf8(raw).map_err(|_| refuse(&shown, "the name is not UTF-8"))?;
    if name.contains('\0') {
        return Err(refuse(&shown, "NUL byte in the name"));
    }
    if name.len() > cfg.max_name_length {
        return Err(refuse(
            &shown,
            &format!(
                "name longer than programs.max-name-length ({} bytes)",
                cfg.max_name_length
            ),
        ));
    }
    if name.contains('\\') {
        return Err(refuse(&shown, "backslash in the name"));
    }
    let bytes = name.as_bytes();
    if name.starts_with('/') || (bytes.len() >= 2 && bytes[1] == b':') {
        return Err(refuse(&shown, "absolute path"));
    }
    let trimmed = name.strip_suffix('/').unwrap_or(name);
    let parts: Vec<&str> = trimmed.split('/').collect();
    if parts.contains(&"..") {
        return Err(refuse(&shown, "\"..\" in the path (zip-slip)"));
    }
    if parts.iter().any(|p| p.is_empty() || *p == ".") {
        return Err(refuse(&shown, "empty or \".\" path component"));
    }
    if parts.len() > cfg.max_depth {
        return Err(refuse(
            &shown,
            &format!("nested deeper than programs.max-depth ({})", cfg.max_depth),
        ));
    }
    Ok(trimmed.to_owned())
}

/// Extracts the ZIP at `zip_path` into the empty directory `dest`, enforcing every rule of
/// `cfg` while writing. Returns the stored files.
/// The first entry name that appears twice in a ZIP's central directory (plain ZIP, not
/// ZIP64; `None` when it cannot tell). Only names are read: this is for the error message.
fn first_duplicate_name(zip_path: &Path) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = File::open(zip_path).ok()?;
    let len = f.metadata().ok()?.len();
    // The end-of-central-directory record: 22 bytes plus a comment of at most 64 KiB.
    let tail_len = len.min(22 + 65_535);
    f.seek(SeekFrom::Start(len - tail_len)).ok()?;
    let mut tail = vec![0u8; usize::try_from(tail_len).ok()?];
    f.read_exact(&mut tail).ok()?;
    let eocd = tail
        .windows(4)
        .rposition(|w| w == [0x50, 0x4b, 0x05, 0x06])?;
    let field = |at: usize, n: usize| -> Option<u64> {
        let b = tail.get(eocd + at..eocd + at + n)?;
        Some(b.iter().rev().fold(0u64, |v, &x| (v << 8) | u64::from(x)))
    };
    let (size, offset) = (field(12, 4)?, field(16, 4)?);
    if size > 64 << 20 || offset.checked_add(size)? > len {
        return None;
    }
    f.seek(SeekFrom::Start(offset)).ok()?;
    let mut cd = vec![0u8; usize::try_from(size).ok()?];
    f.read_exact(&mut cd).ok()?;
    let mut seen = HashSet::new();
    let mut at = 0usize;
    while cd.get(at..at + 4)? == [0x50, 0x4b, 0x01, 0x02] {
        let u16_at = |o: usize| -> Option<usize> {
            let b = cd.get(at + o..at + o + 2)?;
            Some(usize::from(b[0]) | usize::from(b[1]) << 8)
        };
        let (n, e, c) = (u16_at(28)?, u16_at(30)?, u16_at(32)?);
        let name = String::from_utf8_lossy(cd.get(at + 46..at + 46 + n)?).into_owned();
        if !seen.insert(name.clone()) {
            return Some(name);
        }
        at += 46 + n + e + c;
    }
    None
}

fn extract_zip(
    zip_path: &Path,
    dest: &Path,
    cfg: &ProgramsConfig,
    floor: crate::config::ByteSize,
) -> Result<Vec<FileEntry>> {
    let file = File::open(zip_path)?;
    let mut archive = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| Error::Invalid(format!("not a readable ZIP archive: {e}")))?;
    if archive.has_duplicate_names() {
        // The reader keeps one entry per name; find which one from the central directory.
        return Err(match first_duplicate_name(zip_path) {
            Some(name) => refuse(&name, "duplicate name"),
            None => {
                Error::Invalid("refused ZIP: duplicate entry names in the central directory".into())
            }
        });
    }
    if archive.len() > cfg.max_files {
        return Err(Error::Invalid(format!(
            "the ZIP has {} entries, more than programs.max-files ({})",
            archive.len(),
            cfg.max_files
        )));
    }
    let max_total = cfg.max_unpacked_size.bytes();
    // What the entries say they unpack to (capped by the limit, which is enforced on the
    // bytes actually written below) must fit above the free-disk floor.
    let declared = (0..archive.len())
        .filter_map(|i| archive.by_index_raw(i).ok().map(|e| e.size()))
        .fold(0u64, u64::saturating_add)
        .min(max_total);
    crate::util::disk::ensure_free(dest, floor, declared)?;
    let mut total: u64 = 0;
    let mut seen: HashSet<String> = HashSet::new();
    let mut files = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    for i in 0..archive.len() {
        let mut entry = archive
            .by_index(i)
            .map_err(|e| Error::Invalid(format!("ZIP entry {i} cannot be read: {e}")))?;
        let raw = entry.name_raw().to_vec();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let rel = check_entry_name(&raw, cfg)?;
        if !seen.insert(rel.clone()) {
            return Err(refuse(&shown, "duplicate name"));
        }
        if entry.encrypted() {
            return Err(refuse(&shown, "encrypted entries are not supported"));
        }
        let kind = entry.unix_mode().map(|m| m & 0o170000).unwrap_or(0);
        let is_dir = entry.is_dir();
        match kind {
            0o120000 => return Err(refuse(&shown, "symbolic link")),
            0 | 0o100000 => {}
            0o040000 if is_dir => {}
            0o040000 => return Err(refuse(&shown, "directory mode on a file entry")),
            _ => return Err(refuse(&shown, "device, FIFO or socket entry")),
        }
        if entry.is_symlink() {
            return Err(refuse(&shown, "symbolic link"));
        }
        let target = dest.join(&rel);
        if is_dir {
            std::fs::create_dir_all(&target)
                .map_err(|e| refuse(&shown, &format!("conflicts with another entry ({e})")))?;
            continue;
        }
        if entry.size() > max_total {
            return Err(refuse(
                &shown,
                &format!(
                    "declares {} bytes, more than programs.max-unpacked-size ({max_total})",
                    entry.size()
                ),
            ));
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| refuse(&shown, &format!("conflicts with another entry ({e})")))?;
        }
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&target)
            .map_err(|e| refuse(&shown, &format!("conflicts with another entry ({e})")))?;
        let compressed = entry.compressed_size().max(1);
        let mut written: u64 = 0;
        loop {
            let n = entry
                .read(&mut buf)
                .map_err(|e| refuse(&shown, &format!("corrupt data ({e})")))?;
            if n == 0 {
                break;
            }
            written += n as u64;
            total += n as u64;
            if total > max_total {
                return Err(refuse(
                    &shown,
                    &format!(
                        "the project unpacks to more than programs.max-unpacked-size ({max_total} bytes)"
                    ),
                ));
            }
            if written > RATIO_GRACE && written / compressed > cfg.max_ratio {
                return Err(refuse(
                    &shown,
                    &format!(
                        "compression ratio above programs.max-ratio ({}): {written} bytes from {compressed} (zip bomb?)",
                        cfg.max_ratio
                    ),
                ));
            }
            out.write_all(&buf[..n])?;
        }
        out.sync_all()?;
        drop(out);
        let executable = mark_executable(&target)?;
        files.push(FileEntry {
            path: rel,
            size: written,
            executable,
        });
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

/// Files with a `#!` line or ELF header become 0755 (they run directly); others stay 0644.
fn mark_executable(path: &Path) -> Result<bool> {
    let head = head_bytes(path);
    let exec = is_elf(&head) || is_shebang(&head);
    let mode = if exec { 0o755 } else { 0o644 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(exec)
}

/// The main file: the one asked for, the only file, a conventional name, package.json's
/// `main`, or the only top-level executable. `None` when ambiguous.
fn detect_main(dir: &Path, files: &[FileEntry], asked: Option<&str>) -> Result<Option<String>> {
    if let Some(m) = asked {
        if !files.iter().any(|f| f.path == m) {
            return Err(Error::Invalid(format!(
                "main {m:?} is not a file of the program"
            )));
        }
        return Ok(Some(m.to_owned()));
    }
    if let [only] = files {
        return Ok(Some(only.path.clone()));
    }
    let has = |p: &str| files.iter().any(|f| f.path == p);
    if let Some(m) = MAIN_NAMES.iter().find(|m| has(m)) {
        return Ok(Some((*m).to_owned()));
    }
    if has("package.json")
        && let Ok(text) = std::fs::read_to_string(dir.join("package.json"))
        && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
        && let Some(m) = v.get("main").and_then(|m| m.as_str())
    {
        let m = m.trim_start_matches("./");
        if has(m) {
            return Ok(Some(m.to_owned()));
        }
    }
    let execs: Vec<&FileEntry> = files
        .iter()
        .filter(|f| f.executable && !f.path.contains('/'))
        .collect();
    if let [only] = execs.as_slice() {
        return Ok(Some(only.path.clone()));
    }
    Ok(None)
}

/// How a main file runs, or why it cannot.
enum HowToRun {
    /// The argv prefix and the runtime's name.
    Ready(Vec<String>, String),
    /// Its extension names a runtime this host lacks (an upload is refused).
    Missing(String),
    /// Nothing says how: no runtime for its extension, no `#!` line, not ELF.
    Unknown(String),
}

fn how_to_run(dir: &Path, main: &ProgramPath, cfg: &ProgramsConfig) -> HowToRun {
    let inside = format!("{INSIDE}/{main}");
    let head = stored_head(dir, main);
    if is_elf(&head) {
        return HowToRun::Ready(vec![inside], "elf".into());
    }
    let ext = Path::new(main.as_str())
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    if let Some((e, interp)) = ext
        .as_deref()
        .and_then(|e| cfg.runtimes.get(e).map(|i| (e, i)))
    {
        return match runtimes::locate(interp) {
            Ok(path) => HowToRun::Ready(vec![path, inside], interp.clone()),
            Err(why) => HowToRun::Missing(format!(
                "the runtime {interp:?} for .{e} files is not available on this host: {why}"
            )),
        };
    }
    if is_shebang(&head) {
        return HowToRun::Ready(vec![inside], "shebang".into());
    }
    HowToRun::Unknown(format!(
        "cannot tell how to run {main:?}: no #! line, not an ELF executable, and no interpreter for {} in programs.runtimes",
        match ext {
            Some(e) => format!(".{e} files"),
            None => "files without an extension".into(),
        }
    ))
}

/// How to start `main`: the argv prefix and the runtime's name.
fn resolve_runtime(
    dir: &Path,
    main: &ProgramPath,
    cfg: &ProgramsConfig,
) -> Result<(Vec<String>, String)> {
    match how_to_run(dir, main, cfg) {
        HowToRun::Ready(argv, name) => Ok((argv, name)),
        HowToRun::Missing(why) | HowToRun::Unknown(why) => Err(Error::Unprocessable(why)),
    }
}

fn row_to_program(r: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, Program)> {
    let files: String = r.get(4)?;
    let main: Option<String> = r.get(5)?;
    Ok((
        r.get(0)?,
        Program {
            id: r.get(1)?,
            name: r.get(2)?,
            kind: r.get(3)?,
            files: serde_json::from_str(&files).unwrap_or_default(),
            needs_main: main.is_none(),
            main,
            runtime: r.get(6)?,
            size: r.get::<_, i64>(7)? as u64,
            sha256: r.get(8)?,
            created_at: rfc3339(r.get(9)?),
            run_count: r.get(10)?,
            last_run_status: r.get(11)?,
            last_run_at: r.get::<_, Option<i64>>(12)?.map(rfc3339),
        },
    ))
}

const COLUMNS: &str = "rowid, id, name, kind, files, main, runtime, size, sha256, created_at, run_count, last_run_status, last_run_at";

/// Removes a program from the running set when its run ends, however it ends.
struct RunGuard<'a> {
    inner: &'a Inner,
    id: String,
    run: u64,
}

impl Drop for RunGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut map) = self.inner.active.lock()
            && let Some(a) = map.get_mut(&self.id)
        {
            a.runs.remove(&self.run);
            if a.runs.is_empty() && !a.deleting {
                map.remove(&self.id);
            }
        }
    }
}

/// A run registered for as long as this is held (a terminal session of the program): deleting
/// the program sees it (409, or with `?force=true` notifies its cancel and waits for it).
pub struct RunHold {
    inner: Arc<Inner>,
    id: String,
    run: u64,
}

impl Drop for RunHold {
    fn drop(&mut self) {
        drop(RunGuard {
            inner: &self.inner,
            id: std::mem::take(&mut self.id),
            run: self.run,
        });
    }
}

impl Programs {
    /// Opens the store under `state_dir/programs`, removing what an interrupted upload or
    /// delete left behind.
    pub fn open(
        db: Db,
        live: Arc<LiveConfig>,
        state_dir: &Path,
        exec: Executor,
        pins: Arc<BlobPins>,
        views: Views,
    ) -> Result<Programs> {
        let root = state_dir.join(layout::PROGRAMS_DIR);
        std::fs::create_dir_all(&root)?;
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700))?;
        for e in std::fs::read_dir(&root)?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                let p = e.path();
                let _ = if p.is_dir() {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
            }
        }
        Ok(Programs {
            inner: Arc::new(Inner {
                db,
                root,
                live,
                exec,
                active: Mutex::new(HashMap::new()),
                next_run: AtomicU64::new(1),
                pins,
                views,
            }),
        })
    }

    fn dir(&self, id: &ProgramId) -> PathBuf {
        id.path_in(&self.inner.root)
    }

    /// Starts an upload: a temp file in the store.
    pub async fn begin_upload(&self) -> Result<Staging> {
        let floor = self.inner.live.get().storage.min_free_disk;
        crate::util::disk::ensure_free(&self.inner.root, floor, 0)?;
        let path = self.inner.root.join(format!(".upload-{}", random_hex(8)?));
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .await?;
        Ok(Staging {
            file,
            hasher: Sha256::new(),
            size: 0,
            max: self.inner.live.get().programs.max_upload_size.bytes(),
            root: self.inner.root.clone(),
            floor,
            checked_at: 0,
            _cleanup: Cleanup(Some(path.clone())),
            path,
        })
    }

    /// Stores a completed upload: a single file, or a ZIP extracted under every rule of
    /// `[programs]`. Nothing is left on disk when it is refused.
    pub async fn finish_upload(
        &self,
        mut staging: Staging,
        meta: UploadMeta,
        actor: &Caller,
    ) -> Result<Program> {
        use tokio::io::AsyncWriteExt;
        staging.file.flush().await?;
        staging.file.sync_all().await?;
        let sha256 = hex::encode(staging.hasher.clone().finalize());
        let size = staging.size;
        if size == 0 {
            return Err(Error::Invalid("the upload is empty".into()));
        }
        let cfg = self.inner.live.get().programs.clone();
        let floor = self.inner.live.get().storage.min_free_disk;
        let pid = ProgramId::random()?;
        let id = pid.as_str().to_owned();
        let tmp = self.inner.root.join(format!(".tmp-{id}"));
        let final_dir = self.dir(&pid);
        let name = meta.name.clone();
        let zip = meta.zip;
        let asked_main = meta.main.clone();
        let staged = staging.path.clone();
        let (files, main, runtime) = tokio::task::spawn_blocking(move || {
            let mut cleanup = Cleanup(Some(tmp.clone()));
            std::fs::create_dir(&tmp)?;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
            let files = if zip {
                extract_zip(&staged, &tmp, &cfg, floor)?
            } else {
                check_file_name(&name, cfg.max_name_length)?;
                let target = tmp.join(&name);
                // Same filesystem: a rename, not a copy (the staging cleanup then finds nothing).
                std::fs::rename(&staged, &target)?;
                File::open(&target)?.sync_all()?;
                let executable = mark_executable(&target)?;
                vec![FileEntry {
                    path: name.clone(),
                    size,
                    executable,
                }]
            };
            let main = detect_main(&tmp, &files, asked_main.as_deref())?;
            // A main whose runtime is missing here is refused (naming it); one nothing says
            // how to run is kept, for a main to be chosen later.
            let runtime = match main.as_deref().and_then(|m| ProgramPath::parse(m).ok()) {
                Some(m) => match how_to_run(&tmp, &m, &cfg) {
                    HowToRun::Ready(_, r) => Some(r),
                    HowToRun::Missing(why) => return Err(Error::Unprocessable(why)),
                    HowToRun::Unknown(_) => None,
                },
                None => None,
            };
            crate::util::fs::sync_dir(&tmp)?;
            std::fs::rename(&tmp, &final_dir)?;
            cleanup.0 = Some(final_dir.clone());
            crate::util::fs::sync_dir(final_dir.parent().unwrap_or(Path::new("/")))?;
            // The directory is complete; the database row (below) makes it visible.
            cleanup.0 = None;
            Ok::<_, Error>((files, main, runtime))
        })
        .await
        .map_err(|e| Error::Internal(format!("upload task failed: {e}")))??;
        drop(staging);
        let total: u64 = files.iter().map(|f| f.size).sum();
        let files_json = serde_json::to_string(&files)
            .map_err(|e| Error::Internal(format!("files list: {e}")))?;
        let kind = if zip { "project" } else { "file" };
        let (id2, name2, caller) = (id.clone(), meta.name.clone(), actor.clone());
        let (main2, runtime2, sha2) = (main.clone(), runtime.clone(), sha256.clone());
        let now = now_unix();
        let stored = self
            .inner
            .db
            .write(move |c| {
                c.execute(
                    "INSERT INTO programs(id, name, kind, files, main, runtime, size, sha256, created_at, run_count)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 0)",
                    params![id2, name2, kind, files_json, main2, runtime2, total as i64, sha2, now],
                )?;
                audit::insert(
                    c,
                    &caller.event("program.upload", &id2, "ok", format!("{kind} {name2:?}, {total} bytes, sha256 {sha2}")),
                )
            })
            .await;
        if let Err(e) = stored {
            let _ = std::fs::remove_dir_all(self.dir(&pid));
            return Err(e);
        }
        Ok(Program {
            id,
            name: meta.name,
            kind: kind.into(),
            files,
            needs_main: main.is_none(),
            main,
            runtime,
            size: total,
            sha256,
            created_at: rfc3339(now),
            run_count: 0,
            last_run_status: None,
            last_run_at: None,
        })
    }

    /// One program.
    pub async fn get(&self, id: &str) -> Result<Program> {
        Ok(self.get_checked(id).await?.1)
    }

    /// One program, its id typed and its record checked ([`check_record`]).
    async fn get_checked(&self, id: &str) -> Result<(ProgramId, Program)> {
        let pid = ProgramId::parse(id).map_err(|_| not_found(id))?;
        let p = self.get_row(&pid).await?;
        check_record(&p)?;
        Ok((pid, p))
    }

    async fn get_row(&self, id: &ProgramId) -> Result<Program> {
        let id2 = id.as_str().to_owned();
        self.inner
            .db
            .read(move |c| {
                Ok(c.query_row(
                    &format!("SELECT {COLUMNS} FROM programs WHERE id = ?1"),
                    params![id2],
                    row_to_program,
                )
                .optional()?)
            })
            .await?
            .map(|(_, p)| p)
            .ok_or_else(|| not_found(id.as_str()))
    }

    /// Programs, newest first.
    pub async fn list(&self, limit: usize, cursor: Option<String>) -> Result<Page> {
        let before = paging::parse_seq_cursor(cursor.as_deref(), 'p')?;
        self.inner
            .db
            .read(move |c| {
                let mut w = crate::store::db::Conditions::default();
                if let Some(b) = before {
                    w.add("rowid <", b);
                }
                let (filter, limit_n, args) = w.finish(paging::take(limit));
                let rows = c
                    .prepare_cached(&format!(
                        "SELECT {COLUMNS} FROM programs {filter} ORDER BY rowid DESC LIMIT ?{limit_n}"
                    ))?
                    .query_map(rusqlite::params_from_iter(args), row_to_program)?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                let (items, next_cursor) =
                    paging::keyed_page(rows, limit, |seq| paging::seq_cursor('p', *seq));
                Ok(Page { items, next_cursor })
            })
            .await
    }

    /// Chooses the main file.
    pub async fn set_main(&self, id: &str, main: &str, caller: &Caller) -> Result<Program> {
        let (pid, p) = self.get_checked(id).await?;
        if !p.files.iter().any(|f| f.path == main) {
            return Err(Error::Invalid(format!(
                "{main:?} is not a file of program {id}"
            )));
        }
        let main_path = ProgramPath::parse(main).map_err(|e| Error::Invalid(e.to_string()))?;
        let cfg = self.inner.live.get().programs.clone();
        let (_, runtime) = resolve_runtime(&self.dir(&pid), &main_path, &cfg)?;
        let (id2, main2, rt2, caller) = (
            id.to_owned(),
            main.to_owned(),
            runtime.clone(),
            caller.clone(),
        );
        self.inner
            .db
            .write(move |c| {
                let n = c.execute(
                    "UPDATE programs SET main = ?2, runtime = ?3 WHERE id = ?1",
                    params![id2, main2, rt2],
                )?;
                if n == 0 {
                    return Err(not_found(&id2));
                }
                audit::insert(
                    c,
                    &caller.event(
                        "program.main",
                        &id2,
                        "ok",
                        format!("main {main2:?} ({rt2})"),
                    ),
                )
            })
            .await?;
        self.get(id).await
    }

    /// Runs a program: its directory read-only at `/program`, a fresh scratch as cwd, the
    /// arguments as given (never through a shell).
    pub async fn run(
        &self,
        id: &str,
        req: RunRequest,
        caller: &Caller,
        stream: Option<mpsc::Sender<Chunk>>,
    ) -> Result<ExecResult> {
        let job = self.run_job(id, req).await?;
        // The executor records the run and the program's counters in one transaction.
        self.inner.exec.run(job, caller, stream).await
    }

    /// Queues a run of the program in the background (`wait: false`); see [`Programs::run`].
    pub async fn submit(
        &self,
        id: &str,
        req: RunRequest,
        caller: &Caller,
    ) -> Result<crate::jobs::exec::Record> {
        let job = self.run_job(id, req).await?;
        self.inner.exec.submit(job, caller).await
    }

    /// The job of a run of program `id`, registered as a run of it for as long as the job
    /// lives (its `hold`), waited for or not: deleting the program sees it.
    async fn run_job(&self, id: &str, req: RunRequest) -> Result<ExecRequest> {
        let (mut job, hold) = self.session_job(id, req.args).await?;
        // The program's own mount at `/program` comes first; the request's data joins it.
        job.data.mounts.extend(req.data.mounts);
        job.data.files = req.data.files;
        job.data.outputs = req.data.outputs;
        job.data.keep_outputs = req.data.keep_outputs;
        Ok(ExecRequest {
            stdin: req.stdin,
            timeout: req.timeout,
            limits: req.limits,
            profile: req.profile,
            owner: req.owner,
            hold: Some(Arc::new(hold)),
            ..job
        })
    }

    /// The job of a terminal session of program `id` (see [`Programs::job`]), registered as
    /// a run of it while the returned hold lives; its `cancel` is notified when the program is
    /// deleted with force.
    pub async fn session_job(&self, id: &str, args: Vec<String>) -> Result<(ExecRequest, RunHold)> {
        let mut job = self.job(id, args).await?;
        let cancel = Arc::new(Notify::new());
        let run = self.inner.next_run.fetch_add(1, Ordering::SeqCst);
        {
            let mut map = self
                .inner
                .active
                .lock()
                .map_err(|_| Error::Internal("running set poisoned".into()))?;
            let a = map.entry(id.to_owned()).or_default();
            if a.deleting {
                return Err(not_found(id));
            }
            a.runs.insert(run, cancel.clone());
        }
        job.cancel = Some(cancel);
        let hold = RunHold {
            inner: self.inner.clone(),
            id: id.to_owned(),
            run,
        };
        Ok((job, hold))
    }

    /// The job that runs program `id` with `args`, as a run does: its main file under its
    /// runtime, the program read-only at `/program`, a fresh scratch `/work` as cwd. A run
    /// adds its input and limits; a terminal session (`jobs::terminals`) runs it as it is.
    pub async fn job(&self, id: &str, args: Vec<String>) -> Result<ExecRequest> {
        let (pid, p) = self.get_checked(id).await?;
        let Some(main) = p.main.clone() else {
            return Err(Error::Conflict(format!(
                "program {id} has no main file yet (needs_main): choose one with PUT /api/v1/programs/{id}/main"
            )));
        };
        let main = ProgramPath::parse(&main).map_err(|e| Error::Internal(e.to_string()))?;
        let cfg = self.inner.live.get().programs.clone();
        let dir = self.dir(&pid);
        // The directory is bind-mounted into the job: it must be the store's own directory,
        // not a symlink planted in its place.
        if !std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
            return Err(Error::Internal(format!(
                "the directory of program {pid} is missing or not a directory"
            )));
        }
        let (mut argv, _) = resolve_runtime(&dir, &main, &cfg)?;
        argv.extend(args);
        Ok(ExecRequest {
            argv,
            // Through a view (hard links under the mounts directory), as any program mount:
            // such a job can take a warm sandbox.
            data: JobData {
                mounts: vec![MountSpec {
                    source: MountSource::Program(id.to_owned()),
                    at: INSIDE.to_owned(),
                    writable: false,
                }],
                ..JobData::default()
            },
            cwd: Some(crate::jobs::sandbox::SCRATCH.to_owned()),
            label: p.name.chars().take(512).collect(),
            kind: "program",
            program_id: Some(id.to_owned()),
            ..ExecRequest::default()
        })
    }

    /// A view of program `id` for one job (`store::views`): its files as hard links, held
    /// until the lease is dropped. 404 for an unknown program or one being deleted.
    pub async fn view(&self, id: &str) -> Result<ViewLease> {
        let (pid, p) = self.get_checked(id).await?;
        let deleting = self
            .inner
            .active
            .lock()
            .map(|m| m.get(id).is_some_and(|a| a.deleting))
            .unwrap_or(false);
        if deleting {
            return Err(not_found(id));
        }
        let dir = self.dir(&pid);
        if !std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
            return Err(Error::Internal(format!(
                "the directory of program {pid} is missing or not a directory"
            )));
        }
        let files: Vec<String> = p.files.iter().map(|f| f.path.clone()).collect();
        let lease = self.inner.views.program(id, &dir, &files).await?;
        // Deleted while its view was built: the view goes with it (the delete may have looked
        // for it before it was there).
        if !dir.is_dir() {
            drop(lease);
            self.inner.views.forget_program(id);
            return Err(not_found(id));
        }
        Ok(lease)
    }

    /// A program's run history; with `owner`, only that owner's runs (a caller who is not
    /// admin sees its own runs, as with every execution).
    pub async fn runs(
        &self,
        id: &str,
        owner: Option<String>,
        limit: usize,
        cursor: Option<String>,
    ) -> Result<crate::jobs::exec::Page> {
        self.get(id).await?;
        let filter = crate::jobs::exec::Filter {
            program_id: Some(id.to_owned()),
            owner,
            ..Default::default()
        };
        self.inner.exec.list(filter, limit, cursor).await
    }

    /// Removes program directories without a database row (a crash between the rename into
    /// place and the commit). Returns how many.
    pub async fn sweep_orphans(&self) -> Result<usize> {
        let known: HashSet<String> = self
            .inner
            .db
            .read(|c| {
                let mut st = c.prepare("SELECT id FROM programs")?;
                let ids = st
                    .query_map([], |r| r.get::<_, String>(0))?
                    .collect::<rusqlite::Result<HashSet<String>>>()?;
                Ok(ids)
            })
            .await?;
        let root = self.inner.root.clone();
        tokio::task::spawn_blocking(move || {
            let mut n = 0;
            for e in std::fs::read_dir(&root)?.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if valid_id(&name) && !known.contains(&name) {
                    std::fs::remove_dir_all(e.path())?;
                    n += 1;
                }
            }
            Ok(n)
        })
        .await
        .map_err(|e| Error::Internal(format!("sweep task failed: {e}")))?
    }

    /// Writes the program's files as a ZIP (deflated) to an unlinked temp file and returns it
    /// positioned at the start, with its length.
    pub async fn archive(&self, id: &str) -> Result<(File, u64, String)> {
        let (pid, p) = self.get_checked(id).await?;
        let dir = self.dir(&pid);
        let tmp = self.inner.root.join(format!(".zip-{}", random_hex(8)?));
        let files = p.files.clone();
        let file = tokio::task::spawn_blocking(move || {
            let cleanup = Cleanup(Some(tmp.clone()));
            let out = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            // Unlinked at once: the open file is all that is left, and it goes when closed.
            drop(cleanup);
            let mut w = zip::ZipWriter::new(out);
            for f in &files {
                let opts = zip::write::SimpleFileOptions::default()
                    .compression_method(zip::CompressionMethod::Deflated)
                    .unix_permissions(if f.executable { 0o755 } else { 0o644 })
                    .large_file(f.size >= u32::MAX as u64);
                w.start_file(f.path.as_str(), opts)
                    .map_err(|e| Error::Internal(format!("zip: {e}")))?;
                // Beneath the program's directory, never through a symlink.
                let rel =
                    ProgramPath::parse(&f.path).map_err(|e| Error::Internal(e.to_string()))?;
                let mut src = open_beneath(&dir, rel.as_str()).map_err(|e| {
                    Error::Internal(format!(
                        "program file {rel} cannot be opened in the store: {e}"
                    ))
                })?;
                std::io::copy(&mut src, &mut w)?;
            }
            let mut out = w
                .finish()
                .map_err(|e| Error::Internal(format!("zip: {e}")))?;
            let len = std::io::Seek::seek(&mut out, std::io::SeekFrom::End(0))?;
            std::io::Seek::seek(&mut out, std::io::SeekFrom::Start(0))?;
            Ok::<_, Error>((out, len))
        })
        .await
        .map_err(|e| Error::Internal(format!("archive task failed: {e}")))??;
        let base = p.name.strip_suffix(".zip").unwrap_or(&p.name).to_owned();
        Ok((file.0, file.1, format!("{base}.zip")))
    }

    /// Whether a run of `id` is in progress.
    pub fn running(&self, id: &str) -> bool {
        self.inner
            .active
            .lock()
            .map(|m| m.get(id).is_some_and(|a| !a.runs.is_empty()))
            .unwrap_or(false)
    }

    /// Deletes a program. While it runs: a conflict, unless `force` kills its runs first.
    pub async fn delete(&self, id: &str, force: bool, caller: &Caller) -> Result<()> {
        let (pid, _) = self.get_checked(id).await?;
        let cancels: Vec<Arc<Notify>> = {
            let mut map = self
                .inner
                .active
                .lock()
                .map_err(|_| Error::Internal("running set poisoned".into()))?;
            let a = map.entry(id.to_owned()).or_default();
            if a.deleting {
                return Err(Error::Conflict(format!("program {id} is being deleted")));
            }
            if !a.runs.is_empty() && !force {
                let n = a.runs.len();
                return Err(Error::Conflict(format!(
                    "program {id} has {n} run(s) in progress; wait, or delete with ?force=true to kill them"
                )));
            }
            a.deleting = true;
            a.runs.values().cloned().collect()
        };
        let result = self.delete_now(&pid, cancels, caller).await;
        if let Ok(mut map) = self.inner.active.lock() {
            match map.get_mut(id) {
                Some(a) if a.runs.is_empty() => {
                    map.remove(id);
                }
                Some(a) => a.deleting = false,
                None => {}
            }
        }
        result
    }

    async fn delete_now(
        &self,
        pid: &ProgramId,
        cancels: Vec<Arc<Notify>>,
        caller: &Caller,
    ) -> Result<()> {
        let id = pid.as_str();
        for c in &cancels {
            c.notify_one();
        }
        // Killed runs end within moments; wait for them so their history is recorded.
        for _ in 0..200 {
            if !self.running(id) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let dir = self.dir(pid);
        let trash = self
            .inner
            .root
            .join(format!("{}{id}", layout::PROGRAMS_TRASH_PREFIX));
        if dir.exists() {
            tokio::fs::rename(&dir, &trash).await?;
        }
        let (id2, caller, killed) = (id.to_owned(), caller.clone(), cancels.len());
        let removed = self
            .inner
            .db
            .write(move |c| {
                let n = c.execute("DELETE FROM programs WHERE id = ?1", params![id2])?;
                if n == 0 {
                    return Err(not_found(&id2));
                }
                audit::insert(
                    c,
                    &caller.event(
                        "program.delete",
                        &id2,
                        "ok",
                        format!("{killed} run(s) killed"),
                    ),
                )
            })
            .await;
        match removed {
            Ok(()) => {
                self.inner.views.forget_program(id);
                let pins = self.inner.pins.clone();
                let _ = tokio::task::spawn_blocking(move || pins.remove(trash)).await;
                Ok(())
            }
            Err(e) => {
                let _ = tokio::fs::rename(&trash, &dir).await;
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use std::io::Cursor;
    use zip::write::SimpleFileOptions;

    fn cfg() -> ProgramsConfig {
        ProgramsConfig::default()
    }

    fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for (name, data) in entries {
            w.start_file(*name, SimpleFileOptions::default()).unwrap();
            w.write_all(data).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    fn extract(bytes: &[u8], cfg: &ProgramsConfig) -> (tempfile::TempDir, Result<Vec<FileEntry>>) {
        let t = tempfile::tempdir().unwrap();
        let zp = t.path().join("in.zip");
        std::fs::write(&zp, bytes).unwrap();
        let dest = t.path().join("out");
        std::fs::create_dir(&dest).unwrap();
        let r = extract_zip(&zp, &dest, cfg, crate::config::ByteSize(0));
        (t, r)
    }

    #[test]
    fn a_zip_that_would_cross_the_free_disk_floor_is_refused_before_writing() {
        let t = tempfile::tempdir().unwrap();
        let zp = t.path().join("in.zip");
        // The central directory says the entry unpacks to 2 GiB (its data is 9 bytes): what
        // is declared counts, capped by programs.max-unpacked-size (1 GiB).
        let mut bytes = zip_of(&[("main.py", b"print(1)\n")]);
        let cd = bytes
            .windows(4)
            .position(|w| w == [0x50, 0x4b, 0x01, 0x02])
            .unwrap();
        bytes[cd + 24..cd + 28].copy_from_slice(&0x8000_0000u32.to_le_bytes());
        std::fs::write(&zp, &bytes).unwrap();
        let dest = t.path().join("out");
        std::fs::create_dir(&dest).unwrap();
        let free = crate::util::disk::free_bytes(&dest).unwrap();
        // Half a GiB below what is free: 1 GiB declared crosses it, whatever else the machine
        // writes or deletes meanwhile.
        let floor = crate::config::ByteSize(free.saturating_sub(512 << 20));
        let e = extract_zip(&zp, &dest, &cfg(), floor).unwrap_err();
        assert!(
            matches!(e, Error::InsufficientStorage(ref m) if m.contains("storage.min-free-disk")),
            "{e}"
        );
        assert_eq!(std::fs::read_dir(&dest).unwrap().count(), 0);
        // Control: with room, the same archive gets past the check (and is then refused for
        // what it really is: its data does not match the size it declared).
        let e = extract_zip(&zp, &dest, &cfg(), crate::config::ByteSize(0)).unwrap_err();
        assert!(!matches!(e, Error::InsufficientStorage(_)), "{e}");
    }

    #[test]
    fn entry_names_are_checked() {
        let c = cfg();
        assert_eq!(check_entry_name(b"a/b.py", &c).unwrap(), "a/b.py");
        assert_eq!(check_entry_name(b"pkg/", &c).unwrap(), "pkg");
        for (bad, rule) in [
            (&b"../x"[..], "zip-slip"),
            (b"a/../../x", "zip-slip"),
            (b"/etc/passwd", "absolute"),
            (b"C:/x", "absolute"),
            (b"a\\b", "backslash"),
            (b"a//b", "empty"),
            (b"./a", "empty"),
        ] {
            let e = check_entry_name(bad, &c).unwrap_err().to_string();
            assert!(e.contains(rule), "{bad:?}: {e}");
        }
        let deep = "d/".repeat(40) + "f";
        assert!(
            check_entry_name(deep.as_bytes(), &c)
                .unwrap_err()
                .to_string()
                .contains("max-depth")
        );
        let long = "x".repeat(2000);
        assert!(
            check_entry_name(long.as_bytes(), &c)
                .unwrap_err()
                .to_string()
                .contains("max-name-length")
        );
    }

    #[test]
    fn a_real_high_ratio_entry_is_refused_by_counting() {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        w.start_file(
            "zeros.bin",
            SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated),
        )
        .unwrap();
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..16 {
            w.write_all(&chunk).unwrap();
        }
        let bytes = w.finish().unwrap().into_inner();
        let (_t, r) = extract(&bytes, &cfg());
        let e = r.unwrap_err().to_string();
        assert!(e.contains("zeros.bin") && e.contains("max-ratio"), "{e}");
    }

    #[test]
    fn duplicates_and_symlinks_are_refused() {
        // The writer refuses duplicate names, so rename the second entry in place.
        let mut bytes = zip_of(&[("a.txt", b"1"), ("b.txt", b"2")]);
        let positions: Vec<usize> = bytes
            .windows(5)
            .enumerate()
            .filter(|(_, w)| *w == b"b.txt")
            .map(|(i, _)| i)
            .collect();
        for i in positions {
            bytes[i] = b'a';
        }
        let (_t, r) = extract(&bytes, &cfg());
        let e = r.unwrap_err().to_string();
        assert!(e.contains("\"a.txt\": duplicate name"), "{e}");

        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        w.add_symlink("link", "/etc/passwd", SimpleFileOptions::default())
            .unwrap();
        let bytes = w.finish().unwrap().into_inner();
        let (_t, r) = extract(&bytes, &cfg());
        let e = r.unwrap_err().to_string();
        assert!(e.contains("symbolic link") && e.contains("link"), "{e}");
    }

    #[test]
    fn main_detection() {
        let t = tempfile::tempdir().unwrap();
        let f = |p: &str, x: bool| FileEntry {
            path: p.into(),
            size: 1,
            executable: x,
        };
        assert_eq!(
            detect_main(t.path(), &[f("x.rb", false)], None).unwrap(),
            Some("x.rb".into())
        );
        assert_eq!(
            detect_main(t.path(), &[f("lib.py", false), f("main.py", false)], None).unwrap(),
            Some("main.py".into())
        );
        assert_eq!(
            detect_main(t.path(), &[f("a.py", false), f("b.py", false)], None).unwrap(),
            None
        );
        assert_eq!(
            detect_main(t.path(), &[f("a.py", false), f("run", true)], None).unwrap(),
            Some("run".into())
        );
        std::fs::write(t.path().join("package.json"), r#"{"main":"./srv/app.js"}"#).unwrap();
        assert_eq!(
            detect_main(
                t.path(),
                &[f("package.json", false), f("srv/app.js", false)],
                None
            )
            .unwrap(),
            Some("srv/app.js".into())
        );
        assert!(detect_main(t.path(), &[f("a.py", false)], Some("b.py")).is_err());
    }

    #[test]
    fn runtimes_are_resolved_or_refused_by_name() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("a.sh"), "echo hi\n").unwrap();
        std::fs::write(t.path().join("a.xyz"), "data\n").unwrap();
        std::fs::write(t.path().join("run"), "#!/bin/sh\necho hi\n").unwrap();
        let mut c = cfg();
        let (argv, rt) =
            resolve_runtime(t.path(), &ProgramPath::parse("a.sh").unwrap(), &c).unwrap();
        assert_eq!(rt, "sh");
        assert_eq!(argv[1], "/program/a.sh");
        assert_eq!(
            resolve_runtime(t.path(), &ProgramPath::parse("run").unwrap(), &c)
                .unwrap()
                .1,
            "shebang"
        );
        let e = resolve_runtime(t.path(), &ProgramPath::parse("a.xyz").unwrap(), &c)
            .unwrap_err()
            .to_string();
        assert!(e.contains(".xyz"), "{e}");
        c.runtimes.insert("sh".into(), "no-such-shell-here".into());
        let e = resolve_runtime(t.path(), &ProgramPath::parse("a.sh").unwrap(), &c)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no-such-shell-here"), "{e}");
    }
}
