//! Counters for everything that can be received, written, rejected or dropped.
//!
//! A small registry of labelled atomic counters and gauges. Hot paths look a counter up once
//! and keep the [`Counter`] handle; a snapshot is what tests, `/metrics` and logs read.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use compact_str::CompactString;

use crate::sync::MutexExt;

/// A monotonically increasing count.
#[derive(Debug, Clone, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// The current count.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down (bytes in the journal, connected or not).
#[derive(Debug, Clone, Default)]
pub struct Gauge(Arc<AtomicI64>);

impl Gauge {
    /// Sets the value.
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }

    /// Adds `delta` (negative to subtract).
    pub fn add(&self, delta: i64) {
        self.0.fetch_add(delta, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Upper bounds (seconds) of the [`Histogram`] buckets: 1 ms to 30 s, enough to tell a
/// local write (milliseconds) from a remote one and from a timeout.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A distribution of durations over [`DURATION_BUCKETS`], as Prometheus histograms are.
#[derive(Debug, Clone, Default)]
pub struct Histogram(Arc<HistogramCells>);

#[derive(Debug, Default)]
struct HistogramCells {
    /// Per bucket, the observations that fell in it (not cumulative); the last is `+Inf`.
    buckets: [AtomicU64; DURATION_BUCKETS.len() + 1],
    sum_ns: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = DURATION_BUCKETS
            .iter()
            .position(|&le| secs <= le)
            .unwrap_or(DURATION_BUCKETS.len());
        self.0.buckets[i].fetch_add(1, Ordering::Relaxed);
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.0.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Cumulative counts per bucket (the last is `+Inf`, the total count), and the sum in
    /// seconds.
    pub fn snapshot(&self) -> (Vec<u64>, f64) {
        let mut total = 0;
        let counts = self
            .0
            .buckets
            .iter()
            .map(|b| {
                total += b.load(Ordering::Relaxed);
                total
            })
            .collect();
        let sum = self.0.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        (counts, sum)
    }
}

/// The most devices one source keeps liveness for: a stream of made-up device ids must not
/// grow memory without bound. Devices beyond it are counted in `devices_untracked_total`.
pub const MAX_DEVICES_PER_SOURCE: usize = 100_000;

/// Per-device liveness of one source: when each device was last heard from, and how many
/// readings it sent. Written by the source's one task, read by `/metrics`.
#[derive(Debug, Clone)]
pub struct Devices {
    /// Keyed inline (an id of up to 24 bytes needs no allocation): with 10,000 devices, a
    /// key on the heap cost a cache miss per message.
    table: Arc<Mutex<foldhash::HashMap<CompactString, DeviceStats>>>,
    untracked: Counter,
}

/// What a source knows of one device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceStats {
    /// When its last reading arrived, in seconds since the Unix epoch.
    pub last_seen: i64,
    /// Readings received from it.
    pub readings: u64,
}

impl Devices {
    /// Records `readings` readings of `device`, received at `now` (seconds since the epoch).
    pub fn record(&self, device: &str, readings: u64, now: i64) {
        self.record_runs([(device, readings)], now);
    }

    /// Records each `(device, readings)` of `runs`, received at `now`, under one lock.
    pub fn record_runs<'a>(&self, runs: impl IntoIterator<Item = (&'a str, u64)>, now: i64) {
        let mut table = self.table.lock_unpoisoned();
        for (device, readings) in runs {
            if let Some(d) = table.get_mut(device) {
                d.last_seen = now;
                d.readings += readings;
            } else if table.len() < MAX_DEVICES_PER_SOURCE {
                table.insert(
                    CompactString::from(device),
                    DeviceStats {
                        last_seen: now,
                        readings,
                    },
                );
            } else {
                self.untracked.add(readings);
            }
        }
    }

    /// Every device and its stats, sorted by device id.
    pub fn snapshot(&self) -> Vec<(String, DeviceStats)> {
        let table = self.table.lock_unpoisoned();
        let mut v: Vec<_> = table.iter().map(|(k, s)| (k.to_string(), *s)).collect();
        v.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

/// Now, in whole seconds since the Unix epoch (what `device_last_seen_seconds` holds).
pub use crate::time::now_seconds;

/// A metric's identity: its name and its labels, in order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    /// The metric's name, such as `readings_rejected_total`.
    pub name: &'static str,
    /// Label pairs, such as `[("source", "mqtt:site-a"), ("reason", "invalid_json")]`.
    pub labels: Vec<(&'static str, String)>,
}

impl Key {
    /// The label pairs, borrowed.
    fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.labels.iter().map(|(n, v)| (*n, v.as_str()))
    }
}

