//! The binary encoding of readings in a journal entry. It is ours and private to this crate's
//! on-disk files: varints, length-prefixed UTF-8 strings, a kind byte per field.
//!
//! ```text
//! reading   = measurement ntags (key value)* nfields (name kind value)* timestamp
//! string    = Plain: varint(len) bytes
//!             Delta: 0 (the string in the same place of the reading before)
//!                  | varint(len + 1) bytes
//! timestamp = Plain: zigzag varint of the nanoseconds
//!             Delta: zigzag varint of the difference from the reading before (wrapping)
//! value     = float: 8 bytes little-endian | integer: zigzag varint | unsigned: varint
//!           | boolean: 1 byte | string: varint(len) bytes (in both encodings)
//! ```
//!
//! "The same place" is the measurement, the key or value of the tag at the same index, the
//! name of the field at the same index. Readings of one kind from many devices repeat their
//! measurement, tag keys and field names, so `Delta` writes about half the bytes of `Plain`
//! (101 -> 54 bytes for a reading of 2 tags and 3 floats) and copies instead of validating
//! most strings when decoding. An entry is decoded as a whole, from its first reading.

use super::{CompactString, FieldKind, FieldValue, Reading};

/// How the readings of a journal entry are encoded. The journal keeps it with each entry, so
/// that entries written by an older build stay readable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Every reading on its own: each string in full, absolute timestamps. The only encoding
    /// of journals written before the encoding was recorded.
    Plain = 1,
    /// A string equal to the one in the same place of the reading before is one byte; the
    /// timestamp is the difference from the reading before.
    Delta = 2,
}

impl Encoding {
    /// The encoding [`encode_all`] writes.
    pub const CURRENT: Encoding = Encoding::Delta;

    /// The encoding for its stored number, if it is one.
    pub fn from_i64(v: i64) -> Option<Encoding> {
        match v {
            1 => Some(Encoding::Plain),
            2 => Some(Encoding::Delta),
            _ => None,
        }
    }

    /// The number stored for it.
    pub fn as_i64(self) -> i64 {
        self as i64
    }
}

impl FieldValue {
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
    #[inline]
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
}

/// The bytes are not a reading's encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("corrupt reading encoding")]
pub struct DecodeError;

/// Encodes `readings`, one after the other, in [`Encoding::CURRENT`].
pub fn encode_all<'a>(readings: impl IntoIterator<Item = &'a Reading>, buf: &mut Vec<u8>) {
    encode_all_as(Encoding::CURRENT, readings, buf);
}

/// Encodes `readings`, one after the other, in `encoding`.
pub fn encode_all_as<'a>(
    encoding: Encoding,
    readings: impl IntoIterator<Item = &'a Reading>,
    buf: &mut Vec<u8>,
) {
    let mut before: Option<&Reading> = None;
    for r in readings {
        encode(r, encoding, before, buf);
        before = Some(r);
    }
}

/// The fewest bytes a reading's encoding takes (an empty measurement, no tags, no fields, a
/// one-byte timestamp), in either encoding.
const MIN_ENCODED_LEN: usize = 4;

/// Decodes every reading in `buf`, written in `encoding`. `expected` is how many readings the
/// caller believes `buf` holds (the journal keeps the count of each entry): only a capacity
/// hint, never trusted beyond what `buf` could hold.
///
/// # Errors
/// [`DecodeError`] if any part of `buf` is not a reading's encoding.
pub fn decode_all(
    encoding: Encoding,
    mut buf: &[u8],
    expected: usize,
) -> Result<Vec<Reading>, DecodeError> {
    let mut out: Vec<Reading> = Vec::with_capacity(expected.min(buf.len() / MIN_ENCODED_LEN));
    let mut scratch = Reading::new("", 0);
    while !buf.is_empty() {
        decode_into(&mut buf, encoding, &mut scratch, out.is_empty())?;
        out.push(scratch.clone());
    }
    Ok(out)
}

