//! InfluxDB sinks: the v2 write API (`/api/v2/write`, token auth: InfluxDB 2 and 3,
//! VictoriaMetrics) or the v1 `/write` endpoint (InfluxDB 1.x), both through one HTTP client
//! (`reqwest`, rustls, no OpenSSL).
//!
//! Both encode a batch as line protocol ([`super::line_protocol`]) with the configured
//! precision, in the dialect of its servers (v1: InfluxDB 1.x's; v2: what InfluxDB 2.x, 3 and
//! VictoriaMetrics all read alike), leaving out for the dead-letter file the readings the
//! dialect cannot say ([`SinkError::Refused`]), optionally gzip it (at the fast level: a fraction of the CPU of the best level
//! for a slightly larger body), and classify what went wrong by the runner's classes
//! ([`SinkError`]): a connection error or timeout, 5xx and 408 retry with backoff; 429 and
//! 503 retry after `Retry-After` when the server sends it; 413 splits the batch; 401 and 403
//! keep the data and report loudly; any other 4xx sends the batch to the dead-letter file.
//!
//! The `influxdb2` crate was used for the v2 API at first and dropped: it compresses at
//! gzip's best level (a third of the collector's CPU in the end-to-end benchmark) and does
//! not return a failed write's headers (so `Retry-After` went unseen). The write API is one
//! POST.
//!
//! Secrets (the token, the password) are read once, when the sink is built, and only ever
//! sent in an `Authorization` header marked sensitive: never in a URL (which reqwest's errors
//! print), never in a log line, and the sink's `Debug` shows neither.

use std::io::Write as _;
use std::time::Duration;

use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_ENCODING, RETRY_AFTER};
use reqwest::{StatusCode, Url};

use super::line_protocol::{self, Dialect, Precision};
use super::{Batch, Sink, SinkError};
use crate::config::{InfluxApiSettings, InfluxSettings, Secret};

/// The most of a server's error body kept in a reason.
const MAX_REASON: usize = 1000;

/// Why an InfluxDB sink cannot be built. The message does not name the sink: those who
/// print it (the pipeline, `doctor`) put the sink's name in front.
#[derive(Debug, thiserror::Error)]
pub enum InfluxError {
    /// The token or password cannot be read.
    #[error("cannot read the {what}: {reason}")]
    Secret {
        /// The sink.
        sink: String,
        /// `token` or `password`.
        what: &'static str,
        /// Why (never the secret itself).
        reason: String,
    },
    /// The TLS configuration cannot be built (a CA or client certificate file).
    #[error("TLS")]
    Tls {
        /// The sink.
        sink: String,
        /// What is wrong.
        #[source]
        source: crate::tls::TlsError,
    },
    /// The HTTP client cannot be built.
    #[error("cannot build the HTTP client")]
    Client {
        /// The sink.
        sink: String,
        /// What reqwest said.
        #[source]
        source: reqwest::Error,
    },
}

/// An InfluxDB server as a [`Sink`].
#[derive(Debug)]
pub struct InfluxSink {
    name: String,
    precision: Precision,
    dialect: Dialect,
    http: reqwest::Client,
    /// The write endpoint with its query (org, bucket or database, precision).
    write_url: Url,
    auth: Auth,
    gzip: bool,
    /// v1: `/ping`, which `check` asks first (it names the server's version).
    ping_url: Option<Url>,
    /// What `check` says the server accepts writes to.
    target: String,
}

/// How a write proves who we are.
#[derive(Debug)]
enum Auth {
    None,
    /// v2: `Authorization: Token <token>`.
    Token(Secret),
    /// v1: basic auth.
    Basic {
        username: String,
        password: Option<Secret>,
    },
}

