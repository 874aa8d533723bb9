//! Every kernel but matmul and attention (tests/matmul.rs, tests/attention.rs) against
//! the CPU reference (`engine::cpu`) on random inputs, over shapes that are not
//! multiples of any tile; the row kernels on every plan. Tolerances: f32 kernels
//! against f64 references, so a few ulps times the length of the longest sum.

mod common;

use common::{assert_close, cases, device, random, rng, upload};
use engine::cpu;
use engine::ops::rows::RowPlan;
use engine::ops::{self, elementwise, gather, layernorm, layout, loss, reduce, softmax};
use engine::{DType, Indices, Tensor};

#[test]
fn binary_ops_broadcast_forward_and_backward_match_cpu() {
    let mut r = rng(3);
    // The last two have n and nb multiples of 4: the vec4 kernels.
    let cases: [(&[usize], &[usize]); 6] = [
        (&[7], &[7]),
        (&[3, 33], &[33]),
        (&[2, 5, 7], &[5, 7]),
        (&[4, 65], &[1]),
        (&[3, 8], &[8]),
        (&[2, 4, 12], &[4, 12]),
    ];
    type Reference = fn(f64, f64) -> f64;
    let ops_: [(elementwise::BinaryOp, Reference); 4] = [
        (elementwise::BinaryOp::Add, |a, b| a + b),
        (elementwise::BinaryOp::Sub, |a, b| a - b),
        (elementwise::BinaryOp::Mul, |a, b| a * b),
        (elementwise::BinaryOp::Div, |a, b| a / b),
    ];
    for (sa, sb) in cases {
        let a = random(&mut r, sa.iter().product());
        // Keep divisors away from zero.
        let b: Vec<f32> = random(&mut r, sb.iter().product())
            .iter()
            .map(|v| v.signum() * (0.5 + v.abs()))
            .collect();
        let dy = random(&mut r, a.len());
        for (op, f) in ops_ {
            let (ta, tb, tdy) = (upload(sa, &a), upload(sb, &b), upload(sa, &dy));
            let got = elementwise::binary_forward(op, &ta, &tb).unwrap();
            assert_close(
                &format!("{op:?} {sa:?} {sb:?}"),
                &got.to_vec(),
                &cpu::binary(&a, &b, f),
                1e-6,
                1e-6,
            );
            let grads = elementwise::binary_backward(op, &ta, &tb, &tdy, &[true, true]).unwrap();
            // Reference gradients from the closed forms.
            let (da, db_full): (Vec<f64>, Vec<f64>) = a
                .iter()
                .enumerate()
                .map(|(i, &x)| {
                    let (x, y, g) = (x as f64, b[i % b.len()] as f64, dy[i] as f64);
                    match op {
                        elementwise::BinaryOp::Add => (g, g),
                        elementwise::BinaryOp::Sub => (g, -g),
                        elementwise::BinaryOp::Mul => (g * y, g * x),
                        elementwise::BinaryOp::Div => (g / y, -g * x / (y * y)),
                    }
                })
                .unzip();
            let da: Vec<f32> = da.iter().map(|&v| v as f32).collect();
            let db_full: Vec<f32> = db_full.iter().map(|&v| v as f32).collect();
            let db = cpu::sum_leading(&db_full, b.len());
            assert_close(
                &format!("{op:?} da"),
                &grads[0].as_ref().unwrap().to_vec(),
                &da,
                1e-5,
                1e-5,
            );
            assert_close(
                &format!("{op:?} db"),
                &grads[1].as_ref().unwrap().to_vec(),
                &db,
                1e-4,
                1e-4,
            );
        }
    }
}

#[test]
fn scale_and_broadcast_match_cpu() {
    let mut r = rng(4);
    let x = random(&mut r, 65);
    // 65 and 5 elements take the f32 kernels, 64 and 8 the vec4 ones.
    for n in [65, 64] {
        let got = elementwise::scale_forward(&upload(&[n], &x[..n]), -2.5)
            .unwrap()
            .to_vec();
        let want: Vec<f32> = x[..n].iter().map(|v| v * -2.5).collect();
        assert_close(&format!("scale {n}"), &got, &want, 0.0, 1e-7);
    }
    for m in [5, 8] {
        let got = elementwise::broadcast_forward(&upload(&[m], &x[..m]), &[3, m], 2.0)
            .unwrap()
            .to_vec();
        let want: Vec<f32> = (0..3 * m).map(|i| 2.0 * x[i % m]).collect();
        assert_close(&format!("broadcast {m}"), &got, &want, 0.0, 1e-7);
    }
}

