//! The SQLite file behind the local sink, `query` and the dashboard: schema, inserts, queries,
//! downsampling, retention.
//!
//! [`LocalStore`]'s documentation describes the schema and what it guarantees.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::BuildHasher;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Duration;

use foldhash::fast::RandomState;
use foldhash::HashMap as FastMap;
use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior};

mod codec;
mod downsample;
mod migrate;

use codec::{is_full, BatchReader, Chunk, ChunkReader, ChunkWriter, Codec, CHUNK_POINTS};

pub use downsample::{Bucket, SeriesBuckets};

use crate::reading::{CompactString, FieldValue, Reading, Readings, DEVICE_TAG};
use crate::sinks::local::error_chain;

/// The schema version this build reads and writes, kept in `PRAGMA user_version`. Versions 1
/// (one row per point) and 2 (chunks without a codec) are upgraded when a writer opens them.
const SCHEMA_VERSION: i64 = 3;

/// What a checkpoint truncates the WAL to (`journal_size_limit`).
const WAL_LIMIT_BYTES: i64 = 4 << 20;

/// Marks the file as ours in `PRAGMA application_id` ("TCLS").
const APPLICATION_ID: i64 = 0x5443_4C53;

/// How long a statement waits for a lock held by another connection before failing busy.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Retention (and the upgrade from version 2) deletes or rewrites at most this many chunks
/// per transaction (a few MB), so it never holds the write lock (or grows the WAL) for long.
/// Tests take several transactions with a few thousand points.
const DELETE_CHUNKS: usize = if cfg!(test) { 3 } else { 1_000 };

/// `recent` is moved into chunks once it holds this many points (about 1.2 MB), or
/// [`COMPACT_POINTS_PER_SERIES`] per active series if that is more (up to
/// [`COMPACT_POINTS_MAX`]). Larger means fewer rows (and statements) per point, and more for
/// each query to read.
const COMPACT_POINTS: u64 = 100_000;

/// Points per active series that a compaction waits for. Much of a compaction's cost is per
/// series (one row and its index entry, and SQLite's work for each statement): with 40,000
/// series, 100,000 points bring each series 2 or 3 points, and the store took 0.65 million
/// field values a second; at 10 points per series, 1.1 million (`insert_rate`, when a
/// compaction still rewrote each series' last chunk).
const COMPACT_POINTS_PER_SERIES: u64 = 10;

/// The most points `recent` holds before a compaction, however many series (a query reads
/// `recent` whole: about 8 ms for this many).
const COMPACT_POINTS_MAX: u64 = 400_000;

/// A compaction holds the points of at most this many bytes in memory at a time (a float
/// point takes 17: about 120,000 of them; more only for a single series with more points): a
/// larger `recent` is moved in parts, each part a range of series, each part reading `recent`
/// again.
const PART_BYTES: usize = 2 << 20;

/// A series' newest chunks that are not full (its tail) are merged into full ones once they
/// hold [`CHUNK_POINTS`] points or are this many rows. Until then a compaction adds the
/// points it brings a series as one more row, without reading or rewriting older ones. Tests
/// merge tails sooner.
const TAIL_ROWS: u16 = if cfg!(test) { 4 } else { 32 };

/// The compaction remembers the tail of series with ids below this, in a vector indexed by
/// id (16 bytes each: 640 KB for 40,000 series, 4 MiB at most); the tail of a series with a
/// larger id is read from its chunks at each compaction.
const TAIL_IDS: usize = 1 << 18;

/// [`LocalStore::settle`] merges the tails of this many series per transaction.
const SETTLE_SERIES: usize = 500;

/// The series id cache is emptied when it holds more than this many series (a tag with
/// unbounded values must not grow memory without bound).
const CACHE_MAX_SERIES: usize = 100_000;

/// The table of series, the same in versions 1 and 2.
const SERIES_TABLE: &str = "
CREATE TABLE series (
    id          INTEGER PRIMARY KEY,
    measurement TEXT NOT NULL,
    tags        TEXT NOT NULL,
    field       TEXT NOT NULL,
    device      TEXT,
    UNIQUE (measurement, tags, field)
) STRICT;
CREATE INDEX series_by_device ON series (device);
";

/// The tables of points, version 3 (version 2's, and `codec` last, as the upgrade adds it).
const POINT_TABLES: &str = "
CREATE TABLE chunks (
    id        INTEGER PRIMARY KEY,
    series_id INTEGER NOT NULL,
    first_ts  INTEGER NOT NULL,
    last_ts   INTEGER NOT NULL,
    points    INTEGER NOT NULL,
    data      BLOB NOT NULL,
    codec     INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE UNIQUE INDEX chunks_by_series ON chunks (series_id, last_ts);
CREATE INDEX chunks_by_time ON chunks (last_ts);
CREATE TABLE recent (
    id     INTEGER PRIMARY KEY,
    points INTEGER NOT NULL,
    data   BLOB NOT NULL
) STRICT;
";

const SELECT_SERIES_ID: &str =
    "SELECT id FROM series WHERE measurement = ?1 AND tags = ?2 AND field = ?3";
const INSERT_SERIES: &str =
    "INSERT INTO series (measurement, tags, field, device) VALUES (?1, ?2, ?3, ?4)";
const INSERT_RECENT: &str = "INSERT INTO recent (points, data) VALUES (?1, ?2)";
/// In the order written: a later batch overrides an earlier one.
const SELECT_RECENT: &str = "SELECT data FROM recent ORDER BY id";
/// A series' chunks from its newest back.
const SELECT_CHUNKS_BACK: &str = "SELECT id, first_ts, last_ts, points, data, codec FROM chunks
     WHERE series_id = ?1 ORDER BY last_ts DESC";
const INSERT_CHUNK: &str = "INSERT INTO chunks (series_id, first_ts, last_ts, points, data, codec)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
/// A series' chunks from its newest back, to merge its tail. No `LIMIT ?`: with a bound
/// limit, SQLite prepared the statement again at every execution (`sqlite3Reprepare` was a
/// quarter of the profile); the reader stops instead.
const SELECT_TAIL: &str = "SELECT last_ts, points, data, codec FROM chunks
     WHERE series_id = ?1 ORDER BY last_ts DESC";
/// The end and size of a series' chunks from its newest back, to find its tail.
const SELECT_TAIL_SIZES: &str = "SELECT last_ts, points, length(data) FROM chunks
     WHERE series_id = ?1 ORDER BY last_ts DESC";
const DELETE_CHUNKS_FROM: &str = "DELETE FROM chunks WHERE series_id = ?1 AND last_ts >= ?2";
/// A series' chunks from the one that holds `?2` (or the first after it) on, in time order.
const SELECT_CHUNKS_FROM: &str = "SELECT id, first_ts, points, data, codec FROM chunks
     WHERE series_id = ?1 AND last_ts >= ?2 ORDER BY last_ts";
/// A series' last chunk that ends before `?2`.
const SELECT_CHUNK_BEFORE: &str = "SELECT id, first_ts, points, data, codec FROM chunks
     WHERE series_id = ?1 AND last_ts < ?2 ORDER BY last_ts DESC LIMIT 1";

/// Everything that can go wrong with the local store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// [`LocalStore::open_read_only`] was given a path where no file exists.
    #[error("local store {} does not exist", path.display())]
    NotFound {
        /// The path that was asked for.
        path: PathBuf,
    },
    /// The directory that should hold the store could not be created.
    #[error("cannot create directory {}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// SQLite could not open the file, or set it up.
    #[error("cannot open local store {}", path.display())]
    Open {
        /// The store's path.
        path: PathBuf,
        /// Why.
        #[source]
        source: rusqlite::Error,
    },
    /// The file is a database, or something else, but not a local store.
    #[error("{} is not a telemetry-collector local store", path.display())]
    NotAStore {
        /// The file's path.
        path: PathBuf,
    },
    /// The file is a local store written by a newer build, with a schema this one does not
    /// know.
    #[error(
        "local store {} has schema version {found}, written by a newer build: this build reads \
         version {supported} and older (run the newer build, or move the store away)",
        path.display()
    )]
    UnsupportedVersion {
        /// The store's path.
        path: PathBuf,
        /// The version found in the file.
        found: i64,
        /// The version this build reads and writes.
        supported: i64,
    },
    /// The file is a local store of an older schema version, which a reader cannot use:
    /// opening it for writing (starting the collector) upgrades it.
    #[error(
        "local store {} has schema version {found}: start the collector once to upgrade it to \
         version {supported}",
        path.display()
    )]
    Outdated {
        /// The store's path.
        path: PathBuf,
        /// The version found in the file.
        found: i64,
        /// The version this build reads and writes.
        supported: i64,
    },
    /// A statement failed (busy, I/O error, disk full, ...).
    #[error("sqlite error")]
    Sqlite(#[from] rusqlite::Error),
    /// A tag set could not be encoded as JSON.
    #[error("cannot encode tags")]
    EncodeTags(#[source] serde_json::Error),
    /// The file holds a row this build cannot read (written by something else, or damaged).
    #[error("local store holds an invalid row: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// Whether doing the same thing again may succeed: a busy or locked database, an I/O
    /// error, a full disk. Size limits, constraint and type errors are not passing.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => !matches!(
                e.code,
                ErrorCode::TooBig
                    | ErrorCode::ConstraintViolation
                    | ErrorCode::TypeMismatch
                    | ErrorCode::ParameterOutOfRange
                    | ErrorCode::ApiMisuse
            ),
            // Other rusqlite errors (conversions, parameter counts) fail the same way every time.
            StoreError::Sqlite(_) => false,
            StoreError::CreateDir { .. } | StoreError::Open { .. } => true,
            StoreError::NotFound { .. }
            | StoreError::NotAStore { .. }
            | StoreError::UnsupportedVersion { .. }
            | StoreError::Outdated { .. }
            | StoreError::EncodeTags(_)
            | StoreError::Corrupt(_) => false,
        }
    }
}

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
/// [`LocalSink`](super::LocalSink) does.
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
/// whole deflated: about one byte per float at 1 Hz, where version 2's chunks took 10 and
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
        let mut store = LocalStore {
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
        };
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
        Ok(LocalStore {
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
        })
    }

    /// The file this store was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn create_schema(&mut self) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Another process may have created it since we looked.
        let version: i64 = tx.pragma_query_value(None, "user_version", |row| row.get(0))?;
        if version == 0 {
            tx.execute_batch(SERIES_TABLE)?;
            tx.execute_batch(POINT_TABLES)?;
            tx.pragma_update(None, "application_id", APPLICATION_ID)?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Writes every field value of `readings`, in one transaction: all of them or none.
    /// A point that already exists (same measurement, tags, field and timestamp) is
    /// overwritten, so writing a batch again is harmless. Readings without fields add
    /// nothing.
    ///
    /// Once enough points have been written, this also runs [`LocalStore::compact`]; a
    /// failure there is logged, not returned (the batch is stored, and the next insert tries
    /// again).
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] when the write fails (see [`StoreError::is_retryable`]);
    /// nothing of the batch is then stored.
    pub fn insert(&mut self, readings: &(impl Readings + ?Sized)) -> Result<(), StoreError> {
        // After a failed (or panicked) insert, the cache may hold ids of series created by the
        // rolled-back transaction, which do not exist: forget them all.
        if self.cache.in_doubt || self.cache.series > CACHE_MAX_SERIES {
            self.cache.clear();
        }
        self.cache.in_doubt = true;
        let (points, bytes) = insert_all(&mut self.conn, &mut self.cache, readings)?;
        self.recent_points += points;
        self.recent_bytes += bytes;
        self.cache.in_doubt = false;
        if self.compaction_due() {
            if let Err(err) = self.compact() {
                tracing::warn!(path = %self.path.display(), error = %error_chain(&err), "local store compaction failed; will retry");
            }
        }
        Ok(())
    }

    /// Whether `recent` holds enough points to be compacted: [`COMPACT_POINTS`], or
    /// [`COMPACT_POINTS_PER_SERIES`] per series in the id cache (the series written lately)
    /// when that is more, up to [`COMPACT_POINTS_MAX`].
    fn compaction_due(&self) -> bool {
        let per_series = (self.cache.series as u64)
            .saturating_mul(self.compact_per_series)
            .min(COMPACT_POINTS_MAX);
        self.recent_points >= self.compact_points.max(per_series)
            || self.recent_bytes >= self.max_recent_bytes
    }

    /// Makes [`LocalStore::insert`] compact once `recent` takes `bytes` bytes, even with
    /// fewer points than it waits for otherwise: a store bounded by `max_bytes` keeps
    /// `recent` well within the bound (the sink allows it a sixteenth).
    pub fn limit_recent(&mut self, bytes: u64) {
        self.max_recent_bytes = bytes;
    }

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
                // Final: the last chunk of each series is deflated too.
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
    fn snapshot(&self, q: &Query) -> Result<Option<Snapshot<'_>>, StoreError> {
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

