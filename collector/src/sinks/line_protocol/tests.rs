//! The encoder against the readers of each dialect: influxdata's parser (InfluxDB 3, and the
//! collector's own line-protocol input), and models of InfluxDB 1.x/2.x's Go parser and of
//! VictoriaMetrics' parser written from their source (`models/points.go`,
//! `lib/protoparser/influx/parser.go`). The end-to-end tests (`tests/tests/e2e/exact.rs`)
//! check the same against the real servers.

#![allow(clippy::unwrap_used)]

use proptest::prelude::*;

use super::*;

/// A line as a reader reads it back.
#[derive(Debug, Clone, PartialEq)]
struct Point {
    measurement: String,
    /// Sorted by key.
    tags: Vec<(String, String)>,
    fields: Vec<(String, Value)>,
    timestamp: i64,
}

#[derive(Debug, Clone, PartialEq)]
enum Value {
    /// The bits: `-0` is not `0`.
    Float(u64),
    Int(i64),
    Uint(u64),
    Bool(bool),
    Str(String),
}

/// What every reader must read back for `r` (an empty tag value is no tag).
fn expected(r: &Reading) -> Point {
    let mut tags: Vec<(String, String)> = r
        .tags
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    tags.sort();
    Point {
        measurement: r.measurement.to_string(),
        tags,
        fields: r
            .fields
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    FieldValue::Float(f) => Value::Float(f.to_bits()),
                    FieldValue::Integer(i) => Value::Int(*i),
                    FieldValue::Unsigned(u) => Value::Uint(*u),
                    FieldValue::Boolean(b) => Value::Bool(*b),
                    FieldValue::String(s) => Value::Str(s.to_string()),
                };
                (k.to_string(), v)
            })
            .collect(),
        timestamp: r.timestamp,
    }
}

/// A number as Go's and Rust's parsers read it (both correctly rounded).
fn number(text: &str) -> Option<Value> {
    if let Some(i) = text.strip_suffix('i') {
        return i.parse().ok().map(Value::Int);
    }
    if let Some(u) = text.strip_suffix('u') {
        return u.parse().ok().map(Value::Uint);
    }
    text.parse::<f64>().ok().map(|f| Value::Float(f.to_bits()))
}

/// InfluxDB 3's parser, the one in the tree.
fn influxdb3(text: &str) -> Result<Vec<Point>, String> {
    use influxdb_line_protocol::FieldValue as Lp;
    let mut out = Vec::new();
    for line in influxdb_line_protocol::parse_lines(text) {
        let line = line.map_err(|e| e.to_string())?;
        let mut tags: Vec<(String, String)> = line
            .series
            .tag_set
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        tags.sort();
        out.push(Point {
            measurement: line.series.measurement.to_string(),
            tags,
            fields: line
                .field_set
                .into_iter()
                .map(|(k, v)| {
                    let v = match v {
                        Lp::F64(v) => Value::Float(v.to_bits()),
                        Lp::I64(v) => Value::Int(v),
                        Lp::U64(v) => Value::Uint(v),
                        Lp::Boolean(v) => Value::Bool(v),
                        Lp::String(v) => Value::Str(v.to_string()),
                    };
                    (k.to_string(), v)
                })
                .collect(),
            timestamp: line.timestamp.ok_or("no timestamp")?,
        });
    }
    Ok(out)
}

/// InfluxDB 1.x/2.x's parser (`models/points.go`, the same in 1.6 and 2.9): the line
/// splitter, the key and field scanners, and the unescaping of each part when read back.
mod go {
    use super::{number, Point, Value};

    fn s(b: &[u8]) -> String {
        String::from_utf8_lossy(b).into_owned()
    }

    /// `scanLine`: the end of the line that starts at `i` (a line break outside a quoted
    /// field value). It skips the byte after any backslash.
    fn scan_line(buf: &[u8], mut i: usize) -> usize {
        let (mut quoted, mut fields, mut equals, mut commas) = (false, false, 0, 0);
        while i < buf.len() {
            if buf[i] == b'\\' {
                i += 2;
                continue;
            }
            if buf[i] == b' ' {
                fields = true;
            }
            if fields {
                if !quoted && buf[i] == b'=' {
                    i += 1;
                    equals += 1;
                    continue;
                } else if !quoted && buf[i] == b',' {
                    i += 1;
                    commas += 1;
                    continue;
                } else if buf[i] == b'"' && equals > commas {
                    i += 1;
                    quoted = !quoted;
                    continue;
                }
            }
            if buf[i] == b'\n' && !quoted {
                break;
            }
            i += 1;
        }
        i.min(buf.len())
    }

