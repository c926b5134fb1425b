//! Retention: by age (every point older than a cutoff) and by size (the oldest chunks, until
//! the file's pages in use fit the bound).

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::codec::{ChunkReader, Codec};
use super::compact::{write_chunks, Tails};
use super::read::pages;
use super::schema::SELECT_CHUNKS_FROM;
use super::{Dropped, LocalStore, StoreError};

/// Retention (and the upgrade from version 2) deletes or rewrites at most this many chunks
/// per transaction (a few MB), so it never holds the write lock (or grows the WAL) for long.
/// Tests take several transactions with a few thousand points.
pub(super) const DELETE_CHUNKS: usize = if cfg!(test) { 3 } else { 1_000 };

/// About what a chunk's row and index entries take besides its blob.
pub(super) const ROW_BYTES: u64 = 48;

impl LocalStore {
    /// Drops the oldest chunks (those whose last point is oldest, across all series) until
    /// the pages in use take at most 70% of `max_bytes`, once they take more than 85%: the
    /// rest is room for `recent` (see [`LocalStore::limit_recent`]) and for what a
    /// compaction writes before it frees pages. The pages freed are reused by the next
    /// writes (the file does not shrink, and does not grow while they last). Works in transactions
    /// of at most a thousand chunks; a reader sees a series lose its oldest chunks whole.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] when a statement fails; the chunks already committed stay
    /// dropped.
    pub fn drop_oldest(&mut self, max_bytes: u64) -> Result<Dropped, StoreError> {
        let used = |conn: &Connection| pages(conn).map(|(file, free)| file.saturating_sub(free));
        let used_before = used(&self.conn)?;
        let mut dropped = Dropped {
            used_before,
            used_after: used_before,
            ..Dropped::default()
        };
        // Room for `recent` (see `limit_recent`) and for what the next compaction writes
        // before it frees pages: from 85% on, down to 70%.
        if used_before <= max_bytes / 20 * 17 {
            return Ok(dropped);
        }
        let target = max_bytes / 10 * 7;
        loop {
            let now = used(&self.conn)?;
            dropped.used_after = now;
            if now <= target {
                break;
            }
            // Chunks whose blobs (and rows) take the excess: a page is free only once all
            // its rows are gone, so the loop looks again and goes on.
            let excess = now - target;
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            let oldest: Vec<(i64, i64, u64, u64)> = {
                let mut stmt = tx.prepare_cached(
                    "SELECT id, series_id, points, length(data) FROM chunks ORDER BY last_ts LIMIT ?1",
                )?;
                let rows = stmt.query_map([DELETE_CHUNKS], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
                })?;
                rows.collect::<Result<_, _>>()?
            };
            if oldest.is_empty() {
                break;
            }
            let mut freed = 0u64;
            {
                let mut delete = tx.prepare_cached("DELETE FROM chunks WHERE id = ?1")?;
                for (chunk, series, points, bytes) in oldest {
                    if freed >= excess {
                        break;
                    }
                    delete.execute([chunk])?;
                    freed += bytes + ROW_BYTES;
                    dropped.chunks += 1;
                    dropped.points += points;
                    self.tails.forget(series);
                }
            }
            tx.commit()?;
        }
        Ok(dropped)
    }

    /// Deletes every point older than `ts_ns` (nanoseconds since the Unix epoch), then the
    /// series left without points; returns how many points were deleted. It compacts
    /// `recent` first, then works in transactions of at most a thousand chunks, so readers
    /// and the WAL checkpoint get their turn in between; a failure leaves the chunks already
    /// committed deleted.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] when a statement fails, [`StoreError::Corrupt`] for a chunk
    /// this build cannot decode.
    pub fn delete_older_than(&mut self, ts_ns: i64) -> Result<u64, StoreError> {
        if self.recent_points > 0 {
            self.compact()?;
        }
        let result = delete_older_than(&mut self.conn, ts_ns);
        // Deleted series ids may be reused by SQLite: forget them all.
        self.cache.clear();
        self.tails = Tails::default();
        result
    }
}

/// See [`LocalStore::delete_older_than`]; `recent` is empty.
pub(super) fn delete_older_than(conn: &mut Connection, ts_ns: i64) -> Result<u64, StoreError> {
    let ids: Vec<i64> = {
        let mut stmt = conn.prepare_cached("SELECT id FROM series ORDER BY id")?;
        let rows = stmt.query_map([], |row| row.get(0))?;
        rows.collect::<Result<_, _>>()?
    };
    let mut deleted = 0u64;
    let mut in_tx = 0usize;
    let mut tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for id in ids {
        // The chunks that end before the cutoff go whole.
        loop {
            let budget = DELETE_CHUNKS - in_tx;
            let old: Vec<(i64, u64)> = {
                let mut stmt = tx.prepare_cached(
                    "SELECT id, points FROM chunks WHERE series_id = ?1 AND last_ts < ?2
                     ORDER BY last_ts LIMIT ?3",
                )?;
                let rows = stmt.query_map(params![id, ts_ns, budget], |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })?;
                rows.collect::<Result<_, _>>()?
            };
            let mut delete = tx.prepare_cached("DELETE FROM chunks WHERE id = ?1")?;
            for (chunk, points) in &old {
                delete.execute([chunk])?;
                deleted += points;
            }
            drop(delete);
            in_tx += old.len();
            if in_tx >= DELETE_CHUNKS {
                tx.commit()?;
                tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                in_tx = 0;
            }
            if old.len() < budget {
                break;
            }
        }
        // The chunk across the cutoff keeps its newer points.
        let across = tx
            .prepare_cached(SELECT_CHUNKS_FROM)?
            .query_row(params![id, ts_ns], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, i64>(2)?,
                    row.get::<_, Vec<u8>>(3)?,
                    row.get::<_, i64>(4)?,
                ))
            })
            .optional()?;
        if let Some((chunk, _, points, data, codec)) = across.filter(|c| c.1 < ts_ns) {
            let kept = ChunkReader::new(Codec::from_i64(codec)?, &data, points)
                .filter(|p| p.as_ref().map_or(true, |(ts, _)| *ts >= ts_ns))
                .collect::<Result<Vec<_>, _>>()?;
            tx.prepare_cached("DELETE FROM chunks WHERE id = ?1")?
                .execute([chunk])?;
            write_chunks(&tx, id, kept.iter().map(|(ts, v)| (*ts, v)))?;
            deleted += u64::try_from(points)
                .unwrap_or(0)
                .saturating_sub(kept.len() as u64);
            in_tx += 1;
        }
    }
    tx.execute(
        "DELETE FROM series WHERE NOT EXISTS (SELECT 1 FROM chunks WHERE series_id = series.id)",
        [],
    )?;
    tx.commit()?;
    Ok(deleted)
}
