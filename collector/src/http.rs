//! The local HTTP port: Prometheus `/metrics`, `/health` (per component; 503 while a sink
//! is failing or the journal is nearly full), and the [dashboard](crate::dashboard): the
//! page at `/` and its JSON API under `/api/v1/`.
//!
//! Served with the hyper that reqwest already brings (no second HTTP stack), read-only, GET
//! only.

use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener};

use hyper::service::{make_service_fn, service_fn};
use hyper::{Body, Method, Request, Response, Server, StatusCode};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::dashboard::Dashboard;
use crate::metrics::Metrics;

/// The journal is "nearly full" above this share of `max_bytes`.
const JOURNAL_NEARLY_FULL: f64 = 0.9;

/// What `/health` needs besides the metrics.
#[derive(Debug, Clone)]
pub struct HealthLimits {
    /// The journal's bound in bytes.
    pub journal_max_bytes: u64,
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

/// Serves until `stop`.
///
/// # Errors
/// The listener cannot be handed to the server.
pub async fn serve(
    listener: TcpListener,
    metrics: Metrics,
    limits: HealthLimits,
    dashboard: Dashboard,
    stop: CancellationToken,
) -> hyper::Result<()> {
    let make = make_service_fn(move |_| {
        let metrics = metrics.clone();
        let limits = limits.clone();
        let dashboard = dashboard.clone();
        async move {
            Ok::<_, Infallible>(service_fn(move |req| {
                let (metrics, limits, dashboard) =
                    (metrics.clone(), limits.clone(), dashboard.clone());
                async move { Ok::<_, Infallible>(route(req, &metrics, &limits, &dashboard).await) }
            }))
        }
    });
    Server::from_tcp(listener)?
        .serve(make)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
}

async fn route(
    req: Request<Body>,
    metrics: &Metrics,
    limits: &HealthLimits,
    dashboard: &Dashboard,
) -> Response<Body> {
    if let Some(r) = handle(&req, metrics, limits) {
        return r;
    }
    let (path, query) = (req.uri().path(), req.uri().query());
    match dashboard.handle(path, query).await {
        Some(r) => r,
        None => text(
            StatusCode::NOT_FOUND,
            "not found: try /, /api/v1/devices, /metrics or /health\n",
        ),
    }
}

/// The response to `/metrics` and `/health`, and to anything but a GET; `None` for the
/// dashboard's paths.
fn handle(req: &Request<Body>, metrics: &Metrics, limits: &HealthLimits) -> Option<Response<Body>> {
    if req.method() != Method::GET {
        return Some(text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n"));
    }
    Some(match req.uri().path() {
        "/metrics" => {
            let mut r = Response::new(Body::from(metrics.render_prometheus()));
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            r
        }
        "/health" => {
            let (healthy, body) = health(metrics, limits);
            let mut r = Response::new(Body::from(body.to_string() + "\n"));
            *r.status_mut() = if healthy {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/json"),
            );
            r
        }
        _ => return None,
    })
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
    let gauges = metrics.gauges();
    let label = |k: &crate::metrics::Key, name: &str| {
        k.labels
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let mut sinks = serde_json::Map::new();
    let mut sources = serde_json::Map::new();
    // Polled devices (Modbus): answering or not, by source.
    let mut devices = serde_json::Map::new();
    let mut journal_bytes = 0;
    for (k, v) in &gauges {
        match k.name {
            "sink_up" => {
                sinks.insert(
                    label(k, "sink"),
                    json!(if *v == 1 { "up" } else { "failing" }),
                );
            }
            "source_connected" => {
                sources.insert(
                    label(k, "source"),
                    json!(if *v == 1 { "connected" } else { "disconnected" }),
                );
            }
            "modbus_device_up" => {
                let entry = devices
                    .entry(label(k, "source"))
                    .or_insert_with(|| json!({}));
                entry[label(k, "device")] = json!(if *v == 1 { "up" } else { "down" });
            }
            "journal_bytes" => journal_bytes = *v,
            _ => {}
        }
    }
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
mod tests {
    use super::*;

    #[test]
    fn health_fails_with_a_failing_sink_or_a_nearly_full_journal() {
        let m = Metrics::new();
        let limits = HealthLimits {
            journal_max_bytes: 1000,
        };
        m.gauge("sink_up", &[("sink", "local")]).set(1);
        m.gauge("source_connected", &[("source", "mqtt:a")]).set(0);
        m.gauge("journal_bytes", &[]).set(100);
        m.gauge(
            "modbus_device_up",
            &[("source", "modbus:bus"), ("device", "meter")],
        )
        .set(0);
        let (ok, body) = health(&m, &limits);
        assert!(
            ok,
            "a disconnected source or a silent device alone is not a failure: {body}"
        );
        assert_eq!(body["sources"]["mqtt:a"], "disconnected");
        assert_eq!(body["devices"]["modbus:bus"]["meter"], "down");

        m.gauge("sink_up", &[("sink", "influxdb:vm")]).set(0);
        let (ok, body) = health(&m, &limits);
        assert!(!ok);
        assert_eq!(body["sinks"]["influxdb:vm"], "failing");

        m.gauge("sink_up", &[("sink", "influxdb:vm")]).set(1);
        m.gauge("journal_bytes", &[]).set(950);
        let (ok, body) = health(&m, &limits);
        assert!(!ok);
        assert_eq!(body["journal"]["status"], "nearly full");
    }
}