impl InfluxSink {
    /// Builds the sink: reads its secret and sets up the HTTP client. Connects to nothing.
    ///
    /// # Errors
    /// [`InfluxError`]: the secret cannot be read, or TLS cannot be set up.
    pub fn new(settings: &InfluxSettings) -> Result<InfluxSink, InfluxError> {
        let name = settings.sink.clone();
        let secret = |what: &'static str, source: &crate::config::SecretSource| {
            source.load().map_err(|reason| InfluxError::Secret {
                sink: name.clone(),
                what,
                reason,
            })
        };
        let (write_url, auth, ping_url, target, dialect) = match &settings.api {
            InfluxApiSettings::V2 { org, bucket, token } => {
                let mut url = endpoint(&settings.url, "api/v2/write");
                url.query_pairs_mut()
                    .append_pair("org", org)
                    .append_pair("bucket", bucket)
                    .append_pair("precision", settings.precision.as_str());
                let target = format!("{} accepts writes to bucket {bucket}", settings.url);
                let auth = Auth::Token(secret("token", token)?);
                (url, auth, None, target, Dialect::Portable)
            }
            InfluxApiSettings::V1 {
                database,
                retention_policy,
                username,
                password,
            } => {
                let mut url = endpoint(&settings.url, "write");
                url.query_pairs_mut()
                    .append_pair("db", database)
                    .append_pair("precision", v1_precision(settings.precision));
                if let Some(rp) = retention_policy {
                    url.query_pairs_mut().append_pair("rp", rp);
                }
                let auth = match username {
                    Some(username) => Auth::Basic {
                        username: username.clone(),
                        password: password
                            .as_ref()
                            .map(|p| secret("password", p))
                            .transpose()?,
                    },
                    None => Auth::None,
                };
                let ping = Some(endpoint(&settings.url, "ping"));
                let target = format!("database {database}");
                (url, auth, ping, target, Dialect::InfluxDb1)
            }
        };
        let tls = crate::tls::client_config(settings.tls.as_ref()).map_err(|source| {
            InfluxError::Tls {
                sink: name.clone(),
                source,
            }
        })?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .user_agent(concat!("telemetry-collector/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|source| InfluxError::Client {
                sink: name.clone(),
                source,
            })?;
        Ok(InfluxSink {
            name,
            precision: settings.precision,
            dialect,
            http,
            write_url,
            auth,
            gzip: settings.gzip,
            ping_url,
            target,
        })
    }

    /// The sink's name (`influxdb:<name>`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The line protocol its servers read: InfluxDB 1.x's for the v1 API; for the v2 API,
    /// whose server may be InfluxDB 2.x, 3 or VictoriaMetrics, what all of them read alike.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Checks that the server answers and takes our credentials, writing nothing: for v1
    /// `/ping` first, then an empty write (which checks the token, the org and the bucket,
    /// or the database). Returns what the server says about itself.
    ///
    /// # Errors
    /// The classified error of the failed request.
    pub async fn check(&self) -> Result<String, SinkError> {
        let mut version = None;
        if let Some(ping_url) = &self.ping_url {
            let ping = self
                .http
                .get(ping_url.clone())
                .send()
                .await
                .map_err(SinkError::transient)?;
            version = ping
                .headers()
                .get("X-Influxdb-Version")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            classify_response(ping).await?;
        }
        self.post(Vec::new()).await?;
        Ok(match version {
            Some(v) => format!("InfluxDB {v} accepts writes to {}", self.target),
            None if self.ping_url.is_some() => {
                format!("the server accepts writes to {}", self.target)
            }
            None => self.target.clone(),
        })
    }

    /// Posts `body` (line protocol) to the write endpoint.
    async fn post(&self, body: Vec<u8>) -> Result<(), SinkError> {
        let mut request = self.http.post(self.write_url.clone());
        match &self.auth {
            Auth::None => {}
            Auth::Token(token) => {
                let mut value = HeaderValue::try_from(format!("Token {}", token.expose()))
                    .map_err(|_| {
                        SinkError::Unauthorized("the token is not a valid header value".into())
                    })?;
                value.set_sensitive(true);
                request = request.header(AUTHORIZATION, value);
            }
            Auth::Basic { username, password } => {
                request = request.basic_auth(username, password.as_ref().map(Secret::expose));
            }
        }
        if self.gzip && !body.is_empty() {
            request = request
                .header(CONTENT_ENCODING, HeaderValue::from_static("gzip"))
                .body(gzip_bytes(&body));
        } else {
            request = request.body(body);
        }
        let response = request.send().await.map_err(SinkError::transient)?;
        classify_response(response).await
    }
}

impl Sink for InfluxSink {
    /// Writes the batch as line protocol in one request.
    ///
    /// # Errors
    /// The classes described in the [module documentation](self); `Refused`, without
    /// writing, when the sink's dialect cannot say some of the readings.
    ///
    /// # Cancel safety
    /// Dropping the future abandons the request; the server may or may not have stored the
    /// batch, and writing it again is harmless (identical points overwrite each other).
    async fn write(&mut self, batch: &Batch) -> Result<(), SinkError> {
        let mut body = Vec::with_capacity(batch.len() * 128);
        line_protocol::encode(batch, self.precision, self.dialect, &mut body)
            .map_err(|r| SinkError::Refused(r.refused(self.dialect)))?;
        self.post(body).await
    }
}

/// `base` with `name` appended to its path (a server behind a path prefix keeps it).
fn endpoint(base: &Url, name: &str) -> Url {
    let mut url = base.clone();
    let path = format!("{}/{name}", base.path().trim_end_matches('/'));
    url.set_path(&path);
    url.set_query(None);
    url
}

/// The v1 API's names: `s`, `ms`, `u`, `ns`.
fn v1_precision(p: Precision) -> &'static str {
    match p {
        Precision::S => "s",
        Precision::Ms => "ms",
        Precision::Us => "u",
        Precision::Ns => "ns",
    }
}

/// `body` gzipped at the fast level, as the sinks send it.
pub fn gzip_bytes(body: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::fast(),
    );
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(body);
    encoder.finish().unwrap_or_default()
}

