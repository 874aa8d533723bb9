//! Mixed precision against independent computations: the f16 casts against the
//! `half` crate's IEEE conversion, every mixed product (each operand and the output
//! in f16 or f32, on every candidate kernel) against the CPU reference on the f16
//! values of its operands (an f32 operand rounded by `half`), `linear` and `mlp` under
//! `autocast` (forward and every gradient) against the CPU on those values, what
//! stands in for casts (f16 LayerNorm outputs, per-bucket parameter copies) against
//! the casts, bit for bit, and loss scaling against `GradScaler`'s rules and the f32
//! step.
//!
//! Tolerances: products accumulate in f32, so against the CPU on the same f16 inputs
//! they are held to the f32 tolerances of tests/matmul.rs; an f16 output is further
//! rounded to f16 (relative 2^-11).

mod common;

use std::collections::BTreeSet;

use common::{assert_close, cases, device, random, rng, upload};
use engine::cpu;
use engine::ops::cast::cast_forward;
use engine::ops::matmul::{self, Epilogue, MatmulKernel, MatmulPlan, MatmulShape, Transpose};
use engine::ops::{self};
use engine::{autocast, DType, Precision, Tensor};

/// The f16 values (as f32) the GPU makes of `data`.
fn as_f16(t: &Tensor) -> Vec<f32> {
    cast_forward(t, DType::F16).unwrap().to_vec()
}

/// IEEE round-to-nearest-even to f16 and back, on the host.
fn round_f16(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect()
}

#[test]
fn casts_round_to_the_nearest_f16_saturate_and_widen_exactly() {
    let mut r = rng(40);
    let mut data = random(&mut r, 1001);
    data.iter_mut().enumerate().for_each(|(i, v)| {
        *v *= [1e-6, 1e-3, 1.0, 300.0, 6e4][i % 5];
    });
    // Ties, both signs of zero, the edges of the range, subnormals, an odd count.
    data.extend([
        0.0,
        -0.0,
        1.0 + 1.0 / 2048.0,
        1.0 + 3.0 / 2048.0,
        65504.0,
        -65504.0,
        6e-8,
        1e-9,
        // Subnormal ties (multiples of 2^-24 and halfway between): 2^-25 to 0, 3 2^-25
        // up to 2^-23, 5 2^-25 down to 2^-23; and halfway to the smallest normal.
        2f32.powi(-25),
        -3.0 * 2f32.powi(-25),
        5.0 * 2f32.powi(-25),
        2f32.powi(-14) - 2f32.powi(-25),
        65519.0,
    ]);
    let x = upload(&[data.len()], &data);
    let h = cast_forward(&x, DType::F16).unwrap();
    assert_eq!(h.dtype(), DType::F16);
    assert_eq!(h.shape(), x.shape());
    let got = h.to_vec();
    let want = round_f16(&data);
    for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
        assert!(
            g.to_bits() == w.to_bits(),
            "element {i}: {} became {g} in f16, IEEE nearest-even gives {w}",
            data[i]
        );
    }
    // Beyond f16's range: saturated, not infinite.
    let big = upload(&[3], &[7e4, -1e9, 65519.0]);
    assert_eq!(as_f16(&big), [65504.0, -65504.0, 65504.0]);
    // Back to f32: exact.
    let back = cast_forward(&h, DType::F32).unwrap();
    assert_eq!(back.dtype(), DType::F32);
    assert_eq!(back.to_vec(), got);
}

