//! Modbus RTU (real pseudo-terminals) and Modbus TCP (real sockets) to the local store: the
//! simulator's devices, a device played by pymodbus, the simulator read by mbpoll, and the
//! faults a bus has (no answer, exceptions, bad CRCs, noise, unplug, a gateway restart).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use simulator::modbus::{
    encode, encode_string, standard_fields_toml, ByteOrder, FaultPlan, ModbusDevice, ModbusFault,
    RtuBus, StandardConfig, Table, TcpGateway, Value, ValueType,
};

use crate::harness::*;

/// The collector's configuration: a local store flushed quickly, no HTTP port, `sources`.
fn config(dir: &Path, sources: &str) -> String {
    format!(
        "data_dir = \"{}\"\n[http]\nenabled = false\n[sinks.local.batch]\nmax_age = \"100ms\"\n{sources}",
        dir.display()
    )
}

fn rtu_source(name: &str, link: &Path, baud: u32, extra: &str) -> String {
    format!(
        "[[sources.modbus]]\nname = \"{name}\"\ntransport = \"rtu\"\npath = \"{}\"\nbaud_rate = {baud}\nparity = \"none\"\n{extra}\n",
        link.display()
    )
}

fn tcp_source(name: &str, addr: SocketAddr, extra: &str) -> String {
    format!(
        "[[sources.modbus]]\nname = \"{name}\"\ntransport = \"tcp\"\nhost = \"{}\"\nport = {}\n{extra}\n",
        addr.ip(),
        addr.port()
    )
}

fn device(name: &str, unit: u8, interval: &str, fields: &str) -> String {
    format!("[[sources.modbus.devices]]\nname = \"{name}\"\nunit = {unit}\ninterval = \"{interval}\"\n{fields}")
}

fn standard(unit: u8, index: usize) -> ModbusDevice {
    ModbusDevice::standard(StandardConfig {
        unit,
        seed: 18,
        index,
    })
}

/// A value in the typed map.
#[derive(Debug, Clone)]
enum V {
    Num(ValueType, Value),
    Str(&'static str, u16),
    Bit(bool),
    /// A register, one of whose bits is read as a bool (`bit = N` in `extra`).
    FlagIn(u16),
}

/// One field of the typed map: where it is, what it holds, what the store must show.
#[derive(Debug, Clone)]
struct Typed {
    name: String,
    table: Table,
    address: u16,
    order: ByteOrder,
    value: V,
    /// More keys for the collector (`scale = 0.1`).
    extra: &'static str,
    /// As the store shows it.
    want: String,
}

fn ty_name(t: ValueType) -> &'static str {
    match t {
        ValueType::U16 => "u16",
        ValueType::I16 => "i16",
        ValueType::U32 => "u32",
        ValueType::I32 => "i32",
        ValueType::U64 => "u64",
        ValueType::I64 => "i64",
        ValueType::F32 => "f32",
        ValueType::F64 => "f64",
    }
}

fn registers_of(t: ValueType) -> u16 {
    match t {
        ValueType::U16 | ValueType::I16 => 1,
        ValueType::U32 | ValueType::I32 | ValueType::F32 => 2,
        _ => 4,
    }
}

