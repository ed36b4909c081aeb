//! Filesystem steps the stores repeat.

use std::fs::File;
use std::io;
use std::path::Path;

/// fsync of the directory `dir`, so the names created, renamed or removed in it survive a
/// crash (a file's own fsync keeps its bytes, not its name).
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_syncs_and_a_missing_one_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        sync_dir(d.path()).unwrap();
        assert!(sync_dir(&d.path().join("missing")).is_err());
    }
}
