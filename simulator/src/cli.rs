//! The `telemetry-simulator` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::broker::Broker;
use crate::fleet::{FaultConfig, FaultKind, Fleet, FleetConfig, PayloadFormat};
use crate::manifest::{write_manifest, ManifestEntry};
use crate::mqtt::{publish_stream, PublishConfig, PublishReport};

/// Samples per device when neither --count nor --duration is given.
const DEFAULT_COUNT: usize = 10;

/// Deterministic fake sensor devices for telemetry-collector.
#[derive(Debug, Parser)]
#[command(name = "telemetry-simulator", version)]
pub struct Cli {
    /// What to simulate.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Publish the readings of simulated devices to an MQTT broker.
    Mqtt(Box<MqttArgs>),
    /// Host an in-process MQTT broker until Ctrl-C.
    Broker(BrokerArgs),
    /// Simulate serial devices on pseudo-terminals, each behind a link in --dir.
    Serial(Box<SerialArgs>),
    /// Simulate Modbus devices: an RTU bus on a pty, and/or a Modbus TCP server.
    Modbus(Box<crate::modbus::cli::ModbusArgs>),
    /// Benchmark publisher: encode every PUBLISH of a workload first, then stream them as
    /// fast as the broker's sockets take them.
    Blast(Box<BlastArgs>),
    /// Benchmark subscriber: count and throw away what a topic filter receives.
    Discard(DiscardArgs),
}

/// `telemetry-simulator blast`: the messages of `mqtt --count` (good ones only), sent by a
/// publisher that is never the bottleneck (see the `blast` module).
#[derive(Debug, Args)]
pub struct BlastArgs {
    /// Broker host.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Broker port.
    #[arg(long, default_value_t = 1883)]
    pub port: u16,
    /// Number of devices.
    #[arg(long, default_value_t = 1000)]
    pub devices: usize,
    /// Number of sites the devices are spread over.
    #[arg(long, default_value_t = 10)]
    pub sites: usize,
    /// Seed of all values.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Time between two samples of a device (in the timestamps).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// Timestamp of the first sample in ns [default: the last sample is stamped now, to the
    /// second].
    #[arg(long)]
    pub start_ns: Option<i64>,
    /// Samples per device.
    #[arg(long, default_value_t = 500)]
    pub count: usize,
    /// Payload format.
    #[arg(long, value_enum, default_value_t = PayloadFormat::Json)]
    pub format: PayloadFormat,
    /// Leave the integer `count` field out: three float fields per reading.
    #[arg(long)]
    pub no_counter: bool,
    /// Measurement of the readings (the last topic level).
    #[arg(long, default_value = "env")]
    pub measurement: String,
    /// First topic level(s).
    #[arg(long, default_value = "sensors")]
    pub topic_prefix: String,
    /// QoS of the publishes.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub qos: u8,
    /// TCP connections; devices are spread over them.
    #[arg(long, default_value_t = 2)]
    pub connections: usize,
    /// Unacknowledged QoS 1 publishes per connection (keep it within the broker's receive
    /// window: Mosquitto's `max_inflight_messages` for MQTT 5 clients).
    #[arg(long, default_value_t = 1000)]
    pub window: usize,
    /// Client id prefix; connection N uses `PREFIX-N` [default: blast-PID].
    #[arg(long)]
    pub client_id_prefix: Option<String>,
    /// After encoding and connecting, print `ready` and wait for a line on standard input
    /// before sending (a benchmark starts its clocks then).
    #[arg(long)]
    pub go_on_stdin: bool,
}

/// `telemetry-simulator discard`.
#[derive(Debug, Args)]
pub struct DiscardArgs {
    /// Broker host.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Broker port.
    #[arg(long, default_value_t = 1883)]
    pub port: u16,
    /// Topic filter.
    #[arg(long, default_value = "sensors/#")]
    pub topic: String,
    /// QoS of the subscription.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub qos: u8,
    /// Stop after this many messages.
    #[arg(long)]
    pub count: usize,
    /// Give up when nothing came for this long.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub idle: Duration,
    /// Client id [default: discard-PID].
    #[arg(long)]
    pub client_id: Option<String>,
}

