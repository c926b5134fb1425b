//! The local HTTP port: Prometheus `/metrics`, `/health` (per component; 503 while a sink
//! is failing or the journal is nearly full), and the [dashboard](crate::dashboard): the
//! page at `/` and its JSON API under `/api/v1/`.
//!
//! Served with hyper 1, the one reqwest already brings (no second HTTP stack), HTTP/1.1 only,
//! read-only, GET only. A client cannot hold the port or the process's file descriptors (see
//! [`ConnectionLimits`]): a request head must arrive within `header_timeout` (and a kept-alive
//! connection idle that long is closed; with TLS the handshake must finish within it too), a
//! head is at most [`MAX_HEAD_BYTES`], a request with a body is refused (413) and its
//! connection closed, at most `max_connections` are open at once (more are refused: closed at
//! once, with a best-effort 503 on plain HTTP), and a connection lives at most
//! [`MAX_CONNECTION_AGE`]. Each is counted in `http_connections_closed_total{reason}` or
//! `http_connections_refused_total`, and logged at most once a minute.
//!
//! Beyond loopback it is served with [`Access`]: HTTPS (rustls, the ring provider, a client
//! certificate optionally required) and credentials ([`Auth`]: a bearer token or basic
//! authentication, compared in constant time). `/health` answers its status without them
//! (probes need it; the per-component report needs the credentials).

mod auth;

use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::header::{
    HeaderValue, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING, WWW_AUTHENTICATE,
};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

pub use auth::Auth;

use crate::backoff::LogLimit;
use crate::dashboard::{Body, Dashboard};
use crate::metrics::{Counter, Gauge, Metrics};
use crate::sync::MutexExt;

/// The journal is "nearly full" above this share of `max_bytes`.
const JOURNAL_NEARLY_FULL: f64 = 0.9;

/// The largest request head (request line and headers) read; a longer one closes the
/// connection. The dashboard's longest queries are a few hundred bytes. (hyper's minimum.)
pub const MAX_HEAD_BYTES: usize = 8 * 1024;

/// The longest a connection stays open: then it is closed once its request under way is
/// answered, or at once after another `header_timeout` (a client that does not read its
/// answer holds nothing for longer).
pub const MAX_CONNECTION_AGE: Duration = Duration::from_secs(300);

/// A pause after a failed `accept` (out of file descriptors), so as not to spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// How often each kind of refusal or cut-off connection is logged at most.
const LOG_PERIOD: Duration = Duration::from_secs(60);

/// What `/health` needs besides the metrics.
#[derive(Debug, Clone)]
pub struct HealthLimits {
    /// The journal's bound in bytes.
    pub journal_max_bytes: u64,
}

/// What a client may hold of the port (`[http]` in the configuration, which has the
/// defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// The longest a client may take to send a request head, and the longest a kept-alive
    /// connection may wait for the next one.
    pub header_timeout: Duration,
    /// The most connections open at once.
    pub max_connections: usize,
}

/// Binds `addr`.
///
/// # Errors
/// The address is in use or not ours.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let listener = TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Who may use the port: HTTPS and credentials, each optional (`[http.tls]`, `[http.auth]`).
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// Serve HTTPS with this configuration (see [`crate::tls::server_config`]).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Answer 401 to a request without these credentials (but see `route` for `/health`).
    pub auth: Option<Auth>,
}

/// Why the server closed a connection it had taken (a label of
/// `http_connections_closed_total`).
#[derive(Debug, Clone, Copy)]
enum Closed {
    /// No whole request head (or, with TLS, no finished handshake) arrived within
    /// `header_timeout` (a silent or slow client). (A kept-alive connection that idles that
    /// long after its requests is closed too, as usual, and not counted.)
    HeaderTimeout,
    /// The connection reached [`MAX_CONNECTION_AGE`].
    MaxAge,
    /// The TLS handshake failed: not TLS, no common cipher suite, or a client certificate
    /// missing or refused.
    TlsHandshake,
}

impl Closed {
    const ALL: [Closed; 3] = [Closed::HeaderTimeout, Closed::MaxAge, Closed::TlsHandshake];

    fn reason(self) -> &'static str {
        match self {
            Closed::HeaderTimeout => "header_timeout",
            Closed::MaxAge => "max_age",
            Closed::TlsHandshake => "tls_handshake",
        }
    }
}

/// The index of refusals in [`Events::logs`], after the [`Closed`] reasons.
const REFUSED: usize = Closed::ALL.len();

