//! What can make `strongroom` itself fail. Messages never carry a value.

use std::path::PathBuf;

/// Exit code when `strongroom` itself fails (before or around the command).
pub(crate) const EXIT_FAILURE: i32 = 125;
/// Exit code when the command exists but cannot be executed.
pub(crate) const EXIT_CANNOT_EXECUTE: i32 = 126;
/// Exit code when the command is not found.
pub(crate) const EXIT_NOT_FOUND: i32 = 127;

/// A failure of the CLI.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A command-line option or environment variable is invalid.
    #[error("{0}")]
    Usage(String),
    /// A file could not be read or written.
    #[error("{}: {error}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// Connecting to the server, or a call, failed.
    #[error("{0}")]
    Client(#[from] strongroom_client::ClientError),
    /// A call failed; the operation names what was being done.
    #[error("{operation}: {}: {}", status.code(), status.message())]
    Call {
        /// What the call was for.
        operation: String,
        /// The server's status.
        status: tonic::Status,
    },
    /// The local forwarder could not start.
    #[error("local forwarder: {0}")]
    Forwarder(String),
    /// The command could not be started.
    #[error("cannot run {program}: {error}")]
    Spawn {
        /// The program.
        program: String,
        /// The OS error.
        error: std::io::Error,
    },
}

impl Error {
    /// The process exit code for this failure.
    pub(crate) fn exit_code(&self) -> i32 {
        match self {
            Error::Spawn { error, .. } if error.kind() == std::io::ErrorKind::NotFound => {
                EXIT_NOT_FOUND
            }
            Error::Spawn { .. } => EXIT_CANNOT_EXECUTE,
            _ => EXIT_FAILURE,
        }
    }

    /// A failed call of `operation`.
    pub(crate) fn call(operation: impl Into<String>, status: tonic::Status) -> Self {
        Error::Call {
            operation: operation.into(),
            status,
        }
    }
}
