//! One I-JEPA update, written once: [`train_step`]. The trainer, `ijepa
//! check-reference` (the golden steps of the official code), `ijepa bench step` and the
//! criterion bench all call it, so the step that is checked is the step that trains.
//!
//! In order, the forward in the state's precision (`engine::precision`): the target
//! path under `no_grad` (target encoder on the whole image, parameter-free LayerNorm,
//! gathered at the targets), the context encoder and the predictor, the smooth-L1
//! loss, the backward pass (in mixed precision from the loss times the loss scale,
//! `loss_scale`), the loss and gradients averaged over the ranks of a data-parallel
//! run, a check that the loss is finite (nothing is updated after one that is not), in
//! mixed precision the loss scaler's check of the gradients (an overflow skips AdamW),
//! AdamW on the encoder and predictor, then the EMA of the target encoder towards the
//! encoder (after a skipped update too, as the official loop does).
//!
//! Explained in the tour: docs/tour/09-predictor-loss-update.md.

use std::time::Instant;

use anyhow::{bail, Result};
use engine::ops::update::{ema_update, find_non_finite};
use engine::{
    autocast, backward_scaled, with_f16_copies, Gradients, PackedTensors, Precision, Tensor,
};
use model::{IJepa, Masks, StepOutputs};

use crate::adamw::{packing_order, AdamWOptimizer};
use crate::loss_scale::LossScaler;
use crate::parallel::{average_gradients, mean_over_ranks, Collective};

/// What one update changes: the three networks and the optimizer's moments.
pub struct TrainState {
    pub model: IJepa,
    /// Packs the encoder's parameters (group 0) and the predictor's (group 1).
    pub optimizer: AdamWOptimizer,
    /// The target encoder's parameters packed exactly as the encoder's group, so that
    /// the EMA is one dispatch per bucket.
    target: PackedTensors,
    /// The precision of the forward pass (the backward follows it).
    pub precision: Precision,
    /// The loss scale of mixed precision (unused in f32).
    pub loss_scaler: LossScaler,
}

impl TrainState {
    /// A fresh AdamW (torch defaults) over the model's trainable parameters, clipping
    /// the global gradient norm to `max_grad_norm` when given. The encoder, predictor
    /// and target encoder parameters move into packed storage.
    pub fn new(model: IJepa, max_grad_norm: Option<f64>) -> Result<TrainState> {
        let (encoder, predictor): (Vec<_>, Vec<_>) = model
            .trainable_params()
            .into_iter()
            .partition(|(name, _)| name.starts_with("encoder."));
        let mut optimizer = AdamWOptimizer::new(&[encoder, predictor])?;
        optimizer.max_grad_norm = max_grad_norm;
        // The fixed position table is neither trained nor averaged.
        let trained = |params: Vec<(String, Tensor)>| {
            params
                .into_iter()
                .filter(|(name, _)| name != "pos_embed")
                .collect::<Vec<_>>()
        };
        let (target, source) = (
            trained(model.target_params()),
            trained(model.encoder_params()),
        );
        if target.len() != source.len() || target.iter().zip(&source).any(|((t, _), (s, _))| t != s)
        {
            bail!("the target encoder's parameters do not pair by name with the encoder's");
        }
        let target: Vec<Tensor> = packing_order(&target).into_iter().map(|(_, t)| t).collect();
        let target = PackedTensors::adopt(&target)?;
        let source = optimizer.parameter_buckets(0);
        if target.placements != source.placements {
            bail!("the target encoder does not pack as the encoder does");
        }
        Ok(TrainState {
            model,
            optimizer,
            target,
            precision: Precision::F32,
            loss_scaler: LossScaler::default(),
        })
    }

    /// The training forward in the state's precision. In mixed precision every
    /// parameter (encoder, predictor, target encoder) is rounded to f16 once, one cast
    /// per packed bucket, and the linear layers take those copies instead of casting
    /// their weights one by one. The target encoder's copies are made for its forward
    /// and dropped after it, before the context encoder's activations build up.
    pub fn forward(&self, images: &Tensor, masks: &Masks) -> Result<StepOutputs> {
        let precision = self.precision;
        if precision == Precision::F32 {
            return autocast(precision, || self.model.forward(images, masks));
        }
        let target = with_f16_copies(f16_copies([&self.target])?, || {
            autocast(precision, || self.model.forward_target(images, masks))
        })?;
        with_f16_copies(f16_copies(self.optimizer.parameters())?, || {
            autocast(precision, || {
                self.model.forward_with_target(images, masks, target)
            })
        })
    }
}