#[test]
fn gelu_is_accurate_to_1e6_against_f64_erf() {
    // 4001 points take the f32 kernels, 4000 the vec4 ones.
    for n in [4001, 4000] {
        gelu_check(n);
    }
}

fn gelu_check(n: usize) {
    let x: Vec<f32> = (0..n)
        .map(|i| -10.0 + 20.0 * i as f32 / (n - 1) as f32)
        .collect();
    let t = upload(&[n], &x);
    // The f64 reference rounded to f32 is exact to half an ulp; allow 1e-6 abs + 2 ulp.
    assert_close(
        "gelu",
        &elementwise::gelu_forward(&t).unwrap().to_vec(),
        &cpu::gelu(&x),
        1e-6,
        2.4e-7,
    );
    let dy = vec![1.0; n];
    let got = elementwise::gelu_backward(&t, &upload(&[n], &dy))
        .unwrap()
        .to_vec();
    assert_close(
        "gelu backward",
        &got,
        &cpu::gelu_backward(&x, &dy),
        1e-6,
        2.4e-7,
    );
}

#[test]
fn cpu_erf_matches_known_values() {
    // Independent spot values of erf (Abramowitz & Stegun table 7.1).
    for (x, want) in [
        (0.5, 0.520_499_877_813_046_5),
        (1.0, 0.842_700_792_949_714_9),
        (2.0, 0.995_322_265_018_952_7),
        (3.5, 0.999_999_256_901_627_7),
    ] {
        assert!((cpu::erf(x) - want).abs() < 1e-15, "erf({x})");
        assert!((cpu::erf(-x) + want).abs() < 1e-15, "erf(-{x})");
    }
}

#[test]
fn softmax_forward_and_backward_match_cpu_on_every_plan() {
    let mut r = rng(5);
    for (rows, cols) in cases::SOFTMAX {
        let x: Vec<f32> = random(&mut r, rows * cols)
            .iter()
            .map(|v| v * 8.0)
            .collect();
        let dy = random(&mut r, rows * cols);
        let want = cpu::softmax(&x, cols);
        let want_dx = cpu::softmax_backward(&want, &dy, cols);
        let plans = RowPlan::candidates(&device(), rows, cols);
        assert!(plans.contains(&RowPlan::new(&device(), rows, cols)));
        for plan in plans {
            let what = format!("softmax, {}", plan.describe());
            let y = softmax::softmax_forward_with(&plan, &upload(&[rows, cols], &x)).unwrap();
            assert_close(&what, &y.to_vec(), &want, 1e-7, 1e-5);
            let dx =
                softmax::softmax_backward_with(&plan, &y, &upload(&[rows, cols], &dy)).unwrap();
            assert_close(
                &format!("{what} backward"),
                &dx.to_vec(),
                &want_dx,
                1e-6,
                1e-4,
            );
        }
    }
}

