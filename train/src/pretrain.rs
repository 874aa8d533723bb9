//! The I-JEPA pretraining loop: data, schedules, [`train_step`], metrics, the k-NN
//! monitor, atomic checkpoints of finite states only, exact resume, and a clean stop
//! on request (an interrupt) with a checkpoint of the step reached.
//!
//! Explained in the tour: docs/tour/11-pretrain-probe.md.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use engine::{Device, Tensor};
use model::{IJepa, Masks};
use serde::Serialize;

use crate::checkpoint::{self, Checkpoint, CheckpointMeta, NonFiniteState, CHECKPOINT};
use crate::config::PretrainConfig;
use crate::data::{Dataset, Splits};
use crate::eval::{knn_accuracy, pooled_features, rankme};
use crate::loader::{BatchLoader, LoaderConfig};
use crate::multiblock::MaskCollator;
use crate::parallel::{any_rank, check_identical, checksum, Collective, Single};
use crate::rundir::{truncate_metrics, RunLock};
use crate::schedule::Schedules;
use crate::step::{train_step, NonFiniteLoss, StepResult, TrainState};

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
    /// Mixed precision: the loss scale of the step's backward.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss_scale: Option<f32>,
    /// Mixed precision: the scaled gradients overflowed, so AdamW skipped the step.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub skipped: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub knn_top1: Option<f64>,
    /// RankMe of the target encoder's features on the monitor's training images: their
    /// effective rank, from 1 (collapse) to the width.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rankme: Option<f64>,
    /// Unreadable images replaced by others since the epoch began.
    #[serde(skip_serializing_if = "is_zero")]
    pub replaced_images: usize,
    /// At the end of each epoch of a data-parallel run: the checksum of the parameters
    /// and optimiser state, found equal on every rank.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_checksum: Option<String>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// A training run in progress.
pub struct Trainer {
    pub config: PretrainConfig,
    pub state: TrainState,
    pub schedules: Schedules,
    pub splits: Arc<Splits>,
    pub stats: Vec<(f32, f32)>,
    pub collator: Arc<MaskCollator>,
    pub out_dir: PathBuf,
    /// Next step to run.
    pub step: usize,
    pub steps_per_epoch: usize,
    /// The step of the checkpoint in `out_dir` that holds this run's last state (written
    /// by this run or resumed from); `None` before there is one.
    pub checkpointed: Option<usize>,
    device: Arc<Device>,
    stop: Arc<AtomicBool>,
    /// The processes of the run; each trains on its share of every global batch.
    world: Box<dyn Collective>,
    /// Held by rank 0, the one process that writes the run directory.
    _lock: Option<RunLock>,
}

/// How [`Trainer::run`] ended when no error stopped it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunEnd {
    /// The requested step was reached.
    Reached,
    /// A stop was requested through [`Trainer::stop_handle`]: the step in progress was
    /// finished and checkpointed.
    Interrupted,
}

pub const METRICS: &str = "metrics.jsonl";

/// Mean over columns of the standard deviation over rows of x [rows, cols].
pub fn feature_std(x: &[f32], cols: usize) -> f64 {
    let (_, std) = crate::eval::column_stats(x, cols);
    std.iter().map(|&s| s as f64).sum::<f64>() / cols as f64
}

impl Trainer {
    /// Set up a run in `out_dir`: the configuration is checked, then the directory is
    /// created if needed and locked for this run (refused while another run holds it),
    /// then the data is loaded.
    pub fn new(device: &Arc<Device>, config: PretrainConfig, out_dir: &Path) -> Result<Trainer> {
        Trainer::with_world(device, config, out_dir, Box::new(Single))
    }

