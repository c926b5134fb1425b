//! Scaling out: collectors in one MQTT 5 shared-subscription group split a stream between
//! them, and an edge collector forwards serial readings through the MQTT sink to a core
//! collector. A real Mosquitto distributes the messages; every collector is a real process.
//!
//! How "exactly once" is proven: each member of the group writes to its own local store, so
//! a reading delivered to two members would be in two stores. The concatenation of the
//! three stores (not their union) must equal what the simulator sent: every reading is
//! there, and none is there twice. Where a crash may legitimately deliver a message twice
//! (`kill -9` before its PUBACK went out), the idempotent store absorbs it, and the test
//! compares the union, as a user of one store would see it.

use std::path::{Path, PathBuf};

use simulator::fleet::{FaultConfig, Message, PayloadFormat};
use simulator::mqtt::publish;
use simulator::serial::{stream, SerialFormat, SerialPort, StreamPlan};
use tokio_util::sync::CancellationToken;

use crate::harness::*;
use crate::mqtt::{fleet, publish_all, publisher};
use crate::serial::{device, port_toml, serial_only_config, wait_connected, BAUD};

/// The group's subscription: the simulator's JSON topics, shared by `collectors`.
const SHARED: &str = r#"
[[sources.mqtt.subscriptions]]
topic = "$share/collectors/sensors/{site}/{device}/{measurement}"
qos = 1
format = "json"
"#;

/// A member of the group: MQTT 5, a persistent session under its own client id, its own
/// journal and local store in `dir`. Returns the configuration file.
fn member(dir: &Path, port: u16, client_id: &str) -> PathBuf {
    let toml = collector_config(dir, port, client_id, SHARED);
    let toml = toml.replace("client_id = ", "protocol = \"5\"\nclient_id = ");
    assert!(toml.contains("protocol = \"5\""));
    let file = dir.join("collector.toml");
    std::fs::write(&file, toml).unwrap();
    file
}

/// Every row of every store, duplicates kept, sorted.
fn concatenation(stores: &[PathBuf]) -> Vec<Row> {
    let mut rows: Vec<Row> = stores.iter().flat_map(|s| stored_rows(s)).collect();
    rows.sort_by(|a, b| a.partial_cmp(b).unwrap());
    rows
}

/// The distinct rows of every store, sorted.
fn union(stores: &[PathBuf]) -> Vec<Row> {
    let mut rows = concatenation(stores);
    rows.dedup();
    rows
}

/// Waits until the stores together hold `n` distinct rows.
async fn wait_for_union(stores: &[PathBuf], n: usize) {
    wait_for_values("the stores", n, || union(stores).len()).await;
}

/// Three group members, started in turn (each has subscribed when it is returned).
async fn group(broker: &Mosquitto) -> (Vec<tempfile::TempDir>, Vec<PathBuf>, Vec<Process>) {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut configs = Vec::new();
    let mut members = Vec::new();
    for (i, d) in dirs.iter().enumerate() {
        let config = member(d.path(), broker.port, &format!("member-{i}"));
        members.push(Process::start(&config).await);
        configs.push(config);
    }
    (dirs, configs, members)
}

