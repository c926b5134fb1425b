//! Upgrades older stores: version 1 (one row per point) and version 2 (chunks without a
//! codec, their points uncompressed) to version 3.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::codec::{self, ChunkWriter, Codec};
use super::{blob, write_chunks, StoreError, DELETE_CHUNKS, POINT_TABLES, SCHEMA_VERSION};
use crate::reading::{FieldKind, FieldValue};

/// While version 2's chunks are being re-encoded, this table holds the id of the next chunk
/// to look at; it is dropped when every chunk is done.
const UPGRADE_TABLE: &str = "upgrade_v2";

/// How often an upgrade logs its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Upgrades a version 2 store to version 3 in one short transaction: its chunks get a
/// `codec` column (0: [`Codec::Version2`], which this build reads), and a note that they
/// are still to be re-encoded. From then on it is a version 3 store, which readers can
/// read and older builds refuse; [`recode_version2_chunks`] then compresses the chunks.
pub(super) fn upgrade_from_v2(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Another writer may have upgraded it since we looked (it would then hold the file).
    let version: i64 = tx.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if version != 2 {
        return Ok(());
    }
    // Adding a column with a default rewrites no row.
    tx.execute_batch(&format!(
        "ALTER TABLE chunks ADD COLUMN codec INTEGER NOT NULL DEFAULT 0;
         CREATE INDEX chunks_by_time ON chunks (last_ts);
         CREATE TABLE {UPGRADE_TABLE} (next_id INTEGER NOT NULL) STRICT;
         INSERT INTO {UPGRADE_TABLE} (next_id) VALUES (0);"
    ))?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    tracing::info!(
        path = %path.display(),
        "local store upgraded from schema version 2 to {SCHEMA_VERSION}; compressing its chunks"
    );
    Ok(())
}

/// Re-encodes the chunks a version 2 store left ([`Codec::Version2`]) in this build's codec,
/// in transactions of at most [`DELETE_CHUNKS`] chunks, each of which also moves the note
/// of where to go on: killed at any point, it loses nothing and goes on from there at the
/// next open. Returns whether there was anything to do. Logs its progress every few
/// seconds.
pub(super) fn recode_version2_chunks(
    conn: &mut Connection,
    path: &Path,
) -> Result<bool, StoreError> {
    let pending: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE name = ?1)",
        [UPGRADE_TABLE],
        |row| row.get(0),
    )?;
    if !pending {
        return Ok(false);
    }
    let started = Instant::now();
    let mut logged = started;
    let last_id: i64 = conn.query_row("SELECT COALESCE(MAX(id), 0) FROM chunks", [], |row| {
        row.get(0)
    })?;
    let mut writer = ChunkWriter::default();
    let mut decoded = Vec::new();
    let (mut chunks, mut bytes_before, mut bytes_after) = (0u64, 0u64, 0u64);
    loop {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let Some(next_id) = tx
            .query_row(&format!("SELECT next_id FROM {UPGRADE_TABLE}"), [], |row| {
                row.get::<_, i64>(0)
            })
            .optional()?
        else {
            return Ok(false);
        };
        let mut done_to = next_id;
        {
            let mut select = tx.prepare_cached(
                "SELECT id, points, data, codec FROM chunks WHERE id >= ?1 ORDER BY id LIMIT ?2",
            )?;
            let mut update =
                tx.prepare_cached("UPDATE chunks SET data = ?2, codec = ?3 WHERE id = ?1")?;
            let mut rows = select.query(params![next_id, DELETE_CHUNKS])?;
            while let Some(row) = rows.next()? {
                let id: i64 = row.get(0)?;
                done_to = id + 1;
                if Codec::from_i64(row.get(3)?)? != Codec::Version2 {
                    continue;
                }
                let data = blob(row, 2)?;
                codec::decode(Codec::Version2, data, row.get(1)?, &mut decoded)?;
                let mut written = Vec::new();
                for (ts, value) in &decoded {
                    written.extend(writer.push(*ts, value));
                }
                written.extend(writer.finish());
                let [chunk] = written.as_slice() else {
                    // Version 2 closed its chunks where this build does: one chunk each.
                    return Err(StoreError::Corrupt(format!(
                        "chunk {id} of version 2 holds more than a chunk's points"
                    )));
                };
                bytes_before += data.len() as u64;
                bytes_after += chunk.data.len() as u64;
                chunks += 1;
                update.execute(params![id, chunk.data, chunk.codec.as_i64()])?;
            }
        }
        let finished = done_to == next_id || done_to > last_id;
        if finished {
            tx.execute_batch(&format!("DROP TABLE {UPGRADE_TABLE}"))?;
        } else {
            tx.execute(
                &format!("UPDATE {UPGRADE_TABLE} SET next_id = ?1"),
                [done_to],
            )?;
        }
        tx.commit()?;
        if finished {
            break;
        }
        if logged.elapsed() >= PROGRESS_EVERY {
            logged = Instant::now();
            tracing::info!(
                path = %path.display(),
                chunks,
                percent = (done_to as f64 / last_id.max(1) as f64 * 100.0).round(),
                "local store upgrade: compressing chunks"
            );
        }
    }
    tracing::info!(
        path = %path.display(),
        chunks,
        bytes_before,
        bytes_after,
        elapsed_ms = started.elapsed().as_millis(),
        "local store upgrade: every chunk compressed"
    );
    Ok(true)
}