/// Every product of `cases::mixed_matmul_shapes`, with a, b and c each in f16 or f32,
/// on every plan of the mixed kernels, against the CPU on the f16 values of a and b: a
/// mixed product rounds an f32 operand to f16 as it reads it.
#[test]
fn mixed_products_match_the_cpu_on_their_f16_operands() {
    let dev = device();
    let mut r = rng(41);
    let (mut runs, mut split_shapes) = (0, BTreeSet::new());
    for shape in cases::mixed_matmul_shapes() {
        let MatmulShape {
            batch,
            m,
            k,
            n,
            t,
            b_shared,
            types,
            ..
        } = shape;
        let (a_shape, b_shape, out_shape) = cases::operand_shapes(&shape);
        let a32 = upload(&a_shape, &random(&mut r, a_shape.iter().product()));
        let b32 = upload(&b_shape, &random(&mut r, b_shape.iter().product()));
        let (ta, tb) = (
            cast_forward(&a32, types.a).unwrap(),
            cast_forward(&b32, types.b).unwrap(),
        );
        let bias = random(&mut r, n);
        let bias_t = shape.bias.then(|| upload(&[n], &bias));
        let product = cpu::matmul(
            &round_f16(&ta.to_vec()),
            &round_f16(&tb.to_vec()),
            shape.bias.then_some(&bias[..]),
            batch,
            m,
            k,
            n,
            t.a,
            t.b,
            b_shared,
        );
        // GELU's input as the GELU-gradient product reads it, in its type.
        let pre_t = (shape.epilogue == Epilogue::GeluGradient).then(|| {
            let pre32 = upload(&out_shape, &random(&mut r, product.len()));
            cast_forward(&pre32, types.pre).unwrap()
        });
        let pre = pre_t.as_ref().map_or(Vec::new(), |p| p.to_vec());
        let want = match shape.epilogue {
            Epilogue::None | Epilogue::RowSums => product.clone(),
            Epilogue::Gelu | Epilogue::GeluSavingInput => cpu::gelu(&product),
            Epilogue::GeluGradient => cpu::gelu_backward(&pre, &product),
        };
        let (atol, rtol) = match types.c {
            DType::F32 => (1e-5 * k as f32, 1e-4),
            DType::F16 => (1e-5 * k as f32, 1e-3),
        };
        let plans = MatmulPlan::mixed_candidates(&dev, &shape);
        // f32 operands are multiplied as f16 on the mixed rule's plan (a mixed backward's).
        let rule = if types.all_f32() {
            MatmulPlan::mixed(&dev, &shape)
        } else {
            MatmulPlan::new(&dev, &shape)
        };
        assert!(!rule.fits() || plans.contains(&rule));
        if !types.all_f32() {
            assert_eq!(
                plans,
                MatmulPlan::candidates(&dev, &shape),
                "only the mixed kernels take {types:?}"
            );
        }
        for plan in plans {
            // The emulated cooperative-matrix kernel compiles slowly on lavapipe (in
            // every form, this test ran past 13 minutes with a cold shader cache, where
            // the whole file takes 6): it runs where its own code differs, on every size,
            // transpose and split, with f16 operands, into f32 and f16 outputs. The
            // loads of f32 operands, the bias and the GELU epilogues it shares are
            // matmul_mixed.wgsl's, which the other kernels run in every form.
            let emulated_case = (types.a, types.b) == (DType::F16, DType::F16)
                && shape.epilogue == Epilogue::None
                && !shape.bias;
            if plan.kernel == MatmulKernel::MixedCoopEmulated && !emulated_case {
                continue;
            }
            if plan.split_k.is_some() {
                split_shapes.insert((k, format!("{:?} x {:?}", types.a, types.b)));
            }
            let (got, saved) =
                matmul::matmul_epilogue_with(&plan, &ta, &tb, bias_t.as_ref(), pre_t.as_ref())
                    .unwrap();
            assert_eq!(got.shape(), out_shape);
            assert_eq!(got.dtype(), types.c);
            let what = format!("{} ({shape:?})", plan.describe());
            assert_close(&what, &got.to_vec(), &want, atol, rtol);
            if let Some(saved) = saved.as_ref().filter(|_| shape.epilogue.applies_gelu()) {
                assert_eq!(saved.dtype(), types.c, "GELU's input is stored as c is");
            }
            // Row sums of a as stored (f32 values unrounded), summed in f32.
            common::assert_second_output(
                &what,
                shape.epilogue,
                saved,
                &product,
                || cases::row_sums_of_transposed(&ta.to_vec(), batch, k, m),
                (k, atol, rtol),
            );
            runs += 1;
        }
    }
    // Split-K ran on every weight-gradient shape, in every mix (K 20 with row sums, on
    // the tiled kernel, which takes slices of 10), f32 operands included (K 20 and
    // 2048, with row sums), K 1001 with a row left over.
    let split_ks: BTreeSet<usize> = split_shapes.iter().map(|s| s.0).collect();
    assert_eq!(split_ks, BTreeSet::from([20, 1000, 1001, 2048]));
    assert_eq!(split_shapes.len(), 14);
    eprintln!(
        "{runs} mixed plans run against the CPU on {}",
        dev.info().name
    );
}

#[test]
fn mixed_weight_gradients_deeper_than_a_cpu_adapters_loops_split_as_f32_ones_do() {
    // As f32 ones (tests/matmul.rs): on a CPU adapter K = 9 x `CPU_LOOP_BUDGET` splits
    // into 9 slices (16 planned as a GPU); K = 4 x 65,539, which no count from 9 to 36
    // divides, into 9 with 4 rows left over, which a mixed product adds. With M = 3, K =
    // 262,162 in 9 slices of 29,129 would leave the rows over starting mid-word in f16:
    // the slices take 29,128 rows, and 10 are left over.
    let dev = device();
    let as_gpu = std::sync::Arc::new(engine::Device::new().unwrap());
    as_gpu.set_gpu_plans(true);
    let budget = engine::device::CPU_LOOP_BUDGET;
    let mut r = rng(43);
    for (k, m, n) in [
        (9 * budget, 4, 8),
        (4 * (2 * budget + 3), 4, 8),
        (262_162, 3, 8),
    ] {
        let (a, b) = (random(&mut r, k * m), random(&mut r, k * n));
        for planner in [&dev, &as_gpu] {
            let f16 = |shape: &[usize], data: &[f32]| {
                let t = Tensor::from_slice(planner, shape, data).unwrap();
                cast_forward(&t, DType::F16).unwrap()
            };
            let (ta, tb) = (f16(&[k, m], &a), f16(&[k, n], &b));
            let want = cpu::matmul(
                &ta.to_vec(),
                &tb.to_vec(),
                None,
                1,
                m,
                k,
                n,
                true,
                false,
                true,
            );
            let shape = MatmulShape::of(&ta, &tb, Transpose::A, None, Epilogue::None).unwrap();
            let plan = MatmulPlan::new(planner, &shape);
            let what = format!("[{k}x{m}]^T x [{k}x{n}] in f16: {}", plan.describe());
            assert!(plan.split_k.is_some(), "{what}");
            let got = matmul::matmul_forward(&ta, &tb, Transpose::A, None).unwrap();
            assert_close(&what, &got.to_vec(), &want, 1e-4, 1e-4);
        }
    }
}

