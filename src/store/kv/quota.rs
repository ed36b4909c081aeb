//! The data store's quotas: how many keys and how many bytes of values it holds against
//! `kv.max-keys` / `kv.max-total-size` (the free-disk floor for writes that add data is
//! [`crate::util::disk::DiskFloor`]).
//!
//! The usage is kept in memory and changed only on the writer thread, inside the transaction
//! of the write that changes it, so the check and the change see the same state and a group
//! commit cannot slip two writes past the limit. It is loaded from the database (one scan) on
//! the first write and again whenever it may be wrong: after a write whose transaction may
//! have rolled back, after expired keys were swept, after the database was replaced.

use std::sync::{Mutex, MutexGuard};

use rusqlite::Connection;

use crate::config::KvConfig;
use crate::error::{Error, Result};

/// Keys and value bytes the store holds; `None` until loaded (or after it was forgotten).
#[derive(Debug, Default)]
pub struct Usage(Mutex<Option<(i64, i64)>>);

impl Usage {
    fn lock(&self) -> MutexGuard<'_, Option<(i64, i64)>> {
        match self.0.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Forgets the usage: the next write loads it from the database.
    pub fn forget(&self) {
        *self.lock() = None;
    }

    /// In the writer's transaction: refuses a change of `keys` keys and `bytes` bytes that
    /// would pass a limit growing the store (a change that shrinks it always passes), else
    /// counts it.
    pub fn admit(&self, c: &Connection, cfg: &KvConfig, keys: i64, bytes: i64) -> Result<()> {
        let mut g = self.lock();
        let (have_keys, have_bytes) = match *g {
            Some(u) => u,
            None => super::key_count_and_bytes(c)?,
        };
        let max_keys = i64::try_from(cfg.max_keys).unwrap_or(i64::MAX);
        if keys > 0 && have_keys.saturating_add(keys) > max_keys {
            *g = Some((have_keys, have_bytes));
            return Err(Error::QuotaExceeded(format!(
                "the data store holds {have_keys} keys and kv.max-keys is {}: this write would add {keys}; nothing was changed",
                cfg.max_keys
            )));
        }
        let max_bytes = i64::try_from(cfg.max_total_size.bytes()).unwrap_or(i64::MAX);
        if bytes > 0 && have_bytes.saturating_add(bytes) > max_bytes {
            *g = Some((have_keys, have_bytes));
            return Err(Error::QuotaExceeded(format!(
                "the data store's values take {have_bytes} bytes and kv.max-total-size is {}: this write would add {bytes}; nothing was changed",
                cfg.max_total_size
            )));
        }
        *g = Some((
            have_keys.saturating_add(keys),
            have_bytes.saturating_add(bytes),
        ));
        Ok(())
    }
}
