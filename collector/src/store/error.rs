//! [`StoreError`]: what can go wrong with the local store, its causes kept as sources.

use std::path::PathBuf;

use rusqlite::ErrorCode;

/// Everything that can go wrong with the local store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// [`LocalStore::open_read_only`](super::LocalStore::open_read_only) was given a path where no file exists.
    #[error("local store {} does not exist", path.display())]
    NotFound {
        /// The path that was asked for.
        path: PathBuf,
    },
    /// The directory that should hold the store could not be created.
    #[error("cannot create directory {}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// SQLite could not open the file, or set it up.
    #[error("cannot open local store {}", path.display())]
    Open {
        /// The store's path.
        path: PathBuf,
        /// Why.
        #[source]
        source: rusqlite::Error,
    },
    /// The file is a database, or something else, but not a local store.
    #[error("{} is not a telemetry-collector local store", path.display())]
    NotAStore {
        /// The file's path.
        path: PathBuf,
    },
    /// The file is a local store written by a newer build, with a schema this one does not
    /// know.
    #[error(
        "local store {} has schema version {found}, written by a newer build: this build reads \
         version {supported} and older (run the newer build, or move the store away)",
        path.display()
    )]
    UnsupportedVersion {
        /// The store's path.
        path: PathBuf,
        /// The version found in the file.
        found: i64,
        /// The version this build reads and writes.
        supported: i64,
    },
    /// The file is a local store of an older schema version, which a reader cannot use:
    /// opening it for writing (starting the collector) upgrades it.
    #[error(
        "local store {} has schema version {found}: start the collector once to upgrade it to \
         version {supported}",
        path.display()
    )]
    Outdated {
        /// The store's path.
        path: PathBuf,
        /// The version found in the file.
        found: i64,
        /// The version this build reads and writes.
        supported: i64,
    },
    /// A statement failed (busy, I/O error, disk full, ...).
    #[error("sqlite error")]
    Sqlite(#[from] rusqlite::Error),
    /// A tag set could not be encoded as JSON.
    #[error("cannot encode tags")]
    EncodeTags(#[source] serde_json::Error),
    /// The file holds a row this build cannot read (written by something else, or damaged).
    #[error("local store holds an invalid row: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// Whether doing the same thing again may succeed: a busy or locked database, an I/O
    /// error, a full disk. Size limits, constraint and type errors are not passing.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => !matches!(
                e.code,
                ErrorCode::TooBig
                    | ErrorCode::ConstraintViolation
                    | ErrorCode::TypeMismatch
                    | ErrorCode::ParameterOutOfRange
                    | ErrorCode::ApiMisuse
            ),
            // Other rusqlite errors (conversions, parameter counts) fail the same way every time.
            StoreError::Sqlite(_) => false,
            StoreError::CreateDir { .. } | StoreError::Open { .. } => true,
            StoreError::NotFound { .. }
            | StoreError::NotAStore { .. }
            | StoreError::UnsupportedVersion { .. }
            | StoreError::Outdated { .. }
            | StoreError::EncodeTags(_)
            | StoreError::Corrupt(_) => false,
        }
    }
}
