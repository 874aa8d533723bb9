//! LayerNorm over the last dim, with or without affine parameters.
//! x: [.., D], gamma/beta: [D]. Saves per-row (mean, rstd) for the backward.

use crate::device::KernelDef;
use crate::error::{shape_err, Result};
use crate::ops::reduce::sum_leading_forward;
use crate::shaders;
use crate::tape::record;
use crate::tensor::Tensor;

const fn kernel(entry: &'static str, reads: usize, writes: usize) -> KernelDef {
    KernelDef {
        file: "layernorm.wgsl",
        source: shaders::LAYERNORM,
        entry,
        reads,
        writes,
        first_binding: 1,
    }
}

const CHUNK: usize = 256;

/// What the forward saves for the backward.
#[derive(Clone)]
pub struct LayerNormSaved {
    pub x: Tensor,
    /// [rows, 2]: mean and 1 / sqrt(var + eps) of each row.
    pub stats: Tensor,
}

/// The kernel for `rows` rows of `cols`: one invocation per row for short rows, one
/// workgroup per row otherwise; returns it with its workgroup count.
fn row_kernel(
    entry: &'static str,
    rows_entry: &'static str,
    rows: usize,
    cols: usize,
) -> (&'static str, u32) {
    if cols <= crate::ops::softmax::SHORT_ROW {
        (rows_entry, rows.div_ceil(64) as u32)
    } else {
        (entry, rows as u32)
    }
}

fn rows_cols(x: &Tensor) -> (usize, usize) {
    let cols = x.last_dim();
    (x.numel() / cols.max(1), cols)
}

/// y = (x - mean) / sqrt(var + eps) (* gamma + beta).
pub fn layernorm_forward(
    x: &Tensor,
    affine: Option<(&Tensor, &Tensor)>,
    eps: f32,
) -> Result<(Tensor, LayerNormSaved)> {
    let (rows, cols) = rows_cols(x);
    if x.shape().is_empty() || cols == 0 {
        return shape_err(
            "layernorm",
            format!("needs a non-empty last dim, got {:?}", x.shape()),
        );
    }
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
    let (entry, groups) = row_kernel("layernorm_forward", "layernorm_forward_rows", rows, cols);
    dev.dispatch(
        &kernel(entry, 5, 2),
        &[("AFFINE", affine.is_some() as u32 as f64)],
        &[rows as u32, cols as u32, eps.to_bits()],
        &[
            x.buffer(),
            g,
            b,
            dev.dummy(),
            dev.dummy(),
            y.buffer(),
            stats.buffer(),
        ],
        dev.grid_1d(groups),
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
    let x = &saved.x;
    let (rows, cols) = rows_cols(x);
    let dev = x.device();
    let dx = Tensor::empty(dev, x.shape())?;
    let params = [rows as u32, cols as u32, 0];
    let (entry, groups) = row_kernel("layernorm_backward", "layernorm_backward_rows", rows, cols);
    dev.dispatch(
        &kernel(entry, 5, 1),
        &[("AFFINE", gamma.is_some() as u32 as f64)],
        &params,
        &[
            x.buffer(),
            gamma.map_or(dev.dummy(), |g| g.buffer()),
            dev.dummy(),
            saved.stats.buffer(),
            dy.buffer(),
            dx.buffer(),
        ],
        dev.grid_1d(groups),
    );
    let param_grads = match gamma {
        None => None,
        Some(_) => {
            let chunks = rows.div_ceil(CHUNK);
            let dgamma = Tensor::empty(dev, &[chunks, cols])?;
            let dbeta = Tensor::empty(dev, &[chunks, cols])?;
            dev.dispatch(
                &kernel("layernorm_param_grads", 5, 2),
                &[],
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
                [cols.div_ceil(64) as u32, chunks as u32, 1],
            );
            let dgamma = sum_leading_forward(&dgamma, cols)?;
            let dbeta = sum_leading_forward(&dbeta, cols)?;
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
