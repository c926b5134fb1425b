//! `[[sources.modbus]]`: one entry per Modbus bus (RTU: a serial line and the units on it) or
//! connection (TCP: a device or a gateway and the units behind it), as written
//! ([`ModbusConfig`]) and validated ([`ModbusSettings`]).
//!
//! Each device has a register map: a list of fields, each with its register kind, address,
//! data type, byte and word order, scale and offset. The map is checked here; how the fields
//! are grouped into requests is the source's plan (`sources::modbus::plan`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::problems::Problems;
use super::{BackoffConfig, Parity};
use crate::reading::{CompactString, DEVICE_TAG};

/// The most registers one read may ask for (function codes 3 and 4), by the protocol.
pub const MAX_REGISTERS: u16 = 125;
/// The most bits one read may ask for (function codes 1 and 2), by the protocol.
pub const MAX_BITS: u16 = 2000;

/// `[[sources.modbus]]`: one bus or connection and the devices on it.
#[derive(Debug, Clone, Deserialize)]
pub struct ModbusConfig {
    /// A name for logs and metrics: `modbus:<name>` (default `modbus-<index>`).
    pub name: Option<String>,
    /// `rtu` (a serial line) or `tcp`.
    pub transport: Transport,
    /// RTU: the port, preferably by a stable path (`/dev/serial/by-id/...`).
    pub path: Option<PathBuf>,
    /// RTU: bits per second (default 9600).
    pub baud_rate: Option<u32>,
    /// RTU: data bits, 7 or 8 (default 8).
    pub data_bits: Option<u8>,
    /// RTU: `none`, `odd` or `even` (default `even`, as the Modbus specification says).
    pub parity: Option<Parity>,
    /// RTU: 1 or 2 (default 1).
    pub stop_bits: Option<u8>,
    /// RTU: silence before each request (default 3.5 character times, at least 1.75 ms).
    #[serde(default, with = "humantime_serde")]
    pub frame_gap: Option<Duration>,
    /// TCP: the device's or gateway's host name or address.
    pub host: Option<String>,
    /// TCP: its port (default 502).
    pub port: Option<u16>,
    /// TCP: how long a connection attempt may take (default 3s).
    #[serde(default, with = "humantime_serde")]
    pub connect_timeout: Option<Duration>,
    /// How long to wait for the answer to one request.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// How many times a request that got no good answer is sent again (0 to 5).
    #[serde(default = "default_retries")]
    pub retries: u8,
    /// Delays between attempts to open the port (or connect) while it is absent or after
    /// it went away.
    #[serde(default = "default_reopen")]
    pub reopen: BackoffConfig,
    /// Delays between attempts to reach a device that stopped answering: it is polled this
    /// rarely (one request, no retries) until it answers, so that it does not slow the
    /// others on its bus.
    #[serde(default = "default_offline")]
    pub offline_retry: BackoffConfig,
    /// The measurement of every device that names none (default `modbus`).
    pub measurement: Option<String>,
    /// Tags added to the readings of every device.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// The devices (units) on this bus or behind this connection.
    #[serde(default)]
    pub devices: Vec<DeviceConfig>,
}

/// `[[sources.modbus.devices]]`: one unit and its register map.
#[derive(Debug, Clone, Deserialize)]
pub struct DeviceConfig {
    /// The device id (the `device` tag).
    pub name: String,
    /// The unit id (slave address): 1 to 247 on a serial line; 0 to 255 over TCP (a device
    /// that is not behind a gateway usually answers to any, often 1 or 255).
    pub unit: u8,
    /// How often to read the fields that name no interval of their own.
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// The measurement (default: the source's).
    pub measurement: Option<String>,
    /// Tags added to this device's readings (besides the source's).
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// When set, each field's `unit` goes into a tag of this name, and fields of different
    /// units are written as separate readings (`unit_tag = "unit"`: `...,unit=V voltage=230`).
    pub unit_tag: Option<String>,
    /// Fields at most this many registers (or bits) apart are read in one request, the
    /// registers between them read and ignored (default 0: only adjacent fields). Some
    /// devices answer an exception for a read that touches an unmapped register.
    #[serde(default)]
    pub merge_gap: u16,
    /// The most registers this device answers in one request (default 125, the protocol's
    /// limit; some devices accept fewer).
    #[serde(default = "default_max_registers")]
    pub max_registers: u16,
    /// The most coils or discrete inputs this device answers in one request (default 2000).
    #[serde(default = "default_max_bits")]
    pub max_bits: u16,
    /// The register map.
    #[serde(default)]
    pub fields: Vec<FieldConfig>,
}

