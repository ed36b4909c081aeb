//! Following the change log for one change stream (`watch=true`): from a revision on, the
//! changes under a key prefix in log order, a progress mark when nothing changed for a while,
//! and the end of the stream when its resume point is no longer kept (`Gone`), the log cannot
//! be read, or the daemon stops.
//!
//! A [`Watch`] never trusts the wake-up channel for content: a wake-up only says "read again",
//! and every read goes to the change log from the last revision handed out, so a stream
//! neither misses nor reorders a change however commits and wake-ups interleave. The caller
//! (the HTTP layer) only frames the items it gets.

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::Stream;
use tokio::sync::watch;

use super::watches::WatchSlot;
use super::{Change, Kv};
use crate::error::{Error, Result};

/// What a change stream hands out next.
#[derive(Debug)]
pub enum WatchItem {
    /// A change under the prefix, in log order.
    Change(Change),
    /// Nothing changed for the idle interval: every change up to this revision has been
    /// handed out (or did not match the prefix), so a client may resume from here.
    Progress(u64),
    /// The stream ends here: the change log is no longer kept from where this stream is
    /// (`Gone`), or cannot be read now. Nothing follows it.
    Failed(Error),
}

/// One open change stream over the store.
pub struct Watch {
    /// This stream's place under the watch caps, given back when the stream is dropped.
    _slot: WatchSlot,
    kv: Kv,
    prefix: String,
    /// Every change up to here has been handed out (or did not match the prefix).
    last: u64,
    wake: watch::Receiver<u64>,
    stopping: watch::Receiver<bool>,
    /// How long the stream waits for a change before it hands out a progress mark.
    idle: Duration,
    queued: VecDeque<Change>,
    done: bool,
}

impl Watch {
    /// Opens a stream of the changes under `prefix` after revision `since` (or after the
    /// current revision). A `since` whose changes are no longer kept is refused with `Gone`
    /// here, before the stream starts, so the caller can answer it as a refusal rather than
    /// as an event. `stopping` ends the stream when it turns true; `idle` is how long a
    /// quiet stream waits before it hands out a progress mark.
    pub async fn open(
        kv: &Kv,
        slot: WatchSlot,
        prefix: String,
        since: Option<u64>,
        stopping: watch::Receiver<bool>,
        idle: Duration,
    ) -> Result<Watch> {
        // Subscribed before the start is read, so a commit after that read wakes the stream.
        let wake = kv.subscribe();
        let start = match since {
            Some(n) => {
                kv.changes(n, &prefix).await?;
                n
            }
            None => kv.revision().await?,
        };
        Ok(Watch {
            _slot: slot,
            kv: kv.clone(),
            prefix,
            last: start,
            wake,
            stopping,
            idle,
            queued: VecDeque::new(),
            done: false,
        })
    }

