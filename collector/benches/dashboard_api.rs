//! The dashboard's JSON API over a local store holding one day of 1 Hz data from 100 devices
//! (4 fields each: 34.56 million points), timed through the real HTTP server.
//!
//! ```sh
//! cargo bench -p telemetry-collector --bench dashboard_api
//! DASHBOARD_BENCH_STORE=/var/tmp/day.db cargo bench -p telemetry-collector --bench dashboard_api
//! ```
//!
//! The store is filled through `LocalStore::insert` (as the sink writes it: batches of 10
//! seconds of every device, compaction included, so that the newest 60,000 points are in
//! `recent` as in a running collector's store), a day ending now; with
//! `DASHBOARD_BENCH_STORE` it is kept and reused by the next run (delete it to fill again).
//! Each request is then sent `RUNS` times (default 21) over one keep-alive connection; the
//! program prints the median and the slowest, and the size of the answer. A plain program (no
//! statistics framework).

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use collector::dashboard::Dashboard;
use collector::http::{bind, serve, Access, ConnectionLimits, HealthLimits};
use collector::metrics::Metrics;
use collector::reading::{FieldValue, Reading};
use collector::store::LocalStore;
use tokio_util::sync::CancellationToken;

const DEVICES: i64 = 100;
const SECONDS: i64 = 86_400;
const SEC: i64 = 1_000_000_000;

fn fill(path: &std::path::Path, end_s: i64) {
    let started = Instant::now();
    let mut store = LocalStore::open(path).unwrap();
    let first = end_s - SECONDS;
    let mut batch = Vec::with_capacity(10 * DEVICES as usize);
    for s in first..end_s {
        for d in 0..DEVICES {
            let ts = s * SEC + d * 1_000;
            let x = (s - first) as f64;
            let mut r = Reading::new("env", ts);
            r.set_tag("device", format!("dev-{d:04}"));
            r.set_tag("site", format!("site-{:02}", d % 10));
            r.fields = vec![
                (
                    "temperature".into(),
                    FieldValue::Float(20.0 + 5.0 * (x / 13_750.0 + d as f64).sin()),
                ),
                (
                    "humidity".into(),
                    FieldValue::Float(45.0 + (x / 600.0).cos()),
                ),
                (
                    "pressure".into(),
                    FieldValue::Float(1013.0 + (x / 3600.0).sin()),
                ),
                ("count".into(), FieldValue::Float(x)),
            ];
            batch.push(r);
        }
        if batch.len() == batch.capacity() {
            store.insert(&batch).unwrap();
            batch.clear();
        }
        if (s - first) % 7200 == 0 {
            eprint!(
                "\rfilling {}: {:>3}% ({:.0} s)",
                path.display(),
                (s - first) * 100 / SECONDS,
                started.elapsed().as_secs_f64()
            );
        }
    }
    store.insert(&batch).unwrap();
    // No final compaction: like a running collector's store, `recent` holds the newest
    // points (60,000 here, out of at most 100,000), which every query reads too.
    eprintln!(
        "\rfilled {} with {} points in {:.0} s",
        path.display(),
        DEVICES * SECONDS * 4,
        started.elapsed().as_secs_f64()
    );
}

fn main() {
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(21);
    let kept = std::env::var_os("DASHBOARD_BENCH_STORE").map(PathBuf::from);
    let tmp = tempfile::tempdir().unwrap();
    let path = kept.unwrap_or_else(|| tmp.path().join("store.db"));
    let now_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    if !path.exists() {
        fill(&path, now_s);
    }
    // The day the store holds, from its newest point.
    let end_ns = LocalStore::open_read_only(&path)
        .unwrap()
        .latest(&collector::store::Query::default())
        .unwrap()
        .iter()
        .map(|p| p.timestamp)
        .max()
        .unwrap()
        + SEC;
    let day = (end_ns - SECONDS * SEC, end_ns);
    let hour = (end_ns - 3600 * SEC, end_ns);
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    println!(
        "store {} ({:.0} MiB), {} runs per request, median and slowest:",
        path.display(),
        size as f64 / (1 << 20) as f64,
        runs
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(serve(
            listener,
            ConnectionLimits {
                header_timeout: std::time::Duration::from_secs(10),
                max_connections: 64,
            },
            Access::default(),
            Metrics::new(),
            HealthLimits {
                journal_max_bytes: 1 << 30,
            },
            Dashboard::new(Some(path.clone())),
            stop.clone(),
        ));
        // reqwest is built without a crypto provider of its own (`rustls-no-provider`): the
        // tree's one, for the plain HTTP this client speaks (deprecated only for lacking
        // post-quantum key exchange, as `collector/src/tls.rs` says).
        #[allow(deprecated)]
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::new();
        let cases = [
            ("devices (100)", "/api/v1/devices".to_owned()),
            ("latest values (400 series)", "/api/v1/latest".to_owned()),
            (
                "raw, 1 series, 1 hour (3,600 points)",
                format!(
                    "/api/v1/points?device=dev-0042&field=temperature&from={}&to={}",
                    hour.0, hour.1
                ),
            ),
            (
                "raw, 1 series, 1 day (86,400 points)",
                format!(
                    "/api/v1/points?device=dev-0042&field=temperature&from={}&to={}&limit=100000",
                    day.0, day.1
                ),
            ),
            (
                "downsampled, 1 device, 1 hour, step 15s (page)",
                format!(
                    "/api/v1/downsample?device=dev-0042&from={}&to={}&step=15s&epoch=ms",
                    hour.0, hour.1
                ),
            ),
            (
                "downsampled, 1 device, 1 day, step 5m (page)",
                format!(
                    "/api/v1/downsample?device=dev-0042&from={}&to={}&step=5m&epoch=ms",
                    day.0, day.1
                ),
            ),
            (
                "downsampled, 1 series, 1 day, step 1m",
                format!(
                    "/api/v1/downsample?device=dev-0042&field=temperature&from={}&to={}&step=1m",
                    day.0, day.1
                ),
            ),
            (
                "downsampled, 100 series, 1 day, step 15m",
                format!(
                    "/api/v1/downsample?field=temperature&from={}&to={}&step=15m",
                    day.0, day.1
                ),
            ),
        ];
        println!(
            "{:<50} {:>10} {:>10} {:>10}",
            "request", "median", "slowest", "bytes"
        );
        for (name, path) in cases {
            let url = format!("http://{addr}{path}");
            let mut times = Vec::with_capacity(runs);
            let mut bytes = 0;
            for _ in 0..runs {
                let started = Instant::now();
                let response = client.get(&url).send().await.unwrap();
                assert!(
                    response.status().is_success(),
                    "{url}: {}",
                    response.status()
                );
                bytes = response.bytes().await.unwrap().len();
                times.push(started.elapsed());
            }
            times.sort();
            println!(
                "{name:<50} {:>10} {:>10} {bytes:>10}",
                ms(times[times.len() / 2]),
                ms(times[times.len() - 1])
            );
        }
        stop.cancel();
    });
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}
