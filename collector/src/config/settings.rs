//! Validation: [`Config`] (as written) into [`Settings`] (what the pipeline runs on), with
//! every problem reported at once.

use std::path::PathBuf;
use std::time::Duration;

use rumqttc::QoS;

use super::broker::{self, SessionKeys};
use super::format::{payload_format, FormatOptions};
use super::problems::Problems;
use super::{
    BackoffConfig, BrokerSettings, Config, ConfigErrors, FormatName, JournalConfig, LocalConfig,
    MqttConfig, MqttSinkSettings, PipelineConfig, Problem, Protocol, SerialSettings,
    SubscriptionConfig, TimestampConfig, WhenFull,
};
use crate::payload::Format;
use crate::reading::CompactString;
use crate::topic::TopicTemplate;

/// The longest an MQTT source pauses, once it has read every message waiting and none of
/// them needs an ack, before it reads again: `journal.commit_delay` when shorter (zero: no
/// pause). Those messages wait for the commit delay anyway, and reading as soon as each
/// one arrives costs a wake-up and a socket read for a few messages: at 150,000 messages a
/// second, a millisecond gathers 150. Messages that need an ack are never held back (a
/// broker's window may be 20 messages).
const MAX_READ_PAUSE: Duration = Duration::from_millis(1);

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The data directory.
    pub data_dir: PathBuf,
    /// Channel and shutdown.
    pub pipeline: PipelineConfig,
    /// The journal, with its path resolved.
    pub journal: JournalSettings,
    /// Timestamp bounds.
    pub timestamps: TimestampConfig,
    /// MQTT connections.
    pub mqtt: Vec<MqttSettings>,
    /// Serial ports.
    pub serial: Vec<SerialSettings>,
    /// Modbus buses and connections.
    pub modbus: Vec<super::ModbusSettings>,
    /// Report-by-exception rules for the readings of every source.
    pub report_rules: Vec<super::ReportRule>,
    /// The local store, if enabled, with its path resolved.
    pub local: Option<LocalSettings>,
    /// InfluxDB sinks, in the order written.
    pub influxdb: Vec<super::InfluxSettings>,
    /// MQTT sinks, in the order written.
    pub mqtt_sinks: Vec<MqttSinkSettings>,
    /// Where and how to serve `/metrics`, `/health` and the dashboard, if at all.
    pub http: Option<super::HttpSettings>,
    /// Files and secrets validation could not check from this process, with why (a systemd
    /// credential outside the service, a variable the service's environment may set):
    /// `validate` prints them as notes.
    pub unchecked: Vec<Problem>,
}

/// The journal's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct JournalSettings {
    /// The journal file.
    pub path: PathBuf,
    /// Its bound in bytes.
    pub max_bytes: u64,
    /// What happens at the bound.
    pub when_full: WhenFull,
    /// Whether commits are synced to disk.
    pub sync: bool,
    /// How long a commit that acknowledges nothing may wait for more readings.
    pub commit_delay: Duration,
    /// How long a commit that acknowledges messages may wait for more.
    pub ack_delay: Duration,
    /// How many messages waiting for their ack make a commit go at once (at least 1).
    pub ack_batch: usize,
}

/// The local store sink's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalSettings {
    /// The store file.
    pub path: PathBuf,
    /// Retention by age.
    pub retention: Option<Duration>,
    /// Retention by size: the bound of the store file's pages in use, in bytes.
    pub max_bytes: Option<u64>,
    /// Batching.
    pub batch: super::BatchConfig,
    /// Retry backoff.
    pub retry: BackoffConfig,
}

/// One validated MQTT connection.
#[derive(Debug, Clone, PartialEq)]
pub struct MqttSettings {
    /// Name for logs and metrics.
    pub name: String,
    /// The broker, and the session kept there.
    pub broker: BrokerSettings,
    /// MQTT 5: the Receive Maximum announced to the broker (its in-flight window to us).
    pub receive_maximum: u16,
    /// Largest accepted payload.
    pub max_payload_size: usize,
    /// Reconnect backoff.
    pub reconnect: BackoffConfig,
    /// How long the source lets messages gather, once it has read every message waiting
    /// and none of them needs an ack, before it reads again (see `MAX_READ_PAUSE`).
    pub read_pause: Duration,
    /// Subscriptions, in the order written (the first matching one reads a message).
    pub subscriptions: Vec<SubscriptionSettings>,
}

