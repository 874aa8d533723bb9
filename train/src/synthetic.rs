//! Training steps on synthetic images of a configuration's geometry, for `ijepa bench
//! step` and the criterion bench: the configuration's model, masks and schedules, and
//! [`train_step`] itself, without loading any data.

use std::sync::Arc;

use anyhow::Result;
use engine::{Device, Tensor};
use model::{IJepa, Masks};

use crate::config::PretrainConfig;
use crate::multiblock::MaskCollator;
use crate::schedule::Schedules;
use crate::step::{train_step, StepResult, TrainState};

/// A tensor of `shape` holding a fixed, non-trivial pattern in [-0.5, 0.5).
pub fn synthetic(device: &Arc<Device>, shape: &[usize]) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    Ok(Tensor::from_slice(device, shape, &data)?)
}

/// A model of `config` training on one synthetic batch, with fresh masks each step.
pub struct SyntheticRun {
    pub config: PretrainConfig,
    pub state: TrainState,
    pub images: Tensor,
    collator: MaskCollator,
    schedules: Schedules,
    num_patches: usize,
    device: Arc<Device>,
}

impl SyntheticRun {
    /// The schedules span `total_steps`.
    pub fn new(
        device: &Arc<Device>,
        config: PretrainConfig,
        total_steps: usize,
    ) -> Result<SyntheticRun> {
        config.validate()?;
        let (channels, size) = config.data.geometry()?;
        let model_config = config.model_config(channels, size)?;
        let grid = model_config.encoder.grid();
        let mut state = TrainState::new(
            IJepa::new(device, &model_config, config.seed)?,
            config.max_grad_norm(),
        )?;
        state.precision = config.precision;
        Ok(SyntheticRun {
            state,
            images: synthetic(device, &[config.batch_size, channels, size, size])?,
            collator: MaskCollator::new(config.mask_config(grid), config.seed)?,
            schedules: config.schedules(total_steps),
            num_patches: model_config.encoder.num_patches(),
            config,
            device: device.clone(),
        })
    }

    /// The masks of step `step`.
    pub fn masks(&self, step: usize) -> Result<Masks> {
        let m = self.collator.sample(step as u64, self.config.batch_size)?;
        Masks::new(&self.device, &m.context, &m.target, self.num_patches)
    }

    /// Step `step` of the run (masks and hyper-parameters of that step).
    pub fn step(&mut self, step: usize, time_phases: bool) -> Result<StepResult> {
        let masks = self.masks(step)?;
        train_step(
            &mut self.state,
            &self.images,
            &masks,
            self.schedules.at(step),
            &crate::parallel::Single,
            time_phases,
        )
    }
}
