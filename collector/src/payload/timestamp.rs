//! Device timestamps: units, conversion to nanoseconds, and the bounds that reject absurd ones.

use serde::Deserialize;

use super::Reject;

/// The unit of a timestamp in a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TimeUnit {
    /// Infer from the magnitude: below 1e11 seconds, below 1e14 milliseconds, below 1e17
    /// microseconds, else nanoseconds (unambiguous for dates between 1973 and 2286); strings
    /// are RFC 3339.
    Auto,
    /// Seconds since the epoch (fractions allowed).
    #[serde(alias = "seconds")]
    S,
    /// Milliseconds since the epoch.
    Ms,
    /// Microseconds since the epoch.
    Us,
    /// Nanoseconds since the epoch.
    Ns,
    /// An RFC 3339 date and time string, such as `2026-11-25T10:00:00.5+01:00`.
    Rfc3339,
}

impl TimeUnit {
    fn nanos_per_unit(self, magnitude: f64) -> i64 {
        match self {
            TimeUnit::S => 1_000_000_000,
            TimeUnit::Ms => 1_000_000,
            TimeUnit::Us => 1_000,
            TimeUnit::Ns | TimeUnit::Rfc3339 => 1,
            TimeUnit::Auto => {
                if magnitude < 1e11 {
                    1_000_000_000
                } else if magnitude < 1e14 {
                    1_000_000
                } else if magnitude < 1e17 {
                    1_000
                } else {
                    1
                }
            }
        }
    }

    /// Converts an integer timestamp in this unit to nanoseconds.
    ///
    /// # Errors
    /// [`Reject::InvalidTimestamp`] if the unit takes strings only;
    /// [`Reject::TimestampOutOfRange`] if the time is beyond what nanoseconds in an `i64`
    /// can hold (years 1677 to 2262).
    pub fn int_to_ns(self, v: i64) -> Result<i64, Reject> {
        if self == TimeUnit::Rfc3339 {
            return Err(Reject::InvalidTimestamp);
        }
        v.checked_mul(self.nanos_per_unit(v.unsigned_abs() as f64))
            .ok_or(Reject::TimestampOutOfRange)
    }

    /// Converts a fractional timestamp in this unit to nanoseconds.
    ///
    /// # Errors
    /// [`Reject::InvalidTimestamp`] if the unit takes strings only or the value is not
    /// finite; [`Reject::TimestampOutOfRange`] beyond the years 1677 to 2262.
    pub fn float_to_ns(self, v: f64) -> Result<i64, Reject> {
        if self == TimeUnit::Rfc3339 || !v.is_finite() {
            return Err(Reject::InvalidTimestamp);
        }
        let ns = (v * self.nanos_per_unit(v.abs()) as f64).round();
        // i64::MAX as f64 rounds up to 2^63, which no longer fits: compare strictly.
        if ns >= -(i64::MAX as f64) && ns < i64::MAX as f64 {
            Ok(ns as i64)
        } else {
            Err(Reject::TimestampOutOfRange)
        }
    }

    /// Converts a string timestamp: RFC 3339 for `rfc3339` and `auto`, a number otherwise.
    ///
    /// # Errors
    /// [`Reject::InvalidTimestamp`] if the string is neither.
    pub fn str_to_ns(self, s: &str) -> Result<i64, Reject> {
        let s = s.trim();
        if let Ok(v) = s.parse::<i64>() {
            return self.int_to_ns(v);
        }
        if matches!(self, TimeUnit::Rfc3339 | TimeUnit::Auto) {
            return chrono::DateTime::parse_from_rfc3339(s)
                .ok()
                .and_then(|t| t.timestamp_nanos_opt())
                .ok_or(Reject::InvalidTimestamp);
        }
        match s.parse::<f64>() {
            Ok(v) => self.float_to_ns(v),
            Err(_) => Err(Reject::InvalidTimestamp),
        }
    }
}

