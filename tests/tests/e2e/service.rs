//! Running under systemd: readiness and the watchdog, through a notification socket the
//! test owns.

use simulator::fleet::{FaultConfig, FaultKind, Message, PayloadFormat};
use simulator::mqtt::publish;
use tokio_util::sync::CancellationToken;

use crate::harness::*;
use crate::influxdb::v2_sink;
use crate::mqtt::{fleet, publish_all, publisher};
use std::os::unix::net::UnixDatagram;

/// The next notification datagram, within [`WAIT`]. (A receive with a timeout is not
/// restarted after a signal, such as the SIGCHLD Tokio's process handling catches: EINTR is
/// tried again.)
fn next_message(socket: &UnixDatagram) -> String {
    socket.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = [0u8; 512];
    let len = loop {
        match socket.recv(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => break other.expect("a notification within the wait"),
        }
    };
    String::from_utf8_lossy(&buf[..len]).into_owned()
}

/// The collector as systemd would run it: its notifications go to a socket the test owns,
/// with a watchdog of 0.4 s (checked every 0.2 s).
async fn start_notified(dir: &std::path::Path, port: u16, id: &str) -> (Process, UnixDatagram) {
    let config = dir.join("collector.toml");
    std::fs::write(&config, collector_config(dir, port, id, JSON_SUBSCRIPTION)).unwrap();
    let socket_path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    let collector = Process::start_with_env(
        &config,
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
        ],
    )
    .await;
    (collector, socket)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_is_sent_once_running_and_the_watchdog_is_fed() {
    let broker = Mosquitto::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (collector, socket) = start_notified(dir.path(), broker.port, "notify").await;
    assert!(next_message(&socket).starts_with("READY=1"));
    for _ in 0..3 {
        let m = next_message(&socket);
        assert!(m.starts_with("WATCHDOG=1\nSTATUS="), "{m}");
    }
    collector.terminate();
    assert_eq!(next_message(&socket), "STOPPING=1");
}