#[test]
fn an_f16_output_needs_an_even_n_and_f32_kernels_refuse_f16_operands() {
    let dev = device();
    let a = cast_forward(&upload(&[2, 3], &[0.5; 6]), DType::F16).unwrap();
    let b = upload(&[3, 5], &[0.25; 15]);
    let shape = MatmulShape::of(&a, &b, Transpose::NONE, None, Epilogue::None).unwrap();
    let err = shape.with_output(DType::F16).unwrap_err().to_string();
    assert!(err.contains("N=5 is odd"), "{err}");
    let f32_plan = MatmulPlan {
        kernel: MatmulKernel::Scalar,
        ..MatmulPlan::new(&dev, &shape)
    };
    let err = matmul::matmul_with(&f32_plan, &a, &b, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("f32 kernels take f32 only"), "{err}");
    // The plan in use takes it, and gives 3 * 0.5 * 0.25 everywhere.
    let got = matmul::matmul_forward(&a, &b, Transpose::NONE, None).unwrap();
    assert_eq!(got.to_vec(), vec![0.375; 10]);
}

/// op(a) @ op(b) on the CPU, unbatched: a [m, k] (stored [k, m] when `ta`), b [k, n]
/// ([n, k] when `tb`).
fn mm(a: &[f32], b: &[f32], m: usize, k: usize, n: usize, ta: bool, tb: bool) -> Vec<f32> {
    cpu::matmul(a, b, None, 1, m, k, n, ta, tb, true)
}

/// loss = sum(y * r) for a fixed r, so that dy = r.
fn weighted_sum(y: &Tensor, r: &[f32]) -> Tensor {
    let rt = upload(y.shape(), r);
    ops::sum(&ops::mul(y, &rt).unwrap()).unwrap()
}

fn grad(grads: &engine::Gradients, t: &Tensor) -> Vec<f32> {
    let g = grads.get(t).expect("a gradient");
    assert_eq!(g.dtype(), DType::F32, "gradients are f32");
    g.to_vec()
}

/// Column sums of a [rows, cols] matrix.
fn column_sums(x: &[f32], cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; cols];
    for row in x.chunks(cols) {
        out.iter_mut().zip(row).for_each(|(o, v)| *o += v);
    }
    out
}

/// `linear`, and `linear_to` with an f16 output (the qkv projection's under mixed
/// precision: its f32 sums rounded to f16), against the CPU on f16 operands; the
/// gradients are f32 either way.
#[test]
fn linear_under_autocast_multiplies_f16_operands_and_returns_f32_gradients() {
    let mut r = rng(42);
    let (rows, inp, out) = (2 * 9, 20, 12);
    let (x, w, b, dy) = (
        random(&mut r, rows * inp),
        random(&mut r, out * inp),
        random(&mut r, out),
        random(&mut r, rows * out),
    );
    let xt = upload(&[2, 9, inp], &x).requires_grad();
    let wt = upload(&[out, inp], &w).requires_grad();
    let bt = upload(&[out], &b).requires_grad();
    let (x16, w16, dy16) = (as_f16(&xt), as_f16(&wt), round_f16(&dy));
    let want_y = cpu::matmul(&x16, &w16, Some(&b), 1, rows, inp, out, false, true, true);
    for stored in [DType::F32, DType::F16] {
        let y = autocast(Precision::Mixed, || {
            ops::linear_to(&xt, &wt, Some(&bt), stored)
        })
        .unwrap();
        assert_eq!((y.shape(), y.dtype()), ([2, 9, out].as_slice(), stored));
        // Widened for the loss (elementwise kernels read f32); the cast's backward
        // hands the f32 gradient on as it is.
        let y32 = ops::cast(&y, DType::F32).unwrap();
        let grads = engine::backward(&weighted_sum(&y32, &dy)).unwrap();
        match stored {
            DType::F32 => assert_close("y", &y.to_vec(), &want_y, 1e-5, 1e-5),
            // One f16 step either way: the f32 sums may differ in their last bit.
            DType::F16 => assert_close("y in f16", &y.to_vec(), &round_f16(&want_y), 1e-3, 1e-3),
        }
        // The backward's products multiply f16 values too: the gradient dy rounded.
        assert_close(
            &format!("dx, {stored:?} output"),
            &grad(&grads, &xt),
            &mm(&dy16, &w16, rows, out, inp, false, false),
            1e-5,
            1e-5,
        );
        assert_close(
            &format!("dw, {stored:?} output"),
            &grad(&grads, &wt),
            &mm(&dy16, &x16, out, rows, inp, true, false),
            1e-5,
            1e-5,
        );
        assert_close("db", &grad(&grads, &bt), &column_sums(&dy, out), 1e-5, 1e-5);
    }
    // In f32 the same op is the f32 product: mixed differs from it by f16 rounding only.
    let y = autocast(Precision::Mixed, || ops::linear(&xt, &wt, Some(&bt))).unwrap();
    let y32 = ops::linear(&xt, &wt, Some(&bt)).unwrap();
    assert_close("mixed vs f32", &y.to_vec(), &y32.to_vec(), 2e-2, 1e-2);
}

