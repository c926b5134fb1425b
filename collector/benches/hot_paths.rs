//! The hot paths, per reading of three float fields (the end-to-end benchmark's workload):
//! payload parsing (JSON, line protocol, `key=value`, and a hostile 64 KiB JSON object of
//! 6,000 keys), line protocol encoding, the journal's
//! append and read (without fsync: the CPU, not the disk), and the local store's insert.
//!
//! ```sh
//! cargo bench -p telemetry-collector --bench hot_paths
//! ```
//!
//! Throughput is in readings; divide the time per reading by three for a field value.

#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

use collector::config::{JournalSettings, WhenFull};
use collector::journal::Journal;
use collector::metrics::Metrics;
use collector::payload::{self, Context, Format, JsonOptions, TimeUnit, TimestampBounds};
use collector::reading::{self, Batch, Encoded, Encoding, FieldValue, Reading, Readings};
use collector::sinks::line_protocol::{self, Dialect, Precision};
use collector::store::LocalStore;

const TS: i64 = 1_764_000_000_000_000_000;
const BATCH: usize = 1000;

fn reading(i: usize) -> Reading {
    let mut r = Reading::new("env", TS + i as i64 * 1_000);
    r.set_tag("device", format!("dev-{:04}", i % 1000));
    r.set_tag("site", format!("site-{:02}", i % 10));
    r.fields = vec![
        (
            "temperature".into(),
            FieldValue::Float(21.53 + (i % 7) as f64),
        ),
        ("humidity".into(), FieldValue::Float(48.2)),
        ("pressure".into(), FieldValue::Float(1013.25)),
    ];
    r
}

fn batch() -> Vec<Reading> {
    (0..BATCH).map(reading).collect()
}

fn parsing(c: &mut Criterion) {
    let tags = vec![
        ("device".into(), "dev-0042".into()),
        ("site".into(), "site-02".into()),
    ];
    let ctx = Context {
        measurement: "env",
        tags: &tags,
        field: "value",
        default_device: "dev-0042",
        received_ns: TS,
        bounds: TimestampBounds::around(TS, 600_000_000_000, 86_400_000_000_000),
    };
    let json = format!(r#"{{"ts":{TS},"temperature":21.53,"humidity":48.2,"pressure":1013.25}}"#);
    let lp = format!(
        "env,device=dev-0042,site=site-02 temperature=21.53,humidity=48.2,pressure=1013.25 {TS}"
    );
    let kv = format!("ts={TS} temperature=21.53 humidity=48.2 pressure=1013.25");
    // A hostile payload: 64 KiB of distinct keys (one reading of 6,000 fields).
    let wide = format!(
        "{{{}\"ts\":{TS}}}",
        (0..6000)
            .map(|i| format!("\"k{i}\":{i},"))
            .collect::<String>()
    );
    let cases = [
        ("json", Format::Json(JsonOptions::default()), json),
        (
            "line_protocol",
            Format::LineProtocol {
                precision: TimeUnit::Ns,
            },
            lp,
        ),
        ("key_value", Format::KeyValue(JsonOptions::default()), kv),
        ("json_6000_keys", Format::Json(JsonOptions::default()), wide),
    ];
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Elements(1));
    for (name, format, payload) in &cases {
        let mut out = Vec::with_capacity(1);
        g.bench_function(*name, |b| {
            b.iter(|| {
                out.clear();
                let rejects = payload::parse(format, payload.as_bytes(), &ctx, &mut out);
                assert!(rejects.is_empty() && out.len() == 1);
            })
        });
    }
    g.finish();
}

fn encoding(c: &mut Criterion) {
    let readings = batch();
    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Elements(BATCH as u64));
    let mut buf = Vec::with_capacity(BATCH * 128);
    g.bench_function("line_protocol", |b| {
        b.iter(|| {
            buf.clear();
            line_protocol::encode(&readings, Precision::Ns, Dialect::Portable, &mut buf).unwrap();
        })
    });
    buf.clear();
    line_protocol::encode(&readings, Precision::Ns, Dialect::Portable, &mut buf).unwrap();
    let body = buf.clone();
    g.bench_function("gzip_line_protocol", |b| {
        b.iter(|| collector::sinks::influxdb::gzip_bytes(&body))
    });
    g.bench_function("journal_record", |b| {
        b.iter(|| {
            buf.clear();
            reading::encode_all(&readings, &mut buf);
        })
    });
    reading::encode_all(&readings, &mut buf);
    let encoded = buf.clone();
    g.bench_function("journal_record_decode", |b| {
        b.iter(|| reading::decode_all(Encoding::CURRENT, &encoded, BATCH).unwrap())
    });
    // What a sink pays per pass over a batch: each reading decoded into one reused reading.
    let batch = Batch::from(readings.clone());
    g.bench_function("journal_record_visit", |b| {
        b.iter(|| {
            let mut n = 0;
            batch.for_each(|r| n += r.fields.len());
            n
        })
    });
    g.finish();
}