/// `[[sources.modbus.devices.fields]]`: one value in the device's registers.
#[derive(Debug, Clone, Deserialize)]
pub struct FieldConfig {
    /// The field name.
    pub name: String,
    /// `coil`, `discrete_input`, `input` (input register) or `holding` (holding register).
    pub register: RegisterKind,
    /// The address of the first register (or bit), counted from 0 as on the wire (the
    /// "40001" of a manual's holding register 1 is address 0).
    pub address: u16,
    /// `bool`, `u16`, `i16`, `u32`, `i32`, `u64`, `i64`, `f32`, `f64` or `string` (default:
    /// `bool` for coils and discrete inputs, `u16` for registers).
    #[serde(rename = "type")]
    pub data_type: Option<DataType>,
    /// How the value's bytes lie in its registers: `ABCD` (big-endian, the Modbus
    /// convention), `CDAB` (words swapped), `BADC` (bytes swapped), `DCBA` (little-endian).
    /// For 64-bit values `ABCDEFGH`, `GHEFCDAB`, `BADCFEHG`, `HGFEDCBA` say the same.
    #[serde(default)]
    pub order: Order,
    /// `bool` from one bit of a register: 0 (least significant) to 15.
    pub bit: Option<u8>,
    /// `string`: its length in registers (two characters each).
    pub length: Option<u16>,
    /// Multiplies the value (the result is a float unless it is 1).
    #[serde(default = "default_scale")]
    pub scale: f64,
    /// Added to the value after `scale` (the result is a float unless it is 0).
    #[serde(default)]
    pub offset: f64,
    /// The unit (`V`, `kWh`, `°C`): shown by `validate` and `doctor`, and written as a tag
    /// when the device has `unit_tag`.
    pub unit: Option<String>,
    /// How often to read this field (default: the device's `interval`). Fields with the
    /// same interval are read together.
    #[serde(default, with = "humantime_serde")]
    pub interval: Option<Duration>,
    // Keys repeated in `ReportRuleConfig`: `#[serde(flatten)]` would lose unknown-key errors.
    /// Report by exception: written only when it moved by more than this from the value
    /// last written (or at `heartbeat`).
    pub deadband: Option<f64>,
    /// Report by exception: written only when it moved by more than this percentage of the
    /// value last written.
    pub deadband_percent: Option<f64>,
    /// Report by exception: written only when it changed.
    #[serde(default)]
    pub on_change: bool,
    /// Report by exception: an unchanged value is still written this often (default 10m;
    /// `"0s"`: never).
    #[serde(default, with = "humantime_serde")]
    pub heartbeat: Option<Duration>,
}

impl FieldConfig {
    fn report(&self) -> super::ReportConfig {
        super::ReportConfig {
            deadband: self.deadband,
            deadband_percent: self.deadband_percent,
            on_change: self.on_change,
            heartbeat: self.heartbeat,
        }
    }
}

/// How the bus is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// Modbus RTU on a serial line (RS-485, RS-232).
    Rtu,
    /// Modbus TCP.
    Tcp,
}

/// The four tables of a Modbus device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegisterKind {
    /// Read/write bits (function code 1).
    Coil,
    /// Read-only bits (function code 2).
    DiscreteInput,
    /// Read-only 16-bit registers (function code 4).
    Input,
    /// Read/write 16-bit registers (function code 3).
    Holding,
}

impl RegisterKind {
    /// Whether its entries are bits (coils, discrete inputs), not registers.
    pub fn is_bits(self) -> bool {
        matches!(self, RegisterKind::Coil | RegisterKind::DiscreteInput)
    }

