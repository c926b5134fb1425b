//! The request plan: which reads a device's register map takes, per poll interval.
//!
//! Fields with the same interval are polled together. Within a poll, fields of one register
//! kind are sorted by address and merged into as few requests as the device allows: adjacent
//! (or overlapping) fields always, fields up to `merge_gap` apart when the device allows
//! reading the registers between them; never more than `max_registers` (125 by the
//! protocol) or `max_bits` (2,000) per request.

use std::fmt::{self, Write as _};
use std::time::Duration;

use crate::config::{DeviceSettings, Link, ModbusSettings, RegisterKind};

/// Every poll of a source, device after device.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The polls, by device (in the order written), then by interval.
    pub polls: Vec<Poll>,
}

/// The fields of one device read at one interval, and the requests that read them.
#[derive(Debug, Clone, PartialEq)]
pub struct Poll {
    /// The device's index in the source's settings.
    pub device: usize,
    /// How often.
    pub interval: Duration,
    /// The requests, in the order they are sent.
    pub requests: Vec<Request>,
}

/// One read request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The table read.
    pub kind: RegisterKind,
    /// The first register (or bit).
    pub start: u16,
    /// How many.
    pub count: u16,
    /// The fields it reads, by index in the device's map, in address order.
    pub fields: Vec<usize>,
}

impl Request {
    /// Bytes on the wire for the request and for its answer, in Modbus RTU (address, PDU,
    /// CRC). Over TCP each is 4 bytes longer (the 7-byte MBAP header instead of the address
    /// and the CRC).
    pub fn rtu_bytes(&self) -> (usize, usize) {
        let data = if self.kind.is_bits() {
            usize::from(self.count).div_ceil(8)
        } else {
            2 * usize::from(self.count)
        };
        // Request: address, function, start (2), count (2), CRC (2). Answer: address,
        // function, byte count, data, CRC (2).
        (8, 5 + data)
    }
}

impl Plan {
    /// The plan of every device of `source`.
    pub fn of(source: &ModbusSettings) -> Plan {
        let polls = source
            .devices
            .iter()
            .enumerate()
            .flat_map(|(i, d)| {
                plan_device(d)
                    .into_iter()
                    .map(move |p| Poll { device: i, ..p })
            })
            .collect();
        Plan { polls }
    }

    /// Requests per second when every poll runs on time.
    pub fn requests_per_second(&self) -> f64 {
        self.polls
            .iter()
            .map(|p| p.requests.len() as f64 / p.interval.as_secs_f64())
            .sum()
    }
}

/// The polls of one device (their `device` is 0).
pub fn plan_device(device: &DeviceSettings) -> Vec<Poll> {
    let mut intervals: Vec<Duration> = device.fields.iter().map(|f| f.interval).collect();
    intervals.sort_unstable();
    intervals.dedup();
    intervals
        .into_iter()
        .map(|interval| {
            let mut requests = Vec::new();
            for kind in [
                RegisterKind::Coil,
                RegisterKind::DiscreteInput,
                RegisterKind::Input,
                RegisterKind::Holding,
            ] {
                let mut fields: Vec<usize> = (0..device.fields.len())
                    .filter(|&i| {
                        let f = &device.fields[i];
                        f.interval == interval && f.register == kind
                    })
                    .collect();
                fields.sort_by_key(|&i| (device.fields[i].address, device.fields[i].size));
                let limit = u32::from(if kind.is_bits() {
                    device.max_bits
                } else {
                    device.max_registers
                });
                let gap = u32::from(device.merge_gap);
                let mut current: Option<(u32, u32, Vec<usize>)> = None;
                for i in fields {
                    let f = &device.fields[i];
                    let (a, b) = (u32::from(f.address), f.end());
                    current = match current.take() {
                        Some((start, end, mut members))
                            if a <= end + gap && end.max(b) - start <= limit =>
                        {
                            members.push(i);
                            Some((start, end.max(b), members))
                        }
                        Some(done) => {
                            requests.push(request(kind, done));
                            Some((a, b, vec![i]))
                        }
                        None => Some((a, b, vec![i])),
                    };
                }
                if let Some(done) = current {
                    requests.push(request(kind, done));
                }
            }
            Poll {
                device: 0,
                interval,
                requests,
            }
        })
        .collect()
}

