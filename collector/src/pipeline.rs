//! Wiring: sources -> bounded channel -> journal writer -> one runner per sink; and the
//! orderly shutdown.
//!
//! Shutdown, in order: the sources stop reading (the brokers keep what was not acked), the
//! channel drains into the journal and those messages are acked, every sink writes what the
//! journal holds, and the process exits. Whatever is not written when `shutdown_timeout`
//! has passed stays in the journal for the next start.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::FutureExt as _;

use anyhow::Context as _;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::config::{MqttSettings, SerialSettings, Settings, TimestampConfig};
use crate::journal::Journal;
use crate::metrics::Metrics;
use crate::sinks::dead_letter::DeadLetter;
use crate::sinks::influxdb::InfluxSink;
use crate::sinks::local::{LocalSink, LocalSinkSettings};
use crate::sinks::runner::{RunnerSettings, SinkRunner};
use crate::sources::mqtt::MqttSource;
use crate::sources::serial::SerialSource;
use crate::sources::Envelope;

/// The name of the local store sink (its journal cursor and metrics label).
pub const LOCAL_SINK: &str = "local";

/// Runs the collector until `shutdown` is cancelled, then stops in order.
///
/// # Errors
/// Start-up failures: the journal or a store cannot be opened, a source's TLS files are
/// unusable. Once running, failures are retried and logged, not returned.
pub async fn run(
    settings: Settings,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    run_reloadable(settings, metrics, shutdown, mpsc::channel(1).1).await
}

