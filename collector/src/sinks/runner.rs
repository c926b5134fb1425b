//! The loop every sink shares: read the journal from the sink's cursor, batch, write, retry
//! with backoff, and advance the cursor only once a write succeeded.
//!
//! A sink that is down retries forever with capped backoff and falls behind; it never slows
//! the journal or the other sinks (each has its own reader), and after a restart it resumes
//! from its persisted cursor.
//!
//! What the runner does with each class of [`SinkError`], so that every sink gets the same
//! policies:
//! - `Retryable`, `Transient`: backoff (capped, jittered), forever.
//! - `Throttled`: wait what the store asked (`Retry-After`, at most [`MAX_RETRY_AFTER`]),
//!   else backoff.
//! - `Unauthorized`: the data stays in the journal; backoff, forever, with an error log (the
//!   first failure and every tenth), the gauge `sink_unauthorized{sink}` at 1 and
//!   `sink_up{sink}` at 0 until a write succeeds again.
//! - `TooLarge`: the batch is written in halves (recursively); a single reading that is
//!   still too large is rejected.
//! - `Rejected`: the readings go to the sink's [dead-letter file](super::dead_letter),
//!   counted in `readings_dead_lettered_total{sink}`, and the cursor moves on. Without a
//!   dead-letter file they are counted in `readings_dropped_total{sink,reason="rejected_by_sink"}`.
//! - `Refused`: the readings the sink cannot write at all go the same way (one dead-letter
//!   entry per batch, with the reasons), and the others are written.

use std::time::{Duration, Instant as StdInstant};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::dead_letter::DeadLetter;
use super::{Batch, Sink, SinkError};
use crate::backoff::Backoff;
use crate::batcher::Batcher;
use crate::config::{BackoffConfig, BatchConfig};
use crate::error::error_chain;
use crate::events::{BatchRejected, BatchSplit, BatchWritten, SinkWriteFailed, SinkWrites};
use crate::journal::{JournalError, JournalReader, Position};
use crate::metrics::{Counter, Histogram, Metrics};
use crate::task::{blocking, ShuttingDown};

/// The longest `Retry-After` honoured; a store asking for more is asked again after this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// How a sink is fed.
#[derive(Debug, Clone, Copy)]
pub struct RunnerSettings {
    /// Batching.
    pub batch: BatchConfig,
    /// Backoff between failed writes.
    pub retry: BackoffConfig,
}

/// Feeds one sink from the journal.
#[derive(Debug)]
pub struct SinkRunner<S> {
    sink: S,
    reader: Option<JournalReader>,
    batcher: Batcher,
    retry: Backoff,
    name: String,
    dead_letter: Option<DeadLetter>,
    writes: SinkWrites,
    rejected: Counter,
    dead_lettered: Counter,
    splits: Counter,
    /// `sink_write_duration_seconds`: every write attempt, failed ones too.
    write_duration: Histogram,
}

/// The runner was told to stop (or the runtime is shutting down) before its batch was
/// written; the batch stays in the journal.
struct Aborted;

impl<S: Sink> SinkRunner<S> {
    /// A runner for `sink`, reading with `reader`.
    pub fn new(
        sink: S,
        reader: JournalReader,
        settings: RunnerSettings,
        metrics: &Metrics,
    ) -> SinkRunner<S> {
        let name = reader.sink().to_string();
        SinkRunner {
            sink,
            batcher: Batcher::new(settings.batch),
            retry: Backoff::new(settings.retry),
            writes: SinkWrites {
                written: metrics.counter("readings_written_total", &[("sink", &name)]),
                failures: metrics.counter("sink_write_failures_total", &[("sink", &name)]),
                // Up until a write fails: /health reports a sink failing only once it has.
                up: {
                    let up = metrics.sink_up(&name);
                    up.set(1);
                    up
                },
                unauthorized: metrics.gauge("sink_unauthorized", &[("sink", &name)]),
            },
            rejected: metrics.counter(
                "readings_dropped_total",
                &[("sink", &name), ("reason", "rejected_by_sink")],
            ),
            dead_lettered: metrics.counter("readings_dead_lettered_total", &[("sink", &name)]),
            splits: metrics.counter("sink_batch_splits_total", &[("sink", &name)]),
            write_duration: metrics.histogram("sink_write_duration_seconds", &[("sink", &name)]),
            reader: Some(reader),
            dead_letter: None,
            name,
        }
    }

    /// Sends the batches the store rejects for good to `dead_letter` instead of dropping
    /// them (counted either way).
    pub fn with_dead_letter(mut self, dead_letter: DeadLetter) -> SinkRunner<S> {
        self.dead_letter = Some(dead_letter);
        self
    }

