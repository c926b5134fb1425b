//! Serial devices on pseudo-terminals: what they send, line by line, and the ports they
//! send it on.
//!
//! A [`SerialDevice`] is one instrument: its lines are a pure function of (seed, device
//! index, sample), in one of the serial payload formats, with what a correct collector must
//! store for each ([`Message::expected`], the `topic` being the port's path). A
//! [`SerialPort`] is the pty it talks through, behind a stable link, paced at the baud rate,
//! unpluggable. [`stream`] and [`answer`] run a device on a port, streaming on its own or
//! answering each command (request/response); faults replace lines on demand.

mod port;

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

use influxdb_line_protocol::builder::LineProtocolBuilder;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::fleet::payload::{float, json_object};
use crate::fleet::{ExpectedReading, ExpectedValue, Fault, FaultKind, Message};
use crate::model::{DeviceModel, Sample, SplitMix64};

pub use port::SerialPort;

/// The payload format of a simulated serial device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum SerialFormat {
    /// `{"ts":<ns>,"temperature":21.53,"humidity":40.1,"pressure":1013.25,"count":42}`.
    Json,
    /// `env,device=ser-00 temperature=21.53,...,count=42i <ns>` (plus the device's tags).
    LineProtocol,
    /// `ts=<ns> temperature=21.53 humidity=40.1 pressure=1013.25 count=42`.
    KeyValue,
    /// `<ns>,21.53,40.1,1013.25,42`, columns [`CSV_COLUMNS`].
    Csv,
    /// `21.53`: the temperature alone, without a timestamp.
    Value,
}

/// The columns of [`SerialFormat::Csv`] lines, as a collector's `csv.columns` names them.
pub const CSV_COLUMNS: [&str; 5] = ["ts", "temperature", "humidity", "pressure", "count"];

/// Kinds of bad lines a serial device sends on demand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum SerialFault {
    /// 8 to 64 random bytes, starting with `0xff` (so never UTF-8), without a line ending.
    Garbage,
    /// A good line with one byte replaced by `0xff`.
    InvalidUtf8,
    /// A good line padded past the collector's maximum line length.
    Overlong,
}

impl SerialFault {
    /// Every kind.
    pub const ALL: [SerialFault; 3] = [
        SerialFault::Garbage,
        SerialFault::InvalidUtf8,
        SerialFault::Overlong,
    ];

    /// The reason a correct collector counts it under.
    pub fn reason(self) -> &'static str {
        match self {
            SerialFault::Garbage | SerialFault::InvalidUtf8 => "invalid_utf8",
            SerialFault::Overlong => "line_too_long",
        }
    }
}

/// One simulated instrument.
#[derive(Debug, Clone)]
pub struct SerialDeviceConfig {
    /// The device id (the `device` tag a collector must store).
    pub id: String,
    /// The device's index: its value model is that of device `index` of a fleet with `seed`.
    pub index: usize,
    /// Seed of the values.
    pub seed: u64,
    /// Timestamp of sample 0, in ns since the epoch.
    pub start_ns: i64,
    /// Time between two samples (in the timestamps, not the pacing).
    pub interval: Duration,
    /// Payload format.
    pub format: SerialFormat,
    /// Measurement (line protocol writes it; the others rely on the collector's config).
    pub measurement: String,
    /// Tags the collector's config adds for this port (`location`), for the expected readings.
    pub tags: BTreeMap<String, String>,
    /// What ends a line.
    pub line_ending: &'static [u8],
    /// Length of [`SerialFault::Overlong`] lines.
    pub overlong_bytes: usize,
}

impl Default for SerialDeviceConfig {
    fn default() -> Self {
        SerialDeviceConfig {
            id: "ser-00".to_owned(),
            index: 0,
            seed: 42,
            start_ns: 1_700_000_000_000_000_000,
            interval: Duration::from_secs(1),
            format: SerialFormat::Json,
            measurement: "env".to_owned(),
            tags: BTreeMap::new(),
            line_ending: b"\r\n",
            overlong_bytes: 8192,
        }
    }
}