/// [`run`], and applies every validated configuration received on `reloads`: sources whose
/// settings did not change keep running untouched; a changed source is stopped (its
/// in-flight readings reach the journal and are acked) and started again; a new one is
/// started, a removed one stopped. Changes to sinks, the journal, the pipeline or the HTTP
/// port are logged as taking effect at the next start.
///
/// # Errors
/// As [`run`].
pub async fn run_reloadable(
    settings: Settings,
    metrics: Metrics,
    shutdown: CancellationToken,
    mut reloads: mpsc::Receiver<Settings>,
) -> anyhow::Result<()> {
    let journal_settings = settings.journal.clone();
    let local_settings = settings.local.clone();
    let influx_settings = settings.influxdb.clone();
    let opened = tokio::task::spawn_blocking({
        let metrics = metrics.clone();
        move || -> anyhow::Result<_> {
            let (journal, writer) =
                Journal::open(&journal_settings, metrics).context("cannot open the journal")?;
            let mut sinks = Vec::new();
            if let Some(local) = local_settings {
                let sink = LocalSink::open(LocalSinkSettings {
                    path: local.path.clone(),
                    retention: local.retention,
                })
                .with_context(|| format!("cannot open the local store {}", local.path.display()))?;
                sinks.push((
                    LOCAL_SINK,
                    sink,
                    RunnerSettings {
                        batch: local.batch,
                        retry: local.retry,
                    },
                ));
            }
            // InfluxDB sinks: each with its own cursor and dead-letter file.
            let mut influx = Vec::new();
            for s in &influx_settings {
                let sink = InfluxSink::new(s)?;
                let dead_letter =
                    DeadLetter::new(&s.dead_letter_dir, &s.sink, s.dead_letter_max_bytes);
                let runner = RunnerSettings {
                    batch: s.batch,
                    retry: s.retry,
                };
                influx.push((s.sink.clone(), sink, runner, dead_letter));
            }
            let mut names: Vec<&str> = sinks.iter().map(|(n, _, _)| *n).collect();
            names.extend(influx.iter().map(|(n, _, _, _)| n.as_str()));
            journal.register_sinks(&names)?;
            Ok((journal, writer, sinks, influx))
        }
    })
    .await??;
    let (journal, writer, sinks, influx_sinks) = opened;

    // Fail at start, before anything runs, if a source cannot be built (TLS files).
    for m in &settings.mqtt {
        MqttSource::new(m.clone(), settings.timestamps.clone(), metrics.clone())?;
    }

    // Sinks first, so that nothing waits for them.
    let abort_sinks = CancellationToken::new();
    let sink_tasks = TaskTracker::new();
    for (name, sink, runner_settings) in sinks {
        let runner = SinkRunner::new(sink, journal.reader(name)?, runner_settings, &metrics);
        let abort = abort_sinks.clone();
        sink_tasks.spawn(async move {
            if let Err(e) = runner.run(abort).await {
                error!(sink = name, error = %e, "sink stopped on a journal error");
            }
        });
    }
    for (name, sink, runner_settings, dead_letter) in influx_sinks {
        let runner = SinkRunner::new(sink, journal.reader(&name)?, runner_settings, &metrics)
            .with_dead_letter(dead_letter);
        let abort = abort_sinks.clone();
        sink_tasks.spawn(async move {
            if let Err(e) = runner.run(abort).await {
                error!(sink = %name, error = %e, "sink stopped on a journal error");
            }
        });
    }
    sink_tasks.close();

    let (tx, rx) = mpsc::channel(settings.pipeline.channel_capacity);
    let writer_task = tokio::task::spawn_blocking(move || writer.run(rx));

    let stop_sources = CancellationToken::new();
    let source_tasks = TaskTracker::new();
    let mut sources = Sources {
        running: BTreeMap::new(),
        tasks: source_tasks.clone(),
        stop: stop_sources.clone(),
        out: tx.clone(),
        metrics: metrics.clone(),
    };
    sources
        .apply(&settings, settings.pipeline.shutdown_timeout)
        .await;
    let channel = tx.downgrade();
    drop(tx); // `sources` holds the sender that new sources get
              // systemd: ready now; the watchdog is fed while the journal keeps up with the channel.
              // (A sink that cannot write is not wedged: it retries, and the journal holds the data.)
    let notifier = crate::service::Notifier::from_env().context("NOTIFY_SOCKET")?;
    let commits = metrics.counter("journal_commits_total", &[]);
    let capacity = settings.pipeline.channel_capacity;
    let stop_supervisor = CancellationToken::new();
    tokio::spawn(crate::service::supervise(
        notifier,
        move || {
            let waiting = channel.upgrade().is_some_and(|tx| tx.capacity() < capacity);
            (waiting, commits.get())
        },
        stop_supervisor.clone(),
    ));
    // /metrics and /health: useful, not essential; collecting goes on without them.
    if let Some(addr) = settings.http {
        match crate::http::bind(addr) {
            Ok(listener) => {
                info!(%addr, "serving the dashboard (/), its API (/api/v1/), /metrics and /health");
                let limits = crate::http::HealthLimits {
                    journal_max_bytes: settings.journal.max_bytes,
                };
                let (m, stop) = (metrics.clone(), stop_supervisor.clone());
                let dashboard = crate::dashboard::Dashboard::new(
                    settings.local.as_ref().map(|l| l.path.clone()),
                );
                tokio::spawn(async move {
                    if let Err(e) = crate::http::serve(listener, m, limits, dashboard, stop).await {
                        error!(error = %e, "the HTTP server stopped");
                    }
                });
            }
            Err(e) => {
                error!(%addr, error = %e, "cannot serve /metrics and /health (set http.listen, or http.enabled = false); collecting goes on without them")
            }
        }
    }
    info!(
        sources = settings.mqtt.len(),
        serial_ports = settings.serial.len(),
        journal = %settings.journal.path.display(),
        "collector running"
    );

    let mut current = settings.clone();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            Some(new) = reloads.recv() => {
                report_restart_only_changes(&current, &new);
                sources.apply(&new, settings.pipeline.shutdown_timeout).await;
                current = new;
                info!("configuration reloaded");
            }
        }
    }
    source_tasks.close();
    drop(sources);
    stop_supervisor.cancel();
    let deadline = Instant::now() + settings.pipeline.shutdown_timeout;
    info!(timeout = ?settings.pipeline.shutdown_timeout, "stopping: sources first");
    stop_sources.cancel();
    if !wait_until(source_tasks.wait(), deadline).await {
        warn!("sources did not stop in time");
    }
    info!("sources stopped; draining the journal writer");
    if !wait_until(writer_task, deadline).await {
        warn!("the journal writer did not finish in time; unacked messages will be redelivered");
        journal.close();
    }
    info!("journal complete; waiting for the sinks to write it");
    if !wait_until(sink_tasks.wait(), deadline).await {
        warn!("sinks did not finish in time; the rest stays in the journal for the next start");
        abort_sinks.cancel();
        wait_until(sink_tasks.wait(), Instant::now() + Duration::from_secs(5)).await;
    }
    info!(journal_bytes = journal.bytes(), "stopped");
    Ok(())
}

