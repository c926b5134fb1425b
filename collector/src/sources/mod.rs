//! Sources: where readings come from. Each runs as one task, parses what arrives into
//! [`Reading`]s and sends them, as an [`Envelope`](crate::channel::Envelope), through an
//! [`Inlet`](crate::channel::Inlet) into the pipeline's one bounded channel.
//!
//! - [`mqtt`]: one task per broker connection.
//! - [`serial`]: one task per serial port.
//! - [`modbus`]: one task per Modbus bus (RTU) or connection (TCP).

pub mod modbus;
pub mod mqtt;
pub mod serial;

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::backoff::{Backoff, LogLimit};
use crate::config::TimestampConfig;
use crate::events::{SourceDisconnected, SourceUnreachable};
use crate::metrics::{Counter, Devices, Gauge, Metrics};
use crate::payload::TimestampBounds;
use crate::reading::Reading;
use crate::time::duration_ns;

/// The counters every source keeps, labelled with its name (`mqtt:<name>`, `serial:<name>`),
/// looked up once.
#[derive(Debug)]
pub(crate) struct SourceCounters {
    /// `messages_received_total`: MQTT messages, serial lines.
    pub(crate) messages: Counter,
    /// `readings_received_total`: readings sent into the pipeline.
    pub(crate) readings: Counter,
    /// `source_reconnects_total`: attempts to connect again (or to reopen a port).
    pub(crate) reconnects: Counter,
    /// `source_connected`: 1 while connected (or the port is open), else 0.
    pub(crate) connected: Gauge,
    /// Per-device liveness: last seen, readings.
    devices: Devices,
}

impl SourceCounters {
    /// The counters of the source labelled `source`.
    pub(crate) fn new(metrics: &Metrics, source: &str) -> SourceCounters {
        let labels = [("source", source)];
        SourceCounters {
            messages: metrics.counter("messages_received_total", &labels),
            readings: metrics.counter("readings_received_total", &labels),
            reconnects: metrics.counter("source_reconnects_total", &labels),
            connected: metrics.source_connected(source),
            devices: metrics.devices(source),
        }
    }

    /// Counts `readings`, about to be sent into the pipeline, and the devices they came from.
    pub(crate) fn received(&self, readings: &[Reading]) {
        self.readings.add(readings.len() as u64);
        let now = i64::try_from(crate::time::now_seconds()).unwrap_or(i64::MAX);
        // The readings of one message are nearly always of one device: one lookup per run,
        // and one lock for them all.
        let runs = readings
            .chunk_by(|a, b| a.device() == b.device())
            .map(|run| (run[0].device().unwrap_or(""), run.len() as u64));
        self.devices.record_runs(runs, now);
    }
}

/// Counts every rejected input by reason (`readings_rejected_total{source, reason}`) and logs
/// it without flooding the log: the first at once, then at most one line every 10 seconds
/// with the number left unsaid.
#[derive(Debug)]
pub(crate) struct Rejections {
    metrics: Metrics,
    source: String,
    log: LogLimit,
}

impl Rejections {
    /// The rejections of the source labelled `source`.
    pub(crate) fn new(metrics: Metrics, source: &str) -> Rejections {
        Rejections {
            metrics,
            source: source.to_string(),
            log: LogLimit::new(Duration::from_secs(10)),
        }
    }

    /// The counter of `reason`.
    pub(crate) fn counter(&self, reason: &str) -> Counter {
        self.metrics.counter(
            "readings_rejected_total",
            &[("source", &self.source), ("reason", reason)],
        )
    }

    /// Counts and logs one rejection of something that came from `from` (a topic, a port).
    pub(crate) fn reject(&mut self, from: &str, reason: &str) {
        self.counter(reason).inc();
        match self.log.event(Instant::now()) {
            Some(similar_since_last) => {
                warn!(from, reason, similar_since_last, "rejected an input");
            }
            None => debug!(from, reason, "rejected an input"),
        }
    }
}

/// The believable timestamps for a reading received at `now` (ns since the epoch).
pub(crate) fn timestamp_bounds(config: &TimestampConfig, now: i64) -> TimestampBounds {
    TimestampBounds::around(
        now,
        duration_ns(config.max_future),
        duration_ns(config.max_past),
    )
}

/// How a session on a link that a source opens again and again (a serial port, a Modbus
/// link) ended.
pub(crate) enum End {
    /// The source was told to stop.
    Stopped,
    /// The pipeline is gone.
    Closed,
    /// The link went away: why.
    Disconnected(String),
}

/// Between two sessions of such a link: logs and counts how the last one ended (or why the
/// link could not be opened), each change of state once, then waits out the backoff.
/// Returns false when the source is to stop. The serial and Modbus sources share it, so
/// that a port that comes and goes reads the same in the logs whatever it carries.
pub(crate) struct Reopening<'a> {
    connected: &'a Gauge,
    at: &'a str,
    pub(crate) backoff: Backoff,
    /// Whether the link being away is logged already.
    away_logged: bool,
}

impl<'a> Reopening<'a> {
    pub(crate) fn new(connected: &'a Gauge, at: &'a str, backoff: Backoff) -> Self {
        Reopening {
            connected,
            at,
            backoff,
            away_logged: false,
        }
    }

    /// After a session, or a failure to open: `Err` with why it could not be opened.
    pub(crate) async fn after(
        &mut self,
        ended: Result<End, &(dyn std::fmt::Display + Sync)>,
        stop: &CancellationToken,
    ) -> bool {
        match ended {
            Ok(End::Stopped | End::Closed) => return false,
            Ok(End::Disconnected(why)) => {
                SourceDisconnected {
                    connected: self.connected,
                    at: Some(&self.at),
                    reason: &why,
                }
                .emit();
                // The failed reopens that follow are the same state: not logged again.
                self.away_logged = true;
            }
            Err(error) => {
                SourceUnreachable {
                    at: Some(&self.at),
                    error,
                    attempts: None,
                    loud: !self.away_logged,
                }
                .emit();
                self.away_logged = true;
            }
        }
        let delay = self.backoff.next_delay();
        tokio::select! {
            () = stop.cancelled() => false,
            () = tokio::time::sleep(delay) => true,
        }
    }
}