/// About what a chunk's row and index entries take besides its blob.
const ROW_BYTES: u64 = 48;

/// The file's size and its free pages' size, in bytes.
fn pages(conn: &Connection) -> Result<(u64, u64), StoreError> {
    let pragma = |name: &str| -> Result<u64, StoreError> {
        Ok(conn.pragma_query_value(None, name, |row| row.get(0))?)
    };
    let page = pragma("page_size")?;
    Ok((
        pragma("page_count")? * page,
        pragma("freelist_count")? * page,
    ))
}

/// What [`check_schema`] found.
enum Schema {
    /// No schema yet: a new file.
    Empty,
    /// [`SCHEMA_VERSION`].
    Current,
    /// Version 1, which a writer upgrades.
    Version1,
    /// Version 2, which a writer upgrades.
    Version2,
}

/// Reads the schema version of an open file, or returns an error when it is not a local
/// store this build can use.
fn check_schema(conn: &Connection, path: &Path) -> Result<Schema, StoreError> {
    let not_a_store = || StoreError::NotAStore {
        path: path.to_path_buf(),
    };
    let read = |pragma: &str| -> Result<i64, StoreError> {
        conn.pragma_query_value(None, pragma, |row| row.get(0))
            .map_err(|e| match e.sqlite_error_code() {
                Some(ErrorCode::NotADatabase) => not_a_store(),
                _ => StoreError::Open {
                    path: path.to_path_buf(),
                    source: e,
                },
            })
    };
    let application_id = read("application_id")?;
    let version = read("user_version")?;
    if application_id == 0 && version == 0 {
        let tables: i64 = conn
            .query_row("SELECT COUNT(*) FROM sqlite_schema", [], |row| row.get(0))
            .map_err(|source| StoreError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        return if tables == 0 {
            Ok(Schema::Empty)
        } else {
            Err(not_a_store())
        };
    }
    if application_id != APPLICATION_ID {
        return Err(not_a_store());
    }
    match version {
        SCHEMA_VERSION => Ok(Schema::Current),
        1 => Ok(Schema::Version1),
        2 => Ok(Schema::Version2),
        found if found > SCHEMA_VERSION => Err(StoreError::UnsupportedVersion {
            path: path.to_path_buf(),
            found,
            supported: SCHEMA_VERSION,
        }),
        _ => Err(not_a_store()),
    }
}

/// Appends `readings` to `recent` as one row; returns how many points it holds, and its
/// blob's size.
fn insert_all(
    conn: &mut Connection,
    cache: &mut SeriesCache,
    readings: &(impl Readings + ?Sized),
) -> Result<(u64, u64), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut new_series = 0;
    let mut points = 0u64;
    let mut data = Vec::with_capacity(readings.count() * 32);
    readings.try_for_each(|r| {
        if r.fields.is_empty() {
            return Ok(());
        }
        let group = cache.group(r)?;
        for (i, (name, value)) in r.fields.iter().enumerate() {
            let id = match group.field_id(i, name) {
                Some(id) => id,
                None => {
                    let id = series_id(&tx, group, name)?;
                    group.fields.push((name.clone(), id));
                    new_series += 1;
                    id
                }
            };
            codec::put_batch_point(&mut data, id, r.timestamp, value);
            points += 1;
        }
        Ok::<(), StoreError>(())
    })?;
    if points > 0 {
        tx.prepare_cached(INSERT_RECENT)?
            .execute(params![points, data])?;
    }
    tx.commit()?;
    cache.series += new_series;
    Ok((points, data.len() as u64))
}

/// The id of series (group, field), created when it does not exist.
fn series_id(conn: &Connection, group: &CachedGroup, field: &str) -> Result<i64, StoreError> {
    let mut select = conn.prepare_cached(SELECT_SERIES_ID)?;
    let found = select
        .query_row(
            params![group.measurement.as_str(), group.tags_json, field],
            |row| row.get(0),
        )
        .optional()?;
    if let Some(id) = found {
        return Ok(id);
    }
    let mut insert = conn.prepare_cached(INSERT_SERIES)?;
    insert.execute(params![
        group.measurement.as_str(),
        group.tags_json,
        field,
        group.device
    ])?;
    Ok(conn.last_insert_rowid())
}