    pub(super) fn parse(text: &str) -> Result<Vec<Point>, String> {
        let buf = text.as_bytes();
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < buf.len() {
            let end = scan_line(buf, pos);
            let block = &buf[pos..end];
            pos = end + 1;
            let start = block
                .iter()
                .position(|b| !matches!(b, b' ' | b'\t' | 0))
                .unwrap_or(block.len());
            if start == block.len() || block[start] == b'#' {
                continue;
            }
            out.push(point(&block[start..])?);
        }
        Ok(out)
    }

    fn point(buf: &[u8]) -> Result<Point, String> {
        let escaped = |i: usize| buf[i - 1] == b'\\';
        // scanMeasurement
        if buf[0] == b',' {
            return Err("missing measurement".into());
        }
        let mut i = 0;
        let mut tags_follow = false;
        loop {
            i += 1;
            if i >= buf.len() {
                return Err("missing fields".into());
            }
            if escaped(i) {
                continue;
            }
            if buf[i] == b',' {
                tags_follow = true;
                break;
            }
            if buf[i] == b' ' {
                break;
            }
        }
        let measurement = unescape(&buf[..i]);
        let mut tags = Vec::new();
        if tags_follow {
            i += 1;
            loop {
                // scanTagsKey
                let k0 = i;
                if i >= buf.len() || matches!(buf[i], b' ' | b',' | b'=') {
                    return Err("missing tag key".into());
                }
                loop {
                    i += 1;
                    if i >= buf.len() || (matches!(buf[i], b' ' | b',') && !escaped(i)) {
                        return Err("missing tag value".into());
                    }
                    if buf[i] == b'=' && !escaped(i) {
                        break;
                    }
                }
                let key = &buf[k0..i];
                i += 1;
                // scanTagsValue
                let v0 = i;
                if i >= buf.len() || matches!(buf[i], b',' | b' ') {
                    return Err("missing tag value".into());
                }
                let more = loop {
                    i += 1;
                    if i >= buf.len() {
                        return Err("missing fields".into());
                    }
                    if buf[i] == b'=' && !escaped(i) {
                        return Err("invalid tag format".into());
                    }
                    if buf[i] == b',' && !escaped(i) {
                        break true;
                    }
                    if buf[i] == b' ' && !escaped(i) {
                        break false;
                    }
                };
                tags.push((unescape_tag(key), unescape_tag(&buf[v0..i])));
                i += 1;
                if !more {
                    break;
                }
            }
        } else {
            i += 1;
        }
        tags.sort();
        let (fields, end) = fields(buf, i)?;
        let rest = String::from_utf8_lossy(&buf[end..]);
        let timestamp = rest
            .trim_matches(' ')
            .parse()
            .map_err(|_| "bad timestamp")?;
        Ok(Point {
            measurement,
            tags,
            fields,
            timestamp,
        })
    }

