//! LayerNorm over the last dim, with or without affine parameters, run by the row plan
//! (`ops::rows`). x: [.., D], gamma/beta: [D]. Saves per-row (mean, rstd) for the
//! backward. [`add_layernorm`] fuses the residual addition before a pre-norm block's
//! LayerNorm, forward and backward.
//!
//! Explained in the tour: docs/tour/05-softmax-layernorm.md.

use crate::device::{Device, KernelDef};
use crate::error::{shape_err, Result};
use crate::ops::by_width;
use crate::ops::cast::cast_forward;
use crate::ops::reduce::{
    column_sums_grid, columns_per_workgroup, max_rows_per_workgroup, rows_per_workgroup,
    sum_leading_forward_with, ROW_LANES,
};
use crate::ops::rows::{RowPlan, ROW_WG};
use crate::shaders;
use crate::tape::{record, record_accumulating};
use crate::tensor::{DType, Tensor};

crate::kernel_params! {
    /// layernorm.wgsl's `Params`.
    pub struct LayerNormParams {
        rows: u32,
        cols: u32,
        eps: f32,
        chunk: u32,
        stride: u32,
    }
}

/// x, gamma, beta, (unused), (unused), addend -> y, stats [rows, 2], x + addend, y in
/// f16 (F16_OUT).
const FORWARD: KernelDef<LayerNormParams> =
    KernelDef::new(&shaders::LAYERNORM, "layernorm_forward", 6, 4);
const FORWARD_ROWS: KernelDef<LayerNormParams> =
    KernelDef::new(&shaders::LAYERNORM, "layernorm_forward_rows", 6, 4);
const FORWARD_ROWS_VEC4: KernelDef<LayerNormParams> =
    KernelDef::new(&shaders::LAYERNORM, "layernorm_forward_rows_vec4", 6, 4).bound_from(11);
/// x, gamma, (unused), stats, dy, addend -> dx (+ addend).
const BACKWARD: KernelDef<LayerNormParams> =
    KernelDef::new(&shaders::LAYERNORM, "layernorm_backward", 6, 1);
const BACKWARD_ROWS: KernelDef<LayerNormParams> =
    KernelDef::new(&shaders::LAYERNORM, "layernorm_backward_rows", 6, 1);
const BACKWARD_ROWS_VEC4: KernelDef<LayerNormParams> =
    KernelDef::new(&shaders::LAYERNORM, "layernorm_backward_rows_vec4", 6, 1).bound_from(11);
/// x, (unused), (unused), stats, dy, (unused) -> dgamma and dbeta partials side by
/// side, [chunks, 2, stride].
const PARAM_GRADS: KernelDef<LayerNormParams> =
    KernelDef::new(&shaders::LAYERNORM, "layernorm_param_grads", 6, 1);
/// The same on vec4s: cols and stride multiples of 4, counted in vec4s.
const PARAM_GRADS_VEC4: KernelDef<LayerNormParams> =
    KernelDef::new(&shaders::LAYERNORM, "layernorm_param_grads_vec4", 6, 1).bound_from(11);

