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

use crate::augment::{random_resized_crop_params, resize_crop_normalised};
use crate::data::{worker_count, Dataset};
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
    /// The global batch: every process of a data-parallel run draws the same order,
    /// crops and masks for it.
    pub batch: usize,
    /// The slots of the global batch this process loads (all of them in a run of one
    /// process; rank r of n takes the r-th n-th).
    pub slots: std::ops::Range<usize>,
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

/// Tries at one slot of a batch before the batch fails: the image, then as many
/// replacements.
const ATTEMPTS: usize = 64;

/// `make_batch` on `threads` threads (0: every core), each taking a consecutive run of
/// the batch's slots; the batch does not depend on the count. Each slot is decoded,
/// cropped (RandomResizedCrop drawn from the slot's own generator, a function of the
/// seed, the step and the slot) and resized in one pass. An image that cannot be read
/// is replaced by the image at the same slot of the next batch of the epoch's order,
/// then of the one after, so that the batch depends on the files, never on timing.
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
    let image_len = data.channels * config.image_size * config.image_size;
    if config.slots.is_empty() || config.slots.end > config.batch {
        bail!(
            "the slots {:?} of a process are not a part of the batch of {}",
            config.slots,
            config.batch
        );
    }
    let mut images = vec![0f32; config.slots.len() * image_len];
    let fill = |slot: usize, out: &mut [f32]| -> Result<Vec<(PathBuf, String)>> {
        let mut replaced = Vec::new();
        for attempt in 0..ATTEMPTS {
            let i = order[(first + slot + attempt * config.batch) % order.len()];
            match data.source(i) {
                Ok(image) => {
                    let mut rng = rng_for(config.seed, 2, (step * config.batch + slot) as u64);
                    let crop = random_resized_crop_params(
                        &mut rng,
                        image.height,
                        image.width,
                        config.crop_scale,
                        config.crop_ratio,
                    );
                    resize_crop_normalised(&image, crop, config.image_size, &config.stats, out);
                    return Ok(replaced);
                }
                Err(e) => {
                    let path = data.path(i).map(Path::to_path_buf).unwrap_or_default();
                    replaced.push((path, format!("{e:#}")));
                }
            }
        }
        bail!(
            "step {step}: {ATTEMPTS} unreadable images in a row at slot {slot}, the last: {}",
            replaced.last().map_or(String::new(), |r| r.1.clone())
        )
    };
    let per_thread = config.slots.len().div_ceil(worker_count(threads)).max(1);
    let slots: Vec<usize> = config.slots.clone().collect();
    let replaced = std::thread::scope(|scope| {
        let workers: Vec<_> = slots
            .chunks(per_thread)
            .zip(images.chunks_mut(per_thread * image_len))
            .map(|(slots, out)| {
                let fill = &fill;
                scope.spawn(move || -> Result<Vec<(PathBuf, String)>> {
                    let mut replaced = Vec::new();
                    for (&slot, out) in slots.iter().zip(out.chunks_mut(image_len)) {
                        replaced.extend(fill(slot, out)?);
                    }
                    Ok(replaced)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("a data worker thread panicked"))
            .collect::<Result<Vec<_>>>()
    })?;
    Ok(Batch {
        step,
        images,
        masks: collator
            .sample(step as u64, config.batch)?
            .images(config.slots.clone()),
        replaced: replaced.concat(),
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
