//! Compaction: the points of `recent` moved into each series' chunks (appended as one more
//! row of its tail, or merged where they overlap), and an idle store settled into its final
//! form. [`LocalStore`]'s documentation says why the store is laid out so.

use foldhash::HashMap as FastMap;
use rusqlite::{params, Connection, TransactionBehavior};

use super::codec::{self, is_full, BatchReader, Chunk, ChunkWriter, Codec, CHUNK_POINTS};
use super::read::blob;
use super::schema::{
    DELETE_CHUNKS_FROM, INSERT_CHUNK, SELECT_CHUNKS_BACK, SELECT_RECENT, SELECT_TAIL,
    SELECT_TAIL_SIZES,
};
use super::{LocalStore, StoreError};
use crate::reading::FieldValue;

/// `recent` is moved into chunks once it holds this many points (about 1.2 MB), or
/// [`COMPACT_POINTS_PER_SERIES`] per active series if that is more (up to
/// [`COMPACT_POINTS_MAX`]). Larger means fewer rows (and statements) per point, and more for
/// each query to read.
pub(super) const COMPACT_POINTS: u64 = 100_000;

/// Points per active series that a compaction waits for. Much of a compaction's cost is per
/// series (one row and its index entry, and SQLite's work for each statement), so with many
/// series a compaction waits for more points (the figures are in BENCHMARKS.md, "The local
/// store's footprint").
pub(super) const COMPACT_POINTS_PER_SERIES: u64 = 10;

/// The most points `recent` holds before a compaction, however many series (a query reads
/// `recent` whole: about 8 ms for this many).
pub(super) const COMPACT_POINTS_MAX: u64 = 400_000;

/// A compaction holds the points of at most this many bytes in memory at a time (a float
/// point takes 17: about 120,000 of them; more only for a single series with more points): a
/// larger `recent` is moved in parts, each part a range of series, each part reading `recent`
/// again.
pub(super) const PART_BYTES: usize = 2 << 20;

/// A series' newest chunks that are not full (its tail) are merged into full ones once they
/// hold [`CHUNK_POINTS`] points or are this many rows. Until then a compaction adds the
/// points it brings a series as one more row, without reading or rewriting older ones. Tests
/// merge tails sooner.
pub(super) const TAIL_ROWS: u16 = if cfg!(test) { 4 } else { 32 };

/// The compaction remembers the tail of series with ids below this, in a vector indexed by
/// id (16 bytes each: 640 KB for 40,000 series, 4 MiB at most); the tail of a series with a
/// larger id is read from its chunks at each compaction.
pub(super) const TAIL_IDS: usize = 1 << 18;

/// [`LocalStore::settle`] merges the tails of this many series per transaction.
pub(super) const SETTLE_SERIES: usize = 500;

impl LocalStore {
    /// Moves the points written since the last compaction into their series (see the type
    /// documentation), in one transaction; returns how many points `recent` held (a point
    /// written twice counts twice). [`insert`] calls it when due; calling it at other times
    /// changes no query's result.
    ///
    /// [`insert`]: LocalStore::insert
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] when the transaction fails; nothing is then moved.
    pub fn compact(&mut self) -> Result<u64, StoreError> {
        let started = std::time::Instant::now();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Taken: should the transaction fail, the tails it changed are not in the file, and
        // all are forgotten.
        let mut tails = std::mem::take(&mut self.tails);
        let (moved, series) = compact_recent(&tx, self.part_bytes, &mut tails)?;
        tx.execute("DELETE FROM recent", [])?;
        tx.commit()?;
        self.tails = tails;
        self.recent_points = 0;
        self.recent_bytes = 0;
        tracing::debug!(
            moved,
            series,
            elapsed_ms = started.elapsed().as_millis(),
            "local store compacted"
        );
        Ok(moved)
    }

    /// Puts everything in its final form, for a store that nothing is being written to:
    /// compacts `recent`, and merges the tail of every series this writer has compacted
    /// whose tail is more than one row (see the type documentation) into full chunks and one
    /// last row, in transactions of a few hundred series. Returns how many series' tails it
    /// merged. Calling it changes no query's result; the sink calls it once writes have
    /// stopped for a while.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] when a transaction fails; those before it are kept.
    pub fn settle(&mut self) -> Result<u64, StoreError> {
        if self.recent_points > 0 {
            self.compact()?;
        }
        let long: Vec<(i64, u16)> = self
            .tails
            .by_id
            .iter()
            .enumerate()
            .filter(|(_, t)| **t != Tail::UNKNOWN && t.rows > 1)
            .filter_map(|(id, t)| Some((i64::try_from(id).ok()?, t.rows)))
            .collect();
        for part in long.chunks(SETTLE_SERIES) {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut tails = std::mem::take(&mut self.tails);
            {
                let mut chunks = ChunkStatements::new(&tx)?;
                // Final: the last chunk of each series is compressed too.
                chunks.writer.deflate_last = true;
                for &(id, rows) in part {
                    let tail = chunks.merge_tail(id, rows, &[])?;
                    tails.set(id, tail);
                }
            }
            tx.commit()?;
            self.tails = tails;
        }
        Ok(long.len() as u64)
    }
}