/// Every type in every order, contiguous in the holding registers (one request), plus scaled
/// values, a flag bit, coils and a discrete input.
fn typed_map() -> Vec<Typed> {
    let mut map = Vec::new();
    let mut address = 0u16;
    let numbers: [(ValueType, Value, String); 6] = [
        (
            ValueType::U32,
            Value::Unsigned(4_000_000_001),
            "int:4000000001".into(),
        ),
        (
            ValueType::I32,
            Value::Signed(-123_456_789),
            "int:-123456789".into(),
        ),
        (
            ValueType::F32,
            Value::Float(12.56),
            format!("float:{}", f64::from(12.56f32)),
        ),
        (
            ValueType::U64,
            Value::Unsigned(18_000_000_000_000_000_001),
            "uint:18000000000000000001".into(),
        ),
        (
            ValueType::I64,
            Value::Signed(-9_000_000_000_000_000_001),
            "int:-9000000000000000001".into(),
        ),
        (
            ValueType::F64,
            Value::Float(6.022_140_76e23),
            format!("float:{}", 6.022_140_76e23f64),
        ),
    ];
    for order in ByteOrder::ALL {
        for (ty, value, want) in &numbers {
            map.push(Typed {
                name: format!("{}_{}", ty_name(*ty), order.name().to_lowercase()),
                table: Table::Holding,
                address,
                order,
                value: V::Num(*ty, *value),
                extra: "",
                want: want.clone(),
            });
            address += registers_of(*ty);
        }
    }
    let mut push = |name: &str, table, address, order, value, extra, want: String| {
        map.push(Typed {
            name: name.into(),
            table,
            address,
            order,
            value,
            extra,
            want,
        })
    };
    use ByteOrder::*;
    push(
        "u16",
        Table::Holding,
        72,
        ABCD,
        V::Num(ValueType::U16, Value::Unsigned(65535)),
        "",
        "int:65535".into(),
    );
    push(
        "i16_badc",
        Table::Holding,
        73,
        BADC,
        V::Num(ValueType::I16, Value::Signed(-2)),
        "",
        "int:-2".into(),
    );
    push(
        "model",
        Table::Holding,
        74,
        ABCD,
        V::Str("PM5560", 4),
        "length = 4\n",
        "str:PM5560".into(),
    );
    push(
        "temperature",
        Table::Input,
        0,
        ABCD,
        V::Num(ValueType::I16, Value::Signed(655)),
        "scale = 0.1\noffset = -40.0\n",
        format!("float:{}", 655f64 * 0.1 - 40.0),
    );
    push(
        "flag",
        Table::Input,
        1,
        ABCD,
        V::FlagIn(0b1000),
        "bit = 3\n",
        "bool:true".into(),
    );
    push(
        "energy",
        Table::Input,
        5,
        CDAB,
        V::Num(ValueType::U32, Value::Unsigned(123_456_789)),
        "scale = 0.001\n",
        format!("float:{}", 123_456_789f64 * 0.001),
    );
    push(
        "relay_1",
        Table::Coil,
        0,
        ABCD,
        V::Bit(true),
        "",
        "bool:true".into(),
    );
    push(
        "relay_2",
        Table::Coil,
        1,
        ABCD,
        V::Bit(false),
        "",
        "bool:false".into(),
    );
    push(
        "relay_3",
        Table::Coil,
        2,
        ABCD,
        V::Bit(true),
        "",
        "bool:true".into(),
    );
    push(
        "door",
        Table::DiscreteInput,
        10,
        ABCD,
        V::Bit(true),
        "",
        "bool:true".into(),
    );
    map
}

/// The requests (function code, start, count) one poll of the typed map takes.
const TYPED_REQUESTS: [(u8, u16, u16); 5] =
    [(1, 0, 3), (2, 10, 1), (4, 0, 2), (4, 5, 2), (3, 0, 78)];

fn typed_device(unit: u8) -> ModbusDevice {
    let d = ModbusDevice::new(unit);
    for f in typed_map() {
        match f.value {
            V::Num(ty, v) => d.set_registers(f.table, f.address, &encode(v, ty, f.order)),
            V::Str(s, n) => d.set_registers(f.table, f.address, &encode_string(s, usize::from(n))),
            V::Bit(b) => d.set_bits(f.table, f.address, &[b]),
            V::FlagIn(w) => d.set_registers(f.table, f.address, &[w]),
        }
    }
    d
}

fn typed_fields_toml() -> String {
    typed_map()
        .iter()
        .map(|f| {
            let ty = match &f.value {
                V::Num(t, _) => ty_name(*t),
                V::Str(..) => "string",
                V::Bit(_) | V::FlagIn(_) => "bool",
            };
            format!(
                "[[sources.modbus.devices.fields]]\nname = \"{}\"\nregister = \"{}\"\naddress = {}\ntype = \"{ty}\"\norder = \"{}\"\n{}",
                f.name,
                f.table.name(),
                f.address,
                f.order.name(),
                f.extra
            )
        })
        .collect()
}

