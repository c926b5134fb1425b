//! Wiring: sources -> bounded channel -> journal writer -> one runner per sink; and the
//! orderly shutdown.
//!
//! Shutdown, in order: the sources stop reading (the brokers keep what was not acked), the
//! channel drains into the journal and those messages are acked, every sink writes what the
//! journal holds, and the process exits. Whatever is not written when `shutdown_timeout`
//! has passed stays in the journal for the next start.
//!
//! A reload reconciles the running sources and sinks with the new settings, by name: one
//! algorithm (`Tasks::changes`), applied by `Sources::apply` and `Sinks::apply`, each
//! with its own order (a changed source stops before it starts again; a changed sink is
//! opened before the old one stops). This is the application's edge: errors here are
//! `anyhow`, with context; the components below return their own typed errors.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::FutureExt as _;

use anyhow::Context as _;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::channel::Inlet;
use crate::config::{
    InfluxSettings, LocalSettings, ModbusSettings, MqttSettings, MqttSinkSettings, SerialSettings,
    Settings, TimestampConfig,
};
use crate::journal::{Journal, JournalError, JournalReader};
use crate::metrics::Metrics;
use crate::sinks::dead_letter::DeadLetter;
use crate::sinks::influxdb::InfluxSink;
use crate::sinks::local::{LocalSink, LocalSinkSettings};
use crate::sinks::mqtt::MqttSink;
use crate::sinks::runner::{RunnerSettings, SinkRunner};
use crate::sinks::Sink;
use crate::sources::modbus::ModbusSource;
use crate::sources::mqtt::MqttSource;
use crate::sources::serial::SerialSource;
use crate::task::blocking;

/// The name of the local store sink (its journal cursor and metrics label).
pub const LOCAL_SINK: &str = "local";

/// How long aborted sinks may take to stop (a write under way is not interrupted).
const SINK_ABORT_TIMEOUT: Duration = Duration::from_secs(5);

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

