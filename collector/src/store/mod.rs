//! The local store: an embedded time-series store in one SQLite file. The local sink writes
//! it; the `query` command and the dashboard read it, while it is written.
//!
//! The contract, in short: a point is (measurement, tags, field, timestamp), and writing it
//! again overwrites it; a value keeps its type, bit for bit; one writer, any number of
//! readers; retention by age and by size. [`LocalStore`]'s documentation gives the schema
//! and the details.
//!
//! Its parts: `schema` (tables, versions, what opening checks), `write` (inserts, the series
//! id cache), `compact` (`recent` into chunks, tails, settling), `codec` (how a chunk is
//! encoded), `read` (points, latest, summary, size), `downsample` (buckets for charts),
//! `retention` (by age, by size), `migrate` (upgrades from versions 1 and 2), `format`
//! (times and values as readers print them). The store imports nothing of the pipeline,
//! only [`reading`](crate::reading).

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

mod codec;
mod compact;
mod downsample;
mod error;
mod format;
mod migrate;
mod read;
mod retention;
mod schema;
mod write;

pub use downsample::{Bucket, SeriesBuckets};
pub use error::StoreError;
pub use format::TimeArg;
pub(crate) use format::{format_time, JsonTags, JsonValue};

use crate::reading::FieldValue;
use compact::{write_chunks, Tails, COMPACT_POINTS, COMPACT_POINTS_PER_SERIES, PART_BYTES};
use read::{blob, matching_series, visit_points};
use retention::DELETE_CHUNKS;
use schema::{check_schema, Schema, BUSY_TIMEOUT, POINT_TABLES, SCHEMA_VERSION, WAL_LIMIT_BYTES};
use write::SeriesCache;

/// Which points a [`LocalStore::query`] or [`LocalStore::latest`] returns. Every filter that
/// is set must match; the default matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// Only this measurement.
    pub measurement: Option<String>,
    /// Only series that have all these tags with these values.
    pub tags: Vec<(String, String)>,
    /// Only this field.
    pub field: Option<String>,
    /// Only series whose `device` tag has this value.
    pub device: Option<String>,
    /// Only points at or after this time (nanoseconds since the Unix epoch).
    pub from_ns: Option<i64>,
    /// Only points before this time (nanoseconds since the Unix epoch; exclusive).
    pub to_ns: Option<i64>,
    /// At most this many points.
    pub limit: Option<usize>,
}

/// One stored field value.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// The measurement.
    pub measurement: String,
    /// The tags, sorted by key.
    pub tags: Vec<(String, String)>,
    /// The field's name.
    pub field: String,
    /// Nanoseconds since the Unix epoch.
    pub timestamp: i64,
    /// The value, with the type it was written with.
    pub value: FieldValue,
}

/// What the store holds for one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSummary {
    /// The `device` tag; `None` for series without one.
    pub device: Option<String>,
    /// How many series (measurement, tags, field) hold points.
    pub series: u64,
    /// How many points (field values).
    pub points: u64,
    /// The earliest timestamp (nanoseconds since the Unix epoch).
    pub first_ns: i64,
    /// The latest timestamp (nanoseconds since the Unix epoch).
    pub last_ns: i64,
    /// The bytes its chunks' blobs take (SQLite's rows and index entries, and the points
    /// not yet compacted, come on top: see [`StoreSize`]).
    pub bytes: u64,
}

/// How large the store is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreSize {
    /// The SQLite file (not its `-wal`).
    pub file_bytes: u64,
    /// Of which pages that are free, to be reused by the next writes.
    pub free_bytes: u64,
    /// The write-ahead log beside it (`<file>-wal`; 0 when there is none).
    pub wal_bytes: u64,
    /// How many series the store holds.
    pub series: u64,
    /// How many points its chunks hold (the points not yet compacted not included).
    pub points: u64,
}

impl StoreSize {
    /// The bytes its pages in use take: what `sinks.local.max_bytes` bounds.
    pub fn used_bytes(&self) -> u64 {
        self.file_bytes.saturating_sub(self.free_bytes)
    }
}

/// What [`LocalStore::drop_oldest`] dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Dropped {
    /// Chunks deleted.
    pub chunks: u64,
    /// The points they held.
    pub points: u64,
    /// The bytes in use before and after (see [`StoreSize::used_bytes`]).
    pub used_before: u64,
    pub used_after: u64,
}

