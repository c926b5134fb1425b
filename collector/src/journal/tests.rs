use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection};

use super::schema::{RECLAIM_BYTES, SCHEMA_VERSION, WAL_LIMIT_BYTES};
use super::shared::MAX_TAIL_BYTES;
use super::*;
use crate::channel::{Ack, Envelope, Inlet};
use crate::config::WhenFull;
use crate::metrics::{Counter, Metrics};
use crate::reading::{self, Encoding, FieldValue, Reading, Readings};
use tokio::sync::mpsc;

fn reading(i: usize) -> Reading {
    let mut r = Reading::new("env", 1_700_000_000_000_000_000 + i as i64);
    r.set_tag("device", format!("d{i}"));
    r.fields.push(("v".into(), FieldValue::Float(i as f64)));
    r
}

fn settings(dir: &Path, max_bytes: u64, when_full: WhenFull) -> JournalSettings {
    JournalSettings {
        path: dir.join("journal.db"),
        max_bytes,
        when_full,
        sync: false,
        commit_delay: std::time::Duration::ZERO,
        ack_delay: std::time::Duration::ZERO,
        ack_batch: 1,
    }
}

/// The bytes of an entry of `readings`.
fn entry_bytes(readings: &[Reading]) -> u64 {
    let mut data = Vec::new();
    reading::encode_all(readings, &mut data);
    data.len() as u64
}

fn values(rs: &(impl Readings + ?Sized)) -> Vec<usize> {
    let mut out = Vec::new();
    rs.for_each(|r| out.push(r.field("v").and_then(FieldValue::as_f64).unwrap_or(-1.0) as usize));
    out
}

#[test]
fn readers_resume_from_their_cursors_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), 1 << 30, WhenFull::Block);
    {
        let (journal, mut writer) = Journal::open(&s, Metrics::new()).unwrap();
        journal.register_sinks(&["a", "b"]).unwrap();
        writer
            .append(&(0..5).map(reading).collect::<Vec<_>>())
            .unwrap();
        writer
            .append(&(5..8).map(reading).collect::<Vec<_>>())
            .unwrap();
        let mut a = journal.reader("a").unwrap();
        assert_eq!(values(&a.read(3).unwrap()), vec![0, 1, 2]);
        assert_eq!(values(&a.read(3).unwrap()), vec![3, 4, 5]);
        a.commit(a.read_position()).unwrap();
        assert_eq!(
            values(&a.read(10).unwrap()),
            vec![6, 7],
            "read ahead, not committed"
        );
        assert!(a.read(10).unwrap().is_empty());
    }
    let (journal, mut writer) = Journal::open(&s, Metrics::new()).unwrap();
    journal.register_sinks(&["a", "b"]).unwrap();
    writer.append(&[reading(8)]).unwrap();
    let mut a = journal.reader("a").unwrap();
    assert_eq!(values(&a.read(100).unwrap()), vec![6, 7, 8]);
    let mut b = journal.reader("b").unwrap();
    assert_eq!(values(&b.read(100).unwrap()), (0..9).collect::<Vec<_>>());
}

