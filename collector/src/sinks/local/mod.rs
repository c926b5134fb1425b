//! The local sink: the default sink, which needs no server. A thin adapter over the
//! [local store](crate::store): [`LocalSink`] writes batches into a [`LocalStore`] off the
//! async runtime, applies retention by age and by size when due, settles the store once
//! writes stop, and reports the store's size in the metrics.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::error::error_chain;
use crate::metrics::{Counter, Gauge, Metrics};
use crate::sinks::{Batch, Sink, SinkError};
use crate::store::{LocalStore, StoreError};
use crate::sync::MutexExt;
use crate::time::{duration_ns, now_ns};

/// Retention by age runs at most this often (and once at open), and the size metrics are
/// brought up to date as often. Retention by size looks after every write.
const RETENTION_INTERVAL: Duration = Duration::from_secs(60);

/// `local_store_points` is counted at most this often (it reads every chunk row).
const POINTS_INTERVAL: Duration = Duration::from_secs(600);

/// Once no write has come for this long, the store is settled ([`LocalStore::settle`]): the
/// points not yet compacted and the short rows of each series' newest points are put in
/// their final, smallest form.
const SETTLE_AFTER: Duration = Duration::from_secs(10);

/// How often the settling thread looks.
const SETTLE_POLL: Duration = Duration::from_secs(1);

/// What the local sink needs, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalSinkSettings {
    /// The SQLite file; created with its parent directories when missing.
    pub path: PathBuf,
    /// Points older than this are deleted; `None` keeps everything.
    pub retention: Option<Duration>,
    /// The oldest chunks are dropped when the file's pages in use take more than this;
    /// `None`: no bound.
    pub max_bytes: Option<u64>,
}

/// The local store's metrics.
#[derive(Debug, Clone)]
struct StoreMetrics {
    file_bytes: Gauge,
    free_bytes: Gauge,
    wal_bytes: Gauge,
    series: Gauge,
    points: Gauge,
    dropped_for_size: Counter,
    dropped_for_age: Counter,
    /// When `points` was last counted.
    points_counted: Arc<Mutex<Option<Instant>>>,
}

impl StoreMetrics {
    fn new(metrics: &Metrics) -> StoreMetrics {
        StoreMetrics {
            file_bytes: metrics.gauge("local_store_file_bytes", &[]),
            free_bytes: metrics.gauge("local_store_free_bytes", &[]),
            wal_bytes: metrics.gauge("local_store_wal_bytes", &[]),
            series: metrics.gauge("local_store_series", &[]),
            points: metrics.gauge("local_store_points", &[]),
            dropped_for_size: metrics.counter(
                "local_store_dropped_points_total",
                &[("reason", "max_bytes")],
            ),
            dropped_for_age: metrics.counter(
                "local_store_dropped_points_total",
                &[("reason", "retention")],
            ),
            points_counted: Arc::new(Mutex::new(None)),
        }
    }

    /// Brings the size gauges up to date, the points at most every [`POINTS_INTERVAL`] (a
    /// failure is logged: they keep their values).
    fn update(&self, store: &LocalStore) {
        let gauge = |g: &Gauge, v: u64| g.set(i64::try_from(v).unwrap_or(i64::MAX));
        let mut counted = self.points_counted.lock_unpoisoned();
        let count = counted.is_none_or(|t| t.elapsed() >= POINTS_INTERVAL);
        let size = if count {
            store.size()
        } else {
            store.file_size()
        };
        match size {
            Ok(size) => {
                gauge(&self.file_bytes, size.file_bytes);
                gauge(&self.free_bytes, size.free_bytes);
                gauge(&self.wal_bytes, size.wal_bytes);
                gauge(&self.series, size.series);
                if count {
                    gauge(&self.points, size.points);
                    *counted = Some(Instant::now());
                }
            }
            Err(err) => {
                tracing::warn!(error = %error_chain(&err), "cannot read the local store's size");
            }
        }
    }
}

