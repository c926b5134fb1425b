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

    /// Converts a fractional timestamp in this unit to nanoseconds: the shortest decimal
    /// that reads back as `v` (what the device wrote, if it wrote at most 17 digits), scaled
    /// exactly and rounded to the nanosecond (half away from zero). `1750000000.123` seconds
    /// is 1750000000123000000 ns, where `v * 1e9` in floating point is ...122999808.
    ///
    /// # Errors
    /// [`Reject::InvalidTimestamp`] if the unit takes strings only or the value is not
    /// finite; [`Reject::TimestampOutOfRange`] beyond the years 1677 to 2262.
    pub fn float_to_ns(self, v: f64) -> Result<i64, Reject> {
        if self == TimeUnit::Rfc3339 || !v.is_finite() {
            return Err(Reject::InvalidTimestamp);
        }
        let mut buf = ryu::Buffer::new();
        self.decimal_to_ns(buf.format_finite(v))
            .unwrap_or(Err(Reject::InvalidTimestamp))
    }

    /// Converts a string timestamp (a JSON string): RFC 3339 for `rfc3339` and `auto`, a
    /// number otherwise (an integer for `auto` too).
    ///
    /// # Errors
    /// [`Reject::InvalidTimestamp`] if the string is neither;
    /// [`Reject::TimestampOutOfRange`] beyond the years 1677 to 2262.
    pub fn str_to_ns(self, s: &str) -> Result<i64, Reject> {
        let s = s.trim();
        if let Ok(v) = s.parse::<i64>() {
            return self.int_to_ns(v);
        }
        if matches!(self, TimeUnit::Rfc3339 | TimeUnit::Auto) {
            return rfc3339_to_ns(s);
        }
        self.decimal_to_ns(s)
            .unwrap_or(Err(Reject::InvalidTimestamp))
    }

    /// Converts a timestamp written as text (a `key=value` pair, a CSV cell): a number in
    /// this unit, exactly (`1750000000.123456789` seconds is 1750000000123456789 ns), or for
    /// `auto` and `rfc3339` an RFC 3339 time.
    ///
    /// # Errors
    /// [`Reject::InvalidTimestamp`] if the text is neither;
    /// [`Reject::TimestampOutOfRange`] beyond the years 1677 to 2262.
    pub fn text_to_ns(self, text: &str) -> Result<i64, Reject> {
        let t = text.trim();
        if let Ok(v) = t.parse::<i64>() {
            return self.int_to_ns(v);
        }
        if self != TimeUnit::Rfc3339 {
            if let Some(ns) = self.decimal_to_ns(t) {
                return ns;
            }
        }
        if matches!(self, TimeUnit::Rfc3339 | TimeUnit::Auto) {
            return rfc3339_to_ns(t);
        }
        Err(Reject::InvalidTimestamp)
    }

    /// A decimal number (`-12.5`, `.5`, `1.75e9`) in this unit as nanoseconds, computed
    /// exactly from its digits and rounded half away from zero; `None` if `text` is not one.
    fn decimal_to_ns(self, text: &str) -> Option<Result<i64, Reject>> {
        let (negative, rest) = match text.as_bytes().first()? {
            b'-' => (true, &text[1..]),
            b'+' => (false, &text[1..]),
            _ => (false, text),
        };
        let (mantissa, exponent) = match rest.find(['e', 'E']) {
            Some(i) => (&rest[..i], Some(&rest[i + 1..])),
            None => (rest, None),
        };
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        let all_digits = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
        if (int.is_empty() && frac.is_empty()) || !all_digits(int) || !all_digits(frac) {
            return None;
        }
        let exponent = match exponent {
            None => 0,
            Some(e) => {
                let (sign, digits) = match e.as_bytes().first()? {
                    b'-' => (-1, &e[1..]),
                    b'+' => (1, &e[1..]),
                    _ => (1, e),
                };
                if digits.is_empty() || !all_digits(digits) {
                    return None;
                }
                // Far beyond any timestamp either way: the value is 0 or out of range.
                let e = digits.parse::<i64>().unwrap_or(i64::MAX).min(1 << 40);
                sign * e
            }
        };
        let digits: Vec<u8> = int.bytes().chain(frac.bytes()).collect();
        let first = digits.iter().position(|d| *d != b'0');
        let Some(first) = first else {
            return Some(Ok(0));
        };
        let significant = &digits[first..];
        let magnitude = text.parse::<f64>().map_or(f64::INFINITY, f64::abs);
        let scale = match self.nanos_per_unit(magnitude) {
            1_000_000_000 => 9,
            1_000_000 => 6,
            1_000 => 3,
            _ => 0,
        };
        // The value in nanoseconds is `significant * 10^power`.
        let power = exponent - frac.len() as i64 + scale;
        let len = significant.len() as i64;
        if len + power > 19 {
            return Some(Err(Reject::TimestampOutOfRange));
        }
        let number = |d: &[u8]| d.iter().fold(0i128, |n, b| n * 10 + i128::from(b - b'0'));
        let ns = if power >= 0 {
            number(significant) * 10i128.pow(power as u32)
        } else {
            let keep = len + power;
            if keep < 0 {
                0
            } else {
                let keep = keep as usize;
                number(&significant[..keep]) + i128::from(significant[keep] >= b'5')
            }
        };
        let ns = if negative { -ns } else { ns };
        Some(i64::try_from(ns).map_err(|_| Reject::TimestampOutOfRange))
    }
}