#[test]
fn readers_that_keep_up_share_the_writers_copy_and_one_far_behind_reads_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), 1 << 30, WhenFull::Block);
    let metrics = Metrics::new();
    let (journal, mut writer) = Journal::open(&s, metrics.clone()).unwrap();
    journal.register_sinks(&["a", "b"]).unwrap();
    let (mut a, mut b) = (journal.reader("a").unwrap(), journal.reader("b").unwrap());
    let read_from = |sink: &str, from: &str| {
        metrics.sum(
            "journal_entries_read_total",
            &[("sink", sink), ("from", from)],
        )
    };
    // New cursors point before the first entry: that one is looked up in SQLite, the next
    // ones follow in memory.
    writer.append(&[reading(0)]).unwrap();
    assert_eq!(values(&a.read(100).unwrap()), vec![0]);
    assert_eq!(values(&b.read(100).unwrap()), vec![0]);
    writer
        .append(&(0..10).map(reading).collect::<Vec<_>>())
        .unwrap();
    let (got_a, got_b) = (a.read(100).unwrap(), b.read(4).unwrap());
    assert_eq!(values(&got_a), (0..10).collect::<Vec<_>>());
    assert_eq!(values(&got_b), (0..4).collect::<Vec<_>>());
    for sink in ["a", "b"] {
        assert_eq!(
            (read_from(sink, "disk"), read_from(sink, "memory")),
            (1, 1),
            "{sink}: the second entry, in memory"
        );
    }
    let tail = |journal: &Journal| {
        let tail = journal.shared.tail.lock().unwrap();
        (tail.entries.len(), tail.bytes)
    };
    assert_eq!(
        tail(&journal),
        (0, 0),
        "both readers hold the entry (b the rest of it, to read next): it leaves the tail"
    );
    assert_eq!(values(&b.read(100).unwrap()), (4..10).collect::<Vec<_>>());

    // b falls behind by more than the tail keeps: a still reads from memory, b from SQLite,
    // and both get every reading in order.
    let per_entry = 1000;
    let entry_size = entry_bytes(&(0..per_entry).map(reading).collect::<Vec<_>>()) as usize;
    let entries = 3 * MAX_TAIL_BYTES / entry_size;
    let mut sent = 10;
    for _ in 0..entries {
        writer
            .append(&(sent..sent + per_entry).map(reading).collect::<Vec<_>>())
            .unwrap();
        let got = a.read(per_entry).unwrap();
        assert_eq!(values(&got), (sent..sent + per_entry).collect::<Vec<_>>());
        sent += per_entry;
        assert!(
            tail(&journal).1 <= MAX_TAIL_BYTES,
            "bounded: {:?}",
            tail(&journal)
        );
    }
    assert_eq!(read_from("a", "memory"), 1 + entries as u64);
    assert!(
        tail(&journal).1 > MAX_TAIL_BYTES - 2 * entry_size,
        "full while b is away"
    );
    let mut behind = Vec::new();
    loop {
        let got = b.read(3000).unwrap();
        if got.is_empty() {
            break;
        }
        behind.extend(values(&got));
    }
    assert_eq!(behind, (10..sent).collect::<Vec<_>>());
    let (b_disk, b_memory) = (read_from("b", "disk"), read_from("b", "memory"));
    assert_eq!(b_disk + b_memory, 2 + entries as u64);
    assert!(
        b_disk > 1 && b_memory > 1,
        "the oldest from disk, the newest still in memory: {b_disk} {b_memory}"
    );
    assert_eq!(tail(&journal), (0, 0));
}

#[test]
fn sequence_numbers_never_go_back_after_everything_was_reclaimed() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), 1 << 30, WhenFull::Block);
    for round in 0..3 {
        let (journal, mut writer) = Journal::open(&s, Metrics::new()).unwrap();
        journal.register_sinks(&["a"]).unwrap();
        writer.append(&[reading(round)]).unwrap();
        let mut a = journal.reader("a").unwrap();
        assert_eq!(values(&a.read(10).unwrap()), vec![round], "round {round}");
        a.commit(a.read_position()).unwrap();
        assert_eq!(journal.bytes(), 0, "everything reclaimed");
    }
}

#[test]
fn space_is_reclaimed_once_every_sink_has_passed() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, mut writer) = Journal::open(
        &settings(dir.path(), 1 << 30, WhenFull::Block),
        Metrics::new(),
    )
    .unwrap();
    journal.register_sinks(&["a", "b"]).unwrap();
    writer
        .append(&(0..10).map(reading).collect::<Vec<_>>())
        .unwrap();
    writer
        .append(&(10..20).map(reading).collect::<Vec<_>>())
        .unwrap();
    let full = journal.bytes();
    assert!(full > 0);
    let mut a = journal.reader("a").unwrap();
    let mut b = journal.reader("b").unwrap();
    a.read(20).unwrap();
    a.commit(a.read_position()).unwrap();
    assert_eq!(journal.bytes(), full, "b has not passed anything yet");
    b.read(15).unwrap();
    b.commit(b.read_position()).unwrap();
    assert!(
        journal.bytes() < full && journal.bytes() > 0,
        "the first entry is gone, the second is half read"
    );
    b.read(5).unwrap();
    b.commit(b.read_position()).unwrap();
    assert_eq!(journal.bytes(), 0);
}

