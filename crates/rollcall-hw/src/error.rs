//! The error type of every hardware backend.

use std::path::PathBuf;

use thiserror::Error;

/// A hardware read or write that failed.
#[derive(Debug, Error)]
pub enum HwError {
    /// A kernel file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A kernel file held something other than what its driver documents.
    #[error("{path}: unexpected contents: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
}

impl HwError {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        HwError::Io {
            path: path.into(),
            source,
        }
    }
}
