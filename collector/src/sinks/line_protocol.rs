//! Readings as InfluxDB line protocol, with the escaping of `influxdb-line-protocol`'s
//! builder (and round-trip tests through that crate's parser).

use serde::Deserialize;

use crate::reading::{FieldValue, Reading, Readings};

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
pub fn encode(readings: &(impl Readings + ?Sized), precision: Precision, buf: &mut Vec<u8>) {
    readings.for_each(|r| encode_one(r, precision, buf));
}

/// Appends one reading as one line (ending in `\n`). A reading without fields (never built
/// by the sources) writes nothing.
///
/// Written by hand rather than with `influxdb_line_protocol`'s builder, which formats every
/// character through `fmt` (the builder was 1.5 µs per reading of three fields, this a
/// fraction of it); the tests round-trip through that crate's parser. Escaping is the
/// builder's, plus one rule it lacks: a line break inside a name or a tag value would end
/// the line and start another (line protocol injection), so it is written as an escaped
/// space.
pub fn encode_one(r: &Reading, precision: Precision, buf: &mut Vec<u8>) {
    if r.fields.is_empty() {
        return;
    }
    escape(buf, &r.measurement, b",  ");
    for (k, v) in &r.tags {
        buf.push(b',');
        escape(buf, k, b",= ");
        buf.push(b'=');
        escape(buf, v, b",= ");
    }
    for (i, (k, v)) in r.fields.iter().enumerate() {
        buf.push(if i == 0 { b' ' } else { b',' });
        escape(buf, k, b",= ");
        buf.push(b'=');
        match v {
            FieldValue::Float(v) => float(buf, *v),
            FieldValue::Integer(v) => {
                buf.extend_from_slice(itoa::Buffer::new().format(*v).as_bytes());
                buf.push(b'i');
            }
            FieldValue::Unsigned(v) => {
                buf.extend_from_slice(itoa::Buffer::new().format(*v).as_bytes());
                buf.push(b'u');
            }
            FieldValue::Boolean(v) => buf.extend_from_slice(if *v { b"true" } else { b"false" }),
            FieldValue::String(v) => {
                buf.push(b'"');
                for &b in v.as_bytes() {
                    if b == b'"' || b == b'\\' {
                        buf.push(b'\\');
                    }
                    buf.push(b);
                }
                buf.push(b'"');
            }
        }
    }
    buf.push(b' ');
    let ts = precision.convert(r.timestamp);
    buf.extend_from_slice(itoa::Buffer::new().format(ts).as_bytes());
    buf.push(b'\n');
}

/// Appends `s` with a backslash before each of `special` and before backslashes; a line
/// break becomes an escaped space.
fn escape(buf: &mut Vec<u8>, s: &str, special: &[u8; 3]) {
    let bytes = s.as_bytes();
    if !bytes
        .iter()
        .any(|b| special.contains(b) || matches!(b, b'\\' | b'\n' | b'\r'))
    {
        buf.extend_from_slice(bytes);
        return;
    }
    for &b in bytes {
        match b {
            b'\n' | b'\r' => buf.extend_from_slice(b"\\ "),
            b'\\' => buf.extend_from_slice(b"\\\\"),
            b if special.contains(&b) => {
                buf.push(b'\\');
                buf.push(b);
            }
            b => buf.push(b),
        }
    }
}

/// A float as the shortest text that reads back as the same value, without an exponent
/// (as Rust's `Display` writes it: `21.53`, `20`, `0.0001`).
fn float(buf: &mut Vec<u8>, v: f64) {
    let mut ryu = ryu::Buffer::new();
    let text = ryu.format(v);
    if text.bytes().any(|b| matches!(b, b'e' | b'N' | b'i')) {
        use std::io::Write as _;
        let _ = write!(buf, "{v}");
    } else {
        buf.extend_from_slice(text.strip_suffix(".0").unwrap_or(text).as_bytes());
    }
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
                Lp::String(v) => FieldValue::String(v.as_str().into()),
            };
            r.fields.push((k.as_str().into(), v));
        }
        r
    }

    #[test]
    fn floats_are_written_as_display_writes_them() {
        for v in [
            21.53,
            20.0,
            -0.5,
            1e21,
            1e-7,
            0.0001,
            1013.25,
            f64::MAX,
            -0.0,
        ] {
            let mut buf = Vec::new();
            float(&mut buf, v);
            assert_eq!(String::from_utf8(buf).unwrap(), format!("{v}"));
        }
    }

    #[test]
    fn a_line_break_cannot_start_a_second_line() {
        let mut r = reading();
        r.set_tag("device", "evil\nfake,device=x f=1 1");
        r.measurement = "m\r\nx".into();
        let mut buf = Vec::new();
        encode_one(&r, Precision::Ns, &mut buf);
        let text = String::from_utf8(buf).unwrap();
        assert_eq!(text.matches('\n').count(), 1, "{text}");
        let back = parse_back(&text);
        assert_eq!(back.tag("device"), Some("evil fake,device=x f=1 1"));
        assert_eq!(back.measurement, "m  x");
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

    proptest::proptest! {
        /// Any names and values made of the characters line protocol escapes come back as
        /// they were. (Names and tag values end in a letter: the parser refuses a tag value
        /// that ends in an escaped backslash, as it did with the builder's output.)
        #[test]
        fn any_escaped_text_round_trips(
            m in "[a-z][a-z ,=\\\\\"é]{0,8}[a-z]",
            tk in "[a-z][a-z ,=\\\\\"]{0,6}[a-z]",
            tv in "[a-z ,=\\\\\"é]{0,8}[a-z]",
            fk in "[a-z][a-z ,=\\\\\"]{0,6}",
            sv in "[a-z ,=\\\\\"é]{0,8}",
            f in proptest::num::f64::NORMAL,
            i in proptest::num::i64::ANY,
        ) {
            let mut r = Reading::new(m, 1_700_000_000_000_000_000);
            r.set_tag(tk, tv);
            r.fields = vec![
                ((fk.clone() + "f").into(), FieldValue::Float(f)),
                ((fk.clone() + "i").into(), FieldValue::Integer(i)),
                ((fk + "s").into(), FieldValue::String(sv.into())),
            ];
            let mut buf = Vec::new();
            encode_one(&r, Precision::Ns, &mut buf);
            let text = String::from_utf8(buf).unwrap();
            proptest::prop_assert_eq!(parse_back(&text), r);
        }
    }
}
