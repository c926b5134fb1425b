//! InfluxDB sinks against real servers: VictoriaMetrics for the v2 write API (it keeps
//! milliseconds), InfluxDB 1.x for the v1 API (nanoseconds, and 400 for a field type
//! conflict). Exact delivery, fan-out, a store outage, `kill -9` while a sink is behind, the
//! dead-letter file, a dead sink next to the local store, and the token kept secret.

use std::path::Path;
use std::process::{Command, Stdio};

use simulator::fleet::{FaultConfig, Message, PayloadFormat};
use simulator::mqtt::publish;
use tokio_util::sync::CancellationToken;

use crate::harness::*;
use crate::mqtt::{fleet, publish_all, publisher};

pub(crate) const DB: &str = "telemetry";

/// A v2 sink (`influxdb:<name>`) writing to `url` in milliseconds, token from a file.
pub(crate) fn v2_sink(name: &str, url: &str, token_file: &Path) -> String {
    format!(
        r#"
[[sinks.influxdb]]
name = "{name}"
url = "{url}"
org = "org"
bucket = "bucket"
token_file = "{token}"
precision = "ms"
timeout = "2s"
batch = {{ max_readings = 500, max_age = "100ms" }}
retry = {{ initial = "50ms", max = "300ms" }}
"#,
        token = token_file.display()
    )
}

/// A v1 sink (`influxdb:<name>`) writing to `url`, database [`DB`], nanoseconds.
pub(crate) fn v1_sink(name: &str, url: &str) -> String {
    format!(
        r#"
[[sinks.influxdb]]
name = "{name}"
api = "v1"
url = "{url}"
database = "{DB}"
timeout = "2s"
batch = {{ max_readings = 500, max_age = "100ms" }}
retry = {{ initial = "50ms", max = "300ms" }}
"#
    )
}

/// What VictoriaMetrics must hold for `want`: one sample per field, named
/// `<measurement>_<field>`, in milliseconds.
pub(crate) fn as_victoria(want: &[Row]) -> Vec<Row> {
    let mut rows: Vec<Row> = want
        .iter()
        .map(|r| Row {
            measurement: format!("{}_{}", r.measurement, r.field),
            tags: r.tags.clone(),
            field: String::new(),
            timestamp: r.timestamp.div_euclid(1_000_000),
            value: r.value.clone(),
        })
        .collect();
    rows.sort_by(|a, b| a.partial_cmp(b).unwrap());
    rows
}

fn victoria_rows(vm: &VictoriaMetrics) -> Vec<Row> {
    vm.export("env_.*")
}

pub(crate) fn token_file(dir: &Path, token: &str) -> std::path::PathBuf {
    let path = dir.join("influx-token");
    std::fs::write(&path, format!("{token}\n")).unwrap();
    path
}