    /// The next item, waiting for changes as long as needed; `None` ends the stream (after a
    /// `Failed`, when the store's wake-up channel closes, or when the daemon stops).
    pub async fn next(&mut self) -> Option<WatchItem> {
        loop {
            if let Some(change) = self.queued.pop_front() {
                return Some(WatchItem::Change(change));
            }
            if self.done {
                return None;
            }
            // Mark the wake-up seen before reading, so a commit after the read wakes us.
            self.wake.borrow_and_update();
            match self.kv.changes(self.last, &self.prefix).await {
                Ok(page) => {
                    self.queued.extend(page.changes);
                    let moved = page.upto > self.last;
                    self.last = page.upto;
                    if moved {
                        continue;
                    }
                }
                Err(e) => {
                    self.done = true;
                    return Some(WatchItem::Failed(e));
                }
            }
            tokio::select! {
                changed = self.wake.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                }
                _ = self.stopping.wait_for(|s| *s) => return None,
                _ = tokio::time::sleep(self.idle) => {
                    return Some(WatchItem::Progress(self.last));
                }
            }
        }
    }

    /// The stream's items as a [`Stream`], for callers that frame them one by one.
    pub fn into_stream(self) -> impl Stream<Item = WatchItem> {
        futures_util::stream::unfold(
            self,
            |mut w| async move { w.next().await.map(|item| (item, w)) },
        )
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::watches::WatchSlots;
    use super::super::{Cond, Op};
    use super::*;
    use crate::config::{Config, KvConfig, LiveConfig};
    use crate::store::audit::Caller;
    use crate::store::db::Db;

    fn open() -> (tempfile::TempDir, Kv, WatchSlots) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("t.db"), 2).unwrap();
        let slots = WatchSlots::new(Arc::new(LiveConfig::new(Config::default())));
        (dir, Kv::new(db, 1 << 20), slots)
    }

    async fn put(kv: &Kv, key: &str, cfg: &KvConfig) {
        let op = Op {
            key: key.into(),
            value: Some("1".into()),
            cond: Cond::Any,
            ttl: None,
        };
        kv.apply(vec![op], Caller::default(), cfg).await.unwrap();
    }

    fn key_of(item: Option<WatchItem>) -> String {
        match item {
            Some(WatchItem::Change(c)) => c.key,
            other => panic!("expected a change, got {other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_watch_hands_out_only_later_changes_under_its_prefix_in_order() {
        let (_d, kv, slots) = open();
        let cfg = KvConfig::default();
        let (_stop, stopping) = watch::channel(false);
        put(&kv, "a/0", &cfg).await;
        let since = kv.revision().await.unwrap();
        for key in ["a/1", "b/1", "a/2"] {
            put(&kv, key, &cfg).await;
        }
        let slot = slots.acquire("t").unwrap();
        let idle = Duration::from_secs(60);
        let mut w = Watch::open(&kv, slot, "a/".into(), Some(since), stopping, idle)
            .await
            .unwrap();
        assert_eq!(key_of(w.next().await), "a/1");
        assert_eq!(key_of(w.next().await), "a/2");
        // A change committed while the stream waits wakes it.
        let (next, ()) = tokio::join!(w.next(), put(&kv, "a/3", &cfg));
        assert_eq!(key_of(next), "a/3");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_quiet_watch_hands_out_progress_at_the_revision_it_reached() {
        let (_d, kv, slots) = open();
        let cfg = KvConfig::default();
        let (_stop, stopping) = watch::channel(false);
        put(&kv, "other", &cfg).await;
        let slot = slots.acquire("t").unwrap();
        let idle = Duration::from_millis(20);
        let mut w = Watch::open(&kv, slot, "a/".into(), Some(0), stopping, idle)
            .await
            .unwrap();
        // The change to `other` is read past (not handed out), and the progress says so.
        assert!(matches!(w.next().await, Some(WatchItem::Progress(1))));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_resume_point_no_longer_kept_is_refused_before_the_stream_opens() {
        let (_d, kv, slots) = open();
        let cfg = KvConfig {
            history_max_changes: 2,
            ..KvConfig::default()
        };
        for i in 0..5 {
            put(&kv, &format!("k{i}"), &cfg).await;
        }
        kv.sweep(&cfg).await.unwrap();
        let (_stop, stopping) = watch::channel(false);
        let idle = Duration::from_secs(60);
        let opened = Watch::open(
            &kv,
            slots.acquire("t").unwrap(),
            String::new(),
            Some(2),
            stopping.clone(),
            idle,
        )
        .await;
        assert!(matches!(opened, Err(Error::Gone(_))));
        // Control: the oldest kept resume point opens.
        let opened = Watch::open(
            &kv,
            slots.acquire("t").unwrap(),
            String::new(),
            Some(3),
            stopping,
            idle,
        )
        .await;
        assert!(opened.is_ok());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_watch_ends_when_the_daemon_stops_and_gives_its_slot_back() {
        let (_d, kv, slots) = open();
        let (stop, stopping) = watch::channel(false);
        let slot = slots.acquire("t").unwrap();
        let idle = Duration::from_secs(60);
        let w = Watch::open(&kv, slot, String::new(), None, stopping, idle)
            .await
            .unwrap();
        assert_eq!(slots.open(), 1);
        let mut items = Box::pin(w.into_stream());
        stop.send_replace(true);
        assert!(futures_util::StreamExt::next(&mut items).await.is_none());
        drop(items);
        assert_eq!(slots.open(), 0);
    }
}
