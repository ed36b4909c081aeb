//! The places for change streams (`watch=true`): each one open holds a slot, counted per
//! owner (a token) and in total against `kv.max-watches-per-token` and `kv.max-watches`, so
//! neither one client nor all of them together can hold an unbounded number of streams (each
//! keeps a connection, a task and a wake-up on every commit).
//!
//! A slot is given back when it is dropped, that is when the stream ends or its client goes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::config::LiveConfig;
use crate::error::{Error, Result};

/// The open change streams, shared by every request.
#[derive(Clone)]
pub struct WatchSlots {
    /// The caps are read at each opening, so a reload applies to the next stream.
    live: Arc<LiveConfig>,
    open: Arc<Mutex<Open>>,
}

#[derive(Default)]
struct Open {
    total: usize,
    per_owner: HashMap<String, usize>,
}

/// One open change stream's place; dropping it gives the place back.
pub struct WatchSlot {
    open: Arc<Mutex<Open>>,
    owner: String,
}

impl WatchSlots {
    pub fn new(live: Arc<LiveConfig>) -> WatchSlots {
        WatchSlots {
            live,
            open: Arc::default(),
        }
    }

    /// A place for one more stream of `owner`: `Busy` when that owner has its share open,
    /// `Unavailable` when the daemon has every place taken.
    pub fn acquire(&self, owner: &str) -> Result<WatchSlot> {
        let cfg = self.live.get();
        let (per_owner, total) = (cfg.kv.max_watches_per_token, cfg.kv.max_watches);
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let mine = open.per_owner.get(owner).copied().unwrap_or(0);
        if mine >= per_owner {
            return Err(Error::Busy(format!(
                "this token already has {mine} watch streams open (kv.max-watches-per-token = {per_owner}); close one first"
            )));
        }
        if open.total >= total {
            return Err(Error::Unavailable(format!(
                "{} watch streams are open, as many as the daemon serves (kv.max-watches = {total}); retry later",
                open.total
            )));
        }
        open.total += 1;
        *open.per_owner.entry(owner.to_owned()).or_insert(0) += 1;
        Ok(WatchSlot {
            open: self.open.clone(),
            owner: owner.to_owned(),
        })
    }

    /// Streams open now.
    pub fn open(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .total
    }
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.per_owner.get_mut(&self.owner) {
            *n -= 1;
            if *n == 0 {
                open.per_owner.remove(&self.owner);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn slots(per_token: usize, total: usize) -> WatchSlots {
        let mut cfg = Config::default();
        cfg.kv.max_watches_per_token = per_token;
        cfg.kv.max_watches = total;
        WatchSlots::new(Arc::new(LiveConfig::new(cfg)))
    }

    #[test]
    fn an_owner_over_its_share_is_busy_and_a_dropped_slot_is_given_back() {
        let s = slots(2, 10);
        let a = s.acquire("a").unwrap();
        let _b = s.acquire("a").unwrap();
        assert!(
            matches!(s.acquire("a"), Err(Error::Busy(m)) if m.contains("kv.max-watches-per-token"))
        );
        // Control: another owner has its own share.
        let _c = s.acquire("b").unwrap();
        drop(a);
        assert!(s.acquire("a").is_ok());
    }

    #[test]
    fn past_the_total_every_owner_is_refused_as_unavailable() {
        let s = slots(5, 2);
        let _a = s.acquire("a").unwrap();
        let _b = s.acquire("b").unwrap();
        assert!(
            matches!(s.acquire("c"), Err(Error::Unavailable(m)) if m.contains("kv.max-watches"))
        );
        assert_eq!(s.open(), 2);
    }
}
