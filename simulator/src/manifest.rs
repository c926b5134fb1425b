//! A record of what was sent, one JSON object per line, for tests to check a collector against.
//!
//! ```json
//! {"topic":"sensors/site-00/dev-0000/env","device":"dev-0000","fault":null,"expected":[...],"acked":true}
//! ```

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fleet::{ExpectedReading, Fault, Message};

/// One line of a manifest: a message as sent, and whether the broker acknowledged it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// MQTT topic.
    pub topic: String,
    /// Device id.
    pub device: String,
    /// The fault the message carried, if any.
    pub fault: Option<Fault>,
    /// Readings a correct collector stores for it.
    pub expected: Vec<ExpectedReading>,
    /// Whether the broker acknowledged it (QoS 1). An acknowledged message must never be lost.
    pub acked: bool,
}

impl ManifestEntry {
    /// The entry of `message`.
    pub fn new(message: Message, acked: bool) -> Self {
        Self {
            topic: message.topic,
            device: message.device,
            fault: message.fault,
            expected: message.expected,
            acked,
        }
    }
}

/// A manifest file that cannot be written or read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// File system error.
    #[error("{path}")]
    Io {
        /// The manifest.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line that is not a manifest entry.
    #[error("{path}:{line}")]
    Parse {
        /// The manifest.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// Why.
        source: serde_json::Error,
    },
}

/// Writes `entries` to `path` (replacing it), one JSON line each.
///
/// # Errors
/// When the file cannot be created or written.
pub fn write_manifest(
    path: &Path,
    entries: impl IntoIterator<Item = ManifestEntry>,
) -> Result<(), ManifestError> {
    let io = |source| ManifestError::Io {
        path: path.to_owned(),
        source,
    };
    let mut out = BufWriter::new(File::create(path).map_err(io)?);
    for entry in entries {
        serde_json::to_writer(&mut out, &entry).map_err(|e| io(e.into()))?;
        out.write_all(b"\n").map_err(io)?;
    }
    out.into_inner()
        .map_err(|e| io(e.into_error()))?
        .sync_all()
        .map_err(io)
}

/// Reads a manifest written by [`write_manifest`].
///
/// # Errors
/// When the file cannot be read or a line is not an entry.
pub fn read_manifest(path: &Path) -> Result<Vec<ManifestEntry>, ManifestError> {
    let io = |source| ManifestError::Io {
        path: path.to_owned(),
        source,
    };
    let reader = BufReader::new(File::open(path).map_err(io)?);
    let mut entries = Vec::new();
    for (number, line) in reader.lines().enumerate() {
        let line = line.map_err(io)?;
        if line.trim().is_empty() {
            continue;
        }
        let entry = serde_json::from_str(&line).map_err(|source| ManifestError::Parse {
            path: path.to_owned(),
            line: number + 1,
            source,
        })?;
        entries.push(entry);
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::{FaultConfig, FaultKind, Fleet, FleetConfig};

    #[test]
    fn round_trips() {
        let fleet = Fleet::new(FleetConfig {
            faults: FaultConfig {
                every: Some(4),
                kinds: vec![FaultKind::InvalidUtf8],
                ..FaultConfig::default()
            },
            ..FleetConfig::default()
        })
        .expect("valid");
        let entries: Vec<ManifestEntry> = fleet
            .messages(2)
            .into_iter()
            .enumerate()
            .map(|(i, m)| ManifestEntry::new(m, i % 3 != 0))
            .collect();
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sent.jsonl");
        write_manifest(&path, entries.clone()).expect("write");
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text.lines().count(), entries.len());
        assert!(
            text.contains(r#""fault":{"kind":"invalid-utf8"}"#),
            "{text}"
        );
        assert_eq!(read_manifest(&path).expect("read back"), entries);
    }

    #[test]
    fn reports_the_bad_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bad.jsonl");
        std::fs::write(&path, "\n{not json}\n").expect("write");
        let err = read_manifest(&path).expect_err("invalid");
        assert!(err.to_string().ends_with("bad.jsonl:2"), "{err}");
    }
}