fn journal(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let settings = JournalSettings {
        path: dir.path().join("journal.db"),
        max_bytes: 1 << 40,
        when_full: WhenFull::Block,
        sync: false,
        commit_delay: std::time::Duration::ZERO,
        ack_delay: std::time::Duration::ZERO,
        ack_batch: 1,
    };
    let (journal, mut writer) = Journal::open(&settings, Metrics::new()).unwrap();
    journal.register_sinks(&["bench"]).unwrap();
    let mut reader = journal.reader("bench").unwrap();
    let readings = batch();
    let mut g = c.benchmark_group("journal");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("append_1000", |b| {
        b.iter(|| writer.append(&readings).unwrap())
    });
    // Read back what the appends wrote, a batch at a time, committing the cursor.
    g.bench_function("read_and_commit_1000", |b| {
        b.iter_batched(
            || writer.append(&readings).unwrap(),
            |()| {
                let mut n = 0;
                while n < BATCH {
                    let got = reader.read(BATCH - n).unwrap();
                    assert!(!got.is_empty());
                    n += got.len();
                }
                reader.commit(reader.read_position()).unwrap();
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn local_store(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = LocalStore::open(&dir.path().join("store.db")).unwrap();
    let mut g = c.benchmark_group("local_store");
    g.throughput(Throughput::Elements(BATCH as u64));
    let mut k = 0usize;
    g.bench_function("insert_1000", |b| {
        b.iter_batched(
            || {
                // New timestamps each time: the store keeps one value per series and time.
                k += 1;
                (0..BATCH)
                    .map(|i| reading(k * BATCH + i))
                    .collect::<Vec<_>>()
            },
            |readings| store.insert(&readings).unwrap(),
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

/// What every reading costs between the broker and the line-protocol sinks, without SQLite
/// and the network: parse a JSON payload (tags from the topic), encode the journal entry,
/// read it back (the copy and check a sink behind the journal's memory pays), and visit it
/// once per sink (two: line protocol for InfluxDB, the values for the local store).
fn pipeline(c: &mut Criterion) {
    let topics: Vec<Vec<_>> = (0..BATCH)
        .map(|i| {
            vec![
                ("device".into(), format!("dev-{:04}", i % 1000).into()),
                ("site".into(), format!("site-{:02}", i % 10).into()),
            ]
        })
        .collect();
    let payloads: Vec<String> = (0..BATCH)
        .map(|i| {
            format!(
                r#"{{"ts":{},"temperature":{},"humidity":48.2,"pressure":1013.25}}"#,
                TS + i as i64 * 1_000,
                21.53 + (i % 7) as f64
            )
        })
        .collect();
    let format = Format::Json(JsonOptions::default());
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(BATCH as u64));
    let mut entry = Vec::with_capacity(BATCH * 128);
    let mut lp = Vec::with_capacity(BATCH * 128);
    g.bench_function("json_journal_2_sinks_line_protocol_1000", |b| {
        b.iter(|| {
            let mut readings = Vec::with_capacity(BATCH);
            for (tags, payload) in topics.iter().zip(&payloads) {
                let ctx = Context {
                    measurement: "env",
                    tags,
                    field: "value",
                    default_device: "sensors/x",
                    received_ns: TS,
                    bounds: TimestampBounds::around(TS, 600_000_000_000, 86_400_000_000_000),
                };
                let rejects = payload::parse(&format, payload.as_bytes(), &ctx, &mut readings);
                assert!(rejects.is_empty());
            }
            entry.clear();
            reading::encode_all(&readings, &mut entry);
            drop(readings);
            // Read back (and checked) as a sink behind the journal's memory reads it; then
            // each sink visits it: line protocol for one, the values for the other.
            let read = Encoded::checked(entry.clone(), Encoding::CURRENT).unwrap();
            let mut batch = Batch::new();
            batch.push_shared(&Arc::new(read), 0..BATCH);
            lp.clear();
            line_protocol::encode(&batch, Precision::Ns, Dialect::Portable, &mut lp).unwrap();
            let mut sum = 0.0;
            batch.for_each(|r| sum += r.fields.iter().filter_map(|(_, v)| v.as_f64()).sum::<f64>());
            sum
        })
    });
    g.finish();
}

criterion_group!(benches, parsing, encoding, journal, local_store, pipeline);
criterion_main!(benches);
