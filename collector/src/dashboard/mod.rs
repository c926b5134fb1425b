//! The dashboard on the HTTP port: a read-only web page (`/`) over the local store and the
//! JSON query API it uses (`/api/v1/...`, see [`api`] and `docs/http-api.md`), which other
//! tools can use too.
//!
//! The page is plain HTML, CSS and JavaScript embedded in the binary (no build step, nothing
//! fetched from elsewhere: it works offline); it draws its charts itself as SVG.
//!
//! Store reads run on Tokio's blocking pool, at most [`MAX_CONCURRENT_QUERIES`] at a time,
//! each on a read-only SQLite connection of its own (kept for reuse): WAL mode lets them
//! read while the local sink writes, without blocking it.

pub mod api;
mod params;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde_json::json;
use tokio::sync::Semaphore;

pub use params::BadRequest;

use crate::error::error_chain;
use crate::store::LocalStore;
use crate::sync::MutexExt;
use crate::time::now_ns;

/// The body of every response of the HTTP port: whole, in memory (the largest is a bounded
/// API answer). Defined here, below [`http`](crate::http), which serves the dashboard.
pub type Body = Full<Bytes>;

/// Store reads that may run at once; more requests wait their turn.
pub const MAX_CONCURRENT_QUERIES: usize = 2;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

/// The page's assets: path, content type, body.
const ASSETS: &[(&str, &str, &str)] = &[
    ("/", "text/html; charset=utf-8", INDEX_HTML),
    ("/app.js", "text/javascript; charset=utf-8", APP_JS),
    ("/style.css", "text/css; charset=utf-8", STYLE_CSS),
];

/// Only our own files, no inline code, no other origin: the page needs nothing else.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The page and the API. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Dashboard {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The local store; `None` when it is not configured (the API then says so).
    store: Mutex<Option<PathBuf>>,
    /// Idle read-only connections.
    readers: Mutex<Vec<LocalStore>>,
    permits: Semaphore,
}

impl Dashboard {
    /// A dashboard over the local store at `store` (`None`: no local store is configured).
    pub fn new(store: Option<PathBuf>) -> Dashboard {
        Dashboard {
            inner: Arc::new(Inner {
                store: Mutex::new(store),
                readers: Mutex::new(Vec::new()),
                permits: Semaphore::new(MAX_CONCURRENT_QUERIES),
            }),
        }
    }

    /// Reads the local store at `store` from now on (a reload moved it, or turned it off or
    /// on); requests under way finish on the old one.
    pub fn set_store(&self, store: Option<PathBuf>) {
        let mut current = self.inner.store.lock_unpoisoned();
        if *current != store {
            *current = store;
            self.inner.readers.lock_unpoisoned().clear();
        }
    }

    /// The response to `GET path?query`, or `None` when the path is not the dashboard's.
    pub async fn handle(&self, path: &str, query: Option<&str>) -> Option<Response<Body>> {
        if let Some((_, content_type, body)) = ASSETS.iter().find(|(p, _, _)| *p == path) {
            let mut r = Response::new(Body::from(*body));
            let h = r.headers_mut();
            h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
            h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            h.insert("content-security-policy", HeaderValue::from_static(CSP));
            h.insert(
                "x-content-type-options",
                HeaderValue::from_static("nosniff"),
            );
            return Some(r);
        }
        if !path.starts_with("/api/") {
            return None;
        }
        let Some(request) = api::parse(path, query, now_ns()) else {
            let paths: Vec<&str> = api::endpoints().collect();
            return Some(error(
                StatusCode::NOT_FOUND,
                &format!("no such endpoint: {path} (try {})", paths.join(", ")),
            ));
        };
        let request = match request {
            Ok(r) => r,
            Err(BadRequest(message)) => return Some(error(StatusCode::BAD_REQUEST, &message)),
        };
        Some(self.run(request).await)
    }

    async fn run(&self, request: api::Request) -> Response<Body> {
        let path = self.inner.store.lock_unpoisoned().clone();
        let Some(path) = path else {
            return error(
                StatusCode::NOT_FOUND,
                "no local store is configured ([sinks.local]): the API reads only the local store",
            );
        };
        let Ok(_permit) = self.inner.permits.acquire().await else {
            return error(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
        };
        let inner = Arc::clone(&self.inner);
        let task = tokio::task::spawn_blocking(move || {
            let pooled = inner.readers.lock_unpoisoned().pop();
            let store = match pooled {
                Some(store) => store,
                None => LocalStore::open_read_only(&path).map_err(api::ApiError::Store)?,
            };
            let result = api::run(&store, &request);
            // A connection that failed may be broken, and one to a store the dashboard no
            // longer reads is of no use: only a good, current one goes back.
            let current = inner.store.lock_unpoisoned().clone();
            if result.is_ok() && current.as_deref() == Some(store.path()) {
                let mut readers = inner.readers.lock_unpoisoned();
                if readers.len() < MAX_CONCURRENT_QUERIES {
                    readers.push(store);
                }
            }
            result
        });
        match task.await {
            Ok(Ok(body)) => {
                let mut r = Response::new(Body::from(body));
                r.headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                r
            }
            Ok(Err(api::ApiError::BadRequest(BadRequest(message)))) => {
                error(StatusCode::BAD_REQUEST, &message)
            }
            Ok(Err(api::ApiError::Store(e))) => {
                let message = error_chain(&e);
                tracing::warn!(error = %message, "dashboard: cannot read the local store");
                error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!("cannot read the local store: {message}"),
                )
            }
            Err(e) => {
                tracing::error!(error = %e, "dashboard: a query task failed");
                error(StatusCode::INTERNAL_SERVER_ERROR, "the query failed")
            }
        }
    }
}

/// `{"error": message}` with `status`.
fn error(status: StatusCode, message: &str) -> Response<Body> {
    let mut r = Response::new(Body::from(json!({ "error": message }).to_string() + "\n"));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    use crate::reading::{FieldValue, Reading, DEVICE_TAG};

    fn store_with(dir: &std::path::Path, device: &str) -> PathBuf {
        let path = dir.join(format!("{device}.db"));
        let mut r = Reading::new("env", 1);
        r.set_tag(DEVICE_TAG, device);
        r.fields = vec![("t".into(), FieldValue::Float(1.0))];
        LocalStore::open(&path).unwrap().insert(&[r]).unwrap();
        path
    }

    async fn devices(d: &Dashboard) -> (StatusCode, serde_json::Value) {
        let r = d.handle("/api/v1/devices", None).await.unwrap();
        let status = r.status();
        let body = http_body_util::BodyExt::collect(r.into_body())
            .await
            .unwrap()
            .to_bytes();
        (status, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn a_reload_that_moves_the_store_moves_the_dashboard() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (store_with(dir.path(), "a"), store_with(dir.path(), "b"));
        let d = Dashboard::new(Some(a));
        assert_eq!(devices(&d).await.1["devices"][0]["device"], "a");
        d.set_store(Some(b));
        assert_eq!(devices(&d).await.1["devices"][0]["device"], "b");
        d.set_store(None);
        let (status, json) = devices(&d).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(json["error"]
            .as_str()
            .unwrap()
            .starts_with("no local store is configured"));
        // Not the dashboard's.
        assert!(d.handle("/metrics", None).await.is_none());
        assert!(d.handle("/apiv1/devices", None).await.is_none());
    }
}
