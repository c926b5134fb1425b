//! The JSON query API over the local store (`/api/v1/...`), documented in `docs/http-api.md`:
//! devices with last seen and status, the latest value of each series, raw points for a
//! range, and downsampled series (count, min, max, mean per step).
//!
//! Parsing (`parse`) runs on the async runtime and refuses bad requests before the store
//! is touched; `run` reads the store and must run on a blocking thread. Every response is
//! bounded: by `limit` (with a maximum), or by refusing a query whose answer would be too
//! large.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::ser::{Serialize, SerializeMap, Serializer};

use super::params::{BadRequest, Params};
use crate::reading::Precision;
use crate::store::{
    format_time, JsonTags, JsonValue, LocalStore, Point, Query, SeriesBuckets, StoreError,
};
use crate::time::duration_ns;

/// A device is `stale` when its last reading is older than this (unless `stale=` says).
pub const DEFAULT_STALE: Duration = Duration::from_secs(300);
/// Devices and latest values: the most series read.
pub const MAX_SERIES: usize = 10_000;
/// Raw points: the default and the largest `limit`.
pub const DEFAULT_POINTS: usize = 10_000;
/// See [`DEFAULT_POINTS`].
pub const MAX_POINTS: usize = 100_000;
/// Downsampling: the most steps per series.
pub const MAX_STEPS: u64 = 10_000;
/// Downsampling: the most buckets in one response (series × steps).
pub const MAX_BUCKETS: u64 = 100_000;

/// The endpoints, with the parameters each takes.
const ENDPOINTS: &[(&str, &[&str])] = &[
    ("/api/v1/devices", &["stale", "limit", "epoch"]),
    (
        "/api/v1/latest",
        &["measurement", "field", "device", "tag", "limit", "epoch"],
    ),
    (
        "/api/v1/points",
        &[
            "measurement",
            "field",
            "device",
            "tag",
            "from",
            "to",
            "limit",
            "epoch",
        ],
    ),
    (
        "/api/v1/downsample",
        &[
            "measurement",
            "field",
            "device",
            "tag",
            "from",
            "to",
            "step",
            "limit",
            "epoch",
        ],
    ),
];

/// A valid API request.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Request {
    Devices {
        stale_ns: i64,
        limit: usize,
        now_ns: i64,
        epoch: Precision,
    },
    Latest {
        query: Query,
        epoch: Precision,
    },
    Points {
        query: Query,
        epoch: Precision,
    },
    Downsample {
        query: Query,
        step_ns: i64,
        steps: u64,
        epoch: Precision,
    },
}

/// Why a request got no answer.
#[derive(Debug)]
pub(crate) enum ApiError {
    /// The request is wrong (400).
    BadRequest(BadRequest),
    /// The store could not be read (503).
    Store(StoreError),
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        ApiError::Store(e)
    }
}

/// The paths of the endpoints, for messages.
pub(crate) fn endpoints() -> impl Iterator<Item = &'static str> {
    ENDPOINTS.iter().map(|(path, _)| *path)
}

/// Parses a request for `path` (`None` when no endpoint has that path), relative times
/// counted back from `now_ns`.
pub(crate) fn parse(
    path: &str,
    query: Option<&str>,
    now_ns: i64,
) -> Option<Result<Request, BadRequest>> {
    let (path, allowed) = ENDPOINTS.iter().find(|(p, _)| *p == path)?;
    Some(Params::parse(query, path, allowed).and_then(|p| request(path, &p, now_ns)))
}

