//! The domain error: what went wrong, as the decisions a caller makes. No HTTP types here;
//! `api::error` alone maps these to statuses and codes.

use std::path::PathBuf;

/// Errors of the domain modules. 4xx-like variants carry a message written for the user;
/// the others are internal and are never shown to a client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed or breaks a rule; the message says which.
    #[error("{0}")]
    Invalid(String),
    /// The thing asked for does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// A key breaks the key rules; the message says which.
    #[error("{0}")]
    InvalidKey(String),
    /// A condition the caller set (a version to match, "must not exist") does not hold.
    #[error("{0}")]
    PreconditionFailed(String),
    /// What was asked for existed once but is no longer kept (e.g. changes older than the
    /// watch history); the caller has to start over from the current state.
    #[error("{0}")]
    Gone(String),
    /// The input is larger than a configured limit.
    #[error("{0}")]
    TooLarge(String),
    /// Well-formed but cannot be done as asked (a limit above the maximum, an unknown profile).
    #[error("{0}")]
    Unprocessable(String),
    /// Too much work queued already; retrying shortly may work.
    #[error("{0}")]
    Busy(String),
    /// The service cannot do this now (shutting down, a dependency failing); retrying later may work.
    #[error("{0}")]
    Unavailable(String),
    /// A stored quota (such as `files.max-total-size`) would be passed.
    #[error("{0}")]
    QuotaExceeded(String),
    /// A file path breaks a naming rule; the message names the rule.
    #[error("{0}")]
    InvalidPath(String),
    /// The byte range asked for lies outside the file, which is `size` bytes long.
    #[error("range not satisfiable: the file is {size} bytes long")]
    RangeNotSatisfiable { size: u64 },
    /// The state directory's filesystem is below its free-space floor.
    #[error("{0}")]
    InsufficientStorage(String),
    /// The database file was written by a newer localhostd; we refuse to touch it.
    #[error(
        "database {path} has schema version {found}, but this localhostd only knows up to {known}; \
         it was written by a newer release: install that release again (downgrades are not supported)"
    )]
    SchemaTooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    /// SQLite failed.
    #[error("database error: {0}")]
    Db(#[from] rusqlite::Error),
    /// The filesystem failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A bug or an impossible state; the message is for the log only.
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
