//! Sinks: where readings end up. Each reads the journal with its own persisted cursor,
//! batches, writes, retries, and advances its cursor only once a write succeeded.
//!
//! - [`local`]: the embedded local store (SQLite), the default sink, also what `query` reads.
//! - [`runner`]: the loop every sink shares (journal cursor, batching, retry with backoff).

pub mod local;
pub mod runner;

use std::future::Future;
use std::sync::Arc;

use crate::reading::Reading;

/// A batch handed to a sink; shared so that a sink may move it into a blocking task.
pub type Batch = Arc<Vec<Reading>>;

/// A destination for readings.
pub trait Sink: Send + 'static {
    /// Writes the whole batch, or fails with a classified error. A write may be retried with
    /// the same batch, so it must be idempotent (the stores overwrite identical points).
    fn write(&mut self, batch: &Batch) -> impl Future<Output = Result<(), SinkError>> + Send;
}

/// Why a write failed, classified by what the runner should do about it.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// A passing failure (connection, server error, busy store): retry later with backoff.
    #[error("retryable: {0}")]
    Retryable(String),
    /// The store refused these readings for good: do not retry them.
    #[error("rejected: {0}")]
    Rejected(String),
}

impl SinkError {
    /// Whether writing the same batch again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, SinkError::Retryable(_))
    }
}
