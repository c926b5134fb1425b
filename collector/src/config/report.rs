//! Report by exception, as written ([`ReportConfig`]: the keys a Modbus field has, and
//! a `[[report_by_exception]]` rule) and validated ([`ReportSettings`]).
//!
//! A value is written when it moved by more than its deadband (absolute, or a percentage of
//! the value last written), or changed at all (`on_change`), and in any case once per
//! `heartbeat`, so that an unchanged value still shows up now and then.

use std::time::Duration;

use serde::Deserialize;

use super::problems::Problems;

/// How often an unchanged value is written when the configuration does not say.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(600);

/// The report-by-exception keys of a field.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReportConfig {
    /// Absolute deadband.
    pub deadband: Option<f64>,
    /// Deadband in percent of the value last written.
    pub deadband_percent: Option<f64>,
    /// Written only when changed.
    pub on_change: bool,
    /// An unchanged value is still written this often (`0s`: never).
    pub heartbeat: Option<Duration>,
}

/// `[[report_by_exception]]`: which fields of which readings (of any source) are reported
/// by exception, and how.
#[derive(Debug, Clone, Deserialize)]
pub struct ReportRuleConfig {
    /// Only readings of this measurement (default: any).
    pub measurement: Option<String>,
    /// The fields it applies to (default: every field).
    #[serde(default)]
    pub fields: Vec<String>,
    // Keys repeated in a Modbus field (`FieldConfig`): `#[serde(flatten)]` would lose
    // unknown-key errors.
    /// Absolute deadband.
    pub deadband: Option<f64>,
    /// Deadband in percent of the value last written.
    pub deadband_percent: Option<f64>,
    /// Written only when changed.
    #[serde(default)]
    pub on_change: bool,
    /// An unchanged value is still written this often (default 10m; `"0s"`: never).
    #[serde(default, with = "humantime_serde")]
    pub heartbeat: Option<Duration>,
}

/// When a value is worth writing again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Threshold {
    /// When it differs from the value last written.
    Change,
    /// When it differs by more than this.
    Absolute(f64),
    /// When it differs by more than this fraction of the value last written (0.01: 1%).
    Relative(f64),
}

/// Validated report-by-exception settings of a field.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReportSettings {
    /// When a changed value is written.
    pub threshold: Threshold,
    /// An unchanged value is still written this often, in nanoseconds of reading time.
    pub heartbeat_ns: Option<i64>,
}

/// A validated `[[report_by_exception]]` rule.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportRule {
    /// Only readings of this measurement.
    pub measurement: Option<String>,
    /// Only these fields (empty: every field).
    pub fields: Vec<String>,
    /// How.
    pub report: ReportSettings,
}

/// The settings of `c`, or `None` when it asks for no reporting by exception; problems are
/// reported at `path`.
pub(super) fn report_settings(
    c: &ReportConfig,
    path: &str,
    p: &mut Problems,
) -> Option<ReportSettings> {
    let threshold = match (c.deadband, c.deadband_percent, c.on_change) {
        (None, None, false) => {
            p.check(
                c.heartbeat.is_none(),
                format!("{path}.heartbeat"),
                "needs `deadband`, `deadband_percent` or `on_change`",
            );
            return None;
        }
        (Some(d), None, false) => {
            p.check(
                d.is_finite() && d >= 0.0,
                format!("{path}.deadband"),
                "must be a number of at least 0",
            );
            Threshold::Absolute(d)
        }
        (None, Some(pct), false) => {
            p.check(
                pct.is_finite() && pct >= 0.0,
                format!("{path}.deadband_percent"),
                "must be a number of at least 0",
            );
            Threshold::Relative(pct / 100.0)
        }
        (None, None, true) => Threshold::Change,
        _ => {
            p.add(
                format!("{path}.deadband"),
                "give one of `deadband`, `deadband_percent` and `on_change`",
            );
            Threshold::Change
        }
    };
    let heartbeat = c.heartbeat.unwrap_or(DEFAULT_HEARTBEAT);
    Some(ReportSettings {
        threshold,
        heartbeat_ns: (!heartbeat.is_zero()).then(|| crate::time::duration_ns(heartbeat)),
    })
}

/// Validates every `[[report_by_exception]]` rule.
pub(super) fn validate_rules(rules: &[ReportRuleConfig], p: &mut Problems) -> Vec<ReportRule> {
    rules
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let path = format!("report_by_exception[{i}]");
            let config = ReportConfig {
                deadband: r.deadband,
                deadband_percent: r.deadband_percent,
                on_change: r.on_change,
                heartbeat: r.heartbeat,
            };
            let report = report_settings(&config, &path, p);
            if report.is_none() && config == ReportConfig::default() {
                p.add(
                    format!("{path}.deadband"),
                    "give one of `deadband`, `deadband_percent` and `on_change`",
                );
            }
            p.check(
                r.fields.iter().all(|f| !f.is_empty()),
                format!("{path}.fields"),
                "field names must not be empty",
            );
            Some(ReportRule {
                measurement: r.measurement.clone(),
                fields: r.fields.clone(),
                report: report?,
            })
        })
        .collect()
}
