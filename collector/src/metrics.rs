//! Counters for everything that can be received, written, rejected or dropped.
//!
//! A small registry of labelled atomic counters, gauges and histograms. Hot paths look a
//! metric up once and keep the handle; a snapshot is what tests, `/metrics` and logs read.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// The upper bounds (seconds) of every [`Histogram`]'s buckets: write latencies from a
/// millisecond (a local SQLite commit) to half a minute (a remote store timing out).
pub const HISTOGRAM_BOUNDS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

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

/// A distribution of durations: counts per bucket of [`HISTOGRAM_BOUNDS`], their number and
/// their sum (Prometheus' histogram).
#[derive(Debug, Clone, Default)]
pub struct Histogram(Arc<HistogramCells>);

#[derive(Debug, Default)]
struct HistogramCells {
    /// Per bound, the observations in (previous bound, bound]; the last cell is above all.
    buckets: [AtomicU64; HISTOGRAM_BOUNDS.len() + 1],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Histogram {
    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = HISTOGRAM_BOUNDS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(HISTOGRAM_BOUNDS.len());
        let cells = &self.0;
        cells.buckets[i].fetch_add(1, Ordering::Relaxed);
        cells.count.fetch_add(1, Ordering::Relaxed);
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        cells.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Cumulative counts per bound of [`HISTOGRAM_BOUNDS`] (then `+Inf`), the count and the
    /// sum in seconds.
    pub fn snapshot(&self) -> (Vec<u64>, u64, f64) {
        let cells = &self.0;
        let mut total = 0;
        let cumulative = cells
            .buckets
            .iter()
            .map(|b| {
                total += b.load(Ordering::Relaxed);
                total
            })
            .collect();
        let sum = cells.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        (cumulative, cells.count.load(Ordering::Relaxed), sum)
    }
}

/// A metric's identity: its name and its labels, in order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    /// The metric's name, such as `readings_rejected_total`.
    pub name: &'static str,
    /// Label pairs, such as `[("source", "mqtt:site-a"), ("reason", "invalid_json")]`.
    pub labels: Vec<(&'static str, String)>,
}

/// The registry. Cheap to clone; every clone shares the same metrics.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    counters: Arc<Mutex<BTreeMap<Key, Counter>>>,
    gauges: Arc<Mutex<BTreeMap<Key, Gauge>>>,
    histograms: Arc<Mutex<BTreeMap<Key, Histogram>>>,
}

impl Metrics {
    /// A new, empty registry.
    pub fn new() -> Metrics {
        Metrics::default()
    }

