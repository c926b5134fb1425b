//! The Grafana files under `dashboards/grafana/`: every file parses; every data source a
//! dashboard uses is provisioned; every variable it uses is defined; and every metric the
//! health dashboard queries is one the collector has (a renamed metric breaks this test).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;
use yaml_rust2::{Yaml, YamlLoader};

/// Variables Grafana defines itself, and the InfluxQL alias patterns (`$tag_device`).
const BUILT_INS: &[&str] = &[
    "__all",
    "__dashboard",
    "__from",
    "__interval",
    "__interval_ms",
    "__org",
    "__range",
    "__range_ms",
    "__range_s",
    "__rate_interval",
    "__timeFilter",
    "__to",
    "__user",
    "timeFilter",
];

fn grafana() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards/grafana")
}

fn yaml(path: &Path) -> Yaml {
    let text = std::fs::read_to_string(path).unwrap();
    let mut docs = YamlLoader::load_from_str(&text)
        .unwrap_or_else(|e| panic!("{}: not YAML: {e}", path.display()));
    assert_eq!(docs.len(), 1, "{}: one document", path.display());
    docs.remove(0)
}

/// The uids of the provisioned data sources.
fn provisioned() -> BTreeSet<String> {
    let file = yaml(&grafana().join("provisioning/datasources/telemetry-collector.yaml"));
    assert_eq!(file["apiVersion"].as_i64(), Some(1));
    file["datasources"]
        .as_vec()
        .expect("datasources: a list")
        .iter()
        .map(|d| {
            assert!(
                d["name"].as_str().is_some() && d["type"].as_str().is_some(),
                "{d:?}"
            );
            d["uid"]
                .as_str()
                .expect("every data source has a uid")
                .to_owned()
        })
        .collect()
}

fn dashboards() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(grafana().join("dashboards")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.ends_with(".json"), "{name}: only dashboards here");
        let text = std::fs::read_to_string(&path).unwrap();
        let json: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: not JSON: {e}"));
        out.push((name, json));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Every string in `v`, with the path of keys that leads to it.
fn strings<'a>(v: &'a Value, path: &str, out: &mut Vec<(String, &'a str)>) {
    match v {
        Value::String(s) => out.push((path.to_owned(), s)),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                strings(item, &format!("{path}[{i}]"), out);
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                strings(item, &format!("{path}.{k}"), out);
            }
        }
        _ => {}
    }
}

/// Every `datasource` object in `v`, with its path.
fn datasources<'a>(v: &'a Value, path: &str, out: &mut Vec<(String, &'a Value)>) {
    match v {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                datasources(item, &format!("{path}[{i}]"), out);
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                let here = format!("{path}.{k}");
                if k == "datasource" {
                    out.push((here.clone(), item));
                }
                datasources(item, &here, out);
            }
        }
        _ => {}
    }
}

/// The variables `s` uses: `$name`, `${name}`, `${name:format}`, `[[name]]`.
fn variables_in(s: &str) -> Vec<String> {
    let ident = |t: &str| -> String {
        t.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = Vec::new();
    for (i, _) in s.match_indices('$') {
        let rest = &s[i + 1..];
        let name = match rest.strip_prefix('{') {
            Some(inner) => ident(inner),
            None => ident(rest),
        };
        if name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
            out.push(name);
        }
    }
    for (i, _) in s.match_indices("[[") {
        out.push(ident(&s[i + 2..]));
    }
    out
}

#[test]
fn every_dashboard_uses_only_provisioned_data_sources_and_defined_variables() {
    let uids = provisioned();
    let provider = yaml(&grafana().join("provisioning/dashboards/telemetry-collector.yaml"));
    let providers = provider["providers"].as_vec().expect("providers: a list");
    assert!(providers[0]["options"]["path"].as_str().is_some());

    let all = dashboards();
    let names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "collector-health.json",
            "sensors-flux.json",
            "sensors-influxql.json"
        ]
    );
    let mut dashboard_uids = BTreeSet::new();
    for (name, d) in &all {
        assert!(
            dashboard_uids.insert(d["uid"].as_str().unwrap()),
            "{name}: uid taken"
        );
        assert!(d["title"].as_str().is_some(), "{name}: title");

        let mut found = Vec::new();
        datasources(d, "", &mut found);
        assert!(!found.is_empty(), "{name}: no data source");
        for (path, ds) in &found {
            let uid = ds["uid"].as_str().unwrap_or_default();
            assert!(
                uids.contains(uid),
                "{name}{path}: data source {ds} is not provisioned"
            );
        }
        // Every panel and every query names its data source (none falls back to a default).
        let panels = d["panels"].as_array().unwrap();
        for p in panels {
            let title = p["title"].as_str().unwrap();
            assert!(p["datasource"]["uid"].is_string(), "{name}: panel {title}");
            for t in p["targets"].as_array().unwrap() {
                assert!(t["datasource"]["uid"].is_string(), "{name}: panel {title}");
            }
        }

        let defined: BTreeSet<&str> = d["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        let mut texts = Vec::new();
        strings(d, "", &mut texts);
        for (path, text) in texts {
            for var in variables_in(text) {
                let known = defined.contains(var.as_str())
                    || BUILT_INS.contains(&var.as_str())
                    || var.starts_with("tag_");
                assert!(known, "{name}{path}: ${var} is not defined in {text:?}");
            }
        }
        for p in panels.iter().filter_map(|p| p["repeat"].as_str()) {
            assert!(defined.contains(p), "{name}: repeat over undefined ${p}");
        }
    }
    // Our own test of the test: an undefined variable and a built-in are told apart.
    assert_eq!(
        variables_in("$a ${b:json} [[c]] $__interval /^$site$/ $1 $"),
        ["a", "b", "__interval", "site", "c"]
    );
}

