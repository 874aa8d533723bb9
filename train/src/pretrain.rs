//! The I-JEPA pretraining loop: configuration, data, schedules, AdamW + EMA, metrics,
//! k-NN monitor, atomic checkpoints and exact resume.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use engine::{backward, Device, Tensor};
use model::checkpoint::{write_safetensors, SafetensorsFile};
use model::config::vit_preset;
use model::layers::NamedParams;
use model::{IJepa, IjepaConfig, Masks, PredictorConfig};
use serde::{Deserialize, Serialize};

use crate::data::{
    load_cifar10_dir, load_idx_dir, load_image_folder, Dataset, Splits, FASHION_MNIST_DIR,
};
use crate::eval::{knn_accuracy, pooled_features};
use crate::loader::{BatchLoader, LoaderConfig};
use crate::masks::{MaskCollator, MaskConfig};
use crate::optim::{ema, AdamWOptimizer};
use crate::schedule::Schedules;

/// Where the data comes from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// "idx" (Fashion-MNIST/MNIST), "cifar10" or "folder".
    pub kind: String,
    pub dir: PathBuf,
    /// Image side for "folder" data (IDX and CIFAR keep their own size).
    pub image_size: usize,
    /// Channels for "folder" data: 1 or 3.
    pub channels: usize,
    /// Use only the first N training images (0: all).
    pub train_limit: usize,
    /// Use only the first N test images (0: all).
    pub test_limit: usize,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            kind: "idx".into(),
            dir: FASHION_MNIST_DIR.into(),
            image_size: 32,
            channels: 3,
            train_limit: 0,
            test_limit: 0,
        }
    }
}

impl DataConfig {
    pub fn load(&self) -> Result<Splits> {
        let mut splits = match self.kind.as_str() {
            "idx" => load_idx_dir(&self.dir)?,
            "cifar10" => load_cifar10_dir(&self.dir)?,
            "folder" => {
                let (train, report) =
                    load_image_folder(&self.dir.join("train"), self.image_size, self.channels)?;
                let (test, report2) =
                    load_image_folder(&self.dir.join("val"), self.image_size, self.channels)?;
                for (f, e) in report.skipped.iter().chain(&report2.skipped) {
                    eprintln!("warning: skipped unreadable image {}: {e}", f.display());
                }
                let skipped = report.skipped.len() + report2.skipped.len();
                if skipped > 0 {
                    eprintln!("warning: {skipped} unreadable image(s) skipped");
                }
                Splits {
                    train: Arc::new(train),
                    test: Arc::new(test),
                }
            }
            other => bail!("data kind `{other}` is not one of idx, cifar10, folder"),
        };
        if self.train_limit > 0 {
            splits.train = Arc::new(splits.train.take(self.train_limit));
        }
        if self.test_limit > 0 {
            splits.test = Arc::new(splits.test.take(self.test_limit));
        }
        Ok(splits)
    }
}

/// Everything a pretraining run is set by; a JSON config file holds any subset.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PretrainConfig {
    pub data: DataConfig,
    /// Encoder preset (see `model::config::PRESETS`).
    pub model: String,
    pub patch_size: usize,
    pub pred_embed_dim: usize,
    pub pred_depth: usize,
    pub batch_size: usize,
    pub epochs: usize,
    pub start_lr: f64,
    pub lr: f64,
    pub final_lr: f64,
    /// Fraction of all steps spent in linear warm-up.
    pub warmup_fraction: f64,
    pub weight_decay: f64,
    pub final_weight_decay: f64,
    pub ema: (f64, f64),
    pub min_keep: usize,
    pub npred: usize,
    pub nenc: usize,
    pub crop_scale: (f64, f64),
    /// Clip the global gradient norm to this (0: no clipping).
    pub grad_clip: f64,
    pub seed: u64,
    /// Write a checkpoint every N steps (and at the end).
    pub checkpoint_every: usize,
    /// Images of the training split used by the k-NN monitor (0: no monitor).
    pub knn_train: usize,
    pub knn_test: usize,
}

impl Default for PretrainConfig {
    /// The Fashion-MNIST configuration of the quality target.
    fn default() -> Self {
        PretrainConfig {
            data: DataConfig::default(),
            model: "vit_nano".into(),
            patch_size: 4,
            pred_embed_dim: 64,
            pred_depth: 3,
            batch_size: 128,
            epochs: 6,
            start_lr: 2e-4,
            lr: 1e-3,
            final_lr: 1e-6,
            warmup_fraction: 0.1,
            weight_decay: 0.04,
            final_weight_decay: 0.4,
            ema: (0.996, 1.0),
            min_keep: 4,
            npred: 4,
            nenc: 1,
            crop_scale: (0.3, 1.0),
            grad_clip: 0.0,
            seed: 0,
            checkpoint_every: 500,
            knn_train: 5000,
            knn_test: 1000,
        }
    }
}

