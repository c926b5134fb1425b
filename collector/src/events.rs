//! Events that log and count in one place (Vector's `internal_events`): each is a struct whose
//! `emit` writes the log line and updates the metrics that go with it, so that the two cannot
//! drift apart. The label (`source=...`, `sink=...`) is not a field: the task's span carries
//! it.
//!
//! Rejections of single inputs are counted and logged by [`crate::sources`]' `Rejections`.

use std::fmt::Display;
use std::time::Duration;

use tracing::{debug, error, info, warn};

use crate::metrics::{Counter, Gauge};

/// A source's connection is up: an MQTT broker accepted it, a port or a Modbus link opened.
pub(crate) struct SourceConnected<'a> {
    /// `source_connected`.
    pub(crate) connected: &'a Gauge,
    /// A port or a link; the broker is named in the `connecting` line.
    pub(crate) at: Option<&'a dyn Display>,
    /// MQTT: whether the broker kept a session.
    pub(crate) session_present: Option<bool>,
}

impl SourceConnected<'_> {
    pub(crate) fn emit(self) {
        self.connected.set(1);
        let at = self.at.map(tracing::field::display);
        info!(at, session_present = self.session_present, "connected");
    }
}

/// A source's connection that was up is gone; it reconnects with backoff.
pub(crate) struct SourceDisconnected<'a> {
    /// `source_connected`.
    pub(crate) connected: &'a Gauge,
    /// A port or a link.
    pub(crate) at: Option<&'a dyn Display>,
    /// Why.
    pub(crate) reason: &'a dyn Display,
}

impl SourceDisconnected<'_> {
    pub(crate) fn emit(self) {
        self.connected.set(0);
        let at = self.at.map(tracing::field::display);
        warn!(at, reason = %self.reason, "disconnected; reconnecting with backoff");
    }
}

/// A source cannot connect (or open its port or link); it retries with backoff. Logged as a
/// warning when `loud` (the first failure, then now and then), else at debug level.
pub(crate) struct SourceUnreachable<'a> {
    /// A port or a link.
    pub(crate) at: Option<&'a dyn Display>,
    /// What failed.
    pub(crate) error: &'a dyn Display,
    /// Attempts since the last healthy connection, when counted.
    pub(crate) attempts: Option<u32>,
    /// Whether worth a warning.
    pub(crate) loud: bool,
}

impl SourceUnreachable<'_> {
    pub(crate) fn emit(self) {
        let at = self.at.map(tracing::field::display);
        let (error, attempts) = (self.error, self.attempts);
        if self.loud {
            warn!(at, %error, attempts, "cannot connect; retrying with backoff");
        } else {
            debug!(at, %error, attempts, "cannot connect");
        }
    }
}

/// MQTT: a message larger than the packet limit closed the connection. It counts as one
/// oversized rejection; the line is logged when `unsaid` is `Some` (the log is limited).
pub(crate) struct OversizedMessageClosedConnection {
    /// `readings_rejected_total{reason="oversized"}`.
    pub(crate) rejected: Counter,
    /// The packet's size.
    pub(crate) size: usize,
    /// The configured limit.
    pub(crate) max_payload_size: usize,
    /// Whether to log, with the number of such events not logged since the last line.
    pub(crate) unsaid: Option<u64>,
}

impl OversizedMessageClosedConnection {
    pub(crate) fn emit(self) {
        self.rejected.inc();
        if let Some(unsaid) = self.unsaid {
            error!(size = self.size, max_payload_size = self.max_payload_size, unsaid,
                "a message larger than the packet limit closed the connection: it is rejected as oversized, and the next connection reads packets up to its size so that the broker does not send it again (raise max_payload_size to accept such messages, or limit message sizes on the broker)");
        }
    }
}

/// The metrics of one sink's writes.
#[derive(Debug)]
pub(crate) struct SinkWrites {
    /// `readings_written_total`.
    pub(crate) written: Counter,
    /// `sink_write_failures_total`.
    pub(crate) failures: Counter,
    /// `sink_up`: what `/health` reads.
    pub(crate) up: Gauge,
    /// `sink_unauthorized`.
    pub(crate) unauthorized: Gauge,
}

/// A sink wrote a batch.
pub(crate) struct BatchWritten<'a> {
    pub(crate) m: &'a SinkWrites,
    pub(crate) readings: u64,
    pub(crate) elapsed: Duration,
    /// Whether the writes before it had failed.
    pub(crate) recovered: bool,
}

impl BatchWritten<'_> {
    pub(crate) fn emit(self) {
        self.m.written.add(self.readings);
        self.m.up.set(1);
        self.m.unauthorized.set(0);
        if self.recovered {
            info!("sink writes again");
        }
        debug!(readings = self.readings, elapsed = ?self.elapsed, "batch written");
    }
}

/// A sink's write failed and is retried after `delay`. `unauthorized`: the store refuses our
/// credentials. Logged when `loud` (the first failure and every tenth).
pub(crate) struct SinkWriteFailed<'a> {
    pub(crate) m: &'a SinkWrites,
    pub(crate) error: &'a dyn Display,
    pub(crate) unauthorized: bool,
    pub(crate) attempts: u32,
    pub(crate) delay: Duration,
    pub(crate) loud: bool,
}

impl SinkWriteFailed<'_> {
    pub(crate) fn emit(self) {
        self.m.failures.inc();
        self.m.up.set(0);
        let (attempts, delay) = (self.attempts, self.delay);
        if self.unauthorized {
            self.m.unauthorized.set(1);
            if self.loud {
                error!(reason = %self.error, attempts, ?delay,
                    "the store refuses our credentials: nothing is written to it until they are fixed (the readings wait in the journal)");
            }
        } else if self.loud {
            warn!(error = %self.error, attempts, ?delay, "write failed; retrying");
        }
    }
}

/// The store said a batch is too large: it is written in halves.
pub(crate) struct BatchSplit<'a> {
    /// `sink_batch_splits_total`.
    pub(crate) splits: &'a Counter,
    pub(crate) readings: u64,
    pub(crate) reason: &'a str,
}

impl BatchSplit<'_> {
    pub(crate) fn emit(self) {
        self.splits.inc();
        info!(readings = self.readings, reason = %self.reason, "batch too large for the store: writing it in halves");
    }
}

/// The store rejected readings for good: they went to the dead-letter file (`file`), or,
/// without one, were dropped. `counter` is `readings_dead_lettered_total` or
/// `readings_dropped_total{reason="rejected_by_sink"}` accordingly.
pub(crate) struct BatchRejected<'a> {
    pub(crate) counter: &'a Counter,
    pub(crate) readings: u64,
    pub(crate) reason: &'a str,
    pub(crate) file: Option<&'a std::path::Path>,
}

impl BatchRejected<'_> {
    pub(crate) fn emit(self) {
        self.counter.add(self.readings);
        let (readings, reason) = (self.readings, self.reason);
        match self.file {
            Some(file) => error!(readings, %reason, file = %file.display(),
                "the store rejected a batch: it is in the dead-letter file; moving on"),
            None => error!(readings, %reason, "the store rejected a batch; skipping it"),
        }
    }
}