#[test]
fn layernorm_forward_and_backward_match_cpu_with_and_without_affine_on_every_plan() {
    let mut r = rng(6);
    for (rows, cols) in cases::layernorm_shapes() {
        let x: Vec<f32> = random(&mut r, rows * cols)
            .iter()
            .map(|v| 3.0 * v + 1.5)
            .collect();
        let dy = random(&mut r, rows * cols);
        let g = random(&mut r, cols);
        let b = random(&mut r, cols);
        let (tx, tg, tb, tdy) = (
            upload(&[rows, cols], &x),
            upload(&[cols], &g),
            upload(&[cols], &b),
            upload(&[rows, cols], &dy),
        );
        let pending = random(&mut r, rows * cols);
        let tpending = upload(&[rows, cols], &pending);
        let plans = RowPlan::candidates(&device(), rows, cols);
        assert!(plans.contains(&RowPlan::new(&device(), rows, cols)));
        for plan in plans {
            for affine in [false, true] {
                let what = format!("layernorm affine={affine}, {}", plan.describe());
                let (y, saved) = layernorm::layernorm_forward_with(
                    &plan,
                    &tx,
                    affine.then_some((&tg, &tb)),
                    1e-6,
                    DType::F32,
                )
                .unwrap();
                let (want, _) = cpu::layernorm(&x, cols, affine.then_some((&g[..], &b[..])), 1e-6);
                assert_close(&what, &y.to_vec(), &want, 1e-5, 1e-5);
                // Fused with a residual addition: the sum, and the LayerNorm of it.
                let (y_sum, _, sum) = layernorm::add_layernorm_forward_with(
                    &plan,
                    &tx,
                    &tpending,
                    affine.then_some((&tg, &tb)),
                    1e-6,
                    DType::F32,
                )
                .unwrap();
                let want_sum: Vec<f32> = x.iter().zip(&pending).map(|(a, b)| a + b).collect();
                assert_eq!(sum.to_vec(), want_sum, "{what}: x + addend");
                let (want, _) =
                    cpu::layernorm(&want_sum, cols, affine.then_some((&g[..], &b[..])), 1e-6);
                assert_close(
                    &format!("{what} of x + addend"),
                    &y_sum.to_vec(),
                    &want,
                    1e-5,
                    1e-5,
                );
                let (wdx, wdg, wdb) =
                    cpu::layernorm_backward(&x, &dy, cols, affine.then_some(&g[..]), 1e-6);
                // The parameter gradients' column sums in one pass (a CPU adapter's
                // plan), in chunks of 256 rows (a GPU's), and in chunks of 5 rows.
                let chunks = [rows, 256, 5];
                for chunk in chunks {
                    let (dx, params) = layernorm::layernorm_backward_with(
                        &plan,
                        chunk,
                        &saved,
                        affine.then_some(&tg),
                        &tdy,
                        None,
                    )
                    .unwrap();
                    let what = format!("{what}, {chunk} rows per column-sum workgroup");
                    assert_close(&format!("{what} dx"), &dx.to_vec(), &wdx, 1e-4, 1e-4);
                    // With a gradient to accumulate (a residual stream's): dx + it.
                    let (dx_plus, _) = layernorm::layernorm_backward_with(
                        &plan,
                        chunk,
                        &saved,
                        affine.then_some(&tg),
                        &tdy,
                        Some(&tpending),
                    )
                    .unwrap();
                    let want: Vec<f32> = wdx.iter().zip(&pending).map(|(a, b)| a + b).collect();
                    assert_close(
                        &format!("{what} dx + pending"),
                        &dx_plus.to_vec(),
                        &want,
                        1e-4,
                        1e-4,
                    );
                    assert_eq!(params.is_some(), affine);
                    if let Some((dg, db)) = params {
                        assert_close(
                            &format!("{what} dgamma"),
                            &dg.to_vec(),
                            &wdg,
                            1e-4 * rows as f32,
                            1e-4,
                        );
                        assert_close(
                            &format!("{what} dbeta"),
                            &db.to_vec(),
                            &wdb,
                            1e-5 * rows as f32,
                            1e-4,
                        );
                    }
                }
            }
        }
    }
}

/// The differentiable LayerNorm and softmax, forward and backward, on one device.
fn layernorm_and_softmax(dev: &std::sync::Arc<engine::Device>, rows: usize) {
    let mut r = rng(11);
    let cols = 24;
    let here = |shape: &[usize], v: &[f32]| Tensor::from_slice(dev, shape, v).unwrap();
    let x = here(&[rows, cols], &random(&mut r, rows * cols)).requires_grad();
    let (g, b) = (
        here(&[cols], &random(&mut r, cols)),
        here(&[cols], &random(&mut r, cols)),
    );
    let y = ops::layernorm(&x, Some((&g, &b)), 1e-6).unwrap();
    let p = ops::softmax(&y).unwrap();
    engine::backward(&reduce::sum(&elementwise::mul(&p, &y).unwrap()).unwrap()).unwrap();
}

/// The row kernels' plans are measured and kept in a plan file like the products' and
/// attention's: one device measures LayerNorm and softmax, forward and backward; a
/// second follows the file, each choice first edited to a candidate other than the
/// rule's (the forwards to one, the backwards to another), so that only the file can
/// have chosen them.
#[test]
fn row_plans_are_measured_and_followed_from_a_plan_file() {
    // 37 and 38 rows share a bucket.
    let (log, (rule, forward, backward)) = common::follow_an_edited_plan_file(
        "row_plan_file",
        layernorm_and_softmax,
        (37, 38),
        |plans, follower| {
            let rule = RowPlan::new(follower, 38, 24);
            let others: Vec<RowPlan> = RowPlan::candidates(follower, 38, 24)
                .into_iter()
                .filter(|p| *p != rule)
                .collect();
            let [forward, backward] = [others[0], others[1]];
            for op in [
                "layernorm forward,",
                "layernorm backward,",
                "softmax forward",
                "softmax backward",
            ] {
                let (_, plan) = plans
                    .iter_mut()
                    .find(|(k, _)| k.starts_with(op))
                    .unwrap_or_else(|| panic!("{op} measured into the file"));
                let edited = if op.contains("forward") {
                    forward
                } else {
                    backward
                };
                plan["chosen"] = edited.method().into();
            }
            (rule, forward, backward)
        },
    );
    let want = [
        layernorm::plan_key(&forward, true),
        layernorm::plan_key(&backward, true),
        softmax::plan_key(&forward),
        softmax::plan_key(&backward),
    ];
    for key in &want {
        assert!(log.contains(key), "{key} runs, as the file says: {log:?}");
    }
    let rules = [layernorm::plan_key(&rule, true), softmax::plan_key(&rule)];
    assert!(
        log.iter().all(|k| !rules.contains(k)),
        "the rule's plan does not run: {log:?}"
    );
}

