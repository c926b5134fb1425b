//! The one type on the channel: a [`Reading`], one point in InfluxDB's sense.
//!
//! Also its compact binary encoding, used by the journal. The encoding is ours and private to
//! this crate's on-disk files: length-prefixed strings, a kind byte per field, varints.

use std::fmt;

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
    String(String),
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

    /// Appends the value's encoding to `buf`: its kind byte, then the value (floats as their
    /// 8 bytes, so NaN payloads and -0.0 survive; integers as varints; strings
    /// length-prefixed). The journal and the local store share it.
    pub(crate) fn encode(&self, buf: &mut Vec<u8>) {
        buf.push(self.kind() as u8);
        match self {
            FieldValue::Float(v) => buf.extend_from_slice(&v.to_le_bytes()),
            FieldValue::Integer(v) => put_varint(buf, zigzag(*v)),
            FieldValue::Unsigned(v) => put_varint(buf, *v),
            FieldValue::Boolean(v) => buf.push(u8::from(*v)),
            FieldValue::String(v) => put_str(buf, v),
        }
    }

    /// Decodes a value written by [`FieldValue::encode`] from the front of `buf` and advances
    /// it.
    pub(crate) fn decode(buf: &mut &[u8]) -> Result<FieldValue, DecodeError> {
        let kind = FieldKind::from_u8(get_u8(buf)?).ok_or(DecodeError)?;
        Ok(match kind {
            FieldKind::Float => {
                let bytes = take(buf, 8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(bytes);
                FieldValue::Float(f64::from_le_bytes(a))
            }
            FieldKind::Integer => FieldValue::Integer(unzigzag(get_varint(buf)?)),
            FieldKind::Unsigned => FieldValue::Unsigned(get_varint(buf)?),
            FieldKind::Boolean => FieldValue::Boolean(get_u8(buf)? != 0),
            FieldKind::String => FieldValue::String(get_str(buf)?),
        })
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
    pub measurement: String,
    /// Tags, sorted by key, keys unique. Use [`Reading::set_tag`] to keep them so.
    pub tags: Vec<(String, String)>,
    /// Fields, at least one, names unique.
    pub fields: Vec<(String, FieldValue)>,
    /// Nanoseconds since the Unix epoch.
    pub timestamp: i64,
}

impl Reading {
    /// An empty reading of `measurement` at `timestamp`; add tags and fields next.
    pub fn new(measurement: impl Into<String>, timestamp: i64) -> Reading {
        Reading {
            measurement: measurement.into(),
            tags: Vec::new(),
            fields: Vec::new(),
            timestamp,
        }
    }

    /// Sets a tag, replacing an existing value for the key, keeping the tags sorted by key.
    pub fn set_tag(&mut self, key: impl Into<String>, value: impl Into<String>) {
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

    /// Appends this reading's encoding to `buf`.
    pub fn encode(&self, buf: &mut Vec<u8>) {
        put_str(buf, &self.measurement);
        put_varint(buf, self.tags.len() as u64);
        for (k, v) in &self.tags {
            put_str(buf, k);
            put_str(buf, v);
        }
        put_varint(buf, self.fields.len() as u64);
        for (name, value) in &self.fields {
            put_str(buf, name);
            value.encode(buf);
        }
        put_varint(buf, zigzag(self.timestamp));
    }

    /// Decodes one reading from the front of `buf` and advances it.
    ///
    /// # Errors
    /// [`DecodeError`] when the bytes are not a reading's encoding (a corrupt journal entry).
    pub fn decode(buf: &mut &[u8]) -> Result<Reading, DecodeError> {
        let measurement = get_str(buf)?;
        let ntags = get_len(buf)?;
        let mut tags = Vec::with_capacity(ntags);
        for _ in 0..ntags {
            tags.push((get_str(buf)?, get_str(buf)?));
        }
        let nfields = get_len(buf)?;
        let mut fields = Vec::with_capacity(nfields);
        for _ in 0..nfields {
            let name = get_str(buf)?;
            fields.push((name, FieldValue::decode(buf)?));
        }
        let timestamp = unzigzag(get_varint(buf)?);
        Ok(Reading {
            measurement,
            tags,
            fields,
            timestamp,
        })
    }
}

/// Encodes `readings` one after the other.
pub fn encode_all(readings: &[Reading], buf: &mut Vec<u8>) {
    for r in readings {
        r.encode(buf);
    }
}

/// Decodes every reading in `buf`.
///
/// # Errors
/// [`DecodeError`] if any part of `buf` is not a reading's encoding.
pub fn decode_all(mut buf: &[u8]) -> Result<Vec<Reading>, DecodeError> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        out.push(Reading::decode(&mut buf)?);
    }
    Ok(out)
}

