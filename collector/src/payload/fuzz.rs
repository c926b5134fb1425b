//! Fuzz-style property tests of every payload parser: arbitrary bytes, and mutations of
//! valid payloads (bytes flipped, inserted, deleted, repeated, and hostile tokens spliced
//! in: integer extremes, `i`/`u` suffixes, exponents, escapes, invalid UTF-8). No input may
//! make a parser panic, and what comes out is bounded by what went in: at most one reading
//! or rejection per line, no more text than the input and the context hold, every reading
//! with a field, a device and a timestamp inside the bounds, every float finite.

use proptest::prelude::*;

use super::tests::{ctx, NOW};
use super::*;
use crate::mutate::{edits, mutate};

/// Cases per property: each test runs in a second or two in a debug build.
const CASES: u32 = 384;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: CASES,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn fields() -> JsonOptions {
    JsonOptions {
        tag_keys: vec!["room".into()],
        ..JsonOptions::default()
    }
}

fn csv() -> Format {
    Format::Csv(CsvOptions {
        columns: ["ts", "t", "_", "room"].map(String::from).to_vec(),
        delimiter: ',',
        fields: fields(),
    })
}

/// Valid payloads of each format, to be mutated.
fn seeds(format: &Format) -> Vec<String> {
    let s = NOW / 1_000_000_000;
    match format {
        Format::Json(_) => vec![
            format!(r#"{{"ts":{NOW},"t":21.5,"n":-3,"ok":true,"state":"on","room":"lab"}}"#),
            format!(r#"{{"ts":{s}.25,"big":18446744073709551615,"e":1e-7,"k\u00e9":"\"q\""}}"#),
            r#"{"t":-0.0,"u":9223372036854775807,"v":-9223372036854775808}"#.to_string(),
        ],
        Format::LineProtocol { .. } => vec![
            format!("env,device=d1,room=a\\ b t=21.5,n=3i,u=7u,ok=t,s=\"a \\\"q\\\"\" {NOW}"),
            format!("m,device=d2 i=-9223372036854775808i,u=18446744073709551615u {NOW}\nm v=1"),
            "w\\,x,t\\=k=v\\ w f=1e-308,g=-1.7976931348623157e308".to_string(),
        ],
        Format::Value => vec!["21.5".into(), "-3e-7".into(), "true".into(), "open".into()],
        Format::KeyValue(_) => vec![
            format!("ts={s}.123456789 t=21.5 h=40,n=3;ok=true state=open room=lab"),
            "t=-9223372036854775808 u=18446744073709551615 f=1.7976931348623157e308".into(),
        ],
        Format::Csv(_) => vec![
            format!("{s}, 21.5,x,\"lab\"\r"),
            "ts,t,_,room".into(),
            format!("{NOW},-0.0,,"),
        ],
    }
}

/// Tokens a hostile sender splices in.
const TOKENS: &[&str] = &[
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775809",
    "18446744073709551616",
    "i",
    "u",
    "-1u",
    "1e309",
    "-1e-400",
    "NaN",
    "inf",
    "1.7976931348623157e308",
    "\\",
    "\\\\",
    "\"",
    ",",
    "=",
    " ",
    "\n",
    "\r\n",
    "\t",
    "\0",
    "{",
    "}",
    "[1,[2]]",
    "null",
    ":",
    "é",
    "\u{feff}",
    "ts=",
    "\"ts\":",
    "2262-04-11T23:47:16.854775808Z",
    "1677-09-21T00:12:43.145224191Z",
    "99999999999999999999e-999",
];

/// Bytes, some looking like payloads so that the parsers get past their first checks.
fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..256),
        proptest::collection::vec(
            prop_oneof![
                any::<u8>().prop_map(|b| vec![b]),
                (0..TOKENS.len()).prop_map(|t| TOKENS[t].as_bytes().to_vec()),
                Just(b"{\"t\":".to_vec()),
                Just(b"env,room=a t=1 ".to_vec()),
                Just(NOW.to_string().into_bytes()),
            ],
            0..48
        )
        .prop_map(|v| v.concat()),
    ]
}

/// The text a reading holds.
fn text_size(r: &Reading) -> usize {
    let tags: usize = r.tags.iter().map(|(k, v)| k.len() + v.len()).sum();
    let fields: usize = r
        .fields
        .iter()
        .map(|(k, v)| {
            k.len()
                + match v {
                    FieldValue::String(s) => s.len(),
                    _ => 0,
                }
        })
        .sum();
    r.measurement.len() + tags + fields
}

/// Parses `data` as `format` and checks the invariants of the module documentation.
fn check(format: &Format, data: &[u8]) -> Result<(), TestCaseError> {
    let tags = vec![("site".into(), "s".into())];
    let c = ctx(&tags);
    let context_size = c.measurement.len()
        + c.field.len()
        + "device".len()
        + c.default_device.len()
        + tags.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
    let mut out = Vec::new();
    let rejects = parse(format, data, &c, &mut out);
    let lines = data.split(|b| *b == b'\n').count();
    prop_assert!(out.len() + rejects.len() <= lines, "{format:?}");
    let total: usize = out.iter().map(text_size).sum();
    prop_assert!(
        total <= data.len() + out.len() * context_size,
        "{format:?}: {total} bytes of text from {} bytes",
        data.len()
    );
    for r in &out {
        prop_assert!(!r.fields.is_empty());
        prop_assert!(r.device().is_some());
        prop_assert!(c.bounds.check(r.timestamp).is_ok(), "{}", r.timestamp);
        for (_, v) in &r.fields {
            if let FieldValue::Float(f) = v {
                prop_assert!(f.is_finite());
            }
        }
    }
    Ok(())
}

