//! AdamW over named parameters with the official parameter groups, as a multi-tensor
//! update: each group of parameters (the encoder's, the predictor's) is packed into
//! shared buffers with its gradients and moments, so one step is a few dispatches
//! (one per bucket) instead of one per parameter.
//!
//! Explained in the tour: docs/tour/09-predictor-loss-update.md.

use anyhow::{bail, Result};
use engine::ops::update::{adamw_update, AdamW};
use engine::{ops, Gradients, PackedTensors, Tensor};

/// Whether a parameter gets weight decay: not biases and not 1-D tensors (the
/// official groups: `'bias' not in name and len(p.shape) != 1`).
pub fn decays(name: &str, shape: &[usize]) -> bool {
    !name.contains("bias") && shape.len() != 1
}

/// `params` in packing order: those without weight decay first, then those with it
/// (each in the given order), so the decaying ones are a suffix of every bucket.
pub fn packing_order(params: &[(String, Tensor)]) -> Vec<(String, Tensor)> {
    let (mut order, decaying): (Vec<_>, Vec<_>) = params
        .iter()
        .cloned()
        .partition(|(name, p)| !decays(name, p.shape()));
    order.extend(decaying);
    order
}

/// Parameters packed together, in `packing_order`, with their gradients and moments
/// packed the same way.
struct Group {
    names: Vec<String>,
    /// The model's own handles (the tape knows their gradients), now in `params`.
    tensors: Vec<Tensor>,
    params: PackedTensors,
    grads: PackedTensors,
    exp_avg: PackedTensors,
    exp_avg_sq: PackedTensors,
    /// Per bucket, the element where the decaying parameters start.
    decay_from: Vec<usize>,
}

impl Group {
    fn new(params: &[(String, Tensor)]) -> Result<Group> {
        let ordered = packing_order(params);
        let tensors: Vec<Tensor> = ordered.iter().map(|(_, p)| p.clone()).collect();
        let packed = PackedTensors::adopt(&tensors)?;
        let device = tensors[0].device();
        let shapes: Vec<&[usize]> = tensors.iter().map(|t| t.shape()).collect();
        let zeros = || PackedTensors::zeros(device, &shapes);
        let (grads, exp_avg, exp_avg_sq) = (zeros()?, zeros()?, zeros()?);
        let mut decay_from: Vec<usize> = packed.buckets.iter().map(|b| b.numel()).collect();
        for ((name, p), &(bucket, start)) in ordered.iter().zip(&packed.placements).rev() {
            if decays(name, p.shape()) {
                decay_from[bucket] = start;
            }
        }
        Ok(Group {
            names: ordered.into_iter().map(|(name, _)| name).collect(),
            tensors,
            params: packed,
            grads,
            exp_avg,
            exp_avg_sq,
            decay_from,
        })
    }
}

pub struct AdamWOptimizer {
    groups: Vec<Group>,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// Clip the global L2 norm of the gradients to this before each update (torch
    /// `clip_grad_norm_`); `None` leaves them as they are.
    pub max_grad_norm: Option<f64>,
    /// Steps taken so far.
    pub step: u32,
}

impl AdamWOptimizer {
    /// Betas (0.9, 0.999), eps 1e-8 (torch defaults), over `groups` of named
    /// parameters. Each group's parameters move into packed storage (every handle on
    /// them follows), so they must not share storage with anything else.
    pub fn new(groups: &[Vec<(String, Tensor)>]) -> Result<AdamWOptimizer> {
        let groups = groups
            .iter()
            .filter(|g| !g.is_empty())
            .map(|g| Group::new(g))
            .collect::<Result<_>>()?;
        Ok(AdamWOptimizer {
            groups,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            max_grad_norm: None,
            step: 0,
        })
    }

    /// Copy every parameter's gradient into the packed gradient storage (buffer copies,
    /// no kernels). Every parameter must have one.
    pub fn load_gradients(&self, grads: &Gradients) -> Result<()> {
        for group in &self.groups {
            for ((name, param), slot) in group
                .names
                .iter()
                .zip(&group.tensors)
                .zip(&group.grads.members)
            {
                let Some(g) = grads.get(param) else {
                    bail!("no gradient for `{name}`: it does not reach the loss");
                };
                slot.copy_from(g)?;
            }
        }
        Ok(())
    }

    /// The packed gradients (every bucket of every group), for averaging over ranks.
    pub fn gradient_buckets(&self) -> Vec<&Tensor> {
        self.groups.iter().flat_map(|g| &g.grads.buckets).collect()
    }

    /// The packed parameters of group `group`, bucket by bucket (for the EMA).
    pub fn parameter_buckets(&self, group: usize) -> &PackedTensors {
        &self.groups[group].params
    }

    /// The packed parameters of every group.
    pub fn parameters(&self) -> impl Iterator<Item = &PackedTensors> {
        self.groups.iter().map(|g| &g.params)
    }

    /// One update from the loaded gradients, those of the loss times `loss_scale` (1
    /// but in mixed precision), with learning rate `lr` and weight decay `weight_decay`
    /// (applied to the decaying parameters only). With `max_grad_norm` set, returns the
    /// norm of the loss's gradients before clipping.
    pub fn update(&mut self, lr: f32, weight_decay: f32, loss_scale: f32) -> Result<Option<f64>> {
        let unscale = 1.0 / loss_scale as f64;
        let (norm, clip) = match self.max_grad_norm {
            Some(max_norm) => {
                let norm = global_norm(&self.gradient_buckets())? * unscale;
                (Some(norm), (max_norm / (norm + 1e-6)).min(1.0))
            }
            None => (None, 1.0),
        };
        self.step += 1;
        let h = AdamW {
            lr,
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            weight_decay,
            grad_scale: (clip * unscale) as f32,
        };
        for group in &self.groups {
            for (b, param) in group.params.buckets.iter().enumerate() {
                adamw_update(
                    &h,
                    self.step,
                    param,
                    &group.grads.buckets[b],
                    &group.exp_avg.buckets[b],
                    &group.exp_avg_sq.buckets[b],
                    group.decay_from[b],
                )?;
            }
        }
        Ok(norm)
    }

    /// `load_gradients`, then `update` (gradients of the loss itself).
    pub fn step(&mut self, grads: &Gradients, lr: f32, weight_decay: f32) -> Result<Option<f64>> {
        self.load_gradients(grads)?;
        self.update(lr, weight_decay, 1.0)
    }

    /// (name, exp_avg, exp_avg_sq) of every parameter, for checkpoints.
    pub fn moments(&self) -> Vec<(&str, &Tensor, &Tensor)> {
        self.groups
            .iter()
            .flat_map(|g| {
                g.names
                    .iter()
                    .zip(g.exp_avg.members.iter().zip(&g.exp_avg_sq.members))
                    .map(|(name, (m, v))| (name.as_str(), m, v))
            })
            .collect()
    }
}

/// The L2 norm of all `grads` together, reduced on the device: one readback.
fn global_norm(grads: &[&Tensor]) -> Result<f64> {
    let sum_of_squares = engine::no_grad(|| -> engine::Result<Option<Tensor>> {
        let mut total: Option<Tensor> = None;
        for g in grads {
            let part = ops::sum(&ops::mul(g, g)?)?;
            total = Some(match total {
                Some(t) => ops::add(&t, &part)?,
                None => part,
            });
        }
        Ok(total)
    })?;
    Ok(sum_of_squares.map_or(0.0, |t| (t.item() as f64).sqrt()))
}