    /// The most entries one request may read: the protocol's limit.
    pub fn protocol_limit(self) -> u16 {
        if self.is_bits() {
            MAX_BITS
        } else {
            MAX_REGISTERS
        }
    }

    /// The read function code.
    pub fn function_code(self) -> u8 {
        match self {
            RegisterKind::Coil => 1,
            RegisterKind::DiscreteInput => 2,
            RegisterKind::Holding => 3,
            RegisterKind::Input => 4,
        }
    }

    /// The name used in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            RegisterKind::Coil => "coil",
            RegisterKind::DiscreteInput => "discrete_input",
            RegisterKind::Input => "input",
            RegisterKind::Holding => "holding",
        }
    }
}

/// The type of a field's value in the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataType {
    /// A coil, a discrete input, or one bit of a register.
    Bool,
    /// One register, unsigned.
    U16,
    /// One register, two's complement.
    I16,
    /// Two registers, unsigned.
    U32,
    /// Two registers, two's complement.
    I32,
    /// Four registers, unsigned.
    U64,
    /// Four registers, two's complement.
    I64,
    /// Two registers, IEEE 754 single precision.
    F32,
    /// Four registers, IEEE 754 double precision.
    F64,
    /// `length` registers of characters, two each; trailing NULs and spaces are dropped.
    String,
}

impl DataType {
    /// How many registers a value of this type takes (`string`: none of its own).
    pub fn registers(self) -> u16 {
        match self {
            DataType::Bool | DataType::U16 | DataType::I16 | DataType::String => 1,
            DataType::U32 | DataType::I32 | DataType::F32 => 2,
            DataType::U64 | DataType::I64 | DataType::F64 => 4,
        }
    }

    /// The name used in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            DataType::Bool => "bool",
            DataType::U16 => "u16",
            DataType::I16 => "i16",
            DataType::U32 => "u32",
            DataType::I32 => "i32",
            DataType::U64 => "u64",
            DataType::I64 => "i64",
            DataType::F32 => "f32",
            DataType::F64 => "f64",
            DataType::String => "string",
        }
    }

    fn is_numeric(self) -> bool {
        !matches!(self, DataType::Bool | DataType::String)
    }
}

/// How a value's bytes lie in its registers, named by where the bytes of the big-endian
/// value (`A` most significant) are found, register after register.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum Order {
    /// Big-endian: the most significant register first, each register high byte first.
    #[default]
    #[serde(alias = "ABCDEFGH", alias = "AB")]
    ABCD,
    /// The least significant register first, each high byte first ("word swap").
    #[serde(alias = "GHEFCDAB")]
    CDAB,
    /// The most significant register first, each low byte first ("byte swap").
    #[serde(alias = "BADCFEHG", alias = "BA")]
    BADC,
    /// Little-endian: the least significant register first, each low byte first.
    #[serde(alias = "HGFEDCBA")]
    DCBA,
}

impl Order {
    /// Whether the registers come least significant first.
    pub fn words_swapped(self) -> bool {
        matches!(self, Order::CDAB | Order::DCBA)
    }

    /// Whether each register has its low byte first.
    pub fn bytes_swapped(self) -> bool {
        matches!(self, Order::BADC | Order::DCBA)
    }
}

