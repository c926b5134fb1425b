//! Modbus devices: RTU slaves on a pseudo-terminal (several unit ids on one bus, [`RtuBus`])
//! and Modbus TCP servers (a device or a gateway with several units, [`TcpGateway`]).
//!
//! A [`ModbusDevice`] holds the four tables of a device (coils, discrete inputs, input and
//! holding registers). Its contents are set by the caller ([`ModbusDevice::set_registers`],
//! values encoded by [`encode`] in any type and order) or come from the value models of the
//! rest of the simulator ([`ModbusDevice::standard`]: a temperature and humidity transmitter
//! deterministic from the seed, whose map [`STANDARD_MAP`] a collector's config names, and
//! whose [`ModbusDevice::expected`] values a test checks against). Faults on demand: no
//! answer, an exception code, a bad CRC, garbage, a slow answer ([`FaultPlan`]); a bus can be
//! unplugged, a gateway stopped and started again. Every request a device answered is kept
//! ([`ModbusDevice::requests`]), so a test can check the collector's plan too.

pub mod cli;
mod frame;
mod rtu;
mod tcp;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::{DeviceModel, SplitMix64};

pub use frame::crc16;
pub use rtu::{RtuBus, RtuBusHandle};
pub use tcp::TcpGateway;

/// The most requests a device remembers (the oldest are forgotten).
const MAX_LOGGED: usize = 100_000;

/// A field's type, as the collector's config names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueType {
    /// One register.
    U16,
    /// One register, signed.
    I16,
    /// Two registers.
    U32,
    /// Two registers, signed.
    I32,
    /// Four registers.
    U64,
    /// Four registers, signed.
    I64,
    /// Two registers.
    F32,
    /// Four registers.
    F64,
}

/// A register value to encode.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// For `u16`, `u32`, `u64`.
    Unsigned(u64),
    /// For `i16`, `i32`, `i64`.
    Signed(i64),
    /// For `f32` (rounded to single precision) and `f64`.
    Float(f64),
}

/// The four byte/word orders: where the bytes of the big-endian value go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum ByteOrder {
    /// Big-endian.
    #[value(name = "ABCD")]
    ABCD,
    /// Words swapped.
    #[value(name = "CDAB")]
    CDAB,
    /// Bytes swapped in each word.
    #[value(name = "BADC")]
    BADC,
    /// Little-endian.
    #[value(name = "DCBA")]
    DCBA,
}

impl ByteOrder {
    /// Every order.
    pub const ALL: [ByteOrder; 4] = [
        ByteOrder::ABCD,
        ByteOrder::CDAB,
        ByteOrder::BADC,
        ByteOrder::DCBA,
    ];

    /// Its name in a collector's config.
    pub fn name(self) -> &'static str {
        match self {
            ByteOrder::ABCD => "ABCD",
            ByteOrder::CDAB => "CDAB",
            ByteOrder::BADC => "BADC",
            ByteOrder::DCBA => "DCBA",
        }
    }
}

/// The registers holding `value` as `ty` in `order`.
pub fn encode(value: Value, ty: ValueType, order: ByteOrder) -> Vec<u16> {
    let be: Vec<u8> = match (ty, value) {
        (ValueType::U16, Value::Unsigned(v)) => (v as u16).to_be_bytes().to_vec(),
        (ValueType::I16, Value::Signed(v)) => (v as i16).to_be_bytes().to_vec(),
        (ValueType::U32, Value::Unsigned(v)) => (v as u32).to_be_bytes().to_vec(),
        (ValueType::I32, Value::Signed(v)) => (v as i32).to_be_bytes().to_vec(),
        (ValueType::U64, Value::Unsigned(v)) => v.to_be_bytes().to_vec(),
        (ValueType::I64, Value::Signed(v)) => v.to_be_bytes().to_vec(),
        (ValueType::F32, Value::Float(v)) => (v as f32).to_be_bytes().to_vec(),
        (ValueType::F64, Value::Float(v)) => v.to_be_bytes().to_vec(),
        (ty, v) => panic!("{v:?} is not a {ty:?}"),
    };
    // Registers as the big-endian byte pairs, then arranged: a byte swap within each,
    // the order of the registers reversed.
    let mut words: Vec<[u8; 2]> = be.chunks(2).map(|c| [c[0], c[1]]).collect();
    if matches!(order, ByteOrder::BADC | ByteOrder::DCBA) {
        words.iter_mut().for_each(|w| w.swap(0, 1));
    }
    if matches!(order, ByteOrder::CDAB | ByteOrder::DCBA) {
        words.reverse();
    }
    words.into_iter().map(u16::from_be_bytes).collect()
}