/// The local store: one SQLite file.
///
/// The API is synchronous: async code runs it on a blocking thread, as
/// the local sink does.
///
/// # Schema (version 3, in `PRAGMA user_version`)
///
/// ```sql
/// CREATE TABLE series (
///     id          INTEGER PRIMARY KEY,
///     measurement TEXT NOT NULL,
///     tags        TEXT NOT NULL,   -- canonical JSON object, keys sorted: {"device":"d1","site":"a"}
///     field       TEXT NOT NULL,
///     device      TEXT,            -- the `device` tag, NULL when there is none
///     UNIQUE (measurement, tags, field)
/// ) STRICT;
/// CREATE INDEX series_by_device ON series (device);
/// CREATE TABLE chunks (            -- a series' points, up to 512 per row, in time order
///     id        INTEGER PRIMARY KEY,
///     series_id INTEGER NOT NULL,
///     first_ts  INTEGER NOT NULL,  -- nanoseconds since the Unix epoch
///     last_ts   INTEGER NOT NULL,
///     points    INTEGER NOT NULL,
///     data      BLOB NOT NULL,     -- see below
///     codec     INTEGER NOT NULL DEFAULT 0  -- how `data` is encoded (codec.rs)
/// ) STRICT;
/// CREATE UNIQUE INDEX chunks_by_series ON chunks (series_id, last_ts);
/// CREATE INDEX chunks_by_time ON chunks (last_ts);  -- retention by size: oldest first
/// CREATE TABLE recent (            -- the newest points: one row per insert, in write order
///     id     INTEGER PRIMARY KEY,
///     points INTEGER NOT NULL,
///     data   BLOB NOT NULL         -- (series id, timestamp, value) of each point
/// ) STRICT;
/// ```
///
/// A series is one (measurement, tag set, field): the few, long-lived rows that name what is
/// measured. Its points live in chunks: rows of up to 512 points (16 KB) in time order,
/// that do not overlap, found by `(series_id, last_ts)`, so a time range of one series is
/// one range of that index. A chunk is compressed (`store/codec.rs` says how, and why): timestamps
/// as delta-of-deltas, values by column, floats of a few decimals as small integers, the
/// whole through zstd: about one byte per float at 1 Hz, where version 2's chunks took 10 and
/// version 1's row per point about 30. The codec is recorded per chunk, so that chunks of
/// several encodings live side by side (during an upgrade, or after a change of encoding).
///
/// Why `recent`: SQLite writes whole pages, to the WAL at each commit and again to the file
/// at each checkpoint. A batch that adds one point to each of 4,000 series would rewrite
/// 4,000 chunks. So an insert appends one row to `recent`, holding the whole batch (a commit
/// writes about as many pages as the batch fills), and once `recent` holds 100,000 points
/// (more with many series) one transaction moves them into chunks, sorted by series. The
/// points a compaction brings a series become one more chunk row after its others (one
/// `INSERT`, nothing read or rewritten): the series' tail, its newest chunks that are not
/// full. Once the tail holds 512 points or is 32 rows, it is merged with the new points
/// into full chunks, so that each point is written into chunks twice (once in a tail row,
/// once in a full chunk) and a series has at most 32 small rows. The compaction keeps each
/// series' tail (where its chunks end, and the size of its tail) in memory, and reads it
/// from the chunks when it does not know it (after opening); points that do not come after
/// a series' last chunk (late, or rewritten) are merged into the chunks they overlap.
/// Queries read both: a point in `recent` overrides the same point in a chunk, and within
/// `recent` the later write wins. `recent` has no index; it is small, and a query reads it
/// whole.
///
/// Values keep their type exactly, bit for bit (NaN payloads and -0.0 included): `recent`
/// as the journal encodes them, chunks in their codec's columns.
///
/// Retention: by age ([`LocalStore::delete_older_than`]) and by size
/// ([`LocalStore::drop_oldest`]: the chunks whose last point is oldest, by `chunks_by_time`).
/// SQLite does not give freed pages back to the file system; the next writes reuse them, so
/// a store bounded by size stops growing. A writer left idle compacts `recent` and merges
/// the tails ([`LocalStore::settle`]).
///
/// Version 2 stored chunks as per point, its timestamp and its value as the journal encodes
/// it, without `codec`: a writer that opens such a file adds the column (codec 0 for those
/// chunks, which this build reads) and the time index in one short transaction, then
/// re-encodes the chunks a thousand per transaction, noting where it is; a kill loses
/// nothing, and the next open goes on. Version 1 stored one row per point (`points`, and
/// `recent` one row per point too); a writer that opens such a file upgrades it in one
/// transaction (the WAL grows to about the size of the data meanwhile). A reader refuses
/// both with [`StoreError::Outdated`].
///
/// # Identity, type changes, non-finite floats
///
/// A point is identified by (measurement, tags, field, timestamp), as in InfluxDB: writing the
/// same identity again overwrites it, whatever its value, so a batch delivered twice leaves
/// the store as if it had been delivered once. The value's kind is part of the point, not of
/// the series: when a device changes a field's type (a JSON payload sending `21` and then
/// `21.5`, a firmware update), the store keeps one series and every point keeps the type it
/// was written with. InfluxDB rejects such a write; a local store that rejected it would lose
/// the reading, and splitting the series by kind would break a chart in two.
///
/// NaN and ±infinity are stored, unlike in InfluxDB, which cannot represent them: the local
/// store keeps what the device said, bit for bit.
///
/// # One writer
///
/// One process writes a store at a time (the collector's local sink); any number may read it
/// at the same time (`query`, dashboards), WAL mode lets them do so without blocking the
/// writer. The writer caches series ids in memory, so a second writer deleting series under
/// it is not supported.
#[derive(Debug)]
pub struct LocalStore {
    conn: Connection,
    path: PathBuf,
    cache: SeriesCache,
    /// Points in `recent` (exact for the writer; unused by readers).
    recent_points: u64,
    /// The bytes of `recent`'s blobs (as `recent_points`).
    recent_bytes: u64,
    /// Compact once `recent`'s blobs take this many bytes, whatever their points (see
    /// [`LocalStore::limit_recent`]).
    max_recent_bytes: u64,
    /// Compact when `recent` holds this many points, or more with many series: see
    /// [`LocalStore::compaction_due`] ([`COMPACT_POINTS`], less in tests).
    compact_points: u64,
    /// Points per active series a compaction waits for ([`COMPACT_POINTS_PER_SERIES`]).
    compact_per_series: u64,
    /// Bytes of points a compaction holds in memory at a time ([`PART_BYTES`], less in
    /// tests).
    part_bytes: usize,
    /// The tails of the series the compaction has seen (writer only).
    tails: Tails,
}

