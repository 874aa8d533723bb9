//! The ijepa tensor engine: a wgpu device, f32 (and f16) tensors in pooled GPU buffers,
//! hand-written WGSL kernels, a reverse-mode autodiff tape, the CPU reference every
//! kernel is tested against, and a finite-difference gradient checker.

pub mod cpu;
pub mod device;
pub mod error;
pub mod gradcheck;
pub mod ops;
pub mod precision;
pub mod shaders;
pub mod tape;
pub mod tensor;

pub use device::{
    parse_bytes, Counts, Device, DeviceInfo, Measured, MemoryPeaks, PlanFileUse, RuleLoss,
    RulesAgainstFastest, GPU_PLANS_ENV, MEASURED_RUNS, MEASURE_PLANS_ENV, MEMORY_LIMIT_ENV,
    PLANS_ENV, POISON_ENV,
};
pub use error::{Error, Result};
pub use gradcheck::{gradcheck, GradcheckOptions, GradcheckReport};
pub use precision::{autocast, with_f16_copies, Precision};
pub use tape::{backward, backward_scaled, no_grad, Gradients};
pub use tensor::{DType, Indices, PackedTensors, Tensor};