#[test]
fn sums_match_cpu_across_multiple_passes() {
    let mut r = rng(7);
    for &(rows, inner) in &[
        (0, 5),
        (1, 1),
        (1, 7),
        (1000, 1),
        (300_000, 1),
        (7, 33),
        (70_000, 3),
        (513, 130),
        // Rows of whole vec4s, summed as vec4s.
        (7, 32),
        (70_000, 4),
        (513, 132),
    ] {
        let x = random(&mut r, rows * inner);
        let tol = 1e-6 * (rows as f32).sqrt() * 10.0;
        let want = cpu::sum_leading(&x, inner);
        let got = reduce::sum_leading_forward(&upload(&[rows * inner], &x), inner).unwrap();
        assert_close(
            &format!("sum {rows}x{inner}"),
            &got.to_vec(),
            &want,
            tol,
            1e-5,
        );
        // In one pass (a CPU adapter's plan), and in chunks of 256 rows or 1024 values
        // (a GPU's), several passes for the larger cases; a chunk of one row sums two.
        for chunk in [rows, 256, 1024, 1] {
            let got = reduce::sum_leading_forward_with(&upload(&[rows * inner], &x), inner, chunk)
                .unwrap();
            let what = format!("sum {rows}x{inner} in chunks of {chunk} rows");
            assert_close(&what, &got.to_vec(), &want, tol, 1e-5);
        }
    }
}

#[test]
fn paired_sums_match_cpu_in_one_pass_and_several() {
    // Two inputs of the same rows summed by one dispatch per pass. From 2 rows, their
    // columns meet inside a workgroup's (8 on a CPU adapter, 64 on a GPU) but in the
    // case of 8 rows, a split product's [slices, M N] and [slices, M]; 0 and 1 rows
    // dispatch nothing.
    let mut r = rng(17);
    for &(rows, inner_x, inner_y) in &[
        (0, 3, 5),
        (1, 5, 3),
        (2, 37, 5),
        (3, 61, 70),
        (700, 13, 9),
        (8, 64 * 192, 64),
        // Both of whole vec4s, summed as vec4s; one of them only, as columns.
        (3, 60, 68),
        (700, 12, 8),
        (5, 36, 9),
    ] {
        let x = random(&mut r, rows * inner_x);
        let y = random(&mut r, rows * inner_y);
        let tol = 1e-6 * (rows as f32).sqrt() * 10.0;
        let (want_x, want_y) = (cpu::sum_leading(&x, inner_x), cpu::sum_leading(&y, inner_y));
        let (tx, ty) = (upload(&[rows, inner_x], &x), upload(&[rows, inner_y], &y));
        let by_rule = reduce::sum_leading_pair_forward(&tx, inner_x, &ty, inner_y).unwrap();
        // In one pass, and in chunks of 256, 3 and 1 rows (several passes; a chunk of one
        // row sums two).
        for (chunk, (got_x, got_y)) in
            [(0, by_rule)]
                .into_iter()
                .chain([rows, 256, 3, 1].map(|chunk| {
                    let sums =
                        reduce::sum_leading_pair_forward_with(&tx, inner_x, &ty, inner_y, chunk);
                    (chunk, sums.unwrap())
                }))
        {
            let what = format!("paired sums of {rows}x{inner_x} and {rows}x{inner_y}, chunks of {chunk} rows (0: the rule's)");
            assert_close(
                &format!("{what}: first"),
                &got_x.to_vec(),
                &want_x,
                tol,
                1e-5,
            );
            assert_close(
                &format!("{what}: second"),
                &got_y.to_vec(),
                &want_y,
                tol,
                1e-5,
            );
        }
    }
    let err = reduce::sum_leading_pair_forward(
        &upload(&[4, 3], &[0.0; 12]),
        3,
        &upload(&[5, 2], &[0.0; 10]),
        2,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("different rows"), "{err}");
}

/// What a LayerNorm forward of x (uploaded as tx) saves, its statistics from the CPU.
fn saved_by_cpu(x: &[f32], tx: &Tensor, cols: usize) -> layernorm::LayerNormSaved {
    let (_, stats) = cpu::layernorm(x, cols, None, 1e-6);
    let stats: Vec<f32> = stats
        .iter()
        .flat_map(|&(mean, rstd)| [mean as f32, rstd as f32])
        .collect();
    layernorm::LayerNormSaved {
        x: tx.clone(),
        stats: upload(&[stats.len() / 2, 2], &stats),
    }
}

