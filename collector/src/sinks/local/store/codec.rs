//! The two blobs of the local store: a chunk (points of one series, in time order) and a
//! batch (the points of one insert, in the order they were written, for `recent`).
//!
//! Both write a value as [`FieldValue::encode`] does (a kind byte, then floats as their 8
//! bytes, so NaN payloads and -0.0 survive; integers as varints; strings length-prefixed).
//!
//! A chunk stores its timestamps as delta-of-deltas: points that arrive at a steady rate cost
//! one byte of timestamp each, a float point 10 bytes in all (SQLite's row per point cost
//! about 30).

use crate::reading::{
    get_varint, put_varint, unzigzag, zigzag, DecodeError, FieldKind, FieldValue,
};

use super::StoreError;

/// A chunk holds at most this many points. A compaction writes a series' new points as a
/// small chunk, and merges its small chunks into full ones once they hold this many: larger
/// means more small rows per series meanwhile; smaller, more rows per day of data.
pub(super) const CHUNK_POINTS: usize = 512;

/// A chunk is closed once its encoding reaches this many bytes (long strings), whatever its
/// number of points.
pub(super) const CHUNK_BYTES: usize = 16 * 1024;

/// Reading a blob failed: the store holds bytes this build did not write.
fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("{what} is not a valid encoding"))
}

impl From<DecodeError> for StoreError {
    fn from(_: DecodeError) -> StoreError {
        corrupt("a point")
    }
}

/// Writes points of one series (strictly increasing timestamps) into chunks of at most
/// [`CHUNK_POINTS`] points and about [`CHUNK_BYTES`] bytes.
#[derive(Default)]
pub(super) struct ChunkWriter {
    buf: Vec<u8>,
    points: usize,
    first_ts: i64,
    prev_ts: i64,
    prev_delta: i64,
}

/// A finished chunk, as its row holds it.
pub(super) struct Chunk {
    pub(super) first_ts: i64,
    pub(super) last_ts: i64,
    pub(super) points: usize,
    pub(super) data: Vec<u8>,
}

impl ChunkWriter {
    /// Adds a point after the ones already added; returns the chunk it closed, if any.
    pub(super) fn push(&mut self, ts: i64, value: &FieldValue) -> Option<Chunk> {
        self.put_ts(ts);
        value.encode(&mut self.buf);
        self.close_if_full()
    }

    /// As [`ChunkWriter::push`], with the value as [`FieldValue::encode`] wrote it (checked
    /// by [`value_len`] when it was read): a copy, not a decode and encode again.
    pub(super) fn push_raw(&mut self, ts: i64, value: &[u8]) -> Option<Chunk> {
        self.put_ts(ts);
        self.buf.extend_from_slice(value);
        self.close_if_full()
    }

    /// Gives back the buffer of a chunk that was written, for the next chunk to fill, so
    /// that a compaction does not allocate (and grow) one for every chunk.
    pub(super) fn recycle(&mut self, mut data: Vec<u8>) {
        if self.points == 0 && data.capacity() > self.buf.capacity() {
            data.clear();
            self.buf = data;
        }
    }

    fn put_ts(&mut self, ts: i64) {
        if self.points == 0 {
            self.first_ts = ts;
            self.prev_delta = 0;
            put_varint(&mut self.buf, zigzag(ts));
        } else {
            let delta = ts.wrapping_sub(self.prev_ts);
            put_varint(&mut self.buf, zigzag(delta.wrapping_sub(self.prev_delta)));
            self.prev_delta = delta;
        }
        self.prev_ts = ts;
        self.points += 1;
    }

    fn close_if_full(&mut self) -> Option<Chunk> {
        (self.points >= CHUNK_POINTS || self.buf.len() >= CHUNK_BYTES).then(|| self.take())
    }

    /// The chunk of the points added since the last one closed, if there are any.
    pub(super) fn finish(&mut self) -> Option<Chunk> {
        (self.points > 0).then(|| self.take())
    }

    fn take(&mut self) -> Chunk {
        let chunk = Chunk {
            first_ts: self.first_ts,
            last_ts: self.prev_ts,
            points: self.points,
            data: std::mem::take(&mut self.buf),
        };
        self.points = 0;
        chunk
    }
}

/// The points of a chunk, in time order. Fails (rather than panics) on bytes that are not a
/// chunk: a count that does not match, timestamps that do not increase.
pub(super) struct ChunkReader<'a> {
    buf: &'a [u8],
    left: usize,
    started: bool,
    prev_ts: i64,
    prev_delta: i64,
}

