//! Tour chapter 3 (docs/tour/03-tape.md): the autodiff tape. Ops record a node with a
//! backward closure; `backward` walks the nodes in reverse; a tensor used twice gets
//! the sum of its gradients; `no_grad` records nothing; and a finite-difference
//! gradcheck holds the whole graph's gradients to the numbers.
//!
//! Run: cargo run --release --example 03_tape

use engine::cpu::{max_abs_diff, seeded_uniform};
use engine::{backward, gradcheck, no_grad, ops, tape, Device, GradcheckOptions, Tensor};

fn main() -> anyhow::Result<()> {
    engine::device::private_runtime_dir();
    let device = Device::shared()?;

    // y = sum(x * x): x is used twice by `mul`, so dy/dx = x + x.
    let values = [1.0, -2.0, 0.5, 3.0];
    let x = Tensor::from_slice(&device, &[4], &values)?.requires_grad();
    let y = ops::sum(&ops::mul(&x, &x)?)?;
    println!("recorded {} nodes: mul, sum", tape::len());
    let grads = backward(&y)?;
    let dx = grads.get(&x).expect("x requires grad").to_vec();
    let want: Vec<f32> = values.iter().map(|v| 2.0 * v).collect();
    println!(
        "y = sum(x * x) = {}; dy/dx = {dx:?} (2x = {want:?}); the tape is empty again: {} nodes",
        y.item(),
        tape::len()
    );

    // Under no_grad nothing is recorded: the target encoder and evaluation run so.
    let z = no_grad(|| ops::sum(&ops::mul(&x, &x)?))?;
    println!(
        "under no_grad: {} nodes recorded, output tracks gradients: {}",
        tape::len(),
        z.tracks_grad()
    );

    // A small network, every op on the tape, checked by central differences through
    // the same kernels: loss = mean(layernorm(gelu(x w1^T + b1)) w2), w1 in the torch
    // layout [out, in].
    let shapes = [vec![6, 8], vec![16, 8], vec![16], vec![16, 4]];
    let inputs: Vec<(Vec<usize>, Vec<f32>)> = shapes
        .iter()
        .enumerate()
        .map(|(i, s)| (s.clone(), seeded_uniform(i as u64, s.iter().product())))
        .collect();
    let network = |t: &[Tensor]| -> engine::Result<Tensor> {
        let h = ops::gelu(&ops::linear(&t[0], &t[1], Some(&t[2]))?)?;
        let h = ops::layernorm(&h, None, 1e-5)?;
        ops::mean(&ops::matmul(&h, &t[3], ops::Transpose::NONE, None)?)
    };
    let report = gradcheck(&device, &inputs, network, GradcheckOptions::default())?;
    println!(
        "gradcheck of mean(layernorm(gelu(x w1^T + b1)) w2): {} entries, worst ratio {:.3} (passes at <= 1): {}",
        report.checked,
        report.worst_ratio,
        if report.passed() { "passed" } else { "FAILED" }
    );

    // Gradient accumulation over micro-batches is the sum of their gradients.
    let w = Tensor::from_slice(&device, &[8, 4], &seeded_uniform(7, 32))?.requires_grad();
    let batch = seeded_uniform(8, 6 * 8);
    let loss_of = |rows: &[f32], n: usize| -> engine::Result<Tensor> {
        let x = Tensor::from_slice(&device, &[n, 8], rows)?;
        ops::sum(&ops::matmul(&x, &w, ops::Transpose::NONE, None)?)
    };
    let whole = backward(&loss_of(&batch, 6)?)?.get(&w).unwrap().to_vec();
    let first = backward(&loss_of(&batch[..24], 3)?)?
        .get(&w)
        .unwrap()
        .to_vec();
    let second = backward(&loss_of(&batch[24..], 3)?)?
        .get(&w)
        .unwrap()
        .to_vec();
    let summed: Vec<f32> = first.iter().zip(&second).map(|(a, b)| a + b).collect();
    println!(
        "gradient of 6 rows vs the sum over two halves of 3: max difference {:.1e}",
        max_abs_diff(&whole, &summed)
    );
    Ok(())
}
