//! The file's schema: its tables and statements, its version in `PRAGMA user_version`, and
//! what opening a file checks before it changes anything.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, TransactionBehavior};

use super::{LocalStore, StoreError};

/// The schema version this build reads and writes, kept in `PRAGMA user_version`. Versions 1
/// (one row per point) and 2 (chunks without a codec) are upgraded when a writer opens them.
pub(super) const SCHEMA_VERSION: i64 = 3;

/// What a checkpoint truncates the WAL to (`journal_size_limit`).
pub(super) const WAL_LIMIT_BYTES: i64 = 4 << 20;

/// Marks the file as ours in `PRAGMA application_id` ("TCLS").
pub(super) const APPLICATION_ID: i64 = 0x5443_4C53;

/// How long a statement waits for a lock held by another connection before failing busy.
pub(super) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The table of series, the same in versions 1 and 2.
pub(super) const SERIES_TABLE: &str = "
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
pub(super) const POINT_TABLES: &str = "
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

pub(super) const SELECT_SERIES_ID: &str =
    "SELECT id FROM series WHERE measurement = ?1 AND tags = ?2 AND field = ?3";
pub(super) const INSERT_SERIES: &str =
    "INSERT INTO series (measurement, tags, field, device) VALUES (?1, ?2, ?3, ?4)";
pub(super) const INSERT_RECENT: &str = "INSERT INTO recent (points, data) VALUES (?1, ?2)";
/// In the order written: a later batch overrides an earlier one.
pub(super) const SELECT_RECENT: &str = "SELECT data FROM recent ORDER BY id";
/// A series' chunks from its newest back.
pub(super) const SELECT_CHUNKS_BACK: &str =
    "SELECT id, first_ts, last_ts, points, data, codec FROM chunks
     WHERE series_id = ?1 ORDER BY last_ts DESC";
pub(super) const INSERT_CHUNK: &str =
    "INSERT INTO chunks (series_id, first_ts, last_ts, points, data, codec)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
/// A series' chunks from its newest back, to merge its tail. No `LIMIT ?`: with a bound
/// limit, SQLite prepared the statement again at every execution (`sqlite3Reprepare` was a
/// quarter of the profile); the reader stops instead.
pub(super) const SELECT_TAIL: &str = "SELECT last_ts, points, data, codec FROM chunks
     WHERE series_id = ?1 ORDER BY last_ts DESC";
/// The end and size of a series' chunks from its newest back, to find its tail.
pub(super) const SELECT_TAIL_SIZES: &str = "SELECT last_ts, points, length(data) FROM chunks
     WHERE series_id = ?1 ORDER BY last_ts DESC";
pub(super) const DELETE_CHUNKS_FROM: &str =
    "DELETE FROM chunks WHERE series_id = ?1 AND last_ts >= ?2";
/// A series' chunks from the one that holds `?2` (or the first after it) on, in time order.
pub(super) const SELECT_CHUNKS_FROM: &str = "SELECT id, first_ts, points, data, codec FROM chunks
     WHERE series_id = ?1 AND last_ts >= ?2 ORDER BY last_ts";
/// A series' last chunk that ends before `?2`.
pub(super) const SELECT_CHUNK_BEFORE: &str = "SELECT id, first_ts, points, data, codec FROM chunks
     WHERE series_id = ?1 AND last_ts < ?2 ORDER BY last_ts DESC LIMIT 1";

impl LocalStore {
    pub(super) fn create_schema(&mut self) -> Result<(), StoreError> {
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
}

/// What [`check_schema`] found.
pub(super) enum Schema {
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
pub(super) fn check_schema(conn: &Connection, path: &Path) -> Result<Schema, StoreError> {
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
