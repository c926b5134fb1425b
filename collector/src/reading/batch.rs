//! [`Batch`]: readings handed to a sink, in parts shared with the journal's memory and with
//! the other sinks, so that no sink copies or decodes what another already holds.

use std::ops::Range;
use std::sync::Arc;

use super::Reading;

/// Readings in order, held as ranges of shared vectors (a journal entry each, as the writer
/// committed it or as a reader decoded it). Cloning a batch, or splitting it, copies no
/// reading: every sink that writes the same entry shares one copy of it.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    parts: Vec<(Arc<Vec<Reading>>, Range<usize>)>,
    len: usize,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Batch {
        Batch::default()
    }

    /// Appends `range` of `readings` (an empty range adds nothing; a range beyond the end is
    /// cut to it).
    pub fn push_shared(&mut self, readings: &Arc<Vec<Reading>>, range: Range<usize>) {
        let range = range.start.min(readings.len())..range.end.min(readings.len());
        if range.is_empty() {
            return;
        }
        // A range that continues the last part extends it.
        if let Some((last, r)) = self.parts.last_mut() {
            if Arc::ptr_eq(last, readings) && r.end == range.start {
                self.len += range.len();
                r.end = range.end;
                return;
            }
        }
        self.len += range.len();
        self.parts.push((Arc::clone(readings), range));
    }

    /// Appends every reading of `other`.
    pub fn append(&mut self, other: Batch) {
        if self.parts.is_empty() {
            *self = other;
            return;
        }
        for (readings, range) in other.parts {
            self.push_shared(&readings, range);
        }
    }

    /// How many readings.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The readings, in order.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            parts: self.parts.iter(),
            current: [].iter(),
            left: self.len,
        }
    }

    /// The first `at` readings and the rest (sharing the parts, copying no reading).
    pub fn split_at(&self, at: usize) -> (Batch, Batch) {
        let (mut head, mut tail) = (Batch::new(), Batch::new());
        let mut start = 0;
        for (readings, range) in &self.parts {
            let end = start + range.len();
            if end <= at {
                head.push_shared(readings, range.clone());
            } else if start >= at {
                tail.push_shared(readings, range.clone());
            } else {
                let cut = range.start + (at - start);
                head.push_shared(readings, range.start..cut);
                tail.push_shared(readings, cut..range.end);
            }
            start = end;
        }
        (head, tail)
    }

    /// The readings as a vector of their own (a copy; for tests and tools).
    pub fn to_vec(&self) -> Vec<Reading> {
        self.iter().cloned().collect()
    }
}

impl From<Vec<Reading>> for Batch {
    fn from(readings: Vec<Reading>) -> Batch {
        let mut batch = Batch::new();
        let len = readings.len();
        batch.push_shared(&Arc::new(readings), 0..len);
        batch
    }
}

impl<'a> IntoIterator for &'a Batch {
    type Item = &'a Reading;
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

/// The readings of a [`Batch`], in order.
#[derive(Debug, Clone)]
pub struct Iter<'a> {
    parts: std::slice::Iter<'a, (Arc<Vec<Reading>>, Range<usize>)>,
    current: std::slice::Iter<'a, Reading>,
    left: usize,
}

impl<'a> Iterator for Iter<'a> {
    type Item = &'a Reading;

    #[inline]
    fn next(&mut self) -> Option<&'a Reading> {
        loop {
            if let Some(r) = self.current.next() {
                self.left -= 1;
                return Some(r);
            }
            let (readings, range) = self.parts.next()?;
            self.current = readings[range.clone()].iter();
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for Iter<'_> {}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn readings(from: i64, to: i64) -> Arc<Vec<Reading>> {
        Arc::new((from..to).map(|t| Reading::new("m", t)).collect())
    }

    fn times(b: &Batch) -> Vec<i64> {
        b.iter().map(|r| r.timestamp).collect()
    }

    #[test]
    fn parts_read_in_order_and_split_anywhere_without_copies() {
        let (a, b) = (readings(0, 5), readings(5, 8));
        let mut batch = Batch::new();
        batch.push_shared(&a, 1..3);
        batch.push_shared(&a, 3..5); // continues the part before: merged
        batch.push_shared(&b, 0..3);
        batch.push_shared(&b, 3..3); // empty: nothing
        assert_eq!(batch.parts.len(), 2);
        assert_eq!(batch.len(), 7);
        assert_eq!(batch.iter().len(), 7);
        assert_eq!(times(&batch), vec![1, 2, 3, 4, 5, 6, 7]);
        for at in 0..=7 {
            let (head, tail) = batch.split_at(at);
            assert_eq!(head.len(), at);
            assert_eq!(tail.len(), 7 - at);
            let mut joined = head.clone();
            joined.append(tail);
            assert_eq!(times(&joined), times(&batch), "split at {at}");
        }
        // Two sinks' batches and the journal share one copy.
        assert_eq!(Arc::strong_count(&a), 2);
        let other = batch.clone();
        assert_eq!(Arc::strong_count(&a), 3);
        drop(other);
        assert_eq!(Batch::from(a.to_vec()).to_vec(), *a);
    }
}
