//! Tour chapter 5 (docs/tour/05-softmax-layernorm.md): the row kernels and their
//! numerics. Softmax subtracts the row maximum before exponentiating; LayerNorm takes
//! the variance in two passes; both are held, forward and backward, to the f64 CPU
//! reference.
//!
//! Run: cargo run --release --example 05_softmax_layernorm

use engine::cpu::{self, max_abs_diff, seeded_uniform};
use engine::ops::{layernorm, softmax};
use engine::{Device, Tensor};

/// Softmax of one row in f32 as the formula reads, without the max subtraction.
fn naive_softmax(row: &[f32]) -> Vec<f32> {
    let e: Vec<f32> = row.iter().map(|v| v.exp()).collect();
    let s: f32 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

/// Variance of one row in f32 as E[x^2] - E[x]^2: one pass, and cancellation.
fn one_pass_variance(row: &[f32]) -> f32 {
    let n = row.len() as f32;
    let mean = row.iter().sum::<f32>() / n;
    row.iter().map(|v| v * v).sum::<f32>() / n - mean * mean
}

fn main() -> anyhow::Result<()> {
    engine::device::private_runtime_dir();
    let device = Device::shared()?;

    // Softmax of large logits: exp(1000) overflows f32.
    let logits = [1000.0f32, 1001.0, 1002.0];
    let gpu = softmax::softmax_forward(&Tensor::from_slice(&device, &[1, 3], &logits)?)?;
    println!("softmax {logits:?}");
    println!("  naive f32:          {:?}", naive_softmax(&logits));
    println!("  kernel (max first): {:?}", gpu.to_vec());
    println!("  f64 reference:      {:?}", cpu::softmax(&logits, 3));

    // Forward and backward on rows of scores as attention makes them (scale 8).
    let (rows, cols) = (64, 50);
    let x: Vec<f32> = seeded_uniform(1, rows * cols)
        .iter()
        .map(|v| 8.0 * v)
        .collect();
    let dy = seeded_uniform(2, rows * cols);
    let xt = Tensor::from_slice(&device, &[rows, cols], &x)?;
    let y = softmax::softmax_forward(&xt)?;
    let dx = softmax::softmax_backward(&y, &Tensor::from_slice(&device, &[rows, cols], &dy)?)?;
    let y_ref = cpu::softmax(&x, cols);
    println!(
        "softmax [{rows}, {cols}]: forward max error {:.1e}, backward max error {:.1e}",
        max_abs_diff(&y.to_vec(), &y_ref),
        max_abs_diff(&dx.to_vec(), &cpu::softmax_backward(&y_ref, &dy, cols))
    );

    // LayerNorm of a row with a large mean and a small spread.
    let row: Vec<f32> = seeded_uniform(3, 384)
        .iter()
        .map(|v| 1e4 + 0.01 * v)
        .collect();
    let (_, stats) = cpu::layernorm(&row, 384, None, 0.0);
    let var_ref = 1.0 / (stats[0].1 * stats[0].1);
    let (_, saved) =
        layernorm::layernorm_forward(&Tensor::from_slice(&device, &[1, 384], &row)?, None, 0.0)?;
    let rstd = saved.stats.to_vec()[1] as f64;
    println!("variance of 1e4 + 0.01 u, u uniform in [-1, 1), 384 columns");
    println!("  one pass in f32:    {:.3e}", one_pass_variance(&row));
    println!("  kernel (two pass):  {:.3e}", 1.0 / (rstd * rstd));
    println!("  f64 reference:      {var_ref:.3e}");

    // Forward and backward with gamma and beta, at the encoder's eps.
    let (rows, cols, eps) = (64, 192, 1e-6);
    let x = seeded_uniform(4, rows * cols);
    let (gamma, beta, dy) = (
        seeded_uniform(5, cols),
        seeded_uniform(6, cols),
        seeded_uniform(7, rows * cols),
    );
    let t = |shape: &[usize], v: &[f32]| Tensor::from_slice(&device, shape, v);
    let (g, b) = (t(&[cols], &gamma)?, t(&[cols], &beta)?);
    let (y, saved) = layernorm::layernorm_forward(&t(&[rows, cols], &x)?, Some((&g, &b)), eps)?;
    let (dx, affine_grads) =
        layernorm::layernorm_backward(&saved, Some(&g), &t(&[rows, cols], &dy)?)?;
    let (dgamma, _) = affine_grads.expect("gradients of gamma and beta");
    let (y_ref, _) = cpu::layernorm(&x, cols, Some((&gamma, &beta)), eps as f64);
    let (dx_ref, dgamma_ref, _) = cpu::layernorm_backward(&x, &dy, cols, Some(&gamma), eps as f64);
    println!(
        "layernorm [{rows}, {cols}]: forward max error {:.1e}, dx {:.1e}, dgamma {:.1e}",
        max_abs_diff(&y.to_vec(), &y_ref),
        max_abs_diff(&dx.to_vec(), &dx_ref),
        max_abs_diff(&dgamma.to_vec(), &dgamma_ref)
    );
    Ok(())
}
