//! Tour chapter 2 (docs/tour/02-tensors-and-pool.md): tensors are handles on pooled GPU
//! buffers; reshapes and clones share storage; a step that has run once allocates
//! nothing new; and reading a value back forces a submit and a wait, which is why
//! nothing inside a training step reads back.
//!
//! Run: cargo run --release --example 02_tensors_and_pool

use std::time::Instant;

use engine::cpu::seeded_uniform;
use engine::{ops, Device, Tensor};

fn main() -> anyhow::Result<()> {
    engine::device::private_runtime_dir();
    let device = Device::shared()?;

    // A tensor: shape on the host, f32 storage in a GPU buffer lent by the pool.
    let x = Tensor::from_slice(&device, &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])?;
    let flat = ops::reshape(&x, &[6])?;
    println!(
        "x {:?} = {:?}; reshaped to {:?} it reads {:?} from the same buffer",
        x.shape(),
        x.to_vec(),
        flat.shape(),
        flat.to_vec()
    );
    // Writing through one handle is seen through the other: they share storage.
    x.write(&[6.0, 5.0, 4.0, 3.0, 2.0, 1.0])?;
    println!(
        "after x.write, the reshaped handle reads {:?}",
        flat.to_vec()
    );

    // The pool: an op's output takes a free buffer of the right size class when one
    // exists; dropping a tensor gives its buffer back. The first pass creates buffers,
    // the next ones reuse them.
    let w = Tensor::from_slice(&device, &[64, 64], &seeded_uniform(1, 64 * 64))?;
    let input = Tensor::from_slice(&device, &[128, 64], &seeded_uniform(2, 128 * 64))?;
    let layer = |x: &Tensor| -> anyhow::Result<Tensor> {
        let h = ops::gelu(&ops::matmul(x, &w, ops::Transpose::NONE, None)?)?;
        Ok(ops::layernorm(&h, None, 1e-6)?)
    };
    for pass in 1..=3 {
        let created = device.buffers_created();
        let mut h = input.clone();
        for _ in 0..4 {
            h = layer(&h)?;
        }
        device.synchronize();
        println!(
            "pass {pass}: 4 layers created {} new buffers (the pool holds {} KiB)",
            device.buffers_created() - created,
            device.memory_held() / 1024
        );
    }

    // Reading back inside a loop: every `to_vec` submits the recorded work and waits
    // for the GPU, so the GPU idles while the host prepares the next dispatches.
    let chain = |read_each: bool| -> anyhow::Result<(u64, f64)> {
        let before = device.counts().submits;
        let start = Instant::now();
        let mut h = input.clone();
        for _ in 0..32 {
            h = layer(&h)?;
            if read_each {
                h.to_vec();
            }
        }
        h.to_vec();
        Ok((
            device.counts().submits - before,
            start.elapsed().as_secs_f64(),
        ))
    };
    chain(false)?;
    let (submits_free, secs_free) = chain(false)?;
    let (submits_read, secs_read) = chain(true)?;
    println!(
        "32 layers read once at the end: {submits_free} submits, {:.1} ms",
        secs_free * 1e3
    );
    println!(
        "32 layers read after each: {submits_read} submits, {:.1} ms",
        secs_read * 1e3
    );
    Ok(())
}
