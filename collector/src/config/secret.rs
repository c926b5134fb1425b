//! Secrets (passwords, tokens): never printed, never logged, never shown by `Debug`; and where
//! one comes from.
//!
//! A secret (an InfluxDB token or password, the HTTP port's token or password) comes from
//! exactly one of: the value itself (`token = "..."`), a file (`token_file`, trailing
//! whitespace trimmed), an environment variable (`token_env = "INFLUX_TOKEN"`), or a systemd
//! credential (`token_credential = "influx-token"`: the file of that name in
//! `$CREDENTIALS_DIRECTORY`, which systemd's `LoadCredential=` provides to the service only).
//! Validation checks that exactly one is given, and that a file can be read where this
//! process can tell (a systemd credential or a variable the service's environment sets are
//! noted as not checked); the secret itself is read when the collector starts (and by
//! `doctor`).

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::problems::Problems;

/// A secret string. `Debug` and `Display` print `***`; only [`Secret::expose`] reveals it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Where a secret comes from; read with [`SecretSource::load`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// Written in the configuration.
    Value(Secret),
    /// A file.
    File(PathBuf),
    /// An environment variable.
    Env(String),
    /// A systemd credential: `$CREDENTIALS_DIRECTORY/<name>`.
    Credential(String),
}

impl SecretSource {
    /// Reads the secret. A file's trailing newline and whitespace are removed.
    ///
    /// # Errors
    /// A message that names where it looked (never the secret): the file cannot be read,
    /// the variable is not set, there is no `$CREDENTIALS_DIRECTORY`, or the secret is empty.
    pub fn load(&self) -> Result<Secret, String> {
        let value = match self {
            SecretSource::Value(s) => return Ok(s.clone()),
            SecretSource::File(path) => read_secret_file(path)?,
            SecretSource::Env(var) => {
                std::env::var(var).map_err(|_| format!("environment variable {var} is not set"))?
            }
            SecretSource::Credential(name) => {
                let dir = std::env::var_os("CREDENTIALS_DIRECTORY").ok_or_else(|| {
                    format!("credential {name}: $CREDENTIALS_DIRECTORY is not set (systemd sets it for a service with LoadCredential=)")
                })?;
                read_secret_file(&Path::new(&dir).join(name))?
            }
        };
        let value = value.trim_end().to_string();
        if value.is_empty() {
            return Err(format!("{}: empty", self.describe()));
        }
        Ok(Secret::new(value))
    }

    /// Where the secret comes from, for messages.
    pub fn describe(&self) -> String {
        match self {
            SecretSource::Value(_) => "the configured value".into(),
            SecretSource::File(p) => format!("file {}", p.display()),
            SecretSource::Env(v) => format!("environment variable {v}"),
            SecretSource::Credential(c) => format!("credential {c}"),
        }
    }
}

fn read_secret_file(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// The four ways to give one secret, as written.
pub(super) type SecretKeys<'a> = (
    &'a Option<Secret>,
    &'a Option<PathBuf>,
    &'a Option<String>,
    &'a Option<String>,
);

/// Picks the one source of a secret; `None` (and a problem, if `required`) otherwise.
pub(super) fn secret_source(
    key: &str,
    (value, file, env, credential): SecretKeys<'_>,
    path: &str,
    required: bool,
    p: &mut Problems,
) -> Option<SecretSource> {
    let mut given = Vec::new();
    if let Some(v) = value {
        given.push(SecretSource::Value(v.clone()));
    }
    if let Some(f) = file {
        given.push(SecretSource::File(f.clone()));
    }
    if let Some(e) = env {
        if e.is_empty() {
            p.add(format!("{path}.{key}_env"), "must not be empty");
        }
        given.push(SecretSource::Env(e.clone()));
    }
    let mut credential_ok = true;
    if let Some(c) = credential {
        if c.is_empty() || c.contains('/') {
            credential_ok = false;
            p.add(
                format!("{path}.{key}_credential"),
                "must be a credential name (no `/`)",
            );
        }
        given.push(SecretSource::Credential(c.clone()));
    }
    let source = match given.len() {
        0 if required => {
            p.add(
                format!("{path}.{key}"),
                format!("set one of `{key}`, `{key}_file`, `{key}_env` or `{key}_credential`"),
            );
            None
        }
        0 => None,
        1 => given.pop(),
        _ => {
            p.add(
                format!("{path}.{key}"),
                format!(
                    "give only one of `{key}`, `{key}_file`, `{key}_env` and `{key}_credential`"
                ),
            );
            None
        }
    };
    // Read where this process can tell (`run` would fail on it), never printed.
    match &source {
        Some(SecretSource::File(f)) => p.readable_file(f, format!("{path}.{key}_file")),
        Some(SecretSource::Credential(c)) if credential_ok => {
            let at = format!("{path}.{key}_credential");
            match std::env::var_os("CREDENTIALS_DIRECTORY") {
                Some(dir) => p.readable_file(&Path::new(&dir).join(c), at),
                None => p.not_checked(
                    at,
                    "$CREDENTIALS_DIRECTORY is not set here (systemd sets it for the service only, with LoadCredential=)",
                ),
            }
        }
        Some(SecretSource::Env(v)) if !v.is_empty() && std::env::var_os(v).is_none() => {
            p.not_checked(
                format!("{path}.{key}_env"),
                format!("{v} is not set here (the service's environment may set it)"),
            );
        }
        _ => {}
    }
    source
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_shown() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s} {:?}", Some(&s)), "*** *** Some(***)");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn secrets_come_from_one_place_and_are_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "s3cret-token\n").unwrap();
        let src = SecretSource::File(file.clone());
        assert_eq!(src.load().unwrap().expose(), "s3cret-token");
        assert_eq!(format!("{:?}", src.load().unwrap()), "***");
        let inline = SecretSource::Value(Secret::new("s3cret-token"));
        assert!(!format!("{inline:?}").contains("s3cret"));
        let missing = SecretSource::Env("TELEMETRY_TEST_SURELY_UNSET_VAR".into());
        assert_eq!(
            missing.load().unwrap_err(),
            "environment variable TELEMETRY_TEST_SURELY_UNSET_VAR is not set"
        );
        std::fs::write(&file, " \n").unwrap();
        assert!(src.load().unwrap_err().ends_with(": empty"));
    }
}