/// [`run`], and applies every validated configuration received on `reloads`: sources and
/// sinks whose settings did not change keep running untouched; a changed source is stopped
/// (its in-flight readings reach the journal and are acked) and started again; a changed
/// sink is stopped where it is and started again from its cursor; new ones are started,
/// removed ones stopped. Changes to the data directory, the journal, the pipeline or the
/// HTTP port are logged as taking effect at the next start.
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
    let (journal, writer) = blocking({
        let metrics = metrics.clone();
        move || Journal::open(&journal_settings, metrics).context("cannot open the journal")
    })
    .await??;

    // Fail at start, before anything runs, if systemd's socket cannot be used or a source
    // cannot be built (TLS files).
    let notifier = crate::service::Notifier::from_env().context("NOTIFY_SOCKET")?;
    for m in &settings.mqtt {
        MqttSource::new(m.clone(), settings.timestamps.clone(), metrics.clone())?;
    }

    // Sinks first, so that nothing waits for them.
    let abort_sinks = CancellationToken::new();
    let sink_tasks = TaskTracker::new();
    let mut sinks = Sinks {
        tasks: Tasks::new(sink_tasks.clone(), abort_sinks.clone()),
        journal: journal.clone(),
        metrics: metrics.clone(),
    };
    if let Err(e) = sinks.apply(&settings).await {
        // Stop the sinks that did start before returning: the runtime is shut down next,
        // and must not find them halfway through a journal read.
        abort_sinks.cancel();
        sink_tasks.close();
        if !wait_until(sink_tasks.wait(), Instant::now() + SINK_ABORT_TIMEOUT).await {
            warn!("sinks did not stop in time");
        }
        return Err(e);
    }

    let (tx, rx) = Inlet::new(settings.pipeline.channel_capacity);
    let tx = tx.with_report(crate::report::ReportFilter::new(
        &settings.report_rules,
        &metrics,
    ));
    let writer_task = tokio::task::spawn_blocking(move || writer.run(rx));

    let stop_sources = CancellationToken::new();
    let source_tasks = TaskTracker::new();
    let mut sources = Sources {
        tasks: Tasks::new(source_tasks.clone(), stop_sources.clone()),
        out: tx.clone(),
        metrics: metrics.clone(),
    };
    sources
        .apply(&settings, settings.pipeline.shutdown_timeout)
        .await;
    let channel = tx.downgrade();
    drop(tx); // `sources` holds the sender that new sources get

    // systemd: ready now; the watchdog is fed while the journal keeps up with the channel.
    // (A sink that cannot write is not wedged: it retries, and the journal holds the data;
    // a full journal waiting for it holds the sources back on purpose.)
    let capacity = settings.pipeline.channel_capacity;
    let stop_supervisor = CancellationToken::new();
    let probe = {
        let (metrics, journal) = (metrics.clone(), journal.clone());
        let commits = metrics.counter("journal_commits_total", &[]);
        let appended = metrics.counter("journal_readings_appended_total", &[]);
        move || {
            let queued = channel.upgrade().is_some_and(|tx| tx.capacity() < capacity);
            let behind = metrics
                .gauges()
                .into_iter()
                .filter(|(k, _)| k.name == "sink_lag_readings")
                .filter_map(|(k, v)| Some((k.labels.first()?.1.clone(), v)))
                .collect();
            crate::service::Probe {
                work_waiting: (queued || journal.writer_holds_readings())
                    && !journal.waiting_for_sinks(),
                commits: commits.get(),
                readings: appended.get(),
                behind,
            }
        }
    };
    tokio::spawn(crate::service::supervise(
        notifier,
        probe,
        stop_supervisor.clone(),
    ));
    // /metrics, /health and the dashboard: useful, not essential; collecting goes on
    // without them.
    let dashboard =
        crate::dashboard::Dashboard::new(settings.local.as_ref().map(|l| l.path.clone()));
    if let Some(http) = &settings.http {
        serve_http(http, &settings, &metrics, &dashboard, &stop_supervisor);
    }
    info!(
        sources = settings.mqtt.len(),
        serial_ports = settings.serial.len(),
        modbus = settings.modbus.len(),
        journal = %settings.journal.path.display(),
        "collector running"
    );

    let mut current = settings.clone();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            Some(new) = reloads.recv() => {
                report_restart_only_changes(&current, &new);
                match sinks.apply(&new).await {
                    Ok(()) => dashboard.set_store(new.local.as_ref().map(|l| l.path.clone())),
                    Err(e) => {
                        error!(error = format!("{e:#}"), "sinks not updated; those running go on");
                    }
                }
                sources.apply(&new, settings.pipeline.shutdown_timeout).await;
                current = new;
                info!("configuration reloaded");
            }
        }
    }
    source_tasks.close();
    sink_tasks.close();
    drop(sources);
    stop_supervisor.cancel();
    let deadline = Instant::now() + settings.pipeline.shutdown_timeout;
    info!(timeout = ?settings.pipeline.shutdown_timeout, "stopping: sources first");
    stop_sources.cancel();
    if !wait_until(source_tasks.wait(), deadline).await {
        warn!("sources did not stop in time");
    }
    info!("sources stopped; draining the journal writer");
    match tokio::time::timeout_at(deadline, writer_task).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            error!(error = %e, "the journal writer failed; unacked messages will be redelivered");
        }
        Err(_) => {
            warn!(
                "the journal writer did not finish in time; unacked messages will be redelivered"
            );
            journal.close();
        }
    }
    info!("journal complete; waiting for the sinks to write it");
    if !wait_until(sink_tasks.wait(), deadline).await {
        warn!("sinks did not finish in time; the rest stays in the journal for the next start");
        abort_sinks.cancel();
        wait_until(sink_tasks.wait(), Instant::now() + SINK_ABORT_TIMEOUT).await;
    }
    info!(journal_bytes = journal.bytes(), "stopped");
    Ok(())
}

/// Tasks by name, each with the settings it runs on and the token that stops it: what
/// [`Sources`] and [`Sinks`] reconcile with the configuration on every reload.
struct Tasks<S> {
    running: BTreeMap<String, Task<S>>,
    tracker: TaskTracker,
    /// Parent of every task's token.
    parent: CancellationToken,
}

/// One running task.
struct Task<S> {
    settings: S,
    stop: CancellationToken,
    handle: tokio::task::JoinHandle<()>,
}

