//! Batches prepared on a background thread, a few ahead of the GPU (memory is bounded
//! by that queue, not by the data set): shuffled per epoch, decoded and cropped
//! (RandomResizedCrop) on a pool of worker threads, normalised, with their masks.
//! Everything is a function of (seed, step) and the files, so a resumed run sees
//! exactly the batches it would have seen, whatever the worker count.

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::augment::{random_resized_crop_params, resize_crop_normalised, Crop};
use crate::data::{parallel_map, worker_count, Dataset, Image};
use crate::multiblock::{MaskBatch, MaskCollator};

/// One training batch.
pub struct Batch {
    pub step: usize,
    /// [B, C, S, S], normalised.
    pub images: Vec<f32>,
    pub masks: MaskBatch,
    /// Images that could not be read and were replaced: (file, error).
    pub replaced: Vec<(PathBuf, String)>,
}

pub struct LoaderConfig {
    pub batch: usize,
    pub image_size: usize,
    pub crop_scale: (f64, f64),
    pub crop_ratio: (f64, f64),
    pub seed: u64,
    /// Per-channel (mean, std) for normalisation.
    pub stats: Vec<(f32, f32)>,
    /// Threads that decode and crop a batch (0: every core).
    pub workers: usize,
}

impl LoaderConfig {
    /// Full batches per epoch (the last partial batch is dropped).
    pub fn steps_per_epoch(&self, data: &Dataset) -> usize {
        data.len() / self.batch
    }
}

fn rng_for(seed: u64, stream: u64, index: u64) -> StdRng {
    StdRng::seed_from_u64(
        seed ^ stream.wrapping_mul(0xA24B_AED4_963E_E407)
            ^ index.wrapping_mul(0x9FB2_1C65_1E98_DF25),
    )
}

/// The images of epoch `epoch`, in shuffled order.
pub fn epoch_order(data: &Dataset, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..data.len()).collect();
    order.shuffle(&mut rng_for(seed, 1, epoch as u64));
    order
}

/// Build the batch of `step` on the configured number of workers.
pub fn make_batch(
    data: &Dataset,
    config: &LoaderConfig,
    collator: &MaskCollator,
    order: &[usize],
    step: usize,
) -> Result<Batch> {
    make_batch_on_threads(data, config, collator, order, step, config.workers)
}

/// `make_batch` on `threads` threads (0: every core); the batch does not depend on the
/// count. The images are decoded on every thread; an image that cannot be read is
/// replaced, in batch order, by the images that follow the batch in the epoch's order
/// (so the batch depends on the files, never on timing); then the crops are drawn in
/// image order from the step's generator, and the images resized on every thread.
pub fn make_batch_on_threads(
    data: &Dataset,
    config: &LoaderConfig,
    collator: &MaskCollator,
    order: &[usize],
    step: usize,
    threads: usize,
) -> Result<Batch> {
    let per_epoch = config.steps_per_epoch(data);
    let first = (step % per_epoch) * config.batch;
    let mut picked = order[first..first + config.batch].to_vec();
    let mut sources = parallel_map(&picked, threads, |&i| data.source(i));
    let mut replaced = Vec::new();
    let mut next = first + config.batch;
    for (slot, source) in picked.iter_mut().zip(sources.iter_mut()) {
        while let Err(e) = source {
            if replaced.len() >= data.len() {
                bail!("no readable image left to replace unreadable ones in step {step}");
            }
            let path = data.path(*slot).map(Path::to_path_buf).unwrap_or_default();
            replaced.push((path, format!("{e:#}")));
            *slot = order[next % order.len()];
            next += 1;
            *source = data.source(*slot);
        }
    }
    let sources: Vec<Image> = sources.into_iter().collect::<Result<_>>()?;
    let mut rng = rng_for(config.seed, 2, step as u64);
    let jobs: Vec<(Image, Crop)> = sources
        .into_iter()
        .map(|image| {
            let crop = random_resized_crop_params(
                &mut rng,
                image.height,
                image.width,
                config.crop_scale,
                config.crop_ratio,
            );
            (image, crop)
        })
        .collect();
    let image_len = data.channels * config.image_size * config.image_size;
    let mut images = vec![0f32; config.batch * image_len];
    let per_thread = jobs.len().div_ceil(worker_count(threads)).max(1);
    std::thread::scope(|scope| {
        for (jobs, out) in jobs
            .chunks(per_thread)
            .zip(images.chunks_mut(per_thread * image_len))
        {
            scope.spawn(move || {
                for ((image, crop), out) in jobs.iter().zip(out.chunks_mut(image_len)) {
                    resize_crop_normalised(image, *crop, config.image_size, &config.stats, out);
                }
            });
        }
    });
    Ok(Batch {
        step,
        images,
        masks: collator.sample(step as u64, config.batch)?,
        replaced,
    })
}

/// Produces batches `start..end` on a background thread, `ahead` at most in flight.
pub struct BatchLoader {
    rx: Receiver<Result<Batch>>,
    _thread: JoinHandle<()>,
}

impl BatchLoader {
    pub fn spawn(
        data: Arc<Dataset>,
        config: LoaderConfig,
        collator: Arc<MaskCollator>,
        start: usize,
        end: usize,
        ahead: usize,
    ) -> BatchLoader {
        let (tx, rx) = sync_channel(ahead);
        let thread = std::thread::spawn(move || {
            let per_epoch = config.steps_per_epoch(&data);
            let mut cached: Option<(usize, Vec<usize>)> = None;
            for step in start..end {
                let epoch = step / per_epoch;
                if cached.as_ref().is_none_or(|(e, _)| *e != epoch) {
                    cached = Some((epoch, epoch_order(&data, config.seed, epoch)));
                }
                let order = &cached.as_ref().unwrap().1;
                if tx
                    .send(make_batch(&data, &config, &collator, order, step))
                    .is_err()
                {
                    return;
                }
            }
        });
        BatchLoader {
            rx,
            _thread: thread,
        }
    }

    /// The next batch; an error if the producer failed or stopped early.
    pub fn next(&self) -> Result<Batch> {
        self.rx
            .recv()
            .map_err(|_| anyhow::anyhow!("the data loader stopped"))?
    }
}