/// The registers holding `text` (two characters each, high byte first), padded with NULs to
/// `registers`.
pub fn encode_string(text: &str, registers: usize) -> Vec<u16> {
    let mut bytes = text.as_bytes().to_vec();
    bytes.resize(registers * 2, 0);
    bytes
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect()
}

/// A fault a device commits on demand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ModbusFault {
    /// No answer at all.
    NoAnswer,
    /// An exception response with this code (2: illegal data address, 4: device failure...).
    Exception {
        /// The exception code.
        code: u8,
    },
    /// RTU: the right answer with a wrong CRC. TCP: as [`ModbusFault::Garbage`].
    BadCrc,
    /// Random bytes instead of an answer.
    Garbage,
    /// The right answer, this late.
    Slow {
        /// The delay before answering, in milliseconds.
        ms: u64,
    },
}

impl ModbusFault {
    /// The reason a collector counts it under (`modbus_errors_total`).
    pub fn reason(self) -> &'static str {
        match self {
            ModbusFault::NoAnswer | ModbusFault::Slow { .. } => "timeout",
            ModbusFault::Exception { .. } => "exception",
            ModbusFault::BadCrc => "crc",
            ModbusFault::Garbage => "framing",
        }
    }
}

/// Which requests get a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultPlan {
    /// The fault.
    pub fault: ModbusFault,
    /// Every Nth request (counted from when the plan was set) gets it: 1 for all.
    pub every: u64,
}

/// What a device does with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    /// This PDU, after this delay.
    Pdu(Vec<u8>, Duration),
    /// This PDU with a bad CRC (RTU).
    BadCrc(Vec<u8>),
    /// These bytes, whatever they are.
    Garbage(Vec<u8>),
    /// Nothing.
    Silence,
}

/// One simulated device (a unit): cheap to clone, every clone the same device.
#[derive(Debug, Clone)]
pub struct ModbusDevice {
    inner: Arc<Mutex<DeviceState>>,
}

#[derive(Debug)]
struct DeviceState {
    unit: u8,
    coils: BTreeMap<u16, bool>,
    discrete: BTreeMap<u16, bool>,
    input: BTreeMap<u16, u16>,
    holding: BTreeMap<u16, u16>,
    /// Reading an address that holds nothing answers exception 2 (else 0).
    strict: bool,
    fault: Option<FaultPlan>,
    /// Requests since the fault plan was set.
    since_plan: u64,
    /// Every request answered, or faulted: (function code, start, count).
    log: Vec<(u8, u16, u16)>,
    rng: SplitMix64,
    model: Option<StandardConfig>,
    /// A wide device: this many holding registers of noise (for benchmarks), not the
    /// standard map.
    wide: Option<u16>,
    /// The sample the standard map shows.
    sample: u64,
}

/// Which register table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Table {
    /// Coils (fc 1).
    Coil,
    /// Discrete inputs (fc 2).
    DiscreteInput,
    /// Input registers (fc 4).
    Input,
    /// Holding registers (fc 3).
    Holding,
}

impl Table {
    /// The name in a collector's config.
    pub fn name(self) -> &'static str {
        match self {
            Table::Coil => "coil",
            Table::DiscreteInput => "discrete_input",
            Table::Input => "input",
            Table::Holding => "holding",
        }
    }
}

