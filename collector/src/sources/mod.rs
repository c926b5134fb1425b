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

use tracing::{debug, warn};

use crate::backoff::LogLimit;
use crate::config::TimestampConfig;
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
