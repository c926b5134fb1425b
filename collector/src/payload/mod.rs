//! Payload parsers shared by every source: JSON objects, InfluxDB line protocol, bare values,
//! `key=value` pairs and CSV rows.
//!
//! A parser turns one payload (an MQTT message, a serial line) into readings, or rejects it
//! with a [`Reject`] whose [`reason`](Reject::reason) is the label it is counted under. No
//! input makes a parser panic or allocate more than a small multiple of the input's size.

mod csv;
mod fields;
#[cfg(test)]
mod fuzz;
mod json;
mod key_value;
mod line_protocol;
mod timestamp;

pub use timestamp::{TimeUnit, TimestampBounds};

use crate::reading::{CompactString, FieldValue, Reading, DEVICE_TAG};

/// What a payload is, with the options of that format.
#[derive(Debug, Clone, PartialEq)]
pub enum Format {
    /// A flat JSON object: numbers, booleans and strings become fields, except the timestamp
    /// key and the keys named as tags.
    Json(JsonOptions),
    /// InfluxDB line protocol, one or more lines.
    LineProtocol {
        /// The unit of the timestamps in the lines.
        precision: TimeUnit,
    },
    /// A bare value (`21.5`, `-3`, `true`, or text); the field name comes from the context.
    Value,
    /// `key=value` pairs (`t=21.5 h=40.1`); the options work as for JSON objects.
    KeyValue(JsonOptions),
    /// A CSV row with configured column names.
    Csv(CsvOptions),
}

/// Options of the CSV format.
#[derive(Debug, Clone, PartialEq)]
pub struct CsvOptions {
    /// The name of each column, in order; `_` ignores a column.
    pub columns: Vec<String>,
    /// The cell delimiter.
    pub delimiter: char,
    /// Which column is the timestamp, which are tags, whether integers stay integers: as the
    /// keys of a JSON object.
    pub fields: JsonOptions,
}

/// Options of the JSON format, also used by `key=value` pairs and CSV rows.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonOptions {
    /// The key holding the device's timestamp; absent from a payload means "time of receipt".
    pub timestamp_key: String,
    /// The unit of a numeric timestamp (`auto` infers it from the magnitude).
    pub timestamp_unit: TimeUnit,
    /// Keys whose values become tags instead of fields.
    pub tag_keys: Vec<String>,
    /// Whether integer literals stay integers (`true`) or become floats like every other
    /// number (`false`, the default: a field then never changes type between messages, which
    /// InfluxDB would reject as a type conflict).
    pub keep_integers: bool,
}

impl Default for JsonOptions {
    fn default() -> Self {
        JsonOptions {
            timestamp_key: "ts".to_string(),
            timestamp_unit: TimeUnit::Auto,
            tag_keys: Vec::new(),
            keep_integers: false,
        }
    }
}

/// What the parser knows besides the payload: where it came from and when.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The measurement, unless the payload names its own (line protocol does).
    pub measurement: &'a str,
    /// Tags from the source (topic segments, configured tags); a payload's own tags win.
    pub tags: &'a [(CompactString, CompactString)],
    /// The field name for [`Format::Value`].
    pub field: &'a str,
    /// The device id to use when neither the payload nor `tags` has one.
    pub default_device: &'a str,
    /// Time of receipt, in nanoseconds since the epoch.
    pub received_ns: i64,
    /// Timestamps outside these bounds are rejected.
    pub bounds: TimestampBounds,
}

/// Why a payload (or one line of it) was not turned into a reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reject {
    /// The payload is larger than the configured maximum.
    Oversized,
    /// The payload is not valid UTF-8.
    InvalidUtf8,
    /// The payload is not a JSON object.
    InvalidJson,
    /// A JSON value is an array, an object or null.
    UnsupportedValue,
    /// The timestamp is not a number or date in the configured unit.
    InvalidTimestamp,
    /// The timestamp is further in the future or the past than allowed.
    TimestampOutOfRange,
    /// The payload has no field.
    NoFields,
    /// A line is not valid line protocol.
    InvalidLineProtocol,
    /// A bare value is empty.
    InvalidValue,
    /// A line is not `key=value` pairs.
    InvalidKeyValue,
    /// A CSV row does not have one cell per configured column.
    InvalidCsv,
    /// A serial line longer than the configured maximum (discarded up to the next delimiter).
    LineTooLong,
    /// A serial line cut short by a disconnect.
    PartialLine,
    /// A polled serial instrument did not answer in time.
    PollTimeout,
}

