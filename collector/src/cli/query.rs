//! The `telemetry-collector query` command: reads the local store, read-only (the collector
//! may be writing it meanwhile), and prints points, the latest point of each series, or a
//! per-device summary, as an aligned table, CSV or JSON.
//!
//! Output formats:
//! - `table`: for people. Columns `time measurement tags field value`; times in RFC 3339,
//!   UTC, with nanoseconds; tags as `k=v,k=v` with `\`, `,` and `=` escaped by a backslash;
//!   control characters in text shown as `\n`, `\t`, `\u{1b}` so that a row stays one line.
//! - `csv`: RFC 4180, a header line, the same columns as the table, text exactly as stored.
//! - `json`: one array of objects
//!   `{"time", "timestamp_ns", "measurement", "tags": {..}, "field", "value"}`, the value
//!   typed (numbers as numbers, a float always with a fraction or exponent, unsigned integers
//!   above `i64::MAX` as plain numbers); NaN and infinities, which JSON cannot represent, as
//!   the strings `"NaN"`, `"inf"`, `"-inf"`.

use std::io::{self, Write};
use std::path::Path;

use anyhow::{bail, Context as _};
use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::store::{
    format_time, DeviceSummary, JsonTags, JsonValue, LocalStore, Point, Query, StoreSize, TimeArg,
};
use crate::time::now_ns;

/// The arguments of `telemetry-collector query`.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct QueryArgs {
    /// Only this measurement.
    #[arg(long)]
    pub measurement: Option<String>,
    /// Only series with this tag value (repeatable; all must match).
    #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = parse_tag)]
    pub tags: Vec<(String, String)>,
    /// Only this field.
    #[arg(long)]
    pub field: Option<String>,
    /// Only this device (the `device` tag).
    #[arg(long)]
    pub device: Option<String>,
    /// Only points at or after this time: RFC 3339 (2024-05-01T12:00:00Z), a duration ago
    /// (-1h, 30m, 2days), `now`, or nanoseconds since the Unix epoch.
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    pub from: Option<TimeArg>,
    /// Only points before this time (same forms as --from).
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    pub to: Option<TimeArg>,
    /// Only the latest point of each series.
    #[arg(long)]
    pub latest: bool,
    /// What the store holds per device (series, points, the bytes of their chunks, first and
    /// last time) and in all (its size per point and per series).
    #[arg(long, conflicts_with_all = ["measurement", "tags", "field", "device", "from", "to", "latest", "limit"])]
    pub summary: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
    /// At most this many points (with --latest: series).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
}

/// How `query` prints its result.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns, for people.
    #[default]
    Table,
    /// Comma-separated values with a header line.
    Csv,
    /// One JSON array of objects.
    Json,
}

impl QueryArgs {
    /// The store query these arguments ask for, relative times counted back from `now_ns`.
    ///
    /// # Errors
    /// When a time is out of range, or `--from` is not before `--to`.
    pub fn to_query(&self, now_ns: i64) -> anyhow::Result<Query> {
        let resolve = |t: Option<TimeArg>, name: &str| -> anyhow::Result<Option<i64>> {
            t.map(|t| t.resolve(now_ns))
                .transpose()
                .map_err(|e| anyhow::anyhow!("--{name}: {e}"))
        };
        let from_ns = resolve(self.from, "from")?;
        let to_ns = resolve(self.to, "to")?;
        if let (Some(from), Some(to)) = (from_ns, to_ns) {
            if from >= to {
                bail!(
                    "--from ({}) is not before --to ({})",
                    format_time(from),
                    format_time(to)
                );
            }
        }
        Ok(Query {
            measurement: self.measurement.clone(),
            tags: self.tags.clone(),
            field: self.field.clone(),
            device: self.device.clone(),
            from_ns,
            to_ns,
            limit: self.limit,
        })
    }
}

