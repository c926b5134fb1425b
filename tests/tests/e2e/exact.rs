//! Bit for bit and byte for byte (issue 15): floats sent in every payload format, and names
//! made of every character a line-protocol reader cares about, come back unchanged from the
//! local store, from InfluxDB 1.x and from VictoriaMetrics (within what it keeps), or are
//! refused and dead-lettered as `docs/line-protocol.md` says.
//!
//! The values are drawn by proptest strategies, many per test and written in one go (one
//! round trip per server). The seed is printed with any failure; `EXACT_SEED=<seed>` draws
//! the same values again.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use collector::config::Config;
use collector::journal::Journal;
use collector::metrics::Metrics;
use collector::reading::{FieldValue, Reading};
use collector::sinks::dead_letter::DeadLetter;
use collector::sinks::influxdb::InfluxSink;
use collector::sinks::line_protocol::{self, Precision};
use collector::sinks::runner::{RunnerSettings, SinkRunner};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{RngAlgorithm, TestRng, TestRunner};
use simulator::fleet::Message;
use tokio_util::sync::CancellationToken;

use crate::harness::*;
use crate::influxdb::{token_file, v1_sink, v2_sink, DB};
use crate::mqtt::publish_all;

/// `n` values of `strategy`, and the seed they were drawn from.
fn sample<S: Strategy>(strategy: S, n: usize) -> (Vec<S::Value>, u64) {
    let seed = std::env::var("EXACT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand_seed);
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &bytes);
    let mut runner = TestRunner::new_with_rng(proptest::test_runner::Config::default(), rng);
    let values = (0..n)
        .map(|_| strategy.new_tree(&mut runner).unwrap().current())
        .collect();
    (values, seed)
}

fn rand_seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    t.as_nanos() as u64 ^ u64::from(std::process::id()).rotate_left(32)
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

/// Any finite float: every bit pattern, subnormals, the ends, both zeros.
fn any_float() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => any::<u64>().prop_map(f64::from_bits),
        1 => (0u64..(1 << 52)).prop_map(|b| f64::from_bits(b | (u64::from(b % 2 == 0) << 63))),
        1 => proptest::sample::select(vec![
            0.0,
            -0.0,
            f64::MAX,
            f64::MIN,
            f64::MIN_POSITIVE,
            -f64::MIN_POSITIVE,
            5e-324,
            f64::EPSILON,
            30.338208860383602,
        ]),
    ]
    .prop_filter("finite", |v| v.is_finite())
}

/// What VictoriaMetrics keeps bit for bit (its documentation promises 12 significant digits;
/// measured with 1.79, the 12th is sometimes lost): at most 11 significant digits between
/// 1e-9 and 1e15, and integers up to 2^53.
fn victoria_float() -> impl Strategy<Value = f64> {
    prop_oneof![
        (1u32..=11, 0u64..u64::MAX, -9i32..15, any::<bool>()).prop_map(
            |(digits, m, decade, negative)| {
                let low = 10u64.pow(digits - 1);
                let mantissa = low + m % (low * 9);
                let sign = if negative { "-" } else { "" };
                format!("{sign}{mantissa}e{}", decade - digits as i32 + 1)
                    .parse::<f64>()
                    .unwrap()
            }
        ),
        (-(1i64 << 53)..=(1i64 << 53)).prop_map(|i| i as f64),
        Just(0.0),
    ]
}

/// A float as text in one of the forms devices send: shortest, exponent, `Debug`'s, 17
/// significant digits.
fn text(v: f64, form: usize) -> String {
    match form % 4 {
        0 => format!("{v}"),
        1 => format!("{v:e}"),
        2 => format!("{v:?}"),
        _ => format!("{v:.16e}"),
    }
}

/// Subscriptions for every format that carries a timestamp, device from the topic.
const FORMATS: &str = r#"
[[sources.mqtt.subscriptions]]
topic = "x/json/{device}/{measurement}"
qos = 1
format = "json"
json = { timestamp_unit = "ns" }

