//! The store under `kill -9` (a child process, this test binary run again, killed with
//! SIGKILL in the middle of compactions and of an upgrade) and readers beside a writer that
//! compacts and drops chunks: nothing committed is lost, nothing half-written is seen.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rusqlite::{params, Connection};

use super::codec::{self, Codec};
use super::tests::checked_chunks;
use super::*;
use crate::reading::{FieldValue, Reading, DEVICE_TAG};

const T0: i64 = 1_700_000_000_000_000_000;
const SEC: i64 = 1_000_000_000;
const SERIES: i64 = 30;
const PER_SERIES: i64 = 40;

/// Batch `b`: `PER_SERIES` points of each of `SERIES` devices, values that tell the batch
/// and point apart.
fn batch(b: i64) -> Vec<Reading> {
    (0..PER_SERIES)
        .flat_map(|i| {
            (0..SERIES).map(move |d| {
                let ts = T0 + (b * PER_SERIES + i) * SEC;
                let mut r = Reading::new("env", ts);
                r.set_tag(DEVICE_TAG, format!("d{d:02}"));
                r.fields = vec![("v".into(), FieldValue::Float((b * 1000 + i) as f64 / 100.0))];
                r
            })
        })
        .collect()
}

/// The timestamps and values each device holds, in time order.
fn by_device(store: &LocalStore) -> BTreeMap<String, Vec<(i64, FieldValue)>> {
    let mut out: BTreeMap<String, Vec<(i64, FieldValue)>> = BTreeMap::new();
    for p in store.query(&Query::default()).unwrap() {
        out.entry(p.tags[0].1.clone())
            .or_default()
            .push((p.timestamp, p.value));
    }
    out
}

/// The points batches `from..to` wrote, by device.
fn expected(from: i64, to: i64) -> BTreeMap<String, Vec<(i64, FieldValue)>> {
    let mut out: BTreeMap<String, Vec<(i64, FieldValue)>> = BTreeMap::new();
    for b in from..to {
        for r in batch(b) {
            out.entry(r.tags[0].1.to_string())
                .or_default()
                .push((r.timestamp, r.fields[0].1.clone()));
        }
    }
    out
}

/// Runs this test binary's `child` test with `mode` and `path` in its environment.
fn spawn_child(mode: &str, path: &Path, from: i64) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "store::crash_tests::child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("STORE_CHILD", mode)
        .env("STORE_CHILD_PATH", path)
        .env("STORE_CHILD_FROM", from.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// What the parent runs in a child process: `compact` writes batches from
/// `STORE_CHILD_FROM` on, compacting after each, and prints `stored <b>` once batch `b` is
/// committed, until it is killed; `upgrade` opens the store (upgrading it) and prints
/// `done`.
#[test]
#[ignore = "run by the kill -9 tests in a child process"]
fn child() {
    let Ok(mode) = std::env::var("STORE_CHILD") else {
        return;
    };
    let path = std::path::PathBuf::from(std::env::var("STORE_CHILD_PATH").unwrap());
    match mode.as_str() {
        "compact" => {
            let mut store = LocalStore::open(&path).unwrap();
            // A compaction at every insert (merging tails every 4 rows in tests).
            store.compact_points = 1;
            let from: i64 = std::env::var("STORE_CHILD_FROM").unwrap().parse().unwrap();
            for b in from.. {
                store.insert(&batch(b)).unwrap();
                println!("stored {b}");
            }
        }
        "upgrade" => {
            drop(LocalStore::open(&path).unwrap());
            println!("done");
        }
        other => panic!("unknown mode {other}"),
    }
}

/// A simple deterministic generator for the kill delays.
fn delays(seed: u64) -> impl Iterator<Item = Duration> {
    let mut rng = simulator::model::SplitMix64::new(seed);
    std::iter::repeat_with(move || Duration::from_micros(rng.below(30_000)))
}

#[test]
fn kill_9_during_compactions_loses_nothing_committed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let mut next = 0i64;
    for delay in delays(11).take(6) {
        let mut child = spawn_child("compact", &path, next);
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // Once it has stored a few batches (compacting each), at a moment of its work.
        let mut reported = next - 1;
        while reported < next + 2 {
            let line = lines.next().unwrap().unwrap();
            // libtest writes its own words before the first line.
            if let Some((_, b)) = line.rsplit_once("stored ") {
                reported = b.parse().unwrap();
            }
        }
        std::thread::sleep(delay);
        child.kill().unwrap();
        child.wait().unwrap();
        for line in lines {
            if let Some((_, b)) = line.unwrap().rsplit_once("stored ") {
                reported = b.parse().unwrap();
            }
        }
        // Every batch it reported, and possibly the one it committed without saying so.
        let store = LocalStore::open_read_only(&path).unwrap();
        let got = by_device(&store);
        let with_next = expected(0, reported + 2);
        let without = expected(0, reported + 1);
        assert!(
            got == without || got == with_next,
            "after the kill at batch {reported}"
        );
        next = if got == with_next {
            reported + 2
        } else {
            reported + 1
        };
        checked_chunks(&store);
    }
    // And a writer takes it over as it is.
    let mut store = LocalStore::open(&path).unwrap();
    store.insert(&batch(next)).unwrap();
    store.compact().unwrap();
    assert_eq!(by_device(&store), expected(0, next + 1));
}

