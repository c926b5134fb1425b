//! [`Batch`]: the readings a sink writes, kept encoded as the journal keeps them and shared
//! with the journal's memory and the other sinks; and [`Readings`], what sinks take.
//!
//! A sink never holds decoded copies of its readings: it visits them one at a time, each
//! decoded into one reused [`Reading`] (names that repeat the reading before are left in
//! place), so that writing a reading allocates nothing and a batch costs its encoded bytes
//! (about 54 for a reading of 2 tags and 3 floats) rather than a few hundred decoded.

use std::convert::Infallible;
use std::ops::Range;
use std::sync::Arc;

use super::encoding::{decode_into, encode_all, DecodeError, Encoding};
use super::Reading;

/// Readings as a sink sees them: a slice, or a [`Batch`].
pub trait Readings {
    /// How many readings.
    fn count(&self) -> usize;

    /// Calls `f` with each reading in order, until it fails.
    ///
    /// # Errors
    /// The first error of `f`.
    fn try_for_each<E>(&self, f: impl FnMut(&Reading) -> Result<(), E>) -> Result<(), E>;

    /// Calls `f` with each reading in order.
    fn for_each(&self, mut f: impl FnMut(&Reading)) {
        let _ = self.try_for_each(|r| {
            f(r);
            Ok::<(), Infallible>(())
        });
    }
}

impl<T: AsRef<[Reading]> + ?Sized> Readings for T {
    fn count(&self) -> usize {
        self.as_ref().len()
    }

    fn try_for_each<E>(&self, f: impl FnMut(&Reading) -> Result<(), E>) -> Result<(), E> {
        Iterator::try_for_each(&mut self.as_ref().iter(), f)
    }
}

/// The readings of one journal entry, encoded, known to decode.
#[derive(Debug)]
pub struct Encoded {
    data: Vec<u8>,
    encoding: Encoding,
    count: usize,
}

impl Encoded {
    /// `readings`, encoded in [`Encoding::CURRENT`].
    pub fn encode(readings: &[Reading]) -> Encoded {
        let mut data = Vec::new();
        encode_all(readings, &mut data);
        Encoded::written(data, readings.len())
    }

    /// `count` readings that this build's encoder has just written into `data`, in
    /// [`Encoding::CURRENT`] (the journal's writer): not checked again.
    pub(crate) fn written(data: Vec<u8>, count: usize) -> Encoded {
        Encoded {
            data,
            encoding: Encoding::CURRENT,
            count,
        }
    }

    /// Readings read back from storage: decoded once here (into one reused reading), so that
    /// a damaged entry is found now, not by a sink halfway through a batch.
    ///
    /// # Errors
    /// [`DecodeError`] if `data` is not readings in `encoding`.
    pub fn checked(data: Vec<u8>, encoding: Encoding) -> Result<Encoded, DecodeError> {
        let mut count = 0;
        let mut scratch = Reading::new("", 0);
        let mut buf = data.as_slice();
        while !buf.is_empty() {
            decode_into(&mut buf, encoding, &mut scratch, count == 0)?;
            count += 1;
        }
        Ok(Encoded {
            data,
            encoding,
            count,
        })
    }

    /// How many readings.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The encoded bytes.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    /// Calls `f` with the readings of `range`, decoded into `scratch` in turn (those before
    /// the range are decoded too, and skipped: each depends on the one before).
    fn try_visit<E>(
        &self,
        range: Range<usize>,
        scratch: &mut Reading,
        f: &mut impl FnMut(&Reading) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut buf = self.data.as_slice();
        for i in 0..range.end.min(self.count) {
            if decode_into(&mut buf, self.encoding, scratch, i == 0).is_err() {
                // Checked when it was read, or written by this build: cannot happen.
                tracing::error!(
                    reading = i,
                    "a journal entry that decoded before does not now"
                );
                debug_assert!(false, "an entry that was checked does not decode");
                return Ok(());
            }
            if i >= range.start {
                f(scratch)?;
            }
        }
        Ok(())
    }
}