/// A field of the [`STANDARD_MAP`]: what a collector's config must say to read it.
#[derive(Debug, Clone, Copy)]
pub struct StandardField {
    /// The field name.
    pub name: &'static str,
    /// Its table.
    pub table: Table,
    /// Its address.
    pub address: u16,
    /// `bool`, `i16`, `f32`, `u32`, `string`...
    pub ty: &'static str,
    /// Its order.
    pub order: &'static str,
    /// Its scale (1: none).
    pub scale: f64,
    /// Its unit.
    pub unit: &'static str,
    /// For a string: its length in registers.
    pub length: u16,
}

/// The map of a standard device: a temperature and humidity transmitter with a pressure
/// sensor and a pulse counter (the simulator's value models), over the types and orders
/// real devices use.
pub const STANDARD_MAP: [StandardField; 7] = [
    StandardField {
        name: "temperature",
        table: Table::Input,
        address: 0,
        ty: "i16",
        order: "ABCD",
        scale: 0.01,
        unit: "°C",
        length: 0,
    },
    StandardField {
        name: "humidity",
        table: Table::Input,
        address: 1,
        ty: "f32",
        order: "ABCD",
        scale: 1.0,
        unit: "%",
        length: 0,
    },
    StandardField {
        name: "pressure",
        table: Table::Input,
        address: 3,
        ty: "f32",
        order: "CDAB",
        scale: 1.0,
        unit: "hPa",
        length: 0,
    },
    StandardField {
        name: "count",
        table: Table::Holding,
        address: 0,
        ty: "u32",
        order: "DCBA",
        scale: 1.0,
        unit: "",
        length: 0,
    },
    StandardField {
        name: "model",
        table: Table::Holding,
        address: 10,
        ty: "string",
        order: "ABCD",
        scale: 1.0,
        unit: "",
        length: 4,
    },
    StandardField {
        name: "alarm",
        table: Table::Coil,
        address: 0,
        ty: "bool",
        order: "ABCD",
        scale: 1.0,
        unit: "",
        length: 0,
    },
    StandardField {
        name: "door_open",
        table: Table::DiscreteInput,
        address: 4,
        ty: "bool",
        order: "ABCD",
        scale: 1.0,
        unit: "",
        length: 0,
    },
];

/// The model name a standard device shows in its `model` registers.
pub const STANDARD_MODEL: &str = "SIM-TH01";

/// What a standard device is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StandardConfig {
    /// Its unit id.
    pub unit: u8,
    /// Seed of the values.
    pub seed: u64,
    /// Its index: its value model is that of device `index` of a fleet with `seed`.
    pub index: usize,
}

/// A value a collector must store for a field of a standard device.
#[derive(Debug, Clone, PartialEq)]
pub enum Expected {
    /// A float.
    Float(f64),
    /// An integer.
    Integer(i64),
    /// A boolean.
    Bool(bool),
    /// A string.
    String(String),
}

impl std::fmt::Display for Expected {
    /// As the collector's store shows it (`float:21.5`, `int:3`, `bool:true`, `str:x`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expected::Float(v) => write!(f, "float:{v}"),
            Expected::Integer(v) => write!(f, "int:{v}"),
            Expected::Bool(v) => write!(f, "bool:{v}"),
            Expected::String(v) => write!(f, "str:{v}"),
        }
    }
}

/// The `[[sources.modbus.devices.fields]]` of the [`STANDARD_MAP`], for a collector's config.
pub fn standard_fields_toml() -> String {
    let mut out = String::new();
    for f in STANDARD_MAP {
        out.push_str(&format!(
            "[[sources.modbus.devices.fields]]\nname = \"{}\"\nregister = \"{}\"\naddress = {}\ntype = \"{}\"\n",
            f.name,
            f.table.name(),
            f.address,
            f.ty
        ));
        if f.order != "ABCD" {
            out.push_str(&format!("order = \"{}\"\n", f.order));
        }
        if f.scale != 1.0 {
            out.push_str(&format!("scale = {}\n", f.scale));
        }
        if f.length > 0 {
            out.push_str(&format!("length = {}\n", f.length));
        }
        if !f.unit.is_empty() {
            out.push_str(&format!("unit = \"{}\"\n", f.unit));
        }
    }
    out
}