/// Each member of `packed` with its f16 copy: one cast per bucket.
fn f16_copies<'a>(
    packed: impl IntoIterator<Item = &'a PackedTensors>,
) -> Result<Vec<(Tensor, Tensor)>> {
    let mut copies = Vec::new();
    for p in packed {
        copies.extend(p.members.iter().cloned().zip(p.to_f16()?));
    }
    Ok(copies)
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

/// Seconds spent in each phase, each phase waited for (`train_step`'s `time_phases`),
/// and the most bytes its tensors held at once.
#[derive(Clone, Copy, Debug, Default)]
pub struct PhaseTimes {
    pub forward: f64,
    pub backward: f64,
    /// AdamW and EMA.
    pub update: f64,
    /// Peak bytes in tensors in the forward, the backward (the gradients' loading and
    /// averaging included) and the update.
    pub peak_bytes: [u64; 3],
}

/// What one update computed.
pub struct StepResult {
    pub loss: f32,
    /// Context features, targets and predictions of the forward pass.
    pub outputs: StepOutputs,
    /// This process's gradients, before averaging over ranks and before clipping, times
    /// `loss_scale` when there is one.
    pub grads: Gradients,
    /// The scale the backward started from (mixed precision).
    pub loss_scale: Option<f32>,
    /// The scaled gradients overflowed: AdamW skipped this step (the EMA did not).
    pub skipped: bool,
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
    if time_phases {
        device.reset_memory_peaks();
    }
    // A phase's seconds and peak bytes in tensors (timed: waited for).
    let mut lap = |timed: bool| {
        if !timed {
            return (0.0, 0);
        }
        device.synchronize();
        let peak = device.memory_peaks().tensors;
        device.reset_memory_peaks();
        let secs = clock.elapsed().as_secs_f64();
        clock = Instant::now();
        (secs, peak)
    };

    let outputs = state.forward(images, masks)?;
    let forward = lap(time_phases);
    let loss_scale = (state.precision == Precision::Mixed).then_some(state.loss_scaler.scale);
    let scale = loss_scale.unwrap_or(1.0);
    let grads = backward_scaled(&outputs.loss, scale)?;
    state.optimizer.load_gradients(&grads)?;
    average_gradients(world, &state.optimizer.gradient_buckets())?;
    // The loss and, under loss scaling, the overflow flag come back in one readback.
    let overflow = match loss_scale {
        Some(_) => Some(find_non_finite(&state.optimizer.gradient_buckets())?),
        None => None,
    };
    let read = Tensor::to_vecs(
        &[&outputs.loss]
            .into_iter()
            .chain(&overflow)
            .collect::<Vec<_>>(),
    );
    let loss = mean_over_ranks(world, read[0][0]);
    if !loss.is_finite() {
        return Err(NonFiniteLoss(loss).into());
    }
    let skipped = read.get(1).is_some_and(|flag| flag[0] != 0.0);
    if loss_scale.is_some() {
        state.loss_scaler.update(skipped);
    }
    let backward = lap(time_phases);
    let grad_norm = if skipped {
        None
    } else {
        let (lr, wd) = (hyper.lr as f32, hyper.weight_decay as f32);
        state.optimizer.update(lr, wd, scale)?
    };
    let source = state.optimizer.parameter_buckets(0);
    for (t, s) in state.target.buckets.iter().zip(&source.buckets) {
        ema_update(t, s, hyper.momentum as f32)?;
    }
    let update = lap(time_phases);
    Ok(StepResult {
        loss,
        outputs,
        grads,
        loss_scale,
        skipped,
        grad_norm,
        hyper,
        phases: time_phases.then_some(PhaseTimes {
            forward: forward.0,
            backward: backward.0,
            update: update.0,
            peak_bytes: [forward.1, backward.1, update.1],
        }),
    })
}
