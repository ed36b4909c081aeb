//! Views: what jobs mount. A job never sees the file store or the program store; it sees a
//! view, a directory under `$STATE_DIRECTORY/mounts/` (`layout::MOUNTS_DIR`) that the sandbox
//! binds out of the job's sight while it builds the job's root (`Policy::mount_root`):
//!
//! - a view of a file-store folder is a tree of hard links to the blobs of the files beneath
//!   the folder, each named by its path beneath the folder (folders made 0755);
//! - a view of a program is a tree of hard links to the program's files.
//!
//! Hard links cost one directory entry per file and no copy; the blobs are made 0644
//! (`files::BLOB_MODE`) so a job's own uid can read them (the state directory, 0700, keeps
//! everyone else out, and the job only ever reaches them through its read-only mount or a
//! copy). A view is built once and reused until its folder changes: the file store keeps a
//! change number per folder (`Files::folder_version`), so the check is O(1). A stale view is
//! rebuilt under a new name for the next job and removed once no running job holds it (a
//! [`ViewLease`] lives as long as the job): at once when its folder changes while no job holds
//! it, else when its last job ends. Program views live until their program is
//! deleted. The whole directory is a cache: it is emptied at every start.

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::{Error, Result};
use crate::jobs::sandbox::policy::plain_relative;
use crate::store::files::{BLOB_MODE, Files, FolderEntry};

/// Mode of the mounts directory: the daemon writes it, a job's uid may only pass through it
/// (the sandbox opens it with the daemon's credentials anyway).
const ROOT_MODE: u32 = 0o711;
/// Mode of every directory of a view.
const DIR_MODE: u32 = 0o755;
/// Times a folder view is built again when a file changes under it while it is being built.
const BUILD_TRIES: usize = 3;

/// The views under the mounts directory; cheap to clone.
#[derive(Clone)]
pub struct Views {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    files: Files,
    state: Mutex<State>,
    /// Names views: never reused within a daemon's life (the directory is emptied at start).
    next: AtomicU64,
    /// One build at a time per view key (two jobs wanting the same stale folder share one
    /// rebuild).
    building: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Views built since the start (what tests and operators can watch for reuse).
    builds: AtomicU64,
    /// Where removals run (they may be asked for on the database's writer thread).
    runtime: Option<tokio::runtime::Handle>,
}

#[derive(Default)]
struct State {
    /// The view a new job gets, by key (`f:<folder>`, `p:<program id>`).
    current: HashMap<String, Entry>,
    /// Views replaced (stale, or of a deleted program) still held by running jobs: name →
    /// how many.
    retired: HashMap<String, usize>,
}

struct Entry {
    name: String,
    /// The folder's change number when its listing was read (folder views).
    version: u64,
    /// The program was deleted (program views): never handed out again.
    gone: bool,
    users: usize,
    files: Arc<Vec<FolderEntry>>,
}

/// A view held for one job: the view's directory stays until the lease is dropped.
pub struct ViewLease {
    inner: Arc<Inner>,
    key: String,
    /// The view's directory name beneath the mounts directory (the job mount's `source`).
    pub name: String,
    /// The folder's change number the view shows (folder views).
    pub version: u64,
    /// The files the view holds (paths beneath the folder, blobs, sizes, digests).
    pub files: Arc<Vec<FolderEntry>>,
}

