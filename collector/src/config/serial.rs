//! `[[sources.serial]]`: one entry per serial port, as written ([`SerialConfig`]) and
//! validated ([`SerialSettings`]).
//!
//! The port's path is not checked here: a port that is absent at start (a USB adapter not yet
//! plugged in) is not an error; the source opens it when it appears.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::format::{payload_format, FormatOptions};
use super::problems::Problems;
use super::{BackoffConfig, CsvConfig, FormatName, JsonConfig, LineProtocolConfig};
use crate::payload::Format;
use crate::reading::{CompactString, DEVICE_TAG};

/// `[[sources.serial]]`: one serial port.
#[derive(Debug, Clone, Deserialize)]
pub struct SerialConfig {
    /// A name for logs and metrics (default `serial-<index>`); also the default device id.
    pub name: Option<String>,
    /// The port, preferably by a stable path: `/dev/serial/by-id/usb-FTDI_..-if00-port0`.
    pub path: PathBuf,
    /// Bits per second.
    #[serde(default = "default_baud_rate")]
    pub baud_rate: u32,
    /// Data bits per character: 5 to 8.
    #[serde(default = "default_data_bits")]
    pub data_bits: u8,
    /// `none`, `odd` or `even`.
    #[serde(default)]
    pub parity: Parity,
    /// 1 or 2.
    #[serde(default = "default_stop_bits")]
    pub stop_bits: u8,
    /// `none`, `software` (XON/XOFF) or `hardware` (RTS/CTS).
    #[serde(default)]
    pub flow_control: FlowControl,
    /// What ends a line: `lf`, `cr`, `crlf` or `any` (CR or LF; empty lines are skipped).
    #[serde(default)]
    pub line_ending: LineEnding,
    /// Longer lines are discarded up to the next line ending and counted as `line_too_long`.
    #[serde(default = "default_max_line_length")]
    pub max_line_length: usize,
    /// The payload format of a line.
    #[serde(default)]
    pub format: FormatName,
    /// The measurement, unless the line names its own (line protocol does).
    pub measurement: Option<String>,
    /// The field name of a bare value (default `value`).
    pub field: Option<String>,
    /// The device id (the `device` tag) unless a line names its own (default: `name`).
    pub device: Option<String>,
    /// Tags added to every reading (`location = "roof"`).
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    // Keys repeated in `SubscriptionConfig`: `#[serde(flatten)]` would lose unknown-key errors.
    /// Options of the JSON format.
    #[serde(default)]
    pub json: JsonConfig,
    /// Options of the line protocol format.
    #[serde(default)]
    pub line_protocol: LineProtocolConfig,
    /// Options of the `key=value` format (as those of JSON: timestamp key, tag keys...).
    #[serde(default)]
    pub key_value: JsonConfig,
    /// Options of the CSV format (the column names are required).
    #[serde(default)]
    pub csv: CsvConfig,
    /// Delays between attempts to open the port while it is absent or after it went away.
    #[serde(default = "default_reopen")]
    pub reopen: BackoffConfig,
    /// Request/response mode: absent means the instrument streams on its own.
    pub poll: Option<PollConfig>,
}

/// `[sources.serial.poll]`: ask the instrument for a reading every `interval`.
#[derive(Debug, Clone, Deserialize)]
pub struct PollConfig {
    /// What to write, such as `"READ?\r\n"` (TOML escapes work).
    pub command: String,
    /// How often to ask.
    #[serde(default = "default_poll_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// How long to wait for the answer before counting a timeout (at most `interval`).
    #[serde(default = "default_poll_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

/// Parity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Parity {
    /// No parity bit.
    #[default]
    None,
    /// Odd parity.
    Odd,
    /// Even parity.
    Even,
}

/// Flow control.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowControl {
    /// None.
    #[default]
    None,
    /// XON/XOFF.
    Software,
    /// RTS/CTS.
    Hardware,
}

/// What ends a line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineEnding {
    /// `\n` (a `\r` just before it is dropped).
    Lf,
    /// `\r`.
    Cr,
    /// `\r\n` only (a lone `\r` or `\n` is part of the line).
    Crlf,
    /// `\r` or `\n`, so also `\r\n`; empty lines are skipped.
    #[default]
    Any,
}

