//! The state directory's layout: every name the daemon, the offline CLI, the stores and
//! backups give to something inside it, in one list, so a new entry cannot collide with one
//! another module made and a restore knows what it moves.
//!
//! ```text
//! <state dir>/
//!   localhostd.db (+ -wal, -shm)   DB_FILE
//!   localhostd.lock                LOCK_FILE
//!   admin.sock                     LOCAL_ADMIN_SOCKET (without systemd)
//!   initial-admin-token            INITIAL_TOKEN_FILE
//!   files/blobs/, files/tmp/       FILES_DIR, BLOBS_DIR, FILES_TMP_DIR
//!   programs/<id>/, programs/.del-<id>   PROGRAMS_DIR, PROGRAMS_TRASH_PREFIX
//!   backups/                       BACKUPS_DIR (unless backup.dir names another)
//!   terminals/<id>.cast            TERMINALS_DIR: terminal sessions' recordings
//!   mounts/                        MOUNTS_DIR: what jobs may mount (views of file-store
//!                                  folders and of programs, hard links), a cache
//!   .restore-journal, .restore-{new,old,done}-<tag>/   a restore's journal and directories
//! ```

/// The database file.
pub const DB_FILE: &str = "localhostd.db";
/// The lock file `serve` holds for its whole life; offline CLI commands honour it.
pub const LOCK_FILE: &str = "localhostd.lock";
/// The admin socket a daemon started without systemd binds.
pub const LOCAL_ADMIN_SOCKET: &str = "admin.sock";
/// The file the first admin token is written to when no token exists yet.
pub const INITIAL_TOKEN_FILE: &str = "initial-admin-token";
/// The file store's directory.
pub const FILES_DIR: &str = "files";
/// Inside [`FILES_DIR`]: the committed blobs, one per content.
pub const BLOBS_DIR: &str = "blobs";
/// Inside [`FILES_DIR`]: uploads not yet committed (same filesystem, so committing is a rename).
pub const FILES_TMP_DIR: &str = "tmp";
/// The program store's directory: one directory per program.
pub const PROGRAMS_DIR: &str = "programs";
/// Inside [`PROGRAMS_DIR`]: `<prefix><id>` is a program being deleted (renamed aside first,
/// so a backup still finds it there until it is gone).
pub const PROGRAMS_TRASH_PREFIX: &str = ".del-";
/// Terminal sessions' recordings (asciicast v2), `<id>.cast`, kept
/// `terminals.recording-retention` after their session ended.
pub const TERMINALS_DIR: &str = "terminals";
/// What jobs may mount, and nothing else: read-only views (hard links) of file-store folders
/// and of programs, built on demand and rebuilt from the stores at will (never backed up).
/// The sandbox binds it out of the job's sight while building the job's root.
pub const MOUNTS_DIR: &str = "mounts";
/// The backup directory when `backup.dir` does not name one.
pub const BACKUPS_DIR: &str = "backups";
/// Names the restore whose swap is in progress (the file holds its tag).
pub const RESTORE_JOURNAL: &str = ".restore-journal";
/// `<prefix><tag>`: a restore's staging directory, extracted from the archive.
pub const RESTORE_NEW: &str = ".restore-new-";
/// `<prefix><tag>`: what a restore set aside, until its swap is complete.
pub const RESTORE_OLD: &str = ".restore-old-";
/// `<prefix><tag>`: what a complete restore replaced, removed after it.
pub const RESTORE_DONE: &str = ".restore-done-";