/// Writes points of series `id` (in time order, none in an existing chunk's span) as chunks.
pub(super) fn write_chunks<'v>(
    tx: &Connection,
    id: i64,
    points: impl IntoIterator<Item = (i64, &'v FieldValue)>,
) -> Result<(), StoreError> {
    let mut insert = tx.prepare_cached(INSERT_CHUNK)?;
    let mut write = |c: Chunk| {
        insert.execute(params![
            id,
            c.first_ts,
            c.last_ts,
            c.points,
            c.data,
            c.codec.as_i64()
        ])
    };
    let mut w = ChunkWriter::default();
    for (ts, value) in points {
        if let Some(c) = w.push(ts, value) {
            write(c)?;
        }
    }
    if let Some(c) = w.finish() {
        write(c)?;
    }
    Ok(())
}

/// Moves every point of `recent` into chunks (without emptying `recent`); returns how many
/// points `recent` held and how many series they belong to.
///
/// `recent` is read once to measure the points of each series, then once per part (a range
/// of series whose points take at most `part_bytes`, or a single larger series) to copy each
/// point of the part to its series' place in one buffer of exactly the right size: its
/// timestamp (8 bytes) and its value as [`FieldValue::encode`] wrote it, about 17 bytes for a
/// float. Values are copied as they are, from `recent` to the chunks, never decoded.
pub(super) fn compact_recent(
    tx: &Connection,
    part_bytes: usize,
    tails: &mut Tails,
) -> Result<(u64, usize), StoreError> {
    /// Where a series' points go: its place (in bytes) in its part's buffer.
    #[derive(Default, Clone, Copy)]
    struct Slot {
        start: usize,
        len: usize,
        filled: usize,
    }
    let mut slots: FastMap<i64, Slot> = FastMap::default();
    let mut moved = 0usize;
    for_each_recent_raw(tx, |id, _, value| {
        slots.entry(id).or_default().len += 8 + value.len();
        moved += 1;
        Ok(())
    })?;
    let mut ids: Vec<i64> = slots.keys().copied().collect();
    ids.sort_unstable();
    if let Some(&last) = ids.last() {
        tails.make_room(last);
    }
    // Parts: runs of series in id order, and each part's size in bytes.
    let mut parts: Vec<(std::ops::Range<usize>, usize)> = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let Some(slot) = slots.get_mut(id) else {
            continue;
        };
        match parts.last_mut() {
            Some((range, size)) if *size + slot.len <= part_bytes => {
                range.end = i + 1;
                slot.start = *size;
                *size += slot.len;
            }
            _ => {
                parts.push((i..i + 1, slot.len));
                slot.start = 0;
            }
        }
    }
    let mut chunks = ChunkStatements::new(tx)?;
    for (range, size) in parts {
        let mut buf = vec![0u8; size];
        // A part is a range of ids: a point of another part is passed without a lookup.
        let ids_of_part = ids[range.start]..=ids[range.end - 1];
        for_each_recent_raw(tx, |id, ts, value| {
            if !ids_of_part.contains(&id) {
                return Ok(());
            }
            // `recent` does not change within the transaction: the same points come back.
            let changed = || StoreError::Corrupt("recent changed while it was compacted".into());
            let slot = slots.get_mut(&id).ok_or_else(changed)?;
            let at = slot.start + slot.filled;
            let end = at + 8 + value.len();
            if end > slot.start + slot.len {
                return Err(changed());
            }
            buf[at..at + 8].copy_from_slice(&ts.to_le_bytes());
            buf[at + 8..end].copy_from_slice(value);
            slot.filled += 8 + value.len();
            Ok(())
        })?;
        let mut series: Vec<(i64, &[u8])> = Vec::new();
        for id in &ids[range] {
            let Slot { start, len, .. } = slots[id];
            series.clear();
            let mut placed = &buf[start..start + len];
            while let Some(point) = codec::next_placed(&mut placed) {
                series.push(point?);
            }
            if !series.is_sorted_by(|a, b| a.0 < b.0) {
                // Stable: of the writes of one point, the last one stays last, and wins.
                series.sort_by_key(|&(ts, _)| ts);
                let kept = keep_last_writes(&mut series);
                series.truncate(kept);
            }
            chunks.place(*id, &series, tails)?;
        }
    }
    Ok((moved as u64, ids.len()))
}