impl PretrainConfig {
    /// A named preset: `fmnist` (the quality-target run) or `fmnist-cpu` (small and
    /// short, for a CPU adapter).
    pub fn preset(name: &str) -> Result<PretrainConfig> {
        let base = PretrainConfig::default();
        Ok(match name {
            "fmnist" => base,
            "fmnist-cpu" => PretrainConfig {
                model: "vit_pico".into(),
                pred_embed_dim: 32,
                pred_depth: 2,
                batch_size: 64,
                epochs: 3,
                data: DataConfig {
                    train_limit: 10_000,
                    test_limit: 2_000,
                    ..DataConfig::default()
                },
                knn_train: 2000,
                knn_test: 500,
                checkpoint_every: 100,
                ..base
            },
            other => bail!("unknown pretraining preset `{other}`; known: fmnist, fmnist-cpu"),
        })
    }

    /// This configuration with the keys of a JSON file applied over it (nested objects
    /// key by key); unknown keys and bad values are errors that name the file.
    pub fn overridden_by(&self, path: &Path) -> Result<PretrainConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let over: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("config file {}", path.display()))?;
        let mut value = serde_json::to_value(self)?;
        merge_json(&mut value, over);
        serde_json::from_value(value).with_context(|| format!("config file {}", path.display()))
    }

    pub fn model_config(&self, data: &Dataset) -> Result<IjepaConfig> {
        if data.height != data.width {
            bail!(
                "images are {}x{}; only square images are supported",
                data.height,
                data.width
            );
        }
        if !data.height.is_multiple_of(self.patch_size) {
            bail!(
                "image size {} is not divisible by the patch size {}",
                data.height,
                self.patch_size
            );
        }
        let encoder = vit_preset(&self.model, data.height, self.patch_size, data.channels)?;
        let heads = encoder.num_heads;
        let config = IjepaConfig {
            predictor: PredictorConfig {
                embed_dim: self.pred_embed_dim,
                depth: self.pred_depth,
                num_heads: heads,
            },
            encoder,
        };
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("batch_size", self.batch_size),
            ("epochs", self.epochs),
            ("checkpoint_every", self.checkpoint_every),
            ("patch_size", self.patch_size),
        ];
        for (name, v) in positive {
            if v == 0 {
                bail!("{name} must be positive");
            }
        }
        for (name, v) in [
            ("lr", self.lr),
            ("start_lr", self.start_lr),
            ("final_lr", self.final_lr),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                bail!("{name} = {v} is not a valid learning rate");
            }
        }
        if !(0.0..1.0).contains(&self.warmup_fraction) {
            bail!(
                "warmup_fraction = {} must be in [0, 1)",
                self.warmup_fraction
            );
        }
        if !(self.crop_scale.0 > 0.0
            && self.crop_scale.0 <= self.crop_scale.1
            && self.crop_scale.1 <= 1.0)
        {
            bail!(
                "crop_scale {:?} is not a range within (0, 1]",
                self.crop_scale
            );
        }
        Ok(())
    }
}

/// One line of metrics.jsonl.
#[derive(Serialize)]
pub struct StepMetrics {
    pub step: usize,
    pub epoch: usize,
    pub loss: f32,
    pub lr: f64,
    pub wd: f64,
    pub momentum: f64,
    pub images_per_s: f64,
    pub context_patches: usize,
    pub target_patches: usize,
    /// Mean over feature dims of the std over rows of the targets: near 0 = collapse.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_std: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grad_norm: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub knn_top1: Option<f64>,
}

/// A training run in progress.
pub struct Trainer {
    pub config: PretrainConfig,
    pub model: IJepa,
    pub optimizer: AdamWOptimizer,
    pub schedules: Schedules,
    pub splits: Arc<Splits>,
    pub stats: Vec<(f32, f32)>,
    pub collator: Arc<MaskCollator>,
    pub out_dir: PathBuf,
    /// Next step to run.
    pub step: usize,
    pub steps_per_epoch: usize,
    /// (target encoder, encoder) parameters, listed once for the EMA of every step.
    ema_pairs: (NamedParams, NamedParams),
    device: Arc<Device>,
}

pub const CHECKPOINT: &str = "checkpoint.safetensors";
pub const METRICS: &str = "metrics.jsonl";

/// Mean over columns of the standard deviation over rows of x [rows, cols].
pub fn feature_std(x: &[f32], cols: usize) -> f64 {
    let (_, std) = crate::eval::column_stats(x, cols);
    std.iter().map(|&s| s as f64).sum::<f64>() / cols as f64
}