/// The local store as a [`Sink`].
///
/// Each write runs on Tokio's blocking pool (`spawn_blocking`), with the store behind a
/// mutex, so SQLite never blocks the runtime's workers. A write that is abandoned (its
/// future dropped, at shutdown) still completes or rolls back as a whole on that thread.
#[derive(Debug)]
pub struct LocalSink {
    store: Arc<Mutex<LocalStore>>,
    retention: Option<Duration>,
    max_bytes: Option<u64>,
    last_retention: Instant,
    metrics: StoreMetrics,
    /// When the last write came; `None` once the store has been settled since.
    last_write: Arc<Mutex<Option<Instant>>>,
}

impl LocalSink {
    /// Opens (or creates, or upgrades) the store and applies retention once.
    ///
    /// This blocks while it does so, which on a large store whose retention has not run for a
    /// long time (or that is upgraded) may take seconds: call it before the runtime starts,
    /// or in `spawn_blocking`.
    ///
    /// # Errors
    /// Any error of [`LocalStore::open`], or of the first retention pass.
    pub fn open(settings: LocalSinkSettings, metrics: &Metrics) -> Result<LocalSink, StoreError> {
        let mut store = LocalStore::open(&settings.path)?;
        let metrics = StoreMetrics::new(metrics);
        if let Some(retention) = settings.retention {
            apply_retention(&mut store, retention, &metrics)?;
        }
        if let Some(max_bytes) = settings.max_bytes {
            // The points not yet compacted take about 20 bytes each (6 once compacted):
            // they must stay well within the bound.
            store.limit_recent(max_bytes / 16);
            apply_max_bytes(&mut store, max_bytes, &metrics)?;
        }
        metrics.update(&store);
        let store = Arc::new(Mutex::new(store));
        let last_write = Arc::new(Mutex::new(Some(Instant::now())));
        settle_when_idle(Arc::downgrade(&store), Arc::clone(&last_write));
        Ok(LocalSink {
            store,
            retention: settings.retention,
            max_bytes: settings.max_bytes,
            last_retention: Instant::now(),
            metrics,
            last_write,
        })
    }
}

impl Sink for LocalSink {
    /// Inserts the batch in one transaction, then applies retention when it is due (a
    /// retention failure is logged, not returned: the batch is stored).
    ///
    /// # Errors
    /// [`SinkError::Transient`] (the [`StoreError`] its cause) for a busy database, an I/O
    /// error or a full disk; [`SinkError::Retryable`] for a write task that panicked;
    /// [`SinkError::Rejected`] for errors that would repeat identically (see
    /// [`StoreError::is_retryable`]).
    ///
    /// # Cancel safety
    /// Dropping the future does not stop the write: it completes or rolls back on the
    /// blocking thread, and the next write waits for it.
    async fn write(&mut self, batch: &Batch) -> Result<(), SinkError> {
        let store = Arc::clone(&self.store);
        let batch = batch.clone();
        *self.last_write.lock_unpoisoned() = Some(Instant::now());
        let due = self.last_retention.elapsed() >= RETENTION_INTERVAL;
        let retention = self.retention.filter(|_| due);
        let max_bytes = self.max_bytes;
        let metrics = self.metrics.clone();
        let task = tokio::task::spawn_blocking(move || {
            // A panic in an earlier write rolled its transaction back when it unwound, and the
            // store drops its id cache after an unfinished insert: a poisoned lock is no
            // reason to stop writing.
            let mut store = store.lock_unpoisoned();
            store.insert(&batch)?;
            if let Some(retention) = retention {
                if let Err(err) = apply_retention(&mut store, retention, &metrics) {
                    tracing::warn!(error = %error_chain(&err), "local store retention failed; will retry");
                }
            }
            if let Some(max_bytes) = max_bytes {
                if let Err(err) = apply_max_bytes(&mut store, max_bytes, &metrics) {
                    tracing::warn!(error = %error_chain(&err), "local store retention by size failed; will retry");
                }
            }
            if due {
                metrics.update(&store);
            }
            Ok::<(), StoreError>(())
        });
        match task.await {
            Ok(Ok(())) => {
                if due {
                    self.last_retention = Instant::now();
                }
                Ok(())
            }
            Ok(Err(err)) if err.is_retryable() => Err(SinkError::transient(err)),
            Ok(Err(err)) => Err(SinkError::Rejected(error_chain(&err))),
            Err(err) => Err(SinkError::Retryable(format!(
                "local store write task failed: {err}"
            ))),
        }
    }
}

