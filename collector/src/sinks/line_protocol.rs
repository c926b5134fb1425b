//! Readings as InfluxDB line protocol, written through `influxdb-line-protocol`'s
//! [`LineProtocolBuilder`], which escapes measurements, tags, field keys and strings.

use influxdb_line_protocol::LineProtocolBuilder;
use serde::Deserialize;

use crate::reading::{FieldValue, Reading};

/// The unit of the timestamps written (InfluxDB's `precision` parameter).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// Seconds.
    S,
    /// Milliseconds.
    Ms,
    /// Microseconds.
    Us,
    /// Nanoseconds (the default: readings carry nanoseconds).
    #[default]
    Ns,
}

impl Precision {
    /// The name the write APIs take (`s`, `ms`, `us`, `ns`).
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::S => "s",
            Precision::Ms => "ms",
            Precision::Us => "us",
            Precision::Ns => "ns",
        }
    }

    /// Nanoseconds per unit.
    pub fn nanos(self) -> i64 {
        match self {
            Precision::S => 1_000_000_000,
            Precision::Ms => 1_000_000,
            Precision::Us => 1_000,
            Precision::Ns => 1,
        }
    }

    /// `ns` (nanoseconds since the epoch) in this unit, rounded down (a reading stays in the
    /// second, millisecond... it happened in).
    pub fn convert(self, ns: i64) -> i64 {
        ns.div_euclid(self.nanos())
    }
}

/// Appends `readings` to `buf`, one line each, timestamps in `precision`.
pub fn encode(readings: &[Reading], precision: Precision, buf: &mut Vec<u8>) {
    for r in readings {
        encode_one(r, precision, buf);
    }
}

/// Appends one reading as one line (ending in `\n`). A reading without fields (never built
/// by the sources) writes nothing.
pub fn encode_one(r: &Reading, precision: Precision, buf: &mut Vec<u8>) {
    let Some(((first_key, first_value), rest)) = r.fields.split_first() else {
        return;
    };
    let mut line = LineProtocolBuilder::new_with(std::mem::take(buf)).measurement(&r.measurement);
    for (k, v) in &r.tags {
        line = line.tag(k, v);
    }
    let mut line = match first_value {
        FieldValue::Float(v) => line.field(first_key, *v),
        FieldValue::Integer(v) => line.field(first_key, *v),
        FieldValue::Unsigned(v) => line.field(first_key, *v),
        FieldValue::Boolean(v) => line.field(first_key, *v),
        FieldValue::String(v) => line.field(first_key, v.as_str()),
    };
    for (k, v) in rest {
        line = match v {
            FieldValue::Float(v) => line.field(k, *v),
            FieldValue::Integer(v) => line.field(k, *v),
            FieldValue::Unsigned(v) => line.field(k, *v),
            FieldValue::Boolean(v) => line.field(k, *v),
            FieldValue::String(v) => line.field(k, v.as_str()),
        };
    }
    *buf = line
        .timestamp(precision.convert(r.timestamp))
        .close_line()
        .build();
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn reading() -> Reading {
        let mut r = Reading::new("we ird,m=", 1_700_000_000_123_456_789);
        r.set_tag("device", "dev 1,a=b\\c");
        r.set_tag("site", "lab");
        r.fields = vec![
            ("t emp".into(), FieldValue::Float(21.5)),
            ("n".into(), FieldValue::Integer(-3)),
            ("u".into(), FieldValue::Unsigned(7)),
            ("ok".into(), FieldValue::Boolean(true)),
            (
                "s".into(),
                FieldValue::String("say \"hi\" \\ there,=".into()),
            ),
            ("whole".into(), FieldValue::Float(20.0)),
        ];
        r
    }

    /// Parses one line with the crate's own parser, back into a reading.
    fn parse_back(text: &str) -> Reading {
        use influxdb_line_protocol::FieldValue as Lp;
        let mut lines: Vec<_> = influxdb_line_protocol::parse_lines(text)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(lines.len(), 1, "{text}");
        let line = lines.remove(0);
        let mut r = Reading::new(line.series.measurement.as_str(), line.timestamp.unwrap());
        for (k, v) in line.series.tag_set.unwrap_or_default() {
            r.set_tag(k.as_str(), v.as_str());
        }
        for (k, v) in line.field_set {
            let v = match v {
                Lp::F64(v) => FieldValue::Float(v),
                Lp::I64(v) => FieldValue::Integer(v),
                Lp::U64(v) => FieldValue::Unsigned(v),
                Lp::Boolean(v) => FieldValue::Boolean(v),
                Lp::String(v) => FieldValue::String(v.as_str().to_string()),
            };
            r.fields.push((k.as_str().to_string(), v));
        }
        r
    }

    #[test]
    fn round_trips_through_the_parser() {
        let r = reading();
        let mut buf = Vec::new();
        encode(std::slice::from_ref(&r), Precision::Ns, &mut buf);
        let text = String::from_utf8(buf).unwrap();
        assert!(text.ends_with('\n'));
        assert_eq!(parse_back(&text), r);
    }

    #[test]
    fn precision_rounds_down() {
        let mut r = reading();
        r.fields.truncate(1);
        for (p, want) in [
            (Precision::Ns, "1700000000123456789"),
            (Precision::Us, "1700000000123456"),
            (Precision::Ms, "1700000000123"),
            (Precision::S, "1700000000"),
        ] {
            let mut buf = Vec::new();
            encode_one(&r, p, &mut buf);
            let text = String::from_utf8(buf).unwrap();
            assert!(text.ends_with(&format!(" {want}\n")), "{p:?}: {text}");
        }
        assert_eq!(Precision::S.convert(-1), -1);
    }
}