impl LocalStore {
    /// Opens the store at `path` for reading and writing, creating the file, its parent
    /// directories and the schema when they do not exist yet.
    ///
    /// The file is put in WAL mode with `synchronous=FULL`: a commit is on disk before the
    /// sink's journal cursor moves past it, so that not even a power loss can leave the
    /// cursor ahead of the store (one fsync per batch, about 0.1 ms here).
    ///
    /// # Errors
    /// [`StoreError::CreateDir`] or [`StoreError::Open`] when the file cannot be created or
    /// opened, [`StoreError::NotAStore`] when it is some other file or database,
    /// [`StoreError::UnsupportedVersion`] when it was written by a build with another schema.
    pub fn open(path: &Path) -> Result<LocalStore, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| StoreError::CreateDir {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open_with_flags(path, flags).map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        // Check what the file is before changing anything in it.
        let schema = check_schema(&conn, path)?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "wal", |row| row.get(0))
            .map_err(open_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(path = %path.display(), mode, "local store cannot use WAL mode; readers will block the writer");
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;
        // A page cache of 1 MiB rather than SQLite's 2 MiB: inserts and compactions append,
        // and a compaction visits each series' place in the index once, so a larger cache is
        // not faster (measured with `insert_rate`), only larger.
        conn.pragma_update(None, "cache_size", -1024)
            .map_err(open_err)?;
        // A checkpoint leaves the WAL at most this large (it grows by 4 MiB between
        // checkpoints, more while a reader holds an old snapshot).
        conn.pragma_update(None, "journal_size_limit", WAL_LIMIT_BYTES)
            .map_err(open_err)?;
        let mut store = LocalStore::with_connection(conn, path);
        match schema {
            Schema::Empty => store.create_schema()?,
            Schema::Current => {}
            Schema::Version1 => migrate::upgrade_from_v1(&mut store.conn, path)?,
            Schema::Version2 => migrate::upgrade_from_v2(&mut store.conn, path)?,
        }
        migrate::recode_version2_chunks(&mut store.conn, path)?;
        (store.recent_points, store.recent_bytes) = store.conn.query_row(
            "SELECT COALESCE(SUM(points), 0), COALESCE(SUM(length(data)), 0) FROM recent",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        Ok(store)
    }

    /// Opens an existing store for reading only, as `query` does. It may be read while the
    /// collector writes it.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when no file exists at `path`, [`StoreError::Open`] when it
    /// cannot be opened, [`StoreError::NotAStore`] or [`StoreError::UnsupportedVersion`] when
    /// it is not a local store this build can read, [`StoreError::Outdated`] when it must be
    /// upgraded first.
    pub fn open_read_only(path: &Path) -> Result<LocalStore, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        // When existence cannot be told (a permission problem), SQLite's error says why.
        if !path.try_exists().unwrap_or(true) {
            return Err(StoreError::NotFound {
                path: path.to_path_buf(),
            });
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        let schema = check_schema(&conn, path)?;
        match schema {
            Schema::Current => {}
            Schema::Empty => {
                return Err(StoreError::NotAStore {
                    path: path.to_path_buf(),
                })
            }
            Schema::Version1 | Schema::Version2 => {
                return Err(StoreError::Outdated {
                    path: path.to_path_buf(),
                    found: if matches!(schema, Schema::Version1) {
                        1
                    } else {
                        2
                    },
                    supported: SCHEMA_VERSION,
                })
            }
        }
        Ok(LocalStore::with_connection(conn, path))
    }

    /// A store over `conn`, opened from `path`, with nothing cached yet.
    fn with_connection(conn: Connection, path: &Path) -> LocalStore {
        LocalStore {
            conn,
            path: path.to_path_buf(),
            cache: SeriesCache::default(),
            recent_points: 0,
            recent_bytes: 0,
            max_recent_bytes: u64::MAX,
            compact_points: COMPACT_POINTS,
            compact_per_series: COMPACT_POINTS_PER_SERIES,
            part_bytes: PART_BYTES,
            tails: Tails::default(),
        }
    }

    /// The file this store was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
#[path = "fixtures/v2_fixture.rs"]
mod v2_fixture;

#[cfg(test)]
mod crash_tests;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
