//! The store's tests; its crash tests are in `crash_tests.rs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection};

use super::codec::{is_full, ChunkReader, Codec, CHUNK_POINTS};
use super::compact::*;
use super::retention::*;
use super::schema::*;
use super::write::*;
use crate::reading::{CompactString, FieldValue, Reading, DEVICE_TAG};

use super::*;

use tempfile::TempDir;

const T0: i64 = 1_700_000_000_000_000_000;
const SEC: i64 = 1_000_000_000;

fn temp_store() -> (TempDir, LocalStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(&dir.path().join("store.db")).unwrap();
    (dir, store)
}

fn reading(measurement: &str, device: &str, ts: i64, fields: &[(&str, FieldValue)]) -> Reading {
    let mut r = Reading::new(measurement, ts);
    r.set_tag(DEVICE_TAG, device);
    r.fields = fields
        .iter()
        .map(|(n, v)| ((*n).into(), v.clone()))
        .collect();
    r
}

fn point(r: &Reading, field: &str) -> Point {
    Point {
        measurement: r.measurement.to_string(),
        tags: r
            .tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        field: field.to_owned(),
        timestamp: r.timestamp,
        value: r.field(field).unwrap().clone(),
    }
}

fn all(store: &LocalStore) -> Vec<Point> {
    store.query(&Query::default()).unwrap()
}

/// Equality that tells -0.0 from 0.0 and NaN from NaN.
fn same_value(a: &FieldValue, b: &FieldValue) -> bool {
    match (a, b) {
        (FieldValue::Float(a), FieldValue::Float(b)) => {
            a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
        }
        _ => a == b,
    }
}

fn assert_same_points(got: &[Point], want: &[Point]) {
    assert_eq!(got.len(), want.len(), "got {got:#?}\nwant {want:#?}");
    for (g, w) in got.iter().zip(want) {
        assert!(
            g.measurement == w.measurement
                && g.tags == w.tags
                && g.field == w.field
                && g.timestamp == w.timestamp
                && same_value(&g.value, &w.value),
            "got {g:?}\nwant {w:?}"
        );
    }
}

fn count(store: &LocalStore) -> usize {
    all(store).len()
}

#[test]
fn every_type_reads_back_exactly() {
    let (_dir, mut store) = temp_store();
    let values = [
        FieldValue::Float(21.5),
        FieldValue::Float(-0.0),
        FieldValue::Float(f64::MIN_POSITIVE),
        FieldValue::Float(f64::MAX),
        FieldValue::Float(f64::INFINITY),
        FieldValue::Float(f64::NEG_INFINITY),
        FieldValue::Float(f64::NAN),
        FieldValue::Integer(i64::MIN),
        FieldValue::Integer(i64::MAX),
        FieldValue::Integer(0),
        FieldValue::Unsigned(u64::MAX),
        FieldValue::Unsigned(1 << 63),
        FieldValue::Unsigned(0),
        FieldValue::Boolean(true),
        FieldValue::Boolean(false),
        FieldValue::String(
            "say \"hi\", then\nbye\r\n\t\u{1b}[0m ✓ '; DROP TABLE points; --".into(),
        ),
        FieldValue::String("".into()),
        FieldValue::String("123".into()),
    ];
    let fields: Vec<(CompactString, FieldValue)> = values
        .iter()
        .enumerate()
        .map(|(i, v)| (format!("f{i:02}").into(), v.clone()))
        .collect();
    let mut r = Reading::new("all \"types\", m=1", i64::MIN);
    r.set_tag(DEVICE_TAG, "dev,1=\"x\"\n");
    r.set_tag("a.b", "ü \\ '");
    r.set_tag("\"quoted\" key", "");
    r.fields = fields;
    let mut late = r.clone();
    late.timestamp = i64::MAX;
    store.insert(&[r.clone(), late.clone()]).unwrap();

    let mut want = Vec::new();
    for (name, _) in &r.fields {
        want.push(point(&r, name));
        want.push(point(&late, name));
    }
    assert_same_points(&all(&store), &want);

    // And through a fresh read-only connection, from the file.
    let path = store.path().to_path_buf();
    drop(store);
    let reader = LocalStore::open_read_only(&path).unwrap();
    assert_same_points(&all(&reader), &want);
    let nan = reader
        .query(&Query {
            field: Some("f06".into()),
            ..Query::default()
        })
        .unwrap();
    assert!(matches!(nan[0].value, FieldValue::Float(v) if v.is_nan()));
}

#[test]
fn writing_the_same_points_again_overwrites_them() {
    let (_dir, mut store) = temp_store();
    let batch: Vec<Reading> = (0..100)
        .map(|i| {
            reading(
                "env",
                &format!("dev-{}", i % 3),
                T0 + i * SEC,
                &[
                    ("t", FieldValue::Float(i as f64)),
                    ("n", FieldValue::Integer(i)),
                ],
            )
        })
        .collect();
    store.insert(&batch).unwrap();
    let first = all(&store);
    let summary = store.summary().unwrap();
    assert_eq!(first.len(), 200);
    store.insert(&batch).unwrap();
    store.insert(&batch[10..20]).unwrap();
    assert_eq!(all(&store), first);
    assert_eq!(store.summary().unwrap(), summary);

    // Through a new connection (cold cache) too.
    let path = store.path().to_path_buf();
    drop(store);
    let mut store = LocalStore::open(&path).unwrap();
    store.insert(&batch).unwrap();
    assert_eq!(all(&store), first);

    // A new value for an existing point replaces the old one.
    let changed = reading("env", "dev-0", T0, &[("t", FieldValue::Float(-1.0))]);
    store.insert(&[changed]).unwrap();
    let q = Query {
        field: Some("t".into()),
        device: Some("dev-0".into()),
        to_ns: Some(T0 + 1),
        ..Query::default()
    };
    let got = store.query(&q).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].value, FieldValue::Float(-1.0));
    assert_eq!(count(&store), 200);
}

#[test]
fn a_field_that_changes_type_stays_one_series_and_each_point_keeps_its_type() {
    let (_dir, mut store) = temp_store();
    let r1 = reading("env", "d", T0, &[("t", FieldValue::Integer(21))]);
    let r2 = reading("env", "d", T0 + SEC, &[("t", FieldValue::Float(21.5))]);
    store.insert(&[r1.clone(), r2.clone()]).unwrap();
    assert_eq!(all(&store), vec![point(&r1, "t"), point(&r2, "t")]);
    // Redelivering the first point with another type overwrites it: same identity.
    let r1b = reading("env", "d", T0, &[("t", FieldValue::String("n/a".into()))]);
    store.insert(std::slice::from_ref(&r1b)).unwrap();
    assert_eq!(all(&store), vec![point(&r1b, "t"), point(&r2, "t")]);
    let summary = store.summary().unwrap();
    assert_eq!(summary.len(), 1);
    assert_eq!((summary[0].series, summary[0].points), (1, 2));
    assert_eq!(
        store.latest(&Query::default()).unwrap(),
        vec![point(&r2, "t")]
    );
}