/// How the running tasks differ from those wanted.
struct Changes<S> {
    /// Running but not as wanted, in name order; `true` when the name is still wanted (with
    /// other settings).
    stale: Vec<(String, bool)>,
    /// Wanted but not running as wanted (new, or changed), in name order.
    start: Vec<(String, S)>,
}

impl<S: PartialEq> Tasks<S> {
    fn new(tracker: TaskTracker, parent: CancellationToken) -> Tasks<S> {
        Tasks {
            running: BTreeMap::new(),
            tracker,
            parent,
        }
    }

    /// What differs between the running tasks and `wanted` (by name).
    fn changes(&self, wanted: BTreeMap<String, S>) -> Changes<S> {
        let stale = self
            .running
            .iter()
            .filter_map(|(name, task)| match wanted.get(name) {
                None => Some((name.clone(), false)),
                Some(w) if *w != task.settings => Some((name.clone(), true)),
                Some(_) => None,
            })
            .collect();
        let start = wanted
            .into_iter()
            .filter(|(name, w)| self.running.get(name).is_none_or(|t| t.settings != *w))
            .collect();
        Changes { stale, start }
    }

    fn is_running(&self, name: &str) -> bool {
        self.running.contains_key(name)
    }

    /// Tells the task `name` to stop and hands back its handle to wait on; `None` if no
    /// such task runs.
    fn cancel(&mut self, name: &str) -> Option<tokio::task::JoinHandle<()>> {
        let task = self.running.remove(name)?;
        task.stop.cancel();
        Some(task.handle)
    }

    /// A token for a new task: cancelled with the parent, or alone by [`Tasks::cancel`].
    fn token(&self) -> CancellationToken {
        self.parent.child_token()
    }

    /// Runs `task` as `name`, stopped by `stop` (from [`Tasks::token`]).
    fn spawn<F>(&mut self, name: String, settings: S, stop: CancellationToken, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let handle = self.tracker.spawn(task);
        self.running.insert(
            name,
            Task {
                settings,
                stop,
                handle,
            },
        );
    }

    /// Logs what an update started and stopped, if anything (`what`: sources, sinks).
    fn log_update(&self, what: &str, started: usize, stopped: usize) {
        if stopped + started > 0 {
            info!(
                started,
                stopped,
                running = self.running.len(),
                "{what} updated"
            );
        }
    }
}

/// What a source runs on; two sources are the same when these are equal.
#[derive(Debug, Clone, PartialEq)]
enum SourceSettings {
    Mqtt(MqttSettings),
    Serial(SerialSettings),
    Modbus(ModbusSettings),
}

/// The running sources, by label (`mqtt:<name>`, `serial:<name>`), with the timestamp
/// bounds they run with.
struct Sources {
    tasks: Tasks<(SourceSettings, TimestampConfig)>,
    out: Inlet,
    metrics: Metrics,
}

impl Sources {
    /// Makes the running sources those of `settings`: unchanged ones are left alone,
    /// changed ones are stopped (waiting up to `timeout` for their in-flight messages to be
    /// acked) and started again, new ones started, removed ones stopped.
    async fn apply(&mut self, settings: &Settings, timeout: Duration) {
        let wanted = settings
            .mqtt
            .iter()
            .map(|m| (format!("mqtt:{}", m.name), SourceSettings::Mqtt(m.clone())))
            .chain(settings.serial.iter().map(|s| {
                (
                    format!("serial:{}", s.name),
                    SourceSettings::Serial(s.clone()),
                )
            }))
            .chain(settings.modbus.iter().map(|m| {
                (
                    format!("modbus:{}", m.name),
                    SourceSettings::Modbus(m.clone()),
                )
            }))
            .map(|(label, s)| (label, (s, settings.timestamps.clone())))
            .collect();
        let changes = self.tasks.changes(wanted);
        let (mut stopped, mut started) = (0, 0);
        for (label, _) in changes.stale {
            let Some(task) = self.tasks.cancel(&label) else {
                continue;
            };
            // The same client id must not connect twice: wait for the old connection.
            if tokio::time::timeout(timeout, task).await.is_err() {
                warn!(source = %label, "the old source did not stop in time");
            }
            stopped += 1;
        }
        for (label, (s, timestamps)) in changes.start {
            let stop = self.tasks.token();
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
                SourceSettings::Modbus(m) => ModbusSource::new(m.clone(), self.metrics.clone())
                    .run(self.out.clone(), stop.clone())
                    .boxed(),
            };
            // A source's `run` cannot fail (`Result<(), Infallible>`): it retries everything.
            let task = run.map(|Ok(())| ());
            self.tasks.spawn(label, (s, timestamps), stop, task);
            started += 1;
        }
        self.tasks.log_update("sources", started, stopped);
    }
}