impl fmt::Display for Order {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// One validated bus or connection.
#[derive(Debug, Clone, PartialEq)]
pub struct ModbusSettings {
    /// Name for logs and metrics.
    pub name: String,
    /// How the bus is reached.
    pub link: Link,
    /// How long to wait for one answer.
    pub timeout: Duration,
    /// How many times a failed request is sent again.
    pub retries: u8,
    /// Reopen (reconnect) backoff.
    pub reopen: BackoffConfig,
    /// How often a device that stopped answering is tried.
    pub offline_retry: BackoffConfig,
    /// The devices, in the order written.
    pub devices: Vec<DeviceSettings>,
}

/// A validated link.
#[derive(Debug, Clone, PartialEq)]
pub enum Link {
    /// A serial line.
    Rtu(RtuSettings),
    /// A TCP connection.
    Tcp(TcpSettings),
}

/// A validated serial line.
#[derive(Debug, Clone, PartialEq)]
pub struct RtuSettings {
    /// The port's path.
    pub path: PathBuf,
    /// Bits per second.
    pub baud_rate: u32,
    /// 7 or 8.
    pub data_bits: u8,
    /// Parity.
    pub parity: Parity,
    /// 1 or 2.
    pub stop_bits: u8,
    /// The silence kept before each request.
    pub frame_gap: Duration,
}

impl RtuSettings {
    /// Bits on the wire per character: start, data, parity, stop.
    pub fn bits_per_char(&self) -> u32 {
        1 + u32::from(self.data_bits)
            + u32::from(self.parity != Parity::None)
            + u32::from(self.stop_bits)
    }

    /// How long `bytes` characters take on the wire.
    pub fn wire_time(&self, bytes: usize) -> Duration {
        let bits = bytes as u64 * u64::from(self.bits_per_char());
        Duration::from_nanos(bits.saturating_mul(1_000_000_000) / u64::from(self.baud_rate.max(1)))
    }
}

/// A validated TCP peer.
#[derive(Debug, Clone, PartialEq)]
pub struct TcpSettings {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// How long connecting may take.
    pub connect_timeout: Duration,
}

/// One validated device.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceSettings {
    /// The device id.
    pub name: String,
    /// The unit id.
    pub unit: u8,
    /// The measurement.
    pub measurement: CompactString,
    /// Tags of every reading, sorted by key, the device id among them.
    pub tags: Vec<(CompactString, CompactString)>,
    /// The tag that carries each field's unit, if any.
    pub unit_tag: Option<CompactString>,
    /// Registers (bits) a merged request may read between two fields.
    pub merge_gap: u16,
    /// The most registers per request.
    pub max_registers: u16,
    /// The most bits per request.
    pub max_bits: u16,
    /// The register map, in the order written.
    pub fields: Vec<FieldSettings>,
}

/// One validated field.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldSettings {
    /// The field name.
    pub name: CompactString,
    /// Where it is.
    pub register: RegisterKind,
    /// Its first register (or bit).
    pub address: u16,
    /// Its type.
    pub data_type: DataType,
    /// Its byte and word order.
    pub order: Order,
    /// For a `bool` in a register: the bit.
    pub bit: Option<u8>,
    /// How many registers (bits) it spans.
    pub size: u16,
    /// Scale and offset, when they change the value: the value becomes a float.
    pub scaling: Option<(f64, f64)>,
    /// Its unit, if given.
    pub unit: Option<CompactString>,
    /// How often it is read.
    pub interval: Duration,
    /// When it is written, if not at every poll.
    pub report: Option<super::ReportSettings>,
}

impl FieldSettings {
    /// One past its last register (or bit), as a wide number (no overflow at 65535).
    pub fn end(&self) -> u32 {
        u32::from(self.address) + u32::from(self.size)
    }
}

fn default_timeout() -> Duration {
    Duration::from_millis(500)
}

fn default_retries() -> u8 {
    1
}

fn default_reopen() -> BackoffConfig {
    BackoffConfig {
        initial: Duration::from_millis(250),
        max: Duration::from_secs(5),
    }
}

fn default_offline() -> BackoffConfig {
    BackoffConfig {
        initial: Duration::from_secs(1),
        max: Duration::from_secs(30),
    }
}

fn default_interval() -> Duration {
    Duration::from_secs(10)
}

fn default_max_registers() -> u16 {
    MAX_REGISTERS
}

fn default_max_bits() -> u16 {
    MAX_BITS
}

fn default_scale() -> f64 {
    1.0
}

/// The silence before a frame at `baud_rate` with `bits_per_char`: 3.5 character times,
/// and 1.75 ms above 19,200 baud, as the serial-line specification says.
pub fn frame_gap(baud_rate: u32, bits_per_char: u32) -> Duration {
    if baud_rate > 19_200 {
        return Duration::from_micros(1750);
    }
    let bits = 35 * u64::from(bits_per_char); // 3.5 characters, in tenths
    Duration::from_nanos(bits * 100_000_000 / u64::from(baud_rate.max(1)))
}

