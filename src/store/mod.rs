//! What localhostd keeps: the SQLite file and its writer ([`db`]), the names read back from it
//! that become paths ([`stored`]), the pins that keep blobs while a backup reads them
//! ([`pins`]), and the stores built on them: the key-value data ([`kv`]), the file store
//! ([`files`]), the program store ([`programs`]), tokens and browser logins ([`auth`]), the
//! audit log ([`audit`]) and the views jobs mount ([`views`]).

pub mod audit;
pub mod auth;
pub mod db;
pub mod files;
pub mod kv;
pub mod pins;
pub mod programs;
pub mod stored;
pub mod views;
