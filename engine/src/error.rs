//! The engine's error type. Every check that can fail on user input (shapes, indices,
//! sizes) runs on the host before anything is dispatched and returns one of these.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    /// No usable GPU adapter, or the device could not be created.
    #[error("{0}")]
    Device(String),
    /// An op was called with shapes it cannot combine.
    #[error("{op}: {detail}")]
    Shape { op: &'static str, detail: String },
    /// An index is outside the dimension it indexes.
    #[error(
        "{op}: index {index} at position {position} is out of range for a dimension of size {size}"
    )]
    Index {
        op: &'static str,
        index: i64,
        position: usize,
        size: usize,
    },
    /// A tensor is larger than the adapter can bind.
    #[error(
        "a tensor of {bytes} bytes exceeds the adapter's max storage binding size of {limit} bytes"
    )]
    TooLarge { bytes: u64, limit: u64 },
    /// Autodiff misuse (backward of a non-scalar, missing gradient, ...).
    #[error("autodiff: {0}")]
    Autodiff(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// Shorthand for a shape error.
pub(crate) fn shape_err<T>(op: &'static str, detail: impl Into<String>) -> Result<T> {
    Err(Error::Shape {
        op,
        detail: detail.into(),
    })
}
