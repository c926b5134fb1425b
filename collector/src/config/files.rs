//! Files a configuration names (secrets, TLS certificates and keys): checked by validation
//! where this process can tell, so that `validate` does not say OK to a file `run` cannot read.

use std::path::Path;

/// The directory under which systemd puts a service's credentials (`%d` in a unit,
/// `$CREDENTIALS_DIRECTORY` in the service): only the service itself can read it.
pub(crate) const SYSTEMD_CREDENTIALS: &str = "/run/credentials/";

/// What can be told about a file that must be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FileCheck {
    /// It opens for reading.
    Readable,
    /// It cannot be read, and why (never its contents).
    Problem(String),
    /// This process cannot tell, and why.
    NotChecked(String),
}

/// Whether `path` is a file this process can open for reading. A file under
/// [`SYSTEMD_CREDENTIALS`] that cannot be read is not checked: outside the service, no one
/// but root can.
pub(crate) fn check_readable(path: &Path) -> FileCheck {
    let shown = path.display();
    let metadata = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(_) if path.starts_with(SYSTEMD_CREDENTIALS) => {
            return FileCheck::NotChecked(format!(
                "{shown} is a systemd credential: only the service can read it"
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return FileCheck::Problem(format!("{shown} does not exist"))
        }
        Err(e) => return FileCheck::Problem(format!("{shown} cannot be read: {e}")),
    };
    if metadata.is_dir() {
        return FileCheck::Problem(format!("{shown} is a directory, not a file"));
    }
    match std::fs::File::open(path) {
        Ok(_) => FileCheck::Readable,
        Err(_) if path.starts_with(SYSTEMD_CREDENTIALS) => FileCheck::NotChecked(format!(
            "{shown} is a systemd credential: only the service can read it"
        )),
        Err(e) => FileCheck::Problem(format!("{shown} cannot be read: {e}")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn missing_directories_and_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "t").unwrap();
        assert_eq!(check_readable(&file), FileCheck::Readable);
        assert_eq!(
            check_readable(dir.path()),
            FileCheck::Problem(format!(
                "{} is a directory, not a file",
                dir.path().display()
            ))
        );
        let missing = dir.path().join("nope");
        assert_eq!(
            check_readable(&missing),
            FileCheck::Problem(format!("{} does not exist", missing.display()))
        );
        let credential = Path::new("/run/credentials/telemetry-collector.service/influx-token");
        assert!(matches!(
            check_readable(credential),
            FileCheck::NotChecked(_) | FileCheck::Readable
        ));
    }
}