[[sources.mqtt.subscriptions]]
topic = "x/lp/{device}"
qos = 1
format = "line_protocol"

[[sources.mqtt.subscriptions]]
topic = "x/kv/{device}/{measurement}"
qos = 1
format = "key_value"
key_value = { timestamp_unit = "ns" }

[[sources.mqtt.subscriptions]]
topic = "x/csv/{device}/{measurement}"
qos = 1
format = "csv"
csv = { columns = ["ts", "v"], timestamp_unit = "ns" }

[[sources.mqtt.subscriptions]]
topic = "x/value/{device}/{measurement}/{field}"
qos = 1
format = "value"
"#;

fn message(topic: String, payload: String) -> Message {
    Message {
        topic,
        payload: payload.into_bytes(),
        device: String::new(),
        expected: Vec::new(),
        fault: None,
    }
}

/// Value `v` at `ts` (ns) as a message of each timestamped format: device `json`, `lp`, `kv`
/// and `csv` (each followed by `suffix`), measurement `exact`, field `v`.
fn timestamped(v: f64, ts: i64, form: usize, suffix: &str) -> Vec<Message> {
    let t = text(v, form);
    vec![
        message(
            format!("x/json/json{suffix}/exact"),
            format!(r#"{{"ts":{ts},"v":{t}}}"#),
        ),
        message(format!("x/lp/lp{suffix}"), format!("exact v={t} {ts}")),
        message(format!("x/kv/kv{suffix}/exact"), format!("ts={ts} v={t}")),
        message(format!("x/csv/csv{suffix}/exact"), format!("{ts},{t}")),
    ]
}

fn float_row(device: &str, measurement: &str, field: &str, ts: i64, v: f64) -> Row {
    Row {
        measurement: measurement.into(),
        tags: vec![("device".into(), device.into())],
        field: field.into(),
        timestamp: ts,
        value: format!("float:{v}"),
    }
}

fn sorted(mut rows: Vec<Row>) -> Vec<Row> {
    rows.sort_by(|a, b| a.partial_cmp(b).unwrap());
    rows
}

/// Rows of `measurement`, without their timestamps (bare values are stamped on receipt).
fn untimed(rows: &[Row], measurement: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = rows
        .iter()
        .filter(|r| r.measurement == measurement)
        .map(|r| (r.field.clone(), r.value.clone()))
        .collect();
    out.sort();
    out
}

/// Any finite float, as JSON, line protocol, `key=value`, CSV and a bare value, in four
/// textual forms, arrives bit for bit in the local store and in influxd (JSON's floats were
/// one unit in the last place off before serde_json's `float_roundtrip`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_finite_float_in_any_format_arrives_bit_for_bit_in_the_local_store_and_influxd() {
    const N: usize = 300;
    let (values, seed) = sample(any_float(), N);
    let broker = Mosquitto::start().await;
    let influxd = Influxd::start(DB).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = collector_config(dir.path(), broker.port, "exact-floats", FORMATS)
        + &v1_sink("influxd", &influxd.url());
    let collector = InProcess::start(&toml).await;

    let t0 = now_ns() - 120_000_000_000;
    let mut messages = Vec::new();
    let mut want = Vec::new();
    let mut want_bare = Vec::new();
    for (i, &v) in values.iter().enumerate() {
        let ts = t0 + i as i64;
        messages.extend(timestamped(v, ts, i, ""));
        for device in ["json", "lp", "kv", "csv"] {
            want.push(float_row(device, "exact", "v", ts, v));
        }
        let field = format!("v{i}");
        messages.push(message(
            format!("x/value/value/exact_value/{field}"),
            text(v, i),
        ));
        want_bare.push((field, format!("float:{v}")));
    }
    want_bare.sort();
    let want = sorted(want);
    publish_all(broker.port, "sim-exact-floats", &messages).await;
    wait_for_rows(&collector.store, messages.len()).await;
    wait_for("influxd to hold every value", WAIT, || {
        influxd.count(DB, "exact") >= want.len() && influxd.count(DB, "exact_value") >= N
    })
    .await;
    let store = collector.store.clone();
    collector.stop().await;

    let stored = stored_rows(&store);
    let local: Vec<Row> = stored
        .iter()
        .filter(|r| r.measurement == "exact")
        .cloned()
        .collect();
    assert_same(&local, &want, &format!("the local store (seed {seed})"));
    assert_eq!(untimed(&stored, "exact_value"), want_bare, "seed {seed}");
    assert_same(
        &influxd.rows(DB, "exact"),
        &want,
        &format!("influxd (seed {seed})"),
    );
    assert_eq!(
        untimed(&influxd.rows(DB, "exact_value"), "exact_value"),
        want_bare,
        "seed {seed}"
    );
}