    /// `scanFields` (which decides where the fields end and whether they are well formed),
    /// then `walkFields` (which splits them).
    fn fields(buf: &[u8], mut i: usize) -> Result<(Vec<(String, Value)>, usize), String> {
        // `skipWhitespace`: spaces, tabs and NULs.
        while i < buf.len() && matches!(buf[i], b' ' | b'\t' | 0) {
            i += 1;
        }
        let start = i;
        let (mut quoted, mut equals, mut commas) = (false, 0, 0);
        while i < buf.len() {
            if buf[i] == b'\\' && i + 1 < buf.len() {
                i += 2;
                continue;
            }
            if buf[i] == b'"' && equals > commas {
                quoted = !quoted;
                i += 1;
                continue;
            }
            if buf[i] == b'=' && !quoted {
                equals += 1;
                if matches!(buf[i - 1], b' ' | b',') && buf[i - 2] != b'\\' {
                    return Err("missing field key".into());
                }
                if i + 1 >= buf.len() || matches!(buf[i + 1], b',' | b' ') {
                    return Err("missing field value".into());
                }
                if buf[i + 1] != b'"' {
                    // A number or a boolean runs to the next comma or space.
                    i += 1;
                    while i < buf.len() && !matches!(buf[i], b',' | b' ') {
                        i += 1;
                    }
                    continue;
                }
            }
            if buf[i] == b',' && !quoted {
                commas += 1;
            }
            if buf[i] == b' ' && !quoted {
                break;
            }
            i += 1;
        }
        if quoted {
            return Err("unbalanced quotes".into());
        }
        if equals == 0 || commas != equals - 1 {
            return Err("invalid field format".into());
        }
        let mut block = &buf[start..i];
        let mut out = Vec::new();
        while !block.is_empty() {
            // scanTo '='
            let mut k = 0;
            while k < block.len() && !(block[k] == b'=' && (k == 0 || block[k - 1] != b'\\')) {
                k += 1;
            }
            let key = unescape(&block[..k]);
            block = block.get(k + 1..).unwrap_or_default();
            // scanFieldValue
            let (mut v, mut quoted) = (0, false);
            while v < block.len() {
                if block[v] == b'\\' && v + 1 < block.len() && matches!(block[v + 1], b'"' | b'\\')
                {
                    v += 2;
                    continue;
                }
                if block[v] == b'"' {
                    quoted = !quoted;
                    v += 1;
                    continue;
                }
                if block[v] == b',' && !quoted {
                    break;
                }
                v += 1;
            }
            let raw = &block[..v];
            let value = if raw.first() == Some(&b'"') && raw.len() >= 2 {
                Value::Str(unescape_string(&raw[1..raw.len() - 1]))
            } else if matches!(raw.first(), Some(b'0'..=b'9' | b'-' | b'.')) {
                number(&s(raw)).ok_or("bad number")?
            } else {
                Value::Bool(matches!(raw, b"t" | b"T" | b"true" | b"True" | b"TRUE"))
            };
            out.push((key, value));
            block = block.get(v + 1..).unwrap_or_default();
        }
        Ok((out, i))
    }

    /// `b` without the backslash before each of `escaped`.
    fn drop_escapes(b: &[u8], escaped: &[u8]) -> String {
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'\\' && i + 1 < b.len() && escaped.contains(&b[i + 1]) {
                out.push(b[i + 1]);
                i += 2;
                continue;
            }
            out.push(b[i]);
            i += 1;
        }
        s(&out)
    }

    /// `escape.Unescape` (the measurement's name) and `escape.AppendUnescaped` (field keys).
    fn unescape(b: &[u8]) -> String {
        drop_escapes(b, b",\" =")
    }

    /// `unescapeTag`: `\,`, `\ ` and `\=` replaced, one after the other (`bytes.Replace`).
    fn unescape_tag(b: &[u8]) -> String {
        let mut t = s(b);
        for c in [",", " ", "="] {
            t = t.replace(&format!("\\{c}"), c);
        }
        t
    }

    /// `unescapeStringField`: `\\` and `\"`.
    fn unescape_string(b: &[u8]) -> String {
        drop_escapes(b, b"\\\"")
    }
}

/// VictoriaMetrics' parser (`lib/protoparser/influx/parser.go`): lines split at every line
/// break, separators found by counting the backslashes before them, `\\`, `\,`, `\=` and
/// `\ ` unescaped. It keeps no strings: a string field's text is read as a number (so the
/// model returns it empty; only where the fields end matters).
mod vm {
    use super::{number, Point, Value};

    fn next_unescaped(s: &[u8], ch: u8) -> Option<usize> {
        let mut from = 0;
        loop {
            let n = from + s[from..].iter().position(|&b| b == ch)?;
            let slashes = s[..n].iter().rev().take_while(|&&b| b == b'\\').count();
            if slashes % 2 == 0 {
                return Some(n);
            }
            from = n + 1;
        }
    }

    fn in_quote(mut s: &[u8]) -> bool {
        let mut quoted = false;
        while let Some(n) = next_unescaped(s, b'"') {
            quoted = !quoted;
            s = &s[n + 1..];
        }
        quoted
    }

    fn next_unquoted(s: &[u8], ch: u8, has_quotes: bool) -> Option<usize> {
        if !has_quotes {
            return next_unescaped(s, ch);
        }
        let mut from = 0;
        loop {
            let n = from + next_unescaped(&s[from..], ch)?;
            if !in_quote(&s[from..n]) {
                return Some(n);
            }
            let rest = &s[n + 1..];
            from = n + 1 + next_unescaped(rest, b'"')? + 1;
        }
    }

