//! The loop every sink shares: read the journal from the sink's cursor, batch, write, retry
//! with backoff, and advance the cursor only once a write succeeded.
//!
//! A sink that is down retries forever with capped backoff and falls behind; it never slows
//! the journal or the other sinks (each has its own reader), and after a restart it resumes
//! from its persisted cursor.

use std::sync::Arc;
use std::time::Instant as StdInstant;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::{Sink, SinkError};
use crate::backoff::Backoff;
use crate::batcher::Batcher;
use crate::config::{BackoffConfig, BatchConfig};
use crate::journal::{JournalError, JournalReader, Position};
use crate::metrics::{Counter, Metrics};
use crate::reading::Reading;

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
    written: Counter,
    rejected: Counter,
    failures: Counter,
}

/// The runner was told to stop before its batch was written; the batch stays in the journal.
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
            written: metrics.counter("readings_written_total", &[("sink", &name)]),
            rejected: metrics.counter(
                "readings_dropped_total",
                &[("sink", &name), ("reason", "rejected_by_sink")],
            ),
            failures: metrics.counter("sink_write_failures_total", &[("sink", &name)]),
            reader: Some(reader),
            name,
        }
    }

    /// Runs until the journal's writer has finished and everything it committed is written
    /// (a graceful stop), or until `abort` (what is not written stays in the journal).
    ///
    /// # Errors
    /// The journal cannot be read.
    pub async fn run(mut self, abort: CancellationToken) -> Result<(), JournalError> {
        let mut committed = self.reader_ref().committed();
        let mut input_closed = false;
        loop {
            committed.borrow_and_update();
            let room = self.batcher.room();
            let chunk = self.read(room).await?;
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
                info!(sink = %self.name, "sink drained");
                return Ok(());
            }
            let deadline = self.batcher.deadline();
            tokio::select! {
                biased;
                () = abort.cancelled() => {
                    info!(sink = %self.name, unwritten = self.batcher.len(), "sink stopped; the rest stays in the journal");
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
    async fn with_reader<T: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut JournalReader) -> T + Send + 'static,
    ) -> T {
        let Some(mut reader) = self.reader.take() else {
            unreachable!("journal reader in use")
        };
        let (reader, out) = tokio::task::spawn_blocking(move || {
            let out = f(&mut reader);
            (reader, out)
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        self.reader = Some(reader);
        out
    }

    async fn read(&mut self, max: usize) -> Result<Vec<Reading>, JournalError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        self.with_reader(move |r| r.read(max)).await
    }

    /// Writes the batch until it succeeds, is rejected for good, or `abort` fires; then
    /// moves the cursor past it.
    async fn flush(&mut self, abort: &CancellationToken) -> Result<(), Aborted> {
        let batch = Arc::new(self.batcher.take());
        let pos: Position = self.reader_ref().read_position();
        let n = batch.len() as u64;
        loop {
            let started = StdInstant::now();
            match self.sink.write(&batch).await {
                Ok(()) => {
                    self.written.add(n);
                    if self.retry.attempts() > 0 {
                        info!(sink = %self.name, "sink writes again");
                    }
                    self.retry.reset();
                    debug!(sink = %self.name, readings = n, elapsed = ?started.elapsed(), "batch written");
                    break;
                }
                Err(SinkError::Rejected(reason)) => {
                    self.rejected.add(n);
                    error!(sink = %self.name, readings = n, %reason, "the store rejected a batch; skipping it");
                    break;
                }
                Err(e @ SinkError::Retryable(_)) => {
                    self.failures.inc();
                    let delay = self.retry.next_delay();
                    if self.retry.worth_logging() {
                        warn!(sink = %self.name, error = %e, attempts = self.retry.attempts(), ?delay, "write failed; retrying");
                    }
                    tokio::select! {
                        () = abort.cancelled() => return Err(Aborted),
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        if let Err(e) = self.with_reader(move |r| r.commit(pos)).await {
            // The readings are written; the old cursor only means writing them again.
            warn!(sink = %self.name, error = %e, "cannot save the sink's cursor");
        }
        Ok(())
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
