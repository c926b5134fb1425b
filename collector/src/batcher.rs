//! The batcher: collects readings for a sink and says when to write them: at `max_readings`,
//! when the first reading in the batch has waited `max_age`, or when the input has ended.

use tokio::time::Instant;

use crate::config::BatchConfig;
use crate::reading::Batch;

/// A batch in the making.
#[derive(Debug)]
pub struct Batcher {
    config: BatchConfig,
    items: Batch,
    first_at: Option<Instant>,
}

impl Batcher {
    /// An empty batcher.
    pub fn new(config: BatchConfig) -> Batcher {
        Batcher {
            config,
            items: Batch::new(),
            first_at: None,
        }
    }

    /// How many more readings fit before the batch is full.
    pub fn room(&self) -> usize {
        self.config.max_readings.saturating_sub(self.items.len())
    }

    /// Adds readings that arrived at `now` (at most [`room`](Self::room) of them should be
    /// given; more are kept, and the batch is simply full).
    pub fn extend(&mut self, readings: Batch, now: Instant) {
        if readings.is_empty() {
            return;
        }
        if self.items.is_empty() {
            self.first_at = Some(now);
        }
        self.items.append(readings);
    }

    /// Whether the batch has reached `max_readings`.
    pub fn is_full(&self) -> bool {
        self.items.len() >= self.config.max_readings
    }

    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// When the batch must be written because of its age; `None` while empty.
    pub fn deadline(&self) -> Option<Instant> {
        self.first_at.map(|t| t + self.config.max_age)
    }

    /// Whether the batch is due at `now`: full, or old enough.
    pub fn is_due(&self, now: Instant) -> bool {
        self.is_full() || self.deadline().is_some_and(|d| now >= d)
    }

    /// Takes the batch, leaving the batcher empty.
    pub fn take(&mut self) -> Batch {
        self.first_at = None;
        std::mem::take(&mut self.items)
    }

    /// The readings waiting.
    pub fn len(&self) -> usize {
        self.items.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::reading::{FieldValue, Reading};

    fn r(i: i64) -> Reading {
        let mut r = Reading::new("m", i);
        r.fields.push(("v".into(), FieldValue::Integer(i)));
        r
    }

    fn batch(readings: Vec<Reading>) -> Batch {
        readings.into()
    }

    fn batcher(max_readings: usize, max_age_ms: u64) -> Batcher {
        Batcher::new(BatchConfig {
            max_readings,
            max_age: Duration::from_millis(max_age_ms),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn flushes_on_size() {
        let mut b = batcher(3, 1000);
        b.extend(batch(vec![r(1), r(2)]), Instant::now());
        assert!(!b.is_due(Instant::now()));
        assert_eq!(b.room(), 1);
        b.extend(batch(vec![r(3)]), Instant::now());
        assert!(b.is_full() && b.is_due(Instant::now()));
        assert_eq!(b.take().len(), 3);
        assert!(b.is_empty() && b.deadline().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn flushes_on_the_age_of_the_first_reading() {
        let mut b = batcher(100, 1000);
        let start = Instant::now();
        b.extend(batch(vec![r(1)]), start);
        tokio::time::sleep(Duration::from_millis(600)).await;
        b.extend(batch(vec![r(2)]), Instant::now());
        assert_eq!(
            b.deadline(),
            Some(start + Duration::from_millis(1000)),
            "measured from the first reading"
        );
        assert!(!b.is_due(Instant::now()));
        tokio::time::sleep_until(b.deadline().unwrap()).await;
        assert!(b.is_due(Instant::now()));
        assert_eq!(Instant::now() - start, Duration::from_millis(1000));
        assert_eq!(b.take().len(), 2);
        b.extend(batch(vec![r(3)]), Instant::now());
        assert_eq!(
            b.deadline(),
            Some(Instant::now() + Duration::from_millis(1000)),
            "a new batch starts its own clock"
        );
    }
}
