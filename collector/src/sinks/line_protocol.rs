//! Readings as InfluxDB line protocol, in the dialect of the reader that parses it.
//!
//! The servers do not read escapes alike (measured against influxd 1.6 and VictoriaMetrics
//! 1.79, read in InfluxDB 2.9's and 3's parsers; the table is in `docs/line-protocol.md`):
//! InfluxDB 1.x and 2.x (one Go parser) take a backslash as a character of the name unless
//! the next character is one it escapes, so `\\` stays two backslashes; InfluxDB 3 and
//! VictoriaMetrics read `\\` as one. So each sink writes the [`Dialect`] of its readers,
//! and a reading that its dialect cannot say (a line break in a tag, a name ending in a
//! backslash...) is not written as something else: [`encode_one`] refuses it with the reason
//! ([`Unrepresentable`]), and the sink's runner puts it in the dead-letter file.
//!
//! Floats are written in the shortest form that reads back as the same value (`ryu`: `21.53`,
//! `20`, `1e-7`, `5e-324`); every parser here reads that form correctly rounded.

use crate::reading::{FieldValue, Reading, Readings};
// Re-exported: the encoder takes it.
pub use crate::reading::Precision;

/// Which reader a line is written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// InfluxDB 1.x and 2.x (the Go parser of `models/points.go`): a backslash is a character
    /// of the name, except before a character it escapes there. The v1 sink.
    InfluxDb1,
    /// What InfluxDB 1.x and 2.x, InfluxDB 3 and VictoriaMetrics all read back as written:
    /// the v2 write API, whose server may be any of them. A backslash is written as itself,
    /// and refused where one of them would take it for an escape.
    Portable,
    /// InfluxDB 3's parser (`influxdb_line_protocol`, which the collector's own line-protocol
    /// input uses): `\\` is one backslash. The MQTT sink, read by other collectors.
    InfluxDb3,
}

impl std::fmt::Display for Dialect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Dialect::InfluxDb1 => "InfluxDB 1.x/2.x",
            Dialect::Portable => "InfluxDB 2.x/3 and VictoriaMetrics (the v2 write API)",
            Dialect::InfluxDb3 => "InfluxDB 3",
        })
    }
}

/// A part of a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The measurement.
    Measurement,
    /// A tag key.
    TagKey,
    /// A tag value.
    TagValue,
    /// A field key.
    FieldKey,
    /// The text of a string field.
    StringField,
}

impl std::fmt::Display for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Part::Measurement => "the measurement",
            Part::TagKey => "a tag key",
            Part::TagValue => "a tag value",
            Part::FieldKey => "a field key",
            Part::StringField => "a string field",
        })
    }
}

/// Why a reading cannot be written in a dialect: its readers would read back something else
/// (or drop the line), and no escape says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unrepresentable {
    /// The measurement, a tag key or a field key is empty.
    #[error("{0} is empty")]
    Empty(Part),
    /// A line break, which ends the line (a string field may hold one, except for
    /// VictoriaMetrics).
    #[error("{0} holds a line break")]
    LineBreak(Part),
    /// A tab in a name, which InfluxDB 3 takes for the end of it.
    #[error("{0} holds a tab")]
    Tab(Part),
    /// A NUL character in the measurement, which InfluxDB 3 refuses.
    #[error("the measurement holds a NUL character")]
    Nul,
    /// The line would start with `#`: a comment to every reader.
    #[error("the measurement starts with '#' (the line would be a comment)")]
    Comment,
    /// InfluxDB 1.x and 2.x drop a tab or a NUL character at the start of a line and of the
    /// fields.
    #[error("{0} starts with a tab or a NUL character")]
    LeadingBlank(Part),
    /// The last character of a name is a backslash, which escapes the separator after it.
    #[error("{0} ends in a backslash")]
    TrailingBackslash(Part),
    /// A backslash before a character it would escape.
    #[error("{part} holds a backslash before {next:?}")]
    BackslashBefore {
        /// Where.
        part: Part,
        /// The character after the backslash.
        next: char,
    },
    /// VictoriaMetrics drops a line with a double quote in a field key.
    #[error("a field key holds a double quote")]
    QuoteInFieldKey,
    /// NaN or an infinity: line protocol has no such value.
    #[error("a float field is not finite")]
    NotFinite,
}

