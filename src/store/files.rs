//! The file store: user paths such as `a/b/c.txt` (virtual folders) mapped to blobs kept by
//! an internal id under `$STATE_DIRECTORY/files/blobs/`, so no user-supplied name ever reaches
//! the filesystem. No HTTP here.
//!
//! An upload streams to a temp file in `files/tmp/` (same filesystem) while SHA-256 is
//! computed; then fsync → rename into `blobs/` → fsync of `blobs/` → the metadata commits
//! (with its audit row) → the blob it replaced, if any, is unlinked. Quotas
//! (`files.max-file-size`, `files.max-total-size`, `storage.min-free-disk`) are checked up
//! front and again while the body streams; crossing one aborts at once and removes the temp
//! file. A crash between steps leaves temp files or blobs without metadata: [`Files::recover`]
//! removes them at startup. Metadata whose blob is gone is reported, never hidden.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt};

use crate::config::{Config, LiveConfig};
use crate::error::{Error, Result};
use crate::store::audit::{self, Caller, Event};
use crate::store::db::Db;
use crate::store::pins::BlobPins;
use crate::store::stored::{BlobId, open_beneath};
use crate::util::layout::{BLOBS_DIR, FILES_TMP_DIR};
use crate::util::paging;
use crate::util::time::{from_ms, now_ms, rfc3339_ms};

/// Longest path, in bytes.
pub const MAX_PATH_BYTES: usize = 1024;
/// Longest segment (one name between slashes), in bytes: what most filesystems allow.
pub const MAX_NAME_BYTES: usize = 255;
/// How often (in streamed bytes) the free-disk floor is checked again during an upload.
const DISK_CHECK_EVERY: u64 = 16 << 20;
/// Size of the buffers handed to the disk writer. The network's chunks are copied into them:
/// a chunk can keep hyper's whole read buffer (up to ~400 KiB) alive, so holding chunks
/// would make an upload's memory depend on how the bytes arrived.
const WRITE_CHUNK: usize = 256 << 10;
/// Buffers queued for the disk writer: at most (WRITE_QUEUE + 2) × WRITE_CHUNK per upload.
const WRITE_QUEUE: usize = 4;
/// Read size of downloads.
pub const READ_CHUNK: usize = 256 << 10;

/// Checks a user path; the error names the rule it breaks.
pub fn validate_path(path: &str) -> Result<()> {
    let bad = |m: String| Err(Error::InvalidPath(m));
    if path.is_empty() {
        return bad("the file path is empty".into());
    }
    if path.len() > MAX_PATH_BYTES {
        return bad(format!(
            "the file path is {} bytes long; at most {MAX_PATH_BYTES} are allowed",
            path.len()
        ));
    }
    if path.starts_with('/') {
        return bad("absolute paths are not allowed: give the path without a leading /".into());
    }
    if let Some(c) = path.chars().find(|c| c.is_control()) {
        let what = if c == '\0' {
            "a NUL character".to_owned()
        } else {
            format!("the control character U+{:04X}", u32::from(c))
        };
        return bad(format!(
            "the file path contains {what}; control characters are not allowed"
        ));
    }
    for seg in path.split('/') {
        if seg.is_empty() {
            return bad(
                "the file path has an empty segment (a doubled or trailing /); name every folder"
                    .into(),
            );
        }
        if seg == "." || seg == ".." {
            return bad(format!(
                "the file path has a {seg:?} segment; . and .. are not allowed"
            ));
        }
        if seg.len() > MAX_NAME_BYTES {
            return bad(format!(
                "a name in the file path is {} bytes long; at most {MAX_NAME_BYTES} are allowed",
                seg.len()
            ));
        }
    }
    Ok(())
}

/// The content type a name implies (`application/octet-stream` when unknown).
pub fn content_type_for(path: &str) -> String {
    mime_guess::from_path(path)
        .first_or_octet_stream()
        .essence_str()
        .to_owned()
}

/// One stored file, as listed and as `?meta=1` shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FileMeta {
    pub path: String,
    pub size: u64,
    /// Hex SHA-256 of the content (also the download's ETag).
    pub sha256: String,
    pub content_type: String,
    pub created: String,
    pub modified: String,
    /// Modification time, milliseconds since the epoch (Last-Modified, sorting).
    #[serde(skip)]
    pub modified_ms: i64,
    #[serde(skip)]
    created_ms: i64,
    #[serde(skip)]
    blob: String,
}

impl FileMeta {
    /// The modification time as a `SystemTime` (whole seconds are what HTTP dates carry).
    pub fn modified_time(&self) -> SystemTime {
        from_ms(self.modified_ms)
    }
}

const META_COLUMNS: &str = "path, size, sha256, content_type, created_ms, modified_ms, blob";

fn meta_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<FileMeta> {
    let created: i64 = r.get(4)?;
    let modified: i64 = r.get(5)?;
    Ok(FileMeta {
        path: r.get(0)?,
        size: u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
        sha256: r.get(2)?,
        content_type: r.get(3)?,
        created: rfc3339_ms(created),
        modified: rfc3339_ms(modified),
        modified_ms: modified,
        created_ms: created,
        blob: r.get(6)?,
    })
}

fn get_meta(c: &rusqlite::Connection, path: &str) -> Result<Option<FileMeta>> {
    use rusqlite::OptionalExtension;
    Ok(c.query_row(
        &format!("SELECT {META_COLUMNS} FROM files WHERE path = ?1"),
        [path],
        meta_from_row,
    )
    .optional()?)
}

/// Conditions on the file currently at the path.
#[derive(Debug, Clone, Default)]
pub struct Conditions {
    /// Refuse if a file exists there (`If-None-Match: *`).
    pub create_only: bool,
    /// Replace only if the current file's SHA-256 is one of these (`*`: any existing file).
    pub if_match: Option<Vec<String>>,
}

impl Conditions {
    fn check(&self, path: &str, current: Option<&FileMeta>) -> Result<()> {
        if self.create_only && current.is_some() {
            return Err(Error::PreconditionFailed(format!(
                "{path} exists and the upload asked not to replace it (If-None-Match: *)"
            )));
        }
        if let Some(list) = &self.if_match {
            let ok = current.is_some_and(|m| {
                list.iter()
                    .any(|t| t == "*" || t.eq_ignore_ascii_case(&m.sha256))
            });
            if !ok {
                return Err(Error::PreconditionFailed(format!(
                    "{path} is not at the version the upload names (If-Match)"
                )));
            }
        }
        Ok(())
    }
}

/// A stored upload.
#[derive(Debug, Clone)]
pub struct Stored {
    pub meta: FileMeta,
    /// No file was at the path before.
    pub created: bool,
}

/// `GET /api/v1/files` ordering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sort {
    Name,
    Size,
    Modified,
}

impl Sort {
    fn tag(self) -> char {
        match self {
            Sort::Name => 'n',
            Sort::Size => 's',
            Sort::Modified => 'm',
        }
    }
}

pub struct Page {
    pub items: Vec<FileMeta>,
    pub next_cursor: Option<String>,
}