/// VictoriaMetrics keeps a float in a decimal of its own: what it keeps (see
/// [`victoria_float`]) comes back bit for bit through the v2 sink, from every format.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floats_victoriametrics_keeps_come_back_from_it_bit_for_bit() {
    const N: usize = 300;
    let (values, seed) = sample(victoria_float(), N);
    let broker = Mosquitto::start().await;
    let vm = VictoriaMetrics::start().await;
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(dir.path(), "exact");
    let toml = collector_config(dir.path(), broker.port, "exact-vm", FORMATS)
        + &v2_sink("vm", &vm.url(), &token);
    let collector = InProcess::start(&toml).await;

    // Milliseconds apart (VictoriaMetrics keeps milliseconds), an hour back (its export
    // leaves out the newest 30 s).
    let t0 = (now_ns() - 3_600_000_000_000) / 1_000_000 * 1_000_000;
    let mut messages = Vec::new();
    let mut want = Vec::new();
    for (i, &v) in values.iter().enumerate() {
        let ts = t0 + i as i64 * 1_000_000;
        // A series of its own per value: VictoriaMetrics keeps a block of a series with one
        // decimal exponent, so a series whose values span more than about 18 digits (1e15
        // and 1e-9) loses the digits of the smallest.
        let suffix = format!("-{i}");
        messages.extend(timestamped(v, ts, i, &suffix));
        for device in ["json", "lp", "kv", "csv"] {
            let device = format!("{device}{suffix}");
            want.push(float_row(&device, "exact_v", "", ts / 1_000_000, v));
        }
    }
    let want = sorted(want);
    publish_all(broker.port, "sim-exact-vm", &messages).await;
    wait_for("VictoriaMetrics to hold every value", WAIT, || {
        vm.export("exact_v").len() >= want.len()
    })
    .await;
    collector.stop().await;
    assert_same(
        &vm.export("exact_v"),
        &want,
        &format!("VictoriaMetrics (seed {seed})"),
    );
}