#[test]
fn a_removed_sink_no_longer_holds_space_and_a_new_one_starts_at_the_oldest_entry() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, mut writer) = Journal::open(
        &settings(dir.path(), 1 << 30, WhenFull::Block),
        Metrics::new(),
    )
    .unwrap();
    journal.register_sinks(&["old"]).unwrap();
    writer.append(&[reading(1)]).unwrap();
    journal.register_sinks(&["new"]).unwrap();
    assert_eq!(journal.cursor("old"), None);
    let mut n = journal.reader("new").unwrap();
    assert_eq!(values(&n.read(10).unwrap()), vec![1]);
}

#[test]
fn removing_the_sink_that_was_behind_frees_its_entries_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, mut writer) = Journal::open(
        &settings(dir.path(), 1 << 30, WhenFull::Block),
        Metrics::new(),
    )
    .unwrap();
    journal.register_sinks(&["fast", "slow"]).unwrap();
    writer
        .append(&(0..3).map(reading).collect::<Vec<_>>())
        .unwrap();
    let mut fast = journal.reader("fast").unwrap();
    fast.read(10).unwrap();
    fast.commit(fast.read_position()).unwrap();
    assert!(journal.bytes() > 0, "held for the slow sink");
    journal.register_sinks(&["fast"]).unwrap();
    assert_eq!(journal.bytes(), 0);
}

#[test]
fn drop_oldest_counts_what_each_sink_lost() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Metrics::new();
    // Room for about eleven entries of ten readings.
    let max_bytes = entry_bytes(&(100..110).map(reading).collect::<Vec<_>>()) * 11;
    let (journal, mut writer) = Journal::open(
        &settings(dir.path(), max_bytes, WhenFull::DropOldest),
        metrics.clone(),
    )
    .unwrap();
    journal.register_sinks(&["slow", "fast"]).unwrap();
    let mut fast = journal.reader("fast").unwrap();
    let mut slow = journal.reader("slow").unwrap();
    let mut sent = 0;
    for chunk in 0..40 {
        let batch: Vec<Reading> = (chunk * 10..chunk * 10 + 10).map(reading).collect();
        writer.append(&batch).unwrap();
        sent += batch.len();
        let got = fast.read(100).unwrap();
        assert_eq!(got.len(), 10);
        fast.commit(fast.read_position()).unwrap();
        assert!(journal.bytes() <= max_bytes);
    }
    let kept = slow.read(10_000).unwrap();
    let dropped = metrics.sum("readings_dropped_total", &[("sink", "slow")]);
    assert!(dropped > 0);
    assert_eq!(
        kept.len() as u64 + dropped,
        sent as u64,
        "every reading is either kept or counted"
    );
    assert_eq!(
        metrics.sum("readings_dropped_total", &[("sink", "fast")]),
        0
    );
    assert_eq!(
        *values(&kept).last().unwrap(),
        sent - 1,
        "the newest are kept"
    );
}

#[test]
fn drop_oldest_does_not_count_what_a_reader_already_holds() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Metrics::new();
    // Room for about eleven entries of ten readings.
    let max_bytes = entry_bytes(&(100..110).map(reading).collect::<Vec<_>>()) * 11;
    let (journal, mut writer) = Journal::open(
        &settings(dir.path(), max_bytes, WhenFull::DropOldest),
        metrics.clone(),
    )
    .unwrap();
    journal.register_sinks(&["s"]).unwrap();
    let mut reader = journal.reader("s").unwrap();
    let mut delivered = Vec::new();
    let mut sent = 0;
    for chunk in 0..40 {
        let batch: Vec<Reading> = (chunk * 10..chunk * 10 + 10).map(reading).collect();
        writer.append(&batch).unwrap();
        sent += batch.len();
        // Read ahead a little (part of an entry), commit only now and then: drops happen
        // under a reader that holds readings not yet committed.
        delivered.extend(reader.read(7).unwrap().to_vec());
        if chunk % 5 == 4 {
            reader.commit(reader.read_position()).unwrap();
        }
    }
    delivered.extend(reader.read(100_000).unwrap().to_vec());
    let dropped = metrics.sum("readings_dropped_total", &[("sink", "s")]);
    assert!(dropped > 0);
    assert_eq!(
        delivered.len() as u64 + dropped,
        sent as u64,
        "each reading delivered or counted, never both"
    );
    let mut seen = values(&delivered);
    seen.dedup();
    assert_eq!(seen.len(), delivered.len(), "nothing delivered twice");
}