/// The store's figures.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Usage {
    pub used_bytes: u64,
    pub file_count: u64,
    pub quota_bytes: u64,
    pub max_file_bytes: u64,
    /// `files.max-files`.
    pub quota_files: u64,
    pub free_disk_bytes: u64,
    pub min_free_disk_bytes: u64,
    /// Files whose metadata exists but whose content is gone (see `/ready`).
    pub missing_blobs: u64,
}

/// What startup recovery found.
#[derive(Debug, Clone, Default)]
pub struct Recovered {
    pub temp_files_removed: usize,
    pub orphan_blobs_removed: usize,
    /// Paths whose metadata has no blob.
    pub missing: Vec<String>,
    pub used_bytes: u64,
    pub file_count: u64,
}

/// A byte range as a client asks for it; [`resolve_range`] checks it against the size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeSpec {
    /// `first-last` (inclusive; `last` may lie beyond the end).
    FromTo(u64, u64),
    /// `first-`: to the end.
    From(u64),
    /// `-n`: the last n bytes.
    Suffix(u64),
}

/// The inclusive (first, last) byte of `spec` in a file of `size` bytes.
pub fn resolve_range(spec: RangeSpec, size: u64) -> Result<(u64, u64)> {
    let unsatisfiable = Err(Error::RangeNotSatisfiable { size });
    match spec {
        RangeSpec::FromTo(first, last) if first <= last && first < size => {
            Ok((first, last.min(size - 1)))
        }
        RangeSpec::From(first) if first < size => Ok((first, size - 1)),
        RangeSpec::Suffix(n) if n > 0 && size > 0 => Ok((size - n.min(size), size - 1)),
        _ => unsatisfiable,
    }
}

/// Bytes and files counted against the store's quotas: what is committed and what uploads in
/// flight hold (an upload of a new path holds one file until it commits or ends).
#[derive(Debug, Default)]
struct Counters {
    committed: u64,
    inflight: u64,
    files: u64,
    inflight_files: u64,
}

struct Inner {
    db: Db,
    live: Arc<LiveConfig>,
    root: PathBuf,
    counters: Mutex<Counters>,
    /// Paths whose metadata has no blob (found at startup or on a read).
    missing: Mutex<BTreeSet<String>>,
    /// Blob removals wait while a backup runs (it may still have to read them).
    pins: Arc<BlobPins>,
    /// When each folder last changed, for views of folders (`store::views`) to tell in O(1)
    /// whether they are still current.
    changes: Mutex<Changes>,
    /// Called after every committed change (on the database's writer thread: it must be quick
    /// and must not touch the database).
    on_change: std::sync::OnceLock<Box<dyn Fn() + Send + Sync>>,
}

/// Folder change counters, in memory (views are a cache rebuilt after a restart): every
/// committed change to a path takes the next number and stamps it on each folder above the
/// path (`""`, `a/`, `a/b/` for `a/b/c.txt`). Stamped on the database's writer thread right
/// after the commit, in commit order, so a check made inside a later write transaction sees
/// every change committed before it.
#[derive(Debug, Default)]
struct Changes {
    seq: u64,
    folders: HashMap<String, u64>,
}

impl Changes {
    fn stamp<'a>(&mut self, paths: impl IntoIterator<Item = &'a str>) {
        self.seq += 1;
        let seq = self.seq;
        for p in paths {
            self.folders.insert(String::new(), seq);
            for (i, b) in p.bytes().enumerate() {
                if b == b'/' {
                    self.folders.insert(p[..=i].to_owned(), seq);
                }
            }
        }
    }

    fn of(&self, folder: &str) -> u64 {
        self.folders.get(folder).copied().unwrap_or(0)
    }
}

impl Inner {
    fn counters(&self) -> MutexGuard<'_, Counters> {
        match self.counters.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }
    fn missing(&self) -> MutexGuard<'_, BTreeSet<String>> {
        match self.missing.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }
    fn changes(&self) -> MutexGuard<'_, Changes> {
        match self.changes.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }
    /// Stamps the folders above `paths` as changed, then tells the listener.
    fn changed<'a>(&self, paths: impl IntoIterator<Item = &'a str>) {
        self.changes().stamp(paths);
        if let Some(f) = self.on_change.get() {
            f();
        }
    }
    fn tmp_dir(&self) -> PathBuf {
        self.root.join(FILES_TMP_DIR)
    }
    fn blob_dir(&self) -> PathBuf {
        self.root.join(BLOBS_DIR)
    }
    fn blob_path(&self, id: &BlobId) -> PathBuf {
        id.path_in(&self.blob_dir())
    }
}

/// The blob id the metadata of `path` names, validated: the database may have been restored
/// from an archive or edited, and a blob id is joined to `blobs/`.
fn stored_blob(path: &str, blob: &str) -> Result<BlobId> {
    BlobId::parse(blob).map_err(|e| {
        Error::Internal(format!(
            "the metadata of {path} names {e}: not a blob of the store"
        ))
    })
}

/// The file store; cheap to clone.
#[derive(Clone)]
pub struct Files {
    inner: Arc<Inner>,
}

/// Removes a file when dropped unless disarmed: a temp file or blob of an upload that did not
/// commit, whichever way it ended (error, client gone, task cancelled).
struct Cleanup(Option<PathBuf>);

impl Cleanup {
    /// The file is now what it should be (committed): keep it.
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(p) = self.0.take()
            && let Err(e) = std::fs::remove_file(&p)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %p.display(), error = %e, "cannot remove an unfinished upload's file");
        }
    }
}

/// Bytes (and the new file, if it is one) of one upload counted as in flight; given back
/// when dropped.
struct Reservation {
    inner: Arc<Inner>,
    bytes: u64,
    files: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        // Zero once a commit has moved them to the committed counts (under the lock it holds).
        if self.bytes == 0 && self.files == 0 {
            return;
        }
        let mut c = self.inner.counters();
        c.inflight = c.inflight.saturating_sub(self.bytes);
        c.inflight_files = c.inflight_files.saturating_sub(self.files);
    }
}

/// One file streamed to disk, fsync'd, hashed, waiting for its commit.
struct Staged {
    path: String,
    tmp: PathBuf,
    cleanup: Cleanup,
    reservation: Reservation,
    size: u64,
    sha256: String,
    /// The time a new file is stored with (ms since the epoch) instead of now: an import
    /// keeps the original's ([`Batch::keep_time`]).
    time_ms: Option<i64>,
}

enum Msg {
    Data(Bytes),
    Done,
}

fn io_error(e: std::io::Error) -> Error {
    match e.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => Error::InsufficientStorage(
            "the state directory's disk is full; the upload was not stored".into(),
        ),
        _ => Error::Io(e),
    }
}