impl<'a> ChunkReader<'a> {
    /// Reads `data`, which its row says holds `points` points.
    pub(super) fn new(data: &'a [u8], points: i64) -> ChunkReader<'a> {
        ChunkReader {
            buf: data,
            // A negative count is caught by the check at the end.
            left: usize::try_from(points).unwrap_or(usize::MAX),
            started: false,
            prev_ts: 0,
            prev_delta: 0,
        }
    }

    /// The same points with their values as [`FieldValue::encode`] wrote them (checked, not
    /// decoded).
    pub(super) fn raw(self) -> RawChunkReader<'a> {
        RawChunkReader(self)
    }

    fn read<T>(
        &mut self,
        value: impl FnOnce(&mut &'a [u8]) -> Result<T, DecodeError>,
    ) -> Result<(i64, T), StoreError> {
        let v = unzigzag(get_varint(&mut self.buf)?);
        let ts = if self.started {
            let delta = v.wrapping_add(self.prev_delta);
            let ts = self.prev_ts.wrapping_add(delta);
            if ts <= self.prev_ts {
                return Err(corrupt("a chunk (time does not go forward)"));
            }
            self.prev_delta = delta;
            ts
        } else {
            self.started = true;
            v
        };
        self.prev_ts = ts;
        Ok((ts, value(&mut self.buf)?))
    }

    fn step<T>(
        &mut self,
        value: impl FnOnce(&mut &'a [u8]) -> Result<T, DecodeError>,
    ) -> Option<Result<(i64, T), StoreError>> {
        if self.left == 0 {
            let rest = std::mem::take(&mut self.buf);
            return (!rest.is_empty()).then(|| Err(corrupt("a chunk (bytes left over)")));
        }
        if self.buf.is_empty() {
            self.left = 0;
            return Some(Err(corrupt("a chunk (points missing)")));
        }
        self.left -= 1;
        let point = self.read(value);
        if point.is_err() {
            self.left = 0;
            self.buf = &[];
        }
        Some(point)
    }
}

impl Iterator for ChunkReader<'_> {
    type Item = Result<(i64, FieldValue), StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.step(FieldValue::decode)
    }
}

/// See [`ChunkReader::raw`].
pub(super) struct RawChunkReader<'a>(ChunkReader<'a>);

impl<'a> Iterator for RawChunkReader<'a> {
    type Item = Result<(i64, &'a [u8]), StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.0.step(take_value)
    }
}

/// How many bytes the value that [`FieldValue::encode`] wrote at the front of `buf` takes,
/// with the checks [`FieldValue::decode`] makes (a known kind, every byte there, strings in
/// UTF-8), without building the value.
pub(super) fn value_len(buf: &[u8]) -> Result<usize, DecodeError> {
    let (&kind, rest) = buf.split_first().ok_or(DecodeError)?;
    let len = match FieldKind::from_u8(kind).ok_or(DecodeError)? {
        FieldKind::Float => 8,
        FieldKind::Boolean => 1,
        FieldKind::Integer | FieldKind::Unsigned => {
            let mut after = rest;
            get_varint(&mut after)?;
            rest.len() - after.len()
        }
        FieldKind::String => {
            let mut after = rest;
            let n = usize::try_from(get_varint(&mut after)?).map_err(|_| DecodeError)?;
            let s = after.get(..n).ok_or(DecodeError)?;
            std::str::from_utf8(s).map_err(|_| DecodeError)?;
            rest.len() - after.len() + n
        }
    };
    if len > rest.len() {
        return Err(DecodeError);
    }
    Ok(1 + len)
}

/// The value at the front of `buf` as [`FieldValue::encode`] wrote it (see [`value_len`]),
/// and `buf` advanced past it.
pub(super) fn take_value<'a>(buf: &mut &'a [u8]) -> Result<&'a [u8], DecodeError> {
    let (value, rest) = buf.split_at(value_len(buf)?);
    *buf = rest;
    Ok(value)
}

/// Appends a point of series `series_id` to a batch.
pub(super) fn put_batch_point(buf: &mut Vec<u8>, series_id: i64, ts: i64, value: &FieldValue) {
    put_varint(buf, series_id.cast_unsigned());
    put_varint(buf, zigzag(ts));
    value.encode(buf);
}

/// The points of a batch, in the order they were written: `(series_id, ts, value)`.
pub(super) struct BatchReader<'a> {
    buf: &'a [u8],
}

