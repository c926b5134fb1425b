//! Strict parsing of the API's query strings: every parameter known, given at most once
//! (except `tag`), not empty, well encoded, and of the right form; anything else is a
//! [`BadRequest`] that says what is wrong.

use std::time::Duration;

use crate::reading::Precision;
use crate::store::TimeArg;

/// The most parameters one request may carry.
const MAX_PARAMS: usize = 64;

/// A request the API refuses (400), with a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRequest(pub String);

impl BadRequest {
    pub(crate) fn new(message: impl Into<String>) -> BadRequest {
        BadRequest(message.into())
    }
}

/// A decoded query string, checked against the parameters an endpoint takes.
#[derive(Debug)]
pub(crate) struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// Decodes `query` (`application/x-www-form-urlencoded`: `+` is a space, `%XX` a byte;
    /// the bytes must be UTF-8) and checks that every name is in `allowed`, that none but
    /// `tag` is repeated, and that no value is empty.
    pub(crate) fn parse(
        query: Option<&str>,
        endpoint: &str,
        allowed: &[&str],
    ) -> Result<Params, BadRequest> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for part in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            if pairs.len() == MAX_PARAMS {
                return Err(BadRequest::new(format!(
                    "too many parameters: at most {MAX_PARAMS}"
                )));
            }
            let (name, value) = part.split_once('=').unwrap_or((part, ""));
            let name = decode(name)?;
            let value = decode(value)?;
            if !allowed.contains(&name.as_str()) {
                return Err(BadRequest::new(format!(
                    "unknown parameter {name:?}: {endpoint} takes {}",
                    allowed.join(", ")
                )));
            }
            if value.is_empty() {
                return Err(BadRequest::new(format!("parameter {name:?} is empty")));
            }
            if name != "tag" && pairs.iter().any(|(n, _)| *n == name) {
                return Err(BadRequest::new(format!(
                    "parameter {name:?} is given more than once"
                )));
            }
            pairs.push((name, value));
        }
        Ok(Params { pairs })
    }

    /// The value of `name`, if given.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `name` as an owned string, if given.
    pub(crate) fn string(&self, name: &str) -> Option<String> {
        self.get(name).map(str::to_owned)
    }

    /// Every `tag=KEY=VALUE`, in order.
    pub(crate) fn tags(&self) -> Result<Vec<(String, String)>, BadRequest> {
        self.pairs
            .iter()
            .filter(|(n, _)| n == "tag")
            .map(|(_, v)| match v.split_once('=') {
                Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
                _ => Err(BadRequest::new(format!(
                    "tag: expected KEY=VALUE (such as site=lab), got {v:?}"
                ))),
            })
            .collect()
    }

    /// `name` as a time (RFC 3339, a duration ago such as `-1h`, `now`, or nanoseconds since
    /// the Unix epoch), relative times counted back from `now_ns`.
    pub(crate) fn time(&self, name: &str, now_ns: i64) -> Result<Option<i64>, BadRequest> {
        let Some(v) = self.get(name) else {
            return Ok(None);
        };
        v.parse::<TimeArg>()
            .and_then(|t| t.resolve(now_ns))
            .map(Some)
            .map_err(|e| BadRequest::new(format!("{name}: {e}")))
    }

    /// `name` as a time; an error when it is missing.
    pub(crate) fn required_time(&self, name: &str, now_ns: i64) -> Result<i64, BadRequest> {
        self.time(name, now_ns)?.ok_or_else(|| {
            BadRequest::new(format!(
                "missing parameter {name:?}: a time such as 2024-05-01T12:00:00Z, -1h, now, \
                 or nanoseconds since the Unix epoch"
            ))
        })
    }

    /// `name` as a positive duration (`10s`, `1m30s`, `250ms`, or nanoseconds).
    pub(crate) fn duration(&self, name: &str) -> Result<Option<Duration>, BadRequest> {
        let Some(v) = self.get(name) else {
            return Ok(None);
        };
        let d = match v.parse::<u64>() {
            Ok(ns) => Duration::from_nanos(ns),
            Err(_) => humantime::parse_duration(v).map_err(|_| {
                BadRequest::new(format!(
                    "{name}: {v:?} is not a duration such as 10s, 1m, 1h30m or 250ms"
                ))
            })?,
        };
        if d.is_zero() {
            return Err(BadRequest::new(format!("{name}: must be more than zero")));
        }
        Ok(Some(d))
    }

    /// `name` as a whole number in `1..=max`, or `default` when it is missing.
    pub(crate) fn limit(
        &self,
        name: &str,
        default: usize,
        max: usize,
    ) -> Result<usize, BadRequest> {
        let Some(v) = self.get(name) else {
            return Ok(default);
        };
        match v.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(BadRequest::new(format!(
                "{name}: {v:?} is not a whole number from 1 to {max}"
            ))),
        }
    }

    /// `epoch`: the unit of the timestamps in the response.
    pub(crate) fn epoch(&self) -> Result<Precision, BadRequest> {
        match self.get("epoch") {
            None | Some("ns") => Ok(Precision::Ns),
            Some("us") => Ok(Precision::Us),
            Some("ms") => Ok(Precision::Ms),
            Some("s") => Ok(Precision::S),
            Some(v) => Err(BadRequest::new(format!(
                "epoch: {v:?} is not one of ns, us, ms, s"
            ))),
        }
    }
}