/// What a sink runs on; two sinks are the same when these are equal.
#[derive(Debug, Clone, PartialEq)]
enum SinkSettings {
    Local(LocalSettings),
    Influx(Box<InfluxSettings>),
    Mqtt(Box<MqttSinkSettings>),
}

impl SinkSettings {
    /// Every sink of `settings`, by name (its journal cursor and metrics label).
    fn of(settings: &Settings) -> BTreeMap<String, SinkSettings> {
        let local = settings
            .local
            .iter()
            .map(|l| (LOCAL_SINK.to_string(), SinkSettings::Local(l.clone())));
        let influx = settings
            .influxdb
            .iter()
            .map(|s| (s.sink.clone(), SinkSettings::Influx(Box::new(s.clone()))));
        let mqtt = settings
            .mqtt_sinks
            .iter()
            .map(|s| (s.sink.clone(), SinkSettings::Mqtt(Box::new(s.clone()))));
        local.chain(influx).chain(mqtt).collect()
    }

    /// Opens the sink (blocking: files, a token to read), ready to run once it has its
    /// journal reader.
    fn open(&self, metrics: &Metrics) -> anyhow::Result<OpenSink> {
        Ok(match self {
            SinkSettings::Local(local) => {
                let sink = LocalSink::open(
                    LocalSinkSettings {
                        path: local.path.clone(),
                        retention: local.retention,
                        max_bytes: local.max_bytes,
                    },
                    metrics,
                )
                .with_context(|| format!("cannot open the local store {}", local.path.display()))?;
                OpenSink {
                    sink: AnySink::Local(sink),
                    runner: RunnerSettings {
                        batch: local.batch,
                        retry: local.retry,
                    },
                    dead_letter: None,
                }
            }
            SinkSettings::Influx(s) => {
                let sink = InfluxSink::new(s)?;
                let dead_letter =
                    DeadLetter::new(&s.dead_letter_dir, &s.sink, s.dead_letter_max_bytes)
                        .with_dialect(sink.dialect());
                OpenSink {
                    sink: AnySink::Influx(sink),
                    runner: RunnerSettings {
                        batch: s.batch,
                        retry: s.retry,
                    },
                    dead_letter: Some(dead_letter),
                }
            }
            SinkSettings::Mqtt(s) => OpenSink {
                sink: AnySink::Mqtt(MqttSink::new(s, metrics)?),
                runner: RunnerSettings {
                    batch: s.batch,
                    retry: s.retry,
                },
                dead_letter: Some(
                    DeadLetter::new(&s.dead_letter_dir, &s.sink, s.dead_letter_max_bytes)
                        .with_dialect(MqttSink::DIALECT),
                ),
            },
        })
    }
}

/// Every kind of sink. [`Sink`] has async methods, so sinks are told apart here rather than
/// boxed.
enum AnySink {
    Local(LocalSink),
    Influx(InfluxSink),
    Mqtt(MqttSink),
}

/// An opened sink, waiting for its journal reader.
struct OpenSink {
    sink: AnySink,
    runner: RunnerSettings,
    /// Where a remote sink sends what its store refuses for good.
    dead_letter: Option<DeadLetter>,
}