fn rfc3339_to_ns(s: &str) -> Result<i64, Reject> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
        .ok_or(Reject::InvalidTimestamp)
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

    /// A fractional timestamp is the decimal number written, not the nearest binary
    /// fraction scaled: `1750000000.123` seconds is exactly ...123000000 ns (through `f64`
    /// times 1e9 it was ...122999808).
    #[test]
    fn fractions_are_exact() {
        assert_eq!(
            TimeUnit::S.float_to_ns(1_750_000_000.123),
            Ok(1_750_000_000_123_000_000)
        );
        assert_eq!(
            TimeUnit::Auto.float_to_ns(1_750_000_000_123.456),
            Ok(1_750_000_000_123_456_000)
        );
        assert_eq!(
            TimeUnit::Ms.float_to_ns(-0.0000005),
            Ok(-1),
            "half away from zero"
        );
        assert_eq!(TimeUnit::Us.float_to_ns(1e-300), Ok(0));
        assert_eq!(
            TimeUnit::S.text_to_ns("1750000000.123456789"),
            Ok(1_750_000_000_123_456_789)
        );
        assert_eq!(
            TimeUnit::Auto.text_to_ns("1750000000.123456789"),
            Ok(1_750_000_000_123_456_789)
        );
        assert_eq!(
            TimeUnit::Ms.text_to_ns("+1.750000000123456789e12"),
            Ok(1_750_000_000_123_456_789)
        );
        assert_eq!(TimeUnit::S.text_to_ns(".5"), Ok(500_000_000));
        assert_eq!(TimeUnit::S.text_to_ns("5."), Ok(5_000_000_000));
        assert_eq!(TimeUnit::Ns.text_to_ns("1.5"), Ok(2));
        assert_eq!(TimeUnit::Ns.text_to_ns("-1.5"), Ok(-2));
        assert_eq!(
            TimeUnit::Auto.text_to_ns("2025-06-15T15:06:40.123456789Z"),
            Ok(1_750_000_000_123_456_789)
        );
        for bad in [
            "",
            ".",
            "-",
            "1e",
            "e5",
            "1.2.3",
            "0x10",
            "1_000",
            "inf",
            "NaN",
            "1e99999999999",
        ] {
            assert_eq!(
                TimeUnit::S.text_to_ns(bad),
                Err(if bad == "1e99999999999" {
                    Reject::TimestampOutOfRange
                } else {
                    Reject::InvalidTimestamp
                }),
                "{bad:?}"
            );
        }
        assert_eq!(TimeUnit::S.text_to_ns("9223372036.854775807"), Ok(i64::MAX));
        assert_eq!(
            TimeUnit::S.text_to_ns("9223372036.854775808"),
            Err(Reject::TimestampOutOfRange)
        );
        assert_eq!(
            TimeUnit::S.text_to_ns("-9223372036.854775808"),
            Ok(i64::MIN)
        );
        assert_eq!(
            TimeUnit::S.text_to_ns("0.000000000000000000000000000000000000001e30"),
            Ok(1)
        );
        assert_eq!(TimeUnit::S.text_to_ns("1e-99999999999"), Ok(0));
        assert_eq!(
            TimeUnit::S.text_to_ns("18446744073709551616"),
            Err(Reject::TimestampOutOfRange)
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
