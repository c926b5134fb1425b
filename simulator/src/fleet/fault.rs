//! Faulty messages: what they are and how their payloads are made.
//!
//! A faulty message replaces a good one in the stream (same topic, same place), so the good
//! readings it would have carried are never sent and a correct collector stores nothing for it.
//! Each kind is rendered in the configured payload format where that format can express it:
//!
//! | kind                | JSON                               | line protocol            | bare value       |
//! |---------------------|------------------------------------|--------------------------|------------------|
//! | `invalid-json`      | the object cut in half             | `humidity=` (no value)   | `21.53.5`        |
//! | `wrong-type`        | `"temperature":[21.53,21.53]` or `{"value":21.53}` | the same | the same |
//! | `invalid-timestamp` | `"ts":"yesterday"`                 | timestamp `yesterday`    | the JSON payload |
//! | `oversized`         | spaces before the `}`              | a `padding="xx…"` field  | leading zeros    |
//! | `invalid-utf8`      | `0xff 0xfe` ending the `temperature` key | the same           | after the number |
//! | `future-timestamp`  | year 2300 (overflows i64 ns)       | the same                 | the JSON payload |
//! | `past-timestamp`    | 1 s after the epoch                | the same                 | the JSON payload |
//! | `garbage`           | 16 to 200 random bytes             | the same                 | the same         |
//!
//! Oversized payloads are exactly `oversized_bytes` long and parse to the good reading (plus
//! a `padding` field in line protocol): only a size limit rejects them. A bare value has no
//! timestamp, so the timestamp faults send the JSON payload there, which is not a number.

use serde::{Deserialize, Serialize};

use super::payload::{float, json, json_object, line_protocol};
use super::{FleetError, GoodSample, PayloadFormat};
use crate::model::SplitMix64;

/// 2300-01-01T00:00:00Z in ns: 10_413_792_000 s. It does not fit in an i64 (the i64 ns range
/// ends in 2262), which is part of what the fault tests.
pub const YEAR_2300_NS: u64 = 10_413_792_000_000_000_000;
/// 1970-01-01T00:00:01Z in ns.
pub const ONE_SECOND_AFTER_EPOCH_NS: i64 = 1_000_000_000;

/// Kinds of faulty payloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// Malformed: truncated JSON (or its equivalent in the format).
    InvalidJson,
    /// A field value that is an array or an object.
    WrongType,
    /// A timestamp that is not a number: `"ts":"yesterday"`.
    InvalidTimestamp,
    /// A valid-looking payload padded to [`FaultConfig::oversized_bytes`].
    Oversized,
    /// Bytes `0xff 0xfe` inside a string.
    InvalidUtf8,
    /// A timestamp in the year 2300.
    FutureTimestamp,
    /// A timestamp 1 second after the Unix epoch.
    PastTimestamp,
    /// Random bytes.
    Garbage,
}

impl FaultKind {
    /// Every kind, in declaration order.
    pub const ALL: [FaultKind; 8] = [
        FaultKind::InvalidJson,
        FaultKind::WrongType,
        FaultKind::InvalidTimestamp,
        FaultKind::Oversized,
        FaultKind::InvalidUtf8,
        FaultKind::FutureTimestamp,
        FaultKind::PastTimestamp,
        FaultKind::Garbage,
    ];
}

/// The fault a message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    /// What is wrong with the payload.
    pub kind: FaultKind,
}

/// Which messages are faulty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultConfig {
    /// Every Nth message of the stream is faulty (the Nth, the 2Nth...); `None`: no faults.
    pub every: Option<usize>,
    /// Kinds of the faulty messages, used in turn.
    pub kinds: Vec<FaultKind>,
    /// Size of [`FaultKind::Oversized`] payloads. Keep it below the broker's packet limit
    /// (the in-process broker takes 128 KiB), or the broker drops the publisher's connection.
    pub oversized_bytes: usize,
}

impl Default for FaultConfig {
    fn default() -> Self {
        Self {
            every: None,
            kinds: FaultKind::ALL.to_vec(),
            oversized_bytes: 64 * 1024,
        }
    }
}

impl FaultConfig {
    pub(super) fn validate(&self) -> Result<(), FleetError> {
        let invalid = |field, reason| Err(FleetError::Invalid { field, reason });
        match self.every {
            Some(0) => invalid("faults.every", "must be at least 1 (or none)"),
            Some(_) if self.kinds.is_empty() => invalid("faults.kinds", "must not be empty"),
            _ if self.oversized_bytes < 1024 => {
                invalid("faults.oversized_bytes", "must be at least 1024")
            }
            _ => Ok(()),
        }
    }

    /// The kind of fault of message `n` of the stream (counting from 0), if it is faulty.
    pub fn kind_of(&self, n: u64) -> Option<FaultKind> {
        let every = self.every? as u64;
        let position = n + 1;
        if self.kinds.is_empty() || !position.is_multiple_of(every) {
            return None;
        }
        let nth_fault = position / every - 1;
        Some(self.kinds[(nth_fault % self.kinds.len() as u64) as usize])
    }
}

/// The payload of a faulty message that replaces `good`.
pub(super) fn payload(
    kind: FaultKind,
    format: PayloadFormat,
    good: &GoodSample<'_>,
    mut rng: SplitMix64,
    config: &FaultConfig,
) -> Vec<u8> {
    match format {
        PayloadFormat::Json => json_fault(kind, good, &mut rng, config),
        PayloadFormat::LineProtocol => line_protocol_fault(kind, good, &mut rng, config),
        PayloadFormat::Value => value_fault(kind, good, &mut rng, config),
    }
}

