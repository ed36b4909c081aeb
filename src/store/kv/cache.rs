//! A bounded in-memory read cache in front of the `kv` table, so a GET of a hot key answers
//! without a database read (and without the hop to a blocking thread it needs).
//!
//! It is never the source of truth, and it never answers with an older state than one a
//! client has already been given. Every slot carries the revision its state became true at;
//! a change only ever replaces a slot with a strictly newer one. Two kinds of updates:
//! - `record`: from the database writer thread, right after the commit of a change and
//!   before anyone is told it succeeded (so a client that saw a write succeed finds it here);
//! - `fill`: from a reader that missed and read the database in one snapshot at store
//!   revision `snapshot`. A fill may race a change that committed after its snapshot: if
//!   the change's `record` came first, the slot is newer and the fill loses; if the slot is
//!   absent because it was evicted, the fill is refused unless its snapshot is at least the
//!   newest revision ever evicted (`min_safe`). So a stale fill can never land.
//!
//! Values larger than `max_value` are not kept: their slot says "ask the database" (`Skip`),
//! which still orders correctly against fills. Expired keys (TTL) are answered as absent
//! from the slot's `expires_at`, exactly as the database query would.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

const SHARDS: usize = 16;
/// Bookkeeping counted per slot on top of its key and value bytes.
const SLOT_OVERHEAD: usize = 96;

/// What the cache knows about a key at `rev`.
#[derive(Debug, Clone)]
pub enum State {
    /// The key holds `value` (JSON text) at version `rev`, until `expires_at` (ms) if set.
    Live {
        value: Arc<str>,
        expires_at: Option<i64>,
    },
    /// The key does not exist.
    Gone,
    /// The key's state is in the database only (its value is too large to keep).
    Skip,
}

#[derive(Debug)]
struct Slot {
    rev: u64,
    state: State,
}

impl Slot {
    fn size(&self, key: &str) -> usize {
        let value = match &self.state {
            State::Live { value, .. } => value.len(),
            State::Gone | State::Skip => 0,
        };
        key.len() + value + SLOT_OVERHEAD
    }
}

#[derive(Default)]
struct Shard {
    map: HashMap<String, Slot>,
    bytes: usize,
}

/// The answer of a lookup.
#[derive(Debug, PartialEq)]
pub enum Lookup {
    /// The key's value and version.
    Live(Arc<str>, u64),
    /// The key does not exist (or has expired).
    Absent,
    /// Not known here: read the database.
    Miss,
}

pub struct Cache {
    shards: Vec<Mutex<Shard>>,
    hasher: std::collections::hash_map::RandomState,
    shard_bytes: usize,
    max_value: usize,
    /// The newest revision of any slot dropped by eviction: a fill from an older snapshot
    /// might be staler than what was dropped, so it is refused.
    min_safe: AtomicU64,
}

impl Cache {
    /// A cache of at most about `max_bytes` (keys, values and bookkeeping); 0 disables it.
    pub fn new(max_bytes: u64) -> Cache {
        let shard_bytes = usize::try_from(max_bytes / SHARDS as u64).unwrap_or(usize::MAX);
        Cache {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
            shard_bytes,
            // One value may take at most 1/8 of a shard.
            max_value: shard_bytes / 8,
            min_safe: AtomicU64::new(0),
        }
    }

    fn enabled(&self) -> bool {
        self.shard_bytes > 0
    }

