//! The one writer: takes envelopes from the channel, appends each group as one entry, syncs,
//! then acks; applies the `when_full` policy at the journal's bound.

use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use tokio::sync::watch;
use tracing::{error, warn};

use super::shared::Shared;
use super::JournalError;
use crate::backoff::{Backoff, LogLimit};
use crate::channel::{Envelope, Outlet};
use crate::config::{BackoffConfig, WhenFull};
use crate::metrics::Counter;
use crate::reading::{self, Encoded, Encoding, Reading};
use crate::sync::MutexExt;

/// The most readings one commit takes; bounds the writer's memory.
const MAX_ENTRY_READINGS: usize = 65_536;

/// The one writer: takes envelopes from the pipeline's channel, commits them, acks them.
#[derive(Debug)]
pub struct JournalWriter {
    pub(super) conn: Connection,
    pub(super) shared: Arc<Shared>,
    pub(super) committed: watch::Sender<i64>,
    pub(super) next_seq: i64,
    pub(super) appended: Counter,
    pub(super) commits: Counter,
    /// Drops (journal full, `drop_oldest`) can come many times a second: logged sparingly.
    pub(super) drop_log: LogLimit,
    /// How long a commit that acknowledges nothing may wait for more readings.
    pub(super) commit_delay: Duration,
    /// How long a commit that acknowledges messages may wait for more, from the first.
    pub(super) ack_delay: Duration,
    /// How many messages waiting for their ack make a commit go at once.
    pub(super) ack_batch: usize,
}

impl JournalWriter {
    /// Runs until every sender of `rx` is gone and the channel is empty: takes whatever is
    /// waiting (up to a bound), appends it as one entry, syncs, and acks it. Blocking: run
    /// it on a blocking thread of the runtime.
    ///
    /// A commit that acknowledges nothing (QoS 0 messages, serial lines: nobody waits for
    /// it) also takes what arrives within `commit_delay`; one that acknowledges messages
    /// (QoS 1) takes what arrives within `ack_delay` of the first of them, and goes sooner
    /// once `ack_batch` messages wait for their ack (a broker sends no more than its window
    /// before it has the acks). Either goes sooner when half of the pipeline's room is
    /// taken (the sources would soon wait for the commit), or when input ends: a stream
    /// costs a commit (and a sync) every few milliseconds rather than one per few dozen
    /// readings, and no ack goes before the commit that covers it. Meanwhile the writer
    /// sleeps: the sources wake it only for those reasons, not for every envelope.
    ///
    /// A failing disk is retried with backoff, holding the batch and its acks: nothing is
    /// acked that is not on disk, and nothing is dropped here.
    pub fn run(mut self, mut rx: Outlet) {
        let mut batch: Vec<Envelope> = Vec::new();
        let mut retry = Backoff::new(BackoffConfig {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
        });
        let runtime = tokio::runtime::Handle::try_current().ok();
        rx.set_ack_batch(self.ack_batch);
        while let Some(first) = rx.blocking_recv() {
            self.shared.holding.store(true, Ordering::SeqCst);
            let (mut count, mut to_ack) = (0, 0);
            let mut wait_until = tokio::time::Instant::now() + self.commit_delay;
            let mut late = false;
            let mut next = Some(first);
            loop {
                while let Some(e) = next.take() {
                    count += e.readings.len();
                    if e.ack.is_some() {
                        if to_ack == 0 {
                            // The first message to acknowledge: it waits `ack_delay` at most.
                            wait_until =
                                wait_until.min(tokio::time::Instant::now() + self.ack_delay);
                        }
                        to_ack += e.messages.max(1);
                    }
                    batch.push(e);
                    if count < MAX_ENTRY_READINGS {
                        next = rx.try_recv();
                    }
                }
                if late
                    || to_ack >= self.ack_batch
                    || count >= MAX_ENTRY_READINGS
                    || rx.should_commit()
                    || tokio::time::Instant::now() >= wait_until
                {
                    break;
                }
                let Some(rt) = runtime.as_ref() else {
                    break;
                };
                late = !rt.block_on(rx.wait(wait_until));
                next = rx.try_recv();
            }
            let committed = loop {
                match self.append_envelopes(&batch) {
                    Ok(committed) => break committed,
                    Err(e) => {
                        let delay = retry.next_delay();
                        if retry.worth_logging() {
                            let error = crate::error::error_chain(&e);
                            error!(
                                error,
                                ?delay,
                                attempts = retry.attempts(),
                                "journal write failed; retrying (nothing is acked meanwhile)"
                            );
                        }
                        std::thread::sleep(delay);
                        if self.shared.closing.load(Ordering::SeqCst) {
                            return;
                        }
                    }
                }
            };
            retry.reset();
            for envelope in batch.drain(..) {
                if let Some(ack) = envelope.ack {
                    ack.send();
                }
            }
            rx.acks_committed(to_ack);
            if let Some((seq, entry)) = committed {
                self.publish(seq, entry);
            }
            self.shared.holding.store(false, Ordering::SeqCst);
        }
    }

    /// Appends the readings of `batch` as one entry; returns its seq and the entry (`None`:
    /// no readings).
    fn append_envelopes(
        &mut self,
        batch: &[Envelope],
    ) -> Result<Option<(i64, Encoded)>, JournalError> {
        let mut data = Vec::new();
        reading::encode_all(batch.iter().flat_map(|e| &e.readings), &mut data);
        let count = batch.iter().map(|e| e.readings.len()).sum();
        Ok(self
            .append_encoded(&data, count)?
            .map(|seq| (seq, Encoded::written(data, count))))
    }

