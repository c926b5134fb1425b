//! InfluxDB sinks: the v2 write API through the `influxdb2` crate, or the v1 `/write`
//! endpoint through the same HTTP client (`reqwest`, rustls, no OpenSSL).
//!
//! Both encode a batch as line protocol ([`super::line_protocol`]) with the configured
//! precision, optionally gzip it, and classify what went wrong by the runner's classes
//! ([`SinkError`]): a connection error or timeout, 5xx and 408 retry with backoff; 429 and
//! 503 retry after `Retry-After` when the server sends it; 413 splits the batch; 401 and 403
//! keep the data and report loudly; any other 4xx sends the batch to the dead-letter file.
//!
//! The `influxdb2` crate returns the status and body of a failed write but not its headers,
//! so a v2 server's `Retry-After` is not seen: 429 and 503 from a v2 server retry with the
//! configured backoff. The v1 sink reads the header itself.
//!
//! Secrets (the token, the password) are read once, when the sink is built, and only ever
//! sent in an `Authorization` header: never in a URL (which reqwest's errors print), never in
//! a log line, and the sink's `Debug` shows neither.

use std::io::Write as _;
use std::time::Duration;

use influxdb2::api::write::TimestampPrecision;
use influxdb2::models::WriteDataPoint;
use influxdb2::RequestError;
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_ENCODING, RETRY_AFTER};
use reqwest::{StatusCode, Url};

use super::line_protocol::{self, Precision};
use super::{Batch, Sink, SinkError};
use crate::config::{InfluxApiSettings, InfluxSettings, Secret};

/// The most of a server's error body kept in a reason.
const MAX_REASON: usize = 1000;

/// Why an InfluxDB sink cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum InfluxError {
    /// The token or password cannot be read.
    #[error("{sink}: cannot read the {what}: {reason}")]
    Secret {
        /// The sink.
        sink: String,
        /// `token` or `password`.
        what: &'static str,
        /// Why (never the secret itself).
        reason: String,
    },
    /// The HTTP client cannot be built (TLS setup).
    #[error("{sink}: cannot build the HTTP client: {source}")]
    Client {
        /// The sink.
        sink: String,
        /// What reqwest said.
        source: reqwest::Error,
    },
}

/// An InfluxDB server as a [`Sink`].
#[derive(Debug)]
pub struct InfluxSink {
    name: String,
    precision: Precision,
    api: Api,
}

#[derive(Debug)]
enum Api {
    V2 {
        client: influxdb2::Client,
        org: String,
        bucket: String,
        gzip: bool,
    },
    V1 {
        http: reqwest::Client,
        write_url: Url,
        ping_url: Url,
        username: Option<String>,
        password: Option<Secret>,
        gzip: bool,
    },
}

impl InfluxSink {
    /// Builds the sink: reads its secret and sets up the HTTP client. Connects to nothing.
    ///
    /// # Errors
    /// [`InfluxError`]: the secret cannot be read, or TLS cannot be set up.
    pub fn new(settings: &InfluxSettings) -> Result<InfluxSink, InfluxError> {
        let name = settings.sink.clone();
        let builder = || {
            reqwest::Client::builder()
                .timeout(settings.timeout)
                .connect_timeout(settings.timeout)
                .user_agent(concat!("telemetry-collector/", env!("CARGO_PKG_VERSION")))
        };
        let api = match &settings.api {
            InfluxApiSettings::V2 { org, bucket, token } => {
                let token = token.load().map_err(|reason| InfluxError::Secret {
                    sink: name.clone(),
                    what: "token",
                    reason,
                })?;
                let mut client = influxdb2::ClientBuilder::with_builder(
                    builder(),
                    settings.url.as_str(),
                    org.as_str(),
                    token.expose(),
                );
                if settings.gzip {
                    // (`gzip(false)` would still compress the streamed writes.)
                    client = client.gzip(true);
                }
                let client = client.build().map_err(|e| InfluxError::Client {
                    sink: name.clone(),
                    source: match e {
                        influxdb2::BuildError::ReqwestClientError { source } => source,
                    },
                })?;
                Api::V2 {
                    client,
                    org: org.clone(),
                    bucket: bucket.clone(),
                    gzip: settings.gzip,
                }
            }
            InfluxApiSettings::V1 {
                database,
                retention_policy,
                username,
                password,
            } => {
                let password = match password {
                    Some(p) => Some(p.load().map_err(|reason| InfluxError::Secret {
                        sink: name.clone(),
                        what: "password",
                        reason,
                    })?),
                    None => None,
                };
                let mut write_url = endpoint(&settings.url, "write");
                write_url
                    .query_pairs_mut()
                    .append_pair("db", database)
                    .append_pair("precision", v1_precision(settings.precision));
                if let Some(rp) = retention_policy {
                    write_url.query_pairs_mut().append_pair("rp", rp);
                }
                let http = builder().build().map_err(|source| InfluxError::Client {
                    sink: name.clone(),
                    source,
                })?;
                Api::V1 {
                    http,
                    write_url,
                    ping_url: endpoint(&settings.url, "ping"),
                    username: username.clone(),
                    password,
                    gzip: settings.gzip,
                }
            }
        };
        Ok(InfluxSink {
            name,
            precision: settings.precision,
            api,
        })
    }