/// Starts the thread that settles the store once writes have stopped for [`SETTLE_AFTER`];
/// it ends once the sink (the store's last strong reference) is gone. Without the thread
/// (it could not be started), the store is only less compact.
fn settle_when_idle(store: Weak<Mutex<LocalStore>>, last_write: Arc<Mutex<Option<Instant>>>) {
    let spawned = std::thread::Builder::new()
        .name("local-store-settle".into())
        .spawn(move || loop {
            std::thread::sleep(SETTLE_POLL);
            let Some(store) = store.upgrade() else {
                return;
            };
            let due = {
                let mut last = last_write.lock_unpoisoned();
                let due = last.is_some_and(|t| t.elapsed() >= SETTLE_AFTER);
                if due {
                    *last = None;
                }
                due
            };
            if due {
                let started = Instant::now();
                let mut store = store.lock_unpoisoned();
                match store.settle() {
                    Ok(series) => tracing::debug!(
                        series,
                        elapsed_ms = started.elapsed().as_millis(),
                        "local store settled (no writes for a while)"
                    ),
                    Err(err) => {
                        tracing::warn!(error = %error_chain(&err), "local store could not settle; will retry after the next writes");
                    }
                }
            }
        });
    if let Err(err) = spawned {
        tracing::warn!(error = %err, "cannot start the local store's settling thread; it will be less compact");
    }
}

/// Deletes the points older than `now - retention`.
fn apply_retention(
    store: &mut LocalStore,
    retention: Duration,
    metrics: &StoreMetrics,
) -> Result<(), StoreError> {
    let cutoff = now_ns().saturating_sub(duration_ns(retention));
    let started = Instant::now();
    let deleted = store.delete_older_than(cutoff)?;
    metrics.dropped_for_age.add(deleted);
    if deleted > 0 {
        tracing::info!(
            deleted,
            elapsed_ms = started.elapsed().as_millis(),
            "local store retention deleted old points"
        );
    }
    Ok(())
}