/// Decodes the reading at the front of `buf` into `r` and advances `buf`. Unless `first`, `r`
/// holds the reading decoded just before it from the same bytes; names that are as they were
/// in that reading (`Delta`) are left in place rather than copied, so that decoding an entry
/// into one reused reading allocates nothing (but for strings longer than 24 bytes). On an
/// error `r` holds part of a reading.
///
/// # Errors
/// [`DecodeError`] if the front of `buf` is not a reading's encoding.
#[inline]
pub fn decode_into(
    buf: &mut &[u8],
    encoding: Encoding,
    r: &mut Reading,
    first: bool,
) -> Result<(), DecodeError> {
    let delta = encoding == Encoding::Delta;
    if first {
        r.tags.clear();
        r.fields.clear();
    }
    // A name at a place that held one in the reading before (`was`), or a new place.
    let name = |buf: &mut &[u8], place: &mut CompactString, was: bool| {
        if !delta {
            *place = get_str(buf)?;
            return Ok(());
        }
        match get_varint(buf)? {
            0 if was => Ok(()),
            0 => Err(DecodeError),
            n => {
                *place = str_of_len(buf, n - 1)?;
                Ok(())
            }
        }
    };
    name(buf, &mut r.measurement, !first)?;
    let ntags = get_len(buf)?;
    let before = r.tags.len();
    for i in 0..ntags {
        if i >= before {
            r.tags.push(Default::default());
        }
        let (key, value) = &mut r.tags[i];
        name(buf, key, i < before)?;
        name(buf, value, i < before)?;
    }
    r.tags.truncate(ntags);
    let nfields = get_len(buf)?;
    let before = r.fields.len();
    for i in 0..nfields {
        if i >= before {
            r.fields
                .push((CompactString::default(), FieldValue::Boolean(false)));
        }
        let (field, value) = &mut r.fields[i];
        name(buf, field, i < before)?;
        *value = FieldValue::decode(buf)?;
    }
    r.fields.truncate(nfields);
    let timestamp = unzigzag(get_varint(buf)?);
    r.timestamp = if delta && !first {
        r.timestamp.wrapping_add(timestamp)
    } else {
        timestamp
    };
    Ok(())
}

fn encode(r: &Reading, encoding: Encoding, before: Option<&Reading>, buf: &mut Vec<u8>) {
    let delta = encoding == Encoding::Delta;
    let put_name = |buf: &mut Vec<u8>, s: &str, was: Option<&CompactString>| {
        if !delta {
            put_str(buf, s);
        } else if was.is_some_and(|w| w == s) {
            buf.push(0);
        } else {
            put_varint(buf, s.len() as u64 + 1);
            buf.extend_from_slice(s.as_bytes());
        }
    };
    put_name(buf, &r.measurement, before.map(|b| &b.measurement));
    put_varint(buf, r.tags.len() as u64);
    for (i, (k, v)) in r.tags.iter().enumerate() {
        let was = before.and_then(|b| b.tags.get(i));
        put_name(buf, k, was.map(|(k, _)| k));
        put_name(buf, v, was.map(|(_, v)| v));
    }
    put_varint(buf, r.fields.len() as u64);
    for (i, (name, value)) in r.fields.iter().enumerate() {
        put_name(
            buf,
            name,
            before.and_then(|b| b.fields.get(i)).map(|(n, _)| n),
        );
        value.encode(buf);
    }
    let timestamp = match before {
        Some(b) if delta => r.timestamp.wrapping_sub(b.timestamp),
        _ => r.timestamp,
    };
    put_varint(buf, zigzag(timestamp));
}

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

// The readers are small and called for every string and number: inlined, the decoder builds
// each reading in place (twice as fast as with calls).

#[inline]
fn get_u8(buf: &mut &[u8]) -> Result<u8, DecodeError> {
    let (&b, rest) = buf.split_first().ok_or(DecodeError)?;
    *buf = rest;
    Ok(b)
}

#[inline]
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

