//! Running under systemd: readiness and the watchdog, through a notification socket the
//! test owns.

use simulator::fleet::{FaultConfig, FaultKind, PayloadFormat};

use crate::harness::*;
use crate::influxdb::v2_sink;
use crate::mqtt::{fleet, publish_all};
use std::os::unix::net::UnixDatagram;

/// The next notification datagram, within [`WAIT`].
fn next_message(socket: &UnixDatagram) -> String {
    socket.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = [0u8; 512];
    let len = socket
        .recv(&mut buf)
        .expect("a notification within the wait");
    String::from_utf8_lossy(&buf[..len]).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_is_sent_once_running_and_the_watchdog_is_fed() {
    let broker = Mosquitto::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("collector.toml");
    std::fs::write(
        &config,
        collector_config(dir.path(), broker.port, "notify", JSON_SUBSCRIPTION),
    )
    .unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();

    let collector = Process::start_with_env(
        &config,
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
        ],
    )
    .await;
    assert!(next_message(&socket).starts_with("READY=1"));
    for _ in 0..3 {
        assert_eq!(next_message(&socket), "WATCHDOG=1");
    }
    collector.terminate();
    assert_eq!(next_message(&socket), "STOPPING=1");
}

/// The value of the Prometheus sample `name{labels}` in `text`.
fn sample(text: &str, series: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_arrived_and_health_follows_a_sink_that_goes_down() {
    let broker = Mosquitto::start().await;
    let mut vm = VictoriaMetrics::start().await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "test-token").unwrap();
    let port = free_port();
    let toml = collector_config(dir.path(), broker.port, "metrics", JSON_SUBSCRIPTION).replace(
        "[http]\nenabled = false",
        &format!("[http]\nlisten = \"127.0.0.1:{port}\""),
    ) + &v2_sink("vm", &vm.url(), &token);
    let collector = InProcess::start(&toml).await;

    let faults = FaultConfig {
        every: Some(4),
        kinds: vec![FaultKind::InvalidJson, FaultKind::WrongType],
        oversized_bytes: 8 * 1024,
    };
    let messages = fleet(5, PayloadFormat::Json, "sensors", faults).messages(20);
    let bad = messages.iter().filter(|m| m.fault.is_some()).count() as u64;
    let invalid_json = messages
        .iter()
        .filter(|m| {
            m.fault
                .as_ref()
                .is_some_and(|f| f.kind == FaultKind::InvalidJson)
        })
        .count() as u64;
    publish_all(broker.port, "sim-metrics", &messages).await;
    let want = expected_rows(&messages, true);
    wait_for_rows(&collector.store, want.len()).await;
    let m = collector.metrics.clone();
    wait_for("the rejections to be counted", WAIT, || {
        m.sum("readings_rejected_total", &[]) == bad
    })
    .await;

    let (status, text) = http(port, "GET", "/metrics", "");
    assert_eq!(status, 200);
    let source = "source=\"mqtt:broker\"";
    assert_eq!(
        sample(
            &text,
            &format!("telemetry_collector_messages_received_total{{{source}}}")
        ),
        Some(messages.len() as u64)
    );
    assert_eq!(
        sample(
            &text,
            &format!("telemetry_collector_readings_received_total{{{source}}}")
        ),
        Some(messages.len() as u64 - bad)
    );
    assert_eq!(
        sample(
            &text,
            &format!(
                "telemetry_collector_readings_rejected_total{{{source},reason=\"invalid_json\"}}"
            )
        ),
        Some(invalid_json)
    );
    assert_eq!(
        sample(&text, &format!("telemetry_collector_readings_rejected_total{{{source},reason=\"unsupported_value\"}}")),
        Some(bad - invalid_json)
    );
    assert_eq!(
        sample(
            &text,
            "telemetry_collector_readings_written_total{sink=\"local\"}"
        ),
        Some(messages.len() as u64 - bad)
    );
    let (status, body) = http(port, "GET", "/health", "");
    assert_eq!(status, 200, "{body}");

    // The InfluxDB sink goes down: /health says so, with the failing sink, until it is back.
    vm.stop();
    let more = fleet(6, PayloadFormat::Json, "sensors", FaultConfig::default()).messages(2);
    publish_all(broker.port, "sim-metrics-2", &more).await;
    wait_for("/health to report the failing sink", WAIT, || {
        http(port, "GET", "/health", "").0 == 503
    })
    .await;
    let (_, body) = http(port, "GET", "/health", "");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["sinks"]["influxdb:vm"], "failing", "{body}");
    assert_eq!(health["sinks"]["local"], "up", "{body}");
    vm.start_again().await;
    wait_for("/health to recover", WAIT, || {
        http(port, "GET", "/health", "").0 == 200
    })
    .await;
    assert_eq!(http(port, "GET", "/nothing", "").0, 404);
    collector.stop().await;
}
