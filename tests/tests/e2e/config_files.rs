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

/// `validate -c file` with `env`: whether it passed, its stdout and its stderr.
fn validate_with_env(file: &Path, env: &[(&str, &str)]) -> (bool, String, String) {
    let mut command = collector();
    command.args(["validate", "-c"]).arg(file);
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn environment_variables_override_keys_and_a_misspelt_one_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(&file, GOOD).unwrap();
    let (ok, stdout, stderr) = validate_with_env(
        &file,
        &[
            ("COLLECTOR__SINKS__LOCAL__PATH", "/srv/Telemetry/store.db"),
            ("COLLECTOR__JOURNAL__MAX_BYTES", "2GiB"),
        ],
    );
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("local store /srv/Telemetry/store.db"),
        "{stdout}"
    );

    // Text stays text (a path `0123` was `123`, `1e3` was `1000`), and numbers and booleans
    // are read where a key wants one.
    let (ok, stdout, stderr) = validate_with_env(
        &file,
        &[
            ("COLLECTOR__SINKS__LOCAL__PATH", "0123"),
            ("COLLECTOR__DATA_DIR", "1e3"),
            ("COLLECTOR__PIPELINE__CHANNEL_CAPACITY", "2048"),
            ("COLLECTOR__JOURNAL__SYNC", "false"),
            ("COLLECTOR__HTTP__ENABLED", "false"),
        ],
    );
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("journal 1e3/journal.db; local store 0123"),
        "{stdout}"
    );

    let (ok, _, stderr) = validate_with_env(&file, &[("COLLECTOR__JOURNAL__MAX_BYTE", "2GiB")]);
    assert!(!ok);
    assert!(stderr.contains("journal.max_byte: unknown key"), "{stderr}");
}

const SECRET: &str = "hunter2-s3cret";

/// Issue 15: a missing closing quote after a password made `validate` and `run` print the
/// line, password included.
#[test]
fn a_syntax_error_is_told_by_line_and_key_without_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    let text = GOOD.replace(
        "host = \"localhost\"",
        &format!("host = \"localhost\"\nusername = \"u\"\npassword = \"{SECRET}"),
    );
    std::fs::write(&file, text).unwrap();
    for command in ["validate", "run"] {
        let out = collector()
            .args([command, "-c"])
            .arg(&file)
            .env("JOURNAL_STREAM", "1:1") // plain log lines, if `run` logs any
            .output()
            .unwrap();
        assert!(!out.status.success(), "{command}");
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(
            !stdout.contains(SECRET) && !stderr.contains(SECRET),
            "{command}:\n{stdout}{stderr}"
        );
        assert!(
            stderr.contains(
                "TOML syntax error at line 6, column 27 (at key sources.mqtt[0].password): \
                 invalid basic string, expected `\"`"
            ),
            "{command}:\n{stderr}"
        );
    }
}

/// An InfluxDB sink's configuration with `secret` (one of the token keys).
fn influx_sink(secret: &str) -> String {
    format!(
        "{GOOD}\n[http]\nenabled = false\n[[sinks.influxdb]]\nname = \"vm\"\n\
         url = \"http://127.0.0.1:9\"\norg = \"o\"\nbucket = \"b\"\n{secret}\n"
    )
}

/// Issue 15: `validate` said OK to a `token_file` that `run` cannot read; where it cannot
/// tell (a systemd credential outside the service), it says that it did not check.
#[test]
fn validate_checks_a_token_file_and_says_what_it_could_not_check() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, err) = validate(&influx_sink(&format!("token_file = {:?}", dir.path())));
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "sinks.influxdb[0].token_file: {} is a directory, not a file",
            dir.path().display()
        )),
        "{err}"
    );
    let missing = dir.path().join("token");
    let (ok, err) = validate(&influx_sink(&format!("token_file = {missing:?}")));
    assert!(!ok);
    assert!(err.contains("sinks.influxdb[0].token_file: "), "{err}");
    assert!(err.contains("does not exist"), "{err}");

    let file = dir.path().join("c.toml");
    std::fs::write(&file, influx_sink("token_credential = \"influx-token\"")).unwrap();
    let out = collector()
        .args(["validate", "-c"])
        .arg(&file)
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains(
            "not checked: sinks.influxdb[0].token_credential: $CREDENTIALS_DIRECTORY is not set here"
        ),
        "{stdout}"
    );
    // Inside the service, the credential is checked like a file.
    let out = collector()
        .args(["validate", "-c"])
        .arg(&file)
        .env("CREDENTIALS_DIRECTORY", dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("sinks.influxdb[0].token_credential: ")
            && stderr.contains("influx-token does not exist"),
        "{stderr}"
    );
}

/// Issue 15: when a sink could not start, `run` returned its error while the sinks that had
/// started were still running, and the runtime's shutdown made one of them panic on a
/// cancelled join (26 runs in 300). Each run now ends with the error alone. (The
/// deterministic test is `sinks::runner::tests::a_runner_stops_quietly_when_the_runtime_shuts_down`.)
#[test]
fn a_sink_that_cannot_start_ends_run_with_its_error_and_no_panic() {
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..10 {
        let out = run_with_a_sink_that_cannot_start(dir.path(), Some("1:1"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(
            stderr.ends_with(
                "error: influxdb:vm: cannot read the token: environment variable TELEMETRY_TEST_UNSET_TOKEN is not set\n"
            ),
            "{stderr}"
        );
    }
}

/// `run` with data in `dir` and an InfluxDB sink whose token variable is not set (not
/// checked by validation: the sink fails as it starts, after the local one has); stderr
/// piped, under journald if `journal_stream` is given.
fn run_with_a_sink_that_cannot_start(
    dir: &Path,
    journal_stream: Option<&str>,
) -> std::process::Output {
    let file = dir.join("c.toml");
    let text = influx_sink("token_env = \"TELEMETRY_TEST_UNSET_TOKEN\"").replace(
        "data_dir = \"/tmp/telemetry-test\"",
        &format!("data_dir = {:?}", dir.join("data")),
    );
    std::fs::write(&file, text).unwrap();
    let mut command = collector();
    command
        .args(["run", "-c"])
        .arg(&file)
        .env_remove("TELEMETRY_TEST_UNSET_TOKEN")
        .env_remove("NO_COLOR");
    match journal_stream {
        Some(s) => command.env("JOURNAL_STREAM", s),
        None => command.env_remove("JOURNAL_STREAM"),
    };
    command.output().unwrap()
}

/// Issue 15: log lines written to a file or a pipe carried colour codes.
#[test]
fn logs_to_a_pipe_have_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    // The run logs at INFO and ERROR before it fails.
    let out = run_with_a_sink_that_cannot_start(dir.path(), None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ERROR"), "{stderr}");
    assert!(!out.stderr.contains(&0x1b), "{stderr:?}");
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