/// The window of acceptable timestamps, in nanoseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimestampBounds {
    /// The earliest accepted timestamp.
    pub min_ns: i64,
    /// The latest accepted timestamp.
    pub max_ns: i64,
}

impl TimestampBounds {
    /// The window from `max_past_ns` before `now_ns` to `max_future_ns` after it.
    pub fn around(now_ns: i64, max_future_ns: i64, max_past_ns: i64) -> TimestampBounds {
        TimestampBounds {
            min_ns: now_ns.saturating_sub(max_past_ns),
            max_ns: now_ns.saturating_add(max_future_ns),
        }
    }

    /// `ts` if it is within the window.
    ///
    /// # Errors
    /// [`Reject::TimestampOutOfRange`] otherwise.
    pub fn check(&self, ts: i64) -> Result<i64, Reject> {
        if (self.min_ns..=self.max_ns).contains(&ts) {
            Ok(ts)
        } else {
            Err(Reject::TimestampOutOfRange)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_750_000_000_123_456_789;

    #[test]
    fn auto_infers_the_unit_from_the_magnitude() {
        assert_eq!(
            TimeUnit::Auto.int_to_ns(1_750_000_000),
            Ok(1_750_000_000_000_000_000)
        );
        assert_eq!(
            TimeUnit::Auto.int_to_ns(1_750_000_000_123),
            Ok(1_750_000_000_123_000_000)
        );
        assert_eq!(
            TimeUnit::Auto.int_to_ns(1_750_000_000_123_456),
            Ok(1_750_000_000_123_456_000)
        );
        assert_eq!(TimeUnit::Auto.int_to_ns(T), Ok(T));
        assert_eq!(
            TimeUnit::Auto.float_to_ns(1_750_000_000.5),
            Ok(1_750_000_000_500_000_000)
        );
    }

    #[test]
    fn explicit_units_and_overflow() {
        assert_eq!(TimeUnit::S.int_to_ns(2), Ok(2_000_000_000));
        assert_eq!(TimeUnit::Ms.int_to_ns(2), Ok(2_000_000));
        assert_eq!(TimeUnit::Us.int_to_ns(2), Ok(2_000));
        assert_eq!(TimeUnit::Ns.int_to_ns(2), Ok(2));
        assert_eq!(
            TimeUnit::S.int_to_ns(i64::MAX),
            Err(Reject::TimestampOutOfRange)
        );
        assert_eq!(
            TimeUnit::Ns.float_to_ns(1e300),
            Err(Reject::TimestampOutOfRange)
        );
        assert_eq!(
            TimeUnit::Ns.float_to_ns(f64::NAN),
            Err(Reject::InvalidTimestamp)
        );
        assert_eq!(
            TimeUnit::Rfc3339.int_to_ns(1),
            Err(Reject::InvalidTimestamp)
        );
    }

    #[test]
    fn strings() {
        assert_eq!(
            TimeUnit::Rfc3339.str_to_ns("2025-06-15T15:06:40.123456789Z"),
            Ok(1_750_000_000_123_456_789)
        );
        assert_eq!(
            TimeUnit::Auto.str_to_ns("2025-06-15T17:06:40+02:00"),
            Ok(1_750_000_000_000_000_000)
        );
        assert_eq!(TimeUnit::Ms.str_to_ns("1500"), Ok(1_500_000_000));
        assert_eq!(
            TimeUnit::Auto.str_to_ns("yesterday"),
            Err(Reject::InvalidTimestamp)
        );
    }

    #[test]
    fn bounds() {
        let b = TimestampBounds::around(T, 10, 20);
        assert_eq!(b.check(T + 10), Ok(T + 10));
        assert_eq!(b.check(T - 20), Ok(T - 20));
        assert_eq!(b.check(T + 11), Err(Reject::TimestampOutOfRange));
        assert_eq!(b.check(T - 21), Err(Reject::TimestampOutOfRange));
        let wide = TimestampBounds::around(0, i64::MAX, i64::MAX);
        assert!(wide.check(i64::MIN + 1).is_ok());
    }
}