/// `telemetry-simulator mqtt`.
#[derive(Debug, Args)]
pub struct MqttArgs {
    /// Broker host.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Broker port.
    #[arg(long, default_value_t = 1883)]
    pub port: u16,
    /// Number of devices.
    #[arg(long, default_value_t = 100)]
    pub devices: usize,
    /// Number of sites the devices are spread over.
    #[arg(long, default_value_t = 10)]
    pub sites: usize,
    /// Seed of all values: same seed, same messages.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Time between two samples of a device (in the timestamps, not the pacing).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// Timestamp of the first sample in ns since the epoch [default: with --count, so that
    /// the last sample is stamped now (a collector rejects readings from the future); with
    /// --duration, now; to the second].
    #[arg(long)]
    pub start_ns: Option<i64>,
    /// Messages per second over all connections [default: as fast as possible].
    #[arg(long)]
    pub rate: Option<f64>,
    /// Samples per device [default: 10].
    #[arg(long, conflicts_with = "duration")]
    pub count: Option<usize>,
    /// Publish for this long instead of a number of samples.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Payload format.
    #[arg(long, value_enum, default_value_t = PayloadFormat::Json)]
    pub format: PayloadFormat,
    /// Leave the integer `count` field out of JSON and line protocol readings: three float
    /// fields each (temperature, humidity, pressure).
    #[arg(long)]
    pub no_counter: bool,
    /// Measurement of the readings.
    #[arg(long, default_value = "env")]
    pub measurement: String,
    /// First topic level(s).
    #[arg(long, default_value = "sensors")]
    pub topic_prefix: String,
    /// QoS of the publishes.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub qos: u8,
    /// MQTT connections; devices are spread over them.
    #[arg(long, default_value_t = 10)]
    pub connections: usize,
    /// Client id prefix; connection N uses `PREFIX-N` [default: telemetry-simulator-PID].
    #[arg(long)]
    pub client_id_prefix: Option<String>,
    /// Ask the broker for clean sessions (unacknowledged messages are still republished).
    #[arg(long)]
    pub clean_session: bool,
    /// Unacknowledged QoS 1 publishes per connection.
    #[arg(long, default_value_t = 100)]
    pub max_inflight: u16,
    /// Make every Nth message faulty (0: none).
    #[arg(long, default_value_t = 0)]
    pub faults_every: usize,
    /// Kinds of faults, used in turn [default: all].
    #[arg(long, value_enum, value_delimiter = ',')]
    pub fault_kinds: Vec<FaultKind>,
    /// Size of oversized payloads.
    #[arg(long, default_value_t = 64 * 1024)]
    pub oversized_bytes: usize,
    /// Write what was sent (and whether it was acknowledged) to this JSON-lines file.
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    /// Start an in-process broker on this address and publish into it (instead of
    /// --host/--port).
    #[arg(long)]
    pub host_broker: Option<SocketAddr>,
    /// With --host-broker: keep the broker up this long after publishing.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub linger: Duration,
}

/// `telemetry-simulator broker`.
#[derive(Debug, Args)]
pub struct BrokerArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:1883")]
    pub listen: SocketAddr,
}