impl Reject {
    /// Every reason, for listing counters.
    pub const ALL: [Reject; 14] = [
        Reject::Oversized,
        Reject::InvalidUtf8,
        Reject::InvalidJson,
        Reject::UnsupportedValue,
        Reject::InvalidTimestamp,
        Reject::TimestampOutOfRange,
        Reject::NoFields,
        Reject::InvalidLineProtocol,
        Reject::InvalidValue,
        Reject::InvalidKeyValue,
        Reject::InvalidCsv,
        Reject::LineTooLong,
        Reject::PartialLine,
        Reject::PollTimeout,
    ];

    /// The label this rejection is counted under.
    pub fn reason(self) -> &'static str {
        match self {
            Reject::Oversized => "oversized",
            Reject::InvalidUtf8 => "invalid_utf8",
            Reject::InvalidJson => "invalid_json",
            Reject::UnsupportedValue => "unsupported_value",
            Reject::InvalidTimestamp => "invalid_timestamp",
            Reject::TimestampOutOfRange => "timestamp_out_of_range",
            Reject::NoFields => "no_fields",
            Reject::InvalidLineProtocol => "invalid_line_protocol",
            Reject::InvalidValue => "invalid_value",
            Reject::InvalidKeyValue => "invalid_key_value",
            Reject::InvalidCsv => "invalid_csv",
            Reject::LineTooLong => "line_too_long",
            Reject::PartialLine => "partial_line",
            Reject::PollTimeout => "poll_timeout",
        }
    }
}

impl std::fmt::Display for Reject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason())
    }
}

/// Parses `payload` into `out`. Returns the rejections: for most formats the whole payload
/// is one reading or one rejection (a CSV header line is neither); line protocol rejects
/// line by line and keeps the good lines.
pub fn parse(
    format: &Format,
    payload: &[u8],
    ctx: &Context<'_>,
    out: &mut Vec<Reading>,
) -> Vec<Reject> {
    let text = match std::str::from_utf8(payload) {
        Ok(t) => t,
        Err(_) => return vec![Reject::InvalidUtf8],
    };
    match format {
        Format::Json(opts) => json::parse(text, opts, ctx)
            .map(|r| out.push(r))
            .err()
            .into_iter()
            .collect(),
        Format::LineProtocol { precision } => line_protocol::parse(text, *precision, ctx, out),
        Format::Value => parse_value(text, ctx)
            .map(|r| out.push(r))
            .err()
            .into_iter()
            .collect(),
        Format::KeyValue(opts) => key_value::parse(text, opts, ctx)
            .map(|r| out.push(r))
            .err()
            .into_iter()
            .collect(),
        Format::Csv(opts) => csv::parse(text, opts, ctx)
            .map(|r| out.extend(r))
            .err()
            .into_iter()
            .collect(),
    }
}

fn parse_value(text: &str, ctx: &Context<'_>) -> Result<Reading, Reject> {
    let text = text.trim();
    if text.is_empty() {
        return Err(Reject::InvalidValue);
    }
    let value = if let Ok(v) = text.parse::<f64>() {
        if !v.is_finite() {
            return Err(Reject::InvalidValue);
        }
        FieldValue::Float(v)
    } else {
        match text {
            "true" | "TRUE" | "True" => FieldValue::Boolean(true),
            "false" | "FALSE" | "False" => FieldValue::Boolean(false),
            _ => FieldValue::String(text.into()),
        }
    };
    let mut r = new_reading(ctx.measurement, ctx, ctx.received_ns);
    r.fields.push((ctx.field.into(), value));
    ensure_device(&mut r, ctx);
    Ok(r)
}

/// A reading with the context's tags, measurement and timestamp, and no fields yet (room
/// for a device tag, which most readings get from the context, and for three fields).
fn new_reading(measurement: &str, ctx: &Context<'_>, timestamp: i64) -> Reading {
    let mut tags = Vec::with_capacity(ctx.tags.len() + 1);
    tags.extend_from_slice(ctx.tags);
    Reading {
        measurement: measurement.into(),
        tags,
        fields: Vec::with_capacity(3),
        timestamp,
    }
}