/// Counts and logs (at most once per [`LOG_PERIOD`] each) what the server refuses or cuts off.
struct Events {
    open: Gauge,
    refused: Counter,
    closed: [Counter; Closed::ALL.len()],
    /// One per [`Closed`], then the refusals.
    logs: Mutex<[LogLimit; Closed::ALL.len() + 1]>,
}

impl Events {
    fn new(metrics: &Metrics) -> Events {
        Events {
            open: metrics.gauge("http_connections_open", &[]),
            refused: metrics.counter("http_connections_refused_total", &[]),
            closed: Closed::ALL.map(|c| {
                metrics.counter("http_connections_closed_total", &[("reason", c.reason())])
            }),
            logs: Mutex::new(std::array::from_fn(|_| LogLimit::new(LOG_PERIOD))),
        }
    }

    /// Whether the event `index` (a [`Closed`], or [`REFUSED`]) is to be logged now, and how
    /// many went unlogged since the last line.
    fn log(&self, index: usize) -> Option<u64> {
        self.logs.lock_unpoisoned()[index].event(Instant::now())
    }

    fn refused(&self, limits: &ConnectionLimits, peer: SocketAddr) {
        self.refused.inc();
        if let Some(unlogged) = self.log(REFUSED) {
            warn!(%peer, max_connections = limits.max_connections, unlogged,
                "too many HTTP connections: refusing new ones (http.max_connections)");
        }
    }

    fn closed(&self, why: Closed, peer: SocketAddr) {
        self.closed[why as usize].inc();
        if let Some(unlogged) = self.log(why as usize) {
            warn!(%peer, reason = why.reason(), unlogged, "HTTP connection closed");
        }
    }
}

/// What every request is answered from.
struct Site {
    metrics: Metrics,
    health: HealthLimits,
    dashboard: Dashboard,
    auth: Option<Auth>,
}

/// Serves until `stop`, within `limits`, with `access`; then lets the requests under way
/// finish (at most `header_timeout` more) and returns.
///
/// # Errors
/// The listener cannot be handed to the runtime.
pub async fn serve(
    listener: TcpListener,
    limits: ConnectionLimits,
    access: Access,
    metrics: Metrics,
    health: HealthLimits,
    dashboard: Dashboard,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let events = Arc::new(Events::new(&metrics));
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_HEAD_BYTES);
    let tls = access.tls.map(TlsAcceptor::from);
    let site = Arc::new(Site {
        metrics,
        health,
        dashboard,
        auth: access.auth,
    });
    let connections = TaskTracker::new();
    let mut accept_errors = LogLimit::new(LOG_PERIOD);
    loop {
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, or the client gave up: wait a little, go on.
                    if let Some(unlogged) = accept_errors.event(Instant::now()) {
                        warn!(error = %e, unlogged, "cannot accept an HTTP connection");
                    }
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            if tls.is_none() {
                // A TLS client would read a plain answer as garbage: it is just closed.
                refuse(&stream);
            }
            events.refused(&limits, peer);
            continue;
        };
        let one = Connection {
            http: http.clone(),
            limits,
            site: Arc::clone(&site),
            events: Arc::clone(&events),
            stop: stop.clone(),
            peer,
        };
        let tls = tls.clone();
        events.open.add(1);
        connections.spawn(async move {
            let _permit = permit;
            match tls {
                None => one.serve(stream).await,
                Some(tls) => {
                    // A client that never finishes its hello holds the connection no longer
                    // than one that never finishes its request head.
                    match tokio::time::timeout(limits.header_timeout, tls.accept(stream)).await {
                        Ok(Ok(stream)) => one.serve(stream).await,
                        Ok(Err(e)) => {
                            debug!(%peer, error = %e, "TLS handshake failed");
                            one.events.closed(Closed::TlsHandshake, peer);
                        }
                        Err(_) => one.events.closed(Closed::HeaderTimeout, peer),
                    }
                }
            }
            one.events.open.add(-1);
        });
    }
    connections.close();
    let _ = tokio::time::timeout(limits.header_timeout, connections.wait()).await;
    Ok(())
}

/// One accepted connection, and what serving it needs.
struct Connection {
    http: http1::Builder,
    limits: ConnectionLimits,
    site: Arc<Site>,
    events: Arc<Events>,
    stop: CancellationToken,
    peer: SocketAddr,
}