/// How one part of a line is written in one dialect: tables by byte.
struct Rules {
    part: Part,
    /// Bytes that need more than a copy (the fast path copies a name that has none).
    attention: [bool; 256],
    /// Bytes written with a backslash before them.
    escaped: [bool; 256],
    /// Bytes refused anywhere in the part.
    refused: [bool; 256],
    /// Bytes that may not follow a backslash of the name: the reader would take the pair for
    /// an escape (or its scanner would).
    not_after_backslash: [bool; 256],
    /// A backslash is written as `\\`.
    double_backslash: bool,
    /// A tab or a NUL character may not come first (InfluxDB 1.x/2.x skip them as blanks).
    no_leading_blank: bool,
}

const fn set(bytes: &[u8]) -> [bool; 256] {
    let mut t = [false; 256];
    let mut i = 0;
    while i < bytes.len() {
        t[bytes[i] as usize] = true;
        i += 1;
    }
    t
}

const fn rules(
    part: Part,
    escaped: &[u8],
    refused: &[u8],
    not_after_backslash: &[u8],
    (double_backslash, no_leading_blank): (bool, bool),
) -> Rules {
    let mut attention = set(escaped);
    let mut i = 0;
    while i < refused.len() {
        attention[refused[i] as usize] = true;
        i += 1;
    }
    attention[b'\\' as usize] = true;
    Rules {
        part,
        attention,
        escaped: set(escaped),
        refused: set(refused),
        not_after_backslash: set(not_after_backslash),
        double_backslash,
        no_leading_blank,
    }
}

use Part::{FieldKey, Measurement, StringField, TagKey, TagValue};

/// The rules of a dialect, one per [`Part`] (in the order of the enum).
type DialectRules = [Rules; 5];

// The last pair of each: whether a backslash is written as two, whether a tab or a NUL may
// not come first.
const PLAIN: (bool, bool) = (false, false);
const NO_LEADING_BLANK: (bool, bool) = (false, true);
const DOUBLE_BACKSLASH: (bool, bool) = (true, false);

// InfluxDB 1.x/2.x. Separators are escaped; a backslash stays as it is. The scanners take a
// character after a backslash as escaped, the line splitter skips any pair: so a backslash
// before a space in a tag (the splitter would see the fields start), before any escapable
// character in a field key (the field scanner pairs `\\` and then sees a bare separator),
// and before an escapable character in the measurement (the index and the points disagree on
// the name: the series cannot be queried) is refused. A tab or a NUL first in the line or in
// the fields is skipped as a blank.
static INFLUXDB1: DialectRules = [
    rules(Measurement, b", ", b"\n", b", \"=", NO_LEADING_BLANK),
    rules(TagKey, b",= ", b"\n", b" ", PLAIN),
    rules(TagValue, b",= ", b"\n", b" ", PLAIN),
    rules(FieldKey, b",= ", b"\n", b",= \"", NO_LEADING_BLANK),
    rules(StringField, b"\"\\", b"", b"", PLAIN),
];

// What the three read alike: a backslash only before a character none of them unescapes
// there; no tab (InfluxDB 3), no NUL in the measurement (InfluxDB 3) or first in a field key
// (InfluxDB 1.x/2.x), no double quote in a field key and no line break in a string
// (VictoriaMetrics splits lines at every `\n`).
static PORTABLE: DialectRules = [
    rules(Measurement, b", ", b"\n\t\0", b"\\, \"=", PLAIN),
    rules(TagKey, b",= ", b"\n\t", b"\\,= ", PLAIN),
    rules(TagValue, b",= ", b"\n\t", b"\\,= ", PLAIN),
    rules(FieldKey, b",= ", b"\n\t\"", b"\\,= \"", NO_LEADING_BLANK),
    rules(StringField, b"\"\\", b"\n", b"", PLAIN),
];