    /// Runs until the journal's writer has finished and everything it committed is written
    /// (a graceful stop), or until `abort` (what is not written stays in the journal).
    ///
    /// Its log lines carry the span `sink{sink=<name>}`.
    ///
    /// # Errors
    /// The journal cannot be read.
    #[tracing::instrument(name = "sink", skip_all, fields(sink = %self.name))]
    pub async fn run(mut self, abort: CancellationToken) -> Result<(), JournalError> {
        let mut committed = self.reader_ref().committed();
        let mut input_closed = false;
        loop {
            committed.borrow_and_update();
            let room = self.batcher.room();
            let Ok(chunk) = self.read(room).await else {
                debug!("the runtime is shutting down; the rest stays in the journal");
                return Ok(());
            };
            let chunk = chunk?;
            let caught_up = chunk.len() < room;
            self.batcher.extend(chunk, Instant::now());
            if self.batcher.is_due(Instant::now()) {
                if self.flush(&abort).await.is_err() {
                    return Ok(());
                }
                continue;
            }
            if !caught_up {
                continue;
            }
            if input_closed {
                if !self.batcher.is_empty() {
                    let _ = self.flush(&abort).await;
                }
                info!("sink drained");
                return Ok(());
            }
            let deadline = self.batcher.deadline();
            tokio::select! {
                biased;
                () = abort.cancelled() => {
                    info!(unwritten = self.batcher.len(), "sink stopped; the rest stays in the journal");
                    return Ok(());
                }
                () = sleep_until_opt(deadline) => {
                    if self.flush(&abort).await.is_err() {
                        return Ok(());
                    }
                }
                changed = committed.changed() => input_closed = changed.is_err(),
            }
        }
    }

    fn reader_ref(&self) -> &JournalReader {
        // Only None while a blocking read or commit holds it, and those are awaited.
        self.reader
            .as_ref()
            .unwrap_or_else(|| unreachable!("journal reader in use"))
    }