/// Two measurements, three devices on two sites, points at T0 + 0..4 s.
fn dataset() -> Vec<Reading> {
    let mut out = Vec::new();
    for s in 0..4 {
        for (device, site) in [("dev-1", "a"), ("dev-2", "a"), ("dev-3", "b")] {
            let mut r = reading(
                "env",
                device,
                T0 + s * SEC,
                &[
                    ("temperature", FieldValue::Float(20.0 + s as f64)),
                    ("humidity", FieldValue::Integer(40 + s)),
                ],
            );
            r.set_tag("site", site);
            out.push(r);
            let mut p = reading(
                "power",
                device,
                T0 + s * SEC,
                &[("watts", FieldValue::Unsigned(100 + s as u64))],
            );
            p.set_tag("site", site);
            out.push(p);
        }
    }
    out
}

/// What `q` must return: the dataset's points matching `keep`, in query order.
fn expected(data: &[Reading], keep: impl Fn(&Point) -> bool) -> Vec<Point> {
    let mut out: Vec<Point> = data
        .iter()
        .flat_map(|r| r.fields.iter().map(|(f, _)| point(r, f)))
        .filter(|p| keep(p))
        .collect();
    out.sort_by(|a, b| {
        (&a.measurement, &a.tags, &a.field, a.timestamp).cmp(&(
            &b.measurement,
            &b.tags,
            &b.field,
            b.timestamp,
        ))
    });
    out
}

fn has_tag(p: &Point, k: &str, v: &str) -> bool {
    p.tags.iter().any(|(tk, tv)| tk == k && tv == v)
}

#[test]
fn queries_filter_and_order() {
    let (_dir, mut store) = temp_store();
    let mut data = dataset();
    // Insert in a scrambled order: the result order must not depend on it.
    data.reverse();
    data.swap(0, 7);
    store.insert(&data).unwrap();
    let data = data;

    assert_eq!(all(&store), expected(&data, |_| true));
    assert_eq!(all(&store).len(), 36);

    type Case = (Query, Box<dyn Fn(&Point) -> bool>);
    let cases: Vec<Case> = vec![
        (
            Query {
                measurement: Some("power".into()),
                ..Query::default()
            },
            Box::new(|p| p.measurement == "power"),
        ),
        (
            Query {
                field: Some("humidity".into()),
                ..Query::default()
            },
            Box::new(|p| p.field == "humidity"),
        ),
        (
            Query {
                device: Some("dev-2".into()),
                ..Query::default()
            },
            Box::new(|p| has_tag(p, DEVICE_TAG, "dev-2")),
        ),
        (
            Query {
                tags: vec![("site".into(), "a".into())],
                ..Query::default()
            },
            Box::new(|p| has_tag(p, "site", "a")),
        ),
        (
            Query {
                tags: vec![
                    ("site".into(), "a".into()),
                    (DEVICE_TAG.into(), "dev-1".into()),
                ],
                ..Query::default()
            },
            Box::new(|p| has_tag(p, "site", "a") && has_tag(p, DEVICE_TAG, "dev-1")),
        ),
        (
            Query {
                tags: vec![
                    ("site".into(), "a".into()),
                    (DEVICE_TAG.into(), "dev-3".into()),
                ],
                ..Query::default()
            },
            Box::new(|_| false),
        ),
        (
            Query {
                tags: vec![("nosuch".into(), "a".into())],
                ..Query::default()
            },
            Box::new(|_| false),
        ),
        (
            Query {
                measurement: Some("nosuch".into()),
                ..Query::default()
            },
            Box::new(|_| false),
        ),
        (
            // Half-open: from is included, to is not.
            Query {
                from_ns: Some(T0 + SEC),
                to_ns: Some(T0 + 3 * SEC),
                ..Query::default()
            },
            Box::new(|p| p.timestamp == T0 + SEC || p.timestamp == T0 + 2 * SEC),
        ),
        (
            Query {
                from_ns: Some(T0 + 3 * SEC),
                ..Query::default()
            },
            Box::new(|p| p.timestamp == T0 + 3 * SEC),
        ),
        (
            Query {
                to_ns: Some(T0 + 1),
                ..Query::default()
            },
            Box::new(|p| p.timestamp == T0),
        ),
        (
            Query {
                from_ns: Some(T0 + SEC),
                to_ns: Some(T0 + SEC),
                ..Query::default()
            },
            Box::new(|_| false),
        ),
        (
            Query {
                to_ns: Some(i64::MIN),
                ..Query::default()
            },
            Box::new(|_| false),
        ),
        (
            Query {
                measurement: Some("env".into()),
                field: Some("temperature".into()),
                device: Some("dev-3".into()),
                tags: vec![("site".into(), "b".into())],
                from_ns: Some(T0 + 2 * SEC),
                to_ns: None,
                limit: None,
            },
            Box::new(|p| {
                p.measurement == "env"
                    && p.field == "temperature"
                    && has_tag(p, DEVICE_TAG, "dev-3")
                    && p.timestamp >= T0 + 2 * SEC
            }),
        ),
    ];
    for (q, keep) in &cases {
        assert_eq!(store.query(q).unwrap(), expected(&data, keep), "{q:?}");
    }

    // Limit: the first N in query order, across series.
    let everything = expected(&data, |_| true);
    for limit in [0, 1, 3, 4, 5, 36, 100] {
        let q = Query {
            limit: Some(limit),
            ..Query::default()
        };
        let want: Vec<Point> = everything.iter().take(limit).cloned().collect();
        assert_eq!(store.query(&q).unwrap(), want, "limit {limit}");
    }
}

