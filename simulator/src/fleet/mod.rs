//! A fleet of simulated devices and the messages they send, independent of the transport.
//!
//! Device `i` is `dev-{i:04}` at site `site-{i % sites:02}`. Messages come interleaved in time
//! order: sample 0 of every device, then sample 1, and so on. Message number `n` is a pure
//! function of the configuration and `n` ([`Fleet::message`]), so a fleet can stream without
//! holding anything in memory, and a test can regenerate exactly what was sent.

mod fault;
pub(crate) mod payload;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::{DeviceModel, Sample, SplitMix64};

pub use fault::{Fault, FaultConfig, FaultKind, ONE_SECOND_AFTER_EPOCH_NS, YEAR_2300_NS};

/// Payload format of the simulated MQTT devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum PayloadFormat {
    /// `{"ts":<ns>,"temperature":21.53,"humidity":40.1,"pressure":1013.25,"count":42}` on
    /// `{prefix}/{site}/{device}/{measurement}`.
    Json,
    /// `env,device=dev-0001,site=site-01 temperature=21.53,...,count=42i <ns>` on
    /// `{prefix}/{site}/{device}/{measurement}`.
    LineProtocol,
    /// A bare number such as `21.53` on `{prefix}/{site}/{device}/{field}`: three messages per
    /// sample (temperature, humidity, pressure), no timestamp.
    Value,
}

/// What a fleet looks like and sends.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetConfig {
    /// Number of devices.
    pub devices: usize,
    /// Number of sites the devices are spread over (device `i` is at site `i % sites`).
    pub sites: usize,
    /// Seed of every value and fault payload.
    pub seed: u64,
    /// Timestamp of sample 0 of device 0, in ns since the Unix epoch.
    pub start_ns: i64,
    /// Time between two samples of a device.
    pub interval: Duration,
    /// Payload format.
    pub format: PayloadFormat,
    /// Measurement of the readings (default `env`).
    pub measurement: String,
    /// First topic segment (default `sensors`).
    pub topic_prefix: String,
    /// Faulty messages to inject.
    pub faults: FaultConfig,
    /// Whether JSON and line protocol readings carry the integer `count` field besides the
    /// three floats (default true).
    pub counter: bool,
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            devices: 10,
            sites: 2,
            seed: 42,
            start_ns: 1_700_000_000_000_000_000, // 2023-11-14T22:13:20Z
            interval: Duration::from_secs(1),
            format: PayloadFormat::Json,
            measurement: "env".to_owned(),
            topic_prefix: "sensors".to_owned(),
            faults: FaultConfig::default(),
            counter: true,
        }
    }
}

/// An invalid [`FleetConfig`].
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// A field has a value the fleet cannot work with.
    #[error("invalid fleet config: {field}: {reason}")]
    Invalid {
        /// The offending field.
        field: &'static str,
        /// Why it is invalid.
        reason: &'static str,
    },
}

/// One message as sent by a device, with what a correct collector must make of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// MQTT topic.
    pub topic: String,
    /// Payload bytes (not necessarily UTF-8 when faulty).
    pub payload: Vec<u8>,
    /// Device id (`dev-0001`).
    pub device: String,
    /// Readings a correct collector stores for this message; empty when it is faulty.
    pub expected: Vec<ExpectedReading>,
    /// The fault this message carries, if any.
    pub fault: Option<Fault>,
}

/// A reading a correct collector must store, in InfluxDB's terms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExpectedReading {
    /// Measurement name.
    pub measurement: String,
    /// Tags: always `device` and `site`.
    pub tags: BTreeMap<String, String>,
    /// Field values.
    pub fields: BTreeMap<String, ExpectedValue>,
    /// The device's timestamp in ns, or `None` when the payload has none (the collector then
    /// uses the time of receipt).
    pub timestamp_ns: Option<i64>,
}

/// A typed field value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExpectedValue {
    /// A float field (2 decimals).
    Float(f64),
    /// An integer field.
    Integer(i64),
}

/// The fields of a bare-value ([`PayloadFormat::Value`]) device, one message each.
const VALUE_FIELDS: [&str; 3] = ["temperature", "humidity", "pressure"];

/// A fleet of deterministic devices.
#[derive(Debug, Clone)]
pub struct Fleet {
    config: FleetConfig,
    interval_ns: i64,
    devices: Vec<Device>,
}

#[derive(Debug, Clone)]
struct Device {
    id: String,
    site: String,
    model: DeviceModel,
}