    /// [`Trainer::new`] for one process of a data-parallel run: `batch_size` images per
    /// process, a global batch of `world.size()` times that. Rank 0 alone locks and
    /// writes `out_dir` (metrics, checkpoints) and runs the k-NN monitor.
    pub fn with_world(
        device: &Arc<Device>,
        config: PretrainConfig,
        out_dir: &Path,
        world: Box<dyn Collective>,
    ) -> Result<Trainer> {
        config.validate()?;
        let config = PretrainConfig {
            data: config.data.resolved()?,
            ..config
        };
        let lock = match world.rank() {
            0 => Some(RunLock::acquire(out_dir)?),
            _ => None,
        };
        let splits = config.data.load()?;
        let model_config = config.model_config_for(&splits.train)?;
        let stats = splits.train.channel_stats();
        let global_batch = config.batch_size * world.size();
        let steps_per_epoch = splits.train.len() / global_batch;
        if steps_per_epoch == 0 {
            bail!(
                "{} training images are fewer than one batch of {global_batch}{}",
                splits.train.len(),
                match world.size() {
                    1 => String::new(),
                    n => format!(" ({n} processes x {})", config.batch_size),
                }
            );
        }
        let collator = Arc::new(MaskCollator::new(
            config.mask_config(model_config.encoder.grid()),
            config.seed,
        )?);
        let model = IJepa::new(device, &model_config, config.seed)?;
        let mut state = TrainState::new(model, config.max_grad_norm())?;
        state.precision = config.precision;
        Ok(Trainer {
            schedules: config.schedules(steps_per_epoch * config.epochs),
            config,
            state,
            splits: Arc::new(splits),
            stats,
            collator,
            out_dir: out_dir.to_path_buf(),
            step: 0,
            steps_per_epoch,
            checkpointed: None,
            device: device.clone(),
            stop: Arc::new(AtomicBool::new(false)),
            world,
            _lock: lock,
        })
    }

    /// The processes of this run.
    pub fn world(&self) -> &dyn Collective {
        self.world.as_ref()
    }

