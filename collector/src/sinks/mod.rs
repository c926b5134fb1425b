//! Sinks: where readings end up. Each reads the journal with its own persisted cursor,
//! batches, writes, retries, and advances its cursor only once a write succeeded.
//!
//! - [`local`]: the embedded local store (SQLite), the default sink, also what `query` reads.
//! - [`influxdb`]: InfluxDB over the v2 write API or the v1 `/write`.
//! - [`mqtt`]: an MQTT broker, readings published at QoS 1 as line protocol (edge to core).
//! - [`runner`]: the loop every sink shares (journal cursor, batching, retry with backoff,
//!   Retry-After, splitting batches that are too large, the dead-letter file).
//! - [`dead_letter`]: where batches a store refused for good are kept, with the reason.
//! - [`line_protocol`]: readings as InfluxDB line protocol, in the dialect of each store.

pub mod dead_letter;
pub mod influxdb;
pub mod line_protocol;
pub mod local;
pub mod mqtt;
pub mod runner;

use std::future::Future;
use std::time::Duration;

use crate::error::error_chain;
/// A batch handed to a sink: its readings are shared with the journal and the other sinks,
/// and cloning it (to move it into a blocking task) copies none of them.
pub use crate::reading::Batch;

/// A destination for readings.
pub trait Sink: Send + 'static {
    /// Writes the whole batch, or fails with a classified error. A write may be retried with
    /// the same batch, so it must be idempotent (the stores overwrite identical points).
    fn write(&mut self, batch: &Batch) -> impl Future<Output = Result<(), SinkError>> + Send;
}

/// Why a write failed, classified by what the runner should do about it.
///
/// Displayed as `<class>: <reason>`; a `Transient` error's cause is its source, shown by
/// `{:#}` and [`error_chain`] (once), not by `{}`.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// A passing failure (connection, server error, busy store): retry later with backoff.
    Retryable(String),
    /// A passing failure that is an error of its own (a request that could not be sent):
    /// retried like `Retryable`. The cause is kept as the error's source, printed once by
    /// [`error_chain`] or `{:#}`.
    Transient(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The store asked to be left alone for a while (HTTP 429 or 503): retry after
    /// `retry_after` when it said so (`Retry-After`), else with backoff.
    Throttled {
        /// What the store said.
        reason: String,
        /// How long it asked us to wait.
        retry_after: Option<Duration>,
    },
    /// The batch is too large for the store (HTTP 413): the runner writes it in halves.
    TooLarge(String),
    /// The store refuses to let us write at all (HTTP 401, 403): the data stays in the
    /// journal, the runner retries with backoff and reports it loudly.
    Unauthorized(String),
    /// The store refused these readings for good (other 4xx): the runner puts them in the
    /// dead-letter file and moves on.
    Rejected(String),
    /// Some readings of the batch cannot be written to this store at all (its line protocol
    /// has no way to say them): the sink wrote nothing; the runner puts those in the
    /// dead-letter file and writes the others.
    Refused(Refused),
}

impl std::fmt::Display for SinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SinkError::Retryable(r) => write!(f, "retryable: {r}"),
            SinkError::Transient(cause) if f.alternate() => {
                write!(f, "retryable: {}", error_chain(&**cause))
            }
            SinkError::Transient(_) => f.write_str("retryable"),
            SinkError::Throttled { reason, .. } => write!(f, "throttled: {reason}"),
            SinkError::TooLarge(r) => write!(f, "too large: {r}"),
            SinkError::Unauthorized(r) => write!(f, "unauthorized: {r}"),
            SinkError::Rejected(r) => write!(f, "rejected: {r}"),
            SinkError::Refused(r) => write!(f, "refused: {}", r.reason()),
        }
    }
}

/// The readings of a batch a sink cannot write, by their place in the batch, with why.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Refused {
    /// (index in the batch, reason), indices ascending.
    pub readings: Vec<(usize, String)>,
}

impl Refused {
    /// The distinct reasons, `; `-separated (a batch's refusals usually share one or two).
    pub fn reason(&self) -> String {
        let mut reasons: Vec<&str> = Vec::new();
        for (_, why) in &self.readings {
            if !reasons.contains(&why.as_str()) {
                reasons.push(why);
            }
        }
        reasons.join("; ")
    }

    /// The indices, ascending and each once.
    pub fn indices(&self) -> Vec<usize> {
        let mut at: Vec<usize> = self.readings.iter().map(|(i, _)| *i).collect();
        at.sort_unstable();
        at.dedup();
        at
    }
}

impl SinkError {
    /// Whether writing the same batch again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            SinkError::Retryable(_)
                | SinkError::Transient(_)
                | SinkError::Throttled { .. }
                | SinkError::Unauthorized(_)
        )
    }

    /// A passing failure caused by `err`.
    pub fn transient(err: impl std::error::Error + Send + Sync + 'static) -> SinkError {
        SinkError::Transient(Box::new(err))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_transient_error_keeps_its_cause_and_prints_it_once() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = SinkError::transient(io);
        assert_eq!(e.to_string(), "retryable");
        assert_eq!(format!("{e:#}"), "retryable: refused");
        assert_eq!(error_chain(&e), "retryable: refused");
        assert_eq!(
            format!("{:#}", anyhow::Error::from(e)),
            "retryable: refused"
        );
        assert!(SinkError::Retryable("x".into()).is_retryable());
    }
}
