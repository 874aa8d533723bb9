//! Gather rows by index (I-JEPA's `apply_masks`) and its scatter-add backward.

use crate::device::KernelDef;
use crate::error::{shape_err, Result};
use crate::shaders;
use crate::tape::record;
use crate::tensor::{Indices, Tensor};

const fn kernel(entry: &'static str) -> KernelDef {
    KernelDef {
        file: "gather.wgsl",
        source: shaders::GATHER,
        entry,
        reads: 3,
        writes: 1,
        first_binding: 1,
    }
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
    let total = (g * k * d) as u32;
    dev.dispatch(
        &kernel("gather_rows"),
        &[],
        &[b as u32, n as u32, d as u32, k as u32, total],
        &[x.buffer(), idx.buffer(), dev.dummy(), out.buffer()],
        dev.grid_1d(total.div_ceil(256)),
    );
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
    let total = (b * n * d) as u32;
    dev.dispatch(
        &kernel("scatter_rows"),
        &[],
        &[b as u32, n as u32, d as u32, k as u32, total],
        &[dy.buffer(), offsets.buffer(), entries.buffer(), dx.buffer()],
        dev.grid_1d(total.div_ceil(256)),
    );
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
