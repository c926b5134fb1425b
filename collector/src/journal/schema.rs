//! The SQLite file: its tables and schema version (and the upgrade of older journals), the
//! settings of every connection, and the space given back once the sinks have passed it
//! (see the module documentation of [`crate::journal`]).

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};
use tracing::{info, warn};

/// Free pages that a commit gives back to the file system (see the module documentation).
pub(super) const RECLAIM_BYTES: u64 = 1 << 20;

/// What the WAL is truncated to after a checkpoint (`journal_size_limit`).
pub(super) const WAL_LIMIT_BYTES: i64 = 4 << 20;

/// A journal that does not give space back yet (made before it did) is made to at open when
/// it holds at most this much (a `VACUUM` copies what it holds).
pub(super) const CONVERT_MAX_BYTES: i64 = 64 << 20;

/// The schema this build reads and writes, in `PRAGMA user_version`. Version 0 had no
/// `encoding` column (every entry [`Encoding::Plain`]).
pub(super) const SCHEMA_VERSION: i64 = 1;

/// What opening found of the journal's schema.
pub(super) enum Schema {
    /// This build's.
    Current,
    /// None: a new journal.
    Created,
    /// An older one, now upgraded.
    Upgraded { from: i64 },
    /// A newer one (left as it is).
    Newer(i64),
}

/// Creates the tables of a new journal, or upgrades an older one, in one transaction.
pub(super) fn create_or_upgrade(conn: &mut Connection) -> Result<Schema, rusqlite::Error> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Ok(Schema::Newer(version));
    }
    if version == SCHEMA_VERSION {
        return Ok(Schema::Current);
    }
    // Version 0, or a new file: the tables as version 0 made them, then the upgrade.
    let existed: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE name = 'entries')",
        [],
        |r| r.get(0),
    )?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS entries (seq INTEGER PRIMARY KEY, readings INTEGER NOT NULL, data BLOB NOT NULL);
         CREATE TABLE IF NOT EXISTS cursors (sink TEXT PRIMARY KEY, seq INTEGER NOT NULL, idx INTEGER NOT NULL);
         ALTER TABLE entries ADD COLUMN encoding INTEGER NOT NULL DEFAULT 1;",
    )?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    Ok(if existed {
        Schema::Upgraded { from: version }
    } else {
        Schema::Created
    })
}

pub(super) fn open_connection(path: &Path, sync: bool) -> Result<Connection, rusqlite::Error> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(30))?;
    // Takes effect for a new file only (before its first table); see `give_back_space`.
    conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
    conn.pragma_update(None, "journal_size_limit", WAL_LIMIT_BYTES)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", if sync { "FULL" } else { "NORMAL" })?;
    // Entries are written once at the end and read once in order: a page cache of 512 KiB
    // (not SQLite's 2 MiB default, on each of the writer's and every reader's connections)
    // is all they use.
    conn.pragma_update(None, "cache_size", -512)?;
    Ok(conn)
}

/// Puts a journal made before journals gave space back in `auto_vacuum = INCREMENTAL` mode
/// (a `VACUUM`), when it holds little enough for that to be quick; a larger one is left as
/// it is until an open finds it small.
pub(super) fn convert_to_incremental_vacuum(
    conn: &Connection,
    path: &Path,
) -> Result<(), rusqlite::Error> {
    let mode: i64 = conn.pragma_query_value(None, "auto_vacuum", |r| r.get(0))?;
    if mode == 2 {
        return Ok(());
    }
    let bytes: i64 = conn.query_row(
        "SELECT COALESCE(SUM(length(data)), 0) FROM entries",
        [],
        |r| r.get(0),
    )?;
    if bytes > CONVERT_MAX_BYTES {
        return Ok(());
    }
    conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
    conn.execute_batch("VACUUM")?;
    info!(path = %path.display(), bytes, "journal converted to give back the space its sinks have passed");
    Ok(())
}

/// Gives the free pages back to the file system once they take [`RECLAIM_BYTES`] and at
/// least as much as the entries still held, and truncates the WAL (see the module
/// documentation). A failure is logged: the space is given back at a later commit.
pub(super) fn give_back_space(conn: &Connection, held_bytes: u64, path: &Path) {
    let result = (|| -> Result<Option<u64>, rusqlite::Error> {
        let pragma = |name: &str| -> Result<u64, rusqlite::Error> {
            conn.pragma_query_value(None, name, |r| r.get(0))
        };
        let free = pragma("freelist_count")? * pragma("page_size")?;
        if free < RECLAIM_BYTES || free < held_bytes {
            return Ok(None);
        }
        // The pragma frees pages as it is stepped: every row of it.
        let mut vacuum = conn.prepare("PRAGMA incremental_vacuum")?;
        let mut rows = vacuum.query([])?;
        while rows.next()?.is_some() {}
        drop(rows);
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(Some(free))
    })();
    match result {
        Ok(Some(free)) => {
            tracing::debug!(path = %path.display(), free, "journal gave back the space its sinks have passed");
        }
        Ok(None) => {}
        Err(e) => {
            warn!(path = %path.display(), error = %e, "journal could not give back free space; will retry")
        }
    }
}

/// Deletes the entries before `seq` (every sink has passed them); returns the bytes freed.
pub(super) fn delete_before(conn: &Connection, seq: i64) -> Result<i64, rusqlite::Error> {
    let freed: i64 = conn.query_row(
        "SELECT COALESCE(SUM(length(data)), 0) FROM entries WHERE seq < ?1",
        [seq],
        |r| r.get(0),
    )?;
    if freed > 0 {
        conn.execute("DELETE FROM entries WHERE seq < ?1", [seq])?;
    }
    Ok(freed)
}
