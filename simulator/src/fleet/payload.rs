//! Encoding of good payloads.

use influxdb_line_protocol::builder::LineProtocolBuilder;

use super::{GoodSample, PayloadFormat};

/// Encodes a good sample in `format`.
pub(super) fn encode(format: PayloadFormat, good: &GoodSample<'_>) -> Vec<u8> {
    match (format, good.field) {
        (PayloadFormat::Value, Some(field)) => float(good.value_of(field)).into_bytes(),
        (PayloadFormat::LineProtocol, _) => line_protocol(good).into_bytes(),
        _ => json(good).into_bytes(),
    }
}

/// `{"ts":<ns>,"temperature":..,"humidity":..,"pressure":..,"count":..}`, keys in this order
/// (`count` only with the counter).
pub(super) fn json(good: &GoodSample<'_>) -> String {
    let mut entries = vec![
        ("ts", good.timestamp_ns.to_string()),
        ("temperature", float(good.sample.temperature)),
        ("humidity", float(good.sample.humidity)),
        ("pressure", float(good.sample.pressure)),
    ];
    if good.counter {
        entries.push(("count", good.sample.count.to_string()));
    }
    json_object(&entries)
}

/// A JSON object from keys that need no escaping and values that are already JSON.
pub(crate) fn json_object(entries: &[(&str, String)]) -> String {
    let body: Vec<String> = entries
        .iter()
        .map(|(k, v)| format!("\"{k}\":{v}"))
        .collect();
    format!("{{{}}}", body.join(","))
}

/// One line of line protocol, without the trailing newline.
pub(super) fn line_protocol(good: &GoodSample<'_>) -> String {
    let fields = LineProtocolBuilder::new()
        .measurement(good.measurement)
        .tag("device", good.device)
        .tag("site", good.site)
        .field("temperature", good.sample.temperature)
        .field("humidity", good.sample.humidity)
        .field("pressure", good.sample.pressure);
    let mut line = if good.counter {
        fields
            .field("count", good.sample.count)
            .timestamp(good.timestamp_ns)
            .close_line()
            .build()
    } else {
        fields.timestamp(good.timestamp_ns).close_line().build()
    };
    line.pop(); // the builder ends every line with '\n'; one line per message needs none
                // Built from `&str`s and numbers only, so always UTF-8.
    String::from_utf8_lossy(&line).into_owned()
}

/// A float as the shortest text that parses back to the same value, always with a decimal
/// point (`21.0`, not `21`) so that no parser mistakes it for an integer.
pub(crate) fn float(value: f64) -> String {
    let text = value.to_string();
    if text.contains(['.', 'e', 'N', 'i']) {
        text
    } else {
        text + ".0"
    }
}
