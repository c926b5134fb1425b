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
//! recorded their [`Encoding`]) are upgraded when opened: their entries keep being read as
//! [`Encoding::Plain`]. A journal of a newer version is refused with a clear error rather
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

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::backoff::{Backoff, LogLimit};
use crate::channel::{Envelope, Outlet};
use crate::config::{BackoffConfig, JournalSettings, WhenFull};
use crate::metrics::{Counter, Gauge, Metrics};
use crate::reading::{self, Batch, Encoded, Encoding, Reading};

/// The most readings one commit takes; bounds the writer's memory.
const MAX_ENTRY_READINGS: usize = 65_536;

/// The most encoded bytes the [tail](Tail) keeps in memory for readers that are behind (a
/// sink writing a batch, or one that is down): about 40,000 readings of 2 tags and 3 floats,
/// what arrives in a quarter of a second at 150,000 readings a second. A reader further
/// behind reads from SQLite, as after a restart.
const MAX_TAIL_BYTES: usize = 2 << 20;

/// The readings of one entry, encoded, shared by the tail and the sinks' batches.
type Entry = Arc<Encoded>;

/// Free pages that a commit gives back to the file system (see the module documentation).
const RECLAIM_BYTES: u64 = 1 << 20;

/// What the WAL is truncated to after a checkpoint (`journal_size_limit`).
const WAL_LIMIT_BYTES: i64 = 4 << 20;

/// A journal that does not give space back yet (made before it did) is made to at open when
/// it holds at most this much (a `VACUUM` copies what it holds).
const CONVERT_MAX_BYTES: i64 = 64 << 20;

/// The schema this build reads and writes, in `PRAGMA user_version`. Version 0 had no
/// `encoding` column (every entry [`Encoding::Plain`]).
const SCHEMA_VERSION: i64 = 1;