fn lock(m: &Mutex<DeviceState>) -> std::sync::MutexGuard<'_, DeviceState> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ModbusDevice {
    /// A device at `unit` with empty tables (reading them answers exception 2).
    pub fn new(unit: u8) -> ModbusDevice {
        ModbusDevice {
            inner: Arc::new(Mutex::new(DeviceState {
                unit,
                coils: BTreeMap::new(),
                discrete: BTreeMap::new(),
                input: BTreeMap::new(),
                holding: BTreeMap::new(),
                strict: true,
                fault: None,
                since_plan: 0,
                log: Vec::new(),
                rng: SplitMix64::derive(u64::from(unit), &[0x6d6f_6462_7573]),
                model: None,
                wide: None,
                sample: 0,
            })),
        }
    }

    /// A standard device (see [`STANDARD_MAP`]) showing sample 0.
    pub fn standard(config: StandardConfig) -> ModbusDevice {
        let d = ModbusDevice::new(config.unit);
        {
            let mut s = lock(&d.inner);
            s.model = Some(config);
            s.rng = SplitMix64::derive(config.seed, &[0x6d6f_6462_7573, config.index as u64]);
        }
        d.set_sample(0);
        d
    }

    /// A wide device (for benchmarks): `registers` holding registers from address 0, each
    /// a `u16` that changes with every sample, deterministic from the seed.
    pub fn wide(config: StandardConfig, registers: u16) -> ModbusDevice {
        let d = ModbusDevice::new(config.unit);
        {
            let mut s = lock(&d.inner);
            s.model = Some(config);
            s.wide = Some(registers);
        }
        d.set_sample(0);
        d
    }

    /// Its unit id.
    pub fn unit(&self) -> u8 {
        lock(&self.inner).unit
    }

    /// Whether reading an address that holds nothing answers exception 2 (the default) or 0.
    pub fn set_strict(&self, strict: bool) {
        lock(&self.inner).strict = strict;
    }

    /// Sets registers of `table` (input or holding) from `address` on.
    pub fn set_registers(&self, table: Table, address: u16, words: &[u16]) {
        let mut s = lock(&self.inner);
        let map = match table {
            Table::Input => &mut s.input,
            Table::Holding => &mut s.holding,
            Table::Coil | Table::DiscreteInput => panic!("{table:?} holds bits"),
        };
        for (i, w) in words.iter().enumerate() {
            map.insert(address.wrapping_add(i as u16), *w);
        }
    }

    /// Sets bits of `table` (coils or discrete inputs) from `address` on.
    pub fn set_bits(&self, table: Table, address: u16, bits: &[bool]) {
        let mut s = lock(&self.inner);
        let map = match table {
            Table::Coil => &mut s.coils,
            Table::DiscreteInput => &mut s.discrete,
            Table::Input | Table::Holding => panic!("{table:?} holds registers"),
        };
        for (i, b) in bits.iter().enumerate() {
            map.insert(address.wrapping_add(i as u16), *b);
        }
    }

    /// Faults from now on (`None`: none).
    pub fn set_fault(&self, plan: Option<FaultPlan>) {
        let mut s = lock(&self.inner);
        s.fault = plan;
        s.since_plan = 0;
    }

    /// The requests it received so far (function code, start, count), answered or not.
    pub fn requests(&self) -> Vec<(u8, u16, u16)> {
        lock(&self.inner).log.clone()
    }

    /// A standard device: shows sample `sample` of its value model.
    pub fn set_sample(&self, sample: u64) {
        let (model, wide) = {
            let s = lock(&self.inner);
            (s.model, s.wide)
        };
        let Some(config) = model else {
            return;
        };
        if let Some(n) = wide {
            let mut rng =
                SplitMix64::derive(config.seed, &[0x7769_6465, config.index as u64, sample]);
            let words: Vec<u16> = (0..n).map(|_| rng.below(65_536) as u16).collect();
            self.set_registers(Table::Holding, 0, &words);
            lock(&self.inner).sample = sample;
            return;
        }
        for (f, v) in standard_registers(config, sample) {
            match v {
                Registers::Words(w) => self.set_registers(f.table, f.address, &w),
                Registers::Bit(b) => self.set_bits(f.table, f.address, &[b]),
            }
        }
        lock(&self.inner).sample = sample;
    }

    /// A standard device: the sample it shows.
    pub fn sample(&self) -> u64 {
        lock(&self.inner).sample
    }

    /// A standard device: what a collector reading it with [`standard_fields_toml`] must
    /// store for sample `sample`, by field.
    pub fn expected(&self, sample: u64) -> BTreeMap<String, Expected> {
        let Some(config) = lock(&self.inner).model else {
            return BTreeMap::new();
        };
        standard_expected(config, sample)
    }

    /// What the device does with request `pdu` (without its address and checksum).
    pub(crate) fn answer(&self, pdu: &[u8]) -> Answer {
        let mut s = lock(&self.inner);
        if let [fc @ 1..=4, a, b, c, d] = *pdu {
            s.log
                .push((fc, u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d])));
            if s.log.len() > MAX_LOGGED {
                s.log.drain(..MAX_LOGGED / 2);
            }
        }
        s.since_plan += 1;
        let fault = s
            .fault
            .filter(|p| p.every > 0 && s.since_plan.is_multiple_of(p.every))
            .map(|p| p.fault);
        let fc = pdu.first().copied().unwrap_or(0);
        match fault {
            None => Answer::Pdu(frame::respond(&s.view(), pdu), Duration::ZERO),
            Some(ModbusFault::NoAnswer) => Answer::Silence,
            Some(ModbusFault::Exception { code }) => {
                Answer::Pdu(vec![fc | 0x80, code], Duration::ZERO)
            }
            Some(ModbusFault::Slow { ms }) => {
                Answer::Pdu(frame::respond(&s.view(), pdu), Duration::from_millis(ms))
            }
            Some(ModbusFault::BadCrc) => Answer::BadCrc(frame::respond(&s.view(), pdu)),
            Some(ModbusFault::Garbage) => {
                let n = 3 + s.rng.below(20) as usize;
                let bytes = (0..n).map(|_| s.rng.below(256) as u8).collect();
                Answer::Garbage(bytes)
            }
        }
    }
}

