//! The multi-block mask collator of I-JEPA.
//!
//! Per batch, one target block size and one context block size are drawn (each from a
//! single uniform number that sets both its scale and its aspect ratio, as the
//! official collator does). Per image, `npred` target blocks are placed uniformly at
//! random, then `nenc` context blocks, each placed uniformly among the positions that
//! keep more than `min_keep` patches outside every target block. Masks of one kind are
//! truncated to the shortest in the batch so that they stack.
//!
//! Two faults of the official code are not copied: block corners range over every
//! position where the block fits (the official range excludes the last one, so the
//! last row and column are never covered), and settings that cannot produce a valid
//! context are reported as an error instead of looping or silently dropping the
//! disjointness constraint.
//!
//! Explained in the tour: docs/tour/08-masks.md.

use anyhow::{bail, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Clone, Debug, PartialEq)]
pub struct MaskConfig {
    /// Patches per side of the (square) grid.
    pub grid: usize,
    pub nenc: usize,
    pub npred: usize,
    pub enc_scale: (f64, f64),
    pub pred_scale: (f64, f64),
    pub pred_aspect: (f64, f64),
    /// A mask must keep more than this many patches.
    pub min_keep: usize,
    /// Let context blocks overlap targets (the official option; off by default).
    pub allow_overlap: bool,
}

impl MaskConfig {
    /// The official I-JEPA settings on a grid of `grid` x `grid` patches.
    pub fn official(grid: usize) -> MaskConfig {
        MaskConfig {
            grid,
            nenc: 1,
            npred: 4,
            enc_scale: (0.85, 1.0),
            pred_scale: (0.15, 0.2),
            pred_aspect: (0.75, 1.5),
            min_keep: 4,
            allow_overlap: false,
        }
    }
}

/// A block of patches: rows top..top+h, columns left..left+w.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PatchBlock {
    pub top: usize,
    pub left: usize,
    pub h: usize,
    pub w: usize,
}

impl PatchBlock {
    pub fn contains(&self, row: usize, col: usize) -> bool {
        (self.top..self.top + self.h).contains(&row)
            && (self.left..self.left + self.w).contains(&col)
    }
}

/// One batch of masks: indices row-major over the grid, ascending.
#[derive(Clone, Debug)]
pub struct MaskBatch {
    /// context[r][b]: context mask r of image b (truncated to the batch's shortest).
    pub context: Vec<Vec<Vec<u32>>>,
    /// target[j][b]: target mask j of image b (truncated likewise).
    pub target: Vec<Vec<Vec<u32>>>,
    /// The blocks the masks were cut from, per image: targets then contexts.
    pub target_blocks: Vec<Vec<PatchBlock>>,
    pub context_blocks: Vec<Vec<PatchBlock>>,
}

impl MaskBatch {
    /// The masks of the images `range` of the batch (a process's share), with the
    /// lengths the whole batch was truncated to.
    pub fn images(self, range: std::ops::Range<usize>) -> MaskBatch {
        let part = |per_mask: Vec<Vec<Vec<u32>>>| -> Vec<Vec<Vec<u32>>> {
            per_mask
                .into_iter()
                .map(|m| m[range.clone()].to_vec())
                .collect()
        };
        MaskBatch {
            context: part(self.context),
            target: part(self.target),
            target_blocks: self.target_blocks[range.clone()].to_vec(),
            context_blocks: self.context_blocks[range].to_vec(),
        }
    }
}

pub struct MaskCollator {
    config: MaskConfig,
    seed: u64,
}

/// Attempts at re-drawing an image's targets when no context position is valid.
const TARGET_REDRAWS: usize = 200;

impl MaskCollator {
    /// Check the settings, including a dry run of many batches, so that impossible
    /// settings are refused before training starts.
    pub fn new(config: MaskConfig, seed: u64) -> Result<MaskCollator> {
        let c = &config;
        if c.grid == 0 || c.nenc == 0 || c.npred == 0 {
            bail!(
                "masks: grid, nenc and npred must be positive (got {}, {}, {})",
                c.grid,
                c.nenc,
                c.npred
            );
        }
        for (name, (lo, hi)) in [
            ("enc_scale", c.enc_scale),
            ("pred_scale", c.pred_scale),
            ("pred_aspect", c.pred_aspect),
        ] {
            if !(lo > 0.0 && lo <= hi && (name == "pred_aspect" || hi <= 1.0)) {
                bail!("masks: {name} ({lo}, {hi}) is not a valid range");
            }
        }
        let collator = MaskCollator { config, seed };
        for r in (0..=100).map(|i| i as f64 / 100.0) {
            for (kind, (h, w)) in [
                ("target", collator.pred_size(r)),
                ("context", collator.enc_size(r)),
            ] {
                if h * w <= collator.config.min_keep {
                    bail!(
                        "masks: a {kind} block can be {h}x{w} patches on a {g}x{g} grid, not more than min_keep = {}; \
                         raise the {kind} scale or lower min_keep",
                        collator.config.min_keep,
                        g = collator.config.grid
                    );
                }
            }
        }
        for step in 0..64 {
            collator
                .sample(u64::MAX - step, 8)
                .map_err(|e| anyhow::anyhow!("masks: these settings fail in a dry run: {e}"))?;
        }
        Ok(collator)
    }

