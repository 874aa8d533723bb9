//! Finite-difference gradient checks of every differentiable op, placed mid-graph: the
//! op's inputs come out of an upstream op and its output is multiplied by fixed random
//! weights before the sum, so neither the op's input nor its upstream gradient is
//! trivial. Central differences in f32 through the real kernels; tolerances are those
//! of `GradcheckOptions` unless a test states its own.

mod common;

use common::{device, random, rng, upload};
use engine::ops::{self, Transpose};
use engine::{gradcheck, DType, GradcheckOptions, Indices, Result, Tensor};

/// sum(y * w) for a fixed random w of y's shape.
fn weighted_sum(y: &Tensor, seed: u64) -> Result<Tensor> {
    let w = random(&mut rng(seed), y.numel());
    ops::sum(&ops::mul(
        y,
        &Tensor::from_slice(y.device(), y.shape(), &w)?,
    )?)
}

/// Upstream op so the checked op's input is itself a tracked intermediate.
fn upstream(x: &Tensor) -> Result<Tensor> {
    ops::scale(x, 1.5)
}

fn input(shape: &[usize], seed: u64) -> (Vec<usize>, Vec<f32>) {
    (
        shape.to_vec(),
        random(&mut rng(seed), shape.iter().product()),
    )
}

fn check(
    name: &str,
    inputs: &[(Vec<usize>, Vec<f32>)],
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
    opts: GradcheckOptions,
) {
    let report = gradcheck(&device(), inputs, f, opts).unwrap();
    assert!(report.checked > 0, "{name}: nothing checked");
    assert!(report.passed(), "{name}: {report:?}");
}

fn default() -> GradcheckOptions {
    GradcheckOptions::default()
}

#[test]
fn gradcheck_matmul_all_transposes_with_bias() {
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        let a = if ta { [2, 5, 3] } else { [2, 3, 5] };
        let b = if tb { [2, 4, 5] } else { [2, 5, 4] };
        check(
            &format!("matmul ta={ta} tb={tb}"),
            &[input(&a, 1), input(&b, 2), input(&[4], 3)],
            |x| {
                weighted_sum(
                    &ops::matmul(
                        &upstream(&x[0])?,
                        &upstream(&x[1])?,
                        Transpose { a: ta, b: tb },
                        Some(&x[2]),
                    )?,
                    9,
                )
            },
            default(),
        );
    }
}

/// The fused MLP, whose GELU and GELU backward live in its products' epilogues, with
/// and without biases (the gradients' places among the inputs shift with them).
#[test]
fn gradcheck_mlp() {
    check(
        "mlp with biases",
        &[
            input(&[2, 3, 5], 1),
            input(&[8, 5], 2),
            input(&[8], 3),
            input(&[5, 8], 4),
            input(&[5], 5),
        ],
        |x| {
            let y = ops::mlp(&upstream(&x[0])?, &x[1], Some(&x[2]), &x[3], Some(&x[4]))?;
            weighted_sum(&y, 9)
        },
        default(),
    );
    check(
        "mlp without biases",
        &[input(&[4, 5], 6), input(&[8, 5], 7), input(&[5, 8], 8)],
        |x| weighted_sum(&ops::mlp(&upstream(&x[0])?, &x[1], None, &x[2], None)?, 9),
        default(),
    );
}

#[test]
fn gradcheck_matmul_shared_b_and_linear() {
    check(
        "matmul shared b",
        &[input(&[3, 4, 5], 1), input(&[5, 2], 2)],
        |x| {
            weighted_sum(
                &ops::matmul(&upstream(&x[0])?, &upstream(&x[1])?, Transpose::NONE, None)?,
                9,
            )
        },
        default(),
    );
    check(
        "linear",
        &[input(&[2, 3, 5], 4), input(&[6, 5], 5), input(&[6], 6)],
        |x| weighted_sum(&ops::linear(&upstream(&x[0])?, &x[1], Some(&x[2]))?, 9),
        default(),
    );
    // Rows, in and out multiples of 4: where the kernel that runs the weight gradient
    // sums rows (the subgroup kernel on lavapipe, `Vec4` on GPUs), its product sums the
    // bias gradient (`Epilogue::RowSums`).
    check(
        "linear, bias gradient from the weight gradient's product",
        &[input(&[2, 4, 8], 7), input(&[12, 8], 8), input(&[12], 10)],
        |x| weighted_sum(&ops::linear(&upstream(&x[0])?, &x[1], Some(&x[2]))?, 9),
        default(),
    );
}