fn json_fault(
    kind: FaultKind,
    good: &GoodSample<'_>,
    rng: &mut SplitMix64,
    config: &FaultConfig,
) -> Vec<u8> {
    let s = &good.sample;
    let with = |ts: String, temperature_key: &str, temperature: String| {
        let mut entries = vec![
            ("ts", ts),
            (temperature_key, temperature),
            ("humidity", float(s.humidity)),
            ("pressure", float(s.pressure)),
        ];
        if good.counter {
            entries.push(("count", s.count.to_string()));
        }
        json_object(&entries)
    };
    let ts = good.timestamp_ns.to_string();
    let temperature = float(s.temperature);
    match kind {
        FaultKind::InvalidJson => {
            let mut text = json(good).into_bytes();
            text.truncate(text.len() / 2);
            text
        }
        FaultKind::WrongType => with(ts, "temperature", wrong_type(&temperature, rng)).into_bytes(),
        FaultKind::InvalidTimestamp => {
            with("\"yesterday\"".to_owned(), "temperature", temperature).into_bytes()
        }
        FaultKind::Oversized => {
            let mut text = json(good);
            let padding = config.oversized_bytes.saturating_sub(text.len());
            text.insert_str(text.len() - 1, &" ".repeat(padding));
            text.into_bytes()
        }
        FaultKind::InvalidUtf8 => {
            let text = with(ts, "temperature\u{0}", temperature);
            replace_nul(text.into_bytes())
        }
        FaultKind::FutureTimestamp => {
            with(YEAR_2300_NS.to_string(), "temperature", temperature).into_bytes()
        }
        FaultKind::PastTimestamp => with(
            ONE_SECOND_AFTER_EPOCH_NS.to_string(),
            "temperature",
            temperature,
        )
        .into_bytes(),
        FaultKind::Garbage => garbage(rng),
    }
}

fn line_protocol_fault(
    kind: FaultKind,
    good: &GoodSample<'_>,
    rng: &mut SplitMix64,
    config: &FaultConfig,
) -> Vec<u8> {
    // Our field set and timestamp contain no space, so the last two spaces of the good line
    // split it into series key (where escaped spaces may hide), fields and timestamp.
    let line = line_protocol(good);
    let mut parts = line.rsplitn(3, ' ');
    let (ts, fields, series) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let temperature = float(good.sample.temperature);
    let other_fields = fields.split_once(',').map_or("", |(_, rest)| rest);
    let with_temperature =
        |value: &str, ts: &str| format!("{series} temperature={value},{other_fields} {ts}");
    match kind {
        FaultKind::InvalidJson => {
            format!("{series} temperature={temperature},humidity= {ts}").into_bytes()
        }
        FaultKind::WrongType => with_temperature(&wrong_type(&temperature, rng), ts).into_bytes(),
        FaultKind::InvalidTimestamp => format!("{series} {fields} yesterday").into_bytes(),
        FaultKind::Oversized => {
            let bare = format!("{series} {fields},padding=\"\" {ts}");
            let padding = "x".repeat(config.oversized_bytes.saturating_sub(bare.len()));
            format!("{series} {fields},padding=\"{padding}\" {ts}").into_bytes()
        }
        FaultKind::InvalidUtf8 => replace_nul(
            format!("{series} temperature\u{0}={temperature},{other_fields} {ts}").into_bytes(),
        ),
        FaultKind::FutureTimestamp => format!("{series} {fields} {YEAR_2300_NS}").into_bytes(),
        FaultKind::PastTimestamp => {
            format!("{series} {fields} {ONE_SECOND_AFTER_EPOCH_NS}").into_bytes()
        }
        FaultKind::Garbage => garbage(rng),
    }
}

fn value_fault(
    kind: FaultKind,
    good: &GoodSample<'_>,
    rng: &mut SplitMix64,
    config: &FaultConfig,
) -> Vec<u8> {
    let value = float(
        good.field
            .map_or(good.sample.temperature, |f| good.value_of(f)),
    );
    match kind {
        FaultKind::InvalidJson => format!("{value}.5").into_bytes(),
        FaultKind::WrongType => wrong_type(&value, rng).into_bytes(),
        FaultKind::Oversized => {
            let zeros = "0".repeat(config.oversized_bytes.saturating_sub(value.len()));
            (zeros + &value).into_bytes()
        }
        FaultKind::InvalidUtf8 => replace_nul(format!("{value}\u{0}").into_bytes()),
        FaultKind::Garbage => garbage(rng),
        FaultKind::InvalidTimestamp | FaultKind::FutureTimestamp | FaultKind::PastTimestamp => {
            json_fault(kind, good, rng, config)
        }
    }
}

/// An array or an object where a number belongs.
fn wrong_type(value: &str, rng: &mut SplitMix64) -> String {
    if rng.below(2) == 0 {
        format!("[{value},{value}]")
    } else {
        format!("{{\"value\":{value}}}")
    }
}

/// Replaces the NUL placeholder with the invalid UTF-8 sequence `0xff 0xfe`.
fn replace_nul(bytes: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 1);
    for byte in bytes {
        if byte == 0 {
            out.extend_from_slice(&[0xff, 0xfe]);
        } else {
            out.push(byte);
        }
    }
    out
}

fn garbage(rng: &mut SplitMix64) -> Vec<u8> {
    let len = 16 + rng.below(185) as usize;
    (0..len).map(|_| rng.next_u64() as u8).collect()
}