#[test]
fn latest_is_the_last_point_of_each_matching_series() {
    let (_dir, mut store) = temp_store();
    let data = dataset();
    store.insert(&data).unwrap();
    let last_of_each = |keep: &dyn Fn(&Point) -> bool, before: i64| -> Vec<Point> {
        let mut out: Vec<Point> = Vec::new();
        for p in expected(&data, |p| keep(p) && p.timestamp < before) {
            match out.last_mut() {
                Some(l)
                    if (&l.measurement, &l.tags, &l.field)
                        == (&p.measurement, &p.tags, &p.field) =>
                {
                    *l = p
                }
                _ => out.push(p),
            }
        }
        out
    };
    let q = Query {
        measurement: Some("env".into()),
        field: Some("temperature".into()),
        ..Query::default()
    };
    let got = store.latest(&q).unwrap();
    assert_eq!(got.len(), 3);
    assert!(got
        .iter()
        .all(|p| p.timestamp == T0 + 3 * SEC && p.value == FieldValue::Float(23.0)));
    assert_eq!(
        got,
        last_of_each(
            &|p| p.measurement == "env" && p.field == "temperature",
            i64::MAX
        )
    );

    assert_eq!(
        store.latest(&Query::default()).unwrap(),
        last_of_each(&|_| true, i64::MAX)
    );
    let before = Query {
        to_ns: Some(T0 + 2 * SEC),
        ..Query::default()
    };
    assert_eq!(
        store.latest(&before).unwrap(),
        last_of_each(&|_| true, T0 + 2 * SEC)
    );
    let limited = Query {
        limit: Some(2),
        ..Query::default()
    };
    assert_eq!(
        store.latest(&limited).unwrap(),
        last_of_each(&|_| true, i64::MAX)[..2].to_vec()
    );
    let none = Query {
        to_ns: Some(T0),
        ..Query::default()
    };
    assert_eq!(store.latest(&none).unwrap(), vec![]);
}

#[test]
fn summary_counts_per_device() {
    let (_dir, mut store) = temp_store();
    assert_eq!(store.summary().unwrap(), vec![]);
    store.insert(&dataset()).unwrap();
    let mut anonymous = Reading::new("env", 5);
    anonymous.fields = vec![("x".into(), FieldValue::Boolean(true))];
    store.insert(&[anonymous]).unwrap();
    let device = |d: &str| DeviceSummary {
        device: Some(d.into()),
        series: 3,
        points: 12,
        first_ns: T0,
        last_ns: T0 + 3 * SEC,
        bytes: 0,
    };
    // Not compacted yet: no chunk, no bytes.
    let want = vec![
        DeviceSummary {
            device: None,
            series: 1,
            points: 1,
            first_ns: 5,
            last_ns: 5,
            bytes: 0,
        },
        device("dev-1"),
        device("dev-2"),
        device("dev-3"),
    ];
    assert_eq!(store.summary().unwrap(), want);
    // Compacted: the same, and the bytes of each device's chunks.
    store.compact().unwrap();
    let got = store.summary().unwrap();
    for (g, w) in got.iter().zip(&want) {
        let bytes: u64 = store
            .conn
            .query_row(
                "SELECT SUM(length(data)) FROM chunks JOIN series ON series.id = series_id
                     WHERE device IS ?1",
                [&w.device],
                |row| row.get(0),
            )
            .unwrap();
        assert!(bytes > 0);
        assert_eq!(g, &DeviceSummary { bytes, ..w.clone() });
    }
    let size = store.size().unwrap();
    assert_eq!((size.series, size.points), (10, 37));
    assert!(size.file_bytes > 0 && size.used_bytes() <= size.file_bytes);
}

#[test]
fn retention_deletes_exactly_the_points_older_than_the_cutoff() {
    let (_dir, mut store) = temp_store();
    // Enough points in one series to take several chunks, and series that are wholly old,
    // wholly new, or empty after deletion.
    let n = (2 * DELETE_CHUNKS * CHUNK_POINTS) as i64 + 345;
    let mut batch: Vec<Reading> = (0..n)
        .map(|i| reading("m", "busy", i, &[("v", FieldValue::Integer(i))]))
        .collect();
    for i in 0..10 {
        batch.push(reading("m", "old", i, &[("v", FieldValue::Integer(i))]));
        batch.push(reading("m", "new", n + i, &[("v", FieldValue::Integer(i))]));
    }
    store.insert(&batch).unwrap();
    store.compact().unwrap();
    // Some old points only in `recent`, some in both (rewritten), some only in chunks:
    // each counts once.
    let rewrites: Vec<Reading> = (0..5)
        .map(|i| reading("m", "busy", i * 3, &[("v", FieldValue::Integer(-i))]))
        .chain((0..3).map(|i| reading("m", "late", i, &[("v", FieldValue::Integer(i))])))
        .collect();
    store.insert(&rewrites).unwrap();
    store.insert(&rewrites[..2]).unwrap();
    // Across a chunk.
    let cutoff = (DELETE_CHUNKS * CHUNK_POINTS) as i64 + 17;
    let before = all(&store);
    assert_eq!(
        store.delete_older_than(cutoff).unwrap(),
        (cutoff + 10 + 3) as u64
    );
    let want: Vec<Point> = before
        .into_iter()
        .filter(|p| p.timestamp >= cutoff)
        .collect();
    assert_eq!(all(&store), want);
    let devices: Vec<_> = store
        .summary()
        .unwrap()
        .into_iter()
        .map(|s| s.device)
        .collect();
    assert_eq!(
        devices,
        vec![Some("busy".to_owned()), Some("new".to_owned())]
    );
    assert_eq!(store.delete_older_than(cutoff).unwrap(), 0);

    // The deleted series comes back when written again (its cached id is gone).
    let again = reading("m", "old", n, &[("v", FieldValue::Integer(7))]);
    store.insert(std::slice::from_ref(&again)).unwrap();
    let q = Query {
        device: Some("old".into()),
        ..Query::default()
    };
    assert_eq!(store.query(&q).unwrap(), vec![point(&again, "v")]);
}

