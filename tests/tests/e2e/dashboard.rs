//! The dashboard: the JSON query API returns exactly what the simulator sent (raw and
//! downsampled), refuses bad parameters with a 400 that says why, and the page shows the
//! devices and their charts in a real browser (headless Chromium) while the simulator runs.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use simulator::fleet::{FaultConfig, Fleet, FleetConfig, Message, PayloadFormat};
use simulator::mqtt::publish_stream;
use tokio_util::sync::CancellationToken;

use crate::harness::*;
use crate::mqtt::{publish_all, publisher};

const SEC: i64 = 1_000_000_000;

/// A fleet whose sample 0 is at `start_ns`, one sample per second.
fn fleet(devices: usize, start_ns: i64) -> Fleet {
    Fleet::new(FleetConfig {
        devices,
        sites: 2,
        seed: 7,
        start_ns,
        interval: Duration::from_secs(1),
        format: PayloadFormat::Json,
        measurement: "env".into(),
        topic_prefix: "sensors".into(),
        faults: FaultConfig::default(),
        counter: true,
    })
    .unwrap()
}

/// Now, in whole seconds, as nanoseconds.
fn now_s_ns() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    now.as_secs() as i64 * SEC
}

/// A broker, and a collector with its HTTP port on a free port reading the simulator's JSON
/// topics, that has stored `samples` samples of `devices` devices from `start` on.
struct Setup {
    broker: Mosquitto,
    collector: InProcess,
    port: u16,
    fleet: Fleet,
    messages: Vec<Message>,
    _dir: tempfile::TempDir,
}

impl Setup {
    async fn start(id: &str, devices: usize, start: i64, samples: usize) -> Setup {
        let broker = Mosquitto::start().await;
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let toml = with_http(
            &collector_config(dir.path(), broker.port, id, JSON_SUBSCRIPTION),
            port,
        );
        let collector = InProcess::start(&toml).await;
        let fleet = fleet(devices, start);
        let messages = fleet.messages(samples);
        publish_all(broker.port, &format!("sim-{id}"), &messages).await;
        wait_for_rows(&collector.store, expected_rows(&messages, true).len()).await;
        Setup {
            broker,
            collector,
            port,
            fleet,
            messages,
            _dir: dir,
        }
    }
}

/// `GET path` as JSON, with its status.
fn get(port: u16, path: &str) -> (u16, Value) {
    let (status, body) = http(port, "GET", path, "");
    let json = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("GET {path}: {status}, not JSON ({e}): {body:?}"));
    (status, json)
}

/// `GET path`, which must answer 200 with JSON.
fn get_ok(port: u16, path: &str) -> Value {
    let (status, json) = get(port, path);
    assert_eq!(status, 200, "GET {path}: {json}");
    json
}