/// A mixed `linear`'s backward (f16 weight, f32 x and dc), tokens, in and out multiples
/// of 4: the subgroup kernel sums the bias gradient from dc as stored (f32, unrounded)
/// while its product multiplies dc's f16 roundings; no column sum of its own.
#[test]
fn a_mixed_weight_gradient_brings_the_f32_bias_gradient_where_the_kernel_sums_rows() {
    let dev = std::sync::Arc::new(engine::Device::new().unwrap());
    let here = |shape: &[usize], data: &[f32]| Tensor::from_slice(&dev, shape, data).unwrap();
    let mut r = rng(43);
    let (tokens, inp, out) = (36, 20, 12);
    let (x, w, dc) = (
        random(&mut r, tokens * inp),
        random(&mut r, out * inp),
        random(&mut r, tokens * out),
    );
    let w16 = cast_forward(&here(&[out, inp], &w), DType::F16).unwrap();
    let (xt, dct) = (here(&[tokens, inp], &x), here(&[tokens, out], &dc));
    let before = dev.counts().dispatches;
    let (dx, dw, dbias) =
        matmul::matmul_backward(&xt, &w16, Transpose::B, true, &dct, &[true, true, true]).unwrap();
    let dispatches = dev.counts().dispatches - before;
    let (x16, w16, dc16) = (round_f16(&x), w16.to_vec(), round_f16(&dc));
    let tol = 1e-5 * tokens as f32;
    let want_dx = mm(&dc16, &w16, tokens, out, inp, false, false);
    assert_close("dx", &dx.unwrap().to_vec(), &want_dx, tol, 1e-4);
    let want_dw = mm(&dc16, &x16, out, tokens, inp, true, false);
    assert_close("dw", &dw.unwrap().to_vec(), &want_dw, tol, 1e-4);
    // Of the f32 gradient: its f16 roundings would be off by ~1e-3.
    assert_close(
        "dbias",
        &dbias.unwrap().to_vec(),
        &column_sums(&dc, out),
        1e-5,
        1e-5,
    );
    if dev.has_cpu_subgroups_of_8() {
        assert_eq!(dispatches, 2, "the two products only");
    }
}

#[test]
fn mlp_under_autocast_keeps_its_hidden_layer_and_its_gradient_in_f16_and_matches_the_cpu() {
    let mut r = rng(43);
    let (rows, dim, hidden) = (13, 12, 24);
    let (x, w1, b1, w2, b2, dy) = (
        random(&mut r, rows * dim),
        random(&mut r, hidden * dim),
        random(&mut r, hidden),
        random(&mut r, dim * hidden),
        random(&mut r, dim),
        random(&mut r, rows * dim),
    );
    let xt = upload(&[rows, dim], &x).requires_grad();
    let w1t = upload(&[hidden, dim], &w1).requires_grad();
    let b1t = upload(&[hidden], &b1).requires_grad();
    let w2t = upload(&[dim, hidden], &w2).requires_grad();
    let b2t = upload(&[dim], &b2).requires_grad();
    let y = autocast(Precision::Mixed, || {
        ops::mlp(&xt, &w1t, Some(&b1t), &w2t, Some(&b2t))
    })
    .unwrap();
    assert_eq!(y.dtype(), DType::F32);
    let grads = engine::backward(&weighted_sum(&y, &dy)).unwrap();

    // The CPU on the same f16 operands, the hidden layer rounded to f16.
    let (x16, w1_16, w2_16) = (as_f16(&xt), as_f16(&w1t), as_f16(&w2t));
    let pre = cpu::matmul(
        &x16,
        &w1_16,
        Some(&b1),
        1,
        rows,
        dim,
        hidden,
        false,
        true,
        true,
    );
    let h = round_f16(&cpu::gelu(&pre));
    let want_y = cpu::matmul(
        &h,
        &w2_16,
        Some(&b2),
        1,
        rows,
        hidden,
        dim,
        false,
        true,
        true,
    );
    // The backward's products round their f32 gradients to f16.
    let dy16 = round_f16(&dy);
    let dh = mm(&dy16, &w2_16, rows, dim, hidden, false, false);
    // GELU's input is kept in f16, as its output is, and so is its gradient, which
    // fc1's bias gradient sums as stored.
    let dpre16 = round_f16(&cpu::gelu_backward(&round_f16(&pre), &dh));
    // h's rounding (an f16 ulp, 2^-11 relative, of values up to ~3) is the loosest step.
    assert_close("y", &y.to_vec(), &want_y, 2e-3, 2e-3);
    assert_close(
        "dx",
        &grad(&grads, &xt),
        &mm(&dpre16, &w1_16, rows, hidden, dim, false, false),
        1e-4,
        1e-4,
    );
    assert_close(
        "dw1",
        &grad(&grads, &w1t),
        &mm(&dpre16, &x16, hidden, rows, dim, true, false),
        1e-4,
        1e-4,
    );
    assert_close(
        "db1",
        &grad(&grads, &b1t),
        &column_sums(&dpre16, hidden),
        1e-4,
        1e-4,
    );
    assert_close(
        "dw2",
        &grad(&grads, &w2t),
        &mm(&dy16, &h, dim, rows, hidden, true, false),
        2e-3,
        2e-3,
    );
    assert_close(
        "db2",
        &grad(&grads, &b2t),
        &column_sums(&dy, dim),
        1e-5,
        1e-5,
    );

    // Without a tape (the target encoder): the same forward.
    let y_eval = engine::no_grad(|| {
        autocast(Precision::Mixed, || {
            ops::mlp(&xt, &w1t, Some(&b1t), &w2t, Some(&b2t))
        })
    })
    .unwrap();
    assert_close("y without a tape", &y_eval.to_vec(), &want_y, 2e-3, 2e-3);
}

