//! Counters for everything that can be received, written, rejected or dropped.
//!
//! A small registry of labelled atomic counters and gauges. Hot paths look a counter up once
//! and keep the [`Counter`] handle; a snapshot is what tests, `/metrics` and logs read.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

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

    /// The current value.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
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
            let _ = write!(out, "telemetry_collector_{}", key.name);
            if !key.labels.is_empty() {
                out.push('{');
                for (i, (name, value)) in key.labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{name}=\"{}\"", escape_label(value));
                }
                out.push('}');
            }
            let _ = writeln!(out, " {value}");
        }
        out
    }
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
        assert_eq!(
            m.render_prometheus(),
            "# TYPE telemetry_collector_readings_rejected_total counter\n\
             telemetry_collector_readings_rejected_total{source=\"mqtt:a\\\"b\",reason=\"x\"} 2\n\
             telemetry_collector_readings_rejected_total{source=\"mqtt:c\",reason=\"y\"} 1\n\
             # TYPE telemetry_collector_journal_bytes gauge\n\
             telemetry_collector_journal_bytes 42\n"
        );
    }
}