/// Percent-decodes one name or value.
fn decode(s: &str) -> Result<String, BadRequest> {
    let bad = || {
        BadRequest::new(format!(
            "malformed query string near {:?}: % must be followed by two hex digits",
            s.chars().take(40).collect::<String>()
        ))
    };
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = bytes.next().and_then(hex).ok_or_else(bad)?;
                let lo = bytes.next().and_then(hex).ok_or_else(bad)?;
                out.push(hi << 4 | lo);
            }
            b => out.push(b),
        }
    }
    String::from_utf8(out).map_err(|_| {
        BadRequest::new("malformed query string: a parameter is not UTF-8 once decoded")
    })
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const ALLOWED: &[&str] = &["device", "tag", "from", "limit", "step", "epoch"];

    fn parse(q: &str) -> Result<Params, BadRequest> {
        Params::parse(Some(q), "/api/v1/x", ALLOWED)
    }

    fn error(q: &str) -> String {
        parse(q).unwrap_err().0
    }

    #[test]
    fn decodes_percent_and_plus() {
        let p = parse("device=a%2Cb+c&tag=site%3Dlab%20%C3%BC&tag=k=v=w").unwrap();
        assert_eq!(p.get("device"), Some("a,b c"));
        assert_eq!(
            p.tags().unwrap(),
            vec![
                ("site".to_owned(), "lab ü".to_owned()),
                ("k".to_owned(), "v=w".to_owned())
            ]
        );
        assert!(parse("").unwrap().get("device").is_none());
        assert!(Params::parse(None, "/x", ALLOWED).is_ok());
        assert!(parse("&&device=a&").is_ok());
    }

    #[test]
    fn bad_query_strings_are_refused_with_the_reason() {
        assert_eq!(
            error("devise=a"),
            "unknown parameter \"devise\": /api/v1/x takes device, tag, from, limit, step, epoch"
        );
        assert_eq!(
            error("device=a&device=b"),
            "parameter \"device\" is given more than once"
        );
        assert_eq!(error("device="), "parameter \"device\" is empty");
        assert_eq!(error("device"), "parameter \"device\" is empty");
        assert!(error("device=%zz").contains("% must be followed by two hex digits"));
        assert!(error("device=%4").contains("% must be followed by two hex digits"));
        assert!(error("device=%FF%FE").contains("not UTF-8"));
        assert!(error(&"tag=a=b&".repeat(65)).contains("too many parameters"));
        assert_eq!(
            parse("tag=site").unwrap().tags().unwrap_err().0,
            "tag: expected KEY=VALUE (such as site=lab), got \"site\""
        );
        assert!(parse("tag==x").unwrap().tags().is_err());
    }

    #[test]
    fn typed_values() {
        let now = 1_700_000_000_000_000_000;
        let p = parse("from=-1h&step=1m30s&limit=20&epoch=ms").unwrap();
        assert_eq!(p.time("from", now).unwrap(), Some(now - 3_600_000_000_000));
        assert_eq!(p.duration("step").unwrap(), Some(Duration::from_secs(90)));
        assert_eq!(p.limit("limit", 5, 100).unwrap(), 20);
        assert_eq!(p.epoch().unwrap(), Precision::Ms);
        assert_eq!(Precision::Ms.convert(1_999_999), 1);
        assert_eq!(Precision::S.convert(-1), -1);
        let p = parse("step=250").unwrap();
        assert_eq!(p.duration("step").unwrap(), Some(Duration::from_nanos(250)));
        assert_eq!(p.limit("limit", 5, 100).unwrap(), 5);
        assert_eq!(p.epoch().unwrap(), Precision::Ns);
        assert!(p.time("from", now).unwrap().is_none());

        let err = |q: &str, f: &dyn Fn(&Params) -> Result<(), BadRequest>| {
            f(&parse(q).unwrap()).unwrap_err().0
        };
        let time = |p: &Params| p.time("from", now).map(drop);
        assert!(err("from=yesterday", &time).starts_with("from: \"yesterday\" is not a time"));
        assert!(err("from=2024-13-01T00:00:00Z", &time).starts_with("from:"));
        assert!(err("from=-400years", &time).contains("too far in the past"));
        assert!(err("device=a", &|p| p.required_time("from", now).map(drop))
            .starts_with("missing parameter \"from\""));
        let step = |p: &Params| p.duration("step").map(drop);
        assert_eq!(err("step=0s", &step), "step: must be more than zero");
        assert_eq!(err("step=0", &step), "step: must be more than zero");
        assert!(err("step=-1s", &step).contains("is not a duration"));
        assert!(err("step=fast", &step).contains("is not a duration"));
        let limit = |p: &Params| p.limit("limit", 5, 100).map(drop);
        for bad in ["0", "101", "-1", "ten", "1.5", "99999999999999999999999"] {
            assert_eq!(
                err(&format!("limit={bad}"), &limit),
                format!("limit: {bad:?} is not a whole number from 1 to 100")
            );
        }
        assert_eq!(
            err("epoch=h", &|p| p.epoch().map(drop)),
            "epoch: \"h\" is not one of ns, us, ms, s"
        );
    }

    /// Fuzz-style: every endpoint's query parser over arbitrary query strings and over
    /// mutations of valid ones, at any `now`.
    mod fuzz {
        use proptest::prelude::*;

        use super::super::super::api::{self, Request, MAX_POINTS, MAX_SERIES, MAX_STEPS};
        use crate::mutate::{edits, mutate};

        const PATHS: [&str; 4] = [
            "/api/v1/devices",
            "/api/v1/latest",
            "/api/v1/points",
            "/api/v1/downsample",
        ];

        const SEEDS: &[&str] = &[
            "stale=5m&limit=10&epoch=ms",
            "measurement=env&field=t&device=a%2Fb&tag=site%3Dlab&tag=k=v&limit=5",
            "device=d&from=-1h&to=now&limit=100000&epoch=s",
            "from=2024-05-01T12:00:00Z&to=1714568400000000000&step=1m30s&field=t",
        ];

        const TOKENS: &[&str] = &[
            "%",
            "%z",
            "%zz",
            "%FF",
            "%C3%BC",
            "%00",
            "&",
            "=",
            "+",
            "tag=",
            "from=",
            "to=",
            "step=",
            "limit=",
            "epoch=",
            "stale=",
            "-",
            "now",
            "0",
            "1",
            "1ns",
            "0s",
            "9223372036854775807",
            "-9223372036854775808",
            "99999999999999999999",
            "1e400",
            "-400years",
            "292years",
            "584942417355years",
            "-292years",
            "2262-04-11T23:47:16.854775807Z",
            "1677-09-21T00:12:43.145224192Z",
            "9999-12-31T23:59:59Z",
        ];

        /// What a refusal may echo of the query, at most.
        fn bounded(message: &str, query: &str) -> bool {
            message.len() <= 10 * query.len() + 1024
        }

        fn check(path: &str, query: &str, now: i64) -> Result<(), TestCaseError> {
            let Some(result) = api::parse(path, Some(query), now) else {
                return Err(TestCaseError::fail(format!("{path} is an endpoint")));
            };
            match result {
                Err(e) => prop_assert!(bounded(&e.0, query), "{} bytes", e.0.len()),
                Ok(Request::Devices { limit, .. }) => {
                    prop_assert!((1..=MAX_SERIES).contains(&limit))
                }
                Ok(Request::Latest { query: q, .. }) => {
                    prop_assert!(q.limit.is_some_and(|l| (1..=MAX_SERIES).contains(&l)));
                }
                Ok(Request::Points { query: q, .. }) => {
                    prop_assert!(q.limit.is_some_and(|l| (1..=MAX_POINTS).contains(&l)));
                    prop_assert!(q.from_ns < q.to_ns);
                }
                Ok(Request::Downsample {
                    query: q,
                    step_ns,
                    steps,
                    ..
                }) => {
                    prop_assert!(step_ns > 0 && (1..=MAX_STEPS).contains(&steps));
                    prop_assert!(q.from_ns < q.to_ns);
                }
            }
            Ok(())
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

            #[test]
            fn arbitrary_queries(
                path in 0..PATHS.len(),
                query in prop_oneof![
                    any::<String>(),
                    proptest::collection::vec((0..TOKENS.len()).prop_map(|t| TOKENS[t]), 0..24)
                        .prop_map(|t| t.concat()),
                ],
                now in prop_oneof![any::<i64>(), Just(1_750_000_000_000_000_000i64)],
            ) {
                check(PATHS[path], &query, now)?;
            }

            #[test]
            fn mutations_of_valid_queries(
                path in 0..PATHS.len(),
                seed in 0..SEEDS.len(),
                edits in edits(TOKENS.len()),
                now in prop_oneof![any::<i64>(), Just(1_750_000_000_000_000_000i64)],
            ) {
                let bytes = mutate(SEEDS[seed].as_bytes(), &edits, TOKENS);
                // The server hands over the query as text.
                let query = String::from_utf8_lossy(&bytes);
                check(PATHS[path], &query, now)?;
            }
        }

        #[test]
        fn the_seeds_are_valid() {
            for (path, seed) in PATHS.iter().zip(SEEDS) {
                let parsed = api::parse(path, Some(seed), 1_750_000_000_000_000_000);
                assert!(matches!(parsed, Some(Ok(_))), "{path}?{seed}: {parsed:?}");
            }
        }
    }
}