/// A simulated instrument: its lines.
#[derive(Debug, Clone)]
pub struct SerialDevice {
    config: SerialDeviceConfig,
    model: DeviceModel,
}

const SERIAL_FAULT_STREAM: u64 = 0x7365_7269_616c_0004;

impl SerialDevice {
    /// The device.
    pub fn new(config: SerialDeviceConfig) -> SerialDevice {
        let model = DeviceModel::new(config.seed, config.index);
        SerialDevice { config, model }
    }

    /// Its configuration.
    pub fn config(&self) -> &SerialDeviceConfig {
        &self.config
    }

    fn timestamp(&self, sample: u64) -> i64 {
        let interval = i64::try_from(self.config.interval.as_nanos()).unwrap_or(i64::MAX);
        self.config
            .start_ns
            .saturating_add((sample as i64).saturating_mul(interval))
    }

    /// Line number `sample` (with its line ending), and the reading it must produce. `port`
    /// is the port's path, recorded as the message's topic.
    pub fn line(&self, sample: u64, port: &str) -> Message {
        let ts = self.timestamp(sample);
        let s = self.model.sample(sample, ts);
        let mut payload = self.encode(&s, ts).into_bytes();
        payload.extend_from_slice(self.config.line_ending);
        Message {
            topic: port.to_owned(),
            payload,
            device: self.config.id.clone(),
            expected: vec![self.expected(&s, ts)],
            fault: None,
        }
    }

    /// A bad line in place of line `sample`: a correct collector stores nothing for it and
    /// counts it under [`SerialFault::reason`].
    pub fn fault(&self, kind: SerialFault, sample: u64, port: &str) -> Message {
        let mut rng = SplitMix64::derive(
            self.config.seed,
            &[SERIAL_FAULT_STREAM, self.config.index as u64, sample],
        );
        let good = self.line(sample, port);
        let body = &good.payload[..good.payload.len() - self.config.line_ending.len()];
        let mut payload = match kind {
            SerialFault::Garbage => {
                let n = 8 + rng.below(57) as usize;
                let mut bytes = vec![0xff];
                bytes.extend((1..n).map(|_| {
                    let b = rng.below(256) as u8;
                    if b == b'\r' || b == b'\n' {
                        0xfe
                    } else {
                        b
                    }
                }));
                bytes
            }
            SerialFault::InvalidUtf8 => {
                let mut bytes = body.to_vec();
                let i = rng.below(bytes.len().max(1) as u64) as usize;
                if let Some(b) = bytes.get_mut(i) {
                    *b = 0xff;
                }
                bytes
            }
            SerialFault::Overlong => {
                let mut bytes = body.to_vec();
                bytes.resize(self.config.overlong_bytes.max(bytes.len()), b' ');
                bytes
            }
        };
        payload.extend_from_slice(self.config.line_ending);
        let fault_kind = match kind {
            SerialFault::Garbage => FaultKind::Garbage,
            SerialFault::InvalidUtf8 => FaultKind::InvalidUtf8,
            SerialFault::Overlong => FaultKind::Oversized,
        };
        Message {
            topic: port.to_owned(),
            payload,
            device: self.config.id.clone(),
            expected: Vec::new(),
            fault: Some(Fault { kind: fault_kind }),
        }
    }