impl Trainer {
    /// Set up a run in `out_dir` (created if needed; refused early if unwritable).
    pub fn new(device: &Arc<Device>, config: PretrainConfig, out_dir: &Path) -> Result<Trainer> {
        config.validate()?;
        std::fs::create_dir_all(out_dir)
            .with_context(|| format!("cannot create output directory {}", out_dir.display()))?;
        let probe = out_dir.join(".write_test");
        std::fs::write(&probe, b"")
            .with_context(|| format!("output directory {} is not writable", out_dir.display()))?;
        std::fs::remove_file(&probe)?;
        let splits = config.data.load()?;
        let model_config = config.model_config(&splits.train)?;
        let stats = splits.train.channel_stats();
        let steps_per_epoch = splits.train.len() / config.batch_size;
        if steps_per_epoch == 0 {
            bail!(
                "{} training images are fewer than one batch of {}",
                splits.train.len(),
                config.batch_size
            );
        }
        let total = steps_per_epoch * config.epochs;
        let mask_config = MaskConfig {
            grid: model_config.encoder.grid(),
            nenc: config.nenc,
            npred: config.npred,
            min_keep: config.min_keep,
            ..MaskConfig::official(model_config.encoder.grid())
        };
        let collator = Arc::new(MaskCollator::new(mask_config, config.seed)?);
        let model = IJepa::new(device, &model_config, config.seed)?;
        let mut optimizer = AdamWOptimizer::new(&model.trainable_params())?;
        optimizer.max_grad_norm = (config.grad_clip > 0.0).then_some(config.grad_clip);
        let ema_pairs = (model.target_params(), model.encoder_params());
        let schedules = Schedules {
            total_steps: total,
            warmup_steps: (config.warmup_fraction * total as f64) as usize,
            start_lr: config.start_lr,
            lr: config.lr,
            final_lr: config.final_lr,
            weight_decay: config.weight_decay,
            final_weight_decay: config.final_weight_decay,
            ema_start: config.ema.0,
            ema_end: config.ema.1,
        };
        Ok(Trainer {
            config,
            model,
            optimizer,
            schedules,
            splits: Arc::new(splits),
            stats,
            collator,
            out_dir: out_dir.to_path_buf(),
            step: 0,
            steps_per_epoch,
            ema_pairs,
            device: device.clone(),
        })
    }

    pub fn total_steps(&self) -> usize {
        self.schedules.total_steps
    }

    /// Continue from a checkpoint written by [`Trainer::save`]: weights, optimiser
    /// moments and the step. Data order, crops and masks are functions of (seed, step),
    /// so the run continues exactly as an uninterrupted one would.
    pub fn resume(&mut self, path: &Path) -> Result<()> {
        let file = SafetensorsFile::open(path)?;
        let meta = file.metadata();
        let saved: PretrainConfig =
            serde_json::from_str(meta.get("pretrain_config").with_context(|| {
                format!(
                    "{}: not an ijepa checkpoint (no pretrain_config)",
                    path.display()
                )
            })?)?;
        if saved != self.config {
            bail!("{}: the checkpoint was written with another configuration; resume with the same one", path.display());
        }
        file.load_into("", &self.model.named_params())?;
        for (name, m, v) in self.optimizer.moments() {
            for (prefix, t) in [("optim.exp_avg.", m), ("optim.exp_avg_sq.", v)] {
                let (data, _) = file.f32(&format!("{prefix}{name}"))?;
                t.write(&data)?;
            }
        }
        self.step = meta
            .get("step")
            .context("checkpoint has no step")?
            .parse()?;
        self.optimizer.step = self.step as u32;
        Ok(())
    }