fn request(path: &str, p: &Params, now_ns: i64) -> Result<Request, BadRequest> {
    let epoch = p.epoch()?;
    let filters = || -> Result<Query, BadRequest> {
        Ok(Query {
            measurement: p.string("measurement"),
            tags: p.tags()?,
            field: p.string("field"),
            device: p.string("device"),
            ..Query::default()
        })
    };
    let range = |query: &mut Query| -> Result<(i64, i64), BadRequest> {
        let from = p.required_time("from", now_ns)?;
        let to = p.time("to", now_ns)?.unwrap_or(now_ns);
        if from >= to {
            return Err(BadRequest::new(format!(
                "from ({}) is not before to ({})",
                format_time(from),
                format_time(to)
            )));
        }
        query.from_ns = Some(from);
        query.to_ns = Some(to);
        Ok((from, to))
    };
    match path {
        "/api/v1/devices" => Ok(Request::Devices {
            stale_ns: duration_ns(p.duration("stale")?.unwrap_or(DEFAULT_STALE)),
            limit: p.limit("limit", MAX_SERIES, MAX_SERIES)?,
            now_ns,
            epoch,
        }),
        "/api/v1/latest" => {
            let mut query = filters()?;
            query.limit = Some(p.limit("limit", MAX_SERIES, MAX_SERIES)?);
            Ok(Request::Latest { query, epoch })
        }
        "/api/v1/points" => {
            let mut query = filters()?;
            range(&mut query)?;
            query.limit = Some(p.limit("limit", DEFAULT_POINTS, MAX_POINTS)?);
            Ok(Request::Points { query, epoch })
        }
        _ => {
            let mut query = filters()?;
            let (from, to) = range(&mut query)?;
            query.limit = Some(p.limit("limit", MAX_SERIES, MAX_SERIES)?);
            let step = p.duration("step")?.ok_or_else(|| {
                BadRequest::new("missing parameter \"step\": a duration such as 10s, 1m or 1h")
            })?;
            let step_ns = duration_ns(step);
            // Buckets are aligned on multiples of the step: count those the range touches.
            let steps = (to - 1)
                .div_euclid(step_ns)
                .abs_diff(from.div_euclid(step_ns))
                + 1;
            if steps > MAX_STEPS {
                let span = to.abs_diff(from);
                let least = round_up(span.div_ceil(MAX_STEPS - 1));
                return Err(BadRequest::new(format!(
                    "step {} over {} gives {steps} steps per series; at most {MAX_STEPS}: use a step of at least {}",
                    humantime::format_duration(step),
                    humantime::format_duration(Duration::from_nanos(span)),
                    humantime::format_duration(Duration::from_nanos(least)),
                )));
            }
            Ok(Request::Downsample {
                query,
                step_ns,
                steps,
                epoch,
            })
        }
    }
}

/// `ns` rounded up to whole seconds, milliseconds or microseconds (whichever is the largest
/// unit it is at least one of), for a readable suggestion.
fn round_up(ns: u64) -> u64 {
    let unit = [1_000_000_000, 1_000_000, 1_000]
        .into_iter()
        .find(|u| ns >= *u)
        .unwrap_or(1);
    ns.div_ceil(unit).saturating_mul(unit)
}

/// Answers `request` from `store`: the JSON body.
///
/// # Errors
/// [`ApiError::Store`] when the store cannot be read; [`ApiError::BadRequest`] when the
/// answer would be too large (downsampling too many series).
pub(crate) fn run(store: &LocalStore, request: &Request) -> Result<Vec<u8>, ApiError> {
    let body = match request {
        Request::Devices {
            stale_ns,
            limit,
            now_ns,
            epoch,
        } => {
            let latest = store.latest(&Query {
                limit: Some(MAX_SERIES + 1),
                ..Query::default()
            })?;
            let scanned_all = latest.len() <= MAX_SERIES;
            let mut devices = devices(&latest[..latest.len().min(MAX_SERIES)]);
            let truncated = !scanned_all || devices.len() > *limit;
            devices.truncate(*limit);
            to_json(&DevicesBody {
                now_ns: *now_ns,
                stale_ns: *stale_ns,
                devices: &devices,
                truncated,
                epoch: *epoch,
            })
        }
        Request::Latest { query, epoch } | Request::Points { query, epoch } => {
            let latest = matches!(request, Request::Latest { .. });
            let (points, truncated) = limited(query, |q| {
                if latest {
                    store.latest(q)
                } else {
                    store.query(q)
                }
            })?;
            to_json(&PointsBody {
                points: &points,
                latest,
                truncated,
                epoch: *epoch,
            })
        }
        Request::Downsample {
            query,
            step_ns,
            steps,
            epoch,
        } => {
            let series = store.series_count(query)?;
            let series = series.min(query.limit.unwrap_or(usize::MAX)) as u64;
            if series.saturating_mul(*steps) > MAX_BUCKETS {
                return Err(ApiError::BadRequest(BadRequest::new(format!(
                    "this query would return up to {} buckets ({series} series × {steps} steps); \
                     at most {MAX_BUCKETS}: narrow it with device, measurement, field or tag, \
                     or use a larger step",
                    series.saturating_mul(*steps)
                ))));
            }
            let series = store.downsample(query, *step_ns)?;
            to_json(&DownsampleBody {
                step_ns: *step_ns,
                series: &series,
                epoch: *epoch,
            })
        }
    };
    Ok(body)
}

