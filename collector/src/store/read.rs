//! Reads: points, the latest point of each series, the per-device summary and the size, each
//! from one snapshot of the file (a series' chunks merged with `recent`, which wins).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::ControlFlow;

use rusqlite::types::ValueRef;
use rusqlite::{params, Connection};

use super::codec::{BatchReader, ChunkReader, Codec};
use super::schema::{SELECT_CHUNKS_FROM, SELECT_CHUNK_BEFORE, SELECT_RECENT};
use super::{DeviceSummary, LocalStore, Point, Query, StoreError, StoreSize};
use crate::reading::FieldValue;

impl LocalStore {
    /// The points that match `q`, ordered by measurement, tags, field and time; at most
    /// `q.limit` of them.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] when reading fails, [`StoreError::Corrupt`] for a row this
    /// build cannot decode.
    pub fn query(&self, q: &Query) -> Result<Vec<Point>, StoreError> {
        let mut out = Vec::new();
        let Some(mut snap) = self.snapshot(q)? else {
            return Ok(out);
        };
        let limit = q.limit.unwrap_or(usize::MAX);
        for s in std::mem::take(&mut snap.series) {
            let remaining = limit.saturating_sub(out.len());
            if remaining == 0 {
                break;
            }
            let newer = snap.recent.remove(&s.id).unwrap_or_default();
            let mut points = Vec::new();
            visit_points(&snap.tx, s.id, snap.lo, snap.hi, newer, |ts, value| {
                points.push((ts, value));
                if points.len() < remaining {
                    ControlFlow::Continue(())
                } else {
                    ControlFlow::Break(())
                }
            })?;
            out.extend(points.into_iter().map(|(timestamp, value)| Point {
                measurement: s.measurement.clone(),
                tags: s.tags.clone(),
                field: s.field.clone(),
                timestamp,
                value,
            }));
        }
        Ok(out)
    }

    /// The latest point of each series that matches `q` (within `q`'s time range), ordered by
    /// measurement, tags and field; at most `q.limit` of them. "The latest temperature of
    /// every device" is a query for that measurement and field.
    ///
    /// # Errors
    /// As [`LocalStore::query`].
    pub fn latest(&self, q: &Query) -> Result<Vec<Point>, StoreError> {
        let mut out = Vec::new();
        let Some(mut snap) = self.snapshot(q)? else {
            return Ok(out);
        };
        for s in std::mem::take(&mut snap.series) {
            if q.limit.is_some_and(|limit| out.len() >= limit) {
                break;
            }
            let newer = snap
                .recent
                .remove(&s.id)
                .and_then(|mut points| points.pop_last());
            let stored = latest_stored(&snap.tx, s.id, snap.lo, snap.hi)?;
            let latest = match (stored, newer) {
                (Some(stored), Some(newer)) => {
                    Some(if newer.0 >= stored.0 { newer } else { stored })
                }
                (stored, newer) => stored.or(newer),
            };
            if let Some((timestamp, value)) = latest {
                out.push(Point {
                    measurement: s.measurement,
                    tags: s.tags,
                    field: s.field,
                    timestamp,
                    value,
                });
            }
        }
        Ok(out)
    }

