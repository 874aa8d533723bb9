//! One batch's context and target masks, stacked as the model consumes them.

use std::sync::Arc;

use anyhow::{bail, Result};
use engine::{Device, Indices};

/// Patch indices (row-major over the grid) for a batch of B images.
pub struct Masks {
    pub batch: usize,
    pub nenc: usize,
    pub npred: usize,
    /// [nenc*B, Kc], row r * B + b: context mask r of image b.
    pub context: Indices,
    /// [npred*B, Kt], row j * B + b: target mask j of image b.
    pub target: Indices,
    /// [npred*nenc*B, Kt]: the target rows in prediction order, row
    /// (j * nenc + r) * B + b = target mask j of image b (the official
    /// `repeat_interleave_batch` of the targets over the context masks).
    pub target_rows: Indices,
}

fn stack(what: &str, masks: &[Vec<Vec<u32>>], batch: usize) -> Result<(Vec<i64>, usize)> {
    let len = masks.first().and_then(|m| m.first()).map_or(0, |v| v.len());
    if len == 0 {
        bail!("{what} masks are empty");
    }
    let mut flat = Vec::new();
    for (j, per_image) in masks.iter().enumerate() {
        if per_image.len() != batch {
            bail!(
                "{what} mask {j} has {} images, expected {batch}",
                per_image.len()
            );
        }
        for (b, m) in per_image.iter().enumerate() {
            if m.len() != len {
                bail!(
                    "{what} mask {j} of image {b} has {} indices, expected {len} like the others",
                    m.len()
                );
            }
            flat.extend(m.iter().map(|&v| v as i64));
        }
    }
    Ok((flat, len))
}

impl Masks {
    /// `context[r][b]` and `target[j][b]`: the indices of mask r / j of image b, all of
    /// one length per kind, each below `num_patches`.
    pub fn new(
        device: &Arc<Device>,
        context: &[Vec<Vec<u32>>],
        target: &[Vec<Vec<u32>>],
        num_patches: usize,
    ) -> Result<Masks> {
        let batch = context.first().map_or(0, |m| m.len());
        let (nenc, npred) = (context.len(), target.len());
        let (ctx, kc) = stack("context", context, batch)?;
        let (tgt, kt) = stack("target", target, batch)?;
        if let Some(&bad) = ctx.iter().chain(&tgt).find(|&&v| v as usize >= num_patches) {
            bail!("mask index {bad} is out of range for {num_patches} patches");
        }
        let mut rows = Vec::with_capacity(npred * nenc * batch * kt);
        for j in 0..npred {
            for _ in 0..nenc {
                rows.extend_from_slice(&tgt[j * batch * kt..(j + 1) * batch * kt]);
            }
        }
        Ok(Masks {
            batch,
            nenc,
            npred,
            context: Indices::new(device, &[nenc * batch, kc], &ctx)?,
            target: Indices::new(device, &[npred * batch, kt], &tgt)?,
            target_rows: Indices::new(device, &[npred * nenc * batch, kt], &rows)?,
        })
    }
}