/// The stored values of `device`, by field: each value and how often it was stored.
fn stored(store: &Path, device: &str) -> BTreeMap<String, BTreeMap<String, usize>> {
    let mut out: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for r in stored_rows(store) {
        if r.tags.iter().any(|(k, v)| k == "device" && v == device) {
            *out.entry(r.field).or_default().entry(r.value).or_default() += 1;
        }
    }
    out
}

/// Asserts that every reading `device` stored has exactly the values `want`, and returns
/// how many readings there are.
fn assert_exact(store: &Path, device: &str, want: &BTreeMap<String, String>) -> usize {
    let got = stored(store, device);
    let readings = got
        .values()
        .map(|v| v.values().sum::<usize>())
        .max()
        .unwrap_or(0);
    assert!(readings > 0, "nothing stored for {device}");
    let expected: BTreeMap<String, BTreeMap<String, usize>> = want
        .iter()
        .map(|(f, v)| (f.clone(), BTreeMap::from([(v.clone(), readings)])))
        .collect();
    assert_eq!(got, expected, "{device}: stored values differ");
    readings
}

fn counter(c: &InProcess, name: &str, device: &str) -> u64 {
    c.count(name, &[("device", device)])
}

fn gauge(c: &InProcess, name: &str, device: &str) -> i64 {
    c.metrics
        .gauges()
        .into_iter()
        .find(|(k, _)| {
            k.name == name && k.labels.iter().any(|(n, v)| *n == "device" && v == device)
        })
        .map_or(-1, |(_, v)| v)
}

async fn wait_polls(c: &InProcess, device: &str, n: u64) {
    wait_for(&format!("{n} polls of {device}"), WAIT, || {
        counter(c, "modbus_polls_total", device) >= n
    })
    .await;
}

#[tokio::test]
async fn every_type_and_order_arrives_exactly_from_rtu_and_tcp_devices_in_planned_requests() {
    let dir = tempfile::tempdir().unwrap();
    let links = tempfile::tempdir().unwrap();
    let link = links.path().join("usb-rs485-bus");
    let (rtu_typed, rtu_std) = (typed_device(1), standard(2, 0));
    let bus = RtuBus::spawn(&link, 115_200, vec![rtu_typed.clone(), rtu_std.clone()]).unwrap();
    let (tcp_typed, tcp_std) = (typed_device(5), standard(9, 1));
    let gateway = TcpGateway::start(
        "127.0.0.1:0".parse().unwrap(),
        vec![tcp_typed.clone(), tcp_std.clone()],
    )
    .await
    .unwrap();
    let sources = [
        rtu_source("bus", &link, 115_200, ""),
        device("rtu-typed", 1, "300ms", &typed_fields_toml()),
        device("rtu-std", 2, "300ms", &standard_fields_toml()),
        tcp_source("gw", gateway.addr(), ""),
        device("tcp-typed", 5, "300ms", &typed_fields_toml()),
        device("tcp-std", 9, "300ms", &standard_fields_toml()),
    ]
    .concat();
    let c = InProcess::start(&config(dir.path(), &sources)).await;
    for d in ["rtu-typed", "rtu-std", "tcp-typed", "tcp-std"] {
        wait_polls(&c, d, 3).await;
    }
    let metrics = c.metrics.clone();
    let store = c.store.clone();
    c.stop().await;

    let typed: BTreeMap<String, String> =
        typed_map().into_iter().map(|f| (f.name, f.want)).collect();
    let standard_want = |d: &ModbusDevice| -> BTreeMap<String, String> {
        d.expected(0)
            .into_iter()
            .map(|(k, v)| (k, v.to_string()))
            .collect()
    };
    for (name, sim, want) in [
        ("rtu-typed", &rtu_typed, typed.clone()),
        ("tcp-typed", &tcp_typed, typed.clone()),
        ("rtu-std", &rtu_std, standard_want(&rtu_std)),
        ("tcp-std", &tcp_std, standard_want(&tcp_std)),
    ] {
        let readings = assert_exact(&store, name, &want);
        let polls = metrics.sum("modbus_polls_total", &[("device", name)]);
        assert_eq!(readings as u64, polls, "{name}: one reading per poll");
        assert_eq!(
            metrics.sum("modbus_errors_total", &[("device", name)]),
            0,
            "{name}"
        );
        // The simulator saw exactly the planned requests, once per poll.
        let requests = sim.requests();
        if name.ends_with("typed") {
            let mut distinct = requests.clone();
            distinct.sort_unstable();
            distinct.dedup();
            let mut planned = TYPED_REQUESTS.to_vec();
            planned.sort_unstable();
            assert_eq!(distinct, planned, "{name}");
            assert_eq!(requests.len() as u64, 5 * polls, "{name}");
        }
    }
    bus.stop().await.unwrap();
}

