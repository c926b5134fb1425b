//! Capped exponential backoff with jitter, for reconnects and write retries; and a limit on
//! how often a repeated event is logged.

use std::time::{Duration, Instant};

use std::hash::{BuildHasher as _, Hasher as _};

use crate::config::BackoffConfig;

/// Delays that double from `initial` up to `max`; each delay is drawn uniformly from the
/// upper half of its step ("equal jitter"), so many clients that failed together do not retry
/// together, and no delay is ever close to zero (no busy loop).
///
/// For a connection, [`Backoff::connected`] rather than [`Backoff::reset`]: a connection counts
/// as healthy only once it has stayed up for a while ([`Backoff::healthy_after`]), so one
/// that the peer closes right after its handshake (a broker that resends a message we cannot
/// take, a wrong ACL) keeps backing off instead of retrying at the first step forever.
#[derive(Debug, Clone)]
pub struct Backoff {
    config: BackoffConfig,
    attempt: u32,
    /// When the current connection came up, if one is up.
    up_since: Option<Instant>,
}

/// How long a connection must stay up to count as healthy (or the backoff's cap, if shorter).
const HEALTHY_AFTER: Duration = Duration::from_secs(10);

impl Backoff {
    /// A backoff at its first step.
    pub fn new(config: BackoffConfig) -> Backoff {
        Backoff {
            config,
            attempt: 0,
            up_since: None,
        }
    }

    /// A connection is up. If it stays up for [`Backoff::healthy_after`], the delay after it
    /// fails starts again from the first step; if it fails sooner, the delays keep growing.
    pub fn connected(&mut self) {
        self.up_since = Some(Instant::now());
    }

    /// How long a connection must stay up before its failure resets the delays: 10 s, or the
    /// cap if that is shorter.
    pub fn healthy_after(&self) -> Duration {
        HEALTHY_AFTER.min(self.config.max)
    }

    /// The next delay; each call moves one step up, until `max` (back to the first step when
    /// the connection that just failed had stayed up long enough: see [`Backoff::connected`]).
    pub fn next_delay(&mut self) -> Duration {
        self.next_delay_at(Instant::now())
    }

    fn next_delay_at(&mut self, now: Instant) -> Duration {
        if self
            .up_since
            .take()
            .is_some_and(|t| now.saturating_duration_since(t) >= self.healthy_after())
        {
            self.attempt = 0;
        }
        let step = self
            .config
            .initial
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.config.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = step / 2;
        half + jitter(step - half)
    }

    /// Back to the first step (after a success).
    pub fn reset(&mut self) {
        self.attempt = 0;
        self.up_since = None;
    }

    /// Whether the failure that led to the latest delay is worth a log line: the first one,
    /// then every tenth, so that a long outage does not flood the log.
    pub fn worth_logging(&self) -> bool {
        self.attempt == 1 || self.attempt.is_multiple_of(10)
    }

    /// How many delays were handed out since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

/// A duration drawn uniformly from `0..=max` (at nanosecond resolution).
///
/// Jitter needs no cryptographic quality, only different draws in different processes and
/// calls: std's `RandomState` is randomly keyed per thread and changes key on every `new`,
/// so hashing nothing with a fresh one is a random `u64`, with no dependency.
fn jitter(max: Duration) -> Duration {
    let span = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    Duration::from_nanos(random % span.saturating_add(1).max(1))
}

/// Logs a repeated event without flooding the log: the first at once, then at most one line
/// per period, saying how many went unsaid in between (they are counted in the metrics).
#[derive(Debug, Clone)]
pub struct LogLimit {
    period: Duration,
    logged_at: Option<Instant>,
    suppressed: u64,
}

impl LogLimit {
    /// At most one line per `period`.
    pub fn new(period: Duration) -> LogLimit {
        LogLimit {
            period,
            logged_at: None,
            suppressed: 0,
        }
    }

    /// One more event at `now`: `Some(n)` when it is to be logged (`n` events since the last
    /// line went unsaid), `None` when it is to be left out.
    pub fn event(&mut self, now: Instant) -> Option<u64> {
        match self.logged_at {
            Some(t) if now.duration_since(t) < self.period => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.logged_at = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_spreads_over_its_range() {
        let max = Duration::from_millis(100);
        let draws: Vec<Duration> = (0..200).map(|_| jitter(max)).collect();
        assert!(draws.iter().all(|d| *d <= max));
        // 200 draws from 100,000,001 values: all alike would be a broken source.
        let distinct: std::collections::BTreeSet<_> = draws.iter().collect();
        assert!(distinct.len() > 190, "{}", distinct.len());
        assert!(draws.iter().any(|d| *d < max / 4) && draws.iter().any(|d| *d > max * 3 / 4));
        assert_eq!(jitter(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn log_limit_says_the_first_then_one_per_period_with_the_count_left_out() {
        let mut l = LogLimit::new(Duration::from_secs(10));
        let t = Instant::now();
        assert_eq!(l.event(t), Some(0));
        assert_eq!(l.event(t + Duration::from_secs(1)), None);
        assert_eq!(l.event(t + Duration::from_secs(9)), None);
        assert_eq!(l.event(t + Duration::from_secs(10)), Some(2));
        assert_eq!(l.event(t + Duration::from_secs(11)), None);
        assert_eq!(l.event(t + Duration::from_secs(30)), Some(1));
    }

    #[test]
    fn doubles_up_to_the_cap_with_jitter_in_the_upper_half() {
        let mut b = Backoff::new(BackoffConfig {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        });
        let steps = [100, 200, 400, 800, 1000, 1000, 1000];
        for ms in steps {
            let d = b.next_delay();
            let step = Duration::from_millis(ms);
            assert!(d >= step / 2 && d <= step, "{d:?} for step {step:?}");
        }
        assert_eq!(b.attempts(), 7);
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn a_connection_that_fails_right_after_coming_up_does_not_reset_the_delays() {
        let mut b = Backoff::new(BackoffConfig {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
        });
        let t = Instant::now();
        // Up for 1 s each time, then closed by the peer: the delays still double.
        for (i, ms) in [100u64, 200, 400, 800].into_iter().enumerate() {
            let up = t + Duration::from_secs(i as u64 * 10);
            b.up_since = Some(up);
            let d = b.next_delay_at(up + Duration::from_secs(1));
            assert!(d >= Duration::from_millis(ms / 2), "{d:?} at step {i}");
        }
        assert_eq!(b.attempts(), 4);
        // Up for 10 s: healthy, so the next failure starts from the first step.
        b.up_since = Some(t);
        let d = b.next_delay_at(t + b.healthy_after());
        assert!(d <= Duration::from_millis(100), "{d:?}");
        assert_eq!(b.attempts(), 1);
        // A failure to connect at all (no `connected` in between) keeps climbing.
        assert!(b.next_delay_at(t + Duration::from_secs(60)) >= Duration::from_millis(100));
        assert_eq!(b.attempts(), 2);
    }
}
