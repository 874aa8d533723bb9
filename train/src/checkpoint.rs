//! The checkpoint of a pretraining run, its format in one place: written by the
//! trainer, read back by `--resume` and by the probe.
//!
//! A safetensors file holding every parameter under its official `state_dict()` name
//! (`encoder.*`, `predictor.*`, `target_encoder.*`), the AdamW moments under
//! `optim.exp_avg.<name>` and `optim.exp_avg_sq.<name>`, and as string metadata the
//! step reached, the pretraining and model configurations (JSON) and the per-channel
//! (mean, std) the images were normalised with (JSON).

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use model::weights::{write_safetensors, SafetensorsFile};
use model::IjepaConfig;

use crate::config::PretrainConfig;
use crate::step::TrainState;

/// The checkpoint's file name in a run directory.
pub const CHECKPOINT: &str = "checkpoint.safetensors";

const STEP: &str = "step";
const PRETRAIN_CONFIG: &str = "pretrain_config";
const MODEL_CONFIG: &str = "model_config";
const CHANNEL_STATS: &str = "channel_stats";
const EXP_AVG: &str = "optim.exp_avg.";
const EXP_AVG_SQ: &str = "optim.exp_avg_sq.";

/// The metadata of a checkpoint.
#[derive(Clone, Debug)]
pub struct CheckpointMeta {
    /// Updates taken: the step a resumed run continues from.
    pub step: usize,
    pub pretrain: PretrainConfig,
    pub model: IjepaConfig,
    /// Per-channel (mean, std) of the training pixels scaled to [0, 1].
    pub channel_stats: Vec<(f32, f32)>,
}

/// Write `state`'s parameters and moments with `meta`, atomically (a temporary file,
/// then a rename).
pub fn save(path: &Path, state: &TrainState, meta: &CheckpointMeta) -> Result<()> {
    let mut tensors: Vec<(String, Vec<f32>, Vec<usize>)> = state
        .model
        .named_params()
        .iter()
        .map(|(n, t)| (n.clone(), t.to_vec(), t.shape().to_vec()))
        .collect();
    for (name, m, v) in state.optimizer.moments() {
        for (prefix, t) in [(EXP_AVG, m), (EXP_AVG_SQ, v)] {
            tensors.push((format!("{prefix}{name}"), t.to_vec(), t.shape().to_vec()));
        }
    }
    let metadata = HashMap::from([
        (STEP.to_string(), meta.step.to_string()),
        (
            PRETRAIN_CONFIG.to_string(),
            serde_json::to_string(&meta.pretrain)?,
        ),
        (
            MODEL_CONFIG.to_string(),
            serde_json::to_string(&meta.model)?,
        ),
        (
            CHANNEL_STATS.to_string(),
            serde_json::to_string(&meta.channel_stats)?,
        ),
    ]);
    write_safetensors(path, &tensors, metadata)
}

/// A checkpoint read from disk, its metadata parsed and checked.
pub struct Checkpoint {
    pub file: SafetensorsFile,
    pub meta: CheckpointMeta,
}

impl Checkpoint {
    pub fn open(path: &Path) -> Result<Checkpoint> {
        let file = SafetensorsFile::open(path)?;
        let raw = file.metadata();
        let name = path.display();
        let get = |key: &str| {
            raw.get(key).with_context(|| {
                format!("{name}: not an ijepa checkpoint (no `{key}` in its metadata)")
            })
        };
        let step = get(STEP)?
            .parse()
            .with_context(|| format!("{name}: `{STEP}` is not a step count"))?;
        let pretrain: PretrainConfig = serde_json::from_str(get(PRETRAIN_CONFIG)?)
            .with_context(|| format!("{name}: bad `{PRETRAIN_CONFIG}`"))?;
        let model: IjepaConfig = serde_json::from_str(get(MODEL_CONFIG)?)
            .with_context(|| format!("{name}: bad `{MODEL_CONFIG}`"))?;
        let channel_stats: Vec<(f32, f32)> = serde_json::from_str(get(CHANNEL_STATS)?)
            .with_context(|| format!("{name}: bad `{CHANNEL_STATS}`"))?;
        if channel_stats.len() != model.encoder.in_chans {
            bail!(
                "{name}: `{CHANNEL_STATS}` holds {} channel(s), the model takes {}",
                channel_stats.len(),
                model.encoder.in_chans
            );
        }
        Ok(Checkpoint {
            file,
            meta: CheckpointMeta {
                step,
                pretrain,
                model,
                channel_stats,
            },
        })
    }

    /// Every parameter and moment of the file into `state` (whose architecture must
    /// match), for an exact resume.
    pub fn load_into(&self, state: &mut TrainState) -> Result<()> {
        self.file.load_into("", &state.model.named_params())?;
        for (name, m, v) in state.optimizer.moments() {
            for (prefix, t) in [(EXP_AVG, m), (EXP_AVG_SQ, v)] {
                let (data, _) = self.file.f32(&format!("{prefix}{name}"))?;
                t.write(&data)?;
            }
        }
        state.optimizer.step = self.meta.step as u32;
        Ok(())
    }
}
