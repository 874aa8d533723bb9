//! One I-JEPA update, written once: [`train_step`]. The trainer, `ijepa
//! check-reference` (the golden steps of the official code), `ijepa bench step` and the
//! criterion bench all call it, so the step that is checked is the step that trains.
//!
//! In order: the target path under `no_grad` (target encoder on the whole image,
//! parameter-free LayerNorm, gathered at the targets), the context encoder and the
//! predictor, the smooth-L1 loss, the backward pass, the loss and gradients averaged
//! over the ranks of a data-parallel run, a check that the loss is finite
//! (nothing is updated after one that is not), AdamW on the encoder and predictor,
//! then the EMA of the target encoder towards the updated encoder.
//!
//! Explained in the tour: docs/tour/09-predictor-loss-update.md.

use std::time::Instant;

use anyhow::{bail, Result};
use engine::ops::update::ema_update;
use engine::{backward, Gradients, Tensor};
use model::layers::NamedParams;
use model::{IJepa, Masks, StepOutputs};

use crate::adamw::AdamWOptimizer;
use crate::parallel::{average_gradients, mean_over_ranks, Collective};

/// What one update changes: the three networks and the optimizer's moments.
pub struct TrainState {
    pub model: IJepa,
    pub optimizer: AdamWOptimizer,
    /// (target encoder, encoder) parameters, paired by name once for every EMA.
    ema_pairs: (NamedParams, NamedParams),
}

impl TrainState {
    /// A fresh AdamW (torch defaults) over the model's trainable parameters, clipping
    /// the global gradient norm to `max_grad_norm` when given.
    pub fn new(model: IJepa, max_grad_norm: Option<f64>) -> Result<TrainState> {
        let mut optimizer = AdamWOptimizer::new(&model.trainable_params())?;
        optimizer.max_grad_norm = max_grad_norm;
        let (target, source) = (model.target_params(), model.encoder_params());
        if target.len() != source.len() || target.iter().zip(&source).any(|((t, _), (s, _))| t != s)
        {
            bail!("the target encoder's parameters do not pair by name with the encoder's");
        }
        Ok(TrainState {
            model,
            optimizer,
            ema_pairs: (target, source),
        })
    }
}

/// The hyper-parameters of one update: the schedules' values at its step, or a golden
/// step's fixed ones.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepHyper {
    pub lr: f64,
    /// Applied to the decaying parameter group only (see `adamw::decays`).
    pub weight_decay: f64,
    /// EMA momentum: target = momentum * target + (1 - momentum) * encoder.
    pub momentum: f64,
}

/// Seconds spent in each phase, each phase waited for (`train_step`'s `time_phases`).
#[derive(Clone, Copy, Debug, Default)]
pub struct PhaseTimes {
    pub forward: f64,
    pub backward: f64,
    /// AdamW and EMA.
    pub update: f64,
}

/// What one update computed.
pub struct StepResult {
    pub loss: f32,
    /// Context features, targets and predictions of the forward pass.
    pub outputs: StepOutputs,
    /// The gradients AdamW was given, before any clipping.
    pub grads: Gradients,
    /// The global gradient norm, when the optimizer clips.
    pub grad_norm: Option<f64>,
    /// The hyper-parameters the update applied.
    pub hyper: StepHyper,
    pub phases: Option<PhaseTimes>,
}

/// The loss of a step was not finite; the step updated nothing.
#[derive(Debug)]
pub struct NonFiniteLoss(pub f32);

impl std::fmt::Display for NonFiniteLoss {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "the loss became {}; nothing was updated", self.0)
    }
}

impl std::error::Error for NonFiniteLoss {}

/// One I-JEPA update of `state` on a batch: images [B, C, H, W] and its masks, this
/// process's share of the global batch of `world` (the whole batch for [`Single`](crate::parallel::Single)):
/// the loss reported is the mean over the ranks, and the gradients are averaged over
/// them before the optimiser, so every rank applies the same update. With
/// `time_phases`, the device is waited for after each phase and their times returned
/// (for benchmarks; a training run leaves the GPU running ahead).
pub fn train_step(
    state: &mut TrainState,
    images: &Tensor,
    masks: &Masks,
    hyper: StepHyper,
    world: &dyn Collective,
    time_phases: bool,
) -> Result<StepResult> {
    let device = images.device().clone();
    let mut clock = Instant::now();
    let mut lap = |wait: bool| {
        if wait {
            device.synchronize();
        }
        let secs = clock.elapsed().as_secs_f64();
        clock = Instant::now();
        secs
    };

    let outputs = state.model.forward(images, masks)?;
    let forward = lap(time_phases);
    let grads = backward(&outputs.loss)?;
    let loss = mean_over_ranks(world, outputs.loss.item());
    if !loss.is_finite() {
        return Err(NonFiniteLoss(loss).into());
    }
    if world.size() > 1 {
        average_gradients(world, &grads, &state.model.trainable_params())?;
    }
    let backward = lap(time_phases);
    let grad_norm = state
        .optimizer
        .step(&grads, hyper.lr as f32, hyper.weight_decay as f32)?;
    let (target, source) = &state.ema_pairs;
    for ((_, t), (_, s)) in target.iter().zip(source) {
        ema_update(t, s, hyper.momentum as f32)?;
    }
    let update = lap(time_phases);
    Ok(StepResult {
        loss,
        outputs,
        grads,
        grad_norm,
        hyper,
        phases: time_phases.then_some(PhaseTimes {
            forward,
            backward,
            update,
        }),
    })
}
