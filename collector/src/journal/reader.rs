//! A sink's reader: reads ahead from its own position (from the writer's memory when it keeps
//! up, else from SQLite), and persists its cursor once the sink has written what it read.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use tokio::sync::watch;

use super::schema::{delete_before, give_back_space};
use super::shared::{Entry, Shared};
use super::{JournalError, Position};
use crate::metrics::{Counter, Gauge};
use crate::reading::{Batch, Encoded, Encoding};
use crate::sync::MutexExt;

/// A sink's view of the journal: reads ahead from its read position, and persists its
/// cursor once the sink has written what it read.
#[derive(Debug)]
pub struct JournalReader {
    pub(super) conn: Connection,
    pub(super) shared: Arc<Shared>,
    pub(super) sink: String,
    /// The position after the last reading handed out.
    pub(super) read_pos: Position,
    /// A partly read entry, and the index of its next reading.
    pub(super) pending: Option<(Entry, usize)>,
    pub(super) committed: watch::Receiver<i64>,
    /// `sink_lag_readings` of this sink.
    pub(super) lag: Gauge,
    /// Readings handed out since the last commit: the commit takes them off the lag.
    pub(super) handed_out: u64,
    /// `journal_entries_read_total{from="memory"}`: entries taken from the tail.
    pub(super) from_memory: Counter,
    /// `journal_entries_read_total{from="disk"}`: entries read back from SQLite and checked
    /// (the sink was further behind than the tail holds, or it just started).
    pub(super) from_disk: Counter,
}

impl JournalReader {
    /// Up to `max` readings from the read position on, and moves it past them. Empty when
    /// everything committed has been read. An entry still in the journal's memory is shared,
    /// not read from SQLite.
    ///
    /// # Errors
    /// SQLite failed, or an entry is corrupt.
    pub fn read(&mut self, max: usize) -> Result<Batch, JournalError> {
        let mut out = Batch::new();
        while out.len() < max {
            let (entry, start) = match self.pending.take() {
                Some(pending) => pending,
                None => match self.load_next_entry()? {
                    Some(next) => next,
                    None => break,
                },
            };
            let end = entry.len().min(start + (max - out.len()));
            out.push_shared(&entry, start..end);
            if end < entry.len() {
                self.read_pos.idx = end as u32;
                self.pending = Some((entry, end));
            } else {
                self.read_pos = Position {
                    seq: self.read_pos.seq + 1,
                    idx: 0,
                };
            }
        }
        let in_memory = if self.pending.is_none() {
            self.read_pos
        } else {
            Position {
                seq: self.read_pos.seq + 1,
                idx: 0,
            }
        };
        self.shared
            .in_memory
            .lock_unpoisoned()
            .insert(self.sink.clone(), in_memory);
        self.shared.trim_tail();
        self.handed_out += out.len() as u64;
        Ok(out)
    }

    /// The first entry at or after the read position, from the journal's memory or else
    /// read back from SQLite, and the index of its first reading not yet delivered; moves the
    /// read position to it. `None` if there is none.
    fn load_next_entry(&mut self) -> Result<Option<(Entry, usize)>, JournalError> {
        let s = self.shared.clone();
        let wanted = self.read_pos.seq;
        let in_memory = s.tail.lock_unpoisoned().get(wanted);
        let (seq, entry) = match in_memory {
            Some(entry) => {
                self.from_memory.inc();
                (wanted, entry)
            }
            None => {
                // Checked once here (decoded without keeping anything), so that a damaged
                // entry stops this reader with `Corrupt`, as before any sink has part of it.
                let row: Option<(i64, Option<Encoded>)> = self
                    .conn
                    .prepare_cached(
                        "SELECT seq, encoding, data FROM entries WHERE seq >= ?1 ORDER BY seq LIMIT 1",
                    )
                    .and_then(|mut stmt| {
                        stmt.query_row([wanted], |r| {
                            let entry = match (Encoding::from_i64(r.get(1)?), r.get::<_, Vec<u8>>(2)) {
                                (Some(encoding), Ok(data)) => Encoded::checked(data, encoding).ok(),
                                _ => None,
                            };
                            Ok((r.get(0)?, entry))
                        })
                        .optional()
                    })
                    .map_err(s.sqlite())?;
                let Some((seq, entry)) = row else {
                    return Ok(None);
                };
                let entry = entry.ok_or_else(|| JournalError::Corrupt {
                    path: s.path.clone(),
                    seq,
                })?;
                self.from_disk.inc();
                (seq, Arc::new(entry))
            }
        };
        let skip = if seq == wanted {
            self.read_pos.idx as usize
        } else {
            // Entries in between were dropped (journal full, drop_oldest): counted there.
            self.read_pos = Position { seq, idx: 0 };
            0
        };
        let skip = skip.min(entry.len());
        Ok(Some((entry, skip)))
    }

    /// The position after the last reading handed out by [`read`](Self::read).
    pub fn read_position(&self) -> Position {
        self.read_pos
    }

    /// Persists `pos` as this sink's cursor (everything before it is written), and deletes
    /// the entries every sink has passed.
    ///
    /// # Errors
    /// SQLite failed; the cursor stays where it was (the sink will write some readings
    /// again, which the stores absorb).
    pub fn commit(&mut self, pos: Position) -> Result<(), JournalError> {
        let s = self.shared.clone();
        let min_seq = {
            let mut cursors = s.cursors.lock_unpoisoned();
            cursors.insert(self.sink.clone(), pos);
            cursors.values().map(|p| p.seq).min().unwrap_or(pos.seq)
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(s.sqlite())?;
        tx.execute(
            "UPDATE cursors SET seq = ?2, idx = ?3 WHERE sink = ?1",
            params![self.sink, pos.seq, pos.idx],
        )
        .map_err(s.sqlite())?;
        let freed = delete_before(&tx, min_seq).map_err(s.sqlite())?;
        tx.commit().map_err(s.sqlite())?;
        self.lag
            .add(-i64::try_from(std::mem::take(&mut self.handed_out)).unwrap_or(i64::MAX));
        if freed > 0 {
            s.add_bytes(-freed);
            s.notify_space();
            give_back_space(&self.conn, s.bytes.load(Ordering::SeqCst), &s.path);
        }
        Ok(())
    }

    /// A receiver that changes whenever an entry is committed; closed once the writer has
    /// finished (no more entries will come).
    pub fn committed(&self) -> watch::Receiver<i64> {
        self.committed.clone()
    }

    /// The sink this reader belongs to.
    pub fn sink(&self) -> &str {
        &self.sink
    }
}
