//! Names read back from the database that become paths under the state directory (a file's
//! blob id, a program's id, a program's file paths and its main file), each a type whose only
//! constructors validate it, and opening stored files beneath their directory without ever
//! following a symlink.
//!
//! The database is data, not a trusted map of the filesystem: a restored archive or an edited
//! file may hold any text in these columns. So nothing joins such a name to a directory except
//! through these types, the restore refuses a database holding one that does not validate,
//! and stored files are opened with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` (a walk
//! of `openat(O_NOFOLLOW)` one component at a time where the kernel has no `openat2`), so a
//! symlink planted in the store cannot lead out of it either.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

/// Longest blob id: what the backup layout accepts (ids this daemon makes are 32 hex digits).
const MAX_BLOB_ID: usize = 64;
/// Longest program file path read back (the upload's own limit, `programs.max-name-length`,
/// is at most this).
const MAX_PROGRAM_PATH: usize = 4096;

/// A name that does not validate: which kind, the value (for the message) and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {value:?} is not valid ({rule})")]
pub struct BadName {
    pub kind: &'static str,
    pub value: String,
    pub rule: &'static str,
}

fn bad(kind: &'static str, value: &str, rule: &'static str) -> BadName {
    // A hostile value can be long: the message shows its start only.
    let value = value.chars().take(200).collect();
    BadName { kind, value, rule }
}

/// The name of a file's blob in `files/blobs/`: 1 to 64 ASCII letters and digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BlobId(String);