/// VictoriaMetrics gets gzipped bodies (set in its sink), influxd plain ones (the default
/// for a server on this machine).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_journal_fans_out_exactly_to_victoriametrics_influxd_and_the_local_store() {
    let broker = Mosquitto::start().await;
    let vm = VictoriaMetrics::start().await;
    let influxd = Influxd::start(DB).await;
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(dir.path(), "fan-out-token");
    let toml = collector_config(dir.path(), broker.port, "fanout", JSON_SUBSCRIPTION)
        + &v2_sink("vm", &vm.url(), &token)
        + "gzip = true\n"
        + &v1_sink("influxd", &influxd.url());
    let collector = InProcess::start(&toml).await;

    let messages = fleet(10, PayloadFormat::Json, "sensors", FaultConfig::default()).messages(30);
    publish_all(broker.port, "sim-fanout", &messages).await;
    let want = expected_rows(&messages, true);
    wait_for_rows(&collector.store, want.len()).await;
    wait_for("influxd to hold every value", WAIT, || {
        influxd.count(DB, "env") >= want.len()
    })
    .await;
    wait_for("VictoriaMetrics to hold every value", WAIT, || {
        victoria_rows(&vm).len() >= want.len()
    })
    .await;
    let written = |sink: &str| collector.count("readings_written_total", &[("sink", sink)]);
    let readings = want.len() / 4; // four fields per reading
    assert_eq!(written("local"), readings as u64);
    assert_eq!(written("influxdb:vm"), readings as u64);
    assert_eq!(written("influxdb:influxd"), readings as u64);
    let store = collector.store.clone();
    collector.stop().await;

    assert_rows_eq(&stored_rows(&store), &want);
    assert_rows_eq(&influxd.rows(DB, "env"), &want);
    assert_rows_eq(&victoria_rows(&vm), &as_victoria(&want));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_while_readings_flow_loses_nothing_and_writes_nothing_twice() {
    let broker = Mosquitto::start().await;
    let mut influxd = Influxd::start(DB).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = collector_config(dir.path(), broker.port, "outage", JSON_SUBSCRIPTION)
        + &v1_sink("main", &influxd.url());
    let collector = InProcess::start(&toml).await;

    let messages = fleet(10, PayloadFormat::Json, "sensors", FaultConfig::default()).messages(60);
    let want = expected_rows(&messages, true);
    let mut cfg = publisher(broker.port, "sim-outage");
    cfg.rate = Some(300.0);
    let sending = tokio::spawn(publish(cfg, messages.clone(), CancellationToken::new()));

    // Stop the store mid-stream, and keep it down for several retry periods.
    wait_for("a quarter to reach influxd", WAIT, || {
        influxd.count(DB, "env") >= want.len() / 4
    })
    .await;
    influxd.stop();
    let failures_before =
        collector.count("sink_write_failures_total", &[("sink", "influxdb:main")]);
    let m = collector.metrics.clone();
    wait_for("several failed retries", WAIT, || {
        m.sum("sink_write_failures_total", &[("sink", "influxdb:main")]) >= failures_before + 5
    })
    .await;
    let report = sending.await.unwrap().unwrap();
    assert_eq!(report.acked_count(), messages.len());
    wait_for_rows(&collector.store, want.len()).await;
    assert!(
        influxd_is_down(&influxd),
        "the store stayed down while the rest arrived locally"
    );

    influxd.start_again().await;
    wait_for("influxd to hold every value again", WAIT, || {
        influxd.count(DB, "env") >= want.len()
    })
    .await;
    collector.stop().await;
    // Exactly what was sent: nothing missing, nothing counted twice.
    assert_rows_eq(&influxd.rows(DB, "env"), &want);
    let counted = influxd.query(DB, "SELECT COUNT(temperature) FROM env");
    assert_eq!(
        counted["results"][0]["series"][0]["values"][0][1].as_u64(),
        Some((want.len() / 4) as u64)
    );
}