impl ViewLease {
    /// Bytes of the files the view holds.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

impl Drop for ViewLease {
    fn drop(&mut self) {
        let doomed = {
            let mut st = self.inner.state();
            let mut doomed = Vec::new();
            let current = st
                .current
                .get_mut(&self.key)
                .filter(|e| e.name == self.name);
            if let Some(e) = current {
                e.users = e.users.saturating_sub(1);
            } else if let Some(n) = st.retired.get_mut(&self.name) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    st.retired.remove(&self.name);
                    doomed.push(self.name.clone());
                }
            }
            doomed.extend(self.inner.stale_unused(&mut st));
            doomed
        };
        self.inner.remove(doomed);
    }
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Whether the current view of `key` no longer shows what it stands for.
    fn stale(&self, key: &str, e: &Entry) -> bool {
        match key.strip_prefix("f:") {
            Some(folder) => self.files.folder_version(folder) != e.version,
            None => e.gone,
        }
    }

    /// Takes the current views that are stale and held by no job out of the state; their
    /// names come back for removal.
    fn stale_unused(&self, st: &mut State) -> Vec<String> {
        let keys: Vec<String> = st
            .current
            .iter()
            .filter(|(k, e)| e.users == 0 && self.stale(k, e))
            .map(|(k, _)| k.clone())
            .collect();
        keys.into_iter()
            .filter_map(|k| st.current.remove(&k).map(|e| e.name))
            .collect()
    }

    /// Removes the views named (in the background when a runtime is there).
    fn remove(&self, names: Vec<String>) {
        if names.is_empty() {
            return;
        }
        let dirs: Vec<PathBuf> = names.iter().map(|n| self.root.join(n)).collect();
        let work = move || {
            for d in dirs {
                if let Err(e) = std::fs::remove_dir_all(&d)
                    && e.kind() != io::ErrorKind::NotFound
                {
                    tracing::warn!(view = %d.display(), error = %e, "cannot remove a stale view; it goes at the next start");
                }
            }
        };
        match &self.runtime {
            Some(h) => {
                h.spawn_blocking(work);
            }
            None => work(),
        }
    }

    fn builder(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = match self.building.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        // Forget the locks nobody holds or waits for (the map stays as small as the builds
        // in progress).
        map.retain(|_, m| Arc::strong_count(m) > 1);
        map.entry(key.to_owned()).or_default().clone()
    }

    /// The current view of `key` for one more job, when it is still current.
    fn reuse(self: &Arc<Self>, key: &str) -> Option<ViewLease> {
        let mut st = self.state();
        let e = st.current.get_mut(key)?;
        let fresh = match key.strip_prefix("f:") {
            Some(folder) => self.files.folder_version(folder) == e.version,
            None => !e.gone,
        };
        if !fresh {
            return None;
        }
        e.users += 1;
        Some(ViewLease {
            inner: self.clone(),
            key: key.to_owned(),
            name: e.name.clone(),
            version: e.version,
            files: e.files.clone(),
        })
    }

    /// Makes `built` the current view of `key`, held once; the view it replaces is removed,
    /// or retired until its jobs end.
    fn install(
        self: &Arc<Self>,
        key: &str,
        name: String,
        version: u64,
        files: Vec<FolderEntry>,
    ) -> ViewLease {
        let files = Arc::new(files);
        let doomed = {
            let mut st = self.state();
            let old = st.current.insert(
                key.to_owned(),
                Entry {
                    name: name.clone(),
                    version,
                    gone: false,
                    users: 1,
                    files: files.clone(),
                },
            );
            let mut doomed = self.stale_unused(&mut st);
            if let Some(old) = old {
                if old.users == 0 {
                    doomed.push(old.name);
                } else {
                    st.retired.insert(old.name, old.users);
                }
            }
            doomed
        };
        self.remove(doomed);
        self.builds.fetch_add(1, Ordering::Relaxed);
        ViewLease {
            inner: self.clone(),
            key: key.to_owned(),
            name,
            version,
            files,
        }
    }

    fn new_name(&self, kind: char) -> String {
        format!("{kind}{}", self.next.fetch_add(1, Ordering::Relaxed))
    }
}

/// What building a view's tree came to.
enum Built {
    Done,
    /// A blob vanished meanwhile (its file was replaced or deleted): list the folder again.
    Retry,
}

/// Makes `dir` (mode 0755 whatever the umask).
fn make_dir(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new().mode(DIR_MODE).create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE))
}