impl Connection {
    /// Serves HTTP/1.1 on `io` (a TCP stream, or a TLS stream over one) until the client
    /// goes, the connection reaches its age or times out, or `stop`.
    async fn serve<I>(&self, io: I)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (limits, peer) = (self.limits, self.peer);
        let started = Instant::now();
        // Whether a whole request head arrived: hyper closes a connection on which none
        // did within `header_timeout` without saying so.
        let requested = Arc::new(AtomicBool::new(false));
        let service = {
            let (site, requested) = (Arc::clone(&self.site), Arc::clone(&requested));
            service_fn(move |req| {
                requested.store(true, Ordering::Relaxed);
                let site = Arc::clone(&site);
                async move { Ok::<_, Infallible>(route(req, &site).await) }
            })
        };
        let conn = self.http.serve_connection(TokioIo::new(io), service);
        let mut conn = std::pin::pin!(conn);
        let winding_down = tokio::select! {
            result = conn.as_mut() => Some(result),
            () = self.stop.cancelled() => None,
            () = tokio::time::sleep(MAX_CONNECTION_AGE) => {
                self.events.closed(Closed::MaxAge, peer);
                None
            }
        };
        let result = match winding_down {
            Some(result) => Some(result),
            None => {
                // Finish the request under way, if any; a client that does not read its
                // answer gets `header_timeout` more.
                conn.as_mut().graceful_shutdown();
                tokio::time::timeout(limits.header_timeout, conn).await.ok()
            }
        };
        if let Some(Err(e)) = result {
            debug!(%peer, error = %e, "HTTP connection ended");
        }
        // A client that closes first does so before the timeout.
        if !requested.load(Ordering::Relaxed) && started.elapsed() >= limits.header_timeout {
            self.events.closed(Closed::HeaderTimeout, peer);
        }
    }
}

/// Answers a connection over the limit with a 503, if the socket takes it at once, and
/// closes it.
fn refuse(stream: &tokio::net::TcpStream) {
    const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n\
        Content-Type: text/plain\r\nContent-Length: 29\r\n\r\ntoo many connections, retry\r\n";
    let _ = stream.try_write(BUSY);
}

/// The answer to `req`. With [`Access::auth`], a request without the credentials gets a 401,
/// except `/health`, which then answers only its status (`{"status":"ok"}` with 200, or
/// `"failing"` with 503), not the per-component report: service managers and load
/// balancers probe it without credentials, and the status is all they read.
async fn route(req: Request<Incoming>, site: &Site) -> Response<Body> {
    if has_body(&req) {
        // Nothing here takes a body: refuse it unread, and close (it may still be coming).
        let mut r = text(
            StatusCode::PAYLOAD_TOO_LARGE,
            "no request body is taken here\n",
        );
        r.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
        return r;
    }
    if let Some(auth) = &site.auth {
        if !auth.allows(req.headers()) {
            if req.method() == Method::GET && req.uri().path() == "/health" {
                return health_response(site, false);
            }
            let mut r = text(StatusCode::UNAUTHORIZED, "credentials required\n");
            r.headers_mut().insert(WWW_AUTHENTICATE, auth.challenge());
            return r;
        }
    }
    if req.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
    }
    match req.uri().path() {
        "/metrics" => {
            let mut r = Response::new(Body::from(site.metrics.render_prometheus()));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            return r;
        }
        "/health" => return health_response(site, true),
        _ => {}
    }
    let (path, query) = (req.uri().path(), req.uri().query());
    match site.dashboard.handle(path, query).await {
        Some(r) => r,
        None => text(
            StatusCode::NOT_FOUND,
            "not found: try /, /api/v1/devices, /metrics or /health\n",
        ),
    }
}

/// `/health`: the whole report, or (`detailed` false) only its status.
fn health_response(site: &Site, detailed: bool) -> Response<Body> {
    let (healthy, body) = health(&site.metrics, &site.health);
    let body = if detailed {
        body
    } else {
        json!({ "status": body["status"] })
    };
    let mut r = Response::new(Body::from(body.to_string() + "\n"));
    *r.status_mut() = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// Whether the request has a body (or says one follows).
fn has_body<B>(req: &Request<B>) -> bool {
    let length = req
        .headers()
        .get(CONTENT_LENGTH)
        .map(|v| v.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok()));
    req.headers().contains_key(TRANSFER_ENCODING) || !matches!(length, None | Some(Some(0)))
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r
}