/// Validates every `[[sources.modbus]]` entry.
pub(super) fn validate(buses: &[ModbusConfig], p: &mut Problems) -> Vec<ModbusSettings> {
    let mut out: Vec<ModbusSettings> = Vec::with_capacity(buses.len());
    for (i, b) in buses.iter().enumerate() {
        let path = format!("sources.modbus[{i}]");
        let name = b.name.clone().unwrap_or_else(|| format!("modbus-{i}"));
        let taken = out.iter().any(|o| o.name == name);
        p.source_name(&name, taken, &path, "Modbus source");
        let link = link(b, &path, p);
        if let Link::Rtu(r) = &link {
            if out
                .iter()
                .any(|o| matches!(&o.link, Link::Rtu(o) if o.path == r.path))
            {
                p.add(
                    format!("{path}.path"),
                    format!(
                        "{} is read by another Modbus source: put every device of a bus in one source",
                        r.path.display()
                    ),
                );
            }
        }
        p.check(
            !b.timeout.is_zero() && b.timeout <= Duration::from_secs(60),
            format!("{path}.timeout"),
            "must be more than zero and at most 60s",
        );
        p.check(
            b.retries <= 5,
            format!("{path}.retries"),
            "must be at most 5",
        );
        p.backoff(&b.reopen, &format!("{path}.reopen"));
        p.backoff(&b.offline_retry, &format!("{path}.offline_retry"));
        p.tag_names(&b.tags, &path);
        p.check(
            !b.devices.is_empty(),
            format!("{path}.devices"),
            "must not be empty",
        );
        let measurement = b.measurement.clone().unwrap_or_else(|| "modbus".into());
        p.check(
            !measurement.is_empty(),
            format!("{path}.measurement"),
            "must not be empty",
        );
        let mut devices: Vec<DeviceSettings> = Vec::with_capacity(b.devices.len());
        for (j, d) in b.devices.iter().enumerate() {
            let dpath = format!("{path}.devices[{j}]");
            if devices.iter().any(|o| o.name == d.name) {
                p.add(
                    format!("{dpath}.name"),
                    format!("`{}` is used by another device of this source", d.name),
                );
            }
            if matches!(link, Link::Rtu(_)) {
                p.check(
                    (1..=247).contains(&d.unit),
                    format!("{dpath}.unit"),
                    "must be between 1 and 247 on a serial line (0 is broadcast: nobody answers)",
                );
                if devices.iter().any(|o| o.unit == d.unit) {
                    p.add(
                        format!("{dpath}.unit"),
                        format!("unit {} is used by another device on this bus", d.unit),
                    );
                }
            }
            devices.push(device(d, &measurement, &b.tags, &dpath, p));
        }
        out.push(ModbusSettings {
            name,
            link,
            timeout: b.timeout,
            retries: b.retries,
            reopen: b.reopen,
            offline_retry: b.offline_retry,
            devices,
        });
    }
    out
}