    /// Appends `readings` as one entry and syncs (for tools and tests; the pipeline uses
    /// [`JournalWriter::run`]).
    ///
    /// # Errors
    /// SQLite failed; nothing was appended.
    pub fn append(&mut self, readings: &[Reading]) -> Result<(), JournalError> {
        let mut data = Vec::new();
        reading::encode_all(readings, &mut data);
        if let Some(seq) = self.append_encoded(&data, readings.len())? {
            self.publish(seq, Encoded::written(data, readings.len()));
        }
        Ok(())
    }

    /// Appends `count` readings encoded in `data` as one entry, and syncs; returns the
    /// entry's seq (`None` when there are no readings: nothing is appended).
    fn append_encoded(&mut self, data: &[u8], count: usize) -> Result<Option<i64>, JournalError> {
        if count == 0 {
            return Ok(None);
        }
        let size = data.len() as u64;
        self.make_room(size)?;
        let shared = self.shared.clone();
        let seq = self.next_seq;
        {
            let lags = shared.lags.lock_unpoisoned();
            self.conn
                .prepare_cached(
                    "INSERT INTO entries (seq, readings, data, encoding) VALUES (?1, ?2, ?3, ?4)",
                )
                .and_then(|mut insert| {
                    insert.execute(params![seq, count as i64, data, Encoding::CURRENT.as_i64()])
                })
                .map_err(shared.sqlite())?;
            for lag in lags.values() {
                lag.add(count as i64);
            }
        }
        self.next_seq += 1;
        shared.add_bytes(size as i64);
        self.appended.add(count as u64);
        self.commits.inc();
        Ok(Some(seq))
    }

    /// Keeps the committed entry `seq` in the tail, then wakes the readers (in this order, so
    /// that a reader woken takes it from memory).
    fn publish(&self, seq: i64, entry: Encoded) {
        self.shared.keep_in_memory(seq, entry);
        self.committed.send_replace(seq);
    }

    /// Applies the full policy until `size` more bytes fit (or the journal is empty).
    fn make_room(&mut self, size: u64) -> Result<(), JournalError> {
        let s = self.shared.clone();
        let fits = |s: &Shared| {
            s.bytes.load(Ordering::SeqCst) + size <= s.max_bytes
                || s.bytes.load(Ordering::SeqCst) == 0
        };
        if fits(&s) {
            return Ok(());
        }
        match s.when_full {
            WhenFull::Block => {
                warn!(
                    bytes = s.bytes.load(Ordering::SeqCst),
                    max_bytes = s.max_bytes,
                    "journal full: waiting for the sinks (sources are held back)"
                );
                s.metrics.counter("journal_full_waits_total", &[]).inc();
                s.waiting_for_sinks.store(true, Ordering::SeqCst);
                let mut guard = s.space.0.lock_unpoisoned();
                while !fits(&s) && !s.closing.load(Ordering::SeqCst) {
                    guard = s
                        .space
                        .1
                        .wait_timeout(guard, Duration::from_millis(500))
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
                s.waiting_for_sinks.store(false, Ordering::SeqCst);
                Ok(())
            }
            WhenFull::DropOldest => {
                while !fits(&s) {
                    self.drop_oldest_entry()?;
                }
                Ok(())
            }
        }
    }

    /// Deletes the oldest entry and counts, per sink, the readings it had not yet written.
    fn drop_oldest_entry(&mut self) -> Result<(), JournalError> {
        let s = self.shared.clone();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(s.sqlite())?;
        let oldest: Option<(i64, i64, i64)> = tx
            .query_row(
                "SELECT seq, readings, length(data) FROM entries ORDER BY seq LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(s.sqlite())?;
        let Some((seq, readings, bytes)) = oldest else {
            return Ok(());
        };
        tx.execute("DELETE FROM entries WHERE seq = ?1", [seq])
            .map_err(s.sqlite())?;
        tx.commit().map_err(s.sqlite())?;
        s.add_bytes(-bytes);
        {
            // Dropped for every reader, from memory too.
            let mut tail = s.tail.lock_unpoisoned();
            while tail.entries.front().is_some_and(|(q, _)| *q <= seq) {
                tail.pop_front();
            }
        }
        let cursors = s.cursors.lock_unpoisoned();
        let in_memory = s.in_memory.lock_unpoisoned();
        let lags = s.lags.lock_unpoisoned();
        let mut lost_now = 0;
        for (sink, cursor) in cursors.iter() {
            // What a running reader already holds will be written: only the rest is lost.
            let pos = in_memory.get(sink).map_or(cursor, |m| m.max(cursor));
            let lost = match pos.seq.cmp(&seq) {
                std::cmp::Ordering::Less => readings,
                std::cmp::Ordering::Equal => readings - i64::from(pos.idx),
                std::cmp::Ordering::Greater => 0,
            };
            if lost > 0 {
                if let Some(lag) = lags.get(sink) {
                    lag.add(-lost);
                }
                s.metrics
                    .counter(
                        "readings_dropped_total",
                        &[("sink", sink), ("reason", "journal_full")],
                    )
                    .add(lost as u64);
                lost_now += lost;
            }
        }
        if lost_now > 0 {
            if let Some(entries_before) = self.drop_log.event(std::time::Instant::now()) {
                warn!(readings = lost_now, similar_since_last = entries_before, "journal full: dropped the oldest readings some sinks had not written (counted per sink in readings_dropped_total, reason journal_full)");
            }
        }
        Ok(())
    }
}
