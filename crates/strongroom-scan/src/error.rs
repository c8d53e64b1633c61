//! The one error type of the scan crate.

/// Why known values could not be compiled.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The automaton for the values would exceed its size limits (too many
    /// or too long values). The text says which limit, never a value.
    #[error("known values too large to compile: {0}")]
    TooLarge(String),
}