    /// Runs `f` on the reader in a blocking task (SQLite calls block).
    ///
    /// # Errors
    /// [`ShuttingDown`]: `f` did not run, and the reader is gone; the runner must stop.
    async fn with_reader<T: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut JournalReader) -> T + Send + 'static,
    ) -> Result<T, ShuttingDown> {
        let Some(mut reader) = self.reader.take() else {
            unreachable!("journal reader in use")
        };
        let (reader, out) = blocking(move || {
            let out = f(&mut reader);
            (reader, out)
        })
        .await?;
        self.reader = Some(reader);
        Ok(out)
    }

    async fn read(&mut self, max: usize) -> Result<Result<Batch, JournalError>, ShuttingDown> {
        if max == 0 {
            return Ok(Ok(Batch::new()));
        }
        self.with_reader(move |r| r.read(max)).await
    }

    /// Writes the batch until it succeeds or is rejected for good (in halves if the store
    /// says it is too large), or `abort` fires; then moves the cursor past it. If `abort`
    /// fires halfway, the whole batch stays in the journal (writing a part twice is harmless).
    async fn flush(&mut self, abort: &CancellationToken) -> Result<(), Aborted> {
        let batch = self.batcher.take();
        let pos: Position = self.reader_ref().read_position();
        // Parts still to write, the next one last.
        let mut parts = vec![batch];
        while let Some(part) = parts.pop() {
            if let Some((first, second)) = self.write_part(part, abort).await? {
                parts.push(second);
                parts.push(first);
            }
        }
        match self.with_reader(move |r| r.commit(pos)).await {
            Ok(Ok(())) => Ok(()),
            // The readings are written; the old cursor only means writing them again.
            Ok(Err(e)) => {
                warn!(error = %error_chain(&e), "cannot save the sink's cursor");
                Ok(())
            }
            Err(ShuttingDown) => Err(Aborted),
        }
    }

    /// Writes one part until it is written or dead-lettered (`None`), or the store says it
    /// is too large: then its two halves.
    async fn write_part(
        &mut self,
        mut part: Batch,
        abort: &CancellationToken,
    ) -> Result<Option<(Batch, Batch)>, Aborted> {
        loop {
            let n = part.len() as u64;
            let started = StdInstant::now();
            let result = self.sink.write(&part).await;
            self.write_duration.observe(started.elapsed());
            let delay = match result {
                Ok(()) => {
                    BatchWritten {
                        m: &self.writes,
                        readings: n,
                        elapsed: started.elapsed(),
                        recovered: self.retry.attempts() > 0,
                    }
                    .emit();
                    self.retry.reset();
                    return Ok(None);
                }
                Err(SinkError::TooLarge(reason)) if n > 1 => {
                    BatchSplit {
                        splits: &self.splits,
                        readings: n,
                        reason: &reason,
                    }
                    .emit();
                    return Ok(Some(part.split_at(part.len() / 2)));
                }
                Err(SinkError::TooLarge(reason) | SinkError::Rejected(reason)) => {
                    self.reject(&part, &reason, abort).await?;
                    return Ok(None);
                }
                Err(SinkError::Refused(refused)) => {
                    let at = refused.indices();
                    if at.is_empty() || at.iter().any(|&i| i >= part.len()) {
                        // Not what a sink may answer: the whole part, rather than a loop.
                        self.reject(&part, &refused.reason(), abort).await?;
                        return Ok(None);
                    }
                    let (refused_part, rest) = part.partition(&at);
                    self.reject(&refused_part, &refused.reason(), abort).await?;
                    if rest.is_empty() {
                        return Ok(None);
                    }
                    part = rest;
                    continue;
                }
                Err(SinkError::Unauthorized(reason)) => {
                    let delay = self.retry.next_delay();
                    self.failed(&reason, true, delay);
                    delay
                }
                Err(
                    e @ (SinkError::Retryable(_)
                    | SinkError::Transient(_)
                    | SinkError::Throttled { .. }),
                ) => {
                    let backoff = self.retry.next_delay();
                    let delay = match &e {
                        SinkError::Throttled {
                            retry_after: Some(after),
                            ..
                        } => (*after).min(MAX_RETRY_AFTER),
                        _ => backoff,
                    };
                    self.failed(&error_chain(&e), false, delay);
                    delay
                }
            };
            tokio::select! {
                () = abort.cancelled() => return Err(Aborted),
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Counts and logs a failed write, retried after `delay`.
    fn failed(&self, error: &dyn std::fmt::Display, unauthorized: bool, delay: Duration) {
        SinkWriteFailed {
            m: &self.writes,
            error,
            unauthorized,
            attempts: self.retry.attempts(),
            delay,
            loud: self.retry.worth_logging(),
        }
        .emit();
    }

    /// Puts readings the store refused for good into the dead-letter file (retrying while
    /// the file cannot be written: they are not dropped), or counts them as dropped when
    /// there is none.
    async fn reject(
        &mut self,
        part: &Batch,
        reason: &str,
        abort: &CancellationToken,
    ) -> Result<(), Aborted> {
        let n = part.len() as u64;
        let Some(dead_letter) = self.dead_letter.clone() else {
            BatchRejected {
                counter: &self.rejected,
                readings: n,
                reason,
                file: None,
            }
            .emit();
            return Ok(());
        };
        let mut retry = Backoff::new(BackoffConfig {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
        });
        loop {
            let (dl, part, name, why) = (
                dead_letter.clone(),
                part.clone(),
                self.name.clone(),
                reason.to_string(),
            );
            let Ok(written) = blocking(move || dl.append(&name, &why, &part)).await else {
                return Err(Aborted);
            };
            match written {
                Ok(()) => {
                    BatchRejected {
                        counter: &self.dead_lettered,
                        readings: n,
                        reason,
                        file: Some(dead_letter.path()),
                    }
                    .emit();
                    return Ok(());
                }
                Err(e) => {
                    let delay = retry.next_delay();
                    if retry.worth_logging() {
                        error!(error = %e, file = %dead_letter.path().display(), ?delay,
                            "cannot write the dead-letter file; retrying (the sink waits)");
                    }
                    tokio::select! {
                        () = abort.cancelled() => return Err(Aborted),
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::Path;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::config::{JournalSettings, WhenFull};
    use crate::journal::{Journal, JournalWriter};
    use crate::reading::{FieldValue, Reading, Readings};

    /// What the test sink answers to a write: by the batch's values and the attempt number.
    type Answer = Box<dyn FnMut(&[i64], usize) -> Result<(), SinkError> + Send>;

    /// Every write attempt: when, and the values of its batch.
    type Attempts = Vec<(StdInstant, Vec<i64>)>;

    /// A sink that records what it was given and answers as told.
    struct Scripted {
        answer: Answer,
        attempts: Arc<Mutex<Attempts>>,
    }

    impl Sink for Scripted {
        async fn write(&mut self, batch: &super::super::Batch) -> Result<(), SinkError> {
            let mut values: Vec<i64> = Vec::new();
            batch.for_each(|r| {
                values.push(match r.field("v") {
                    Some(FieldValue::Integer(v)) => *v,
                    _ => -1,
                });
            });
            let n = {
                let mut a = self.attempts.lock().unwrap();
                a.push((StdInstant::now(), values.clone()));
                a.len()
            };
            (self.answer)(&values, n)
        }
    }

    fn reading(i: i64) -> Reading {
        let mut r = Reading::new("env", 1_700_000_000_000_000_000 + i);
        r.set_tag("device", "d");
        r.fields.push(("v".into(), FieldValue::Integer(i)));
        r
    }

    /// A journal in `dir` with the one sink `t`.
    fn journal(dir: &Path, metrics: &Metrics) -> (Journal, JournalWriter) {
        let (journal, writer) = Journal::open(
            &JournalSettings {
                path: dir.join("journal.db"),
                max_bytes: 1 << 30,
                when_full: WhenFull::Block,
                sync: false,
                commit_delay: std::time::Duration::ZERO,
                ack_delay: std::time::Duration::ZERO,
                ack_batch: 1,
            },
            metrics.clone(),
        )
        .unwrap();
        journal.register_sinks(&["t"]).unwrap();
        (journal, writer)
    }

    /// Runs a runner over readings `0..n` (one journal entry) until it has written them all,
    /// and returns its metrics and every write attempt.
    async fn run(
        dir: &Path,
        n: i64,
        answer: Answer,
        dead_letter: bool,
    ) -> (Metrics, Attempts, Journal) {
        let metrics = Metrics::new();
        let (journal, mut writer) = journal(dir, &metrics);
        writer
            .append(&(0..n).map(reading).collect::<Vec<_>>())
            .unwrap();
        drop(writer); // the input ends: the runner drains and returns
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let sink = Scripted {
            answer,
            attempts: attempts.clone(),
        };
        let settings = RunnerSettings {
            batch: BatchConfig {
                max_readings: 10,
                max_age: Duration::from_millis(10),
            },
            retry: BackoffConfig {
                initial: Duration::from_millis(1),
                max: Duration::from_millis(2),
            },
        };
        let mut runner = SinkRunner::new(sink, journal.reader("t").unwrap(), settings, &metrics);
        if dead_letter {
            runner = runner.with_dead_letter(DeadLetter::new(dir, "t", 1 << 20));
        }
        tokio::time::timeout(
            Duration::from_secs(30),
            runner.run(CancellationToken::new()),
        )
        .await
        .unwrap()
        .unwrap();
        let attempts = attempts.lock().unwrap().clone();
        (metrics, attempts, journal)
    }

    #[tokio::test]
    async fn too_large_splits_and_rejected_goes_to_the_dead_letter_file_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let answer: Answer = Box::new(|values, _| {
            if values.len() > 3 {
                Err(SinkError::TooLarge("HTTP 413".into()))
            } else if values.contains(&5) {
                Err(SinkError::Rejected("HTTP 400: field type conflict".into()))
            } else {
                Ok(())
            }
        });
        let (metrics, attempts, journal) = run(dir.path(), 10, answer, true).await;
        let parts: Vec<Vec<i64>> = attempts.into_iter().map(|(_, v)| v).collect();
        assert_eq!(
            parts,
            vec![
                (0..10).collect::<Vec<_>>(),
                vec![0, 1, 2, 3, 4],
                vec![0, 1],
                vec![2, 3, 4],
                vec![5, 6, 7, 8, 9],
                vec![5, 6],
                vec![7, 8, 9],
            ]
        );
        assert_eq!(metrics.sum("readings_written_total", &[("sink", "t")]), 8);
        assert_eq!(
            metrics.sum("readings_dead_lettered_total", &[("sink", "t")]),
            2
        );
        assert_eq!(metrics.sum("sink_batch_splits_total", &[("sink", "t")]), 3);
        let text = std::fs::read_to_string(dir.path().join("t.lp")).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].ends_with("readings=2 reason: HTTP 400: field type conflict"));
        assert_eq!(
            &lines[1..],
            [
                "env,device=d v=5i 1700000000000000005",
                "env,device=d v=6i 1700000000000000006"
            ]
        );
        // The cursor is past everything: nothing is left for this sink.
        let mut reader = journal.reader("t").unwrap();
        assert!(reader.read(100).unwrap().is_empty());
    }

    /// Issue 15: a sink still running while `main` shuts the runtime down (a start-up error
    /// elsewhere) got `JoinError::Cancelled` from its journal read and panicked on
    /// `into_panic()`. It stops quietly instead.
    #[test]
    fn a_runner_stops_quietly_when_the_runtime_shuts_down() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::new();
        let (journal, mut writer) = journal(dir.path(), &metrics);
        writer.append(&[reading(1)]).unwrap();
        let sink = Scripted {
            answer: Box::new(|_, _| Ok(())),
            attempts: Arc::new(Mutex::new(Vec::new())),
        };
        let settings = RunnerSettings {
            batch: BatchConfig::default(),
            retry: BackoffConfig::default(),
        };
        let runner = SinkRunner::new(sink, journal.reader("t").unwrap(), settings, &metrics);
        let result =
            crate::task::tests::with_blocking_pool_shut_down(runner.run(CancellationToken::new()));
        assert!(result.is_ok(), "{result:?}");
    }

    #[tokio::test]
    async fn readings_a_sink_refuses_go_to_the_dead_letter_file_and_the_others_are_written() {
        let dir = tempfile::tempdir().unwrap();
        // Readings 3 and 7 cannot be said to this store: refused wherever they are.
        let answer: Answer = Box::new(|values, _| {
            let readings: Vec<(usize, String)> = values
                .iter()
                .enumerate()
                .filter(|(_, v)| matches!(v, 3 | 7))
                .map(|(i, v)| (i, format!("reading {v} cannot be said")))
                .collect();
            if readings.is_empty() {
                Ok(())
            } else {
                Err(SinkError::Refused(crate::sinks::Refused { readings }))
            }
        });
        let (metrics, attempts, journal) = run(dir.path(), 10, answer, true).await;
        let parts: Vec<Vec<i64>> = attempts.into_iter().map(|(_, v)| v).collect();
        assert_eq!(
            parts,
            vec![(0..10).collect::<Vec<_>>(), vec![0, 1, 2, 4, 5, 6, 8, 9]]
        );
        assert_eq!(metrics.sum("readings_written_total", &[("sink", "t")]), 8);
        assert_eq!(
            metrics.sum("readings_dead_lettered_total", &[("sink", "t")]),
            2
        );
        let text = std::fs::read_to_string(dir.path().join("t.lp")).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0]
                .ends_with("readings=2 reason: reading 3 cannot be said; reading 7 cannot be said"),
            "{text}"
        );
        assert_eq!(
            &lines[1..],
            [
                "env,device=d v=3i 1700000000000000003",
                "env,device=d v=7i 1700000000000000007"
            ]
        );
        let mut reader = journal.reader("t").unwrap();
        assert!(reader.read(100).unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_single_reading_that_is_too_large_is_rejected_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let answer: Answer = Box::new(|_, _| Err(SinkError::TooLarge("HTTP 413".into())));
        let (metrics, attempts, _journal) = run(dir.path(), 1, answer, false).await;
        assert_eq!(attempts.len(), 1);
        assert_eq!(
            metrics.sum(
                "readings_dropped_total",
                &[("sink", "t"), ("reason", "rejected_by_sink")]
            ),
            1
        );
    }

    #[tokio::test]
    async fn retry_after_is_honoured_and_unauthorized_keeps_the_data_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let gauges = Arc::new(Mutex::new(Vec::new()));
        let seen = gauges.clone();
        let answer: Answer = Box::new(move |_, attempt| match attempt {
            1 => Err(SinkError::Throttled {
                reason: "HTTP 429".into(),
                retry_after: Some(Duration::from_millis(300)),
            }),
            2 | 3 => Err(SinkError::Unauthorized("HTTP 401".into())),
            _ => {
                seen.lock().unwrap().push(attempt);
                Ok(())
            }
        });
        let (metrics, attempts, _journal) = run(dir.path(), 4, answer, true).await;
        assert_eq!(attempts.len(), 4, "the same batch until it is written");
        assert!(attempts.iter().all(|(_, v)| *v == vec![0, 1, 2, 3]));
        let waited = attempts[1].0 - attempts[0].0;
        assert!(
            waited >= Duration::from_millis(300),
            "waited only {waited:?}"
        );
        assert_eq!(metrics.sum("readings_written_total", &[("sink", "t")]), 4);
        assert_eq!(
            metrics.sum("sink_write_failures_total", &[("sink", "t")]),
            3
        );
        let gauge = |name: &str| {
            metrics
                .gauges()
                .into_iter()
                .find(|(k, _)| k.name == name)
                .map(|(_, v)| v)
        };
        assert_eq!(
            gauge("sink_unauthorized"),
            Some(0),
            "cleared by the success"
        );
        assert_eq!(gauge("sink_up"), Some(1));
        assert_eq!(*gauges.lock().unwrap(), vec![4]);
    }
}