/// The bytes are not a reading's encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("corrupt reading encoding")]
pub struct DecodeError;

pub(crate) fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

pub(crate) fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

pub(crate) fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    put_varint(buf, s.len() as u64);
    buf.extend_from_slice(s.as_bytes());
}

pub(crate) fn get_u8(buf: &mut &[u8]) -> Result<u8, DecodeError> {
    let (&b, rest) = buf.split_first().ok_or(DecodeError)?;
    *buf = rest;
    Ok(b)
}

pub(crate) fn get_varint(buf: &mut &[u8]) -> Result<u64, DecodeError> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = get_u8(buf)?;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(DecodeError)
}

fn get_len(buf: &mut &[u8]) -> Result<usize, DecodeError> {
    let n = usize::try_from(get_varint(buf)?).map_err(|_| DecodeError)?;
    // A length can never exceed what is left: reject before allocating for it.
    if n > buf.len() {
        return Err(DecodeError);
    }
    Ok(n)
}

fn take<'a>(buf: &mut &'a [u8], n: usize) -> Result<&'a [u8], DecodeError> {
    if buf.len() < n {
        return Err(DecodeError);
    }
    let (head, rest) = buf.split_at(n);
    *buf = rest;
    Ok(head)
}

fn get_str(buf: &mut &[u8]) -> Result<String, DecodeError> {
    let n = get_len(buf)?;
    let bytes = take(buf, n)?;
    String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Reading {
        let mut r = Reading::new("env", -1_700_000_000_123_456_789);
        r.set_tag("site", "site-01");
        r.set_tag(DEVICE_TAG, "dev-0001");
        r.fields = vec![
            ("temperature".into(), FieldValue::Float(21.5)),
            ("count".into(), FieldValue::Integer(-42)),
            ("total".into(), FieldValue::Unsigned(u64::MAX)),
            ("ok".into(), FieldValue::Boolean(true)),
            ("state".into(), FieldValue::String("on, \"fine\"".into())),
        ];
        r
    }

    #[test]
    fn tags_stay_sorted_and_unique() {
        let r = sample();
        assert_eq!(
            r.tags,
            vec![
                ("device".to_string(), "dev-0001".to_string()),
                ("site".to_string(), "site-01".to_string())
            ]
        );
        let mut r2 = r.clone();
        r2.set_tag("site", "x");
        assert_eq!(r2.tag("site"), Some("x"));
        assert_eq!(r2.tags.len(), 2);
    }

    #[test]
    fn encoding_round_trips() {
        let readings = vec![sample(), Reading::new("m", i64::MAX), sample()];
        let mut buf = Vec::new();
        encode_all(&readings, &mut buf);
        assert_eq!(decode_all(&buf).unwrap(), readings);
    }

    #[test]
    fn truncated_or_garbage_input_is_an_error_not_a_panic() {
        let mut buf = Vec::new();
        sample().encode(&mut buf);
        for cut in 0..buf.len() {
            assert!(decode_all(&buf[..cut]).is_err() || cut == 0);
        }
        assert!(decode_all(&[0xff; 20]).is_err());
    }
}