/// Of the points of `series` (in time order, the writes of a timestamp in write order)
/// keeps the last write of each timestamp, in the first places; returns how many.
pub(super) fn keep_last_writes<T>(series: &mut [(i64, T)]) -> usize {
    let mut kept = 0;
    for i in 0..series.len() {
        let last_of_its_ts = series.get(i + 1).is_none_or(|next| next.0 != series[i].0);
        if last_of_its_ts {
            series.swap(kept, i);
            kept += 1;
        }
    }
    kept
}

/// What a compaction knows of the newest chunks of each series, by series id: where they end
/// and how many rows and points its tail holds (see [`TAIL_ROWS`]), so that appending to a
/// series is one statement. A series not known is looked up in its chunks.
#[derive(Debug, Default)]
pub(super) struct Tails {
    by_id: Vec<Tail>,
}

/// A series' newest chunks: the last timestamp they hold, and the rows and points of those
/// that are not full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Tail {
    /// `i64::MIN` when the series has no chunk (a point at `i64::MIN` then goes through
    /// [`ChunkStatements::merge`], which is as right, only slower).
    last_ts: i64,
    rows: u16,
    points: u16,
}

impl Tail {
    const EMPTY: Tail = Tail {
        last_ts: i64::MIN,
        rows: 0,
        points: 0,
    };
    /// Not known: to be looked up.
    const UNKNOWN: Tail = Tail {
        last_ts: i64::MAX,
        rows: u16::MAX,
        points: u16::MAX,
    };

    /// The tail once `chunk` is written after it.
    fn then(self, chunk: &Chunk) -> Tail {
        if is_full(chunk.points, chunk.raw_bytes) {
            Tail {
                last_ts: chunk.last_ts,
                ..Tail::EMPTY
            }
        } else {
            Tail {
                last_ts: chunk.last_ts,
                rows: self.rows.saturating_add(1),
                points: self
                    .points
                    .saturating_add(u16::try_from(chunk.points).unwrap_or(u16::MAX)),
            }
        }
    }
}

impl Tails {
    fn get(&self, id: i64) -> Option<Tail> {
        let tail = *self.by_id.get(usize::try_from(id).ok()?)?;
        (tail != Tail::UNKNOWN).then_some(tail)
    }

    /// Grows the vector to hold ids up to `id` (or [`TAIL_IDS`]), to the size needed and no
    /// more (a vector that doubles would hold up to twice as many).
    fn make_room(&mut self, id: i64) {
        let len = usize::try_from(id).map_or(0, |id| id.saturating_add(1).min(TAIL_IDS));
        if len > self.by_id.len() {
            self.by_id.reserve_exact(len - self.by_id.len());
            self.by_id.resize(len, Tail::UNKNOWN);
        }
    }

    /// Remembers the tail of series `id`, if its id is below [`TAIL_IDS`].
    fn set(&mut self, id: i64, tail: Tail) {
        self.make_room(id);
        if let Some(t) = usize::try_from(id).ok().and_then(|i| self.by_id.get_mut(i)) {
            *t = tail;
        }
    }

    pub(super) fn forget(&mut self, id: i64) {
        if let Some(tail) = usize::try_from(id).ok().and_then(|i| self.by_id.get_mut(i)) {
            *tail = Tail::UNKNOWN;
        }
    }
}

/// The statements a compaction runs for every series, prepared once, and the buffers it
/// reuses from one series to the next.
pub(super) struct ChunkStatements<'c> {
    select_back: rusqlite::CachedStatement<'c>,
    select_tail: rusqlite::CachedStatement<'c>,
    select_tail_sizes: rusqlite::CachedStatement<'c>,
    delete: rusqlite::CachedStatement<'c>,
    delete_from: rusqlite::CachedStatement<'c>,
    insert: rusqlite::CachedStatement<'c>,
    writer: ChunkWriter,
    /// The points of the chunks taken for a merge, placed (see [`codec::decode_placed`]).
    taken: Vec<u8>,
    /// A chunk's points, decoded on their way into `taken`.
    decoded: Vec<(i64, FieldValue)>,
}

