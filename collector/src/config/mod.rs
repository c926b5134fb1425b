//! Configuration: the TOML file as written ([`Config`]), its loading with environment
//! overrides, and its validation into what the pipeline runs on ([`Settings`]).
//!
//! Loading reports every unknown key at once, each with its path (a misspelt key must never
//! fall back to a default silently), and a wrongly typed value with its path. Validation then
//! reports every remaining problem at once, one line each.
//!
//! A leaf of the crate: it imports no component (sources, sinks, the journal), only the data
//! types beneath them ([`crate::reading`], [`crate::payload`], [`crate::topic`]), so that
//! every component can depend on its settings. Each section validates itself in its own file
//! into `Problems` (`problems.rs`); `settings.rs` validates the whole.

mod broker;
mod bytesize;
mod files;
mod format;
mod http;
mod influxdb;
mod modbus;
mod mqtt_sink;
mod problems;
mod report;
mod secret;
mod serial;
mod settings;
mod syntax;

pub use broker::{BrokerSettings, Protocol, HOSTNAME_PLACEHOLDER};
pub use bytesize::ByteSize;
pub use format::{CsvConfig, FormatName, JsonConfig, LineProtocolConfig};
pub use http::{HttpAuthConfig, HttpAuthSettings, HttpConfig, HttpSettings, HttpTlsConfig};
pub use influxdb::{InfluxApi, InfluxApiSettings, InfluxDbConfig, InfluxSettings, SINK_PREFIX};
pub use mqtt_sink::{MqttSinkConfig, MqttSinkSettings, MQTT_SINK_PREFIX};
pub use secret::{Secret, SecretSource};
pub use settings::{JournalSettings, LocalSettings, MqttSettings, Settings, SubscriptionSettings};
// Modbus RTU and TCP (issue 18), and report by exception for every source.
pub use modbus::{
    frame_gap, DataType, DeviceSettings, FieldSettings, Link, ModbusConfig, ModbusSettings, Order,
    RegisterKind, RtuSettings, TcpSettings, Transport, MAX_BITS, MAX_REGISTERS,
};
use report::report_settings;
pub use report::{
    ReportConfig, ReportRule, ReportRuleConfig, ReportSettings, Threshold, DEFAULT_HEARTBEAT,
};
// Serial ports (issue 3).
pub use serial::{
    FlowControl, LineEnding, Parity, PollConfig, PollSettings, SerialConfig, SerialSettings,
};

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The prefix of environment overrides: `COLLECTOR__SINKS__LOCAL__PATH=/x` sets
/// `sinks.local.path`. Nested keys are joined with `__`.
pub const ENV_PREFIX: &str = "COLLECTOR";

/// The whole configuration file, as written.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    /// Where the journal and the local store live unless their own paths are set.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// The channel between sources and the journal, and shutdown.
    #[serde(default)]
    pub pipeline: PipelineConfig,
    /// The durable journal every reading passes through.
    #[serde(default)]
    pub journal: JournalConfig,
    /// Which device timestamps are believable.
    #[serde(default)]
    pub timestamps: TimestampConfig,
    /// Where readings come from.
    #[serde(default)]
    pub sources: SourcesConfig,
    /// Where readings go.
    #[serde(default)]
    pub sinks: SinksConfig,
    /// The local HTTP port: `/metrics`, `/health` and the dashboard.
    #[serde(default)]
    pub http: HttpConfig,
    /// `[[report_by_exception]]`: fields of any source written only when they change.
    #[serde(default)]
    pub report_by_exception: Vec<ReportRuleConfig>,
}

/// `[pipeline]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct PipelineConfig {
    /// Messages (MQTT messages, serial lines) between the sources and the journal: waiting,
    /// or in the commit under way (not yet acknowledged).
    pub channel_capacity: usize,
    /// How long a stop may take to flush sinks before the rest is left in the journal.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            channel_capacity: 1024,
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

/// What the journal does when it reaches `max_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Stop taking readings (and acking MQTT messages) until a sink catches up: the sources
    /// slow down, the brokers buffer, nothing is dropped here.
    Block,
    /// Delete the oldest readings that a sink has not yet written, counted per sink.
    DropOldest,
}

