use std::time::Duration;

use influxdb_line_protocol::{parse_lines, FieldValue};
use serde_json::Value;

use super::fault::{ONE_SECOND_AFTER_EPOCH_NS, YEAR_2300_NS};
use super::*;

fn fleet(config: FleetConfig) -> Fleet {
    Fleet::new(config).expect("valid config")
}

fn faulty(format: PayloadFormat, kinds: Vec<FaultKind>) -> FleetConfig {
    FleetConfig {
        format,
        faults: FaultConfig {
            every: Some(1),
            kinds,
            oversized_bytes: 4096,
        },
        ..FleetConfig::default()
    }
}

/// The good message that faulty message `n` replaced.
fn replaced(config: &FleetConfig, n: u64) -> Message {
    fleet(FleetConfig {
        faults: FaultConfig::default(),
        ..config.clone()
    })
    .message(n)
}

fn float(fields: &BTreeMap<String, ExpectedValue>, name: &str) -> f64 {
    match fields[name] {
        ExpectedValue::Float(v) => v,
        ExpectedValue::Integer(v) => panic!("{name} is an integer: {v}"),
    }
}

#[test]
fn same_config_same_bytes_different_seed_different_values() {
    for format in [
        PayloadFormat::Json,
        PayloadFormat::LineProtocol,
        PayloadFormat::Value,
    ] {
        let config = FleetConfig {
            format,
            faults: FaultConfig {
                every: Some(7),
                ..FaultConfig::default()
            },
            ..FleetConfig::default()
        };
        let a = fleet(config.clone()).messages(20);
        let b = fleet(config.clone()).messages(20);
        assert_eq!(a, b);

        let other = fleet(FleetConfig { seed: 43, ..config }).messages(20);
        assert_eq!(a.len(), other.len());
        let same_topics = a.iter().zip(&other).all(|(x, y)| x.topic == y.topic);
        assert!(same_topics, "the seed changes values, not topics");
        let differing = a
            .iter()
            .zip(&other)
            .filter(|(x, y)| x.payload != y.payload)
            .count();
        assert!(
            differing > a.len() * 9 / 10,
            "{format:?}: only {differing} of {} differ",
            a.len()
        );
    }
}

