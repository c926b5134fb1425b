//! `[[sinks.mqtt]]`: forwarding readings to an MQTT broker (an edge collector next to the
//! devices forwards to the central broker, where collectors share the stream).
//!
//! The broker keys are those of `[[sources.mqtt]]` (validated by the same code); the sink
//! always connects with a clean session that ends at disconnect: it subscribes to nothing,
//! and whatever was not acknowledged is published again from the journal.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::broker::{self, SessionKeys};
use super::problems::Problems;
use super::{BackoffConfig, BatchConfig, BrokerSettings, ByteSize, Protocol, Secret, TlsConfig};
use crate::topic::TopicPattern;

/// The prefix of an MQTT sink's name in the journal (its cursor) and in metrics.
pub const MQTT_SINK_PREFIX: &str = "mqtt:";

/// `[[sinks.mqtt]]`: one broker that readings are published to.
#[derive(Debug, Clone, Deserialize)]
pub struct MqttSinkConfig {
    /// A stable name: the sink is `mqtt:<name>` in logs and metrics, and its journal cursor
    /// is kept under that name.
    pub name: String,
    /// The broker's host name or address.
    pub host: String,
    /// The broker's port (default 1883, or 8883 with TLS).
    pub port: Option<u16>,
    /// `"3.1.1"` (default) or `"5"` (PUBACKs then carry reason codes).
    #[serde(default)]
    pub protocol: Protocol,
    /// The client id (default `telemetry-collector-<name>-{hostname}`); `{hostname}` is
    /// replaced by the machine's host name.
    pub client_id: Option<String>,
    /// MQTT keep-alive interval; a connection idle for longer is opened again before the next
    /// write.
    #[serde(default = "super::default_keep_alive", with = "humantime_serde")]
    pub keep_alive: Duration,
    /// User name for the broker.
    pub username: Option<String>,
    /// Password for the broker (never logged).
    pub password: Option<Secret>,
    /// TLS; absent means plain TCP.
    pub tls: Option<TlsConfig>,
    /// Where each reading goes: `{measurement}` and `{<tag>}` (such as `{device}`) are
    /// replaced by the reading's own.
    #[serde(default = "default_topic")]
    pub topic: String,
    /// The largest payload of one message; readings for one topic share messages up to it.
    #[serde(default = "default_max_message_size")]
    pub max_message_size: ByteSize,
    /// Messages that may await their PUBACK at once.
    #[serde(default = "default_max_inflight")]
    pub max_inflight: u16,
    /// How long to wait for the broker's next PUBACK (or for its CONNACK) before the batch
    /// counts as failed and is published again on a new connection.
    #[serde(default = "default_ack_timeout", with = "humantime_serde")]
    pub ack_timeout: Duration,
    /// Batching.
    #[serde(default)]
    pub batch: BatchConfig,
    /// Delays between retries of a failed batch (and so between reconnects).
    #[serde(default)]
    pub retry: BackoffConfig,
    /// The bound of the dead-letter file (readings too large for one message, or refused by
    /// the broker for good).
    #[serde(default = "super::default_dead_letter_max_bytes")]
    pub dead_letter_max_bytes: ByteSize,
}

fn default_topic() -> String {
    "telemetry/{device}/{measurement}".to_string()
}

fn default_max_message_size() -> ByteSize {
    ByteSize(64 * 1024)
}

fn default_max_inflight() -> u16 {
    32
}

fn default_ack_timeout() -> Duration {
    Duration::from_secs(10)
}

/// One validated MQTT sink.
#[derive(Debug, Clone, PartialEq)]
pub struct MqttSinkSettings {
    /// `mqtt:<name>` (journal cursor, logs, metrics).
    pub sink: String,
    /// The broker (clean session, expiring at disconnect).
    pub broker: BrokerSettings,
    /// The topic of each reading.
    pub topic: TopicPattern,
    /// The largest payload of one message.
    pub max_message_size: usize,
    /// Messages awaiting their PUBACK at once.
    pub max_inflight: u16,
    /// How long to wait for the next PUBACK.
    pub ack_timeout: Duration,
    /// Batching.
    pub batch: BatchConfig,
    /// Retry backoff.
    pub retry: BackoffConfig,
    /// The dead-letter directory.
    pub dead_letter_dir: std::path::PathBuf,
    /// Its bound in bytes.
    pub dead_letter_max_bytes: u64,
}

