//! Report by exception: a field's value is written only when it moved by more than its
//! deadband (or changed, or at its heartbeat), for any source.
//!
//! [`Exception`] is the decision for one field of one series, kept by whoever sees its values
//! in order: the Modbus source keeps one per field of each device; [`ReportFilter`] keeps one
//! per (series, field) that a `[[report_by_exception]]` rule covers, for every source, in
//! the pipeline's inlet. Time is the readings' own (their timestamps), so that a known
//! sequence of values gives a known sequence of writes.

use std::sync::Mutex;

use crate::config::{ReportRule, ReportSettings, Threshold};
use crate::metrics::{Counter, Metrics};
use crate::reading::{CompactString, FieldValue, Reading};
use crate::sync::MutexExt;

/// The most (series, field) pairs a [`ReportFilter`] remembers: values of series beyond are
/// written as they come (counted in `report_untracked_total`), so that a stream of made-up
/// series cannot grow memory.
pub const MAX_TRACKED: usize = 200_000;

/// The last value written of one field of one series.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Exception {
    last: Option<(FieldValue, i64)>,
}

impl Exception {
    /// Whether `value`, read at `timestamp` (ns), is to be written under `settings`; if so,
    /// it becomes the value the next ones are compared with.
    pub fn admit(&mut self, settings: &ReportSettings, value: &FieldValue, timestamp: i64) -> bool {
        let write = match &self.last {
            None => true,
            Some((last, at)) => {
                settings
                    .heartbeat_ns
                    .is_some_and(|hb| timestamp.saturating_sub(*at) >= hb)
                    || moved(settings.threshold, last, value)
            }
        };
        if write {
            self.last = Some((value.clone(), timestamp));
        }
        write
    }
}

/// Whether `value` is far enough from `last`. Values that are not numbers (or of another
/// kind than before) count as moved when they differ.
fn moved(threshold: Threshold, last: &FieldValue, value: &FieldValue) -> bool {
    let numbers = match (last, value) {
        (FieldValue::Boolean(_), _) | (FieldValue::String(_), _) => None,
        (a, b) if a.kind() == b.kind() => a.as_f64().zip(b.as_f64()),
        _ => None,
    };
    match (threshold, numbers) {
        (Threshold::Absolute(d), Some((a, b))) => (b - a).abs() > d,
        (Threshold::Relative(r), Some((a, b))) => (b - a).abs() > a.abs() * r,
        _ => last != value,
    }
}

/// The `[[report_by_exception]]` rules, applied to the readings of every source on their
/// way into the pipeline.
#[derive(Debug)]
pub struct ReportFilter {
    rules: Vec<ReportRule>,
    state: Mutex<foldhash::HashMap<Key, Exception>>,
    suppressed: Counter,
    untracked: Counter,
}

/// A series and one of its fields.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    measurement: CompactString,
    tags: Vec<(CompactString, CompactString)>,
    field: CompactString,
}

impl ReportFilter {
    /// A filter of `rules` (`None` without rules: nothing to do), counting in `metrics`.
    pub fn new(rules: &[ReportRule], metrics: &Metrics) -> Option<ReportFilter> {
        (!rules.is_empty()).then(|| ReportFilter {
            rules: rules.to_vec(),
            state: Mutex::default(),
            suppressed: metrics.counter("fields_suppressed_total", &[]),
            untracked: metrics.counter("report_untracked_total", &[]),
        })
    }

    /// The rule that covers `field` of `reading`: the first that matches.
    fn rule(&self, reading: &Reading, field: &str) -> Option<&ReportSettings> {
        self.rules
            .iter()
            .find(|r| {
                r.measurement
                    .as_deref()
                    .is_none_or(|m| m == reading.measurement)
                    && (r.fields.is_empty() || r.fields.iter().any(|f| f == field))
            })
            .map(|r| &r.report)
    }