#[test]
fn retention_by_size_holds_the_bound_under_a_long_insert_and_keeps_the_newest() {
    let (_dir, mut store) = temp_store();
    let max_bytes: u64 = 1 << 20;
    // As the sink sets it.
    store.limit_recent(max_bytes / 16);
    let mut rng = simulator::model::SplitMix64::new(3);
    let (devices, batches, per_batch) = (20i64, 150i64, 1000i64);
    let mut largest = 0;
    let mut dropped = 0;
    for b in 0..batches {
        // Full-precision noise: about 7 bytes a value, 3 times the bound in all.
        let batch: Vec<Reading> = (0..per_batch)
            .map(|i| {
                let n = b * per_batch + i;
                reading(
                    "env",
                    &format!("dev-{}", n % devices),
                    T0 + n / devices * SEC,
                    &[
                        ("t", FieldValue::Float(rng.noise(1.0))),
                        ("h", FieldValue::Float(rng.noise(1.0))),
                    ],
                )
            })
            .collect();
        store.insert(&batch).unwrap();
        let d = store.drop_oldest(max_bytes).unwrap();
        dropped += d.points;
        let size = store.size().unwrap();
        largest = largest.max(size.file_bytes);
        assert!(
            size.file_bytes <= max_bytes,
            "batch {b}: file {} bytes",
            size.file_bytes
        );
    }
    let total = (batches * per_batch * 2) as u64;
    assert!(dropped > total / 2, "dropped {dropped} of {total}");
    // What stays is each series' newest points, without a gap, and what was dropped
    // is gone for every series up to about the same time.
    let points = all(&store);
    let kept = points.len() as u64 + store.recent_points;
    assert_eq!(kept + dropped, total, "every point either kept or dropped");
    let mut by_series: BTreeMap<(String, String), Vec<i64>> = BTreeMap::new();
    for p in &points {
        by_series
            .entry((p.tags[0].1.clone(), p.field.clone()))
            .or_default()
            .push(p.timestamp);
    }
    assert_eq!(by_series.len(), 40);
    let last = T0 + (batches * per_batch - 1) / devices * SEC;
    for (series, ts) in &by_series {
        assert_eq!(*ts.last().unwrap(), last, "{series:?}");
        assert!(
            ts.windows(2).all(|w| w[1] - w[0] == SEC),
            "{series:?} has a gap"
        );
    }
    // The bound is used, not wasted: the points kept take most of it.
    let size = store.size().unwrap();
    println!("largest file {largest}, now {size:?}, kept {kept} of {total}");
    assert!(size.used_bytes() > max_bytes / 2);
}

#[test]
fn compaction_changes_no_result_and_the_last_write_wins() {
    let (_dir, mut store) = temp_store();
    let data = dataset();
    let rewrite = |r: &Reading, v: i64| {
        let mut r = r.clone();
        for (_, value) in &mut r.fields {
            *value = FieldValue::Integer(v);
        }
        r
    };
    // Written, compacted, rewritten twice (both rewrites in `recent`).
    store.insert(&data).unwrap();
    store.compact().unwrap();
    store
        .insert(&[rewrite(&data[0], 1), rewrite(&data[5], 1)])
        .unwrap();
    store.insert(&[rewrite(&data[0], 2)]).unwrap();
    // And a point written twice in one batch: the later one wins.
    store
        .insert(&[rewrite(&data[9], 3), rewrite(&data[9], 4)])
        .unwrap();

    let mut want_data = data.clone();
    want_data[0] = rewrite(&data[0], 2);
    want_data[5] = rewrite(&data[5], 1);
    want_data[9] = rewrite(&data[9], 4);
    let want = expected(&want_data, |_| true);
    let queries = [
        Query::default(),
        Query {
            device: Some("dev-1".into()),
            ..Query::default()
        },
        Query {
            limit: Some(5),
            ..Query::default()
        },
        Query {
            from_ns: Some(T0),
            to_ns: Some(T0 + SEC),
            ..Query::default()
        },
    ];
    let before: Vec<_> = queries.iter().map(|q| store.query(q).unwrap()).collect();
    let latest_before = store.latest(&Query::default()).unwrap();
    let summary_before = store.summary().unwrap();
    assert_eq!(before[0], want);
    assert_eq!(summary_before.iter().map(|s| s.points).sum::<u64>(), 36);
    assert_eq!(
        store.compact().unwrap(),
        7,
        "rows of `recent`, rewrites included"
    );
    assert_eq!(store.compact().unwrap(), 0);
    let after: Vec<_> = queries.iter().map(|q| store.query(q).unwrap()).collect();
    assert_eq!(after, before);
    assert_eq!(store.latest(&Query::default()).unwrap(), latest_before);
    // The same but for the bytes of the chunks (rewritten).
    let no_bytes = |s: Vec<DeviceSummary>| -> Vec<DeviceSummary> {
        s.into_iter()
            .map(|d| DeviceSummary { bytes: 0, ..d })
            .collect()
    };
    assert_eq!(no_bytes(store.summary().unwrap()), no_bytes(summary_before));
}

/// Every series' chunks in time order: `(points, full)` of each, after checking that
/// each decodes to its row's count and span, and that they do not overlap.
pub(super) fn checked_chunks(store: &LocalStore) -> BTreeMap<i64, Vec<(usize, bool)>> {
    let mut out: BTreeMap<i64, Vec<(usize, bool)>> = BTreeMap::new();
    let mut stmt = store
        .conn
        .prepare(
            "SELECT series_id, first_ts, last_ts, points, data, codec FROM chunks
                 ORDER BY series_id, last_ts",
        )
        .unwrap();
    let mut rows = stmt.query([]).unwrap();
    let mut previous: Option<(i64, i64)> = None;
    while let Some(row) = rows.next().unwrap() {
        let (id, first, last, n): (i64, i64, i64, i64) = (
            row.get(0).unwrap(),
            row.get(1).unwrap(),
            row.get(2).unwrap(),
            row.get(3).unwrap(),
        );
        let data: Vec<u8> = row.get(4).unwrap();
        let codec = Codec::from_i64(row.get(5).unwrap()).unwrap();
        let points: Vec<_> = ChunkReader::new(codec, &data, n)
            .collect::<Result<_, _>>()
            .unwrap();
        let raw_bytes: usize = points
            .iter()
            .map(|(_, v)| {
                let mut b = Vec::new();
                v.encode(&mut b);
                b.len()
            })
            .sum();
        assert_eq!(points.len() as i64, n);
        assert_eq!((points[0].0, points[points.len() - 1].0), (first, last));
        if let Some((before_id, before_last)) = previous {
            assert!(before_id != id || before_last < first, "chunks overlap");
        }
        previous = Some((id, last));
        out.entry(id)
            .or_default()
            .push((points.len(), is_full(points.len(), raw_bytes)));
    }
    out
}

/// After checking the chunks: every point of `store` is the model's last write of it,
/// and the store holds no other.
fn holds_the_model(
    store: &LocalStore,
    model: BTreeMap<(String, i64), i64>,
) -> Result<(), proptest::test_runner::TestCaseError> {
    checked_chunks(store);
    let got: Vec<(String, i64, FieldValue)> = all(store)
        .into_iter()
        .map(|p| (p.tags[0].1.to_string(), p.timestamp, p.value))
        .collect();
    let want: Vec<(String, i64, FieldValue)> = model
        .into_iter()
        .map(|((d, ts), v)| (d, ts, FieldValue::Integer(v)))
        .collect();
    proptest::prop_assert_eq!(got, want);
    Ok(())
}