fn formats() -> [Format; 5] {
    [
        Format::Json(fields()),
        Format::LineProtocol {
            precision: TimeUnit::Ns,
        },
        Format::Value,
        Format::KeyValue(fields()),
        csv(),
    ]
}

macro_rules! fuzz_format {
    ($name:ident, $index:expr) => {
        mod $name {
            use super::*;

            proptest! {
                #![proptest_config(config())]

                #[test]
                fn arbitrary_bytes(data in bytes()) {
                    check(&formats()[$index], &data)?;
                }

                #[test]
                fn mutations_of_valid_payloads(seed in any::<prop::sample::Index>(), edits in edits(TOKENS.len())) {
                    let format = &formats()[$index];
                    let seeds = seeds(format);
                    let data = mutate(seeds[seed.index(seeds.len())].as_bytes(), &edits, TOKENS);
                    check(format, &data)?;
                }
            }
        }
    };
}

fuzz_format!(json, 0);
fuzz_format!(line_protocol, 1);
fuzz_format!(value, 2);
fuzz_format!(key_value, 3);
fuzz_format!(csv_rows, 4);

/// A JSON value of any kind: numbers at the extremes, escaped strings, nesting.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
        any::<String>().prop_map(Value::from),
        Just(Value::Null),
        (NOW - 86_400_000_000_000..NOW + 600_000_000_000).prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(any::<String>(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(config())]

    /// Objects written by a real JSON encoder, with keys of any text (the timestamp and
    /// tag keys among them) and values of any kind.
    #[test]
    fn generated_json_objects(
        entries in proptest::collection::vec(
            (prop_oneof![Just("ts".to_string()), Just("room".to_string()), any::<String>()], json_value()),
            0..6,
        )
    ) {
        let object: serde_json::Map<String, serde_json::Value> = entries.into_iter().collect();
        let text = serde_json::to_string(&object).unwrap_or_default();
        check(&formats()[0], text.as_bytes())?;
    }
}

#[test]
fn the_seeds_are_valid() {
    let tags = vec![];
    for format in formats() {
        for seed in seeds(&format) {
            let mut out = Vec::new();
            let rejects = parse(&format, seed.as_bytes(), &ctx(&tags), &mut out);
            let header = matches!(format, Format::Csv(_)) && seed.starts_with("ts,");
            assert!(rejects.is_empty(), "{format:?} {seed:?}: {rejects:?}");
            assert!(header || !out.is_empty(), "{format:?} {seed:?}");
        }
    }
}

const UNITS: [TimeUnit; 6] = [
    TimeUnit::Auto,
    TimeUnit::S,
    TimeUnit::Ms,
    TimeUnit::Us,
    TimeUnit::Ns,
    TimeUnit::Rfc3339,
];

fn per_unit(unit: TimeUnit) -> i128 {
    match unit {
        TimeUnit::S => 1_000_000_000,
        TimeUnit::Ms => 1_000_000,
        TimeUnit::Us => 1_000,
        _ => 1,
    }
}

proptest! {
    #![proptest_config(config())]

    /// Every integer in every unit: exact, or out of range exactly when the product does
    /// not fit (no overflow, no wrap).
    #[test]
    fn integer_timestamps_are_exact_or_out_of_range(v in any::<i64>()) {
        for unit in [TimeUnit::S, TimeUnit::Ms, TimeUnit::Us, TimeUnit::Ns] {
            let want = i64::try_from(i128::from(v) * per_unit(unit))
                .map_err(|_| Reject::TimestampOutOfRange);
            prop_assert_eq!(unit.int_to_ns(v), want);
            prop_assert_eq!(unit.text_to_ns(&v.to_string()), want);
            prop_assert_eq!(unit.str_to_ns(&v.to_string()), want);
        }
        let _ = TimeUnit::Auto.int_to_ns(v);
        prop_assert_eq!(TimeUnit::Rfc3339.int_to_ns(v), Err(Reject::InvalidTimestamp));
    }

    /// Every f64 bit pattern (NaN, infinities, subnormals, extremes) in every unit: no
    /// panic; a result within half a nanosecond plus the float's own rounding of the exact
    /// product.
    #[test]
    fn float_timestamps_never_panic_and_stay_close(bits in any::<u64>()) {
        let v = f64::from_bits(bits);
        for unit in UNITS {
            match unit.float_to_ns(v) {
                Ok(ns) => {
                    prop_assert!(v.is_finite());
                    let exact = v * per_unit(unit) as f64;
                    if unit != TimeUnit::Auto {
                        let slack = 1.0 + exact.abs() * 1e-15;
                        prop_assert!((ns as f64 - exact).abs() <= slack, "{v} {unit:?} {ns}");
                    }
                }
                Err(Reject::InvalidTimestamp) => {
                    prop_assert!(!v.is_finite() || unit == TimeUnit::Rfc3339);
                }
                Err(Reject::TimestampOutOfRange) => {}
                Err(other) => prop_assert!(false, "{other:?}"),
            }
        }
    }

    /// Arbitrary text as a timestamp, in every unit and through every entry point.
    #[test]
    fn text_timestamps_never_panic(
        text in prop_oneof![
            any::<String>(),
            "[-+]?[0-9]{0,25}(\\.[0-9]{0,25})?([eE][-+]?[0-9]{0,12})?",
        ]
    ) {
        for unit in UNITS {
            let _ = unit.text_to_ns(&text);
            let _ = unit.str_to_ns(&text);
        }
    }
}
