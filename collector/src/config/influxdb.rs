//! `[[sinks.influxdb]]`: InfluxDB sinks as written, and their validation.
//!
//! Secrets (the v2 token, the v1 password) come from exactly one of four places: see
//! [`SecretSource`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::problems::Problems;
use super::secret::secret_source;
use super::{BackoffConfig, BatchConfig, ByteSize, Secret, SecretSource, TlsConfig};
use crate::reading::Precision;

/// The prefix of an InfluxDB sink's name in the journal (its cursor) and in metrics.
pub const SINK_PREFIX: &str = "influxdb:";

/// Which write API a server speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InfluxApi {
    /// `/api/v2/write` with org, bucket and token (InfluxDB 2.x and 3.x, Cloud,
    /// VictoriaMetrics), token in an `Authorization: Token` header.
    #[default]
    V2,
    /// `/write` with database, retention policy, user and password (InfluxDB 1.x, and
    /// servers that only speak the v1 API).
    V1,
}

/// `[[sinks.influxdb]]`: one InfluxDB server (several entries fan out from one journal).
#[derive(Debug, Clone, Deserialize)]
pub struct InfluxDbConfig {
    /// A stable name: the sink is `influxdb:<name>` in logs and metrics, and its journal
    /// cursor is kept under that name (renaming a sink starts it again from the oldest
    /// reading the journal holds).
    pub name: String,
    /// `v2` (default) or `v1`.
    #[serde(default)]
    pub api: InfluxApi,
    /// The server, such as `http://localhost:8086` (http or https).
    pub url: String,
    /// v2: the organization.
    pub org: Option<String>,
    /// v2: the bucket.
    pub bucket: Option<String>,
    /// v2: the token itself (prefer a file, a variable or a credential).
    pub token: Option<Secret>,
    /// v2: a file holding the token.
    pub token_file: Option<PathBuf>,
    /// v2: an environment variable holding the token.
    pub token_env: Option<String>,
    /// v2: a systemd credential holding the token (in `$CREDENTIALS_DIRECTORY`).
    pub token_credential: Option<String>,
    /// v1: the database.
    pub database: Option<String>,
    /// v1: the retention policy (default: the database's default).
    pub retention_policy: Option<String>,
    /// v1: the user (HTTP basic authentication).
    pub username: Option<String>,
    /// v1: the password itself.
    pub password: Option<Secret>,
    /// v1: a file holding the password.
    pub password_file: Option<PathBuf>,
    /// v1: an environment variable holding the password.
    pub password_env: Option<String>,
    /// v1: a systemd credential holding the password.
    pub password_credential: Option<String>,
    /// The unit of the timestamps written: `ns` (default), `us`, `ms` or `s`.
    #[serde(default)]
    pub precision: Precision,
    /// How long one write may take before it counts as failed (and is retried).
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Compress request bodies with gzip (default: yes, unless the server is on this machine,
    /// see `gzip_by_default`).
    pub gzip: Option<bool>,
    /// TLS for an https:// server: its CA (default: the system's roots) and a client
    /// certificate, as for MQTT brokers.
    pub tls: Option<TlsConfig>,
    /// Batching.
    #[serde(default)]
    pub batch: BatchConfig,
    /// Delays between retries of a failed write.
    #[serde(default)]
    pub retry: BackoffConfig,
    /// The bound of the dead-letter file (see the README).
    #[serde(default = "super::default_dead_letter_max_bytes")]
    pub dead_letter_max_bytes: ByteSize,
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

/// Whether a sink to `url` compresses when `gzip` is not set: yes, unless the server is on
/// this machine (`localhost`, `127.0.0.0/8`, `::1`), where compressing saves no bandwidth
/// and costs CPU on both sides (about a tenth of the collector's and of the server's in the
/// end-to-end benchmark).
pub(crate) fn gzip_by_default(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return true;
    };
    let ip = host.trim_start_matches('[').trim_end_matches(']');
    match ip.parse::<std::net::IpAddr>() {
        Ok(ip) => !ip.is_loopback(),
        Err(_) => !host.eq_ignore_ascii_case("localhost"),
    }
}

/// One validated InfluxDB sink.
#[derive(Debug, Clone, PartialEq)]
pub struct InfluxSettings {
    /// The sink's name: `influxdb:<name>` (journal cursor, logs, metrics).
    pub sink: String,
    /// The server's base URL.
    pub url: reqwest::Url,
    /// What to write with.
    pub api: InfluxApiSettings,
    /// Timestamp unit.
    pub precision: Precision,
    /// Timeout of one write.
    pub timeout: Duration,
    /// Gzip request bodies.
    pub gzip: bool,
    /// TLS settings (`None`: the system's roots, no client certificate).
    pub tls: Option<TlsConfig>,
    /// Batching.
    pub batch: BatchConfig,
    /// Retry backoff.
    pub retry: BackoffConfig,
    /// The dead-letter file: directory and bound.
    pub dead_letter_dir: PathBuf,
    /// Its bound in bytes.
    pub dead_letter_max_bytes: u64,
}

/// The API-specific part of an InfluxDB sink.
#[derive(Debug, Clone, PartialEq)]
pub enum InfluxApiSettings {
    /// The v2 write API.
    V2 {
        /// Organization.
        org: String,
        /// Bucket.
        bucket: String,
        /// The token.
        token: SecretSource,
    },
    /// The v1 write API.
    V1 {
        /// Database.
        database: String,
        /// Retention policy.
        retention_policy: Option<String>,
        /// User name.
        username: Option<String>,
        /// Password.
        password: Option<SecretSource>,
    },
}

/// Validates `[[sinks.influxdb]]` entry `index`.
pub(super) fn validate(
    c: &InfluxDbConfig,
    index: usize,
    data_dir: &Path,
    problems: &mut Problems,
) -> Option<InfluxSettings> {
    let path = format!("sinks.influxdb[{index}]");
    let mut p = |key: &str, message: &str| problems.add(format!("{path}.{key}"), message);
    let name_ok = !c.name.is_empty()
        && c.name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.'));
    if !name_ok {
        p("name", "must be letters, digits, `-`, `_` or `.`");
    }
    let url = match reqwest::Url::parse(&c.url) {
        // Credentials in a URL end up wherever the URL is shown (`Debug`, `doctor`).
        Ok(u) if !u.username().is_empty() || u.password().is_some() => {
            p(
                "url",
                "must not hold a user name or password: use `token` (v2) or `username` and `password` (v1), each of which can come from a file, a variable or a credential",
            );
            None
        }
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Some(u),
        Ok(_) => {
            p("url", "must be an http:// or https:// URL with a host");
            None
        }
        Err(e) => {
            p("url", &format!("not a URL: {e}"));
            None
        }
    };
    if c.timeout.is_zero() {
        p("timeout", "must be more than zero");
    }
    if !(1..=1_000_000).contains(&c.batch.max_readings) {
        p("batch.max_readings", "must be between 1 and 1000000");
    }
    if c.batch.max_age.is_zero() {
        p("batch.max_age", "must be more than zero");
    }
    if c.retry.initial.is_zero() {
        p("retry.initial", "must be more than zero");
    }
    if c.retry.max < c.retry.initial {
        p("retry.max", "must be at least `initial`");
    }
    if c.dead_letter_max_bytes.0 < 1024 {
        p("dead_letter_max_bytes", "must be at least 1KiB");
    }
    let not_for = |key: &str, set: bool, api: &str| set.then(|| (key.to_string(), api.to_string()));
    let v1_keys = [
        not_for("database", c.database.is_some(), "v1"),
        not_for("retention_policy", c.retention_policy.is_some(), "v1"),
        not_for("username", c.username.is_some(), "v1"),
        not_for(
            "password",
            c.password.is_some()
                || c.password_file.is_some()
                || c.password_env.is_some()
                || c.password_credential.is_some(),
            "v1",
        ),
    ];
    let v2_keys = [
        not_for("org", c.org.is_some(), "v2"),
        not_for("bucket", c.bucket.is_some(), "v2"),
        not_for(
            "token",
            c.token.is_some()
                || c.token_file.is_some()
                || c.token_env.is_some()
                || c.token_credential.is_some(),
            "v2",
        ),
    ];
    let api = match c.api {
        InfluxApi::V2 => {
            for (key, api) in v1_keys.into_iter().flatten() {
                p(&key, &format!("only for api = \"{api}\""));
            }
            let org = c.org.clone().filter(|o| !o.is_empty());
            let bucket = c.bucket.clone().filter(|b| !b.is_empty());
            if org.is_none() {
                p("org", "required for api = \"v2\"");
            }
            if bucket.is_none() {
                p("bucket", "required for api = \"v2\"");
            }
            let token = secret_source(
                "token",
                (&c.token, &c.token_file, &c.token_env, &c.token_credential),
                &path,
                true,
                problems,
            );
            InfluxApiSettings::V2 {
                org: org?,
                bucket: bucket?,
                token: token?,
            }
        }
        InfluxApi::V1 => {
            for (key, api) in v2_keys.into_iter().flatten() {
                p(&key, &format!("only for api = \"{api}\""));
            }
            let database = c.database.clone().filter(|d| !d.is_empty());
            if database.is_none() {
                p("database", "required for api = \"v1\"");
            }
            let password = secret_source(
                "password",
                (
                    &c.password,
                    &c.password_file,
                    &c.password_env,
                    &c.password_credential,
                ),
                &path,
                false,
                problems,
            );
            if password.is_some() && c.username.is_none() {
                problems.add(format!("{path}.password"), "a password needs a `username`");
            }
            InfluxApiSettings::V1 {
                database: database?,
                retention_policy: c.retention_policy.clone().filter(|r| !r.is_empty()),
                username: c.username.clone(),
                password,
            }
        }
    };
    if let Some(tls) = &c.tls {
        super::broker::check_tls(tls, &format!("{path}.tls"), problems);
        if url.as_ref().is_some_and(|u| u.scheme() != "https") {
            problems.add(format!("{path}.tls"), "only for an https:// url");
        }
    }
    let gzip = c
        .gzip
        .unwrap_or_else(|| url.as_ref().is_none_or(gzip_by_default));
    Some(InfluxSettings {
        sink: format!("{SINK_PREFIX}{}", c.name),
        url: url?,
        api,
        precision: c.precision,
        timeout: c.timeout,
        gzip,
        tls: c.tls.clone(),
        batch: c.batch,
        retry: c.retry,
        dead_letter_dir: data_dir.join("dead-letter"),
        dead_letter_max_bytes: c.dead_letter_max_bytes.0,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn gzip_is_on_by_default_but_for_a_server_on_this_machine() {
        for (url, gzip) in [
            ("https://influx.example.com:8086", true),
            ("http://10.0.0.5:8086", true),
            ("http://localhost:8086", false),
            ("http://LOCALHOST:8428/prefix", false),
            ("http://127.0.0.1:8086", false),
            ("http://127.1.2.3:8086", false),
            ("http://[::1]:8086", false),
            ("http://[2001:db8::1]:8086", true),
        ] {
            assert_eq!(
                gzip_by_default(&reqwest::Url::parse(url).unwrap()),
                gzip,
                "{url}"
            );
        }
    }

    #[test]
    fn credentials_in_the_url_are_refused_without_being_shown() {
        let errs = super::super::settings::tests::errors(
            "[[sinks.influxdb]]\nname = \"a\"\napi = \"v1\"\ndatabase = \"d\"\n\
             url = \"http://admin:s3cret@localhost:8086\"\n",
        );
        assert_eq!(errs.len(), 2, "{errs:?}"); // and: no source
        assert!(errs[0].starts_with("sinks.influxdb[0].url: must not hold a user name or password"));
        assert!(!errs.iter().any(|e| e.contains("s3cret")));
    }

    /// Issue 15: `validate` said OK to a `token_file` that `run` could not read.
    #[test]
    fn a_secret_file_that_cannot_be_read_is_a_problem_and_a_credential_is_not_checked() {
        let dir = tempfile::tempdir().unwrap();
        let sink = |secret: &str| {
            format!(
                "[[sources.serial]]\npath = \"/dev/ttyUSB0\"\nformat = \"value\"\nmeasurement = \"m\"\n\
                 [[sinks.influxdb]]\nname = \"a\"\nurl = \"http://localhost:8086\"\n\
                 org = \"o\"\nbucket = \"b\"\n{secret}\n"
            )
        };
        let errors = super::super::settings::tests::errors;
        assert_eq!(
            errors(&sink(&format!("token_file = {:?}", dir.path()))),
            vec![format!(
                "sinks.influxdb[0].token_file: {} is a directory, not a file",
                dir.path().display()
            )]
        );
        let missing = dir.path().join("missing");
        assert_eq!(
            errors(&sink(&format!("token_file = {missing:?}"))),
            vec![format!(
                "sinks.influxdb[0].token_file: {} does not exist",
                missing.display()
            )]
        );
        let file = dir.path().join("token");
        std::fs::write(&file, "t0ken\n").unwrap();
        let settings = crate::config::Config::from_toml(&sink(&format!("token_file = {file:?}")))
            .and_then(crate::config::Config::validate)
            .unwrap();
        assert!(settings.unchecked.is_empty());
        if std::env::var_os("CREDENTIALS_DIRECTORY").is_none() {
            let settings = crate::config::Config::from_toml(&sink("token_credential = \"tok\""))
                .and_then(crate::config::Config::validate)
                .unwrap();
            assert_eq!(
                settings.unchecked,
                vec![crate::config::Problem {
                    path: "sinks.influxdb[0].token_credential".into(),
                    message: "$CREDENTIALS_DIRECTORY is not set here (systemd sets it for the service only, with LoadCredential=)".into(),
                }]
            );
        }
    }
}