fn stores(dirs: &[tempfile::TempDir]) -> Vec<PathBuf> {
    dirs.iter().map(|d| d.path().join("store.db")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_collectors_in_a_shared_group_split_the_stream_and_store_each_reading_once() {
    let broker = Mosquitto::start().await;
    let (dirs, _configs, members) = group(&broker).await;
    let stores = stores(&dirs);

    let messages = fleet(12, PayloadFormat::Json, "sensors", FaultConfig::default()).messages(50);
    publish_all(broker.port, "sim-shared", &messages).await;
    let want = expected_rows(&messages, true);
    wait_for_union(&stores, want.len()).await;
    for m in members {
        m.terminate();
    }

    let shares: Vec<usize> = stores.iter().map(|s| stored_rows(s).len()).collect();
    assert!(
        shares.iter().all(|&n| n > 0),
        "each member got a share of the stream: {shares:?}"
    );
    assert_rows_eq(&concatenation(&stores), &want);
}

/// Mosquitto keeps handing a killed member (a persistent session: MQTT 5 with a session
/// that does not expire) its turn of the group's messages, and queues them in its session;
/// the messages it had received but not acknowledged stay in flight there too. When it is
/// back, under the same client id, it gets them all: nothing went to the other members.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_killed_mid_stream_and_restarted_leaves_no_reading_behind() {
    let broker = Mosquitto::start().await;
    let (dirs, configs, mut members) = group(&broker).await;
    let stores = stores(&dirs);

    let messages = fleet(12, PayloadFormat::Json, "sensors", FaultConfig::default()).messages(60);
    let want = expected_rows(&messages, true);
    let mut cfg = publisher(broker.port, "sim-shared-kill");
    cfg.rate = Some(400.0);
    let sending = tokio::spawn(publish(cfg, messages.clone(), CancellationToken::new()));

    wait_for_union(&stores, want.len() / 3).await;
    let victim = members.pop().unwrap();
    victim.kill9();
    let at_kill = stored_rows(&stores[2]).len();
    members.push(Process::start(&configs[2]).await);

    let report = sending.await.unwrap().unwrap();
    assert_eq!(report.acked_count(), messages.len());
    wait_for_union(&stores, want.len()).await;
    for m in members {
        m.terminate();
    }
    let after = stored_rows(&stores[2]).len();
    assert!(
        after > at_kill,
        "the restarted member stored its queued share ({at_kill} at the kill, {after} at the end)"
    );
    assert_rows_eq(&union(&stores), &want);
}

/// An MQTT sink forwarding to the core through the broker on `port`.
fn forward_to_core(port: u16, client_id: &str, protocol: &str) -> String {
    format!(
        r#"
[[sinks.mqtt]]
name = "core"
host = "127.0.0.1"
port = {port}
protocol = "{protocol}"
client_id = "{client_id}"
topic = "telemetry/{{device}}/{{measurement}}"
# The core reads at most 4 KiB per message (its max_payload_size).
max_message_size = "4KiB"
batch = {{ max_readings = 200, max_age = "50ms" }}
retry = {{ initial = "50ms", max = "500ms" }}

[sinks.local]
enabled = false
"#
    )
}

/// The edge collector: serial ports in, the MQTT sink out (no local store).
fn edge_config(dir: &Path, port: u16, ports: &str) -> String {
    serial_only_config(dir, ports) + &forward_to_core(port, "edge-1", "5")
}

/// The core collector reads what the edge forwards: line protocol, MQTT 3.1.1.
const FORWARDED: &str = r#"
[[sources.mqtt.subscriptions]]
topic = "telemetry/{device}/{measurement}"
qos = 1
format = "line_protocol"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_forwards_serial_readings_to_the_core_which_loses_none_across_a_restart() {
    let broker = Mosquitto::start().await;
    let core_dir = tempfile::tempdir().unwrap();
    let core_config = core_dir.path().join("collector.toml");
    std::fs::write(
        &core_config,
        collector_config(core_dir.path(), broker.port, "core-1", FORWARDED),
    )
    .unwrap();
    let core_store = core_dir.path().join("store.db");
    let core = Process::start(&core_config).await;

    let edge_dir = tempfile::tempdir().unwrap();
    let links = tempfile::tempdir().unwrap();
    let devices = [
        device(50, SerialFormat::Json, b"\n"),
        device(51, SerialFormat::KeyValue, b"\r\n"),
        device(52, SerialFormat::Csv, b"\n"),
    ];
    let mut ports_toml = String::new();
    let mut ports = Vec::new();
    for d in &devices {
        let link = links.path().join(&d.config().id);
        ports.push(SerialPort::plug(&link, BAUD).unwrap());
        ports_toml += &port_toml(d, &link, "");
    }
    let edge = InProcess::start(&edge_config(edge_dir.path(), broker.port, &ports_toml)).await;
    let ids: Vec<&str> = devices.iter().map(|d| d.config().id.as_str()).collect();
    wait_connected(&edge, &ids).await;

    const SAMPLES: u64 = 150;
    let stop = CancellationToken::new();
    let streams: Vec<_> = ports
        .into_iter()
        .zip(devices.clone())
        .map(|(mut port, d)| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let plan = StreamPlan {
                    samples: 0..SAMPLES,
                    ..StreamPlan::default()
                };
                let sent = stream(&mut port, &d, &plan, &stop).await.unwrap();
                (sent, port) // the port stays open until the collector has read it all
            })
        })
        .collect();

    // Four field values per line; restart the core once a third of them arrived.
    let total = devices.len() * SAMPLES as usize * 4;
    wait_for_rows(&core_store, total / 3).await;
    core.kill9();
    let core = Process::start(&core_config).await;

    let mut sent: Vec<Message> = Vec::new();
    let mut open_ports = Vec::new();
    for s in streams {
        let (messages, port) = s.await.unwrap();
        sent.extend(messages);
        open_ports.push(port);
    }
    let want = expected_rows(&sent, true);
    assert_eq!(want.len(), total);
    wait_for_rows(&core_store, want.len()).await;
    assert_sink_wrote(&edge, devices.len() as u64 * SAMPLES).await;
    let sink = [("sink", "mqtt:core")];
    assert!(edge.count("mqtt_messages_published_total", &sink) > 0);
    core.terminate();
    edge.stop().await;
    assert_rows_eq(&stored_rows(&core_store), &want);
}

/// Asserts that the edge's MQTT sink counts exactly `n` readings written, once it has counted
/// them all: the core can store a batch before the edge's sink has its PUBACK and counts it.
async fn assert_sink_wrote(edge: &InProcess, n: u64) {
    let written = || edge.count("readings_written_total", &[("sink", "mqtt:core")]);
    wait_for("the edge's sink to count its writes", WAIT, || {
        written() >= n
    })
    .await;
    assert_eq!(written(), n);
}

