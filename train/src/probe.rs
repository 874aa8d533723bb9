//! The evaluation protocol of the paper on a checkpoint: frozen target encoder,
//! average-pooled features, a linear classifier with all labels and with 1% of them,
//! plus k-NN; the same on raw pixels and on a randomly initialised encoder.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::Result;
use engine::Device;
use model::weights::{write_tensors, Values};
use model::IJepa;

use crate::checkpoint::{Checkpoint, CheckpointMeta};
use crate::data::Splits;
use crate::eval::{
    balanced_subset, column_stats, knn_accuracy, linear_accuracy, normalised_pixels,
    pooled_features, select_rows, standardise, train_logistic,
};

pub const PROBE_L2: f64 = 1e-4;
pub const PROBE_ITERATIONS: usize = 100;

/// Top-1 accuracies (%) of one kind of features.
#[derive(Clone, Debug)]
pub struct ProbeResult {
    pub features: String,
    pub all_labels: f64,
    pub one_percent: f64,
    pub knn: f64,
}

/// Probe features [n, cols] of the train and test splits.
pub fn probe_features(
    device: &Arc<Device>,
    name: &str,
    mut train: Vec<f32>,
    mut test: Vec<f32>,
    cols: usize,
    splits: &Splits,
) -> Result<ProbeResult> {
    let (ty, vy, classes) = (
        &splits.train.labels,
        &splits.test.labels,
        splits.train.classes,
    );
    let knn = knn_accuracy(device, (&train, ty), (&test, vy), cols, classes, 20)?;
    let (mean, std) = column_stats(&train, cols);
    standardise(&mut train, cols, &mean, &std);
    standardise(&mut test, cols, &mean, &std);
    let (w, b) = train_logistic(
        device,
        &train,
        ty,
        cols,
        classes,
        PROBE_L2,
        PROBE_ITERATIONS,
    )?;
    let all_labels = linear_accuracy(&w, &b, &test, vy, cols);
    let per_class = ((ty.len() as f64 * 0.01 / classes as f64).round() as usize).max(1);
    let few = balanced_subset(ty, classes, per_class, 0);
    let few_y: Vec<u32> = few.iter().map(|&i| ty[i]).collect();
    let (w, b) = train_logistic(
        device,
        &select_rows(&train, cols, &few),
        &few_y,
        cols,
        classes,
        PROBE_L2,
        PROBE_ITERATIONS,
    )?;
    let one_percent = linear_accuracy(&w, &b, &test, vy, cols);
    Ok(ProbeResult {
        features: name.into(),
        all_labels,
        one_percent,
        knn,
    })
}

/// Frozen average-pooled features of both splits of a data set, with their labels.
pub struct Features {
    /// Features per row.
    pub dim: usize,
    /// [n, dim] row-major, and n labels.
    pub train: (Vec<f32>, Vec<u32>),
    pub test: (Vec<f32>, Vec<u32>),
}

impl Features {
    /// Write `train.features` [n, dim] f32, `train.labels` [n] i64, and the same for
    /// `test`, with `metadata` (safetensors, atomically).
    pub fn save(&self, path: &Path, metadata: HashMap<String, String>) -> Result<()> {
        let labels = |l: &[u32]| l.iter().map(|&c| c as i64).collect::<Vec<i64>>();
        let (train_labels, test_labels) = (labels(&self.train.1), labels(&self.test.1));
        let rows = |f: &[f32]| vec![f.len() / self.dim, self.dim];
        write_tensors(
            path,
            &[
                (
                    "train.features".into(),
                    Values::F32(&self.train.0),
                    rows(&self.train.0),
                ),
                (
                    "train.labels".into(),
                    Values::I64(&train_labels),
                    vec![train_labels.len()],
                ),
                (
                    "test.features".into(),
                    Values::F32(&self.test.0),
                    rows(&self.test.0),
                ),
                (
                    "test.labels".into(),
                    Values::I64(&test_labels),
                    vec![test_labels.len()],
                ),
            ],
            metadata,
        )
    }
}

/// Which encoder of a checkpoint to read features from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoder {
    /// The EMA encoder, the one the paper evaluates.
    Target,
    /// The encoder trained by gradient.
    Context,
}