    fn unescape(s: &[u8]) -> String {
        let mut out = Vec::with_capacity(s.len());
        let mut i = 0;
        while i < s.len() {
            if s[i] == b'\\' {
                match s.get(i + 1) {
                    None => out.push(b'\\'),
                    Some(&c) => {
                        if !matches!(c, b' ' | b',' | b'=' | b'\\') {
                            out.push(b'\\');
                        }
                        out.push(c);
                    }
                }
                i += 2;
                continue;
            }
            out.push(s[i]);
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    pub(super) fn parse(text: &str) -> Result<Vec<Point>, String> {
        let mut out = Vec::new();
        for line in text.as_bytes().split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() || line[0] == b'#' {
                continue;
            }
            let n = next_unescaped(line, b' ').ok_or("no space")?;
            let (mut key, mut rest) = (&line[..n], &line[n + 1..]);
            while rest.first() == Some(&b' ') {
                rest = &rest[1..];
            }
            let mut tags = Vec::new();
            if let Some(n) = next_unescaped(key, b',') {
                let mut t = &key[n + 1..];
                key = &key[..n];
                loop {
                    let end = next_unescaped(t, b',').unwrap_or(t.len());
                    let tag = &t[..end];
                    let eq = next_unescaped(tag, b'=').ok_or("tag without =")?;
                    let (k, v) = (unescape(&tag[..eq]), unescape(&tag[eq + 1..]));
                    if !k.is_empty() && !v.is_empty() {
                        tags.push((k, v));
                    }
                    if end == t.len() {
                        break;
                    }
                    t = &t[end + 1..];
                }
            }
            tags.sort();
            let has_quotes = next_unescaped(rest, b'"').is_some();
            let end = next_unquoted(rest, b' ', has_quotes).ok_or("no timestamp")?;
            let (mut f, ts) = (&rest[..end], &rest[end + 1..]);
            let mut fields = Vec::new();
            loop {
                let end = next_unquoted(f, b',', has_quotes).unwrap_or(f.len());
                let field = &f[..end];
                let eq = next_unescaped(field, b'=').ok_or("field without =")?;
                let key = unescape(&field[..eq]);
                let raw = &field[eq + 1..];
                let value = if raw.first() == Some(&b'"') {
                    if raw.len() < 2 || raw.last() != Some(&b'"') {
                        return Err("missing closing quote".into());
                    }
                    Value::Str(String::new())
                } else if matches!(raw, b"t" | b"T" | b"true" | b"True" | b"TRUE") {
                    Value::Bool(true)
                } else if matches!(raw, b"f" | b"F" | b"false" | b"False" | b"FALSE") {
                    Value::Bool(false)
                } else {
                    number(&String::from_utf8_lossy(raw)).ok_or("bad number")?
                };
                fields.push((key, value));
                if end == f.len() {
                    break;
                }
                f = &f[end + 1..];
            }
            let timestamp = String::from_utf8_lossy(ts)
                .parse()
                .map_err(|_| "bad timestamp")?;
            out.push(Point {
                measurement: unescape(key),
                tags,
                fields,
                timestamp,
            });
        }
        Ok(out)
    }
}

/// VictoriaMetrics keeps no strings: what it must read back of `p`.
fn without_strings(mut p: Point) -> Point {
    for (_, v) in &mut p.fields {
        if let Value::Str(s) = v {
            s.clear();
        }
    }
    p
}

/// A reader: text to the points it reads.
type Reader = fn(&str) -> Result<Vec<Point>, String>;

/// Every reader of `dialect` reads `text` back as `want`.
fn assert_read_back(dialect: Dialect, text: &str, want: &[Point]) {
    let readers: &[(&str, Reader)] = match dialect {
        Dialect::InfluxDb1 => &[("influxdb 1.x/2.x", go::parse)],
        Dialect::Portable => &[
            ("influxdb 1.x/2.x", go::parse),
            ("influxdb 3", influxdb3),
            ("victoriametrics", vm::parse),
        ],
        Dialect::InfluxDb3 => &[("influxdb 3", influxdb3)],
    };
    for (name, read) in readers {
        let got = read(text).unwrap_or_else(|e| panic!("{name} cannot read {text:?}: {e}"));
        if *name == "victoriametrics" {
            let want: Vec<Point> = want.iter().cloned().map(without_strings).collect();
            assert_eq!(got, want, "{name} reads {text:?}");
        } else {
            assert_eq!(got, want, "{name} reads {text:?}");
        }
    }
}

const DIALECTS: [Dialect; 3] = [Dialect::InfluxDb1, Dialect::Portable, Dialect::InfluxDb3];

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
            FieldValue::String("say \"hi\" \\ there,=\nnext".into()),
        ),
        ("whole".into(), FieldValue::Float(20.0)),
    ];
    r
}

