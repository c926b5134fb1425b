//! Wiring: sources -> bounded channel -> journal writer -> one runner per sink; and the
//! orderly shutdown.
//!
//! Shutdown, in order: the sources stop reading (the brokers keep what was not acked), the
//! channel drains into the journal and those messages are acked, every sink writes what the
//! journal holds, and the process exits. Whatever is not written when `shutdown_timeout`
//! has passed stays in the journal for the next start.

use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::config::Settings;
use crate::journal::Journal;
use crate::metrics::Metrics;
use crate::sinks::dead_letter::DeadLetter;
use crate::sinks::influxdb::InfluxSink;
use crate::sinks::local::{LocalSink, LocalSinkSettings};
use crate::sinks::runner::{RunnerSettings, SinkRunner};
use crate::sources::mqtt::MqttSource;
use crate::sources::serial::SerialSource;

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

    let sources = settings
        .mqtt
        .iter()
        .map(|m| MqttSource::new(m.clone(), settings.timestamps.clone(), metrics.clone()))
        .collect::<anyhow::Result<Vec<_>>>()?;

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
    for source in sources {
        let label = source.label();
        spawn_source(
            &source_tasks,
            label,
            source.run(tx.clone(), stop_sources.clone()),
        );
    }
    // Serial ports: one task per port; a port absent at start is opened once it appears.
    for port in &settings.serial {
        let source = SerialSource::new(port.clone(), settings.timestamps.clone(), metrics.clone());
        let label = source.label();
        spawn_source(
            &source_tasks,
            label,
            source.run(tx.clone(), stop_sources.clone()),
        );
    }
    source_tasks.close();
    let channel = tx.downgrade();
    drop(tx);
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
                info!(%addr, "serving /metrics and /health");
                let limits = crate::http::HealthLimits {
                    journal_max_bytes: settings.journal.max_bytes,
                };
                let (m, stop) = (metrics.clone(), stop_supervisor.clone());
                tokio::spawn(async move {
                    if let Err(e) = crate::http::serve(listener, m, limits, stop).await {
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

    shutdown.cancelled().await;
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

/// Runs a source's `run` future in `tasks`, logging how it failed.
fn spawn_source(
    tasks: &TaskTracker,
    label: String,
    run: impl std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
) {
    tasks.spawn(async move {
        if let Err(e) = run.await {
            error!(source = %label, error = format!("{e:#}"), "source failed");
        }
    });
}

/// Awaits `f` until `deadline`; false if the deadline came first.
async fn wait_until<F: std::future::Future>(f: F, deadline: Instant) -> bool {
    tokio::time::timeout_at(deadline, f).await.is_ok()
}