/// Errors of the journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// SQLite failed.
    #[error("journal {path}: {source}")]
    Sqlite {
        /// The journal file.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// The data directory could not be created.
    #[error("cannot create {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
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

/// State shared by the writer and the readers.
#[derive(Debug)]
struct Shared {
    path: PathBuf,
    max_bytes: u64,
    when_full: WhenFull,
    bytes: AtomicU64,
    cursors: Mutex<BTreeMap<String, Position>>,
    /// Per running reader: the first position not yet in its memory (read ahead into a
    /// batch, or decoded and pending). Dropping an entry before it costs that sink nothing.
    in_memory: Mutex<BTreeMap<String, Position>>,
    /// Per sink with a reader, `sink_lag_readings`: readings committed that it has not yet
    /// written. The writer holds this lock across each commit, so that a reader that starts
    /// (and counts what is committed) never misses an entry nor counts one twice.
    lags: Mutex<BTreeMap<String, Gauge>>,
    /// Signalled whenever space may have been freed.
    space: (Mutex<()>, Condvar),
    /// Set while the writer holds readings it has taken from the channel and not yet
    /// committed (a commit in progress, or a failing disk retried).
    holding: AtomicBool,
    /// Set while the writer waits for the sinks to free space (journal full, `block`).
    waiting_for_sinks: AtomicBool,
    /// Set when the pipeline gives up waiting (shutdown timeout): a writer blocked on a full
    /// journal stops waiting.
    closing: AtomicBool,
    committed: watch::Receiver<i64>,
    /// The newest committed entries, as the writer had them in memory.
    tail: Mutex<Tail>,
    bytes_gauge: Gauge,
    metrics: Metrics,
}

/// The newest committed entries in memory, as the writer committed them: a reader that keeps
/// up takes an entry from here instead of reading it back from SQLite, and every sink's
/// batch shares this one copy. An entry leaves once every running reader has it (in a
/// batch, or written), or when the tail holds more than [`MAX_TAIL_BYTES`] (the reader that
/// is that far behind reads the entry from SQLite).
#[derive(Debug, Default)]
struct Tail {
    /// Consecutive entries, oldest first: (seq, entry).
    entries: VecDeque<(i64, Entry)>,
    /// Encoded bytes in `entries`.
    bytes: usize,
}

impl Tail {
    /// Entry `seq`, if it is here.
    fn get(&self, seq: i64) -> Option<Entry> {
        let first = self.entries.front()?.0;
        let i = usize::try_from(seq.checked_sub(first)?).ok()?;
        self.entries.get(i).map(|(_, r)| Arc::clone(r))
    }

    fn pop_front(&mut self) {
        if let Some((_, e)) = self.entries.pop_front() {
            self.bytes -= e.bytes();
        }
    }
}

impl Shared {
    fn sqlite(&self) -> impl Fn(rusqlite::Error) -> JournalError + '_ {
        |source| JournalError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    fn add_bytes(&self, delta: i64) {
        let now = if delta >= 0 {
            self.bytes.fetch_add(delta as u64, Ordering::SeqCst) + delta as u64
        } else {
            let d = delta.unsigned_abs();
            self.bytes.fetch_sub(d, Ordering::SeqCst).saturating_sub(d)
        };
        self.bytes_gauge.set(i64::try_from(now).unwrap_or(i64::MAX));
    }

    fn notify_space(&self) {
        let _guard = self.space.0.lock().unwrap_or_else(PoisonError::into_inner);
        self.space.1.notify_all();
    }

    /// Keeps the just committed entry `seq` in the tail, when a reader runs to take it.
    fn keep_in_memory(&self, seq: i64, entry: Encoded) {
        if self
            .lags
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
        {
            return;
        }
        {
            let mut tail = self.tail.lock().unwrap_or_else(PoisonError::into_inner);
            if tail
                .entries
                .back()
                .is_some_and(|(last, _)| *last != seq - 1)
            {
                // Not consecutive (cannot happen with one writer): start again.
                *tail = Tail::default();
            }
            tail.bytes += entry.bytes();
            tail.entries.push_back((seq, Arc::new(entry)));
            while tail.bytes > MAX_TAIL_BYTES {
                tail.pop_front();
            }
        }
        self.trim_tail();
    }

    /// Drops from the tail the entries every running reader has taken.
    fn trim_tail(&self) {
        let taken = {
            let cursors = self.cursors.lock().unwrap_or_else(PoisonError::into_inner);
            let in_memory = self
                .in_memory
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let lags = self.lags.lock().unwrap_or_else(PoisonError::into_inner);
            lags.keys()
                .map(|sink| {
                    in_memory
                        .get(sink)
                        .or_else(|| cursors.get(sink))
                        .map_or(i64::MIN, |p| p.seq)
                })
                .min()
        };
        let mut tail = self.tail.lock().unwrap_or_else(PoisonError::into_inner);
        match taken {
            Some(taken) => {
                while tail.entries.front().is_some_and(|(seq, _)| *seq < taken) {
                    tail.pop_front();
                }
            }
            None => *tail = Tail::default(),
        }
    }
}

/// A handle on the journal, for registering sinks and opening their readers. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Journal {
    shared: Arc<Shared>,
}

/// The one writer: takes envelopes from the pipeline's channel, commits them, acks them.
#[derive(Debug)]
pub struct JournalWriter {
    conn: Connection,
    shared: Arc<Shared>,
    committed: watch::Sender<i64>,
    next_seq: i64,
    appended: Counter,
    commits: Counter,
    /// Drops (journal full, `drop_oldest`) can come many times a second: logged sparingly.
    drop_log: LogLimit,
    /// How long a commit that acknowledges nothing may wait for more readings.
    commit_delay: Duration,
}