/// Whether the collector is healthy, and the per-component report: every sink up (its last
/// write succeeded, or it has not failed yet), the journal below 90% of its bound. Sources
/// are reported but do not make it unhealthy (a broker or a port that is away is waited for;
/// the data waits there).
pub fn health(metrics: &Metrics, limits: &HealthLimits) -> (bool, serde_json::Value) {
    let state = metrics.health();
    let sinks: serde_json::Map<_, _> = state
        .sinks
        .iter()
        .map(|(name, up)| (name.clone(), json!(if *up { "up" } else { "failing" })))
        .collect();
    let sources: serde_json::Map<_, _> = state
        .sources
        .iter()
        .map(|(name, c)| {
            let c = if *c { "connected" } else { "disconnected" };
            (name.clone(), json!(c))
        })
        .collect();
    // Polled devices (Modbus): answering or not, by source.
    let mut devices = serde_json::Map::new();
    for (source, device, up) in &state.devices {
        let entry = devices.entry(source.clone()).or_insert_with(|| json!({}));
        entry[device] = json!(if *up { "up" } else { "down" });
    }
    let journal_bytes = state.journal_bytes;
    let fill = journal_bytes as f64 / limits.journal_max_bytes.max(1) as f64;
    let journal_ok = fill < JOURNAL_NEARLY_FULL;
    let sinks_ok = sinks.values().all(|v| v == "up");
    let healthy = journal_ok && sinks_ok;
    let body = json!({
        "status": if healthy { "ok" } else { "failing" },
        "journal": {
            "bytes": journal_bytes,
            "max_bytes": limits.journal_max_bytes,
            "status": if journal_ok { "ok" } else { "nearly full" },
        },
        "sinks": sinks,
        "sources": sources,
        "devices": devices,
    });
    (healthy, body)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn health_fails_with_a_failing_sink_or_a_nearly_full_journal() {
        let m = Metrics::new();
        let limits = HealthLimits {
            journal_max_bytes: 1000,
        };
        m.sink_up("local").set(1);
        m.source_connected("mqtt:a").set(0);
        m.journal_bytes().set(100);
        m.modbus_device_up("modbus:bus", "meter").set(0);
        let (ok, body) = health(&m, &limits);
        assert!(
            ok,
            "a disconnected source or a silent device alone is not a failure: {body}"
        );
        assert_eq!(body["sources"]["mqtt:a"], "disconnected");
        assert_eq!(body["devices"]["modbus:bus"]["meter"], "down");

        m.sink_up("influxdb:vm").set(0);
        let (ok, body) = health(&m, &limits);
        assert!(!ok);
        assert_eq!(body["sinks"]["influxdb:vm"], "failing");

        m.sink_up("influxdb:vm").set(1);
        m.journal_bytes().set(950);
        let (ok, body) = health(&m, &limits);
        assert!(!ok);
        assert_eq!(body["journal"]["status"], "nearly full");
    }

    /// The port, seen only through raw TCP (independent of the HTTP library behind it).
    mod limits {
        use std::time::Instant;

        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        use tokio::net::TcpStream;

        use super::*;

        /// The longest any test waits for what must happen much sooner.
        const BOUND: Duration = Duration::from_secs(10);

        struct Server {
            addr: SocketAddr,
            metrics: Metrics,
            stop: CancellationToken,
        }

        impl Drop for Server {
            fn drop(&mut self) {
                self.stop.cancel();
            }
        }

        fn start(header_timeout: Duration, max_connections: usize) -> Server {
            let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
            let addr = listener.local_addr().unwrap();
            let (metrics, stop) = (Metrics::new(), CancellationToken::new());
            tokio::spawn(serve(
                listener,
                ConnectionLimits {
                    header_timeout,
                    max_connections,
                },
                Access::default(),
                metrics.clone(),
                HealthLimits {
                    journal_max_bytes: 1 << 30,
                },
                Dashboard::new(None),
                stop.clone(),
            ));
            Server {
                addr,
                metrics,
                stop,
            }
        }

        /// Reads until the server closes `stream` (end of stream, or a reset) and returns
        /// what it sent; `None` if it is still open after `within`.
        async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
            let mut got = Vec::new();
            let read = async {
                let mut buf = [0u8; 4096];
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
            };
            tokio::time::timeout(within, read).await.ok().map(|()| got)
        }

        /// A plain request on a new connection: the status code and the body.
        async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
            let mut s = TcpStream::connect(addr).await.unwrap();
            let head = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            s.write_all(head.as_bytes()).await.unwrap();
            let answer = closed_within(&mut s, BOUND).await.expect("an answer");
            let text = String::from_utf8_lossy(&answer).into_owned();
            let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
            let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string());
            (status, body.unwrap_or_default())
        }

        /// Waits (bounded) until `f` holds.
        async fn until(what: &str, f: impl Fn() -> bool) {
            let deadline = Instant::now() + BOUND;
            while !f() {
                assert!(Instant::now() < deadline, "{what}: not within {BOUND:?}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }

        fn open(m: &Metrics) -> i64 {
            m.gauges()
                .into_iter()
                .find(|(k, _)| k.name == "http_connections_open")
                .map_or(0, |(_, v)| v)
        }

        /// Issue 15: 200 connections sending a byte a second were all still open after 10 s.
        /// Now a client that is silent, or sends its head a byte at a time, is cut off at
        /// the header timeout; beyond the connection limit clients are refused; and the port
        /// answers a normal client afterwards.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn slow_and_silent_clients_are_cut_off_and_the_port_answers_after() {
            let header_timeout = Duration::from_millis(500);
            let server = start(header_timeout, 16);
            let started = Instant::now();
            let mut clients = Vec::new();
            for i in 0..200 {
                let s = TcpStream::connect(server.addr).await.unwrap();
                let (mut read, mut write) = s.into_split();
                if i % 2 == 0 {
                    // A head that never ends, a byte every 50 ms until the server is gone.
                    tokio::spawn(async move {
                        let head = b"GET /metrics HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
                        for b in head.iter().cycle() {
                            if write.write_all(&[*b]).await.is_err() {
                                return;
                            }
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    });
                } else {
                    std::mem::forget(write); // silent, and never half-closed
                }
                clients.push(tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    loop {
                        match read.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                    }
                }));
            }
            for c in clients {
                tokio::time::timeout(BOUND, c)
                    .await
                    .expect("every slow or silent client is disconnected")
                    .unwrap();
            }
            assert!(started.elapsed() >= header_timeout);
            let m = &server.metrics;
            let refused = m.sum("http_connections_refused_total", &[]);
            let timed_out = || {
                m.sum(
                    "http_connections_closed_total",
                    &[("reason", "header_timeout")],
                )
            };
            until("every taken connection counted", || {
                refused + timed_out() == 200 && open(m) == 0
            })
            .await;
            assert!(timed_out() >= 16, "{} timed out", timed_out());
            let (status, body) = get(server.addr, "/health").await;
            assert_eq!(status, 200, "{body}");
            assert!(body.contains("\"status\":\"ok\""), "{body}");
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn beyond_the_limit_connections_are_refused_at_once_and_counted() {
            // A timeout far longer than the test: only the limit can close a connection.
            let server = start(Duration::from_secs(600), 4);
            let mut held = Vec::new();
            for _ in 0..4 {
                held.push(TcpStream::connect(server.addr).await.unwrap());
            }
            until("4 connections open", || open(&server.metrics) == 4).await;
            let mut fifth = TcpStream::connect(server.addr).await.unwrap();
            let answer = closed_within(&mut fifth, BOUND).await.expect("refused");
            let answer = String::from_utf8_lossy(&answer);
            assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
            assert_eq!(server.metrics.sum("http_connections_refused_total", &[]), 1);
            // The held ones are untouched; once they go, the port answers again.
            assert_eq!(open(&server.metrics), 4);
            drop(held);
            until("held connections closed", || open(&server.metrics) == 0).await;
            assert_eq!(get(server.addr, "/health").await.0, 200);
            assert_eq!(server.metrics.sum("http_connections_refused_total", &[]), 1);
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_request_body_is_refused_and_a_large_one_is_not_read() {
            let server = start(Duration::from_secs(600), 4);
            let mut s = TcpStream::connect(server.addr).await.unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
                .await
                .unwrap();
            let answer = closed_within(&mut s, BOUND).await.expect("closed");
            let answer = String::from_utf8_lossy(&answer);
            assert!(answer.starts_with("HTTP/1.1 413 "), "{answer}");

            // A gigabyte announced, and sent for as long as the server takes it: it closes
            // the connection long before.
            let s = TcpStream::connect(server.addr).await.unwrap();
            let (mut read, mut write) = s.into_split();
            let sender = tokio::spawn(async move {
                write
                    .write_all(
                        b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n",
                    )
                    .await
                    .unwrap();
                let chunk = vec![b'x'; 64 * 1024];
                let mut sent = 0usize;
                while write.write_all(&chunk).await.is_ok() {
                    sent += chunk.len();
                }
                sent
            });
            let sent = tokio::time::timeout(BOUND, sender)
                .await
                .expect("the server stops taking the body")
                .unwrap();
            assert!(sent < 64 << 20, "{sent} bytes taken");
            let mut buf = Vec::new();
            let _ = tokio::time::timeout(BOUND, read.read_to_end(&mut buf))
                .await
                .expect("closed");
            assert_eq!(get(server.addr, "/health").await.0, 200);
        }
    }
}