#[test]
fn messages_interleave_devices_in_time_order() {
    let config = FleetConfig {
        devices: 3,
        sites: 2,
        start_ns: 1_000_000_000_000,
        interval: Duration::from_millis(500),
        ..FleetConfig::default()
    };
    let messages = fleet(config).messages(2);
    let seen: Vec<(&str, &str, Option<i64>)> = messages
        .iter()
        .map(|m| {
            (
                m.device.as_str(),
                m.topic.as_str(),
                m.expected[0].timestamp_ns,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (
                "dev-0000",
                "sensors/site-00/dev-0000/env",
                Some(1_000_000_000_000)
            ),
            (
                "dev-0001",
                "sensors/site-01/dev-0001/env",
                Some(1_000_000_001_000)
            ),
            (
                "dev-0002",
                "sensors/site-00/dev-0002/env",
                Some(1_000_000_002_000)
            ),
            (
                "dev-0000",
                "sensors/site-00/dev-0000/env",
                Some(1_000_500_000_000)
            ),
            (
                "dev-0001",
                "sensors/site-01/dev-0001/env",
                Some(1_000_500_001_000)
            ),
            (
                "dev-0002",
                "sensors/site-00/dev-0002/env",
                Some(1_000_500_002_000)
            ),
        ]
    );
    assert_eq!(
        messages[4].expected[0].tags,
        BTreeMap::from([
            ("device".to_owned(), "dev-0001".to_owned()),
            ("site".to_owned(), "site-01".to_owned())
        ])
    );
}

#[test]
fn json_payload_parses_back_to_the_expected_reading() {
    let messages = fleet(FleetConfig::default()).messages(5);
    for message in &messages {
        let text = std::str::from_utf8(&message.payload).expect("utf-8");
        assert!(
            text.starts_with("{\"ts\":") && text.contains(",\"temperature\":"),
            "{text}"
        );
        let json: serde_json::Map<String, Value> = serde_json::from_str(text).expect("valid json");
        let expected = &message.expected[0];
        assert_eq!(json.len(), 5);
        assert_eq!(json["ts"].as_i64(), expected.timestamp_ns);
        for name in ["temperature", "humidity", "pressure"] {
            assert!(json[name].is_f64(), "{name} must print as a float: {text}");
            assert_eq!(json[name].as_f64(), Some(float(&expected.fields, name)));
        }
        assert!(json["count"].is_i64(), "{text}");
        assert_eq!(
            expected.fields["count"],
            ExpectedValue::Integer(json["count"].as_i64().expect("count"))
        );
    }
}

#[test]
fn line_protocol_parses_back_and_escapes() {
    let config = FleetConfig {
        format: PayloadFormat::LineProtocol,
        measurement: "room env,v2".to_owned(),
        ..FleetConfig::default()
    };
    let messages = fleet(config).messages(5);
    let first = std::str::from_utf8(&messages[0].payload).expect("utf-8");
    assert!(
        first.starts_with(r"room\ env\,v2,device=dev-0000,site=site-00 temperature="),
        "{first}"
    );
    assert!(!first.ends_with('\n'));
    for message in &messages {
        let text = std::str::from_utf8(&message.payload).expect("utf-8");
        let lines: Vec<_> = parse_lines(text)
            .collect::<Result<_, _>>()
            .expect("valid line protocol");
        assert_eq!(lines.len(), 1);
        let line = &lines[0];
        let expected = &message.expected[0];
        assert_eq!(line.series.measurement.to_string(), "room env,v2");
        assert_eq!(expected.measurement, "room env,v2");
        let tags: BTreeMap<String, String> = line
            .series
            .tag_set
            .iter()
            .flatten()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(tags, expected.tags);
        assert_eq!(line.timestamp, expected.timestamp_ns);
        let fields: BTreeMap<String, ExpectedValue> = line
            .field_set
            .iter()
            .map(|(k, v)| {
                let value = match v {
                    FieldValue::F64(f) => ExpectedValue::Float(*f),
                    FieldValue::I64(i) => ExpectedValue::Integer(*i),
                    other => panic!("unexpected field type {other:?}"),
                };
                (k.to_string(), value)
            })
            .collect();
        assert_eq!(fields, expected.fields);
    }
}

#[test]
fn bare_values_send_one_message_per_field_without_timestamp() {
    let config = FleetConfig {
        devices: 2,
        format: PayloadFormat::Value,
        ..FleetConfig::default()
    };
    let messages = fleet(config).messages(2);
    assert_eq!(messages.len(), 2 * 2 * 3);
    let topics: Vec<&str> = messages.iter().take(4).map(|m| m.topic.as_str()).collect();
    assert_eq!(
        topics,
        [
            "sensors/site-00/dev-0000/temperature",
            "sensors/site-00/dev-0000/humidity",
            "sensors/site-00/dev-0000/pressure",
            "sensors/site-01/dev-0001/temperature",
        ]
    );
    for message in &messages {
        let field = message.topic.rsplit('/').next().expect("field");
        let value: f64 = std::str::from_utf8(&message.payload)
            .expect("utf-8")
            .parse()
            .expect("a number");
        let expected = &message.expected[0];
        assert_eq!(expected.measurement, "env");
        assert_eq!(expected.timestamp_ns, None);
        assert_eq!(expected.fields.len(), 1);
        assert_eq!(float(&expected.fields, field), value);
    }
}

#[test]
fn every_nth_message_is_faulty_with_kinds_in_turn() {
    let config = FleetConfig {
        faults: FaultConfig {
            every: Some(3),
            kinds: vec![FaultKind::Garbage, FaultKind::PastTimestamp],
            ..FaultConfig::default()
        },
        ..FleetConfig::default()
    };
    let messages = fleet(config.clone()).messages(3);
    let clean = fleet(FleetConfig {
        faults: FaultConfig::default(),
        ..config
    })
    .messages(3);
    for (n, (message, good)) in messages.iter().zip(&clean).enumerate() {
        let kind = match n + 1 {
            p if p % 6 == 3 => Some(FaultKind::Garbage),
            p if p % 6 == 0 => Some(FaultKind::PastTimestamp),
            _ => None,
        };
        assert_eq!(message.fault.map(|f| f.kind), kind, "message {n}");
        assert_eq!(message.topic, good.topic);
        if kind.is_some() {
            assert!(message.expected.is_empty());
            assert_ne!(message.payload, good.payload);
        } else {
            assert_eq!(message, good);
        }
    }
}

#[test]
fn json_faults_are_what_they_say() {
    let config = faulty(PayloadFormat::Json, FaultKind::ALL.to_vec());
    let fleet = fleet(config.clone());
    for n in 0..32u64 {
        let message = fleet.message(n);
        let kind = message.fault.expect("every message is faulty").kind;
        assert_eq!(kind, FaultKind::ALL[n as usize % 8]);
        assert!(message.expected.is_empty());
        let good = replaced(&config, n);
        let payload = &message.payload;
        let parsed = serde_json::from_slice::<serde_json::Map<String, Value>>(payload);
        match kind {
            FaultKind::InvalidJson => {
                assert!(
                    good.payload.starts_with(payload),
                    "a truncation of the good payload"
                );
                assert!(parsed.expect_err("invalid").is_eof());
            }
            FaultKind::WrongType => {
                let temperature = &parsed.expect("valid json")["temperature"];
                assert!(
                    temperature.is_array() || temperature.is_object(),
                    "{temperature}"
                );
            }
            FaultKind::InvalidTimestamp => {
                assert_eq!(parsed.expect("valid json")["ts"], "yesterday");
            }
            FaultKind::Oversized => {
                assert_eq!(payload.len(), 4096);
                let good: Value = serde_json::from_slice(&good.payload).expect("good");
                assert_eq!(Value::Object(parsed.expect("valid json")), good);
            }
            FaultKind::InvalidUtf8 => {
                assert!(std::str::from_utf8(payload).is_err());
                assert!(payload.windows(2).any(|w| w == [0xff, 0xfe]));
                assert!(parsed.is_err());
            }
            FaultKind::FutureTimestamp => {
                let ts = parsed.expect("valid json")["ts"].as_u64().expect("u64");
                assert_eq!(ts, YEAR_2300_NS);
                assert!(i64::try_from(ts).is_err());
            }
            FaultKind::PastTimestamp => {
                let ts = &parsed.expect("valid json")["ts"];
                assert_eq!(ts.as_i64(), Some(ONE_SECOND_AFTER_EPOCH_NS));
            }
            FaultKind::Garbage => {
                assert!((16..=200).contains(&payload.len()));
                assert!(parsed.is_err());
            }
        }
    }
}

#[test]
fn line_protocol_faults_are_what_they_say() {
    let config = faulty(PayloadFormat::LineProtocol, FaultKind::ALL.to_vec());
    let fleet = fleet(config.clone());
    for n in 0..16u64 {
        let message = fleet.message(n);
        let kind = message.fault.expect("faulty").kind;
        let good = replaced(&config, n);
        let good = std::str::from_utf8(&good.payload).expect("utf-8");
        let Ok(text) = std::str::from_utf8(&message.payload) else {
            assert!(
                matches!(kind, FaultKind::InvalidUtf8 | FaultKind::Garbage),
                "{kind:?}"
            );
            continue;
        };
        let parsed: Result<Vec<_>, _> = parse_lines(text).collect();
        match kind {
            FaultKind::InvalidJson | FaultKind::WrongType | FaultKind::InvalidTimestamp => {
                assert!(parsed.is_err(), "{kind:?} must not parse: {text}");
            }
            FaultKind::FutureTimestamp => {
                assert!(text.ends_with(&YEAR_2300_NS.to_string()));
                assert!(parsed.is_err(), "beyond i64: {text}");
            }
            FaultKind::PastTimestamp => {
                let lines = parsed.expect("valid");
                assert_eq!(lines[0].timestamp, Some(ONE_SECOND_AFTER_EPOCH_NS));
            }
            FaultKind::Oversized => {
                assert_eq!(text.len(), 4096);
                let lines = parsed.expect("valid");
                assert_eq!(lines[0].field_set.len(), 5);
                assert!(text.starts_with(good.rsplit_once(' ').expect("ts").0));
            }
            FaultKind::InvalidUtf8 => panic!("must not be UTF-8: {text}"),
            FaultKind::Garbage => assert!(parsed.is_err() || parsed.is_ok_and(|l| l.is_empty())),
        }
    }
}

#[test]
fn bare_value_faults_are_not_numbers() {
    let config = FleetConfig {
        faults: FaultConfig {
            oversized_bytes: 2048,
            ..faulty(PayloadFormat::Value, FaultKind::ALL.to_vec()).faults
        },
        ..faulty(PayloadFormat::Value, FaultKind::ALL.to_vec())
    };
    let fleet = fleet(config);
    for n in 0..16u64 {
        let message = fleet.message(n);
        let kind = message.fault.expect("faulty").kind;
        let number = std::str::from_utf8(&message.payload).map(str::parse::<f64>);
        match kind {
            // Valid-looking: only a size limit rejects it.
            FaultKind::Oversized => {
                assert_eq!(message.payload.len(), 2048);
                assert!(number.is_ok_and(|n| n.is_ok()));
            }
            _ => assert!(
                !number.is_ok_and(|n| n.is_ok()),
                "{kind:?}: {:?}",
                message.payload
            ),
        }
    }
}

#[test]
fn invalid_configs_are_rejected() {
    let bad = [
        FleetConfig {
            devices: 0,
            ..FleetConfig::default()
        },
        FleetConfig {
            sites: 0,
            ..FleetConfig::default()
        },
        FleetConfig {
            interval: Duration::ZERO,
            ..FleetConfig::default()
        },
        FleetConfig {
            measurement: "a/b".to_owned(),
            ..FleetConfig::default()
        },
        FleetConfig {
            topic_prefix: "sensors/#".to_owned(),
            ..FleetConfig::default()
        },
        FleetConfig {
            faults: FaultConfig {
                every: Some(0),
                ..FaultConfig::default()
            },
            ..FleetConfig::default()
        },
        FleetConfig {
            faults: FaultConfig {
                every: Some(2),
                kinds: vec![],
                ..FaultConfig::default()
            },
            ..FleetConfig::default()
        },
    ];
    for config in bad {
        assert!(Fleet::new(config.clone()).is_err(), "{config:?}");
    }
}

#[test]
fn expected_readings_serialize_with_typed_values() {
    let message = fleet(FleetConfig::default()).message(0);
    let json = serde_json::to_value(&message.expected[0]).expect("serialize");
    assert!(json["fields"]["count"]["integer"].is_i64(), "{json}");
    assert!(json["fields"]["temperature"]["float"].is_f64(), "{json}");
    let back: ExpectedReading = serde_json::from_value(json).expect("deserialize");
    assert_eq!(back, message.expected[0]);
}

#[test]
fn without_the_counter_readings_carry_three_float_fields() {
    for format in [PayloadFormat::Json, PayloadFormat::LineProtocol] {
        let messages = fleet(FleetConfig {
            format,
            counter: false,
            ..FleetConfig::default()
        })
        .messages(2);
        for m in &messages {
            let text = String::from_utf8(m.payload.clone()).unwrap();
            assert!(!text.contains("count"), "{text}");
            let fields: Vec<&String> = m.expected[0].fields.keys().collect();
            assert_eq!(fields, ["humidity", "pressure", "temperature"]);
        }
    }
}