    /// Removes from `readings` the fields that are not to be written, and the readings left
    /// without a field.
    pub fn apply(&self, readings: &mut Vec<Reading>) {
        let mut state = self.state.lock_unpoisoned();
        for reading in readings.iter_mut() {
            let mut fields = std::mem::take(&mut reading.fields);
            fields.retain(|(name, value)| {
                let Some(settings) = self.rule(reading, name) else {
                    return true;
                };
                let key = Key {
                    measurement: reading.measurement.clone(),
                    tags: reading.tags.clone(),
                    field: name.clone(),
                };
                let room = state.len() < MAX_TRACKED;
                let admit = match state.get_mut(&key) {
                    Some(e) => e.admit(settings, value, reading.timestamp),
                    None if room => {
                        state
                            .entry(key)
                            .or_default()
                            .admit(settings, value, reading.timestamp)
                    }
                    None => {
                        self.untracked.inc();
                        true
                    }
                };
                if !admit {
                    self.suppressed.inc();
                }
                admit
            });
            reading.fields = fields;
        }
        readings.retain(|r| !r.fields.is_empty());
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    fn settings(threshold: Threshold, heartbeat_s: Option<i64>) -> ReportSettings {
        ReportSettings {
            threshold,
            heartbeat_ns: heartbeat_s.map(|s| s * S),
        }
    }

    /// Which of `values` (one per second) are written.
    fn written(s: &ReportSettings, values: &[FieldValue]) -> Vec<usize> {
        let mut e = Exception::default();
        (0..values.len())
            .filter(|&i| e.admit(s, &values[i], i as i64 * S))
            .collect()
    }

    fn floats(v: &[f64]) -> Vec<FieldValue> {
        v.iter().map(|&x| FieldValue::Float(x)).collect()
    }

    #[test]
    fn absolute_deadband_compares_with_the_last_value_written() {
        let s = settings(Threshold::Absolute(0.5), None);
        // 10.0 written; 10.3, 10.5 within 0.5 of it; 10.6 beyond; then drift back by steps
        // of 0.3 that each stay within the band of 10.6 until 10.0.
        let v = floats(&[10.0, 10.3, 10.5, 10.6, 10.3, 10.1, 10.0, 9.0]);
        assert_eq!(written(&s, &v), vec![0, 3, 6, 7]);
    }

    #[test]
    fn percent_deadband_and_heartbeat() {
        let s = settings(Threshold::Relative(0.01), Some(3));
        // 1% of 200 is 2: 201.9 stays, 202.1 goes; the heartbeat writes an unchanged value
        // 3 s after the last write.
        let v = floats(&[
            200.0, 201.9, 198.1, 202.1, 202.1, 202.1, 202.1, 202.1, 202.0,
        ]);
        assert_eq!(written(&s, &v), vec![0, 3, 6]);
        let zero = floats(&[0.0, 0.0, 0.001]);
        assert_eq!(
            written(&settings(Threshold::Relative(0.5), None), &zero),
            vec![0, 2]
        );
    }

    #[test]
    fn on_change_for_every_kind() {
        let s = settings(Threshold::Change, Some(10));
        let v = vec![
            FieldValue::Boolean(false),
            FieldValue::Boolean(false),
            FieldValue::Boolean(true),
            FieldValue::Integer(1),
            FieldValue::Integer(1),
            FieldValue::String("a".into()),
            FieldValue::String("a".into()),
            FieldValue::String("b".into()),
        ];
        assert_eq!(written(&s, &v), vec![0, 2, 3, 5, 7]);
        // A deadband on a bool: any change.
        let s = settings(Threshold::Absolute(5.0), None);
        let b = [false, true, true].map(FieldValue::Boolean);
        assert_eq!(written(&s, &b), vec![0, 1]);
    }

    #[test]
    fn the_filter_keeps_each_series_apart_and_drops_empty_readings() {
        let rules = [ReportRule {
            measurement: Some("env".into()),
            fields: vec!["t".into()],
            report: settings(Threshold::Absolute(1.0), None),
        }];
        let m = Metrics::new();
        let f = ReportFilter::new(&rules, &m).unwrap();
        let reading = |device: &str, ts: i64, t: f64, h: Option<f64>| {
            let mut r = Reading::new("env", ts * S);
            r.set_tag("device", device);
            r.fields.push(("t".into(), FieldValue::Float(t)));
            if let Some(h) = h {
                r.fields.push(("h".into(), FieldValue::Float(h)));
            }
            r
        };
        let mut batch = vec![
            reading("a", 0, 20.0, None),
            reading("b", 0, 30.0, None),
            reading("a", 1, 20.5, Some(40.0)),
            reading("b", 1, 31.5, None),
            reading("a", 2, 20.9, None),
        ];
        f.apply(&mut batch);
        let got: Vec<(String, i64, Vec<String>)> = batch
            .iter()
            .map(|r| {
                (
                    r.device().unwrap().to_string(),
                    r.timestamp / S,
                    r.fields.iter().map(|(n, _)| n.to_string()).collect(),
                )
            })
            .collect();
        let want = |d: &str, t: i64, f: &[&str]| {
            (
                d.to_string(),
                t,
                f.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            )
        };
        assert_eq!(
            got,
            vec![
                want("a", 0, &["t"]),
                want("b", 0, &["t"]),
                want("a", 1, &["h"]),
                want("b", 1, &["t"]),
            ]
        );
        assert_eq!(m.sum("fields_suppressed_total", &[]), 2);
    }
}