/// Drops the oldest chunks while the store takes more than `max_bytes`.
fn apply_max_bytes(
    store: &mut LocalStore,
    max_bytes: u64,
    metrics: &StoreMetrics,
) -> Result<(), StoreError> {
    let started = Instant::now();
    let dropped = store.drop_oldest(max_bytes)?;
    metrics.dropped_for_size.add(dropped.points);
    if dropped.chunks > 0 {
        tracing::info!(
            points = dropped.points,
            chunks = dropped.chunks,
            used_bytes_before = dropped.used_before,
            used_bytes_after = dropped.used_after,
            max_bytes,
            elapsed_ms = started.elapsed().as_millis(),
            "local store reached max_bytes: dropped its oldest chunks"
        );
        metrics.update(store);
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    use crate::reading::{FieldValue, Reading, DEVICE_TAG};
    use crate::store::Query;

    const HOUR_NS: i64 = 3_600_000_000_000;

    fn reading(device: &str, ts: i64, v: f64) -> Reading {
        let mut r = Reading::new("env", ts);
        r.set_tag(DEVICE_TAG, device);
        r.fields = vec![("t".into(), FieldValue::Float(v))];
        r
    }

    fn timestamps(path: &std::path::Path) -> Vec<i64> {
        let store = LocalStore::open_read_only(path).unwrap();
        store
            .query(&Query::default())
            .unwrap()
            .into_iter()
            .map(|p| p.timestamp)
            .collect()
    }

    /// A sink without retention.
    fn open_plain(path: &std::path::Path) -> LocalSink {
        let settings = LocalSinkSettings {
            path: path.to_path_buf(),
            retention: None,
            max_bytes: None,
        };
        LocalSink::open(settings, &Metrics::new()).unwrap()
    }

    #[tokio::test]
    async fn writes_land_once_however_often_they_are_delivered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data/store.db");
        let mut sink = open_plain(&path);
        let batch = Batch::from(
            (0..10)
                .map(|i| reading("d", i, i as f64))
                .collect::<Vec<_>>(),
        );
        sink.write(&batch).await.unwrap();
        sink.write(&batch).await.unwrap();
        assert_eq!(timestamps(&path), (0..10).collect::<Vec<_>>());
        let summary = LocalStore::open_read_only(&path)
            .unwrap()
            .summary()
            .unwrap();
        assert_eq!(summary[0].points, 10);
    }

    #[tokio::test]
    async fn retention_runs_at_open_and_then_at_most_once_a_minute() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let now = now_ns();
        let old = now - 2 * HOUR_NS;
        LocalStore::open(&path)
            .unwrap()
            .insert(&[reading("d", old, 1.0), reading("d", now, 2.0)])
            .unwrap();
        let settings = LocalSinkSettings {
            path: path.clone(),
            retention: Some(Duration::from_secs(3600)),
            max_bytes: None,
        };
        let mut sink = LocalSink::open(settings, &Metrics::new()).unwrap();
        assert_eq!(timestamps(&path), vec![now]);

        // Not due yet: an old point written now stays until the next pass.
        let late = Batch::from(vec![reading("d", old + 1, 3.0)]);
        sink.write(&late).await.unwrap();
        assert_eq!(timestamps(&path), vec![old + 1, now]);

        // Due: the next write runs it.
        sink.last_retention -= RETENTION_INTERVAL;
        let fresh = Batch::from(vec![reading("d", now + 1, 4.0)]);
        sink.write(&fresh).await.unwrap();
        assert_eq!(timestamps(&path), vec![now, now + 1]);
        assert!(sink.last_retention.elapsed() < RETENTION_INTERVAL);
    }

    #[tokio::test]
    async fn a_write_the_store_refuses_is_rejected_not_retried() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let mut sink = open_plain(&path);
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute_batch(
                "CREATE TRIGGER refuse BEFORE INSERT ON recent WHEN NEW.points = 2
                 BEGIN SELECT RAISE(ABORT, 'refused'); END;",
            )
            .unwrap();
        let batch = Batch::from(vec![reading("d", 1, 1.0), reading("d", 666, 2.0)]);
        let err = sink.write(&batch).await.unwrap_err();
        assert!(!err.is_retryable());
        assert!(err.to_string().contains("refused"), "{err}");
        assert_eq!(timestamps(&path), Vec::<i64>::new());
    }

    #[test]
    fn opening_a_store_that_is_not_one_fails_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        std::fs::write(
            &path,
            "not sqlite at all, not even a little bit: ".repeat(40),
        )
        .unwrap();
        let err = LocalSink::open(
            LocalSinkSettings {
                path: path.clone(),
                retention: None,
                max_bytes: None,
            },
            &Metrics::new(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{} is not a telemetry-collector local store",
                path.display()
            )
        );
    }

    #[tokio::test]
    async fn the_store_size_and_what_max_bytes_dropped_are_in_the_metrics() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let metrics = Metrics::new();
        let mut sink = LocalSink::open(
            LocalSinkSettings {
                path: path.clone(),
                retention: None,
                max_bytes: Some(1 << 20),
            },
            &metrics,
        )
        .unwrap();
        // Full-precision values, 3 MB or so: more than the bound.
        for b in 0..40i64 {
            let batch = Batch::from(
                (0..5000)
                    .map(|i| reading("d", b * 5000 + i, ((b * 5000 + i) as f64).sqrt()))
                    .collect::<Vec<_>>(),
            );
            sink.write(&batch).await.unwrap();
        }
        let dropped = metrics.sum(
            "local_store_dropped_points_total",
            &[("reason", "max_bytes")],
        );
        assert!(dropped > 100_000, "{dropped}");
        let text = metrics.render_prometheus();
        let gauge = |name: &str| -> i64 {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("telemetry_collector_{name} ")))
                .unwrap_or_else(|| panic!("{name} in {text}"))
                .parse()
                .unwrap()
        };
        let file = gauge("local_store_file_bytes");
        assert!(file > 0 && file <= 1 << 20, "{file}");
        assert_eq!(gauge("local_store_series"), 1);
        // Every point is kept or counted as dropped.
        let kept = timestamps(&path).len() as u64;
        assert_eq!(kept + dropped, 200_000);
    }

    #[test]
    fn error_chains_read_like_anyhow() {
        let err = StoreError::Sqlite(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            Some("database is locked".into()),
        ));
        assert_eq!(error_chain(&err), format!("{:#}", anyhow::Error::new(err)));
    }
}
