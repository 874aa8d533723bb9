//! Batches prepared on a background thread, a few ahead of the GPU: shuffled per
//! epoch, RandomResizedCrop, normalised, with their masks. Everything is a function of
//! (seed, step), so a resumed run sees exactly the batches it would have seen.

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::Result;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::augment::{random_resized_crop_params, resize_crop_normalised};
use crate::data::Dataset;
use crate::multiblock::{MaskBatch, MaskCollator};

/// One training batch.
pub struct Batch {
    pub step: usize,
    /// [B, C, S, S], normalised.
    pub images: Vec<f32>,
    pub masks: MaskBatch,
}

pub struct LoaderConfig {
    pub batch: usize,
    pub image_size: usize,
    pub crop_scale: (f64, f64),
    pub crop_ratio: (f64, f64),
    pub seed: u64,
    /// Per-channel (mean, std) for normalisation.
    pub stats: Vec<(f32, f32)>,
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

/// Build the batch of `step`, resizing on every core.
pub fn make_batch(
    data: &Dataset,
    config: &LoaderConfig,
    collator: &MaskCollator,
    order: &[usize],
    step: usize,
) -> Result<Batch> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    make_batch_on_threads(data, config, collator, order, step, threads)
}

/// `make_batch` on at most `threads` threads (the batch does not depend on it).
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
    let picked = &order[first..first + config.batch];
    let (c, s) = (data.channels, config.image_size);
    // The crops are drawn in image order from the step's generator, then the images are
    // resized on every core: the batch is the same whatever the core count.
    let mut rng = rng_for(config.seed, 2, step as u64);
    let crops: Vec<_> = picked
        .iter()
        .map(|_| {
            random_resized_crop_params(
                &mut rng,
                data.height,
                data.width,
                config.crop_scale,
                config.crop_ratio,
            )
        })
        .collect();
    let image_len = c * s * s;
    let mut images = vec![0f32; config.batch * image_len];
    let per_thread = config.batch.div_ceil(threads.max(1)).max(1);
    let plane = data.height * data.width;
    std::thread::scope(|scope| {
        for ((picked, crops), out) in picked
            .chunks(per_thread)
            .zip(crops.chunks(per_thread))
            .zip(images.chunks_mut(per_thread * image_len))
        {
            scope.spawn(move || {
                for ((&i, &crop), out) in picked.iter().zip(crops).zip(out.chunks_mut(image_len)) {
                    for ch in 0..c {
                        let src = &data.image(i)[ch * plane..(ch + 1) * plane];
                        let (mean, std) = config.stats[ch];
                        let dst = &mut out[ch * s * s..(ch + 1) * s * s];
                        resize_crop_normalised(src, data.width, crop, s, mean, std, dst);
                    }
                }
            });
        }
    });
    Ok(Batch {
        step,
        images,
        masks: collator.sample(step as u64, config.batch)?,
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
