//! How readers show what the store holds, shared by the `query` command and the dashboard's
//! API: the forms of a time they accept, a time as text, tags and values as JSON.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat};
use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::reading::FieldValue;

/// A time given on the command line or in a dashboard request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeArg {
    /// An absolute time, in nanoseconds since the Unix epoch.
    At(i64),
    /// That long before the moment the query runs.
    Ago(Duration),
}

impl TimeArg {
    /// The time in nanoseconds since the Unix epoch, relative times counted back from
    /// `now_ns`.
    ///
    /// # Errors
    /// A message when a relative time lies before 1677 (the range of `i64` nanoseconds).
    pub fn resolve(self, now_ns: i64) -> Result<i64, String> {
        match self {
            TimeArg::At(ns) => Ok(ns),
            TimeArg::Ago(d) => i64::try_from(d.as_nanos())
                .ok()
                .and_then(|d| now_ns.checked_sub(d))
                .ok_or_else(|| {
                    format!(
                        "{} ago is too far in the past",
                        humantime::format_duration(d)
                    )
                }),
        }
    }
}

impl FromStr for TimeArg {
    type Err = String;

    /// Parses `now`, nanoseconds since the Unix epoch (`1714564800000000000`), an RFC 3339
    /// time (`2024-05-01T12:00:00Z`), or a duration ago (`-1h`, `30m`, `1h30m`, `2days`).
    fn from_str(s: &str) -> Result<TimeArg, String> {
        let s = s.trim();
        if s == "now" {
            return Ok(TimeArg::Ago(Duration::ZERO));
        }
        if let Ok(ns) = s.parse::<i64>() {
            return Ok(TimeArg::At(ns));
        }
        if let Ok(t) = DateTime::parse_from_rfc3339(s) {
            return t
                .timestamp_nanos_opt()
                .map(TimeArg::At)
                .ok_or_else(|| format!("{s} is outside the years 1677 to 2262"));
        }
        let ago = s.strip_prefix('-').unwrap_or(s);
        if let Ok(d) = humantime::parse_duration(ago) {
            return Ok(TimeArg::Ago(d));
        }
        Err(format!(
            "{s:?} is not a time: expected RFC 3339 (2024-05-01T12:00:00Z), a duration ago \
             (-1h, 30m), now, or nanoseconds since the Unix epoch"
        ))
    }
}

/// RFC 3339 in UTC with nanoseconds: `2023-11-14T22:13:20.000000000Z`.
pub(crate) fn format_time(ns: i64) -> String {
    DateTime::from_timestamp_nanos(ns).to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// Tags as a JSON object (the API of the dashboard writes them so too).
pub(crate) struct JsonTags<'a>(pub(crate) &'a [(String, String)]);

impl Serialize for JsonTags<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// A value as JSON: typed; NaN and infinities, which JSON lacks, as `"NaN"`, `"inf"`, `"-inf"`.
pub(crate) struct JsonValue<'a>(pub(crate) &'a FieldValue);

impl Serialize for JsonValue<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            FieldValue::Float(v) if v.is_finite() => serializer.serialize_f64(*v),
            FieldValue::Float(v) => serializer.serialize_str(&v.to_string()),
            FieldValue::Integer(v) => serializer.serialize_i64(*v),
            FieldValue::Unsigned(v) => serializer.serialize_u64(*v),
            FieldValue::Boolean(v) => serializer.serialize_bool(*v),
            FieldValue::String(v) => serializer.serialize_str(v),
        }
    }
}
