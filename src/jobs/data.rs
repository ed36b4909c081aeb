//! Jobs on the user's data: what a request asks for (mounts of file-store folders and of
//! programs, outputs to bring back, inline files) and the two hooks the executor calls
//! around the sandbox: [`Data::prepare`] resolves the views (`store::views`) and fills the
//! job's policy; [`Data::finish`] reads what the job left in its collected directories and
//! commits it into the file store in one transaction, or writes nothing. No HTTP here.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::File;
use std::io::{Read, Seek};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex, OnceLock};

use nix::errno::Errno;
use nix::fcntl::{OFlag, ResolveFlag};
use nix::sys::stat::{FileStat, SFlag};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::LiveConfig;
use crate::error::{Error, Result};
use crate::jobs::sandbox::policy::{RESERVED_INSIDE, is_within, plain_relative};
use crate::jobs::sandbox::{InlineFile, JobMount, Policy};
use crate::store::audit::Caller;
use crate::store::files::{Conditions, Files, FolderEntry, validate_path};
use crate::store::views::{ViewLease, Views, folder_key};

const PAGE: u64 = 4096;

/// What a job is to see of the user's data and bring back.
#[derive(Debug, Clone, Default)]
pub struct JobData {
    pub mounts: Vec<MountSpec>,
    /// Files placed in the job's working directory before it starts.
    pub files: Vec<InlineFile>,
    pub outputs: Vec<OutputSpec>,
    pub keep_outputs: KeepOutputs,
}

/// What a mount shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountSource {
    /// A file-store folder (`""`: the whole store; a trailing `/` is optional).
    Files(String),
    /// A stored program (always read-only).
    Program(String),
}

/// One mount of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    pub source: MountSource,
    /// Where the job sees it (absolute).
    pub at: String,
    /// A copy the job may change, whose changes are committed back to the folder.
    pub writable: bool,
}

/// A directory of the job whose regular files are committed to a file-store folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputSpec {
    /// Under the job's working directory or a writable mount.
    pub from: String,
    /// A file-store folder.
    pub to: String,
}

/// Which outcomes keep the outputs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeepOutputs {
    /// Status `ok` only.
    #[default]
    OnSuccess,
    /// `ok` and `nonzero_exit`.
    OnExit,
}

impl KeepOutputs {
    /// Whether a job that ended with `status` (as the result names it: `ok`,
    /// `nonzero_exit`, `timeout`, …) keeps its outputs.
    fn keeps(self, status: &str) -> bool {
        match self {
            KeepOutputs::OnSuccess => status == "ok",
            KeepOutputs::OnExit => matches!(status, "ok" | "nonzero_exit"),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            KeepOutputs::OnSuccess => "on_success",
            KeepOutputs::OnExit => "on_exit",
        }
    }
}

/// What became of a job's outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutputsState {
    /// Written, in one transaction.
    Committed,
    /// Not kept (the job's status is not one `keep_outputs` keeps): nothing written.
    Discarded,
    /// Could not be written (a quota, the disk floor, too many files): nothing written.
    Failed,
    /// A read-write mount's folder changed while the job ran: nothing written.
    Conflict,
}

/// One file written.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OutputFile {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

/// Something the job left that was not taken (a symlink, a device, a hard link, a bad name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Skipped {
    /// Its path inside the job.
    pub path: String,
    pub reason: String,
}

/// The `outputs` of a result.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OutputsReport {
    pub state: OutputsState,
    /// Why, when nothing was written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Files created or replaced in the file store.
    pub files: Vec<OutputFile>,
    /// Files a read-write mount's job deleted, deleted from the folder.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deleted: Vec<String>,
    pub skipped: Vec<Skipped>,
}

impl OutputsReport {
    fn nothing(state: OutputsState, reason: String, skipped: Vec<Skipped>) -> OutputsReport {
        OutputsReport {
            state,
            reason: Some(reason),
            files: Vec::new(),
            deleted: Vec::new(),
            skipped,
        }
    }
}