/// What `read` returns for `query`, at most `query.limit` items (it is set), and whether
/// there were more.
fn limited(
    query: &Query,
    read: impl Fn(&Query) -> Result<Vec<Point>, StoreError>,
) -> Result<(Vec<Point>, bool), StoreError> {
    let limit = query.limit.unwrap_or(usize::MAX);
    let mut plus_one = query.clone();
    plus_one.limit = Some(limit.saturating_add(1));
    let mut items = read(&plus_one)?;
    let truncated = items.len() > limit;
    items.truncate(limit);
    Ok((items, truncated))
}

fn to_json(body: &impl Serialize) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing to a Vec fails only if a Serialize impl does, and ours do not.
    let _ = serde_json::to_writer(&mut out, body);
    out.push(b'\n');
    out
}

/// What `/devices` says of one device.
#[derive(Debug)]
struct Device {
    device: Option<String>,
    /// The tags every series of the device has (besides `device`).
    tags: Vec<(String, String)>,
    last_ns: i64,
    series: u64,
}

/// Devices from the latest point of each series, by device; series without a device tag
/// are grouped as device `null`.
fn devices(latest: &[Point]) -> Vec<Device> {
    let mut by_device: BTreeMap<Option<&str>, Device> = BTreeMap::new();
    for p in latest {
        let id = p
            .tags
            .iter()
            .find(|(k, _)| k == crate::reading::DEVICE_TAG)
            .map(|(_, v)| v.as_str());
        let others = || {
            p.tags
                .iter()
                .filter(|(k, _)| k != crate::reading::DEVICE_TAG)
                .cloned()
                .collect()
        };
        let d = by_device.entry(id).or_insert_with(|| Device {
            device: id.map(str::to_owned),
            tags: others(),
            last_ns: p.timestamp,
            series: 0,
        });
        d.series += 1;
        d.last_ns = d.last_ns.max(p.timestamp);
        d.tags.retain(|t| p.tags.contains(t));
    }
    by_device.into_values().collect()
}

struct DevicesBody<'a> {
    now_ns: i64,
    stale_ns: i64,
    devices: &'a [Device],
    truncated: bool,
    epoch: Precision,
}

impl Serialize for DevicesBody<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(4))?;
        map.serialize_entry("now", &self.epoch.convert(self.now_ns))?;
        map.serialize_entry("stale_after_s", &(self.stale_ns as f64 / 1e9))?;
        map.serialize_entry(
            "devices",
            &Seq(self.devices.iter().map(|d| JsonDevice {
                d,
                now_ns: self.now_ns,
                stale_ns: self.stale_ns,
                epoch: self.epoch,
            })),
        )?;
        map.serialize_entry("truncated", &self.truncated)?;
        map.end()
    }
}

struct JsonDevice<'a> {
    d: &'a Device,
    now_ns: i64,
    stale_ns: i64,
    epoch: Precision,
}

impl Serialize for JsonDevice<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let d = self.d;
        let stale = self.now_ns.saturating_sub(d.last_ns) > self.stale_ns;
        let mut map = serializer.serialize_map(Some(5))?;
        map.serialize_entry("device", &d.device)?;
        map.serialize_entry("tags", &JsonTags(&d.tags))?;
        map.serialize_entry("last_seen", &self.epoch.convert(d.last_ns))?;
        map.serialize_entry("status", if stale { "stale" } else { "ok" })?;
        map.serialize_entry("series", &d.series)?;
        map.end()
    }
}

struct JsonLatest<'a>(&'a Point, Precision);

impl Serialize for JsonLatest<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (p, epoch) = (self.0, self.1);
        let mut map = serializer.serialize_map(Some(5))?;
        map.serialize_entry("measurement", &p.measurement)?;
        map.serialize_entry("tags", &JsonTags(&p.tags))?;
        map.serialize_entry("field", &p.field)?;
        map.serialize_entry("time", &epoch.convert(p.timestamp))?;
        map.serialize_entry("value", &JsonValue(&p.value))?;
        map.end()
    }
}

/// Raw points by series, or (`latest`) the latest point of each series.
struct PointsBody<'a> {
    points: &'a [Point],
    latest: bool,
    truncated: bool,
    epoch: Precision,
}