/// One validated subscription.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscriptionSettings {
    /// The topic template.
    pub template: TopicTemplate,
    /// The QoS to subscribe with.
    pub qos: QoS,
    /// How payloads are read.
    pub format: Format,
    /// The measurement when neither the topic nor the payload names one.
    pub measurement: String,
    /// The field name of bare values when the topic has no `{field}`.
    pub field: String,
    /// Tags added to every reading, sorted by key.
    pub tags: Vec<(CompactString, CompactString)>,
}

impl Config {
    /// Validates the configuration.
    ///
    /// # Errors
    /// [`ConfigErrors`] with every problem found, each at its key path.
    pub fn validate(self) -> Result<Settings, ConfigErrors> {
        let mut p = Problems::default();
        p.check(
            (1..=1_000_000).contains(&self.pipeline.channel_capacity),
            "pipeline.channel_capacity",
            "must be between 1 and 1000000",
        );
        let journal = journal_settings(&self.journal, &self.data_dir, &mut p);
        let local = self
            .sinks
            .local
            .enabled
            .then(|| local_settings(&self.sinks.local, &self.data_dir, &mut p));
        // InfluxDB sinks: their own module validates them.
        let influxdb: Vec<super::InfluxSettings> = self
            .sinks
            .influxdb
            .iter()
            .enumerate()
            .filter_map(|(i, c)| super::influxdb::validate(c, i, &self.data_dir, &mut p))
            .collect();
        for (i, c) in self.sinks.influxdb.iter().enumerate() {
            if self.sinks.influxdb[..i].iter().any(|o| o.name == c.name) {
                p.add(
                    format!("sinks.influxdb[{i}].name"),
                    format!("`{}` is used by another InfluxDB sink", c.name),
                );
            }
        }
        let mqtt_sinks: Vec<MqttSinkSettings> = self
            .sinks
            .mqtt
            .iter()
            .enumerate()
            .filter_map(|(i, c)| super::mqtt_sink::validate(c, i, &self.data_dir, &mut p))
            .collect();
        for (i, c) in self.sinks.mqtt.iter().enumerate() {
            if self.sinks.mqtt[..i].iter().any(|o| o.name == c.name) {
                p.add(
                    format!("sinks.mqtt[{i}].name"),
                    format!("`{}` is used by another MQTT sink", c.name),
                );
            }
        }
        p.check(
            local.is_some() || !self.sinks.influxdb.is_empty() || !self.sinks.mqtt.is_empty(),
            "sinks",
            "no sink is enabled: readings would go nowhere",
        );
        p.check(
            !self.sources.mqtt.is_empty()
                || !self.sources.serial.is_empty()
                || !self.sources.modbus.is_empty(),
            "sources",
            "no source is configured (add a [[sources.mqtt]] or [[sources.serial]] section)",
        );
        let serial = super::serial::validate(&self.sources.serial, &mut p);
        let modbus = super::modbus::validate(&self.sources.modbus, &mut p);
        let report_rules = super::report::validate_rules(&self.report_by_exception, &mut p);
        for (i, m) in modbus.iter().enumerate() {
            if let super::Link::Rtu(r) = &m.link {
                if self.sources.serial.iter().any(|s| s.path == r.path) {
                    p.add(
                        format!("sources.modbus[{i}].path"),
                        format!("{} is read by a serial source", r.path.display()),
                    );
                }
            }
        }

        let mut mqtt: Vec<MqttSettings> = Vec::with_capacity(self.sources.mqtt.len());
        for (i, m) in self.sources.mqtt.iter().enumerate() {
            let path = format!("sources.mqtt[{i}]");
            let source = mqtt_settings(
                m,
                i,
                self.pipeline.channel_capacity,
                self.journal.commit_delay,
                &mut p,
            );
            if mqtt.iter().any(|o| o.name == source.name) {
                p.add(
                    format!("{path}.name"),
                    format!("`{}` is used by another source", source.name),
                );
            }
            let id = &source.broker.client_id;
            let taken = mqtt.iter().map(|o| &o.broker).any(|o| &o.client_id == id);
            let by_sink = mqtt_sinks.iter().map(|o| &o.broker).any(|o| {
                &o.client_id == id
                    && (o.host.as_str(), o.port)
                        == (source.broker.host.as_str(), source.broker.port)
            });
            if taken || by_sink {
                p.add(
                    format!("{path}.client_id"),
                    format!("`{id}` is used by another connection: the broker would disconnect one of them"),
                );
            }
            mqtt.push(source);
        }

        let http = super::http::validate(&self.http, &mut p);
        let unchecked = p.finish()?;
        Ok(Settings {
            data_dir: self.data_dir,
            pipeline: self.pipeline,
            journal,
            timestamps: self.timestamps,
            mqtt,
            serial,
            modbus,
            report_rules,
            local,
            influxdb,
            mqtt_sinks,
            http,
            unchecked,
        })
    }
}