    /// What every read starts with: one read transaction (so that series, points and
    /// `recent` come from the same snapshot), the series that match `q`, and their points in
    /// `recent` within `q`'s time range; `None` when the range is empty.
    pub(super) fn snapshot(&self, q: &Query) -> Result<Option<Snapshot<'_>>, StoreError> {
        let Some((lo, hi)) = ts_bounds(q) else {
            return Ok(None);
        };
        let tx = self.conn.unchecked_transaction()?;
        let series = matching_series(&tx, q)?;
        let ids: HashSet<i64> = series.iter().map(|s| s.id).collect();
        let recent = if ids.is_empty() {
            HashMap::new()
        } else {
            recent_points(&tx, Some(&ids), lo, hi)?
        };
        Ok(Some(Snapshot {
            tx,
            series,
            recent,
            lo,
            hi,
        }))
    }

    /// Per device: how many series and points the store holds, and their time span; ordered
    /// by device, series without a device tag first. It reads the chunks' counts and
    /// `recent`, not every point.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] when reading fails, [`StoreError::Corrupt`] for a blob this
    /// build cannot decode.
    pub fn summary(&self) -> Result<Vec<DeviceSummary>, StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        // Per series: (points, first, last, bytes).
        let mut per_series: HashMap<i64, (u64, i64, i64, u64)> = HashMap::new();
        {
            // `length` of a blob reads its size, not its pages.
            let mut stmt = tx.prepare_cached(
                "SELECT series_id, SUM(points), MIN(first_ts), MAX(last_ts), SUM(length(data))
                 FROM chunks GROUP BY series_id",
            )?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                per_series.insert(
                    row.get(0)?,
                    (row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?),
                );
            }
        }
        // A point of `recent` counts when no chunk holds it already, and once.
        for (id, newer) in recent_points(&tx, None, i64::MIN, i64::MAX)? {
            let (Some((&lo, _)), Some((&hi, _))) =
                (newer.first_key_value(), newer.last_key_value())
            else {
                continue;
            };
            let mut stored = 0;
            visit_points(&tx, id, lo, hi, BTreeMap::new(), |ts, _| {
                stored += u64::from(newer.contains_key(&ts));
                ControlFlow::Continue(())
            })?;
            let entry = per_series.entry(id).or_insert((0, lo, hi, 0));
            entry.0 += newer.len() as u64 - stored;
            entry.1 = entry.1.min(lo);
            entry.2 = entry.2.max(hi);
        }
        let mut devices: BTreeMap<Option<String>, DeviceSummary> = BTreeMap::new();
        let mut stmt = tx.prepare_cached("SELECT id, device FROM series")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let Some(&(points, first, last, bytes)) = per_series.get(&row.get::<_, i64>(0)?) else {
                continue;
            };
            let device: Option<String> = row.get(1)?;
            let d = devices
                .entry(device.clone())
                .or_insert_with(|| DeviceSummary {
                    device,
                    series: 0,
                    points: 0,
                    first_ns: first,
                    last_ns: last,
                    bytes: 0,
                });
            d.series += 1;
            d.points += points;
            d.bytes += bytes;
            d.first_ns = d.first_ns.min(first);
            d.last_ns = d.last_ns.max(last);
        }
        Ok(devices.into_values().collect())
    }

    /// How large the store is: its file, free pages, WAL, series and points. Counting the
    /// points reads every chunk row (not its blob): on a large store, seconds.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] when reading fails.
    pub fn size(&self) -> Result<StoreSize, StoreError> {
        self.size_with(true)
    }

    /// [`LocalStore::size`] without counting the points (`points` is 0): reads a few pages.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] when reading fails.
    pub fn file_size(&self) -> Result<StoreSize, StoreError> {
        self.size_with(false)
    }

    fn size_with(&self, count_points: bool) -> Result<StoreSize, StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        let (file_bytes, free_bytes) = pages(&tx)?;
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        let series: u64 = tx.query_row("SELECT COUNT(*) FROM series", [], |row| row.get(0))?;
        let points: u64 = if count_points {
            tx.query_row("SELECT COALESCE(SUM(points), 0) FROM chunks", [], |row| {
                row.get(0)
            })?
        } else {
            0
        };
        Ok(StoreSize {
            file_bytes,
            free_bytes,
            wal_bytes: std::fs::metadata(wal).map_or(0, |m| m.len()),
            series,
            points,
        })
    }
}

/// The file's size and its free pages' size, in bytes.
pub(super) fn pages(conn: &Connection) -> Result<(u64, u64), StoreError> {
    let pragma = |name: &str| -> Result<u64, StoreError> {
        Ok(conn.pragma_query_value(None, name, |row| row.get(0))?)
    };
    let page = pragma("page_size")?;
    Ok((
        pragma("page_count")? * page,
        pragma("freelist_count")? * page,
    ))
}

/// Calls `f` with every point of `recent`, in the order written.
pub(super) fn for_each_recent(
    conn: &Connection,
    mut f: impl FnMut((i64, i64, FieldValue)) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached(SELECT_RECENT)?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        for point in BatchReader::new(blob(row, 0)?) {
            f(point?)?;
        }
    }
    Ok(())
}

/// Column `i` of `row`, which must be a blob.
pub(super) fn blob<'r>(row: &'r rusqlite::Row<'_>, i: usize) -> Result<&'r [u8], StoreError> {
    match row.get_ref(i)? {
        ValueRef::Blob(data) => Ok(data),
        other => Err(StoreError::Corrupt(format!(
            "a blob column holds {}",
            other.data_type()
        ))),
    }
}

/// Calls `f` with the points of series `id` within `[lo, hi]`, in time order, until it
/// breaks: those of its chunks merged with `newer` (points of `recent` in the same range,
/// which win for a timestamp in both).
pub(super) fn visit_points(
    conn: &Connection,
    id: i64,
    lo: i64,
    hi: i64,
    newer: BTreeMap<i64, FieldValue>,
    mut f: impl FnMut(i64, FieldValue) -> ControlFlow<()>,
) -> Result<(), StoreError> {
    let mut newer = newer.into_iter().peekable();
    let mut stmt = conn.prepare_cached(SELECT_CHUNKS_FROM)?;
    let mut rows = stmt.query(params![id, lo])?;
    'chunks: while let Some(row) = rows.next()? {
        if row.get::<_, i64>(1)? > hi {
            break;
        }
        let codec = Codec::from_i64(row.get(4)?)?;
        for point in ChunkReader::new(codec, blob(row, 3)?, row.get(2)?) {
            let (ts, value) = point?;
            if ts < lo {
                continue;
            }
            if ts > hi {
                break 'chunks;
            }
            while let Some((t, v)) = newer.next_if(|(t, _)| *t < ts) {
                if f(t, v).is_break() {
                    return Ok(());
                }
            }
            let (t, v) = newer.next_if(|(t, _)| *t == ts).unwrap_or((ts, value));
            if f(t, v).is_break() {
                return Ok(());
            }
        }
    }
    for (t, v) in newer {
        if f(t, v).is_break() {
            break;
        }
    }
    Ok(())
}

