//! Configuration: every example file validates; mistakes are reported with their key path.

use std::path::{Path, PathBuf};
use std::process::Command;

fn collector() -> Command {
    Command::new(env!("CARGO_BIN_EXE_collector-under-test"))
}

fn examples() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_example_config_validates() {
    let files = examples();
    assert!(files.len() >= 2, "config/ holds the examples: {files:?}");
    for file in files {
        let (ok, err) = validate_file(&file);
        assert!(ok, "{} does not validate:\n{err}", file.display());
    }
}

fn validate(text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(&file, text).unwrap();
    validate_file(&file)
}

/// `validate -c file`: whether it passed, and what it printed on stderr.
fn validate_file(file: &Path) -> (bool, String) {
    let out = collector()
        .arg("validate")
        .arg("-c")
        .arg(file)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const GOOD: &str = r#"
data_dir = "/tmp/telemetry-test"
[[sources.mqtt]]
host = "localhost"
[[sources.mqtt.subscriptions]]
topic = "sensors/{site}/{device}/{measurement}"
"#;

#[test]
fn a_misspelt_key_is_an_error_naming_the_key() {
    assert!(validate(GOOD).0);
    let (ok, err) = validate(&GOOD.replace("host = ", "hots = \"x\"\nhost = "));
    assert!(!ok);
    assert!(err.contains("sources.mqtt[0].hots: unknown key"), "{err}");
    let (ok, err) = validate(&GOOD.replace("topic =", "qos = 1\nformats = \"json\"\ntopic ="));
    assert!(!ok);
    assert!(
        err.contains("sources.mqtt[0].subscriptions[0].formats: unknown key"),
        "{err}"
    );
}

#[test]
fn a_wrong_type_is_an_error_naming_the_key() {
    let (ok, err) = validate(&GOOD.replace(
        "host = \"localhost\"",
        "host = \"localhost\"\nport = \"eighty\"",
    ));
    assert!(!ok);
    assert!(err.contains("sources.mqtt[0].port: "), "{err}");
    let (ok, err) = validate(&format!("{GOOD}\n[sinks.local.batch]\nmax_age = 5\n"));
    assert!(!ok);
    assert!(err.contains("sinks.local.batch.max_age: "), "{err}");
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = GOOD.replace(
        "topic = \"sensors/{site}/{device}/{measurement}\"",
        "topic = \"a/#/b\"\nqos = 7",
    ) + "\n[journal]\nmax_bytes = 10\n";
    let (ok, err) = validate(&text);
    assert!(!ok);
    for want in [
        "journal.max_bytes: must be at least 1MiB",
        "sources.mqtt[0].subscriptions[0].topic: `#` may only be the last segment",
        "sources.mqtt[0].subscriptions[0].qos: must be 0 or 1",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
}

#[test]
fn environment_variables_override_keys_and_a_misspelt_one_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(&file, GOOD).unwrap();
    let out = collector()
        .args(["validate", "-c"])
        .arg(&file)
        .env("COLLECTOR__SINKS__LOCAL__PATH", "/srv/Telemetry/store.db")
        .env("COLLECTOR__JOURNAL__MAX_BYTES", "2GiB")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("local store /srv/Telemetry/store.db"),
        "{stdout}"
    );

    let out = collector()
        .args(["validate", "-c"])
        .arg(&file)
        .env("COLLECTOR__JOURNAL__MAX_BYTE", "2GiB")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("journal.max_byte: unknown key"), "{err}");
}

#[test]
fn the_modbus_example_validates_and_shows_its_request_plan() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/modbus.toml");
    let out = collector()
        .arg("validate")
        .arg("-c")
        .arg(&file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "2 Modbus bus(es)",
        // The meter's six voltages and currents in one request; energy once a minute.
        "  meter-main (unit 1) every 5s: 3 request(s)",
        "    fc 4 input 0..=11 (12 registers): voltage_l1@0 f32 ABCD [V], voltage_l2@2 f32 ABCD [V]",
        "  meter-main (unit 1) every 1m: 1 request(s)",
        "    fc 3 holding 256..=256 (1 register): sensor_fault@256 bool bit 3",
        "    fc 3 holding 3200..=3205 (6 registers): energy_import@3200 u64 CDAB [kWh], power_total@3204 i32 CDAB [W]",
    ] {
        assert!(stdout.contains(want), "missing {want:?} in:\n{stdout}");
    }
}