/// A LayerNorm that feeds a product writes its output in f16 itself
/// (`layernorm_to`): the same halves, bit for bit, as its f32 output cast to f16, on
/// every row plan, with and without affine parameters and a fused residual addition,
/// on even rows, odd rows (cast after the kernel) and rows long enough for a workgroup
/// each. Under `autocast` the product that follows, and every gradient, are the same
/// bit for bit as with the f32 LayerNorm and the product's own cast.
#[test]
fn a_layernorm_that_feeds_a_product_writes_the_f16_its_cast_would() {
    use engine::ops::layernorm::{add_layernorm_forward_with, layernorm_forward_with};
    use engine::ops::rows::RowPlan;
    let dev = device();
    let mut r = rng(43);
    for (rows, cols) in [(37, 64), (5, 7), (3, 300)] {
        let x = upload(&[rows, cols], &random(&mut r, rows * cols));
        let addend = upload(&[rows, cols], &random(&mut r, rows * cols));
        let (g, b) = (
            upload(&[cols], &random(&mut r, cols)),
            upload(&[cols], &random(&mut r, cols)),
        );
        for plan in RowPlan::candidates(&dev, rows, cols) {
            for affine in [None, Some((&g, &b))] {
                let what = format!("{} affine={}", plan.describe(), affine.is_some());
                let (y32, _) = layernorm_forward_with(&plan, &x, affine, 1e-6, DType::F32).unwrap();
                let (y16, saved) =
                    layernorm_forward_with(&plan, &x, affine, 1e-6, DType::F16).unwrap();
                assert_eq!(y16.dtype(), DType::F16, "{what}");
                assert_eq!(y16.to_vec(), as_f16(&y32), "{what}: y");
                assert_eq!(saved.x.to_vec(), x.to_vec(), "{what}: saved input");
                let (s32, _, sum32) =
                    add_layernorm_forward_with(&plan, &x, &addend, affine, 1e-6, DType::F32)
                        .unwrap();
                let (s16, _, sum16) =
                    add_layernorm_forward_with(&plan, &x, &addend, affine, 1e-6, DType::F16)
                        .unwrap();
                assert_eq!(s16.to_vec(), as_f16(&s32), "{what}: y of x + addend");
                assert_eq!(sum16.to_vec(), sum32.to_vec(), "{what}: x + addend");
            }
        }
    }

    let (rows, d, out) = (2 * 9, 16, 12);
    let x = upload(&[2, 9, d], &random(&mut r, rows * d)).requires_grad();
    let g = upload(&[d], &random(&mut r, d)).requires_grad();
    let b = upload(&[d], &random(&mut r, d)).requires_grad();
    let w = upload(&[out, d], &random(&mut r, out * d)).requires_grad();
    let dy = random(&mut r, rows * out);
    let run = |norm_out| {
        let y = autocast(Precision::Mixed, || {
            let h = ops::layernorm_to(&x, Some((&g, &b)), 1e-6, norm_out)?;
            ops::linear(&h, &w, None)
        })
        .unwrap();
        let grads = engine::backward(&weighted_sum(&y, &dy)).unwrap();
        let mut values = vec![y.to_vec()];
        values.extend([&x, &g, &b, &w].map(|t| grad(&grads, t)));
        values
    };
    let (cast_by_product, written_f16) = (run(DType::F32), run(DType::F16));
    for (name, (a, b)) in ["y", "dx", "dgamma", "dbeta", "dw"]
        .iter()
        .zip(cast_by_product.iter().zip(&written_f16))
    {
        assert_eq!(a, b, "{name}: f16 LayerNorm output vs the product's cast");
    }
}

