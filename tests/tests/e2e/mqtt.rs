//! MQTT to the local store: exact delivery, every payload format, malformed input.

use std::path::Path;
use std::time::Duration;

use simulator::fleet::{FaultConfig, FaultKind, Fleet, FleetConfig, Message, PayloadFormat};
use simulator::mqtt::{publish, PublishConfig};
use tokio_util::sync::CancellationToken;

use crate::harness::*;

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

pub(crate) fn fleet(
    devices: usize,
    format: PayloadFormat,
    prefix: &str,
    faults: FaultConfig,
) -> Fleet {
    Fleet::new(FleetConfig {
        devices,
        sites: 3,
        seed: 42,
        start_ns: now_ns() - 600_000_000_000,
        interval: Duration::from_secs(1),
        format,
        measurement: "env".into(),
        topic_prefix: prefix.into(),
        faults,
        counter: true,
    })
    .unwrap()
}

/// Publishes `messages` at QoS 1 as fast as the broker takes them, and asserts that the
/// broker acked every one.
pub(crate) async fn publish_all(port: u16, id: &str, messages: &[Message]) {
    let report = publish(
        publisher(port, id),
        messages.to_vec(),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(
        report.acked_count(),
        messages.len(),
        "the broker acked every message"
    );
}

pub(crate) fn publisher(port: u16, id: &str) -> PublishConfig {
    PublishConfig {
        host: "127.0.0.1".into(),
        port,
        client_id_prefix: id.into(),
        connections: 3,
        qos: 1,
        rate: None,
        clean_session: false,
        max_inflight: 100,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reading_arrives_exactly_once_with_its_tags_fields_and_timestamp() {
    let broker = Mosquitto::start().await;
    let dir = tempfile::tempdir().unwrap();
    let collector = InProcess::start(&collector_config(
        dir.path(),
        broker.port,
        "exact",
        JSON_SUBSCRIPTION,
    ))
    .await;

    let messages = fleet(12, PayloadFormat::Json, "sensors", FaultConfig::default()).messages(25);
    publish_all(broker.port, "sim-exact", &messages).await;

    let want = expected_rows(&messages, true);
    assert_eq!(want.len(), 12 * 25 * 4);
    wait_for_rows(&collector.store, want.len()).await;
    assert_eq!(collector.count("messages_received_total", &[]), 300);
    assert_eq!(collector.count("readings_rejected_total", &[]), 0);
    let store = collector.store.clone();
    collector.stop().await;
    assert_rows_eq(&stored_rows(&store), &want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn line_protocol_and_bare_values_arrive_exactly() {
    let broker = Mosquitto::start().await;
    let dir = tempfile::tempdir().unwrap();
    let subscriptions = r#"
[[sources.mqtt.subscriptions]]
topic = "lp/+/+/+"
format = "line_protocol"

[[sources.mqtt.subscriptions]]
topic = "val/{site}/{device}/{field}"
format = "value"
measurement = "env"
"#;
    let collector = InProcess::start(&collector_config(
        dir.path(),
        broker.port,
        "formats",
        subscriptions,
    ))
    .await;

    let lp = fleet(4, PayloadFormat::LineProtocol, "lp", FaultConfig::default()).messages(10);
    let values = fleet(3, PayloadFormat::Value, "val", FaultConfig::default()).messages(5);
    let before = now_ns();
    for batch in [&lp, &values] {
        publish_all(broker.port, "sim-formats", batch).await;
    }
    let lp_rows = expected_rows(&lp, false);
    let value_count: usize = values.iter().map(|m| m.expected.len()).sum();
    wait_for_rows(&collector.store, lp_rows.len() + value_count).await;
    let store = collector.store.clone();
    collector.stop().await;
    let after = now_ns();

    let stored = stored_rows(&store);
    let (from_lp, from_values): (Vec<Row>, Vec<Row>) = stored.into_iter().partition(|r| {
        lp_rows
            .iter()
            .any(|w| w.tags == r.tags && w.field == r.field && w.timestamp == r.timestamp)
    });
    assert_rows_eq(&from_lp, &lp_rows);
    // Bare values carry no timestamp: they are stamped on receipt; the rest is exact.
    let unstamped: Vec<Row> = from_values
        .into_iter()
        .map(|r| {
            assert!(
                (before..=after).contains(&r.timestamp),
                "stamped on receipt: {r:?}"
            );
            Row { timestamp: 0, ..r }
        })
        .collect();
    let mut unstamped = unstamped;
    unstamped.sort_by(|a, b| a.partial_cmp(b).unwrap());
    assert_rows_eq(&unstamped, &expected_rows(&values, true));
}

/// The reason the collector counts for a fault the simulator injected.
fn reason(m: &Message) -> &'static str {
    match m.fault.as_ref().map(|f| f.kind) {
        Some(FaultKind::InvalidJson) => "invalid_json",
        Some(FaultKind::WrongType) => "unsupported_value",
        Some(FaultKind::InvalidTimestamp) => "invalid_timestamp",
        Some(FaultKind::Oversized) => "oversized",
        Some(FaultKind::InvalidUtf8) => "invalid_utf8",
        Some(FaultKind::FutureTimestamp | FaultKind::PastTimestamp) => "timestamp_out_of_range",
        Some(FaultKind::Garbage) if std::str::from_utf8(&m.payload).is_ok() => "invalid_json",
        Some(FaultKind::Garbage) => "invalid_utf8",
        None => unreachable!("not a fault"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_payloads_are_counted_by_reason_and_the_good_ones_all_arrive() {
    let broker = Mosquitto::start().await;
    let dir = tempfile::tempdir().unwrap();
    let collector = InProcess::start(&collector_config(
        dir.path(),
        broker.port,
        "malformed",
        JSON_SUBSCRIPTION,
    ))
    .await;

    let faults = FaultConfig {
        every: Some(3),
        kinds: FaultKind::ALL.to_vec(),
        oversized_bytes: 8 * 1024,
    };
    let messages = fleet(6, PayloadFormat::Json, "sensors", faults).messages(40);
    let bad: Vec<&Message> = messages.iter().filter(|m| m.fault.is_some()).collect();
    assert_eq!(bad.len(), 80);
    publish_all(broker.port, "sim-malformed", &messages).await;

    let want = expected_rows(&messages, true);
    wait_for_rows(&collector.store, want.len()).await;
    let m = &collector.metrics;
    wait_for("every rejection to be counted", WAIT, || {
        m.sum("readings_rejected_total", &[]) >= bad.len() as u64
    })
    .await;
    for reason_name in [
        "invalid_json",
        "unsupported_value",
        "invalid_timestamp",
        "oversized",
        "invalid_utf8",
        "timestamp_out_of_range",
    ] {
        let injected = bad.iter().filter(|m| reason(m) == reason_name).count() as u64;
        assert!(injected > 0, "the test injects {reason_name}");
        assert_eq!(
            collector.count("readings_rejected_total", &[("reason", reason_name)]),
            injected,
            "{reason_name}"
        );
    }
    assert_eq!(
        collector.count("readings_rejected_total", &[]),
        bad.len() as u64
    );

    // Still running: a good message from a seventh device arrives too.
    let later: Vec<Message> = fleet(7, PayloadFormat::Json, "sensors", FaultConfig::default())
        .messages(1)
        .into_iter()
        .filter(|m| m.device == "dev-0006")
        .collect();
    assert_eq!(later.len(), 1);
    publish_all(broker.port, "sim-later", &later).await;
    let mut all = want.clone();
    all.extend(expected_rows(&later, true));
    all.sort_by(|a, b| a.partial_cmp(b).unwrap());
    wait_for_rows(&collector.store, all.len()).await;
    let store = collector.store.clone();
    collector.stop().await;
    assert_rows_eq(&stored_rows(&store), &all);
}

/// `collector_config` with TLS files for the source.
fn with_tls(toml: &str, ca: &Path, cert: Option<(&Path, &Path)>) -> String {
    let client = cert.map_or(String::new(), |(c, k)| {
        format!(
            ", client_cert_file = \"{}\", client_key_file = \"{}\"",
            c.display(),
            k.display()
        )
    });
    toml.replace(
        "max_payload_size = \"4KiB\"",
        &format!(
            "max_payload_size = \"4KiB\"\ntls = {{ ca_file = \"{}\"{client} }}",
            ca.display()
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_client_certificate_delivers_and_without_one_is_refused() {
    let broker = Mosquitto::start_with_tls().await;
    let tls = broker.tls.as_ref().unwrap();

    // Without a client certificate the broker refuses the connection; the collector keeps
    // retrying with backoff and never gets in.
    let dir = tempfile::tempdir().unwrap();
    let refused = InProcess::spawn(&with_tls(
        &collector_config(dir.path(), tls.port, "tls-refused", JSON_SUBSCRIPTION),
        &tls.ca,
        None,
    ));
    let m = refused.metrics.clone();
    wait_for("failed TLS attempts", WAIT, || {
        m.sum("source_reconnects_total", &[]) >= 2
    })
    .await;
    assert_eq!(refused.metrics.sum("messages_received_total", &[]), 0);
    assert!(refused
        .metrics
        .gauges()
        .iter()
        .all(|(k, v)| k.name != "source_connected" || *v == 0));
    refused.stop().await;

    let dir = tempfile::tempdir().unwrap();
    let collector = InProcess::start(&with_tls(
        &collector_config(dir.path(), tls.port, "tls", JSON_SUBSCRIPTION),
        &tls.ca,
        Some((&tls.client_cert, &tls.client_key)),
    ))
    .await;
    // The simulator publishes on the plain listener; the collector reads over TLS.
    let messages = fleet(4, PayloadFormat::Json, "sensors", FaultConfig::default()).messages(10);
    publish_all(broker.port, "sim-tls", &messages).await;
    let want = expected_rows(&messages, true);
    wait_for_rows(&collector.store, want.len()).await;
    let store = collector.store.clone();
    collector.stop().await;
    assert_rows_eq(&stored_rows(&store), &want);
}