impl Serialize for PointsBody<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let epoch = self.epoch;
        let mut map = serializer.serialize_map(Some(2))?;
        if self.latest {
            map.serialize_entry(
                "series",
                &Seq(self.points.iter().map(|p| JsonLatest(p, epoch))),
            )?;
            map.serialize_entry("truncated", &self.truncated)?;
            return map.end();
        }
        // The points come grouped by series: one entry per run of the same series.
        let mut runs: Vec<&[Point]> = Vec::new();
        let mut rest = self.points;
        while let Some(first) = rest.first() {
            let n = rest
                .iter()
                .position(|p| {
                    (&p.measurement, &p.tags, &p.field)
                        != (&first.measurement, &first.tags, &first.field)
                })
                .unwrap_or(rest.len());
            let (run, tail) = rest.split_at(n);
            runs.push(run);
            rest = tail;
        }
        map.serialize_entry(
            "series",
            &Seq(runs.iter().map(|run| SeriesJson {
                measurement: &run[0].measurement,
                tags: &run[0].tags,
                field: &run[0].field,
                data: (
                    "points",
                    Seq(run
                        .iter()
                        .map(move |p| (epoch.convert(p.timestamp), JsonValue(&p.value)))),
                ),
            })),
        )?;
        map.serialize_entry("truncated", &self.truncated)?;
        map.end()
    }
}

struct DownsampleBody<'a> {
    step_ns: i64,
    series: &'a [SeriesBuckets],
    epoch: Precision,
}

impl Serialize for DownsampleBody<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let epoch = self.epoch;
        let mut map = serializer.serialize_map(Some(3))?;
        map.serialize_entry("step_s", &(self.step_ns as f64 / 1e9))?;
        map.serialize_entry("columns", &["time", "count", "min", "max", "mean"])?;
        map.serialize_entry(
            "series",
            &Seq(self.series.iter().map(|s| SeriesJson {
                measurement: &s.measurement,
                tags: &s.tags,
                field: &s.field,
                data: (
                    "buckets",
                    Seq(s.buckets.iter().map(move |b| {
                        (epoch.convert(b.start_ns), b.count, b.min, b.max, b.mean())
                    })),
                ),
            })),
        )?;
        map.end()
    }
}

/// `{"measurement", "tags", "field", <name>: <data>}`.
struct SeriesJson<'a, T> {
    measurement: &'a str,
    tags: &'a [(String, String)],
    field: &'a str,
    data: (&'static str, T),
}

impl<T: Serialize> Serialize for SeriesJson<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(4))?;
        map.serialize_entry("measurement", self.measurement)?;
        map.serialize_entry("tags", &JsonTags(self.tags))?;
        map.serialize_entry("field", self.field)?;
        map.serialize_entry(self.data.0, &self.data.1)?;
        map.end()
    }
}

/// An iterator serialized as a JSON array, without collecting it first.
struct Seq<I>(I);