/// The link's settings; the keys of the other transport are errors.
fn link(b: &ModbusConfig, path: &str, p: &mut Problems) -> Link {
    let rtu_keys = [
        ("path", b.path.is_some()),
        ("baud_rate", b.baud_rate.is_some()),
        ("data_bits", b.data_bits.is_some()),
        ("parity", b.parity.is_some()),
        ("stop_bits", b.stop_bits.is_some()),
        ("frame_gap", b.frame_gap.is_some()),
    ];
    let tcp_keys = [
        ("host", b.host.is_some()),
        ("port", b.port.is_some()),
        ("connect_timeout", b.connect_timeout.is_some()),
    ];
    let (foreign, other): (&[(&str, bool)], &str) = match b.transport {
        Transport::Rtu => (&tcp_keys, "tcp"),
        Transport::Tcp => (&rtu_keys, "rtu"),
    };
    for (key, _) in foreign.iter().filter(|(_, given)| *given) {
        p.add(
            format!("{path}.{key}"),
            format!("only for transport = \"{other}\""),
        );
    }
    match b.transport {
        Transport::Rtu => {
            let port = b.path.clone().unwrap_or_default();
            p.check(
                !port.as_os_str().is_empty(),
                format!("{path}.path"),
                "must be set for transport = \"rtu\" (the serial port)",
            );
            let baud_rate = b.baud_rate.unwrap_or(9600);
            p.check(
                (300..=4_000_000).contains(&baud_rate),
                format!("{path}.baud_rate"),
                "must be between 300 and 4000000",
            );
            let data_bits = b.data_bits.unwrap_or(8);
            p.check(
                matches!(data_bits, 7 | 8),
                format!("{path}.data_bits"),
                "must be 7 or 8",
            );
            let stop_bits = b.stop_bits.unwrap_or(1);
            p.check(
                matches!(stop_bits, 1 | 2),
                format!("{path}.stop_bits"),
                "must be 1 or 2",
            );
            let parity = b.parity.unwrap_or(Parity::Even);
            let mut rtu = RtuSettings {
                path: port,
                baud_rate,
                data_bits,
                parity,
                stop_bits,
                frame_gap: Duration::ZERO,
            };
            rtu.frame_gap = match b.frame_gap {
                Some(g) => {
                    p.check(
                        g <= Duration::from_secs(1),
                        format!("{path}.frame_gap"),
                        "must be at most 1s",
                    );
                    g
                }
                None => frame_gap(baud_rate, rtu.bits_per_char()),
            };
            Link::Rtu(rtu)
        }
        Transport::Tcp => {
            let host = b.host.clone().unwrap_or_default();
            p.check(
                !host.trim().is_empty(),
                format!("{path}.host"),
                "must be set for transport = \"tcp\"",
            );
            let port = b.port.unwrap_or(502);
            p.check(port != 0, format!("{path}.port"), "must not be 0");
            let connect_timeout = b.connect_timeout.unwrap_or(Duration::from_secs(3));
            p.check(
                !connect_timeout.is_zero(),
                format!("{path}.connect_timeout"),
                "must be more than zero",
            );
            Link::Tcp(TcpSettings {
                host,
                port,
                connect_timeout,
            })
        }
    }
}

fn device(
    d: &DeviceConfig,
    measurement: &str,
    source_tags: &BTreeMap<String, String>,
    path: &str,
    p: &mut Problems,
) -> DeviceSettings {
    p.check(
        !d.name.trim().is_empty(),
        format!("{path}.name"),
        "must not be empty",
    );
    p.check(
        !d.interval.is_zero(),
        format!("{path}.interval"),
        "must be more than zero",
    );
    p.check(
        (1..=MAX_REGISTERS).contains(&d.max_registers),
        format!("{path}.max_registers"),
        format!("must be between 1 and {MAX_REGISTERS}"),
    );
    p.check(
        (1..=MAX_BITS).contains(&d.max_bits),
        format!("{path}.max_bits"),
        format!("must be between 1 and {MAX_BITS}"),
    );
    p.tag_names(&d.tags, path);
    if let Some(t) = &d.unit_tag {
        p.check(
            !t.is_empty() && t != DEVICE_TAG,
            format!("{path}.unit_tag"),
            "must be a tag name other than `device`",
        );
    }
    p.check(
        !d.fields.is_empty(),
        format!("{path}.fields"),
        "must not be empty",
    );
    let measurement = d.measurement.as_deref().unwrap_or(measurement);
    p.check(
        !measurement.is_empty(),
        format!("{path}.measurement"),
        "must not be empty",
    );
    let mut fields: Vec<FieldSettings> = Vec::with_capacity(d.fields.len());
    for (k, f) in d.fields.iter().enumerate() {
        let fpath = format!("{path}.fields[{k}]");
        if fields.iter().any(|o| o.name == f.name) {
            p.add(
                format!("{fpath}.name"),
                format!("`{}` is used by another field of this device", f.name),
            );
        }
        let limit = if f.register.is_bits() {
            d.max_bits
        } else {
            d.max_registers
        };
        fields.push(field(f, d.interval, limit, &fpath, p));
    }
    let mut tags = source_tags.clone();
    tags.extend(d.tags.clone());
    tags.insert(DEVICE_TAG.to_string(), d.name.clone());
    DeviceSettings {
        name: d.name.clone(),
        unit: d.unit,
        measurement: measurement.into(),
        tags: tags
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect(),
        unit_tag: d.unit_tag.as_deref().map(Into::into),
        merge_gap: d.merge_gap,
        max_registers: d.max_registers,
        max_bits: d.max_bits,
        fields,
    }
}

