//! Flat JSON objects: `{"ts": 1750000000, "temperature": 21.5, "room": "lab"}`.
//!
//! The object is deserialized straight into a [`Reading`] (no intermediate `Value` tree).
//! Arrays, nested objects and nulls are consumed and then reject the whole payload.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserializer;

use super::fields::{Builder, Scalar};
use super::{Context, JsonOptions, Reject};
use crate::reading::Reading;

/// Parses one flat JSON object into a reading.
pub(super) fn parse(text: &str, opts: &JsonOptions, ctx: &Context<'_>) -> Result<Reading, Reject> {
    let mut de = serde_json::Deserializer::from_str(text);
    ObjectSeed { opts, ctx }
        .deserialize(&mut de)
        .and_then(|r| de.end().map(|()| r))
        .map_err(|_| Reject::InvalidJson)?
        .finish()
}

struct ObjectSeed<'o, 'c> {
    opts: &'o JsonOptions,
    ctx: &'o Context<'c>,
}

impl<'de, 'o, 'c> DeserializeSeed<'de> for ObjectSeed<'o, 'c> {
    /// The error is a JSON syntax error; a payload we reject is decided by the builder.
    type Value = Builder<'o, 'c>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, 'o, 'c> Visitor<'de> for ObjectSeed<'o, 'c> {
    type Value = Builder<'o, 'c>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a flat JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut builder = Builder::new(self.opts, self.ctx);
        while let Some(key) = map.next_key_seed(KeySeed)? {
            // Consumed even after a rejection, so that syntax errors still win.
            let value = map.next_value::<ScalarDe<'de>>()?.0;
            builder.put(key, value);
        }
        Ok(builder)
    }
}

/// A key, borrowed from the payload unless it has escapes (serde's own `Cow<str>` always
/// allocates a `String`: four allocations per message of three fields and a timestamp).
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
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
    use crate::reading::FieldValue;

    fn opts() -> JsonOptions {
        JsonOptions {
            tag_keys: vec!["room".into()],
            ..JsonOptions::default()
        }
    }

    fn one(text: &str) -> Result<Reading, Reject> {
        let tags = vec![("site".into(), "s1".into())];
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
                ("device".into(), "sensors/a/b".into()),
                ("room".into(), "lab".into()),
                ("site".into(), "s1".into()),
            ]
        );
        assert_eq!(
            r.fields,
            vec![
                ("temperature".into(), FieldValue::Float(21.5)),
                ("count".into(), FieldValue::Float(42.0)),
                ("ok".into(), FieldValue::Boolean(true)),
                ("state".into(), FieldValue::String("on".into())),
            ]
        );
    }

    #[test]
    fn escaped_keys_and_values_are_unescaped() {
        let r = one(r#"{"te\u006dp":21.5,"room":"l\"ab","n\u00e9":"\u00e9t\u00e9"}"#).unwrap();
        assert_eq!(r.field("temp"), Some(&FieldValue::Float(21.5)));
        assert_eq!(r.tag("room"), Some("l\"ab"));
        assert_eq!(r.field("né"), Some(&FieldValue::String("été".into())));
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

    /// Past the first fields a repeated key is found through an index: the same answer as
    /// the scan (the last value wins, in the place of the first).
    #[test]
    fn many_keys_and_repeated_ones() {
        let mut text = String::from("{");
        for i in 0..40 {
            text.push_str(&format!("\"k{i}\":{i},"));
        }
        text.push_str(r#""k3":-3,"k30":-30,"k39":"x","new":1}"#);
        let r = one(&text).unwrap();
        assert_eq!(r.fields.len(), 41);
        assert_eq!(r.fields[3], ("k3".into(), FieldValue::Float(-3.0)));
        assert_eq!(r.fields[30], ("k30".into(), FieldValue::Float(-30.0)));
        assert_eq!(r.fields[39], ("k39".into(), FieldValue::String("x".into())));
        assert_eq!(r.fields[40], ("new".into(), FieldValue::Float(1.0)));
        assert_eq!(r.fields[20], ("k20".into(), FieldValue::Float(20.0)));
    }

    #[test]
    fn a_fractional_timestamp_is_the_decimal_written() {
        let ts = |text: &str| one(text).map(|r| r.timestamp);
        assert_eq!(ts(r#"{"ts":1750000000.123,"t":1}"#), Ok(NOW + 123_000_000));
        assert_eq!(
            ts(r#"{"ts":1750000000123.456,"t":1}"#),
            Ok(NOW + 123_456_000)
        );
        assert_eq!(ts(r#"{"ts":1.75e18,"t":1}"#), Ok(NOW));
    }
}