/// A checkpoint's model, loaded, with its metadata and data set (each split limited to
/// `limits` images when they are non-zero).
fn open_checkpoint(
    device: &Arc<Device>,
    path: &Path,
    limits: (usize, usize),
) -> Result<(Checkpoint, IJepa, Splits)> {
    let checkpoint = Checkpoint::open(path)?;
    let meta = &checkpoint.meta;
    let mut data = meta.pretrain.data.clone();
    for (limit, key) in [
        (limits.0, &mut data.train_limit),
        (limits.1, &mut data.test_limit),
    ] {
        if limit > 0 {
            *key = limit;
        }
    }
    let splits = data.load()?;
    let model = IJepa::new(device, &meta.model, meta.pretrain.seed)?;
    checkpoint.file.load_into("", &model.named_params())?;
    Ok((checkpoint, model, splits))
}

/// The pooled features of `encoder` of a checkpoint on its data set (`ijepa embed`).
pub fn embed_checkpoint(
    device: &Arc<Device>,
    path: &Path,
    encoder: Encoder,
    limits: (usize, usize),
) -> Result<Features> {
    let (checkpoint, model, splits) = open_checkpoint(device, path, limits)?;
    let vit = match encoder {
        Encoder::Target => &model.target_encoder,
        Encoder::Context => &model.encoder,
    };
    let features = |data: &crate::data::Dataset| -> Result<(Vec<f32>, Vec<u32>)> {
        let all: Vec<usize> = (0..data.len()).collect();
        let f = pooled_features(vit, data, &checkpoint.meta.channel_stats, &all, 256)?;
        Ok((f, data.labels.clone()))
    };
    Ok(Features {
        dim: checkpoint.meta.model.encoder.embed_dim,
        train: features(&splits.train)?,
        test: features(&splits.test)?,
    })
}

/// Run the whole protocol on a checkpoint of `ijepa pretrain`; with `save_features`,
/// also write the target encoder's features there (as [`Features::save`]).
pub fn probe_checkpoint(
    device: &Arc<Device>,
    path: &Path,
    save_features: Option<&Path>,
    mut on_result: impl FnMut(&ProbeResult),
) -> Result<Vec<ProbeResult>> {
    let (checkpoint, model, splits) = open_checkpoint(device, path, (0, 0))?;
    let CheckpointMeta {
        pretrain,
        model: config,
        channel_stats: stats,
        ..
    } = &checkpoint.meta;
    let random = IJepa::new(device, config, pretrain.seed.wrapping_add(0x5EED))?;
    let train_idx: Vec<usize> = (0..splits.train.len()).collect();
    let test_idx: Vec<usize> = (0..splits.test.len()).collect();
    let d = config.encoder.embed_dim;
    let mut results = Vec::new();
    let mut run = |name: &str, train: Vec<f32>, test: Vec<f32>, cols: usize| -> Result<()> {
        let r = probe_features(device, name, train, test, cols, &splits)?;
        on_result(&r);
        results.push(r);
        Ok(())
    };
    let pixels = |idx: &[usize], train: bool| {
        normalised_pixels(if train { &splits.train } else { &splits.test }, stats, idx)
    };
    run(
        "raw pixels",
        pixels(&train_idx, true),
        pixels(&test_idx, false),
        splits.train.image_len(),
    )?;
    run(
        "random-init encoder",
        pooled_features(
            &random.target_encoder,
            &splits.train,
            stats,
            &train_idx,
            256,
        )?,
        pooled_features(&random.target_encoder, &splits.test, stats, &test_idx, 256)?,
        d,
    )?;
    let target = Features {
        dim: d,
        train: (
            pooled_features(&model.target_encoder, &splits.train, stats, &train_idx, 256)?,
            splits.train.labels.clone(),
        ),
        test: (
            pooled_features(&model.target_encoder, &splits.test, stats, &test_idx, 256)?,
            splits.test.labels.clone(),
        ),
    };
    if let Some(out) = save_features {
        target.save(out, features_metadata(path, Encoder::Target))?;
    }
    run("I-JEPA target encoder", target.train.0, target.test.0, d)?;
    Ok(results)
}

/// The metadata a features file carries: where the features come from.
pub fn features_metadata(checkpoint: &Path, encoder: Encoder) -> HashMap<String, String> {
    HashMap::from([
        ("checkpoint".to_string(), checkpoint.display().to_string()),
        ("encoder".to_string(), format!("{encoder:?}").to_lowercase()),
        (
            "pooling".to_string(),
            "mean of the last layer over patches".to_string(),
        ),
    ])
}