/// `telemetry-simulator serial`.
#[derive(Debug, Args)]
pub struct SerialArgs {
    /// Directory of the links (`DIR/ser-00`, `DIR/ser-01`, ...); created if missing.
    #[arg(long)]
    pub dir: PathBuf,
    /// Number of devices (ports).
    #[arg(long, default_value_t = 3)]
    pub devices: usize,
    /// Index of the first device's value model and id (`ser-NN`).
    #[arg(long, default_value_t = 0)]
    pub first: usize,
    /// Baud rate: output is paced at 10 bits per byte.
    #[arg(long, default_value_t = 115_200)]
    pub baud: u32,
    /// Payload format.
    #[arg(long, value_enum, default_value_t = crate::serial::SerialFormat::Json)]
    pub format: crate::serial::SerialFormat,
    /// Stream lines (`stream`) or answer each command written to the port (`answer`).
    #[arg(long, value_enum, default_value_t = SerialMode::Stream)]
    pub mode: SerialMode,
    /// With `--mode answer`: the last byte of a command.
    #[arg(long, default_value = "\n")]
    pub command_end: String,
    /// Seed of all values.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Time between two samples of a device, in the timestamps (and the pacing, without --rate).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// Lines per second per device [default: one per --interval].
    #[arg(long)]
    pub rate: Option<f64>,
    /// Samples per device [default: until stopped].
    #[arg(long)]
    pub count: Option<u64>,
    /// Timestamp of the first sample in ns [default: with --count, so that the last one is
    /// stamped now; else now].
    #[arg(long)]
    pub start_ns: Option<i64>,
    /// Measurement (written by line protocol lines).
    #[arg(long, default_value = "env")]
    pub measurement: String,
    /// Make every Nth line bad (0: none).
    #[arg(long, default_value_t = 0)]
    pub faults_every: u64,
    /// Kinds of bad lines, used in turn [default: all].
    #[arg(long, value_enum, value_delimiter = ',')]
    pub fault_kinds: Vec<crate::serial::SerialFault>,
    /// Length of overlong lines.
    #[arg(long, default_value_t = 8192)]
    pub overlong_bytes: usize,
    /// Unplug every device after every Nth line (0: never), and plug it in again after
    /// --replug-after.
    #[arg(long, default_value_t = 0)]
    pub unplug_every: u64,
    /// How long an unplugged device stays unplugged.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub replug_after: Duration,
    /// After the last line, keep the ports open until the collector has read everything
    /// (at most this long).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub linger: Duration,
    /// Write what was sent to this JSON-lines file.
    #[arg(long)]
    pub manifest: Option<PathBuf>,
}

/// How simulated serial devices send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SerialMode {
    /// On their own, one line per interval (or at --rate).
    Stream,
    /// One line per command (request/response instruments).
    Answer,
}

/// Runs a command until it is done or `stop` is cancelled.
///
/// # Errors
/// Invalid arguments, a broker that cannot start, or a manifest that cannot be written.
pub async fn run(cli: Cli, stop: CancellationToken) -> anyhow::Result<()> {
    match cli.command {
        Command::Mqtt(args) => run_mqtt(*args, stop).await,
        Command::Broker(args) => {
            start_broker(args.listen).await?;
            println!("MQTT broker listening on {}; Ctrl-C to stop", args.listen);
            stop.cancelled().await;
            Ok(())
        }
        Command::Serial(args) => run_serial(*args, stop).await,
        Command::Modbus(args) => crate::modbus::cli::run(*args, stop).await,
        Command::Blast(args) => tokio::task::spawn_blocking(move || run_blast(&args)).await?,
        Command::Discard(args) => tokio::task::spawn_blocking(move || run_discard(&args)).await?,
    }
}

fn run_blast(args: &BlastArgs) -> anyhow::Result<()> {
    use std::io::{BufRead as _, Write as _};
    let fleet = Fleet::new(FleetConfig {
        devices: args.devices,
        sites: args.sites,
        seed: args.seed,
        start_ns: match args.start_ns {
            Some(ns) => ns,
            None => start_ns_ending_now(args.interval, args.count)?,
        },
        interval: args.interval,
        format: args.format,
        measurement: args.measurement.clone(),
        topic_prefix: args.topic_prefix.clone(),
        faults: FaultConfig::default(),
        counter: !args.no_counter,
    })?;
    let total = args.count * args.devices * fleet.messages_per_sample();
    let started = std::time::Instant::now();
    let blast = crate::blast::Blast::encode(fleet.iter().take(total), args.qos, args.connections)?;
    println!(
        "encoded {} PUBLISH packets ({} bytes) for {} connections in {:.2} s",
        blast.messages(),
        blast.bytes(),
        args.connections,
        started.elapsed().as_secs_f64()
    );
    let prefix = args
        .client_id_prefix
        .clone()
        .unwrap_or_else(|| format!("blast-{}", std::process::id()));
    let streams = blast.connect(&args.host, args.port, &prefix)?;
    if args.go_on_stdin {
        println!("ready");
        std::io::stdout().flush()?;
        std::io::stdin().lock().read_line(&mut String::new())?;
    }
    let report = blast.send(streams, args.window)?;
    let secs = report.elapsed.as_secs_f64();
    println!(
        "published {} messages at QoS {} in {secs:.3} s ({:.0} msg/s; {} acks out of order)",
        report.messages,
        args.qos,
        report.messages as f64 / secs.max(1e-9),
        report.acks_out_of_order
    );
    Ok(())
}