#[tokio::test]
async fn a_dead_unit_exceptions_and_bad_frames_are_counted_and_the_dead_unit_is_rarely_asked() {
    let dir = tempfile::tempdir().unwrap();
    let links = tempfile::tempdir().unwrap();
    let link = links.path().join("usb-rs485-faults");
    let healthy = standard(1, 0);
    let dead = standard(2, 1);
    dead.set_fault(Some(FaultPlan {
        fault: ModbusFault::NoAnswer,
        every: 1,
    }));
    let refusing = standard(3, 2);
    refusing.set_fault(Some(FaultPlan {
        fault: ModbusFault::Exception { code: 2 },
        every: 1,
    }));
    let noisy = standard(4, 3);
    noisy.set_fault(Some(FaultPlan {
        fault: ModbusFault::BadCrc,
        every: 4,
    }));
    let garbled = standard(5, 4);
    garbled.set_fault(Some(FaultPlan {
        fault: ModbusFault::Garbage,
        every: 4,
    }));
    let bus = RtuBus::spawn(
        &link,
        115_200,
        vec![
            healthy.clone(),
            dead.clone(),
            refusing.clone(),
            noisy.clone(),
            garbled.clone(),
        ],
    )
    .unwrap();
    let fields = standard_fields_toml();
    let sources = [
        rtu_source(
            "bus",
            &link,
            115_200,
            "timeout = \"100ms\"\nretries = 2\noffline_retry = { initial = \"1s\", max = \"2s\" }",
        ),
        device("healthy", 1, "1s", &fields),
        device("dead", 2, "1s", &fields),
        device("refusing", 3, "1s", &fields),
        device("noisy", 4, "1s", &fields),
        device("garbled", 5, "1s", &fields),
    ]
    .concat();
    let c = InProcess::start(&config(dir.path(), &sources)).await;
    // Finding the dead unit out takes its first poll (three attempts): the round it
    // happens in may overrun. From then on, it is only tried now and then.
    wait_for("the dead unit to be marked down", WAIT, || {
        gauge(&c, "modbus_device_up", "dead") == 0
    })
    .await;
    let marked_down = std::time::Instant::now();
    let dead_requests_then = counter(&c, "modbus_requests_total", "dead");
    let start = counter(&c, "modbus_polls_total", "healthy");
    wait_polls(&c, "healthy", start + 6).await;
    wait_for("crc and framing errors", WAIT, || {
        c.count(
            "modbus_errors_total",
            &[("device", "noisy"), ("reason", "crc")],
        ) > 0
            && c.count("modbus_errors_total", &[("device", "garbled")]) > 0
    })
    .await;
    // The dead unit: timeouts, marked down, tried now and then (not at every poll).
    let dead_timeouts = c.count(
        "modbus_errors_total",
        &[("device", "dead"), ("reason", "timeout")],
    );
    assert!(dead_timeouts >= 3, "{dead_timeouts}");
    assert_eq!(gauge(&c, "modbus_device_up", "dead"), 0);
    // Once down, it gets one request per `offline_retry` (at least 0.5 s, then at least
    // 1 s apart), where a poll every second with two retries would make 3 a second. A
    // loaded machine makes fewer tries, never more: the bound holds however slow it is.
    let dead_requests = counter(&c, "modbus_requests_total", "dead") - dead_requests_then;
    let seconds = marked_down.elapsed().as_secs();
    assert!(
        dead_requests <= 2 + seconds,
        "the dead unit is asked too often: {dead_requests} requests in {seconds} s"
    );
    // That the others keep their rate is a matter of time, not of counts: a loaded
    // machine can make any poll overrun. The bus time the dead unit takes is what the
    // count above bounds; scripts/bench-modbus.sh measures the rates.
    assert_eq!(gauge(&c, "modbus_device_up", "healthy"), 1);
    // Exceptions by code: the device is up, but nothing of it is stored.
    assert!(
        c.count(
            "modbus_exceptions_total",
            &[("device", "refusing"), ("code", "2")]
        ) >= 5
    );
    assert_eq!(gauge(&c, "modbus_device_up", "refusing"), 1);
    let metrics = c.metrics.clone();
    let store = c.store.clone();
    c.stop().await;
    // The retries recovered every bad frame: complete, exact readings.
    for (name, d) in [
        ("healthy", &healthy),
        ("noisy", &noisy),
        ("garbled", &garbled),
    ] {
        let want: BTreeMap<String, String> = d
            .expected(0)
            .into_iter()
            .map(|(k, v)| (k, v.to_string()))
            .collect();
        let readings = assert_exact(&store, name, &want);
        assert_eq!(
            readings as u64,
            metrics.sum("modbus_polls_total", &[("device", name)]),
            "{name}"
        );
    }
    assert!(stored(&store, "refusing").is_empty());
    assert!(stored(&store, "dead").is_empty());
    bus.stop().await.unwrap();
}