#[test]
fn gradcheck_binary_ops_with_broadcast() {
    type Op = fn(&Tensor, &Tensor) -> Result<Tensor>;
    let ops_: [(&str, Op); 4] = [
        ("add", ops::add),
        ("sub", ops::sub),
        ("mul", ops::mul),
        ("div", ops::div),
    ];
    for (name, op) in ops_ {
        for b_shape in [vec![2, 3, 4], vec![3, 4], vec![1]] {
            check(
                &format!("{name} b {b_shape:?}"),
                &[input(&[2, 3, 4], 1), input(&b_shape, 2)],
                // The divisor is kept away from zero: 2 + x^2.
                |x| {
                    let b = upstream(&x[1])?;
                    let b = if name == "div" {
                        ops::add(&ops::mul(&b, &b)?, &Tensor::full(b.device(), &[1], 2.0)?)?
                    } else {
                        b
                    };
                    weighted_sum(&op(&upstream(&x[0])?, &b)?, 9)
                },
                default(),
            );
        }
    }
}

#[test]
fn gradcheck_scale_and_gelu() {
    check(
        "scale",
        &[input(&[7], 1)],
        |x| weighted_sum(&ops::scale(&upstream(&x[0])?, -0.7)?, 9),
        default(),
    );
    check(
        "gelu",
        &[input(&[3, 7], 1)],
        |x| weighted_sum(&ops::gelu(&upstream(&x[0])?)?, 9),
        default(),
    );
}

#[test]
fn gradcheck_layernorm_with_and_without_affine() {
    check(
        "layernorm affine",
        &[input(&[3, 7], 1), input(&[7], 2), input(&[7], 3)],
        |x| {
            weighted_sum(
                &ops::layernorm(&upstream(&x[0])?, Some((&x[1], &x[2])), 1e-6)?,
                9,
            )
        },
        default(),
    );
    check(
        "layernorm plain",
        &[input(&[4, 33], 4)],
        |x| weighted_sum(&ops::layernorm(&upstream(&x[0])?, None, 1e-6)?, 9),
        default(),
    );
    // The fused residual addition: the sum flows on as well as into the LayerNorm, so
    // its LayerNorm's backward adds the gradient the sum already has in its kernel.
    check(
        "add_layernorm",
        &[
            input(&[3, 7], 1),
            input(&[3, 7], 5),
            input(&[7], 2),
            input(&[7], 3),
        ],
        |x| {
            let (sum, y) =
                ops::add_layernorm(&upstream(&x[0])?, &x[1], Some((&x[2], &x[3])), 1e-6)?;
            ops::add(
                &weighted_sum(&y, 9)?,
                &weighted_sum(&ops::mul(&sum, &sum)?, 4)?,
            )
        },
        default(),
    );
}

#[test]
fn gradcheck_softmax() {
    check(
        "softmax",
        &[input(&[3, 7], 1)],
        |x| weighted_sum(&ops::softmax(&upstream(&x[0])?)?, 9),
        default(),
    );
}

#[test]
fn gradcheck_attention_on_every_plan() {
    use ops::attention::{attention_with, AttentionPlan, AttentionShape};
    // qkv [2 images, 5 tokens, 3 x 2 heads x head dim 8]: a multiple of 8, so every
    // fused family that runs on the adapter takes it.
    let (batch, tokens, heads, hd) = (2, 5, 2, 8);
    let shape = AttentionShape {
        batch,
        tokens,
        heads,
        head_dim: hd,
        qkv: DType::F32,
    };
    for plan in AttentionPlan::candidates(&device(), &shape) {
        check(
            &format!("attention, {}", plan.describe()),
            &[input(&[batch, tokens, 3 * heads * hd], 1)],
            |x| weighted_sum(&attention_with(&plan, &upstream(&x[0])?, heads, 0.5)?, 9),
            GradcheckOptions {
                max_entries: 72,
                ..default()
            },
        );
    }
}

#[test]
fn gradcheck_layout_ops() {
    check(
        "reshape+permute",
        &[input(&[2, 3, 4], 1)],
        |x| {
            let y = ops::permute(
                &ops::reshape(&upstream(&x[0])?, &[2, 3, 2, 2])?,
                &[3, 1, 0, 2],
            )?;
            weighted_sum(&y, 9)
        },
        default(),
    );
    check(
        "patchify",
        &[input(&[2, 2, 4, 6], 1)],
        |x| weighted_sum(&ops::patchify(&upstream(&x[0])?, 2)?, 9),
        default(),
    );
    check(
        "concat",
        &[input(&[2, 3, 4], 1), input(&[2, 2, 4], 2)],
        |x| weighted_sum(&ops::concat(&[&upstream(&x[0])?, &upstream(&x[1])?], 1)?, 9),
        default(),
    );
    check(
        "narrow",
        &[input(&[2, 5, 3], 1)],
        |x| weighted_sum(&ops::narrow(&upstream(&x[0])?, 1, 1, 3)?, 9),
        default(),
    );
    check(
        "repeat_batch",
        &[input(&[2, 3, 4], 1)],
        |x| weighted_sum(&ops::repeat_batch(&upstream(&x[0])?, 3)?, 9),
        default(),
    );
}

