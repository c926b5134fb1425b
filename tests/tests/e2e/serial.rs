//! Serial ports to the local store, on real pseudo-terminals: the simulator's devices sit
//! behind links in a temporary directory, the collector opens them by those paths.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use simulator::fleet::{FaultConfig, Message, PayloadFormat};
use simulator::serial::{
    answer, stream, SerialDevice, SerialDeviceConfig, SerialFault, SerialFormat, SerialPort,
    StreamPlan, CSV_COLUMNS,
};
use tokio_util::sync::CancellationToken;

use crate::harness::*;
use crate::mqtt::{fleet, publish_all};

pub(crate) const BAUD: u32 = 115_200;

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

/// A simulated device `ser-NN` (value model `index`), sending `format` with `ending`.
pub(crate) fn device(index: usize, format: SerialFormat, ending: &'static [u8]) -> SerialDevice {
    SerialDevice::new(SerialDeviceConfig {
        id: format!("ser-{index:02}"),
        index,
        seed: 7,
        start_ns: now_ns() - 600_000_000_000,
        interval: Duration::from_secs(1),
        format,
        measurement: "env".into(),
        tags: BTreeMap::from([("location".to_owned(), format!("bench-{index}"))]),
        line_ending: ending,
        overlong_bytes: 2048,
    })
}

/// The `[[sources.serial]]` section that reads `device` on `path`.
pub(crate) fn port_toml(d: &SerialDevice, path: &Path, extra: &str) -> String {
    let c = d.config();
    let format = match c.format {
        SerialFormat::Json => "json",
        SerialFormat::LineProtocol => "line_protocol",
        SerialFormat::KeyValue => "key_value",
        SerialFormat::Csv => "csv",
        SerialFormat::Value => "value",
    };
    let columns: Vec<String> = CSV_COLUMNS.iter().map(|c| format!("{c:?}")).collect();
    format!(
        r#"
[[sources.serial]]
name = "{id}"
path = "{path}"
baud_rate = {BAUD}
format = "{format}"
measurement = "env"
field = "temperature"
device = "{id}"
max_line_length = 1024
tags = {{ location = "{location}" }}
csv = {{ columns = [{columns}] }}
reopen = {{ initial = "100ms", max = "400ms" }}
{extra}
"#,
        id = c.id,
        path = path.display(),
        location = c.tags["location"],
        columns = columns.join(", "),
    )
}

/// A collector reading only serial ports.
pub(crate) fn serial_only_config(dir: &Path, ports: &str) -> String {
    format!(
        r#"
data_dir = "{dir}"

[pipeline]
shutdown_timeout = "20s"

[sinks.local.batch]
max_readings = 500
max_age = "100ms"

{ports}
"#,
        dir = dir.display()
    )
}

fn gauge(c: &InProcess, name: &str, source: &str) -> i64 {
    c.metrics
        .gauges()
        .into_iter()
        .find(|(k, _)| k.name == name && k.labels.iter().any(|(_, v)| v == source))
        .map_or(0, |(_, v)| v)
}

pub(crate) async fn wait_connected(c: &InProcess, ids: &[&str]) {
    wait_for("the serial ports to be open", WAIT, || {
        ids.iter()
            .all(|id| gauge(c, "source_connected", &format!("serial:{id}")) == 1)
    })
    .await;
}

fn lines_read(c: &InProcess, id: &str) -> u64 {
    c.count(
        "messages_received_total",
        &[("source", &format!("serial:{id}"))],
    )
}