    /// Block size for the uniform draw r, as the official `_sample_block_size`: scale
    /// and aspect ratio both interpolate with the same r; Python's round (ties to
    /// even); each side kept below the grid size.
    fn block_size(&self, r: f64, scale: (f64, f64), aspect: (f64, f64)) -> (usize, usize) {
        let g = self.config.grid;
        let max_keep = ((g * g) as f64 * (scale.0 + r * (scale.1 - scale.0))) as usize;
        let ar = aspect.0 + r * (aspect.1 - aspect.0);
        let h = (max_keep as f64 * ar).sqrt().round_ties_even() as usize;
        let w = (max_keep as f64 / ar).sqrt().round_ties_even() as usize;
        (h.min(g - 1), w.min(g - 1))
    }

    pub fn pred_size(&self, r: f64) -> (usize, usize) {
        self.block_size(r, self.config.pred_scale, self.config.pred_aspect)
    }

    pub fn enc_size(&self, r: f64) -> (usize, usize) {
        self.block_size(r, self.config.enc_scale, (1.0, 1.0))
    }

    /// The masks of batch number `step` for `batch` images; the same (seed, step)
    /// always gives the same masks, so a resumed run draws what it would have drawn.
    pub fn sample(&self, step: u64, batch: usize) -> Result<MaskBatch> {
        let c = &self.config;
        let mut rng = StdRng::seed_from_u64(self.seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let (ph, pw) = self.pred_size(rng.random());
        let (eh, ew) = self.enc_size(rng.random());
        let g = c.grid;
        let place = |rng: &mut StdRng, h: usize, w: usize| PatchBlock {
            top: rng.random_range(0..=g - h),
            left: rng.random_range(0..=g - w),
            h,
            w,
        };
        let mut target_blocks = Vec::with_capacity(batch);
        let mut context_blocks = Vec::with_capacity(batch);
        for b in 0..batch {
            let mut found = None;
            for _ in 0..TARGET_REDRAWS {
                let targets: Vec<PatchBlock> =
                    (0..c.npred).map(|_| place(&mut rng, ph, pw)).collect();
                let contexts: Option<Vec<PatchBlock>> = (0..c.nenc)
                    .map(|_| self.place_context(&mut rng, eh, ew, &targets))
                    .collect();
                if let Some(contexts) = contexts {
                    found = Some((targets, contexts));
                    break;
                }
            }
            let Some((targets, contexts)) = found else {
                bail!(
                    "image {b}: no {eh}x{ew} context block keeps more than {} patches outside {} targets of {ph}x{pw} \
                     on a {g}x{g} grid ({TARGET_REDRAWS} target draws tried)",
                    c.min_keep,
                    c.npred
                );
            };
            target_blocks.push(targets);
            context_blocks.push(contexts);
        }
        let cells = |block: &PatchBlock, exclude: &[PatchBlock]| -> Vec<u32> {
            let mut v = Vec::new();
            for row in block.top..block.top + block.h {
                for col in block.left..block.left + block.w {
                    if !exclude.iter().any(|t| t.contains(row, col)) {
                        v.push((row * g + col) as u32);
                    }
                }
            }
            v
        };
        let target: Vec<Vec<Vec<u32>>> = (0..c.npred)
            .map(|j| target_blocks.iter().map(|t| cells(&t[j], &[])).collect())
            .collect();
        let context: Vec<Vec<Vec<u32>>> = (0..c.nenc)
            .map(|r| {
                (0..batch)
                    .map(|b| {
                        let exclude: &[PatchBlock] = if c.allow_overlap {
                            &[]
                        } else {
                            &target_blocks[b]
                        };
                        cells(&context_blocks[b][r], exclude)
                    })
                    .collect()
            })
            .collect();
        Ok(MaskBatch {
            context: truncate(context),
            target: truncate(target),
            target_blocks,
            context_blocks,
        })
    }

    /// A context block placed uniformly among the positions that keep more than
    /// min_keep patches outside the targets (all positions when overlap is allowed).
    fn place_context(
        &self,
        rng: &mut StdRng,
        h: usize,
        w: usize,
        targets: &[PatchBlock],
    ) -> Option<PatchBlock> {
        let g = self.config.grid;
        let mut valid = Vec::new();
        for top in 0..=g - h {
            for left in 0..=g - w {
                let block = PatchBlock { top, left, h, w };
                let kept = if self.config.allow_overlap {
                    h * w
                } else {
                    (top..top + h)
                        .flat_map(|row| (left..left + w).map(move |col| (row, col)))
                        .filter(|&(row, col)| !targets.iter().any(|t| t.contains(row, col)))
                        .count()
                };
                if kept > self.config.min_keep {
                    valid.push(block);
                }
            }
        }
        (!valid.is_empty()).then(|| valid[rng.random_range(0..valid.len())])
    }
}

/// Cut every mask to the shortest length in the batch (keeping the lowest indices).
fn truncate(mut masks: Vec<Vec<Vec<u32>>>) -> Vec<Vec<Vec<u32>>> {
    let shortest = masks.iter().flatten().map(|m| m.len()).min().unwrap_or(0);
    for m in masks.iter_mut().flatten() {
        m.truncate(shortest);
    }
    masks
}