/// A transformer block under autocast, at an even width (its qkv stored in f16 and
/// read so by fused attention, as on lavapipe at 5 tokens) and an odd one (its qkv
/// kept in f32, since f16 rows are whole words), against the same block in f32: output
/// and input gradient apart by f16 rounding only.
#[test]
fn a_block_under_autocast_follows_the_f32_block_at_even_and_odd_widths() {
    use model::layers::{Init, TransformerBlock};
    let dev = device();
    for (dim, heads) in [(8, 2), (9, 3)] {
        let mut r = rng(7);
        let mut init = Init {
            device: &dev,
            rng: &mut r,
            trainable: true,
        };
        let block = TransformerBlock::new(&mut init, dim, heads, 4 * dim, true, 1e-6, 1).unwrap();
        let x = upload(&[2, 5, dim], &random(&mut r, 2 * 5 * dim)).requires_grad();
        let dy = random(&mut r, 2 * 5 * dim);
        let run = |precision| {
            let y = autocast(precision, || block.forward(&x)).unwrap();
            assert_eq!(y.dtype(), DType::F32);
            let grads = engine::backward(&weighted_sum(&y, &dy)).unwrap();
            (y.to_vec(), grad(&grads, &x))
        };
        let ((y32, dx32), (y16, dx16)) = (run(Precision::F32), run(Precision::Mixed));
        assert_close(&format!("width {dim}: y"), &y16, &y32, 2e-2, 1e-2);
        assert_close(&format!("width {dim}: dx"), &dx16, &dx32, 2e-2, 1e-2);
    }
}

/// The qkv projection stores f16 only under mixed precision, at an even width, and
/// where attention's plan reads f16 as it is: a fused family by rule, or any plan
/// where the device measures plans (the composed path then timed with its widening).
#[test]
fn the_qkv_is_stored_in_f16_where_attention_reads_it_so() {
    use engine::ops::attention::{qkv_storage, AttentionPath, AttentionPlan, AttentionShape};
    let dev = device();
    let measuring = engine::Device::new().unwrap();
    measuring.set_measure_plans(true);
    // Fused on lavapipe; composed there and on GPUs; an odd width.
    for (batch, tokens, heads, head_dim) in [(2, 5, 2, 4), (2, 196, 4, 64), (1, 3, 3, 3)] {
        let shape = AttentionShape {
            batch,
            tokens,
            heads,
            head_dim,
            qkv: DType::F32,
        };
        let what = format!("{shape:?}");
        let fused = matches!(
            AttentionPlan::new(&dev, &shape).path,
            AttentionPath::Fused(_)
        );
        let even = (3 * heads * head_dim).is_multiple_of(2);
        assert_eq!(qkv_storage(&dev, &shape), DType::F32, "{what}, f32");
        let mixed = autocast(Precision::Mixed, || qkv_storage(&dev, &shape));
        assert_eq!(mixed == DType::F16, fused && even, "{what}, mixed");
        let measured = autocast(Precision::Mixed, || qkv_storage(&measuring, &shape));
        assert_eq!(measured == DType::F16, even, "{what}, measured plans");
    }
}

/// The whole training step in mixed precision against the f32 step, from the same
/// initial weights on the same batches and masks: the losses of three steps, and the
/// first step's gradients (all of them as one vector, relative L2 error; the mixed
/// ones divided by the loss scale they carry). Measured on lavapipe: losses within
/// 3e-6 relative, gradients within 1.4e-4 (the backward's products round gradients to
/// f16); held to 1e-3 and 2e-2.
#[test]
fn a_mixed_precision_step_follows_the_f32_step() {
    mixed_steps_follow_the_f32_steps(&device());
}

/// The same on a GPU's plans (`IJEPA_GPU_PLANS`), on a device of its own: the tiled
/// mixed kernels, their splits along K and the row lanes in whole steps.
#[test]
fn a_mixed_precision_step_follows_the_f32_step_on_a_gpus_plans() {
    let dev = std::sync::Arc::new(engine::Device::new().unwrap());
    dev.set_gpu_plans(true);
    mixed_steps_follow_the_f32_steps(&dev);
}

fn mixed_steps_follow_the_f32_steps(dev: &std::sync::Arc<engine::Device>) {
    use train::synthetic::SyntheticRun;
    let run = |precision| {
        let config = train::config::PretrainConfig {
            precision,
            ..common::runs::tiny_config(64, 1)
        };
        let mut run = SyntheticRun::new(dev, config, 3).unwrap();
        let params = run.state.model.trainable_params();
        let mut losses = Vec::new();
        let mut first_grads = Vec::new();
        for step in 0..3 {
            let result = run.step(step, false).unwrap();
            losses.push(result.loss);
            if step == 0 {
                let scale = result.loss_scale.unwrap_or(1.0);
                for (_, p) in &params {
                    first_grads.extend(grad(&result.grads, p).iter().map(|g| g / scale));
                }
            }
        }
        (losses, first_grads)
    };
    let (losses32, grads32) = run(Precision::F32);
    let (losses16, grads16) = run(Precision::Mixed);
    eprintln!(
        "{}{}: losses f32 {losses32:?}, mixed {losses16:?}",
        dev.info().name,
        if dev.plans_as_cpu() {
            ""
        } else {
            " on a GPU's plans"
        }
    );
    for (l32, l16) in losses32.iter().zip(&losses16) {
        assert!(
            (l32 - l16).abs() <= 1e-3 * l32.abs(),
            "mixed loss {l16} vs f32 {l32}"
        );
    }
    let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let diff: Vec<f32> = grads32.iter().zip(&grads16).map(|(a, b)| a - b).collect();
    let rel = norm(&diff) / norm(&grads32);
    eprintln!(
        "first step's gradients: relative L2 error {rel:.2e} over {} values",
        grads32.len()
    );
    assert!(
        rel <= 2e-2,
        "mixed gradients differ from f32 by {rel:.2e} (relative L2)"
    );
}