fn run_discard(args: &DiscardArgs) -> anyhow::Result<()> {
    use std::io::Write as _;
    let client_id = args
        .client_id
        .clone()
        .unwrap_or_else(|| format!("discard-{}", std::process::id()));
    let spec = crate::blast::DiscardSpec {
        host: args.host.clone(),
        port: args.port,
        client_id,
        filter: args.topic.clone(),
        qos: args.qos,
        expected: args.count,
        idle: args.idle,
    };
    let report = crate::blast::discard(&spec, || {
        println!("subscribed");
        let _ = std::io::stdout().flush();
    })?;
    println!(
        "received {} of {} messages; first to last {:.3} s; last {:.3} s ago",
        report.messages,
        args.count,
        report.first_to_last.as_secs_f64(),
        report.since_last.as_secs_f64()
    );
    Ok(())
}

/// The first timestamp of `count` samples `interval` apart whose last one is now, to the
/// second (a collector rejects readings from the future).
fn start_ns_ending_now(interval: Duration, count: usize) -> anyhow::Result<i64> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?;
    let now_ns = i64::try_from(now.as_secs())?.saturating_mul(1_000_000_000);
    let span = i64::try_from(
        interval
            .as_nanos()
            .saturating_mul(count.saturating_sub(1) as u128),
    )?;
    Ok(now_ns.saturating_sub(span))
}

async fn run_serial(args: SerialArgs, stop: CancellationToken) -> anyhow::Result<()> {
    use crate::serial::{answer, stream, SerialDevice, SerialDeviceConfig, SerialPort, StreamPlan};

    anyhow::ensure!(args.devices > 0, "--devices must be at least 1");
    anyhow::ensure!(
        !args.interval.is_zero(),
        "--interval must be more than zero"
    );
    let command_end = match args.command_end.as_bytes() {
        [b] => *b,
        _ => anyhow::bail!("--command-end must be one byte"),
    };
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    let now_ns = i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos())?;
    let start_ns = args.start_ns.unwrap_or_else(|| {
        let span = args.count.unwrap_or(1).saturating_sub(1);
        let span = i64::try_from(args.interval.as_nanos().saturating_mul(u128::from(span)))
            .unwrap_or(i64::MAX);
        (now_ns - span) / 1_000_000_000 * 1_000_000_000
    });
    let gap = match args.rate {
        Some(r) if r > 0.0 && r.is_finite() => Duration::from_secs_f64(1.0 / r),
        Some(_) => anyhow::bail!("--rate must be more than zero"),
        None => args.interval,
    };
    let samples = 0..args.count.unwrap_or(u64::MAX);
    let mut tasks = tokio::task::JoinSet::new();
    for i in args.first..args.first + args.devices {
        let id = format!("ser-{i:02}");
        let link = args.dir.join(&id);
        let mut port = SerialPort::plug(&link, args.baud)
            .with_context(|| format!("cannot make a pty behind {}", link.display()))?;
        println!("{}", link.display());
        let device = SerialDevice::new(SerialDeviceConfig {
            id,
            index: i,
            seed: args.seed,
            start_ns,
            interval: args.interval,
            format: args.format,
            measurement: args.measurement.clone(),
            overlong_bytes: args.overlong_bytes,
            ..SerialDeviceConfig::default()
        });
        let plan = StreamPlan {
            samples: samples.clone(),
            gap: Some(gap),
            faults_every: (args.faults_every > 0).then_some(args.faults_every),
            fault_kinds: args.fault_kinds.clone(),
            unplug_every: (args.unplug_every > 0).then_some(args.unplug_every),
            replug_after: args.replug_after,
        };
        let (mode, linger, stop) = (args.mode, args.linger, stop.clone());
        let samples = samples.clone();
        tasks.spawn(async move {
            let sent = match mode {
                SerialMode::Stream => stream(&mut port, &device, &plan, &stop).await,
                SerialMode::Answer => {
                    answer(&mut port, &device, command_end, samples, false, &stop).await
                }
            };
            if !stop.is_cancelled() {
                port.drain(linger).await;
            }
            sent
        });
    }
    use std::io::Write as _;
    std::io::stdout().flush()?;
    info!(devices = args.devices, baud = args.baud, format = ?args.format, "serial devices plugged in");
    let started = std::time::Instant::now();
    let mut sent = Vec::new();
    while let Some(done) = tasks.join_next().await {
        sent.extend(done??);
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "sent {} lines from {} serial devices in {secs:.2} s ({:.1} lines/s)",
        sent.len(),
        args.devices,
        sent.len() as f64 / secs.max(1e-9)
    );
    if let Some(path) = &args.manifest {
        write_manifest(path, sent.into_iter().map(|m| ManifestEntry::new(m, true)))
            .context("cannot write the manifest")?;
    }
    Ok(())
}

