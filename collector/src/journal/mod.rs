//! The journal: every reading is made durable here before it is acknowledged, and every sink
//! reads it from its own persisted cursor.
//!
//! It is an SQLite database in WAL mode (a well-kept, crash-tested storage engine rather than
//! a hand-written segment log): one row per group commit, holding the encoded readings of
//! every message that was waiting when the writer woke up. The writer never waits to fill a
//! batch: ack latency is one commit. With `sync = true` each commit is on disk (fsync of the
//! WAL) before any message in it is acked.
//!
//! ```text
//! entries(seq INTEGER PRIMARY KEY, readings INTEGER, data BLOB,   -- one row per commit
//!         encoding INTEGER)                                       -- how `data` is encoded
//! cursors(sink TEXT PRIMARY KEY, seq INTEGER, idx INTEGER)        -- next reading to deliver
//! ```
//!
//! The schema version is in `PRAGMA user_version`. Journals of version 0 (before entries
//! recorded their [`Encoding`](crate::reading::Encoding)) are upgraded when opened: their
//! entries keep being read as [`Encoding::Plain`](crate::reading::Encoding::Plain). A journal of a newer version is refused with a clear error rather
//! than misread.
//!
//! A cursor `(seq, idx)` means: every entry before `seq` and the first `idx` readings of
//! entry `seq` are written by that sink. Entries before the smallest cursor are deleted.
//! The journal is bounded by `max_bytes` of entry data; at the bound, `block` stops taking
//! readings until a sink moves on, `drop_oldest` deletes the oldest entries and counts what
//! each sink lost. The file gives back what the sinks have passed (SQLite does not shrink a
//! file by itself): it is in `auto_vacuum = INCREMENTAL` mode, and once its free pages take
//! 1 MiB and at least as much as the entries still held (so that moving those costs less
//! than what is given back), the commit that freed them truncates it and the WAL. An idle
//! journal whose sinks have written everything keeps less than 1 MiB of free pages and a
//! WAL of at most 4 MiB.
//!
//! Files: [`Journal`] (open, register sinks, open readers) here; the writer in `writer.rs`,
//! the readers in `reader.rs`, the state they share in `shared.rs`, the SQLite schema and
//! space management in `schema.rs`.

mod reader;
mod schema;
mod shared;
mod writer;

pub use reader::JournalReader;
pub use writer::JournalWriter;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use rusqlite::{params, OptionalExtension};
use tokio::sync::watch;
use tracing::info;

use crate::backoff::LogLimit;
use crate::config::JournalSettings;
use crate::metrics::Metrics;
use crate::sync::MutexExt;
use schema::{
    convert_to_incremental_vacuum, create_or_upgrade, delete_before, open_connection, Schema,
    SCHEMA_VERSION,
};
use shared::{Shared, Tail};

/// Errors of the journal. A cause is kept as the error's [source](std::error::Error::source),
/// not repeated in its message: `{:#}` of an `anyhow::Error` prints each once.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// SQLite failed.
    #[error("journal {}", path.display())]
    Sqlite {
        /// The journal file.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// The data directory could not be created.
    #[error("cannot create {}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An entry does not decode.
    #[error("journal {path}: entry {seq} is corrupt")]
    Corrupt {
        /// The journal file.
        path: PathBuf,
        /// The entry.
        seq: i64,
    },
    /// The journal was written by a build with a newer schema.
    #[error(
        "journal {}: schema version {found}, this build reads version {supported} and older \
         (run the newer build, or move the journal away: the readings in it are then not delivered)",
        path.display()
    )]
    UnsupportedVersion {
        /// The journal file.
        path: PathBuf,
        /// The version found in the file.
        found: i64,
        /// The newest version this build reads.
        supported: i64,
    },
    /// A sink asked for a cursor that was not registered.
    #[error("no sink `{0}` is registered in the journal")]
    UnknownSink(String),
}

/// Where a sink is: the next reading it has to deliver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Position {
    /// The entry.
    pub seq: i64,
    /// The reading within the entry.
    pub idx: u32,
}

/// A handle on the journal, for registering sinks and opening their readers. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Journal {
    shared: Arc<Shared>,
}