fn line(r: &Reading, dialect: Dialect) -> Result<String, Unrepresentable> {
    let mut buf = Vec::new();
    encode_one(r, Precision::Ns, dialect, &mut buf)?;
    Ok(String::from_utf8(buf).unwrap())
}

#[test]
fn each_dialect_reads_back_as_written() {
    for dialect in [Dialect::InfluxDb1, Dialect::InfluxDb3] {
        let r = reading();
        let text = line(&r, dialect).unwrap();
        assert!(text.ends_with('\n'));
        assert_read_back(dialect, &text, &[expected(&r)]);
    }
    // VictoriaMetrics splits lines at every line break, strings or not.
    let mut r = reading();
    r.fields[4].1 = FieldValue::String("say \"hi\" \\ there,=".into());
    let text = line(&r, Dialect::Portable).unwrap();
    assert_read_back(Dialect::Portable, &text, &[expected(&r)]);
}

/// The issue's cases: a device id from a topic and a line-protocol tag value with a
/// backslash, which InfluxDB 1.x read back with it doubled.
#[test]
fn a_backslash_is_written_as_each_reader_reads_it() {
    let mut r = Reading::new("env", 1);
    r.set_tag("device", "odd dev,a=b\\c");
    r.set_tag("tag", "back\\slash");
    r.fields = vec![("v".into(), FieldValue::Float(1.0))];
    for (dialect, want) in [
        (
            Dialect::InfluxDb1,
            "env,device=odd\\ dev\\,a\\=b\\c,tag=back\\slash v=1 1\n",
        ),
        (
            Dialect::Portable,
            "env,device=odd\\ dev\\,a\\=b\\c,tag=back\\slash v=1 1\n",
        ),
        (
            Dialect::InfluxDb3,
            "env,device=odd\\ dev\\,a\\=b\\\\c,tag=back\\\\slash v=1 1\n",
        ),
    ] {
        let text = line(&r, dialect).unwrap();
        assert_eq!(text, want, "{dialect:?}");
        assert_read_back(dialect, &text, &[expected(&r)]);
    }
}