/// LayerNorm's parameter gradients of x (uploaded as tx) for a random dy and gamma,
/// their column sums in each of `chunks` rows per workgroup, against the CPU.
fn param_grads_match_cpu(
    r: &mut rand::rngs::StdRng,
    x: &[f32],
    tx: &Tensor,
    cols: usize,
    chunks: &[usize],
) {
    let rows = x.len() / cols;
    let dy = random(r, rows * cols);
    let g = random(r, cols);
    let saved = saved_by_cpu(x, tx, cols);
    let (_, want_dgamma, want_dbeta) = cpu::layernorm_backward(x, &dy, cols, Some(&g[..]), 1e-6);
    for &chunk in chunks {
        let (_, params) = layernorm::layernorm_backward_with(
            &RowPlan::of(tx),
            chunk,
            &saved,
            Some(&upload(&[cols], &g)),
            &upload(&[rows, cols], &dy),
            None,
        )
        .unwrap();
        let (dgamma, dbeta) = params.expect("affine");
        let what = format!("layernorm {rows}x{cols}, {chunk} rows per column-sum workgroup");
        assert_close(
            &format!("{what}: dgamma"),
            &dgamma.to_vec(),
            &want_dgamma,
            1e-4,
            1e-4,
        );
        assert_close(
            &format!("{what}: dbeta"),
            &dbeta.to_vec(),
            &want_dbeta,
            1e-5,
            1e-4,
        );
    }
}

#[test]
fn column_sums_over_millions_of_columns_match_cpu() {
    // More column groups than a grid dimension holds: the sums' grid folds into two
    // dimensions.
    let limit = device().info().workgroups_per_dimension as usize;
    let group = reduce::columns_per_workgroup(&device());
    let (rows, cols) = (2, (limit + 1) * group + 4);
    let mut r = rng(12);
    let x = random(&mut r, rows * cols);
    let tx = upload(&[rows, cols], &x);
    for chunk in [rows, 1] {
        let got = reduce::sum_leading_forward_with(&tx, cols, chunk).unwrap();
        let what = format!("sum {rows}x{cols} in chunks of {chunk} rows");
        assert_close(
            &what,
            &got.to_vec(),
            &cpu::sum_leading(&x, cols),
            1e-6,
            1e-5,
        );
    }
    // LayerNorm's parameter gradients are column sums of the same grid: by columns, and
    // by vec4s of them (rows of whole vec4s), past the limit in both. The statistics
    // come from the CPU: lavapipe cuts the forward's loops over rows this long short
    // (`CPU_LOOP_BUDGET`). The vec4 case on a GPU's column groups (16.8 M columns)
    // needs partial sums of 128 MiB, which not every adapter binds.
    for (rows, cols) in [
        (rows, (limit + 1) * group + 3),
        (1, 4 * (limit + 1) * group + 4),
    ] {
        let partials = (2 * 4 * rows * cols.next_multiple_of(64)) as u64;
        if partials > device().max_binding_bytes() {
            eprintln!("layernorm {rows}x{cols} skipped: partial sums of {partials} bytes");
            continue;
        }
        let x = random(&mut r, rows * cols);
        let tx = upload(&[rows, cols], &x);
        param_grads_match_cpu(&mut r, &x, &tx, cols, &[rows, 1]);
    }
}

#[test]
fn sums_longer_than_a_lavapipe_loop_match_cpu() {
    // lavapipe ends an invocation's loops after 65,535 iterations in all, silently: a
    // column sum of all its rows in one workgroup (a CPU adapter's plan) or in a chunk
    // asked for would fall short past 4 x 65,535 rows, `sum_all` past 256 x 65,535
    // values. The sums split such chunks.
    let mut r = rng(13);
    for (rows, cols) in [(300_001, 3), (2 * reduce::max_rows_per_workgroup(4) + 5, 4)] {
        let x = random(&mut r, rows * cols);
        let tx = upload(&[rows, cols], &x);
        let want = cpu::sum_leading(&x, cols);
        for (got, how) in [
            (
                reduce::sum_leading_forward(&tx, cols),
                "in the plan's chunks",
            ),
            (
                reduce::sum_leading_forward_with(&tx, cols, rows),
                "in one chunk asked for",
            ),
        ] {
            let what = format!("sum {rows}x{cols} {how}");
            assert_close(&what, &got.unwrap().to_vec(), &want, 1e-5, 1e-4);
        }
        param_grads_match_cpu(&mut r, &x, &tx, cols, &[rows]);
    }
    let values = 256 * 65_536 + 7;
    let x = random(&mut r, values);
    let got = reduce::sum_leading_forward(&upload(&[values], &x), 1).unwrap();
    assert_close(
        &format!("sum_all of {values} values"),
        &got.to_vec(),
        &cpu::sum_leading(&x, 1),
        1e-5,
        1e-4,
    );
}