/// `[journal]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct JournalConfig {
    /// The journal file (default: `<data_dir>/journal.db`).
    pub path: Option<PathBuf>,
    /// The most the journal may hold before `when_full` applies.
    pub max_bytes: ByteSize,
    /// What to do when it is full.
    pub when_full: WhenFull,
    /// Sync every commit to disk before acknowledging (turn off only if losing the last
    /// moments before a power cut is acceptable).
    pub sync: bool,
    /// How long a commit that acknowledges nothing (QoS 0 messages, serial lines) may wait
    /// for more readings to go with it.
    #[serde(with = "humantime_serde")]
    pub commit_delay: Duration,
    /// How long a commit that acknowledges messages (QoS 1) may wait for more, counted from
    /// the first of them; it goes sooner once `ack_batch` messages wait for their ack.
    #[serde(with = "humantime_serde")]
    pub ack_delay: Duration,
    /// How many messages waiting for their ack make a commit go at once.
    pub ack_batch: usize,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            path: None,
            max_bytes: ByteSize(1 << 30),
            when_full: WhenFull::Block,
            sync: true,
            commit_delay: Duration::from_millis(5),
            ack_delay: Duration::from_millis(2),
            ack_batch: 16,
        }
    }
}

/// `[timestamps]`: readings outside `[now - max_past, now + max_future]` are rejected.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default)]
pub struct TimestampConfig {
    /// How far in the future a device's clock may be.
    #[serde(with = "humantime_serde")]
    pub max_future: Duration,
    /// How old a reading may be (devices that buffer while offline send old readings).
    #[serde(with = "humantime_serde")]
    pub max_past: Duration,
}

impl Default for TimestampConfig {
    fn default() -> Self {
        TimestampConfig {
            max_future: Duration::from_secs(10 * 60),
            max_past: Duration::from_secs(30 * 86_400),
        }
    }
}

/// `[sources]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct SourcesConfig {
    /// `[[sources.mqtt]]`: one entry per broker connection.
    pub mqtt: Vec<MqttConfig>,
    /// `[[sources.serial]]`: one entry per serial port.
    pub serial: Vec<SerialConfig>,
    /// `[[sources.modbus]]`: one entry per Modbus bus (RTU) or connection (TCP).
    pub modbus: Vec<ModbusConfig>,
}

/// The default bound of one dead-letter file (`dead_letter_max_bytes` of a remote sink).
const DEFAULT_DEAD_LETTER_MAX_BYTES: u64 = 64 << 20;

fn default_dead_letter_max_bytes() -> ByteSize {
    ByteSize(DEFAULT_DEAD_LETTER_MAX_BYTES)
}

/// Capped exponential backoff with full jitter.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(default)]
pub struct BackoffConfig {
    /// The first delay.
    #[serde(with = "humantime_serde")]
    pub initial: Duration,
    /// The largest delay.
    #[serde(with = "humantime_serde")]
    pub max: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
        }
    }
}

/// `[[sources.mqtt]]`: one broker connection and its subscriptions.
#[derive(Debug, Clone, Deserialize)]
pub struct MqttConfig {
    /// A name for logs and metrics (default `mqtt-<index>`).
    pub name: Option<String>,
    /// The broker's host name or address.
    pub host: String,
    /// The broker's port (default 1883, or 8883 with TLS).
    pub port: Option<u16>,
    /// `"3.1.1"` (default) or `"5"`.
    #[serde(default)]
    pub protocol: Protocol,
    /// The client id; it names the persistent session, so keep it stable and unique per
    /// collector; `{hostname}` is replaced by the machine's host name (default
    /// `telemetry-collector-<name>`, and `telemetry-collector-<name>-{hostname}` when a
    /// subscription is shared).
    pub client_id: Option<String>,
    /// Start a new session on every connect. With `false` (the default) the broker keeps the
    /// subscriptions and queues QoS 1 messages while the collector is away.
    #[serde(default)]
    pub clean_session: bool,
    /// MQTT 5: how long the broker keeps the session (and queues messages) after a
    /// disconnect (default: never expires with `clean_session = false`, 0 with `true`).
    #[serde(default, with = "humantime_serde")]
    pub session_expiry: Option<Duration>,
    /// MQTT 5: the most QoS 1 messages the broker may send before one is acked (default:
    /// `pipeline.channel_capacity`, at most 65535).
    pub receive_maximum: Option<u16>,
    /// MQTT keep-alive interval.
    #[serde(default = "default_keep_alive", with = "humantime_serde")]
    pub keep_alive: Duration,
    /// User name for the broker.
    pub username: Option<String>,
    /// Password for the broker (never logged).
    pub password: Option<Secret>,
    /// TLS; absent means plain TCP.
    pub tls: Option<TlsConfig>,
    /// Larger payloads are rejected (counted as `oversized`).
    #[serde(default = "default_max_payload")]
    pub max_payload_size: ByteSize,
    /// Delays between reconnect attempts.
    #[serde(default)]
    pub reconnect: BackoffConfig,
    /// What to subscribe to and how to read it.
    #[serde(default)]
    pub subscriptions: Vec<SubscriptionConfig>,
}