    fn encode(&self, s: &Sample, ts: i64) -> String {
        match self.config.format {
            SerialFormat::Json => json_object(&[
                ("ts", ts.to_string()),
                ("temperature", float(s.temperature)),
                ("humidity", float(s.humidity)),
                ("pressure", float(s.pressure)),
                ("count", s.count.to_string()),
            ]),
            SerialFormat::KeyValue => format!(
                "ts={ts} temperature={} humidity={} pressure={} count={}",
                float(s.temperature),
                float(s.humidity),
                float(s.pressure),
                s.count
            ),
            SerialFormat::Csv => format!(
                "{ts},{},{},{},{}",
                float(s.temperature),
                float(s.humidity),
                float(s.pressure),
                s.count
            ),
            SerialFormat::Value => float(s.temperature),
            SerialFormat::LineProtocol => {
                let mut b = LineProtocolBuilder::new()
                    .measurement(&self.config.measurement)
                    .tag("device", &self.config.id);
                for (k, v) in &self.config.tags {
                    b = b.tag(k, v);
                }
                let mut line = b
                    .field("temperature", s.temperature)
                    .field("humidity", s.humidity)
                    .field("pressure", s.pressure)
                    .field("count", s.count)
                    .timestamp(ts)
                    .close_line()
                    .build();
                line.pop(); // the builder's '\n': the device's own line ending follows
                String::from_utf8_lossy(&line).into_owned()
            }
        }
    }

    fn expected(&self, s: &Sample, ts: i64) -> ExpectedReading {
        let mut tags = self.config.tags.clone();
        tags.insert("device".to_owned(), self.config.id.clone());
        let (fields, timestamp_ns) = match self.config.format {
            SerialFormat::Value => (
                BTreeMap::from([(
                    "temperature".to_owned(),
                    ExpectedValue::Float(s.temperature),
                )]),
                None,
            ),
            _ => (
                BTreeMap::from([
                    (
                        "temperature".to_owned(),
                        ExpectedValue::Float(s.temperature),
                    ),
                    ("humidity".to_owned(), ExpectedValue::Float(s.humidity)),
                    ("pressure".to_owned(), ExpectedValue::Float(s.pressure)),
                    ("count".to_owned(), ExpectedValue::Integer(s.count)),
                ]),
                Some(ts),
            ),
        };
        ExpectedReading {
            measurement: self.config.measurement.clone(),
            tags,
            fields,
            timestamp_ns,
        }
    }
}

/// How a streaming device sends.
#[derive(Debug, Clone, Default)]
pub struct StreamPlan {
    /// The samples to send, in order.
    pub samples: Range<u64>,
    /// Pause between two lines (besides the baud rate's own pacing); none: back to back.
    pub gap: Option<Duration>,
    /// Every Nth line is replaced by a fault (the Nth, the 2Nth...), kinds in turn.
    pub faults_every: Option<u64>,
    /// The kinds of faults, used in turn (default: all).
    pub fault_kinds: Vec<SerialFault>,
    /// Unplug after every Nth line, and plug in again after `replug_after`.
    pub unplug_every: Option<u64>,
    /// How long an unplugged port stays unplugged.
    pub replug_after: Duration,
}

/// Streams `plan.samples` of `device` on `port`, with the planned faults and unplugs, until
/// done or `stop`. Returns what was sent, each line once it was written (a line written just
/// before an unplug may still be lost, as on real hardware, unless the collector read it:
/// see [`SerialPort::drain`]).
///
/// # Errors
/// The pty fails, or the link cannot be made.
pub async fn stream(
    port: &mut SerialPort,
    device: &SerialDevice,
    plan: &StreamPlan,
    stop: &CancellationToken,
) -> std::io::Result<Vec<Message>> {
    let path = port.link().display().to_string();
    let kinds = if plan.fault_kinds.is_empty() {
        SerialFault::ALL.to_vec()
    } else {
        plan.fault_kinds.clone()
    };
    let mut sent = Vec::new();
    let mut faults = 0usize;
    for (n, sample) in plan.samples.clone().enumerate() {
        if stop.is_cancelled() {
            break;
        }
        let n = n as u64 + 1;
        let message = match plan.faults_every {
            Some(every) if every > 0 && n.is_multiple_of(every) => {
                faults += 1;
                device.fault(kinds[(faults - 1) % kinds.len()], sample, &path)
            }
            _ => device.line(sample, &path),
        };
        tokio::select! {
            () = stop.cancelled() => break,
            r = port.write(&message.payload) => r?,
        }
        sent.push(message);
        if let Some(every) = plan.unplug_every {
            if every > 0 && n.is_multiple_of(every) {
                port.drain(Duration::from_secs(5)).await;
                port.unplug()?;
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(plan.replug_after) => {}
                }
                port.replug()?;
            }
        }
        if let Some(gap) = plan.gap {
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(gap) => {}
            }
        }
    }
    Ok(sent)
}

