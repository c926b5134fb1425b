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
use std::str::FromStr;
use std::time::Duration;

use anyhow::{bail, Context as _};
use chrono::{DateTime, SecondsFormat};
use serde::ser::{Serialize, SerializeMap, Serializer};

use super::{now_ns, DeviceSummary, LocalStore, Point, Query};
use crate::reading::FieldValue;

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
    /// What the store holds per device: series, points, first and last time.
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

/// A time given on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeArg {
    /// An absolute time, in nanoseconds since the Unix epoch.
    At(i64),
    /// That long before the moment the query runs.
    Ago(Duration),
}

impl TimeArg {
    /// The time in nanoseconds since the Unix epoch, relative times counted back from
    /// `now_ns`.
    ///
    /// # Errors
    /// A message when a relative time lies before 1677 (the range of `i64` nanoseconds).
    pub fn resolve(self, now_ns: i64) -> Result<i64, String> {
        match self {
            TimeArg::At(ns) => Ok(ns),
            TimeArg::Ago(d) => i64::try_from(d.as_nanos())
                .ok()
                .and_then(|d| now_ns.checked_sub(d))
                .ok_or_else(|| {
                    format!(
                        "{} ago is too far in the past",
                        humantime::format_duration(d)
                    )
                }),
        }
    }
}

impl FromStr for TimeArg {
    type Err = String;

    /// Parses `now`, nanoseconds since the Unix epoch (`1714564800000000000`), an RFC 3339
    /// time (`2024-05-01T12:00:00Z`), or a duration ago (`-1h`, `30m`, `1h30m`, `2days`).
    fn from_str(s: &str) -> Result<TimeArg, String> {
        let s = s.trim();
        if s == "now" {
            return Ok(TimeArg::Ago(Duration::ZERO));
        }
        if let Ok(ns) = s.parse::<i64>() {
            return Ok(TimeArg::At(ns));
        }
        if let Ok(t) = DateTime::parse_from_rfc3339(s) {
            return t
                .timestamp_nanos_opt()
                .map(TimeArg::At)
                .ok_or_else(|| format!("{s} is outside the years 1677 to 2262"));
        }
        let ago = s.strip_prefix('-').unwrap_or(s);
        if let Ok(d) = humantime::parse_duration(ago) {
            return Ok(TimeArg::Ago(d));
        }
        Err(format!(
            "{s:?} is not a time: expected RFC 3339 (2024-05-01T12:00:00Z), a duration ago \
             (-1h, 30m), now, or nanoseconds since the Unix epoch"
        ))
    }
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
        write_summary(&mut out, &summary, args.format)
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

/// Writes a per-device `summary` in `format`.
///
/// # Errors
/// When writing to `out` fails.
pub fn write_summary(
    out: &mut dyn Write,
    summary: &[DeviceSummary],
    format: OutputFormat,
) -> io::Result<()> {
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
                        format_time(s.first_ns),
                        format_time(s.last_ns),
                    ]
                })
                .collect();
            write_table(
                out,
                &["device", "series", "points", "first", "last"],
                &[false, true, true, false, false],
                &rows,
            )
        }
        OutputFormat::Csv => {
            writeln!(out, "device,series,points,first,last")?;
            for s in summary {
                writeln!(
                    out,
                    "{},{},{},{},{}",
                    csv_text(s.device.as_deref().unwrap_or("")),
                    s.series,
                    s.points,
                    format_time(s.first_ns),
                    format_time(s.last_ns),
                )?;
            }
            Ok(())
        }
        OutputFormat::Json => write_json_array(out, summary.iter().map(JsonSummary)),
    }
}

fn parse_tag(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

/// RFC 3339 in UTC with nanoseconds: `2023-11-14T22:13:20.000000000Z`.
fn format_time(ns: i64) -> String {
    DateTime::from_timestamp_nanos(ns).to_rfc3339_opts(SecondsFormat::Nanos, true)
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

struct JsonTags<'a>(&'a [(String, String)]);

impl Serialize for JsonTags<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

struct JsonValue<'a>(&'a FieldValue);

impl Serialize for JsonValue<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            FieldValue::Float(v) if v.is_finite() => serializer.serialize_f64(*v),
            FieldValue::Float(v) => serializer.serialize_str(&v.to_string()),
            FieldValue::Integer(v) => serializer.serialize_i64(*v),
            FieldValue::Unsigned(v) => serializer.serialize_u64(*v),
            FieldValue::Boolean(v) => serializer.serialize_bool(*v),
            FieldValue::String(v) => serializer.serialize_str(v),
        }
    }
}

struct JsonSummary<'a>(&'a DeviceSummary);

impl Serialize for JsonSummary<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let s = self.0;
        let mut map = serializer.serialize_map(Some(7))?;
        map.serialize_entry("device", &s.device)?;
        map.serialize_entry("series", &s.series)?;
        map.serialize_entry("points", &s.points)?;
        map.serialize_entry("first", &format_time(s.first_ns))?;
        map.serialize_entry("first_ns", &s.first_ns)?;
        map.serialize_entry("last", &format_time(s.last_ns))?;
        map.serialize_entry("last_ns", &s.last_ns)?;
        map.end()
    }
}