#[test]
fn appending_fills_chunks_and_keeps_the_tail_short() {
    let (_dir, mut store) = temp_store();
    // A compaction after every batch of 7 points: the tail grows by a row each time.
    let mut want = Vec::new();
    for b in 0..600i64 {
        if b == 300 {
            // A new writer knows no tail: it reads it from the chunks.
            let path = store.path().to_path_buf();
            drop(store);
            store = LocalStore::open(&path).unwrap();
        }
        let batch: Vec<Reading> = (0..7)
            .map(|i| {
                reading(
                    "m",
                    "d",
                    T0 + (b * 7 + i) * SEC,
                    &[("v", FieldValue::Integer(b))],
                )
            })
            .collect();
        want.extend(batch.iter().map(|r| point(r, "v")));
        store.insert(&batch).unwrap();
        store.compact().unwrap();
        let chunks = &checked_chunks(&store)[&1];
        let tail = chunks.iter().rev().take_while(|(_, full)| !full).count();
        assert!(tail <= usize::from(TAIL_ROWS), "{tail} rows in the tail");
        assert!(chunks[..chunks.len() - tail]
            .iter()
            .all(|c| c.0 == CHUNK_POINTS));
    }
    assert_eq!(all(&store), want);
    let chunks = &checked_chunks(&store)[&1];
    assert_eq!(chunks.iter().filter(|c| c.1).count(), 4200 / CHUNK_POINTS);
}

#[test]
fn settling_merges_each_tail_into_one_row_and_changes_no_result() {
    let (_dir, mut store) = temp_store();
    // Three series, a compaction after every 3 points of each: tails of up to 4 rows.
    let mut want = Vec::new();
    for b in 0..10i64 {
        let batch: Vec<Reading> = (0..3)
            .flat_map(|i| {
                ["a", "b", "c"].map(|d| {
                    reading(
                        "m",
                        d,
                        T0 + (b * 3 + i) * SEC,
                        &[("v", FieldValue::Integer(b))],
                    )
                })
            })
            .collect();
        want.extend(batch.iter().map(|r| point(r, "v")));
        store.insert(&batch).unwrap();
        store.compact().unwrap();
    }
    // And some not compacted yet.
    let late = reading("m", "a", T0 + 100 * SEC, &[("v", FieldValue::Float(0.5))]);
    store.insert(std::slice::from_ref(&late)).unwrap();
    want.push(point(&late, "v"));
    want.sort_by(|a, b| (&a.tags, a.timestamp).cmp(&(&b.tags, b.timestamp)));
    assert!(checked_chunks(&store).values().all(|c| c.len() > 1));
    assert_eq!(store.settle().unwrap(), 3);
    assert_eq!(store.recent_points, 0);
    let chunks = checked_chunks(&store);
    assert!(chunks.values().all(|c| c.len() == 1), "{chunks:?}");
    assert_eq!(all(&store), want);
    // Settled already: nothing to do.
    assert_eq!(store.settle().unwrap(), 0);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    /// Writes that mostly append (a few points per series between compactions, as a
    /// collector writes them), with late and repeated points among them, compacted at
    /// any points, by writers that come and go: the chunks hold the last write of every
    /// point, and never overlap.
    #[test]
    fn appended_chunks_hold_the_last_write_of_every_point(
        steps in proptest::collection::vec(
            (proptest::collection::vec((0..3usize, 0..40i64, -3000..0i64, proptest::prelude::any::<i8>()), 1..40),
             0..4u8),
            1..60,
        )
    ) {
        let (dir, mut store) = temp_store();
        let path = dir.path().join("store.db");
        let mut now = [0i64; 3];
        let mut model: BTreeMap<(String, i64), i64> = BTreeMap::new();
        for (batch, then) in steps {
            // Each point advances its device's clock by 0..40, or is late (0..3000 back)
            // when the step is 0.
            let readings: Vec<Reading> = batch
                .iter()
                .map(|&(d, step, late, v)| {
                    let ts = if step == 0 { (now[d] + late).max(0) } else { now[d] + step };
                    now[d] = now[d].max(ts);
                    reading("m", &format!("d{d}"), ts, &[("v", FieldValue::Integer(v.into()))])
                })
                .collect();
            store.insert(&readings).unwrap();
            for r in &readings {
                let Some(FieldValue::Integer(v)) = r.field("v") else { unreachable!() };
                model.insert((r.tags[0].1.to_string(), r.timestamp), *v);
            }
            match then {
                0 | 1 => { store.compact().unwrap(); }
                2 => {
                    drop(store);
                    store = LocalStore::open(&path).unwrap();
                }
                _ => {}
            }
        }
        store.compact().unwrap();
        holds_the_model(&store, model)?;
    }

    /// Any sequence of writes (late, repeated, overlapping), compacted at any points,
    /// reads back as the last write of each point: the chunks never lose, duplicate or
    /// misorder a point.
    #[test]
    fn chunks_hold_the_last_write_of_every_point(
        batches in proptest::collection::vec(
            (proptest::collection::vec((0..3usize, 0..1500i64, proptest::prelude::any::<i64>()), 1..300),
             proptest::prelude::any::<bool>()),
            1..12,
        )
    ) {
        let (_dir, mut store) = temp_store();
        store.compact_points = 400;
        store.part_bytes = 2_000;
        let mut model: BTreeMap<(String, i64), i64> = BTreeMap::new();
        for (batch, compact) in batches {
            let readings: Vec<Reading> = batch
                .iter()
                .map(|(d, ts, v)| reading("m", &format!("d{d}"), *ts, &[("v", FieldValue::Integer(*v))]))
                .collect();
            store.insert(&readings).unwrap();
            for (d, ts, v) in batch {
                model.insert((format!("d{d}"), ts), v);
            }
            if compact {
                store.compact().unwrap();
            }
        }
        holds_the_model(&store, model)?;
    }
}

#[test]
fn inserts_compact_on_their_own() {
    let (_dir, mut store) = temp_store();
    store.compact_points = 10;
    store.compact_per_series = 0;
    let batch: Vec<Reading> = (0..4)
        .map(|i| {
            reading(
                "m",
                "d",
                i,
                &[("a", FieldValue::Integer(i)), ("b", FieldValue::Integer(i))],
            )
        })
        .collect();
    store.insert(&batch).unwrap();
    assert_eq!(store.recent_points, 8);
    store.insert(&batch[..1]).unwrap();
    assert_eq!(store.recent_points, 0);
    let in_recent: i64 = store
        .conn
        .query_row("SELECT COUNT(*) FROM recent", [], |row| row.get(0))
        .unwrap();
    assert_eq!(in_recent, 0);
    assert_eq!(count(&store), 8);
    // A reopened store counts what `recent` holds.
    store.insert(&batch[..2]).unwrap();
    let path = store.path().to_path_buf();
    drop(store);
    assert_eq!(LocalStore::open(&path).unwrap().recent_points, 4);
}