/// See [`LocalStore::delete_older_than`]; `recent` is empty.
fn delete_older_than(conn: &mut Connection, ts_ns: i64) -> Result<u64, StoreError> {
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

/// Writes points of series `id` (in time order, none in an existing chunk's span) as chunks.
fn write_chunks<'v>(
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
fn compact_recent(
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
fn keep_last_writes<T>(series: &mut [(i64, T)]) -> usize {
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
struct Tails {
    by_id: Vec<Tail>,
}

/// A series' newest chunks: the last timestamp they hold, and the rows and points of those
/// that are not full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tail {
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

    fn forget(&mut self, id: i64) {
        if let Some(tail) = usize::try_from(id).ok().and_then(|i| self.by_id.get_mut(i)) {
            *tail = Tail::UNKNOWN;
        }
    }
}

/// The statements a compaction runs for every series, prepared once, and the buffers it
/// reuses from one series to the next.
struct ChunkStatements<'c> {
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
struct Writer<'a, 'c> {
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
fn for_each_recent_raw(
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

/// Calls `f` with every point of `recent`, in the order written.
fn for_each_recent(
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
fn blob<'r>(row: &'r rusqlite::Row<'_>, i: usize) -> Result<&'r [u8], StoreError> {
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
fn visit_points(
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
fn latest_stored(
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
struct Snapshot<'c> {
    tx: rusqlite::Transaction<'c>,
    series: Vec<SeriesRow>,
    /// The points of `recent` by series and timestamp.
    recent: HashMap<i64, BTreeMap<i64, FieldValue>>,
    /// The time range, closed.
    lo: i64,
    hi: i64,
}

/// A series as `query` and `latest` need it.
struct SeriesRow {
    id: i64,
    measurement: String,
    tags: Vec<(String, String)>,
    field: String,
}

/// The series matching `q`'s measurement, tags, field and device, ordered by measurement,
/// tags (as a list of pairs) and field.
fn matching_series(conn: &Connection, q: &Query) -> Result<Vec<SeriesRow>, StoreError> {
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
fn recent_points(
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
fn ts_bounds(q: &Query) -> Option<(i64, i64)> {
    let lo = q.from_ns.unwrap_or(i64::MIN);
    let hi = match q.to_ns {
        Some(to) => to.checked_sub(1)?,
        None => i64::MAX,
    };
    (lo <= hi).then_some((lo, hi))
}

/// The canonical form of a tag set (a JSON object, keys sorted, the last value of a repeated
/// key) and its device tag.
fn canonical_tags(
    tags: &[(CompactString, CompactString)],
) -> Result<(String, Option<String>), StoreError> {
    let map: BTreeMap<&str, &str> = tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let json = serde_json::to_string(&map).map_err(StoreError::EncodeTags)?;
    Ok((json, map.get(DEVICE_TAG).map(|d| (*d).to_owned())))
}

fn parse_tags(json: &str) -> Result<Vec<(String, String)>, StoreError> {
    let map: BTreeMap<String, String> = serde_json::from_str(json)
        .map_err(|e| StoreError::Corrupt(format!("tags {json:?}: {e}")))?;
    Ok(map.into_iter().collect())
}

/// Series ids by (measurement, tags) and field, so that inserting a known series neither
/// allocates nor asks SQLite.
#[derive(Debug, Default)]
struct SeriesCache {
    hasher: RandomState,
    /// Groups by the hash of (measurement, tags), held in the map itself (one cache miss
    /// fewer per reading than a bucket on the heap: with 30,000 series, that was most of
    /// the lookup's cost).
    groups: FastMap<u64, CachedGroup>,
    /// The groups whose hash is another group's (practically never).
    collided: Vec<CachedGroup>,
    /// How many series ids are cached.
    series: usize,
    /// An insert is under way or failed: ids it cached may belong to a rolled-back transaction.
    in_doubt: bool,
}

#[derive(Debug)]
struct CachedGroup {
    measurement: CompactString,
    tags: Vec<(CompactString, CompactString)>,
    tags_json: String,
    device: Option<String>,
    /// Series ids by field name, in the order the fields first came: a device sends its
    /// fields in the same order every time, so the field at index `i` of a reading is
    /// looked for at index `i` first (one comparison instead of a hash and a comparison).
    fields: Vec<(CompactString, i64)>,
}

impl CachedGroup {
    /// The entry of `r`'s measurement and tags, with no series yet.
    fn new(r: &Reading) -> Result<CachedGroup, StoreError> {
        let (tags_json, device) = canonical_tags(&r.tags)?;
        Ok(CachedGroup {
            measurement: r.measurement.clone(),
            tags: r.tags.clone(),
            tags_json,
            device,
            fields: Vec::new(),
        })
    }

    /// The cached series id of field `name`, the `i`th of its reading.
    fn field_id(&self, i: usize, name: &str) -> Option<i64> {
        match self.fields.get(i) {
            Some((n, id)) if n == name => Some(*id),
            _ => self
                .fields
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, id)| *id),
        }
    }
}

impl SeriesCache {
    fn clear(&mut self) {
        self.groups.clear();
        self.collided.clear();
        self.series = 0;
        self.in_doubt = false;
    }

    /// The cache entry of `r`'s measurement and tags, created empty when missing.
    fn group(&mut self, r: &Reading) -> Result<&mut CachedGroup, StoreError> {
        let hash = self
            .hasher
            .hash_one((r.measurement.as_str(), r.tags.as_slice()));
        self.group_hashed(hash, r)
    }

    /// [`SeriesCache::group`], given the hash of `r`'s measurement and tags.
    fn group_hashed(&mut self, hash: u64, r: &Reading) -> Result<&mut CachedGroup, StoreError> {
        let is_r = |g: &CachedGroup| g.measurement == r.measurement && g.tags == r.tags;
        match self.groups.entry(hash) {
            Entry::Occupied(e) if is_r(e.get()) => return Ok(e.into_mut()),
            Entry::Occupied(_) => {}
            Entry::Vacant(e) => return Ok(e.insert(CachedGroup::new(r)?)),
        }
        let i = match self.collided.iter().position(is_r) {
            Some(i) => i,
            None => {
                self.collided.push(CachedGroup::new(r)?);
                self.collided.len() - 1
            }
        };
        Ok(&mut self.collided[i])
    }
}

#[cfg(test)]
#[path = "fixtures/v2_fixture.rs"]
mod v2_fixture;

#[cfg(test)]
mod crash_tests;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    use tempfile::TempDir;

    const T0: i64 = 1_700_000_000_000_000_000;
    const SEC: i64 = 1_000_000_000;

    fn temp_store() -> (TempDir, LocalStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(&dir.path().join("store.db")).unwrap();
        (dir, store)
    }

    fn reading(measurement: &str, device: &str, ts: i64, fields: &[(&str, FieldValue)]) -> Reading {
        let mut r = Reading::new(measurement, ts);
        r.set_tag(DEVICE_TAG, device);
        r.fields = fields
            .iter()
            .map(|(n, v)| ((*n).into(), v.clone()))
            .collect();
        r
    }

    fn point(r: &Reading, field: &str) -> Point {
        Point {
            measurement: r.measurement.to_string(),
            tags: r
                .tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            field: field.to_owned(),
            timestamp: r.timestamp,
            value: r.field(field).unwrap().clone(),
        }
    }

    fn all(store: &LocalStore) -> Vec<Point> {
        store.query(&Query::default()).unwrap()
    }

    /// Equality that tells -0.0 from 0.0 and NaN from NaN.
    fn same_value(a: &FieldValue, b: &FieldValue) -> bool {
        match (a, b) {
            (FieldValue::Float(a), FieldValue::Float(b)) => {
                a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
            }
            _ => a == b,
        }
    }

    fn assert_same_points(got: &[Point], want: &[Point]) {
        assert_eq!(got.len(), want.len(), "got {got:#?}\nwant {want:#?}");
        for (g, w) in got.iter().zip(want) {
            assert!(
                g.measurement == w.measurement
                    && g.tags == w.tags
                    && g.field == w.field
                    && g.timestamp == w.timestamp
                    && same_value(&g.value, &w.value),
                "got {g:?}\nwant {w:?}"
            );
        }
    }

    fn count(store: &LocalStore) -> usize {
        all(store).len()
    }

    #[test]
    fn every_type_reads_back_exactly() {
        let (_dir, mut store) = temp_store();
        let values = [
            FieldValue::Float(21.5),
            FieldValue::Float(-0.0),
            FieldValue::Float(f64::MIN_POSITIVE),
            FieldValue::Float(f64::MAX),
            FieldValue::Float(f64::INFINITY),
            FieldValue::Float(f64::NEG_INFINITY),
            FieldValue::Float(f64::NAN),
            FieldValue::Integer(i64::MIN),
            FieldValue::Integer(i64::MAX),
            FieldValue::Integer(0),
            FieldValue::Unsigned(u64::MAX),
            FieldValue::Unsigned(1 << 63),
            FieldValue::Unsigned(0),
            FieldValue::Boolean(true),
            FieldValue::Boolean(false),
            FieldValue::String(
                "say \"hi\", then\nbye\r\n\t\u{1b}[0m ✓ '; DROP TABLE points; --".into(),
            ),
            FieldValue::String("".into()),
            FieldValue::String("123".into()),
        ];
        let fields: Vec<(CompactString, FieldValue)> = values
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("f{i:02}").into(), v.clone()))
            .collect();
        let mut r = Reading::new("all \"types\", m=1", i64::MIN);
        r.set_tag(DEVICE_TAG, "dev,1=\"x\"\n");
        r.set_tag("a.b", "ü \\ '");
        r.set_tag("\"quoted\" key", "");
        r.fields = fields;
        let mut late = r.clone();
        late.timestamp = i64::MAX;
        store.insert(&[r.clone(), late.clone()]).unwrap();

        let mut want = Vec::new();
        for (name, _) in &r.fields {
            want.push(point(&r, name));
            want.push(point(&late, name));
        }
        assert_same_points(&all(&store), &want);

        // And through a fresh read-only connection, from the file.
        let path = store.path().to_path_buf();
        drop(store);
        let reader = LocalStore::open_read_only(&path).unwrap();
        assert_same_points(&all(&reader), &want);
        let nan = reader
            .query(&Query {
                field: Some("f06".into()),
                ..Query::default()
            })
            .unwrap();
        assert!(matches!(nan[0].value, FieldValue::Float(v) if v.is_nan()));
    }

    #[test]
    fn writing_the_same_points_again_overwrites_them() {
        let (_dir, mut store) = temp_store();
        let batch: Vec<Reading> = (0..100)
            .map(|i| {
                reading(
                    "env",
                    &format!("dev-{}", i % 3),
                    T0 + i * SEC,
                    &[
                        ("t", FieldValue::Float(i as f64)),
                        ("n", FieldValue::Integer(i)),
                    ],
                )
            })
            .collect();
        store.insert(&batch).unwrap();
        let first = all(&store);
        let summary = store.summary().unwrap();
        assert_eq!(first.len(), 200);
        store.insert(&batch).unwrap();
        store.insert(&batch[10..20]).unwrap();
        assert_eq!(all(&store), first);
        assert_eq!(store.summary().unwrap(), summary);

        // Through a new connection (cold cache) too.
        let path = store.path().to_path_buf();
        drop(store);
        let mut store = LocalStore::open(&path).unwrap();
        store.insert(&batch).unwrap();
        assert_eq!(all(&store), first);

        // A new value for an existing point replaces the old one.
        let changed = reading("env", "dev-0", T0, &[("t", FieldValue::Float(-1.0))]);
        store.insert(&[changed]).unwrap();
        let q = Query {
            field: Some("t".into()),
            device: Some("dev-0".into()),
            to_ns: Some(T0 + 1),
            ..Query::default()
        };
        let got = store.query(&q).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].value, FieldValue::Float(-1.0));
        assert_eq!(count(&store), 200);
    }

    #[test]
    fn a_field_that_changes_type_stays_one_series_and_each_point_keeps_its_type() {
        let (_dir, mut store) = temp_store();
        let r1 = reading("env", "d", T0, &[("t", FieldValue::Integer(21))]);
        let r2 = reading("env", "d", T0 + SEC, &[("t", FieldValue::Float(21.5))]);
        store.insert(&[r1.clone(), r2.clone()]).unwrap();
        assert_eq!(all(&store), vec![point(&r1, "t"), point(&r2, "t")]);
        // Redelivering the first point with another type overwrites it: same identity.
        let r1b = reading("env", "d", T0, &[("t", FieldValue::String("n/a".into()))]);
        store.insert(std::slice::from_ref(&r1b)).unwrap();
        assert_eq!(all(&store), vec![point(&r1b, "t"), point(&r2, "t")]);
        let summary = store.summary().unwrap();
        assert_eq!(summary.len(), 1);
        assert_eq!((summary[0].series, summary[0].points), (1, 2));
        assert_eq!(
            store.latest(&Query::default()).unwrap(),
            vec![point(&r2, "t")]
        );
    }

    /// Two measurements, three devices on two sites, points at T0 + 0..4 s.
    fn dataset() -> Vec<Reading> {
        let mut out = Vec::new();
        for s in 0..4 {
            for (device, site) in [("dev-1", "a"), ("dev-2", "a"), ("dev-3", "b")] {
                let mut r = reading(
                    "env",
                    device,
                    T0 + s * SEC,
                    &[
                        ("temperature", FieldValue::Float(20.0 + s as f64)),
                        ("humidity", FieldValue::Integer(40 + s)),
                    ],
                );
                r.set_tag("site", site);
                out.push(r);
                let mut p = reading(
                    "power",
                    device,
                    T0 + s * SEC,
                    &[("watts", FieldValue::Unsigned(100 + s as u64))],
                );
                p.set_tag("site", site);
                out.push(p);
            }
        }
        out
    }

    /// What `q` must return: the dataset's points matching `keep`, in query order.
    fn expected(data: &[Reading], keep: impl Fn(&Point) -> bool) -> Vec<Point> {
        let mut out: Vec<Point> = data
            .iter()
            .flat_map(|r| r.fields.iter().map(|(f, _)| point(r, f)))
            .filter(|p| keep(p))
            .collect();
        out.sort_by(|a, b| {
            (&a.measurement, &a.tags, &a.field, a.timestamp).cmp(&(
                &b.measurement,
                &b.tags,
                &b.field,
                b.timestamp,
            ))
        });
        out
    }

    fn has_tag(p: &Point, k: &str, v: &str) -> bool {
        p.tags.iter().any(|(tk, tv)| tk == k && tv == v)
    }

    #[test]
    fn queries_filter_and_order() {
        let (_dir, mut store) = temp_store();
        let mut data = dataset();
        // Insert in a scrambled order: the result order must not depend on it.
        data.reverse();
        data.swap(0, 7);
        store.insert(&data).unwrap();
        let data = data;

        assert_eq!(all(&store), expected(&data, |_| true));
        assert_eq!(all(&store).len(), 36);

        type Case = (Query, Box<dyn Fn(&Point) -> bool>);
        let cases: Vec<Case> = vec![
            (
                Query {
                    measurement: Some("power".into()),
                    ..Query::default()
                },
                Box::new(|p| p.measurement == "power"),
            ),
            (
                Query {
                    field: Some("humidity".into()),
                    ..Query::default()
                },
                Box::new(|p| p.field == "humidity"),
            ),
            (
                Query {
                    device: Some("dev-2".into()),
                    ..Query::default()
                },
                Box::new(|p| has_tag(p, DEVICE_TAG, "dev-2")),
            ),
            (
                Query {
                    tags: vec![("site".into(), "a".into())],
                    ..Query::default()
                },
                Box::new(|p| has_tag(p, "site", "a")),
            ),
            (
                Query {
                    tags: vec![
                        ("site".into(), "a".into()),
                        (DEVICE_TAG.into(), "dev-1".into()),
                    ],
                    ..Query::default()
                },
                Box::new(|p| has_tag(p, "site", "a") && has_tag(p, DEVICE_TAG, "dev-1")),
            ),
            (
                Query {
                    tags: vec![
                        ("site".into(), "a".into()),
                        (DEVICE_TAG.into(), "dev-3".into()),
                    ],
                    ..Query::default()
                },
                Box::new(|_| false),
            ),
            (
                Query {
                    tags: vec![("nosuch".into(), "a".into())],
                    ..Query::default()
                },
                Box::new(|_| false),
            ),
            (
                Query {
                    measurement: Some("nosuch".into()),
                    ..Query::default()
                },
                Box::new(|_| false),
            ),
            (
                // Half-open: from is included, to is not.
                Query {
                    from_ns: Some(T0 + SEC),
                    to_ns: Some(T0 + 3 * SEC),
                    ..Query::default()
                },
                Box::new(|p| p.timestamp == T0 + SEC || p.timestamp == T0 + 2 * SEC),
            ),
            (
                Query {
                    from_ns: Some(T0 + 3 * SEC),
                    ..Query::default()
                },
                Box::new(|p| p.timestamp == T0 + 3 * SEC),
            ),
            (
                Query {
                    to_ns: Some(T0 + 1),
                    ..Query::default()
                },
                Box::new(|p| p.timestamp == T0),
            ),
            (
                Query {
                    from_ns: Some(T0 + SEC),
                    to_ns: Some(T0 + SEC),
                    ..Query::default()
                },
                Box::new(|_| false),
            ),
            (
                Query {
                    to_ns: Some(i64::MIN),
                    ..Query::default()
                },
                Box::new(|_| false),
            ),
            (
                Query {
                    measurement: Some("env".into()),
                    field: Some("temperature".into()),
                    device: Some("dev-3".into()),
                    tags: vec![("site".into(), "b".into())],
                    from_ns: Some(T0 + 2 * SEC),
                    to_ns: None,
                    limit: None,
                },
                Box::new(|p| {
                    p.measurement == "env"
                        && p.field == "temperature"
                        && has_tag(p, DEVICE_TAG, "dev-3")
                        && p.timestamp >= T0 + 2 * SEC
                }),
            ),
        ];
        for (q, keep) in &cases {
            assert_eq!(store.query(q).unwrap(), expected(&data, keep), "{q:?}");
        }

        // Limit: the first N in query order, across series.
        let everything = expected(&data, |_| true);
        for limit in [0, 1, 3, 4, 5, 36, 100] {
            let q = Query {
                limit: Some(limit),
                ..Query::default()
            };
            let want: Vec<Point> = everything.iter().take(limit).cloned().collect();
            assert_eq!(store.query(&q).unwrap(), want, "limit {limit}");
        }
    }

    #[test]
    fn latest_is_the_last_point_of_each_matching_series() {
        let (_dir, mut store) = temp_store();
        let data = dataset();
        store.insert(&data).unwrap();
        let last_of_each = |keep: &dyn Fn(&Point) -> bool, before: i64| -> Vec<Point> {
            let mut out: Vec<Point> = Vec::new();
            for p in expected(&data, |p| keep(p) && p.timestamp < before) {
                match out.last_mut() {
                    Some(l)
                        if (&l.measurement, &l.tags, &l.field)
                            == (&p.measurement, &p.tags, &p.field) =>
                    {
                        *l = p
                    }
                    _ => out.push(p),
                }
            }
            out
        };
        let q = Query {
            measurement: Some("env".into()),
            field: Some("temperature".into()),
            ..Query::default()
        };
        let got = store.latest(&q).unwrap();
        assert_eq!(got.len(), 3);
        assert!(got
            .iter()
            .all(|p| p.timestamp == T0 + 3 * SEC && p.value == FieldValue::Float(23.0)));
        assert_eq!(
            got,
            last_of_each(
                &|p| p.measurement == "env" && p.field == "temperature",
                i64::MAX
            )
        );

        assert_eq!(
            store.latest(&Query::default()).unwrap(),
            last_of_each(&|_| true, i64::MAX)
        );
        let before = Query {
            to_ns: Some(T0 + 2 * SEC),
            ..Query::default()
        };
        assert_eq!(
            store.latest(&before).unwrap(),
            last_of_each(&|_| true, T0 + 2 * SEC)
        );
        let limited = Query {
            limit: Some(2),
            ..Query::default()
        };
        assert_eq!(
            store.latest(&limited).unwrap(),
            last_of_each(&|_| true, i64::MAX)[..2].to_vec()
        );
        let none = Query {
            to_ns: Some(T0),
            ..Query::default()
        };
        assert_eq!(store.latest(&none).unwrap(), vec![]);
    }

    #[test]
    fn summary_counts_per_device() {
        let (_dir, mut store) = temp_store();
        assert_eq!(store.summary().unwrap(), vec![]);
        store.insert(&dataset()).unwrap();
        let mut anonymous = Reading::new("env", 5);
        anonymous.fields = vec![("x".into(), FieldValue::Boolean(true))];
        store.insert(&[anonymous]).unwrap();
        let device = |d: &str| DeviceSummary {
            device: Some(d.into()),
            series: 3,
            points: 12,
            first_ns: T0,
            last_ns: T0 + 3 * SEC,
            bytes: 0,
        };
        // Not compacted yet: no chunk, no bytes.
        let want = vec![
            DeviceSummary {
                device: None,
                series: 1,
                points: 1,
                first_ns: 5,
                last_ns: 5,
                bytes: 0,
            },
            device("dev-1"),
            device("dev-2"),
            device("dev-3"),
        ];
        assert_eq!(store.summary().unwrap(), want);
        // Compacted: the same, and the bytes of each device's chunks.
        store.compact().unwrap();
        let got = store.summary().unwrap();
        for (g, w) in got.iter().zip(&want) {
            let bytes: u64 = store
                .conn
                .query_row(
                    "SELECT SUM(length(data)) FROM chunks JOIN series ON series.id = series_id
                     WHERE device IS ?1",
                    [&w.device],
                    |row| row.get(0),
                )
                .unwrap();
            assert!(bytes > 0);
            assert_eq!(g, &DeviceSummary { bytes, ..w.clone() });
        }
        let size = store.size().unwrap();
        assert_eq!((size.series, size.points), (10, 37));
        assert!(size.file_bytes > 0 && size.used_bytes() <= size.file_bytes);
    }

    #[test]
    fn retention_deletes_exactly_the_points_older_than_the_cutoff() {
        let (_dir, mut store) = temp_store();
        // Enough points in one series to take several chunks, and series that are wholly old,
        // wholly new, or empty after deletion.
        let n = (2 * DELETE_CHUNKS * CHUNK_POINTS) as i64 + 345;
        let mut batch: Vec<Reading> = (0..n)
            .map(|i| reading("m", "busy", i, &[("v", FieldValue::Integer(i))]))
            .collect();
        for i in 0..10 {
            batch.push(reading("m", "old", i, &[("v", FieldValue::Integer(i))]));
            batch.push(reading("m", "new", n + i, &[("v", FieldValue::Integer(i))]));
        }
        store.insert(&batch).unwrap();
        store.compact().unwrap();
        // Some old points only in `recent`, some in both (rewritten), some only in chunks:
        // each counts once.
        let rewrites: Vec<Reading> = (0..5)
            .map(|i| reading("m", "busy", i * 3, &[("v", FieldValue::Integer(-i))]))
            .chain((0..3).map(|i| reading("m", "late", i, &[("v", FieldValue::Integer(i))])))
            .collect();
        store.insert(&rewrites).unwrap();
        store.insert(&rewrites[..2]).unwrap();
        // Across a chunk.
        let cutoff = (DELETE_CHUNKS * CHUNK_POINTS) as i64 + 17;
        let before = all(&store);
        assert_eq!(
            store.delete_older_than(cutoff).unwrap(),
            (cutoff + 10 + 3) as u64
        );
        let want: Vec<Point> = before
            .into_iter()
            .filter(|p| p.timestamp >= cutoff)
            .collect();
        assert_eq!(all(&store), want);
        let devices: Vec<_> = store
            .summary()
            .unwrap()
            .into_iter()
            .map(|s| s.device)
            .collect();
        assert_eq!(
            devices,
            vec![Some("busy".to_owned()), Some("new".to_owned())]
        );
        assert_eq!(store.delete_older_than(cutoff).unwrap(), 0);

        // The deleted series comes back when written again (its cached id is gone).
        let again = reading("m", "old", n, &[("v", FieldValue::Integer(7))]);
        store.insert(std::slice::from_ref(&again)).unwrap();
        let q = Query {
            device: Some("old".into()),
            ..Query::default()
        };
        assert_eq!(store.query(&q).unwrap(), vec![point(&again, "v")]);
    }

    #[test]
    fn retention_by_size_holds_the_bound_under_a_long_insert_and_keeps_the_newest() {
        let (_dir, mut store) = temp_store();
        let max_bytes: u64 = 1 << 20;
        // As the sink sets it.
        store.limit_recent(max_bytes / 16);
        let mut rng = simulator::model::SplitMix64::new(3);
        let (devices, batches, per_batch) = (20i64, 150i64, 1000i64);
        let mut largest = 0;
        let mut dropped = 0;
        for b in 0..batches {
            // Full-precision noise: about 7 bytes a value, 3 times the bound in all.
            let batch: Vec<Reading> = (0..per_batch)
                .map(|i| {
                    let n = b * per_batch + i;
                    reading(
                        "env",
                        &format!("dev-{}", n % devices),
                        T0 + n / devices * SEC,
                        &[
                            ("t", FieldValue::Float(rng.noise(1.0))),
                            ("h", FieldValue::Float(rng.noise(1.0))),
                        ],
                    )
                })
                .collect();
            store.insert(&batch).unwrap();
            let d = store.drop_oldest(max_bytes).unwrap();
            dropped += d.points;
            let size = store.size().unwrap();
            largest = largest.max(size.file_bytes);
            assert!(
                size.file_bytes <= max_bytes,
                "batch {b}: file {} bytes",
                size.file_bytes
            );
        }
        let total = (batches * per_batch * 2) as u64;
        assert!(dropped > total / 2, "dropped {dropped} of {total}");
        // What stays is each series' newest points, without a gap, and what was dropped
        // is gone for every series up to about the same time.
        let points = all(&store);
        let kept = points.len() as u64 + store.recent_points;
        assert_eq!(kept + dropped, total, "every point either kept or dropped");
        let mut by_series: BTreeMap<(String, String), Vec<i64>> = BTreeMap::new();
        for p in &points {
            by_series
                .entry((p.tags[0].1.clone(), p.field.clone()))
                .or_default()
                .push(p.timestamp);
        }
        assert_eq!(by_series.len(), 40);
        let last = T0 + (batches * per_batch - 1) / devices * SEC;
        for (series, ts) in &by_series {
            assert_eq!(*ts.last().unwrap(), last, "{series:?}");
            assert!(
                ts.windows(2).all(|w| w[1] - w[0] == SEC),
                "{series:?} has a gap"
            );
        }
        // The bound is used, not wasted: the points kept take most of it.
        let size = store.size().unwrap();
        println!("largest file {largest}, now {size:?}, kept {kept} of {total}");
        assert!(size.used_bytes() > max_bytes / 2);
    }

    #[test]
    fn compaction_changes_no_result_and_the_last_write_wins() {
        let (_dir, mut store) = temp_store();
        let data = dataset();
        let rewrite = |r: &Reading, v: i64| {
            let mut r = r.clone();
            for (_, value) in &mut r.fields {
                *value = FieldValue::Integer(v);
            }
            r
        };
        // Written, compacted, rewritten twice (both rewrites in `recent`).
        store.insert(&data).unwrap();
        store.compact().unwrap();
        store
            .insert(&[rewrite(&data[0], 1), rewrite(&data[5], 1)])
            .unwrap();
        store.insert(&[rewrite(&data[0], 2)]).unwrap();
        // And a point written twice in one batch: the later one wins.
        store
            .insert(&[rewrite(&data[9], 3), rewrite(&data[9], 4)])
            .unwrap();

        let mut want_data = data.clone();
        want_data[0] = rewrite(&data[0], 2);
        want_data[5] = rewrite(&data[5], 1);
        want_data[9] = rewrite(&data[9], 4);
        let want = expected(&want_data, |_| true);
        let queries = [
            Query::default(),
            Query {
                device: Some("dev-1".into()),
                ..Query::default()
            },
            Query {
                limit: Some(5),
                ..Query::default()
            },
            Query {
                from_ns: Some(T0),
                to_ns: Some(T0 + SEC),
                ..Query::default()
            },
        ];
        let before: Vec<_> = queries.iter().map(|q| store.query(q).unwrap()).collect();
        let latest_before = store.latest(&Query::default()).unwrap();
        let summary_before = store.summary().unwrap();
        assert_eq!(before[0], want);
        assert_eq!(summary_before.iter().map(|s| s.points).sum::<u64>(), 36);
        assert_eq!(
            store.compact().unwrap(),
            7,
            "rows of `recent`, rewrites included"
        );
        assert_eq!(store.compact().unwrap(), 0);
        let after: Vec<_> = queries.iter().map(|q| store.query(q).unwrap()).collect();
        assert_eq!(after, before);
        assert_eq!(store.latest(&Query::default()).unwrap(), latest_before);
        // The same but for the bytes of the chunks (rewritten).
        let no_bytes = |s: Vec<DeviceSummary>| -> Vec<DeviceSummary> {
            s.into_iter()
                .map(|d| DeviceSummary { bytes: 0, ..d })
                .collect()
        };
        assert_eq!(no_bytes(store.summary().unwrap()), no_bytes(summary_before));
    }

    /// Every series' chunks in time order: `(points, full)` of each, after checking that
    /// each decodes to its row's count and span, and that they do not overlap.
    pub(super) fn checked_chunks(store: &LocalStore) -> BTreeMap<i64, Vec<(usize, bool)>> {
        let mut out: BTreeMap<i64, Vec<(usize, bool)>> = BTreeMap::new();
        let mut stmt = store
            .conn
            .prepare(
                "SELECT series_id, first_ts, last_ts, points, data, codec FROM chunks
                 ORDER BY series_id, last_ts",
            )
            .unwrap();
        let mut rows = stmt.query([]).unwrap();
        let mut previous: Option<(i64, i64)> = None;
        while let Some(row) = rows.next().unwrap() {
            let (id, first, last, n): (i64, i64, i64, i64) = (
                row.get(0).unwrap(),
                row.get(1).unwrap(),
                row.get(2).unwrap(),
                row.get(3).unwrap(),
            );
            let data: Vec<u8> = row.get(4).unwrap();
            let codec = Codec::from_i64(row.get(5).unwrap()).unwrap();
            let points: Vec<_> = ChunkReader::new(codec, &data, n)
                .collect::<Result<_, _>>()
                .unwrap();
            let raw_bytes: usize = points
                .iter()
                .map(|(_, v)| {
                    let mut b = Vec::new();
                    v.encode(&mut b);
                    b.len()
                })
                .sum();
            assert_eq!(points.len() as i64, n);
            assert_eq!((points[0].0, points[points.len() - 1].0), (first, last));
            if let Some((before_id, before_last)) = previous {
                assert!(before_id != id || before_last < first, "chunks overlap");
            }
            previous = Some((id, last));
            out.entry(id)
                .or_default()
                .push((points.len(), is_full(points.len(), raw_bytes)));
        }
        out
    }

    /// After checking the chunks: every point of `store` is the model's last write of it,
    /// and the store holds no other.
    fn holds_the_model(
        store: &LocalStore,
        model: BTreeMap<(String, i64), i64>,
    ) -> Result<(), proptest::test_runner::TestCaseError> {
        checked_chunks(store);
        let got: Vec<(String, i64, FieldValue)> = all(store)
            .into_iter()
            .map(|p| (p.tags[0].1.to_string(), p.timestamp, p.value))
            .collect();
        let want: Vec<(String, i64, FieldValue)> = model
            .into_iter()
            .map(|((d, ts), v)| (d, ts, FieldValue::Integer(v)))
            .collect();
        proptest::prop_assert_eq!(got, want);
        Ok(())
    }

    #[test]
    fn appending_fills_chunks_and_keeps_the_tail_short() {
        let (_dir, mut store) = temp_store();
        // A compaction after every batch of 7 points: the tail grows by a row each time.
        let mut want = Vec::new();
        for b in 0..600i64 {
            if b == 300 {
                // A new writer knows no tail: it reads it from the chunks.
                let path = store.path().to_path_buf();
                drop(store);
                store = LocalStore::open(&path).unwrap();
            }
            let batch: Vec<Reading> = (0..7)
                .map(|i| {
                    reading(
                        "m",
                        "d",
                        T0 + (b * 7 + i) * SEC,
                        &[("v", FieldValue::Integer(b))],
                    )
                })
                .collect();
            want.extend(batch.iter().map(|r| point(r, "v")));
            store.insert(&batch).unwrap();
            store.compact().unwrap();
            let chunks = &checked_chunks(&store)[&1];
            let tail = chunks.iter().rev().take_while(|(_, full)| !full).count();
            assert!(tail <= usize::from(TAIL_ROWS), "{tail} rows in the tail");
            assert!(chunks[..chunks.len() - tail]
                .iter()
                .all(|c| c.0 == CHUNK_POINTS));
        }
        assert_eq!(all(&store), want);
        let chunks = &checked_chunks(&store)[&1];
        assert_eq!(chunks.iter().filter(|c| c.1).count(), 4200 / CHUNK_POINTS);
    }

    #[test]
    fn settling_merges_each_tail_into_one_row_and_changes_no_result() {
        let (_dir, mut store) = temp_store();
        // Three series, a compaction after every 3 points of each: tails of up to 4 rows.
        let mut want = Vec::new();
        for b in 0..10i64 {
            let batch: Vec<Reading> = (0..3)
                .flat_map(|i| {
                    ["a", "b", "c"].map(|d| {
                        reading(
                            "m",
                            d,
                            T0 + (b * 3 + i) * SEC,
                            &[("v", FieldValue::Integer(b))],
                        )
                    })
                })
                .collect();
            want.extend(batch.iter().map(|r| point(r, "v")));
            store.insert(&batch).unwrap();
            store.compact().unwrap();
        }
        // And some not compacted yet.
        let late = reading("m", "a", T0 + 100 * SEC, &[("v", FieldValue::Float(0.5))]);
        store.insert(std::slice::from_ref(&late)).unwrap();
        want.push(point(&late, "v"));
        want.sort_by(|a, b| (&a.tags, a.timestamp).cmp(&(&b.tags, b.timestamp)));
        assert!(checked_chunks(&store).values().all(|c| c.len() > 1));
        assert_eq!(store.settle().unwrap(), 3);
        assert_eq!(store.recent_points, 0);
        let chunks = checked_chunks(&store);
        assert!(chunks.values().all(|c| c.len() == 1), "{chunks:?}");
        assert_eq!(all(&store), want);
        // Settled already: nothing to do.
        assert_eq!(store.settle().unwrap(), 0);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Writes that mostly append (a few points per series between compactions, as a
        /// collector writes them), with late and repeated points among them, compacted at
        /// any points, by writers that come and go: the chunks hold the last write of every
        /// point, and never overlap.
        #[test]
        fn appended_chunks_hold_the_last_write_of_every_point(
            steps in proptest::collection::vec(
                (proptest::collection::vec((0..3usize, 0..40i64, -3000..0i64, proptest::prelude::any::<i8>()), 1..40),
                 0..4u8),
                1..60,
            )
        ) {
            let (dir, mut store) = temp_store();
            let path = dir.path().join("store.db");
            let mut now = [0i64; 3];
            let mut model: BTreeMap<(String, i64), i64> = BTreeMap::new();
            for (batch, then) in steps {
                // Each point advances its device's clock by 0..40, or is late (0..3000 back)
                // when the step is 0.
                let readings: Vec<Reading> = batch
                    .iter()
                    .map(|&(d, step, late, v)| {
                        let ts = if step == 0 { (now[d] + late).max(0) } else { now[d] + step };
                        now[d] = now[d].max(ts);
                        reading("m", &format!("d{d}"), ts, &[("v", FieldValue::Integer(v.into()))])
                    })
                    .collect();
                store.insert(&readings).unwrap();
                for r in &readings {
                    let Some(FieldValue::Integer(v)) = r.field("v") else { unreachable!() };
                    model.insert((r.tags[0].1.to_string(), r.timestamp), *v);
                }
                match then {
                    0 | 1 => { store.compact().unwrap(); }
                    2 => {
                        drop(store);
                        store = LocalStore::open(&path).unwrap();
                    }
                    _ => {}
                }
            }
            store.compact().unwrap();
            holds_the_model(&store, model)?;
        }

        /// Any sequence of writes (late, repeated, overlapping), compacted at any points,
        /// reads back as the last write of each point: the chunks never lose, duplicate or
        /// misorder a point.
        #[test]
        fn chunks_hold_the_last_write_of_every_point(
            batches in proptest::collection::vec(
                (proptest::collection::vec((0..3usize, 0..1500i64, proptest::prelude::any::<i64>()), 1..300),
                 proptest::prelude::any::<bool>()),
                1..12,
            )
        ) {
            let (_dir, mut store) = temp_store();
            store.compact_points = 400;
            store.part_bytes = 2_000;
            let mut model: BTreeMap<(String, i64), i64> = BTreeMap::new();
            for (batch, compact) in batches {
                let readings: Vec<Reading> = batch
                    .iter()
                    .map(|(d, ts, v)| reading("m", &format!("d{d}"), *ts, &[("v", FieldValue::Integer(*v))]))
                    .collect();
                store.insert(&readings).unwrap();
                for (d, ts, v) in batch {
                    model.insert((format!("d{d}"), ts), v);
                }
                if compact {
                    store.compact().unwrap();
                }
            }
            holds_the_model(&store, model)?;
        }
    }

    #[test]
    fn inserts_compact_on_their_own() {
        let (_dir, mut store) = temp_store();
        store.compact_points = 10;
        store.compact_per_series = 0;
        let batch: Vec<Reading> = (0..4)
            .map(|i| {
                reading(
                    "m",
                    "d",
                    i,
                    &[("a", FieldValue::Integer(i)), ("b", FieldValue::Integer(i))],
                )
            })
            .collect();
        store.insert(&batch).unwrap();
        assert_eq!(store.recent_points, 8);
        store.insert(&batch[..1]).unwrap();
        assert_eq!(store.recent_points, 0);
        let in_recent: i64 = store
            .conn
            .query_row("SELECT COUNT(*) FROM recent", [], |row| row.get(0))
            .unwrap();
        assert_eq!(in_recent, 0);
        assert_eq!(count(&store), 8);
        // A reopened store counts what `recent` holds.
        store.insert(&batch[..2]).unwrap();
        let path = store.path().to_path_buf();
        drop(store);
        assert_eq!(LocalStore::open(&path).unwrap().recent_points, 4);
    }

    #[test]
    fn a_failed_insert_stores_nothing_and_later_inserts_work() {
        let (_dir, mut store) = temp_store();
        let other = Connection::open(store.path()).unwrap();
        other
            .execute_batch(
                "CREATE TRIGGER refuse BEFORE INSERT ON recent WHEN NEW.points = 2
                 BEGIN SELECT RAISE(ABORT, 'refused'); END;",
            )
            .unwrap();
        let good = reading("m", "d", 1, &[("v", FieldValue::Integer(1))]);
        let bad = reading("m", "d", 666, &[("v", FieldValue::Integer(2))]);
        let err = store.insert(&[good.clone(), bad]).unwrap_err();
        assert!(!err.is_retryable(), "{err:?}");
        assert_eq!(all(&store), vec![]);
        assert_eq!(store.summary().unwrap(), vec![]);
        // The series created by the rolled-back transaction must not linger in the cache.
        store.insert(std::slice::from_ref(&good)).unwrap();
        assert_eq!(all(&store), vec![point(&good, "v")]);
    }

    #[test]
    fn open_creates_directories_and_data_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/store.db");
        let r = reading("m", "d", 1, &[("v", FieldValue::Unsigned(u64::MAX))]);
        LocalStore::open(&path)
            .unwrap()
            .insert(std::slice::from_ref(&r))
            .unwrap();
        let store = LocalStore::open(&path).unwrap();
        assert_eq!(all(&store), vec![point(&r, "v")]);
        let mode: String = store
            .conn
            .pragma_query_value(None, "journal_mode", |row| row.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn a_reader_sees_what_the_writer_committed_while_it_is_open() {
        let (_dir, mut writer) = temp_store();
        let reader = LocalStore::open_read_only(writer.path()).unwrap();
        assert_eq!(all(&reader), vec![]);
        let r = reading("m", "d", 1, &[("v", FieldValue::Boolean(false))]);
        writer.insert(std::slice::from_ref(&r)).unwrap();
        assert_eq!(all(&reader), vec![point(&r, "v")]);
    }

    #[test]
    fn read_only_open_of_a_missing_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing.db");
        let err = LocalStore::open_read_only(&path).unwrap_err();
        assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!("local store {} does not exist", path.display())
        );
        assert!(!path.exists(), "a read-only open must not create the file");
    }

    #[test]
    fn a_read_only_store_refuses_writes() {
        let (_dir, writer) = temp_store();
        let mut reader = LocalStore::open_read_only(writer.path()).unwrap();
        let r = reading("m", "d", 1, &[("v", FieldValue::Integer(1))]);
        assert!(reader.insert(&[r]).is_err());
    }

    #[test]
    fn files_that_are_not_stores_are_refused() {
        let dir = tempfile::tempdir().unwrap();

        let text = dir.path().join("notes.txt");
        std::fs::write(&text, "this is not a database, not even close; ".repeat(50)).unwrap();
        for result in [LocalStore::open(&text), LocalStore::open_read_only(&text)] {
            let err = result.unwrap_err();
            assert!(matches!(err, StoreError::NotAStore { .. }), "{err:?}");
        }

        let other = dir.path().join("other.db");
        Connection::open(&other)
            .unwrap()
            .execute_batch("CREATE TABLE t (x)")
            .unwrap();
        for result in [LocalStore::open(&other), LocalStore::open_read_only(&other)] {
            let err = result.unwrap_err();
            assert!(matches!(err, StoreError::NotAStore { .. }), "{err:?}");
        }

        let empty = dir.path().join("empty.db");
        std::fs::write(&empty, "").unwrap();
        let err = LocalStore::open_read_only(&empty).unwrap_err();
        assert!(matches!(err, StoreError::NotAStore { .. }), "{err:?}");
        // A writer may use an empty file: it becomes a store.
        LocalStore::open(&empty).unwrap();
        LocalStore::open_read_only(&empty).unwrap();
    }

    #[test]
    fn an_unknown_schema_version_is_a_clear_error() {
        let (_dir, store) = temp_store();
        let path = store.path().to_path_buf();
        drop(store);
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 4)
            .unwrap();
        for result in [LocalStore::open(&path), LocalStore::open_read_only(&path)] {
            let err = result.unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "local store {} has schema version 4, written by a newer build: this build \
                     reads version 3 and older (run the newer build, or move the store away)",
                    path.display()
                )
            );
        }
    }

    /// Makes a store of schema version 1 holding `points` and `recent` rows, as that build
    /// wrote them.
    fn version_1_store(
        path: &Path,
        points: &[(i64, i64, FieldValue)],
        recent: &[(i64, i64, FieldValue)],
    ) {
        let conn = Connection::open(path).unwrap();
        conn.execute_batch(SERIES_TABLE).unwrap();
        conn.execute_batch(migrate::V1_POINT_TABLES).unwrap();
        conn.pragma_update(None, "application_id", APPLICATION_ID)
            .unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        for (i, device) in ["a", "b"].iter().enumerate() {
            conn.execute(
                "INSERT INTO series (id, measurement, tags, field, device) VALUES (?1, 'm', ?2, 'v', ?3)",
                params![i as i64 + 1, format!(r#"{{"device":"{device}"}}"#), device],
            )
            .unwrap();
        }
        for (table, rows) in [("points", points), ("recent", recent)] {
            for (series, ts, value) in rows {
                let (kind, value): (u8, rusqlite::types::Value) = match value {
                    FieldValue::Float(v) if v.is_nan() => (0, rusqlite::types::Value::Null),
                    FieldValue::Float(v) => (0, (*v).into()),
                    FieldValue::Integer(v) => (1, (*v).into()),
                    FieldValue::Unsigned(v) => (2, v.cast_signed().into()),
                    FieldValue::Boolean(v) => (3, i64::from(*v).into()),
                    FieldValue::String(v) => (4, v.to_string().into()),
                };
                conn.execute(
                    &format!(
                        "INSERT INTO {table} (series_id, ts, kind, value) VALUES (?1, ?2, ?3, ?4)"
                    ),
                    params![series, ts, kind, value],
                )
                .unwrap();
            }
        }
    }

    #[test]
    fn a_writer_upgrades_a_version_1_store_and_every_point_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        // Series 1 spans several chunks; series 2 holds every type. `recent` rewrites one
        // stored point twice (the later row wins) and adds one.
        let mut stored: Vec<(i64, i64, FieldValue)> = (0..1200)
            .map(|i| (1, T0 + i * SEC, FieldValue::Float(i as f64 / 8.0)))
            .collect();
        let values = [
            FieldValue::Float(f64::NAN),
            FieldValue::Float(-0.0),
            FieldValue::Integer(i64::MIN),
            FieldValue::Unsigned(u64::MAX),
            FieldValue::Boolean(true),
            FieldValue::String("naïve \"x\"".into()),
        ];
        stored.extend(
            values
                .iter()
                .enumerate()
                .map(|(i, v)| (2, T0 + i as i64, v.clone())),
        );
        let recent = vec![
            (1, T0 + 5 * SEC, FieldValue::Integer(1)),
            (1, T0 + 5 * SEC, FieldValue::Integer(2)),
            (2, T0 + 100, FieldValue::Boolean(false)),
        ];
        version_1_store(&path, &stored, &recent);

        let err = LocalStore::open_read_only(&path).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "local store {} has schema version 1: start the collector once to upgrade it to version 3",
                path.display()
            )
        );
        drop(LocalStore::open(&path).unwrap());
        let store = LocalStore::open_read_only(&path).unwrap();
        let version: i64 = store
            .conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .unwrap();
        assert_eq!(version, 3);
        let chunks: i64 = store
            .conn
            .query_row("SELECT COUNT(*) FROM chunks", [], |row| row.get(0))
            .unwrap();
        assert_eq!(chunks, 3 + 1);

        let mut want: BTreeMap<(i64, i64), FieldValue> = BTreeMap::new();
        for (series, ts, value) in stored.into_iter().chain(recent) {
            want.insert((series, ts), value);
        }
        let want: Vec<Point> = want
            .into_iter()
            .map(|((series, timestamp), value)| {
                let device = if series == 1 { "a" } else { "b" };
                Point {
                    measurement: "m".into(),
                    tags: vec![(DEVICE_TAG.into(), device.into())],
                    field: "v".into(),
                    timestamp,
                    value,
                }
            })
            .collect();
        assert_same_points(&all(&store), &want);
        // Opening it again changes nothing.
        drop(LocalStore::open(&path).unwrap());
        assert_same_points(&all(&store), &want);
    }

    /// The points the version 2 fixture holds: the last write of each.
    fn v2_fixture_points() -> Vec<Point> {
        type Key = (Vec<(String, String)>, String, i64);
        let mut want: BTreeMap<Key, FieldValue> = BTreeMap::new();
        for (batch, _) in v2_fixture::batches() {
            for r in &batch {
                for (name, _) in &r.fields {
                    let p = point(r, name);
                    want.insert((p.tags, p.field, p.timestamp), p.value);
                }
            }
        }
        want.into_iter()
            .map(|((tags, field, timestamp), value)| Point {
                measurement: "env".into(),
                tags,
                field,
                timestamp,
                value,
            })
            .collect()
    }

    /// A copy of the version 2 fixture (made by the build of 16f8a35) in a new directory.
    fn v2_fixture() -> (TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        std::fs::write(&path, include_bytes!("fixtures/store-v2.sqlite")).unwrap();
        (dir, path)
    }

    fn user_version(conn: &Connection) -> i64 {
        conn.pragma_query_value(None, "user_version", |row| row.get(0))
            .unwrap()
    }

    #[test]
    fn a_writer_upgrades_the_version_2_fixture_and_every_point_reads_back() {
        let (_dir, path) = v2_fixture();
        let err = LocalStore::open_read_only(&path).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "local store {} has schema version 2: start the collector once to upgrade it to version 3",
                path.display()
            )
        );
        let want = v2_fixture_points();
        drop(LocalStore::open(&path).unwrap());
        let store = LocalStore::open_read_only(&path).unwrap();
        assert_eq!(user_version(&store.conn), 3);
        let version2: i64 = store
            .conn
            .query_row("SELECT COUNT(*) FROM chunks WHERE codec = 0", [], |row| {
                row.get(0)
            })
            .unwrap();
        assert_eq!(version2, 0, "every chunk re-encoded");
        let pending: i64 = store
            .conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_schema WHERE name = 'upgrade_v2'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(pending, 0);
        checked_chunks(&store);
        assert_same_points(&all(&store), &want);
        assert_eq!(
            store
                .summary()
                .unwrap()
                .iter()
                .map(|d| d.points)
                .sum::<u64>(),
            want.len() as u64
        );

        // Written to and compacted again: the new point joins the upgraded chunks.
        let mut writer = LocalStore::open(&path).unwrap();
        let mut r = reading("env", "a", 1, &[("t", FieldValue::Float(1.25))]);
        r.set_tag("site", "s1");
        writer.insert(std::slice::from_ref(&r)).unwrap();
        writer.compact().unwrap();
        drop(writer);
        checked_chunks(&store);
        let mut want = want;
        let at = want.iter().position(|p| p.field == "t").unwrap();
        want.insert(at, point(&r, "t"));
        assert_same_points(&all(&store), &want);
    }

    #[test]
    fn series_whose_hashes_collide_keep_their_own_ids() {
        let mut cache = SeriesCache::default();
        let a = reading("env", "a", T0, &[("t", FieldValue::Float(1.0))]);
        let b = reading("env", "b", T0, &[("t", FieldValue::Float(1.0))]);
        let c = reading("env", "c", T0, &[("t", FieldValue::Float(1.0))]);
        for (r, id) in [(&a, 1), (&b, 2), (&c, 3)] {
            cache
                .group_hashed(7, r)
                .unwrap()
                .fields
                .push(("t".into(), id));
        }
        for (r, id) in [(&c, 3), (&a, 1), (&b, 2)] {
            let group = cache.group_hashed(7, r).unwrap();
            assert_eq!(group.tags, r.tags);
            assert_eq!(group.field_id(0, "t"), Some(id));
        }
        assert_eq!((cache.groups.len(), cache.collided.len()), (1, 2));
    }

    #[test]
    fn errors_are_classified() {
        let sqlite = |code| {
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(code),
                None,
            ))
        };
        assert!(sqlite(rusqlite::ffi::SQLITE_BUSY).is_retryable());
        assert!(sqlite(rusqlite::ffi::SQLITE_LOCKED).is_retryable());
        assert!(sqlite(rusqlite::ffi::SQLITE_IOERR).is_retryable());
        assert!(sqlite(rusqlite::ffi::SQLITE_FULL).is_retryable());
        assert!(!sqlite(rusqlite::ffi::SQLITE_TOOBIG).is_retryable());
        assert!(!sqlite(rusqlite::ffi::SQLITE_CONSTRAINT).is_retryable());
    }

    /// The CPU time this thread has used (Linux: `/proc/thread-self/schedstat`, in ns).
    fn thread_cpu() -> Duration {
        std::fs::read_to_string("/proc/thread-self/schedstat")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .map_or(Duration::ZERO, Duration::from_nanos)
    }

    /// Not a test of speed (nothing is asserted): a measurement, run with
    /// `cargo test --release -p telemetry-collector --lib insert_rate -- --ignored --nocapture`.
    /// 210,000 readings of 4 fields, in batches of 1,000, from 100, 1,000 and 10,000 devices
    /// (`INSERT_RATE_DEVICES=1000` for one of them). Prints the rate (wall time, fsyncs
    /// included) and the CPU time of the inserting thread per field value: over all batches,
    /// and over the second half alone (with 10,000 devices, the first half creates 40,000
    /// series and compacts them for the first time).
    #[test]
    #[ignore = "a measurement, not a test"]
    fn insert_rate() {
        let counts: Vec<i64> = match std::env::var("INSERT_RATE_DEVICES") {
            Ok(list) => list.split(',').map(|d| d.trim().parse().unwrap()).collect(),
            Err(_) => vec![100, 1000, 10_000],
        };
        for devices in counts {
            let (_dir, mut store) = temp_store();
            let batches = 210;
            let per_batch = 1000;
            let mut total = 0u64;
            let mut elapsed = Duration::ZERO;
            let mut cpu = Duration::ZERO;
            let mut second_half = (0u64, Duration::ZERO);
            for b in 0..batches {
                let batch: Vec<Reading> = (0..per_batch)
                    .map(|i| {
                        let n = b * per_batch + i;
                        let mut r = reading(
                            "env",
                            &format!("dev-{:04}", n % devices),
                            T0 + n * 1_000_000,
                            &[
                                (
                                    "temperature",
                                    FieldValue::Float(20.0 + (n % 100) as f64 / 10.0),
                                ),
                                ("humidity", FieldValue::Float(40.0 + (n % 37) as f64)),
                                ("pressure", FieldValue::Integer(101_300 + n % 50)),
                                ("ok", FieldValue::Boolean(n % 7 != 0)),
                            ],
                        );
                        r.set_tag("site", "site-01");
                        r
                    })
                    .collect();
                total += batch.iter().map(|r| r.fields.len() as u64).sum::<u64>();
                let started = std::time::Instant::now();
                let cpu_before = thread_cpu();
                store.insert(&batch).unwrap();
                let used = thread_cpu().saturating_sub(cpu_before);
                cpu += used;
                if b >= batches / 2 {
                    second_half.0 += batch.iter().map(|r| r.fields.len() as u64).sum::<u64>();
                    second_half.1 += used;
                }
                elapsed += started.elapsed();
            }
            let started = std::time::Instant::now();
            let latest = store.latest(&Query::default()).unwrap().len();
            let latest_took = started.elapsed();
            let started = std::time::Instant::now();
            let one = Query {
                device: Some("dev-0001".into()),
                field: Some("temperature".into()),
                ..Query::default()
            };
            let points = store.query(&one).unwrap().len();
            println!(
                "{devices} devices: latest of {latest} series in {latest_took:?}, \
                 {points} points of one series in {:?} ({} points in recent)",
                started.elapsed(),
                store.recent_points,
            );
            store.compact().unwrap();
            store
                .conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                .unwrap();
            let size = std::fs::metadata(store.path()).unwrap().len();
            println!(
                "{devices} devices: {total} field values in {elapsed:?}: {:.0} field values/s, \
                 {:.2} µs of CPU per field value ({:.2} in the second half); \
                 file {:.1} bytes per field value",
                total as f64 / elapsed.as_secs_f64(),
                cpu.as_secs_f64() * 1e6 / total as f64,
                second_half.1.as_secs_f64() * 1e6 / second_half.0 as f64,
                size as f64 / total as f64,
            );
        }
    }
}