    /// The sink's name (`influxdb:<name>`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Checks that the server answers and takes our credentials, writing nothing: an empty
    /// write for v2 (which checks the token, the org and the bucket), `/ping` and then an
    /// empty write for v1. Returns what the server says about itself.
    ///
    /// # Errors
    /// The classified error of the failed request.
    pub async fn check(&self) -> Result<String, SinkError> {
        match &self.api {
            Api::V2 {
                client,
                org,
                bucket,
                ..
            } => {
                client
                    .write_line_protocol_with_precision(
                        org,
                        bucket,
                        "",
                        v2_precision(self.precision),
                    )
                    .await
                    .or_else(accept_2xx)
                    .map_err(classify_v2)?;
                Ok(format!("{} accepts writes to bucket {bucket}", client.base))
            }
            Api::V1 { http, ping_url, .. } => {
                let ping = http
                    .get(ping_url.clone())
                    .send()
                    .await
                    .map_err(|e| SinkError::Retryable(error_chain(&e)))?;
                let version = ping
                    .headers()
                    .get("X-Influxdb-Version")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                classify_response(ping).await?;
                self.write_v1(Vec::new()).await?;
                Ok(match version {
                    Some(v) => format!("InfluxDB {v} accepts writes"),
                    None => "the server accepts writes".to_string(),
                })
            }
        }
    }

    async fn write_v1(&self, body: Vec<u8>) -> Result<(), SinkError> {
        let Api::V1 {
            http,
            write_url,
            username,
            password,
            gzip,
            ..
        } = &self.api
        else {
            unreachable!("write_v1 on a v2 sink")
        };
        let mut request = http.post(write_url.clone());
        if let Some(user) = username {
            request = request.basic_auth(user, password.as_ref().map(Secret::expose));
        }
        if *gzip && !body.is_empty() {
            let mut headers = HeaderMap::new();
            headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            request = request.headers(headers).body(gzip_bytes(&body));
        } else {
            request = request.body(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| SinkError::Retryable(error_chain(&e)))?;
        classify_response(response).await
    }
}

impl Sink for InfluxSink {
    /// Writes the batch as line protocol in one request.
    ///
    /// # Errors
    /// The classes described in the [module documentation](self).
    ///
    /// # Cancel safety
    /// Dropping the future abandons the request; the server may or may not have stored the
    /// batch, and writing it again is harmless (identical points overwrite each other).
    async fn write(&mut self, batch: &Batch) -> Result<(), SinkError> {
        let mut body = Vec::with_capacity(batch.len() * 128);
        line_protocol::encode(batch, self.precision, &mut body);
        match &self.api {
            Api::V2 {
                client,
                org,
                bucket,
                gzip,
            } => {
                let precision = v2_precision(self.precision);
                let result = if *gzip {
                    // The crate gzips what comes as a stream of points; the whole batch is one.
                    let points = futures::stream::iter([Encoded(body)]);
                    client.write_with_precision(bucket, points, precision).await
                } else {
                    client
                        .write_line_protocol_with_precision(org, bucket, body, precision)
                        .await
                };
                result.or_else(accept_2xx).map_err(classify_v2)
            }
            Api::V1 { .. } => self.write_v1(body).await,
        }
    }
}

/// Lines already encoded, as the one "point" of a stream the `influxdb2` crate writes.
struct Encoded(Vec<u8>);

impl WriteDataPoint for Encoded {
    fn write_data_point_to<W: std::io::Write>(&self, mut w: W) -> std::io::Result<()> {
        w.write_all(&self.0)
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

fn v2_precision(p: Precision) -> TimestampPrecision {
    match p {
        Precision::S => TimestampPrecision::Seconds,
        Precision::Ms => TimestampPrecision::Milliseconds,
        Precision::Us => TimestampPrecision::Microseconds,
        Precision::Ns => TimestampPrecision::Nanoseconds,
    }
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

fn gzip_bytes(body: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::fast(),
    );
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(body);
    encoder.finish().unwrap_or_default()
}

/// The `influxdb2` crate treats every status but 204 as an error; any 2xx is a success.
fn accept_2xx(e: RequestError) -> Result<(), RequestError> {
    match e {
        RequestError::Http { status, .. } if status.is_success() => Ok(()),
        e => Err(e),
    }
}

fn classify_v2(e: RequestError) -> SinkError {
    match e {
        RequestError::Http { status, text } => classify(status, &text, None),
        RequestError::ReqwestProcessing { source } => SinkError::Retryable(error_chain(&source)),
        other => SinkError::Retryable(other.to_string()),
    }
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

/// `err` and its causes, `: `-separated.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
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
