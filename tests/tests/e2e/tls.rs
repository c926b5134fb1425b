//! The InfluxDB sinks over TLS, with a certificate from a CA the test makes (a real nginx in
//! front of a real VictoriaMetrics and influxd): they write with `tls.ca_file`, refuse a
//! server they cannot verify, and present a client certificate where the server requires
//! one. The same `collector::tls` configuration serves the MQTT sources (tests in `mqtt`).

use std::path::Path;

use collector::config::Config;
use collector::sinks::influxdb::InfluxSink;
use simulator::fleet::{FaultConfig, PayloadFormat};

use crate::harness::*;
use crate::influxdb::as_victoria;
use crate::mqtt::{fleet, publish_all};

const DB: &str = "telemetry";

/// A v2 sink `vm` to `url` with `tls` (the inside of the TOML inline table, or nothing).
fn v2_sink(dir: &Path, url: &str, tls: &str) -> String {
    let token = dir.join("token");
    std::fs::write(&token, "tls-token\n").unwrap();
    format!(
        r#"
[[sinks.influxdb]]
name = "vm"
url = "{url}"
org = "org"
bucket = "bucket"
token_file = "{token}"
precision = "ms"
timeout = "5s"
batch = {{ max_readings = 500, max_age = "100ms" }}
retry = {{ initial = "50ms", max = "300ms" }}
{tls}
"#,
        token = token.display(),
        tls = tls_table(tls),
    )
}

/// A v1 sink `influxd` to `url` with `tls`, as [`v2_sink`].
fn v1_sink(url: &str, tls: &str) -> String {
    format!(
        r#"
[[sinks.influxdb]]
name = "influxd"
api = "v1"
url = "{url}"
database = "{DB}"
timeout = "5s"
batch = {{ max_readings = 500, max_age = "100ms" }}
retry = {{ initial = "50ms", max = "300ms" }}
{tls}
"#,
        tls = tls_table(tls),
    )
}

fn tls_table(inside: &str) -> String {
    if inside.is_empty() {
        String::new()
    } else {
        format!("tls = {{ {inside} }}")
    }
}

/// The keys that trust `front`'s CA, and with `client`, present its client certificate.
fn trust(front: &TlsFront, client: bool) -> String {
    let ca = format!("ca_file = \"{}\"", front.file("ca.pem").display());
    if !client {
        return ca;
    }
    format!(
        "{ca}, client_cert_file = \"{}\", client_key_file = \"{}\"",
        front.file("client.pem").display(),
        front.file("client.key").display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influxdb_sinks_write_over_tls_to_a_private_ca_with_and_without_a_client_certificate() {
    let broker = Mosquitto::start().await;
    let vm = VictoriaMetrics::start().await;
    let influxd = Influxd::start(DB).await;
    let vm_tls = TlsFront::start(vm.port).await;
    let influxd_tls = TlsFront::start(influxd.port).await;
    let dir = tempfile::tempdir().unwrap();
    // VictoriaMetrics through the port that takes any client, influxd through the one that
    // requires a client certificate (each front has its own CA).
    let toml = collector_config(dir.path(), broker.port, "tls-sinks", JSON_SUBSCRIPTION)
        + &v2_sink(
            dir.path(),
            &format!("https://127.0.0.1:{}", vm_tls.port),
            &trust(&vm_tls, false),
        )
        + &v1_sink(
            &format!("https://127.0.0.1:{}", influxd_tls.mtls_port),
            &trust(&influxd_tls, true),
        );
    assert_eq!(toml.matches("tls = ").count(), 2, "{toml}");
    let collector = InProcess::start(&toml).await;

    let messages = fleet(5, PayloadFormat::Json, "sensors", FaultConfig::default()).messages(10);
    publish_all(broker.port, "sim-tls", &messages).await;
    let want = expected_rows(&messages, true);
    wait_for("influxd to hold every value", WAIT, || {
        influxd.count(DB, "env") >= want.len()
    })
    .await;
    wait_for("VictoriaMetrics to hold every value", WAIT, || {
        vm.export("env_.*").len() >= want.len()
    })
    .await;
    collector.stop().await;
    assert_rows_eq(&influxd.rows(DB, "env"), &want);
    assert_rows_eq(&vm.export("env_.*"), &as_victoria(&want));

    // Refusals, checked by what `doctor` runs (a write of nothing): without the CA the
    // server's certificate is not trusted; without a client certificate the front refuses.
    let check = |url: String, tls: String| async move {
        let dir = tempfile::tempdir().unwrap();
        // (A source, which validation requires, that is never started.)
        let toml = collector_config(dir.path(), 1, "check", JSON_SUBSCRIPTION)
            + &v2_sink(dir.path(), &url, &tls);
        let settings = Config::from_toml(&toml)
            .and_then(Config::validate)
            .unwrap_or_else(|e| panic!("{e}\n{toml}"));
        let sink = InfluxSink::new(&settings.influxdb[0]).unwrap();
        sink.check().await.map_err(|e| format!("{e:#}"))
    };
    let vm_url = format!("https://127.0.0.1:{}", vm_tls.port);
    let untrusted = check(vm_url.clone(), String::new()).await.unwrap_err();
    assert!(
        untrusted.contains("certificate") || untrusted.contains("UnknownIssuer"),
        "{untrusted}"
    );
    let wrong_ca = check(
        vm_url.clone(),
        format!("ca_file = \"{}\"", influxd_tls.file("ca.pem").display()),
    )
    .await
    .unwrap_err();
    assert!(wrong_ca.contains("certificate"), "{wrong_ca}");
    check(vm_url, trust(&vm_tls, false)).await.unwrap();
    let mtls_url = format!("https://127.0.0.1:{}", vm_tls.mtls_port);
    let no_client_cert = check(mtls_url.clone(), trust(&vm_tls, false))
        .await
        .unwrap_err();
    assert!(no_client_cert.contains("400"), "{no_client_cert}");
    check(mtls_url, trust(&vm_tls, true)).await.unwrap();
}