/// Edge and core each with their own broker, as when the edge has a local broker for its
/// MQTT devices: the edge forwards through its MQTT sink (MQTT 3.1.1 here) to the central
/// broker, which is restarted mid-stream. The batches the sink had not seen acknowledged are
/// published again from the journal; the copies that had arrived overwrite themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mqtt_sink_loses_nothing_when_the_central_broker_restarts() {
    let local = Mosquitto::start().await;
    let mut central = Mosquitto::start().await;
    let core_dir = tempfile::tempdir().unwrap();
    let core = InProcess::start(&collector_config(
        core_dir.path(),
        central.port,
        "core-2",
        FORWARDED,
    ))
    .await;

    let edge_dir = tempfile::tempdir().unwrap();
    let edge_toml = collector_config(edge_dir.path(), local.port, "edge-2", JSON_SUBSCRIPTION)
        .replace(
            "[sinks.local.batch]",
            &format!(
                "{}\n[sinks.local.batch]",
                forward_to_core(central.port, "edge-2", "3.1.1")
            ),
        );
    let edge = InProcess::start(&edge_toml).await;

    let messages = fleet(10, PayloadFormat::Json, "sensors", FaultConfig::default()).messages(90);
    let want = expected_rows(&messages, true);
    let mut cfg = publisher(local.port, "sim-edge");
    cfg.rate = Some(400.0);
    let sending = tokio::spawn(publish(cfg, messages.clone(), CancellationToken::new()));

    wait_for_rows(&core.store, want.len() / 3).await;
    central.restart().await;
    let report = sending.await.unwrap().unwrap();
    assert_eq!(report.acked_count(), messages.len());
    wait_for_rows(&core.store, want.len()).await;
    let sink = [("sink", "mqtt:core")];
    assert!(
        edge.count("sink_write_failures_total", &sink) >= 1,
        "the restart interrupted the sink"
    );
    assert_sink_wrote(&edge, messages.len() as u64).await;
    let store = core.store.clone();
    edge.stop().await;
    core.stop().await;
    assert_rows_eq(&stored_rows(&store), &want);
}

/// MQTT 5 PUBACKs carry reason codes: a message that reached no subscriber is still
/// acknowledged (the reading is written as far as the sink can tell), but counted, so that a
/// forwarding to a topic nobody reads does not go unnoticed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mqtt_5_sink_counts_the_messages_that_reached_no_subscriber() {
    let broker = Mosquitto::start().await;
    let dir = tempfile::tempdir().unwrap();
    let toml = collector_config(dir.path(), broker.port, "edge-3", JSON_SUBSCRIPTION).replace(
        "[sinks.local.batch]",
        &format!(
            "{}\n[sinks.local.batch]",
            forward_to_core(broker.port, "edge-3-sink", "5")
        ),
    );
    let edge = InProcess::start(&toml).await;
    let messages = fleet(4, PayloadFormat::Json, "sensors", FaultConfig::default()).messages(5);
    publish_all(broker.port, "sim-nobody", &messages).await;
    let sink = [("sink", "mqtt:core")];
    wait_for_values("the MQTT sink", messages.len(), || {
        edge.count("readings_written_total", &sink) as usize
    })
    .await;
    let published = edge.count("mqtt_messages_published_total", &sink);
    assert!(published > 0);
    assert_eq!(
        edge.count("mqtt_messages_without_subscribers_total", &sink),
        published
    );
    edge.stop().await;
}

/// `doctor` checks an MQTT 5 source and every MQTT sink, as `<client id>-doctor` (the
/// collector's own sessions are untouched), and never shows a password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_checks_mqtt_5_sources_and_mqtt_sinks_without_showing_a_password() {
    let broker = Mosquitto::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = member(dir.path(), broker.port, "doc-1");
    let dead = format!(
        "{}\n[[sinks.mqtt]]\nname = \"dead\"\nhost = \"127.0.0.1\"\nport = {}\nusername = \"edge\"\npassword = \"hunter2-secret\"\n",
        forward_to_core(broker.port, "doc-sink", "5"),
        free_port()
    );
    let toml = std::fs::read_to_string(&config).unwrap() + &dead;
    std::fs::write(&config, toml).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_collector-under-test"))
        .args(["doctor", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    let port = broker.port;
    for want in [
        format!("OK    mqtt:broker: 127.0.0.1:{port} accepts connections (MQTT 5)"),
        format!("OK    mqtt:core: 127.0.0.1:{port} accepts connections (MQTT 5)"),
        "FAIL  mqtt:dead: ".to_string(),
    ] {
        assert!(text.contains(&want), "missing {want:?} in:\n{text}");
    }
    assert!(!text.contains("hunter2"), "{text}");
}