async fn classify_response(response: reqwest::Response) -> Result<(), SinkError> {
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let text = response.text().await.unwrap_or_default();
    Err(classify(status, &text, retry_after))
}

/// Maps an HTTP status to what the runner does about it.
pub fn classify(status: StatusCode, body: &str, retry_after: Option<Duration>) -> SinkError {
    let mut body = body.trim();
    if body.len() > MAX_REASON {
        let mut end = MAX_REASON;
        while !body.is_char_boundary(end) {
            end -= 1;
        }
        body = &body[..end];
    }
    let reason = if body.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {body}")
    };
    match status.as_u16() {
        401 | 403 => SinkError::Unauthorized(reason),
        413 => SinkError::TooLarge(reason),
        429 | 503 => SinkError::Throttled {
            reason,
            retry_after,
        },
        408 | 500..=599 => SinkError::Retryable(reason),
        400..=499 => SinkError::Rejected(reason),
        _ => SinkError::Retryable(format!("unexpected answer: {reason}")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    #[test]
    fn a_tls_error_prints_its_cause_once() {
        let dir = tempfile::tempdir().unwrap();
        let tls = crate::config::TlsConfig {
            ca_file: Some(dir.path().join("nope.pem")),
            ..crate::config::TlsConfig::default()
        };
        let source = crate::tls::client_config(Some(&tls)).unwrap_err();
        let e = InfluxError::Tls {
            sink: "influxdb:x".into(),
            source,
        };
        let io = std::error::Error::source(&e)
            .and_then(std::error::Error::source)
            .unwrap()
            .to_string();
        let shown = format!("{:#}", anyhow::Error::from(e));
        assert!(
            shown.starts_with("TLS: ") && shown.contains("nope.pem: "),
            "{shown}"
        );
        assert_eq!(shown.matches(&io).count(), 1, "{shown}");
    }

    use super::*;
    use crate::config::Config;

    #[test]
    fn statuses_map_to_the_runners_classes() {
        let c = |code: u16, after: Option<u64>| {
            classify(
                StatusCode::from_u16(code).unwrap(),
                " body \n",
                after.map(Duration::from_secs),
            )
        };
        assert!(
            matches!(c(400, None), SinkError::Rejected(r) if r == "HTTP 400 Bad Request: body")
        );
        assert!(matches!(c(404, None), SinkError::Rejected(_)));
        assert!(matches!(c(422, None), SinkError::Rejected(_)));
        assert!(matches!(c(401, None), SinkError::Unauthorized(_)));
        assert!(matches!(c(403, None), SinkError::Unauthorized(_)));
        assert!(matches!(c(413, None), SinkError::TooLarge(_)));
        assert!(matches!(
            c(429, Some(7)),
            SinkError::Throttled { retry_after: Some(d), .. } if d == Duration::from_secs(7)
        ));
        assert!(matches!(
            c(503, None),
            SinkError::Throttled {
                retry_after: None,
                ..
            }
        ));
        assert!(matches!(c(500, None), SinkError::Retryable(_)));
        assert!(matches!(c(408, None), SinkError::Retryable(_)));
        let long = "x".repeat(5000);
        let SinkError::Rejected(r) = classify(StatusCode::BAD_REQUEST, &long, None) else {
            panic!()
        };
        assert!(r.len() < MAX_REASON + 40);
    }

    #[test]
    fn endpoints_keep_a_path_prefix() {
        let base = Url::parse("https://example.net/influx/").unwrap();
        assert_eq!(
            endpoint(&base, "write").as_str(),
            "https://example.net/influx/write"
        );
        let base = Url::parse("http://127.0.0.1:8086").unwrap();
        assert_eq!(
            endpoint(&base, "ping").as_str(),
            "http://127.0.0.1:8086/ping"
        );
    }

    #[test]
    fn the_token_and_password_never_show_in_debug() {
        let text = r#"
            [[sources.mqtt]]
            host = "localhost"
            [[sources.mqtt.subscriptions]]
            topic = "s/{device}/{measurement}"
            [[sinks.influxdb]]
            name = "v2"
            url = "http://127.0.0.1:1"
            org = "o"
            bucket = "b"
            token = "tok-SECRET-123"
            [[sinks.influxdb]]
            name = "v1"
            api = "v1"
            url = "http://127.0.0.1:1"
            database = "db"
            username = "u"
            password = "pw-SECRET-456"
        "#;
        let settings = Config::from_toml(text).unwrap().validate().unwrap();
        let shown = format!("{settings:?}");
        assert!(!shown.contains("SECRET"), "{shown}");
        for s in &settings.influxdb {
            let sink = InfluxSink::new(s).unwrap();
            let shown = format!("{sink:?}");
            assert!(!shown.contains("SECRET"), "{shown}");
        }
    }
}
