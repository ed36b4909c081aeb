//! Small helpers more than one module needs, each with one home: time and its RFC 3339 text
//! ([`time`]), directory fsync ([`fs`]), free disk and the free-space floor ([`disk`]), keyset
//! pagination ([`paging`]) and the names inside the state directory ([`layout`]).
//!
//! Infrastructure: these may use [`crate::config`] types and [`crate::error`], nothing above,
//! so every layer can import them without drawing an arrow back up.

pub mod disk;
pub mod fs;
pub mod layout;
pub mod paging;
pub mod time;