/// Cancels `stop` on Ctrl-C or SIGTERM.
pub fn cancel_on_signal(stop: CancellationToken) {
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            match signal(SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        info!("stopping");
        stop.cancel();
    });
}

async fn start_broker(addr: SocketAddr) -> anyhow::Result<crate::broker::BrokerHandle> {
    tokio::task::spawn_blocking(move || Broker::start(addr))
        .await?
        .with_context(|| format!("cannot start the in-process broker on {addr}"))
}

async fn run_mqtt(args: MqttArgs, stop: CancellationToken) -> anyhow::Result<()> {
    let fleet = Fleet::new(fleet_config(&args)?)?;
    let (host, port) = match args.host_broker {
        Some(addr) => {
            start_broker(addr).await?;
            (addr.ip().to_string(), addr.port())
        }
        None => (args.host.clone(), args.port),
    };
    let cfg = PublishConfig {
        host,
        port,
        client_id_prefix: args
            .client_id_prefix
            .clone()
            .unwrap_or_else(|| format!("telemetry-simulator-{}", std::process::id())),
        connections: args.connections,
        qos: args.qos,
        rate: args.rate,
        clean_session: args.clean_session,
        max_inflight: args.max_inflight,
    };
    info!(
        host = cfg.host,
        port = cfg.port,
        devices = args.devices,
        format = ?args.format,
        "publishing"
    );

    let started = std::time::Instant::now();
    let report = match args.duration {
        Some(duration) => {
            let deadline = started + duration;
            let messages = fleet
                .iter()
                .take_while(|_| std::time::Instant::now() < deadline);
            publish_stream(cfg, messages, stop.clone()).await?
        }
        None => {
            let total =
                args.count.unwrap_or(DEFAULT_COUNT) * args.devices * fleet.messages_per_sample();
            publish_stream(cfg, fleet.iter().take(total), stop.clone()).await?
        }
    };
    let elapsed = started.elapsed();
    println!(
        "{}",
        summary(&report, args.qos, elapsed, stop.is_cancelled())
    );

    if let Some(path) = &args.manifest {
        // The fleet is deterministic: regenerate the messages rather than keep them.
        let entries = fleet
            .iter()
            .zip(&report.acked)
            .map(|(message, acked)| ManifestEntry::new(message, *acked));
        write_manifest(path, entries).context("cannot write the manifest")?;
        info!(path = %path.display(), entries = report.acked.len(), "manifest written");
    }
    if args.host_broker.is_some() && !stop.is_cancelled() {
        info!(linger = ?args.linger, "keeping the broker up");
        tokio::select! {
            () = stop.cancelled() => {}
            () = tokio::time::sleep(args.linger) => {}
        }
    }
    Ok(())
}

fn fleet_config(args: &MqttArgs) -> anyhow::Result<FleetConfig> {
    let start_ns = match args.start_ns {
        Some(ns) => ns,
        None => {
            let samples = match args.duration {
                None => args.count.unwrap_or(DEFAULT_COUNT),
                Some(_) => 1,
            };
            start_ns_ending_now(args.interval, samples)?
        }
    };
    Ok(FleetConfig {
        devices: args.devices,
        sites: args.sites,
        seed: args.seed,
        start_ns,
        interval: args.interval,
        format: args.format,
        measurement: args.measurement.clone(),
        topic_prefix: args.topic_prefix.clone(),
        faults: FaultConfig {
            every: (args.faults_every > 0).then_some(args.faults_every),
            kinds: if args.fault_kinds.is_empty() {
                FaultKind::ALL.to_vec()
            } else {
                args.fault_kinds.clone()
            },
            oversized_bytes: args.oversized_bytes,
        },
        counter: !args.no_counter,
    })
}