#[test]
fn permute_and_patchify_match_cpu() {
    let mut r = rng(8);
    // The last two keep a last dim that is a multiple of 4 (the vec4 kernel): the
    // attention head split and merge.
    let cases: [(&[usize], &[usize]); 6] = [
        (&[3, 7], &[1, 0]),
        (&[2, 3, 5, 7], &[0, 2, 1, 3]),
        (&[2, 3, 4, 5, 6], &[4, 2, 0, 3, 1]),
        (&[1, 2, 3, 2, 3, 2], &[0, 2, 4, 1, 3, 5]),
        (&[2, 5, 3, 2, 8], &[2, 0, 3, 1, 4]),
        (&[3, 2, 7, 4], &[0, 2, 1, 3]),
    ];
    for (shape, perm) in cases {
        let x = random(&mut r, shape.iter().product());
        let got = layout::permute_forward(&upload(shape, &x), perm).unwrap();
        assert_eq!(
            got.shape(),
            perm.iter().map(|&d| shape[d]).collect::<Vec<_>>()
        );
        assert_eq!(
            got.to_vec(),
            cpu::permute(&x, shape, perm),
            "permute {shape:?} {perm:?}"
        );
    }
    // patchify against a direct im2col.
    let (b, c, h, w, p) = (2, 3, 8, 12, 4);
    let x = random(&mut r, b * c * h * w);
    let got = layout::patchify(&upload(&[b, c, h, w], &x), p).unwrap();
    let (gh, gw) = (h / p, w / p);
    assert_eq!(got.shape(), [b, gh * gw, c * p * p]);
    let mut want = Vec::new();
    for bi in 0..b {
        for gy in 0..gh {
            for gx in 0..gw {
                for ci in 0..c {
                    for ky in 0..p {
                        for kx in 0..p {
                            want.push(x[((bi * c + ci) * h + gy * p + ky) * w + gx * p + kx]);
                        }
                    }
                }
            }
        }
    }
    assert_eq!(got.to_vec(), want);
}

#[test]
fn concat_narrow_and_repeat_match_cpu() {
    let mut r = rng(9);
    let (a, b) = (random(&mut r, 2 * 3 * 5), random(&mut r, 2 * 4 * 5));
    let (ta, tb) = (upload(&[2, 3, 5], &a), upload(&[2, 4, 5], &b));
    let cat = ops::concat(&[&ta, &tb], 1).unwrap();
    assert_eq!(cat.shape(), [2, 7, 5]);
    let want = cpu::concat(&[(&a, &[2, 3, 5]), (&b, &[2, 4, 5])], 1);
    assert_eq!(cat.to_vec(), want);
    assert_eq!(layout::narrow_forward(&cat, 1, 3, 4).unwrap().to_vec(), b);
    assert_eq!(layout::narrow_forward(&cat, 1, 0, 3).unwrap().to_vec(), a);
    let cat0 = ops::concat(&[&ta, &ta], 0).unwrap();
    assert_eq!(cat0.to_vec(), [a.clone(), a.clone()].concat());
    let rep = ops::repeat_batch(&ta, 3).unwrap();
    assert_eq!(rep.shape(), [6, 3, 5]);
    assert_eq!(rep.to_vec(), [a.clone(), a.clone(), a.clone()].concat());
    // Rows of 8 floats: the vec4 copy.
    let (c, d) = (random(&mut r, 3 * 2 * 8), random(&mut r, 3 * 5 * 8));
    let (tc, td) = (upload(&[3, 2, 8], &c), upload(&[3, 5, 8], &d));
    let cat = ops::concat(&[&tc, &td], 1).unwrap();
    let want = cpu::concat(&[(&c, &[3, 2, 8]), (&d, &[3, 5, 8])], 1);
    assert_eq!(cat.to_vec(), want);
    assert_eq!(layout::narrow_forward(&cat, 1, 2, 5).unwrap().to_vec(), d);
    let middle = layout::narrow_forward(&cat, 1, 1, 3).unwrap().to_vec();
    let want_middle: Vec<f32> = want.chunks(7 * 8).flat_map(|b| b[8..32].to_vec()).collect();
    assert_eq!(middle, want_middle);
}