/// Rows of bare values are stamped on receipt: checks the stamps and zeroes them, as
/// [`expected_rows`] has no timestamp for them.
fn unstamp(rows: Vec<Row>, device: &str, from: i64, to: i64) -> Vec<Row> {
    let mut rows: Vec<Row> = rows
        .into_iter()
        .map(|r| {
            if r.tags.iter().any(|(k, v)| k == "device" && v == device) {
                assert!(
                    (from..=to).contains(&r.timestamp),
                    "stamped on receipt: {r:?}"
                );
                Row { timestamp: 0, ..r }
            } else {
                r
            }
        })
        .collect();
    rows.sort_by(|a, b| a.partial_cmp(b).unwrap());
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_ports_and_mqtt_devices_at_once_deliver_exactly_what_was_sent() {
    let broker = Mosquitto::start().await;
    let dir = tempfile::tempdir().unwrap();
    let links = tempfile::tempdir().unwrap();
    let devices = [
        device(10, SerialFormat::Json, b"\r\n"),
        device(11, SerialFormat::LineProtocol, b"\n"),
        device(12, SerialFormat::KeyValue, b"\r"),
        device(13, SerialFormat::Csv, b"\r\n"),
        device(14, SerialFormat::Value, b"\n"),
    ];
    let endings = ["crlf", "lf", "cr", "any", "any"];
    let mut ports = Vec::new();
    let mut toml = collector_config(dir.path(), broker.port, "serial-exact", JSON_SUBSCRIPTION);
    for (d, ending) in devices.iter().zip(endings) {
        let link = links.path().join(&d.config().id);
        ports.push(SerialPort::plug(&link, BAUD).unwrap());
        toml += &port_toml(d, &link, &format!("line_ending = \"{ending}\""));
    }
    let collector = InProcess::start(&toml).await;
    let ids: Vec<&str> = devices.iter().map(|d| d.config().id.as_str()).collect();
    wait_connected(&collector, &ids).await;

    let mqtt_messages =
        fleet(6, PayloadFormat::Json, "sensors", FaultConfig::default()).messages(20);
    let before = now_ns();
    let stop = CancellationToken::new();
    let serial = async {
        let sends = ports.iter_mut().zip(&devices).map(|(port, d)| {
            let plan = StreamPlan {
                samples: 0..60,
                ..StreamPlan::default()
            };
            let stop = stop.clone();
            async move { stream(port, d, &plan, &stop).await.unwrap() }
        });
        futures_join_all(sends).await
    };
    let (sent, ()) = tokio::join!(
        serial,
        publish_all(broker.port, "sim-serial", &mqtt_messages)
    );
    let sent: Vec<Message> = sent.into_iter().flatten().collect();
    assert_eq!(sent.len(), 5 * 60);

    let mut want = expected_rows(sent.iter().chain(&mqtt_messages), true);
    // Line protocol keeps integers as integers.
    for r in &mut want {
        if r.tags.iter().any(|(k, v)| k == "device" && v == "ser-11") && r.field == "count" {
            let v: f64 = r.value.trim_start_matches("float:").parse().unwrap();
            r.value = format!("int:{}", v as i64);
        }
    }
    want.sort_by(|a, b| a.partial_cmp(b).unwrap());
    wait_for_rows(&collector.store, want.len()).await;
    for id in &ids {
        assert_eq!(lines_read(&collector, id), 60, "{id}");
    }
    assert_eq!(collector.count("readings_rejected_total", &[]), 0);
    let store = collector.store.clone();
    collector.stop().await;
    let got = unstamp(stored_rows(&store), "ser-14", before, now_ns());
    assert_rows_eq(&got, &want);
}

/// `join_all` without the futures crate: the futures run concurrently on this task.
async fn futures_join_all<F: std::future::Future>(
    futures: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    let mut set: Vec<std::pin::Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, o) in set.iter_mut().zip(out.iter_mut()) {
            if o.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *o = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(|o| o.unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polled_instruments_answer_and_a_silent_one_times_out_without_holding_up_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let links = tempfile::tempdir().unwrap();
    let devices = [
        device(20, SerialFormat::Json, b"\r\n"),
        device(21, SerialFormat::Csv, b"\r\n"),
        device(22, SerialFormat::KeyValue, b"\r\n"),
    ];
    let poll = "[sources.serial.poll]\ncommand = \"READ?\\r\\n\"\ninterval = \"50ms\"\ntimeout = \"40ms\"\n";
    let mut ports = Vec::new();
    let mut toml = String::new();
    for d in &devices {
        let link = links.path().join(&d.config().id);
        ports.push(SerialPort::plug(&link, BAUD).unwrap());
        toml += &port_toml(d, &link, poll);
    }
    let collector = InProcess::start(&serial_only_config(dir.path(), &toml)).await;
    wait_connected(&collector, &["ser-20", "ser-21", "ser-22"]).await;

    let stop = CancellationToken::new();
    let mut ports = ports.into_iter();
    let (mut p0, mut p1, mut p2) = (
        ports.next().unwrap(),
        ports.next().unwrap(),
        ports.next().unwrap(),
    );
    let silent_stop = stop.clone();
    let silent_device = devices[2].clone();
    let silent = tokio::spawn(async move {
        answer(&mut p2, &silent_device, b'\n', 0..100, true, &silent_stop)
            .await
            .unwrap()
    });
    let (a, b) = tokio::join!(
        answer(&mut p0, &devices[0], b'\n', 0..20, false, &stop),
        answer(&mut p1, &devices[1], b'\n', 0..20, false, &stop),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!((a.len(), b.len()), (20, 20));
    let want = expected_rows(a.iter().chain(&b), true);
    wait_for_rows(&collector.store, want.len()).await;
    wait_for("the silent instrument's timeouts", WAIT, || {
        collector.count("poll_timeouts_total", &[("source", "serial:ser-22")]) >= 5
    })
    .await;
    let timeouts = collector.count("poll_timeouts_total", &[("source", "serial:ser-22")]);
    let counted = collector.count(
        "readings_rejected_total",
        &[("source", "serial:ser-22"), ("reason", "poll_timeout")],
    );
    assert!(counted >= timeouts.min(5), "{counted} {timeouts}");
    assert_eq!(lines_read(&collector, "ser-22"), 0);
    stop.cancel();
    assert!(silent.await.unwrap().is_empty());
    let store = collector.store.clone();
    collector.stop().await;
    assert_rows_eq(&stored_rows(&store), &want);
}

/// The most reopen attempts a backoff from `initial` to `max` (each delay at least half its
/// step) can make in `elapsed`, plus one for the attempt under way.
fn max_attempts(initial: Duration, max: Duration, elapsed: Duration) -> u64 {
    let (mut step, mut total, mut n) = (initial, Duration::ZERO, 0);
    while total <= elapsed {
        total += step / 2;
        step = (step * 2).min(max);
        n += 1;
    }
    n + 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absent_then_unplugged_port_is_reopened_with_backoff_and_read_again() {
    let dir = tempfile::tempdir().unwrap();
    let links = tempfile::tempdir().unwrap();
    let d = device(30, SerialFormat::Json, b"\n");
    let link = links.path().join("usb-sim-ser-30");
    let collector =
        InProcess::start(&serial_only_config(dir.path(), &port_toml(&d, &link, ""))).await;
    let source = [("source", "serial:ser-30")];

    // Absent at start: not fatal, retried with backoff.
    wait_for("reopen attempts while absent", WAIT, || {
        collector.count("source_reconnects_total", &source) >= 2
    })
    .await;
    let mut port = SerialPort::plug(&link, BAUD).unwrap();
    wait_connected(&collector, &["ser-30"]).await;
    let stop = CancellationToken::new();
    let first = StreamPlan {
        samples: 0..20,
        ..StreamPlan::default()
    };
    let mut sent = stream(&mut port, &d, &first, &stop).await.unwrap();
    wait_for("the first lines to be read", WAIT, || {
        lines_read(&collector, "ser-30") == 20
    })
    .await;

    // Half a line, then the plug is pulled: counted as a partial line.
    let cut = d.line(20, "cut");
    port.write(&cut.payload[..cut.payload.len() / 2])
        .await
        .unwrap();
    assert!(port.drain(WAIT).await);
    let before = collector.count("source_reconnects_total", &source);
    port.unplug().unwrap();
    let unplugged_at = Instant::now();
    wait_for("the collector to see the unplug", WAIT, || {
        gauge(&collector, "source_connected", "serial:ser-30") == 0
    })
    .await;
    // Stay unplugged for a while: the collector must keep trying, but not spin.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    port.replug().unwrap();
    let unplugged_for = unplugged_at.elapsed();
    wait_for(
        "the collector to reopen the port",
        Duration::from_secs(10),
        || gauge(&collector, "source_connected", "serial:ser-30") == 1,
    )
    .await;
    let attempts = collector.count("source_reconnects_total", &source) - before;
    let bound = max_attempts(
        Duration::from_millis(100),
        Duration::from_millis(400),
        unplugged_for + Duration::from_millis(500),
    );
    assert!(
        (2..=bound).contains(&attempts),
        "{attempts} reopen attempts in {unplugged_for:?} (at most {bound} with this backoff)"
    );

    let second = StreamPlan {
        samples: 21..40,
        ..StreamPlan::default()
    };
    sent.extend(stream(&mut port, &d, &second, &stop).await.unwrap());
    wait_for("the lines after the replug", WAIT, || {
        lines_read(&collector, "ser-30") == 39
    })
    .await;
    let want = expected_rows(&sent, true);
    wait_for_rows(&collector.store, want.len()).await;
    assert_eq!(
        collector.count("readings_rejected_total", &[("source", "serial:ser-30")]),
        1
    );
    assert_eq!(
        collector.count(
            "readings_rejected_total",
            &[("source", "serial:ser-30"), ("reason", "partial_line")]
        ),
        1
    );
    let store = collector.store.clone();
    collector.stop().await;
    assert_rows_eq(&stored_rows(&store), &want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_overlong_lines_and_invalid_utf8_are_counted_and_their_neighbours_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let links = tempfile::tempdir().unwrap();
    let devices = [
        device(40, SerialFormat::Json, b"\r\n"),
        device(41, SerialFormat::KeyValue, b"\n"),
    ];
    let mut ports = Vec::new();
    let mut toml = String::new();
    for d in &devices {
        let link = links.path().join(&d.config().id);
        ports.push(SerialPort::plug(&link, BAUD).unwrap());
        toml += &port_toml(d, &link, "");
    }
    let collector = InProcess::start(&serial_only_config(dir.path(), &toml)).await;
    let stop = CancellationToken::new();
    let mut sent = Vec::new();
    for (port, d) in ports.iter_mut().zip(&devices) {
        let plan = StreamPlan {
            samples: 0..45,
            faults_every: Some(3),
            fault_kinds: SerialFault::ALL.to_vec(),
            ..StreamPlan::default()
        };
        sent.extend(stream(port, d, &plan, &stop).await.unwrap());
    }
    wait_for("every line to be read", WAIT, || {
        lines_read(&collector, "ser-40") == 45 && lines_read(&collector, "ser-41") == 45
    })
    .await;
    let want = expected_rows(&sent, true);
    assert_eq!(want.len(), 2 * 30 * 4);
    wait_for_rows(&collector.store, want.len()).await;
    for reason in ["invalid_utf8", "line_too_long"] {
        let injected = sent
            .iter()
            .filter_map(|m| m.fault)
            .filter(|f| {
                let kind = match f.kind {
                    simulator::fleet::FaultKind::Garbage => SerialFault::Garbage,
                    simulator::fleet::FaultKind::InvalidUtf8 => SerialFault::InvalidUtf8,
                    _ => SerialFault::Overlong,
                };
                kind.reason() == reason
            })
            .count() as u64;
        assert_eq!(
            collector.count("readings_rejected_total", &[("reason", reason)]),
            injected,
            "{reason}"
        );
    }
    assert_eq!(collector.count("readings_rejected_total", &[]), 2 * 15);
    let store = collector.store.clone();
    collector.stop().await;
    assert_rows_eq(&stored_rows(&store), &want);
}
