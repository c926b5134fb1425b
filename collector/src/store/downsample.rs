//! Downsampling: the minimum, maximum and mean of each series per time step, computed while
//! the points stream out of the chunks (a day of 1 Hz data is never held in memory).

use std::ops::ControlFlow;

use super::{matching_series, visit_points, LocalStore, Query, StoreError};
use crate::reading::FieldValue;

/// The numeric points of one series within one step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    /// The step's start, a multiple of the step (nanoseconds since the Unix epoch).
    pub start_ns: i64,
    /// How many values it aggregates.
    pub count: u64,
    /// The smallest.
    pub min: f64,
    /// The largest.
    pub max: f64,
    /// Their sum, added in time order.
    pub sum: f64,
}

impl Bucket {
    /// The mean: the sum (added in time order) divided by the count.
    pub fn mean(&self) -> f64 {
        self.sum / self.count as f64
    }
}

/// One series, downsampled.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesBuckets {
    /// The measurement.
    pub measurement: String,
    /// The tags, sorted by key.
    pub tags: Vec<(String, String)>,
    /// The field's name.
    pub field: String,
    /// The steps that hold at least one value, in time order.
    pub buckets: Vec<Bucket>,
}

impl LocalStore {
    /// How many series match `q`'s measurement, tags, field and device (its time range and
    /// limit are not looked at).
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] when reading fails, [`StoreError::Corrupt`] for tags this build
    /// cannot decode.
    pub fn series_count(&self, q: &Query) -> Result<usize, StoreError> {
        Ok(matching_series(&self.conn, q)?.len())
    }

    /// Every series that matches `q` and holds values in its time range, downsampled to
    /// `step_ns` (at least 1): per step, the count, minimum, maximum and sum of its numeric
    /// values. Steps are aligned on multiples of `step_ns` since the Unix epoch, so the
    /// first and last ones may stick out of the range (only values within it count).
    /// Integers and unsigned integers count as floats, booleans as 0 and 1; strings, NaN
    /// and infinities are left out. Ordered as [`LocalStore::query`]; at most `q.limit`
    /// series.
    ///
    /// # Errors
    /// As [`LocalStore::query`].
    pub fn downsample(&self, q: &Query, step_ns: i64) -> Result<Vec<SeriesBuckets>, StoreError> {
        let step = step_ns.max(1);
        let mut out = Vec::new();
        let Some(mut snap) = self.snapshot(q)? else {
            return Ok(out);
        };
        for s in std::mem::take(&mut snap.series) {
            if q.limit.is_some_and(|limit| out.len() >= limit) {
                break;
            }
            let mut acc = Accumulator::new(step);
            let newer = snap.recent.remove(&s.id).unwrap_or_default();
            visit_points(&snap.tx, s.id, snap.lo, snap.hi, newer, |ts, value| {
                acc.add(ts, &value);
                ControlFlow::Continue(())
            })?;
            let buckets = acc.finish();
            if !buckets.is_empty() {
                out.push(SeriesBuckets {
                    measurement: s.measurement,
                    tags: s.tags,
                    field: s.field,
                    buckets,
                });
            }
        }
        Ok(out)
    }
}

/// Builds the buckets of one series from its values in time order.
struct Accumulator {
    step: i64,
    buckets: Vec<Bucket>,
}

impl Accumulator {
    fn new(step: i64) -> Accumulator {
        Accumulator {
            step,
            buckets: Vec::new(),
        }
    }

    fn add(&mut self, ts: i64, value: &FieldValue) {
        let Some(v) = value.as_f64().filter(|v| v.is_finite()) else {
            return;
        };
        // Saturating: a timestamp within one step of i64::MIN goes to the first bucket.
        let start = ts.saturating_sub(ts.rem_euclid(self.step));
        match self.buckets.last_mut() {
            Some(b) if b.start_ns == start => {
                b.count += 1;
                b.min = b.min.min(v);
                b.max = b.max.max(v);
                b.sum += v;
            }
            _ => self.buckets.push(Bucket {
                start_ns: start,
                count: 1,
                min: v,
                max: v,
                sum: v,
            }),
        }
    }