/// Answers each command a collector writes (a line ended by the command's last byte) with
/// the next sample, until `samples` is exhausted or `stop`. With `silent`, reads the commands
/// and never answers (an instrument that is switched off but still plugged in). Returns what
/// was sent.
///
/// # Errors
/// The pty fails.
pub async fn answer(
    port: &mut SerialPort,
    device: &SerialDevice,
    command_end: u8,
    samples: Range<u64>,
    silent: bool,
    stop: &CancellationToken,
) -> std::io::Result<Vec<Message>> {
    let path = port.link().display().to_string();
    let mut sent = Vec::new();
    let mut next = samples.clone();
    let mut buf = [0u8; 256];
    loop {
        let n = tokio::select! {
            () = stop.cancelled() => break,
            r = port.read(&mut buf) => r?,
        };
        if n == 0 {
            break;
        }
        let commands = buf[..n].iter().filter(|b| **b == command_end).count();
        for _ in 0..commands {
            if silent {
                continue;
            }
            let Some(sample) = next.next() else {
                return Ok(sent);
            };
            let message = device.line(sample, &path);
            port.write(&message.payload).await?;
            sent.push(message);
        }
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(format: SerialFormat) -> SerialDevice {
        SerialDevice::new(SerialDeviceConfig {
            format,
            tags: BTreeMap::from([("location".to_owned(), "roof".to_owned())]),
            ..SerialDeviceConfig::default()
        })
    }

    #[test]
    fn lines_in_every_format() {
        let ts = 1_700_000_001_000_000_000i64;
        let json = device(SerialFormat::Json).line(1, "/p");
        let text = String::from_utf8(json.payload.clone()).unwrap();
        assert!(
            text.starts_with(&format!("{{\"ts\":{ts},\"temperature\":")),
            "{text}"
        );
        assert!(text.ends_with("}\r\n"), "{text}");
        assert_eq!(json.expected[0].tags["location"], "roof");
        assert_eq!(json.expected[0].tags["device"], "ser-00");
        assert_eq!(json.topic, "/p");

        let kv = String::from_utf8(device(SerialFormat::KeyValue).line(1, "/p").payload).unwrap();
        assert!(kv.starts_with(&format!("ts={ts} temperature=")), "{kv}");
        let csv = String::from_utf8(device(SerialFormat::Csv).line(1, "/p").payload).unwrap();
        assert_eq!(
            csv.trim_end().split(',').count(),
            CSV_COLUMNS.len(),
            "{csv}"
        );
        let lp =
            String::from_utf8(device(SerialFormat::LineProtocol).line(1, "/p").payload).unwrap();
        assert!(
            lp.starts_with("env,device=ser-00,location=roof temperature="),
            "{lp}"
        );
        let value = device(SerialFormat::Value).line(1, "/p");
        assert_eq!(value.expected[0].timestamp_ns, None);
        assert_eq!(value.expected[0].fields.len(), 1);
        assert_eq!(device(SerialFormat::Json).line(7, "/p"), json_again(7));
    }

    fn json_again(sample: u64) -> Message {
        device(SerialFormat::Json).line(sample, "/p")
    }

    #[test]
    fn faults_are_never_good_lines() {
        let d = device(SerialFormat::Json);
        for kind in SerialFault::ALL {
            for sample in 0..50 {
                let m = d.fault(kind, sample, "/p");
                assert!(m.expected.is_empty());
                let body = &m.payload[..m.payload.len() - 2];
                assert!(!body.contains(&b'\n') && !body.contains(&b'\r'), "{kind:?}");
                match kind {
                    SerialFault::Overlong => assert_eq!(body.len(), 8192),
                    _ => assert!(std::str::from_utf8(body).is_err(), "{kind:?}"),
                }
            }
        }
    }
}
