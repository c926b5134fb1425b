//! `key=value` pairs: `t=21.5 h=40.1 state=open`, separated by spaces, tabs, commas or
//! semicolons. The timestamp key and the tag keys work as in JSON objects.

use std::borrow::Cow;

use super::fields::Builder;
use super::{Context, JsonOptions, Reject};
use crate::reading::Reading;

/// Parses one line of pairs into a reading.
pub(super) fn parse(text: &str, opts: &JsonOptions, ctx: &Context<'_>) -> Result<Reading, Reject> {
    let mut builder = Builder::new(opts, ctx);
    let mut pairs = 0usize;
    for token in text
        .split([' ', '\t', ',', ';', '\r', '\n'])
        .filter(|t| !t.is_empty())
    {
        let (key, value) = token.split_once('=').ok_or(Reject::InvalidKeyValue)?;
        if key.is_empty() || value.is_empty() {
            return Err(Reject::InvalidKeyValue);
        }
        builder.put_text(Cow::Borrowed(key), value);
        pairs += 1;
    }
    if pairs == 0 {
        return Err(Reject::InvalidKeyValue);
    }
    builder.finish()
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

    #[test]
    fn pairs_become_fields_tags_and_the_timestamp() {
        let tags = vec![("device".into(), "d1".into())];
        let ts = NOW - 1_000_000_000;
        let r = parse(
            &format!("ts={ts} t=21.5 h=40,n=3;ok=true state=open room=lab\r"),
            &opts(),
            &ctx(&tags),
        )
        .unwrap();
        assert_eq!(r.timestamp, ts);
        assert_eq!(r.device(), Some("d1"));
        assert_eq!(r.tag("room"), Some("lab"));
        assert_eq!(
            r.fields,
            vec![
                ("t".into(), FieldValue::Float(21.5)),
                ("h".into(), FieldValue::Float(40.0)),
                ("n".into(), FieldValue::Float(3.0)),
                ("ok".into(), FieldValue::Boolean(true)),
                ("state".into(), FieldValue::String("open".into())),
            ]
        );
    }

    #[test]
    fn rejections_by_reason() {
        let one = |t: &str| parse(t, &opts(), &ctx(&[]));
        assert_eq!(one("t=1 h"), Err(Reject::InvalidKeyValue));
        assert_eq!(one("=1"), Err(Reject::InvalidKeyValue));
        assert_eq!(one("t="), Err(Reject::InvalidKeyValue));
        assert_eq!(one("   "), Err(Reject::InvalidKeyValue));
        assert_eq!(one("t=NaN"), Err(Reject::UnsupportedValue));
        assert_eq!(one("room=lab"), Err(Reject::NoFields));
        assert_eq!(one("ts=1 t=1"), Err(Reject::TimestampOutOfRange));
        assert_eq!(one("ts=soon t=1"), Err(Reject::InvalidTimestamp));
        assert_eq!(one("t=1").unwrap().timestamp, NOW);
    }

    #[test]
    fn a_fractional_timestamp_is_read_exactly() {
        let one = |t: &str| parse(t, &opts(), &ctx(&[])).map(|r| r.timestamp);
        assert_eq!(one("ts=1750000000.123456789 t=1"), Ok(NOW + 123_456_789));
        assert_eq!(one("ts=1750000000123.5 t=1"), Ok(NOW + 123_500_000));
        assert_eq!(one("ts=2025-06-15T15:06:40.5Z t=1"), Ok(NOW + 500_000_000));
        assert_eq!(one("ts=1.75e9 t=1"), Ok(NOW));
    }
}
