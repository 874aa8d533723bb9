//! Tour chapter 12 (docs/tour/12-speed-and-precision.md): one training step counted
//! (dispatches, buffer copies, submits, peak memory), the plans three of its products
//! run on here and would run on a GPU, and the same step in mixed precision held to the
//! f32 one, with the reason for the loss scale: the gradient the backward starts from,
//! seen through f16's range.
//!
//! Run: cargo run --release --example 12_speed_and_precision

use engine::ops::cast::cast_forward;
use engine::ops::matmul::{Epilogue, MatmulPlan, MatmulShape, Transpose};
use engine::{DType, Device, Precision, Tensor};
use half::f16;
use model::ijepa::LOSS_BETA;
use train::config::PretrainConfig;
use train::synthetic::SyntheticRun;

/// `x` rounded to the nearest f16 value, ties to even.
fn round_to_f16(x: f64) -> f64 {
    f16::from_f64(x).to_f64()
}

fn main() -> anyhow::Result<()> {
    engine::device::private_runtime_dir();
    let device = Device::shared()?;
    let batch = 16;
    let mut config = PretrainConfig::preset("fmnist-cpu")?;
    config.batch_size = batch;

    // The same step (weights, images, masks) in f32 and in mixed precision.
    let mut steps = Vec::new();
    for precision in [Precision::F32, Precision::Mixed] {
        config.precision = precision;
        let mut run = SyntheticRun::new(&device, config.clone(), 1)?;
        let before = device.counts();
        let step = run.step(0, true)?;
        let after = device.counts();
        let phases = step.phases.expect("phases were timed");
        let mib = |bytes: u64| bytes as f64 / (1 << 20) as f64;
        println!(
            "{} step, batch {batch}: {} dispatches, {} buffer copies, {} submits; peak tensors forward {:.1} MiB, backward {:.1} MiB, update {:.1} MiB",
            precision.name(),
            after.dispatches - before.dispatches,
            after.copies - before.copies,
            after.submits - before.submits,
            mib(phases.peak_bytes[0]),
            mib(phases.peak_bytes[1]),
            mib(phases.peak_bytes[2]),
        );
        // Gradients by parameter name, of the loss itself (the mixed backward's are
        // the loss scale's multiple).
        let unscale = 1.0 / step.loss_scale.unwrap_or(1.0) as f64;
        let grads: Vec<(String, Vec<f64>)> = run
            .state
            .model
            .trainable_params()
            .into_iter()
            .map(|(name, p)| {
                let g = step.grads.get(&p).expect("every parameter has a gradient");
                let values = g.to_vec().iter().map(|&v| v as f64 * unscale).collect();
                (name, values)
            })
            .collect();
        steps.push((step, grads));
    }
    let (f32_step, f32_grads) = &steps[0];
    let (mixed_step, mixed_grads) = &steps[1];

    // Where the target encoder's qkv products run: this adapter's rules, then a GPU's.
    let encoder = config.model_config(1, 28)?.encoder;
    let (rows, d) = (batch * encoder.num_patches(), encoder.embed_dim);
    let x = Tensor::zeros(&device, &[rows, d])?;
    let w = Tensor::zeros(&device, &[3 * d, d])?;
    let dc = Tensor::zeros(&device, &[rows, 3 * d])?;
    let products = [
        (
            "qkv projection x W^T + bias",
            MatmulShape::of(
                &x,
                &w,
                Transpose::B,
                Some(&Tensor::zeros(&device, &[3 * d])?),
                Epilogue::None,
            )?,
        ),
        (
            "its weight gradient dc^T x, with the bias gradient",
            MatmulShape::of(&dc, &x, Transpose::A, None, Epilogue::RowSums)?,
        ),
        (
            "its input gradient dc W, mixed (W in f16)",
            MatmulShape::of(
                &dc,
                &cast_forward(&w, DType::F16)?,
                Transpose::NONE,
                None,
                Epilogue::None,
            )?,
        ),
    ];
    for (rules, gpu) in [
        (device.info().name.clone(), false),
        ("a GPU".to_string(), true),
    ] {
        device.set_gpu_plans(gpu);
        println!("plans on {rules}:");
        for (what, shape) in &products {
            println!("  {what}: {}", MatmulPlan::new(&device, shape).describe());
        }
    }
    device.set_gpu_plans(false);

    // Mixed against f32.
    let (loss32, loss16) = (f32_step.loss as f64, mixed_step.loss as f64);
    println!(
        "loss: f32 {loss32:.7}, mixed {loss16:.7}, relative difference {:.1e}",
        (loss16 - loss32).abs() / loss32.abs()
    );
    let (mut diff, mut norm) = (0.0, 0.0);
    for ((name, g32), (name16, g16)) in f32_grads.iter().zip(mixed_grads) {
        assert_eq!(name, name16);
        for (a, b) in g32.iter().zip(g16) {
            diff += (a - b) * (a - b);
            norm += a * a;
        }
    }
    println!(
        "gradients of {} tensors: mixed against f32, relative L2 {:.1e}",
        f32_grads.len(),
        (diff / norm).sqrt()
    );

    // The gradient the backward starts from, dloss/dprediction of the mean smooth L1,
    // is what the predictor's last product multiplies first: in f16 under mixed
    // precision. Its values, unscaled and times the loss scale, against f16's range.
    let outputs = &f32_step.outputs;
    let (pred, target) = (outputs.prediction.to_vec(), outputs.target.to_vec());
    let n = pred.len() as f64;
    let beta = LOSS_BETA as f64;
    let seed: Vec<f64> = pred
        .iter()
        .zip(&target)
        .map(|(&p, &t)| (p as f64 - t as f64).clamp(-beta, beta) / beta / n)
        .collect();
    let scale = mixed_step
        .loss_scale
        .expect("a mixed step has a loss scale") as f64;
    for (what, by) in [("unscaled", 1.0), ("times the loss scale", scale)] {
        let scaled: Vec<f64> = seed.iter().map(|g| g * by).collect();
        // Below f16's smallest normal value, 2^-14, f16 keeps fewer significant bits.
        let subnormal = scaled
            .iter()
            .filter(|g| g.abs() < f16::MIN_POSITIVE.to_f64())
            .count();
        let zeros = scaled
            .iter()
            .filter(|&&g| g != 0.0 && round_to_f16(g) == 0.0)
            .count();
        let error = scaled
            .iter()
            .filter(|&&g| g != 0.0)
            .map(|&g| ((round_to_f16(g) - g) / g).abs())
            .fold(0.0, f64::max);
        println!(
            "dloss/dprediction ({} values), {what} ({by}): below f16's smallest normal {:.1}%, rounded to zero {zeros}, worst relative error of their f16 rounding {error:.1e}",
            seed.len(),
            100.0 * subnormal as f64 / n,
        );
    }
    Ok(())
}