/// The point tables of version 1, for the tests that make such a file.
#[cfg(test)]
pub(super) const V1_POINT_TABLES: &str = "
CREATE TABLE points (
    series_id INTEGER NOT NULL,
    ts        INTEGER NOT NULL,
    kind      INTEGER NOT NULL,
    value     ANY,
    PRIMARY KEY (series_id, ts)
) STRICT, WITHOUT ROWID;
CREATE TABLE recent (
    series_id INTEGER NOT NULL,
    ts        INTEGER NOT NULL,
    kind      INTEGER NOT NULL,
    value     ANY
) STRICT;
";

/// Version 1's compaction: later rows of `recent` win.
const V1_COMPACT: &str = "INSERT INTO points (series_id, ts, kind, value)
     SELECT series_id, ts, kind, value FROM recent WHERE true ORDER BY series_id, ts, rowid
     ON CONFLICT (series_id, ts) DO UPDATE SET kind = excluded.kind, value = excluded.value";

/// Rewrites every point of a version 1 store into chunks of version 3, in one transaction:
/// the file is either upgraded whole or left as it was.
pub(super) fn upgrade_from_v1(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let started = std::time::Instant::now();
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Another writer may have upgraded it since we looked (it would then hold the file).
    let version: i64 = tx.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if version != 1 {
        return Ok(());
    }
    tx.execute(V1_COMPACT, [])?;
    tx.execute_batch("DROP TABLE recent;")?;
    tx.execute_batch(POINT_TABLES)?;
    let points = {
        let mut stmt =
            tx.prepare("SELECT series_id, ts, kind, value FROM points ORDER BY series_id, ts")?;
        let mut rows = stmt.query([])?;
        let mut points: Vec<(i64, FieldValue)> = Vec::new();
        let mut series: Option<i64> = None;
        let mut total = 0u64;
        while let Some(row) = rows.next()? {
            let id: i64 = row.get(0)?;
            if let Some(previous) = series.filter(|s| *s != id) {
                write_chunks(&tx, previous, points.iter().map(|(t, v)| (*t, v)))?;
                points.clear();
            }
            series = Some(id);
            points.push((row.get(1)?, decode_v1_value(row.get(2)?, row.get_ref(3)?)?));
            total += 1;
        }
        if let Some(last) = series {
            write_chunks(&tx, last, points.iter().map(|(t, v)| (*t, v)))?;
        }
        total
    };
    tx.execute_batch("DROP TABLE points;")?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    tracing::info!(
        path = %path.display(),
        points,
        elapsed_ms = started.elapsed().as_millis(),
        "local store upgraded from schema version 1 to {SCHEMA_VERSION}"
    );
    Ok(())
}

/// A value of version 1: its kind and SQLite value (NaN was stored as NULL).
fn decode_v1_value(kind: i64, value: ValueRef<'_>) -> Result<FieldValue, StoreError> {
    let kind = u8::try_from(kind)
        .ok()
        .and_then(FieldKind::from_u8)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown value kind {kind}")))?;
    Ok(match (kind, value) {
        (FieldKind::Float, ValueRef::Real(v)) => FieldValue::Float(v),
        (FieldKind::Float, ValueRef::Null) => FieldValue::Float(f64::NAN),
        (FieldKind::Integer, ValueRef::Integer(v)) => FieldValue::Integer(v),
        (FieldKind::Unsigned, ValueRef::Integer(v)) => FieldValue::Unsigned(v.cast_unsigned()),
        (FieldKind::Boolean, ValueRef::Integer(v)) => FieldValue::Boolean(v != 0),
        (FieldKind::String, ValueRef::Text(v)) => FieldValue::String(
            std::str::from_utf8(v)
                .map_err(|_| StoreError::Corrupt("string value is not UTF-8".into()))?
                .into(),
        ),
        (kind, value) => {
            return Err(StoreError::Corrupt(format!(
                "{} value stored as {}",
                kind.name(),
                value.data_type()
            )))
        }
    })
}
