//! `telemetry-simulator modbus`: standard devices on an RTU bus (a pty) and/or behind a
//! Modbus TCP server, their values moving to the next sample every `--interval`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::{
    standard_fields_toml, FaultPlan, ModbusDevice, ModbusFault, RtuBus, StandardConfig, TcpGateway,
};

/// `telemetry-simulator modbus`.
#[derive(Debug, Args)]
pub struct ModbusArgs {
    /// Plug an RTU bus in behind this link (a pty), with --units devices on it.
    #[arg(long)]
    pub rtu: Option<PathBuf>,
    /// The RTU bus's baud rate (8N1: 10 bits per character, both ways).
    #[arg(long, default_value_t = 9600)]
    pub baud: u32,
    /// Serve --units devices over Modbus TCP on this address (a gateway).
    #[arg(long)]
    pub tcp: Option<SocketAddr>,
    /// Devices: units 1 to N (on each bus and server), each a standard device (see
    /// --print-config).
    #[arg(long, default_value_t = 2)]
    pub units: u8,
    /// Index of unit 1's value model (unit N has model FIRST + N - 1).
    #[arg(long, default_value_t = 0)]
    pub first: usize,
    /// Seed of all values.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// The devices show their next sample this often.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// A fault: no-answer, exception, bad-crc, garbage or slow.
    #[arg(long, value_enum)]
    pub fault: Option<FaultArg>,
    /// The unit that commits it [default: every unit].
    #[arg(long)]
    pub fault_unit: Option<u8>,
    /// It comes with every Nth request.
    #[arg(long, default_value_t = 1)]
    pub fault_every: u64,
    /// `exception`: the code.
    #[arg(long, default_value_t = 4)]
    pub exception_code: u8,
    /// `slow`: the delay of each answer.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub slow: Duration,
    /// Wide devices (for benchmarks): this many `u16` holding registers from address 0,
    /// instead of the standard map.
    #[arg(long)]
    pub wide: Option<u16>,
    /// With --print-config: each device in a `[[sources.modbus]]` of its own (over TCP: a
    /// connection per device, as separate devices on a network would have).
    #[arg(long)]
    pub source_per_device: bool,
    /// With --print-config: the devices' poll interval [default: --interval].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub poll: Option<Duration>,
    /// Print the `[[sources.modbus]]` sections a collector needs for these devices, and exit.
    #[arg(long)]
    pub print_config: bool,
}

/// Kinds of faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FaultArg {
    /// No answer.
    NoAnswer,
    /// An exception response.
    Exception,
    /// RTU: a wrong CRC.
    BadCrc,
    /// Random bytes.
    Garbage,
    /// A late answer.
    Slow,
}

/// The collector's `[[sources.modbus]]` sections for `args`' devices.
pub fn collector_config(args: &ModbusArgs) -> String {
    let mut out = String::new();
    let fields = match args.wide {
        Some(n) => (0..n)
            .map(|i| {
                format!("[[sources.modbus.devices.fields]]\nname = \"r{i:03}\"\nregister = \"holding\"\naddress = {i}\ntype = \"u16\"\n")
            })
            .collect(),
        None => standard_fields_toml(),
    };
    let interval = humantime::format_duration(args.poll.unwrap_or(args.interval));
    let device = |prefix: &str, unit: u8| {
        format!(
            "[[sources.modbus.devices]]\nname = \"{prefix}-{unit:02}\"\nunit = {unit}\ninterval = \"{interval}\"\nmeasurement = \"env\"\n{fields}"
        )
    };
    let rtu_source = |link: &std::path::Path| {
        format!(
            "[[sources.modbus]]\nname = \"rtu\"\ntransport = \"rtu\"\npath = \"{}\"\nbaud_rate = {}\nparity = \"none\"\n",
            link.display(),
            args.baud
        )
    };
    let tcp_source = |addr: SocketAddr, name: &str| {
        format!(
            "[[sources.modbus]]\nname = \"{name}\"\ntransport = \"tcp\"\nhost = \"{}\"\nport = {}\n",
            addr.ip(),
            addr.port()
        )
    };
    if let Some(link) = &args.rtu {
        // A serial line is one bus, whatever --source-per-device says.
        out.push_str(&rtu_source(link));
        for unit in 1..=args.units {
            out.push_str(&device("rtu", unit));
        }
    }
    if let Some(addr) = args.tcp {
        for unit in 1..=args.units {
            if unit == 1 || args.source_per_device {
                let name = if args.source_per_device {
                    format!("tcp-{unit:02}")
                } else {
                    "tcp".into()
                };
                out.push_str(&tcp_source(addr, &name));
            }
            out.push_str(&device("tcp", unit));
        }
    }
    out
}

/// Runs the devices until `stop`.
///
/// # Errors
/// Bad arguments, a pty or an address that cannot be had.
pub async fn run(args: ModbusArgs, stop: CancellationToken) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.rtu.is_some() || args.tcp.is_some(),
        "give --rtu LINK and/or --tcp ADDRESS"
    );
    anyhow::ensure!((1..=247).contains(&args.units), "--units must be 1 to 247");
    anyhow::ensure!(
        !args.interval.is_zero(),
        "--interval must be more than zero"
    );
    if args.print_config {
        print!("{}", collector_config(&args));
        return Ok(());
    }
    let fault = args.fault.map(|f| FaultPlan {
        fault: match f {
            FaultArg::NoAnswer => ModbusFault::NoAnswer,
            FaultArg::Exception => ModbusFault::Exception {
                code: args.exception_code,
            },
            FaultArg::BadCrc => ModbusFault::BadCrc,
            FaultArg::Garbage => ModbusFault::Garbage,
            FaultArg::Slow => ModbusFault::Slow {
                ms: u64::try_from(args.slow.as_millis()).unwrap_or(u64::MAX),
            },
        },
        every: args.fault_every.max(1),
    });
    let make = || -> Vec<ModbusDevice> {
        (1..=args.units)
            .map(|unit| {
                let config = StandardConfig {
                    unit,
                    seed: args.seed,
                    index: args.first + usize::from(unit) - 1,
                };
                let d = match args.wide {
                    Some(n) => ModbusDevice::wide(config, n),
                    None => ModbusDevice::standard(config),
                };
                if args.fault_unit.is_none_or(|u| u == unit) {
                    d.set_fault(fault);
                }
                d
            })
            .collect()
    };
    let mut all = Vec::new();
    let mut bus = None;
    if let Some(link) = &args.rtu {
        if let Some(dir) = link.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let devices = make();
        all.extend(devices.iter().cloned());
        bus = Some(
            RtuBus::spawn(link, args.baud, devices)
                .with_context(|| format!("cannot make a pty behind {}", link.display()))?,
        );
        println!("rtu {}", link.display());
    }
    let mut gateway = None;
    if let Some(addr) = args.tcp {
        let devices = make();
        all.extend(devices.iter().cloned());
        let g = TcpGateway::start(addr, devices)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        println!("tcp {}", g.addr());
        gateway = Some(g);
    }
    use std::io::Write as _;
    std::io::stdout().flush()?;
    info!(units = args.units, "Modbus devices up");
    let mut tick = tokio::time::interval(args.interval);
    tick.tick().await;
    let mut sample = 0u64;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {
                sample += 1;
                for d in &all {
                    d.set_sample(sample);
                }
            }
        }
    }
    if let Some(b) = bus {
        b.stop().await?;
    }
    if let Some(mut g) = gateway {
        g.stop().await;
    }
    Ok(())
}