/// The kernels' overrides; `lanes` is the row kernels' `LANES_PER_ROW`
/// (`RowKernel::lanes_override`),
/// which the parameter-gradient kernels do not read.
fn overrides(
    dev: &Device,
    lanes: usize,
    affine: bool,
    add: bool,
    f16_out: bool,
) -> [(&'static str, f64); 7] {
    [
        ("AFFINE", affine as u32 as f64),
        ("ADD", add as u32 as f64),
        ("F16_OUT", f16_out as u32 as f64),
        ("WG", ROW_WG as f64),
        ("LANES_PER_ROW", lanes as f64),
        ("COLS_PER_WG", columns_per_workgroup(dev) as f64),
        ("ROW_LANES", ROW_LANES as f64),
    ]
}

/// What the forward saves for the backward.
#[derive(Clone)]
pub struct LayerNormSaved {
    pub x: Tensor,
    /// [rows, 2]: mean and 1 / sqrt(var + eps) of each row.
    pub stats: Tensor,
}

/// The key `Device::log_plans` records for a LayerNorm plan.
pub fn plan_key(plan: &RowPlan, affine: bool) -> String {
    format!("layernorm {:?} affine={affine}", plan.kernel)
}

/// y = (x - mean) / sqrt(var + eps) (* gamma + beta), on the rule's plan
/// (`RowPlan::of`; the differentiable `layernorm_to` measures its plan where plans are
/// measured).
pub fn layernorm_forward(
    x: &Tensor,
    affine: Option<(&Tensor, &Tensor)>,
    eps: f32,
) -> Result<(Tensor, LayerNormSaved)> {
    layernorm_forward_with(&RowPlan::of(x), x, affine, eps, DType::F32)
}

/// `layernorm_forward` with the given plan, y in `out` (computed in f32; rounded to
/// f16 by the kernel itself).
pub fn layernorm_forward_with(
    plan: &RowPlan,
    x: &Tensor,
    affine: Option<(&Tensor, &Tensor)>,
    eps: f32,
    out: DType,
) -> Result<(Tensor, LayerNormSaved)> {
    forward(plan, x, None, affine, eps, out).map(|(y, saved, _)| (y, saved))
}

/// s = x + addend and y = LayerNorm(s) in one kernel: (y in `out`, what the backward
/// needs of s, s). x and addend: [.., D].
pub fn add_layernorm_forward_with(
    plan: &RowPlan,
    x: &Tensor,
    addend: &Tensor,
    affine: Option<(&Tensor, &Tensor)>,
    eps: f32,
    out: DType,
) -> Result<(Tensor, LayerNormSaved, Tensor)> {
    if addend.shape() != x.shape() {
        return shape_err(
            "add_layernorm",
            format!(
                "addend {:?} does not match x {:?}",
                addend.shape(),
                x.shape()
            ),
        );
    }
    let (y, saved, sum) = forward(plan, x, Some(addend), affine, eps, out)?;
    Ok((y, saved, sum.expect("the fused forward writes the sum")))
}

fn forward(
    plan: &RowPlan,
    x: &Tensor,
    addend: Option<&Tensor>,
    affine: Option<(&Tensor, &Tensor)>,
    eps: f32,
    out: DType,
) -> Result<(Tensor, LayerNormSaved, Option<Tensor>)> {
    plan.check("layernorm", x)?;
    let (rows, cols) = (plan.rows, plan.cols);
    if let Some((g, b)) = affine {
        if g.shape() != [cols] || b.shape() != [cols] {
            return shape_err(
                "layernorm",
                format!(
                    "weight {:?} and bias {:?} must be [{cols}] for x {:?}",
                    g.shape(),
                    b.shape(),
                    x.shape()
                ),
            );
        }
    }
    if out == DType::F16 && !cols.is_multiple_of(2) {
        // f16 words hold two columns: an odd row would split them.
        let (y, saved, sum) = forward(plan, x, addend, affine, eps, DType::F32)?;
        return Ok((cast_forward(&y, DType::F16)?, saved, sum));
    }
    let dev = x.device();
    let y = Tensor::empty_of(dev, x.shape(), out)?;
    let stats = Tensor::empty(dev, &[rows, 2])?;
    let sum = addend.map(|_| Tensor::empty(dev, x.shape())).transpose()?;
    let (g, b) = affine.map_or((dev.dummy(), dev.dummy()), |(g, b)| {
        (g.buffer(), b.buffer())
    });
    dev.note_plan(|| plan_key(plan, affine.is_some()));
    let (f32_y, f16_y) = match out {
        DType::F32 => (y.binding(), dev.dummy_output()),
        DType::F16 => (dev.dummy_output(), y.binding()),
    };
    dev.dispatch(
        plan.pick_by_width(&FORWARD, &FORWARD_ROWS, &FORWARD_ROWS_VEC4),
        &overrides(
            dev,
            plan.kernel.lanes_override(),
            affine.is_some(),
            addend.is_some(),
            out == DType::F16,
        ),
        &LayerNormParams {
            rows: rows as u32,
            cols: cols as u32,
            eps,
            chunk: 0,
            stride: 0,
        },
        &[
            x.buffer(),
            g,
            b,
            dev.dummy(),
            dev.dummy(),
            addend.map_or(dev.dummy(), |a| a.buffer()),
            f32_y,
            stats.buffer(),
            sum.as_ref().map_or(dev.dummy_output(), |s| s.buffer()),
            f16_y,
        ],
        plan.grid(dev),
    )?;
    let saved = LayerNormSaved {
        x: sum.clone().unwrap_or_else(|| x.clone()),
        stats,
    };
    Ok((y, saved, sum))
}

/// Gradients (dx, dgamma, dbeta) given dy; the last two only with affine parameters.
/// On the device's plan: the rule's, or the measured one where plans are measured.
pub fn layernorm_backward(
    saved: &LayerNormSaved,
    gamma: Option<&Tensor>,
    dy: &Tensor,
) -> Result<(Tensor, Option<(Tensor, Tensor)>)> {
    backward(saved, gamma, dy, None)
}

/// `layernorm_backward` on this device's plans, adding `accumulate` to dx if given.
fn backward(
    saved: &LayerNormSaved,
    gamma: Option<&Tensor>,
    dy: &Tensor,
    accumulate: Option<&Tensor>,
) -> Result<(Tensor, Option<(Tensor, Tensor)>)> {
    let x = &saved.x;
    let rows = RowPlan::of(x);
    let chunk = rows_per_workgroup(x.device(), rows.rows, rows.cols);
    let plan = RowPlan::measured(
        format_args!(
            "layernorm backward, affine {}, accumulating {}",
            gamma.is_some(),
            accumulate.is_some()
        ),
        x,
        |plan| layernorm_backward_with(plan, chunk, saved, gamma, dy, accumulate).map(drop),
    )?;
    layernorm_backward_with(&plan, chunk, saved, gamma, dy, accumulate)
}

/// `layernorm_backward` with the given plan for dx, and `chunk` rows per workgroup of
/// the parameter gradients' column sums (`reduce::rows_per_workgroup` picks it, at most
/// `reduce::max_rows_per_workgroup`); with
/// `accumulate`, dx + accumulate is returned in place of dx.
pub fn layernorm_backward_with(
    plan: &RowPlan,
    chunk: usize,
    saved: &LayerNormSaved,
    gamma: Option<&Tensor>,
    dy: &Tensor,
    accumulate: Option<&Tensor>,
) -> Result<(Tensor, Option<(Tensor, Tensor)>)> {
    let x = &saved.x;
    plan.check("layernorm_backward", x)?;
    let (rows, cols) = (plan.rows, plan.cols);
    if dy.shape() != x.shape() || accumulate.is_some_and(|a| a.shape() != x.shape()) {
        return shape_err(
            "layernorm_backward",
            format!(
                "dy {:?} (and the gradient to accumulate {:?}) vs x {:?}",
                dy.shape(),
                accumulate.map(|a| a.shape()),
                x.shape()
            ),
        );
    }
    let dev = x.device();
    dev.note_plan(|| plan_key(plan, gamma.is_some()));
    let dx = Tensor::empty(dev, x.shape())?;
    let chunk = chunk.clamp(1, max_rows_per_workgroup(cols));
    let params = LayerNormParams {
        rows: rows as u32,
        cols: cols as u32,
        eps: 0.0,
        chunk: chunk as u32,
        stride: 0,
    };
    dev.dispatch(
        plan.pick_by_width(&BACKWARD, &BACKWARD_ROWS, &BACKWARD_ROWS_VEC4),
        &overrides(
            dev,
            plan.kernel.lanes_override(),
            gamma.is_some(),
            accumulate.is_some(),
            false,
        ),
        &params,
        &[
            x.buffer(),
            gamma.map_or(dev.dummy(), |g| g.buffer()),
            dev.dummy(),
            saved.stats.buffer(),
            dy.buffer(),
            accumulate.map_or(dev.dummy(), |a| a.buffer()),
            dx.buffer(),
        ],
        plan.grid(dev),
    )?;
    let param_grads = match gamma {
        None => None,
        Some(_) => {
            // dgamma's and dbeta's partial sums side by side, each row of them from an
            // offset the adapter can bind: one sum over the chunks adds both, and each
            // is a view of it.
            let align = (dev.storage_offset_alignment() as usize / 4).max(4);
            let stride = cols.next_multiple_of(align);
            let chunks = rows.div_ceil(chunk);
            let partials = Tensor::empty(dev, &[chunks, 2 * stride])?;
            let buffers = [
                x.buffer(),
                dev.dummy(),
                dev.dummy(),
                saved.stats.buffer(),
                dy.buffer(),
                dev.dummy(),
                partials.buffer(),
            ];
            let (def, width) = by_width(cols, &PARAM_GRADS, &PARAM_GRADS_VEC4);
            dev.dispatch(
                def,
                &overrides(dev, ROW_WG, true, false, false),
                &LayerNormParams {
                    cols: (cols / width) as u32,
                    stride: (stride / width) as u32,
                    ..params
                },
                &buffers,
                column_sums_grid(dev, cols / width, chunks),
            )?;
            let sums = sum_leading_forward_with(&partials, 2 * stride, chunk)?;
            Some((
                sums.view_from(0, &[cols])?,
                sums.view_from(stride, &[cols])?,
            ))
        }
    };
    Ok((dx, param_grads))
}

/// Differentiable LayerNorm (eps as torch's `eps`; I-JEPA uses 1e-6).
pub fn layernorm(x: &Tensor, affine: Option<(&Tensor, &Tensor)>, eps: f32) -> Result<Tensor> {
    layernorm_to(x, affine, eps, DType::F32)
}

/// `layernorm` with y stored in `out`: f16 for a LayerNorm that only feeds products
/// under mixed precision (`precision::operand_type`), which then need no cast of their
/// own. Its gradient arrives and leaves in f32.
pub fn layernorm_to(
    x: &Tensor,
    affine: Option<(&Tensor, &Tensor)>,
    eps: f32,
    out: DType,
) -> Result<Tensor> {
    let plan = RowPlan::measured(
        format_args!("layernorm forward, affine {}, y {out:?}", affine.is_some()),
        x,
        |plan| layernorm_forward_with(plan, x, affine, eps, out).map(drop),
    )?;
    let (y, saved) = layernorm_forward_with(&plan, x, affine, eps, out)?;
    record_layernorm(x, affine, &y, saved);
    Ok(y)
}

/// Differentiable `(s, LayerNorm(s))` with s = x + addend: the residual connection
/// and the next LayerNorm of a pre-norm transformer in one kernel. The tape sees the
/// addition and the LayerNorm as two ops; the LayerNorm's backward adds the gradient s
/// receives from the residual stream inside its kernel.
pub fn add_layernorm(
    x: &Tensor,
    addend: &Tensor,
    affine: Option<(&Tensor, &Tensor)>,
    eps: f32,
) -> Result<(Tensor, Tensor)> {
    add_layernorm_to(x, addend, affine, eps, DType::F32)
}

/// `add_layernorm` with the LayerNorm's output in `out` (see `layernorm_to`); the sum
/// stays f32.
pub fn add_layernorm_to(
    x: &Tensor,
    addend: &Tensor,
    affine: Option<(&Tensor, &Tensor)>,
    eps: f32,
    out: DType,
) -> Result<(Tensor, Tensor)> {
    let plan = RowPlan::measured(
        format_args!(
            "layernorm forward of a sum, affine {}, y {out:?}",
            affine.is_some()
        ),
        x,
        |plan| add_layernorm_forward_with(plan, x, addend, affine, eps, out).map(drop),
    )?;
    let (y, saved, sum) = add_layernorm_forward_with(&plan, x, addend, affine, eps, out)?;
    record("add", &[x, addend], &sum, |ds, _| {
        Ok(vec![Some(ds.clone()), Some(ds.clone())])
    });
    record_layernorm(&sum, affine, &y, saved);
    Ok((sum, y))
}

fn record_layernorm(
    x: &Tensor,
    affine: Option<(&Tensor, &Tensor)>,
    y: &Tensor,
    saved: LayerNormSaved,
) {
    let mut inputs = vec![x];
    let gamma = affine.map(|(g, b)| {
        inputs.extend([g, b]);
        g.clone()
    });
    record_accumulating("layernorm", &inputs, y, move |dy, _, pending| {
        let (dx, params) = backward(&saved, gamma.as_ref(), dy, pending.as_ref())?;
        let mut grads = vec![Some(dx)];
        if let Some((dg, db)) = params {
            grads.extend([Some(dg), Some(db)]);
        }
        Ok(grads)
    });
}