/// `[sources.mqtt.tls]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct TlsConfig {
    /// PEM file of the CA(s) that signed the broker's certificate (default: the system's).
    pub ca_file: Option<PathBuf>,
    /// PEM file of the client certificate chain, for brokers that require one.
    pub client_cert_file: Option<PathBuf>,
    /// PEM file of the client certificate's private key.
    pub client_key_file: Option<PathBuf>,
}

/// `[[sources.mqtt.subscriptions]]`.
#[derive(Debug, Clone, Deserialize)]
pub struct SubscriptionConfig {
    /// A topic template (see the README): `sensors/{site}/{device}/{measurement}`.
    pub topic: String,
    /// 0 (at most once) or 1 (at least once: acked only once in the journal).
    #[serde(default = "default_qos")]
    pub qos: u8,
    /// The payload format.
    #[serde(default)]
    pub format: FormatName,
    /// The measurement, unless the topic (`{measurement}`) or the payload names one.
    pub measurement: Option<String>,
    /// The field name of a bare value, unless the topic has `{field}` (default `value`).
    pub field: Option<String>,
    /// Tags added to every reading of this subscription.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    // Keys repeated in `SerialConfig`: `#[serde(flatten)]` would lose unknown-key errors.
    /// Options of the JSON format.
    #[serde(default)]
    pub json: JsonConfig,
    /// Options of the line protocol format.
    #[serde(default)]
    pub line_protocol: LineProtocolConfig,
    /// Options of the `key=value` format (as those of JSON).
    #[serde(default)]
    pub key_value: JsonConfig,
    /// Options of the CSV format.
    #[serde(default)]
    pub csv: CsvConfig,
}

/// `[sinks]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct SinksConfig {
    /// The embedded local store.
    pub local: LocalConfig,
    /// `[[sinks.influxdb]]`: InfluxDB servers, each fed from the journal with its own cursor.
    pub influxdb: Vec<InfluxDbConfig>,
    /// `[[sinks.mqtt]]`: brokers to forward readings to, each with its own cursor.
    pub mqtt: Vec<MqttSinkConfig>,
}

/// When a sink writes.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(default)]
pub struct BatchConfig {
    /// Write once this many readings are waiting.
    pub max_readings: usize,
    /// Write once the oldest waiting reading has waited this long.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_readings: 5000,
            max_age: Duration::from_secs(1),
        }
    }
}

/// `[sinks.local]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct LocalConfig {
    /// Whether readings are stored locally.
    pub enabled: bool,
    /// The store file (default: `<data_dir>/store.db`).
    pub path: Option<PathBuf>,
    /// Delete readings older than this (default: keep everything).
    #[serde(with = "humantime_serde")]
    pub retention: Option<Duration>,
    /// Drop the oldest readings when the store file's pages in use take more than this
    /// (`"500MiB"`; default: no bound).
    pub max_bytes: Option<ByteSize>,
    /// Batching.
    pub batch: BatchConfig,
    /// Delays between retries of a failed write.
    pub retry: BackoffConfig,
}