    /// Write weights, optimiser moments, step and configuration atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut tensors: Vec<(String, Vec<f32>, Vec<usize>)> = self
            .model
            .named_params()
            .iter()
            .map(|(n, t)| (n.clone(), t.to_vec(), t.shape().to_vec()))
            .collect();
        for (name, m, v) in self.optimizer.moments() {
            tensors.push((
                format!("optim.exp_avg.{name}"),
                m.to_vec(),
                m.shape().to_vec(),
            ));
            tensors.push((
                format!("optim.exp_avg_sq.{name}"),
                v.to_vec(),
                v.shape().to_vec(),
            ));
        }
        let mut meta = HashMap::new();
        meta.insert("step".to_string(), self.step.to_string());
        meta.insert(
            "pretrain_config".to_string(),
            serde_json::to_string(&self.config)?,
        );
        meta.insert(
            "model_config".to_string(),
            serde_json::to_string(&self.model.config)?,
        );
        meta.insert(
            "channel_stats".to_string(),
            serde_json::to_string(&self.stats)?,
        );
        write_safetensors(path, &tensors, meta)
    }

    /// k-NN top-1 (%) of the target encoder on the held-out monitor subsets.
    pub fn knn_monitor(&self) -> Result<Option<f64>> {
        let (n_train, n_test) = (
            self.config.knn_train.min(self.splits.train.len()),
            self.config.knn_test.min(self.splits.test.len()),
        );
        if n_train == 0 || n_test == 0 {
            return Ok(None);
        }
        let d = self.model.config.encoder.embed_dim;
        let train_idx: Vec<usize> = (0..n_train).collect();
        let test_idx: Vec<usize> = (0..n_test).collect();
        let tr = pooled_features(
            &self.model.target_encoder,
            &self.splits.train,
            &self.stats,
            &train_idx,
            256,
        )?;
        let te = pooled_features(
            &self.model.target_encoder,
            &self.splits.test,
            &self.stats,
            &test_idx,
            256,
        )?;
        let classes = self.splits.train.classes;
        Ok(Some(knn_accuracy(
            &self.device,
            (&tr, &self.splits.train.labels[..n_train]),
            (&te, &self.splits.test.labels[..n_test]),
            d,
            classes,
            20,
        )?))
    }

    /// Run steps until `until` (exclusive), calling `on_step` after each.
    pub fn run(&mut self, until: usize, mut on_step: impl FnMut(&StepMetrics)) -> Result<()> {
        let until = until.min(self.total_steps());
        if self.step >= until {
            return Ok(());
        }
        let loader_config = LoaderConfig {
            batch: self.config.batch_size,
            image_size: self.splits.train.height,
            crop_scale: self.config.crop_scale,
            crop_ratio: (3.0 / 4.0, 4.0 / 3.0),
            seed: self.config.seed,
            stats: self.stats.clone(),
        };
        let train = self.splits.train.clone();
        let loader = BatchLoader::spawn(
            train,
            loader_config,
            self.collator.clone(),
            self.step,
            until,
            4,
        );
        let mut metrics = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.out_dir.join(METRICS))
            .with_context(|| format!("cannot open {}", self.out_dir.join(METRICS).display()))?;
        let (c, s) = (self.splits.train.channels, self.splits.train.height);
        let num_patches = self.model.config.encoder.num_patches();
        while self.step < until {
            let started = Instant::now();
            let batch = loader.next()?;
            let b = self.config.batch_size;
            let images = Tensor::from_slice(&self.device, &[b, c, s, s], &batch.images)?;
            let masks = Masks::new(
                &self.device,
                &batch.masks.context,
                &batch.masks.target,
                num_patches,
            )?;
            let (lr, wd) = (
                self.schedules.lr(self.step),
                self.schedules.weight_decay(self.step),
            );
            let out = self.model.forward(&images, &masks)?;
            let grads = backward(&out.loss)?;
            let loss = out.loss.item();
            if !loss.is_finite() {
                bail!(
                    "the loss became {loss} at step {}; stopping. The last good checkpoint ({}) is left as it was; \
                     try a lower learning rate or gradient clipping",
                    self.step,
                    self.out_dir.join(CHECKPOINT).display()
                );
            }
            let grad_norm = self.optimizer.step(&grads, lr as f32, wd as f32)?;
            let momentum = self.schedules.momentum(self.step);
            ema(&self.ema_pairs.0, &self.ema_pairs.1, momentum as f32)?;
            self.step += 1;
            let epoch_end = self.step.is_multiple_of(self.steps_per_epoch);
            let log_detail = self.step.is_multiple_of(50) || epoch_end || self.step == until;
            let target_std = if log_detail {
                let d = self.model.config.encoder.embed_dim;
                Some(feature_std(&out.target.to_vec(), d))
            } else {
                None
            };
            // Throughput of the step itself, before the monitor below.
            let images_per_s = b as f64 / started.elapsed().as_secs_f64();
            let knn_top1 = if epoch_end { self.knn_monitor()? } else { None };
            let m = StepMetrics {
                step: self.step,
                epoch: (self.step - 1) / self.steps_per_epoch,
                loss,
                lr,
                wd,
                momentum,
                images_per_s,
                context_patches: masks.context.shape()[1],
                target_patches: masks.target.shape()[1],
                target_std,
                grad_norm,
                knn_top1,
            };
            writeln!(metrics, "{}", serde_json::to_string(&m)?)?;
            on_step(&m);
            if self.step.is_multiple_of(self.config.checkpoint_every) || self.step == until {
                self.save(&self.out_dir.join(CHECKPOINT))?;
            }
        }
        Ok(())
    }
}

/// `over`'s keys written into `base`, objects merged key by key.
fn merge_json(base: &mut serde_json::Value, over: serde_json::Value) {
    match (base, over) {
        (serde_json::Value::Object(b), serde_json::Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge_json(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}
