//! The unit of a timestamp: readings carry nanoseconds since the Unix epoch; a sink may write
//! coarser ones (InfluxDB's `precision` parameter), and the dashboard's API answers in the
//! unit its `epoch` parameter asks for (InfluxDB's `epoch`). Both are this one type.

use serde::Deserialize;

/// The unit of the timestamps written (InfluxDB's `precision` parameter).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// Seconds.
    S,
    /// Milliseconds.
    Ms,
    /// Microseconds.
    Us,
    /// Nanoseconds (the default: readings carry nanoseconds).
    #[default]
    Ns,
}

impl Precision {
    /// The name the write APIs take (`s`, `ms`, `us`, `ns`).
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::S => "s",
            Precision::Ms => "ms",
            Precision::Us => "us",
            Precision::Ns => "ns",
        }
    }

    /// Nanoseconds per unit.
    pub fn nanos(self) -> i64 {
        match self {
            Precision::S => 1_000_000_000,
            Precision::Ms => 1_000_000,
            Precision::Us => 1_000,
            Precision::Ns => 1,
        }
    }

    /// `ns` (nanoseconds since the epoch) in this unit, rounded down (a reading stays in the
    /// second, millisecond... it happened in).
    pub fn convert(self, ns: i64) -> i64 {
        ns.div_euclid(self.nanos())
    }
}
