//! The command line: `run`, `validate`, `query`.

pub mod query;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::metrics::Metrics;
use query::QueryArgs;

/// Collects sensor readings from serial ports and MQTT brokers into time-series stores,
/// without losing any.
#[derive(Debug, Parser)]
#[command(name = "telemetry-collector", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// A subcommand.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the collector until SIGINT or SIGTERM.
    Run {
        /// The configuration file (TOML). Keys can be overridden with environment variables
        /// such as COLLECTOR__SINKS__LOCAL__PATH.
        #[arg(short, long, env = "COLLECTOR_CONFIG")]
        config: PathBuf,
    },
    /// Check a configuration file and print every problem, with its key path (and, when it
    /// is valid, every request each Modbus source will send).
    Validate {
        /// The configuration file (TOML).
        #[arg(short, long, env = "COLLECTOR_CONFIG")]
        config: PathBuf,
    },
    /// Check every configured broker and store (connect, an empty write) and report each as
    /// OK or with its error; writes no readings. Exits non-zero if any check failed.
    Doctor {
        /// The configuration file (TOML).
        #[arg(short, long, env = "COLLECTOR_CONFIG")]
        config: PathBuf,
    },
    /// Read the local store.
    Query {
        /// The configuration file, to find the store (`sinks.local.path`).
        #[arg(
            short,
            long,
            env = "COLLECTOR_CONFIG",
            required_unless_present = "store"
        )]
        config: Option<PathBuf>,
        /// The store file itself, instead of a configuration.
        #[arg(long, conflicts_with = "config")]
        store: Option<PathBuf>,
        /// What to read and how to print it.
        #[command(flatten)]
        args: QueryArgs,
    },
}

/// The binary's entry point: parses the command line, runs the command, prints an error
/// with its whole cause chain, and maps the outcome to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Validate { config } => Ok(validate(&config)),
        Command::Doctor { config } => doctor(&config),
        Command::Query {
            config,
            store,
            args,
        } => {
            let store = match (store, config) {
                (Some(s), _) => s,
                (None, Some(c)) => store_path(&c)?,
                (None, None) => anyhow::bail!("give --config or --store"),
            };
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            // `run` flushes, and ends quietly on a closed pipe (`query | head`).
            query::run(&store, &args, &mut out)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run { config } => {
            init_logging();
            let settings = Config::load(&config)
                .and_then(Config::validate)
                .map_err(|e| anyhow::anyhow!("{}:\n{e}", config.display()))?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("collector")
                .build()
                .context("cannot start the runtime")?;
            let result = runtime.block_on(async {
                let shutdown = CancellationToken::new();
                let (reload_tx, reloads) = tokio::sync::mpsc::channel(1);
                tokio::spawn(watch_signals(shutdown.clone(), config.clone(), reload_tx));
                crate::pipeline::run_reloadable(settings, Metrics::new(), shutdown, reloads).await
            });
            // The pipeline has stopped in order (or given up at its own timeout): do not
            // wait for anything left on a blocking thread.
            runtime.shutdown_timeout(std::time::Duration::from_secs(2));
            result?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn validate(path: &Path) -> ExitCode {
    match Config::load(path).and_then(Config::validate) {
        Ok(s) => {
            let subscriptions: usize = s.mqtt.iter().map(|m| m.subscriptions.len()).sum();
            let remote: Vec<&str> = s
                .influxdb
                .iter()
                .map(|i| i.sink.as_str())
                .chain(s.mqtt_sinks.iter().map(|m| m.sink.as_str()))
                .collect();
            println!(
                "{}: OK ({} MQTT connection(s), {} subscription(s), {} serial port(s), {} Modbus bus(es); journal {}; local store {}{})",
                path.display(),
                s.mqtt.len(),
                subscriptions,
                s.serial.len(),
                s.modbus.len(),
                s.journal.path.display(),
                s.local
                    .as_ref()
                    .map_or_else(|| "off".to_string(), |l| l.path.display().to_string()),
                if remote.is_empty() {
                    String::new()
                } else {
                    format!("; sinks {}", remote.join(", "))
                },
            );
            for note in &s.unchecked {
                println!("  not checked: {}: {}", note.path, note.message);
            }
            // What each Modbus source will ask its devices, request by request.
            for m in &s.modbus {
                print!("{}", crate::sources::modbus::plan::Shown(m));
            }
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{}: {} problem(s)", path.display(), errors.0.len());
            for line in errors.to_string().lines() {
                eprintln!("  {line}");
            }
            ExitCode::FAILURE
        }
    }
}

fn doctor(path: &Path) -> anyhow::Result<ExitCode> {
    let settings = Config::load(path)
        .and_then(Config::validate)
        .map_err(|e| anyhow::anyhow!("{}:\n{e}", path.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let stdout = std::io::stdout();
    let ok = runtime.block_on(crate::doctor::run(&settings, &mut stdout.lock()))?;
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn store_path(config: &Path) -> anyhow::Result<PathBuf> {
    let settings = Config::load(config)
        .and_then(Config::validate)
        .map_err(|e| anyhow::anyhow!("{}:\n{e}", config.display()))?;
    settings
        .local
        .map(|l| l.path)
        .context("the local store is disabled in this configuration")
}

/// Logs to stderr: `RUST_LOG` filters (default `info`, hyper's own lines only from `error`). Under systemd (journald reads
/// stderr and stamps each line itself) no timestamp is printed. Colours only on a terminal,
/// and not with `NO_COLOR` set (see [`colours`]).
fn init_logging() {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // hyper logs a warning per client that times out, unlimited: the HTTP port logs
        // its own, at most once a minute.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,hyper=error"));
    let under_journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let ansi = colours(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
        under_journald,
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(ansi);
    if under_journald {
        builder.without_time().init();
    } else {
        builder.init();
    }
}

/// Whether log lines get colour codes: only when stderr is a terminal, `NO_COLOR` is unset
/// or empty (<https://no-color.org>), and journald is not the reader. A file, a pipe or the
/// journal gets plain text.
fn colours(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>, journald: bool) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty()) && !journald
}

/// Cancels `shutdown` on the first SIGINT or SIGTERM; a second one exits at once. On SIGHUP
/// reads and validates `config` again: a valid one goes to the pipeline through `reloads`,
/// a broken one is refused (logged) and the running configuration stays.
async fn watch_signals(
    shutdown: CancellationToken,
    config: PathBuf,
    reloads: tokio::sync::mpsc::Sender<crate::config::Settings>,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        warn!("cannot install signal handlers");
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => { info!("SIGTERM: stopping"); break; }
            _ = int.recv() => { info!("SIGINT: stopping"); break; }
            _ = hup.recv() => match Config::load(&config).and_then(Config::validate) {
                Ok(settings) => {
                    info!(config = %config.display(), "SIGHUP: reloading");
                    if reloads.send(settings).await.is_err() {
                        break;
                    }
                }
                Err(e) => error!(
                    config = %config.display(),
                    problems = %e.to_string().replace('\n', "; "),
                    "SIGHUP: the new configuration is refused; the running one stays"
                ),
            },
        }
    }
    shutdown.cancel();
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    warn!("second signal: exiting now; what is not written stays in the journal");
    std::process::exit(130);
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::colours;

    #[test]
    fn colours_only_on_a_terminal_without_no_color_outside_journald() {
        assert!(colours(true, None, false));
        assert!(colours(true, Some(OsStr::new("")), false));
        assert!(!colours(false, None, false), "a file or a pipe");
        assert!(!colours(true, Some(OsStr::new("1")), false), "NO_COLOR");
        assert!(!colours(true, None, true), "journald");
    }
}