/// The latest point of series `id` within `[lo, hi]` that its chunks hold.
pub(super) fn latest_stored(
    conn: &Connection,
    id: i64,
    lo: i64,
    hi: i64,
) -> Result<Option<(i64, FieldValue)>, StoreError> {
    let last_in = |row: &rusqlite::Row<'_>| -> Result<Option<(i64, FieldValue)>, StoreError> {
        let codec = Codec::from_i64(row.get(4)?)?;
        let mut latest = None;
        for point in ChunkReader::new(codec, blob(row, 3)?, row.get(2)?) {
            let point = point?;
            if point.0 > hi {
                break;
            }
            latest = Some(point);
        }
        Ok(latest.filter(|(ts, _)| *ts >= lo))
    };
    // The chunk that holds `hi`, when one does: the latest point is in it.
    let mut stmt = conn.prepare_cached(SELECT_CHUNKS_FROM)?;
    let mut rows = stmt.query(params![id, hi])?;
    if let Some(row) = rows.next()? {
        if row.get::<_, i64>(1)? <= hi {
            return last_in(row);
        }
    }
    // Else the last point of the chunk before `hi`.
    let mut stmt = conn.prepare_cached(SELECT_CHUNK_BEFORE)?;
    let mut rows = stmt.query(params![id, hi])?;
    match rows.next()? {
        Some(row) => last_in(row),
        None => Ok(None),
    }
}

/// See [`LocalStore::snapshot`].
pub(super) struct Snapshot<'c> {
    pub(super) tx: rusqlite::Transaction<'c>,
    pub(super) series: Vec<SeriesRow>,
    /// The points of `recent` by series and timestamp.
    pub(super) recent: HashMap<i64, BTreeMap<i64, FieldValue>>,
    /// The time range, closed.
    pub(super) lo: i64,
    pub(super) hi: i64,
}

/// A series as `query` and `latest` need it.
pub(super) struct SeriesRow {
    pub(super) id: i64,
    pub(super) measurement: String,
    pub(super) tags: Vec<(String, String)>,
    pub(super) field: String,
}

/// The series matching `q`'s measurement, tags, field and device, ordered by measurement,
/// tags (as a list of pairs) and field.
pub(super) fn matching_series(conn: &Connection, q: &Query) -> Result<Vec<SeriesRow>, StoreError> {
    let mut sql = String::from("SELECT id, measurement, tags, field FROM series WHERE 1");
    let mut args: Vec<&dyn rusqlite::ToSql> = Vec::new();
    for (column, value) in [
        ("measurement", &q.measurement),
        ("field", &q.field),
        ("device", &q.device),
    ] {
        if let Some(value) = value {
            args.push(value);
            sql.push_str(&format!(" AND {column} = ?{}", args.len()));
        }
    }
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(args.as_slice())?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let tags_json: String = row.get(2)?;
        let tags = parse_tags(&tags_json)?;
        let matches = q
            .tags
            .iter()
            .all(|(k, v)| tags.iter().any(|(tk, tv)| tk == k && tv == v));
        if matches {
            out.push(SeriesRow {
                id: row.get(0)?,
                measurement: row.get(1)?,
                tags,
                field: row.get(3)?,
            });
        }
    }
    out.sort_by(|a, b| {
        (&a.measurement, &a.tags, &a.field).cmp(&(&b.measurement, &b.tags, &b.field))
    });
    Ok(out)
}

/// The points of `recent` in [lo, hi] (of the series in `ids`, or of all), by series and
/// timestamp; the last write of a point wins.
pub(super) fn recent_points(
    conn: &Connection,
    ids: Option<&HashSet<i64>>,
    lo: i64,
    hi: i64,
) -> Result<HashMap<i64, BTreeMap<i64, FieldValue>>, StoreError> {
    let mut out: HashMap<i64, BTreeMap<i64, FieldValue>> = HashMap::new();
    for_each_recent(conn, |(id, ts, value)| {
        if (lo..=hi).contains(&ts) && ids.is_none_or(|ids| ids.contains(&id)) {
            out.entry(id).or_default().insert(ts, value);
        }
        Ok(())
    })?;
    Ok(out)
}

/// `q`'s half-open time range as the closed range the statements use; `None` when empty.
pub(super) fn ts_bounds(q: &Query) -> Option<(i64, i64)> {
    let lo = q.from_ns.unwrap_or(i64::MIN);
    let hi = match q.to_ns {
        Some(to) => to.checked_sub(1)?,
        None => i64::MAX,
    };
    (lo <= hi).then_some((lo, hi))
}

pub(super) fn parse_tags(json: &str) -> Result<Vec<(String, String)>, StoreError> {
    let map: BTreeMap<String, String> = serde_json::from_str(json)
        .map_err(|e| StoreError::Corrupt(format!("tags {json:?}: {e}")))?;
    Ok(map.into_iter().collect())
}