fn journal_settings(
    j: &JournalConfig,
    data_dir: &std::path::Path,
    p: &mut Problems,
) -> JournalSettings {
    p.check(
        j.max_bytes.0 >= 1 << 20,
        "journal.max_bytes",
        "must be at least 1MiB",
    );
    p.check(
        j.commit_delay <= Duration::from_secs(1),
        "journal.commit_delay",
        "must be at most 1s",
    );
    p.check(
        j.ack_delay <= Duration::from_secs(1),
        "journal.ack_delay",
        "must be at most 1s",
    );
    p.check(j.ack_batch >= 1, "journal.ack_batch", "must be at least 1");
    JournalSettings {
        path: j
            .path
            .clone()
            .unwrap_or_else(|| data_dir.join("journal.db")),
        max_bytes: j.max_bytes.0,
        when_full: j.when_full,
        sync: j.sync,
        commit_delay: j.commit_delay,
        ack_delay: j.ack_delay,
        ack_batch: j.ack_batch.max(1),
    }
}

/// The smallest `sinks.local.max_bytes`: a store's schema and a chunk of every series need
/// room.
const MIN_STORE_BYTES: u64 = 1 << 20;

fn local_settings(l: &LocalConfig, data_dir: &std::path::Path, p: &mut Problems) -> LocalSettings {
    p.batch(&l.batch, "sinks.local.batch");
    p.check(
        l.retention.is_none_or(|r| !r.is_zero()),
        "sinks.local.retention",
        "must be more than zero (leave it out to keep everything)",
    );
    p.check(
        l.max_bytes.is_none_or(|b| b.0 >= MIN_STORE_BYTES),
        "sinks.local.max_bytes",
        "must be at least 1MiB (leave it out for no bound)",
    );
    p.backoff(&l.retry, "sinks.local.retry");
    LocalSettings {
        path: l.path.clone().unwrap_or_else(|| data_dir.join("store.db")),
        retention: l.retention,
        max_bytes: l.max_bytes.map(|b| b.0),
        batch: l.batch,
        retry: l.retry,
    }
}