/// What `/health` reports: the gauges that components get through [`Metrics::sink_up`],
/// [`Metrics::source_connected`], [`Metrics::modbus_device_up`] and
/// [`Metrics::journal_bytes`], read by [`Metrics::health`] (their names are written only in
/// those five places).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthState {
    /// Per sink label: whether its writes succeed (or it has not failed yet).
    pub sinks: Vec<(String, bool)>,
    /// Per source label: whether it is connected (or its port is open).
    pub sources: Vec<(String, bool)>,
    /// Per polled (Modbus) source and device: whether the device answers.
    pub devices: Vec<(String, String, bool)>,
    /// The journal's size on disk.
    pub journal_bytes: i64,
}

/// The registry. Cheap to clone; every clone shares the same metrics.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    counters: Arc<Mutex<BTreeMap<Key, Counter>>>,
    gauges: Arc<Mutex<BTreeMap<Key, Gauge>>>,
    histograms: Arc<Mutex<BTreeMap<Key, Histogram>>>,
    /// Per source label.
    devices: Arc<Mutex<BTreeMap<String, Devices>>>,
}

impl Metrics {
    /// A new, empty registry.
    pub fn new() -> Metrics {
        Metrics::default()
    }

    /// The counter `name` with `labels`, created at zero on first use.
    pub fn counter(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Counter {
        let key = key(name, labels);
        let mut map = self.counters.lock_unpoisoned();
        map.entry(key).or_default().clone()
    }

    /// The gauge `name` with `labels`, created at zero on first use.
    pub fn gauge(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Gauge {
        let key = key(name, labels);
        let mut map = self.gauges.lock_unpoisoned();
        map.entry(key).or_default().clone()
    }

    /// `sink_up{sink}`: 1 while the sink's writes succeed, 0 once one failed.
    pub fn sink_up(&self, sink: &str) -> Gauge {
        self.gauge("sink_up", &[("sink", sink)])
    }

    /// `source_connected{source}`: 1 while connected (or the port is open), else 0.
    pub fn source_connected(&self, source: &str) -> Gauge {
        self.gauge("source_connected", &[("source", source)])
    }

    /// `modbus_device_up{source, device}`: 1 while the device answers, else 0.
    pub fn modbus_device_up(&self, source: &str, device: &str) -> Gauge {
        self.gauge(
            "modbus_device_up",
            &[("source", source), ("device", device)],
        )
    }

    /// `journal_bytes`: the journal's size on disk.
    pub fn journal_bytes(&self) -> Gauge {
        self.gauge("journal_bytes", &[])
    }

    /// The state of every sink, source and polled device, and the journal's size.
    pub fn health(&self) -> HealthState {
        let label = |k: &Key, name: &str| {
            k.labels
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let mut state = HealthState::default();
        // The names as literals, as in the accessors above (where the dashboards test reads
        // every metric's name from its `gauge("...")` call).
        for (k, v) in self.gauges() {
            match k.name {
                "sink_up" => state.sinks.push((label(&k, "sink"), v == 1)),
                "source_connected" => state.sources.push((label(&k, "source"), v == 1)),
                "modbus_device_up" => {
                    let (source, device) = (label(&k, "source"), label(&k, "device"));
                    state.devices.push((source, device, v == 1));
                }
                "journal_bytes" => state.journal_bytes = v,
                _ => {}
            }
        }
        state
    }

    /// The histogram `name` with `labels`, created empty on first use.
    pub fn histogram(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Histogram {
        let key = key(name, labels);
        let mut map = self.histograms.lock_unpoisoned();
        map.entry(key).or_default().clone()
    }

    /// The device liveness table of the source labelled `source`, created empty on first use.
    pub fn devices(&self, source: &str) -> Devices {
        let mut map = self.devices.lock_unpoisoned();
        map.entry(source.to_string())
            .or_insert_with(|| Devices {
                table: Arc::default(),
                untracked: self.counter("devices_untracked_total", &[("source", source)]),
            })
            .clone()
    }

    /// Every source's device table, sorted by source.
    pub fn device_tables(&self) -> Vec<(String, Devices)> {
        let map = self.devices.lock_unpoisoned();
        map.iter().map(|(k, d)| (k.clone(), d.clone())).collect()
    }

    /// Every counter and its value, sorted by name and labels.
    pub fn counters(&self) -> Vec<(Key, u64)> {
        let map = self.counters.lock_unpoisoned();
        map.iter().map(|(k, c)| (k.clone(), c.get())).collect()
    }

    /// Every gauge and its value, sorted by name and labels.
    pub fn gauges(&self) -> Vec<(Key, i64)> {
        let map = self.gauges.lock_unpoisoned();
        map.iter().map(|(k, g)| (k.clone(), g.get())).collect()
    }

    /// The sum of counter `name` over every label set that includes all of `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.counters()
            .into_iter()
            .filter(|(k, _)| {
                k.name == name
                    && labels
                        .iter()
                        .all(|(ln, lv)| k.labels.iter().any(|(n, v)| n == ln && v == lv))
            })
            .map(|(_, v)| v)
            .sum()
    }
}

impl Metrics {
    /// Every metric in Prometheus' text exposition format, each name prefixed with
    /// `telemetry_collector_`.
    pub fn render_prometheus(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let counters = self
            .counters()
            .into_iter()
            .map(|(k, v)| (k, "counter", v as i128));
        let gauges = self
            .gauges()
            .into_iter()
            .map(|(k, v)| (k, "gauge", i128::from(v)));
        let mut last_name = "";
        for (key, kind, value) in counters.chain(gauges) {
            if key.name != last_name {
                let _ = writeln!(out, "# TYPE telemetry_collector_{} {kind}", key.name);
                last_name = key.name;
            }
            sample(&mut out, key.name, "", key.pairs(), None, value);
        }
        let histograms = self.histograms.lock_unpoisoned().clone();
        let mut last_name = "";
        for (key, h) in histograms {
            if key.name != last_name {
                let _ = writeln!(out, "# TYPE telemetry_collector_{} histogram", key.name);
                last_name = key.name;
            }
            let (counts, sum) = h.snapshot();
            let bounds = DURATION_BUCKETS.iter().map(|b| b.to_string());
            for (le, count) in bounds.chain(["+Inf".to_string()]).zip(&counts) {
                let le = ("le", le.as_str());
                sample(&mut out, key.name, "_bucket", key.pairs(), Some(le), count);
            }
            sample(&mut out, key.name, "_sum", key.pairs(), None, sum);
            let total = counts.last().copied().unwrap_or(0);
            sample(&mut out, key.name, "_count", key.pairs(), None, total);
        }
        let tables = self.device_tables();
        let devices: Vec<_> = tables
            .iter()
            .flat_map(|(source, t)| t.snapshot().into_iter().map(move |d| (source, d)))
            .collect();
        if !devices.is_empty() {
            out.push_str("# TYPE telemetry_collector_device_last_seen_seconds gauge\n");
            for (source, (device, stats)) in &devices {
                let labels = [("source", source.as_str()), ("device", device.as_str())];
                let name = "device_last_seen_seconds";
                sample(&mut out, name, "", labels, None, stats.last_seen);
            }
            out.push_str("# TYPE telemetry_collector_device_readings_total counter\n");
            for (source, (device, stats)) in &devices {
                let labels = [("source", source.as_str()), ("device", device.as_str())];
                let name = "device_readings_total";
                sample(&mut out, name, "", labels, None, stats.readings);
            }
        }
        out
    }
}

/// One sample line: `telemetry_collector_<name><suffix>{labels[,extra]} value`. Written
/// straight into `out`: at 10,000 devices a scrape writes 20,000 lines.
fn sample<'a>(
    out: &mut String,
    name: &str,
    suffix: &str,
    labels: impl IntoIterator<Item = (&'a str, &'a str)>,
    extra: Option<(&'a str, &'a str)>,
    value: impl std::fmt::Display,
) {
    use std::fmt::Write as _;
    out.push_str("telemetry_collector_");
    out.push_str(name);
    out.push_str(suffix);
    let mut any = false;
    for (i, (name, value)) in labels.into_iter().chain(extra).enumerate() {
        out.push(if i == 0 { '{' } else { ',' });
        out.push_str(name);
        out.push_str("=\"");
        escape_label(out, value);
        out.push('"');
        any = true;
    }
    if any {
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// Appends a label value as Prometheus reads it: backslash, double quote and newline escaped.
fn escape_label(out: &mut String, v: &str) {
    let mut rest = v;
    while let Some(i) = rest.find(['\\', '"', '\n']) {
        out.push_str(&rest[..i]);
        out.push_str(match rest.as_bytes()[i] {
            b'\\' => "\\\\",
            b'"' => "\\\"",
            _ => "\\n",
        });
        rest = &rest[i + 1..];
    }
    out.push_str(rest);
}

fn key(name: &'static str, labels: &[(&'static str, &str)]) -> Key {
    Key {
        name,
        labels: labels.iter().map(|(k, v)| (*k, (*v).to_string())).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_shared_and_summed_by_label() {
        let m = Metrics::new();
        m.counter("rejected", &[("source", "a"), ("reason", "x")])
            .add(2);
        m.counter("rejected", &[("source", "a"), ("reason", "y")])
            .inc();
        m.counter("rejected", &[("source", "b"), ("reason", "x")])
            .inc();
        assert_eq!(m.sum("rejected", &[("source", "a")]), 3);
        assert_eq!(m.sum("rejected", &[("reason", "x")]), 3);
        assert_eq!(m.sum("rejected", &[]), 4);
    }

    #[test]
    fn prometheus_text_format() {
        let m = Metrics::new();
        m.counter(
            "readings_rejected_total",
            &[("source", "mqtt:a\"b\\c\nd"), ("reason", "x")],
        )
        .add(2);
        m.counter(
            "readings_rejected_total",
            &[("source", "mqtt:c"), ("reason", "y")],
        )
        .inc();
        m.gauge("journal_bytes", &[]).set(42);
        assert_eq!(
            m.render_prometheus(),
            "# TYPE telemetry_collector_readings_rejected_total counter\n\
             telemetry_collector_readings_rejected_total{source=\"mqtt:a\\\"b\\\\c\\nd\",reason=\"x\"} 2\n\
             telemetry_collector_readings_rejected_total{source=\"mqtt:c\",reason=\"y\"} 1\n\
             # TYPE telemetry_collector_journal_bytes gauge\n\
             telemetry_collector_journal_bytes 42\n"
        );
    }

    #[test]
    fn histograms_and_devices_in_text_format() {
        let m = Metrics::new();
        let h = m.histogram("sink_write_duration_seconds", &[("sink", "local")]);
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(20));
        h.observe(Duration::from_secs(60));
        let d = m.devices("mqtt:a");
        d.record("dev-1", 3, 1_700_000_000);
        d.record("dev-0", 1, 1_700_000_001);
        d.record("dev-1", 2, 1_700_000_002);
        let text = m.render_prometheus();
        let lines: Vec<&str> = text.lines().collect();
        let want = [
            "# TYPE telemetry_collector_sink_write_duration_seconds histogram",
            "telemetry_collector_sink_write_duration_seconds_bucket{sink=\"local\",le=\"0.001\"} 1",
            "telemetry_collector_sink_write_duration_seconds_bucket{sink=\"local\",le=\"0.01\"} 1",
            "telemetry_collector_sink_write_duration_seconds_bucket{sink=\"local\",le=\"0.025\"} 2",
            "telemetry_collector_sink_write_duration_seconds_bucket{sink=\"local\",le=\"30\"} 2",
            "telemetry_collector_sink_write_duration_seconds_bucket{sink=\"local\",le=\"+Inf\"} 3",
            "telemetry_collector_sink_write_duration_seconds_sum{sink=\"local\"} 60.0205",
            "telemetry_collector_sink_write_duration_seconds_count{sink=\"local\"} 3",
            "telemetry_collector_device_last_seen_seconds{source=\"mqtt:a\",device=\"dev-0\"} 1700000001",
            "telemetry_collector_device_last_seen_seconds{source=\"mqtt:a\",device=\"dev-1\"} 1700000002",
            "telemetry_collector_device_readings_total{source=\"mqtt:a\",device=\"dev-0\"} 1",
            "telemetry_collector_device_readings_total{source=\"mqtt:a\",device=\"dev-1\"} 5",
        ];
        for w in want {
            assert!(lines.contains(&w), "missing {w} in\n{text}");
        }
    }

    #[test]
    fn device_table_is_bounded() {
        let m = Metrics::new();
        let d = m.devices("s");
        for i in 0..MAX_DEVICES_PER_SOURCE + 10 {
            d.record(&format!("d{i}"), 2, 1);
        }
        d.record("d0", 1, 2);
        assert_eq!(d.snapshot().len(), MAX_DEVICES_PER_SOURCE);
        assert_eq!(m.sum("devices_untracked_total", &[("source", "s")]), 20);
    }
}
