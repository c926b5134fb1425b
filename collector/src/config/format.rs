//! The payload format of a source's section (`format = "json"` and its option tables), and
//! its check into a [`Format`] the parsers run on.

use serde::Deserialize;

use super::problems::Problems;
use crate::payload::{CsvOptions, Format, JsonOptions, TimeUnit};

/// The payload format of a subscription.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FormatName {
    /// A flat JSON object.
    #[default]
    Json,
    /// InfluxDB line protocol.
    LineProtocol,
    /// A bare value.
    Value,
    /// `key=value` pairs.
    KeyValue,
    /// CSV with configured column names.
    Csv,
}

/// `[sources.mqtt.subscriptions.json]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct JsonConfig {
    /// The key holding the timestamp.
    pub timestamp_key: String,
    /// `auto`, `s`, `ms`, `us`, `ns` or `rfc3339`.
    pub timestamp_unit: TimeUnit,
    /// Keys whose values become tags.
    pub tag_keys: Vec<String>,
    /// Keep integer literals as integers instead of floats.
    pub keep_integers: bool,
}

impl Default for JsonConfig {
    fn default() -> Self {
        let d = JsonOptions::default();
        JsonConfig {
            timestamp_key: d.timestamp_key,
            timestamp_unit: d.timestamp_unit,
            tag_keys: d.tag_keys,
            keep_integers: d.keep_integers,
        }
    }
}

/// `[sources.mqtt.subscriptions.line_protocol]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct LineProtocolConfig {
    /// The unit of the timestamps: `s`, `ms`, `us` or `ns`.
    pub precision: TimeUnit,
}

impl Default for LineProtocolConfig {
    fn default() -> Self {
        LineProtocolConfig {
            precision: TimeUnit::Ns,
        }
    }
}

/// The `csv` options of a source: the columns, and the same choices as for JSON keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct CsvConfig {
    /// The name of each column, in order (required); `_` ignores a column.
    pub columns: Vec<String>,
    /// One character between cells.
    pub delimiter: String,
    /// The column holding the timestamp.
    pub timestamp_column: String,
    /// `auto`, `s`, `ms`, `us`, `ns` or `rfc3339`.
    pub timestamp_unit: TimeUnit,
    /// Columns whose values become tags.
    pub tag_columns: Vec<String>,
    /// Keep integer cells as integers instead of floats.
    pub keep_integers: bool,
}

impl Default for CsvConfig {
    fn default() -> Self {
        let d = JsonOptions::default();
        CsvConfig {
            columns: Vec::new(),
            delimiter: ",".to_string(),
            timestamp_column: d.timestamp_key,
            timestamp_unit: d.timestamp_unit,
            tag_columns: d.tag_keys,
            keep_integers: d.keep_integers,
        }
    }
}

/// The options of every payload format, as a source's section has them.
pub(super) struct FormatOptions<'a> {
    pub(super) json: &'a JsonConfig,
    pub(super) line_protocol: &'a LineProtocolConfig,
    pub(super) key_value: &'a JsonConfig,
    pub(super) csv: &'a CsvConfig,
}

/// The payload format `name` with its options, checked; `path` is the section's key path.
pub(super) fn payload_format(
    name: FormatName,
    o: &FormatOptions<'_>,
    path: &str,
    p: &mut Problems,
) -> Format {
    let fields = |j: &JsonConfig| JsonOptions {
        timestamp_key: j.timestamp_key.clone(),
        timestamp_unit: j.timestamp_unit,
        tag_keys: j.tag_keys.clone(),
        keep_integers: j.keep_integers,
    };
    match name {
        FormatName::Json => Format::Json(fields(o.json)),
        FormatName::KeyValue => Format::KeyValue(fields(o.key_value)),
        FormatName::LineProtocol => {
            p.check(
                !matches!(
                    o.line_protocol.precision,
                    TimeUnit::Auto | TimeUnit::Rfc3339
                ),
                format!("{path}.line_protocol.precision"),
                "must be s, ms, us or ns",
            );
            Format::LineProtocol {
                precision: o.line_protocol.precision,
            }
        }
        FormatName::Value => Format::Value,
        FormatName::Csv => {
            let c = o.csv;
            p.check(
                !c.columns.is_empty(),
                format!("{path}.csv.columns"),
                "must not be empty",
            );
            for (i, col) in c.columns.iter().enumerate() {
                p.check(
                    col == "_" || !c.columns[..i].contains(col),
                    format!("{path}.csv.columns"),
                    format!("`{col}` appears twice"),
                );
            }
            let mut chars = c.delimiter.chars();
            let delimiter = match (chars.next(), chars.next()) {
                (Some(d), None) if !matches!(d, '\r' | '\n' | '"') => d,
                _ => {
                    p.add(
                        format!("{path}.csv.delimiter"),
                        "must be one character (not a quote or a line ending)",
                    );
                    ','
                }
            };
            Format::Csv(CsvOptions {
                columns: c.columns.clone(),
                delimiter,
                fields: JsonOptions {
                    timestamp_key: c.timestamp_column.clone(),
                    timestamp_unit: c.timestamp_unit,
                    tag_keys: c.tag_columns.clone(),
                    keep_integers: c.keep_integers,
                },
            })
        }
    }
}