/// The mixed-precision step rounds every parameter to f16 once, one cast per packed
/// bucket (`TrainState::forward`): the same loss and gradients, bit for bit, as casting
/// each weight where a linear layer uses it, in fewer dispatches.
#[test]
fn f16_parameter_copies_stand_in_for_casts_bit_for_bit() {
    use train::synthetic::SyntheticRun;
    // A device of its own: the shared one also counts the dispatches of the tests that
    // run beside this one.
    let dev = std::sync::Arc::new(engine::Device::new().unwrap());
    let config = train::config::PretrainConfig {
        precision: Precision::Mixed,
        ..common::runs::tiny_config(64, 1)
    };
    let run = SyntheticRun::new(&dev, config, 1).unwrap();
    let masks = run.masks(0).unwrap();
    let params = run.state.model.trainable_params();
    let forward_backward = |copies: bool| {
        let before = dev.counts().dispatches;
        let outputs = if copies {
            run.state.forward(&run.images, &masks).unwrap()
        } else {
            autocast(Precision::Mixed, || {
                run.state.model.forward(&run.images, &masks)
            })
            .unwrap()
        };
        let grads = engine::backward(&outputs.loss).unwrap();
        let dispatches = dev.counts().dispatches - before;
        let grads: Vec<Vec<f32>> = params.iter().map(|(_, p)| grad(&grads, p)).collect();
        (outputs.loss.item(), grads, dispatches)
    };
    let (loss_cast, grads_cast, dispatches_cast) = forward_backward(false);
    let (loss_copies, grads_copies, dispatches_copies) = forward_backward(true);
    eprintln!("dispatches: {dispatches_cast} casting each weight, {dispatches_copies} with copies");
    assert_eq!(loss_copies.to_bits(), loss_cast.to_bits(), "loss");
    for ((name, _), (a, b)) in params.iter().zip(grads_cast.iter().zip(&grads_copies)) {
        let same = a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(same, "the gradient of {name} differs with f16 copies");
    }
    assert!(
        dispatches_copies < dispatches_cast,
        "copies: {dispatches_copies} dispatches, casts: {dispatches_cast}"
    );
}

/// A mixed product rounds an f32 operand to f16 as IEEE arithmetic does: values that
/// round to 65504 stay finite, larger ones become infinite (so that a loss scale too
/// large shows), and NaN stays NaN, on every candidate plan.
#[test]
fn an_f32_operand_past_f16s_range_makes_a_mixed_product_infinite() {
    let dev = device();
    let (m, k, n) = (4, 8, 6);
    let mut a = vec![0.25f32; m * k];
    a[3] = 65519.0; // row 0: rounds to 65504
    a[k + 5] = 65520.0; // row 1: rounds up past f16's largest value
    a[2 * k] = f32::NAN; // row 2
    let b = cast_forward(&upload(&[k, n], &vec![0.5; k * n]), DType::F16).unwrap();
    let at = upload(&[m, k], &a);
    let shape = MatmulShape::of(&at, &b, Transpose::NONE, None, Epilogue::None).unwrap();
    let plans = MatmulPlan::candidates(&dev, &shape);
    assert!(plans.len() > 1, "{plans:?}");
    for plan in plans {
        let c = matmul::matmul_epilogue_with(&plan, &at, &b, None, None)
            .unwrap()
            .0
            .to_vec();
        let what = plan.describe();
        let row = |i: usize| &c[i * n..(i + 1) * n];
        let finite_row0 = 0.5 * (65504.0 + 0.25 * (k - 1) as f32);
        assert!(
            row(0).iter().all(|&v| v == finite_row0),
            "{what}: {:?}",
            row(0)
        );
        assert!(
            row(1).iter().all(|&v| v == f32::INFINITY),
            "{what}: {:?}",
            row(1)
        );
        assert!(row(2).iter().all(|v| v.is_nan()), "{what}: {:?}", row(2));
        assert!(
            row(3).iter().all(|&v| v == 0.125 * k as f32),
            "{what}: {:?}",
            row(3)
        );
    }
}

/// The loss scaler's check finds an infinity or a NaN wherever it is in any of the
/// tensors, and nothing in finite ones however large or small.
#[test]
fn the_overflow_check_finds_every_infinity_and_nan() {
    use engine::ops::update::any_non_finite;
    let len = 1000;
    let finite = upload(&[len], &random(&mut rng(44), len));
    let extremes = upload(&[4], &[f32::MAX, -f32::MAX, f32::MIN_POSITIVE / 4.0, 0.0]);
    assert!(!any_non_finite(&[&finite, &extremes]).unwrap());
    for bad in [f32::INFINITY, f32::NEG_INFINITY, f32::NAN] {
        for at in [0, 517, len - 1] {
            let mut data = random(&mut rng(45), len);
            data[at] = bad;
            let t = upload(&[len], &data);
            assert!(
                any_non_finite(&[&finite, &t]).unwrap(),
                "{bad} at {at} of the second tensor"
            );
        }
    }
}