/// What a source runs on; two sources are the same when these are equal.
#[derive(Debug, Clone, PartialEq)]
enum SourceSettings {
    Mqtt(MqttSettings),
    Serial(SerialSettings),
}

/// One running source.
struct Running {
    settings: (SourceSettings, TimestampConfig),
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// The running sources, by label (`mqtt:<name>`, `serial:<name>`).
struct Sources {
    running: BTreeMap<String, Running>,
    tasks: TaskTracker,
    stop: CancellationToken,
    out: mpsc::Sender<Envelope>,
    metrics: Metrics,
}

impl Sources {
    /// Makes the running sources those of `settings`: unchanged ones are left alone,
    /// changed ones are stopped (waiting up to `timeout` for their in-flight messages to be
    /// acked) and started again, new ones started, removed ones stopped.
    async fn apply(&mut self, settings: &Settings, timeout: Duration) {
        let wanted: BTreeMap<String, SourceSettings> = settings
            .mqtt
            .iter()
            .map(|m| (format!("mqtt:{}", m.name), SourceSettings::Mqtt(m.clone())))
            .chain(settings.serial.iter().map(|s| {
                (
                    format!("serial:{}", s.name),
                    SourceSettings::Serial(s.clone()),
                )
            }))
            .collect();
        let (mut stopped, mut started) = (0, 0);
        let labels: Vec<String> = self.running.keys().cloned().collect();
        for label in labels {
            let keep = wanted.get(&label).is_some_and(|w| {
                self.running[&label].settings == (w.clone(), settings.timestamps.clone())
            });
            if keep {
                continue;
            }
            let Some(r) = self.running.remove(&label) else {
                continue;
            };
            r.stop.cancel();
            // The same client id must not connect twice: wait for the old connection.
            if tokio::time::timeout(timeout, r.task).await.is_err() {
                warn!(source = %label, "the old source did not stop in time");
            }
            stopped += 1;
        }
        for (label, s) in wanted {
            if self.running.contains_key(&label) {
                continue;
            }
            let stop = self.stop.child_token();
            let timestamps = settings.timestamps.clone();
            let run = match &s {
                SourceSettings::Mqtt(m) => {
                    match MqttSource::new(m.clone(), timestamps.clone(), self.metrics.clone()) {
                        Ok(source) => source.run(self.out.clone(), stop.clone()).boxed(),
                        Err(e) => {
                            error!(source = %label, error = format!("{e:#}"), "cannot start the source");
                            continue;
                        }
                    }
                }
                SourceSettings::Serial(p) => {
                    SerialSource::new(p.clone(), timestamps.clone(), self.metrics.clone())
                        .run(self.out.clone(), stop.clone())
                        .boxed()
                }
            };
            let task_label = label.clone();
            let task = self.tasks.spawn(async move {
                if let Err(e) = run.await {
                    error!(source = %task_label, error = format!("{e:#}"), "source failed");
                }
            });
            self.running.insert(
                label,
                Running {
                    settings: (s, timestamps),
                    stop,
                    task,
                },
            );
            started += 1;
        }
        if stopped + started > 0 {
            info!(
                started,
                stopped,
                running = self.running.len(),
                "sources updated"
            );
        }
    }
}

/// Logs the changes a reload cannot apply in place.
fn report_restart_only_changes(old: &Settings, new: &Settings) {
    let changed =
        |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") != format!("{b:?}");
    for (what, differs) in [
        ("data_dir", changed(&old.data_dir, &new.data_dir)),
        ("pipeline", changed(&old.pipeline, &new.pipeline)),
        ("journal", changed(&old.journal, &new.journal)),
        ("sinks.local", changed(&old.local, &new.local)),
        ("sinks.influxdb", changed(&old.influxdb, &new.influxdb)),
        ("http", changed(&old.http, &new.http)),
    ] {
        if differs {
            warn!(
                section = what,
                "this change takes effect at the next start, not on reload"
            );
        }
    }
}

/// Awaits `f` until `deadline`; false if the deadline came first.
async fn wait_until<F: std::future::Future>(f: F, deadline: Instant) -> bool {
    tokio::time::timeout_at(deadline, f).await.is_ok()
}