#[test]
fn block_waits_for_a_sink_to_free_space() {
    let dir = tempfile::tempdir().unwrap();
    let big: Vec<Reading> = (0..50).map(reading).collect();
    let max_bytes = entry_bytes(&big) * 3 / 2;
    let (journal, mut writer) = Journal::open(
        &settings(dir.path(), max_bytes, WhenFull::Block),
        Metrics::new(),
    )
    .unwrap();
    journal.register_sinks(&["s"]).unwrap();
    writer.append(&big).unwrap();
    let before = journal.bytes();
    assert!(before + before > max_bytes, "a second batch does not fit");
    let mut reader = journal.reader("s").unwrap();
    let handle = std::thread::spawn(move || {
        writer.append(&big).unwrap(); // blocks until the reader commits
        writer
    });
    assert_eq!(reader.read(1000).unwrap().len(), 50);
    reader.commit(reader.read_position()).unwrap();
    let _writer = handle.join().unwrap();
    assert_eq!(reader.read(1000).unwrap().len(), 50);
    assert_eq!(journal.bytes(), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_writer_acks_only_after_the_commit() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Metrics::new();
    let (journal, writer) = Journal::open(
        &settings(dir.path(), 1 << 30, WhenFull::Block),
        metrics.clone(),
    )
    .unwrap();
    journal.register_sinks(&["s"]).unwrap();
    let (tx, rx) = Inlet::new(16);
    let (ack_tx, mut ack_rx) = mpsc::channel(16);
    let mut committed = journal.reader("s").unwrap().committed();
    let task = tokio::task::spawn_blocking(move || writer.run(rx));
    for pkid in 1..=3u16 {
        let ack = Ack::new(pkid, ack_tx.clone(), Counter::default());
        tx.send(Envelope::new(vec![reading(pkid as usize)], Some(ack), 1))
            .await
            .unwrap();
    }
    let mut acked = Vec::new();
    for _ in 0..3 {
        let pkid = ack_rx.recv().await.unwrap();
        // An ack implies its reading is readable from the journal.
        let mut r = journal.reader("s").unwrap();
        let have = values(&r.read(100).unwrap());
        assert!(
            have.contains(&(pkid as usize)),
            "{pkid} acked before commit: {have:?}"
        );
        acked.push(pkid);
    }
    assert_eq!(acked, vec![1, 2, 3]);
    drop(tx);
    task.await.unwrap();
    assert!(
        committed.changed().await.is_err() || committed.changed().await.is_err(),
        "closed once the writer is done"
    );
    assert_eq!(metrics.sum("journal_readings_appended_total", &[]), 3);
}

#[test]
fn lag_counts_what_each_sink_has_not_written_across_reopens_and_drops() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), 1 << 30, WhenFull::Block);
    let lag = |m: &Metrics, sink: &str| {
        m.gauges()
            .into_iter()
            .find(|(k, _)| k.name == "sink_lag_readings" && k.labels[0].1 == sink)
            .map(|(_, v)| v)
    };
    {
        let metrics = Metrics::new();
        let (journal, mut writer) = Journal::open(&s, metrics.clone()).unwrap();
        journal.register_sinks(&["a", "b"]).unwrap();
        let mut a = journal.reader("a").unwrap();
        let _b = journal.reader("b").unwrap();
        writer
            .append(&(0..5).map(reading).collect::<Vec<_>>())
            .unwrap();
        writer
            .append(&(5..8).map(reading).collect::<Vec<_>>())
            .unwrap();
        assert_eq!(lag(&metrics, "a"), Some(8));
        a.read(3).unwrap();
        assert_eq!(lag(&metrics, "a"), Some(8), "read is not written");
        a.commit(a.read_position()).unwrap();
        assert_eq!(lag(&metrics, "a"), Some(5));
        assert_eq!(lag(&metrics, "b"), Some(8));
    }
    // After a reopen, the lag is counted from the cursors: a is inside the first entry.
    let metrics = Metrics::new();
    let (journal, mut writer) = Journal::open(&s, metrics.clone()).unwrap();
    journal.register_sinks(&["a", "b"]).unwrap();
    let mut a = journal.reader("a").unwrap();
    let mut b = journal.reader("b").unwrap();
    assert_eq!(lag(&metrics, "a"), Some(5));
    assert_eq!(lag(&metrics, "b"), Some(8));
    writer.append(&[reading(8)]).unwrap();
    a.read(100).unwrap();
    a.commit(a.read_position()).unwrap();
    b.read(100).unwrap();
    b.commit(b.read_position()).unwrap();
    assert_eq!(lag(&metrics, "a"), Some(0));
    assert_eq!(lag(&metrics, "b"), Some(0));
    // A sink no longer configured has no lag.
    drop(b);
    journal.register_sinks(&["a"]).unwrap();
    writer.append(&[reading(9)]).unwrap();
    assert_eq!(lag(&metrics, "a"), Some(1));
    assert_eq!(lag(&metrics, "b"), Some(0));
}