/// Runs `query`: opens the store at `store_path` read-only and writes what `args` ask for to
/// `out`. A closed pipe (`query | head`) ends the output quietly.
///
/// # Errors
/// Bad arguments (a time out of range, `--from` not before `--to`), a store that does not
/// exist or cannot be read, a write to `out` that fails.
pub fn run(store_path: &Path, args: &QueryArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let query = args.to_query(now_ns())?;
    let store = LocalStore::open_read_only(store_path)?;
    let what = || format!("reading local store {}", store_path.display());
    let mut out = io::BufWriter::new(out);
    let written = if args.summary {
        let summary = store.summary().with_context(what)?;
        let size = store.size().with_context(what)?;
        write_summary(&mut out, &summary, &size, args.format)
    } else {
        let points = if args.latest {
            store.latest(&query)
        } else {
            store.query(&query)
        }
        .with_context(what)?;
        write_points(&mut out, &points, args.format)
    };
    match written.and_then(|()| out.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        result => result.context("writing the query result"),
    }
}

/// Writes `points` in `format`.
///
/// # Errors
/// When writing to `out` fails.
pub fn write_points(out: &mut dyn Write, points: &[Point], format: OutputFormat) -> io::Result<()> {
    match format {
        OutputFormat::Table => {
            let rows: Vec<Vec<String>> = points
                .iter()
                .map(|p| {
                    vec![
                        format_time(p.timestamp),
                        table_text(&p.measurement),
                        table_text(&format_tags(&p.tags)),
                        table_text(&p.field),
                        table_text(&p.value.to_string()),
                    ]
                })
                .collect();
            write_table(
                out,
                &["time", "measurement", "tags", "field", "value"],
                &[false; 5],
                &rows,
            )
        }
        OutputFormat::Csv => {
            writeln!(out, "time,measurement,tags,field,value")?;
            for p in points {
                writeln!(
                    out,
                    "{},{},{},{},{}",
                    format_time(p.timestamp),
                    csv_text(&p.measurement),
                    csv_text(&format_tags(&p.tags)),
                    csv_text(&p.field),
                    csv_text(&p.value.to_string()),
                )?;
            }
            Ok(())
        }
        OutputFormat::Json => write_json_array(out, points.iter().map(JsonPoint)),
    }
}

/// `bytes / count` with two decimals, `-` when there is nothing to divide by.
fn per(bytes: u64, count: u64) -> String {
    if count == 0 {
        "-".to_owned()
    } else {
        format!("{:.2}", bytes as f64 / count as f64)
    }
}

/// Writes a per-device `summary` and the store's `size` in `format`. A device's bytes are
/// those of its chunks (compressed; its points not yet compacted take none there); the
/// store's are its file's pages in use, everything included.
///
/// # Errors
/// When writing to `out` fails.
pub fn write_summary(
    out: &mut dyn Write,
    summary: &[DeviceSummary],
    size: &StoreSize,
    format: OutputFormat,
) -> io::Result<()> {
    let points: u64 = summary.iter().map(|s| s.points).sum();
    let series: u64 = summary.iter().map(|s| s.series).sum();
    let used = size.used_bytes();
    match format {
        OutputFormat::Table => {
            let rows: Vec<Vec<String>> = summary
                .iter()
                .map(|s| {
                    vec![
                        s.device
                            .as_deref()
                            .map_or_else(|| "(none)".to_owned(), table_text),
                        s.series.to_string(),
                        s.points.to_string(),
                        s.bytes.to_string(),
                        per(s.bytes, s.points),
                        format_time(s.first_ns),
                        format_time(s.last_ns),
                    ]
                })
                .collect();
            write_table(
                out,
                &[
                    "device",
                    "series",
                    "points",
                    "bytes",
                    "bytes/point",
                    "first",
                    "last",
                ],
                &[false, true, true, true, true, false, false],
                &rows,
            )?;
            writeln!(
                out,
                "store: {series} series, {points} points in {used} bytes ({} bytes per point, \
                 {} per series); file {} bytes ({} free), WAL {} bytes",
                per(used, points),
                per(used, series),
                size.file_bytes,
                size.free_bytes,
                size.wal_bytes,
            )
        }
        OutputFormat::Csv => {
            writeln!(out, "device,series,points,bytes,bytes_per_point,first,last")?;
            for s in summary {
                writeln!(
                    out,
                    "{},{},{},{},{},{},{}",
                    csv_text(s.device.as_deref().unwrap_or("")),
                    s.series,
                    s.points,
                    s.bytes,
                    per(s.bytes, s.points),
                    format_time(s.first_ns),
                    format_time(s.last_ns),
                )?;
            }
            Ok(())
        }
        OutputFormat::Json => {
            writeln!(out, "{{\"devices\":")?;
            write_json_array(out, summary.iter().map(JsonSummary))?;
            let store = serde_json::json!({
                "series": series,
                "points": points,
                "used_bytes": used,
                "file_bytes": size.file_bytes,
                "free_bytes": size.free_bytes,
                "wal_bytes": size.wal_bytes,
            });
            writeln!(out, ",\"store\":{store}}}")
        }
    }
}