/// Links every file of `entries` (`rel` → `source`) under `dir`, making folders as needed.
/// A name that cannot be placed (a file `a` and a file `a/b` both in the store) is left out
/// and logged. `fix_mode`: make each source [`BLOB_MODE`] first (blobs older than that mode).
fn link_tree(dir: &Path, entries: &[(String, PathBuf)], fix_mode: bool) -> io::Result<Built> {
    make_dir(dir)?;
    let mut made: HashSet<String> = HashSet::new();
    for (rel, source) in entries {
        if !plain_relative(rel) {
            tracing::warn!(path = %rel, "a stored name is not a plain path; left out of the view");
            continue;
        }
        let mut placeable = true;
        for (i, b) in rel.bytes().enumerate() {
            if b != b'/' || made.contains(&rel[..i]) {
                continue;
            }
            match make_dir(&dir.join(&rel[..i])) {
                Ok(()) => {
                    made.insert(rel[..i].to_owned());
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    placeable = false;
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        if !placeable {
            tracing::warn!(path = %rel, "a file of the folder is named beneath another file's name; left out of the view");
            continue;
        }
        let meta = match std::fs::symlink_metadata(source) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Built::Retry),
            Err(e) => return Err(e),
        };
        if !meta.is_file() {
            return Err(io::Error::other(format!(
                "{} is not a regular file of the store",
                source.display()
            )));
        }
        if fix_mode && meta.permissions().mode() & 0o7777 != BLOB_MODE {
            std::fs::set_permissions(source, std::fs::Permissions::from_mode(BLOB_MODE))?;
        }
        match std::fs::hard_link(source, dir.join(rel)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Built::Retry),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists || made.contains(rel.as_str()) => {
                tracing::warn!(path = %rel, "a file of the folder has the name of a folder in it; left out of the view");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(Built::Done)
}

/// A folder as the file store names it: `""` (the whole store) or a path ending in `/`.
/// `folder` may be given with or without its trailing `/`.
pub fn folder_key(folder: &str) -> Result<String> {
    let trimmed = folder.strip_suffix('/').unwrap_or(folder);
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    crate::store::files::validate_path(trimmed)?;
    Ok(format!("{trimmed}/"))
}

impl Views {
    /// The views under `root` (`$STATE_DIRECTORY/mounts`): made 0711, emptied of whatever a
    /// previous run left (a cache).
    pub fn open(root: PathBuf, files: Files) -> Result<Views> {
        match std::fs::symlink_metadata(&root) {
            Ok(m) if m.is_dir() => {
                for e in std::fs::read_dir(&root)? {
                    let p = e?.path();
                    if std::fs::symlink_metadata(&p)?.is_dir() {
                        std::fs::remove_dir_all(&p)?;
                    } else {
                        std::fs::remove_file(&p)?;
                    }
                }
            }
            Ok(_) => {
                return Err(Error::Internal(format!(
                    "{} is not a directory",
                    root.display()
                )));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::DirBuilder::new().mode(ROOT_MODE).create(&root)?;
            }
            Err(e) => return Err(e.into()),
        }
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(ROOT_MODE))?;
        let inner = Arc::new(Inner {
            root,
            files: files.clone(),
            state: Mutex::new(State::default()),
            next: AtomicU64::new(1),
            building: Mutex::new(HashMap::new()),
            builds: AtomicU64::new(0),
            runtime: tokio::runtime::Handle::try_current().ok(),
        });
        // A view no job holds goes as soon as its folder changes: a deleted file's blob does
        // not outlive it in a view nobody uses.
        let weak = Arc::downgrade(&inner);
        files.on_change(Box::new(move || {
            if let Some(inner) = weak.upgrade() {
                let doomed = inner.stale_unused(&mut inner.state());
                inner.remove(doomed);
            }
        }));
        Ok(Views { inner })
    }

    /// The mounts directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Views built since the start.
    pub fn builds(&self) -> u64 {
        self.inner.builds.load(Ordering::Relaxed)
    }

    /// A view of the file-store folder `folder` (`""` or ending in `/`), built unless the
    /// current one still shows the folder as it is. An empty or unknown folder gives an
    /// empty view (folders are virtual).
    pub async fn folder(&self, folder: &str) -> Result<ViewLease> {
        let key = format!("f:{folder}");
        let lock = self.inner.builder(&key);
        let _building = lock.lock().await;
        for _ in 0..BUILD_TRIES {
            if let Some(lease) = self.inner.reuse(&key) {
                return Ok(lease);
            }
            let (version, entries) = self.inner.files.folder_entries(folder).await?;
            let name = self.inner.new_name('f');
            let dir = self.inner.root.join(&name);
            let links: Vec<(String, PathBuf)> = entries
                .iter()
                .map(|e| (e.rel.clone(), e.blob.clone()))
                .collect();
            let built = tokio::task::spawn_blocking(move || {
                let r = link_tree(&dir, &links, true);
                if !matches!(r, Ok(Built::Done)) {
                    let _ = std::fs::remove_dir_all(&dir);
                }
                r
            })
            .await
            .map_err(|e| Error::Internal(format!("view task failed: {e}")))??;
            match built {
                Built::Done => return Ok(self.inner.install(&key, name, version, entries)),
                Built::Retry => continue,
            }
        }
        Err(Error::Busy(format!(
            "the folder {folder:?} kept changing while its view was built; retry"
        )))
    }

    /// A view of program `id`, whose files (`rel` paths, checked by the program store) are in
    /// `dir`. Built once; it stays until the program is deleted.
    pub async fn program(&self, id: &str, dir: &Path, files: &[String]) -> Result<ViewLease> {
        let key = format!("p:{id}");
        let lock = self.inner.builder(&key);
        let _building = lock.lock().await;
        if let Some(lease) = self.inner.reuse(&key) {
            return Ok(lease);
        }
        let name = self.inner.new_name('p');
        let target = self.inner.root.join(&name);
        let links: Vec<(String, PathBuf)> =
            files.iter().map(|f| (f.clone(), dir.join(f))).collect();
        let built = tokio::task::spawn_blocking(move || {
            let r = link_tree(&target, &links, false);
            if !matches!(r, Ok(Built::Done)) {
                let _ = std::fs::remove_dir_all(&target);
            }
            r
        })
        .await
        .map_err(|e| Error::Internal(format!("view task failed: {e}")))??;
        match built {
            Built::Done => Ok(self.inner.install(&key, name, 0, Vec::new())),
            Built::Retry => Err(Error::NotFound(format!("program {id} is being deleted"))),
        }
    }

    /// Program `id` is deleted: its view is removed now, or once the jobs holding it end.
    pub fn forget_program(&self, id: &str) {
        let doomed = {
            let mut st = self.inner.state();
            match st.current.remove(&format!("p:{id}")) {
                Some(e) if e.users == 0 => vec![e.name],
                Some(e) => {
                    st.retired.insert(e.name, e.users);
                    Vec::new()
                }
                None => Vec::new(),
            }
        };
        self.inner.remove(doomed);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::config::{Config, LiveConfig};
    use crate::store::audit::Caller;
    use crate::store::db::Db;
    use crate::store::files::Conditions;
    use bytes::Bytes;
    use std::os::unix::fs::MetadataExt;

    async fn setup() -> (tempfile::TempDir, Files, Views) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("t.db"), 2).unwrap();
        let mut cfg = Config::default();
        cfg.storage.min_free_disk = crate::config::ByteSize(0);
        let live = Arc::new(LiveConfig::new(cfg));
        let files = Files::new(db, live, dir.path().join("files"), Arc::default());
        files.recover().await.unwrap();
        let views = Views::open(dir.path().join("mounts"), files.clone()).unwrap();
        (dir, files, views)
    }

    async fn put(files: &Files, path: &str, body: &'static [u8]) {
        let s = tokio_stream::iter(vec![Ok::<_, String>(Bytes::from_static(body))]);
        files
            .put(
                path,
                s,
                None,
                None,
                Conditions::default(),
                Caller::default(),
            )
            .await
            .unwrap();
    }

    fn names(views: &Views) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(views.root())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_folder_view_links_its_blobs_is_reused_and_rebuilt_after_a_change() {
        let (_dir, files, views) = setup().await;
        put(&files, "r/2026/a.csv", b"1,2\n").await;
        put(&files, "r/2026/sub/b.csv", b"3\n").await;
        put(&files, "r/other.txt", b"x").await;
        let folder = folder_key("r/2026").unwrap();
        assert_eq!(folder, "r/2026/");
        let a = views.folder(&folder).await.unwrap();
        let root = views.root().join(&a.name);
        assert_eq!(std::fs::read(root.join("a.csv")).unwrap(), b"1,2\n");
        assert_eq!(std::fs::read(root.join("sub/b.csv")).unwrap(), b"3\n");
        assert!(!root.join("other.txt").exists());
        let m = std::fs::metadata(root.join("a.csv")).unwrap();
        assert_eq!(m.nlink(), 2, "a hard link, not a copy");
        assert_eq!(m.mode() & 0o7777, 0o644);
        assert_eq!(
            std::fs::metadata(root.join("sub")).unwrap().mode() & 0o7777,
            0o755
        );
        // Held and unchanged: the same view; a change elsewhere does not matter.
        put(&files, "r/other.txt", b"y").await;
        let b = views.folder(&folder).await.unwrap();
        assert_eq!(b.name, a.name);
        assert_eq!(views.builds(), 1);
        // A change in the folder: a new view; the old one stays while held.
        put(&files, "r/2026/a.csv", b"9\n").await;
        let c = views.folder(&folder).await.unwrap();
        assert_ne!(c.name, a.name);
        assert_eq!(views.builds(), 2);
        assert_eq!(
            std::fs::read(views.root().join(&c.name).join("a.csv")).unwrap(),
            b"9\n"
        );
        assert_eq!(std::fs::read(root.join("a.csv")).unwrap(), b"1,2\n");
        drop(a);
        drop(b);
        // Removed in the background once its last holder let go.
        for _ in 0..100 {
            if !root.exists() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(!root.exists(), "{:?}", names(&views));
        assert_eq!(names(&views), vec![c.name.clone()]);
        // An unknown folder is an empty view.
        let e = views.folder("nothing/").await.unwrap();
        assert_eq!(
            std::fs::read_dir(views.root().join(&e.name))
                .unwrap()
                .count(),
            0
        );
        // Held by no job, a view goes as soon as its folder changes (no other call needed):
        // the blob of a deleted file does not stay behind in it.
        drop(c);
        let gone = views
            .root()
            .join(names(&views).into_iter().find(|n| *n != e.name).unwrap());
        files
            .delete("r/2026/a.csv", Caller::default())
            .await
            .unwrap();
        for _ in 0..100 {
            if !gone.exists() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(!gone.exists());
        assert_eq!(names(&views), vec![e.name.clone()]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn old_blobs_are_made_readable_and_the_directory_is_emptied_at_open() {
        let (dir, files, views) = setup().await;
        put(&files, "d/x", b"x").await;
        let (_, entries) = files.folder_entries("d/").await.unwrap();
        std::fs::set_permissions(&entries[0].blob, std::fs::Permissions::from_mode(0o600)).unwrap();
        let v = views.folder("d/").await.unwrap();
        assert_eq!(
            std::fs::metadata(&entries[0].blob).unwrap().mode() & 0o7777,
            0o644
        );
        assert_eq!(
            std::fs::metadata(views.root()).unwrap().mode() & 0o7777,
            0o711
        );
        std::mem::forget(v);
        let again = Views::open(dir.path().join("mounts"), files).unwrap();
        assert!(names(&again).is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_program_view_lives_until_its_program_is_deleted() {
        let (dir, _files, views) = setup().await;
        let prog = dir.path().join("prog");
        std::fs::create_dir_all(prog.join("lib")).unwrap();
        std::fs::write(prog.join("main.py"), b"print(1)").unwrap();
        std::fs::write(prog.join("lib/x.py"), b"x = 1").unwrap();
        let files = vec!["main.py".to_owned(), "lib/x.py".to_owned()];
        let a = views.program("p1", &prog, &files).await.unwrap();
        let b = views.program("p1", &prog, &files).await.unwrap();
        assert_eq!(a.name, b.name);
        let root = views.root().join(&a.name);
        assert_eq!(std::fs::read(root.join("lib/x.py")).unwrap(), b"x = 1");
        views.forget_program("p1");
        assert!(root.exists(), "held by two jobs");
        drop(a);
        drop(b);
        for _ in 0..100 {
            if !root.exists() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(!root.exists());
    }
}