#[test]
fn lag_drops_with_the_readings_that_drop_oldest_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let one = entry_bytes(&[reading(0)]);
    // Room for three one-reading entries.
    let s = settings(dir.path(), one * 3, WhenFull::DropOldest);
    let metrics = Metrics::new();
    let (journal, mut writer) = Journal::open(&s, metrics.clone()).unwrap();
    journal.register_sinks(&["a"]).unwrap();
    let _a = journal.reader("a").unwrap();
    for i in 0..5 {
        writer.append(&[reading(i)]).unwrap();
    }
    let lag = metrics
        .gauges()
        .into_iter()
        .find(|(k, _)| k.name == "sink_lag_readings")
        .map(|(_, v)| v);
    assert_eq!(lag, Some(3));
    assert_eq!(metrics.sum("readings_dropped_total", &[("sink", "a")]), 2);
}

/// A journal left by a build from before entries recorded their encoding: version 0, no
/// `encoding` column, every entry in the plain encoding.
fn old_journal(path: &Path, entries: &[&[Reading]], cursor: Position) {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch(
        "CREATE TABLE entries (seq INTEGER PRIMARY KEY, readings INTEGER NOT NULL, data BLOB NOT NULL);
         CREATE TABLE cursors (sink TEXT PRIMARY KEY, seq INTEGER NOT NULL, idx INTEGER NOT NULL);",
    )
    .unwrap();
    for (i, readings) in entries.iter().enumerate() {
        let mut data = Vec::new();
        reading::encode_all_as(Encoding::Plain, *readings, &mut data);
        conn.execute(
            "INSERT INTO entries (seq, readings, data) VALUES (?1, ?2, ?3)",
            params![i as i64 + 1, readings.len() as i64, data],
        )
        .unwrap();
    }
    conn.execute(
        "INSERT INTO cursors (sink, seq, idx) VALUES ('a', ?1, ?2)",
        params![cursor.seq, cursor.idx],
    )
    .unwrap();
}

#[test]
fn an_older_journal_is_upgraded_and_its_entries_are_read_from_the_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), 1 << 30, WhenFull::Block);
    let first: Vec<Reading> = (0..4).map(reading).collect();
    let second: Vec<Reading> = (4..6).map(reading).collect();
    old_journal(&s.path, &[&first, &second], Position { seq: 1, idx: 2 });
    for reopen in 0..2 {
        let metrics = Metrics::new();
        let (journal, mut writer) = Journal::open(&s, metrics.clone()).unwrap();
        journal.register_sinks(&["a"]).unwrap();
        let mut a = journal.reader("a").unwrap();
        if reopen == 0 {
            assert_eq!(values(&a.read(100).unwrap()), vec![2, 3, 4, 5]);
            // New entries, in the current encoding, after the old ones.
            writer
                .append(&(6..9).map(reading).collect::<Vec<_>>())
                .unwrap();
            assert_eq!(values(&a.read(100).unwrap()), vec![6, 7, 8]);
            a.commit(Position { seq: 2, idx: 1 }).unwrap();
        } else {
            // The upgraded journal opens as it is, old entry and new.
            assert_eq!(values(&a.read(100).unwrap()), vec![5, 6, 7, 8]);
        }
    }
    let conn = Connection::open(&s.path).unwrap();
    let encodings: Vec<i64> = conn
        .prepare("SELECT encoding FROM entries ORDER BY seq")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        encodings,
        vec![Encoding::Plain.as_i64(), Encoding::CURRENT.as_i64()]
    );
}