impl DeviceState {
    fn view(&self) -> frame::Tables<'_> {
        frame::Tables {
            coils: &self.coils,
            discrete: &self.discrete,
            input: &self.input,
            holding: &self.holding,
            strict: self.strict,
        }
    }
}

enum Registers {
    Words(Vec<u16>),
    Bit(bool),
}

/// The model's values of `sample` as the standard map holds them.
fn standard_values(config: StandardConfig, sample: u64) -> (i16, f32, f32, u32, bool, bool) {
    let model = DeviceModel::new(config.seed, config.index);
    let s = model.sample(sample, 0);
    let temperature = (s.temperature * 100.0).round() as i16;
    (
        temperature,
        s.humidity as f32,
        s.pressure as f32,
        s.count as u32,
        s.temperature > 24.0,
        sample.is_multiple_of(5),
    )
}

fn standard_registers(config: StandardConfig, sample: u64) -> Vec<(StandardField, Registers)> {
    let (t, h, p, c, alarm, door) = standard_values(config, sample);
    let [temperature, humidity, pressure, count, model, a, d] = STANDARD_MAP;
    vec![
        (
            temperature,
            Registers::Words(encode(
                Value::Signed(t.into()),
                ValueType::I16,
                ByteOrder::ABCD,
            )),
        ),
        (
            humidity,
            Registers::Words(encode(
                Value::Float(h.into()),
                ValueType::F32,
                ByteOrder::ABCD,
            )),
        ),
        (
            pressure,
            Registers::Words(encode(
                Value::Float(p.into()),
                ValueType::F32,
                ByteOrder::CDAB,
            )),
        ),
        (
            count,
            Registers::Words(encode(
                Value::Unsigned(c.into()),
                ValueType::U32,
                ByteOrder::DCBA,
            )),
        ),
        (model, Registers::Words(encode_string(STANDARD_MODEL, 4))),
        (a, Registers::Bit(alarm)),
        (d, Registers::Bit(door)),
    ]
}