#[test]
fn what_a_dialect_cannot_say_is_refused_with_the_reason() {
    use Unrepresentable::*;
    let with_tag = |v: &str| {
        let mut r = Reading::new("m", 1);
        r.set_tag("t", v);
        r.fields = vec![("f".into(), FieldValue::Float(1.0))];
        r
    };
    let with_measurement = |m: &str| {
        let mut r = with_tag("x");
        r.measurement = m.into();
        r
    };
    let with_field = |k: &str, v: FieldValue| {
        let mut r = with_tag("x");
        r.fields = vec![(k.into(), v)];
        r
    };
    let cases: Vec<(Reading, [Option<Unrepresentable>; 3])> = vec![
        (with_tag("a\nb"), [Some(LineBreak(Part::TagValue)); 3]),
        (
            with_tag("ab\\"),
            [Some(TrailingBackslash(Part::TagValue)); 3],
        ),
        (
            with_tag("a\\ b"),
            [
                Some(BackslashBefore {
                    part: Part::TagValue,
                    next: ' ',
                }),
                Some(BackslashBefore {
                    part: Part::TagValue,
                    next: ' ',
                }),
                None,
            ],
        ),
        (
            with_tag("a\\,b"),
            [
                None,
                Some(BackslashBefore {
                    part: Part::TagValue,
                    next: ',',
                }),
                None,
            ],
        ),
        (
            with_tag("a\\\\b"),
            [
                None,
                Some(BackslashBefore {
                    part: Part::TagValue,
                    next: '\\',
                }),
                None,
            ],
        ),
        (
            with_tag("a\tb"),
            [None, Some(Tab(Part::TagValue)), Some(Tab(Part::TagValue))],
        ),
        (with_measurement(""), [Some(Empty(Part::Measurement)); 3]),
        (with_measurement("#m"), [Some(Comment); 3]),
        (
            with_measurement("\tm"),
            [
                Some(LeadingBlank(Part::Measurement)),
                Some(Tab(Part::Measurement)),
                Some(Tab(Part::Measurement)),
            ],
        ),
        (
            with_field("\0f", FieldValue::Float(1.0)),
            [
                Some(LeadingBlank(Part::FieldKey)),
                Some(LeadingBlank(Part::FieldKey)),
                None,
            ],
        ),
        (
            with_field("\tf", FieldValue::Float(1.0)),
            [
                Some(LeadingBlank(Part::FieldKey)),
                Some(LeadingBlank(Part::FieldKey)),
                Some(Tab(Part::FieldKey)),
            ],
        ),
        (with_measurement("m\0"), [None, Some(Nul), Some(Nul)]),
        (
            with_measurement("m\\\"x"),
            [
                Some(BackslashBefore {
                    part: Part::Measurement,
                    next: '"',
                }),
                Some(BackslashBefore {
                    part: Part::Measurement,
                    next: '"',
                }),
                None,
            ],
        ),
        (
            with_field("f\"k", FieldValue::Float(1.0)),
            [None, Some(QuoteInFieldKey), None],
        ),
        (
            with_field("f", FieldValue::String("a\nb".into())),
            [None, Some(LineBreak(Part::StringField)), None],
        ),
        (
            with_field("f", FieldValue::Float(f64::NAN)),
            [Some(NotFinite); 3],
        ),
        (
            with_field("", FieldValue::Float(1.0)),
            [Some(Empty(Part::FieldKey)); 3],
        ),
    ];
    for (r, wants) in cases {
        for (dialect, want) in DIALECTS.into_iter().zip(wants) {
            let got = line(&r, dialect);
            match want {
                Some(why) => assert_eq!(got, Err(why), "{dialect:?} {r:?}"),
                None => assert_read_back(dialect, &got.unwrap(), &[expected(&r)]),
            }
        }
    }
}

#[test]
fn a_refused_reading_leaves_nothing_and_the_others_are_written() {
    let good = reading();
    let mut bad = reading();
    bad.set_tag("device", "two\nlines");
    let mut buf = b"before\n".to_vec();
    let refused = encode(
        &[good.clone(), bad.clone(), good.clone()],
        Precision::Ns,
        Dialect::InfluxDb1,
        &mut buf,
    )
    .unwrap_err();
    assert_eq!(
        refused.readings,
        vec![(1, Unrepresentable::LineBreak(Part::TagValue))]
    );
    let text = String::from_utf8(buf).unwrap();
    let body = text.strip_prefix("before\n").unwrap();
    assert_read_back(
        Dialect::InfluxDb1,
        body,
        &[expected(&good), expected(&good)],
    );

    // The dead-letter file's encoding keeps it, on one line.
    let mut lossy = Vec::new();
    encode_lossy(&[bad], Precision::Ns, Dialect::InfluxDb1, &mut lossy);
    let lossy = String::from_utf8(lossy).unwrap();
    assert!(
        lossy.starts_with("we\\ ird\\,m=,device=two\\nlines,"),
        "{lossy}"
    );
    assert_eq!(
        lossy.matches('\n').count(),
        2,
        "one in the string field, quoted: {lossy}"
    );
    assert_eq!(influxdb3(&lossy).unwrap().len(), 1);
}

#[test]
fn an_empty_tag_value_is_no_tag() {
    let mut r = reading();
    r.set_tag("empty", "");
    for dialect in DIALECTS {
        let mut r = r.clone();
        r.fields.truncate(1);
        let text = line(&r, dialect).unwrap();
        assert!(!text.contains("empty"), "{text}");
        assert_read_back(dialect, &text, &[expected(&r)]);
    }
}