#[test]
fn a_failed_insert_stores_nothing_and_later_inserts_work() {
    let (_dir, mut store) = temp_store();
    let other = Connection::open(store.path()).unwrap();
    other
        .execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON recent WHEN NEW.points = 2
                 BEGIN SELECT RAISE(ABORT, 'refused'); END;",
        )
        .unwrap();
    let good = reading("m", "d", 1, &[("v", FieldValue::Integer(1))]);
    let bad = reading("m", "d", 666, &[("v", FieldValue::Integer(2))]);
    let err = store.insert(&[good.clone(), bad]).unwrap_err();
    assert!(!err.is_retryable(), "{err:?}");
    assert_eq!(all(&store), vec![]);
    assert_eq!(store.summary().unwrap(), vec![]);
    // The series created by the rolled-back transaction must not linger in the cache.
    store.insert(std::slice::from_ref(&good)).unwrap();
    assert_eq!(all(&store), vec![point(&good, "v")]);
}

#[test]
fn open_creates_directories_and_data_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/store.db");
    let r = reading("m", "d", 1, &[("v", FieldValue::Unsigned(u64::MAX))]);
    LocalStore::open(&path)
        .unwrap()
        .insert(std::slice::from_ref(&r))
        .unwrap();
    let store = LocalStore::open(&path).unwrap();
    assert_eq!(all(&store), vec![point(&r, "v")]);
    let mode: String = store
        .conn
        .pragma_query_value(None, "journal_mode", |row| row.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn a_reader_sees_what_the_writer_committed_while_it_is_open() {
    let (_dir, mut writer) = temp_store();
    let reader = LocalStore::open_read_only(writer.path()).unwrap();
    assert_eq!(all(&reader), vec![]);
    let r = reading("m", "d", 1, &[("v", FieldValue::Boolean(false))]);
    writer.insert(std::slice::from_ref(&r)).unwrap();
    assert_eq!(all(&reader), vec![point(&r, "v")]);
}

#[test]
fn read_only_open_of_a_missing_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing.db");
    let err = LocalStore::open_read_only(&path).unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("local store {} does not exist", path.display())
    );
    assert!(!path.exists(), "a read-only open must not create the file");
}

#[test]
fn a_read_only_store_refuses_writes() {
    let (_dir, writer) = temp_store();
    let mut reader = LocalStore::open_read_only(writer.path()).unwrap();
    let r = reading("m", "d", 1, &[("v", FieldValue::Integer(1))]);
    assert!(reader.insert(&[r]).is_err());
}

#[test]
fn files_that_are_not_stores_are_refused() {
    let dir = tempfile::tempdir().unwrap();

    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "this is not a database, not even close; ".repeat(50)).unwrap();
    for result in [LocalStore::open(&text), LocalStore::open_read_only(&text)] {
        let err = result.unwrap_err();
        assert!(matches!(err, StoreError::NotAStore { .. }), "{err:?}");
    }

    let other = dir.path().join("other.db");
    Connection::open(&other)
        .unwrap()
        .execute_batch("CREATE TABLE t (x)")
        .unwrap();
    for result in [LocalStore::open(&other), LocalStore::open_read_only(&other)] {
        let err = result.unwrap_err();
        assert!(matches!(err, StoreError::NotAStore { .. }), "{err:?}");
    }

    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, "").unwrap();
    let err = LocalStore::open_read_only(&empty).unwrap_err();
    assert!(matches!(err, StoreError::NotAStore { .. }), "{err:?}");
    // A writer may use an empty file: it becomes a store.
    LocalStore::open(&empty).unwrap();
    LocalStore::open_read_only(&empty).unwrap();
}

#[test]
fn an_unknown_schema_version_is_a_clear_error() {
    let (_dir, store) = temp_store();
    let path = store.path().to_path_buf();
    drop(store);
    Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 4)
        .unwrap();
    for result in [LocalStore::open(&path), LocalStore::open_read_only(&path)] {
        let err = result.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "local store {} has schema version 4, written by a newer build: this build \
                     reads version 3 and older (run the newer build, or move the store away)",
                path.display()
            )
        );
    }
}

