//! Flat JSON objects: `{"ts": 1750000000, "temperature": 21.5, "room": "lab"}`.
//!
//! The object is deserialized straight into a [`Reading`] (no intermediate `Value` tree).
//! Arrays, nested objects and nulls are consumed and then reject the whole payload.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserializer;

use super::{ensure_device, new_reading, Context, JsonOptions, Reject};
use crate::reading::{FieldValue, Reading};

/// Parses one flat JSON object into a reading.
pub(super) fn parse(text: &str, opts: &JsonOptions, ctx: &Context<'_>) -> Result<Reading, Reject> {
    let mut de = serde_json::Deserializer::from_str(text);
    let parsed = ObjectSeed { opts, ctx }
        .deserialize(&mut de)
        .and_then(|r| de.end().map(|()| r))
        .map_err(|_| Reject::InvalidJson)?;
    let mut reading = parsed?;
    if reading.fields.is_empty() {
        return Err(Reject::NoFields);
    }
    reading.timestamp = ctx.bounds.check(reading.timestamp)?;
    ensure_device(&mut reading, ctx);
    Ok(reading)
}

/// A JSON scalar, or a marker that the value was of a kind we do not take.
enum Scalar<'a> {
    Int(i64),
    Uint(u64),
    Float(f64),
    Bool(bool),
    Str(Cow<'a, str>),
    Unsupported,
}

struct ObjectSeed<'o, 'c> {
    opts: &'o JsonOptions,
    ctx: &'o Context<'c>,
}

impl<'de> DeserializeSeed<'de> for ObjectSeed<'_, '_> {
    /// The outer error is a JSON syntax error; the inner one a payload we reject.
    type Value = Result<Reading, Reject>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ObjectSeed<'_, '_> {
    type Value = Result<Reading, Reject>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a flat JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let ctx = self.ctx;
        let mut reading = new_reading(ctx.measurement, ctx, ctx.received_ns);
        let mut reject = None;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            let value = map.next_value::<ScalarDe<'de>>()?.0;
            if reject.is_some() {
                continue; // keep consuming so that syntax errors still win
            }
            if key == self.opts.timestamp_key {
                match timestamp(&value, self.opts) {
                    Ok(ts) => reading.timestamp = ts,
                    Err(r) => reject = Some(r),
                }
                continue;
            }
            if self.opts.tag_keys.iter().any(|k| *k == key) {
                match value {
                    Scalar::Str(s) => reading.set_tag(key, s),
                    Scalar::Int(v) => reading.set_tag(key, v.to_string()),
                    Scalar::Uint(v) => reading.set_tag(key, v.to_string()),
                    Scalar::Float(v) => reading.set_tag(key, v.to_string()),
                    Scalar::Bool(v) => reading.set_tag(key, v.to_string()),
                    Scalar::Unsupported => reject = Some(Reject::UnsupportedValue),
                }
                continue;
            }
            let field = match value {
                Scalar::Float(v) => FieldValue::Float(v),
                Scalar::Int(v) if self.opts.keep_integers => FieldValue::Integer(v),
                Scalar::Uint(v) if self.opts.keep_integers => FieldValue::Unsigned(v),
                Scalar::Int(v) => FieldValue::Float(v as f64),
                Scalar::Uint(v) => FieldValue::Float(v as f64),
                Scalar::Bool(v) => FieldValue::Boolean(v),
                Scalar::Str(s) => FieldValue::String(s.into_owned()),
                Scalar::Unsupported => {
                    reject = Some(Reject::UnsupportedValue);
                    continue;
                }
            };
            match reading.fields.iter_mut().find(|(n, _)| *n == key) {
                Some(slot) => slot.1 = field,
                None => reading.fields.push((key.into_owned(), field)),
            }
        }
        Ok(match reject {
            Some(r) => Err(r),
            None => Ok(reading),
        })
    }
}

fn timestamp(value: &Scalar<'_>, opts: &JsonOptions) -> Result<i64, Reject> {
    match value {
        Scalar::Int(v) => opts.timestamp_unit.int_to_ns(*v),
        Scalar::Uint(v) => i64::try_from(*v)
            .map_err(|_| Reject::TimestampOutOfRange)
            .and_then(|v| opts.timestamp_unit.int_to_ns(v)),
        Scalar::Float(v) => opts.timestamp_unit.float_to_ns(*v),
        Scalar::Str(s) => opts.timestamp_unit.str_to_ns(s),
        Scalar::Bool(_) | Scalar::Unsupported => Err(Reject::InvalidTimestamp),
    }
}