#[tokio::test]
async fn a_late_answer_is_counted_and_never_taken_for_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let links = tempfile::tempdir().unwrap();
    let link = links.path().join("usb-rs485-slow");
    // Every third request is answered 250 ms late: after its request timed out, and while
    // the retry (or the next request) waits for its own answer.
    let slow = standard(1, 0);
    slow.set_fault(Some(FaultPlan {
        fault: ModbusFault::Slow { ms: 250 },
        every: 3,
    }));
    let bus = RtuBus::spawn(&link, 115_200, vec![slow.clone()]).unwrap();
    let sources = [
        rtu_source("bus", &link, 115_200, "timeout = \"100ms\"\nretries = 3"),
        device("slow", 1, "1s", &standard_fields_toml()),
    ]
    .concat();
    let c = InProcess::start(&config(dir.path(), &sources)).await;
    wait_for("late answers", WAIT, || {
        c.count(
            "modbus_errors_total",
            &[("device", "slow"), ("reason", "late_answer")],
        ) >= 2
    })
    .await;
    assert!(
        c.count(
            "modbus_errors_total",
            &[("device", "slow"), ("reason", "timeout")]
        ) >= 2
    );
    let errors: Vec<(String, u64)> = c
        .metrics
        .counters()
        .into_iter()
        .filter(|(k, _)| k.name == "modbus_errors_total")
        .map(|(k, v)| (format!("{:?}", k.labels), v))
        .collect();
    let store = c.store.clone();
    c.stop().await;
    let want: BTreeMap<String, String> = slow
        .expected(0)
        .into_iter()
        .map(|(k, v)| (k, v.to_string()))
        .collect();
    // Every stored value is right: no late answer was decoded as another request's.
    let got = stored(&store, "slow");
    for (field, values) in &got {
        assert_eq!(
            values.keys().collect::<Vec<_>>(),
            vec![&want[field]],
            "{field}"
        );
    }
    assert!(got.len() >= 5, "{got:?}; errors: {errors:?}");
    bus.stop().await.unwrap();
}