/// A length, checked against what is left: a corrupt length never allocates.
#[inline]
fn len_within(buf: &[u8], n: u64) -> Result<usize, DecodeError> {
    match usize::try_from(n) {
        Ok(n) if n <= buf.len() => Ok(n),
        _ => Err(DecodeError),
    }
}

#[inline]
fn get_len(buf: &mut &[u8]) -> Result<usize, DecodeError> {
    let n = get_varint(buf)?;
    len_within(buf, n)
}

#[inline]
fn take<'a>(buf: &mut &'a [u8], n: usize) -> Result<&'a [u8], DecodeError> {
    if buf.len() < n {
        return Err(DecodeError);
    }
    let (head, rest) = buf.split_at(n);
    *buf = rest;
    Ok(head)
}

#[inline]
fn str_of_len(buf: &mut &[u8], n: u64) -> Result<CompactString, DecodeError> {
    let n = len_within(buf, n)?;
    CompactString::from_utf8(take(buf, n)?).map_err(|_| DecodeError)
}

#[inline]
fn get_str(buf: &mut &[u8]) -> Result<CompactString, DecodeError> {
    let n = get_varint(buf)?;
    str_of_len(buf, n)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::reading::DEVICE_TAG;

    const BOTH: [Encoding; 2] = [Encoding::Plain, Encoding::Delta];

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

    fn encoded(encoding: Encoding, readings: &[Reading]) -> Vec<u8> {
        let mut buf = Vec::new();
        encode_all_as(encoding, readings, &mut buf);
        buf
    }

    #[test]
    fn encoding_round_trips() {
        let mut other = sample();
        other.set_tag(DEVICE_TAG, "a device id longer than twenty-four bytes");
        other.set_tag("room", "lab");
        other.fields.truncate(2);
        other.timestamp = i64::MAX;
        let readings = vec![
            sample(),
            Reading::new("m", i64::MIN),
            sample(),
            other,
            sample(),
        ];
        for encoding in BOTH {
            let buf = encoded(encoding, &readings);
            let decode = |expected| decode_all(encoding, &buf, expected).unwrap();
            assert_eq!(decode(readings.len()), readings, "{encoding:?}");
            assert_eq!(decode(0), readings, "{encoding:?}: the count is a hint");
            assert_eq!(decode(usize::MAX), readings, "{encoding:?}");
        }
        assert_eq!(
            encoded(Encoding::CURRENT, &readings),
            encoded(Encoding::Delta, &readings)
        );
    }

    /// The bytes of an entry written before the encoding was recorded: this build must go
    /// on reading the journals that older builds left behind.
    #[test]
    fn plain_is_the_encoding_of_older_journals() {
        let mut r = Reading::new("env", 1_700_000_000_000_000_000);
        r.set_tag(DEVICE_TAG, "d1");
        r.fields = vec![("t".into(), FieldValue::Float(21.5))];
        let old = [
            b"\x03env\x01\x06device\x02d1\x01\x01t\x00".as_slice(),
            &21.5f64.to_le_bytes(),
            // zigzag varint of the timestamp
            &[0x80, 0x80, 0xd0, 0xe2, 0xc6, 0xbf, 0xce, 0x97, 0x2f],
        ]
        .concat();
        assert_eq!(encoded(Encoding::Plain, std::slice::from_ref(&r)), old);
        assert_eq!(decode_all(Encoding::Plain, &old, 1).unwrap(), vec![r]);
    }

    #[test]
    fn delta_writes_about_half_the_bytes_for_readings_of_one_kind() {
        let readings: Vec<Reading> = (0..1000)
            .map(|i| {
                let mut r = Reading::new("env", 1_764_000_000_000_000_000 + i * 1_000);
                r.set_tag(DEVICE_TAG, format!("dev-{:04}", i % 1000));
                r.set_tag("site", format!("site-{:02}", i % 10));
                r.fields = ["temperature", "humidity", "pressure"]
                    .map(|n| (n.into(), FieldValue::Float(21.5)))
                    .to_vec();
                r
            })
            .collect();
        let plain = encoded(Encoding::Plain, &readings).len();
        let delta = encoded(Encoding::Delta, &readings).len();
        assert_eq!((plain / 1000, delta / 1000), (101, 54));
    }

    #[test]
    fn a_reference_to_a_reading_before_the_first_is_an_error() {
        // Delta: a measurement "as before" in the first reading of an entry.
        assert_eq!(
            decode_all(Encoding::Delta, &[0, 0, 0, 0], 1),
            Err(DecodeError)
        );
        // ... and a tag "as before" where the reading before had no tag at that index.
        let mut one = Reading::new("m", 0);
        one.fields = vec![("v".into(), FieldValue::Boolean(true))];
        let mut buf = encoded(Encoding::Delta, &[one]);
        buf.extend_from_slice(&[0, 1, 0, 0, 0, 0]);
        assert_eq!(decode_all(Encoding::Delta, &buf, 2), Err(DecodeError));
    }

    #[test]
    fn truncated_or_garbage_input_is_an_error_not_a_panic() {
        for encoding in BOTH {
            let buf = encoded(encoding, &[sample()]);
            for cut in 1..buf.len() {
                assert_eq!(
                    decode_all(encoding, &buf[..cut], 1),
                    Err(DecodeError),
                    "{encoding:?} {cut}"
                );
            }
            assert_eq!(decode_all(encoding, &[0xff; 20], 1), Err(DecodeError));
            assert_eq!(decode_all(encoding, &[], 1), Ok(vec![]));
        }
    }

    fn name() -> impl Strategy<Value = CompactString> {
        // Few names, so that readings repeat them (what Delta shortens), one longer than an
        // inline CompactString, and text that is not ASCII.
        prop_oneof![
            Just(""),
            Just("env"),
            Just("device"),
            Just("dev-0001"),
            Just("a name that is longer than twenty-four bytes"),
            Just("température"),
        ]
        .prop_map(CompactString::from)
    }

    fn value() -> impl Strategy<Value = FieldValue> {
        prop_oneof![
            proptest::num::f64::NORMAL.prop_map(FieldValue::Float),
            any::<i64>().prop_map(FieldValue::Integer),
            any::<u64>().prop_map(FieldValue::Unsigned),
            any::<bool>().prop_map(FieldValue::Boolean),
            name().prop_map(FieldValue::String),
        ]
    }

    fn reading() -> impl Strategy<Value = Reading> {
        (
            name(),
            proptest::collection::vec((name(), name()), 0..4),
            proptest::collection::vec((name(), value()), 0..4),
            prop_oneof![
                any::<i64>(),
                Just(0i64),
                1_700_000_000_000_000_000i64..1_800_000_000_000_000_000
            ],
        )
            .prop_map(|(measurement, tags, fields, timestamp)| Reading {
                measurement,
                tags,
                fields,
                timestamp,
            })
    }

    proptest! {
        /// Any readings come back as they were, in both encodings; every cut of the bytes
        /// decodes to the readings before the cut or is an error, never a panic.
        #[test]
        fn any_readings_round_trip_and_any_cut_is_a_prefix_or_an_error(
            readings in proptest::collection::vec(reading(), 0..8),
        ) {
            for encoding in BOTH {
                let buf = encoded(encoding, &readings);
                prop_assert_eq!(&decode_all(encoding, &buf, readings.len()).unwrap(), &readings);
                for cut in 0..buf.len() {
                    if let Ok(prefix) = decode_all(encoding, &buf[..cut], readings.len()) {
                        prop_assert_eq!(&prefix[..], &readings[..prefix.len()]);
                    }
                }
            }
        }

        /// Bytes that are not an encoding give an error or some readings, never a panic,
        /// and never more readings than a quarter of the bytes.
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            for encoding in BOTH {
                if let Ok(readings) = decode_all(encoding, &bytes, usize::MAX) {
                    prop_assert!(readings.len() <= bytes.len() / MIN_ENCODED_LEN);
                }
            }
        }
    }
}
