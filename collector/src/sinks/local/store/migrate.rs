//! Upgrades a store of schema version 1 (one row per point) to version 2 (chunks).

use std::path::Path;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, TransactionBehavior};

use super::{write_chunks, StoreError, POINT_TABLES, SCHEMA_VERSION};
use crate::reading::{FieldKind, FieldValue};

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

/// Rewrites every point of a version 1 store into chunks, in one transaction: the file is
/// either upgraded whole or left as it was.
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
