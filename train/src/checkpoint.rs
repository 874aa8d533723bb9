//! The checkpoint of a pretraining run, its format in one place: written by the
//! trainer, read back by `--resume` and by the probe.
//!
//! A safetensors file holding every parameter under its official `state_dict()` name
//! (`encoder.*`, `predictor.*`, `target_encoder.*`), the AdamW moments under
//! `optim.exp_avg.<name>` and `optim.exp_avg_sq.<name>`, and as string metadata the
//! step reached, the pretraining and model configurations (JSON) and the per-channel
//! (mean, std) the images were normalised with (JSON), the number of data-parallel
//! ranks that trained it (absent: one), AdamW's own count of updates (absent: the step;
//! fewer where mixed precision skipped some) and the mixed-precision loss scale and its
//! growth tracker (absent: a fresh scaler's).

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use model::weights::{check_finite, write_safetensors, SafetensorsFile};
use model::IjepaConfig;

use crate::config::PretrainConfig;
use crate::step::TrainState;

/// The checkpoint's file name in a run directory.
pub const CHECKPOINT: &str = "checkpoint.safetensors";

const STEP: &str = "step";
const PRETRAIN_CONFIG: &str = "pretrain_config";
const MODEL_CONFIG: &str = "model_config";
const CHANNEL_STATS: &str = "channel_stats";
const RANKS: &str = "ranks";
const OPTIMIZER_STEP: &str = "optimizer_step";
const LOSS_SCALE: &str = "loss_scale";
const LOSS_SCALE_GROWTH_TRACKER: &str = "loss_scale_growth_tracker";
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
    /// Data-parallel processes of the run (the global batch is `ranks` x batch_size).
    pub ranks: usize,
}

/// The state about to be checkpointed holds a NaN or an infinity: nothing was written.
#[derive(Debug, thiserror::Error)]
#[error("`{tensor}` holds {value} at element {index}")]
pub struct NonFiniteState {
    pub tensor: String,
    pub value: f32,
    pub index: usize,
}

/// Write `state`'s parameters and moments with `meta`, atomically (a temporary file,
/// then a rename). A state with any non-finite value is refused ([`NonFiniteState`])
/// and the file at `path` is left as it was: a checkpoint always holds a state that
/// can be resumed and probed.
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
    let scaler = &state.loss_scaler;
    let state_entries = [
        (OPTIMIZER_STEP, state.optimizer.step.to_string()),
        (LOSS_SCALE, scaler.scale.to_string()),
        (LOSS_SCALE_GROWTH_TRACKER, scaler.growth_tracker.to_string()),
    ];
    write(path, &tensors, meta, &state_entries)
}

/// Write named tensors (parameters, and moments when resuming is to be possible) with
/// `meta` in the checkpoint format, atomically; any non-finite value is refused
/// ([`NonFiniteState`]) and nothing is written.
pub fn save_tensors(
    path: &Path,
    tensors: &[(String, Vec<f32>, Vec<usize>)],
    meta: &CheckpointMeta,
) -> Result<()> {
    write(path, tensors, meta, &[])
}

/// `save_tensors`, with `state_entries` of the training state added to the metadata.
fn write(
    path: &Path,
    tensors: &[(String, Vec<f32>, Vec<usize>)],
    meta: &CheckpointMeta,
    state_entries: &[(&str, String)],
) -> Result<()> {
    for (name, data, _) in tensors {
        if let Some((index, &value)) = data.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(NonFiniteState {
                tensor: name.clone(),
                value,
                index,
            }
            .into());
        }
    }
    let mut metadata = HashMap::from([
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
        (RANKS.to_string(), meta.ranks.to_string()),
    ]);
    metadata.extend(
        state_entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone())),
    );
    write_safetensors(path, tensors, metadata)
}

/// A checkpoint read from disk, its metadata parsed and checked.
pub struct Checkpoint {
    pub file: SafetensorsFile,
    pub meta: CheckpointMeta,
    path: String,
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
        let step = get(STEP)?;
        let step = step.parse().map_err(|_| {
            anyhow::anyhow!(
                "{name}: `{STEP}` in its metadata is {step:?}, expected a whole number of steps"
            )
        })?;
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
        let ranks = match raw.get(RANKS) {
            None => 1,
            Some(text) => match text.parse() {
                Ok(n) if n > 0 => n,
                _ => bail!(
                    "{name}: `{RANKS}` in its metadata is {text:?}, expected a whole number of processes, at least 1"
                ),
            },
        };
        Ok(Checkpoint {
            path: name.to_string(),
            file,
            meta: CheckpointMeta {
                step,
                pretrain,
                model,
                channel_stats,
                ranks,
            },
        })
    }

    /// Every parameter and moment of the file into `state` (whose architecture must
    /// match), for an exact resume.
    pub fn load_into(&self, state: &mut TrainState) -> Result<()> {
        self.file.load_into("", &state.model.named_params())?;
        for (name, m, v) in state.optimizer.moments() {
            for (prefix, t) in [(EXP_AVG, m), (EXP_AVG_SQ, v)] {
                let full = format!("{prefix}{name}");
                let (data, _) = self.file.f32(&full)?;
                check_finite(&self.path, &full, &data)?;
                t.write(&data)?;
            }
        }
        let raw = self.file.metadata();
        let count = |key: &str| -> Result<Option<u32>> {
            raw.get(key)
                .map(|text| {
                    text.parse().map_err(|_| {
                        anyhow::anyhow!(
                            "{}: `{key}` in its metadata is {text:?}, expected a whole number",
                            self.path
                        )
                    })
                })
                .transpose()
        };
        state.optimizer.step = count(OPTIMIZER_STEP)?.unwrap_or(self.meta.step as u32);
        if let Some(tracker) = count(LOSS_SCALE_GROWTH_TRACKER)? {
            state.loss_scaler.growth_tracker = tracker;
        }
        if let Some(text) = raw.get(LOSS_SCALE) {
            state.loss_scaler.scale = match text.parse::<f32>() {
                Ok(scale) if scale.is_finite() && scale > 0.0 => scale,
                _ => bail!(
                    "{}: `{LOSS_SCALE}` in its metadata is {text:?}, expected a positive number",
                    self.path
                ),
            };
        }
        Ok(())
    }
}
