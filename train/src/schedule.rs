//! The official I-JEPA schedules, all functions of the step (counted from 0).

use std::f64::consts::PI;

use serde::{Deserialize, Serialize};

use crate::step::StepHyper;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Schedules {
    pub total_steps: usize,
    pub warmup_steps: usize,
    pub start_lr: f64,
    pub lr: f64,
    pub final_lr: f64,
    pub weight_decay: f64,
    pub final_weight_decay: f64,
    pub ema_start: f64,
    pub ema_end: f64,
}

impl Schedules {
    /// The hyper-parameters of update `step`.
    pub fn at(&self, step: usize) -> StepHyper {
        StepHyper {
            lr: self.lr(step),
            weight_decay: self.weight_decay(step),
            momentum: self.momentum(step),
        }
    }

    /// Learning rate of update `step`: linear warm-up from start_lr to lr, then cosine
    /// to final_lr (`WarmupCosineSchedule`, which advances before its first update).
    pub fn lr(&self, step: usize) -> f64 {
        let s = step + 1;
        if s < self.warmup_steps {
            self.start_lr + (s as f64 / self.warmup_steps as f64) * (self.lr - self.start_lr)
        } else {
            let progress = (s - self.warmup_steps) as f64
                / (self.total_steps.saturating_sub(self.warmup_steps)).max(1) as f64;
            (self.final_lr + (self.lr - self.final_lr) * 0.5 * (1.0 + (PI * progress).cos()))
                .max(self.final_lr)
        }
    }

    /// Weight decay of update `step`: cosine from weight_decay to final_weight_decay
    /// (`CosineWDSchedule`, also advanced before its first update).
    pub fn weight_decay(&self, step: usize) -> f64 {
        let progress = (step + 1) as f64 / self.total_steps.max(1) as f64;
        let wd = self.final_weight_decay
            + (self.weight_decay - self.final_weight_decay) * 0.5 * (1.0 + (PI * progress).cos());
        if self.final_weight_decay <= self.weight_decay {
            wd.max(self.final_weight_decay)
        } else {
            wd.min(self.final_weight_decay)
        }
    }

    /// EMA momentum after update `step`: linear from ema_start to ema_end over training.
    pub fn momentum(&self, step: usize) -> f64 {
        self.ema_start
            + step as f64 * (self.ema_end - self.ema_start) / self.total_steps.max(1) as f64
    }
}