/// Gives `r` the context's device id if it has none.
fn ensure_device(r: &mut Reading, ctx: &Context<'_>) {
    if r.device().is_none() {
        r.set_tag(DEVICE_TAG, ctx.default_device);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const NOW: i64 = 1_750_000_000_000_000_000;

    pub(crate) fn ctx(tags: &[(CompactString, CompactString)]) -> Context<'_> {
        Context {
            measurement: "env",
            tags,
            field: "value",
            default_device: "sensors/a/b",
            received_ns: NOW,
            bounds: TimestampBounds::around(NOW, 600_000_000_000, 86_400_000_000_000),
        }
    }

    #[test]
    fn bare_values() {
        let tags = vec![("device".into(), "d1".into())];
        let mut out = Vec::new();
        for (text, want) in [
            ("21.5", FieldValue::Float(21.5)),
            (" -3\n", FieldValue::Float(-3.0)),
            ("true", FieldValue::Boolean(true)),
            ("open", FieldValue::String("open".into())),
        ] {
            out.clear();
            assert!(parse(&Format::Value, text.as_bytes(), &ctx(&tags), &mut out).is_empty());
            assert_eq!(out[0].fields, vec![("value".into(), want)]);
            assert_eq!(out[0].timestamp, NOW);
            assert_eq!(out[0].device(), Some("d1"));
        }
        assert_eq!(
            parse(&Format::Value, b"  ", &ctx(&tags), &mut out),
            vec![Reject::InvalidValue]
        );
        assert_eq!(
            parse(&Format::Value, b"NaN", &ctx(&tags), &mut out),
            vec![Reject::InvalidValue]
        );
        assert_eq!(
            parse(&Format::Value, b"\xff1", &ctx(&tags), &mut out),
            vec![Reject::InvalidUtf8]
        );
    }

    /// Every format reads a float correctly rounded, whatever its text (shortest, exponent,
    /// 17 significant digits), and keeps the sign of zero.
    mod floats {
        use proptest::prelude::*;

        use super::super::*;
        use super::{ctx, NOW};

        /// `text` in each format that carries a number, and the value each read.
        fn read_back(text: &str) -> Vec<(&'static str, Option<FieldValue>)> {
            let tags = vec![("device".into(), "d".into())];
            let c = ctx(&tags);
            let csv = Format::Csv(CsvOptions {
                columns: vec!["v".into()],
                delimiter: ',',
                fields: JsonOptions::default(),
            });
            let cases = [
                (
                    "json",
                    Format::Json(JsonOptions::default()),
                    format!(r#"{{"v":{text}}}"#),
                ),
                (
                    "line protocol",
                    Format::LineProtocol {
                        precision: TimeUnit::Ns,
                    },
                    format!("m v={text} {NOW}"),
                ),
                (
                    "key=value",
                    Format::KeyValue(JsonOptions::default()),
                    format!("v={text}"),
                ),
                ("csv", csv, text.to_string()),
                ("bare value", Format::Value, text.to_string()),
            ];
            cases
                .into_iter()
                .map(|(name, format, payload)| {
                    let mut out = Vec::new();
                    let rejects = parse(&format, payload.as_bytes(), &c, &mut out);
                    assert!(rejects.is_empty(), "{name} {payload}: {rejects:?}");
                    let field = if name == "bare value" { "value" } else { "v" };
                    (name, out.first().and_then(|r| r.field(field)).cloned())
                })
                .collect()
        }

        fn assert_exact(v: f64) {
            for text in [
                format!("{v}"),
                format!("{v:e}"),
                format!("{v:?}"),
                format!("{v:.16e}"),
            ] {
                for (format, got) in read_back(&text) {
                    match got {
                        Some(FieldValue::Float(got)) if got.to_bits() == v.to_bits() => {}
                        other => panic!("{format} reads {text} as {other:?}, not {v:?}"),
                    }
                }
            }
        }

        #[test]
        fn the_issues_value_and_the_extremes() {
            for v in [
                30.338208860383602,
                0.1,
                -0.0,
                0.0,
                f64::MAX,
                f64::MIN,
                f64::MIN_POSITIVE,
                f64::EPSILON,
                5e-324,
                -5e-324,
                f64::from_bits(0x000f_ffff_ffff_ffff), // the largest subnormal
                9007199254740993.0,                    // above 2^53: no exact integer
                1e23,
            ] {
                assert_exact(v);
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            #[test]
            fn any_finite_float_reads_back_bit_for_bit(
                v in prop_oneof![
                    any::<u64>().prop_map(f64::from_bits),
                    (0u64..(1 << 52)).prop_map(f64::from_bits),
                ]
                .prop_filter("finite", |v| v.is_finite())
            ) {
                assert_exact(v);
            }
        }
    }
}