#[test]
fn a_journal_of_a_newer_schema_is_refused_and_left_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), 1 << 30, WhenFull::Block);
    drop(Journal::open(&s, Metrics::new()).unwrap());
    let conn = Connection::open(&s.path).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    let err = Journal::open(&s, Metrics::new()).unwrap_err();
    assert!(
        matches!(
            err,
            JournalError::UnsupportedVersion {
                found: 99,
                supported: SCHEMA_VERSION,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("schema version 99"), "{err}");
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, 99);
}

#[test]
fn an_entry_in_an_unknown_encoding_is_reported_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), 1 << 30, WhenFull::Block);
    let (journal, mut writer) = Journal::open(&s, Metrics::new()).unwrap();
    journal.register_sinks(&["a"]).unwrap();
    writer.append(&[reading(0)]).unwrap();
    Connection::open(&s.path)
        .unwrap()
        .execute("UPDATE entries SET encoding = 7", [])
        .unwrap();
    let err = journal.reader("a").unwrap().read(10).unwrap_err();
    assert!(
        matches!(err, JournalError::Corrupt { seq: 1, .. }),
        "{err:?}"
    );
}

/// A journal with sink "s" whose writer runs with a commit delay of a minute, fed through an
/// inlet with room for `capacity` messages: a test times out if a commit waits for the delay.
fn patient_writer(
    dir: &Path,
    metrics: &Metrics,
    capacity: usize,
) -> (Journal, Inlet, tokio::task::JoinHandle<()>) {
    acking_writer(dir, metrics, capacity, Duration::ZERO, 1)
}

/// [`patient_writer`], whose commits that acknowledge messages wait up to `ack_delay` for
/// `ack_batch` messages to acknowledge.
fn acking_writer(
    dir: &Path,
    metrics: &Metrics,
    capacity: usize,
    ack_delay: Duration,
    ack_batch: usize,
) -> (Journal, Inlet, tokio::task::JoinHandle<()>) {
    let mut s = settings(dir, 1 << 30, WhenFull::Block);
    s.commit_delay = Duration::from_secs(60);
    s.ack_delay = ack_delay;
    s.ack_batch = ack_batch;
    let (journal, writer) = Journal::open(&s, metrics.clone()).unwrap();
    journal.register_sinks(&["s"]).unwrap();
    let (tx, rx) = Inlet::new(capacity);
    (
        journal,
        tx,
        tokio::task::spawn_blocking(move || writer.run(rx)),
    )
}

/// Ends the input of `task`'s writer: it must commit what it holds at once, not after its
/// delays (a minute in these tests).
async fn end_input(tx: Inlet, task: tokio::task::JoinHandle<()>) {
    drop(tx);
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("the end of input commits at once")
        .unwrap();
}

/// A commit that acknowledges nothing waits (up to `commit_delay`) for more; one with an ack,
/// or the end of input, goes at once. The delay here is a minute: the test would time out if
/// either waited for it.
#[tokio::test(flavor = "multi_thread")]
async fn unacknowledged_readings_wait_for_company_and_an_ack_or_the_end_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Metrics::new();
    let (journal, tx, task) = patient_writer(dir.path(), &metrics, 16);
    let (ack_tx, mut ack_rx) = mpsc::channel(16);
    let commits = || metrics.sum("journal_commits_total", &[]);
    for i in 0..5 {
        tx.send(Envelope::new(vec![reading(i)], None, 1))
            .await
            .unwrap();
    }
    let ack = Ack::new(7, ack_tx, Counter::default());
    tx.send(Envelope::new(vec![reading(5)], Some(ack), 1))
        .await
        .unwrap();
    let acked = tokio::time::timeout(Duration::from_secs(20), ack_rx.recv()).await;
    assert_eq!(
        acked.unwrap(),
        Some(7),
        "the ack went out without the delay"
    );
    assert_eq!(
        commits(),
        1,
        "the five before it waited for it, in one commit"
    );
    for i in 6..9 {
        tx.send(Envelope::new(vec![reading(i)], None, 1))
            .await
            .unwrap();
    }
    end_input(tx, task).await;
    assert_eq!(commits(), 2);
    let mut r = journal.reader("s").unwrap();
    assert_eq!(values(&r.read(100).unwrap()), (0..9).collect::<Vec<_>>());
}