/// The issue's cases through the whole pipeline: a device id from the topic with a space, a
/// comma, an equals sign and a backslash, a line-protocol tag value with a backslash, and a
/// JSON float of 17 significant digits. influxd 1.6 held `odd dev,a=b\\c`, `back\\slash` and
/// `30.3382088603836`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_issues_backslashes_and_float_arrive_unchanged_in_every_store() {
    let broker = Mosquitto::start().await;
    let influxd = Influxd::start(DB).await;
    let vm = VictoriaMetrics::start().await;
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(dir.path(), "issue");
    let toml = collector_config(dir.path(), broker.port, "exact-issue", FORMATS)
        + &v1_sink("influxd", &influxd.url())
        + &v2_sink("vm", &vm.url(), &token);
    let collector = InProcess::start(&toml).await;

    let ts = (now_ns() - 3_600_000_000_000) / 1_000_000 * 1_000_000;
    let device = r"odd dev,a=b\c";
    let messages = [
        message(
            format!("x/json/{device}/exact"),
            format!(r#"{{"ts":{ts},"v":30.338208860383602}}"#),
        ),
        message(
            "x/lp/lp".into(),
            format!(r"exact,tag=back\slash v=1.5 {ts}"),
        ),
    ];
    publish_all(broker.port, "sim-exact-issue", &messages).await;
    let want = sorted(vec![
        float_row(device, "exact", "v", ts, 30.338208860383602),
        Row {
            tags: vec![
                ("device".into(), "lp".into()),
                ("tag".into(), r"back\slash".into()),
            ],
            ..float_row("lp", "exact", "v", ts, 1.5)
        },
    ]);
    wait_for_rows(&collector.store, want.len()).await;
    wait_for("influxd and VictoriaMetrics to hold both", WAIT, || {
        influxd.count(DB, "exact") >= 2 && vm.export("exact_v").len() >= 2
    })
    .await;
    let store = collector.store.clone();
    collector.stop().await;
    assert_same(&stored_rows(&store), &want, "the local store");
    assert_same(&influxd.rows(DB, "exact"), &want, "influxd");
    // VictoriaMetrics keeps 12 significant digits of the first value: its names are the test.
    let got = vm.export("exact_v");
    let names: Vec<&Vec<(String, String)>> = got.iter().map(|r| &r.tags).collect();
    let want_names: Vec<&Vec<(String, String)>> = want.iter().map(|r| &r.tags).collect();
    assert_eq!(names, want_names);
    let lp = got.iter().find(|r| r.tags[0].1 == "lp").unwrap();
    assert_eq!(lp.value, "float:1.5");
}

// ---- names: every character a reader cares about, in every part of a line ----

/// Names made of the characters line-protocol readers treat specially (a backslash most of
/// all), among others they do not; empty now and then.
fn name() -> impl Strategy<Value = String> {
    let c = prop_oneof![
        16 => proptest::sample::select(vec!['a', 'b', 'z', '_', 'é', '🍭', '\'', '\r']),
        2 => Just('\\'),
        1 => Just(','),
        1 => Just('='),
        1 => Just(' '),
        1 => Just('"'),
        1 => proptest::sample::select(vec!['#', '\t', '\n', '\0']),
    ];
    (proptest::collection::vec(c, 1..=6), 0..40).prop_map(|(c, empty)| {
        if empty == 0 {
            String::new()
        } else {
            c.into_iter().collect()
        }
    })
}

/// Readings with a random measurement, tag key and value, and float and string field keys
/// and string, each with its own timestamp and `probe` tag. A field key is never a tag key
/// and never both a float and a string field, in any reading: InfluxQL would rename the
/// column, and InfluxDB refuse the type conflict.
fn readings(n: usize, t0: i64) -> (Vec<Reading>, u64) {
    let (names, seed) = sample((name(), name(), name(), name(), name(), name()), n);
    let mut tag_keys: HashSet<String> = ["device", "probe"].map(String::from).into();
    let (mut float_keys, mut string_keys) = (HashSet::new(), HashSet::new());
    let mut out = Vec::new();
    for (i, (m, tk, tv, fk, sk, sv)) in names.into_iter().enumerate() {
        if tag_keys.contains(&fk)
            || tag_keys.contains(&sk)
            || float_keys.contains(&tk)
            || string_keys.contains(&tk)
            || string_keys.contains(&fk)
            || float_keys.contains(&sk)
            || fk == sk
            || fk == tk
            || sk == tk
        {
            continue;
        }
        let mut r = Reading::new(m, t0 + i as i64 * 1_000_000);
        r.set_tag("device", "names");
        r.set_tag("probe", i.to_string());
        r.set_tag(tk.as_str(), tv);
        r.fields = vec![
            (fk.as_str().into(), FieldValue::Float(i as f64 + 0.25)),
            (sk.as_str().into(), FieldValue::String(sv.into())),
        ];
        tag_keys.insert(tk);
        float_keys.insert(fk);
        string_keys.insert(sk);
        out.push(r);
    }
    (out, seed)
}