#[tokio::test]
async fn an_unplugged_bus_and_a_restarted_gateway_are_reopened_with_backoff() {
    let dir = tempfile::tempdir().unwrap();
    let links = tempfile::tempdir().unwrap();
    let link = links.path().join("usb-rs485-unplug");
    let bus = RtuBus::spawn(&link, 115_200, vec![standard(1, 0)]).unwrap();
    let mut gateway = TcpGateway::start("127.0.0.1:0".parse().unwrap(), vec![standard(1, 1)])
        .await
        .unwrap();
    let fields = standard_fields_toml();
    let reopen = "reopen = { initial = \"100ms\", max = \"400ms\" }";
    let sources = [
        rtu_source("bus", &link, 115_200, reopen),
        device("rtu", 1, "200ms", &fields),
        tcp_source("gw", gateway.addr(), reopen),
        device("tcp", 1, "200ms", &fields),
    ]
    .concat();
    let c = InProcess::start(&config(dir.path(), &sources)).await;
    wait_polls(&c, "rtu", 3).await;
    wait_polls(&c, "tcp", 3).await;

    let away = Duration::from_millis(1500);
    bus.unplug_for(away).await;
    gateway.stop().await;
    tokio::time::sleep(away).await;
    gateway.start_again().await.unwrap();
    let (rtu_before, tcp_before) = (stored(&c.store, "rtu"), stored(&c.store, "tcp"));
    let polls = |d: &str| counter(&c, "modbus_polls_total", d);
    let (rtu_polls, tcp_polls) = (polls("rtu"), polls("tcp"));
    wait_for("both links to deliver again", WAIT, || {
        polls("rtu") >= rtu_polls + 3
            && polls("tcp") >= tcp_polls + 3
            && gauge(&c, "modbus_device_up", "rtu") == 1
            && gauge(&c, "modbus_device_up", "tcp") == 1
    })
    .await;
    for source in ["modbus:bus", "modbus:gw"] {
        let reconnects = c.count("source_reconnects_total", &[("source", source)]);
        // At least one reopen; at most what a 100 ms..400 ms backoff allows in 1.5 s (and a
        // margin): never a busy loop.
        assert!((1..=20).contains(&reconnects), "{source}: {reconnects}");
    }
    let store = c.store.clone();
    c.stop().await;
    assert!(
        stored(&store, "rtu")
            .values()
            .map(|v| v.values().sum::<usize>())
            .max()
            > rtu_before.values().map(|v| v.values().sum::<usize>()).max()
    );
    assert!(
        stored(&store, "tcp")
            .values()
            .map(|v| v.values().sum::<usize>())
            .max()
            > tcp_before.values().map(|v| v.values().sum::<usize>()).max()
    );
    bus.stop().await.unwrap();
}

// ---- Against implementations nobody here wrote ----