#[test]
fn tensors_read_back_together_in_one_submit() {
    // A device of its own: the other tests of this process submit to the shared one.
    let dev = std::sync::Arc::new(engine::Device::new().unwrap());
    let here = |shape: &[usize], data: &[f32]| Tensor::from_slice(&dev, shape, data).unwrap();
    let mut r = rng(10);
    let a = random(&mut r, 5);
    // Values f16 holds exactly, an odd count: its last word is half padding.
    let h = [0.5, -2.0, 1024.0];
    let ta = here(&[5], &a);
    let th = ops::cast::cast_forward(&here(&[3], &h), DType::F16).unwrap();
    // A member of a packed bucket: a binding at an offset into a larger buffer.
    let packed = engine::PackedTensors::zeros(&dev, &[&[3], &[2, 2]]).unwrap();
    let m = [1.0, 2.0, 3.0, 4.0];
    packed.members[1].write(&m).unwrap();
    let before = dev.counts().submits;
    let read = Tensor::to_vecs(&[&ta, &th, &packed.members[1], &ta]);
    assert_eq!(
        dev.counts().submits,
        before + 1,
        "one submit for every tensor"
    );
    assert_eq!(read, vec![a.clone(), h.to_vec(), m.to_vec(), a]);
    assert!(Tensor::to_vecs(&[]).is_empty());
}

#[test]
fn gather_rows_forward_and_backward_match_cpu_with_repeated_indices() {
    let mut r = rng(10);
    // Rows of odd width, and of whole vec4s (the vec4 kernels).
    for (b, n, d, k, masks) in [(3, 13, 7, 5, 2), (3, 13, 12, 5, 2)] {
        let x = random(&mut r, b * n * d);
        let mut idx: Vec<i64> = (0..masks * b * k)
            .map(|i| ((i * 7 + 3) % n) as i64)
            .collect();
        // Repeat one index inside a row: the backward must add both contributions.
        idx[1] = idx[0];
        let ti = Indices::new(&device(), &[masks * b, k], &idx).unwrap();
        let idx_u: Vec<u32> = idx.iter().map(|&v| v as u32).collect();
        let got = gather::gather_rows_forward(&upload(&[b, n, d], &x), &ti).unwrap();
        assert_eq!(
            got.to_vec(),
            cpu::gather_rows(&x, b, n, d, &idx_u, k),
            "d={d}"
        );
        let dy = random(&mut r, masks * b * k * d);
        let dx = gather::gather_rows_backward(&[b, n, d], &ti, &upload(&[masks * b, k, d], &dy))
            .unwrap();
        assert_close(
            &format!("gather backward, d={d}"),
            &dx.to_vec(),
            &cpu::gather_rows_backward(&dy, b, n, d, &idx_u, k),
            1e-6,
            1e-6,
        );
    }
}

#[test]
fn losses_match_cpu() {
    let mut r = rng(11);
    let n = 1037;
    let p: Vec<f32> = random(&mut r, n).iter().map(|v| v * 3.0).collect();
    let t = random(&mut r, n);
    let (tp, tt) = (upload(&[n], &p), upload(&[n], &t));
    let dy = upload(&[1], &[0.7]);
    for beta in [1.0f32, 0.5] {
        let kind = loss::Regression::SmoothL1 { beta };
        let got = loss::regression_loss_forward(kind, &tp, &tt)
            .unwrap()
            .item();
        let want = cpu::smooth_l1(&p, &t, beta as f64);
        assert!(
            (got as f64 - want).abs() < 1e-6,
            "smooth-L1 beta {beta}: {got} vs {want}"
        );
        let g = loss::regression_loss_backward(kind, &tp, &tt, &dy)
            .unwrap()
            .to_vec();
        let want: Vec<f32> = p
            .iter()
            .zip(&t)
            .map(|(&a, &b)| {
                (0.7 * ((a - b) as f64 / beta as f64).clamp(-1.0, 1.0) / n as f64) as f32
            })
            .collect();
        assert_close("smooth-L1 backward", &g, &want, 1e-9, 1e-5);
    }
    let got = loss::regression_loss_forward(loss::Regression::Mse, &tp, &tt)
        .unwrap()
        .item();
    assert!((got as f64 - cpu::mse(&p, &t)).abs() < 1e-5, "mse");
    let g = loss::regression_loss_backward(loss::Regression::Mse, &tp, &tt, &dy)
        .unwrap()
        .to_vec();
    let want: Vec<f32> = p
        .iter()
        .zip(&t)
        .map(|(&a, &b)| (0.7 * 2.0 * (a - b) as f64 / n as f64) as f32)
        .collect();
    assert_close("mse backward", &g, &want, 1e-9, 1e-5);
}