impl<'a> BatchReader<'a> {
    pub(super) fn new(data: &'a [u8]) -> BatchReader<'a> {
        BatchReader { buf: data }
    }

    /// The same points with their values as [`FieldValue::encode`] wrote them (checked, not
    /// decoded).
    pub(super) fn raw(self) -> RawBatchReader<'a> {
        RawBatchReader(self)
    }

    fn step<T>(
        &mut self,
        value: impl FnOnce(&mut &'a [u8]) -> Result<T, DecodeError>,
    ) -> Option<Result<(i64, i64, T), StoreError>> {
        if self.buf.is_empty() {
            return None;
        }
        let read = || -> Result<(i64, i64, T), DecodeError> {
            let series_id = get_varint(&mut self.buf)?.cast_signed();
            let ts = unzigzag(get_varint(&mut self.buf)?);
            Ok((series_id, ts, value(&mut self.buf)?))
        };
        let point = read().map_err(|_| corrupt("a batch of `recent`"));
        if point.is_err() {
            self.buf = &[];
        }
        Some(point)
    }
}

impl Iterator for BatchReader<'_> {
    type Item = Result<(i64, i64, FieldValue), StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.step(FieldValue::decode)
    }
}

/// See [`BatchReader::raw`].
pub(super) struct RawBatchReader<'a>(BatchReader<'a>);

