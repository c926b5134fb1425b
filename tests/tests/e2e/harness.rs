//! Shared helpers: real servers on free loopback ports, the collector in-process or as a
//! process, and exact comparison of what the simulator sent with what the store holds.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use collector::config::Config;
use collector::metrics::Metrics;
use collector::reading::FieldValue;
use collector::store::{LocalStore, Query};
use simulator::fleet::{ExpectedValue, Message};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long any readiness or delivery wait may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(60);

/// Polls `cond` every 20 ms until it holds; panics with `what` after `timeout`.
pub async fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

fn mosquitto_binary() -> PathBuf {
    for p in ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("mosquitto is not installed: run scripts/test.sh, which installs it (apt-get install -y mosquitto)");
}

/// The user running the tests. Mosquitto started as root drops to user `mosquitto` unless
/// told otherwise, and could then not write its persistence file into our directory.
fn current_user() -> String {
    Command::new("id")
        .arg("-un")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "root".to_string())
}

/// A real Mosquitto on a free loopback port, with persistence in its own directory (so that
/// a restart keeps sessions and queued messages, as a production broker would).
pub struct Mosquitto {
    child: Option<Child>,
    /// The port it listens on (plain TCP).
    pub port: u16,
    /// A second, TLS listener, if started with [`Mosquitto::start_with_tls`].
    pub tls: Option<TlsListener>,
    dir: tempfile::TempDir,
}

/// A TLS listener that requires a client certificate, and the files a client needs.
pub struct TlsListener {
    /// Its port.
    pub port: u16,
    /// The CA that signed the server's and the client's certificates.
    pub ca: PathBuf,
    /// A client certificate the broker accepts.
    pub client_cert: PathBuf,
    /// Its key.
    pub client_key: PathBuf,
}

/// Runs openssl with `args` in `dir`.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A throwaway CA, a server certificate for 127.0.0.1 and a client certificate, in `dir`.
pub fn make_certificates(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
    ]);
    openssl(dir, &ca);
    for (name, usage, san) in [
        ("server", "serverAuth", "subjectAltName=IP:127.0.0.1\n"),
        ("client", "clientAuth", ""),
    ] {
        let ext = dir.join(format!("{name}.ext"));
        std::fs::write(
            &ext,
            format!("{san}basicConstraints=CA:FALSE\nextendedKeyUsage={usage}\n"),
        )
        .expect("write ext");
        let (key, csr, pem) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
        );
        let subj = format!("/CN={name}");
        let mut req = vec!["req"];
        req.extend(ec);
        req.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
        openssl(dir, &req);
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
            ],
        );
    }
}

impl Mosquitto {
    /// Starts a broker and waits until it accepts connections.
    pub async fn start() -> Mosquitto {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut m = Mosquitto {
            child: None,
            port: free_port(),
            tls: None,
            dir,
        };
        m.launch().await;
        m
    }

    /// Starts a broker with a plain listener and a TLS listener that requires a client
    /// certificate.
    pub async fn start_with_tls() -> Mosquitto {
        let dir = tempfile::tempdir().expect("tempdir");
        make_certificates(dir.path());
        let tls = TlsListener {
            port: free_port(),
            ca: dir.path().join("ca.pem"),
            client_cert: dir.path().join("client.pem"),
            client_key: dir.path().join("client.key"),
        };
        let mut m = Mosquitto {
            child: None,
            port: free_port(),
            tls: Some(tls),
            dir,
        };
        m.launch().await;
        m
    }

    async fn launch(&mut self) {
        let conf = self.dir.path().join("mosquitto.conf");
        let tls = match &self.tls {
            Some(t) => format!(
                "listener {port} 127.0.0.1\n\
                 cafile {dir}/ca.pem\n\
                 certfile {dir}/server.pem\n\
                 keyfile {dir}/server.key\n\
                 require_certificate true\n",
                port = t.port,
                dir = self.dir.path().display()
            ),
            None => String::new(),
        };
        std::fs::write(
            &conf,
            tls + &format!(
                "user {user}\n\
                 listener {port} 127.0.0.1\n\
                 allow_anonymous true\n\
                 persistence true\n\
                 persistence_location {dir}/\n\
                 autosave_interval 1\n\
                 max_queued_messages 1000000\n\
                 log_dest file {dir}/mosquitto.log\n",
                port = self.port,
                dir = self.dir.path().display(),
                user = current_user(),
            ),
        )
        .expect("write mosquitto.conf");
        let child = Command::new(mosquitto_binary())
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto");
        self.child = Some(child);
        let ports = [Some(self.port), self.tls.as_ref().map(|t| t.port)];
        wait_for("mosquitto to accept connections", WAIT, || {
            ports
                .iter()
                .flatten()
                .all(|p| TcpStream::connect(("127.0.0.1", *p)).is_ok())
        })
        .await;
    }