/// The Python with pymodbus that scripts/test.sh installs (or `PYMODBUS_PYTHON`).
fn pymodbus_python() -> PathBuf {
    if let Some(p) = std::env::var_os("PYMODBUS_PYTHON") {
        return PathBuf::from(p);
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-venv/bin/python");
    assert!(
        p.exists(),
        "pymodbus is not installed: run scripts/test.sh, which installs it into target/test-venv"
    );
    p
}

/// A pymodbus TCP server, killed when dropped.
struct PyDevice(Child);

impl Drop for PyDevice {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_device_played_by_pymodbus_is_read_exactly() {
    let dir = tempfile::tempdir().unwrap();
    // The typed map as pymodbus encodes it (Python's struct), minus nothing.
    let spec: Vec<serde_json::Value> = typed_map()
        .iter()
        .map(|f| {
            let table = match f.table {
                Table::Holding => "hr",
                Table::Input => "ir",
                Table::Coil => "co",
                Table::DiscreteInput => "di",
            };
            let (ty, value) = match &f.value {
                V::Num(t, Value::Unsigned(u)) => (ty_name(*t), serde_json::json!(u)),
                V::Num(t, Value::Signed(i)) => (ty_name(*t), serde_json::json!(i)),
                V::Num(t, Value::Float(x)) => (ty_name(*t), serde_json::json!(x)),
                V::Str(s, _) => ("string", serde_json::json!(s)),
                V::Bit(b) => ("bool", serde_json::json!(b)),
                V::FlagIn(w) => ("u16", serde_json::json!(w)),
            };
            let length = match f.value {
                V::Str(_, n) => n,
                _ => 0,
            };
            serde_json::json!({"table": table, "address": f.address, "type": ty,
                "order": f.order.name(), "value": value, "length": length})
        })
        .collect();
    let spec_path = dir.path().join("spec.json");
    std::fs::write(&spec_path, serde_json::to_vec(&spec).unwrap()).unwrap();
    let port = free_port();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/modbus/pymodbus_device.py");
    let child = Command::new(pymodbus_python())
        .arg(&script)
        .arg(port.to_string())
        .arg(&spec_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the pymodbus device");
    let _py = PyDevice(child);
    wait_for("the pymodbus device to listen", WAIT, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
    .await;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let sources = [
        tcp_source("py", addr, ""),
        device("pymodbus", 1, "300ms", &typed_fields_toml()),
    ]
    .concat();
    let c = InProcess::start(&config(dir.path(), &sources)).await;
    wait_polls(&c, "pymodbus", 3).await;
    let store = c.store.clone();
    c.stop().await;
    let typed: BTreeMap<String, String> =
        typed_map().into_iter().map(|f| (f.name, f.want)).collect();
    assert_exact(&store, "pymodbus", &typed);
}

/// mbpoll's output for one poll: the value of each reference, in order.
fn mbpoll(args: &[&str]) -> Vec<String> {
    let out = Command::new("mbpoll")
        .args(args)
        .output()
        .expect("mbpoll is not installed: run scripts/test.sh, which installs it (apt-get install -y mbpoll)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "mbpoll {args:?}: {text}");
    text.lines()
        .filter(|l| l.starts_with('['))
        .filter_map(|l| l.split_whitespace().nth(1).map(String::from))
        .collect()
}

// mbpoll blocks its thread while the simulator answers on another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mbpoll_reads_the_simulated_devices_over_rtu_and_tcp() {
    let links = tempfile::tempdir().unwrap();
    let link = links.path().join("usb-rs485-mbpoll");
    let rtu = standard(7, 0);
    let bus = RtuBus::spawn(&link, 9600, vec![standard(1, 5), rtu.clone()]).unwrap();
    let tcp = standard(3, 1);
    let gateway = TcpGateway::start("127.0.0.1:0".parse().unwrap(), vec![tcp.clone()])
        .await
        .unwrap();
    let port = gateway.addr().port().to_string();
    let link = link.display().to_string();
    for (device, unit, via) in [(&rtu, "7", "rtu"), (&tcp, "3", "tcp")] {
        let want = device.expected(0);
        let target: Vec<&str> = match via {
            "rtu" => vec!["-m", "rtu", "-b", "9600", "-P", "none", "-a", unit],
            _ => vec!["-m", "tcp", "-p", &port, "-a", unit],
        };
        let end = if via == "rtu" {
            link.as_str()
        } else {
            "127.0.0.1"
        };
        let run = |extra: &[&str]| {
            let args: Vec<&str> = target
                .iter()
                .copied()
                .chain(["-0", "-1"])
                .chain(extra.iter().copied())
                .chain([end])
                .collect();
            let blocking = args.iter().map(|s| s.to_string()).collect::<Vec<_>>();
            mbpoll(&blocking.iter().map(String::as_str).collect::<Vec<_>>())
        };
        // Temperature: an i16 of hundredths, exactly.
        let raw = run(&["-t", "3", "-r", "0", "-c", "1"]);
        let simulator::modbus::Expected::Float(t) = want["temperature"] else {
            panic!()
        };
        let hundredths: i64 = raw[0].parse().unwrap();
        assert_eq!(hundredths as f64 * 0.01, t, "{via}");
        // Floats: mbpoll prints 6 significant digits; big-endian words (-B) for humidity,
        // its default (low word first) for pressure.
        for (reference, field, big) in [("1", "humidity", true), ("3", "pressure", false)] {
            let mut extra = vec!["-t", "3:float", "-r", reference, "-c", "1"];
            if big {
                extra.push("-B");
            }
            let got: f64 = run(&extra)[0].parse().unwrap();
            let simulator::modbus::Expected::Float(v) = want[field] else {
                panic!()
            };
            assert!(
                (got - v).abs() <= v.abs() * 1e-5,
                "{via} {field}: {got} vs {v}"
            );
        }
        // The model name: four registers of characters, high byte first.
        let words = run(&["-t", "4:hex", "-r", "10", "-c", "4"]);
        let text: Vec<u8> = words
            .iter()
            .flat_map(|w| {
                u16::from_str_radix(w.trim_start_matches("0x"), 16)
                    .unwrap()
                    .to_be_bytes()
            })
            .filter(|&b| b != 0)
            .collect();
        assert_eq!(String::from_utf8(text).unwrap(), "SIM-TH01", "{via}");
        let simulator::modbus::Expected::Bool(door) = want["door_open"] else {
            panic!()
        };
        assert_eq!(
            run(&["-t", "1", "-r", "4", "-c", "1"]),
            vec![if door { "1" } else { "0" }],
            "{via}"
        );
    }
    bus.stop().await.unwrap();
}

// ---- Report by exception, for any source ----

/// A known sequence through MQTT (device timestamps, one a second, then a gap for the
/// heartbeat): `t` with a deadband of 0.5, `s` on change, both with a heartbeat of 10 s; `h`
/// is covered by no rule and always written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_by_exception_writes_exactly_the_values_that_moved_and_the_heartbeats() {
    let mosquitto = Mosquitto::start().await;
    let dir = tempfile::tempdir().unwrap();
    let rules = r#"
[[report_by_exception]]
measurement = "env"
fields = ["t"]
deadband = 0.5
heartbeat = "10s"

[[report_by_exception]]
fields = ["s"]
on_change = true
heartbeat = "10s"
"#;
    let toml = collector_config(dir.path(), mosquitto.port, "rbe", JSON_SUBSCRIPTION) + rules;
    let c = InProcess::start(&toml).await;
    // An hour ago, to the minute: within the collector's bounds on device timestamps.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let base = now / 60 * 60 - 3600;
    // (seconds after base, t, s)
    let sequence: [(i64, f64, &str); 11] = [
        (0, 10.0, "ok"),
        (1, 10.3, "ok"),
        (2, 10.5, "ok"),
        (3, 10.6, "ok"),   // t moved by 0.6 from 10.0
        (4, 10.3, "warn"), // s changed
        (5, 10.1, "warn"),
        (6, 10.0, "warn"), // t moved by 0.6 from 10.6
        (7, 9.0, "ok"),    // t by 1.0, s changed
        (8, 9.0, "ok"),
        (17, 9.0, "ok"), // both: 10 s since their last write (7), the heartbeat
        (18, 9.1, "ok"), // t by 0.1 only
    ];
    let messages: Vec<simulator::fleet::Message> = sequence
        .iter()
        .map(|(dt, t, s)| simulator::fleet::Message {
            topic: "sensors/lab/rbe-1/env".into(),
            payload: format!(r#"{{"ts":{},"t":{t},"s":"{s}","h":{dt}}}"#, base + dt).into_bytes(),
            device: "rbe-1".into(),
            expected: Vec::new(),
            fault: None,
        })
        .collect();
    crate::mqtt::publish_all(mosquitto.port, "rbe-pub", &messages).await;
    let want_t = [0, 3, 6, 7, 17];
    let want_s = [0, 4, 7, 17];
    let total = sequence.len() + want_t.len() + want_s.len();
    wait_for_rows(&c.store, total).await;
    let store = c.store.clone();
    let suppressed = c.count("fields_suppressed_total", &[]);
    c.stop().await;
    let rows = stored_rows(&store);
    let at = |field: &str| -> Vec<(i64, String)> {
        rows.iter()
            .filter(|r| r.field == field)
            .map(|r| (r.timestamp / 1_000_000_000 - base, r.value.clone()))
            .collect()
    };
    let pick = |which: &[i64], f: &dyn Fn(&(i64, f64, &str)) -> String| -> Vec<(i64, String)> {
        sequence
            .iter()
            .filter(|e| which.contains(&e.0))
            .map(|e| (e.0, f(e)))
            .collect()
    };
    assert_eq!(at("t"), pick(&want_t, &|e| format!("float:{}", e.1)));
    assert_eq!(at("s"), pick(&want_s, &|e| format!("str:{}", e.2)));
    assert_eq!(
        at("h").len(),
        sequence.len(),
        "a field no rule covers is always written"
    );
    assert_eq!(
        suppressed as usize,
        2 * sequence.len() - want_t.len() - want_s.len()
    );
}