impl Fleet {
    /// Checks the configuration and builds the fleet.
    ///
    /// # Errors
    /// When a count is zero, the interval is zero or too long for i64 nanoseconds, the fault
    /// cycle is empty, or a name is empty or contains MQTT wildcards.
    pub fn new(config: FleetConfig) -> Result<Self, FleetError> {
        let invalid = |field, reason| Err(FleetError::Invalid { field, reason });
        if config.devices == 0 {
            return invalid("devices", "must be at least 1");
        }
        if config.sites == 0 {
            return invalid("sites", "must be at least 1");
        }
        let interval_ns = match i64::try_from(config.interval.as_nanos()) {
            Ok(0) | Err(_) => return invalid("interval", "must be between 1ns and 292 years"),
            Ok(ns) => ns,
        };
        if !valid_topic_segment(&config.topic_prefix) {
            return invalid("topic_prefix", "must be non-empty without '+', '#' or NUL");
        }
        if config.measurement.contains('/') || !valid_topic_segment(&config.measurement) {
            return invalid(
                "measurement",
                "must be non-empty without '+', '#', '/' or NUL",
            );
        }
        config.faults.validate()?;
        let devices = (0..config.devices)
            .map(|i| Device {
                id: format!("dev-{i:04}"),
                site: format!("site-{:02}", i % config.sites),
                model: DeviceModel::new(config.seed, i),
            })
            .collect();
        Ok(Self {
            config,
            interval_ns,
            devices,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &FleetConfig {
        &self.config
    }

    /// Messages each device sends per sample: 3 for [`PayloadFormat::Value`], else 1.
    pub fn messages_per_sample(&self) -> usize {
        match self.config.format {
            PayloadFormat::Value => VALUE_FIELDS.len(),
            PayloadFormat::Json | PayloadFormat::LineProtocol => 1,
        }
    }

    /// All messages of `per_device` samples of every device, in time order.
    pub fn messages(&self, per_device: usize) -> Vec<Message> {
        let total = per_device
            .saturating_mul(self.devices.len())
            .saturating_mul(self.messages_per_sample());
        self.iter().take(total).collect()
    }

    /// The endless stream of messages, in time order (as [`Fleet::messages`] without an end).
    pub fn iter(&self) -> impl Iterator<Item = Message> + Send + '_ {
        (0u64..).map(|n| self.message(n))
    }

    /// Message number `n` (counting from 0) of the stream.
    pub fn message(&self, n: u64) -> Message {
        let per_sample = self.messages_per_sample() as u64;
        let devices = self.devices.len() as u64;
        let part = (n % per_sample) as usize;
        let device_index = (n / per_sample) % devices;
        let sample_index = n / per_sample / devices;
        let device = &self.devices[device_index as usize];

        // Device i is i µs late, so that the devices of one sample differ in time too.
        let timestamp_ns = self
            .config
            .start_ns
            .saturating_add((sample_index as i64).saturating_mul(self.interval_ns))
            .saturating_add((device_index as i64).saturating_mul(1_000));
        let sample = device.model.sample(sample_index, timestamp_ns);
        let field = match self.config.format {
            PayloadFormat::Value => Some(VALUE_FIELDS[part]),
            PayloadFormat::Json | PayloadFormat::LineProtocol => None,
        };
        let topic = format!(
            "{}/{}/{}/{}",
            self.config.topic_prefix,
            device.site,
            device.id,
            field.unwrap_or(&self.config.measurement)
        );
        let good = GoodSample {
            measurement: &self.config.measurement,
            device: &device.id,
            site: &device.site,
            timestamp_ns,
            sample,
            field,
            counter: self.config.counter,
        };

        match self.config.faults.kind_of(n) {
            Some(kind) => Message {
                topic,
                payload: fault::payload(
                    kind,
                    self.config.format,
                    &good,
                    self.fault_rng(n),
                    &self.config.faults,
                ),
                device: device.id.clone(),
                expected: Vec::new(),
                fault: Some(Fault { kind }),
            },
            None => Message {
                topic,
                payload: payload::encode(self.config.format, &good),
                device: device.id.clone(),
                expected: vec![good.expected()],
                fault: None,
            },
        }
    }

    fn fault_rng(&self, n: u64) -> SplitMix64 {
        SplitMix64::derive(self.config.seed, &[FAULT_STREAM, n])
    }
}

const FAULT_STREAM: u64 = 0x6661_756c_7400_0003;

/// A good sample and where it comes from: what payloads (good or faulty) are made of.
#[derive(Debug, Clone, Copy)]
struct GoodSample<'a> {
    measurement: &'a str,
    device: &'a str,
    site: &'a str,
    timestamp_ns: i64,
    sample: Sample,
    /// The one field a bare-value message carries.
    field: Option<&'static str>,
    /// Whether the `count` field is sent.
    counter: bool,
}

impl GoodSample<'_> {
    fn value_of(&self, field: &str) -> f64 {
        match field {
            "temperature" => self.sample.temperature,
            "humidity" => self.sample.humidity,
            _ => self.sample.pressure,
        }
    }

    fn expected(&self) -> ExpectedReading {
        let tags = BTreeMap::from([
            ("device".to_owned(), self.device.to_owned()),
            ("site".to_owned(), self.site.to_owned()),
        ]);
        let (fields, timestamp_ns) = match self.field {
            Some(field) => (
                BTreeMap::from([(field.to_owned(), ExpectedValue::Float(self.value_of(field)))]),
                None,
            ),
            None => {
                let mut fields = BTreeMap::from([
                    (
                        "temperature".to_owned(),
                        ExpectedValue::Float(self.sample.temperature),
                    ),
                    (
                        "humidity".to_owned(),
                        ExpectedValue::Float(self.sample.humidity),
                    ),
                    (
                        "pressure".to_owned(),
                        ExpectedValue::Float(self.sample.pressure),
                    ),
                ]);
                if self.counter {
                    fields.insert(
                        "count".to_owned(),
                        ExpectedValue::Integer(self.sample.count),
                    );
                }
                (fields, Some(self.timestamp_ns))
            }
        };
        ExpectedReading {
            measurement: self.measurement.to_owned(),
            tags,
            fields,
            timestamp_ns,
        }
    }
}

/// A topic level we generate must not contain wildcards or NUL (MQTT forbids them in topic
/// names); the prefix may span several levels.
fn valid_topic_segment(segment: &str) -> bool {
    !segment.is_empty() && !segment.contains(['+', '#', '\0'])
}

#[cfg(test)]
mod tests;
