//! The journal's write rate with `sync = true` (every commit fsynced before it is acked), by
//! the number of readings per commit (the writer takes whatever is waiting: one message's
//! readings under a light load, thousands under a heavy one).
//!
//! ```sh
//! cargo bench -p telemetry-collector --bench journal            # in a temporary directory
//! JOURNAL_BENCH_DIR=/var/lib/telemetry-collector cargo bench -p telemetry-collector --bench journal
//! ```
//!
//! A plain program (no statistics framework): each case runs for about two seconds and
//! prints commits per second and readings per second.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use collector::config::{JournalSettings, WhenFull};
use collector::journal::Journal;
use collector::metrics::Metrics;
use collector::reading::{FieldValue, Reading};

fn reading(i: usize) -> Reading {
    let mut r = Reading::new("env", 1_700_000_000_000_000_000 + i as i64);
    r.set_tag("device", format!("dev-{:04}", i % 1000));
    r.set_tag("site", format!("site-{:02}", i % 10));
    r.fields = vec![
        ("temperature".into(), FieldValue::Float(21.53)),
        ("humidity".into(), FieldValue::Float(48.2)),
        ("pressure".into(), FieldValue::Float(1013.25)),
        ("counter".into(), FieldValue::Float(i as f64)),
    ];
    r
}

fn main() {
    let base = std::env::var_os("JOURNAL_BENCH_DIR").map(std::path::PathBuf::from);
    let dir = match &base {
        Some(b) => tempfile::tempdir_in(b).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    println!(
        "journal write rate, sync = true, in {}",
        dir.path().display()
    );
    println!(
        "{:>18} {:>12} {:>14}",
        "readings/commit", "commits/s", "readings/s"
    );
    for per_commit in [1usize, 10, 100, 1000, 10_000] {
        let path = dir.path().join(format!("journal-{per_commit}.db"));
        let (journal, mut writer) = Journal::open(
            &JournalSettings {
                path,
                max_bytes: 64 << 30,
                when_full: WhenFull::Block,
                sync: true,
                commit_delay: std::time::Duration::ZERO,
                ack_delay: std::time::Duration::ZERO,
                ack_batch: 1,
            },
            Metrics::new(),
        )
        .unwrap();
        journal.register_sinks(&["bench"]).unwrap();
        let batch: Vec<Reading> = (0..per_commit).map(reading).collect();
        let start = Instant::now();
        let mut commits = 0u64;
        while start.elapsed() < Duration::from_secs(2) {
            writer.append(&batch).unwrap();
            commits += 1;
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{per_commit:>18} {:>12.0} {:>14.0}",
            commits as f64 / secs,
            (commits * per_commit as u64) as f64 / secs
        );
    }
}
