//! `telemetry-collector doctor`: checks every configured component against the real thing
//! and reports each as OK or with its error, writing no readings.
//!
//! - MQTT brokers: connect and disconnect (as `<client_id>-doctor`, with a clean session, so
//!   the running collector's persistent session is untouched).
//! - Serial ports: opened (at the configured baud rate) and closed. A port the running
//!   collector holds open reports as busy.
//! - Modbus sources: the port opened (or the connection made), each device's register map
//!   read once, its values printed (one line per device).
//! - The local store: opened read-only when it exists (else: where it will be created).
//! - InfluxDB sinks: the secret is read, then an empty write (v2: checks the token, org and
//!   bucket) or `/ping` and an empty write (v1).
//! - MQTT sinks: connect and disconnect, as `<client_id>-doctor`.

use std::io::Write;
use std::time::Duration;

use crate::config::Settings;
use crate::metrics::Metrics;
use crate::sinks::influxdb::InfluxSink;
use crate::sinks::mqtt::MqttSink;
use crate::sources::mqtt::MqttSource;
use crate::store::LocalStore;

/// How long one check may take.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// Checks every component, prints one line each to `out`, and returns whether all are OK.
///
/// # Errors
/// Only when `out` cannot be written.
pub async fn run(settings: &Settings, out: &mut dyn Write) -> std::io::Result<bool> {
    let mut all_ok = true;
    let mut report = |out: &mut dyn Write, name: &str, result: Result<String, String>| {
        let line = match result {
            Ok(detail) => format!("OK    {name}: {detail}"),
            Err(e) => {
                all_ok = false;
                format!("FAIL  {name}: {e}")
            }
        };
        writeln!(out, "{line}")
    };
    for m in &settings.mqtt {
        let name = format!("mqtt:{}", m.name);
        let result = match MqttSource::new(m.clone(), settings.timestamps.clone(), Metrics::new()) {
            Ok(source) => source
                .check(CHECK_TIMEOUT)
                .await
                .map(|()| {
                    let b = &m.broker;
                    format!(
                        "{}:{} accepts connections (MQTT {})",
                        b.host, b.port, b.protocol
                    )
                })
                .map_err(|e| format!("{e:#}")),
            Err(e) => Err(format!("{e:#}")),
        };
        report(out, &name, result)?;
    }
    for port in &settings.serial {
        let name = format!("serial:{}", port.name);
        let path = port.path.to_string_lossy().into_owned();
        let builder = tokio_serial::new(path.clone(), port.baud_rate);
        let result = tokio_serial::SerialStream::open(&builder)
            .map(|_| format!("{path} opens at {} baud", port.baud_rate))
            .map_err(|e| format!("{path}: {e}"));
        report(out, &name, result)?;
    }
    for m in &settings.modbus {
        let source = crate::sources::modbus::ModbusSource::new(m.clone(), Metrics::new());
        let check = tokio::time::timeout(CHECK_TIMEOUT.saturating_mul(6), source.check()).await;
        match check {
            Ok(Ok(devices)) => {
                for (name, result) in devices {
                    report(out, &name, result)?;
                }
            }
            Ok(Err(e)) => report(out, &source.label(), Err(e))?,
            Err(_) => report(
                out,
                &source.label(),
                Err(format!(
                    "no result within {:?}",
                    CHECK_TIMEOUT.saturating_mul(6)
                )),
            )?,
        }
    }
    if let Some(local) = &settings.local {
        let path = local.path.clone();
        let result = if path.exists() {
            tokio::task::spawn_blocking(move || {
                LocalStore::open_read_only(&path)
                    .and_then(|s| s.summary().map(|d| d.len()))
                    .map(|devices| format!("{} opens ({devices} device(s))", path.display()))
                    .map_err(|e| e.to_string())
            })
            .await
            .unwrap_or_else(|e| Err(e.to_string()))
        } else {
            Ok(format!(
                "{} does not exist yet: it will be created",
                path.display()
            ))
        };
        report(out, "local", result)?;
    }
    for s in &settings.influxdb {
        let result = match InfluxSink::new(s) {
            Ok(sink) => match tokio::time::timeout(CHECK_TIMEOUT, sink.check()).await {
                Ok(r) => r.map_err(|e| crate::error::error_chain(&e)),
                Err(_) => Err(format!("no answer within {CHECK_TIMEOUT:?}")),
            },
            Err(e) => Err(crate::error::error_chain(&e)),
        };
        report(out, &s.sink, result)?;
    }
    for s in &settings.mqtt_sinks {
        let result = match MqttSink::new(s, &Metrics::new()) {
            Ok(sink) => sink
                .check(CHECK_TIMEOUT)
                .await
                .map(|()| {
                    let b = &s.broker;
                    format!(
                        "{}:{} accepts connections (MQTT {})",
                        b.host, b.port, b.protocol
                    )
                })
                .map_err(|e| format!("{e:#}")),
            Err(e) => Err(format!("{e:#}")),
        };
        report(out, &s.sink, result)?;
    }
    Ok(all_ok)
}