#[test]
fn floats_are_written_shortest_and_read_back_bit_for_bit() {
    for (v, want) in [
        (21.53, "21.53"),
        (20.0, "20"),
        (-0.0, "-0"),
        (0.0, "0"),
        (1e21, "1e21"),
        (1e-7, "1e-7"),
        (0.0001, "0.0001"),
        (30.338208860383602, "30.338208860383602"),
        (f64::MAX, "1.7976931348623157e308"),
        (f64::MIN_POSITIVE, "2.2250738585072014e-308"),
        (5e-324, "5e-324"),
    ] {
        let mut buf = Vec::new();
        float(&mut buf, v);
        assert_eq!(String::from_utf8(buf).unwrap(), want);
    }
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
        let text = line(&r, Dialect::InfluxDb1).unwrap();
        let mut buf = Vec::new();
        encode_one(&r, p, Dialect::InfluxDb1, &mut buf).unwrap();
        let text_p = String::from_utf8(buf).unwrap();
        assert!(
            text_p.ends_with(&format!(" {want}\n")),
            "{p:?}: {text_p} ({text})"
        );
    }
    assert_eq!(Precision::S.convert(-1), -1);
}

/// Names made of the characters that matter to some reader (a backslash most of all), among
/// others that do not: a fifth of the readings they make can be said in each dialect (a tenth
/// in the portable one), the others are refused.
fn text(max: usize) -> impl Strategy<Value = String> {
    let c = prop_oneof![
        12 => proptest::sample::select(&['a', 'b', 'z', '_', 'é', '🍭', '\'', '\r'][..]),
        3 => Just('\\'),
        1 => Just(','),
        1 => Just('='),
        1 => Just(' '),
        1 => Just('"'),
        1 => proptest::sample::select(&['#', '\t', '\n', '\0'][..]),
    ];
    // Empty now and then: refused but for a tag value or a string.
    (proptest::collection::vec(c, 1..=max), 0..20).prop_map(|(c, empty)| {
        if empty == 0 {
            String::new()
        } else {
            c.into_iter().collect()
        }
    })
}

fn any_float() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<u64>().prop_map(f64::from_bits),
        // Subnormals, and values near the ends.
        (0u64..(1 << 52)).prop_map(f64::from_bits),
        Just(0.0),
        Just(-0.0),
        Just(f64::MAX),
        Just(f64::MIN),
        Just(f64::MIN_POSITIVE),
        Just(f64::EPSILON),
    ]
    .prop_filter("finite", |v| v.is_finite())
}

fn any_reading() -> impl Strategy<Value = Reading> {
    (
        text(6),
        text(4),
        text(6),
        text(4),
        text(4),
        text(6),
        any_float(),
        any::<i64>(),
    )
        .prop_map(|(m, tk, tv, fk1, fk2, sv, f, i)| {
            let mut r = Reading::new(m, 1_700_000_000_000_000_000 + i.rem_euclid(1 << 40));
            r.set_tag(tk, tv);
            r.set_tag("device", "d");
            r.fields.push((fk1.clone().into(), FieldValue::Float(f)));
            if fk2 != fk1 {
                r.fields.push((fk2.into(), FieldValue::String(sv.into())));
            }
            r
        })
}

proptest::proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Whatever a dialect writes, each of its readers reads back as it was; several readings
    /// in one body stay apart (line breaks, quotes); what it refuses leaves nothing.
    #[test]
    fn any_text_either_round_trips_or_is_refused(
        readings in proptest::collection::vec(any_reading(), 1..4),
    ) {
        for dialect in DIALECTS {
            let mut buf = Vec::new();
            let refused = encode(&readings, Precision::Ns, dialect, &mut buf)
                .err()
                .unwrap_or_default();
            let written: Vec<Point> = readings
                .iter()
                .enumerate()
                .filter(|(i, _)| !refused.readings.iter().any(|(j, _)| j == i))
                .map(|(_, r)| expected(r))
                .collect();
            let text = String::from_utf8(buf).unwrap();
            assert_read_back(dialect, &text, &written);
        }
    }

    /// Every finite float, by its bits, reads back as written.
    #[test]
    fn any_float_reads_back_bit_for_bit(v in any_float()) {
        let mut r = Reading::new("m", 1);
        r.fields = vec![("f".into(), FieldValue::Float(v))];
        for dialect in DIALECTS {
            assert_read_back(dialect, &line(&r, dialect).unwrap(), &[expected(&r)]);
        }
    }
}