impl<'c> ChunkStatements<'c> {
    fn new(tx: &'c Connection) -> Result<ChunkStatements<'c>, StoreError> {
        Ok(ChunkStatements {
            select_back: tx.prepare_cached(SELECT_CHUNKS_BACK)?,
            select_tail: tx.prepare_cached(SELECT_TAIL)?,
            select_tail_sizes: tx.prepare_cached(SELECT_TAIL_SIZES)?,
            delete: tx.prepare_cached("DELETE FROM chunks WHERE id = ?1")?,
            delete_from: tx.prepare_cached(DELETE_CHUNKS_FROM)?,
            insert: tx.prepare_cached(INSERT_CHUNK)?,
            writer: ChunkWriter::default(),
            taken: Vec::new(),
            decoded: Vec::new(),
        })
    }

    /// Puts points of series `id` (in time order, timestamps unique, values encoded) into its
    /// chunks. After every stored point, the usual case, they become one more row of its
    /// tail, or, once the tail is full, are merged with it into full chunks. Otherwise
    /// [`ChunkStatements::merge`] puts them in their place.
    fn place(
        &mut self,
        id: i64,
        new: &[(i64, &[u8])],
        tails: &mut Tails,
    ) -> Result<(), StoreError> {
        let Some(&(lo, _)) = new.first() else {
            return Ok(());
        };
        let tail = match tails.get(id) {
            Some(tail) => tail,
            None => self.read_tail(id)?,
        };
        if lo <= tail.last_ts {
            self.merge(id, new)?;
            tails.forget(id);
            return Ok(());
        }
        let fits = usize::from(tail.points) + new.len() < CHUNK_POINTS && tail.rows < TAIL_ROWS;
        let tail = if fits || tail.rows == 0 {
            self.append(id, tail, new)?
        } else {
            self.merge_tail(id, tail.rows, new)?
        };
        tails.set(id, tail);
        Ok(())
    }

    /// The tail of series `id`, from its chunks.
    fn read_tail(&mut self, id: i64) -> Result<Tail, StoreError> {
        let mut tail = Tail::EMPTY;
        let mut rows = self.select_tail_sizes.query([id])?;
        while let Some(row) = rows.next()? {
            let (last_ts, points, bytes): (i64, i64, i64) = (row.get(0)?, row.get(1)?, row.get(2)?);
            tail.last_ts = tail.last_ts.max(last_ts);
            let points = usize::try_from(points).unwrap_or(usize::MAX);
            if is_full(points, usize::try_from(bytes).unwrap_or(usize::MAX))
                || tail.rows == TAIL_ROWS
            {
                break;
            }
            tail.rows += 1;
            tail.points = tail
                .points
                .saturating_add(u16::try_from(points).unwrap_or(u16::MAX));
        }
        Ok(tail)
    }

    /// Writes `new`, which comes after every point of series `id`, as new chunks after
    /// `tail`; returns the series' tail then.
    fn append(&mut self, id: i64, tail: Tail, new: &[(i64, &[u8])]) -> Result<Tail, StoreError> {
        let mut w = Writer {
            insert: &mut self.insert,
            chunks: &mut self.writer,
            id,
            tail,
        };
        for &(ts, value) in new {
            w.push(ts, value)?;
        }
        w.finish()?;
        Ok(w.tail)
    }

    /// Merges the `rows` newest chunks of series `id` (its tail) with `new`, which comes
    /// after every point of the series, into full chunks and a new tail; returns the new
    /// tail.
    fn merge_tail(&mut self, id: i64, rows: u16, new: &[(i64, &[u8])]) -> Result<Tail, StoreError> {
        self.taken.clear();
        // The tail's chunks, newest first: their ends in `taken`.
        let mut ends: Vec<usize> = Vec::new();
        let mut oldest = i64::MAX;
        {
            let mut found = self.select_tail.query([id])?;
            while ends.len() < usize::from(rows) {
                let Some(row) = found.next()? else {
                    break;
                };
                oldest = row.get(0)?;
                codec::decode_placed(
                    Codec::from_i64(row.get(3)?)?,
                    blob(row, 2)?,
                    row.get(1)?,
                    &mut self.decoded,
                    &mut self.taken,
                )?;
                ends.push(self.taken.len());
            }
        }
        if !ends.is_empty() {
            self.delete_from.execute(params![id, oldest])?;
        }
        let mut w = Writer {
            insert: &mut self.insert,
            chunks: &mut self.writer,
            id,
            tail: Tail::EMPTY,
        };
        for (i, &end) in ends.iter().enumerate().rev() {
            let start = i.checked_sub(1).map_or(0, |before| ends[before]);
            let mut placed = &self.taken[start..end];
            while let Some(point) = codec::next_placed(&mut placed) {
                let (ts, value) = point?;
                w.push(ts, value)?;
            }
        }
        for &(ts, value) in new {
            w.push(ts, value)?;
        }
        w.finish()?;
        Ok(w.tail)
    }

    /// Merges points of series `id` (in time order, timestamps unique, values encoded) into
    /// its chunks: the chunks they overlap, and its last chunk before them when that one is
    /// not full, are read, merged with them (they win for a timestamp in both) and written
    /// again; the others are not touched.
    fn merge(&mut self, id: i64, new: &[(i64, &[u8])]) -> Result<(), StoreError> {
        let (Some(&(lo, _)), Some(&(hi, _))) = (new.first(), new.last()) else {
            return Ok(());
        };
        // The series' chunks from its newest back: those after the new points are passed,
        // those they overlap are taken, and the first one before them ends the scan (taken
        // when not full).
        self.taken.clear();
        // (row id, end in `taken`), newest first.
        let mut replaced: Vec<(i64, usize)> = Vec::new();
        {
            let mut rows = self.select_back.query([id])?;
            while let Some(row) = rows.next()? {
                let (first_ts, last_ts): (i64, i64) = (row.get(1)?, row.get(2)?);
                if first_ts > hi {
                    continue;
                }
                let points: i64 = row.get(3)?;
                let data = blob(row, 4)?;
                let overlaps = last_ts >= lo;
                if overlaps || !is_full(usize::try_from(points).unwrap_or(0), data.len()) {
                    let codec = Codec::from_i64(row.get(5)?)?;
                    codec::decode_placed(codec, data, points, &mut self.decoded, &mut self.taken)?;
                    replaced.push((row.get(0)?, self.taken.len()));
                }
                if !overlaps {
                    break;
                }
            }
        }
        // Deleted and written anew rather than updated in place: new rows go at the end of
        // the table, where SQLite packs pages full; a row that grows in place splits its page
        // (the dashboard benchmark's file was 40% larger that way, for no measurable CPU).
        let mut old: Vec<(i64, &[u8])> = Vec::new();
        for (i, &(chunk, end)) in replaced.iter().enumerate().rev() {
            let start = i.checked_sub(1).map_or(0, |before| replaced[before].1);
            let mut placed = &self.taken[start..end];
            while let Some(point) = codec::next_placed(&mut placed) {
                old.push(point?);
            }
            self.delete.execute([chunk])?;
        }
        let mut old = old.into_iter().peekable();
        let mut w = Writer {
            insert: &mut self.insert,
            chunks: &mut self.writer,
            id,
            tail: Tail::EMPTY,
        };
        for &(ts, value) in new {
            while let Some((t, v)) = old.next_if(|(t, _)| *t < ts) {
                w.push(t, v)?;
            }
            old.next_if(|(t, _)| *t == ts);
            w.push(ts, value)?;
        }
        for (t, v) in old {
            w.push(t, v)?;
        }
        w.finish()?;
        Ok(())
    }
}

/// Writes the points of one series as chunks, through a prepared insert.
pub(super) struct Writer<'a, 'c> {
    insert: &'a mut rusqlite::CachedStatement<'c>,
    chunks: &'a mut ChunkWriter,
    id: i64,
    /// The series' tail after the chunks written.
    tail: Tail,
}

impl Writer<'_, '_> {
    fn push(&mut self, ts: i64, value: &[u8]) -> Result<(), StoreError> {
        match self.chunks.push_raw(ts, value) {
            Some(c) => self.write(c),
            None => Ok(()),
        }
    }

    /// Writes the last chunk.
    fn finish(&mut self) -> Result<(), StoreError> {
        match self.chunks.finish() {
            Some(c) => self.write(c),
            None => Ok(()),
        }
    }

    fn write(&mut self, c: Chunk) -> Result<(), StoreError> {
        self.insert.execute(params![
            self.id,
            c.first_ts,
            c.last_ts,
            c.points,
            c.data,
            c.codec.as_i64()
        ])?;
        self.tail = self.tail.then(&c);
        self.chunks.recycle(c.data);
        Ok(())
    }
}

/// Calls `f` with every point of `recent`, in the order written, its value encoded.
pub(super) fn for_each_recent_raw(
    conn: &Connection,
    mut f: impl FnMut(i64, i64, &[u8]) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached(SELECT_RECENT)?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        for point in BatchReader::new(blob(row, 0)?).raw() {
            let (id, ts, value) = point?;
            f(id, ts, value)?;
        }
    }
    Ok(())
}