/// A writable mount as prepared: the folder it commits to and what the job was shown.
struct RwMount {
    at: String,
    folder: String,
    version: u64,
    files: Arc<Vec<FolderEntry>>,
}

/// A collected directory and where its files go.
struct Source {
    /// The directory inside the job.
    at: String,
    /// The file-store folder.
    folder: String,
    /// For a writable mount: the folder's change number and the files its view showed.
    shown: Option<(u64, Arc<Vec<FolderEntry>>)>,
}

/// What [`Data::prepare`] resolved, held for the job's life (its views stay meanwhile).
#[derive(Default)]
pub struct Prepared {
    _leases: Vec<ViewLease>,
    /// (`from` inside the job, `to` folder).
    outputs: Vec<(String, String)>,
    rw: Vec<RwMount>,
    keep: KeepOutputs,
}

impl Prepared {
    /// Whether the request asked for anything to come back (outputs or a writable mount).
    pub fn wants_outputs(&self) -> bool {
        !self.outputs.is_empty() || !self.rw.is_empty()
    }
}

/// Resolves a program mount: the view of program `id` (404 when there is none). Given by the
/// program store (which runs jobs through the executor, so this module does not name it).
pub type ProgramViews = Box<
    dyn Fn(String) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<ViewLease>> + Send>>
        + Send
        + Sync,
>;

/// The data plane of jobs; cheap to clone.
#[derive(Clone)]
pub struct Data {
    inner: Arc<Inner>,
}