    fn shard(&self, key: &str) -> &Mutex<Shard> {
        &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS]
    }

    /// What the cache says about `key` at `now_ms`.
    pub fn get(&self, key: &str, now_ms: i64) -> Lookup {
        if !self.enabled() {
            return Lookup::Miss;
        }
        let Ok(shard) = self.shard(key).lock() else {
            return Lookup::Miss;
        };
        match shard.map.get(key) {
            Some(Slot {
                rev,
                state: State::Live { value, expires_at },
            }) => {
                if expires_at.is_some_and(|e| e <= now_ms) {
                    Lookup::Absent
                } else {
                    Lookup::Live(value.clone(), *rev)
                }
            }
            Some(Slot {
                state: State::Gone, ..
            }) => Lookup::Absent,
            Some(Slot {
                state: State::Skip, ..
            })
            | None => Lookup::Miss,
        }
    }

    /// A committed change: `key` is in `state` since revision `rev`.
    pub fn record(&self, key: &str, rev: u64, state: State) {
        self.put(key, rev, state, None);
    }

    /// What a reader found in the database snapshot at store revision `snapshot`: `state`
    /// since revision `rev` (for an absent key, `rev` is the snapshot itself).
    pub fn fill(&self, key: &str, snapshot: u64, rev: u64, state: State) {
        self.put(key, rev, state, Some(snapshot));
    }

    fn put(&self, key: &str, rev: u64, state: State, snapshot: Option<u64>) {
        if !self.enabled() {
            return;
        }
        let state = match state {
            State::Live { value, .. } if value.len() > self.max_value => State::Skip,
            s => s,
        };
        let Ok(mut shard) = self.shard(key).lock() else {
            return;
        };
        let slot = Slot { rev, state };
        let size = slot.size(key);
        match shard.map.get_mut(key) {
            Some(old) => {
                if old.rev >= rev {
                    return;
                }
                let old_size = old.size(key);
                *old = slot;
                shard.bytes = shard.bytes + size - old_size;
            }
            None => {
                // Checked under the shard lock: an eviction that raised min_safe happened
                // either before (seen here) or after this insert (then it is a later drop).
                if snapshot.is_some_and(|s| s < self.min_safe.load(Ordering::SeqCst)) {
                    return;
                }
                shard.map.insert(key.to_owned(), slot);
                shard.bytes += size;
            }
        }
        if shard.bytes > self.shard_bytes {
            self.evict(&mut shard, key);
        }
    }

    /// Drops slots (other than `keep`, just written) until the shard is at three quarters of
    /// its budget.
    fn evict(&self, shard: &mut Shard, keep: &str) {
        let target = self.shard_bytes / 4 * 3;
        let mut newest = 0;
        let mut drop = Vec::new();
        let mut bytes = shard.bytes;
        for (k, slot) in &shard.map {
            if bytes <= target {
                break;
            }
            if k == keep {
                continue;
            }
            bytes -= slot.size(k);
            newest = newest.max(slot.rev);
            drop.push(k.clone());
        }
        self.min_safe.fetch_max(newest, Ordering::SeqCst);
        for k in drop {
            shard.map.remove(&k);
        }
        shard.bytes = bytes;
    }

    /// Forgets everything (the database was replaced under us, e.g. by a restore).
    pub fn clear(&self) {
        for s in &self.shards {
            if let Ok(mut s) = s.lock() {
                s.map.clear();
                s.bytes = 0;
            }
        }
        self.min_safe.store(0, Ordering::SeqCst);
    }

    /// Keys and bytes held (for tests and metrics).
    pub fn usage(&self) -> (usize, usize) {
        self.shards
            .iter()
            .filter_map(|s| s.lock().ok().map(|s| (s.map.len(), s.bytes)))
            .fold((0, 0), |(n, b), (n2, b2)| (n + n2, b + b2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(v: &str) -> State {
        State::Live {
            value: Arc::from(v),
            expires_at: None,
        }
    }

    #[test]
    fn newer_states_win_whatever_order_they_arrive_in() {
        let c = Cache::new(1 << 20);
        assert_eq!(c.get("a", 0), Lookup::Miss);
        c.record("a", 8, live("8"));
        c.record("a", 7, live("7"));
        assert_eq!(c.get("a", 0), Lookup::Live(Arc::from("8"), 8));
        c.record("a", 9, State::Gone);
        c.record("a", 8, live("8"));
        assert_eq!(c.get("a", 0), Lookup::Absent);
    }

    #[test]
    fn a_fill_from_before_a_change_never_lands() {
        let c = Cache::new(1 << 20);
        // A reader read version 3 in the snapshot of revision 5; meanwhile revision 9
        // deleted the key and was recorded first.
        c.record("k", 9, State::Gone);
        c.fill("k", 5, 3, live("old"));
        assert_eq!(c.get("k", 0), Lookup::Absent);
        // A fill after the change (snapshot 9 or later) of a later put lands.
        c.fill("k", 12, 11, live("new"));
        assert_eq!(c.get("k", 0), Lookup::Live(Arc::from("new"), 11));
        // A fill of an absent key from a newer snapshot replaces a live slot.
        c.fill("k", 14, 14, State::Gone);
        assert_eq!(c.get("k", 0), Lookup::Absent);
    }

    #[test]
    fn after_an_eviction_older_snapshots_cannot_fill() {
        // Tiny budget: every insert evicts something.
        let c = Cache::new(16 * 400);
        for i in 0..200u64 {
            c.record(&format!("key{i}"), 100 + i, live("v"));
        }
        let (n, bytes) = c.usage();
        assert!(n < 200 && bytes <= 16 * 400, "{n} slots, {bytes} bytes");
        let min_safe = c.min_safe.load(Ordering::SeqCst);
        assert!(min_safe >= 100, "{min_safe}");
        // key0 (revision 100) was most likely evicted; find one that was.
        let gone = (0..200)
            .map(|i| format!("key{i}"))
            .find(|k| c.get(k, 0) == Lookup::Miss)
            .unwrap();
        c.fill(&gone, min_safe - 1, 1, live("stale"));
        assert_eq!(c.get(&gone, 0), Lookup::Miss, "a stale fill landed");
        c.fill(&gone, min_safe, 1, live("fresh"));
        assert_eq!(c.get(&gone, 0), Lookup::Live(Arc::from("fresh"), 1));
    }

    #[test]
    fn expired_keys_read_as_absent_and_large_values_stay_in_the_database() {
        let c = Cache::new(16 * 1024);
        c.record(
            "t",
            2,
            State::Live {
                value: Arc::from("1"),
                expires_at: Some(1000),
            },
        );
        assert_eq!(c.get("t", 999), Lookup::Live(Arc::from("1"), 2));
        assert_eq!(c.get("t", 1000), Lookup::Absent);
        c.record("big", 3, live(&"x".repeat(200)));
        assert_eq!(c.get("big", 0), Lookup::Miss);
        // …and an older fill still cannot replace the skip.
        c.fill("big", 2, 1, live("small"));
        assert_eq!(c.get("big", 0), Lookup::Miss);
    }

    #[test]
    fn disabled_and_cleared() {
        let off = Cache::new(0);
        off.record("a", 1, live("1"));
        assert_eq!(off.get("a", 0), Lookup::Miss);
        let c = Cache::new(1 << 20);
        c.record("a", 1, live("1"));
        c.clear();
        assert_eq!(c.get("a", 0), Lookup::Miss);
        assert_eq!(c.usage(), (0, 0));
    }
}