#[test]
fn gradcheck_gather_rows_with_repeats() {
    let idx = Indices::new(&device(), &[4, 3], &[0, 4, 4, 1, 2, 3, 2, 2, 0, 4, 3, 1]).unwrap();
    check(
        "gather_rows",
        &[input(&[2, 5, 3], 1)],
        |x| weighted_sum(&ops::gather_rows(&upstream(&x[0])?, &idx)?, 9),
        default(),
    );
}

#[test]
fn gradcheck_reductions() {
    check(
        "sum",
        &[input(&[3, 5], 1)],
        |x| ops::sum(&ops::mul(&upstream(&x[0])?, &upstream(&x[0])?)?),
        default(),
    );
    check(
        "mean",
        &[input(&[3, 5], 1)],
        |x| ops::mean(&ops::mul(&upstream(&x[0])?, &upstream(&x[0])?)?),
        default(),
    );
    check(
        "sum_leading",
        &[input(&[3, 2, 5], 1)],
        |x| weighted_sum(&ops::sum_leading(&upstream(&x[0])?, 2)?, 9),
        default(),
    );
}

#[test]
fn gradcheck_losses() {
    // Values spread so that some |pred - target| exceed beta: both branches are used.
    let pred = (
        vec![4, 6],
        random(&mut rng(1), 24)
            .iter()
            .map(|v| v * 2.0)
            .collect::<Vec<_>>(),
    );
    check(
        "smooth_l1 (both args)",
        &[pred.clone(), input(&[4, 6], 2)],
        |x| ops::smooth_l1_loss(&upstream(&x[0])?, &upstream(&x[1])?, 1.0),
        default(),
    );
    check(
        "mse (both args)",
        &[pred, input(&[4, 6], 2)],
        |x| ops::mse_loss(&upstream(&x[0])?, &upstream(&x[1])?),
        default(),
    );
    let labels = Indices::new(&device(), &[5], &[0, 3, 2, 3, 1]).unwrap();
    check(
        "cross_entropy",
        &[input(&[5, 4], 3)],
        |x| ops::cross_entropy(&upstream(&x[0])?, &labels),
        default(),
    );
}

#[test]
fn gradcheck_composite_graph() {
    // x -> linear -> layernorm -> gelu -> linear -> softmax, with h used twice
    // (h * softmax(..) + h), then a weighted sum.
    let inputs = [
        input(&[3, 4, 6], 1),
        input(&[8, 6], 2),
        input(&[8], 3),
        input(&[8], 4),
        input(&[8], 5),
        input(&[8, 8], 6),
        input(&[8], 7),
    ];
    check(
        "composite",
        &inputs,
        |x| {
            let h = ops::linear(&x[0], &x[1], Some(&x[2]))?;
            let h = ops::gelu(&ops::layernorm(&h, Some((&x[3], &x[4])), 1e-6)?)?;
            let s = ops::softmax(&ops::linear(&h, &x[5], Some(&x[6]))?)?;
            weighted_sum(&ops::add(&ops::mul(&h, &s)?, &h)?, 9)
        },
        default(),
    );
}

#[test]
fn gradcheck_detects_a_wrong_gradient() {
    // The checker itself must fail on a wrong backward: here the forward includes a
    // term (3x) that no_grad hides from the tape, so the tape's gradient misses it.
    let report = gradcheck(
        &device(),
        &[input(&[5], 1)],
        |x| {
            let y = ops::mul(&x[0], &x[0])?;
            let hidden = engine::no_grad(|| ops::scale(&x[0], 3.0))?;
            ops::sum(&ops::add(&y, &hidden)?)
        },
        default(),
    )
    .unwrap();
    assert!(
        !report.passed(),
        "gradcheck missed a wrong gradient: {report:?}"
    );
}

#[test]
fn tensor_used_twice_accumulates_and_tape_is_consumed() {
    let x = upload(&[4], &[1.0, -2.0, 3.0, 0.5]).requires_grad();
    let y = ops::sum(&ops::add(&ops::mul(&x, &x).unwrap(), &x).unwrap()).unwrap();
    assert!(engine::tape::len() > 0);
    let grads = engine::backward(&y).unwrap();
    assert_eq!(engine::tape::len(), 0, "backward consumes the tape");
    assert_eq!(grads.get(&x).unwrap().to_vec(), vec![3.0, -3.0, 7.0, 2.0]);
}

#[test]
fn no_grad_records_nothing() {
    let x = upload(&[3], &[1.0, 2.0, 3.0]).requires_grad();
    let before = engine::tape::len();
    let y = engine::no_grad(|| ops::gelu(&x).unwrap());
    assert_eq!(engine::tape::len(), before);
    assert!(!y.tracks_grad());
    assert!(engine::backward(&ops::sum(&y).unwrap()).is_err());
}