#[test]
fn cross_entropy_matches_cpu() {
    let mut r = rng(12);
    for &(rows, classes) in &[(1, 1), (7, 10), (300, 33)] {
        let x: Vec<f32> = random(&mut r, rows * classes)
            .iter()
            .map(|v| v * 5.0)
            .collect();
        let labels: Vec<i64> = (0..rows).map(|i| ((i * 7) % classes) as i64).collect();
        let tl = Indices::new(&device(), &[rows], &labels).unwrap();
        let tx = upload(&[rows, classes], &x);
        let (loss_t, saved) = loss::cross_entropy_forward(&tx, &tl).unwrap();
        let lu: Vec<u32> = labels.iter().map(|&v| v as u32).collect();
        let want = cpu::cross_entropy(&x, &lu, classes);
        assert!(
            (loss_t.item() as f64 - want).abs() < 1e-5 * (1.0 + want.abs()),
            "ce {rows}x{classes}"
        );
        let dy = upload(&[1], &[1.3]);
        let g = loss::cross_entropy_backward(&tx, &tl, &saved, &dy)
            .unwrap()
            .to_vec();
        let sm = cpu::softmax(&x, classes);
        let want: Vec<f32> = sm
            .iter()
            .enumerate()
            .map(|(i, &s)| {
                1.3 * (s - (lu[i / classes] as usize == i % classes) as i32 as f32) / rows as f32
            })
            .collect();
        assert_close("ce backward", &g, &want, 1e-7, 1e-4);
    }
}

#[test]
fn adamw_and_ema_match_cpu() {
    let mut r = rng(13);
    // By elements, and by vec4s (n a multiple of 4), the decay starting inside a vec4.
    for (n, decay_from) in [(1001, 400), (1000, 402)] {
        adamw_and_ema_of(&mut r, n, decay_from);
    }
}

fn adamw_and_ema_of(r: &mut rand::rngs::StdRng, n: usize, decay_from: usize) {
    let (p, g, m, v) = (
        random(r, n),
        random(r, n),
        random(r, n),
        random(r, n).iter().map(|x| x.abs()).collect::<Vec<_>>(),
    );
    let (tp, tg, tm, tv) = (
        upload(&[n], &p),
        upload(&[n], &g),
        upload(&[n], &m),
        upload(&[n], &v),
    );
    // A clipping scale of 0.5 must act as the gradient halved.
    let h = engine::ops::update::AdamW {
        lr: 1e-2,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.05,
        grad_scale: 0.5,
    };
    // Elements from decay_from on decay, as the decaying parameters of a packed bucket.
    engine::ops::update::adamw_update(&h, 3, &tp, &tg, &tm, &tv, decay_from).unwrap();
    let half_g: Vec<f32> = g.iter().map(|x| 0.5 * x).collect();
    let mut want = cpu::adamw(
        &p[..decay_from],
        &half_g[..decay_from],
        &m[..decay_from],
        &v[..decay_from],
        3,
        1e-2,
        0.9,
        0.999,
        1e-8,
        0.0,
    );
    let decayed = cpu::adamw(
        &p[decay_from..],
        &half_g[decay_from..],
        &m[decay_from..],
        &v[decay_from..],
        3,
        1e-2,
        0.9,
        0.999,
        1e-8,
        0.05,
    );
    want.0.extend(decayed.0);
    want.1.extend(decayed.1);
    want.2.extend(decayed.2);
    let (wp, wm, wv) = want;
    assert_close(
        &format!("adamw param, n={n}"),
        &tp.to_vec(),
        &wp,
        1e-6,
        1e-5,
    );
    assert_close(
        &format!("adamw exp_avg, n={n}"),
        &tm.to_vec(),
        &wm,
        1e-7,
        1e-6,
    );
    assert_close(
        &format!("adamw exp_avg_sq, n={n}"),
        &tv.to_vec(),
        &wv,
        1e-7,
        1e-6,
    );
    let target = random(r, n);
    let tt = upload(&[n], &target);
    engine::ops::update::ema_update(&tt, &tp, 0.996).unwrap();
    assert_close(
        &format!("ema, n={n}"),
        &tt.to_vec(),
        &cpu::ema(&target, &wp, 0.996),
        1e-7,
        1e-6,
    );
}

#[test]
fn fill_and_zeros() {
    let t = Tensor::full(&device(), &[3, 65], 2.5).unwrap();
    assert!(t.to_vec().iter().all(|&v| v == 2.5));
    assert!(Tensor::zeros(&device(), &[1000])
        .unwrap()
        .to_vec()
        .iter()
        .all(|&v| v == 0.0));
}
