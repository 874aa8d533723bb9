//! Gather rows by index (I-JEPA's `apply_masks`) and its scatter-add backward.

use crate::device::{Binding, KernelDef};
use crate::error::{shape_err, Result};
use crate::ops::{by_width, grid_for, WG_OVERRIDES};
use crate::shaders;
use crate::tape::record;
use crate::tensor::{Indices, Tensor};

crate::kernel_params! {
    /// gather.wgsl's `Params`: x is [batch, n, d], the indices [G, k].
    pub struct GatherParams {
        batch: u32,
        n: u32,
        d: u32,
        k: u32,
        /// Elements written.
        total: u32,
    }
}

/// x, idx, (unused) -> out.
const GATHER: KernelDef<GatherParams> = KernelDef::new(&shaders::GATHER, "gather_rows", 3, 1);
/// dy, offsets, entries -> dx.
const SCATTER: KernelDef<GatherParams> = KernelDef::new(&shaders::GATHER, "scatter_rows", 3, 1);
/// The two on rows of whole vec4s.
const GATHER_VEC4: KernelDef<GatherParams> =
    KernelDef::new(&shaders::GATHER, "gather_rows_vec4", 3, 1).bound_from(5);
const SCATTER_VEC4: KernelDef<GatherParams> =
    KernelDef::new(&shaders::GATHER, "scatter_rows_vec4", 3, 1).bound_from(5);

/// The parameters and grid of a gather or scatter writing `total` elements: `defs` its
/// kernel by elements and by vec4s, the second where rows are whole vec4s (a load per
/// four elements).
fn launch(
    dev: &crate::Device,
    defs: [&KernelDef<GatherParams>; 2],
    (batch, n, d, k): (usize, usize, usize, usize),
    total: usize,
    buffers: &[Binding],
) -> Result<()> {
    let (def, width) = by_width(d, defs[0], defs[1]);
    let (d, total) = (d / width, total / width);
    let params = GatherParams {
        batch: batch as u32,
        n: n as u32,
        d: d as u32,
        k: k as u32,
        total: total as u32,
    };
    dev.dispatch(def, WG_OVERRIDES, &params, buffers, grid_for(dev, total))
}

/// x [B, N, D], idx [G, K] with G a multiple of B -> [G, K, D],
/// out[g, k] = x[g % B, idx[g, k]]. Indices are checked against N before dispatch.
pub fn gather_rows_forward(x: &Tensor, idx: &Indices) -> Result<Tensor> {
    let (sx, si) = (x.shape(), idx.shape());
    if sx.len() != 3 || si.len() != 2 || sx[0] == 0 || si[0] % sx[0] != 0 {
        return shape_err(
            "gather_rows",
            format!("x {sx:?} must be [B, N, D] and indices {si:?} [G, K] with G a multiple of B"),
        );
    }
    let (b, n, d) = (sx[0], sx[1], sx[2]);
    idx.check_below("gather_rows", n)?;
    let (g, k) = (si[0], si[1]);
    let dev = x.device();
    let out = Tensor::empty(dev, &[g, k, d])?;
    launch(
        dev,
        [&GATHER, &GATHER_VEC4],
        (b, n, d, k),
        g * k * d,
        &[x.buffer(), idx.buffer(), dev.dummy(), out.buffer()],
    )?;
    Ok(out)
}

/// dx [B, N, D] = sum of the rows of dy [G, K, D] gathered from each row of x.
pub fn gather_rows_backward(x_shape: &[usize], idx: &Indices, dy: &Tensor) -> Result<Tensor> {
    let (b, n, d) = (x_shape[0], x_shape[1], x_shape[2]);
    let k = idx.shape()[1];
    // Inverse map in CSR form, built on the host from the host copy of the indices.
    let mut counts = vec![0u32; b * n + 1];
    for (row, &i) in idx.values().iter().enumerate() {
        counts[(row / k) % b * n + i as usize + 1] += 1;
    }
    for r in 0..b * n {
        counts[r + 1] += counts[r];
    }
    let mut fill = counts.clone();
    let mut entries = vec![0u32; idx.values().len()];
    for (row, &i) in idx.values().iter().enumerate() {
        let slot = &mut fill[(row / k) % b * n + i as usize];
        entries[*slot as usize] = row as u32;
        *slot += 1;
    }
    let dev = dy.device();
    let offsets = Indices::from_u32(dev, &[counts.len()], counts)?;
    let entries = Indices::from_u32(dev, &[entries.len()], entries)?;
    let dx = Tensor::empty(dev, x_shape)?;
    launch(
        dev,
        [&SCATTER, &SCATTER_VEC4],
        (b, n, d, k),
        b * n * d,
        &[dy.buffer(), offsets.buffer(), entries.buffer(), dx.buffer()],
    )?;
    Ok(dx)
}

/// Differentiable [`gather_rows_forward`].
pub fn gather_rows(x: &Tensor, idx: &Indices) -> Result<Tensor> {
    let y = gather_rows_forward(x, idx)?;
    let (shape, idx2) = (x.shape().to_vec(), idx.clone());
    record("gather_rows", &[x], &y, move |dy, _| {
        Ok(vec![Some(gather_rows_backward(&shape, &idx2, dy)?)])
    });
    Ok(y)
}