#[test]
fn the_sensor_dashboards_have_a_chart_per_field_latest_values_and_silent_devices() {
    for (name, d) in dashboards()
        .iter()
        .filter(|(n, _)| n.starts_with("sensors"))
    {
        let vars: Vec<&str> = d["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        for want in ["measurement", "site", "device", "field"] {
            assert!(vars.contains(&want), "{name}: no ${want}");
        }
        let panels = d["panels"].as_array().unwrap();
        let has = |kind: &str, f: &dyn Fn(&Value) -> bool| {
            panels.iter().any(|p| p["type"] == kind && f(p))
        };
        assert!(has("timeseries", &|p| p["repeat"] == "field"), "{name}");
        assert!(has("table", &|p| p["title"] == "Latest values"), "{name}");
        assert!(
            has("table", &|p| p["title"]
                .as_str()
                .unwrap()
                .starts_with("Devices not seen for")),
            "{name}"
        );
    }
}

/// The names of the collector's metrics, from its source outside the test modules: every
/// name given to `counter(`, `gauge(` or `histogram(` (histograms apart), and those written
/// straight into the text format (`"# TYPE telemetry_collector_<name> ..."`).
fn collector_metrics() -> (BTreeSet<String>, BTreeSet<String>) {
    let mut files = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("../collector/src")];
    let (mut plain, mut histograms) = (BTreeSet::new(), BTreeSet::new());
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") || path.ends_with("tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let code = text.split("\n#[cfg(test)]").next().unwrap();
        let typed = "# TYPE telemetry_collector_";
        for (i, _) in code.match_indices(typed) {
            let name: String = code[i + typed.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                plain.insert(name);
            }
        }
        for call in ["counter(", "gauge(", "histogram("] {
            for (i, _) in code.match_indices(call) {
                let rest = code[i + call.len()..].trim_start();
                if let Some(lit) = rest.strip_prefix('"') {
                    let name = lit[..lit.find('"').unwrap()].to_owned();
                    if call == "histogram(" {
                        histograms.insert(name);
                    } else {
                        plain.insert(name);
                    }
                }
            }
        }
    }
    (plain, histograms)
}

#[test]
fn every_metric_the_health_dashboard_queries_exists() {
    let (plain, histograms) = collector_metrics();
    // The scan itself finds what it must.
    assert!(plain.contains("readings_rejected_total") && plain.contains("journal_bytes"));
    assert!(plain.contains("device_last_seen_seconds"));
    assert!(histograms.contains("sink_write_duration_seconds"));

    let (_, health) = dashboards()
        .into_iter()
        .find(|(n, _)| n == "collector-health.json")
        .unwrap();
    let mut texts = Vec::new();
    strings(&health, "", &mut texts);
    let mut used = BTreeSet::new();
    for (path, text) in texts {
        for (i, _) in text.match_indices("telemetry_collector_") {
            let name: String = text[i + "telemetry_collector_".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let exists = plain.contains(&name)
                || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
                    name.strip_suffix(suffix)
                        .is_some_and(|h| histograms.contains(h))
                });
            assert!(exists, "{path}: the collector has no metric {name:?}");
            used.insert(name);
        }
    }
    for want in [
        "readings_received_total",
        "readings_written_total",
        "readings_rejected_total",
        "readings_dropped_total",
        "sink_lag_readings",
        "device_last_seen_seconds",
        "sink_write_duration_seconds_bucket",
        "source_reconnects_total",
    ] {
        assert!(
            used.contains(want),
            "the health dashboard does not show {want}"
        );
    }
}