fn influxd_is_down(influxd: &Influxd) -> bool {
    http(influxd.port, "GET", "/ping", "").0 == 0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_a_sink_is_behind_then_a_restart_resumes_it_from_its_cursor() {
    let broker = Mosquitto::start().await;
    let mut influxd = Influxd::start(DB).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("collector.toml");
    std::fs::write(
        &config,
        collector_config(dir.path(), broker.port, "kill9-influx", JSON_SUBSCRIPTION)
            + &v1_sink("main", &influxd.url()),
    )
    .unwrap();
    let store = dir.path().join("store.db");

    // The store is down: the sink falls behind while everything reaches the journal and the
    // local store.
    influxd.stop();
    let first = Process::start(&config).await;
    let messages = fleet(10, PayloadFormat::Json, "sensors", FaultConfig::default()).messages(40);
    publish_all(broker.port, "sim-kill9-influx", &messages).await;
    let want = expected_rows(&messages, true);
    wait_for_rows(&store, want.len()).await;
    first.kill9();

    influxd.start_again().await;
    assert_eq!(
        influxd.count(DB, "env"),
        0,
        "nothing was written before the kill"
    );
    let second = Process::start(&config).await;
    wait_for("influxd to hold every value", WAIT, || {
        influxd.count(DB, "env") >= want.len()
    })
    .await;
    second.terminate();
    assert_rows_eq(&influxd.rows(DB, "env"), &want);
    assert_rows_eq(&stored_rows(&store), &want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_the_server_rejects_goes_to_the_dead_letter_file_and_the_rest_flows_on() {
    let broker = Mosquitto::start().await;
    let influxd = Influxd::start(DB).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = collector_config(dir.path(), broker.port, "dead-letter", JSON_SUBSCRIPTION)
        + &v1_sink("main", &influxd.url());
    let collector = InProcess::start(&toml).await;

    let messages = fleet(5, PayloadFormat::Json, "sensors", FaultConfig::default()).messages(40);
    let (before, after) = messages.split_at(messages.len() / 2);
    publish_all(broker.port, "sim-dl-1", before).await;
    let want_before = expected_rows(before, true);
    wait_for("the first half in influxd", WAIT, || {
        influxd.count(DB, "env") >= want_before.len()
    })
    .await;

    // `temperature` is a float in influxd now: a string is a field type conflict (HTTP 400).
    let bad = Message {
        topic: "sensors/site-x/dev-bad/env".into(),
        payload: br#"{"temperature":"hot"}"#.to_vec(),
        device: "dev-bad".into(),
        expected: Vec::new(),
        fault: None,
    };
    publish_all(broker.port, "sim-dl-bad", &[bad]).await;
    let m = collector.metrics.clone();
    wait_for("the rejected batch to be dead-lettered", WAIT, || {
        m.sum("readings_dead_lettered_total", &[("sink", "influxdb:main")]) >= 1
    })
    .await;

    publish_all(broker.port, "sim-dl-2", after).await;
    let want = expected_rows(&messages, true);
    wait_for("the second half in influxd", WAIT, || {
        influxd.count(DB, "env") >= want.len()
    })
    .await;
    assert_eq!(
        collector.count("readings_dead_lettered_total", &[("sink", "influxdb:main")]),
        1
    );
    collector.stop().await;
    assert_rows_eq(&influxd.rows(DB, "env"), &want);

    let text = std::fs::read_to_string(dir.path().join("dead-letter/influxdb_main.lp")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].starts_with("# ")
            && lines[0].contains(" sink=influxdb:main readings=1 reason: HTTP 400 Bad Request: ")
            && lines[0].contains("field type conflict"),
        "{text}"
    );
    assert!(
        lines[1].starts_with(r#"env,device=dev-bad,site=site-x temperature="hot" "#),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_that_is_down_does_not_hold_up_the_local_store() {
    let broker = Mosquitto::start().await;
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(dir.path(), "unused");
    // Nothing listens there.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let toml = collector_config(dir.path(), broker.port, "dead-sink", JSON_SUBSCRIPTION)
        .replace("shutdown_timeout = \"20s\"", "shutdown_timeout = \"1s\"")
        + &v2_sink("down", &dead, &token);
    let collector = InProcess::start(&toml).await;

    let messages = fleet(10, PayloadFormat::Json, "sensors", FaultConfig::default()).messages(30);
    publish_all(broker.port, "sim-dead-sink", &messages).await;
    let want = expected_rows(&messages, true);
    wait_for_rows(&collector.store, want.len()).await;
    // Everything is in the local store while the other sink has written nothing and keeps
    // failing.
    assert_eq!(
        collector.count("readings_written_total", &[("sink", "influxdb:down")]),
        0
    );
    assert!(collector.count("sink_write_failures_total", &[("sink", "influxdb:down")]) >= 1);
    let store = collector.store.clone();
    collector.stop().await;
    assert_rows_eq(&stored_rows(&store), &want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_never_shows_in_logs_errors_or_doctor_output() {
    const TOKEN: &str = "tok-e2e-5ecr3t-DO-NOT-PRINT";
    let broker = Mosquitto::start().await;
    let vm = VictoriaMetrics::start().await;
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(dir.path(), TOKEN);
    let dead = format!("http://127.0.0.1:{}", free_port());
    let config = dir.path().join("collector.toml");
    std::fs::write(
        &config,
        collector_config(dir.path(), broker.port, "secret", JSON_SUBSCRIPTION)
            .replace("shutdown_timeout = \"20s\"", "shutdown_timeout = \"1s\"")
            + &v2_sink("vm", &vm.url(), &token)
            + &v2_sink("down", &dead, &token),
    )
    .unwrap();

    // doctor: the broker, the local store and VictoriaMetrics are fine, the dead one is not.
    let doctor = Command::new(env!("CARGO_BIN_EXE_collector-under-test"))
        .args(["doctor", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&doctor.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&doctor.stderr).into_owned();
    assert!(!doctor.status.success(), "{stdout}{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}{stderr}");
    assert!(lines[0].starts_with("OK    mqtt:broker: "), "{stdout}");
    assert!(lines[1].starts_with("OK    local: "), "{stdout}");
    assert!(lines[2].starts_with("OK    influxdb:vm: "), "{stdout}");
    assert!(lines[3].starts_with("FAIL  influxdb:down: "), "{stdout}");

    // run, with debug logs, while one sink fails and one writes.
    let log = dir.path().join("collector.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_collector-under-test"))
        .args(["run", "-c"])
        .arg(&config)
        .env("RUST_LOG", "debug")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let messages = fleet(3, PayloadFormat::Json, "sensors", FaultConfig::default()).messages(5);
    let want = expected_rows(&messages, true);
    wait_for("the collector to subscribe", WAIT, || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("subscribed"))
    })
    .await;
    publish_all(broker.port, "sim-secret", &messages).await;
    wait_for("VictoriaMetrics to hold every value", WAIT, || {
        victoria_rows(&vm).len() >= want.len()
    })
    .await;
    wait_for("the failing sink to log its error", WAIT, || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("sink=influxdb:down"))
    })
    .await;
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    assert!(child.wait().unwrap().success());
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("write failed"), "{logged}");
    for (what, text) in [("doctor", &(stdout + &stderr)), ("the log", &logged)] {
        assert!(!text.contains(TOKEN), "the token is in {what}:\n{text}");
        assert!(
            !text.contains("5ecr3t"),
            "part of the token is in {what}:\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_with_drop_oldest_keeps_the_journal_bounded_and_counts_what_the_lagging_sink_lost()
{
    let broker = Mosquitto::start().await;
    let mut vm = VictoriaMetrics::start().await;
    vm.stop();
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(dir.path(), "overload");
    // The smallest journal (1 MiB, about 10000 readings) and a sink that is down: the
    // journal reaches its bound and drops the oldest readings the sink has not written.
    let toml = collector_config(dir.path(), broker.port, "overload", JSON_SUBSCRIPTION).replace(
        "[pipeline]",
        "[journal]\nmax_bytes = \"1MiB\"\nwhen_full = \"drop_oldest\"\n\n[pipeline]",
    ) + &v2_sink("vm", &vm.url(), &token);
    let collector = InProcess::start(&toml).await;

    // About 60 bytes per reading in the journal (delta-encoded): 30000 readings are well
    // over 1 MiB. Timestamps stay in the past (VictoriaMetrics' export leaves out the last
    // 30 s).
    let messages = fleet(200, PayloadFormat::Json, "sensors", FaultConfig::default()).messages(150);
    publish_all(broker.port, "sim-overload", &messages).await;
    let want = expected_rows(&messages, true);
    let n = messages.len() as u64;
    let m = collector.metrics.clone();
    wait_for("every reading in the journal", WAIT, || {
        m.sum("journal_readings_appended_total", &[]) >= n
    })
    .await;
    let metrics = collector.metrics.clone();
    let dropped = |sink: &str| {
        metrics.sum(
            "readings_dropped_total",
            &[("sink", sink), ("reason", "journal_full")],
        )
    };
    let lost = dropped("influxdb:vm");
    assert!(lost > 0, "the journal reached its bound");
    let journal_bytes = collector
        .metrics
        .gauges()
        .into_iter()
        .find(|(k, _)| k.name == "journal_bytes")
        .map(|(_, v)| v)
        .unwrap();
    assert!(
        journal_bytes <= 1 << 20,
        "journal holds {journal_bytes} bytes"
    );

    // The sink comes back: it writes what is left, and with what was dropped that is every
    // reading, each counted once.
    vm.start_again().await;
    wait_for("the sink to write what the journal kept", WAIT, || {
        m.sum("readings_written_total", &[("sink", "influxdb:vm")]) + lost >= n
    })
    .await;
    // Stopping drains the sink: everything it has is written.
    collector.stop().await;
    let written = m.sum("readings_written_total", &[("sink", "influxdb:vm")]);
    // Every reading is either written or counted as dropped, never both.
    assert_eq!(
        written + dropped("influxdb:vm"),
        n,
        "written {written} + dropped {} for {n} readings",
        dropped("influxdb:vm")
    );
    wait_for("VictoriaMetrics to hold what was written", WAIT, || {
        let mut rows = victoria_rows(&vm);
        rows.dedup();
        rows.len() as u64 >= written * 4
    })
    .await;
    // What arrived is exactly what the sink wrote, each a reading that was sent. (A batch
    // written again after a restart of the server is stored twice by VictoriaMetrics, which
    // does not deduplicate unless told to; InfluxDB overwrites it.)
    let mut got = victoria_rows(&vm);
    got.dedup();
    assert_eq!(got.len() as u64, written * 4);
    let sent = as_victoria(&want);
    let unexpected: Vec<&Row> = got
        .iter()
        .filter(|r| {
            sent.binary_search_by(|s| s.partial_cmp(r).unwrap())
                .is_err()
        })
        .take(5)
        .collect();
    assert!(unexpected.is_empty(), "not sent: {unexpected:#?}");
}

/// Not a test: measures how fast a v2 sink catches up after an outage. VictoriaMetrics is
/// stopped, `BENCH_READINGS` readings (default 100000) go into the journal (and the local
/// store), then it starts again and the time until the sink has written them all is printed.
/// Default sink settings (batches of 5000; not gzipped, the server being on this machine).
///
/// ```sh
/// cargo test --release -p telemetry-tests --test e2e -- --ignored --nocapture bench_catch_up
/// ```
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run it with --ignored --nocapture"]
async fn bench_catch_up_after_an_outage() {
    let readings: usize = std::env::var("BENCH_READINGS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let broker = Mosquitto::start().await;
    let mut vm = VictoriaMetrics::start().await;
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(dir.path(), "bench");
    let toml = collector_config(dir.path(), broker.port, "bench-catch-up", JSON_SUBSCRIPTION)
        + &format!(
            r#"
[[sinks.influxdb]]
name = "vm"
url = "{url}"
org = "org"
bucket = "bucket"
token_file = "{token}"
retry = {{ initial = "50ms", max = "100ms" }}
"#,
            url = vm.url(),
            token = token.display()
        );
    let collector = InProcess::start(&toml).await;
    vm.stop();

    let devices = 100;
    let messages = fleet(
        devices,
        PayloadFormat::Json,
        "sensors",
        FaultConfig::default(),
    )
    .messages(readings.div_ceil(devices));
    publish_all(broker.port, "sim-bench", &messages).await;
    let n = messages.len() as u64;
    let m = collector.metrics.clone();
    wait_for("the local store to hold everything", WAIT * 10, || {
        m.sum("readings_written_total", &[("sink", "local")]) >= n
    })
    .await;
    assert_eq!(
        m.sum("readings_written_total", &[("sink", "influxdb:vm")]),
        0
    );

    vm.start_again().await;
    let start = std::time::Instant::now();
    wait_for("the sink to catch up", WAIT * 10, || {
        m.sum("readings_written_total", &[("sink", "influxdb:vm")]) >= n
    })
    .await;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "catch-up after an outage: {n} readings ({} field values) in {secs:.2} s = {:.0} readings/s",
        n * 4,
        n as f64 / secs
    );
    collector.stop().await;
}

/// Reload with sinks: an added sink starts with what the journal still holds, a changed one
/// goes on from its cursor (what it had not written during an outage arrives), a removed one
/// frees the journal; the local store, unchanged, keeps running through all of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_adds_changes_and_removes_a_sink_without_losing_what_it_had_not_written() {
    let broker = Mosquitto::start().await;
    let mut vm = VictoriaMetrics::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("collector.toml");
    let store = dir.path().join("store.db");
    let token = token_file(dir.path(), "test-token");
    let port = free_port();
    let base = collector_config(dir.path(), broker.port, "sink-reload", JSON_SUBSCRIPTION).replace(
        "[http]\nenabled = false",
        &format!("[http]\nlisten = \"127.0.0.1:{port}\""),
    );
    std::fs::write(&config, &base).unwrap();
    let mut collector = Process::start(&config).await;
    // Batches in disjoint minutes, so that none overwrites another.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    let batch = |k: i64| {
        simulator::fleet::Fleet::new(simulator::fleet::FleetConfig {
            devices: 3,
            start_ns: now - 3_600_000_000_000 + k * 60_000_000_000,
            interval: std::time::Duration::from_secs(1),
            topic_prefix: "sensors".into(),
            ..Default::default()
        })
        .unwrap()
        .messages(10)
    };
    let sent = |batches: &[&Vec<Message>]| -> Vec<Row> {
        let all: Vec<Message> = batches.iter().flat_map(|b| b.iter().cloned()).collect();
        expected_rows(&all, true)
    };
    let journal_bytes = || {
        let (_, text) = http(port, "GET", "/metrics", "");
        text.lines().find_map(|l| {
            l.strip_prefix("telemetry_collector_journal_bytes ")?
                .parse::<u64>()
                .ok()
        })
    };

    // Local only: once it has written A, the journal holds nothing.
    let a = batch(1);
    publish_all(broker.port, "sim-a", &a).await;
    wait_for_rows(&store, sent(&[&a]).len()).await;
    wait_for("the journal to be reclaimed", WAIT, || {
        journal_bytes() == Some(0)
    })
    .await;

    // Add the VictoriaMetrics sink: it starts with what the journal holds (nothing), and
    // gets exactly what comes next.
    let with_vm = base.clone() + &v2_sink("vm", &vm.url(), &token);
    std::fs::write(&config, &with_vm).unwrap();
    collector.signal("HUP");
    collector
        .wait_for_log("sinks updated started=1 stopped=0")
        .await;
    let b = batch(2);
    publish_all(broker.port, "sim-b", &b).await;
    let want_vm = as_victoria(&sent(&[&b]));
    wait_for("VictoriaMetrics to have B", WAIT, || {
        victoria_rows(&vm).len() >= want_vm.len()
    })
    .await;
    assert_rows_eq(&victoria_rows(&vm), &want_vm);

    // VictoriaMetrics goes away; C waits in the journal for it. Its settings change: it is
    // restarted from its cursor, and once the server is back it writes C.
    vm.stop();
    let c = batch(3);
    publish_all(broker.port, "sim-c", &c).await;
    wait_for_rows(&store, sent(&[&a, &b, &c]).len()).await;
    std::fs::write(
        &config,
        with_vm.replace("timeout = \"2s\"", "timeout = \"3s\""),
    )
    .unwrap();
    collector.signal("HUP");
    collector
        .wait_for_log("sinks updated started=1 stopped=1")
        .await;
    vm.start_again().await;
    let want_vm = as_victoria(&sent(&[&b, &c]));
    wait_for("VictoriaMetrics to have B and C", WAIT, || {
        victoria_rows(&vm).len() >= want_vm.len()
    })
    .await;
    assert_rows_eq(&victoria_rows(&vm), &want_vm);

    // VictoriaMetrics goes away again with D unwritten; the sink is removed: the journal no
    // longer holds D for it.
    vm.stop();
    let d = batch(4);
    publish_all(broker.port, "sim-d", &d).await;
    wait_for_rows(&store, sent(&[&a, &b, &c, &d]).len()).await;
    assert!(journal_bytes() > Some(0), "D is held for the stopped sink");
    std::fs::write(&config, &base).unwrap();
    collector.signal("HUP");
    collector
        .wait_for_log("sinks updated started=0 stopped=1")
        .await;
    wait_for("the journal to be reclaimed", WAIT, || {
        journal_bytes() == Some(0)
    })
    .await;

    // The local store never stopped: every reading, once.
    assert_rows_eq(&stored_rows(&store), &sent(&[&a, &b, &c, &d]));
    collector.terminate();
}
