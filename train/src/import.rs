//! Official I-JEPA checkpoints (the `torch.save` files of the official code, such as
//! `IN1K-vit.h.14-300e.pth.tar`) into ours: the three state dicts read without Python,
//! DDP's `module.` prefix stripped, the architecture inferred from the shapes, and a
//! checkpoint written that `probe`, `embed` and `pretrain --init` take.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{bail, Context, Result};
use model::config::{vit_preset, PRESETS};
use model::torch_file::{TorchFile, Value};
use model::weights::{fit_problems, refuse_unfit};
use model::{IjepaConfig, PredictorConfig};

use crate::checkpoint::{save_tensors, CheckpointMeta};
use crate::config::PretrainConfig;

/// The official code's normalisation (ImageNet's per-channel mean and std), used for
/// imported RGB weights when no data is given to measure.
pub const IMAGENET_STATS: [(f32, f32); 3] = [(0.485, 0.229), (0.456, 0.224), (0.406, 0.225)];

/// An official checkpoint's weights under our names, and the architecture they fit.
pub struct Imported {
    /// (name, values, shape): `encoder.*`, `predictor.*`, `target_encoder.*`.
    pub tensors: Vec<(String, Vec<f32>, Vec<usize>)>,
    /// The encoder preset whose shapes the weights have.
    pub preset: String,
    pub model: IjepaConfig,
    /// The file's `epoch`, when it has one.
    pub epoch: Option<i64>,
}

const GROUPS: [&str; 3] = ["encoder", "predictor", "target_encoder"];

/// Read an official checkpoint and infer its architecture; a file of another layout or
/// an architecture we do not have is refused, saying why.
pub fn read_official(path: &Path) -> Result<Imported> {
    let file = TorchFile::open(path)?;
    let name = path.display();
    let root = file
        .root
        .dict()
        .with_context(|| format!("{name}: the saved object is not a dict"))?;
    let keys: Vec<&str> = root.iter().map(|(k, _)| k.as_str()).collect();
    let mut tensors = Vec::new();
    for group in GROUPS {
        let state = root
            .iter()
            .find(|(k, _)| k == group)
            .and_then(|(_, v)| v.dict())
            .with_context(|| {
                format!(
                    "{name}: no `{group}` state dict: not an I-JEPA checkpoint (its keys: {})",
                    keys.join(", ")
                )
            })?;
        for (key, value) in state {
            let Value::Tensor(t) = value else {
                bail!("{name}: `{group}.{key}` is not a tensor");
            };
            let key = key.strip_prefix("module.").unwrap_or(&key);
            tensors.push((
                format!("{group}.{key}"),
                file.values(&t)
                    .with_context(|| format!("`{group}.{key}`"))?,
                t.shape.clone(),
            ));
        }
    }
    let epoch = root
        .iter()
        .find(|(k, _)| k == "epoch")
        .and_then(|(_, v)| match v {
            Value::Int(e) => Some(*e),
            _ => None,
        });
    let shapes: Vec<(&str, &[usize])> = tensors
        .iter()
        .map(|(n, _, s)| (n.as_str(), s.as_slice()))
        .collect();
    let (preset, model) = infer_architecture(&shapes).with_context(|| format!("{name}"))?;
    Ok(Imported {
        tensors,
        preset,
        model,
        epoch,
    })
}

/// The preset and model configuration whose parameters have these shapes (name,
/// shape), as the official state dicts name them under `encoder.` and `predictor.`.
pub fn infer_architecture(shapes: &[(&str, &[usize])]) -> Result<(String, IjepaConfig)> {
    let shape = |name: &str| -> Result<&[usize]> {
        shapes
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, s)| *s)
            .with_context(|| format!("no `{name}`"))
    };
    let blocks = |prefix: &str| -> usize {
        shapes
            .iter()
            .filter_map(|(n, _)| {
                n.strip_prefix(prefix)?
                    .split('.')
                    .next()?
                    .parse::<usize>()
                    .ok()
            })
            .collect::<BTreeSet<_>>()
            .len()
    };
    let patch = shape("encoder.patch_embed.proj.weight")?;
    let [dim, channels, patch_size, _] = *patch else {
        bail!("`encoder.patch_embed.proj.weight` is {patch:?}, expected [D, C, p, p]");
    };
    let tokens = shape("encoder.pos_embed")?.get(1).copied().unwrap_or(0);
    let grid = (tokens as f64).sqrt().round() as usize;
    if grid * grid != tokens {
        bail!("{tokens} positions are not a square grid of patches");
    }
    let depth = blocks("encoder.blocks.");
    let Some(&(preset, ..)) = PRESETS.iter().find(|p| p.1 == dim && p.2 == depth) else {
        let known: Vec<String> = PRESETS
            .iter()
            .map(|p| format!("{} ({}x{})", p.0, p.1, p.2))
            .collect();
        bail!(
            "an encoder of width {dim} and depth {depth} is none of the supported presets: {}",
            known.join(", ")
        );
    };
    let encoder = vit_preset(preset, grid * patch_size, patch_size, channels)?;
    let hidden = shape("encoder.blocks.0.mlp.fc1.weight")?[0];
    if hidden != encoder.mlp_hidden() {
        bail!(
            "the encoder's MLP has {hidden} hidden units for width {dim}: a ratio of {:.2}, but {preset} has {}",
            hidden as f64 / dim as f64,
            encoder.mlp_hidden()
        );
    }
    let model = IjepaConfig {
        predictor: PredictorConfig {
            embed_dim: shape("predictor.predictor_embed.weight")?[0],
            depth: blocks("predictor.predictor_blocks."),
            num_heads: encoder.num_heads,
        },
        encoder,
    };
    model.validate()?;
    Ok((preset.to_string(), model))
}

/// Write `imported` as our checkpoint at `out` (atomically), with `base`'s keys for
/// everything the weights do not set (its data is what `probe` and `embed` will read)
/// and `channel_stats` for normalising images. The checkpoint holds no optimiser
/// moments: it starts runs (`pretrain --init`) and is probed, but is not resumed.
pub fn write_imported(
    imported: &Imported,
    base: &PretrainConfig,
    channel_stats: Vec<(f32, f32)>,
    out: &Path,
) -> Result<PretrainConfig> {
    let m = &imported.model;
    let pretrain = PretrainConfig {
        model: imported.preset.clone(),
        patch_size: m.encoder.patch_size,
        pred_embed_dim: m.predictor.embed_dim,
        pred_depth: m.predictor.depth,
        ..base.clone()
    };
    let meta = CheckpointMeta {
        step: 0,
        pretrain: pretrain.clone(),
        model: imported.model.clone(),
        channel_stats,
        ranks: 1,
    };
    save_tensors(out, &imported.tensors, &meta)?;
    Ok(pretrain)
}

/// Refuse imported weights that do not fill `params` exactly (a name missing, left
/// over, or of another shape), listing what does not fit.
pub fn check_fits(imported: &Imported, params: &[(String, engine::Tensor)]) -> Result<()> {
    let found: Vec<(String, Vec<usize>)> = imported
        .tensors
        .iter()
        .map(|(n, _, s)| (n.clone(), s.clone()))
        .collect();
    refuse_unfit(
        &format!("the weights (inferred: {})", imported.preset),
        &fit_problems(params, &found, |_| true),
    )
}