/// Readings in order, held as ranges of shared [`Encoded`] entries (as the journal's writer
/// committed them, or as a reader read them back). Cloning a batch or splitting it copies
/// no reading, and every sink that writes an entry shares the one copy.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    parts: Vec<(Arc<Encoded>, Range<usize>)>,
    len: usize,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Batch {
        Batch::default()
    }

    /// Appends `range` of `entry`'s readings (cut to the entry; an empty range adds nothing).
    pub fn push_shared(&mut self, entry: &Arc<Encoded>, range: Range<usize>) {
        let range = range.start.min(entry.len())..range.end.min(entry.len());
        if range.is_empty() {
            return;
        }
        self.len += range.len();
        // A range that continues the last part extends it.
        if let Some((last, r)) = self.parts.last_mut() {
            if Arc::ptr_eq(last, entry) && r.end == range.start {
                r.end = range.end;
                return;
            }
        }
        self.parts.push((Arc::clone(entry), range));
    }

    /// Appends every reading of `other`.
    pub fn append(&mut self, other: Batch) {
        if self.parts.is_empty() {
            *self = other;
            return;
        }
        for (entry, range) in other.parts {
            self.push_shared(&entry, range);
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

    /// The first `at` readings and the rest (sharing the entries, copying no reading).
    pub fn split_at(&self, at: usize) -> (Batch, Batch) {
        let (mut head, mut tail) = (Batch::new(), Batch::new());
        let mut start = 0;
        for (entry, range) in &self.parts {
            let end = start + range.len();
            if end <= at {
                head.push_shared(entry, range.clone());
            } else if start >= at {
                tail.push_shared(entry, range.clone());
            } else {
                let cut = range.start + (at - start);
                head.push_shared(entry, range.start..cut);
                tail.push_shared(entry, cut..range.end);
            }
            start = end;
        }
        (head, tail)
    }

    /// The readings at `indices` (ascending, each once) and the others, both in order
    /// (sharing the entries, copying no reading).
    pub fn partition(&self, indices: &[usize]) -> (Batch, Batch) {
        let (mut picked, mut rest) = (Batch::new(), Batch::new());
        let mut next = indices.iter().copied().peekable();
        let mut start = 0;
        for (entry, range) in &self.parts {
            let end = start + range.len();
            let mut from = range.start;
            while let Some(i) = next.next_if(|&i| i < end) {
                let at = range.start + (i - start);
                rest.push_shared(entry, from..at);
                picked.push_shared(entry, at..at + 1);
                from = at + 1;
            }
            rest.push_shared(entry, from..range.end);
            start = end;
        }
        (picked, rest)
    }

    /// The readings as a vector of their own (decoded copies; for tests and tools).
    pub fn to_vec(&self) -> Vec<Reading> {
        let mut out = Vec::with_capacity(self.len);
        self.for_each(|r| out.push(r.clone()));
        out
    }
}

impl Readings for Batch {
    fn count(&self) -> usize {
        self.len
    }

    fn try_for_each<E>(&self, mut f: impl FnMut(&Reading) -> Result<(), E>) -> Result<(), E> {
        let mut scratch = Reading::new("", 0);
        for (entry, range) in &self.parts {
            entry.try_visit(range.clone(), &mut scratch, &mut f)?;
        }
        Ok(())
    }
}

impl From<Vec<Reading>> for Batch {
    fn from(readings: Vec<Reading>) -> Batch {
        let entry = Arc::new(Encoded::encode(&readings));
        let mut batch = Batch::new();
        batch.push_shared(&entry, 0..readings.len());
        batch
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::reading::{FieldValue, DEVICE_TAG};

    fn entry(from: i64, to: i64) -> Arc<Encoded> {
        let readings: Vec<Reading> = (from..to)
            .map(|t| {
                let mut r = Reading::new("m", t);
                r.set_tag(DEVICE_TAG, format!("d{}", t % 3));
                r.fields.push(("v".into(), FieldValue::Integer(t)));
                r
            })
            .collect();
        Arc::new(Encoded::encode(&readings))
    }

    fn times(b: &Batch) -> Vec<i64> {
        b.to_vec().iter().map(|r| r.timestamp).collect()
    }

    #[test]
    fn parts_read_in_order_and_split_anywhere_without_copies() {
        let (a, b) = (entry(0, 5), entry(5, 8));
        let mut batch = Batch::new();
        batch.push_shared(&a, 1..3);
        batch.push_shared(&a, 3..5); // continues the part before: merged
        batch.push_shared(&b, 0..3);
        batch.push_shared(&b, 3..3); // empty: nothing
        assert_eq!(batch.parts.len(), 2);
        assert_eq!((batch.len(), batch.count()), (7, 7));
        assert_eq!(times(&batch), vec![1, 2, 3, 4, 5, 6, 7]);
        let devices: Vec<String> = batch
            .to_vec()
            .iter()
            .map(|r| r.device().unwrap().to_string())
            .collect();
        assert_eq!(devices, ["d1", "d2", "d0", "d1", "d2", "d0", "d1"]);
        for at in 0..=7 {
            let (head, tail) = batch.split_at(at);
            assert_eq!(head.len(), at);
            assert_eq!(tail.len(), 7 - at);
            let mut joined = head.clone();
            joined.append(tail);
            assert_eq!(times(&joined), times(&batch), "split at {at}");
        }
        for picked in [
            vec![],
            vec![0],
            vec![1, 2],
            vec![0, 3, 4, 6],
            (0..7).collect(),
        ] {
            let (some, others) = batch.partition(&picked);
            let all = times(&batch);
            let want: Vec<i64> = picked.iter().map(|&i| all[i]).collect();
            assert_eq!(times(&some), want, "{picked:?}");
            let rest: Vec<i64> = all.iter().copied().filter(|t| !want.contains(t)).collect();
            assert_eq!(times(&others), rest, "{picked:?}");
        }
        // Sinks' batches and the journal share one copy.
        assert_eq!(Arc::strong_count(&a), 2);
        let other = batch.clone();
        assert_eq!(Arc::strong_count(&a), 3);
        drop(other);
        // Stops at the first error.
        let mut seen = 0;
        let stopped = batch.try_for_each(|r| {
            seen += 1;
            if r.timestamp == 3 {
                Err(r.timestamp)
            } else {
                Ok(())
            }
        });
        assert_eq!((stopped, seen), (Err(3), 3));
    }

    #[test]
    fn stored_bytes_are_checked_when_read_back() {
        let good = entry(0, 4);
        let checked = Encoded::checked(good.data.clone(), good.encoding).unwrap();
        assert_eq!(checked.len(), 4);
        let cut = good.data[..good.data.len() - 1].to_vec();
        assert_eq!(
            Encoded::checked(cut, Encoding::CURRENT).unwrap_err(),
            DecodeError
        );
        assert!(Encoded::checked(Vec::new(), Encoding::CURRENT)
            .unwrap()
            .is_empty());
    }
}