/// ... and goes at once when half of the pipeline's room is taken: the sources would
/// otherwise wait for the delay, with nothing to send.
#[tokio::test(flavor = "multi_thread")]
async fn a_waiting_commit_goes_once_half_the_room_is_taken() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Metrics::new();
    let (journal, tx, task) = patient_writer(dir.path(), &metrics, 8);
    let mut committed = journal.reader("s").unwrap().committed();
    for i in 0..4 {
        tx.send(Envelope::new(vec![reading(i)], None, 1))
            .await
            .unwrap();
    }
    tokio::time::timeout(Duration::from_secs(20), committed.changed())
        .await
        .expect("committed without the delay")
        .unwrap();
    assert_eq!(metrics.sum("journal_commits_total", &[]), 1);
    let mut r = journal.reader("s").unwrap();
    assert_eq!(values(&r.read(100).unwrap()), (0..4).collect::<Vec<_>>());
    end_input(tx, task).await;
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

fn wal_len(path: &Path) -> u64 {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    file_len(Path::new(&wal))
}

/// Writes about 10 MB of entries, has the sink write them all, and returns the journal's
/// file and WAL sizes then.
fn idle_sizes_after_a_burst(s: &JournalSettings) -> (u64, u64) {
    let (journal, mut writer) = Journal::open(s, Metrics::new()).unwrap();
    journal.register_sinks(&["a"]).unwrap();
    let mut a = journal.reader("a").unwrap();
    let mut largest = 0;
    // A sink that was down: the journal grows.
    for e in 0..300 {
        writer
            .append(&(e * 1000..(e + 1) * 1000).map(reading).collect::<Vec<_>>())
            .unwrap();
    }
    largest = largest.max(file_len(&s.path) + wal_len(&s.path));
    assert!(largest > 8 << 20, "{largest}");
    // It comes back and writes everything, in batches.
    loop {
        let batch = a.read(20_000).unwrap();
        if batch.is_empty() {
            break;
        }
        a.commit(a.read_position()).unwrap();
    }
    assert_eq!(journal.bytes(), 0);
    (file_len(&s.path), wal_len(&s.path))
}

#[test]
fn an_idle_journal_gives_back_what_its_sinks_have_written() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), 1 << 30, WhenFull::Block);
    let (file, wal) = idle_sizes_after_a_burst(&s);
    assert!(file < RECLAIM_BYTES + (64 << 10), "file {file}");
    assert!(wal <= WAL_LIMIT_BYTES as u64, "wal {wal}");
}

#[test]
fn a_journal_made_before_it_gave_space_back_is_converted_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), 1 << 30, WhenFull::Block);
    {
        // As a journal of the build before: no auto_vacuum, an entry in it.
        let conn = Connection::open(&s.path).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        let (journal, mut writer) = Journal::open(&s, Metrics::new()).unwrap();
        drop(journal);
        writer.append(&[reading(1)]).unwrap();
        drop(writer);
        conn.pragma_update(None, "auto_vacuum", "NONE").unwrap();
        conn.execute_batch("VACUUM").unwrap();
        let mode: i64 = conn
            .pragma_query_value(None, "auto_vacuum", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, 0);
    }
    let (journal, _writer) = Journal::open(&s, Metrics::new()).unwrap();
    journal.register_sinks(&["a"]).unwrap();
    let conn = Connection::open(&s.path).unwrap();
    let mode: i64 = conn
        .pragma_query_value(None, "auto_vacuum", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, 2, "incremental");
    assert_eq!(
        values(&journal.reader("a").unwrap().read(10).unwrap()),
        vec![1]
    );
    drop((journal, _writer));
    let (file, wal) = idle_sizes_after_a_burst(&s);
    assert!(file < RECLAIM_BYTES + (64 << 10), "file {file}");
    assert!(wal <= WAL_LIMIT_BYTES as u64, "wal {wal}");
}