struct Inner {
    files: Files,
    views: Views,
    live: Arc<LiveConfig>,
    /// Set once the program store is open (it needs the executor, which needs this).
    programs: OnceLock<ProgramViews>,
    /// One commit at a time per target folder.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// A path of the job as given (`/work/out/` or `/work/out`) without its trailing `/`,
/// checked to be absolute and plain.
fn inside_path(p: &str, what: &str) -> Result<String> {
    let t = p.strip_suffix('/').unwrap_or(p);
    match t.strip_prefix('/') {
        Some(rel) if plain_relative(rel) => Ok(t.to_owned()),
        _ => Err(Error::Invalid(format!(
            "{what} {p:?} must be an absolute path without ., .. or empty names"
        ))),
    }
}

fn round_page(n: u64) -> u64 {
    n.div_ceil(PAGE).saturating_mul(PAGE)
}

impl Data {
    pub fn new(files: Files, views: Views, live: Arc<LiveConfig>) -> Data {
        Data {
            inner: Arc::new(Inner {
                files,
                views,
                live,
                programs: OnceLock::new(),
                locks: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Lets program mounts be resolved (called once, when the program store is open).
    pub fn set_programs(&self, programs: ProgramViews) {
        let _ = self.inner.programs.set(programs);
    }

    pub fn views(&self) -> &Views {
        &self.inner.views
    }

    /// Checks `data` against the limits and rules, resolves its views and fills the job's
    /// `policy` (`mount_root`, `mounts`, `files`, `collect`). Writable mounts get a tmpfs of
    /// the folder's size plus the staging bound (what the file store's quota and the disk's
    /// floor leave, at most the profile's tmpfs size); with outputs or writable mounts the
    /// job's scratch is capped to the bound too. The returned value holds the views until it
    /// is dropped (after [`Data::finish`]).
    pub async fn prepare(&self, data: &JobData, policy: &mut Policy) -> Result<Prepared> {
        let cfg = self.inner.live.get();
        let exec = &cfg.exec;
        if data.mounts.len() > exec.max_mounts || data.outputs.len() > exec.max_mounts {
            return Err(Error::Unprocessable(format!(
                "a request may name at most exec.max-mounts ({}) mounts and as many outputs",
                exec.max_mounts
            )));
        }
        if data.files.len() > exec.max_inline_files {
            return Err(Error::Unprocessable(format!(
                "{} inline files; exec.max-inline-files allows {}",
                data.files.len(),
                exec.max_inline_files
            )));
        }
        let inline: u64 = data.files.iter().map(|f| f.content.len() as u64).sum();
        if inline > exec.max_inline_bytes.bytes() {
            return Err(Error::Unprocessable(format!(
                "the inline files hold {inline} bytes; exec.max-inline-bytes allows {}",
                exec.max_inline_bytes
            )));
        }
        for f in &data.files {
            validate_path(&f.name)
                .map_err(|e| Error::Invalid(format!("inline file {:?}: {e}", f.name)))?;
        }
        let mut mounts: Vec<(String, &MountSpec)> = Vec::new();
        for m in &data.mounts {
            let at = inside_path(&m.at, "mount point")?;
            if at == policy.cwd {
                return Err(Error::Invalid(format!(
                    "{at} is the job's working directory; mount beneath it or elsewhere"
                )));
            }
            if let Some(r) = RESERVED_INSIDE.iter().find(|r| is_within(&at, r)) {
                return Err(Error::Invalid(format!(
                    "mount point {at:?} is in {r}, a system directory of the sandbox"
                )));
            }
            if m.writable && matches!(m.source, MountSource::Program(_)) {
                return Err(Error::Invalid(format!(
                    "the program mount at {at} cannot be read-write"
                )));
            }
            mounts.push((at, m));
        }
        let mut outputs = Vec::new();
        for o in &data.outputs {
            let from = inside_path(&o.from, "outputs[].from")?;
            let under_rw = mounts
                .iter()
                .any(|(at, m)| m.writable && is_within(&from, at));
            if !is_within(&from, &policy.cwd) && !under_rw {
                return Err(Error::Invalid(format!(
                    "outputs[].from {from:?} must be under the working directory ({}) or a read-write mount",
                    policy.cwd
                )));
            }
            outputs.push((from, folder_key(&o.to)?));
        }
        let wants_outputs = !outputs.is_empty() || mounts.iter().any(|(_, m)| m.writable);
        let bound = self.inner.files.room().min(policy.limits.tmpfs_bytes) / PAGE * PAGE;
        if wants_outputs && bound == 0 {
            return Err(Error::QuotaExceeded(
                "the file store has no room left (files.max-total-size or storage.min-free-disk): outputs could not be kept".into(),
            ));
        }
        let mut prepared = Prepared {
            keep: data.keep_outputs,
            ..Prepared::default()
        };
        for (at, m) in mounts {
            let lease = match &m.source {
                MountSource::Files(folder) => self.inner.views.folder(&folder_key(folder)?).await?,
                MountSource::Program(id) => self.program_view(id).await?,
            };
            let (size_bytes, inodes) = if m.writable {
                let held: u64 = lease.files.iter().map(|f| round_page(f.size)).sum();
                (
                    held.saturating_add(bound),
                    (lease.files.len() as u64)
                        .saturating_mul(2)
                        .saturating_add(exec.max_output_files as u64)
                        .saturating_add(64),
                )
            } else {
                (0, 0)
            };
            policy.mounts.push(JobMount {
                source: lease.name.clone(),
                inside: at.clone(),
                writable: m.writable,
                size_bytes,
                inodes,
            });
            if m.writable {
                let MountSource::Files(folder) = &m.source else {
                    return Err(Error::Internal("a writable program mount".into()));
                };
                prepared.rw.push(RwMount {
                    at: at.clone(),
                    folder: folder_key(folder)?,
                    version: lease.version,
                    files: lease.files.clone(),
                });
            }
            prepared._leases.push(lease);
        }
        if !policy.mounts.is_empty() {
            policy.mount_root = Some(self.inner.views.root().display().to_string());
        }
        policy.files = data.files.clone();
        let mut collect: BTreeSet<String> = outputs.iter().map(|(f, _)| f.clone()).collect();
        collect.extend(prepared.rw.iter().map(|r| r.at.clone()));
        policy.collect = collect.into_iter().collect();
        if wants_outputs {
            let floor = data
                .files
                .iter()
                .map(|f| round_page(f.content.len() as u64))
                .sum::<u64>()
                .saturating_add(PAGE);
            policy.limits.tmpfs_bytes = policy.limits.tmpfs_bytes.min(bound.max(floor));
        }
        prepared.outputs = outputs;
        policy.validate().map_err(Error::Invalid)?;
        Ok(prepared)
    }

    async fn program_view(&self, id: &str) -> Result<ViewLease> {
        match self.inner.programs.get() {
            Some(views) => views(id.to_owned()).await,
            None => Err(Error::Unavailable(
                "stored programs cannot be mounted here".into(),
            )),
        }
    }

    /// Brings the job's outputs back: `None` when the request asked for none (no outputs,
    /// no writable mount). Nothing is written unless `status` is one `keep_outputs` keeps;
    /// then every regular file beneath each collected directory (walked without following
    /// a symlink or leaving its filesystem; anything else is skipped and reported) is
    /// committed, with a writable mount's deletions, in one transaction of the file store,
    /// one commit at a time per target folder.
    pub async fn finish(
        &self,
        prepared: Prepared,
        status: &str,
        collected: Vec<(String, OwnedFd)>,
        caller: &Caller,
    ) -> Option<OutputsReport> {
        if !prepared.wants_outputs() {
            return None;
        }
        if !prepared.keep.keeps(status) {
            return Some(OutputsReport::nothing(
                OutputsState::Discarded,
                format!(
                    "the job ended with status {}; keep_outputs is {}: nothing was written",
                    status,
                    prepared.keep.as_str()
                ),
                Vec::new(),
            ));
        }
        Some(match self.commit(prepared, collected, caller).await {
            Ok(r) => r,
            Err((state, reason, skipped)) => OutputsReport::nothing(state, reason, skipped),
        })
    }

    fn folder_lock(&self, folder: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = match self.inner.locks.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        map.retain(|_, m| Arc::strong_count(m) > 1);
        map.entry(folder.to_owned()).or_default().clone()
    }

    async fn commit(
        &self,
        prepared: Prepared,
        collected: Vec<(String, OwnedFd)>,
        caller: &Caller,
    ) -> std::result::Result<OutputsReport, (OutputsState, String, Vec<Skipped>)> {
        let max = self.inner.live.get().exec.max_output_files;
        let Prepared { outputs, rw, .. } = prepared;
        let fds: HashMap<String, OwnedFd> = collected.into_iter().collect();
        let mut sources: Vec<Source> = rw
            .iter()
            .map(|r| Source {
                at: r.at.clone(),
                folder: r.folder.clone(),
                shown: Some((r.version, r.files.clone())),
            })
            .collect();
        sources.extend(outputs.into_iter().map(|(at, folder)| Source {
            at,
            folder,
            shown: None,
        }));
        let walk_in: Vec<(String, Option<OwnedFd>)> = sources
            .iter()
            // One directory may be both a read-write mount and an output's `from`: each
            // walk gets its own descriptor.
            .map(|src| {
                let fd = fds.get(&src.at).and_then(|fd| fd.try_clone().ok());
                (src.at.clone(), fd)
            })
            .collect();
        let walked = tokio::task::spawn_blocking(move || {
            let mut skipped = Vec::new();
            let mut trees = Vec::new();
            let mut count = 0usize;
            for (at, fd) in walk_in {
                let Some(fd) = fd else {
                    skipped.push(Skipped {
                        path: at.clone(),
                        reason: "missing (the job did not leave this directory)".into(),
                    });
                    trees.push(Vec::new());
                    continue;
                };
                let found = walk(fd, &at, max, &mut count, &mut skipped)?;
                trees.push(found);
            }
            Ok::<_, String>((trees, skipped))
        })
        .await;
        let (trees, mut skipped) = match walked {
            Ok(Ok(v)) => v,
            Ok(Err(reason)) => return Err((OutputsState::Failed, reason, Vec::new())),
            Err(e) => {
                return Err((
                    OutputsState::Failed,
                    format!("the outputs could not be read: {e}"),
                    Vec::new(),
                ));
            }
        };
        let mut adds: Vec<(String, File, u64)> = Vec::new();
        let mut deletes: Vec<String> = Vec::new();
        let mut guards: Vec<(String, u64)> = Vec::new();
        let mut folders: BTreeSet<String> = BTreeSet::new();
        for (Source { at, folder, shown }, found) in sources.into_iter().zip(trees) {
            folders.insert(folder.clone());
            let present: HashSet<String> = found.iter().map(|f| f.rel.clone()).collect();
            let before: HashMap<&str, &FolderEntry> = shown
                .as_ref()
                .map(|(_, files)| files.iter().map(|f| (f.rel.as_str(), f)).collect())
                .unwrap_or_default();
            for mut f in found {
                let target = format!("{folder}{}", f.rel);
                if let Err(e) = validate_path(&target) {
                    skipped.push(Skipped {
                        path: format!("{at}/{}", f.rel),
                        reason: format!("no file-store name: {e}"),
                    });
                    continue;
                }
                if let Some(old) = before.get(f.rel.as_str())
                    && old.size == f.size
                {
                    match same_content(&mut f.file, &old.sha256) {
                        Ok(true) => continue,
                        Ok(false) => {}
                        Err(e) => {
                            return Err((
                                OutputsState::Failed,
                                format!("{at}/{} could not be read: {e}", f.rel),
                                skipped,
                            ));
                        }
                    }
                }
                adds.push((target, f.file, f.size));
            }
            if let Some((version, files)) = &shown {
                guards.push((folder.clone(), *version));
                let unreadable: HashSet<String> = skipped
                    .iter()
                    .filter_map(|s| s.path.strip_prefix(&format!("{at}/")).map(str::to_owned))
                    .collect();
                for old in files.iter() {
                    if !present.contains(&old.rel) && !unreadable.contains(&old.rel) {
                        deletes.push(format!("{folder}{}", old.rel));
                    }
                }
            }
        }
        // One commit at a time per folder, taken in one order (no two jobs wait on each other).
        let locks: Vec<_> = folders.iter().map(|f| self.folder_lock(f)).collect();
        let mut held = Vec::with_capacity(locks.len());
        for l in &locks {
            held.push(l.lock().await);
        }
        let files = &self.inner.files;
        if let Some((folder, _)) = guards.iter().find(|(f, v)| files.folder_version(f) != *v) {
            return Err((
                OutputsState::Conflict,
                format!("the folder {folder:?} changed while the job ran; nothing was written"),
                skipped,
            ));
        }
        let total: u64 = adds.iter().map(|a| a.2).sum();
        let fail = |e: Error, skipped: Vec<Skipped>| {
            let state = if matches!(e, Error::Conflict(_)) {
                OutputsState::Conflict
            } else {
                OutputsState::Failed
            };
            Err((state, format!("{e}"), skipped))
        };
        let mut batch = match files.batch(Conditions::default(), caller.clone(), Some(total)) {
            Ok(b) => b,
            Err(e) => return fail(e, skipped),
        };
        for (path, file, size) in adds {
            if let Err(e) = batch.add_file(&path, file, size).await {
                return fail(e, skipped);
            }
        }
        for d in &deletes {
            if let Err(e) = batch.delete(d) {
                return fail(e, skipped);
            }
        }
        for (folder, version) in guards {
            batch.unchanged_since(&folder, version);
        }
        let stored = match batch.commit().await {
            Ok(s) => s,
            Err(e) => return fail(e, skipped),
        };
        drop(held);
        Ok(OutputsReport {
            state: OutputsState::Committed,
            reason: None,
            files: stored
                .into_iter()
                .map(|s| OutputFile {
                    path: s.meta.path,
                    size: s.meta.size,
                    sha256: s.meta.sha256,
                })
                .collect(),
            deleted: deletes,
            skipped,
        })
    }
}

/// Whether `file`'s content has the SHA-256 `sha256` (hex); it is read from the start and
/// left at the start.
fn same_content(file: &mut File, sha256: &str) -> std::io::Result<bool> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 << 10];
    file.rewind()?;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    file.rewind()?;
    Ok(hex::encode(h.finalize()).eq_ignore_ascii_case(sha256))
}

/// A regular file found beneath a collected directory.
struct Found {
    /// Its path beneath the directory.
    rel: String,
    file: File,
    size: u64,
}

/// How an entry is opened: beneath its directory, never through a symlink (magic ones
/// included), never onto another filesystem.
fn strict() -> ResolveFlag {
    ResolveFlag::RESOLVE_BENEATH
        | ResolveFlag::RESOLVE_NO_SYMLINKS
        | ResolveFlag::RESOLVE_NO_MAGICLINKS
        | ResolveFlag::RESOLVE_NO_XDEV
}

fn kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

/// Every regular file beneath the directory `root` (the job's `at`), each opened; what is
/// not one (symlinks, devices, fifos, sockets, hard-linked files, names the file store
/// cannot hold, other filesystems) goes to `skipped`. More than `max` files in all (`count`
/// carries across calls) is an error: nothing is written then.
fn walk(
    root: OwnedFd,
    at: &str,
    max: usize,
    count: &mut usize,
    skipped: &mut Vec<Skipped>,
) -> std::result::Result<Vec<Found>, String> {
    let io = |e: Errno| format!("the outputs under {at} could not be read: {e}");
    let mut found = Vec::new();
    let mut stack: Vec<(OwnedFd, String)> = vec![(root, String::new())];
    while let Some((fd, prefix)) = stack.pop() {
        let dev = nix::sys::stat::fstat(fd.as_fd()).map_err(io)?.st_dev;
        let mut dir = nix::dir::Dir::from_fd(fd).map_err(io)?;
        let mut names = Vec::new();
        for e in dir.iter() {
            let e = e.map_err(io)?;
            let n = e.file_name().to_bytes();
            if n != b"." && n != b".." {
                names.push(e.file_name().to_owned());
            }
        }
        names.sort();
        for name in names {
            let shown = format!("{at}/{prefix}{}", name.to_string_lossy());
            let mut skip = |reason: &str| {
                skipped.push(Skipped {
                    path: shown.clone(),
                    reason: reason.to_owned(),
                })
            };
            let Ok(utf8) = name.to_str() else {
                skip("the name is not UTF-8");
                continue;
            };
            let rel = format!("{prefix}{utf8}");
            if let Err(e) = validate_path(&rel) {
                skip(&format!("no file-store name: {e}"));
                continue;
            }
            let st = match nix::sys::stat::fstatat(
                &dir,
                name.as_c_str(),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            ) {
                Ok(st) => st,
                Err(e) => return Err(io(e)),
            };
            if st.st_dev != dev {
                skip("on another filesystem");
                continue;
            }
            let k = kind(&st);
            let flags = if k == SFlag::S_IFDIR {
                OFlag::O_RDONLY | OFlag::O_DIRECTORY
            } else if k == SFlag::S_IFREG {
                if st.st_nlink > 1 {
                    skip("a hard link (a file with more than one name)");
                    continue;
                }
                OFlag::O_RDONLY | OFlag::O_NONBLOCK
            } else if k == SFlag::S_IFLNK {
                skip("a symlink");
                continue;
            } else {
                skip("not a regular file (a device, fifo or socket)");
                continue;
            };
            let opened = match crate::jobs::sandbox::beneath::open_beneath(
                &dir,
                name.as_c_str(),
                flags | OFlag::O_NOFOLLOW | OFlag::O_NOCTTY,
                strict(),
            ) {
                Ok(f) => f,
                Err(Errno::ELOOP) => {
                    skip("a symlink");
                    continue;
                }
                Err(Errno::EXDEV) => {
                    skip("on another filesystem");
                    continue;
                }
                Err(e) => return Err(io(e)),
            };
            // The same entry as looked at (nothing else runs in the job any more).
            let again = nix::sys::stat::fstat(opened.as_fd()).map_err(io)?;
            if again.st_ino != st.st_ino || kind(&again) != k {
                skip("changed while it was read");
                continue;
            }
            if k == SFlag::S_IFDIR {
                stack.push((opened, format!("{rel}/")));
                continue;
            }
            *count += 1;
            if *count > max {
                return Err(format!(
                    "the job left more than exec.max-output-files ({max}) files to bring back; nothing was written"
                ));
            }
            found.push(Found {
                rel,
                file: File::from(opened),
                size: u64::try_from(again.st_size).unwrap_or(0),
            });
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use std::os::unix::fs::symlink;

    fn open_dir(p: &std::path::Path) -> OwnedFd {
        nix::fcntl::open(
            p,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .unwrap()
    }

    #[test]
    fn the_walk_takes_regular_files_only_and_says_what_it_skipped() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out");
        std::fs::create_dir_all(out.join("sub/deeper")).unwrap();
        std::fs::write(out.join("a.txt"), b"a").unwrap();
        std::fs::write(out.join("sub/deeper/b.txt"), b"bb").unwrap();
        symlink("/etc/passwd", out.join("x")).unwrap();
        symlink("..", out.join("up")).unwrap();
        std::fs::write(d.path().join("outside"), b"secret").unwrap();
        std::fs::hard_link(out.join("a.txt"), out.join("a-again")).unwrap();
        nix::unistd::mkfifo(&out.join("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let mut count = 0;
        let mut skipped = Vec::new();
        let found = walk(open_dir(&out), "/work/out", 100, &mut count, &mut skipped).unwrap();
        let mut got: Vec<(String, u64)> = found.iter().map(|f| (f.rel.clone(), f.size)).collect();
        got.sort();
        assert_eq!(got, vec![("sub/deeper/b.txt".to_owned(), 2)]);
        let mut why: Vec<(String, String)> = skipped
            .iter()
            .map(|s| (s.path.clone(), s.reason.clone()))
            .collect();
        why.sort();
        let paths: Vec<&str> = why.iter().map(|w| w.0.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "/work/out/a-again",
                "/work/out/a.txt",
                "/work/out/fifo",
                "/work/out/up",
                "/work/out/x"
            ],
            "{why:?}"
        );
        assert!(why[0].1.contains("hard link"), "{why:?}");
        assert!(why[2].1.contains("fifo"), "{why:?}");
        assert!(why[4].1.contains("symlink"), "{why:?}");
        // The bound counts across directories.
        let mut count = 0;
        std::fs::remove_file(out.join("a-again")).unwrap();
        let err = walk(open_dir(&out), "/work/out", 1, &mut count, &mut Vec::new())
            .err()
            .unwrap();
        assert!(err.contains("exec.max-output-files"), "{err}");
    }

    #[test]
    fn keep_outputs_keeps_what_it_says() {
        assert!(KeepOutputs::OnSuccess.keeps("ok"));
        assert!(!KeepOutputs::OnSuccess.keeps("nonzero_exit"));
        assert!(KeepOutputs::OnExit.keeps("nonzero_exit"));
        for s in [
            "timeout",
            "killed",
            "memory_limit",
            "cpu_limit",
            "output_limit",
            "sandbox_error",
        ] {
            assert!(!KeepOutputs::OnExit.keeps(s), "{s}");
        }
    }

    #[test]
    fn inside_paths_are_absolute_and_plain() {
        assert_eq!(inside_path("/work/out/", "x").unwrap(), "/work/out");
        assert_eq!(inside_path("/data", "x").unwrap(), "/data");
        for bad in ["data", "/", "/a/../b", "/a//b", "//"] {
            assert!(inside_path(bad, "x").is_err(), "{bad}");
        }
    }
}
