//! Tour chapter 6 (docs/tour/06-attention.md): attention composed from matmul, scale
//! and softmax (the [N, N] scores materialised), then the fused kernels that stream
//! over the keys with an online softmax, save only each row's log-sum-exp, and
//! recompute the scores in the backward. Each fused family that runs on this adapter
//! is held to the composed path, forward and backward.
//!
//! Run: cargo run --release --example 06_attention

use std::time::Instant;

use engine::cpu::{max_abs_diff, seeded_uniform};
use engine::ops::attention::{attention_with, AttentionPath, AttentionPlan, AttentionShape};
use engine::{backward, ops, Device, Tensor};

fn main() -> anyhow::Result<()> {
    engine::device::private_runtime_dir();
    let device = Device::shared()?;
    // The fmnist encoder's shape: 49 patches, 4 heads of 16, a batch of 8.
    let (batch, tokens, heads, head_dim) = (8, 49, 4, 16);
    let width = heads * head_dim;
    let qkv_host = seeded_uniform(1, batch * tokens * 3 * width);
    let weights = Tensor::from_slice(
        &device,
        &[batch, tokens, width],
        &seeded_uniform(2, batch * tokens * width),
    )?;
    let scale = (head_dim as f32).powf(-0.5);
    let shape = AttentionShape::of(
        &Tensor::from_slice(&device, &[batch, tokens, 3 * width], &qkv_host)?,
        heads,
    )?;

    // out and dqkv of loss = sum(out * weights) on one plan, and its time per pass.
    let run = |plan: &AttentionPlan| -> anyhow::Result<(Vec<f32>, Vec<f32>, f64)> {
        let qkv =
            Tensor::from_slice(&device, &[batch, tokens, 3 * width], &qkv_host)?.requires_grad();
        let start = Instant::now();
        let out = attention_with(plan, &qkv, heads, scale)?;
        let grads = backward(&ops::sum(&ops::mul(&out, &weights)?)?)?;
        let dqkv = grads.get(&qkv).expect("qkv requires grad").to_vec();
        Ok((out.to_vec(), dqkv, start.elapsed().as_secs_f64()))
    };

    let chosen = AttentionPlan::new(&device, &shape);
    println!(
        "{}: qkv [{batch}, {tokens}, {}], {heads} heads of {head_dim}",
        device.info().name,
        3 * width
    );
    let composed = AttentionPlan {
        path: AttentionPath::Composed,
        shape,
    };
    let (out_ref, dqkv_ref, _) = run(&composed)?;
    for plan in AttentionPlan::candidates(&device, &shape) {
        run(&plan)?; // compiles the pipelines
        let (out, dqkv, secs) = run(&plan)?;
        let mark = if plan == chosen { "  <- the plan" } else { "" };
        println!(
            "{:<16} out vs composed {:.1e}, dqkv vs composed {:.1e}, forward + backward {:5.2} ms{mark}",
            format!("{:?}", plan.path),
            max_abs_diff(&out, &out_ref),
            max_abs_diff(&dqkv, &dqkv_ref),
            secs * 1e3
        );
    }
    Ok(())
}