fn standard_expected(config: StandardConfig, sample: u64) -> BTreeMap<String, Expected> {
    let (t, h, p, c, alarm, door) = standard_values(config, sample);
    BTreeMap::from([
        // The collector's scaling: raw × scale + offset, in f64.
        (
            "temperature".into(),
            Expected::Float(f64::from(t) * 0.01 + 0.0),
        ),
        ("humidity".into(), Expected::Float(f64::from(h))),
        ("pressure".into(), Expected::Float(f64::from(p))),
        ("count".into(), Expected::Integer(i64::from(c))),
        ("model".into(), Expected::String(STANDARD_MODEL.into())),
        ("alarm".into(), Expected::Bool(alarm)),
        ("door_open".into(), Expected::Bool(door)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_in_the_four_orders() {
        let v = Value::Float(f64::from(12.56f32));
        assert_eq!(
            encode(v, ValueType::F32, ByteOrder::ABCD),
            vec![0x4148, 0xF5C3]
        );
        assert_eq!(
            encode(v, ValueType::F32, ByteOrder::CDAB),
            vec![0xF5C3, 0x4148]
        );
        assert_eq!(
            encode(v, ValueType::F32, ByteOrder::BADC),
            vec![0x4841, 0xC3F5]
        );
        assert_eq!(
            encode(v, ValueType::F32, ByteOrder::DCBA),
            vec![0xC3F5, 0x4841]
        );
        let v = Value::Unsigned(0x0102_0304_0506_0708);
        assert_eq!(
            encode(v, ValueType::U64, ByteOrder::CDAB),
            vec![0x0708, 0x0506, 0x0304, 0x0102]
        );
        assert_eq!(
            encode(Value::Signed(-2), ValueType::I16, ByteOrder::BADC),
            vec![0xFEFF]
        );
        assert_eq!(encode_string("SIM", 3), vec![0x5349, 0x4D00, 0]);
    }

    #[test]
    fn a_standard_device_answers_its_map_and_faults_on_demand() {
        let d = ModbusDevice::standard(StandardConfig {
            unit: 7,
            seed: 42,
            index: 3,
        });
        let Answer::Pdu(pdu, _) = d.answer(&[4, 0, 0, 0, 5]) else {
            panic!()
        };
        assert_eq!(&pdu[..2], &[4, 10]);
        // Address 5 of the input registers holds nothing: exception 2.
        assert_eq!(
            d.answer(&[4, 0, 0, 0, 6]),
            Answer::Pdu(vec![0x84, 2], Duration::ZERO)
        );
        assert_eq!(
            d.answer(&[0x10, 0, 0]),
            Answer::Pdu(vec![0x90, 1], Duration::ZERO)
        );
        d.set_fault(Some(FaultPlan {
            fault: ModbusFault::NoAnswer,
            every: 2,
        }));
        assert!(matches!(d.answer(&[3, 0, 0, 0, 2]), Answer::Pdu(..)));
        assert_eq!(d.answer(&[3, 0, 0, 0, 2]), Answer::Silence);
        assert_eq!(d.requests().len(), 4, "reads only");
        let e = d.expected(0);
        assert_eq!(e["model"], Expected::String("SIM-TH01".into()));
        assert_eq!(e.len(), STANDARD_MAP.len());
        assert!(standard_fields_toml().contains("name = \"pressure\"\nregister = \"input\"\naddress = 3\ntype = \"f32\"\norder = \"CDAB\"\n"));
    }
}
