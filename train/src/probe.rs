//! The evaluation protocol of the paper on a checkpoint: frozen target encoder,
//! average-pooled features, a linear classifier with all labels and with 1% of them,
//! plus k-NN; the same on raw pixels and on a randomly initialised encoder.

use std::path::Path;
use std::sync::Arc;

use anyhow::Result;
use engine::Device;
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

/// Run the whole protocol on a checkpoint of `ijepa pretrain`.
pub fn probe_checkpoint(
    device: &Arc<Device>,
    path: &Path,
    mut on_result: impl FnMut(&ProbeResult),
) -> Result<Vec<ProbeResult>> {
    let checkpoint = Checkpoint::open(path)?;
    let CheckpointMeta {
        pretrain,
        model: config,
        channel_stats: stats,
        ..
    } = &checkpoint.meta;
    let splits = pretrain.data.load()?;
    let model = IJepa::new(device, config, pretrain.seed)?;
    checkpoint.file.load_into("", &model.named_params())?;
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
    run(
        "I-JEPA target encoder",
        pooled_features(&model.target_encoder, &splits.train, stats, &train_idx, 256)?,
        pooled_features(&model.target_encoder, &splits.test, stats, &test_idx, 256)?,
        d,
    )?;
    Ok(results)
}
