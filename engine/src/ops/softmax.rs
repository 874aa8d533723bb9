//! Softmax over the last dim. x: [.., cols], run by the row plan (`ops::rows`).
//!
//! Explained in the tour: docs/tour/05-softmax-layernorm.md.

use crate::device::KernelDef;
use crate::error::{shape_err, Result};
use crate::ops::rows::{RowPlan, ROW_WG};
use crate::shaders;
use crate::tape::record;
use crate::tensor::Tensor;

crate::kernel_params! {
    /// softmax.wgsl's `Params`.
    pub struct SoftmaxParams {
        rows: u32,
        cols: u32,
    }
}

/// x (or the forward's y), dy (backward) -> out; lanes per row, or (`_ROWS`) an
/// invocation per row (`_ROWS_VEC4` on rows of whole vec4s).
const FORWARD: KernelDef<SoftmaxParams> =
    KernelDef::new(&shaders::SOFTMAX, "softmax_forward", 2, 1);
const FORWARD_ROWS: KernelDef<SoftmaxParams> =
    KernelDef::new(&shaders::SOFTMAX, "softmax_forward_rows", 2, 1);
const BACKWARD: KernelDef<SoftmaxParams> =
    KernelDef::new(&shaders::SOFTMAX, "softmax_backward", 2, 1);
const BACKWARD_ROWS: KernelDef<SoftmaxParams> =
    KernelDef::new(&shaders::SOFTMAX, "softmax_backward_rows", 2, 1);
const FORWARD_ROWS_VEC4: KernelDef<SoftmaxParams> =
    KernelDef::new(&shaders::SOFTMAX, "softmax_forward_rows_vec4", 2, 1).bound_from(4);
const BACKWARD_ROWS_VEC4: KernelDef<SoftmaxParams> =
    KernelDef::new(&shaders::SOFTMAX, "softmax_backward_rows_vec4", 2, 1).bound_from(4);

/// The key `Device::log_plans` records for a softmax plan.
pub fn plan_key(plan: &RowPlan) -> String {
    format!("softmax {:?}", plan.kernel)
}

fn launch(
    plan: &RowPlan,
    [lanes, rows, rows_vec4]: [&KernelDef<SoftmaxParams>; 3],
    x: &Tensor,
    dy: Option<&Tensor>,
) -> Result<Tensor> {
    plan.check("softmax", x)?;
    let dev = x.device();
    dev.note_plan(|| plan_key(plan));
    let out = Tensor::empty(dev, x.shape())?;
    dev.dispatch(
        plan.pick_by_width(lanes, rows, rows_vec4),
        &[
            ("WG", ROW_WG as f64),
            ("LANES_PER_ROW", plan.kernel.lanes_override() as f64),
        ],
        &SoftmaxParams {
            rows: plan.rows as u32,
            cols: plan.cols as u32,
        },
        &[
            x.buffer(),
            dy.map_or(x.buffer(), |d| d.buffer()),
            out.buffer(),
        ],
        plan.grid(dev),
    )?;
    Ok(out)
}

/// softmax(x) with the given plan.
pub fn softmax_forward_with(plan: &RowPlan, x: &Tensor) -> Result<Tensor> {
    launch(plan, [&FORWARD, &FORWARD_ROWS, &FORWARD_ROWS_VEC4], x, None)
}

/// softmax(x) on the rule's plan (`RowPlan::of`).
pub fn softmax_forward(x: &Tensor) -> Result<Tensor> {
    softmax_forward_with(&RowPlan::of(x), x)
}

/// dx = y * (dy - sum(dy * y)) over each row, from the forward's output y.
pub fn softmax_backward_with(plan: &RowPlan, y: &Tensor, dy: &Tensor) -> Result<Tensor> {
    if y.shape() != dy.shape() {
        return shape_err(
            "softmax_backward",
            format!("y {:?} vs dy {:?}", y.shape(), dy.shape()),
        );
    }
    launch(
        plan,
        [&BACKWARD, &BACKWARD_ROWS, &BACKWARD_ROWS_VEC4],
        y,
        Some(dy),
    )
}

/// The backward on the rule's plan (`RowPlan::of`).
pub fn softmax_backward(y: &Tensor, dy: &Tensor) -> Result<Tensor> {
    softmax_backward_with(&RowPlan::of(y), y, dy)
}

/// Differentiable softmax over the last dim, forward and backward each on its measured
/// plan where plans are measured or followed (`RowPlan::measured`).
pub fn softmax(x: &Tensor) -> Result<Tensor> {
    let plan = RowPlan::measured(format_args!("softmax forward"), x, |plan| {
        softmax_forward_with(plan, x).map(drop)
    })?;
    let y = softmax_forward_with(&plan, x)?;
    let y2 = y.detach();
    record("softmax", &[x], &y, move |dy, _| {
        let plan = RowPlan::measured(format_args!("softmax backward"), &y2, |plan| {
            softmax_backward_with(plan, &y2, dy).map(drop)
        })?;
        Ok(vec![Some(softmax_backward_with(&plan, &y2, dy)?)])
    });
    Ok(y)
}