fn request(kind: RegisterKind, (start, end, fields): (u32, u32, Vec<usize>)) -> Request {
    Request {
        kind,
        // Validation keeps every field within the 65,536 addresses and its size within the
        // per-request limit.
        start: u16::try_from(start).unwrap_or(u16::MAX),
        count: u16::try_from(end - start).unwrap_or(u16::MAX),
        fields,
    }
}

/// The plan of `source`, as `validate` and `doctor` print it.
pub struct Shown<'a>(pub &'a ModbusSettings);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        let plan = Plan::of(s);
        let link = match &s.link {
            Link::Rtu(r) => format!(
                "rtu {} {} baud {}{}{}, frame gap {:?}",
                r.path.display(),
                r.baud_rate,
                r.data_bits,
                match r.parity {
                    crate::config::Parity::None => 'N',
                    crate::config::Parity::Odd => 'O',
                    crate::config::Parity::Even => 'E',
                },
                r.stop_bits,
                r.frame_gap
            ),
            Link::Tcp(t) => format!("tcp {}:{}", t.host, t.port),
        };
        let requests: usize = plan.polls.iter().map(|p| p.requests.len()).sum();
        writeln!(
            f,
            "modbus:{} ({link}; timeout {:?}, {} retr{}): {} device(s), {requests} request(s) per round, {:.1} request(s)/s",
            s.name,
            s.timeout,
            s.retries,
            if s.retries == 1 { "y" } else { "ies" },
            s.devices.len(),
            plan.requests_per_second(),
        )?;
        for poll in &plan.polls {
            let d = &s.devices[poll.device];
            writeln!(
                f,
                "  {} (unit {}) every {}: {} request(s)",
                d.name,
                d.unit,
                humantime::format_duration(poll.interval),
                poll.requests.len()
            )?;
            for r in &poll.requests {
                let what = if r.kind.is_bits() { "bit" } else { "register" };
                let mut fields = String::new();
                for (n, &i) in r.fields.iter().enumerate() {
                    let field = &d.fields[i];
                    if n > 0 {
                        fields.push_str(", ");
                    }
                    let _ = write!(
                        fields,
                        "{}@{} {}",
                        field.name,
                        field.address,
                        field.data_type.name()
                    );
                    if field.size > 1 && field.data_type != crate::config::DataType::String {
                        let _ = write!(fields, " {}", field.order);
                    }
                    if let Some(bit) = field.bit {
                        let _ = write!(fields, " bit {bit}");
                    }
                    if let Some(u) = &field.unit {
                        let _ = write!(fields, " [{u}]");
                    }
                }
                writeln!(
                    f,
                    "    fc {} {} {}..={} ({} {what}{}): {fields}",
                    r.kind.function_code(),
                    r.kind.name(),
                    r.start,
                    u32::from(r.start) + u32::from(r.count) - 1,
                    r.count,
                    if r.count == 1 { "" } else { "s" },
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn source(fields: &str, device_extra: &str) -> ModbusSettings {
        let text = format!(
            r#"
            [[sources.modbus]]
            name = "bus"
            transport = "tcp"
            host = "gw"
            [[sources.modbus.devices]]
            name = "d"
            unit = 1
            interval = "1s"
            {device_extra}
            {fields}
            "#
        );
        Config::from_toml(&text)
            .and_then(Config::validate)
            .unwrap_or_else(|e| panic!("{e}"))
            .modbus
            .remove(0)
    }

    fn field(name: &str, register: &str, address: u32, ty: &str, extra: &str) -> String {
        format!(
            "[[sources.modbus.devices.fields]]\nname = \"{name}\"\nregister = \"{register}\"\naddress = {address}\ntype = \"{ty}\"\n{extra}\n"
        )
    }

    fn spans(p: &Poll) -> Vec<(RegisterKind, u16, u16, Vec<usize>)> {
        p.requests
            .iter()
            .map(|r| (r.kind, r.start, r.count, r.fields.clone()))
            .collect()
    }

    #[test]
    fn adjacent_fields_merge_and_gaps_split() {
        let fields = [
            field("a", "holding", 10, "f32", ""),
            field("b", "holding", 0, "u16", ""),
            field("c", "holding", 1, "u64", ""),
            field("d", "holding", 5, "i16", ""),
            field("e", "holding", 12, "string", "length = 3"),
            field("f", "input", 5, "u32", ""),
            field("g", "coil", 3, "bool", ""),
            field("h", "coil", 4, "bool", ""),
            field("i", "holding", 1, "bool", "bit = 4"),
        ]
        .concat();
        let plan = Plan::of(&source(&fields, ""));
        assert_eq!(plan.polls.len(), 1);
        use RegisterKind::*;
        assert_eq!(
            spans(&plan.polls[0]),
            vec![
                (Coil, 3, 2, vec![6, 7]),
                (Input, 5, 2, vec![5]),
                // b@0, c@1..=4 and i (a bit of 1), d@5: one run; a@10.. and e@12.. another.
                (Holding, 0, 6, vec![1, 8, 2, 3]),
                (Holding, 10, 5, vec![0, 4]),
            ]
        );
        // With a gap of 4 allowed, the two holding runs are one request.
        let plan = Plan::of(&source(&fields, "merge_gap = 4"));
        assert_eq!(
            spans(&plan.polls[0])[2],
            (Holding, 0, 15, vec![1, 8, 2, 3, 0, 4])
        );
        assert_eq!(plan.polls[0].requests.len(), 3);
    }

    #[test]
    fn requests_respect_the_protocol_and_device_limits() {
        // 100 f32 in a row: 200 registers, so two requests (125 + 75: a value never splits).
        let fields: String = (0..100)
            .map(|i| field(&format!("v{i}"), "input", 2 * i, "f32", ""))
            .collect();
        let plan = Plan::of(&source(&fields, ""));
        let r = &plan.polls[0].requests;
        assert_eq!(
            r.iter().map(|r| (r.start, r.count)).collect::<Vec<_>>(),
            vec![(0, 124), (124, 76)]
        );
        assert!(r.iter().all(|r| r.count <= 125));
        let plan = Plan::of(&source(&fields, "max_registers = 10"));
        assert_eq!(plan.polls[0].requests.len(), 20);
        // 2,500 coils: 2,000 then 500.
        let fields: String = (0..2500)
            .map(|i| field(&format!("c{i}"), "coil", i, "bool", ""))
            .collect();
        let plan = Plan::of(&source(&fields, ""));
        assert_eq!(
            plan.polls[0]
                .requests
                .iter()
                .map(|r| (r.start, r.count))
                .collect::<Vec<_>>(),
            vec![(0, 2000), (2000, 500)]
        );
    }

    #[test]
    fn each_interval_is_its_own_poll_and_the_plan_prints() {
        let fields = [
            field("voltage", "input", 0, "f32", "unit = \"V\""),
            field("current", "input", 2, "f32", "unit = \"A\""),
            field(
                "energy",
                "input",
                100,
                "u64",
                "interval = \"1m\"\norder = \"CDAB\"\nscale = 0.001\nunit = \"kWh\"",
            ),
        ]
        .concat();
        let s = source(&fields, "");
        let plan = Plan::of(&s);
        assert_eq!(
            plan.polls
                .iter()
                .map(|p| (p.interval.as_secs(), p.requests.len()))
                .collect::<Vec<_>>(),
            vec![(1, 1), (60, 1)]
        );
        assert_eq!(plan.polls[0].requests[0].rtu_bytes(), (8, 13));
        assert_eq!(
            Shown(&s).to_string(),
            "modbus:bus (tcp gw:502; timeout 500ms, 1 retry): 1 device(s), 2 request(s) per round, 1.0 request(s)/s\n\
             \x20 d (unit 1) every 1s: 1 request(s)\n\
             \x20   fc 4 input 0..=3 (4 registers): voltage@0 f32 ABCD [V], current@2 f32 ABCD [A]\n\
             \x20 d (unit 1) every 1m: 1 request(s)\n\
             \x20   fc 4 input 100..=103 (4 registers): energy@100 u64 CDAB [kWh]\n"
        );
    }
}