    fn finish(self) -> Vec<Bucket> {
        self.buckets
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    use crate::reading::{Reading, DEVICE_TAG};

    const T0: i64 = 1_700_000_000_000_000_000;
    const SEC: i64 = 1_000_000_000;

    fn reading(device: &str, ts: i64, v: FieldValue) -> Reading {
        let mut r = Reading::new("env", ts);
        r.set_tag(DEVICE_TAG, device);
        r.fields = vec![("t".into(), v)];
        r
    }

    /// The buckets computed the obvious way from what `query` returns.
    fn naive(store: &LocalStore, q: &Query, step: i64) -> Vec<SeriesBuckets> {
        let mut out: Vec<SeriesBuckets> = Vec::new();
        for p in store.query(q).unwrap() {
            let Some(v) = p.value.as_f64().filter(|v| v.is_finite()) else {
                continue;
            };
            let same = out.last().is_some_and(|s| {
                (&s.measurement, &s.tags, &s.field) == (&p.measurement, &p.tags, &p.field)
            });
            if !same {
                out.push(SeriesBuckets {
                    measurement: p.measurement.clone(),
                    tags: p.tags.clone(),
                    field: p.field.clone(),
                    buckets: Vec::new(),
                });
            }
            let start = p.timestamp.div_euclid(step) * step;
            let buckets = &mut out.last_mut().unwrap().buckets;
            match buckets.last_mut() {
                Some(b) if b.start_ns == start => {
                    b.count += 1;
                    b.min = b.min.min(v);
                    b.max = b.max.max(v);
                    b.sum += v;
                }
                _ => buckets.push(Bucket {
                    start_ns: start,
                    count: 1,
                    min: v,
                    max: v,
                    sum: v,
                }),
            }
        }
        out
    }

    #[test]
    fn buckets_equal_a_computation_over_the_raw_points_across_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LocalStore::open(&dir.path().join("store.db")).unwrap();
        // Two devices, 100 s of values every 700 ms, with a few that do not count.
        let mut batch = Vec::new();
        for i in 0..143 {
            let ts = T0 + i * 700_000_000;
            let v = match i % 25 {
                3 => FieldValue::String("n/a".into()),
                7 => FieldValue::Float(f64::NAN),
                11 => FieldValue::Integer(-4),
                13 => FieldValue::Boolean(true),
                _ => FieldValue::Float((i as f64 * 0.37).sin() * 10.0),
            };
            batch.push(reading("a", ts, v.clone()));
            batch.push(reading("b", ts + 1, v));
        }
        store.insert(&batch[..150]).unwrap();
        store.compact().unwrap();
        store.insert(&batch[150..]).unwrap();
        // A point of `recent` replaces the compacted one.
        store
            .insert(&[reading("a", T0 + 7_000_000_000, FieldValue::Float(99.0))])
            .unwrap();

        for (from, to, step) in [
            (T0, T0 + 100 * SEC, 10 * SEC),
            (T0 + 3 * SEC, T0 + 57 * SEC, 7 * SEC),
            (T0 - 5 * SEC, T0 + 200 * SEC, SEC),
            (T0 + 50 * SEC, T0 + 51 * SEC, 60 * SEC),
        ] {
            let q = Query {
                from_ns: Some(from),
                to_ns: Some(to),
                ..Query::default()
            };
            let got = store.downsample(&q, step).unwrap();
            assert_eq!(got, naive(&store, &q, step), "{from} {to} {step}");
            assert_eq!(got.len(), 2);
        }
        let q = Query {
            device: Some("a".into()),
            from_ns: Some(T0),
            to_ns: Some(T0 + 10 * SEC),
            ..Query::default()
        };
        let got = store.downsample(&q, 10 * SEC).unwrap();
        assert_eq!(got.len(), 1);
        let b = got[0].buckets[0];
        assert_eq!(b.start_ns, T0);
        assert_eq!(b.max, 99.0);
        // 15 points in [T0, T0 + 10 s): the string (i = 3) and NaN (i = 7) do not count.
        assert_eq!(b.count, 13);
        assert_eq!(store.series_count(&q).unwrap(), 1);
        assert_eq!(store.series_count(&Query::default()).unwrap(), 2);
    }

    #[test]
    fn limits_empty_ranges_and_extreme_times() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LocalStore::open(&dir.path().join("store.db")).unwrap();
        store
            .insert(&[
                reading("a", i64::MIN + 1, FieldValue::Float(1.0)),
                reading("a", i64::MAX, FieldValue::Float(2.0)),
                reading("b", 0, FieldValue::Float(3.0)),
            ])
            .unwrap();
        let all = store.downsample(&Query::default(), 10).unwrap();
        let starts: Vec<i64> = all[0].buckets.iter().map(|b| b.start_ns).collect();
        assert_eq!(starts, vec![i64::MIN, i64::MAX - 7]);
        let all = store.downsample(&Query::default(), i64::MAX).unwrap();
        let starts: Vec<i64> = all[0].buckets.iter().map(|b| b.start_ns).collect();
        assert_eq!(starts, vec![i64::MIN + 1, i64::MAX]);
        let one = Query {
            limit: Some(1),
            ..Query::default()
        };
        assert_eq!(store.downsample(&one, SEC).unwrap().len(), 1);
        let empty = Query {
            from_ns: Some(5),
            to_ns: Some(5),
            ..Query::default()
        };
        assert!(store.downsample(&empty, SEC).unwrap().is_empty());
        let nothing = Query {
            from_ns: Some(1),
            to_ns: Some(SEC),
            ..Query::default()
        };
        assert!(store.downsample(&nothing, SEC).unwrap().is_empty());
        // A step below 1 ns is 1 ns.
        assert_eq!(store.downsample(&Query::default(), 0).unwrap().len(), 2);
    }
}