impl Default for LocalConfig {
    fn default() -> Self {
        LocalConfig {
            enabled: true,
            path: None,
            retention: None,
            max_bytes: None,
            batch: BatchConfig::default(),
            retry: BackoffConfig::default(),
        }
    }
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/telemetry-collector")
}

pub(crate) fn default_keep_alive() -> Duration {
    Duration::from_secs(30)
}

fn default_max_payload() -> ByteSize {
    ByteSize(64 * 1024)
}

fn default_qos() -> u8 {
    1
}

/// One problem in a configuration, at a key path such as `sources.mqtt[0].port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where: the key path, or empty for the file as a whole.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// Every problem found in a configuration; displayed one per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<Problem>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            if p.path.is_empty() {
                f.write_str(&p.message)?;
            } else {
                write!(f, "{}: {}", p.path, p.message)?;
            }
        }
        Ok(())
    }
}

impl ConfigErrors {
    fn one(path: impl Into<String>, message: impl Into<String>) -> ConfigErrors {
        ConfigErrors(vec![Problem {
            path: path.into(),
            message: message.into(),
        }])
    }
}

impl Config {
    /// Loads `path` (TOML) with environment overrides (see [`ENV_PREFIX`]).
    ///
    /// # Errors
    /// [`ConfigErrors`]: the file cannot be read or parsed, keys that are not ours (all of
    /// them), or the first value of a wrong type, each with its key path.
    ///
    /// No message quotes the file or a value from it (a syntax error on a `password` line
    /// would otherwise print the password): a syntax error is told by line, column and key.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let in_file =
            |message: String| ConfigErrors::one("", format!("{}: {message}", path.display()));
        let text =
            std::fs::read_to_string(path).map_err(|e| in_file(format!("cannot read: {e}")))?;
        syntax::check(&text).map_err(in_file)?;
        let source = config::Config::builder()
            .add_source(config::File::from_str(&text, config::FileFormat::Toml))
            // Values stay text (`try_parsing` would turn a path `0123` into `123` and a
            // `1e3` into `1000`); numbers and booleans are read from the text when the key
            // wants one.
            .add_source(
                config::Environment::with_prefix(ENV_PREFIX)
                    .prefix_separator("__")
                    .separator("__"),
            )
            .build()
            .map_err(|e| in_file(build_error(&e)))?;
        Config::from_source(source)
    }

    /// Parses a configuration from TOML text, without environment overrides (for tests and
    /// tools).
    ///
    /// # Errors
    /// As [`Config::load`].
    pub fn from_toml(text: &str) -> Result<Config, ConfigErrors> {
        syntax::check(text).map_err(|m| ConfigErrors::one("", m))?;
        let source = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()
            .map_err(|e| ConfigErrors::one("", build_error(&e)))?;
        Config::from_source(source)
    }

    fn from_source(source: config::Config) -> Result<Config, ConfigErrors> {
        let mut unknown = Vec::new();
        let mut on_unknown = |path: serde_ignored::Path<'_>| unknown.push(format_path(&path));
        let de = serde_ignored::Deserializer::new(source, &mut on_unknown);
        let result = serde_path_to_error::deserialize::<_, Config>(de);
        let mut problems: Vec<Problem> = unknown
            .into_iter()
            .map(|path| Problem {
                path,
                message: "unknown key".into(),
            })
            .collect();
        match result {
            Ok(config) if problems.is_empty() => Ok(config),
            Ok(_) => Err(ConfigErrors(problems)),
            Err(e) => {
                let path = e.path().to_string();
                let message = clean_type_error(&without_value(&e.inner().to_string()));
                problems.push(Problem {
                    path: if path == "." { String::new() } else { path },
                    message,
                });
                Err(ConfigErrors(problems))
            }
        }
    }
}

/// `a.b.0.c` as `a.b[0].c`, the way the file's readers think of it.
fn format_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path as P;
    match path {
        P::Root => String::new(),
        P::Seq { parent, index } => format!("{}[{index}]", format_path(parent)),
        P::Map { parent, key } => {
            let p = format_path(parent);
            if p.is_empty() {
                key.clone()
            } else {
                format!("{p}.{key}")
            }
        }
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
            format_path(parent)
        }
    }
}