impl BlobId {
    pub fn parse(s: &str) -> Result<BlobId, BadName> {
        if s.is_empty() || s.len() > MAX_BLOB_ID {
            return Err(bad("blob id", s, "1 to 64 characters"));
        }
        if !s.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(bad("blob id", s, "ASCII letters and digits only"));
        }
        Ok(BlobId(s.to_owned()))
    }

    /// A fresh random id.
    pub fn random() -> BlobId {
        BlobId(uuid::Uuid::new_v4().simple().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The blob's path in `blob_dir`.
    pub fn path_in(&self, blob_dir: &Path) -> PathBuf {
        blob_dir.join(&self.0)
    }
}

impl fmt::Display for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A program's id, the name of its directory in `programs/`: 16 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProgramId(String);

impl ProgramId {
    pub fn parse(s: &str) -> Result<ProgramId, BadName> {
        if s.len() == 16
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(ProgramId(s.to_owned()))
        } else {
            Err(bad("program id", s, "16 lowercase hex digits"))
        }
    }

    /// A fresh random id.
    pub fn random() -> io::Result<ProgramId> {
        let mut b = [0u8; 8];
        getrandom::fill(&mut b).map_err(|e| io::Error::other(format!("no randomness: {e}")))?;
        Ok(ProgramId(hex::encode(b)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The program's directory in `programs_root`.
    pub fn path_in(&self, programs_root: &Path) -> PathBuf {
        programs_root.join(&self.0)
    }
}

impl fmt::Display for ProgramId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A path inside a program's directory (one of its files, or its main file): relative, with
/// plain components only (no `..`, `.`, empty segments, NUL or backslash).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProgramPath(String);

impl ProgramPath {
    pub fn parse(s: &str) -> Result<ProgramPath, BadName> {
        const KIND: &str = "program file path";
        if s.is_empty() || s.len() > MAX_PROGRAM_PATH {
            return Err(bad(KIND, s, "1 to 4096 bytes"));
        }
        if s.starts_with('/') {
            return Err(bad(KIND, s, "an absolute path"));
        }
        if s.contains('\0') || s.contains('\\') {
            return Err(bad(KIND, s, "a NUL or backslash"));
        }
        for seg in s.split('/') {
            match seg {
                "" => return Err(bad(KIND, s, "an empty segment")),
                "." | ".." => return Err(bad(KIND, s, "a . or .. segment")),
                _ => {}
            }
        }
        Ok(ProgramPath(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The file's path in the program's directory `dir`.
    pub fn path_in(&self, dir: &Path) -> PathBuf {
        dir.join(&self.0)
    }
}

impl fmt::Display for ProgramPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Opens the regular file `rel` under the directory `root` for reading, refusing (ELOOP,
/// EXDEV or EINVAL) any path that leaves `root` or crosses a symlink on the way, and anything
/// that is not a regular file. `rel` must be a plain relative path (the types above are).
pub fn open_beneath(root: &Path, rel: &str) -> io::Result<File> {
    // `root` itself may not be a symlink either (the directories above it may: a state
    // directory under DynamicUser is reached through one).
    let dir: OwnedFd = nix::fcntl::open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        Mode::empty(),
    )?;
    open_beneath_fd(&dir, rel)
}

/// [`open_beneath`] for a directory already open (`O_PATH` will do): the same rules, and
/// nothing above `dir` is looked at again.
pub fn open_beneath_fd(dir: &impl AsFd, rel: &str) -> io::Result<File> {
    if Path::new(rel)
        .components()
        .any(|c| !matches!(c, Component::Normal(_)))
        || rel.is_empty()
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a plain relative path",
        ));
    }
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW | OFlag::O_NOCTTY)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
    let fd = match nix::fcntl::openat2(dir.as_fd(), rel, how) {
        Ok(fd) => fd,
        // No openat2 (a kernel before 5.6, or a seccomp filter that hides it): the same rule,
        // one component at a time.
        Err(Errno::ENOSYS) | Err(Errno::EPERM) => walk_nofollow(dir.as_fd(), rel)?,
        Err(e) => return Err(e.into()),
    };
    let file = File::from(fd);
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok(file)
}

/// `open_beneath` without `openat2`: every directory component opened with `O_NOFOLLOW`
/// relative to the one before, then the file itself with `O_NOFOLLOW`.
fn walk_nofollow(root: BorrowedFd<'_>, rel: &str) -> io::Result<OwnedFd> {
    let mut dir: Option<OwnedFd> = None;
    let mut parts = rel.split('/').peekable();
    while let Some(part) = parts.next() {
        let at = dir.as_ref().map_or(root, |d| d.as_fd());
        if parts.peek().is_none() {
            return Ok(nix::fcntl::openat(
                at,
                part,
                OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW | OFlag::O_NOCTTY,
                Mode::empty(),
            )?);
        }
        dir = Some(nix::fcntl::openat(
            at,
            part,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
            Mode::empty(),
        )?);
    }
    Err(io::Error::new(io::ErrorKind::InvalidInput, "empty path"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_name_accepts_what_the_daemon_makes_and_nothing_that_leaves_its_directory() {
        assert!(BlobId::parse(BlobId::random().as_str()).is_ok());
        for bad in ["", "../x", "/etc/passwd", "a/b", "a.b", &"a".repeat(65)] {
            assert!(BlobId::parse(bad).is_err(), "{bad:?}");
        }
        let pid = ProgramId::random().unwrap();
        assert!(ProgramId::parse(pid.as_str()).is_ok());
        for bad in [
            "../../x",
            "0123456789ABCDEF",
            "0123456789abcde",
            "/0123456789abcdef",
        ] {
            assert!(ProgramId::parse(bad).is_err(), "{bad:?}");
        }
        for ok in ["main.py", "a/b/c.sh", ".hidden", "a..b"] {
            assert!(ProgramPath::parse(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            "",
            "../x",
            "a/../../x",
            "/etc/passwd",
            "a//b",
            "./a",
            "a\\b",
            "a\0b",
        ] {
            assert!(ProgramPath::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn open_beneath_reads_stored_files_and_no_symlink_or_path_out() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        std::fs::create_dir_all(root.join("d")).unwrap();
        std::fs::write(root.join("d/f"), b"inside").unwrap();
        std::fs::write(t.path().join("secret"), b"outside").unwrap();
        std::os::unix::fs::symlink(t.path().join("secret"), root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../secret", root.join("rel")).unwrap();
        std::os::unix::fs::symlink("d", root.join("dirlink")).unwrap();
        // Control: a stored file opens, in a subdirectory too.
        let mut s = String::new();
        std::io::Read::read_to_string(&mut open_beneath(&root, "d/f").unwrap(), &mut s).unwrap();
        assert_eq!(s, "inside");
        for bad in [
            "abs",
            "rel",
            "dirlink/f",
            "../secret",
            "d",
            "/etc/passwd",
            "",
        ] {
            assert!(open_beneath(&root, bad).is_err(), "{bad:?} opened");
        }
        // The fallback walk keeps the same rules.
        let dir = || {
            nix::fcntl::open(
                &root,
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .unwrap()
        };
        assert!(walk_nofollow(dir().as_fd(), "d/f").is_ok());
        // The directory itself as a symlink: refused too.
        assert!(open_beneath(&root.join("dirlink"), "f").is_err());
        for bad in ["abs", "rel", "dirlink/f"] {
            assert!(
                walk_nofollow(dir().as_fd(), bad).is_err(),
                "{bad:?} opened by the walk"
            );
        }
    }
}
