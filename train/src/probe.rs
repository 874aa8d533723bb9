//! The evaluation protocol of the paper on a checkpoint: frozen target encoder,
//! average-pooled features, a linear classifier with all labels and with 1% of them,
//! plus k-NN; the same on raw pixels and on a randomly initialised encoder.
//!
//! Explained in the tour: docs/tour/11-pretrain-probe.md.

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
/// The balanced 1% splits probed (seeds 0, 1, ...): one split's 60 images per class
/// (Fashion-MNIST) make its accuracy vary by split, which their spread shows.
pub const LOW_SHOT_SPLITS: u64 = 5;

/// Top-1 accuracies (%) of one kind of features.
#[derive(Clone, Debug)]
pub struct ProbeResult {
    pub features: String,
    pub all_labels: f64,
    /// The 1% probe on each of the `LOW_SHOT_SPLITS` splits, seed 0's first.
    pub one_percent_splits: Vec<f64>,
    pub knn: f64,
}

impl ProbeResult {
    /// The 1% probe on the split of seed 0, the one every earlier result reports.
    pub fn one_percent(&self) -> f64 {
        self.one_percent_splits[0]
    }

    /// The mean of the 1% accuracies over the splits, and their sample standard
    /// deviation.
    pub fn one_percent_spread(&self) -> (f64, f64) {
        let s = &self.one_percent_splits;
        let n = s.len() as f64;
        let mean = s.iter().sum::<f64>() / n;
        let var = s.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
        (mean, var.sqrt())
    }
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
    let one_percent_splits = (0..LOW_SHOT_SPLITS)
        .map(|seed| {
            let few = balanced_subset(ty, classes, per_class, seed);
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
            Ok(linear_accuracy(&w, &b, &test, vy, cols))
        })
        .collect::<Result<Vec<f64>>>()?;
    Ok(ProbeResult {
        features: name.into(),
        all_labels,
        one_percent_splits,
        knn,
    })
}

/// The host memory the raw-pixel baseline's features may take (at 224x224x3 that is
/// about 7,000 images); past it the probe leaves the baseline out and says so.
pub const RAW_PIXELS_BUDGET: usize = 4 << 30;

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

/// What features to take from a checkpoint, and on how many images.
#[derive(Clone, Debug)]
pub struct FeatureOptions {
    pub encoder: Encoder,
    /// The means of the last `layers` blocks side by side (1: the last layer only, the
    /// primary protocol; the paper also reports 4 for its largest models).
    pub layers: usize,
    /// Images of the train and test splits (0: as the checkpoint's data configuration).
    pub limits: (usize, usize),
}

impl Default for FeatureOptions {
    fn default() -> Self {
        FeatureOptions {
            encoder: Encoder::Target,
            layers: 1,
            limits: (0, 0),
        }
    }
}

impl FeatureOptions {
    /// The name the probe table and a features file give these features.
    pub fn describe(&self) -> String {
        let encoder = match self.encoder {
            Encoder::Target => "target",
            Encoder::Context => "context",
        };
        match self.layers {
            1 => format!("I-JEPA {encoder} encoder"),
            n => format!("I-JEPA {encoder} encoder, last {n} layers"),
        }
    }

    /// The metadata a features file carries: where its features come from.
    pub fn metadata(&self, checkpoint: &Path) -> HashMap<String, String> {
        HashMap::from([
            ("checkpoint".to_string(), checkpoint.display().to_string()),
            ("features".to_string(), self.describe()),
            (
                "pooling".to_string(),
                "mean over patches of each layer after the final LayerNorm".to_string(),
            ),
        ])
    }
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

/// The features `options` names of every image of both splits.
fn features_of(
    model: &IJepa,
    splits: &Splits,
    stats: &[(f32, f32)],
    options: &FeatureOptions,
) -> Result<Features> {
    let vit = match options.encoder {
        Encoder::Target => &model.target_encoder,
        Encoder::Context => &model.encoder,
    };
    let features = |data: &crate::data::Dataset| -> Result<(Vec<f32>, Vec<u32>)> {
        let all: Vec<usize> = (0..data.len()).collect();
        let f = pooled_features(vit, data, stats, &all, 256, options.layers)?;
        Ok((f, data.labels.clone()))
    };
    Ok(Features {
        dim: vit.config.embed_dim * options.layers,
        train: features(&splits.train)?,
        test: features(&splits.test)?,
    })
}

/// The features of a checkpoint on its data set (`ijepa embed`).
pub fn embed_checkpoint(
    device: &Arc<Device>,
    path: &Path,
    options: &FeatureOptions,
) -> Result<Features> {
    let (checkpoint, model, splits) = open_checkpoint(device, path, options.limits)?;
    features_of(&model, &splits, &checkpoint.meta.channel_stats, options)
}

/// Run the whole protocol on a checkpoint of `ijepa pretrain`: raw pixels, a random-init
/// encoder (the last layer's mean) and the features `options` names; with
/// `save_features`, also write the latter there (as [`Features::save`]).
pub fn probe_checkpoint(
    device: &Arc<Device>,
    path: &Path,
    options: &FeatureOptions,
    save_features: Option<&Path>,
    mut on_result: impl FnMut(&ProbeResult),
) -> Result<Vec<ProbeResult>> {
    let (checkpoint, model, splits) = open_checkpoint(device, path, options.limits)?;
    let CheckpointMeta {
        pretrain,
        model: config,
        channel_stats: stats,
        ..
    } = &checkpoint.meta;
    let random = IJepa::new(device, config, pretrain.seed.wrapping_add(0x5EED))?;
    let mut results = Vec::new();
    let mut run = |name: &str, train: Vec<f32>, test: Vec<f32>, cols: usize| -> Result<()> {
        let r = probe_features(device, name, train, test, cols, &splits)?;
        on_result(&r);
        results.push(r);
        Ok(())
    };
    let pixels = |data: &crate::data::Dataset| {
        let all: Vec<usize> = (0..data.len()).collect();
        normalised_pixels(data, stats, &all)
    };
    let raw_bytes = (splits.train.len() + splits.test.len()) * splits.train.image_len() * 4;
    if raw_bytes <= RAW_PIXELS_BUDGET {
        run(
            "raw pixels",
            pixels(&splits.train),
            pixels(&splits.test),
            splits.train.image_len(),
        )?;
    } else {
        eprintln!(
            "note: the raw-pixel baseline is left out: its features would take {:.1} GiB (more than {} GiB); \
             probe with --train-limit and --test-limit to include it",
            raw_bytes as f64 / (1u64 << 30) as f64,
            RAW_PIXELS_BUDGET >> 30
        );
    }
    let random = features_of(&random, &splits, stats, &FeatureOptions::default())?;
    run(
        "random-init encoder",
        random.train.0,
        random.test.0,
        random.dim,
    )?;
    let features = features_of(&model, &splits, stats, options)?;
    if let Some(out) = save_features {
        features.save(out, options.metadata(path))?;
    }
    run(
        &options.describe(),
        features.train.0,
        features.test.0,
        features.dim,
    )?;
    Ok(results)
}