/// The tags of a JSON series as sorted pairs.
fn tags(series: &Value) -> Vec<(String, String)> {
    series["tags"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect()
}

/// The rows of a `/api/v1/points` answer (nanosecond epochs), in the answer's order.
fn point_rows(json: &Value) -> Vec<Row> {
    let mut rows = Vec::new();
    for s in json["series"].as_array().unwrap() {
        for p in s["points"].as_array().unwrap() {
            rows.push(Row {
                measurement: s["measurement"].as_str().unwrap().to_owned(),
                tags: tags(s),
                field: s["field"].as_str().unwrap().to_owned(),
                timestamp: p[0].as_i64().unwrap(),
                value: format!("float:{}", p[1].as_f64().unwrap()),
            });
        }
    }
    rows
}

/// `[time, count, min, max, mean]` per step of `step` ns, from the values the simulator
/// sent (in time order, as the store adds them), per (tags, field).
type Buckets = BTreeMap<(Vec<(String, String)>, String), Vec<(i64, u64, f64, f64, f64)>>;

fn expected_buckets(rows: &[Row], step: i64) -> Buckets {
    let mut sums = Buckets::new();
    for r in rows {
        let v: f64 = r.value.strip_prefix("float:").unwrap().parse().unwrap();
        let start = r.timestamp - r.timestamp.rem_euclid(step);
        let buckets = sums.entry((r.tags.clone(), r.field.clone())).or_default();
        match buckets.last_mut() {
            Some(b) if b.0 == start => {
                b.1 += 1;
                b.2 = b.2.min(v);
                b.3 = b.3.max(v);
                b.4 += v;
            }
            _ => buckets.push((start, 1, v, v, v)),
        }
    }
    for buckets in sums.values_mut() {
        for b in buckets {
            b.4 /= b.1 as f64; // the sum becomes the mean
        }
    }
    sums
}

fn in_range(rows: &[Row], device: Option<&str>, from: i64, to: i64) -> Vec<Row> {
    rows.iter()
        .filter(|r| (from..to).contains(&r.timestamp))
        .filter(|r| device.is_none_or(|d| r.tags.contains(&("device".into(), d.into()))))
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_returns_exactly_the_readings_sent_raw_and_downsampled() {
    // 10 minutes ago, so that every device is stale by the default rule (5 minutes).
    let start = now_s_ns() - 600 * SEC;
    let setup = Setup::start("api", 6, start, 40).await;
    let (port, messages) = (setup.port, &setup.messages);
    let sent = expected_rows(messages, true);

    // Raw points of one device over a range that cuts samples off at both ends.
    let (from, to) = (start + 5 * SEC, start + 27 * SEC);
    let json = get_ok(
        port,
        &format!("/api/v1/points?device=dev-0002&from={from}&to={to}"),
    );
    let want = in_range(&sent, Some("dev-0002"), from, to);
    assert_eq!(want.len(), 22 * 4);
    assert_rows_eq(&point_rows(&json), &want);
    assert_eq!(json["truncated"], false);

    // Every device; the same range as RFC 3339 and as a duration ago.
    let want = in_range(&sent, None, from, to);
    let json = get_ok(port, &format!("/api/v1/points?from={from}&to={to}"));
    assert_rows_eq(&point_rows(&json), &want);
    let ago = |t: i64| format!("-{}s", (now_s_ns() - t) / SEC);
    let json = get_ok(
        port,
        &format!(
            "/api/v1/points?from={}&to={}&field=temperature&tag=site=site-01",
            urlencode("1970-01-01T00:00:00Z"),
            urlencode(&ago(start + 100 * SEC)),
        ),
    );
    let want: Vec<Row> = sent
        .iter()
        .filter(|r| r.field == "temperature" && r.tags.contains(&("site".into(), "site-01".into())))
        .cloned()
        .collect();
    assert_eq!(want.len(), 3 * 40);
    assert_rows_eq(&point_rows(&json), &want);

    // A limit: the first points in the answer's order (series, then time), and it says so.
    let json = get_ok(port, &format!("/api/v1/points?from={from}&to={to}&limit=7"));
    assert_eq!(
        point_rows(&json),
        want_first(&in_range(&sent, None, from, to), 7)
    );
    assert_eq!(json["truncated"], true);
    // Milliseconds.
    let json = get_ok(
        port,
        &format!("/api/v1/points?device=dev-0001&field=count&from={from}&to={to}&epoch=ms"),
    );
    let times: Vec<i64> = json["series"][0]["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[0].as_i64().unwrap())
        .collect();
    let want: Vec<i64> = in_range(&sent, Some("dev-0001"), from, to)
        .iter()
        .filter(|r| r.field == "count")
        .map(|r| r.timestamp.div_euclid(1_000_000))
        .collect();
    assert_eq!(times, want);

    // Downsampled: min, max and mean per step equal a computation over what was sent.
    for (device, step, from, to) in [
        ("dev-0002", 7, from, to),
        ("dev-0005", 10, start, start + 40 * SEC),
        ("dev-0000", 1, start + 3 * SEC, start + 9 * SEC),
    ] {
        let json = get_ok(
            port,
            &format!("/api/v1/downsample?device={device}&from={from}&to={to}&step={step}s"),
        );
        assert_eq!(
            json["columns"],
            serde_json::json!(["time", "count", "min", "max", "mean"])
        );
        assert_eq!(json["step_s"], step as f64);
        let got: BTreeMap<_, Value> = json["series"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    (tags(s), s["field"].as_str().unwrap().to_owned()),
                    s["buckets"].clone(),
                )
            })
            .collect();
        // Through JSON text and back, as the answer came: the same f64 gives the same text,
        // which the (best-effort) JSON parser turns into the same number on both sides.
        let want: BTreeMap<_, Value> =
            expected_buckets(&in_range(&sent, Some(device), from, to), step * SEC)
                .into_iter()
                .map(|(k, b)| {
                    (
                        k,
                        serde_json::from_str(&serde_json::json!(b).to_string()).unwrap(),
                    )
                })
                .collect();
        assert_eq!(got, want, "{device} step {step}s");
        assert_eq!(got.len(), 4);
    }

    // Devices: exactly those that sent, with their last reading; stale by the default rule.
    let devices = get_ok(port, "/api/v1/devices");
    let last = start + 39 * SEC;
    let want: Vec<Value> = (0..6)
        .map(|i| {
            serde_json::json!({
                "device": format!("dev-{i:04}"),
                "tags": {"site": format!("site-{:02}", i % 2)},
                "last_seen": last + i * 1000,
                "status": "stale",
                "series": 4,
            })
        })
        .collect();
    assert_eq!(devices["devices"], Value::Array(want));
    assert_eq!(devices["stale_after_s"], 300.0);
    assert_eq!(devices["truncated"], false);
    let devices = get_ok(port, "/api/v1/devices?stale=1h&limit=2");
    let status: Vec<&str> = devices["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["status"].as_str().unwrap())
        .collect();
    assert_eq!(status, ["ok", "ok"]);
    assert_eq!(devices["truncated"], true);

    // Latest values: the last sample of each series.
    let latest = get_ok(port, "/api/v1/latest?device=dev-0003");
    let got: Vec<Row> = latest["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| Row {
            measurement: s["measurement"].as_str().unwrap().to_owned(),
            tags: tags(s),
            field: s["field"].as_str().unwrap().to_owned(),
            timestamp: s["time"].as_i64().unwrap(),
            value: format!("float:{}", s["value"].as_f64().unwrap()),
        })
        .collect();
    assert_rows_eq(&got, &in_range(&sent, Some("dev-0003"), last, last + SEC));

    // Filters that match nothing: empty, not an error.
    for path in [
        "/api/v1/points?device=nobody&from=0",
        "/api/v1/downsample?measurement=nothing&from=0&step=1h&to=3600000000000",
        "/api/v1/latest?field=nothing",
    ] {
        assert_eq!(
            get_ok(port, path)["series"],
            serde_json::json!([]),
            "{path}"
        );
    }
    setup.collector.stop().await;
}

fn want_first(rows: &[Row], n: usize) -> Vec<Row> {
    let mut rows = rows.to_vec();
    rows.sort_by(|a, b| a.partial_cmp(b).unwrap());
    rows.truncate(n);
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_parameters_get_a_400_that_says_why() {
    let start = now_s_ns() - 60 * SEC;
    let setup = Setup::start("bad-params", 30, start, 2).await;
    let port = setup.port;

    let day = 86_400 * SEC;
    let cases: &[(&str, &str)] = &[
        ("/api/v1/points", "missing parameter \"from\""),
        ("/api/v1/points?from=-1h&devices=a", "unknown parameter \"devices\": /api/v1/points takes measurement, field, device, tag, from, to, limit, epoch"),
        ("/api/v1/devices?from=-1h", "unknown parameter \"from\""),
        ("/api/v1/points?from=-1h&from=-2h", "parameter \"from\" is given more than once"),
        ("/api/v1/points?from=", "parameter \"from\" is empty"),
        ("/api/v1/points?from=yesterday", "from: \"yesterday\" is not a time"),
        ("/api/v1/points?from=2024-02-30T00:00:00Z", "from: \"2024-02-30T00:00:00Z\" is not a time"),
        ("/api/v1/points?from=-1h&to=soon", "to: \"soon\" is not a time"),
        ("/api/v1/points?from=-1000years", "from: 1000years ago is too far in the past"),
        ("/api/v1/points?from=2024-05-01T12:00:00Z&to=2024-05-01T11:00:00Z", "from (2024-05-01T12:00:00.000000000Z) is not before to (2024-05-01T11:00:00.000000000Z)"),
        ("/api/v1/points?from=5&to=5", "from (1970-01-01T00:00:00.000000005Z) is not before to"),
        ("/api/v1/points?from=-1h&limit=0", "limit: \"0\" is not a whole number from 1 to 100000"),
        ("/api/v1/points?from=-1h&limit=100001", "limit: \"100001\" is not a whole number from 1 to 100000"),
        ("/api/v1/points?from=-1h&limit=-3", "limit: \"-3\" is not a whole number"),
        ("/api/v1/points?from=-1h&epoch=minutes", "epoch: \"minutes\" is not one of ns, us, ms, s"),
        ("/api/v1/points?from=-1h&tag=site", "tag: expected KEY=VALUE (such as site=lab), got \"site\""),
        ("/api/v1/points?from=%zz", "% must be followed by two hex digits"),
        ("/api/v1/points?device=%C3%28&from=-1h", "not UTF-8"),
        ("/api/v1/downsample?from=-1h", "missing parameter \"step\""),
        ("/api/v1/downsample?from=-1h&step=0s", "step: must be more than zero"),
        ("/api/v1/downsample?from=-1h&step=0", "step: must be more than zero"),
        ("/api/v1/downsample?from=-1h&step=soon", "step: \"soon\" is not a duration"),
        ("/api/v1/downsample?from=-1d&step=1s", "step 1s over 1day gives 86401 steps per series; at most 10000: use a step of at least 9s"),
        ("/api/v1/downsample?from=-1000d&step=1ns", "steps per series; at most 10000"),
        ("/api/v1/downsample?from=-1h&step=1s", "this query would return up to 432120 buckets (120 series × 3601 steps); at most 100000: narrow it with device, measurement, field or tag, or use a larger step"),
        ("/api/v1/devices?stale=0s", "stale: must be more than zero"),
        ("/api/v1/devices?limit=10001", "limit: \"10001\" is not a whole number from 1 to 10000"),
        ("/api/v1/latest?limit=x", "limit: \"x\" is not a whole number"),
    ];
    for (path, message) in cases {
        let (status, json) = get(port, path);
        let error = json["error"].as_str().unwrap_or_default();
        assert_eq!(status, 400, "{path}: {json}");
        assert!(
            error.contains(message),
            "{path}: {error:?} does not say {message:?}"
        );
    }
    // The same downsampling, narrowed to one device, is fine.
    let json = get_ok(port, "/api/v1/downsample?from=-1h&step=1s&device=dev-0001");
    assert_eq!(json["series"].as_array().unwrap().len(), 4);
    // A step as large as the range: one bucket per series.
    let json = get_ok(
        port,
        &format!("/api/v1/downsample?from={start}&to={}&step=1d", start + day),
    );
    assert_eq!(json["series"].as_array().unwrap().len(), 120);

    let (status, json) = get(port, "/api/v1/readings?from=-1h");
    assert_eq!(status, 404);
    assert!(json["error"]
        .as_str()
        .unwrap()
        .contains("no such endpoint: /api/v1/readings"));
    assert_eq!(http(port, "POST", "/api/v1/points?from=-1h", "").0, 405);
    assert_eq!(http(port, "GET", "/nothing", "").0, 404);
    setup.collector.stop().await;
}

/// Runs headless Chromium on `url` and returns the DOM once the page's scripts have run.
async fn chromium_dom(url: &str) -> String {
    let binary = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or_else(|| {
            panic!("chromium is not installed: run scripts/test.sh, which installs it (apt-get install -y chromium)")
        });
    let profile = tempfile::tempdir().unwrap();
    let run = tokio::process::Command::new(binary)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,900",
            "--virtual-time-budget=20000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .kill_on_drop(true)
        .stdin(std::process::Stdio::null())
        .output();
    let out = tokio::time::timeout(WAIT, run)
        .await
        .expect("chromium finished in time")
        .expect("run chromium");
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && dom.contains("</html>"),
        "chromium failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    dom
}

/// The attributes of every element of `dom` that has attribute `marker`, in order.
fn elements_with(dom: &str, marker: &str) -> Vec<BTreeMap<String, String>> {
    let mut out = Vec::new();
    let needle = format!(" {marker}=\"");
    let mut rest = dom;
    while let Some(at) = rest.find(&needle) {
        let open = rest[..at].rfind('<').unwrap();
        let close = at + rest[at..].find('>').unwrap();
        let tag = &rest[open..close];
        let mut attrs = BTreeMap::new();
        let mut s = tag;
        while let Some(eq) = s.find("=\"") {
            let name = s[..eq].rsplit(' ').next().unwrap().to_owned();
            let end = eq + 2 + s[eq + 2..].find('"').unwrap();
            attrs.insert(name, s[eq + 2..end].to_owned());
            s = &s[end + 1..];
        }
        out.push(attrs);
        rest = &rest[close..];
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_the_devices_and_their_charts_in_chromium() {
    let start = now_s_ns() - 40 * SEC;
    let setup = Setup::start("page", 5, start, 30).await;
    let (port, fleet) = (setup.port, &setup.fleet);

    // The simulator goes on publishing (samples 30 and on) while the browser looks.
    let stop = CancellationToken::new();
    let more = tokio::spawn({
        let (fleet, stop) = (fleet.clone(), stop.clone());
        let mut config = publisher(setup.broker.port, "sim-dashboard-more");
        config.rate = Some(25.0);
        async move { publish_stream(config, fleet.iter().skip(5 * 30), stop).await }
    });

    let (from_ms, to_ms) = (start / 1_000_000, (start + 30 * SEC) / 1_000_000);
    let url = format!(
        "http://127.0.0.1:{port}/#device=dev-0003&from={from_ms}&to={to_ms}&step=1s&refresh=0"
    );
    let dom = chromium_dom(&url).await;
    stop.cancel();
    let report = more.await.unwrap().unwrap();
    assert!(
        report.sent > 0,
        "the simulator published while the page loaded"
    );

    assert!(
        dom.contains("<body data-state=\"ready\">"),
        "the page did not finish: {dom}"
    );
    let rows = elements_with(&dom, "data-status");
    let devices: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r["data-device"].as_str(), r["data-status"].as_str()))
        .collect();
    assert_eq!(
        devices,
        [
            ("dev-0000", "ok"),
            ("dev-0001", "ok"),
            ("dev-0002", "ok"),
            ("dev-0003", "ok"),
            ("dev-0004", "ok")
        ]
    );
    assert_eq!(rows[3]["class"], "selected");
    // One chart per field of the chosen device, one point per second of the range.
    let charts: Vec<(String, String, String)> = elements_with(&dom, "data-points")
        .into_iter()
        .map(|c| {
            (
                c["data-device"].clone(),
                c["data-series"].clone(),
                c["data-points"].clone(),
            )
        })
        .collect();
    let want: Vec<(String, String, String)> = ["count", "humidity", "pressure", "temperature"]
        .iter()
        .map(|f| ("dev-0003".to_owned(), format!("env.{f}"), "30".to_owned()))
        .collect();
    assert_eq!(charts, want);
    // Each chart has its line: a path with a point per bucket.
    assert_eq!(dom.matches("class=\"mean\"").count(), 4);

    // What goes wrong is shown, not swallowed: a time the page cannot read, and one the API
    // refuses (its 400 message).
    for (hash, message) in [
        ("from=yesterday", "not a time: yesterday"),
        (
            "device=dev-0003&from=0&to=1000&step=1ns",
            "downsample: step 1ns over 1s gives 1000000000 steps per series; at most 10000",
        ),
    ] {
        let dom = chromium_dom(&format!("http://127.0.0.1:{port}/#{hash}&refresh=0")).await;
        assert!(dom.contains("<body data-state=\"error\">"), "{hash}: {dom}");
        assert!(dom.contains(message), "{hash}: no {message:?} in {dom}");
    }
    setup.collector.stop().await;
}