#[test]
fn an_error_keeps_its_cause_and_prints_it_once() {
    let dir = tempfile::tempdir().unwrap();
    // A file where the data directory should be: the directory cannot be created.
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, b"").unwrap();
    let s = settings(&blocker.join("sub"), 1 << 30, WhenFull::Block);
    let err = Journal::open(&s, Metrics::new()).unwrap_err();
    assert!(matches!(err, JournalError::CreateDir { .. }), "{err:?}");
    let cause = std::error::Error::source(&err).unwrap().to_string();
    let chain = format!("{:#}", anyhow::Error::new(err));
    assert_eq!(chain.matches(&cause).count(), 1, "{chain}");
    assert!(chain.starts_with("cannot create "), "{chain}");
}

/// Group commit at QoS 1: messages to acknowledge wait (up to `ack_delay`, a minute here:
/// the test would time out) until `ack_batch` of them are waiting, then go in one commit;
/// none is acked before that commit, and the end of input commits the rest at once.
#[tokio::test(flavor = "multi_thread")]
async fn acks_wait_for_a_batch_in_one_commit_and_the_end_commits_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Metrics::new();
    let (journal, tx, task) = acking_writer(dir.path(), &metrics, 64, Duration::from_secs(60), 4);
    let (ack_tx, mut ack_rx) = mpsc::channel(16);
    let commits = || metrics.sum("journal_commits_total", &[]);
    let ack = |pkid| Some(Ack::new(pkid, ack_tx.clone(), Counter::default()));
    tx.send(Envelope::new(vec![reading(0)], ack(1), 1))
        .await
        .unwrap();
    tx.send(Envelope::new(vec![reading(1)], None, 1))
        .await
        .unwrap();
    // Two messages in one envelope (an MQTT read of two packets): 3 waiting.
    tx.send(Envelope::new(vec![reading(2), reading(3)], ack(2), 2))
        .await
        .unwrap();
    tx.send(Envelope::new(vec![reading(4)], ack(3), 1))
        .await
        .unwrap();
    let mut acked = Vec::new();
    for _ in 0..3 {
        let pkid = tokio::time::timeout(Duration::from_secs(20), ack_rx.recv())
            .await
            .expect("the fourth message to ack made the commit go");
        acked.push(pkid.unwrap());
        // Acked, hence committed: readable.
        assert_eq!(commits(), 1, "one commit for the four messages");
    }
    assert_eq!(acked, vec![1, 2, 3]);
    let mut r = journal.reader("s").unwrap();
    assert_eq!(values(&r.read(100).unwrap()), (0..5).collect::<Vec<_>>());

    // One more to ack, then the end of input: committed at once, not after a minute.
    tx.send(Envelope::new(vec![reading(5)], ack(4), 1))
        .await
        .unwrap();
    end_input(tx, task).await;
    assert_eq!(ack_rx.recv().await, Some(4));
    assert_eq!(commits(), 2);
    assert_eq!(values(&r.read(100).unwrap()), vec![5]);
}

/// A message to acknowledge waits `ack_delay` at most, counted from the first of the
/// commit, however long the commit delay of unacknowledged readings.
#[tokio::test(flavor = "multi_thread")]
async fn an_ack_waits_no_longer_than_the_ack_delay() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Metrics::new();
    let delay = Duration::from_millis(50);
    let (journal, tx, task) = acking_writer(dir.path(), &metrics, 64, delay, 1000);
    let (ack_tx, mut ack_rx) = mpsc::channel(16);
    // An unacknowledged reading first: the commit would wait a minute for company.
    tx.send(Envelope::new(vec![reading(0)], None, 1))
        .await
        .unwrap();
    let sent = std::time::Instant::now();
    let ack = Ack::new(9, ack_tx, Counter::default());
    tx.send(Envelope::new(vec![reading(1)], Some(ack), 1))
        .await
        .unwrap();
    let acked = tokio::time::timeout(Duration::from_secs(20), ack_rx.recv())
        .await
        .expect("acked after the ack delay, not the commit delay");
    assert_eq!(acked, Some(9));
    assert!(sent.elapsed() >= delay, "it waited for company first");
    assert_eq!(metrics.sum("journal_commits_total", &[]), 1);
    let mut r = journal.reader("s").unwrap();
    assert_eq!(values(&r.read(100).unwrap()), vec![0, 1]);
    end_input(tx, task).await;
}