fn field(
    f: &FieldConfig,
    device_interval: Duration,
    limit: u16,
    path: &str,
    p: &mut Problems,
) -> FieldSettings {
    p.check(
        !f.name.is_empty(),
        format!("{path}.name"),
        "must not be empty",
    );
    let bits = f.register.is_bits();
    let data_type = f
        .data_type
        .unwrap_or(if bits { DataType::Bool } else { DataType::U16 });
    if bits && data_type != DataType::Bool {
        p.add(
            format!("{path}.type"),
            format!(
                "a {} holds one bit: the type must be bool",
                f.register.name()
            ),
        );
    }
    if !bits && data_type == DataType::Bool && f.bit.is_none() {
        p.add(
            format!("{path}.bit"),
            "a bool in a register needs `bit` (0 to 15)",
        );
    }
    if let Some(bit) = f.bit {
        if data_type != DataType::Bool || bits {
            p.add(
                format!("{path}.bit"),
                "only for a bool in an input or holding register",
            );
        }
        p.check(bit <= 15, format!("{path}.bit"), "must be 0 to 15");
    }
    let size = match (data_type, f.length) {
        (DataType::String, Some(n)) => {
            p.check(
                n >= 1 && n <= limit,
                format!("{path}.length"),
                format!("must be between 1 and {limit} registers"),
            );
            n.max(1)
        }
        (DataType::String, None) => {
            p.add(
                format!("{path}.length"),
                "a string needs its length in registers",
            );
            1
        }
        (_, Some(_)) => {
            p.add(format!("{path}.length"), "only for type = \"string\"");
            data_type.registers()
        }
        (t, None) => t.registers(),
    };
    p.check(
        u32::from(f.address) + u32::from(size) <= 65_536,
        format!("{path}.address"),
        "the field ends beyond address 65535",
    );
    let scaling = (f.scale != 1.0 || f.offset != 0.0).then_some((f.scale, f.offset));
    if scaling.is_some() {
        if !data_type.is_numeric() {
            p.add(
                format!("{path}.scale"),
                format!(
                    "scale and offset apply to numbers, not to {}",
                    data_type.name()
                ),
            );
        }
        p.check(
            f.scale.is_finite() && f.offset.is_finite() && f.scale != 0.0,
            format!("{path}.scale"),
            "scale must be a finite number other than 0, and offset finite",
        );
    }
    if f.order != Order::ABCD && !data_type.is_numeric() && data_type != DataType::String {
        p.add(format!("{path}.order"), "not for a bool");
    }
    let interval = f.interval.unwrap_or(device_interval);
    p.check(
        !interval.is_zero(),
        format!("{path}.interval"),
        "must be more than zero",
    );
    let report = super::report_settings(&f.report(), path, p);
    if report.is_some() && data_type == DataType::String {
        let deadband = f.deadband.is_some() || f.deadband_percent.is_some();
        p.check(
            !deadband,
            format!("{path}.deadband"),
            "a string has no deadband (use on_change)",
        );
    }
    FieldSettings {
        name: f.name.as_str().into(),
        register: f.register,
        address: f.address,
        data_type,
        order: f.order,
        bit: f.bit,
        size,
        scaling,
        unit: f.unit.as_deref().map(Into::into),
        interval,
        report,
    }
}

#[cfg(test)]
mod tests;
