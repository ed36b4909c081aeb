//! Opening a path beneath a directory without following a symlink or leaving it: openat2,
//! or the same rules walked by hand where a seccomp filter refuses openat2.

use std::os::fd::AsFd;

/// openat2(2) of `path` beneath `dir` with `resolve` (and `O_CLOEXEC`). Where a seccomp
/// filter answers openat2 with ENOSYS (systemd-nspawn 252's allow-list, a unit on an older
/// systemd), the same rules are kept by hand: one component at a time with `O_NOFOLLOW` (a
/// symlink anywhere: ELOOP), no absolute path and no `..` (EXDEV, as RESOLVE_BENEATH answers),
/// and with RESOLVE_NO_XDEV every step on `dir`'s filesystem (EXDEV).
pub fn open_beneath<D: std::os::fd::AsFd, P: ?Sized + nix::NixPath>(
    dir: &D,
    path: &P,
    flags: nix::fcntl::OFlag,
    resolve: nix::fcntl::ResolveFlag,
) -> nix::Result<std::os::fd::OwnedFd> {
    let how = nix::fcntl::OpenHow::new()
        .flags(flags | nix::fcntl::OFlag::O_CLOEXEC)
        .resolve(resolve);
    match nix::fcntl::openat2(dir.as_fd(), path, how) {
        Err(nix::errno::Errno::ENOSYS) => {
            let bytes = path.with_nix_path(|c| c.to_bytes().to_vec())?;
            walk_beneath(dir.as_fd(), &bytes, flags, resolve)
        }
        other => other,
    }
}

fn walk_beneath(
    dir: std::os::fd::BorrowedFd<'_>,
    path: &[u8],
    flags: nix::fcntl::OFlag,
    resolve: nix::fcntl::ResolveFlag,
) -> nix::Result<std::os::fd::OwnedFd> {
    use nix::errno::Errno;
    use nix::fcntl::OFlag;
    use nix::sys::stat::{SFlag, fstat};
    if path.first() == Some(&b'/') {
        return Err(Errno::EXDEV);
    }
    let root_dev = fstat(dir)?.st_dev;
    let parts: Vec<&[u8]> = path
        .split(|b| *b == b'/')
        .filter(|p| !p.is_empty() && *p != b".")
        .collect();
    let mut cur: Option<std::os::fd::OwnedFd> = None;
    for (i, part) in parts.iter().enumerate() {
        if *part == b".." {
            return Err(Errno::EXDEV);
        }
        let last = i + 1 == parts.len();
        let f = if last {
            flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
        } else {
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
        };
        let at = match &cur {
            Some(fd) => fd.as_fd(),
            None => dir,
        };
        let fd = nix::fcntl::openat(at, *part, f, nix::sys::stat::Mode::empty())?;
        let st = fstat(&fd)?;
        // O_PATH | O_NOFOLLOW opens a symlink itself rather than failing.
        let kind = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
        if kind == SFlag::S_IFLNK {
            return Err(Errno::ELOOP);
        }
        if !last && kind != SFlag::S_IFDIR {
            return Err(Errno::ENOTDIR);
        }
        if resolve.contains(nix::fcntl::ResolveFlag::RESOLVE_NO_XDEV) && st.st_dev != root_dev {
            return Err(Errno::EXDEV);
        }
        cur = Some(fd);
    }
    cur.ok_or(Errno::EINVAL)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;

    #[test]
    fn the_hand_walk_keeps_openat2s_rules() {
        use nix::fcntl::{OFlag, ResolveFlag};
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("a/b")).unwrap();
        std::fs::write(d.path().join("a/b/f"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc", d.path().join("a/link")).unwrap();
        std::os::unix::fs::symlink("f", d.path().join("a/b/flink")).unwrap();
        let root: std::os::fd::OwnedFd = File::open(d.path()).unwrap().into();
        let strict = ResolveFlag::RESOLVE_BENEATH
            | ResolveFlag::RESOLVE_NO_SYMLINKS
            | ResolveFlag::RESOLVE_NO_XDEV;
        let walk = |p: &str, f: OFlag| walk_beneath(root.as_fd(), p.as_bytes(), f, strict);
        assert!(walk("a/b/f", OFlag::O_RDONLY).is_ok());
        assert!(walk("a/./b", OFlag::O_PATH | OFlag::O_DIRECTORY).is_ok());
        assert_eq!(
            walk("a/link/passwd", OFlag::O_RDONLY).unwrap_err(),
            nix::errno::Errno::ELOOP
        );
        assert_eq!(
            walk("a/link", OFlag::O_PATH).unwrap_err(),
            nix::errno::Errno::ELOOP
        );
        assert_eq!(
            walk("a/b/flink", OFlag::O_RDONLY).unwrap_err(),
            nix::errno::Errno::ELOOP
        );
        assert_eq!(
            walk("a/../..", OFlag::O_PATH).unwrap_err(),
            nix::errno::Errno::EXDEV
        );
        assert_eq!(
            walk("/etc", OFlag::O_PATH).unwrap_err(),
            nix::errno::Errno::EXDEV
        );
        // Where openat2 exists the public function uses it, with the same answers.
        assert!(open_beneath(&root, "a/b/f", OFlag::O_RDONLY, strict).is_ok());
        assert!(open_beneath(&root, "a/link/passwd", OFlag::O_RDONLY, strict).is_err());
    }
}