fn parse_tag(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

/// `k=v,k=v`, with `\`, `,` and `=` escaped so that the pairs can be told apart.
fn format_tags(tags: &[(String, String)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in tags.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_escaped_tag(&mut out, k);
        out.push('=');
        push_escaped_tag(&mut out, v);
    }
    out
}

fn push_escaped_tag(out: &mut String, s: &str) {
    for c in s.chars() {
        if matches!(c, '\\' | ',' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
}

/// `s` with control characters escaped, so that a table row stays on one line.
fn table_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

/// `s` as one CSV field (RFC 4180): quoted, quotes doubled, when it holds a comma, a quote
/// or a line break.
fn csv_text(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// Columns separated by two spaces, each as wide as its widest cell; `right` marks the
/// right-aligned ones. No trailing spaces.
fn write_table(
    out: &mut dyn Write,
    header: &[&str],
    right: &[bool],
    rows: &[Vec<String>],
) -> io::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let last = header.len().saturating_sub(1);
    let mut line = |cells: &mut dyn Iterator<Item = &str>| -> io::Result<()> {
        let mut text = String::new();
        for (i, cell) in cells.enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            let pad = widths[i].saturating_sub(cell.chars().count());
            if right[i] {
                text.extend(std::iter::repeat_n(' ', pad));
                text.push_str(cell);
            } else {
                text.push_str(cell);
                if i < last {
                    text.extend(std::iter::repeat_n(' ', pad));
                }
            }
        }
        writeln!(out, "{text}")
    };
    line(&mut header.iter().copied())?;
    for row in rows {
        line(&mut row.iter().map(String::as_str))?;
    }
    Ok(())
}

/// `[`, one object per line, `]`.
fn write_json_array<T: Serialize>(
    out: &mut dyn Write,
    items: impl Iterator<Item = T>,
) -> io::Result<()> {
    out.write_all(b"[")?;
    let mut first = true;
    for item in items {
        out.write_all(if first { b"\n" } else { b",\n" })?;
        first = false;
        serde_json::to_writer(&mut *out, &item)?;
    }
    out.write_all(if first { b"]\n" } else { b"\n]\n" })
}

struct JsonPoint<'a>(&'a Point);

impl Serialize for JsonPoint<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let p = self.0;
        let mut map = serializer.serialize_map(Some(6))?;
        map.serialize_entry("time", &format_time(p.timestamp))?;
        map.serialize_entry("timestamp_ns", &p.timestamp)?;
        map.serialize_entry("measurement", &p.measurement)?;
        map.serialize_entry("tags", &JsonTags(&p.tags))?;
        map.serialize_entry("field", &p.field)?;
        map.serialize_entry("value", &JsonValue(&p.value))?;
        map.end()
    }
}

