//! Tour chapter 4 (docs/tour/04-matmul.md): every matmul kernel the engine has, from
//! register blocks with scalar loads to workgroup-memory tiles, run on one product,
//! checked against the CPU reference and timed on this adapter. The plan's own choice
//! is marked.
//!
//! Run: cargo run --release --example 04_matmul [size]   (default 256: size^3 product)

use std::time::Instant;

use engine::cpu::{self, max_abs_diff, seeded_uniform};
use engine::ops::matmul::{matmul_with, Epilogue, MatmulPlan, MatmulShape, Transpose};
use engine::{Device, Tensor};

fn main() -> anyhow::Result<()> {
    engine::device::private_runtime_dir();
    let size: usize = match std::env::args().nth(1) {
        Some(arg) => arg
            .parse()
            .map_err(|e| anyhow::anyhow!("size `{arg}`: {e}; expected a whole number"))?,
        None => 256,
    };
    let device = Device::shared()?;
    let (m, k, n) = (size, size, size);
    let (a_host, b_host) = (seeded_uniform(1, m * k), seeded_uniform(2, k * n));
    let a = Tensor::from_slice(&device, &[m, k], &a_host)?;
    let b = Tensor::from_slice(&device, &[k, n], &b_host)?;
    let want = cpu::matmul(&a_host, &b_host, None, 1, m, k, n, false, false, true);

    let shape = MatmulShape::of(&a, &b, Transpose::NONE, None, Epilogue::None)?;
    let chosen = MatmulPlan::new(&device, &shape);
    println!("{} ({m}x{k} @ {k}x{n})", device.info().name);
    println!(
        "{:<17} {:<50} {:>10} {:>9}",
        "kernel", "tile", "max error", "GFLOP/s"
    );
    for plan in MatmulPlan::candidates(&device, &shape) {
        // The first run compiles the pipeline; it is also the one checked.
        let got = matmul_with(&plan, &a, &b, None)?.to_vec();
        let err = max_abs_diff(&got, &want);
        // Enough repetitions for about a quarter of a second.
        let start = Instant::now();
        matmul_with(&plan, &a, &b, None)?;
        device.synchronize();
        let once = start.elapsed().as_secs_f64();
        let reps = ((0.25 / once) as usize).clamp(1, 200);
        let start = Instant::now();
        for _ in 0..reps {
            matmul_with(&plan, &a, &b, None)?;
        }
        device.synchronize();
        let secs = start.elapsed().as_secs_f64() / reps as f64;
        let gflops = 2.0 * (m * n * k) as f64 / secs / 1e9;
        let mark = if plan == chosen { "  <- the plan" } else { "" };
        println!(
            "{:<17} {:<50} {err:>10.1e} {gflops:>9.1}{mark}",
            format!("{:?}", plan.kernel),
            plan.kernel.tile(),
        );
    }
    Ok(())
}