/// A point as a store gives it back: measurement (or VictoriaMetrics' series name), tags
/// without empty values, fields by name, timestamp.
type Point = (
    String,
    BTreeMap<String, String>,
    BTreeMap<String, String>,
    i64,
);

fn tags_of(r: &Reading) -> BTreeMap<String, String> {
    r.tags
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn value_text(v: &FieldValue) -> String {
    match v {
        FieldValue::Float(f) => format!("float:{f}"),
        FieldValue::String(s) => format!("str:{s}"),
        other => format!("{other:?}"),
    }
}

/// Writes `readings` through a sink's runner, as the collector does (journal, batches,
/// dead-letter file), and returns the ones its dialect refused, by timestamp, after checking
/// that they are exactly what the dead-letter file and its counter hold.
async fn write_through_sink(dir: &Path, toml: &str, readings: &[Reading]) -> HashSet<i64> {
    let settings = Config::from_toml(toml)
        .and_then(Config::validate)
        .unwrap_or_else(|e| panic!("test config invalid:\n{e}"));
    let s = &settings.influxdb[0];
    let sink = InfluxSink::new(s).unwrap();
    let dialect = sink.dialect();
    let metrics = Metrics::new();
    let (journal, mut writer) = Journal::open(&settings.journal, metrics.clone()).unwrap();
    journal.register_sinks(&[s.sink.as_str()]).unwrap();
    writer.append(readings).unwrap();
    drop(writer);
    let dead_letter = DeadLetter::new(dir, &s.sink, 1 << 30).with_dialect(dialect);
    let path = dead_letter.path().to_path_buf();
    let runner = RunnerSettings {
        batch: s.batch,
        retry: s.retry,
    };
    SinkRunner::new(sink, journal.reader(&s.sink).unwrap(), runner, &metrics)
        .with_dead_letter(dead_letter)
        .run(CancellationToken::new())
        .await
        .unwrap();

    let refused: HashSet<i64> = readings
        .iter()
        .filter(|r| line_protocol::encode_one(r, Precision::Ns, dialect, &mut Vec::new()).is_err())
        .map(|r| r.timestamp)
        .collect();
    let counted = metrics.sum("readings_dead_lettered_total", &[("sink", s.sink.as_str())]);
    assert_eq!(counted, refused.len() as u64, "dead-lettered readings");
    let in_file: u64 = std::fs::read_to_string(&path)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("# "))
        .filter_map(|l| {
            l.split(" readings=")
                .nth(1)?
                .split(' ')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    assert_eq!(
        in_file,
        refused.len() as u64,
        "readings in {}",
        path.display()
    );
    // Enough of them are written, backslashes and all, for the test to say something.
    let written: Vec<&Reading> = readings
        .iter()
        .filter(|r| !refused.contains(&r.timestamp))
        .collect();
    let with_backslash = written
        .iter()
        .filter(|r| {
            r.measurement.contains('\\')
                || r.tags
                    .iter()
                    .any(|(k, v)| k.contains('\\') || v.contains('\\'))
                || r.fields.iter().any(|(k, _)| k.contains('\\'))
        })
        .count();
    assert!(
        written.len() >= readings.len() / 10 && with_backslash >= 20,
        "{} of {} readings written, {with_backslash} of them with a backslash in a name",
        written.len(),
        readings.len()
    );
    refused
}

/// Every name in every part of a line comes back from influxd 1.6 as it was written, unless
/// the v1 dialect refused it (then it is in the dead-letter file, counted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_name_comes_back_from_influxd_as_it_was_or_is_dead_lettered() {
    let influxd = Influxd::start(DB).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = collector_config(dir.path(), free_port(), "names-v1", JSON_SUBSCRIPTION)
        + &v1_sink("influxd", &influxd.url());
    let t0 = now_ns() - 3_600_000_000_000;
    let (sent, seed) = readings(1500, t0);
    let refused = write_through_sink(dir.path(), &toml, &sent).await;

    let want: Vec<Point> = sent
        .iter()
        .filter(|r| !refused.contains(&r.timestamp))
        .map(|r| {
            let fields = r
                .fields
                .iter()
                .map(|(k, v)| (k.to_string(), value_text(v)))
                .collect();
            (r.measurement.to_string(), tags_of(r), fields, r.timestamp)
        })
        .collect();
    let v = influxd.query(DB, "SELECT * FROM /.*/ GROUP BY *");
    let mut got: Vec<Point> = Vec::new();
    for s in v["results"][0]["series"].as_array().into_iter().flatten() {
        let tags: BTreeMap<String, String> = s["tags"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| {
                Some((k.clone(), v.as_str().filter(|v| !v.is_empty())?.to_string()))
            })
            .collect();
        let columns: Vec<&str> = s["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        for row in s["values"].as_array().unwrap() {
            let row = row.as_array().unwrap();
            let mut fields = BTreeMap::new();
            for (c, v) in columns.iter().zip(row).skip(1) {
                let v = match v {
                    serde_json::Value::Null => continue,
                    serde_json::Value::Number(n) => format!("float:{}", n.as_f64().unwrap()),
                    serde_json::Value::String(s) => format!("str:{s}"),
                    other => format!("?{other}"),
                };
                fields.insert((*c).to_string(), v);
            }
            let name = s["name"].as_str().unwrap().to_string();
            got.push((name, tags.clone(), fields, row[0].as_i64().unwrap()));
        }
    }
    assert_points(got, want, "influxd", seed);
}

/// Every name comes back from VictoriaMetrics (series `<measurement>_<field>`, labels) as it
/// was written through the v2 sink, unless the v2 dialect refused it. (It keeps no strings:
/// a string field's series is there, its value is not compared.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_name_comes_back_from_victoriametrics_as_it_was_or_is_dead_lettered() {
    let vm = VictoriaMetrics::start().await;
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(dir.path(), "names");
    let toml = collector_config(dir.path(), free_port(), "names-v2", JSON_SUBSCRIPTION)
        + &v2_sink("vm", &vm.url(), &token);
    let t0 = (now_ns() - 3_600_000_000_000) / 1_000_000 * 1_000_000;
    let (sent, seed) = readings(1500, t0);
    let refused = write_through_sink(dir.path(), &toml, &sent).await;

    let mut want: Vec<Point> = Vec::new();
    for r in sent.iter().filter(|r| !refused.contains(&r.timestamp)) {
        for (k, v) in &r.fields {
            let value = match v {
                FieldValue::String(_) => String::new(),
                v => value_text(v),
            };
            want.push((
                format!("{}_{k}", r.measurement),
                tags_of(r),
                BTreeMap::from([(String::new(), value)]),
                r.timestamp / 1_000_000,
            ));
        }
    }
    let strings: HashSet<(String, i64)> = want
        .iter()
        .filter(|p| p.2[""].is_empty())
        .map(|p| (p.0.clone(), p.3))
        .collect();
    let got: Vec<Point> = vm
        .export(".+")
        .into_iter()
        .filter(|r| r.tags.iter().any(|(k, _)| k == "device"))
        .map(|r| {
            let value = if strings.contains(&(r.measurement.clone(), r.timestamp)) {
                String::new()
            } else {
                r.value
            };
            (
                r.measurement,
                r.tags.into_iter().collect(),
                BTreeMap::from([(String::new(), value)]),
                r.timestamp,
            )
        })
        .collect();
    assert_points(got, want, "VictoriaMetrics", seed);
}

fn assert_points(mut got: Vec<Point>, mut want: Vec<Point>, what: &str, seed: u64) {
    got.sort();
    want.sort();
    assert_same(&got, &want, &format!("{what} (seed {seed})"));
}