struct JsonSummary<'a>(&'a DeviceSummary);

impl Serialize for JsonSummary<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let s = self.0;
        let mut map = serializer.serialize_map(Some(8))?;
        map.serialize_entry("device", &s.device)?;
        map.serialize_entry("series", &s.series)?;
        map.serialize_entry("points", &s.points)?;
        map.serialize_entry("bytes", &s.bytes)?;
        map.serialize_entry("first", &format_time(s.first_ns))?;
        map.serialize_entry("first_ns", &s.first_ns)?;
        map.serialize_entry("last", &format_time(s.last_ns))?;
        map.serialize_entry("last_ns", &s.last_ns)?;
        map.end()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    use clap::Parser;
    use tempfile::TempDir;

    use std::time::Duration;

    use crate::reading::{FieldValue, Reading, DEVICE_TAG};

    const T0: i64 = 1_700_000_000_000_000_000;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: QueryArgs,
    }

    fn parse(args: &[&str]) -> Result<QueryArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("query").chain(args.iter().copied())).map(|c| c.args)
    }

    /// A small fixed dataset: two devices, every type, text that needs quoting.
    fn fixture() -> (TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let mut store = LocalStore::open(&path).unwrap();
        let mut r1 = Reading::new("env", T0);
        r1.set_tag(DEVICE_TAG, "dev-1");
        r1.set_tag("site", "lab");
        r1.fields = vec![
            ("temperature".into(), FieldValue::Float(21.5)),
            ("ok".into(), FieldValue::Boolean(true)),
        ];
        let mut r2 = r1.clone();
        r2.timestamp = T0 + 1_500_000_000;
        r2.fields = vec![("temperature".into(), FieldValue::Float(22.0))];
        let mut r3 = Reading::new("env", T0 + 1);
        r3.set_tag(DEVICE_TAG, "dev-2");
        r3.set_tag("site", "a,b=c");
        r3.fields = vec![
            ("note".into(), FieldValue::String("say \"hi\",\nbye".into())),
            ("total".into(), FieldValue::Unsigned(u64::MAX)),
            ("delta".into(), FieldValue::Integer(i64::MIN)),
        ];
        let mut r4 = Reading::new("power", T0);
        r4.set_tag(DEVICE_TAG, "dev-2");
        r4.fields = vec![
            ("watts".into(), FieldValue::Float(f64::INFINITY)),
            ("idle".into(), FieldValue::Float(f64::NAN)),
        ];
        store.insert(&[r1, r2, r3, r4]).unwrap();
        (dir, path)
    }

    fn output(path: &Path, args: &[&str]) -> String {
        let args = parse(args).unwrap();
        let mut out = Vec::new();
        run(path, &args, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn table_output() {
        let (_dir, path) = fixture();
        assert_eq!(
            output(&path, &[]),
            "\
time                            measurement  tags                       field        value
2023-11-14T22:13:20.000000000Z  env          device=dev-1,site=lab      ok           true
2023-11-14T22:13:20.000000000Z  env          device=dev-1,site=lab      temperature  21.5
2023-11-14T22:13:21.500000000Z  env          device=dev-1,site=lab      temperature  22
2023-11-14T22:13:20.000000001Z  env          device=dev-2,site=a\\,b\\=c  delta        -9223372036854775808
2023-11-14T22:13:20.000000001Z  env          device=dev-2,site=a\\,b\\=c  note         say \"hi\",\\nbye
2023-11-14T22:13:20.000000001Z  env          device=dev-2,site=a\\,b\\=c  total        18446744073709551615
2023-11-14T22:13:20.000000000Z  power        device=dev-2               idle         NaN
2023-11-14T22:13:20.000000000Z  power        device=dev-2               watts        inf
"
        );
    }

    #[test]
    fn csv_output() {
        let (_dir, path) = fixture();
        assert_eq!(
            output(&path, &["--format", "csv", "--device", "dev-2"]),
            "\
time,measurement,tags,field,value
2023-11-14T22:13:20.000000001Z,env,\"device=dev-2,site=a\\,b\\=c\",delta,-9223372036854775808
2023-11-14T22:13:20.000000001Z,env,\"device=dev-2,site=a\\,b\\=c\",note,\"say \"\"hi\"\",
bye\"
2023-11-14T22:13:20.000000001Z,env,\"device=dev-2,site=a\\,b\\=c\",total,18446744073709551615
2023-11-14T22:13:20.000000000Z,power,device=dev-2,idle,NaN
2023-11-14T22:13:20.000000000Z,power,device=dev-2,watts,inf
"
        );
    }

    #[test]
    fn json_output() {
        let (_dir, path) = fixture();
        let out = output(&path, &["--format", "json"]);
        assert_eq!(
            out,
            r#"[
{"time":"2023-11-14T22:13:20.000000000Z","timestamp_ns":1700000000000000000,"measurement":"env","tags":{"device":"dev-1","site":"lab"},"field":"ok","value":true},
{"time":"2023-11-14T22:13:20.000000000Z","timestamp_ns":1700000000000000000,"measurement":"env","tags":{"device":"dev-1","site":"lab"},"field":"temperature","value":21.5},
{"time":"2023-11-14T22:13:21.500000000Z","timestamp_ns":1700000001500000000,"measurement":"env","tags":{"device":"dev-1","site":"lab"},"field":"temperature","value":22.0},
{"time":"2023-11-14T22:13:20.000000001Z","timestamp_ns":1700000000000000001,"measurement":"env","tags":{"device":"dev-2","site":"a,b=c"},"field":"delta","value":-9223372036854775808},
{"time":"2023-11-14T22:13:20.000000001Z","timestamp_ns":1700000000000000001,"measurement":"env","tags":{"device":"dev-2","site":"a,b=c"},"field":"note","value":"say \"hi\",\nbye"},
{"time":"2023-11-14T22:13:20.000000001Z","timestamp_ns":1700000000000000001,"measurement":"env","tags":{"device":"dev-2","site":"a,b=c"},"field":"total","value":18446744073709551615},
{"time":"2023-11-14T22:13:20.000000000Z","timestamp_ns":1700000000000000000,"measurement":"power","tags":{"device":"dev-2"},"field":"idle","value":"NaN"},
{"time":"2023-11-14T22:13:20.000000000Z","timestamp_ns":1700000000000000000,"measurement":"power","tags":{"device":"dev-2"},"field":"watts","value":"inf"}
]
"#
        );
        // It is JSON, and the big numbers are exact.
        let parsed: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(parsed[5]["value"].as_u64(), Some(u64::MAX));
        assert_eq!(parsed[3]["value"].as_i64(), Some(i64::MIN));
        assert_eq!(
            output(&path, &["--format", "json", "--device", "nobody"]),
            "[]\n"
        );
    }

    #[test]
    fn filters_latest_and_limit() {
        let (_dir, path) = fixture();
        assert_eq!(
            output(
                &path,
                &[
                    "--latest",
                    "--measurement",
                    "env",
                    "--field",
                    "temperature",
                    "--format",
                    "csv"
                ]
            ),
            "time,measurement,tags,field,value\n\
             2023-11-14T22:13:21.500000000Z,env,\"device=dev-1,site=lab\",temperature,22\n"
        );
        assert_eq!(
            output(
                &path,
                &[
                    "--tag",
                    "site=lab",
                    "--tag",
                    "device=dev-1",
                    "--to",
                    "1700000000000000001",
                    "--format",
                    "csv"
                ]
            ),
            "time,measurement,tags,field,value\n\
             2023-11-14T22:13:20.000000000Z,env,\"device=dev-1,site=lab\",ok,true\n\
             2023-11-14T22:13:20.000000000Z,env,\"device=dev-1,site=lab\",temperature,21.5\n"
        );
        assert_eq!(
            output(
                &path,
                &["--from", "2023-11-14T22:13:21Z", "--format", "csv"]
            ),
            "time,measurement,tags,field,value\n\
             2023-11-14T22:13:21.500000000Z,env,\"device=dev-1,site=lab\",temperature,22\n"
        );
        assert_eq!(
            output(&path, &["--limit", "3", "--format", "csv"])
                .lines()
                .count(),
            4
        );
        // Relative times count back from now: the fixture lies in the past.
        assert_eq!(
            output(&path, &["--from", "-1h", "--format", "csv"])
                .lines()
                .count(),
            1
        );
        // Header, 8 points, and the line break inside the quoted note.
        assert_eq!(
            output(&path, &["--to=-1h", "--format", "csv"])
                .lines()
                .count(),
            10
        );
        assert_eq!(
            output(&path, &["--measurement", "nothing"]),
            "time  measurement  tags  field  value\n"
        );
    }

    #[test]
    fn summary_output() {
        let (_dir, path) = fixture();
        // The points are not compacted yet: no chunk bytes.
        let size = LocalStore::open_read_only(&path).unwrap().size().unwrap();
        let used = size.used_bytes();
        assert_eq!(
            output(&path, &["--summary"]),
            format!(
                "\
device  series  points  bytes  bytes/point  first                           last
dev-1        2       3      0         0.00  2023-11-14T22:13:20.000000000Z  2023-11-14T22:13:21.500000000Z
dev-2        5       5      0         0.00  2023-11-14T22:13:20.000000000Z  2023-11-14T22:13:20.000000001Z
store: 7 series, 8 points in {used} bytes ({:.2} bytes per point, {:.2} per series); file {} bytes ({} free), WAL {} bytes
",
                used as f64 / 8.0,
                used as f64 / 7.0,
                size.file_bytes,
                size.free_bytes,
                size.wal_bytes
            )
        );
        assert_eq!(
            output(&path, &["--summary", "--format", "csv"]),
            "\
device,series,points,bytes,bytes_per_point,first,last
dev-1,2,3,0,0.00,2023-11-14T22:13:20.000000000Z,2023-11-14T22:13:21.500000000Z
dev-2,5,5,0,0.00,2023-11-14T22:13:20.000000000Z,2023-11-14T22:13:20.000000001Z
"
        );
        assert_eq!(
            output(&path, &["--summary", "--format", "json"]),
            format!(
                r#"{{"devices":
[
{{"device":"dev-1","series":2,"points":3,"bytes":0,"first":"2023-11-14T22:13:20.000000000Z","first_ns":1700000000000000000,"last":"2023-11-14T22:13:21.500000000Z","last_ns":1700000001500000000}},
{{"device":"dev-2","series":5,"points":5,"bytes":0,"first":"2023-11-14T22:13:20.000000000Z","first_ns":1700000000000000000,"last":"2023-11-14T22:13:20.000000001Z","last_ns":1700000000000000001}}
]
,"store":{{"file_bytes":{},"free_bytes":{},"points":8,"series":7,"used_bytes":{used},"wal_bytes":{}}}}}
"#,
                size.file_bytes, size.free_bytes, size.wal_bytes
            )
        );
        serde_json::from_str::<serde_json::Value>(&output(
            &path,
            &["--summary", "--format", "json"],
        ))
        .unwrap();
    }

    #[test]
    fn times_parse() {
        let at = |s: &str| s.parse::<TimeArg>();
        assert_eq!(at("-1h"), Ok(TimeArg::Ago(Duration::from_secs(3600))));
        assert_eq!(at("30m"), Ok(TimeArg::Ago(Duration::from_secs(1800))));
        assert_eq!(at("1h30m"), Ok(TimeArg::Ago(Duration::from_secs(5400))));
        assert_eq!(
            at("-2days"),
            Ok(TimeArg::Ago(Duration::from_secs(2 * 86_400)))
        );
        assert_eq!(at("now"), Ok(TimeArg::Ago(Duration::ZERO)));
        assert_eq!(
            at("2024-05-01T12:00:00Z"),
            Ok(TimeArg::At(1_714_564_800_000_000_000))
        );
        assert_eq!(
            at("2024-05-01T14:00:00.000000007+02:00"),
            Ok(TimeArg::At(1_714_564_800_000_000_007))
        );
        assert_eq!(
            at("1714564800000000000"),
            Ok(TimeArg::At(1_714_564_800_000_000_000))
        );
        assert_eq!(at("-5"), Ok(TimeArg::At(-5)));
        for bad in [
            "",
            "yesterday",
            "1x",
            "2024-13-01T00:00:00Z",
            "2024-05-01",
            "--1h",
            "9999-01-01T00:00:00Z",
        ] {
            assert!(at(bad).is_err(), "{bad:?}");
        }
        assert!(at("9999-01-01T00:00:00Z")
            .unwrap_err()
            .contains("outside the years"));

        assert_eq!(
            TimeArg::Ago(Duration::from_secs(1)).resolve(T0),
            Ok(T0 - 1_000_000_000)
        );
        assert_eq!(TimeArg::At(7).resolve(T0), Ok(7));
        assert!(TimeArg::Ago(Duration::from_secs(400 * 365 * 86_400))
            .resolve(T0)
            .is_err());
    }

    #[test]
    fn bad_arguments_are_clear_errors() {
        let err = |args: &[&str]| parse(args).unwrap_err().to_string();
        let e = err(&["--format", "xml"]);
        assert!(
            e.contains("invalid value 'xml' for '--format <FORMAT>'")
                && e.contains("table, csv, json"),
            "{e}"
        );
        let e = err(&["--tag", "site"]);
        assert!(e.contains("expected KEY=VALUE, got \"site\""), "{e}");
        let e = err(&["--tag", "=lab"]);
        assert!(e.contains("expected KEY=VALUE"), "{e}");
        let e = err(&["--from", "last tuesday"]);
        assert!(
            e.contains("'--from <TIME>'") && e.contains("is not a time"),
            "{e}"
        );
        let e = err(&["--limit", "-1"]);
        assert!(e.contains("unexpected argument '-1'"), "{e}");
        let e = err(&["--limit", "ten"]);
        assert!(e.contains("invalid value 'ten' for '--limit <N>'"), "{e}");
        let e = err(&["--summary", "--latest"]);
        assert!(e.contains("cannot be used with"), "{e}");
        let e = err(&["--summary", "--device", "d"]);
        assert!(e.contains("cannot be used with"), "{e}");

        // A tag value may hold '=': only the first one separates.
        assert_eq!(
            parse(&["--tag", "k=a=b"]).unwrap().tags,
            vec![("k".to_owned(), "a=b".to_owned())]
        );

        let args = parse(&[
            "--from",
            "2024-05-01T12:00:00Z",
            "--to",
            "2024-05-01T11:00:00Z",
        ])
        .unwrap();
        let e = format!("{:#}", args.to_query(T0).unwrap_err());
        assert_eq!(
            e,
            "--from (2024-05-01T12:00:00.000000000Z) is not before --to (2024-05-01T11:00:00.000000000Z)"
        );
    }

    #[test]
    fn a_missing_store_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nothing.db");
        let err = run(&path, &QueryArgs::default(), &mut Vec::new()).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            format!("local store {} does not exist", path.display())
        );
    }

    #[test]
    fn a_closed_pipe_ends_the_output_quietly() {
        struct ClosedPipe;
        impl Write for ClosedPipe {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
        }
        let (_dir, path) = fixture();
        run(&path, &QueryArgs::default(), &mut ClosedPipe).unwrap();
    }
}