fn summary(report: &PublishReport, qos: u8, elapsed: Duration, interrupted: bool) -> String {
    let secs = elapsed.as_secs_f64();
    let acked = if qos == 0 {
        "no acks at QoS 0".to_owned()
    } else {
        format!("{} acked", report.acked_count())
    };
    let (sent, total) = (report.sent, report.acked.len());
    let (reconnects, retransmissions) = (report.reconnects, report.retransmissions);
    let rate = sent as f64 / secs.max(1e-9);
    let interrupted = if interrupted { ", interrupted" } else { "" };
    format!(
        "sent {sent} of {total} messages ({acked}), {reconnects} reconnects, \
         {retransmissions} retransmissions, in {secs:.2} s ({rate:.1} msg/s){interrupted}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_the_documented_example() {
        let cli = Cli::try_parse_from([
            "telemetry-simulator",
            "mqtt",
            "--host",
            "127.0.0.1",
            "--port",
            "1883",
            "--devices",
            "100",
            "--sites",
            "10",
            "--seed",
            "42",
            "--interval",
            "1s",
            "--rate",
            "500",
            "--count",
            "10",
            "--format",
            "line-protocol",
            "--qos",
            "1",
            "--connections",
            "10",
            "--faults-every",
            "0",
            "--manifest",
            "sent.jsonl",
            "--host-broker",
            "127.0.0.1:1884",
            "--linger",
            "5s",
            "--fault-kinds",
            "garbage,invalid-utf8",
        ])
        .expect("valid");
        let Command::Mqtt(args) = cli.command else {
            panic!("not mqtt");
        };
        assert_eq!(args.format, PayloadFormat::LineProtocol);
        assert_eq!(
            args.fault_kinds,
            [FaultKind::Garbage, FaultKind::InvalidUtf8]
        );
        assert_eq!(args.linger, Duration::from_secs(5));
        let config = fleet_config(&args).expect("config");
        assert_eq!(config.faults.every, None);

        let both = Cli::try_parse_from([
            "telemetry-simulator",
            "mqtt",
            "--count",
            "1",
            "--duration",
            "1s",
        ]);
        assert!(both.is_err());
        let qos2 = Cli::try_parse_from(["telemetry-simulator", "mqtt", "--qos", "2"]);
        assert!(qos2.is_err());
    }

    #[test]
    fn parses_the_documented_serial_examples() {
        let cli = Cli::try_parse_from([
            "telemetry-simulator",
            "serial",
            "--dir",
            "/tmp/ports",
            "--devices",
            "3",
            "--baud",
            "115200",
            "--format",
            "key-value",
            "--count",
            "100",
            "--rate",
            "10",
            "--faults-every",
            "20",
            "--fault-kinds",
            "garbage,overlong",
            "--unplug-every",
            "50",
            "--replug-after",
            "2s",
            "--manifest",
            "sent.jsonl",
        ])
        .expect("valid");
        let Command::Serial(args) = cli.command else {
            panic!("not serial");
        };
        assert_eq!(args.format, crate::serial::SerialFormat::KeyValue);
        assert_eq!(
            args.fault_kinds,
            [
                crate::serial::SerialFault::Garbage,
                crate::serial::SerialFault::Overlong
            ]
        );
        assert_eq!(args.mode, SerialMode::Stream);
        assert_eq!(args.command_end, "\n");
        let answer = Cli::try_parse_from([
            "telemetry-simulator",
            "serial",
            "--dir",
            "/tmp/ports",
            "--first",
            "3",
            "--devices",
            "1",
            "--mode",
            "answer",
            "--format",
            "csv",
        ])
        .expect("valid");
        let Command::Serial(args) = answer.command else {
            panic!("not serial");
        };
        assert_eq!((args.first, args.mode), (3, SerialMode::Answer));
    }
}