// InfluxDB 3: every backslash is escaped, so only what it cannot read at all is refused.
static INFLUXDB3: DialectRules = [
    rules(Measurement, b", ", b"\n\t\0", b"", DOUBLE_BACKSLASH),
    rules(TagKey, b",= ", b"\n\t", b"", DOUBLE_BACKSLASH),
    rules(TagValue, b",= ", b"\n\t", b"", DOUBLE_BACKSLASH),
    rules(FieldKey, b",= ", b"\n\t", b"", DOUBLE_BACKSLASH),
    rules(StringField, b"\"\\", b"", b"", PLAIN),
];

impl Dialect {
    fn rules(self) -> &'static DialectRules {
        match self {
            Dialect::InfluxDb1 => &INFLUXDB1,
            Dialect::Portable => &PORTABLE,
            Dialect::InfluxDb3 => &INFLUXDB3,
        }
    }
}

/// Readings of a batch that a dialect cannot say, by their place in the batch, with why.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Refusals {
    /// (index in the batch, reason), in order.
    pub readings: Vec<(usize, Unrepresentable)>,
}

impl Refusals {
    /// As a sink's [`Refused`](super::Refused), each reason saying which readers cannot take it.
    pub fn refused(self, dialect: Dialect) -> super::Refused {
        super::Refused {
            readings: self
                .readings
                .into_iter()
                .map(|(i, why)| {
                    (
                        i,
                        format!("{why}, which the line protocol of {dialect} cannot carry"),
                    )
                })
                .collect(),
        }
    }
}

/// Appends every reading of `readings` that `dialect` can say to `buf`, one line each,
/// timestamps in `precision`.
///
/// # Errors
/// The readings it left out, with why (the others are in `buf`).
pub fn encode(
    readings: &(impl Readings + ?Sized),
    precision: Precision,
    dialect: Dialect,
    buf: &mut Vec<u8>,
) -> Result<(), Refusals> {
    let mut refusals = Refusals::default();
    let mut i = 0;
    readings.for_each(|r| {
        if let Err(why) = encode_one(r, precision, dialect, buf) {
            refusals.readings.push((i, why));
        }
        i += 1;
    });
    if refusals.readings.is_empty() {
        Ok(())
    } else {
        Err(refusals)
    }
}

/// Appends every reading as one line each, as [`encode`] would, but writes the readings the
/// dialect cannot say as well as it can instead of leaving them out (a line break in a name
/// as a backslash and an `n`): for people reading the dead-letter file, which must hold
/// every reading it is given.
pub fn encode_lossy(
    readings: &(impl Readings + ?Sized),
    precision: Precision,
    dialect: Dialect,
    buf: &mut Vec<u8>,
) {
    readings.for_each(|r| {
        let _ = write(r, precision, dialect, true, buf);
    });
}

/// Appends one reading as one line (ending in `\n`). A reading without fields (never built
/// by the sources) writes nothing.
///
/// Written by hand rather than with `influxdb_line_protocol`'s builder, which formats every
/// character through `fmt` (the builder was 1.5 µs per reading of three fields, this a
/// fraction of it), and which has one escaping for every reader.
///
/// # Errors
/// The reading cannot be said in `dialect`; `buf` is left as it was.
pub fn encode_one(
    r: &Reading,
    precision: Precision,
    dialect: Dialect,
    buf: &mut Vec<u8>,
) -> Result<(), Unrepresentable> {
    let start = buf.len();
    write(r, precision, dialect, false, buf).inspect_err(|_| buf.truncate(start))
}

