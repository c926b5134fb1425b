//! The clock in the collector's one unit: nanoseconds since the Unix epoch, as `i64`
//! (what readings, the journal and the store carry).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Now, in nanoseconds since the Unix epoch: negative before 1970, saturating outside
/// 1677..2262.
pub fn now_ns() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => duration_ns(d),
        Err(e) => i64::try_from(e.duration().as_nanos()).map_or(i64::MIN, |n| -n),
    }
}

/// Now, in whole seconds since the Unix epoch (0 before 1970): what the metrics' last-seen
/// gauges hold.
pub fn now_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `d` in nanoseconds, saturating at `i64::MAX` (292 years).
pub fn duration_ns(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_saturate() {
        assert_eq!(duration_ns(Duration::from_millis(1500)), 1_500_000_000);
        assert_eq!(duration_ns(Duration::MAX), i64::MAX);
    }
}