/// Turns a store of this build into one as version 2 wrote it: chunks in version 2's
/// layout, no `codec` column nor time index, `user_version` 2. The fixture made by the
/// build of 16f8a35 checks that the result has version 2's columns.
fn downgrade_to_v2(path: &Path) {
    let conn = Connection::open(path).unwrap();
    let chunks: Vec<(i64, i64, Vec<u8>, i64)> = {
        let mut stmt = conn
            .prepare("SELECT id, points, data, codec FROM chunks")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    let mut decoded = Vec::new();
    for (id, points, data, c) in chunks {
        codec::decode(Codec::from_i64(c).unwrap(), &data, points, &mut decoded).unwrap();
        let mut v2 = Vec::new();
        let mut ts = Vec::new();
        let mut raw = Vec::new();
        for (t, v) in &decoded {
            ts.push(*t);
            v.encode(&mut raw);
        }
        codec::write_version2_for_tests(&ts, &raw, &mut v2);
        conn.execute("UPDATE chunks SET data = ?2 WHERE id = ?1", params![id, v2])
            .unwrap();
    }
    conn.execute_batch(
        "DROP INDEX chunks_by_time;
         ALTER TABLE chunks DROP COLUMN codec;
         PRAGMA user_version = 2;",
    )
    .unwrap();
}

fn columns(conn: &Connection, table: &str) -> Vec<String> {
    let mut stmt = conn
        .prepare(&format!("PRAGMA table_info({table})"))
        .unwrap();
    stmt.query_map([], |r| r.get(1))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn kill_9_during_the_upgrade_from_version_2_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    {
        let mut store = LocalStore::open(&path).unwrap();
        for b in 0..60 {
            store.insert(&batch(b)).unwrap();
        }
        store.settle().unwrap();
    }
    let want = expected(0, 60);
    downgrade_to_v2(&path);
    // What the build of 16f8a35 made looks the same.
    let fixture = dir.path().join("fixture.db");
    std::fs::write(&fixture, include_bytes!("fixtures/store-v2.sqlite")).unwrap();
    let (ours, theirs) = (
        Connection::open(&path).unwrap(),
        Connection::open(&fixture).unwrap(),
    );
    for table in ["series", "chunks", "recent"] {
        assert_eq!(columns(&ours, table), columns(&theirs, table), "{table}");
    }
    drop((ours, theirs));

    let mut killed_midway = 0;
    // Four kills, then a child that is left to finish.
    for delay in delays(5).take(4) {
        let mut child = spawn_child("upgrade", &path, 0);
        // Kill it once the upgrade has started (its note is there), at a moment of it.
        let started = Instant::now();
        loop {
            let pending = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)
                .and_then(|c| {
                    c.query_row(
                        "SELECT COUNT(*) FROM sqlite_schema WHERE name = 'upgrade_v2'",
                        [],
                        |r| r.get::<_, i64>(0),
                    )
                })
                .unwrap_or(0);
            let exited = child.try_wait().unwrap().is_some();
            if pending > 0 || exited || started.elapsed() > Duration::from_secs(30) {
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        std::thread::sleep(delay / 3);
        child.kill().unwrap();
        let status = child.wait().unwrap();
        match LocalStore::open_read_only(&path) {
            // Killed before the first transaction: still version 2.
            Err(StoreError::Outdated { found: 2, .. }) => {}
            Ok(store) => {
                assert_eq!(by_device(&store), want, "after a kill ({status})");
                checked_chunks(&store);
                let left: i64 = store
                    .conn
                    .query_row("SELECT COUNT(*) FROM chunks WHERE codec = 0", [], |r| {
                        r.get(0)
                    })
                    .unwrap();
                let total: i64 = store
                    .conn
                    .query_row("SELECT COUNT(*) FROM chunks", [], |r| r.get(0))
                    .unwrap();
                killed_midway += i32::from(left > 0 && left < total);
            }
            Err(e) => panic!("{e}"),
        }
    }
    let mut child = spawn_child("upgrade", &path, 0);
    assert!(child.wait().unwrap().success());
    assert!(
        killed_midway > 0,
        "no kill landed in the middle of the upgrade"
    );
    let store = LocalStore::open(&path).unwrap();
    assert_eq!(by_device(&store), want);
    let left: i64 = store
        .conn
        .query_row("SELECT COUNT(*) FROM chunks WHERE codec = 0", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(left, 0);
}

#[test]
fn readers_never_see_a_torn_chunk_or_batch_during_compaction_and_retention() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let mut writer = LocalStore::open(&path).unwrap();
    writer.compact_points = 2 * (SERIES * PER_SERIES) as u64;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (path, stop) = (path.clone(), stop.clone());
            std::thread::spawn(move || {
                let store = LocalStore::open_read_only(&path).unwrap();
                let mut reads = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) || reads == 0 {
                    // Any read that fails to decode, or sees part of a batch, or a series
                    // with a hole, fails the test.
                    let got = by_device(&store);
                    let last = got.values().map(|p| p.last().unwrap().0).max();
                    for (device, points) in &got {
                        assert_eq!(points.last().map(|p| p.0), last, "{device}: a torn batch");
                        assert!(
                            points.windows(2).all(|w| w[1].0 - w[0].0 == SEC),
                            "{device}: a hole"
                        );
                    }
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    for b in 0..150 {
        writer.insert(&batch(b)).unwrap();
        // Retention by size (a bound that drops chunks every few batches) and by age.
        writer.drop_oldest(1 << 20).unwrap();
        if b % 25 == 24 {
            writer
                .delete_older_than(T0 + (b - 40) * PER_SERIES * SEC)
                .unwrap();
        }
        if b % 50 == 49 {
            writer.settle().unwrap();
        }
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
}
