//! Data parallelism: the processes of a run, as the trainer sees them. Each process
//! (a rank) computes the step on its share of the global batch; gradients are averaged
//! over the ranks before the optimiser, so every rank applies the same update and the
//! ranks stay identical, which a checksum of the whole state verifies every epoch.
//!
//! The trainer calls only [`Collective`]; `Single` is the one-process run, and the CLI
//! implements it over MPI (the `mpi` feature).

use anyhow::{bail, Result};
use engine::{ops, Tensor};

/// What a data-parallel run needs of its processes.
pub trait Collective {
    /// This process's rank, from 0.
    fn rank(&self) -> usize;
    /// The number of processes.
    fn size(&self) -> usize;
    /// Sum `values` over every process, in place: every process gets the sum.
    fn all_reduce_sum(&self, values: &mut [f32]);
    /// Every process's `value`, in rank order.
    fn all_gather(&self, value: u64) -> Vec<u64>;
}

/// A run of one process.
pub struct Single;

impl Collective for Single {
    fn rank(&self) -> usize {
        0
    }

    fn size(&self) -> usize {
        1
    }

    fn all_reduce_sum(&self, _values: &mut [f32]) {}

    fn all_gather(&self, value: u64) -> Vec<u64> {
        vec![value]
    }
}

/// Replace the packed gradients (`AdamWOptimizer::gradient_buckets`) by their mean
/// over the ranks: read back once, all-reduced as one flat buffer, and written back.
/// Nothing to do for one process.
pub fn average_gradients(world: &dyn Collective, buckets: &[&Tensor]) -> Result<()> {
    if world.size() == 1 {
        return Ok(());
    }
    // Side by side on the GPU, so that one readback waits for the device, not one per
    // bucket.
    let rows = buckets
        .iter()
        .map(|b| ops::reshape(b, &[1, b.numel()]))
        .collect::<engine::Result<Vec<_>>>()?;
    let mut flat = ops::concat(&rows.iter().collect::<Vec<_>>(), 1)?.to_vec();
    world.all_reduce_sum(&mut flat);
    let scale = 1.0 / world.size() as f32;
    flat.iter_mut().for_each(|v| *v *= scale);
    let mut offset = 0;
    for b in buckets {
        b.write(&flat[offset..offset + b.numel()])?;
        offset += b.numel();
    }
    Ok(())
}

/// The mean of a per-rank value over the ranks (every rank has as many elements).
pub fn mean_over_ranks(world: &dyn Collective, value: f32) -> f32 {
    let mut v = [value];
    world.all_reduce_sum(&mut v);
    v[0] / world.size() as f32
}

/// FNV-1a over the bytes of every tensor, in order: equal states give equal sums.
pub fn checksum(tensors: &[&Tensor]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for t in tensors {
        for v in t.to_vec() {
            for byte in v.to_bits().to_le_bytes() {
                hash = (hash ^ byte as u64).wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
    }
    hash
}

/// Check that every rank holds the state whose checksum this rank computed; the error
/// names the ranks that differ from rank 0.
pub fn check_identical(world: &dyn Collective, sum: u64, when: &str) -> Result<()> {
    let sums = world.all_gather(sum);
    let differ: Vec<String> = sums
        .iter()
        .enumerate()
        .filter(|(_, &s)| s != sums[0])
        .map(|(r, s)| format!("rank {r} ({s:016x})"))
        .collect();
    if !differ.is_empty() {
        bail!(
            "{when}: the parameters and optimiser state of {} differ from rank 0's ({:016x}); the ranks no longer train one model",
            differ.join(", "),
            sums[0]
        );
    }
    Ok(())
}

/// Whether any rank asks for `flag` (a stop, say): all ranks then act on it together.
pub fn any_rank(world: &dyn Collective, flag: bool) -> bool {
    if world.size() == 1 {
        return flag;
    }
    world.all_gather(flag as u64).into_iter().any(|v| v != 0)
}
