use super::super::settings::tests::errors;
use super::super::Config;
use super::*;

const METER: &str = r#"
    [[sources.modbus]]
    name = "bus"
    transport = "rtu"
    path = "/dev/serial/by-id/usb-rs485"
    baud_rate = 19200
    [[sources.modbus.devices]]
    name = "meter-1"
    unit = 3
    interval = "2s"
    unit_tag = "unit"
    [[sources.modbus.devices.fields]]
    name = "voltage"
    register = "input"
    address = 0
    type = "f32"
    order = "CDAB"
    unit = "V"
    [[sources.modbus.devices.fields]]
    name = "energy"
    register = "holding"
    address = 100
    type = "u32"
    scale = 0.1
    interval = "1m"
    deadband = 0.5
    heartbeat = "10m"
    [[sources.modbus.devices.fields]]
    name = "relay"
    register = "coil"
    address = 7
"#;

#[test]
fn a_bus_gets_defaults_and_its_map_is_resolved() {
    let s = Config::from_toml(METER)
        .and_then(Config::validate)
        .unwrap_or_else(|e| panic!("{e}"));
    let b = &s.modbus[0];
    let Link::Rtu(r) = &b.link else {
        panic!("{:?}", b.link)
    };
    assert_eq!(
        (r.baud_rate, r.data_bits, r.parity, r.stop_bits),
        (19200, 8, Parity::Even, 1)
    );
    // 11 bits per character, 3.5 characters at 19200 baud.
    assert_eq!(r.frame_gap, Duration::from_nanos(2_005_208));
    assert_eq!((b.timeout, b.retries), (Duration::from_millis(500), 1));
    let d = &b.devices[0];
    assert_eq!(d.measurement, "modbus");
    assert_eq!(d.tags, vec![("device".into(), "meter-1".into())]);
    let [v, e, c] = &d.fields[..] else {
        panic!("{:?}", d.fields)
    };
    assert_eq!(
        (v.data_type, v.order, v.size, v.interval),
        (DataType::F32, Order::CDAB, 2, Duration::from_secs(2))
    );
    assert_eq!(e.scaling, Some((0.1, 0.0)));
    assert_eq!(e.interval, Duration::from_secs(60));
    assert!(e.report.is_some());
    assert_eq!((c.data_type, c.size), (DataType::Bool, 1));
}

#[test]
fn the_frame_gap_follows_the_baud_rate() {
    assert_eq!(frame_gap(9600, 11), Duration::from_nanos(4_010_416));
    assert_eq!(frame_gap(9600, 10), Duration::from_nanos(3_645_833));
    assert_eq!(frame_gap(115_200, 11), Duration::from_micros(1750));
}

#[test]
fn every_problem_of_a_map_is_reported_with_its_path() {
    let errs = errors(
        r#"
        [[sources.modbus]]
        transport = "rtu"
        host = "x"
        data_bits = 6
        retries = 9
        [[sources.modbus.devices]]
        name = "a"
        unit = 0
        max_registers = 200
        [[sources.modbus.devices.fields]]
        name = "x"
        register = "coil"
        address = 0
        type = "u16"
        [[sources.modbus.devices.fields]]
        name = "x"
        register = "holding"
        address = 65535
        type = "u32"
        [[sources.modbus.devices.fields]]
        name = "s"
        register = "input"
        address = 0
        type = "string"
        [[sources.modbus.devices.fields]]
        name = "b"
        register = "input"
        address = 0
        type = "bool"
        [[sources.modbus.devices.fields]]
        name = "t"
        register = "input"
        address = 0
        type = "bool"
        bit = 3
        scale = 2.0
        [[sources.modbus.devices]]
        name = "b"
        unit = 0
        "#,
    );
    for want in [
        "sources.modbus[0].host: only for transport = \"tcp\"",
        "sources.modbus[0].path: must be set for transport = \"rtu\" (the serial port)",
        "sources.modbus[0].data_bits: must be 7 or 8",
        "sources.modbus[0].retries: must be at most 5",
        "sources.modbus[0].devices[0].unit: must be between 1 and 247 on a serial line (0 is broadcast: nobody answers)",
        "sources.modbus[0].devices[0].max_registers: must be between 1 and 125",
        "sources.modbus[0].devices[0].fields[0].type: a coil holds one bit: the type must be bool",
        "sources.modbus[0].devices[0].fields[1].name: `x` is used by another field of this device",
        "sources.modbus[0].devices[0].fields[1].address: the field ends beyond address 65535",
        "sources.modbus[0].devices[0].fields[2].length: a string needs its length in registers",
        "sources.modbus[0].devices[0].fields[3].bit: a bool in a register needs `bit` (0 to 15)",
        "sources.modbus[0].devices[0].fields[4].scale: scale and offset apply to numbers, not to bool",
        "sources.modbus[0].devices[1].unit: unit 0 is used by another device on this bus",
        "sources.modbus[0].devices[1].fields: must not be empty",
    ] {
        assert!(errs.iter().any(|e| e == want), "missing {want:?} in {errs:#?}");
    }
}

#[test]
fn tcp_keys_and_unknown_keys() {
    // A gateway, with a key of RTU, `device_extra` in its device and `field_extra` in
    // its field.
    let gateway = |device_extra: &str, field_extra: &str| {
        errors(&format!(
            "[[sources.modbus]]\ntransport = \"tcp\"\nhost = \"gw\"\nbaud_rate = 9600\n\
             [[sources.modbus.devices]]\nname = \"a\"\nunit = 0\n{device_extra}\n\
             [[sources.modbus.devices.fields]]\nname = \"x\"\nregister = \"holding\"\naddress = 0\n{field_extra}\n"
        ))
    };
    let errs = gateway("", "type = \"f16\"");
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with("sources.modbus[0].devices[0].fields[0].type: "),
        "{errs:?}"
    );
    assert_eq!(
        gateway("colour = 1", ""),
        vec!["sources.modbus[0].devices[0].colour: unknown key"],
    );
    assert_eq!(
        gateway("", ""),
        vec!["sources.modbus[0].baud_rate: only for transport = \"rtu\""],
    );
}