/// One validated serial port.
#[derive(Debug, Clone, PartialEq)]
pub struct SerialSettings {
    /// Name for logs and metrics.
    pub name: String,
    /// The port's path.
    pub path: PathBuf,
    /// Bits per second.
    pub baud_rate: u32,
    /// 5 to 8.
    pub data_bits: u8,
    /// Parity.
    pub parity: Parity,
    /// 1 or 2.
    pub stop_bits: u8,
    /// Flow control.
    pub flow_control: FlowControl,
    /// Line framing.
    pub line_ending: LineEnding,
    /// The longest line kept.
    pub max_line_length: usize,
    /// How lines are read.
    pub format: Format,
    /// The measurement when the line names none.
    pub measurement: String,
    /// The field name of bare values.
    pub field: String,
    /// The device id.
    pub device: String,
    /// Tags added to every reading, sorted by key, the device id among them.
    pub tags: Vec<(CompactString, CompactString)>,
    /// Reopen backoff.
    pub reopen: BackoffConfig,
    /// Request/response mode.
    pub poll: Option<PollSettings>,
}

/// A validated polling mode.
#[derive(Debug, Clone, PartialEq)]
pub struct PollSettings {
    /// The bytes to write.
    pub command: Vec<u8>,
    /// How often.
    pub interval: Duration,
    /// How long to wait for the answer.
    pub timeout: Duration,
}

fn default_baud_rate() -> u32 {
    9600
}

fn default_data_bits() -> u8 {
    8
}

fn default_stop_bits() -> u8 {
    1
}

fn default_max_line_length() -> usize {
    4096
}

/// Short: a replugged adapter should be read again within seconds.
fn default_reopen() -> BackoffConfig {
    BackoffConfig {
        initial: Duration::from_millis(250),
        max: Duration::from_secs(5),
    }
}

fn default_poll_interval() -> Duration {
    Duration::from_secs(1)
}

fn default_poll_timeout() -> Duration {
    Duration::from_millis(500)
}

