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
    /// A tensor is larger than the adapter can bind: `what` names it (its shape and
    /// element type where the tensor's maker knows them).
    #[error(
        "{what} of {bytes} bytes exceeds the adapter's max storage binding size of {limit} bytes; a smaller batch (or image size) keeps every tensor within it"
    )]
    TooLarge {
        what: String,
        bytes: u64,
        limit: u64,
    },
    /// A kernel would need more workgroups along one dimension of its grid than the
    /// adapter allows (sizes too large for one dispatch).
    #[error(
        "{kernel}: a grid of {grid:?} workgroups exceeds the adapter's {limit} workgroups per dimension; reduce the batch or the sizes"
    )]
    Workgroups {
        kernel: &'static str,
        grid: [u32; 3],
        limit: u32,
    },
    /// A buffer did not fit in GPU memory (the driver's or `IJEPA_MEMORY_LIMIT`), even
    /// after the pool released the buffers it was keeping for reuse.
    #[error(
        "out of GPU memory: a buffer of {} did not fit with {} in use{}",
        mib(*bytes),
        mib(*in_use),
        limit.map_or(String::new(), |l| format!("; the memory limit (IJEPA_MEMORY_LIMIT) is {}", mib(l)))
    )]
    OutOfMemory {
        bytes: u64,
        in_use: u64,
        limit: Option<u64>,
    },
    /// Autodiff misuse (backward of a non-scalar, missing gradient, ...).
    #[error("autodiff: {0}")]
    Autodiff(String),
}

pub type Result<T> = std::result::Result<T, Error>;

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
}

/// Shorthand for a shape error.
pub(crate) fn shape_err<T>(op: &'static str, detail: impl Into<String>) -> Result<T> {
    Err(Error::Shape {
        op,
        detail: detail.into(),
    })
}
