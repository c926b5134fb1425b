//! The dead-letter file: where a sink's batches go when the store refuses them for good (an
//! HTTP 4xx other than 401, 403, 413 and 429), and the readings its line protocol cannot say
//! (a line break in a tag, a name ending in a backslash: see
//! [`Unrepresentable`](super::line_protocol::Unrepresentable)), so that they never block the
//! readings behind them and are never dropped silently.
//!
//! One file per sink, `<data_dir>/dead-letter/<sink>.lp` (characters other than letters,
//! digits, `.`, `_` and `-` in the sink's name become `_`). Each entry is a header line
//! starting with `#`, then the readings as line protocol with nanosecond timestamps, in the
//! sink's dialect, ready to be fixed and written again by hand (`influx write`, `curl
//! --data-binary @file`); a reading the dialect cannot say is written as near as it can be,
//! on one line (a line break in a name as a backslash and an `n`):
//!
//! ```text
//! # 2026-11-25T01:40:02.123Z sink=influxdb:main readings=2 reason: HTTP 400: partial write: field type conflict ...
//! env,device=dev-0001 temperature="hot" 1795570802000000000
//! env,device=dev-0001 temperature=21.5 1795570803000000000
//! ```
//!
//! The file is bounded: when an entry would take it past `max_bytes`, it is renamed to
//! `<sink>.lp.1` (replacing an older `.1`) and a new file is started, so the dead letters of
//! a sink take at most about twice `max_bytes` on disk. An entry larger than `max_bytes` on
//! its own still goes, whole, into a file of its own.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::reading::Readings;
use crate::sinks::line_protocol::{self, Dialect, Precision};

/// A sink's dead-letter file.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    path: PathBuf,
    max_bytes: u64,
    dialect: Dialect,
}

impl DeadLetter {
    /// The dead-letter file of `sink` under `dir` (created on the first entry), bounded by
    /// `max_bytes`.
    pub fn new(dir: &Path, sink: &str, max_bytes: u64) -> DeadLetter {
        let name: String = sink
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        DeadLetter {
            path: dir.join(format!("{name}.lp")),
            max_bytes,
            dialect: Dialect::InfluxDb3,
        }
    }

    /// Writes the readings in `dialect`, the sink's (by default InfluxDB 3's), so that an
    /// entry can be written again to the same store as it is.
    pub fn with_dialect(mut self, dialect: Dialect) -> DeadLetter {
        self.dialect = dialect;
        self
    }

    /// The file entries are appended to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one entry: a header with the time, the sink, the number of readings and
    /// `reason` (on one line), then the readings. Blocking.
    ///
    /// # Errors
    /// The directory or the file cannot be created or written.
    pub fn append(
        &self,
        sink: &str,
        reason: &str,
        readings: &(impl Readings + ?Sized),
    ) -> std::io::Result<()> {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let reason: String = reason
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let mut entry = format!(
            "# {now} sink={sink} readings={} reason: {}\n",
            readings.count(),
            reason.trim()
        )
        .into_bytes();
        line_protocol::encode_lossy(readings, Precision::Ns, self.dialect, &mut entry);
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let size = std::fs::metadata(&self.path).map_or(0, |m| m.len());
        if size > 0 && size + entry.len() as u64 > self.max_bytes {
            let mut old = self.path.clone().into_os_string();
            old.push(".1");
            std::fs::rename(&self.path, &old)?;
            tracing::warn!(file = %self.path.display(), "dead-letter file full: moved to .1 (an older .1 is replaced)");
        }
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        file.write_all(&entry)?;
        file.sync_data()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::reading::FieldValue;
    use crate::reading::Reading;

    fn r(i: i64) -> Reading {
        let mut r = Reading::new("env", i);
        r.set_tag("device", "d");
        r.fields = vec![("v".into(), FieldValue::Integer(i))];
        r
    }

    #[test]
    fn entries_have_a_header_and_the_lines_and_the_file_rotates_at_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        let dl = DeadLetter::new(dir.path(), "influxdb:main/x", 200);
        assert_eq!(dl.path(), dir.path().join("influxdb_main_x.lp"));
        dl.append("influxdb:main", "HTTP 400:\nbad\tpoint", &[r(1), r(2)])
            .unwrap();
        let text = std::fs::read_to_string(dl.path()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("# "), "{text}");
        assert!(
            lines[0].ends_with(" sink=influxdb:main readings=2 reason: HTTP 400: bad point"),
            "{text}"
        );
        assert_eq!(&lines[1..], ["env,device=d v=1i 1", "env,device=d v=2i 2"]);

        dl.append("influxdb:main", "again", &[r(3)]).unwrap();
        let rotated = std::fs::read_to_string(dir.path().join("influxdb_main_x.lp.1")).unwrap();
        assert_eq!(rotated, text);
        let fresh = std::fs::read_to_string(dl.path()).unwrap();
        assert!(
            fresh.ends_with("reason: again\nenv,device=d v=3i 3\n"),
            "{fresh}"
        );
    }
}