struct ScalarDe<'a>(Scalar<'a>);

impl<'de> de::Deserialize<'de> for ScalarDe<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor).map(ScalarDe)
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Scalar::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Scalar::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(match i64::try_from(v) {
            Ok(i) => Scalar::Int(i),
            Err(_) => Scalar::Uint(v),
        })
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Scalar::Float(v))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(v.to_string())))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(v)))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Unsupported)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::Unsupported)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar::Unsupported)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{ctx, NOW};
    use super::*;

    fn opts() -> JsonOptions {
        JsonOptions {
            tag_keys: vec!["room".into()],
            ..JsonOptions::default()
        }
    }

    fn one(text: &str) -> Result<Reading, Reject> {
        let tags = vec![("site".to_string(), "s1".to_string())];
        parse(text, &opts(), &ctx(&tags))
    }

    #[test]
    fn a_flat_object_becomes_one_reading() {
        let ts = NOW - 5_000_000_000;
        let r = one(&format!(
            r#"{{"ts":{ts},"temperature":21.5,"count":42,"ok":true,"state":"on","room":"lab"}}"#
        ))
        .unwrap();
        assert_eq!(r.measurement, "env");
        assert_eq!(r.timestamp, ts);
        assert_eq!(
            r.tags,
            vec![
                ("device".to_string(), "sensors/a/b".to_string()),
                ("room".to_string(), "lab".to_string()),
                ("site".to_string(), "s1".to_string()),
            ]
        );
        assert_eq!(
            r.fields,
            vec![
                ("temperature".to_string(), FieldValue::Float(21.5)),
                ("count".to_string(), FieldValue::Float(42.0)),
                ("ok".to_string(), FieldValue::Boolean(true)),
                ("state".to_string(), FieldValue::String("on".into())),
            ]
        );
    }

    #[test]
    fn integers_can_be_kept() {
        let tags = vec![];
        let o = JsonOptions {
            keep_integers: true,
            ..JsonOptions::default()
        };
        let r = parse(r#"{"n":-4,"big":18446744073709551615}"#, &o, &ctx(&tags)).unwrap();
        assert_eq!(r.field("n"), Some(&FieldValue::Integer(-4)));
        assert_eq!(r.field("big"), Some(&FieldValue::Unsigned(u64::MAX)));
        assert_eq!(r.timestamp, NOW, "no timestamp key: time of receipt");
    }

    #[test]
    fn rejections_by_reason() {
        assert_eq!(one(r#"{"temperature":21.5"#), Err(Reject::InvalidJson));
        assert_eq!(one(r#"[1,2]"#), Err(Reject::InvalidJson));
        assert_eq!(one(r#"{"a":1} trailing"#), Err(Reject::InvalidJson));
        assert_eq!(
            one(r#"{"temperature":[1,2]}"#),
            Err(Reject::UnsupportedValue)
        );
        assert_eq!(
            one(r#"{"temperature":{"v":1}}"#),
            Err(Reject::UnsupportedValue)
        );
        assert_eq!(
            one(r#"{"temperature":null}"#),
            Err(Reject::UnsupportedValue)
        );
        assert_eq!(
            one(r#"{"ts":"yesterday","t":1}"#),
            Err(Reject::InvalidTimestamp)
        );
        assert_eq!(one(r#"{"ts":true,"t":1}"#), Err(Reject::InvalidTimestamp));
        assert_eq!(
            one(r#"{"ts":10400000000000000000,"t":1}"#),
            Err(Reject::TimestampOutOfRange)
        );
        assert_eq!(one(r#"{"ts":1,"t":1}"#), Err(Reject::TimestampOutOfRange));
        assert_eq!(
            one(r#"{"ts":10413792000,"t":1}"#),
            Err(Reject::TimestampOutOfRange)
        );
        assert_eq!(
            one(r#"{"ts":4102444800,"t":1}"#),
            Err(Reject::TimestampOutOfRange)
        );
        assert_eq!(one(r#"{"ts":1750000000}"#), Err(Reject::NoFields));
        assert_eq!(one(r#"{"room":"lab"}"#), Err(Reject::NoFields));
    }
}
