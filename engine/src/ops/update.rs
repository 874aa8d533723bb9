//! Fused in-place parameter updates: AdamW and the EMA of the target encoder.
//! Schedules and parameter groups live with the training loop; these are the kernels.

use crate::device::KernelDef;
use crate::error::{shape_err, Result};
use crate::shaders;
use crate::tensor::Tensor;

const fn kernel(entry: &'static str, writes: usize) -> KernelDef {
    KernelDef {
        file: "optim.wgsl",
        source: shaders::OPTIM,
        entry,
        reads: 1,
        writes,
        first_binding: 1,
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamW {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// The gradient is multiplied by this before the update: 1, or the clipping
    /// factor `max_norm / norm`.
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
/// `exp_avg_sq`, all updated in place.
pub fn adamw_update(
    h: &AdamW,
    step: u32,
    param: &Tensor,
    grad: &Tensor,
    exp_avg: &Tensor,
    exp_avg_sq: &Tensor,
) -> Result<()> {
    check_same("adamw", &[param, grad, exp_avg, exp_avg_sq])?;
    let bc1 = 1.0 - (h.beta1 as f64).powi(step as i32);
    let bc2 = 1.0 - (h.beta2 as f64).powi(step as i32);
    let dev = param.device();
    let n = param.numel() as u32;
    let words = [
        n,
        h.lr.to_bits(),
        h.beta1.to_bits(),
        h.beta2.to_bits(),
        h.eps.to_bits(),
        h.weight_decay.to_bits(),
        (bc1 as f32).to_bits(),
        (bc2.sqrt() as f32).to_bits(),
        h.grad_scale.to_bits(),
    ];
    dev.dispatch(
        &kernel("adamw", 3),
        &[],
        &words,
        &[
            grad.buffer(),
            param.buffer(),
            exp_avg.buffer(),
            exp_avg_sq.buffer(),
        ],
        dev.grid_1d(n.div_ceil(256)),
    );
    Ok(())
}

/// target = momentum * target + (1 - momentum) * source, in place.
pub fn ema_update(target: &Tensor, source: &Tensor, momentum: f32) -> Result<()> {
    check_same("ema_update", &[target, source])?;
    if target.same_storage(source) {
        return shape_err("ema_update", "target and source share storage");
    }
    let dev = target.device();
    let n = target.numel() as u32;
    dev.dispatch(
        &kernel("ema_update", 1),
        &[],
        &[n, momentum.to_bits()],
        &[source.buffer(), target.buffer()],
        dev.grid_1d(n.div_ceil(256)),
    );
    Ok(())
}
