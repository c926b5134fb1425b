//! What the key-value formats have in common (JSON objects, `key=value` pairs, CSV rows): a
//! sequence of (key, scalar) pairs, where the timestamp key sets the time, the tag keys set
//! tags, and every other key is a field.

use std::borrow::Cow;

use super::{ensure_device, new_reading, Context, JsonOptions, Reject};
use crate::reading::{FieldValue, Reading};

/// A scalar value from a payload, or a marker that the value was of a kind we do not take.
pub(super) enum Scalar<'a> {
    Int(i64),
    Uint(u64),
    Float(f64),
    Bool(bool),
    Str(Cow<'a, str>),
    Unsupported,
}

impl<'a> Scalar<'a> {
    /// A value written as text (`21.5`, `-3`, `true`, `open`): integers, then floats, then
    /// booleans, else a string. A number that is not finite (`NaN`, `inf`) is unsupported:
    /// no store takes it.
    pub(super) fn from_text(text: &'a str) -> Scalar<'a> {
        if let Ok(v) = text.parse::<i64>() {
            // `-0` is a float's negative zero, as JSON reads it; the integer would lose the sign.
            if v == 0 && text.starts_with('-') {
                return Scalar::Float(-0.0);
            }
            return Scalar::Int(v);
        }
        if let Ok(v) = text.parse::<u64>() {
            return Scalar::Uint(v);
        }
        if let Ok(v) = text.parse::<f64>() {
            return if v.is_finite() {
                Scalar::Float(v)
            } else {
                Scalar::Unsupported
            };
        }
        match text {
            "true" | "TRUE" | "True" => Scalar::Bool(true),
            "false" | "FALSE" | "False" => Scalar::Bool(false),
            _ => Scalar::Str(Cow::Borrowed(text)),
        }
    }
}

/// From this many fields on, a repeated key is looked up in a hash index rather than by
/// scanning the fields: a 64 KiB payload of 8,000 distinct keys would otherwise cost 32
/// million comparisons (seconds of CPU per message in a debug build).
const INDEX_FROM: usize = 16;

/// Builds one reading from (key, value) pairs. The first rejection is kept, and the pairs
/// after it are ignored (a JSON parser still consumes them so that syntax errors win).
pub(super) struct Builder<'o, 'c> {
    opts: &'o JsonOptions,
    ctx: &'o Context<'c>,
    reading: Reading,
    reject: Option<Reject>,
    /// Field name to position, once there are [`INDEX_FROM`] fields.
    index: Option<foldhash::HashMap<String, usize>>,
}

impl<'o, 'c> Builder<'o, 'c> {
    pub(super) fn new(opts: &'o JsonOptions, ctx: &'o Context<'c>) -> Builder<'o, 'c> {
        Builder {
            opts,
            ctx,
            reading: new_reading(ctx.measurement, ctx, ctx.received_ns),
            reject: None,
            index: None,
        }
    }

    /// Takes one pair written as text (`key=value`, a CSV cell): the timestamp is read
    /// exactly from its digits ([`TimeUnit::text_to_ns`](super::TimeUnit::text_to_ns)), any
    /// other value as [`Scalar::from_text`] says.
    pub(super) fn put_text(&mut self, key: Cow<'_, str>, text: &str) {
        if self.reject.is_none() && key == self.opts.timestamp_key {
            match self.opts.timestamp_unit.text_to_ns(text) {
                Ok(ts) => self.reading.timestamp = ts,
                Err(r) => self.reject = Some(r),
            }
            return;
        }
        self.put(key, Scalar::from_text(text));
    }

    /// Takes one pair: the timestamp, a tag, or a field (a repeated field keeps its last value).
    pub(super) fn put(&mut self, key: Cow<'_, str>, value: Scalar<'_>) {
        if self.reject.is_some() {
            return;
        }
        if key == self.opts.timestamp_key {
            match timestamp(&value, self.opts) {
                Ok(ts) => self.reading.timestamp = ts,
                Err(r) => self.reject = Some(r),
            }
            return;
        }
        if self.opts.tag_keys.iter().any(|k| *k == key) {
            match value {
                Scalar::Str(s) => self.reading.set_tag(key, s),
                Scalar::Int(v) => self.reading.set_tag(key, v.to_string()),
                Scalar::Uint(v) => self.reading.set_tag(key, v.to_string()),
                Scalar::Float(v) => self.reading.set_tag(key, v.to_string()),
                Scalar::Bool(v) => self.reading.set_tag(key, v.to_string()),
                Scalar::Unsupported => self.reject = Some(Reject::UnsupportedValue),
            }
            return;
        }
        let field = match value {
            Scalar::Float(v) => FieldValue::Float(v),
            Scalar::Int(v) if self.opts.keep_integers => FieldValue::Integer(v),
            Scalar::Uint(v) if self.opts.keep_integers => FieldValue::Unsigned(v),
            Scalar::Int(v) => FieldValue::Float(v as f64),
            Scalar::Uint(v) => FieldValue::Float(v as f64),
            Scalar::Bool(v) => FieldValue::Boolean(v),
            Scalar::Str(s) => FieldValue::String(s.into()),
            Scalar::Unsupported => {
                self.reject = Some(Reject::UnsupportedValue);
                return;
            }
        };
        let fields = &mut self.reading.fields;
        if fields.len() >= INDEX_FROM && self.index.is_none() {
            let index = fields
                .iter()
                .enumerate()
                .map(|(i, (n, _))| (n.to_string(), i))
                .collect();
            self.index = Some(index);
        }
        let slot = match &self.index {
            Some(index) => index.get(key.as_ref()).copied(),
            None => fields.iter().position(|(n, _)| *n == key),
        };
        match slot {
            Some(i) => fields[i].1 = field,
            None => {
                if let Some(index) = &mut self.index {
                    index.insert(key.to_string(), fields.len());
                }
                fields.push((key.into(), field));
            }
        }
    }

    /// The reading: it needs a field and a believable timestamp; it gets the context's
    /// device id if it names none.
    pub(super) fn finish(self) -> Result<Reading, Reject> {
        if let Some(r) = self.reject {
            return Err(r);
        }
        let mut reading = self.reading;
        if reading.fields.is_empty() {
            return Err(Reject::NoFields);
        }
        reading.timestamp = self.ctx.bounds.check(reading.timestamp)?;
        ensure_device(&mut reading, self.ctx);
        Ok(reading)
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
