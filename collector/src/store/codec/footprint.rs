//! Not a test: makes a local store of the end-to-end benchmark's workload (1,000 devices,
//! 500 readings of 3 floats at 1 s, measurement `env`, tags `device` and `site` as the
//! simulator's fleet sends them), written through the store as the collector writes it
//! (1,000 readings per insert), then settled, and leaves it at `FOOTPRINT_DB` for
//! `sqlite3` to take apart (`dbstat`):
//!
//! ```text
//! FOOTPRINT_DB=/tmp/e2e.db [FOOTPRINT_PAGE_SIZE=4096] cargo test --release -p telemetry-collector --lib \
//!     measure_store_footprint -- --ignored --nocapture
//! sqlite3 /tmp/e2e.db "SELECT name, count(*), sum(pgsize), sum(payload) FROM dbstat GROUP BY name"
//! ```

use simulator::model::DeviceModel;

use crate::reading::{FieldValue, Reading, DEVICE_TAG};
use crate::store::LocalStore;

#[test]
#[ignore = "a measurement, not a test"]
fn measure_store_footprint() {
    let path = std::env::var("FOOTPRINT_DB").unwrap_or_else(|_| "/tmp/footprint.db".into());
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{path}{suffix}"));
    }
    // `FOOTPRINT_PAGE_SIZE`: the file made with that page size first (as an existing
    // store keeps its own), to compare with the page size of new stores.
    if let Ok(size) = std::env::var("FOOTPRINT_PAGE_SIZE") {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.pragma_update(None, "page_size", size.parse::<i64>().unwrap())
            .unwrap();
        conn.execute_batch("VACUUM").unwrap();
    }
    let mut store = LocalStore::open(std::path::Path::new(&path)).unwrap();
    let (devices, samples, sites) = (1000usize, 500u64, 10usize);
    let models: Vec<_> = (0..devices).map(|d| DeviceModel::new(42, d)).collect();
    let names: Vec<_> = (0..devices)
        .map(|d| (format!("dev-{d:04}"), format!("site-{:02}", d % sites)))
        .collect();
    for s in 0..samples {
        let batch: Vec<Reading> = (0..devices)
            .map(|d| {
                let ts = 1_700_000_000_000_000_000 + s as i64 * 1_000_000_000 + d as i64 * 1_000;
                let sample = models[d].sample(s, ts);
                let mut r = Reading::new("env", ts);
                r.set_tag(DEVICE_TAG, names[d].0.as_str());
                r.set_tag("site", names[d].1.as_str());
                r.fields = vec![
                    ("temperature".into(), FieldValue::Float(sample.temperature)),
                    ("humidity".into(), FieldValue::Float(sample.humidity)),
                    ("pressure".into(), FieldValue::Float(sample.pressure)),
                ];
                r
            })
            .collect();
        store.insert(&batch).unwrap();
    }
    while store.settle().unwrap() > 0 {}
    println!("{path}: {:?}", store.size().unwrap());
}
