//! Fused in-place parameter updates: AdamW and the EMA of the target encoder, each on
//! one tensor or on a whole bucket of `PackedTensors` in one dispatch, and the check
//! for infinities and NaN that loss scaling makes before an update. Schedules,
//! parameter groups and the loss scale live with the training loop; these are the
//! kernels.

use crate::device::KernelDef;
use crate::error::{shape_err, Result};
use crate::ops::{by_width, grid_for, WG_OVERRIDES};
use crate::shaders;
use crate::tensor::{DType, Tensor};

crate::kernel_params! {
    /// update.wgsl's `Params`: AdamW's hyper-parameters and bias corrections, or the
    /// EMA momentum.
    pub struct UpdateParams {
        n: u32,
        lr: f32,
        beta1: f32,
        beta2: f32,
        eps: f32,
        weight_decay: f32,
        bias_correction1: f32,
        bias_correction2_sqrt: f32,
        grad_scale: f32,
        momentum: f32,
        decay_from: u32,
    }
}

/// grad, param, exp_avg, exp_avg_sq (the last three updated in place).
const ADAMW: KernelDef<UpdateParams> = KernelDef::new(&shaders::UPDATE, "adamw", 1, 3);
/// source, target (updated in place).
const EMA: KernelDef<UpdateParams> = KernelDef::new(&shaders::UPDATE, "ema_update", 1, 1);
/// The two on tensors of whole vec4s (packed buckets are), a load per four elements.
const ADAMW_VEC4: KernelDef<UpdateParams> =
    KernelDef::new(&shaders::UPDATE, "adamw_vec4", 1, 3).bound_from(7);
const EMA_VEC4: KernelDef<UpdateParams> =
    KernelDef::new(&shaders::UPDATE, "ema_update_vec4", 1, 1).bound_from(7);

/// checked, found (a one-element flag).
const FIND_NON_FINITE: KernelDef<UpdateParams> =
    KernelDef::new(&shaders::UPDATE, "find_non_finite", 1, 1).bound_from(5);

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamW {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// The gradient is multiplied by this before the update: 1, the clipping factor
    /// `max_norm / norm`, times 1 / the loss scale under loss scaling.
    pub grad_scale: f32,
}

impl Default for AdamW {
    fn default() -> Self {
        AdamW {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            grad_scale: 1.0,
        }
    }
}

fn check_same(op: &'static str, tensors: &[&Tensor]) -> Result<()> {
    let s = tensors[0].shape();
    match tensors.iter().find(|t| t.shape() != s) {
        Some(t) => shape_err(op, format!("{:?} does not match {s:?}", t.shape())),
        None => Ok(()),
    }
}

/// One AdamW step (`step` counts from 1) on `param` with moments `exp_avg`,
/// `exp_avg_sq`, all updated in place; weight decay applies to the elements from
/// `decay_from` on (0: all of them; a packed bucket puts those without first).
pub fn adamw_update(
    h: &AdamW,
    step: u32,
    param: &Tensor,
    grad: &Tensor,
    exp_avg: &Tensor,
    exp_avg_sq: &Tensor,
    decay_from: usize,
) -> Result<()> {
    check_same("adamw", &[param, grad, exp_avg, exp_avg_sq])?;
    let bc1 = 1.0 - (h.beta1 as f64).powi(step as i32);
    let bc2 = 1.0 - (h.beta2 as f64).powi(step as i32);
    let dev = param.device();
    let (def, width) = by_width(param.numel(), &ADAMW, &ADAMW_VEC4);
    let params = UpdateParams {
        n: (param.numel() / width) as u32,
        lr: h.lr,
        beta1: h.beta1,
        beta2: h.beta2,
        eps: h.eps,
        weight_decay: h.weight_decay,
        bias_correction1: bc1 as f32,
        bias_correction2_sqrt: bc2.sqrt() as f32,
        grad_scale: h.grad_scale,
        momentum: 0.0,
        decay_from: decay_from.min(param.numel()) as u32,
    };
    dev.dispatch(
        def,
        WG_OVERRIDES,
        &params,
        &[
            grad.buffer(),
            param.buffer(),
            exp_avg.buffer(),
            exp_avg_sq.buffer(),
        ],
        grid_for(dev, param.numel() / width),
    )?;
    Ok(())
}

/// target = momentum * target + (1 - momentum) * source, in place.
pub fn ema_update(target: &Tensor, source: &Tensor, momentum: f32) -> Result<()> {
    check_same("ema_update", &[target, source])?;
    if target.same_storage(source) {
        return shape_err("ema_update", "target and source share storage");
    }
    let dev = target.device();
    let (def, width) = by_width(target.numel(), &EMA, &EMA_VEC4);
    let params = UpdateParams {
        n: (target.numel() / width) as u32,
        momentum,
        ..UpdateParams::default()
    };
    dev.dispatch(
        def,
        WG_OVERRIDES,
        &params,
        &[source.buffer(), target.buffer()],
        grid_for(dev, target.numel() / width),
    )?;
    Ok(())
}

/// Whether any element of `tensors` is infinite or NaN, as a one-element flag on the
/// device (non-zero when one is): one dispatch per tensor, nothing read back, so that
/// the caller may read the flag together with other values (loss scaling skips an
/// update whose scaled gradients overflowed).
pub fn find_non_finite(tensors: &[&Tensor]) -> Result<Tensor> {
    let Some(first) = tensors.first() else {
        return shape_err("find_non_finite", "needs at least one tensor");
    };
    let dev = first.device();
    let found = Tensor::from_slice(dev, &[1], &[0.0])?;
    for t in tensors {
        if t.dtype() != DType::F32 {
            return shape_err(
                "find_non_finite",
                format!("needs f32 tensors, got {:?}", t.dtype()),
            );
        }
        let params = UpdateParams {
            n: t.numel() as u32,
            ..UpdateParams::default()
        };
        dev.dispatch(
            &FIND_NON_FINITE,
            WG_OVERRIDES,
            &params,
            &[t.buffer(), found.buffer()],
            grid_for(dev, t.numel()),
        )?;
    }
    Ok(found)
}

/// Whether any element of `tensors` is infinite or NaN: [`find_non_finite`]'s flag,
/// read back.
pub fn any_non_finite(tensors: &[&Tensor]) -> Result<bool> {
    if tensors.is_empty() {
        return Ok(false);
    }
    Ok(find_non_finite(tensors)?.item() != 0.0)
}