    /// Set it to stop [`Trainer::run`] after the step in progress, with a checkpoint.
    pub fn stop_handle(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    fn checkpoint_path(&self) -> PathBuf {
        self.out_dir.join(CHECKPOINT)
    }

    /// Where the last finite state of this run is, for the messages of a run that
    /// diverged.
    fn last_good_state(&self) -> String {
        match self.checkpointed {
            Some(step) => format!(
                "The last finite state saved is the checkpoint of step {step} ({})",
                self.checkpoint_path().display()
            ),
            None => "No checkpoint of this run holds a finite state".into(),
        }
    }

    pub fn total_steps(&self) -> usize {
        self.schedules.total_steps
    }

    /// Continue from a checkpoint written by [`Trainer::save`]: weights, optimiser
    /// moments and the step. Data order, crops and masks are functions of (seed, step),
    /// so the run continues exactly as an uninterrupted one would.
    pub fn resume(&mut self, path: &Path) -> Result<()> {
        let checkpoint = Checkpoint::open(path)?;
        let (ranks, here) = (checkpoint.meta.ranks, self.world.size());
        if ranks != here {
            bail!(
                "{}: written by a run of {ranks} process(es) (a global batch of {ranks} x {}), this run has {here}; \
                 resume with {ranks} (mpirun -np {ranks}): the global batch sets the data order and the schedules",
                path.display(),
                checkpoint.meta.pretrain.batch_size
            );
        }
        let differences = checkpoint.meta.pretrain.differences(&self.config);
        if !differences.is_empty() {
            bail!(
                "{}: the checkpoint was written with another configuration; resume with the same one. It differs in {}",
                path.display(),
                differences.join("; ")
            );
        }
        if checkpoint.meta.step > self.total_steps() {
            bail!(
                "{}: step {} is past the {} steps of this configuration",
                path.display(),
                checkpoint.meta.step,
                self.total_steps()
            );
        }
        checkpoint.load_into(&mut self.state)?;
        self.step = checkpoint.meta.step;
        self.checkpointed = Some(self.step);
        Ok(())
    }

    /// Start from the weights of a checkpoint (every encoder, predictor and target
    /// encoder tensor, by its official name and shape), with the optimiser and the step
    /// as they are: fresh. The file's architecture must be this run's.
    pub fn init_from(&mut self, path: &Path) -> Result<()> {
        model::weights::SafetensorsFile::open(path)?.load_into("", &self.state.model.named_params())
    }

    /// Write weights, optimiser moments, step and configuration atomically; a state
    /// with a non-finite value is refused ([`NonFiniteState`]) and nothing is written.
    pub fn save(&self, path: &Path) -> Result<()> {
        let meta = CheckpointMeta {
            step: self.step,
            pretrain: self.config.clone(),
            model: self.state.model.config.clone(),
            channel_stats: self.stats.clone(),
            ranks: self.world.size(),
        };
        checkpoint::save(path, &self.state, &meta)
    }

    /// k-NN top-1 (%) of the target encoder on the held-out monitor subsets, and the
    /// RankMe of its features on the training subset.
    pub fn knn_monitor(&self) -> Result<Option<(f64, f64)>> {
        let (n_train, n_test) = (
            self.config.knn_train.min(self.splits.train.len()),
            self.config.knn_test.min(self.splits.test.len()),
        );
        if n_train == 0 || n_test == 0 {
            return Ok(None);
        }
        let encoder = &self.state.model.target_encoder;
        let features = |data: &Dataset, n: usize| -> Result<(Vec<f32>, Vec<u32>)> {
            let indices = data.subset(n);
            let labels = indices.iter().map(|&i| data.labels[i]).collect();
            Ok((
                pooled_features(encoder, data, &self.stats, &indices, 256, 1)?,
                labels,
            ))
        };
        let (train, test) = (
            features(&self.splits.train, n_train)?,
            features(&self.splits.test, n_test)?,
        );
        let d = self.state.model.config.encoder.embed_dim;
        let knn = knn_accuracy(
            &self.device,
            (&train.0, &train.1),
            (&test.0, &test.1),
            d,
            self.splits.train.classes,
            20,
        )?;
        Ok(Some((knn, rankme(&train.0, d))))
    }

    /// The checksum of every parameter and optimiser moment, equal on every rank of a
    /// healthy data-parallel run.
    fn state_checksum(&self) -> u64 {
        let params = self.state.model.named_params();
        let moments = self.state.optimizer.moments();
        let tensors: Vec<&Tensor> = params
            .iter()
            .map(|(_, t)| t)
            .chain(moments.iter().flat_map(|(_, m, v)| [*m, *v]))
            .collect();
        checksum(&tensors)
    }

    /// Run the next step on one batch (images [B, C, H, W], its masks) with the
    /// schedules' values for that step, and count it.
    pub fn step_on(&mut self, images: &Tensor, masks: &Masks) -> Result<StepResult> {
        let hyper = self.schedules.at(self.step);
        let result = train_step(
            &mut self.state,
            images,
            masks,
            hyper,
            self.world.as_ref(),
            false,
        )
        .map_err(|e| match e.downcast_ref::<NonFiniteLoss>() {
            Some(NonFiniteLoss(loss)) => anyhow::anyhow!(
                "the loss became {loss} at step {}; stopping without updating. {}; \
                     try a lower learning rate or gradient clipping (grad_clip)",
                self.step + 1,
                self.last_good_state()
            ),
            None => e,
        })?;
        self.step += 1;
        Ok(result)
    }

    /// Write the checkpoint of the step reached, unless the state is not finite: then
    /// the run stops with an error that says where the last finite state is.
    fn checkpoint(&mut self) -> Result<()> {
        if self.world.rank() != 0 {
            // Rank 0 writes the state every rank holds.
            self.checkpointed = Some(self.step);
            return Ok(());
        }
        match self.save(&self.checkpoint_path()) {
            Ok(()) => {
                self.checkpointed = Some(self.step);
                Ok(())
            }
            Err(e) => match e.downcast_ref::<NonFiniteState>() {
                Some(bad) => bail!(
                    "the update of step {} made the state non-finite ({bad}); stopping without checkpointing it. {}; \
                     try a lower learning rate or gradient clipping (grad_clip)",
                    self.step,
                    self.last_good_state()
                ),
                None => Err(e),
            },
        }
    }

    /// Run steps until `until` (a step count: the run stops with `self.step == until`),
    /// calling `on_step` after each, checkpointing every `checkpoint_every` steps and at
    /// the end. A stop requested through [`Trainer::stop_handle`] ends the run after
    /// the step in progress, checkpointed.
    pub fn run(&mut self, until: usize, mut on_step: impl FnMut(&StepMetrics)) -> Result<RunEnd> {
        let until = until.min(self.total_steps());
        if self.step >= until {
            return Ok(RunEnd::Reached);
        }
        let (b, rank, ranks) = (self.config.batch_size, self.world.rank(), self.world.size());
        let loader_config = LoaderConfig {
            batch: b * ranks,
            slots: rank * b..(rank + 1) * b,
            image_size: self.splits.train.height,
            crop_scale: self.config.crop_scale,
            crop_ratio: (3.0 / 4.0, 4.0 / 3.0),
            seed: self.config.seed,
            stats: self.stats.clone(),
            workers: self.config.data.workers,
        };
        let loader = BatchLoader::spawn(
            self.splits.train.clone(),
            loader_config,
            self.collator.clone(),
            self.step,
            until,
            4,
        );
        // Steps past the state this run starts from are taken again: their old lines go.
        let metrics_path = self.out_dir.join(METRICS);
        let mut metrics = match rank {
            0 => {
                truncate_metrics(&metrics_path, self.step)?;
                Some(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&metrics_path)
                        .with_context(|| format!("cannot open {}", metrics_path.display()))?,
                )
            }
            _ => None,
        };
        let (c, s) = (self.splits.train.channels, self.splits.train.height);
        let num_patches = self.state.model.config.encoder.num_patches();
        let mut warned = std::collections::HashSet::new();
        let mut replaced_in_epoch = 0;
        while self.step < until {
            let started = Instant::now();
            if self.step.is_multiple_of(self.steps_per_epoch) {
                replaced_in_epoch = 0;
            }
            let batch = loader.next()?;
            replaced_in_epoch += batch.replaced.len();
            for (path, e) in &batch.replaced {
                if warned.insert(path.clone()) {
                    eprintln!("warning: {e}; replaced by another image of the epoch");
                }
            }
            let images = Tensor::from_slice(&self.device, &[b, c, s, s], &batch.images)?;
            let masks = Masks::new(
                &self.device,
                &batch.masks.context,
                &batch.masks.target,
                num_patches,
            )?;
            let result = self.step_on(&images, &masks)?;
            let epoch_end = self.step.is_multiple_of(self.steps_per_epoch);
            let log_detail = self.step.is_multiple_of(50) || epoch_end || self.step == until;
            let target_std = log_detail.then(|| {
                let d = self.state.model.config.encoder.embed_dim;
                feature_std(&result.outputs.target.to_vec(), d)
            });
            let (loss, grad_norm, hyper) = (result.loss, result.grad_norm, result.hyper);
            let (loss_scale, skipped) = (result.loss_scale, result.skipped);
            drop(result);
            // Throughput of the step itself (the global batch), before the monitor below.
            let images_per_s = (b * ranks) as f64 / started.elapsed().as_secs_f64();
            let stopping = any_rank(self.world.as_ref(), self.stop.load(Ordering::SeqCst));
            let monitor = if epoch_end && !stopping && rank == 0 {
                self.knn_monitor()?
            } else {
                None
            };
            let state_checksum = if epoch_end && ranks > 1 {
                let sum = self.state_checksum();
                check_identical(
                    self.world.as_ref(),
                    sum,
                    &format!("after step {}", self.step),
                )?;
                Some(format!("{sum:016x}"))
            } else {
                None
            };
            let m = StepMetrics {
                step: self.step,
                epoch: (self.step - 1) / self.steps_per_epoch,
                loss,
                lr: hyper.lr,
                wd: hyper.weight_decay,
                momentum: hyper.momentum,
                images_per_s,
                context_patches: masks.context.shape()[1],
                target_patches: masks.target.shape()[1],
                target_std,
                grad_norm,
                loss_scale,
                skipped,
                knn_top1: monitor.map(|m| m.0),
                rankme: monitor.map(|m| m.1),
                replaced_images: replaced_in_epoch,
                state_checksum,
            };
            if let Some(metrics) = metrics.as_mut() {
                writeln!(metrics, "{}", serde_json::to_string(&m)?)
                    .with_context(|| format!("cannot write {}", metrics_path.display()))?;
            }
            on_step(&m);
            if stopping
                || self.step.is_multiple_of(self.config.checkpoint_every)
                || self.step == until
            {
                self.checkpoint()?;
            }
            if stopping {
                return Ok(RunEnd::Interrupted);
            }
        }
        Ok(RunEnd::Reached)
    }
}