/// Validates every `[[sources.serial]]` entry.
pub(super) fn validate(ports: &[SerialConfig], p: &mut Problems) -> Vec<SerialSettings> {
    let mut out: Vec<SerialSettings> = Vec::with_capacity(ports.len());
    for (i, s) in ports.iter().enumerate() {
        let path = format!("sources.serial[{i}]");
        let name = s.name.clone().unwrap_or_else(|| format!("serial-{i}"));
        let taken = out.iter().any(|o| o.name == name);
        p.source_name(&name, taken, &path, "serial port");
        p.check(
            !s.path.as_os_str().is_empty(),
            format!("{path}.path"),
            "must not be empty",
        );
        if out.iter().any(|o| o.path == s.path) {
            p.add(
                format!("{path}.path"),
                format!("{} is read by another serial port", s.path.display()),
            );
        }
        p.check(
            (50..=4_000_000).contains(&s.baud_rate),
            format!("{path}.baud_rate"),
            "must be between 50 and 4000000",
        );
        p.check(
            (5..=8).contains(&s.data_bits),
            format!("{path}.data_bits"),
            "must be 5, 6, 7 or 8",
        );
        p.check(
            matches!(s.stop_bits, 1 | 2),
            format!("{path}.stop_bits"),
            "must be 1 or 2",
        );
        p.check(
            (16..=1 << 20).contains(&s.max_line_length),
            format!("{path}.max_line_length"),
            "must be between 16 and 1048576",
        );
        p.backoff(&s.reopen, &format!("{path}.reopen"));
        if s.format != FormatName::LineProtocol && s.measurement.is_none() {
            p.add(
                format!("{path}.measurement"),
                "must be set (only line protocol names its own)",
            );
        }
        p.tag_names(&s.tags, &path);
        let format = payload_format(
            s.format,
            &FormatOptions {
                json: &s.json,
                line_protocol: &s.line_protocol,
                key_value: &s.key_value,
                csv: &s.csv,
            },
            &path,
            p,
        );
        let poll = s.poll.as_ref().map(|poll| {
            p.check(
                !poll.command.is_empty(),
                format!("{path}.poll.command"),
                "must not be empty",
            );
            p.check(
                !poll.interval.is_zero(),
                format!("{path}.poll.interval"),
                "must be more than zero",
            );
            p.check(
                !poll.timeout.is_zero() && poll.timeout <= poll.interval,
                format!("{path}.poll.timeout"),
                "must be more than zero and at most `interval`",
            );
            PollSettings {
                command: poll.command.clone().into_bytes(),
                interval: poll.interval,
                timeout: poll.timeout,
            }
        });
        let device = s.device.clone().unwrap_or_else(|| name.clone());
        p.check(
            !device.is_empty(),
            format!("{path}.device"),
            "must not be empty",
        );
        let mut tags: BTreeMap<String, String> = s.tags.clone();
        tags.entry(DEVICE_TAG.to_string())
            .or_insert_with(|| device.clone());
        out.push(SerialSettings {
            name,
            path: s.path.clone(),
            baud_rate: s.baud_rate,
            data_bits: s.data_bits,
            parity: s.parity,
            stop_bits: s.stop_bits,
            flow_control: s.flow_control,
            line_ending: s.line_ending,
            max_line_length: s.max_line_length,
            format,
            measurement: s.measurement.clone().unwrap_or_default(),
            field: s.field.clone().unwrap_or_else(|| "value".to_string()),
            device,
            tags: tags
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            reopen: s.reopen,
            poll,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::settings::tests::errors;
    use super::super::Config;
    use super::*;
    use crate::payload::CsvOptions;

    /// Two ports with the same name and path.
    const TWINS: &str = r#"
        [[sources.serial]]
        name = "a"
        path = "/dev/ttyUSB0"
        measurement = "m"
        [[sources.serial]]
        name = "a"
        path = "/dev/ttyUSB0"
        measurement = "m"
    "#;

    #[test]
    fn a_serial_port_alone_is_a_source_and_gets_defaults() {
        let s = Config::from_toml(
            r#"
            [[sources.serial]]
            path = "/dev/serial/by-id/usb-absent"
            measurement = "env"
            format = "csv"
            csv = { columns = ["ts", "t", "_"] }
            tags = { location = "roof" }
            [sources.serial.poll]
            command = "READ?\r\n"
            "#,
        )
        .and_then(Config::validate)
        .unwrap();
        let p = &s.serial[0];
        assert_eq!(
            (p.name.as_str(), p.baud_rate, p.data_bits),
            ("serial-0", 9600, 8)
        );
        assert_eq!(p.line_ending, LineEnding::Any);
        assert_eq!(
            p.tags,
            vec![
                ("device".into(), "serial-0".into()),
                ("location".into(), "roof".into())
            ]
        );
        let Format::Csv(CsvOptions { columns, .. }) = &p.format else {
            panic!("{:?}", p.format)
        };
        assert_eq!(columns.len(), 3);
        let poll = p.poll.as_ref().unwrap();
        assert_eq!(poll.command, b"READ?\r\n");
        assert_eq!(poll.interval, Duration::from_secs(1));
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let errs = errors(
            r#"
            [[sources.serial]]
            name = "a"
            path = "/dev/ttyUSB0"
            baud_rate = 10
            data_bits = 9
            stop_bits = 3
            max_line_length = 1
            format = "csv"
            reopen = { initial = "0s", max = "1s" }
            [sources.serial.poll]
            command = ""
            interval = "1s"
            timeout = "2s"
            [[sources.serial]]
            name = "a"
            path = "/dev/ttyUSB0"
            measurement = "m"
            "#,
        );
        for want in [
            "sources.serial[0].baud_rate: must be between 50 and 4000000",
            "sources.serial[0].data_bits: must be 5, 6, 7 or 8",
            "sources.serial[0].stop_bits: must be 1 or 2",
            "sources.serial[0].max_line_length: must be between 16 and 1048576",
            "sources.serial[0].reopen.initial: must be more than zero",
            "sources.serial[0].measurement: must be set (only line protocol names its own)",
            "sources.serial[0].csv.columns: must not be empty",
            "sources.serial[0].poll.command: must not be empty",
            "sources.serial[0].poll.timeout: must be more than zero and at most `interval`",
        ] {
            assert!(
                errs.iter().any(|e| e == want),
                "missing {want:?} in {errs:?}"
            );
        }
        let errs = errors(&format!("{TWINS}flow_control = \"rts\"\n"));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].starts_with("sources.serial[1].flow_control"),
            "{errs:?}"
        );
        let errs = errors(TWINS);
        assert_eq!(
            errs,
            vec![
                "sources.serial[1].name: `a` is used by another serial port",
                "sources.serial[1].path: /dev/ttyUSB0 is read by another serial port",
            ]
        );
    }
}
