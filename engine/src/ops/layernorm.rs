//! LayerNorm over the last dim, with or without affine parameters, run by the row plan
//! (`ops::rows`). x: [.., D], gamma/beta: [D]. Saves per-row (mean, rstd) for the
//! backward.
//!
//! Explained in the tour: docs/tour/05-softmax-layernorm.md.

use crate::device::KernelDef;
use crate::error::{shape_err, Result};
use crate::ops::reduce::{column_chunk, sum_leading_forward_with, COLS_PER_WORKGROUP};
use crate::ops::rows::{RowPlan, ROW_WG};
use crate::shaders;
use crate::tape::record;
use crate::tensor::Tensor;

crate::kernel_params! {
    /// layernorm.wgsl's `Params`.
    pub struct LayerNormParams {
        rows: u32,
        cols: u32,
        eps: f32,
        chunk: u32,
    }
}

/// x, gamma, beta, (unused), (unused) -> y, stats [rows, 2].
const FORWARD: KernelDef<LayerNormParams> =
    KernelDef::new(&shaders::LAYERNORM, "layernorm_forward", 5, 2);
const FORWARD_ROWS: KernelDef<LayerNormParams> =
    KernelDef::new(&shaders::LAYERNORM, "layernorm_forward_rows", 5, 2);
/// x, gamma, (unused), stats, dy -> dx.
const BACKWARD: KernelDef<LayerNormParams> =
    KernelDef::new(&shaders::LAYERNORM, "layernorm_backward", 5, 1);
const BACKWARD_ROWS: KernelDef<LayerNormParams> =
    KernelDef::new(&shaders::LAYERNORM, "layernorm_backward_rows", 5, 1);
/// x, (unused), (unused), stats, dy -> dgamma and dbeta partials [chunks, cols].
const PARAM_GRADS: KernelDef<LayerNormParams> =
    KernelDef::new(&shaders::LAYERNORM, "layernorm_param_grads", 5, 2);

fn overrides(affine: bool) -> [(&'static str, f64); 3] {
    [
        ("AFFINE", affine as u32 as f64),
        ("WG", ROW_WG as f64),
        ("COLS_PER_WG", COLS_PER_WORKGROUP as f64),
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

/// y = (x - mean) / sqrt(var + eps) (* gamma + beta).
pub fn layernorm_forward(
    x: &Tensor,
    affine: Option<(&Tensor, &Tensor)>,
    eps: f32,
) -> Result<(Tensor, LayerNormSaved)> {
    layernorm_forward_with(&RowPlan::of(x), x, affine, eps)
}

/// `layernorm_forward` with the given plan.
pub fn layernorm_forward_with(
    plan: &RowPlan,
    x: &Tensor,
    affine: Option<(&Tensor, &Tensor)>,
    eps: f32,
) -> Result<(Tensor, LayerNormSaved)> {
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
    let dev = x.device();
    let y = Tensor::empty(dev, x.shape())?;
    let stats = Tensor::empty(dev, &[rows, 2])?;
    let (g, b) = affine.map_or((dev.dummy(), dev.dummy()), |(g, b)| {
        (g.buffer(), b.buffer())
    });
    dev.note_plan(|| plan_key(plan, affine.is_some()));
    dev.dispatch(
        plan.pick(&FORWARD, &FORWARD_ROWS),
        &overrides(affine.is_some()),
        &LayerNormParams {
            rows: rows as u32,
            cols: cols as u32,
            eps,
            chunk: 0,
        },
        &[
            x.buffer(),
            g,
            b,
            dev.dummy(),
            dev.dummy(),
            y.buffer(),
            stats.buffer(),
        ],
        plan.grid(dev),
    );
    Ok((
        y,
        LayerNormSaved {
            x: x.clone(),
            stats,
        },
    ))
}

/// Gradients (dx, dgamma, dbeta) given dy; the last two only with affine parameters.
pub fn layernorm_backward(
    saved: &LayerNormSaved,
    gamma: Option<&Tensor>,
    dy: &Tensor,
) -> Result<(Tensor, Option<(Tensor, Tensor)>)> {
    let plan = RowPlan::of(&saved.x);
    let chunk = column_chunk(saved.x.device(), plan.rows);
    layernorm_backward_with(&plan, chunk, saved, gamma, dy)
}

/// `layernorm_backward` with the given plan for dx, and `chunk` rows per workgroup of
/// the parameter gradients' column sums (`reduce::column_chunk` picks it).
pub fn layernorm_backward_with(
    plan: &RowPlan,
    chunk: usize,
    saved: &LayerNormSaved,
    gamma: Option<&Tensor>,
    dy: &Tensor,
) -> Result<(Tensor, Option<(Tensor, Tensor)>)> {
    let x = &saved.x;
    plan.check("layernorm_backward", x)?;
    let (rows, cols) = (plan.rows, plan.cols);
    if dy.shape() != x.shape() {
        return shape_err(
            "layernorm_backward",
            format!("dy {:?} vs x {:?}", dy.shape(), x.shape()),
        );
    }
    let dev = x.device();
    dev.note_plan(|| plan_key(plan, gamma.is_some()));
    let dx = Tensor::empty(dev, x.shape())?;
    let chunk = chunk.max(1);
    let params = LayerNormParams {
        rows: rows as u32,
        cols: cols as u32,
        eps: 0.0,
        chunk: chunk as u32,
    };
    dev.dispatch(
        plan.pick(&BACKWARD, &BACKWARD_ROWS),
        &overrides(gamma.is_some()),
        &params,
        &[
            x.buffer(),
            gamma.map_or(dev.dummy(), |g| g.buffer()),
            dev.dummy(),
            saved.stats.buffer(),
            dy.buffer(),
            dx.buffer(),
        ],
        plan.grid(dev),
    );
    let param_grads = match gamma {
        None => None,
        Some(_) => {
            let chunks = rows.div_ceil(chunk);
            let dgamma = Tensor::empty(dev, &[chunks, cols])?;
            let dbeta = Tensor::empty(dev, &[chunks, cols])?;
            dev.dispatch(
                &PARAM_GRADS,
                &overrides(true),
                &params,
                &[
                    x.buffer(),
                    dev.dummy(),
                    dev.dummy(),
                    saved.stats.buffer(),
                    dy.buffer(),
                    dgamma.buffer(),
                    dbeta.buffer(),
                ],
                [cols.div_ceil(COLS_PER_WORKGROUP) as u32, chunks as u32, 1],
            );
            let dgamma = sum_leading_forward_with(&dgamma, cols, chunk)?;
            let dbeta = sum_leading_forward_with(&dbeta, cols, chunk)?;
            Some((dgamma, dbeta))
        }
    };
    Ok((dx, param_grads))
}

/// Differentiable LayerNorm (eps as torch's `eps`; I-JEPA uses 1e-6).
pub fn layernorm(x: &Tensor, affine: Option<(&Tensor, &Tensor)>, eps: f32) -> Result<Tensor> {
    let (y, saved) = layernorm_forward(x, affine, eps)?;
    let mut inputs = vec![x];
    let gamma = affine.map(|(g, b)| {
        inputs.extend([g, b]);
        g.clone()
    });
    record("layernorm", &inputs, &y, move |dy, _| {
        let (dx, params) = layernorm_backward(&saved, gamma.as_ref(), dy)?;
        let mut grads = vec![Some(dx)];
        if let Some((dg, db)) = params {
            grads.extend([Some(dg), Some(db)]);
        }
        Ok(grads)
    });
    Ok(y)
}