/// Validates `[[sinks.mqtt]]` entry `index`.
pub(super) fn validate(
    c: &MqttSinkConfig,
    index: usize,
    data_dir: &Path,
    p: &mut Problems,
) -> Option<MqttSinkSettings> {
    let path = format!("sinks.mqtt[{index}]");
    p.check(
        !c.name.is_empty()
            && c.name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.')),
        format!("{path}.name"),
        "must be letters, digits, `-`, `_` or `.`",
    );
    let broker = broker::validate(
        &broker::broker_keys!(c),
        &SessionKeys {
            clean_session: true,
            session_expiry: None,
        },
        &format!(
            "telemetry-collector-{}-{}",
            c.name,
            super::HOSTNAME_PLACEHOLDER
        ),
        &path,
        p,
    );
    let topic = TopicPattern::parse(&c.topic)
        .map_err(|e| p.add(format!("{path}.topic"), e))
        .ok();
    p.check(
        (64..=256 << 20).contains(&c.max_message_size.0),
        format!("{path}.max_message_size"),
        "must be between 64 bytes and 256MiB",
    );
    p.check(
        c.max_inflight >= 1,
        format!("{path}.max_inflight"),
        "must be at least 1",
    );
    p.check(
        !c.ack_timeout.is_zero(),
        format!("{path}.ack_timeout"),
        "must be more than zero",
    );
    p.batch(&c.batch, &format!("{path}.batch"));
    p.backoff(&c.retry, &format!("{path}.retry"));
    p.check(
        c.dead_letter_max_bytes.0 >= 1024,
        format!("{path}.dead_letter_max_bytes"),
        "must be at least 1KiB",
    );
    Some(MqttSinkSettings {
        sink: format!("{MQTT_SINK_PREFIX}{}", c.name),
        broker,
        topic: topic?,
        max_message_size: usize::try_from(c.max_message_size.0).unwrap_or(usize::MAX),
        max_inflight: c.max_inflight,
        ack_timeout: c.ack_timeout,
        batch: c.batch,
        retry: c.retry,
        dead_letter_dir: data_dir.join("dead-letter"),
        dead_letter_max_bytes: c.dead_letter_max_bytes.0,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::settings::tests::errors;
    use super::super::Config;

    const SINK: &str = r#"
        [[sources.serial]]
        name = "p"
        path = "/dev/ttyUSB0"
        measurement = "env"
        [sinks.local]
        enabled = false
        [[sinks.mqtt]]
        name = "core"
        host = "core.example.net"
        EXTRA
    "#;

    fn sink(extra: &str) -> String {
        SINK.replace("EXTRA", extra)
    }

    #[test]
    fn an_mqtt_sink_alone_is_a_sink_with_defaults() {
        let s = Config::from_toml(&sink(""))
            .and_then(Config::validate)
            .unwrap();
        let m = &s.mqtt_sinks[0];
        assert_eq!(m.sink, "mqtt:core");
        assert_eq!((m.broker.port, m.broker.clean_session), (1883, true));
        assert_eq!(m.broker.session_expiry, 0);
        assert!(m.broker.client_id.starts_with("telemetry-collector-core-"));
        assert!(!m.broker.client_id.contains('{'));
        assert_eq!(m.topic.to_string(), "telemetry/{device}/{measurement}");
        assert_eq!(m.max_message_size, 64 * 1024);
    }

    #[test]
    fn mistakes_are_reported_with_their_keys() {
        let text = sink(
            "topic = \"a/+/{device}\"\nmax_inflight = 0\nmax_message_size = 10\npassword = \"s3cret\"\nsession_expiry = \"1h\"",
        );
        let errs = errors(&text);
        assert!(
            errs.iter()
                .any(|e| e == "sinks.mqtt[0].session_expiry: unknown key"),
            "{errs:?}"
        );
        let errs = errors(&text.replace("session_expiry = \"1h\"", ""));
        for want in [
            "sinks.mqtt[0].topic: `+` and `#` are not allowed in a topic to publish to",
            "sinks.mqtt[0].max_inflight: must be at least 1",
            "sinks.mqtt[0].max_message_size: must be between 64 bytes and 256MiB",
            "sinks.mqtt[0].password: a password needs a `username`",
        ] {
            assert!(
                errs.iter().any(|e| e == want),
                "missing {want:?} in {errs:?}"
            );
        }
        assert!(!errs.iter().any(|e| e.contains("s3cret")));
    }
}