/// Makes a store of schema version 1 holding `points` and `recent` rows, as that build
/// wrote them.
fn version_1_store(
    path: &Path,
    points: &[(i64, i64, FieldValue)],
    recent: &[(i64, i64, FieldValue)],
) {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch(SERIES_TABLE).unwrap();
    conn.execute_batch(migrate::V1_POINT_TABLES).unwrap();
    conn.pragma_update(None, "application_id", APPLICATION_ID)
        .unwrap();
    conn.pragma_update(None, "user_version", 1).unwrap();
    for (i, device) in ["a", "b"].iter().enumerate() {
        conn.execute(
                "INSERT INTO series (id, measurement, tags, field, device) VALUES (?1, 'm', ?2, 'v', ?3)",
                params![i as i64 + 1, format!(r#"{{"device":"{device}"}}"#), device],
            )
            .unwrap();
    }
    for (table, rows) in [("points", points), ("recent", recent)] {
        for (series, ts, value) in rows {
            let (kind, value): (u8, rusqlite::types::Value) = match value {
                FieldValue::Float(v) if v.is_nan() => (0, rusqlite::types::Value::Null),
                FieldValue::Float(v) => (0, (*v).into()),
                FieldValue::Integer(v) => (1, (*v).into()),
                FieldValue::Unsigned(v) => (2, v.cast_signed().into()),
                FieldValue::Boolean(v) => (3, i64::from(*v).into()),
                FieldValue::String(v) => (4, v.to_string().into()),
            };
            conn.execute(
                &format!(
                    "INSERT INTO {table} (series_id, ts, kind, value) VALUES (?1, ?2, ?3, ?4)"
                ),
                params![series, ts, kind, value],
            )
            .unwrap();
        }
    }
}

#[test]
fn a_writer_upgrades_a_version_1_store_and_every_point_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    // Series 1 spans several chunks; series 2 holds every type. `recent` rewrites one
    // stored point twice (the later row wins) and adds one.
    let mut stored: Vec<(i64, i64, FieldValue)> = (0..1200)
        .map(|i| (1, T0 + i * SEC, FieldValue::Float(i as f64 / 8.0)))
        .collect();
    let values = [
        FieldValue::Float(f64::NAN),
        FieldValue::Float(-0.0),
        FieldValue::Integer(i64::MIN),
        FieldValue::Unsigned(u64::MAX),
        FieldValue::Boolean(true),
        FieldValue::String("naïve \"x\"".into()),
    ];
    stored.extend(
        values
            .iter()
            .enumerate()
            .map(|(i, v)| (2, T0 + i as i64, v.clone())),
    );
    let recent = vec![
        (1, T0 + 5 * SEC, FieldValue::Integer(1)),
        (1, T0 + 5 * SEC, FieldValue::Integer(2)),
        (2, T0 + 100, FieldValue::Boolean(false)),
    ];
    version_1_store(&path, &stored, &recent);

    let err = LocalStore::open_read_only(&path).unwrap_err();
    assert_eq!(
            err.to_string(),
            format!(
                "local store {} has schema version 1: start the collector once to upgrade it to version 3",
                path.display()
            )
        );
    drop(LocalStore::open(&path).unwrap());
    let store = LocalStore::open_read_only(&path).unwrap();
    let version: i64 = store
        .conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .unwrap();
    assert_eq!(version, 3);
    let chunks: i64 = store
        .conn
        .query_row("SELECT COUNT(*) FROM chunks", [], |row| row.get(0))
        .unwrap();
    assert_eq!(chunks, 3 + 1);

    let mut want: BTreeMap<(i64, i64), FieldValue> = BTreeMap::new();
    for (series, ts, value) in stored.into_iter().chain(recent) {
        want.insert((series, ts), value);
    }
    let want: Vec<Point> = want
        .into_iter()
        .map(|((series, timestamp), value)| {
            let device = if series == 1 { "a" } else { "b" };
            Point {
                measurement: "m".into(),
                tags: vec![(DEVICE_TAG.into(), device.into())],
                field: "v".into(),
                timestamp,
                value,
            }
        })
        .collect();
    assert_same_points(&all(&store), &want);
    // Opening it again changes nothing.
    drop(LocalStore::open(&path).unwrap());
    assert_same_points(&all(&store), &want);
}

/// The points the version 2 fixture holds: the last write of each.
fn v2_fixture_points() -> Vec<Point> {
    type Key = (Vec<(String, String)>, String, i64);
    let mut want: BTreeMap<Key, FieldValue> = BTreeMap::new();
    for (batch, _) in v2_fixture::batches() {
        for r in &batch {
            for (name, _) in &r.fields {
                let p = point(r, name);
                want.insert((p.tags, p.field, p.timestamp), p.value);
            }
        }
    }
    want.into_iter()
        .map(|((tags, field, timestamp), value)| Point {
            measurement: "env".into(),
            tags,
            field,
            timestamp,
            value,
        })
        .collect()
}

/// A copy of the version 2 fixture (made by the build of 16f8a35) in a new directory.
fn v2_fixture() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    std::fs::write(&path, include_bytes!("fixtures/store-v2.sqlite")).unwrap();
    (dir, path)
}

fn user_version(conn: &Connection) -> i64 {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
        .unwrap()
}

#[test]
fn a_writer_upgrades_the_version_2_fixture_and_every_point_reads_back() {
    let (_dir, path) = v2_fixture();
    let err = LocalStore::open_read_only(&path).unwrap_err();
    assert_eq!(
            err.to_string(),
            format!(
                "local store {} has schema version 2: start the collector once to upgrade it to version 3",
                path.display()
            )
        );
    let want = v2_fixture_points();
    drop(LocalStore::open(&path).unwrap());
    let store = LocalStore::open_read_only(&path).unwrap();
    assert_eq!(user_version(&store.conn), 3);
    let version2: i64 = store
        .conn
        .query_row("SELECT COUNT(*) FROM chunks WHERE codec = 0", [], |row| {
            row.get(0)
        })
        .unwrap();
    assert_eq!(version2, 0, "every chunk re-encoded");
    let pending: i64 = store
        .conn
        .query_row(
            "SELECT COUNT(*) FROM sqlite_schema WHERE name = 'upgrade_v2'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(pending, 0);
    checked_chunks(&store);
    assert_same_points(&all(&store), &want);
    assert_eq!(
        store
            .summary()
            .unwrap()
            .iter()
            .map(|d| d.points)
            .sum::<u64>(),
        want.len() as u64
    );

    // Written to and compacted again: the new point joins the upgraded chunks.
    let mut writer = LocalStore::open(&path).unwrap();
    let mut r = reading("env", "a", 1, &[("t", FieldValue::Float(1.25))]);
    r.set_tag("site", "s1");
    writer.insert(std::slice::from_ref(&r)).unwrap();
    writer.compact().unwrap();
    drop(writer);
    checked_chunks(&store);
    let mut want = want;
    let at = want.iter().position(|p| p.field == "t").unwrap();
    want.insert(at, point(&r, "t"));
    assert_same_points(&all(&store), &want);
}

#[test]
fn series_whose_hashes_collide_keep_their_own_ids() {
    let mut cache = SeriesCache::default();
    let a = reading("env", "a", T0, &[("t", FieldValue::Float(1.0))]);
    let b = reading("env", "b", T0, &[("t", FieldValue::Float(1.0))]);
    let c = reading("env", "c", T0, &[("t", FieldValue::Float(1.0))]);
    for (r, id) in [(&a, 1), (&b, 2), (&c, 3)] {
        cache
            .group_hashed(7, r)
            .unwrap()
            .fields
            .push(("t".into(), id));
    }
    for (r, id) in [(&c, 3), (&a, 1), (&b, 2)] {
        let group = cache.group_hashed(7, r).unwrap();
        assert_eq!(group.tags, r.tags);
        assert_eq!(group.field_id(0, "t"), Some(id));
    }
    assert_eq!((cache.groups.len(), cache.collided.len()), (1, 2));
}

#[test]
fn errors_are_classified() {
    let sqlite = |code| {
        StoreError::Sqlite(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(code),
            None,
        ))
    };
    assert!(sqlite(rusqlite::ffi::SQLITE_BUSY).is_retryable());
    assert!(sqlite(rusqlite::ffi::SQLITE_LOCKED).is_retryable());
    assert!(sqlite(rusqlite::ffi::SQLITE_IOERR).is_retryable());
    assert!(sqlite(rusqlite::ffi::SQLITE_FULL).is_retryable());
    assert!(!sqlite(rusqlite::ffi::SQLITE_TOOBIG).is_retryable());
    assert!(!sqlite(rusqlite::ffi::SQLITE_CONSTRAINT).is_retryable());
}

