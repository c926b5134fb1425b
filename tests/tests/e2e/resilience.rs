//! Nothing acknowledged is lost: a broker restart, and `kill -9` of the collector.

use simulator::fleet::{FaultConfig, PayloadFormat};
use simulator::mqtt::publish;
use tokio_util::sync::CancellationToken;

use crate::harness::*;
use crate::mqtt::{fleet, publisher};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_mid_stream_loses_no_acked_reading() {
    let mut broker = Mosquitto::start().await;
    let dir = tempfile::tempdir().unwrap();
    let collector = InProcess::start(&collector_config(
        dir.path(),
        broker.port,
        "restart",
        JSON_SUBSCRIPTION,
    ))
    .await;

    let messages = fleet(10, PayloadFormat::Json, "sensors", FaultConfig::default()).messages(120);
    let mut cfg = publisher(broker.port, "sim-restart");
    cfg.rate = Some(400.0);
    let sending = tokio::spawn(publish(cfg, messages.clone(), CancellationToken::new()));

    // Restart once a third has arrived, i.e. truly mid-stream.
    let third = messages.len() * 4 / 3;
    wait_for_rows(&collector.store, third).await;
    broker.restart().await;
    let m = collector.metrics.clone();
    wait_for("the collector to notice the restart", WAIT, || {
        m.sum("source_reconnects_total", &[]) >= 1
    })
    .await;

    let report = sending.await.unwrap().unwrap();
    assert_eq!(
        report.acked_count(),
        messages.len(),
        "every message acked in the end"
    );
    let want = expected_rows(&messages, true);
    wait_for_rows(&collector.store, want.len()).await;
    let store = collector.store.clone();
    collector.stop().await;
    assert_rows_eq(&stored_rows(&store), &want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_collector_mid_stream_loses_no_acked_reading() {
    let broker = Mosquitto::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("collector.toml");
    // Slow batches: at the kill, readings are acked and in the journal but not yet in the
    // store, so the restart must resume the sink from its cursor.
    let toml = collector_config(dir.path(), broker.port, "kill9", JSON_SUBSCRIPTION)
        .replace("max_readings = 500", "max_readings = 100000")
        .replace("max_age = \"100ms\"", "max_age = \"1500ms\"");
    std::fs::write(&config, toml).unwrap();
    let store = dir.path().join("store.db");

    let first = Process::start(&config).await;
    let messages = fleet(10, PayloadFormat::Json, "sensors", FaultConfig::default()).messages(120);
    let mut cfg = publisher(broker.port, "sim-kill9");
    cfg.rate = Some(400.0);
    let sending = tokio::spawn(publish(cfg, messages.clone(), CancellationToken::new()));

    wait_for_rows(&store, messages.len() * 4 / 3).await;
    first.kill9();
    let second = Process::start(&config).await;

    let report = sending.await.unwrap().unwrap();
    assert_eq!(report.acked_count(), messages.len());
    let want = expected_rows(&messages, true);
    wait_for_rows(&store, want.len()).await;
    second.terminate();
    assert_rows_eq(&stored_rows(&store), &want);
}
