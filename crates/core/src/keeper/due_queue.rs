//! The due-time queue of the proactive schedule: a min-heap of (due time, credential), so that
//! waking up costs O(log n) per credential that is actually due instead of a scan of all of them.
//!
//! Entries are never removed from the middle: each credential remembers the sequence number of
//! its one live queue item, and an item whose number is no longer the credential's is stale and
//! dropped when it reaches the top (lazy deletion).

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};

use super::entry::Entry;
use crate::clock::Timestamp;

/// One scheduled check of a credential.
struct Due {
    at: i64,
    seq: u64,
    entry: Arc<Entry>,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Due {}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Due {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// The queue of credentials by the time they next need attention.
#[derive(Default)]
pub(super) struct DueQueue {
    heap: Mutex<BinaryHeap<Reverse<Due>>>,
    next_seq: AtomicU64,
}

impl DueQueue {
    /// Schedules `entry` at `at`, replacing its previous item. Returns whether this is now the
    /// earliest item (the sleeper should wake to re-plan).
    pub(super) fn schedule(&self, entry: &Arc<Entry>, at: Timestamp) -> bool {
        let seq = self.next_seq.fetch_add(1, AtomicOrdering::Relaxed) + 1;
        entry.scheduled_seq.store(seq, AtomicOrdering::Release);
        let mut heap = self.heap.lock().unwrap_or_else(|p| p.into_inner());
        let earliest = heap
            .peek()
            .is_none_or(|Reverse(top)| at.as_millis() < top.at);
        heap.push(Reverse(Due {
            at: at.as_millis(),
            seq,
            entry: Arc::clone(entry),
        }));
        earliest
    }

    /// Takes every live item due at `now`, appending the credentials to `due`; returns when
    /// the next live item is due, if any.
    pub(super) fn take_due(&self, now: Timestamp, due: &mut Vec<Arc<Entry>>) -> Option<Timestamp> {
        let mut heap = self.heap.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(Reverse(top)) = heap.peek() {
            let live = top.entry.scheduled_seq.load(AtomicOrdering::Acquire) == top.seq;
            if live && top.at > now.as_millis() {
                return Some(Timestamp::from_millis(top.at));
            }
            if let Some(Reverse(item)) = heap.pop()
                && live
            {
                due.push(item.entry);
            }
        }
        None
    }
}