/// Validates `[[sources.mqtt]]` entry `index`.
fn mqtt_settings(
    m: &MqttConfig,
    index: usize,
    channel_capacity: usize,
    commit_delay: Duration,
    p: &mut Problems,
) -> MqttSettings {
    let path = format!("sources.mqtt[{index}]");
    let name = m.name.clone().unwrap_or_else(|| format!("mqtt-{index}"));
    // One configuration file for every collector of a shared-subscription group: each
    // needs its own session, hence its own client id.
    let shared = m
        .subscriptions
        .iter()
        .any(|s| s.topic.starts_with("$share/"));
    let default_client_id = if shared {
        format!("telemetry-collector-{name}-{}", super::HOSTNAME_PLACEHOLDER)
    } else {
        format!("telemetry-collector-{name}")
    };
    let broker = broker::validate(
        &broker::broker_keys!(m),
        &SessionKeys {
            clean_session: m.clean_session,
            session_expiry: m.session_expiry,
        },
        &default_client_id,
        &path,
        p,
    );
    let receive_maximum = match (m.protocol, m.receive_maximum) {
        (Protocol::V311, Some(_)) => {
            p.add(
                format!("{path}.receive_maximum"),
                "only for protocol = \"5\" (a 3.1.1 broker sets its own window, e.g. Mosquitto's max_inflight_messages)",
            );
            0
        }
        (_, Some(0)) => {
            p.add(format!("{path}.receive_maximum"), "must be at least 1");
            0
        }
        (_, Some(n)) => n,
        (_, None) => u16::try_from(channel_capacity).unwrap_or(u16::MAX),
    };
    p.check(
        (1..=256 << 20).contains(&m.max_payload_size.0),
        format!("{path}.max_payload_size"),
        "must be between 1 byte and 256MiB",
    );
    p.backoff(&m.reconnect, &format!("{path}.reconnect"));
    p.check(
        !m.subscriptions.is_empty(),
        format!("{path}.subscriptions"),
        "must not be empty",
    );
    let subscriptions = m
        .subscriptions
        .iter()
        .enumerate()
        .filter_map(|(j, s)| subscription(s, &format!("{path}.subscriptions[{j}]"), p))
        .collect();
    MqttSettings {
        name,
        broker,
        receive_maximum,
        max_payload_size: usize::try_from(m.max_payload_size.0).unwrap_or(usize::MAX),
        reconnect: m.reconnect,
        read_pause: commit_delay.min(MAX_READ_PAUSE),
        subscriptions,
    }
}

