//! Blob pins: while a backup runs, the blobs and program trees it may still read are not
//! unlinked. The file and program stores remove through [`BlobPins::remove`]; a backup holds a
//! [`PinGuard`] while it reads. It lives in the store, below both the stores and the backup
//! that share it, so neither names the other for it.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// Counts backups in progress and holds the blob and program paths whose removal waits for
/// them. The file and program stores remove through [`BlobPins::remove`]; a crash while
/// removals wait leaves orphans that the stores' startup recovery removes.
#[derive(Debug, Default)]
pub struct BlobPins {
    state: Mutex<PinState>,
}

#[derive(Debug, Default)]
struct PinState {
    count: usize,
    deferred: Vec<PathBuf>,
}

/// One backup's pin; dropping it completes the removals that waited, once no backup runs.
#[derive(Debug)]
pub struct PinGuard(Arc<BlobPins>);

impl BlobPins {
    fn state(&self) -> MutexGuard<'_, PinState> {
        match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Pins every blob until the guard is dropped.
    pub fn pin(self: &Arc<Self>) -> PinGuard {
        self.state().count += 1;
        PinGuard(self.clone())
    }

    /// Whether a backup is in progress.
    pub fn pinned(&self) -> bool {
        self.state().count > 0
    }

    /// Removes `path` (a file, or a directory tree) now, or once no backup is in progress.
    /// Blocking; a missing path is not an error.
    pub fn remove(&self, path: PathBuf) -> io::Result<()> {
        {
            let mut s = self.state();
            if s.count > 0 {
                s.deferred.push(path);
                return Ok(());
            }
        }
        remove_path(&path)
    }
}

/// Removes a file or a directory tree; a missing path is not an error.
pub fn remove_path(path: &Path) -> io::Result<()> {
    let r = match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) => Err(e),
    };
    match r {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

impl Drop for PinGuard {
    fn drop(&mut self) {
        let deferred = {
            let mut s = self.0.state();
            s.count = s.count.saturating_sub(1);
            if s.count > 0 {
                return;
            }
            std::mem::take(&mut s.deferred)
        };
        for p in deferred {
            if let Err(e) = remove_path(&p) {
                tracing::warn!(path = %p.display(), error = %e, "cannot remove a blob whose removal waited for a backup; startup recovery removes it");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_defer_removal_until_the_last_backup_ends() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("blob");
        std::fs::write(&f, b"x").unwrap();
        let pins = Arc::new(BlobPins::default());
        let a = pins.pin();
        let b = pins.pin();
        pins.remove(f.clone()).unwrap();
        assert!(f.exists(), "removed while pinned");
        drop(a);
        assert!(f.exists(), "removed while one pin remains");
        drop(b);
        assert!(!f.exists(), "not removed once unpinned");
        std::fs::write(&f, b"x").unwrap();
        pins.remove(f.clone()).unwrap();
        assert!(!f.exists(), "not removed at once without pins");
    }
}