    /// The counter `name` with `labels`, created at zero on first use.
    pub fn counter(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Counter {
        let key = key(name, labels);
        let mut map = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        map.entry(key).or_default().clone()
    }

    /// The gauge `name` with `labels`, created at zero on first use.
    pub fn gauge(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Gauge {
        let key = key(name, labels);
        let mut map = self.gauges.lock().unwrap_or_else(PoisonError::into_inner);
        map.entry(key).or_default().clone()
    }

    /// The histogram `name` with `labels`, created empty on first use.
    pub fn histogram(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Histogram {
        let key = key(name, labels);
        let mut map = self
            .histograms
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        map.entry(key).or_default().clone()
    }

    /// Every histogram, sorted by name and labels.
    pub fn histograms(&self) -> Vec<(Key, Histogram)> {
        let map = self
            .histograms
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        map.iter().map(|(k, h)| (k.clone(), h.clone())).collect()
    }

    /// Every counter and its value, sorted by name and labels.
    pub fn counters(&self) -> Vec<(Key, u64)> {
        let map = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        map.iter().map(|(k, c)| (k.clone(), c.get())).collect()
    }

    /// Every gauge and its value, sorted by name and labels.
    pub fn gauges(&self) -> Vec<(Key, i64)> {
        let map = self.gauges.lock().unwrap_or_else(PoisonError::into_inner);
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
            sample(&mut out, key.name, "", &key.labels, None, &value);
        }
        for (key, histogram) in self.histograms() {
            if key.name != last_name {
                let _ = writeln!(out, "# TYPE telemetry_collector_{} histogram", key.name);
                last_name = key.name;
            }
            let (cumulative, count, sum) = histogram.snapshot();
            for (i, n) in cumulative.iter().enumerate() {
                let le = HISTOGRAM_BOUNDS
                    .get(i)
                    .map_or_else(|| "+Inf".to_owned(), f64::to_string);
                sample(&mut out, key.name, "_bucket", &key.labels, Some(&le), n);
            }
            sample(&mut out, key.name, "_sum", &key.labels, None, &sum);
            sample(&mut out, key.name, "_count", &key.labels, None, &count);
        }
        out
    }
}

/// One line of the text format: `telemetry_collector_<name><suffix>{labels,le="..."} value`.
fn sample(
    out: &mut String,
    name: &str,
    suffix: &str,
    labels: &[(&'static str, String)],
    le: Option<&str>,
    value: &dyn std::fmt::Display,
) {
    use std::fmt::Write as _;
    let _ = write!(out, "telemetry_collector_{name}{suffix}");
    let le = le.map(|le| ("le", le));
    let mut pairs = labels
        .iter()
        .map(|(n, v)| (*n, v.as_str()))
        .chain(le)
        .peekable();
    if pairs.peek().is_some() {
        out.push('{');
        for (i, (name, value)) in pairs.enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{name}=\"{}\"", escape_label(value));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// A label value as Prometheus reads it: backslash, double quote and newline escaped.
fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
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
            &[("source", "mqtt:a\"b"), ("reason", "x")],
        )
        .add(2);
        m.counter(
            "readings_rejected_total",
            &[("source", "mqtt:c"), ("reason", "y")],
        )
        .inc();
        m.gauge("journal_bytes", &[]).set(42);
        let h = m.histogram("sink_write_duration_seconds", &[("sink", "local")]);
        h.observe(Duration::from_micros(800));
        h.observe(Duration::from_millis(20));
        h.observe(Duration::from_secs(60));
        let text = m.render_prometheus();
        assert!(text.starts_with(
            "# TYPE telemetry_collector_readings_rejected_total counter\n\
             telemetry_collector_readings_rejected_total{source=\"mqtt:a\\\"b\",reason=\"x\"} 2\n\
             telemetry_collector_readings_rejected_total{source=\"mqtt:c\",reason=\"y\"} 1\n\
             # TYPE telemetry_collector_journal_bytes gauge\n\
             telemetry_collector_journal_bytes 42\n\
             # TYPE telemetry_collector_sink_write_duration_seconds histogram\n\
             telemetry_collector_sink_write_duration_seconds_bucket{sink=\"local\",le=\"0.001\"} 1\n\
             telemetry_collector_sink_write_duration_seconds_bucket{sink=\"local\",le=\"0.0025\"} 1\n"
        ), "{text}");
        assert!(text.ends_with(
            "telemetry_collector_sink_write_duration_seconds_bucket{sink=\"local\",le=\"0.025\"} 2\n\
             telemetry_collector_sink_write_duration_seconds_bucket{sink=\"local\",le=\"0.05\"} 2\n\
             telemetry_collector_sink_write_duration_seconds_bucket{sink=\"local\",le=\"0.1\"} 2\n\
             telemetry_collector_sink_write_duration_seconds_bucket{sink=\"local\",le=\"0.25\"} 2\n\
             telemetry_collector_sink_write_duration_seconds_bucket{sink=\"local\",le=\"0.5\"} 2\n\
             telemetry_collector_sink_write_duration_seconds_bucket{sink=\"local\",le=\"1\"} 2\n\
             telemetry_collector_sink_write_duration_seconds_bucket{sink=\"local\",le=\"2.5\"} 2\n\
             telemetry_collector_sink_write_duration_seconds_bucket{sink=\"local\",le=\"5\"} 2\n\
             telemetry_collector_sink_write_duration_seconds_bucket{sink=\"local\",le=\"10\"} 2\n\
             telemetry_collector_sink_write_duration_seconds_bucket{sink=\"local\",le=\"30\"} 2\n\
             telemetry_collector_sink_write_duration_seconds_bucket{sink=\"local\",le=\"+Inf\"} 3\n\
             telemetry_collector_sink_write_duration_seconds_sum{sink=\"local\"} 60.0208\n\
             telemetry_collector_sink_write_duration_seconds_count{sink=\"local\"} 3\n"
        ), "{text}");
    }
}