impl<I: Iterator<Item = T> + Clone, T: Serialize> Serialize for Seq<I> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.clone())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    use crate::reading::{FieldValue, Reading, DEVICE_TAG};

    const T0: i64 = 1_700_000_000_000_000_000;
    const SEC: i64 = 1_000_000_000;

    /// Every type of value, a device with two measurements, and a series without a device.
    fn store() -> (tempfile::TempDir, LocalStore) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let mut r1 = Reading::new("env", T0);
        r1.set_tag(DEVICE_TAG, "d1");
        r1.set_tag("site", "a");
        r1.fields = vec![
            ("t".into(), FieldValue::Float(f64::NAN)),
            ("n".into(), FieldValue::Integer(i64::MIN)),
            ("u".into(), FieldValue::Unsigned(u64::MAX)),
            ("ok".into(), FieldValue::Boolean(true)),
            ("note".into(), FieldValue::String("say \"hi\"".into())),
        ];
        let mut r2 = Reading::new("power", T0 + SEC);
        r2.set_tag(DEVICE_TAG, "d1");
        r2.set_tag("site", "b");
        r2.fields = vec![("w".into(), FieldValue::Float(f64::NEG_INFINITY))];
        let mut r3 = Reading::new("env", T0 + 2 * SEC);
        r3.set_tag("site", "a");
        r3.fields = vec![("t".into(), FieldValue::Float(1.5))];
        LocalStore::open(&path)
            .unwrap()
            .insert(&[r1, r2, r3])
            .unwrap();
        (dir, LocalStore::open_read_only(&path).unwrap())
    }

    fn answer(store: &LocalStore, path: &str, query: &str) -> serde_json::Value {
        let request = parse(path, Some(query), T0 + 10 * SEC).unwrap().unwrap();
        serde_json::from_slice(&run(store, &request).unwrap()).unwrap()
    }

    #[test]
    fn every_type_of_value_and_devices_without_a_tag() {
        let (_dir, store) = store();
        let json = answer(&store, "/api/v1/latest", "epoch=s");
        let values: Vec<(String, serde_json::Value)> = json["series"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["field"].as_str().unwrap().to_owned(), s["value"].clone()))
            .collect();
        assert_eq!(
            values,
            vec![
                ("n".to_owned(), serde_json::json!(i64::MIN)),
                ("note".to_owned(), serde_json::json!("say \"hi\"")),
                ("ok".to_owned(), serde_json::json!(true)),
                ("t".to_owned(), serde_json::json!("NaN")),
                ("u".to_owned(), serde_json::json!(u64::MAX)),
                // Ordered by tags: {device=d1, site=a} before {site=a}.
                ("t".to_owned(), serde_json::json!(1.5)),
                ("w".to_owned(), serde_json::json!("-inf")),
            ]
        );
        assert_eq!(json["series"][0]["time"], 1_700_000_000);
        assert_eq!(json["series"][5]["time"], 1_700_000_002);

        let json = answer(&store, "/api/v1/devices", "stale=5s");
        assert_eq!(
            json,
            serde_json::json!({
                "now": T0 + 10 * SEC,
                "stale_after_s": 5.0,
                "devices": [
                    {"device": null, "tags": {"site": "a"}, "last_seen": T0 + 2 * SEC,
                     "status": "stale", "series": 1},
                    // The tags all its series share: none.
                    {"device": "d1", "tags": {}, "last_seen": T0 + SEC,
                     "status": "stale", "series": 6},
                ],
                "truncated": false,
            })
        );
        let json = answer(&store, "/api/v1/devices", "stale=1m&limit=1");
        assert_eq!(json["devices"][0]["status"], "ok");
        assert_eq!(json["truncated"], true);

        // Strings, NaN and infinities are not aggregated; integers and booleans are.
        let json = answer(
            &store,
            "/api/v1/downsample",
            &format!("device=d1&from={T0}&step=1m&epoch=ms"),
        );
        let fields: Vec<(&str, &serde_json::Value)> = json["series"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["field"].as_str().unwrap(), &s["buckets"]))
            .collect();
        let t = T0 / 1_000_000 / 60_000 * 60_000;
        assert_eq!(
            fields,
            vec![
                (
                    "n",
                    &serde_json::json!([[t, 1, i64::MIN as f64, i64::MIN as f64, i64::MIN as f64]])
                ),
                ("ok", &serde_json::json!([[t, 1, 1.0, 1.0, 1.0]])),
                (
                    "u",
                    &serde_json::json!([[t, 1, u64::MAX as f64, u64::MAX as f64, u64::MAX as f64]])
                ),
            ]
        );
    }

    #[test]
    fn requests_parse_into_store_queries() {
        let now = T0;
        let get = |path: &str, q: &str| parse(path, Some(q), now).unwrap();
        assert_eq!(
            get(
                "/api/v1/points",
                "measurement=env&field=t&device=d1&tag=site=a&from=-1m&limit=5&epoch=us"
            ),
            Ok(Request::Points {
                query: Query {
                    measurement: Some("env".into()),
                    tags: vec![("site".into(), "a".into())],
                    field: Some("t".into()),
                    device: Some("d1".into()),
                    from_ns: Some(now - 60 * SEC),
                    to_ns: Some(now),
                    limit: Some(5),
                },
                epoch: Precision::Us,
            })
        );
        assert_eq!(
            get("/api/v1/downsample", "from=0&to=10&step=3"),
            Ok(Request::Downsample {
                query: Query {
                    from_ns: Some(0),
                    to_ns: Some(10),
                    limit: Some(MAX_SERIES),
                    ..Query::default()
                },
                step_ns: 3,
                steps: 4,
                epoch: Precision::Ns,
            })
        );
        // Steps are aligned on multiples of the step: [9, 12) is one, [10, 13) touches two.
        let Ok(Request::Downsample { steps, .. }) =
            get("/api/v1/downsample", "from=9&to=12&step=3")
        else {
            panic!()
        };
        assert_eq!(steps, 1);
        let Ok(Request::Downsample { steps, .. }) =
            get("/api/v1/downsample", "from=10&to=13&step=3")
        else {
            panic!()
        };
        assert_eq!(steps, 2);
        assert!(parse("/api/v1/nothing", None, now).is_none());
        assert!(parse("/api/v1/devices/", None, now).is_none());
    }
}
