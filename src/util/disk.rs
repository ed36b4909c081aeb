//! Free space on the state directory's filesystem and the floor (`storage.min-free-disk`)
//! that writes adding data keep above, so a full disk refuses new data with 507 while deletes
//! and the database's own upkeep still have room to work.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::{ByteSize, LiveConfig};
use crate::error::{Error, Result};

/// Free space of the filesystem holding `path`, as seen by an unprivileged writer.
pub fn free_bytes(path: &Path) -> std::io::Result<u64> {
    let st = nix::sys::statvfs::statvfs(path).map_err(std::io::Error::from)?;
    Ok(st.blocks_available().saturating_mul(st.fragment_size()))
}

/// Refuses (507) when writing `more` bytes at `path` would leave less than `floor`
/// (`storage.min-free-disk`) free on its filesystem.
pub fn ensure_free(path: &Path, floor: ByteSize, more: u64) -> Result<()> {
    let free = free_bytes(path).map_err(Error::Io)?;
    room_after(free, floor, more, "stored").map(drop)
}

/// The bytes of `free` that stay above `floor` once `more` are written; refused (507) when
/// there are none, with a message that ends "nothing was `undone`".
fn room_after(free: u64, floor: ByteSize, more: u64, undone: &str) -> Result<u64> {
    free.checked_sub(floor.bytes())
        .and_then(|r| r.checked_sub(more))
        .ok_or_else(|| {
            Error::InsufficientStorage(format!(
                "the disk has {free} bytes free; storing this would go below storage.min-free-disk ({floor}); nothing was {undone}"
            ))
        })
}

/// How long a free-disk reading is trusted while the store's own writes use up its headroom.
const DISK_RECHECK: Duration = Duration::from_secs(1);

/// The free-disk floor for writes that add data. A reading (statvfs) is reused for up to
/// `DISK_RECHECK` while the bytes written since stay within the room it found above the
/// floor, so a busy store does not ask the kernel on every write.
pub struct DiskFloor {
    live: Arc<LiveConfig>,
    dir: PathBuf,
    /// When the last reading was taken and how many bytes may still be written on it.
    last: Mutex<Option<(Instant, u64)>>,
}

impl DiskFloor {
    pub fn new(live: Arc<LiveConfig>, dir: PathBuf) -> DiskFloor {
        DiskFloor {
            live,
            dir,
            last: Mutex::new(None),
        }
    }

    /// Refuses (507) when writing `more` bytes would leave less than `storage.min-free-disk`.
    pub fn ensure(&self, more: u64) -> Result<()> {
        let mut last = match self.last.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if let Some((at, room)) = last.as_mut()
            && at.elapsed() < DISK_RECHECK
            && *room >= more
        {
            *room -= more;
            return Ok(());
        }
        let floor = self.live.get().storage.min_free_disk;
        let free = free_bytes(&self.dir).map_err(Error::Io)?;
        match room_after(free, floor, more, "changed") {
            Ok(room) => {
                *last = Some((Instant::now(), room));
                Ok(())
            }
            Err(e) => {
                *last = None;
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_room_is_what_stays_above_the_floor_after_the_write() {
        assert_eq!(room_after(100, ByteSize(30), 20, "stored").unwrap(), 50);
        assert_eq!(room_after(100, ByteSize(30), 70, "stored").unwrap(), 0);
        let e = room_after(100, ByteSize(30), 71, "changed").unwrap_err();
        assert!(
            matches!(&e, Error::InsufficientStorage(m)
                if m == "the disk has 100 bytes free; storing this would go below storage.min-free-disk (30B); nothing was changed"),
            "{e:?}"
        );
        assert!(room_after(100, ByteSize(u64::MAX), 1, "stored").is_err());
    }

    #[test]
    fn a_real_filesystem_has_free_bytes_and_keeps_the_floor() {
        let d = tempfile::tempdir().unwrap();
        assert!(free_bytes(d.path()).unwrap() > 0);
        ensure_free(d.path(), ByteSize(0), 0).unwrap();
        let e = ensure_free(d.path(), ByteSize(u64::MAX), 0).unwrap_err();
        assert!(
            matches!(&e, Error::InsufficientStorage(m) if m.ends_with("nothing was stored")),
            "{e:?}"
        );
        assert!(free_bytes(&d.path().join("missing")).is_err());
    }
}