fn subscription(
    s: &SubscriptionConfig,
    path: &str,
    p: &mut Problems,
) -> Option<SubscriptionSettings> {
    let template = TopicTemplate::parse(&s.topic)
        .map_err(|e| p.add(format!("{path}.topic"), e))
        .ok();
    let qos = match s.qos {
        0 => Some(QoS::AtMostOnce),
        1 => Some(QoS::AtLeastOnce),
        2 => {
            p.add(
                format!("{path}.qos"),
                "QoS 2 is not supported: use 1 (every reading is acked once durable, and duplicates are harmless)",
            );
            None
        }
        _ => {
            p.add(format!("{path}.qos"), "must be 0 or 1");
            None
        }
    };
    let format = payload_format(
        s.format,
        &FormatOptions {
            json: &s.json,
            line_protocol: &s.line_protocol,
            key_value: &s.key_value,
            csv: &s.csv,
        },
        path,
        p,
    );
    let template = template?;
    let needs_measurement =
        s.format != FormatName::LineProtocol && !template.captures("measurement");
    if needs_measurement && s.measurement.is_none() {
        p.add(
            format!("{path}.measurement"),
            "set `measurement`, or capture `{measurement}` in the topic",
        );
    }
    if s.format == FormatName::Value && s.field.is_some() && template.captures("field") {
        p.add(
            format!("{path}.field"),
            "the topic already captures `{field}`",
        );
    }
    p.tag_names(&s.tags, path);
    Some(SubscriptionSettings {
        template,
        qos: qos?,
        format,
        measurement: s.measurement.clone().unwrap_or_default(),
        field: s.field.clone().unwrap_or_else(|| "value".to_string()),
        tags: s
            .tags
            .iter()
            .map(|(k, v)| (k.as_str().into(), v.as_str().into()))
            .collect(),
    })
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::Config;

    pub(in crate::config) const MINIMAL: &str = r#"
        data_dir = "/tmp/x"
        [[sources.mqtt]]
        host = "localhost"
        [[sources.mqtt.subscriptions]]
        topic = "sensors/{site}/{device}/{measurement}"
    "#;

    /// Every problem `text` has, one line each (none if it is valid).
    pub(in crate::config) fn errors(text: &str) -> Vec<String> {
        match Config::from_toml(text).and_then(Config::validate) {
            Ok(_) => vec![],
            Err(e) => e.to_string().lines().map(String::from).collect(),
        }
    }

    #[test]
    fn a_minimal_config_gets_defaults() {
        let s = Config::from_toml(MINIMAL).unwrap().validate().unwrap();
        let m = &s.mqtt[0];
        assert_eq!(
            (m.name.as_str(), m.broker.port, m.broker.client_id.as_str()),
            ("mqtt-0", 1883, "telemetry-collector-mqtt-0")
        );
        assert_eq!(m.subscriptions[0].template.filter(), "sensors/+/+/+");
        assert_eq!(s.journal.path, std::path::Path::new("/tmp/x/journal.db"));
        assert_eq!(
            s.local.unwrap().path,
            std::path::Path::new("/tmp/x/store.db")
        );
    }

    #[test]
    fn every_unknown_key_is_reported_with_its_path() {
        let text = MINIMAL.replace("host = \"localhost\"", "host = \"localhost\"\nprot = 1")
            + "qos = 1\nformatt = \"json\"\n[journal]\nmax_byte = 5\n";
        let mut errs = errors(&text);
        errs.sort();
        assert_eq!(
            errs,
            vec![
                "journal.max_byte: unknown key",
                "sources.mqtt[0].prot: unknown key",
                "sources.mqtt[0].subscriptions[0].formatt: unknown key",
            ]
        );
    }

    #[test]
    fn a_wrong_type_names_its_key() {
        let errs = errors(&MINIMAL.replace(
            "host = \"localhost\"",
            "host = \"localhost\"\nport = \"high\"",
        ));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].starts_with("sources.mqtt[0].port: "), "{errs:?}");
    }

    #[test]
    fn semantic_problems_are_all_reported() {
        let text = r#"
            [journal]
            max_bytes = "10KiB"
            commit_delay = "2s"
            [sinks.local.batch]
            max_readings = 0
            [[sources.mqtt]]
            host = ""
            password = "secret"
            [[sources.mqtt.subscriptions]]
            topic = "a/#/b"
            [[sources.mqtt.subscriptions]]
            topic = "a/{x}"
            qos = 2
        "#;
        let errs = errors(text);
        for want in [
            "journal.max_bytes: must be at least 1MiB",
            "journal.commit_delay: must be at most 1s",
            "sinks.local.batch.max_readings: must be between 1 and 1000000",
            "sources.mqtt[0].host: must not be empty",
            "sources.mqtt[0].password: a password needs a `username`",
            "sources.mqtt[0].subscriptions[0].topic: `#` may only be the last segment",
            "sources.mqtt[0].subscriptions[1].measurement: set `measurement`, or capture `{measurement}` in the topic",
        ] {
            assert!(errs.iter().any(|e| e == want), "missing {want:?} in {errs:?}");
        }
        assert!(
            errs.iter()
                .any(|e| e.starts_with("sources.mqtt[0].subscriptions[1].qos: QoS 2")),
            "{errs:?}"
        );
        assert!(!errs.iter().any(|e| e.contains("secret")));
    }

    #[test]
    fn the_local_stores_max_bytes_is_checked_and_kept() {
        let errs = errors(&format!(
            "{MINIMAL}\n[sinks.local]\nmax_bytes = \"100KiB\"\n"
        ));
        assert_eq!(
            errs,
            vec!["sinks.local.max_bytes: must be at least 1MiB (leave it out for no bound)"]
        );
        let text = format!("{MINIMAL}\n[sinks.local]\nmax_bytes = \"2GiB\"\n");
        let settings = Config::from_toml(&text).unwrap().validate().unwrap();
        assert_eq!(settings.local.unwrap().max_bytes, Some(2 << 30));
    }

    #[test]
    fn no_source_and_no_sink() {
        let errs = errors("[sinks.local]\nenabled = false\n");
        assert_eq!(
            errs,
            vec![
                "sinks: no sink is enabled: readings would go nowhere",
                "sources: no source is configured (add a [[sources.mqtt]] or [[sources.serial]] section)"
            ]
        );
    }
}
