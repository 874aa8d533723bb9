//! Conversions between f32 and f16 tensors (cast.wgsl), and the differentiable
//! [`cast`]: an f16 copy of an f32 tensor whose gradient flows back in f32 unchanged,
//! as the operands of mixed-precision products are made (see `crate::precision`).
//!
//! x: any shape -> the same shape in the other type.

use crate::device::KernelDef;
use crate::error::Result;
use crate::ops::{grid_for, WG_OVERRIDES};
use crate::shaders;
use crate::tape::record;
use crate::tensor::{DType, Tensor};

crate::kernel_params! {
    /// cast.wgsl's `Params`.
    pub struct CastParams {
        /// Elements converted.
        n: u32,
    }
}

/// f32 -> f16 (one invocation per pair of elements).
const TO_F16: KernelDef<CastParams> = KernelDef::new(&shaders::CAST, "to_f16", 1, 1);
/// f16 -> f32 (one per element).
const TO_F32: KernelDef<CastParams> = KernelDef::new(&shaders::CAST, "to_f32", 1, 1).bound_from(3);

/// x in `dtype`: rounded to the nearest f16 (values beyond f16's range saturate at
/// +-65504), or widened exactly to f32; x itself when it already is.
pub fn cast_forward(x: &Tensor, dtype: DType) -> Result<Tensor> {
    if x.dtype() == dtype {
        return Ok(x.clone());
    }
    let dev = x.device();
    let out = Tensor::empty_of(dev, x.shape(), dtype)?;
    let n = x.numel();
    let (def, items) = match dtype {
        DType::F16 => (&TO_F16, n.div_ceil(2)),
        DType::F32 => (&TO_F32, n),
    };
    dev.dispatch(
        def,
        WG_OVERRIDES,
        &CastParams { n: n as u32 },
        &[x.binding(), out.binding()],
        grid_for(dev, items),
    )?;
    Ok(out)
}

/// Differentiable `cast_forward`. The gradient arrives in f32 whatever the output's
/// type (products with f16 operands produce f32 gradients) and goes to x as it is,
/// in f32 whatever x's type (gradients are f32): rounding to f16 is treated as the
/// identity, as autocast does. Inside `precision::with_f16_copies`, x's copy made
/// beforehand stands in for the cast.
pub fn cast(x: &Tensor, dtype: DType) -> Result<Tensor> {
    if x.dtype() == dtype {
        return Ok(x.clone());
    }
    let copy = match dtype {
        DType::F16 => crate::precision::f16_copy_of(x),
        DType::F32 => None,
    };
    let y = match copy {
        Some(y) => y,
        None => cast_forward(x, dtype)?,
    };
    record("cast", &[x], &y, move |dy, _| {
        Ok(vec![Some(cast_forward(dy, DType::F32)?)])
    });
    Ok(y)
}