impl<'a> Iterator for RawBatchReader<'a> {
    type Item = Result<(i64, i64, &'a [u8]), StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.0.step(take_value)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    use proptest::prelude::*;

    fn chunks(points: &[(i64, FieldValue)]) -> Vec<Chunk> {
        let mut w = ChunkWriter::default();
        let mut out: Vec<Chunk> = points.iter().filter_map(|(t, v)| w.push(*t, v)).collect();
        out.extend(w.finish());
        out
    }

    fn read(c: &Chunk) -> Vec<(i64, FieldValue)> {
        ChunkReader::new(&c.data, c.points as i64)
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn same(a: &[(i64, FieldValue)], b: &[(i64, FieldValue)]) -> bool {
        a.len() == b.len()
            && a.iter().zip(b).all(|((ta, va), (tb, vb))| {
                ta == tb
                    && match (va, vb) {
                        (FieldValue::Float(x), FieldValue::Float(y)) => x.to_bits() == y.to_bits(),
                        _ => va == vb,
                    }
            })
    }

    #[test]
    fn steady_float_points_cost_ten_bytes_and_chunks_split_at_the_limits() {
        let points: Vec<_> = (0..1100)
            .map(|i| {
                (
                    1_700_000_000_000_000_000 + i * 1_000_000_000,
                    FieldValue::Float(21.5),
                )
            })
            .collect();
        let cs = chunks(&points);
        assert_eq!(
            cs.iter().map(|c| c.points).collect::<Vec<_>>(),
            [512, 512, 76]
        );
        assert_eq!(cs[0].first_ts, points[0].0);
        assert_eq!(cs[0].last_ts, points[511].0);
        // The first point's time and delta take 9 + 5 bytes; every other one 1 + 9 (value).
        assert_eq!(cs[0].data.len(), 9 + 9 + 5 + 9 + 510 * 10);
        let all: Vec<_> = cs.iter().flat_map(read).collect();
        assert!(same(&all, &points));

        let long = "x".repeat(5000);
        let strings: Vec<_> = (0..10)
            .map(|i| (i, FieldValue::String(long.as_str().into())))
            .collect();
        assert_eq!(
            chunks(&strings)
                .iter()
                .map(|c| c.points)
                .collect::<Vec<_>>(),
            [4, 4, 2]
        );
    }

    #[test]
    fn damaged_chunks_and_batches_are_errors_not_panics() {
        let points: Vec<_> = (0..5).map(|i| (i * 10, FieldValue::Integer(i))).collect();
        let c = &chunks(&points)[0];
        let errs = |data: &[u8], n: i64| ChunkReader::new(data, n).filter(Result::is_err).count();
        assert_eq!(errs(&c.data, 5), 0);
        assert_eq!(errs(&c.data, 4), 1, "bytes left over");
        assert_eq!(errs(&c.data, 6), 1, "a point missing");
        assert_eq!(errs(&c.data, -1), 1);
        assert_eq!(errs(&c.data[..c.data.len() - 1], 5), 1, "truncated");
        // A repeated timestamp: a delta-of-delta that makes the delta 0.
        let mut w = ChunkWriter::default();
        w.push(10, &FieldValue::Integer(1));
        w.push(20, &FieldValue::Integer(1));
        let mut bad = w.finish().unwrap().data;
        put_varint(&mut bad, zigzag(-10));
        FieldValue::Integer(1).encode(&mut bad);
        assert_eq!(errs(&bad, 3), 1, "time does not go forward");

        let mut batch = Vec::new();
        put_batch_point(&mut batch, 7, -5, &FieldValue::String("é".into()));
        let got: Vec<_> = BatchReader::new(&batch).collect::<Result<_, _>>().unwrap();
        assert_eq!(got, [(7, -5, FieldValue::String("é".into()))]);
        for cut in 0..batch.len() {
            let results: Vec<_> = BatchReader::new(&batch[..cut]).collect();
            assert!(results.iter().all(Result::is_err), "cut at {cut}");
        }
    }

    fn value() -> impl Strategy<Value = FieldValue> {
        prop_oneof![
            any::<f64>().prop_map(FieldValue::Float),
            any::<i64>().prop_map(FieldValue::Integer),
            any::<u64>().prop_map(FieldValue::Unsigned),
            any::<bool>().prop_map(FieldValue::Boolean),
            ".{0,40}".prop_map(|s| FieldValue::String(s.into())),
        ]
    }

    proptest! {
        #[test]
        fn any_increasing_points_read_back_exactly(
            mut raw in proptest::collection::vec((any::<i64>(), value()), 0..1500)
        ) {
            raw.sort_by_key(|(t, _)| *t);
            raw.dedup_by_key(|(t, _)| *t);
            let cs = chunks(&raw);
            prop_assert!(cs.iter().all(|c| c.points <= CHUNK_POINTS));
            let all: Vec<_> = cs.iter().flat_map(read).collect();
            prop_assert!(same(&all, &raw));
            for c in &cs {
                prop_assert_eq!(c.first_ts, read(c)[0].0);
                prop_assert_eq!(c.last_ts, read(c).last().unwrap().0);
            }
        }

        #[test]
        fn raw_values_are_the_encoded_bytes_and_copy_exactly(
            mut raw in proptest::collection::vec((any::<i64>(), value()), 0..600)
        ) {
            raw.sort_by_key(|(t, _)| *t);
            raw.dedup_by_key(|(t, _)| *t);
            let mut batch = Vec::new();
            for (i, (t, v)) in raw.iter().enumerate() {
                put_batch_point(&mut batch, i as i64, *t, v);
            }
            // A batch read raw gives each value's encoding; copied into chunks, they read
            // back as the values.
            let mut w = ChunkWriter::default();
            let mut cs = Vec::new();
            for (i, point) in BatchReader::new(&batch).raw().enumerate() {
                let (id, t, bytes) = point.unwrap();
                let mut want = Vec::new();
                raw[i].1.encode(&mut want);
                prop_assert_eq!((id, t, bytes), (i as i64, raw[i].0, want.as_slice()));
                if let Some(c) = w.push_raw(t, bytes) {
                    cs.push(c);
                }
            }
            cs.extend(w.finish());
            let all: Vec<_> = cs.iter().flat_map(read).collect();
            prop_assert!(same(&all, &raw));
            let all_raw: Vec<(i64, Vec<u8>)> = cs
                .iter()
                .flat_map(|c| ChunkReader::new(&c.data, c.points as i64).raw())
                .map(|p| p.map(|(t, v)| (t, v.to_vec())))
                .collect::<Result<_, _>>()
                .unwrap();
            prop_assert_eq!(all_raw.len(), raw.len());
        }

        #[test]
        fn value_len_checks_what_decode_checks(data in proptest::collection::vec(any::<u8>(), 0..40)) {
            let mut rest = data.as_slice();
            let decoded = FieldValue::decode(&mut rest);
            match value_len(&data) {
                Ok(n) => prop_assert_eq!(n, data.len() - rest.len()),
                Err(_) => prop_assert!(decoded.is_err()),
            }
            prop_assert_eq!(value_len(&data).is_ok(), decoded.is_ok());
        }

        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200), n in -2i64..50) {
            let _ = ChunkReader::new(&data, n).count();
            let _ = BatchReader::new(&data).count();
            let _ = ChunkReader::new(&data, n).raw().count();
            let _ = BatchReader::new(&data).raw().count();
        }
    }
}