/// The blocking half of an upload: writes the buffers that arrive (the async half hashes
/// meanwhile, so hashing and writing use two cores) and fsyncs on `Done`. A queue closed
/// without `Done` means the upload was aborted: the temp file is removed.
fn write_temp(path: &Path, mut rx: mpsc::Receiver<Msg>) -> Result<u64> {
    // 0644: a view (`store::views`) links blobs into what a job with its own uid reads; the
    // state directory (0700) keeps everyone else out.
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(BLOB_MODE)
        .open(path)
        .map_err(io_error)?;
    let mut n: u64 = 0;
    let result = loop {
        match rx.blocking_recv() {
            Some(Msg::Data(b)) => {
                n += b.len() as u64;
                if let Err(e) = file.write_all(&b) {
                    break Err(io_error(e));
                }
            }
            Some(Msg::Done) => break Ok(()),
            None => break Err(Error::Internal("upload aborted".into())),
        }
    };
    match result.and_then(|()| file.sync_all().map_err(io_error)) {
        Ok(()) => Ok(n),
        Err(e) => {
            drop(file);
            let _ = std::fs::remove_file(path);
            Err(e)
        }
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    crate::util::fs::sync_dir(dir).map_err(io_error)
}

/// The mode of a blob: readable by a job's uid through a view (the state directory, 0700,
/// keeps everyone else out).
pub const BLOB_MODE: u32 = 0o644;

/// One file of a folder, as a view of the folder links it.
#[derive(Debug, Clone)]
pub struct FolderEntry {
    /// Its path beneath the folder.
    pub rel: String,
    /// Its blob on disk.
    pub blob: PathBuf,
    pub size: u64,
    pub sha256: String,
}

/// Uploads that commit together: one file (`PUT`) or all files of a form (`POST`). Nothing is
/// visible until [`Batch::commit`], and then all of them are.
pub struct Batch {
    files: Files,
    cond: Conditions,
    caller: Caller,
    staged: Vec<Staged>,
    /// Paths removed by the same transaction (a read-write mount's deleted files).
    deletions: Vec<String>,
    /// Folders that must not have changed since the given change number (see
    /// [`Files::folder_version`]), checked inside the transaction: a conflict otherwise.
    unchanged: Vec<(String, u64)>,
}

impl Files {
    /// The store under `root` (`$STATE_DIRECTORY/files`). Touches nothing on disk. Blobs of
    /// deleted or replaced files are removed through `pins` (after any backup in progress).
    pub fn new(db: Db, live: Arc<LiveConfig>, root: PathBuf, pins: Arc<BlobPins>) -> Files {
        Files {
            inner: Arc::new(Inner {
                db,
                live,
                root,
                counters: Mutex::new(Counters::default()),
                missing: Mutex::new(BTreeSet::new()),
                pins,
                changes: Mutex::new(Changes::default()),
                on_change: std::sync::OnceLock::new(),
            }),
        }
    }

    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    fn ensure_dirs(&self) -> Result<()> {
        for d in [self.inner.tmp_dir(), self.inner.blob_dir()] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&d)
                .map_err(io_error)?;
        }
        Ok(())
    }

    /// Startup recovery, before the daemon serves: removes every temp file (an upload cut by a
    /// crash) and every blob without metadata (a crash between rename and commit, or between
    /// commit and unlinking a replaced blob); notes metadata whose blob is gone; loads usage.
    pub async fn recover(&self) -> Result<Recovered> {
        self.ensure_dirs()?;
        let known: Vec<(String, String, u64)> = self
            .inner
            .db
            .read(|c| {
                let mut st = c.prepare("SELECT path, blob, size FROM files")?;
                let rows = st
                    .query_map([], |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
                        ))
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(rows)
            })
            .await?;
        let inner = self.inner.clone();
        let report = tokio::task::spawn_blocking(move || -> Result<Recovered> {
            let mut rec = Recovered::default();
            for entry in std::fs::read_dir(inner.tmp_dir()).map_err(io_error)? {
                let entry = entry.map_err(io_error)?;
                std::fs::remove_file(entry.path()).map_err(io_error)?;
                rec.temp_files_removed += 1;
            }
            let blobs: HashSet<&str> = known.iter().map(|(_, b, _)| b.as_str()).collect();
            let mut present = HashSet::new();
            for entry in std::fs::read_dir(inner.blob_dir()).map_err(io_error)? {
                let entry = entry.map_err(io_error)?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if blobs.contains(name.as_str()) {
                    present.insert(name);
                } else {
                    std::fs::remove_file(entry.path()).map_err(io_error)?;
                    rec.orphan_blobs_removed += 1;
                }
            }
            if rec.orphan_blobs_removed > 0 {
                sync_dir(&inner.blob_dir())?;
            }
            if rec.temp_files_removed > 0 {
                sync_dir(&inner.tmp_dir())?;
            }
            for (path, blob, size) in &known {
                if present.contains(blob) {
                    rec.used_bytes += size;
                    rec.file_count += 1;
                } else {
                    rec.missing.push(path.clone());
                }
            }
            let all: u64 = known.iter().map(|(_, _, s)| s).sum();
            {
                let mut c = inner.counters();
                c.committed = all;
                c.files = known.len() as u64;
            }
            *inner.missing() = rec.missing.iter().cloned().collect();
            Ok(rec)
        })
        .await
        .map_err(|e| Error::Internal(format!("recovery task failed: {e}")))??;
        Ok(report)
    }

    /// Paths whose metadata has no blob.
    pub fn missing(&self) -> Vec<String> {
        self.inner.missing().iter().cloned().collect()
    }

    /// Stores one file at `path` from `body`, replacing any file there atomically (unless
    /// `cond` says otherwise). `declared_len` (Content-Length) lets limits refuse up front;
    /// `expected_sha256` (hex) is checked before anything becomes visible.
    pub async fn put<S, E>(
        &self,
        path: &str,
        body: S,
        declared_len: Option<u64>,
        expected_sha256: Option<String>,
        cond: Conditions,
        caller: Caller,
    ) -> Result<Stored>
    where
        S: Stream<Item = std::result::Result<Bytes, E>>,
        E: std::fmt::Display,
    {
        validate_path(path)?;
        let cfg = self.inner.live.get();
        if let Some(len) = declared_len
            && len > cfg.files.max_file_size.bytes()
        {
            return Err(too_large(&cfg));
        }
        let mut batch = self.batch(cond, caller, None)?;
        batch.add(path, body, declared_len, expected_sha256).await?;
        let mut stored = batch.commit().await?;
        stored
            .pop()
            .ok_or_else(|| Error::Internal("a one-file upload stored nothing".into()))
    }

    /// Starts uploads that commit together. `declared_total` (the whole body's length) lets
    /// the store and disk limits refuse up front.
    pub fn batch(
        &self,
        cond: Conditions,
        caller: Caller,
        declared_total: Option<u64>,
    ) -> Result<Batch> {
        let cfg = self.inner.live.get();
        if let Some(len) = declared_total {
            let c = self.inner.counters();
            if c.committed.saturating_add(c.inflight).saturating_add(len)
                > cfg.files.max_total_size.bytes()
            {
                return Err(quota_exceeded(&cfg));
            }
            drop(c);
            check_disk(&self.inner.root, &cfg, len)?;
        }
        Ok(Batch {
            files: self.clone(),
            cond,
            caller,
            staged: Vec::new(),
            deletions: Vec::new(),
            unchanged: Vec::new(),
        })
    }

    /// Sets what is called after every committed change (once; later calls are ignored). It
    /// runs on the database's writer thread, right after the commit: it must be quick.
    pub fn on_change(&self, f: Box<dyn Fn() + Send + Sync>) {
        let _ = self.inner.on_change.set(f);
    }

    /// The change number of `folder` (`""`, or a path ending in `/`): it grows whenever a file
    /// beneath it is created, replaced or deleted. O(1), in memory.
    pub fn folder_version(&self, folder: &str) -> u64 {
        self.inner.changes().of(folder)
    }

    /// Every file beneath `folder` (`""` or ending in `/`) with its blob, and the folder's
    /// change number read before them (a change while they are read makes the number stale,
    /// never the other way round).
    pub async fn folder_entries(&self, folder: &str) -> Result<(u64, Vec<FolderEntry>)> {
        let version = self.folder_version(folder);
        let prefix = folder.to_owned();
        let rows: Vec<(String, String, u64, String)> = self
            .inner
            .db
            .read(move |c| {
                let mut w = crate::store::db::Conditions::default();
                if !prefix.is_empty() {
                    w.add("path >=", prefix.clone());
                    if let Some(upper) = crate::store::db::prefix_upper(&prefix) {
                        w.add("path <", upper);
                    }
                }
                let (filter, limit, args) = w.finish(i64::MAX);
                let mut st = c.prepare(&format!(
                    "SELECT path, blob, size, sha256 FROM files {filter} ORDER BY path LIMIT ?{limit}"
                ))?;
                let rows = st
                    .query_map(rusqlite::params_from_iter(args), |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
                            r.get::<_, String>(3)?,
                        ))
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(rows)
            })
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for (path, blob, size, sha256) in rows {
            let id = stored_blob(&path, &blob)?;
            let Some(rel) = path.strip_prefix(folder) else {
                continue;
            };
            out.push(FolderEntry {
                rel: rel.to_owned(),
                blob: self.inner.blob_path(&id),
                size,
                sha256,
            });
        }
        Ok((version, out))
    }

    /// Bytes that may still be added to the store: what `files.max-total-size` leaves (with
    /// uploads in flight counted) and what the disk holds above `storage.min-free-disk`,
    /// whichever is less.
    pub fn room(&self) -> u64 {
        let cfg = self.inner.live.get();
        let quota = {
            let c = self.inner.counters();
            cfg.files
                .max_total_size
                .bytes()
                .saturating_sub(c.committed.saturating_add(c.inflight))
        };
        let disk = crate::util::disk::free_bytes(self.free_probe())
            .unwrap_or(0)
            .saturating_sub(cfg.storage.min_free_disk.bytes());
        quota.min(disk)
    }

    /// The file's metadata.
    pub async fn meta(&self, path: &str) -> Result<FileMeta> {
        validate_path(path)?;
        let p = path.to_owned();
        self.inner
            .db
            .read(move |c| get_meta(c, &p))
            .await?
            .ok_or_else(|| not_found(path))
    }

    /// The file's metadata and an open handle on its content. The handle stays valid even if
    /// the file is replaced or deleted while it is read.
    pub async fn open(&self, path: &str) -> Result<(FileMeta, File)> {
        // A replace between reading the metadata and opening the blob unlinks the old blob:
        // look again, a few times, before calling the blob missing.
        for _ in 0..3 {
            let meta = self.meta(path).await?;
            let blob = stored_blob(path, &meta.blob)?;
            let dir = self.inner.blob_dir();
            // Beneath `blobs/`, never through a symlink: only a regular file the store wrote.
            let opened = tokio::task::spawn_blocking(move || open_beneath(&dir, blob.as_str()))
                .await
                .map_err(|e| Error::Internal(format!("open task failed: {e}")))?;
            match opened {
                Ok(f) => return Ok((meta, f)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ELOOP) | Some(libc::EXDEV) | Some(libc::EINVAL)
                    ) || e.kind() == std::io::ErrorKind::InvalidInput =>
                {
                    return Err(Error::Internal(format!(
                        "the blob of {path} is not a regular file of the store (a symlink?): {e}"
                    )));
                }
                Err(e) => return Err(io_error(e)),
            }
        }
        self.inner.missing().insert(path.to_owned());
        tracing::error!(path, "file metadata exists but its blob is missing");
        Err(Error::Internal(format!(
            "the blob of {path} is missing from the store"
        )))
    }

    /// Removes the file at `path`: the metadata (with its audit row) commits first, then the
    /// blob is unlinked (a crash in between leaves an orphan blob that recovery removes).
    pub async fn delete(&self, path: &str, caller: Caller) -> Result<()> {
        validate_path(path)?;
        let p = path.to_owned();
        let stamp = (self.inner.clone(), path.to_owned());
        let old = self
            .inner
            .db
            .write_then(
                move |c| {
                    let Some(old) = get_meta(c, &p)? else {
                        return Err(not_found(&p));
                    };
                    // Checked before anything changes: a blob id that is not one is never removed.
                    let blob = stored_blob(&p, &old.blob)?;
                    c.execute("DELETE FROM files WHERE path = ?1", [&p])?;
                    audit::insert(
                        c,
                        &Event {
                            actor: caller.actor,
                            action: "file.delete".into(),
                            target: p.clone(),
                            result: "ok".into(),
                            client: caller.client,
                            request_id: caller.request_id,
                            detail: format!("{} bytes, sha256 {}", old.size, old.sha256),
                        },
                    )?;
                    Ok((old, blob))
                },
                move |_| stamp.0.changed([stamp.1.as_str()]),
            )
            .await?;
        let (old, blob) = old;
        {
            let mut c = self.inner.counters();
            c.committed = c.committed.saturating_sub(old.size);
            c.files = c.files.saturating_sub(1);
        }
        self.inner.missing().remove(path);
        let blob = self.inner.blob_path(&blob);
        let pins = self.inner.pins.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if let Err(e) = pins.remove(blob.clone()) {
                tracing::warn!(blob = %blob.display(), error = %e, "cannot unlink a deleted file's blob; recovery removes it at the next start");
            }
        })
        .await;
        Ok(())
    }

    /// A page of files under `prefix`, ordered by `sort` (then by path), after `cursor`.
    pub async fn list(
        &self,
        prefix: Option<String>,
        sort: Sort,
        limit: usize,
        cursor: Option<String>,
    ) -> Result<Page> {
        let prefix = prefix.unwrap_or_default();
        if prefix.len() > MAX_PATH_BYTES || prefix.contains('\0') {
            return Err(Error::InvalidPath(format!(
                "the prefix must be at most {MAX_PATH_BYTES} bytes, without NUL"
            )));
        }
        let after: Option<(i64, String)> = cursor
            .as_deref()
            .map(|c| decode_cursor(c, sort))
            .transpose()?;
        let (sql, args) = list_query(&prefix, sort, after, paging::take(limit));
        self.inner
            .db
            .read(move |c| {
                let mut st = c.prepare_cached(&sql)?;
                let mut items = st
                    .query_map(rusqlite::params_from_iter(args), meta_from_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                let next_cursor =
                    paging::next_cursor(&mut items, limit, |m| encode_cursor(m, sort));
                Ok(Page { items, next_cursor })
            })
            .await
    }

    /// Used bytes and file count (from the metadata), limits, free disk.
    pub async fn usage(&self) -> Result<Usage> {
        let (used, count): (i64, i64) = self
            .inner
            .db
            .read(|c| {
                Ok(c.query_row(
                    "SELECT COALESCE(SUM(size), 0), COUNT(*) FROM files",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?)
            })
            .await?;
        let cfg = self.inner.live.get();
        let free = crate::util::disk::free_bytes(self.free_probe()).unwrap_or(0);
        Ok(Usage {
            used_bytes: u64::try_from(used).unwrap_or(0),
            file_count: u64::try_from(count).unwrap_or(0),
            quota_bytes: cfg.files.max_total_size.bytes(),
            max_file_bytes: cfg.files.max_file_size.bytes(),
            quota_files: cfg.files.max_files,
            free_disk_bytes: free,
            min_free_disk_bytes: cfg.storage.min_free_disk.bytes(),
            missing_blobs: self.inner.missing().len() as u64,
        })
    }

    /// The directory whose filesystem the store's free space is measured on.
    fn free_probe(&self) -> &Path {
        if self.inner.root.exists() {
            &self.inner.root
        } else {
            self.inner.root.parent().unwrap_or(&self.inner.root)
        }
    }
}

fn not_found(path: &str) -> Error {
    Error::NotFound(format!("no file at {path}"))
}

fn too_large(cfg: &Config) -> Error {
    Error::TooLarge(format!(
        "the file is larger than files.max-file-size ({}); nothing was stored",
        cfg.files.max_file_size
    ))
}

fn quota_exceeded(cfg: &Config) -> Error {
    Error::QuotaExceeded(format!(
        "the upload would take the file store past files.max-total-size ({}); nothing was stored",
        cfg.files.max_total_size
    ))
}

/// Refuses when writing `more` bytes would leave less than `storage.min-free-disk`.
fn check_disk(root: &Path, cfg: &Config, more: u64) -> Result<()> {
    let probe = if root.exists() {
        root
    } else {
        root.parent().unwrap_or(root)
    };
    crate::util::disk::ensure_free(probe, cfg.storage.min_free_disk, more)
}

fn encode_cursor(m: &FileMeta, sort: Sort) -> String {
    let key = match sort {
        Sort::Name => 0,
        Sort::Size => i64::try_from(m.size).unwrap_or(i64::MAX),
        Sort::Modified => m.modified_ms,
    };
    paging::pair_cursor(sort.tag(), key, &m.path)
}

/// The listing's SQL: the prefix as a range of the path index (`[prefix, next)`), the cursor
/// as a seek into the index of the sort order, so each page starts where the last ended.
fn list_query(
    prefix: &str,
    sort: Sort,
    after: Option<(i64, String)>,
    take: i64,
) -> (String, Vec<rusqlite::types::Value>) {
    let mut w = crate::store::db::Conditions::default();
    if !prefix.is_empty() {
        w.add("path >=", prefix.to_owned());
        if let Some(upper) = crate::store::db::prefix_upper(prefix) {
            w.add("path <", upper);
        }
    }
    let key_col = match sort {
        Sort::Name => None,
        Sort::Size => Some("size"),
        Sort::Modified => Some("modified_ms"),
    };
    match (after, key_col) {
        (None, _) => {}
        (Some((_, path)), None) => w.add("path >", path),
        (Some((key, path)), Some(col)) => {
            let (k, p) = (w.arg(key), w.arg(path));
            w.cond(format!("({col}, path) > (?{k}, ?{p})"));
        }
    }
    let order = key_col.map_or("path".to_owned(), |c| format!("{c}, path"));
    let (filter, limit, args) = w.finish(take);
    let sql = format!("SELECT {META_COLUMNS} FROM files {filter} ORDER BY {order} LIMIT ?{limit}");
    (sql, args)
}

fn decode_cursor(c: &str, sort: Sort) -> Result<(i64, String)> {
    paging::parse_pair_cursor(c, sort.tag())
}

impl Batch {
    /// Streams one file of the batch to a temp file, checking the limits as it goes.
    /// `expected_sha256` (hex) must match, or nothing is kept.
    pub async fn add<S, E>(
        &mut self,
        path: &str,
        body: S,
        declared_len: Option<u64>,
        expected_sha256: Option<String>,
    ) -> Result<()>
    where
        S: Stream<Item = std::result::Result<Bytes, E>>,
        E: std::fmt::Display,
    {
        validate_path(path)?;
        if self.staged.iter().any(|s| s.path == path) {
            return Err(Error::InvalidPath(format!(
                "{path} is given twice in one upload"
            )));
        }
        let inner = self.files.inner.clone();
        let cfg = inner.live.get();
        let max_file = cfg.files.max_file_size.bytes();
        let max_total = cfg.files.max_total_size.bytes();
        if declared_len.is_some_and(|n| n > max_file) {
            return Err(too_large(&cfg));
        }
        // The file being replaced stops counting once this one commits.
        let p = path.to_owned();
        let current = inner.db.read(move |c| get_meta(c, &p)).await?;
        self.cond.check(path, current.as_ref())?;
        let credit = current.as_ref().map_or(0, |m| m.size);
        let mut reservation = Reservation {
            inner: inner.clone(),
            bytes: 0,
            files: 0,
        };
        {
            let mut c = inner.counters();
            let want = declared_len.unwrap_or(0);
            if c.committed.saturating_add(c.inflight).saturating_add(want)
                > max_total.saturating_add(credit)
            {
                return Err(quota_exceeded(&cfg));
            }
            // A new path is one more file (a row and an audit event, whatever its size).
            if current.is_none() {
                if c.files.saturating_add(c.inflight_files) >= cfg.files.max_files {
                    return Err(Error::QuotaExceeded(format!(
                        "the file store holds files.max-files ({}) files already; nothing was stored",
                        cfg.files.max_files
                    )));
                }
                c.inflight_files += 1;
                reservation.files = 1;
            }
        }
        self.files.ensure_dirs()?;
        check_disk(&inner.root, &cfg, declared_len.unwrap_or(0))?;

        let tmp = inner
            .tmp_dir()
            .join(format!("{}.part", uuid::Uuid::new_v4().simple()));
        let cleanup = Cleanup(Some(tmp.clone()));
        let (tx, rx) = mpsc::channel::<Msg>(WRITE_QUEUE);
        let tmp_w = tmp.clone();
        let writer = tokio::task::spawn_blocking(move || write_temp(&tmp_w, rx));
        let idle = cfg.files.upload_idle_timeout;
        let mut body = std::pin::pin!(body);
        let mut size: u64 = 0;
        let mut since_disk_check: u64 = 0;
        let mut hasher = Sha256::new();
        let mut buf = BytesMut::with_capacity(WRITE_CHUNK);
        let streamed: Result<()> = loop {
            let chunk = match tokio::time::timeout(idle.get(), body.next()).await {
                Err(_) => {
                    break Err(Error::Invalid(format!(
                        "the upload sent nothing for files.upload-idle-timeout ({idle}); aborted, nothing was stored"
                    )));
                }
                Ok(None) => break Ok(()),
                Ok(Some(Err(e))) => {
                    break Err(Error::Invalid(format!(
                        "the upload body could not be read ({e}); nothing was stored"
                    )));
                }
                Ok(Some(Ok(b))) => b,
            };
            let n = chunk.len() as u64;
            size += n;
            if size > max_file {
                break Err(too_large(&cfg));
            }
            {
                let mut c = inner.counters();
                if c.committed.saturating_add(c.inflight).saturating_add(n)
                    > max_total.saturating_add(credit)
                {
                    break Err(quota_exceeded(&cfg));
                }
                c.inflight += n;
                reservation.bytes += n;
            }
            since_disk_check += n;
            if since_disk_check >= DISK_CHECK_EVERY {
                since_disk_check = 0;
                if let Err(e) = check_disk(&inner.root, &cfg, 0) {
                    break Err(e);
                }
            }
            hasher.update(&chunk);
            let mut rest: &[u8] = &chunk;
            let mut writer_gone = false;
            while !rest.is_empty() {
                let take = rest.len().min(WRITE_CHUNK - buf.len());
                buf.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
                if buf.len() == WRITE_CHUNK {
                    let full = std::mem::replace(&mut buf, BytesMut::with_capacity(WRITE_CHUNK));
                    if tx.send(Msg::Data(full.freeze())).await.is_err() {
                        writer_gone = true;
                        break;
                    }
                }
            }
            if writer_gone {
                // The writer stopped (a disk error); its result says why.
                break Ok(());
            }
        };
        let written = match streamed {
            Ok(()) => {
                if !buf.is_empty() {
                    let _ = tx.send(Msg::Data(buf.freeze())).await;
                }
                let _ = tx.send(Msg::Done).await;
                drop(tx);
                writer
                    .await
                    .map_err(|e| Error::Internal(format!("upload writer failed: {e}")))?
            }
            Err(e) => {
                // Closing the queue without Done makes the writer remove the temp file; wait
                // for it so that nothing is left when the error is answered.
                drop(tx);
                let _ = writer.await;
                return Err(e);
            }
        };
        let written = written?;
        let sha256 = hex::encode(hasher.finalize());
        if written != size {
            return Err(Error::Internal(format!(
                "upload writer wrote {written} of {size} bytes"
            )));
        }
        if let Some(expected) = expected_sha256
            && !expected.eq_ignore_ascii_case(&sha256)
        {
            return Err(Error::Unprocessable(format!(
                "the content's SHA-256 is {sha256} but the request said {}; nothing was stored",
                expected.to_ascii_lowercase()
            )));
        }
        let staged = Staged {
            path: path.to_owned(),
            tmp,
            cleanup,
            reservation,
            size,
            sha256,
            time_ms: None,
        };
        self.staged.push(staged);
        Ok(())
    }

    /// Stages one file of the batch from an open file of `size` bytes (a job's output),
    /// under the same limits as an upload.
    pub async fn add_file(&mut self, path: &str, file: File, size: u64) -> Result<()> {
        use tokio::io::AsyncReadExt;
        let reader = tokio::fs::File::from_std(file).take(size);
        let body = tokio_util::io::ReaderStream::with_capacity(reader, READ_CHUNK);
        self.add(path, body, Some(size), None).await
    }

    /// Deletes the file at `path` in the same transaction (a file that is gone by then is
    /// passed over).
    pub fn delete(&mut self, path: &str) -> Result<()> {
        validate_path(path)?;
        if self.staged.iter().any(|s| s.path == path) || self.deletions.iter().any(|d| d == path) {
            return Err(Error::InvalidPath(format!(
                "{path} is given twice in one change"
            )));
        }
        self.deletions.push(path.to_owned());
        Ok(())
    }

    /// Refuses the commit (a conflict, nothing written) if a file beneath `folder` changed
    /// after its change number was `version`.
    pub fn unchanged_since(&mut self, folder: &str, version: u64) {
        self.unchanged.push((folder.to_owned(), version));
    }

    /// Stores the staged file at `path`, if it is new, as created and modified at `ms` (since
    /// the epoch) rather than now: an import keeps the original's time. A replaced file keeps
    /// its own creation time and is modified now, as always.
    pub fn keep_time(&mut self, path: &str, ms: i64) -> Result<()> {
        let s = self
            .staged
            .iter_mut()
            .find(|s| s.path == path)
            .ok_or_else(|| Error::Internal(format!("{path} is not staged")))?;
        s.time_ms = Some(ms);
        Ok(())
    }

    /// How many files are staged.
    pub fn len(&self) -> usize {
        self.staged.len()
    }

    pub fn is_empty(&self) -> bool {
        self.staged.is_empty() && self.deletions.is_empty()
    }

    /// Makes every staged file visible at once, or none. Runs to its end in its own task even
    /// if the caller goes away, so a blob is never left renamed but uncommitted by a cut
    /// request, nor removed after its metadata committed.
    pub async fn commit(self) -> Result<Vec<Stored>> {
        tokio::spawn(self.commit_inner())
            .await
            .map_err(|e| Error::Internal(format!("commit task failed: {e}")))?
    }

    async fn commit_inner(self) -> Result<Vec<Stored>> {
        let Batch {
            files,
            cond,
            caller,
            staged,
            deletions,
            unchanged,
        } = self;
        let inner = files.inner.clone();
        // tmp → blobs/<id>, then one fsync of blobs/ for all of them.
        let blob_dir = inner.blob_dir();
        let moved = tokio::task::spawn_blocking(move || -> Result<Vec<(Staged, BlobId)>> {
            let mut out = Vec::with_capacity(staged.len());
            for mut s in staged {
                let id = BlobId::random();
                let dest = id.path_in(&blob_dir);
                std::fs::rename(&s.tmp, &dest).map_err(io_error)?;
                s.cleanup = Cleanup(Some(dest));
                out.push((s, id));
            }
            sync_dir(&blob_dir)?;
            Ok(out)
        })
        .await
        .map_err(|e| Error::Internal(format!("rename task failed: {e}")))??;

        let rows: Vec<(String, String, u64, String, Option<i64>)> = moved
            .iter()
            .map(|(s, id)| {
                (
                    s.path.clone(),
                    id.as_str().to_owned(),
                    s.size,
                    s.sha256.clone(),
                    s.time_ms,
                )
            })
            .collect();
        let mut touched: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();
        touched.extend(deletions.iter().cloned());
        let check = inner.clone();
        let stamp = inner.clone();
        let (committed, removed) = inner
            .db
            .write_then(move |c| {
                // Stamps are made on this (the writer) thread after each commit: what a
                // folder's number says here covers every commit before this transaction.
                {
                    let changes = check.changes();
                    if let Some((folder, _)) =
                        unchanged.iter().find(|(f, v)| changes.of(f) != *v)
                    {
                        return Err(Error::Conflict(format!(
                            "the folder {folder:?} changed while the job ran; nothing was written"
                        )));
                    }
                }
                let mut removed = Vec::with_capacity(deletions.len());
                for path in &deletions {
                    let Some(old) = get_meta(c, path)? else {
                        continue;
                    };
                    let blob = stored_blob(path, &old.blob)?;
                    c.execute("DELETE FROM files WHERE path = ?1", [path])?;
                    audit::insert(
                        c,
                        &caller.event(
                            "file.delete",
                            path,
                            "ok",
                            format!("{} bytes, sha256 {}", old.size, old.sha256),
                        ),
                    )?;
                    removed.push((old, blob));
                }
                let now = now_ms();
                let mut out = Vec::with_capacity(rows.len());
                for (path, blob, size, sha, kept) in rows {
                    let old = get_meta(c, &path)?;
                    cond.check(&path, old.as_ref())?;
                    let now = if old.is_none() { kept.unwrap_or(now) } else { now };
                    let created = old.as_ref().map_or(now, |m| m.created_ms);
                    let content_type = content_type_for(&path);
                    c.execute(
                        "INSERT INTO files(path, size, sha256, content_type, created_ms, modified_ms, blob)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                         ON CONFLICT(path) DO UPDATE SET size = excluded.size,
                           sha256 = excluded.sha256, content_type = excluded.content_type,
                           modified_ms = excluded.modified_ms, blob = excluded.blob",
                        rusqlite::params![
                            path,
                            i64::try_from(size).unwrap_or(i64::MAX),
                            sha,
                            content_type,
                            created,
                            now,
                            blob
                        ],
                    )?;
                    let action = if old.is_some() { "file.replace" } else { "file.create" };
                    audit::insert(
                        c,
                        &caller.event(action, &path, "ok", format!("{size} bytes, sha256 {sha}")),
                    )?;
                    let meta = get_meta(c, &path)?
                        .ok_or_else(|| Error::Internal("a stored file vanished".into()))?;
                    out.push((meta, old));
                }
                Ok((out, removed))
            }, move |_| stamp.changed(touched.iter().map(String::as_str)))
            .await?;
        // Committed: the blobs are the files' now.
        let mut stored = Vec::with_capacity(committed.len());
        let mut old_blobs = Vec::new();
        {
            let mut counters = inner.counters();
            let mut missing = inner.missing();
            for (old, blob) in removed {
                counters.committed = counters.committed.saturating_sub(old.size);
                counters.files = counters.files.saturating_sub(1);
                missing.remove(&old.path);
                old_blobs.push(inner.blob_path(&blob));
            }
            for ((mut s, _), (meta, old)) in moved.into_iter().zip(committed) {
                s.cleanup.disarm();
                counters.committed = counters.committed.saturating_add(s.size);
                counters.inflight = counters.inflight.saturating_sub(s.reservation.bytes);
                s.reservation.bytes = 0;
                counters.inflight_files =
                    counters.inflight_files.saturating_sub(s.reservation.files);
                s.reservation.files = 0;
                if old.is_none() {
                    counters.files += 1;
                }
                if let Some(old) = &old {
                    counters.committed = counters.committed.saturating_sub(old.size);
                    match stored_blob(&old.path, &old.blob) {
                        Ok(id) => old_blobs.push(inner.blob_path(&id)),
                        // Never removed: whatever it names is not the store's.
                        Err(e) => {
                            tracing::error!(error = %e, "a replaced file's blob id is invalid; nothing was unlinked")
                        }
                    }
                }
                missing.remove(&meta.path);
                stored.push(Stored {
                    meta,
                    created: old.is_none(),
                });
            }
        }
        if !old_blobs.is_empty() {
            let pins = inner.pins.clone();
            let _ = tokio::task::spawn_blocking(move || {
                for b in old_blobs {
                    if let Err(e) = pins.remove(b.clone()) {
                        tracing::warn!(blob = %b.display(), error = %e, "cannot unlink a replaced blob; recovery removes it at the next start");
                    }
                }
            })
            .await;
        }
        Ok(stored)
    }
}

/// The bytes `start .. start + len` of an open file, read in [`READ_CHUNK`] pieces.
pub async fn read_stream(
    file: File,
    start: u64,
    len: u64,
) -> Result<impl Stream<Item = std::io::Result<Bytes>> + Send + 'static> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let mut f = tokio::fs::File::from_std(file);
    if start > 0 {
        f.seek(std::io::SeekFrom::Start(start))
            .await
            .map_err(io_error)?;
    }
    Ok(tokio_util::io::ReaderStream::with_capacity(
        f.take(len),
        READ_CHUNK,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn listing_pages_seek_into_their_index() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("t.db"), 1).unwrap();
        let plan = |sort: Sort, prefix: &'static str, after: Option<(i64, String)>| {
            let (sql, args) = list_query(prefix, sort, after, 101);
            db.write(move |c| Ok(crate::store::db::query_plan(c, &sql, args)?))
        };
        let cursor = Some((0, "docs/m.txt".to_owned()));
        let by_name = plan(Sort::Name, "docs/", cursor).await.unwrap();
        assert!(
            by_name
                .contains("SEARCH files USING INDEX sqlite_autoindex_files_1 (path>? AND path<?)"),
            "{by_name}"
        );
        for (sort, index) in [
            (Sort::Size, "files_size"),
            (Sort::Modified, "files_modified"),
        ] {
            let p = plan(sort, "", Some((7, "m".to_owned()))).await.unwrap();
            assert!(
                p.contains(&format!("SEARCH files USING INDEX {index}")),
                "{p}"
            );
            assert!(!p.contains("TEMP B-TREE"), "{p}");
        }
        db.close();
    }

    #[test]
    fn paths_are_checked_rule_by_rule() {
        for ok in ["a", "a/b/c.txt", "a..b", ".hidden", "ünï code/x y.txt"] {
            assert!(validate_path(ok).is_ok(), "{ok}");
        }
        let long_name = "n".repeat(MAX_NAME_BYTES + 1);
        let long_path = vec!["p"; MAX_PATH_BYTES / 2 + 1].join("/");
        for (bad, rule) in [
            ("", "empty"),
            ("/a", "absolute"),
            ("a//b", "empty segment"),
            ("a/", "empty segment"),
            ("./a", "\".\""),
            ("a/..", "\"..\""),
            ("a\0b", "NUL"),
            ("a\u{1b}b", "U+001B"),
            ("a\u{85}b", "U+0085"),
            (long_name.as_str(), "at most 255"),
            (long_path.as_str(), "at most 1024"),
        ] {
            match validate_path(bad) {
                Err(Error::InvalidPath(m)) => assert!(m.contains(rule), "{bad:?}: {m}"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn ranges_resolve_against_the_size() {
        use RangeSpec::*;
        assert_eq!(resolve_range(FromTo(0, 0), 10).unwrap(), (0, 0));
        assert_eq!(resolve_range(FromTo(5, 100), 10).unwrap(), (5, 9));
        assert_eq!(resolve_range(From(9), 10).unwrap(), (9, 9));
        assert_eq!(resolve_range(Suffix(3), 10).unwrap(), (7, 9));
        assert_eq!(resolve_range(Suffix(30), 10).unwrap(), (0, 9));
        for (spec, size) in [
            (From(10), 10),
            (FromTo(10, 12), 10),
            (Suffix(0), 10),
            (From(0), 0),
        ] {
            assert!(
                matches!(resolve_range(spec, size), Err(Error::RangeNotSatisfiable { size: s }) if s == size),
                "{spec:?} of {size}"
            );
        }
    }

    #[test]
    fn cursors_round_trip_and_belong_to_their_sort() {
        let m = FileMeta {
            path: "a/b:c".into(),
            size: 42,
            sha256: String::new(),
            content_type: String::new(),
            created: String::new(),
            modified: String::new(),
            modified_ms: 7,
            created_ms: 7,
            blob: String::new(),
        };
        let c = encode_cursor(&m, Sort::Size);
        assert_eq!(decode_cursor(&c, Sort::Size).unwrap(), (42, "a/b:c".into()));
        assert!(decode_cursor(&c, Sort::Name).is_err());
        assert!(decode_cursor("!!", Sort::Name).is_err());
    }

    async fn store() -> (tempfile::TempDir, Files) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("t.db"), 2).unwrap();
        let mut cfg = Config::default();
        cfg.storage.min_free_disk = crate::config::ByteSize(0);
        let live = Arc::new(LiveConfig::new(cfg));
        let files = Files::new(db, live, dir.path().join("files"), Arc::default());
        files.recover().await.unwrap();
        (dir, files)
    }

    fn body(parts: &[&'static [u8]]) -> impl Stream<Item = std::result::Result<Bytes, String>> {
        tokio_stream::iter(
            parts
                .iter()
                .map(|p| Ok(Bytes::from_static(p)))
                .collect::<Vec<_>>(),
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn put_replace_delete_keep_one_blob_per_file_and_usage_exact() {
        let (dir, files) = store().await;
        let c = || Caller::default();
        let s = files
            .put(
                "a/b.txt",
                body(&[b"hel", b"lo"]),
                Some(5),
                None,
                Conditions::default(),
                c(),
            )
            .await
            .unwrap();
        assert!(s.created);
        assert_eq!(s.meta.sha256, hex::encode(Sha256::digest(b"hello")));
        let s = files
            .put(
                "a/b.txt",
                body(&[b"bye"]),
                None,
                None,
                Conditions::default(),
                c(),
            )
            .await
            .unwrap();
        assert!(!s.created);
        let blobs = || {
            std::fs::read_dir(dir.path().join("files/blobs"))
                .unwrap()
                .count()
        };
        assert_eq!(blobs(), 1, "the replaced blob is unlinked");
        assert_eq!(files.usage().await.unwrap().used_bytes, 3);
        assert_eq!(files.inner.counters().committed, 3);
        let err = files
            .put(
                "x",
                body(&[b"data"]),
                None,
                Some("00".repeat(32)),
                Conditions::default(),
                c(),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Unprocessable(_)), "{err}");
        assert!(matches!(files.meta("x").await, Err(Error::NotFound(_))));
        files.delete("a/b.txt", c()).await.unwrap();
        assert_eq!(blobs(), 0);
        assert_eq!(files.inner.counters().committed, 0);
        assert_eq!(files.inner.counters().inflight, 0);
        let tmp = std::fs::read_dir(dir.path().join("files/tmp"))
            .unwrap()
            .count();
        assert_eq!(tmp, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_deletes_in_its_transaction_and_refuses_a_changed_folder() {
        let (dir, files) = store().await;
        let c = || Caller::default();
        let put = |p: &'static str| {
            let files = files.clone();
            async move {
                files
                    .put(p, body(&[b"x"]), None, None, Conditions::default(), c())
                    .await
                    .unwrap()
            }
        };
        assert_eq!(files.folder_version("a/"), 0);
        put("a/b/one").await;
        let v_a = files.folder_version("a/");
        let v_b = files.folder_version("a/b/");
        assert!(v_a > 0 && v_a == v_b && files.folder_version("") == v_a);
        put("other/x").await;
        assert_eq!(files.folder_version("a/"), v_a, "another folder's change");
        // A change in the folder since `v_a`: nothing of the batch is written.
        put("a/two").await;
        let mut batch = files.batch(Conditions::default(), c(), None).unwrap();
        batch.add("a/new", body(&[b"n"]), None, None).await.unwrap();
        batch.delete("a/b/one").unwrap();
        batch.unchanged_since("a/", v_a);
        assert!(matches!(batch.commit().await, Err(Error::Conflict(_))));
        assert!(files.meta("a/new").await.is_err());
        assert!(files.meta("a/b/one").await.is_ok());
        // Unchanged: the new file and the deletion commit together.
        let now = files.folder_version("a/");
        let mut batch = files.batch(Conditions::default(), c(), None).unwrap();
        batch.add("a/new", body(&[b"n"]), None, None).await.unwrap();
        batch.delete("a/b/one").unwrap();
        assert!(batch.delete("a/new").is_err(), "given twice");
        batch.unchanged_since("a/", now);
        batch.commit().await.unwrap();
        assert!(files.meta("a/b/one").await.is_err());
        assert_eq!(files.meta("a/new").await.unwrap().size, 1);
        assert!(files.folder_version("a/b/") > now);
        let (_, entries) = files.folder_entries("a/").await.unwrap();
        let rels: Vec<&str> = entries.iter().map(|e| e.rel.as_str()).collect();
        assert_eq!(rels, vec!["new", "two"]);
        let u = files.usage().await.unwrap();
        assert_eq!((u.used_bytes, u.file_count), (3, 3));
        assert_eq!(files.inner.counters().committed, 3);
        assert_eq!(files.inner.counters().files, 3);
        // The refused batch's blob and the deleted file's are gone.
        let blobs = std::fs::read_dir(dir.path().join("files/blobs"))
            .unwrap()
            .count();
        assert_eq!(blobs, 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_body_error_mid_stream_leaves_nothing() {
        let (dir, files) = store().await;
        let parts: Vec<std::result::Result<Bytes, String>> = vec![
            Ok(Bytes::from_static(b"partial")),
            Err("connection reset".into()),
        ];
        let err = files
            .put(
                "p",
                tokio_stream::iter(parts),
                None,
                None,
                Conditions::default(),
                Caller::default(),
            )
            .await
            .unwrap_err();
        assert!(err.to_string().contains("connection reset"), "{err}");
        for sub in ["tmp", "blobs"] {
            assert_eq!(
                std::fs::read_dir(dir.path().join("files").join(sub))
                    .unwrap()
                    .count(),
                0
            );
        }
        assert_eq!(files.inner.counters().inflight, 0);
    }
}