impl Journal {
    /// Opens (or creates) the journal, and returns the handle and the writer.
    ///
    /// # Errors
    /// The directory or the database cannot be created or read.
    pub fn open(
        settings: &JournalSettings,
        metrics: Metrics,
    ) -> Result<(Journal, JournalWriter), JournalError> {
        let path = settings.path.clone();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| JournalError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let sqlite = |source| JournalError::Sqlite {
            path: path.clone(),
            source,
        };
        let mut conn = open_connection(&path, settings.sync).map_err(sqlite)?;
        match create_or_upgrade(&mut conn).map_err(sqlite)? {
            Schema::Current | Schema::Created => {}
            Schema::Upgraded { from } => {
                info!(path = %path.display(), from, to = SCHEMA_VERSION, "journal schema upgraded (the entries in it are kept)");
            }
            Schema::Newer(found) => {
                return Err(JournalError::UnsupportedVersion {
                    path,
                    found,
                    supported: SCHEMA_VERSION,
                })
            }
        }
        convert_to_incremental_vacuum(&conn, &path).map_err(sqlite)?;
        // Sequence numbers never go back, even when every entry has been reclaimed: a cursor
        // may point past the last entry, and new entries must come after it.
        let (bytes, last_seq): (i64, i64) = conn
            .query_row(
                "SELECT COALESCE(SUM(length(data)), 0),
                        MAX(COALESCE((SELECT MAX(seq) FROM entries), 0),
                            COALESCE((SELECT MAX(seq) FROM cursors), 0) - 1)
                 FROM entries",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(sqlite)?;
        let mut cursors = BTreeMap::new();
        {
            let mut stmt = conn
                .prepare("SELECT sink, seq, idx FROM cursors")
                .map_err(sqlite)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        Position {
                            seq: r.get(1)?,
                            idx: r.get(2)?,
                        },
                    ))
                })
                .map_err(sqlite)?;
            for row in rows {
                let (sink, pos) = row.map_err(sqlite)?;
                cursors.insert(sink, pos);
            }
        }
        let (committed_tx, committed_rx) = watch::channel(last_seq);
        let shared = Arc::new(Shared {
            path: path.clone(),
            max_bytes: settings.max_bytes,
            when_full: settings.when_full,
            bytes: AtomicU64::new(0),
            cursors: Mutex::new(cursors),
            in_memory: Mutex::new(BTreeMap::new()),
            lags: Mutex::new(BTreeMap::new()),
            space: (Mutex::new(()), Condvar::new()),
            holding: AtomicBool::new(false),
            waiting_for_sinks: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            committed: committed_rx,
            tail: Mutex::new(Tail::default()),
            bytes_gauge: metrics.journal_bytes(),
            metrics: metrics.clone(),
        });
        shared.add_bytes(bytes);
        info!(path = %path.display(), bytes, last_seq, "journal open");
        let writer = JournalWriter {
            conn,
            shared: shared.clone(),
            committed: committed_tx,
            next_seq: last_seq + 1,
            appended: metrics.counter("journal_readings_appended_total", &[]),
            commits: metrics.counter("journal_commits_total", &[]),
            drop_log: LogLimit::new(Duration::from_secs(10)),
            commit_delay: settings.commit_delay,
            ack_delay: settings.ack_delay,
            ack_batch: settings.ack_batch,
        };
        Ok((Journal { shared }, writer))
    }

    /// Declares the sinks that read the journal. A new sink starts at the oldest entry still
    /// held; the cursor of a sink that is no longer configured is removed, so that it does
    /// not hold space forever.
    ///
    /// # Errors
    /// SQLite failed.
    pub fn register_sinks(&self, names: &[&str]) -> Result<(), JournalError> {
        let s = &self.shared;
        let conn = open_connection(&s.path, false).map_err(s.sqlite())?;
        let oldest: i64 = conn
            .query_row("SELECT COALESCE(MIN(seq), 0) FROM entries", [], |r| {
                r.get(0)
            })
            .map_err(s.sqlite())?;
        let mut cursors = s.cursors.lock_unpoisoned();
        let gone: Vec<String> = cursors
            .keys()
            .filter(|k| !names.contains(&k.as_str()))
            .cloned()
            .collect();
        for name in gone {
            info!(sink = %name, "sink no longer configured: its journal cursor is removed");
            conn.execute("DELETE FROM cursors WHERE sink = ?1", [&name])
                .map_err(s.sqlite())?;
            cursors.remove(&name);
            if let Some(lag) = s.lags.lock_unpoisoned().remove(&name) {
                lag.set(0);
            }
        }
        for name in names {
            if !cursors.contains_key(*name) {
                let pos = Position {
                    seq: oldest,
                    idx: 0,
                };
                conn.execute(
                    "INSERT INTO cursors (sink, seq, idx) VALUES (?1, ?2, ?3)",
                    params![name, pos.seq, pos.idx],
                )
                .map_err(s.sqlite())?;
                cursors.insert((*name).to_string(), pos);
            }
        }
        // A removed sink may have been the one holding the oldest entries.
        if let Some(min_seq) = cursors.values().map(|p| p.seq).min() {
            let freed = delete_before(&conn, min_seq).map_err(s.sqlite())?;
            if freed > 0 {
                s.add_bytes(-freed);
                s.notify_space();
            }
        }
        Ok(())
    }

    /// A reader for `sink`, starting at its persisted cursor.
    ///
    /// # Errors
    /// The sink is not registered, or SQLite failed.
    pub fn reader(&self, sink: &str) -> Result<JournalReader, JournalError> {
        let s = &self.shared;
        let pos = *s
            .cursors
            .lock_unpoisoned()
            .get(sink)
            .ok_or_else(|| JournalError::UnknownSink(sink.to_string()))?;
        let conn = open_connection(&s.path, false).map_err(s.sqlite())?;
        let lag = s.metrics.gauge("sink_lag_readings", &[("sink", sink)]);
        {
            let mut lags = s.lags.lock_unpoisoned();
            let behind: i64 = conn
                .query_row(
                    "SELECT COALESCE(SUM(readings), 0) FROM entries WHERE seq >= ?1",
                    [pos.seq],
                    |r| r.get(0),
                )
                .map_err(s.sqlite())?;
            let done = if conn
                .query_row(
                    "SELECT 1 FROM entries WHERE seq = ?1",
                    [pos.seq],
                    |_| Ok(()),
                )
                .optional()
                .map_err(s.sqlite())?
                .is_some()
            {
                i64::from(pos.idx)
            } else {
                0
            };
            lag.set(behind - done);
            lags.insert(sink.to_string(), lag.clone());
        }
        Ok(JournalReader {
            conn,
            shared: s.clone(),
            sink: sink.to_string(),
            read_pos: pos,
            pending: None,
            committed: s.committed.clone(),
            lag,
            handed_out: 0,
            from_memory: s.metrics.counter(
                "journal_entries_read_total",
                &[("sink", sink), ("from", "memory")],
            ),
            from_disk: s.metrics.counter(
                "journal_entries_read_total",
                &[("sink", sink), ("from", "disk")],
            ),
        })
    }

    /// Bytes of entry data held now.
    pub fn bytes(&self) -> u64 {
        self.shared.bytes.load(Ordering::SeqCst)
    }

    /// Tells a writer that waits for space (journal full, `block`) to give up: used when the
    /// shutdown timeout has passed.
    pub fn close(&self) {
        self.shared.closing.store(true, Ordering::SeqCst);
        self.shared.notify_space();
    }

    /// Whether the writer holds readings it has not committed yet: with no commit for a
    /// while, the journal is stuck (a hung disk, a lock held by another process).
    pub fn writer_holds_readings(&self) -> bool {
        self.shared.holding.load(Ordering::SeqCst)
    }

    /// Whether the writer is held back by a full journal (`block`): the sources are being
    /// pushed back on purpose, until a sink catches up; that is not a wedge.
    pub fn waiting_for_sinks(&self) -> bool {
        self.shared.waiting_for_sinks.load(Ordering::SeqCst)
    }

    /// The persisted cursor of `sink`.
    pub fn cursor(&self, sink: &str) -> Option<Position> {
        self.shared.cursors.lock_unpoisoned().get(sink).copied()
    }
}

#[cfg(test)]
mod tests;