    /// Stops the broker gracefully (SIGTERM: it saves its persistence file) and waits.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, with the same persistence.
    pub async fn restart(&mut self) {
        self.stop();
        self.launch().await;
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A collector configuration for tests: one MQTT connection to `port`, data under `dir`.
pub fn collector_config(dir: &Path, port: u16, client_id: &str, subscriptions: &str) -> String {
    format!(
        r#"
data_dir = "{dir}"

[http]
enabled = false

[pipeline]
shutdown_timeout = "20s"

[[sources.mqtt]]
name = "broker"
host = "127.0.0.1"
port = {port}
client_id = "{client_id}"
reconnect = {{ initial = "50ms", max = "500ms" }}
max_payload_size = "4KiB"

{subscriptions}

[sinks.local.batch]
max_readings = 500
max_age = "100ms"
"#,
        dir = dir.display()
    )
}

/// `toml` (from [`collector_config`]) with the HTTP port (metrics, health, dashboard) on
/// 127.0.0.1:`port`.
pub fn with_http(toml: &str, port: u16) -> String {
    assert!(
        toml.contains("[http]\nenabled = false"),
        "not a collector_config"
    );
    toml.replace(
        "[http]\nenabled = false",
        &format!("[http]\nlisten = \"127.0.0.1:{port}\""),
    )
}

/// The usual subscription: the simulator's JSON topics.
pub const JSON_SUBSCRIPTION: &str = r#"
[[sources.mqtt.subscriptions]]
topic = "sensors/{site}/{device}/{measurement}"
qos = 1
format = "json"
"#;

/// The collector running in this process.
pub struct InProcess {
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
    /// Its metrics.
    pub metrics: Metrics,
    /// Its local store (which does not exist if it has none).
    pub store: PathBuf,
    sources: usize,
}

impl InProcess {
    /// Starts the collector on `toml` and waits until every source is subscribed.
    pub async fn start(toml: &str) -> InProcess {
        let c = InProcess::spawn(toml);
        let (m, sources) = (c.metrics.clone(), c.sources);
        wait_for("the collector to subscribe", WAIT, || {
            m.gauges()
                .iter()
                .filter(|(k, v)| k.name == "source_subscribed" && *v == 1)
                .count()
                == sources
        })
        .await;
        c
    }

    /// Starts the collector on `toml` without waiting for anything.
    pub fn spawn(toml: &str) -> InProcess {
        let settings = Config::from_toml(toml)
            .and_then(Config::validate)
            .unwrap_or_else(|e| panic!("test config invalid:\n{e}"));
        let sources = settings.mqtt.len();
        // Without a local store (an edge collector that only forwards), where it would be.
        let store = settings
            .local
            .as_ref()
            .map_or_else(|| settings.data_dir.join("store.db"), |l| l.path.clone());
        let metrics = Metrics::new();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(collector::run(settings, metrics.clone(), shutdown.clone()));
        InProcess {
            shutdown,
            task,
            metrics,
            store,
            sources,
        }
    }

    /// A counter's total over labels.
    pub fn count(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.metrics.sum(name, labels)
    }

    /// Stops it gracefully and waits.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task
            .await
            .expect("collector task")
            .expect("collector run");
    }
}

/// The collector as a real process (for kill -9 and restarts).
pub struct Process {
    child: Child,
    lines: std_mpsc::Receiver<String>,
}

impl Process {
    /// Starts `collector-under-test run -c config` and waits until its log says it is
    /// subscribed.
    pub async fn start(config: &Path) -> Process {
        Process::start_with_env(config, &[]).await
    }