fn write(
    r: &Reading,
    precision: Precision,
    dialect: Dialect,
    lossy: bool,
    buf: &mut Vec<u8>,
) -> Result<(), Unrepresentable> {
    if r.fields.is_empty() {
        return Ok(());
    }
    let [measurement, tag_key, tag_value, field_key, string] = dialect.rules();
    if r.measurement.starts_with('#') && !lossy {
        return Err(Unrepresentable::Comment);
    }
    put(buf, &r.measurement, measurement, lossy)?;
    for (k, v) in &r.tags {
        // InfluxDB has no empty tag value: a tag with one is a tag it does not have.
        if v.is_empty() {
            continue;
        }
        buf.push(b',');
        put(buf, k, tag_key, lossy)?;
        buf.push(b'=');
        put(buf, v, tag_value, lossy)?;
    }
    for (i, (k, v)) in r.fields.iter().enumerate() {
        buf.push(if i == 0 { b' ' } else { b',' });
        put(buf, k, field_key, lossy)?;
        buf.push(b'=');
        match v {
            FieldValue::Float(v) if v.is_finite() || lossy => float(buf, *v),
            FieldValue::Float(_) => return Err(Unrepresentable::NotFinite),
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
                put(buf, v, string, lossy)?;
                buf.push(b'"');
            }
        }
    }
    buf.push(b' ');
    let ts = precision.convert(r.timestamp);
    buf.extend_from_slice(itoa::Buffer::new().format(ts).as_bytes());
    buf.push(b'\n');
    Ok(())
}

/// Appends `s` by `rules`. Lossy: refuses nothing, and writes a line break in a name as a
/// backslash and an `n` (in a string, which keeps the line whole inside its quotes, as itself).
fn put(buf: &mut Vec<u8>, s: &str, rules: &Rules, lossy: bool) -> Result<(), Unrepresentable> {
    let bytes = s.as_bytes();
    if bytes.is_empty() {
        return if rules.part == Part::StringField || lossy {
            Ok(())
        } else {
            Err(Unrepresentable::Empty(rules.part))
        };
    }
    if rules.no_leading_blank && matches!(bytes[0], b'\t' | b'\0') && !lossy {
        return Err(Unrepresentable::LeadingBlank(rules.part));
    }
    if !bytes.iter().any(|&b| rules.attention[b as usize]) {
        buf.extend_from_slice(bytes);
        return Ok(());
    }
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'\\' {
            if !lossy && !rules.double_backslash && rules.part != Part::StringField {
                match bytes.get(i + 1) {
                    None => return Err(Unrepresentable::TrailingBackslash(rules.part)),
                    Some(&next) if rules.not_after_backslash[next as usize] => {
                        return Err(Unrepresentable::BackslashBefore {
                            part: rules.part,
                            next: char::from(next),
                        })
                    }
                    Some(_) => {}
                }
            }
            if !lossy && rules.double_backslash && i + 1 == bytes.len() {
                return Err(Unrepresentable::TrailingBackslash(rules.part));
            }
            if rules.double_backslash || rules.escaped[b as usize] {
                buf.push(b'\\');
            }
            buf.push(b'\\');
            continue;
        }
        if rules.refused[b as usize] {
            if !lossy {
                return Err(match b {
                    b'\n' => Unrepresentable::LineBreak(rules.part),
                    b'\t' => Unrepresentable::Tab(rules.part),
                    b'"' => Unrepresentable::QuoteInFieldKey,
                    _ => Unrepresentable::Nul,
                });
            }
            if b == b'\n' && rules.part != Part::StringField {
                buf.extend_from_slice(b"\\n");
                continue;
            }
        }
        if rules.escaped[b as usize] {
            buf.push(b'\\');
        }
        buf.push(b);
    }
    Ok(())
}

/// A float as the shortest text that reads back as the same value (`21.53`, `20`, `1e-7`,
/// `-0`): `ryu`'s, without its `.0` (every reader takes `20` without an `i` for a float).
fn float(buf: &mut Vec<u8>, v: f64) {
    let mut ryu = ryu::Buffer::new();
    let text = ryu.format(v);
    buf.extend_from_slice(text.strip_suffix(".0").unwrap_or(text).as_bytes());
}

#[cfg(test)]
mod tests;
