//! Small helpers more than one module needs, each with one home: time and its RFC 3339 text
//! ([`time`]), directory fsync ([`fs`]), free disk and the free-space floor ([`disk`]), keyset
//! pagination ([`paging`]), the names inside the state directory ([`layout`]) and the API
//! document's schemas domain types need ([`schema`]).
//!
//! Infrastructure: these may use [`crate::config`] types and [`crate::error`], nothing above,
//! so every layer can import them without drawing an arrow back up.

pub mod disk;
pub mod fs;
pub mod layout;
pub mod paging;
pub mod schema;
pub mod time;