impl OpenSink {
    /// The sink's runner, reading with `reader`, as a task that runs until the journal's
    /// writer has finished and everything is written, or until `abort`.
    fn run(
        self,
        reader: JournalReader,
        metrics: &Metrics,
        abort: CancellationToken,
    ) -> futures::future::BoxFuture<'static, Result<(), JournalError>> {
        fn runner<S: Sink>(
            sink: S,
            reader: JournalReader,
            open: (RunnerSettings, Option<DeadLetter>),
            metrics: &Metrics,
        ) -> SinkRunner<S> {
            let runner = SinkRunner::new(sink, reader, open.0, metrics);
            match open.1 {
                Some(dead_letter) => runner.with_dead_letter(dead_letter),
                None => runner,
            }
        }
        let open = (self.runner, self.dead_letter);
        match self.sink {
            AnySink::Local(s) => runner(s, reader, open, metrics).run(abort).boxed(),
            AnySink::Influx(s) => runner(s, reader, open, metrics).run(abort).boxed(),
            AnySink::Mqtt(s) => runner(s, reader, open, metrics).run(abort).boxed(),
        }
    }
}

/// The running sinks, by name. Each runs until the journal's writer has finished and it
/// has written everything (a graceful stop), or until its abort token, a child of the
/// shutdown timeout's (what it has not written stays in the journal, behind its cursor).
struct Sinks {
    tasks: Tasks<SinkSettings>,
    journal: Journal,
    metrics: Metrics,
}

impl Sinks {
    /// Makes the running sinks those of `settings`. Unchanged ones are left alone. A changed
    /// one is opened anew first (if that fails, the old one goes on), then the old one is
    /// stopped where it is and the new one carries on from the same cursor. A new one
    /// starts at the oldest reading the journal still holds; a removed one is stopped and
    /// its cursor deleted, so that it no longer holds journal space.
    ///
    /// # Errors
    /// A sink cannot be opened (the others are updated), or the journal failed.
    async fn apply(&mut self, settings: &Settings) -> anyhow::Result<()> {
        let wanted = SinkSettings::of(settings);
        let names: Vec<String> = wanted.keys().cloned().collect();
        let changes = self.tasks.changes(wanted);
        let (mut stopped, mut started) = (0, 0);
        for (name, _) in changes.stale.iter().filter(|(_, wanted)| !wanted) {
            self.stop(name).await;
            stopped += 1;
        }
        // Cursors: new sinks get one, removed ones (stopped above) lose theirs.
        let journal = self.journal.clone();
        blocking(move || {
            journal.register_sinks(&names.iter().map(String::as_str).collect::<Vec<_>>())
        })
        .await??;
        let mut failed = Vec::new();
        for (name, s) in changes.start {
            let (opening, metrics) = (s.clone(), self.metrics.clone());
            let open = match blocking(move || opening.open(&metrics)).await? {
                Ok(open) => open,
                Err(e) => {
                    error!(sink = %name, error = format!("{e:#}"), "cannot start the sink");
                    failed.push(format!("{name}: {e:#}"));
                    continue;
                }
            };
            if self.tasks.is_running(&name) {
                self.stop(&name).await;
                stopped += 1;
            }
            let (journal, reader_name) = (self.journal.clone(), name.clone());
            let reader = blocking(move || journal.reader(&reader_name)).await??;
            let abort = self.tasks.token();
            let task_name = name.clone();
            let task = open.run(reader, &self.metrics, abort.clone()).map(move |r| {
                if let Err(e) = r {
                    error!(sink = %task_name, error = crate::error::error_chain(&e), "sink stopped on a journal error");
                }
            });
            self.tasks.spawn(name, s, abort, task);
            started += 1;
        }
        self.tasks.log_update("sinks", started, stopped);
        if failed.is_empty() {
            Ok(())
        } else {
            Err(anyhow::anyhow!(failed.join("; ")))
        }
    }

    /// Stops the sink `name` where it is: what it has not written stays in the journal.
    async fn stop(&mut self, name: &str) {
        let Some(task) = self.tasks.cancel(name) else {
            return;
        };
        if let Err(e) = task.await {
            error!(sink = %name, error = %e, "the sink's task failed");
        }
    }
}

