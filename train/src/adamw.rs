//! AdamW over named parameters with the official parameter groups.
//!
//! Explained in the tour: docs/tour/09-predictor-loss-update.md.

use anyhow::{bail, Result};
use engine::ops::update::{adamw_update, AdamW};
use engine::{ops, Gradients, Tensor};

/// One trained tensor and its moments.
struct Slot {
    name: String,
    param: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    decay: bool,
}

/// Whether a parameter gets weight decay: not biases and not 1-D tensors (the
/// official groups: `'bias' not in name and len(p.shape) != 1`).
pub fn decays(name: &str, shape: &[usize]) -> bool {
    !name.contains("bias") && shape.len() != 1
}

pub struct AdamWOptimizer {
    slots: Vec<Slot>,
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
    /// Betas (0.9, 0.999), eps 1e-8 (torch defaults).
    pub fn new(params: &[(String, Tensor)]) -> Result<AdamWOptimizer> {
        let slots = params
            .iter()
            .map(|(name, p)| {
                Ok(Slot {
                    name: name.clone(),
                    param: p.clone(),
                    exp_avg: Tensor::zeros(p.device(), p.shape())?,
                    exp_avg_sq: Tensor::zeros(p.device(), p.shape())?,
                    decay: decays(name, p.shape()),
                })
            })
            .collect::<Result<_>>()?;
        Ok(AdamWOptimizer {
            slots,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            max_grad_norm: None,
            step: 0,
        })
    }

    /// One update with learning rate `lr` and weight decay `weight_decay` (applied to
    /// the decaying group only). Every parameter must have a gradient. With
    /// `max_grad_norm` set, returns the gradient norm before clipping.
    pub fn step(&mut self, grads: &Gradients, lr: f32, weight_decay: f32) -> Result<Option<f64>> {
        let mut slot_grads = Vec::with_capacity(self.slots.len());
        for s in &self.slots {
            let Some(g) = grads.get(&s.param) else {
                bail!("no gradient for `{}`: it does not reach the loss", s.name);
            };
            slot_grads.push(g);
        }
        let (norm, grad_scale) = match self.max_grad_norm {
            Some(max_norm) => {
                let norm = global_norm(&slot_grads)?;
                (Some(norm), (max_norm / (norm + 1e-6)).min(1.0) as f32)
            }
            None => (None, 1.0),
        };
        self.step += 1;
        for (s, g) in self.slots.iter().zip(slot_grads) {
            let h = AdamW {
                lr,
                beta1: self.beta1,
                beta2: self.beta2,
                eps: self.eps,
                weight_decay: if s.decay { weight_decay } else { 0.0 },
                grad_scale,
            };
            adamw_update(&h, self.step, &s.param, g, &s.exp_avg, &s.exp_avg_sq)?;
        }
        Ok(norm)
    }

    /// (name, exp_avg, exp_avg_sq) of every slot, for checkpoints.
    pub fn moments(&self) -> Vec<(&str, &Tensor, &Tensor)> {
        self.slots
            .iter()
            .map(|s| (s.name.as_str(), &s.exp_avg, &s.exp_avg_sq))
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