/// The CPU time this thread has used (Linux: `/proc/thread-self/schedstat`, in ns).
fn thread_cpu() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .map_or(Duration::ZERO, Duration::from_nanos)
}

/// Not a test of speed (nothing is asserted): a measurement, run with
/// `cargo test --release -p telemetry-collector --lib insert_rate -- --ignored --nocapture`.
/// 210,000 readings of 4 fields, in batches of 1,000, from 100, 1,000 and 10,000 devices
/// (`INSERT_RATE_DEVICES=1000` for one of them). Prints the rate (wall time, fsyncs
/// included) and the CPU time of the inserting thread per field value: over all batches,
/// and over the second half alone (with 10,000 devices, the first half creates 40,000
/// series and compacts them for the first time).
#[test]
#[ignore = "a measurement, not a test"]
fn insert_rate() {
    let counts: Vec<i64> = match std::env::var("INSERT_RATE_DEVICES") {
        Ok(list) => list.split(',').map(|d| d.trim().parse().unwrap()).collect(),
        Err(_) => vec![100, 1000, 10_000],
    };
    for devices in counts {
        let (_dir, mut store) = temp_store();
        let batches = 210;
        let per_batch = 1000;
        let mut total = 0u64;
        let mut elapsed = Duration::ZERO;
        let mut cpu = Duration::ZERO;
        let mut second_half = (0u64, Duration::ZERO);
        for b in 0..batches {
            let batch: Vec<Reading> = (0..per_batch)
                .map(|i| {
                    let n = b * per_batch + i;
                    let mut r = reading(
                        "env",
                        &format!("dev-{:04}", n % devices),
                        T0 + n * 1_000_000,
                        &[
                            (
                                "temperature",
                                FieldValue::Float(20.0 + (n % 100) as f64 / 10.0),
                            ),
                            ("humidity", FieldValue::Float(40.0 + (n % 37) as f64)),
                            ("pressure", FieldValue::Integer(101_300 + n % 50)),
                            ("ok", FieldValue::Boolean(n % 7 != 0)),
                        ],
                    );
                    r.set_tag("site", "site-01");
                    r
                })
                .collect();
            total += batch.iter().map(|r| r.fields.len() as u64).sum::<u64>();
            let started = std::time::Instant::now();
            let cpu_before = thread_cpu();
            store.insert(&batch).unwrap();
            let used = thread_cpu().saturating_sub(cpu_before);
            cpu += used;
            if b >= batches / 2 {
                second_half.0 += batch.iter().map(|r| r.fields.len() as u64).sum::<u64>();
                second_half.1 += used;
            }
            elapsed += started.elapsed();
        }
        let started = std::time::Instant::now();
        let latest = store.latest(&Query::default()).unwrap().len();
        let latest_took = started.elapsed();
        let started = std::time::Instant::now();
        let one = Query {
            device: Some("dev-0001".into()),
            field: Some("temperature".into()),
            ..Query::default()
        };
        let points = store.query(&one).unwrap().len();
        println!(
            "{devices} devices: latest of {latest} series in {latest_took:?}, \
                 {points} points of one series in {:?} ({} points in recent)",
            started.elapsed(),
            store.recent_points,
        );
        store.compact().unwrap();
        store
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
        let size = std::fs::metadata(store.path()).unwrap().len();
        println!(
            "{devices} devices: {total} field values in {elapsed:?}: {:.0} field values/s, \
                 {:.2} µs of CPU per field value ({:.2} in the second half); \
                 file {:.1} bytes per field value",
            total as f64 / elapsed.as_secs_f64(),
            cpu.as_secs_f64() * 1e6 / total as f64,
            second_half.1.as_secs_f64() * 1e6 / second_half.0 as f64,
            size as f64 / total as f64,
        );
    }
}

/// A store whose full chunks an earlier build deflated (codec 2) reads the same points, and
/// a compaction that merges new points into it writes zstd (codec 3) beside them.
#[test]
fn a_store_with_deflated_chunks_still_reads_and_takes_new_points() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let batch = |from: i64, to: i64| -> Vec<Reading> {
        (from..to)
            .flat_map(|s| {
                (0..2).map(move |d| {
                    reading(
                        "env",
                        &format!("dev-{d}"),
                        T0 + s * SEC,
                        &[
                            ("t", FieldValue::Float(20.0 + (s % 37) as f64 / 100.0)),
                            ("n", FieldValue::Integer(s * 3 - d)),
                        ],
                    )
                })
            })
            .collect()
    };
    let first = batch(0, 1_300);
    let mut store = LocalStore::open(&path).unwrap();
    store.insert(&first).unwrap();
    while store.settle().unwrap() > 0 {}
    drop(store);
    // Every chunk written again as the builds before codec 3 wrote it.
    let conn = Connection::open(&path).unwrap();
    let rows: Vec<(i64, i64, Vec<u8>, i64)> = conn
        .prepare("SELECT id, points, data, codec FROM chunks")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut decoded = Vec::new();
    for (id, points, data, c) in rows {
        super::codec::decode(Codec::from_i64(c).unwrap(), &data, points, &mut decoded).unwrap();
        let mut w = super::codec::ChunkWriter::default();
        w.pack = Some(Codec::Deflated);
        w.deflate_last = true;
        let mut cs: Vec<_> = decoded.iter().filter_map(|(t, v)| w.push(*t, v)).collect();
        cs.extend(w.finish());
        assert_eq!(cs.len(), 1);
        conn.execute(
            "UPDATE chunks SET data = ?2, codec = ?3 WHERE id = ?1",
            params![id, cs[0].data, cs[0].codec.as_i64()],
        )
        .unwrap();
    }
    let codecs = |conn: &Connection| -> Vec<(i64, i64)> {
        conn.prepare("SELECT codec, COUNT(*) FROM chunks GROUP BY codec ORDER BY codec")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    assert_eq!(
        codecs(&conn),
        [(2, 12)],
        "4 series: 2 full chunks and a tail each"
    );

    let mut store = LocalStore::open(&path).unwrap();
    assert_same_points(&all(&store), &expected(&first, |_| true));
    let second = batch(1_300, 2_000);
    store.insert(&second).unwrap();
    while store.settle().unwrap() > 0 {}
    let both: Vec<Reading> = first.iter().chain(&second).cloned().collect();
    assert_same_points(&all(&store), &expected(&both, |_| true));
    let found = codecs(&conn);
    assert!(
        found.iter().any(|&(c, _)| c == 2) && found.iter().any(|&(c, _)| c == 3),
        "{found:?}"
    );
}