/// Starts the HTTP port (`/metrics`, `/health`, the dashboard): useful, not essential, so a
/// port that cannot be served is logged and collecting goes on without it. It is never
/// served with less protection than configured: without its certificate or its secret, it
/// is not served at all.
fn serve_http(
    http: &crate::config::HttpSettings,
    settings: &Settings,
    metrics: &Metrics,
    dashboard: &crate::dashboard::Dashboard,
    stop: &CancellationToken,
) {
    let addr = http.listen;
    let tls = match http.tls.as_ref().map(crate::tls::server_config).transpose() {
        Ok(tls) => tls.map(std::sync::Arc::new),
        Err(e) => {
            error!(%addr, error = %crate::error::error_chain(&e), "cannot serve the HTTP port: [http.tls]; collecting goes on without it");
            return;
        }
    };
    let auth = match http.auth.as_ref().map(crate::http::Auth::load).transpose() {
        Ok(auth) => auth,
        Err(e) => {
            error!(%addr, error = %e, "cannot serve the HTTP port: [http.auth]; collecting goes on without it");
            return;
        }
    };
    if auth.is_some() && tls.is_none() && !addr.ip().is_loopback() {
        warn!(%addr, "the HTTP port asks for credentials over plain HTTP: they cross the network readable by anyone on the way (set [http.tls])");
    }
    let listener = match crate::http::bind(addr) {
        Ok(listener) => listener,
        Err(e) => {
            error!(%addr, error = %e, "cannot serve /metrics and /health (set http.listen, or http.enabled = false); collecting goes on without them");
            return;
        }
    };
    info!(%addr, tls = tls.is_some(), auth = auth.is_some(), "serving the dashboard (/), its API (/api/v1/), /metrics and /health");
    let limits = crate::http::ConnectionLimits {
        header_timeout: http.header_timeout,
        max_connections: http.max_connections,
    };
    let access = crate::http::Access { tls, auth };
    let health = crate::http::HealthLimits {
        journal_max_bytes: settings.journal.max_bytes,
    };
    let (m, stop, dashboard) = (metrics.clone(), stop.clone(), dashboard.clone());
    tokio::spawn(async move {
        if let Err(e) =
            crate::http::serve(listener, limits, access, m, health, dashboard, stop).await
        {
            error!(error = %e, "the HTTP server stopped");
        }
    });
}

/// Logs the changes a reload cannot apply in place.
fn report_restart_only_changes(old: &Settings, new: &Settings) {
    for section in restart_only_changes(old, new) {
        warn!(
            section,
            "this change takes effect at the next start, not on reload"
        );
    }
}

/// The sections whose changes a reload cannot apply in place.
fn restart_only_changes(old: &Settings, new: &Settings) -> Vec<&'static str> {
    // By value, not by `Debug`: a secret prints as `***` whatever it is.
    let sections = [
        ("data_dir", old.data_dir != new.data_dir),
        ("pipeline", old.pipeline != new.pipeline),
        ("journal", old.journal != new.journal),
        ("http", old.http != new.http),
        ("report_by_exception", old.report_rules != new.report_rules),
    ];
    sections
        .into_iter()
        .filter_map(|(what, differs)| differs.then_some(what))
        .collect()
}

/// Awaits `f` until `deadline`; false if the deadline came first.
async fn wait_until<F: std::future::Future>(f: F, deadline: Instant) -> bool {
    tokio::time::timeout_at(deadline, f).await.is_ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn settings(http: &str) -> Settings {
        let text = format!(
            r#"
data_dir = "/tmp/restart-only"
[[sources.mqtt]]
name = "a"
host = "localhost"
[[sources.mqtt.subscriptions]]
topic = "t/{{measurement}}"
[http]
enabled = true
listen = "127.0.0.1:0"
{http}"#
        );
        Config::from_toml(&text).unwrap().validate().unwrap()
    }

    #[test]
    fn a_changed_secret_is_a_restart_only_change_though_it_prints_the_same() {
        let old = settings("[http.auth]\ntoken = \"first-token\"");
        let new = settings("[http.auth]\ntoken = \"second-token\"");
        assert_eq!(format!("{:?}", old.http), format!("{:?}", new.http));
        assert_eq!(restart_only_changes(&old, &new), ["http"]);
        assert!(restart_only_changes(&old, &old.clone()).is_empty());
    }
}