/// Why the `config` crate could not gather the file and the environment. Its parse errors
/// quote the file (already checked by [`syntax::check`], so not expected here).
fn build_error(e: &config::ConfigError) -> String {
    match e {
        config::ConfigError::FileParse { .. } => "not a valid TOML file".to_string(),
        e => clean_type_error(&without_value(&e.to_string())),
    }
}

/// A type error without the value it found: `invalid type: string "hunter2", expected u16`
/// becomes `invalid type: string, expected u16`, and `unknown variant `hunter2`, expected
/// one of ...` becomes `unknown variant, expected one of ...` (the value may be a secret
/// written under the wrong key; the key path is in front of the message).
fn without_value(message: &str) -> String {
    // serde's enums: "unknown variant `hunter2`, expected one of `json`, ...".
    if let Some(rest) = message.strip_prefix("unknown variant `") {
        if let Some(end) = rest.rfind("`, expected ") {
            return format!("unknown variant{}", &rest[end + 1..]);
        }
    }
    for lead in ["invalid type: ", "invalid value: "] {
        let Some(start) = message.find(lead).map(|i| i + lead.len()) else {
            continue;
        };
        let Some(end) = message.rfind(", expected ").filter(|end| *end >= start) else {
            continue;
        };
        let found = &message[start..end];
        let Some(kind_end) = found.find(['"', '`', '\'']) else {
            continue;
        };
        return format!(
            "{}{}{}",
            &message[..start],
            found[..kind_end].trim_end(),
            &message[end..]
        );
    }
    message.to_string()
}

/// The `config` crate appends its own, less precise, location to type errors: drop it, the
/// path is already in front.
fn clean_type_error(message: &str) -> String {
    match message.find(" for key `") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const SECRET: &str = "hunter2-s3cret";

    /// Issue 15: a missing closing quote after a password printed the line, password
    /// included, through `validate`, `run` and a SIGHUP reload alike (all go through `load`).
    #[test]
    fn a_syntax_error_names_the_place_and_the_key_but_not_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            format!(
                "data_dir = \"/tmp/x\"\n[[sources.mqtt]]\nhost = \"localhost\"\n\
                 username = \"u\"\npassword = \"{SECRET}\n"
            ),
        )
        .unwrap();
        let e = Config::load(&file).unwrap_err().to_string();
        assert!(!e.contains(SECRET), "{e}");
        assert_eq!(
            e,
            format!(
                "{}: TOML syntax error at line 5, column {} (at key sources.mqtt[0].password): \
                 invalid basic string, expected `\"`",
                file.display(),
                "password = \"".len() + SECRET.len() + 1
            )
        );
    }

    #[test]
    fn a_value_of_the_wrong_type_is_not_shown() {
        for (key, value) in [
            ("port", format!("\"{SECRET}\"")),
            ("keep_alive", format!("\"{SECRET}\"")),
            ("clean_session", format!("\"{SECRET}\"")),
            ("max_payload_size", format!("\"{SECRET}\"")),
            ("max_payload_size", format!("\"1{SECRET}\"")),
            ("protocol", format!("\"{SECRET}\"")),
            ("reconnect", format!("\"{SECRET}\"")),
            ("tls", format!("{{ ca_file = [\"{SECRET}\"] }}")),
        ] {
            let text = format!(
                "[[sources.mqtt]]\nhost = \"localhost\"\n{key} = {value}\n\
                 [[sources.mqtt.subscriptions]]\ntopic = \"a/{{device}}/{{measurement}}\"\n"
            );
            let e = Config::from_toml(&text).unwrap_err().to_string();
            assert!(!e.contains(SECRET), "{e}");
            assert!(e.starts_with(&format!("sources.mqtt[0].{key}")), "{e}");
        }
        assert_eq!(
            without_value("invalid type: string \"a, expected b\", expected u16 for key `x`"),
            "invalid type: string, expected u16 for key `x`"
        );
        assert_eq!(
            without_value("invalid value: 64-bit integer `-1`, expected u16"),
            "invalid value: 64-bit integer, expected u16"
        );
        assert_eq!(
            without_value("unknown variant `jsn`, expected one of `json`, `csv`"),
            "unknown variant, expected one of `json`, `csv`"
        );
    }
}