/// `LossScaler` follows `torch.cuda.amp.GradScaler()`'s defaults and rules: 2^16 to
/// start; an overflow halves the scale and restarts the count; the 2000th finite step
/// in a row doubles it, unless doubling would overflow.
#[test]
fn the_loss_scale_follows_gradscalers_rules() {
    use train::loss_scale::LossScaler;
    let mut s = LossScaler::default();
    assert_eq!(
        (s.scale, s.growth_tracker, s.growth_interval),
        (65536.0, 0, 2000)
    );
    for _ in 0..1999 {
        s.update(false);
    }
    assert_eq!((s.scale, s.growth_tracker), (65536.0, 1999));
    s.update(false);
    assert_eq!((s.scale, s.growth_tracker), (131072.0, 0));
    s.update(false);
    s.update(true);
    assert_eq!((s.scale, s.growth_tracker), (65536.0, 0));
    let mut big = LossScaler {
        scale: f32::MAX,
        growth_tracker: 0,
        growth_interval: 1,
    };
    big.update(false);
    assert_eq!((big.scale, big.growth_tracker), (f32::MAX, 0));
}

/// A mixed step whose scaled gradients overflow changes neither the encoder nor the
/// predictor nor AdamW's state, halves the loss scale, and still moves the target
/// encoder (the official loop's EMA follows every step); the next step, at a scale that
/// fits, updates. A checkpoint then carries AdamW's own count and the scaler, so that a
/// resumed run takes the next step exactly as the run that went on.
#[test]
fn an_overflowing_mixed_step_is_skipped_and_a_resume_keeps_the_scaler() {
    use train::checkpoint::{self, Checkpoint, CheckpointMeta};
    use train::synthetic::SyntheticRun;
    let dev = device();
    let config = train::config::PretrainConfig {
        precision: Precision::Mixed,
        ..common::runs::tiny_config(64, 1)
    };
    let mut run = SyntheticRun::new(&dev, config.clone(), 8).unwrap();
    let state_of = |run: &SyntheticRun| -> Vec<Vec<f32>> {
        let mut all: Vec<Vec<f32>> = run
            .state
            .model
            .trainable_params()
            .iter()
            .map(|(_, p)| p.to_vec())
            .collect();
        for (_, m, v) in run.state.optimizer.moments() {
            all.extend([m.to_vec(), v.to_vec()]);
        }
        all
    };
    let targets = |run: &SyntheticRun| -> Vec<Vec<f32>> {
        run.state
            .model
            .target_params()
            .iter()
            .map(|(_, p)| p.to_vec())
            .collect()
    };
    run.step(0, false).unwrap();
    let (before, targets_before) = (state_of(&run), targets(&run));
    run.state.loss_scaler.scale = 1e30;
    let result = run.step(1, false).unwrap();
    assert!(
        result.skipped && result.loss.is_finite(),
        "loss {}",
        result.loss
    );
    assert_eq!(result.loss_scale, Some(1e30));
    assert_eq!(run.state.loss_scaler.scale, 5e29);
    assert_eq!(run.state.optimizer.step, 1);
    assert!(
        state_of(&run) == before,
        "a skipped step changed the encoder, predictor or AdamW"
    );
    assert!(
        targets(&run) != targets_before,
        "the EMA did not follow the skipped step"
    );

    run.state.loss_scaler.scale = 4096.0;
    run.state.loss_scaler.growth_interval = 2;
    for step in 2..5 {
        assert!(!run.step(step, false).unwrap().skipped, "step {step}");
    }
    assert_ne!(state_of(&run), before);
    assert_eq!(run.state.optimizer.step, 4);
    assert_eq!(
        (
            run.state.loss_scaler.scale,
            run.state.loss_scaler.growth_tracker
        ),
        (8192.0, 1)
    );

    let dir = common::runs::temp_dir("mixed_scaler_resume");
    let path = dir.join(checkpoint::CHECKPOINT);
    let meta = CheckpointMeta {
        step: 5,
        pretrain: config.clone(),
        model: run.state.model.config.clone(),
        channel_stats: vec![(0.5, 0.25)],
        ranks: 1,
    };
    checkpoint::save(&path, &run.state, &meta).unwrap();
    let mut resumed = SyntheticRun::new(&dev, config, 8).unwrap();
    resumed.state.loss_scaler.growth_interval = 2;
    Checkpoint::open(&path)
        .unwrap()
        .load_into(&mut resumed.state)
        .unwrap();
    assert_eq!(resumed.state.optimizer.step, 4);
    assert_eq!(resumed.state.loss_scaler, run.state.loss_scaler);
    let (went_on, after_resume) = (run.step(5, false).unwrap(), resumed.step(5, false).unwrap());
    assert_eq!(went_on.loss.to_bits(), after_resume.loss.to_bits());
    assert!(
        state_of(&run) == state_of(&resumed),
        "the resumed step differs"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