/// A wedged journal (another process holds its write lock, as a hung disk would hold the
/// writer) starves the watchdog while readings wait; once it moves again the watchdog is fed
/// again and every reading arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watchdog_starves_while_the_journal_is_wedged_and_resumes_after() {
    let broker = Mosquitto::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (collector, socket) = start_notified(dir.path(), broker.port, "wedge").await;
    assert!(next_message(&socket).starts_with("READY=1"));
    assert!(next_message(&socket).starts_with("WATCHDOG=1"));

    // Take the journal's write lock, then send readings: they wait in the writer.
    let mut lock = rusqlite::Connection::open(dir.path().join("journal.db")).unwrap();
    let held = lock
        .transaction_with_behavior(rusqlite::TransactionBehavior::Exclusive)
        .unwrap();
    let messages = fleet(3, PayloadFormat::Json, "sensors", FaultConfig::default()).messages(5);
    let mut cfg = publisher(broker.port, "sim-wedge");
    cfg.connections = 1;
    let sending = tokio::spawn(publish(cfg, messages.clone(), CancellationToken::new()));
    let mut waited = 0;
    loop {
        let m = next_message(&socket);
        if m.starts_with("STATUS=wedged") {
            break;
        }
        waited += 1;
        assert!(waited < 50, "no wedge reported; last: {m}");
    }
    // Every check from now on reports the wedge and does not feed the watchdog.
    for _ in 0..5 {
        let m = next_message(&socket);
        assert!(m.starts_with("STATUS=wedged"), "{m}");
    }
    held.rollback().unwrap();
    loop {
        let m = next_message(&socket);
        if m.starts_with("WATCHDOG=1") {
            break;
        }
        assert!(m.starts_with("STATUS=wedged"), "{m}");
    }
    let report = sending.await.unwrap().unwrap();
    assert_eq!(report.acked_count(), messages.len());
    let want = expected_rows(&messages, true);
    let store = dir.path().join("store.db");
    wait_for_rows(&store, want.len()).await;
    assert_rows_eq(&stored_rows(&store), &want);
    collector.terminate();
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
    // Per device: the readings it sent (the faulty messages are not counted against it) and
    // when it was last heard from.
    let mut per_device = std::collections::BTreeMap::<&str, u64>::new();
    for m in &messages {
        *per_device.entry(&m.device).or_default() += m.expected.len() as u64;
    }
    let before = collector::metrics::now_seconds();
    for (device, n) in &per_device {
        let labels = format!("{{{source},device=\"{device}\"}}");
        assert_eq!(
            sample(
                &text,
                &format!("telemetry_collector_device_readings_total{labels}")
            ),
            Some(*n),
            "{device}"
        );
        let seen = sample(
            &text,
            &format!("telemetry_collector_device_last_seen_seconds{labels}"),
        )
        .expect("last seen");
        assert!(
            seen.abs_diff(before) < 120,
            "{device} last seen {seen}, now {before}"
        );
    }
    // Every write is timed: the histogram's count is its +Inf bucket, and at least one.
    let writes = sample(
        &text,
        "telemetry_collector_sink_write_duration_seconds_count{sink=\"local\"}",
    )
    .expect("write duration count");
    assert!(writes >= 1);
    assert_eq!(
        sample(
            &text,
            "telemetry_collector_sink_write_duration_seconds_bucket{sink=\"local\",le=\"+Inf\"}"
        ),
        Some(writes)
    );
    let (status, body) = http(port, "GET", "/health", "");
    assert_eq!(status, 200, "{body}");

    let lag = |sink: &str| {
        let (_, text) = http(port, "GET", "/metrics", "");
        sample(
            &text,
            &format!("telemetry_collector_sink_lag_readings{{sink=\"{sink}\"}}"),
        )
    };
    wait_for("the InfluxDB sink to write everything", WAIT, || {
        lag("influxdb:vm") == Some(0)
    })
    .await;
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
    // The failing sink's lag is what it has not written: the new readings.
    let more_readings = more.iter().map(|m| m.expected.len() as u64).sum::<u64>();
    wait_for("the local sink to catch up", WAIT, || {
        lag("local") == Some(0)
    })
    .await;
    assert_eq!(lag("influxdb:vm"), Some(more_readings));
    vm.start_again().await;
    wait_for("/health to recover", WAIT, || {
        http(port, "GET", "/health", "").0 == 200
    })
    .await;
    wait_for("the InfluxDB sink to catch up", WAIT, || {
        lag("influxdb:vm") == Some(0)
    })
    .await;
    assert_eq!(http(port, "GET", "/nothing", "").0, 404);
    collector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_adds_a_subscription_without_losing_readings_in_flight_and_refuses_a_broken_config()
{
    let broker = Mosquitto::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("collector.toml");
    let store = dir.path().join("store.db");
    let base = collector_config(dir.path(), broker.port, "reload", JSON_SUBSCRIPTION);
    std::fs::write(&config, &base).unwrap();
    let mut collector = Process::start(&config).await;

    // A stream on the first subscription keeps flowing through the reload.
    let first = fleet(6, PayloadFormat::Json, "sensors", FaultConfig::default()).messages(60);
    let mut cfg = publisher(broker.port, "sim-reload-1");
    cfg.rate = Some(200.0);
    let sending = tokio::spawn(publish(cfg, first.clone(), CancellationToken::new()));
    wait_for_rows(&store, 40).await;

    // The new configuration adds a subscription: the MQTT source restarts with it.
    let plant = r#"
[[sources.mqtt.subscriptions]]
topic = "plant/{site}/{device}/+"
measurement = "plant"
"#;
    std::fs::write(
        &config,
        base.replace(JSON_SUBSCRIPTION, &format!("{JSON_SUBSCRIPTION}{plant}")),
    )
    .unwrap();
    collector.signal("HUP");
    // The restarted source subscribes to both filters some time after the reload is logged;
    // a message published before that reaches no subscription of ours.
    collector.wait_for_log("filters=2").await;
    let second = fleet(3, PayloadFormat::Json, "plant", FaultConfig::default()).messages(10);
    publish_all(broker.port, "sim-reload-2", &second).await;
    let report = sending.await.unwrap().unwrap();
    assert_eq!(report.acked_count(), first.len());

    // A broken configuration is refused; the running one goes on.
    std::fs::write(&config, "this is [not toml").unwrap();
    collector.signal("HUP");
    collector
        .wait_for_log("the new configuration is refused")
        .await;
    let third: Vec<Message> = fleet(4, PayloadFormat::Json, "plant", FaultConfig::default())
        .messages(1)
        .into_iter()
        .filter(|m| m.device == "dev-0003")
        .collect();
    publish_all(broker.port, "sim-reload-3", &third).await;

    let as_plant = |messages: &[Message]| -> Vec<Row> {
        expected_rows(messages, true)
            .into_iter()
            .map(|r| Row {
                measurement: "plant".into(),
                ..r
            })
            .collect()
    };
    let mut want = expected_rows(&first, true);
    want.extend(as_plant(&second));
    want.extend(as_plant(&third));
    want.sort_by(|a, b| a.partial_cmp(b).unwrap());
    wait_for_rows(&store, want.len()).await;
    collector.terminate();
    assert_rows_eq(&stored_rows(&store), &want);
}
