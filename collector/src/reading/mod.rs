//! The one type on the channel: a [`Reading`], one point in InfluxDB's sense.
//!
//! Also its compact binary encoding, used by the journal (`encoding`), and [`Batch`]: the
//! readings a sink writes, kept encoded and shared with the journal's memory and the other
//! sinks, visited one at a time through [`Readings`].
//!
//! Names and tag values are [`CompactString`]s: up to 24 bytes (every measurement, tag and
//! field name, and most device ids) they are stored inline, so that creating, decoding,
//! cloning and dropping a reading allocates for its two vectors only, not for each string.

use std::fmt;

pub use compact_str::CompactString;

mod batch;
mod encoding;
mod precision;

pub use batch::{Batch, Encoded, Readings};
pub use encoding::{decode_all, decode_into, encode_all, encode_all_as, DecodeError, Encoding};
pub(crate) use encoding::{get_varint, put_varint, unzigzag, zigzag};
pub use precision::Precision;

/// The tag that names the device a reading came from. Every stored reading has it.
pub const DEVICE_TAG: &str = "device";

/// A typed field value.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    /// A 64-bit float (InfluxDB `float`).
    Float(f64),
    /// A signed integer (InfluxDB `integer`, written `1i`).
    Integer(i64),
    /// An unsigned integer (InfluxDB `unsigned`, written `1u`).
    Unsigned(u64),
    /// A boolean.
    Boolean(bool),
    /// A string.
    String(CompactString),
}

impl FieldValue {
    /// The numeric kind used in the journal encoding and in the local store.
    pub fn kind(&self) -> FieldKind {
        match self {
            FieldValue::Float(_) => FieldKind::Float,
            FieldValue::Integer(_) => FieldKind::Integer,
            FieldValue::Unsigned(_) => FieldKind::Unsigned,
            FieldValue::Boolean(_) => FieldKind::Boolean,
            FieldValue::String(_) => FieldKind::String,
        }
    }

    /// The value as a float, when it is a number or a boolean (for charts and summaries).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            FieldValue::Float(v) => Some(v),
            FieldValue::Integer(v) => Some(v as f64),
            FieldValue::Unsigned(v) => Some(v as f64),
            FieldValue::Boolean(v) => Some(if v { 1.0 } else { 0.0 }),
            FieldValue::String(_) => None,
        }
    }
}

impl fmt::Display for FieldValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldValue::Float(v) => write!(f, "{v}"),
            FieldValue::Integer(v) => write!(f, "{v}"),
            FieldValue::Unsigned(v) => write!(f, "{v}"),
            FieldValue::Boolean(v) => write!(f, "{v}"),
            FieldValue::String(v) => f.write_str(v),
        }
    }
}

/// The kind of a [`FieldValue`], as stored on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FieldKind {
    /// See [`FieldValue::Float`].
    Float = 0,
    /// See [`FieldValue::Integer`].
    Integer = 1,
    /// See [`FieldValue::Unsigned`].
    Unsigned = 2,
    /// See [`FieldValue::Boolean`].
    Boolean = 3,
    /// See [`FieldValue::String`].
    String = 4,
}

impl FieldKind {
    /// The kind for its stored number, if it is one.
    pub fn from_u8(v: u8) -> Option<FieldKind> {
        Some(match v {
            0 => FieldKind::Float,
            1 => FieldKind::Integer,
            2 => FieldKind::Unsigned,
            3 => FieldKind::Boolean,
            4 => FieldKind::String,
            _ => return None,
        })
    }

    /// The name used in query output (`float`, `integer`, ...), as InfluxDB names them.
    pub fn name(self) -> &'static str {
        match self {
            FieldKind::Float => "float",
            FieldKind::Integer => "integer",
            FieldKind::Unsigned => "unsigned",
            FieldKind::Boolean => "boolean",
            FieldKind::String => "string",
        }
    }
}

/// One point: a measurement, its tags (the device id always among them), one or more typed
/// fields and a timestamp in nanoseconds since the Unix epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// The measurement (InfluxDB's table name).
    pub measurement: CompactString,
    /// Tags, sorted by key, keys unique. Use [`Reading::set_tag`] to keep them so.
    pub tags: Vec<(CompactString, CompactString)>,
    /// Fields, at least one, names unique.
    pub fields: Vec<(CompactString, FieldValue)>,
    /// Nanoseconds since the Unix epoch.
    pub timestamp: i64,
}

impl Reading {
    /// An empty reading of `measurement` at `timestamp`; add tags and fields next.
    pub fn new(measurement: impl Into<CompactString>, timestamp: i64) -> Reading {
        Reading {
            measurement: measurement.into(),
            tags: Vec::new(),
            fields: Vec::new(),
            timestamp,
        }
    }

    /// Sets a tag, replacing an existing value for the key, keeping the tags sorted by key.
    pub fn set_tag(&mut self, key: impl Into<CompactString>, value: impl Into<CompactString>) {
        let key = key.into();
        let value = value.into();
        match self.tags.binary_search_by(|(k, _)| k.as_str().cmp(&key)) {
            Ok(i) => self.tags[i].1 = value,
            Err(i) => self.tags.insert(i, (key, value)),
        }
    }

    /// The value of tag `key`.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .binary_search_by(|(k, _)| k.as_str().cmp(key))
            .ok()
            .map(|i| self.tags[i].1.as_str())
    }

    /// The device id (the [`DEVICE_TAG`] tag).
    pub fn device(&self) -> Option<&str> {
        self.tag(DEVICE_TAG)
    }

    /// The value of field `name`.
    pub fn field(&self, name: &str) -> Option<&FieldValue> {
        self.fields.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_stay_sorted_and_unique() {
        let mut r = Reading::new("env", 1);
        r.set_tag("site", "site-01");
        r.set_tag(DEVICE_TAG, "dev-0001");
        assert_eq!(
            r.tags,
            vec![
                ("device".into(), "dev-0001".into()),
                ("site".into(), "site-01".into())
            ]
        );
        let mut r2 = r.clone();
        r2.set_tag("site", "x");
        assert_eq!(r2.tag("site"), Some("x"));
        assert_eq!(r2.tags.len(), 2);
    }
}
