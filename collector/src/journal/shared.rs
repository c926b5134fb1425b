//! What the writer and the readers share: the sinks' cursors, the byte count and its bound,
//! the flags the pipeline's watchdog reads, and the [`Tail`] of newest entries in memory.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use tokio::sync::watch;

use super::{JournalError, Position};
use crate::config::WhenFull;
use crate::metrics::{Gauge, Metrics};
use crate::reading::Encoded;
use crate::sync::MutexExt;

/// The most encoded bytes the [tail](Tail) keeps in memory for readers that are behind (a
/// sink writing a batch, or one that is down): about 40,000 readings of 2 tags and 3 floats,
/// what arrives in a quarter of a second at 150,000 readings a second. A reader further
/// behind reads from SQLite, as after a restart.
pub(super) const MAX_TAIL_BYTES: usize = 2 << 20;

/// The readings of one entry, encoded, shared by the tail and the sinks' batches.
pub(super) type Entry = Arc<Encoded>;

/// State shared by the writer and the readers.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) path: PathBuf,
    pub(super) max_bytes: u64,
    pub(super) when_full: WhenFull,
    pub(super) bytes: AtomicU64,
    pub(super) cursors: Mutex<BTreeMap<String, Position>>,
    /// Per running reader: the first position not yet in its memory (read ahead into a
    /// batch, or decoded and pending). Dropping an entry before it costs that sink nothing.
    pub(super) in_memory: Mutex<BTreeMap<String, Position>>,
    /// Per sink with a reader, `sink_lag_readings`: readings committed that it has not yet
    /// written. The writer holds this lock across each commit, so that a reader that starts
    /// (and counts what is committed) never misses an entry nor counts one twice.
    pub(super) lags: Mutex<BTreeMap<String, Gauge>>,
    /// Signalled whenever space may have been freed.
    pub(super) space: (Mutex<()>, Condvar),
    /// Set while the writer holds readings it has taken from the channel and not yet
    /// committed (a commit in progress, or a failing disk retried).
    pub(super) holding: AtomicBool,
    /// Set while the writer waits for the sinks to free space (journal full, `block`).
    pub(super) waiting_for_sinks: AtomicBool,
    /// Set when the pipeline gives up waiting (shutdown timeout): a writer blocked on a full
    /// journal stops waiting.
    pub(super) closing: AtomicBool,
    pub(super) committed: watch::Receiver<i64>,
    /// The newest committed entries, as the writer had them in memory.
    pub(super) tail: Mutex<Tail>,
    pub(super) bytes_gauge: Gauge,
    pub(super) metrics: Metrics,
}

/// The newest committed entries in memory, as the writer committed them: a reader that keeps
/// up takes an entry from here instead of reading it back from SQLite, and every sink's
/// batch shares this one copy. An entry leaves once every running reader has it (in a
/// batch, or written), or when the tail holds more than [`MAX_TAIL_BYTES`] (the reader that
/// is that far behind reads the entry from SQLite).
#[derive(Debug, Default)]
pub(super) struct Tail {
    /// Consecutive entries, oldest first: (seq, entry).
    pub(super) entries: VecDeque<(i64, Entry)>,
    /// Encoded bytes in `entries`.
    pub(super) bytes: usize,
}

impl Tail {
    /// Entry `seq`, if it is here.
    pub(super) fn get(&self, seq: i64) -> Option<Entry> {
        let first = self.entries.front()?.0;
        let i = usize::try_from(seq.checked_sub(first)?).ok()?;
        self.entries.get(i).map(|(_, r)| Arc::clone(r))
    }

    pub(super) fn pop_front(&mut self) {
        if let Some((_, e)) = self.entries.pop_front() {
            self.bytes -= e.bytes();
        }
    }
}

impl Shared {
    pub(super) fn sqlite(&self) -> impl Fn(rusqlite::Error) -> JournalError + '_ {
        |source| JournalError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    pub(super) fn add_bytes(&self, delta: i64) {
        let now = if delta >= 0 {
            self.bytes.fetch_add(delta as u64, Ordering::SeqCst) + delta as u64
        } else {
            let d = delta.unsigned_abs();
            self.bytes.fetch_sub(d, Ordering::SeqCst).saturating_sub(d)
        };
        self.bytes_gauge.set(i64::try_from(now).unwrap_or(i64::MAX));
    }

    pub(super) fn notify_space(&self) {
        let _guard = self.space.0.lock_unpoisoned();
        self.space.1.notify_all();
    }

    /// Keeps the just committed entry `seq` in the tail, when a reader runs to take it.
    pub(super) fn keep_in_memory(&self, seq: i64, entry: Encoded) {
        if self.lags.lock_unpoisoned().is_empty() {
            return;
        }
        {
            let mut tail = self.tail.lock_unpoisoned();
            if tail
                .entries
                .back()
                .is_some_and(|(last, _)| *last != seq - 1)
            {
                // Not consecutive (cannot happen with one writer): start again.
                *tail = Tail::default();
            }
            tail.bytes += entry.bytes();
            tail.entries.push_back((seq, Arc::new(entry)));
            while tail.bytes > MAX_TAIL_BYTES {
                tail.pop_front();
            }
        }
        self.trim_tail();
    }

    /// Drops from the tail the entries every running reader has taken.
    pub(super) fn trim_tail(&self) {
        let taken = {
            let cursors = self.cursors.lock_unpoisoned();
            let in_memory = self.in_memory.lock_unpoisoned();
            let lags = self.lags.lock_unpoisoned();
            lags.keys()
                .map(|sink| {
                    in_memory
                        .get(sink)
                        .or_else(|| cursors.get(sink))
                        .map_or(i64::MIN, |p| p.seq)
                })
                .min()
        };
        let mut tail = self.tail.lock_unpoisoned();
        match taken {
            Some(taken) => {
                while tail.entries.front().is_some_and(|(seq, _)| *seq < taken) {
                    tail.pop_front();
                }
            }
            None => *tail = Tail::default(),
        }
    }
}