/// What opening found of the journal's schema.
enum Schema {
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
fn create_or_upgrade(conn: &mut Connection) -> Result<Schema, rusqlite::Error> {
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

fn open_connection(path: &Path, sync: bool) -> Result<Connection, rusqlite::Error> {
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
            bytes_gauge: metrics.gauge("journal_bytes", &[]),
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
        let mut cursors = s.cursors.lock().unwrap_or_else(PoisonError::into_inner);
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
            if let Some(lag) = s
                .lags
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&name)
            {
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
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(sink)
            .ok_or_else(|| JournalError::UnknownSink(sink.to_string()))?;
        let conn = open_connection(&s.path, false).map_err(s.sqlite())?;
        let lag = s.metrics.gauge("sink_lag_readings", &[("sink", sink)]);
        {
            let mut lags = s.lags.lock().unwrap_or_else(PoisonError::into_inner);
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
        self.shared
            .cursors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(sink)
            .copied()
    }
}

impl JournalWriter {
    /// Runs until every sender of `rx` is gone and the channel is empty: takes whatever is
    /// waiting (up to a bound), appends it as one entry, syncs, and acks it. Blocking: run
    /// it on a blocking thread of the runtime.
    ///
    /// A commit that acknowledges nothing (QoS 0 messages, serial lines: nobody waits for
    /// it) also takes what arrives within `commit_delay`, and goes sooner when a message to
    /// acknowledge arrives, when half of the pipeline's room is taken (the sources would
    /// soon wait for the commit), or when input ends: a fast stream of unacknowledged
    /// readings costs a commit every few milliseconds rather than one per few dozen
    /// readings, and acks still wait one commit. Meanwhile the writer sleeps: the sources
    /// wake it only for those reasons, not for every envelope.
    ///
    /// A failing disk is retried with backoff, holding the batch and its acks: nothing is
    /// acked that is not on disk, and nothing is dropped here.
    pub fn run(mut self, mut rx: Outlet) {
        let mut batch: Vec<Envelope> = Vec::new();
        let mut retry = Backoff::new(BackoffConfig {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
        });
        let runtime = tokio::runtime::Handle::try_current().ok();
        while let Some(first) = rx.blocking_recv() {
            self.shared.holding.store(true, Ordering::SeqCst);
            let (mut count, mut acks) = (0, false);
            let wait_until = tokio::time::Instant::now() + self.commit_delay;
            let mut late = self.commit_delay.is_zero();
            let mut next = Some(first);
            loop {
                while let Some(e) = next.take() {
                    count += e.readings.len();
                    acks |= e.ack.is_some();
                    batch.push(e);
                    if count < MAX_ENTRY_READINGS {
                        next = rx.try_recv();
                    }
                }
                if late || acks || count >= MAX_ENTRY_READINGS || rx.should_commit() {
                    break;
                }
                let Some(rt) = runtime.as_ref() else {
                    break;
                };
                late = !rt.block_on(rx.wait(wait_until));
                next = rx.try_recv();
            }
            let committed = loop {
                match self.append_envelopes(&batch) {
                    Ok(committed) => break committed,
                    Err(e) => {
                        let delay = retry.next_delay();
                        if retry.worth_logging() {
                            error!(error = %e, ?delay, attempts = retry.attempts(), "journal write failed; retrying (nothing is acked meanwhile)");
                        }
                        std::thread::sleep(delay);
                        if self.shared.closing.load(Ordering::SeqCst) {
                            return;
                        }
                    }
                }
            };
            retry.reset();
            for envelope in batch.drain(..) {
                if let Some(ack) = envelope.ack {
                    ack.send();
                }
            }
            if let Some((seq, entry)) = committed {
                self.publish(seq, entry);
            }
            self.shared.holding.store(false, Ordering::SeqCst);
        }
    }

    /// Appends the readings of `batch` as one entry; returns its seq and the entry (`None`:
    /// no readings).
    fn append_envelopes(
        &mut self,
        batch: &[Envelope],
    ) -> Result<Option<(i64, Encoded)>, JournalError> {
        let mut data = Vec::new();
        reading::encode_all(batch.iter().flat_map(|e| &e.readings), &mut data);
        let count = batch.iter().map(|e| e.readings.len()).sum();
        Ok(self
            .append_encoded(&data, count)?
            .map(|seq| (seq, Encoded::written(data, count))))
    }

    /// Appends `readings` as one entry and syncs (for tools and tests; the pipeline uses
    /// [`JournalWriter::run`]).
    ///
    /// # Errors
    /// SQLite failed; nothing was appended.
    pub fn append(&mut self, readings: &[Reading]) -> Result<(), JournalError> {
        let mut data = Vec::new();
        reading::encode_all(readings, &mut data);
        if let Some(seq) = self.append_encoded(&data, readings.len())? {
            self.publish(seq, Encoded::written(data, readings.len()));
        }
        Ok(())
    }

    /// Appends `count` readings encoded in `data` as one entry, and syncs; returns the
    /// entry's seq (`None` when there are no readings: nothing is appended).
    fn append_encoded(&mut self, data: &[u8], count: usize) -> Result<Option<i64>, JournalError> {
        if count == 0 {
            return Ok(None);
        }
        let size = data.len() as u64;
        self.make_room(size)?;
        let shared = self.shared.clone();
        let seq = self.next_seq;
        {
            let lags = shared.lags.lock().unwrap_or_else(PoisonError::into_inner);
            self.conn
                .prepare_cached(
                    "INSERT INTO entries (seq, readings, data, encoding) VALUES (?1, ?2, ?3, ?4)",
                )
                .and_then(|mut insert| {
                    insert.execute(params![seq, count as i64, data, Encoding::CURRENT.as_i64()])
                })
                .map_err(shared.sqlite())?;
            for lag in lags.values() {
                lag.add(count as i64);
            }
        }
        self.next_seq += 1;
        shared.add_bytes(size as i64);
        self.appended.add(count as u64);
        self.commits.inc();
        Ok(Some(seq))
    }

    /// Keeps the committed entry `seq` in the tail, then wakes the readers (in this order, so
    /// that a reader woken takes it from memory).
    fn publish(&self, seq: i64, entry: Encoded) {
        self.shared.keep_in_memory(seq, entry);
        self.committed.send_replace(seq);
    }

    /// Applies the full policy until `size` more bytes fit (or the journal is empty).
    fn make_room(&mut self, size: u64) -> Result<(), JournalError> {
        let s = self.shared.clone();
        let fits = |s: &Shared| {
            s.bytes.load(Ordering::SeqCst) + size <= s.max_bytes
                || s.bytes.load(Ordering::SeqCst) == 0
        };
        if fits(&s) {
            return Ok(());
        }
        match s.when_full {
            WhenFull::Block => {
                warn!(
                    bytes = s.bytes.load(Ordering::SeqCst),
                    max_bytes = s.max_bytes,
                    "journal full: waiting for the sinks (sources are held back)"
                );
                s.metrics.counter("journal_full_waits_total", &[]).inc();
                s.waiting_for_sinks.store(true, Ordering::SeqCst);
                let mut guard = s.space.0.lock().unwrap_or_else(PoisonError::into_inner);
                while !fits(&s) && !s.closing.load(Ordering::SeqCst) {
                    guard = s
                        .space
                        .1
                        .wait_timeout(guard, Duration::from_millis(500))
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
                s.waiting_for_sinks.store(false, Ordering::SeqCst);
                Ok(())
            }
            WhenFull::DropOldest => {
                while !fits(&s) {
                    self.drop_oldest_entry()?;
                }
                Ok(())
            }
        }
    }

    /// Deletes the oldest entry and counts, per sink, the readings it had not yet written.
    fn drop_oldest_entry(&mut self) -> Result<(), JournalError> {
        let s = self.shared.clone();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(s.sqlite())?;
        let oldest: Option<(i64, i64, i64)> = tx
            .query_row(
                "SELECT seq, readings, length(data) FROM entries ORDER BY seq LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(s.sqlite())?;
        let Some((seq, readings, bytes)) = oldest else {
            return Ok(());
        };
        tx.execute("DELETE FROM entries WHERE seq = ?1", [seq])
            .map_err(s.sqlite())?;
        tx.commit().map_err(s.sqlite())?;
        s.add_bytes(-bytes);
        {
            // Dropped for every reader, from memory too.
            let mut tail = s.tail.lock().unwrap_or_else(PoisonError::into_inner);
            while tail.entries.front().is_some_and(|(q, _)| *q <= seq) {
                tail.pop_front();
            }
        }
        let cursors = s.cursors.lock().unwrap_or_else(PoisonError::into_inner);
        let in_memory = s.in_memory.lock().unwrap_or_else(PoisonError::into_inner);
        let lags = s.lags.lock().unwrap_or_else(PoisonError::into_inner);
        let mut lost_now = 0;
        for (sink, cursor) in cursors.iter() {
            // What a running reader already holds will be written: only the rest is lost.
            let pos = in_memory.get(sink).map_or(cursor, |m| m.max(cursor));
            let lost = match pos.seq.cmp(&seq) {
                std::cmp::Ordering::Less => readings,
                std::cmp::Ordering::Equal => readings - i64::from(pos.idx),
                std::cmp::Ordering::Greater => 0,
            };
            if lost > 0 {
                if let Some(lag) = lags.get(sink) {
                    lag.add(-lost);
                }
                s.metrics
                    .counter(
                        "readings_dropped_total",
                        &[("sink", sink), ("reason", "journal_full")],
                    )
                    .add(lost as u64);
                lost_now += lost;
            }
        }
        if lost_now > 0 {
            if let Some(entries_before) = self.drop_log.event(std::time::Instant::now()) {
                warn!(readings = lost_now, similar_since_last = entries_before, "journal full: dropped the oldest readings some sinks had not written (counted per sink in readings_dropped_total, reason journal_full)");
            }
        }
        Ok(())
    }
}

/// Puts a journal made before journals gave space back in `auto_vacuum = INCREMENTAL` mode
/// (a `VACUUM`), when it holds little enough for that to be quick; a larger one is left as
/// it is until an open finds it small.
fn convert_to_incremental_vacuum(conn: &Connection, path: &Path) -> Result<(), rusqlite::Error> {
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
fn give_back_space(conn: &Connection, held_bytes: u64, path: &Path) {
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
fn delete_before(conn: &Connection, seq: i64) -> Result<i64, rusqlite::Error> {
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

/// A sink's view of the journal: reads ahead from its read position, and persists its
/// cursor once the sink has written what it read.
#[derive(Debug)]
pub struct JournalReader {
    conn: Connection,
    shared: Arc<Shared>,
    sink: String,
    /// The position after the last reading handed out.
    read_pos: Position,
    /// A partly read entry, and the index of its next reading.
    pending: Option<(Entry, usize)>,
    committed: watch::Receiver<i64>,
    /// `sink_lag_readings` of this sink.
    lag: Gauge,
    /// Readings handed out since the last commit: the commit takes them off the lag.
    handed_out: u64,
    /// `journal_entries_read_total{from="memory"}`: entries taken from the tail.
    from_memory: Counter,
    /// `journal_entries_read_total{from="disk"}`: entries read back from SQLite and checked
    /// (the sink was further behind than the tail holds, or it just started).
    from_disk: Counter,
}

impl JournalReader {
    /// Up to `max` readings from the read position on, and moves it past them. Empty when
    /// everything committed has been read. An entry still in the journal's memory is shared,
    /// not read from SQLite.
    ///
    /// # Errors
    /// SQLite failed, or an entry is corrupt.
    pub fn read(&mut self, max: usize) -> Result<Batch, JournalError> {
        let mut out = Batch::new();
        while out.len() < max {
            let (entry, start) = match self.pending.take() {
                Some(pending) => pending,
                None => match self.load_next_entry()? {
                    Some(next) => next,
                    None => break,
                },
            };
            let end = entry.len().min(start + (max - out.len()));
            out.push_shared(&entry, start..end);
            if end < entry.len() {
                self.read_pos.idx = end as u32;
                self.pending = Some((entry, end));
            } else {
                self.read_pos = Position {
                    seq: self.read_pos.seq + 1,
                    idx: 0,
                };
            }
        }
        let in_memory = if self.pending.is_none() {
            self.read_pos
        } else {
            Position {
                seq: self.read_pos.seq + 1,
                idx: 0,
            }
        };
        self.shared
            .in_memory
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(self.sink.clone(), in_memory);
        self.shared.trim_tail();
        self.handed_out += out.len() as u64;
        Ok(out)
    }

    /// The first entry at or after the read position, from the journal's memory or else
    /// read back from SQLite, and the index of its first reading not yet delivered; moves the
    /// read position to it. `None` if there is none.
    fn load_next_entry(&mut self) -> Result<Option<(Entry, usize)>, JournalError> {
        let s = self.shared.clone();
        let wanted = self.read_pos.seq;
        let in_memory = s
            .tail
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(wanted);
        let (seq, entry) = match in_memory {
            Some(entry) => {
                self.from_memory.inc();
                (wanted, entry)
            }
            None => {
                // Checked once here (decoded without keeping anything), so that a damaged
                // entry stops this reader with `Corrupt`, as before any sink has part of it.
                let row: Option<(i64, Option<Encoded>)> = self
                    .conn
                    .prepare_cached(
                        "SELECT seq, encoding, data FROM entries WHERE seq >= ?1 ORDER BY seq LIMIT 1",
                    )
                    .and_then(|mut stmt| {
                        stmt.query_row([wanted], |r| {
                            let entry = match (Encoding::from_i64(r.get(1)?), r.get::<_, Vec<u8>>(2)) {
                                (Some(encoding), Ok(data)) => Encoded::checked(data, encoding).ok(),
                                _ => None,
                            };
                            Ok((r.get(0)?, entry))
                        })
                        .optional()
                    })
                    .map_err(s.sqlite())?;
                let Some((seq, entry)) = row else {
                    return Ok(None);
                };
                let entry = entry.ok_or_else(|| JournalError::Corrupt {
                    path: s.path.clone(),
                    seq,
                })?;
                self.from_disk.inc();
                (seq, Arc::new(entry))
            }
        };
        let skip = if seq == wanted {
            self.read_pos.idx as usize
        } else {
            // Entries in between were dropped (journal full, drop_oldest): counted there.
            self.read_pos = Position { seq, idx: 0 };
            0
        };
        let skip = skip.min(entry.len());
        Ok(Some((entry, skip)))
    }

    /// The position after the last reading handed out by [`read`](Self::read).
    pub fn read_position(&self) -> Position {
        self.read_pos
    }

    /// Persists `pos` as this sink's cursor (everything before it is written), and deletes
    /// the entries every sink has passed.
    ///
    /// # Errors
    /// SQLite failed; the cursor stays where it was (the sink will write some readings
    /// again, which the stores absorb).
    pub fn commit(&mut self, pos: Position) -> Result<(), JournalError> {
        let s = self.shared.clone();
        let min_seq = {
            let mut cursors = s.cursors.lock().unwrap_or_else(PoisonError::into_inner);
            cursors.insert(self.sink.clone(), pos);
            cursors.values().map(|p| p.seq).min().unwrap_or(pos.seq)
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(s.sqlite())?;
        tx.execute(
            "UPDATE cursors SET seq = ?2, idx = ?3 WHERE sink = ?1",
            params![self.sink, pos.seq, pos.idx],
        )
        .map_err(s.sqlite())?;
        let freed = delete_before(&tx, min_seq).map_err(s.sqlite())?;
        tx.commit().map_err(s.sqlite())?;
        self.lag
            .add(-i64::try_from(std::mem::take(&mut self.handed_out)).unwrap_or(i64::MAX));
        if freed > 0 {
            s.add_bytes(-freed);
            s.notify_space();
            give_back_space(&self.conn, s.bytes.load(Ordering::SeqCst), &s.path);
        }
        Ok(())
    }

    /// A receiver that changes whenever an entry is committed; closed once the writer has
    /// finished (no more entries will come).
    pub fn committed(&self) -> watch::Receiver<i64> {
        self.committed.clone()
    }

    /// The sink this reader belongs to.
    pub fn sink(&self) -> &str {
        &self.sink
    }
}

#[cfg(test)]
mod tests;