    /// [`Process::start`] with extra environment variables.
    pub async fn start_with_env(config: &Path, env: &[(&str, &str)]) -> Process {
        let mut child = Command::new(env!("CARGO_BIN_EXE_collector-under-test"))
            .arg("run")
            .arg("-c")
            .arg(config)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the collector");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = std_mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut p = Process { child, lines };
        p.wait_for_log("subscribed").await;
        p
    }

    /// Waits until a log line contains `needle`.
    pub async fn wait_for_log(&mut self, needle: &str) {
        let start = Instant::now();
        loop {
            match self.lines.try_recv() {
                Ok(line) if line.contains(needle) => return,
                Ok(_) => continue,
                Err(std_mpsc::TryRecvError::Empty) => {
                    if let Ok(Some(status)) = self.child.try_wait() {
                        panic!("the collector exited ({status}) before logging {needle:?}");
                    }
                    assert!(
                        start.elapsed() < WAIT,
                        "no log line with {needle:?} after {WAIT:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(std_mpsc::TryRecvError::Disconnected) => {
                    panic!("the collector closed its log before {needle:?}")
                }
            }
        }
    }

    /// Every log line written since the last call (or since it started), without waiting.
    pub fn take_lines(&mut self) -> Vec<String> {
        self.lines.try_iter().collect()
    }

    /// Sends `signal` (such as `HUP`).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and waits for a clean exit.
    pub fn terminate(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let status = self.child.wait().expect("wait for the collector");
        assert!(status.success(), "the collector exited with {status}");
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One stored field value, in a form that compares exactly.
#[derive(Debug, Clone, PartialEq, PartialOrd)]
pub struct Row {
    /// Measurement.
    pub measurement: String,
    /// Tags, sorted.
    pub tags: Vec<(String, String)>,
    /// Field name.
    pub field: String,
    /// Nanoseconds.
    pub timestamp: i64,
    /// The value as the store holds it.
    pub value: String,
}

/// Every point in the store, sorted.
pub fn stored_rows(store: &Path) -> Vec<Row> {
    if !store.exists() {
        return Vec::new();
    }
    let store = LocalStore::open_read_only(store).expect("open store");
    let mut rows: Vec<Row> = store
        .query(&Query::default())
        .expect("query store")
        .into_iter()
        .map(|p| Row {
            measurement: p.measurement,
            tags: p.tags,
            field: p.field,
            timestamp: p.timestamp,
            value: value_text(&p.value),
        })
        .collect();
    rows.sort_by(|a, b| a.partial_cmp(b).expect("comparable"));
    rows
}

fn value_text(v: &FieldValue) -> String {
    match v {
        FieldValue::Float(f) => format!("float:{f}"),
        FieldValue::Integer(i) => format!("int:{i}"),
        FieldValue::Unsigned(u) => format!("uint:{u}"),
        FieldValue::Boolean(b) => format!("bool:{b}"),
        FieldValue::String(s) => format!("str:{s}"),
    }
}

/// What the store must hold for `messages`. With `ints_as_float` (the collector's default
/// for JSON) integers are stored as floats; line protocol keeps them integers.
pub fn expected_rows<'a>(
    messages: impl IntoIterator<Item = &'a Message>,
    ints_as_float: bool,
) -> Vec<Row> {
    let mut rows = Vec::new();
    for m in messages {
        for r in &m.expected {
            let tags: Vec<(String, String)> = r
                .tags
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<BTreeMap<_, _>>()
                .into_iter()
                .collect();
            for (field, value) in &r.fields {
                rows.push(Row {
                    measurement: r.measurement.clone(),
                    tags: tags.clone(),
                    field: field.clone(),
                    // 0 where the payload has none (bare values): stamped on receipt.
                    timestamp: r.timestamp_ns.unwrap_or(0),
                    value: match value {
                        ExpectedValue::Float(f) => format!("float:{f}"),
                        ExpectedValue::Integer(i) if ints_as_float => {
                            format!("float:{}", *i as f64)
                        }
                        ExpectedValue::Integer(i) => format!("int:{i}"),
                    },
                });
            }
        }
    }
    rows.sort_by(|a, b| a.partial_cmp(b).expect("comparable"));
    rows
}

/// Waits until the store holds `n` field values (or fails after [`WAIT`]).
pub async fn wait_for_rows(store: &Path, n: usize) {
    wait_for_values("the store", n, || stored_rows(store).len()).await;
}

/// Waits until `count()` (the field values `what` holds) reaches `n`, or fails after [`WAIT`].
pub async fn wait_for_values(what: &str, n: usize, mut count: impl FnMut() -> usize) {
    let start = Instant::now();
    loop {
        let have = count();
        if have >= n {
            return;
        }
        assert!(
            start.elapsed() < WAIT,
            "{what} holds {have} of {n} values after {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Asserts that two sorted row lists are equal, printing only the differences.
pub fn assert_rows_eq(got: &[Row], want: &[Row]) {
    assert_same(got, want, "store differs from what was sent");
}

/// Asserts that two sorted lists are equal, printing `context` and only the differences.
pub fn assert_same<T: PartialEq + std::fmt::Debug>(got: &[T], want: &[T], context: &str) {
    if got == want {
        return;
    }
    let missing: Vec<&T> = want.iter().filter(|r| !got.contains(r)).take(5).collect();
    let extra: Vec<&T> = got.iter().filter(|r| !want.contains(r)).take(5).collect();
    panic!(
        "{context}: {} there, {} expected\nmissing (first 5): {missing:#?}\nunexpected (first 5): {extra:#?}",
        got.len(),
        want.len()
    );
}

// ---- InfluxDB-compatible servers (the InfluxDB sinks' tests) ----

pub fn server_binary(name: &str, package: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/sbin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("{name} is not installed: run scripts/test.sh, which installs it (apt-get install -y {package})");
}

/// Sends one HTTP/1.0 request to 127.0.0.1:`port` and returns the status code and body
/// (a test helper: the collector's own client is what is under test).
pub fn http(port: u16, method: &str, path_and_query: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let request = format!(
        "{method} {path_and_query} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    if stream.write_all(request.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut response = String::new();
    if stream.read_to_string(&mut response).is_err() {
        return (0, String::new());
    }
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Percent-encodes a query parameter.
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A server process that can be stopped and started again on the same port with the same
/// data (for outages).
struct Server {
    child: Option<Child>,
    binary: PathBuf,
    args: Vec<String>,
    log: PathBuf,
}

impl Server {
    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("server log");
        let child = Command::new(&self.binary)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start the server");
        self.child = Some(child);
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let _ = child.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits until `GET path` on `port` answers `want`.
async fn wait_http(what: &str, port: u16, path: &str, want: u16) {
    wait_for(what, WAIT, || http(port, "GET", path, "").0 == want).await;
}

/// A real VictoriaMetrics (Debian's `victoria-metrics`): speaks the InfluxDB v2 write API
/// (`/api/v2/write`), keeps milliseconds.
pub struct VictoriaMetrics {
    server: Server,
    /// Its HTTP port.
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl VictoriaMetrics {
    /// Starts it on a free port and waits for `/health`.
    pub async fn start() -> VictoriaMetrics {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let server = Server {
            child: None,
            binary: server_binary("victoria-metrics", "victoria-metrics"),
            args: vec![
                format!("-httpListenAddr=127.0.0.1:{port}"),
                format!("-storageDataPath={}", dir.path().join("data").display()),
                "-retentionPeriod=100y".into(),
                "-loggerLevel=ERROR".into(),
            ],
            log: dir.path().join("vm.log"),
        };
        let mut vm = VictoriaMetrics {
            server,
            port,
            _dir: dir,
        };
        vm.start_again().await;
        vm
    }

    /// Stops it (SIGTERM) and waits.
    pub fn stop(&mut self) {
        self.server.stop();
    }

    /// Starts it again, same port and data, and waits for `/health`.
    pub async fn start_again(&mut self) {
        self.server.launch();
        wait_http("victoria-metrics /health", self.port, "/health", 200).await;
    }

    /// The URL the collector writes to.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every sample of the series whose names match `regex`, sorted, as rows: VictoriaMetrics
    /// names InfluxDB data `<measurement>_<field>`, which is the row's measurement (its field
    /// is empty); timestamps are milliseconds, values floats.
    pub fn export(&self, regex: &str) -> Vec<Row> {
        let _ = http(self.port, "GET", "/internal/force_flush", "");
        let query = format!(
            "/api/v1/export?match[]={}",
            urlencode(&format!("{{__name__=~\"{regex}\"}}"))
        );
        let (status, body) = http(self.port, "GET", &query, "");
        assert_eq!(status, 200, "export: {body}");
        let mut out = Vec::new();
        for line in body.lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line).expect("export line");
            let mut labels: Vec<(String, String)> = v["metric"]
                .as_object()
                .expect("metric")
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect();
            labels.sort();
            let name = labels
                .iter()
                .position(|(k, _)| k == "__name__")
                .map(|i| labels.remove(i).1)
                .expect("__name__");
            let values = v["values"].as_array().expect("values");
            let stamps = v["timestamps"].as_array().expect("timestamps");
            for (value, ts) in values.iter().zip(stamps) {
                out.push(Row {
                    measurement: name.clone(),
                    tags: labels.clone(),
                    field: String::new(),
                    timestamp: ts.as_i64().expect("ts"),
                    value: format!("float:{}", value.as_f64().expect("value")),
                });
            }
        }
        out.sort_by(|a, b| a.partial_cmp(b).expect("comparable"));
        out
    }
}

/// A real InfluxDB 1.x (Debian's `influxdb`): the v1 `/write` API, nanoseconds, and 400 for
/// a field type conflict. Every port it opens is a free one.
pub struct Influxd {
    server: Server,
    /// Its HTTP port.
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Influxd {
    /// Starts it on free ports, waits for `/ping` and creates `database`.
    pub async fn start(database: &str) -> Influxd {
        let dir = tempfile::tempdir().expect("tempdir");
        let (port, rpc) = (free_port(), free_port());
        let d = dir.path().display();
        let conf = dir.path().join("influxdb.conf");
        std::fs::write(
            &conf,
            format!(
                "reporting-disabled = true\n\
                 bind-address = \"127.0.0.1:{rpc}\"\n\
                 [meta]\n  dir = \"{d}/meta\"\n\
                 [data]\n  dir = \"{d}/data\"\n  wal-dir = \"{d}/wal\"\n  query-log-enabled = false\n\
                 [http]\n  bind-address = \"127.0.0.1:{port}\"\n  log-enabled = false\n\
                 [monitor]\n  store-enabled = false\n\
                 [continuous_queries]\n  enabled = false\n"
            ),
        )
        .expect("write influxdb.conf");
        let server = Server {
            child: None,
            binary: server_binary("influxd", "influxdb"),
            args: vec!["-config".into(), conf.display().to_string()],
            log: dir.path().join("influxd.log"),
        };
        let mut db = Influxd {
            server,
            port,
            _dir: dir,
        };
        db.start_again().await;
        db.query(database, &format!("CREATE DATABASE \"{database}\""));
        db
    }

    /// Stops it (SIGTERM) and waits.
    pub fn stop(&mut self) {
        self.server.stop();
    }

    /// Starts it again, same ports and data, and waits for `/ping`.
    pub async fn start_again(&mut self) {
        self.server.launch();
        wait_http("influxd /ping", self.port, "/ping", 204).await;
    }

    /// The URL the collector writes to.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Runs an InfluxQL query (POST /query, nanosecond epochs) and returns its JSON.
    pub fn query(&self, database: &str, q: &str) -> serde_json::Value {
        let (status, body) = http(
            self.port,
            "POST",
            &format!("/query?db={}&epoch=ns", urlencode(database)),
            &format!("q={}", urlencode(q)),
        );
        assert_eq!(status, 200, "{q}: {body}");
        serde_json::from_str(&body).expect("query JSON")
    }

    /// Every field value of `measurement` as rows (floats only: what JSON payloads give).
    pub fn rows(&self, database: &str, measurement: &str) -> Vec<Row> {
        let v = self.query(
            database,
            &format!("SELECT * FROM \"{measurement}\" GROUP BY *"),
        );
        let mut rows = Vec::new();
        let Some(series) = v["results"][0]["series"].as_array() else {
            return rows;
        };
        for s in series {
            let mut tags: Vec<(String, String)> = s["tags"]
                .as_object()
                .map(|o| {
                    o.iter()
                        .filter(|(_, v)| v.as_str().is_some_and(|v| !v.is_empty()))
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect()
                })
                .unwrap_or_default();
            tags.sort();
            let columns: Vec<&str> = s["columns"]
                .as_array()
                .expect("columns")
                .iter()
                .map(|c| c.as_str().unwrap_or_default())
                .collect();
            for values in s["values"].as_array().expect("values") {
                let values = values.as_array().expect("row");
                let ts = values[0].as_i64().expect("time");
                for (c, v) in columns.iter().zip(values).skip(1) {
                    let value = match v {
                        serde_json::Value::Null => continue,
                        serde_json::Value::Number(n) => {
                            format!("float:{}", n.as_f64().expect("f64"))
                        }
                        serde_json::Value::String(s) => format!("str:{s}"),
                        serde_json::Value::Bool(b) => format!("bool:{b}"),
                        other => format!("?:{other}"),
                    };
                    rows.push(Row {
                        measurement: measurement.to_string(),
                        tags: tags.clone(),
                        field: (*c).to_string(),
                        timestamp: ts,
                        value,
                    });
                }
            }
        }
        rows.sort_by(|a, b| a.partial_cmp(b).expect("comparable"));
        rows
    }

    /// How many field values `measurement` holds.
    pub fn count(&self, database: &str, measurement: &str) -> usize {
        self.rows(database, measurement).len()
    }
}

// ---- A TLS front (nginx) for the HTTP servers that have none we can test with ----

/// A real nginx terminating TLS in front of an HTTP server on this machine, with a
/// certificate from a CA the test makes: `port` takes any client, `mtls_port` only one with a
/// client certificate from that CA. (VictoriaMetrics' own client-certificate check is in its
/// enterprise edition only, and influxd 1.x has none.)
pub struct TlsFront {
    child: Option<Child>,
    /// The TLS port.
    pub port: u16,
    /// The TLS port that requires a client certificate.
    pub mtls_port: u16,
    dir: tempfile::TempDir,
}

impl TlsFront {
    /// Starts nginx in front of `127.0.0.1:upstream` and waits until both ports accept.
    pub async fn start(upstream: u16) -> TlsFront {
        let dir = tempfile::tempdir().expect("tempdir");
        make_certificates(dir.path());
        let (port, mtls_port) = (free_port(), free_port());
        let d = dir.path().display();
        let server = |port: u16, mtls: &str| {
            format!(
                "server {{\n\
                   listen 127.0.0.1:{port} ssl;\n\
                   ssl_certificate {d}/server.pem;\n\
                   ssl_certificate_key {d}/server.key;\n\
                   {mtls}\n\
                   location / {{ proxy_pass http://127.0.0.1:{upstream}; }}\n\
                 }}\n"
            )
        };
        let conf = dir.path().join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "daemon off;\nuser {user};\nworker_processes 1;\npid {d}/nginx.pid;\n\
                 error_log {d}/error.log;\nevents {{}}\n\
                 http {{\n\
                   access_log off;\n\
                   client_max_body_size 64m;\n\
                   client_body_temp_path {d}/body;\nproxy_temp_path {d}/proxy;\n\
                   fastcgi_temp_path {d}/fastcgi;\nuwsgi_temp_path {d}/uwsgi;\nscgi_temp_path {d}/scgi;\n\
                   {plain}{mtls}\
                 }}\n",
                user = current_user(),
                plain = server(port, ""),
                mtls = server(
                    mtls_port,
                    &format!("ssl_client_certificate {d}/ca.pem; ssl_verify_client on;")
                ),
            ),
        )
        .expect("write nginx.conf");
        let child = Command::new(server_binary("nginx", "nginx-light"))
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        wait_for("nginx to accept connections", WAIT, || {
            [port, mtls_port]
                .iter()
                .all(|p| TcpStream::connect(("127.0.0.1", *p)).is_ok())
        })
        .await;
        TlsFront {
            child: Some(child),
            port,
            mtls_port,
            dir,
        }
    }

    /// A file of the test CA's set (`ca.pem`, `client.pem`, `client.key`).
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
