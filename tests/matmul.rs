//! Matmul against the CPU reference: every product of `cases::matmul_shapes` on every
//! plan the adapter can run for it (each kernel, split along K or not, each epilogue),
//! the plan rule for split-K, `linear_gelu` in both of its modes, and the backward.
//! Tolerances: f32 kernels against f64 references, a few ulps times the length of the
//! longest sum.

mod common;

use common::{assert_close, cases, device, random, rng, upload};
use engine::cpu;
use engine::ops::attention::{AttentionPlan, AttentionShape};
use engine::ops::cast::cast_forward;
use engine::ops::matmul::{
    self, split_k, Epilogue, MatmulPlan, MatmulShape, MatmulTypes, Transpose,
};
use engine::ops::{self};

#[test]
fn every_candidate_plan_matches_cpu_on_odd_shapes_transposes_batches_bias_and_gelu() {
    let dev = device();
    let mut r = rng(1);
    let mut runs = 0;
    for shape in cases::matmul_shapes() {
        let MatmulShape {
            batch,
            m,
            k,
            n,
            t,
            b_shared,
            ..
        } = shape;
        let a = random(&mut r, batch * m * k);
        let b = random(&mut r, if b_shared { 1 } else { batch } * k * n);
        let bias = random(&mut r, n);
        let (a_shape, b_shape, out_shape) = cases::operand_shapes(&shape);
        let (ta, tb) = (upload(&a_shape, &a), upload(&b_shape, &b));
        let bias_t = shape.bias.then(|| upload(&[n], &bias));
        let product = cpu::matmul(
            &a,
            &b,
            shape.bias.then_some(&bias[..]),
            batch,
            m,
            k,
            n,
            t.a,
            t.b,
            b_shared,
        );
        // The GELU-gradient epilogue's saved input, of the output's shape.
        let pre = random(&mut r, product.len());
        let pre_t = (shape.epilogue == Epilogue::GeluGradient).then(|| upload(&out_shape, &pre));
        let want = match shape.epilogue {
            Epilogue::None | Epilogue::RowSums => product.clone(),
            Epilogue::Gelu | Epilogue::GeluSavingInput => cpu::gelu(&product),
            Epilogue::GeluGradient => cpu::gelu_backward(&pre, &product),
        };
        let plans = MatmulPlan::candidates(&dev, &shape);
        // A rule's plan that no kernel of this device fits (row sums off the kernels
        // that sum them) is one its callers do not run.
        let rule = MatmulPlan::new(&dev, &shape);
        assert!(
            !rule.fits() || plans.contains(&rule),
            "the plan in use for {shape:?} is not among the candidates"
        );
        if shape.epilogue == Epilogue::RowSums && dev.has_cpu_subgroups_of_8() {
            // Row sums come with a stored [K, M], where the subgroup kernel takes any K.
            let subgroup_sizes = m % 4 == 0 && n % 4 == 0;
            assert_eq!(
                rule.fits(),
                subgroup_sizes,
                "{shape:?}: the subgroup kernel sums rows where it runs"
            );
        }
        for plan in plans {
            let (got, saved) =
                matmul::matmul_epilogue_with(&plan, &ta, &tb, bias_t.as_ref(), pre_t.as_ref())
                    .unwrap();
            assert_eq!(got.shape(), out_shape);
            let what = format!("{} ({shape:?})", plan.describe());
            assert_close(&what, &got.to_vec(), &want, 1e-5 * k as f32, 1e-4);
            common::assert_second_output(
                &what,
                shape.epilogue,
                saved,
                &product,
                || cases::row_sums_of_transposed(&a, batch, k, m),
                (k, 1e-5 * k as f32, 1e-4),
            );
            runs += 1;
        }
    }
    eprintln!(
        "{runs} matmul plans run against the CPU on {}",
        dev.info().name
    );
}

#[test]
fn linear_gelu_is_one_product_without_a_tape_and_differentiable_with_one() {
    let mut r = rng(11);
    let (x, w, bias) = (
        random(&mut r, 6 * 20),
        random(&mut r, 12 * 20),
        random(&mut r, 12),
    );
    let want = cpu::gelu(&cpu::matmul(
        &x,
        &w,
        Some(&bias),
        1,
        6,
        20,
        12,
        false,
        true,
        true,
    ));
    let (xt, wt, bt) = (
        upload(&[2, 3, 20], &x),
        upload(&[12, 20], &w),
        upload(&[12], &bias),
    );
    let fused = engine::no_grad(|| ops::linear_gelu(&xt, &wt, Some(&bt))).unwrap();
    assert_eq!(fused.shape(), [2, 3, 12]);
    assert_close("linear_gelu fused", &fused.to_vec(), &want, 1e-4, 1e-4);
    let wt = wt.requires_grad();
    let composed = ops::linear_gelu(&xt, &wt, Some(&bt)).unwrap();
    assert!(
        composed.tracks_grad(),
        "linear_gelu under a tape must be differentiable"
    );
    assert_close(
        "linear_gelu composed",
        &composed.to_vec(),
        &want,
        1e-4,
        1e-4,
    );
}

#[test]
fn split_k_applies_to_weight_gradients_on_gpus() {
    let shape = |m, k, n, t: Transpose, batch| MatmulShape {
        batch,
        m,
        k,
        n,
        t,
        b_shared: batch == 1,
        bias: false,
        epilogue: Epilogue::None,
        types: MatmulTypes::F32,
    };
    let dw = |m, k, n| shape(m, k, n, Transpose::A, 1);
    // A ViT-tiny fc1 weight gradient, [192, 768] summed over 6,272 tokens, on 36 tiles
    // of 64x64 (under 1e9 multiply-adds): 16 slices would be under 512 rows and 8 over
    // 256 tiles, so 4.
    assert_eq!(split_k(true, &dw(192, 6272, 768)), Some(4));
    // [64, 64] over 16,384: 1 tile, 16 slices of 1,024. Over 9,000, 8 slices divide
    // it and 16 would not; over 9,001 none divides, so 16 of 562 and a rest of 9.
    assert_eq!(split_k(true, &dw(64, 16384, 64)), Some(16));
    assert_eq!(split_k(true, &dw(64, 9000, 64)), Some(8));
    assert_eq!(split_k(true, &dw(64, 9001, 64)), Some(16));
    // The ViT-S predictor's, over 19,712 tokens, whose outputs run on 128x128 tiles:
    // qkv [1152, 384] on 27 (8 slices make 216), fc1 [1536, 384] on 36 (4 make 144),
    // proj [384, 384] on 9 (16 make 144).
    assert_eq!(split_k(true, &dw(1152, 19712, 384)), Some(8));
    assert_eq!(split_k(true, &dw(1536, 19712, 384)), Some(4));
    assert_eq!(split_k(true, &dw(384, 19712, 384)), Some(16));
    // Outputs that occupy the device, and those whose K is too short for slices of
    // 512, in two; below K = 512 not at all.
    assert_eq!(split_k(true, &dw(1024, 8192, 1024)), Some(2));
    assert_eq!(split_k(true, &dw(192, 1000, 768)), Some(2));
    assert_eq!(split_k(true, &dw(192, 511, 768)), None);
    // Not on CPU adapters, not for other forms or batches.
    assert_eq!(split_k(false, &dw(192, 6272, 768)), None);
    assert_eq!(
        split_k(true, &shape(192, 6272, 768, Transpose::NONE, 1)),
        None
    );
    assert_eq!(split_k(true, &shape(192, 6272, 768, Transpose::B, 1)), None);
    assert_eq!(split_k(true, &shape(192, 6272, 768, Transpose::A, 2)), None);
    let with_bias = MatmulShape {
        bias: true,
        ..dw(192, 6272, 768)
    };
    assert_eq!(split_k(true, &with_bias), None);
}

#[test]
fn split_k_refuses_more_slices_than_rows() {
    let (a, b) = (upload(&[3, 3], &[0.0; 9]), upload(&[3, 2], &[0.0; 6]));
    let shape = MatmulShape::of(&a, &b, Transpose::A, None, Epilogue::None).unwrap();
    let plan = MatmulPlan {
        split_k: Some(4),
        ..MatmulPlan::new(&device(), &shape)
    };
    let e = matmul::matmul_with(&plan, &a, &b, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("split-K") && e.contains("at least 4"), "{e}");
}

#[test]
fn products_deeper_than_a_cpu_adapters_loops_split_or_are_refused() {
    // lavapipe cuts an invocation's loops short after 65,535 iterations in all, without
    // an error (`CPU_LOOP_BUDGET`). A weight gradient deeper than that, on the subgroup
    // kernel (4 k a step) and on the flat one (K not a multiple of 4, 1 k a step), is
    // split into slices; a product that cannot be split is refused by name. GPUs run
    // both, by their own rules; a CPU adapter planning as a GPU splits them as a GPU
    // would, into slices its loops can walk.
    let dev = device();
    let as_gpu = std::sync::Arc::new(engine::Device::new().unwrap());
    as_gpu.set_gpu_plans(true);
    let budget = engine::device::CPU_LOOP_BUDGET;
    let mut r = rng(14);
    for (k, m, n) in [(4 * (2 * budget + 3), 4, 8), (budget + 3, 3, 5)] {
        let (a, b) = (random(&mut r, k * m), random(&mut r, k * n));
        let want = cpu::matmul(&a, &b, None, 1, m, k, n, true, false, true);
        for planner in [&dev, &as_gpu] {
            let on = |shape: &[usize], data: &[f32]| {
                engine::Tensor::from_slice(planner, shape, data).unwrap()
            };
            let (ta, tb) = (on(&[k, m], &a), on(&[k, n], &b));
            let shape = MatmulShape::of(&ta, &tb, Transpose::A, None, Epilogue::None).unwrap();
            let plan = MatmulPlan::new(planner, &shape);
            if dev.is_cpu() {
                assert!(plan.split_k.is_some(), "{}", plan.describe());
            }
            let got = matmul::matmul_forward(&ta, &tb, Transpose::A, None).unwrap();
            let what = format!("[{k}x{m}]^T x [{k}x{n}]: {}", plan.describe());
            assert_close(&what, &got.to_vec(), &want, 1e-4, 1e-4);
        }
    }
    // Where plans are measured, the candidates that cannot run that deep are left out.
    let measuring = std::sync::Arc::new(engine::Device::new().unwrap());
    measuring.set_measure_plans(true);
    let (k, m, n) = (4 * (2 * budget + 3), 4, 8);
    let (a, b) = (random(&mut r, k * m), random(&mut r, k * n));
    let here = |shape: &[usize], data: &[f32]| {
        engine::Tensor::from_slice(&measuring, shape, data).unwrap()
    };
    let got =
        matmul::matmul_forward(&here(&[k, m], &a), &here(&[k, n], &b), Transpose::A, None).unwrap();
    let want = cpu::matmul(&a, &b, None, 1, m, k, n, true, false, true);
    // Whichever candidate measured fastest runs it: some add one k a step, so their
    // running sums (of a few hundred at most) round 65,539 times per slice, ~1e-3 in all;
    // a loop cut short is off by the whole sum.
    assert_close("measured", &got.to_vec(), &want, 1e-8 * k as f32, 1e-4);
    let measured = measuring.measured_plans();
    let (key, choice) = &measured[0];
    assert!(
        choice.candidates[choice.chosen].1.is_finite(),
        "{key}: {choice:?}"
    );
    if dev.is_cpu() {
        let left_out = choice.candidates.iter().filter(|(_, s)| s.is_infinite());
        assert!(
            left_out.clone().count() > 0
                && left_out
                    .clone()
                    .all(|(name, _)| name.contains("cannot run")),
            "{key}: {choice:?}"
        );
    }
    let k = 4 * (budget + 1);
    let (a, b) = (random(&mut r, k), random(&mut r, k * 4));
    let got = matmul::matmul_forward(
        &upload(&[1, k], &a),
        &upload(&[k, 4], &b),
        Transpose::NONE,
        None,
    );
    if dev.is_cpu() {
        let e = got.unwrap_err().to_string();
        assert!(
            e.contains(&format!("K = {k}")) && e.contains("lavapipe"),
            "{e}"
        );
    } else {
        let want = cpu::matmul(&a, &b, None, 1, 1, k, 4, false, false, true);
        assert_close("[1xK] x [Kx4]", &got.unwrap().to_vec(), &want, 1e-4, 1e-4);
    }
}

#[test]
fn a_plan_refuses_operands_of_another_shape() {
    let dev = device();
    let shape = MatmulShape::of(
        &upload(&[3, 4], &[0.0; 12]),
        &upload(&[4, 5], &[0.0; 20]),
        Transpose::NONE,
        None,
        Epilogue::None,
    )
    .unwrap();
    let plan = MatmulPlan::new(&dev, &shape);
    let e = matmul::matmul_with(
        &plan,
        &upload(&[3, 8], &[0.0; 24]),
        &upload(&[8, 5], &[0.0; 40]),
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("a plan for") && e.contains("[3, 8]"), "{e}");
}

#[test]
fn matmul_backward_matches_cpu() {
    let mut r = rng(2);
    for &(batch, m, k, n) in &[(1, 3, 7, 5), (2, 33, 17, 9), (3, 7, 65, 33), (2, 12, 8, 68)] {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let a = random(&mut r, batch * m * k);
            let b = random(&mut r, batch * k * n);
            let dc = random(&mut r, batch * m * n);
            let a_shape = if ta { [batch, k, m] } else { [batch, m, k] };
            let b_shape = if tb { [batch, n, k] } else { [batch, k, n] };
            let (da, db, dbias) = matmul::matmul_backward(
                &upload(&a_shape, &a),
                &upload(&b_shape, &b),
                Transpose { a: ta, b: tb },
                true,
                &upload(&[batch, m, n], &dc),
                &[true, true, true],
            )
            .unwrap();
            // dÂ = dC B̂^T as [m, k], then laid out as a is stored.
            let da_hat = cpu::matmul(&dc, &b, None, batch, m, n, k, false, !tb, false);
            let want_da = if ta {
                transpose_batches(&da_hat, batch, m, k)
            } else {
                da_hat
            };
            let db_hat = cpu::matmul(&a, &dc, None, batch, k, m, n, !ta, false, false);
            let want_db = if tb {
                transpose_batches(&db_hat, batch, k, n)
            } else {
                db_hat
            };
            let what = format!("matmul backward b{batch} {m}x{k}x{n} ta={ta} tb={tb}");
            assert_close(
                &format!("{what} da"),
                &da.unwrap().to_vec(),
                &want_da,
                1e-5 * n as f32,
                1e-4,
            );
            assert_close(
                &format!("{what} db"),
                &db.unwrap().to_vec(),
                &want_db,
                1e-5 * m as f32,
                1e-4,
            );
            assert_close(
                &format!("{what} dbias"),
                &dbias.unwrap().to_vec(),
                &cpu::sum_leading(&dc, n),
                1e-5 * m as f32,
                1e-4,
            );
        }
    }
}

/// `linear`'s backward, x [tokens, in] and W [out, in]: its weight gradient dc^T x sums
/// dc's columns, the bias gradient, as its kernel reads them (one dispatch fewer) where
/// that kernel sums rows (`MatmulKernel::sums_rows`); else a column sum of its own.
#[test]
fn linear_weight_gradients_bring_their_bias_gradient_where_the_kernel_sums_rows() {
    let dev = std::sync::Arc::new(engine::Device::new().unwrap());
    let mut r = rng(3);
    for (tokens, inp, out) in [(36, 20, 12), (64, 8, 68), (37, 20, 12), (36, 20, 13)] {
        let (x, w, dc) = (
            random(&mut r, tokens * inp),
            random(&mut r, out * inp),
            random(&mut r, tokens * out),
        );
        let here =
            |shape: &[usize], data: &[f32]| engine::Tensor::from_slice(&dev, shape, data).unwrap();
        let (xt, wt, dct) = (
            here(&[tokens, inp], &x),
            here(&[out, inp], &w),
            here(&[tokens, out], &dc),
        );
        let before = dev.counts().dispatches;
        let (dx, dw, dbias) =
            matmul::matmul_backward(&xt, &wt, Transpose::B, true, &dct, &[true, true, true])
                .unwrap();
        let dispatches = dev.counts().dispatches - before;
        let what = format!("linear backward {tokens}x{inp} -> {out}");
        assert_close(
            &format!("{what} dx"),
            &dx.unwrap().to_vec(),
            &cpu::matmul(&dc, &w, None, 1, tokens, out, inp, false, false, true),
            1e-5 * out as f32,
            1e-4,
        );
        assert_close(
            &format!("{what} dw"),
            &dw.unwrap().to_vec(),
            &cpu::matmul(&dc, &x, None, 1, out, tokens, inp, true, false, true),
            1e-5 * tokens as f32,
            1e-4,
        );
        assert_close(
            &format!("{what} dbias"),
            &dbias.unwrap().to_vec(),
            &cpu::sum_leading(&dc, out),
            1e-5 * tokens as f32,
            1e-4,
        );
        // The weight gradient's plan sums the rows of dc (stored [tokens, out]) where
        // its kernel can: on CPU adapters with 8-lane subgroups where the widths are
        // multiples of 4, over any count of tokens.
        let sums = MatmulShape::of(&dct, &xt, Transpose::A, None, Epilogue::RowSums).unwrap();
        let plan = MatmulPlan::new(&dev, &sums);
        let multiples_of_4 = [inp, out].iter().all(|s| s % 4 == 0);
        if dev.has_cpu_subgroups_of_8() {
            assert_eq!(plan.fits(), multiples_of_4, "{what}: {}", plan.describe());
        }
        if plan.fits() && plan.split_k.is_none() {
            assert_eq!(dispatches, 2, "{what}: the two products only");
        } else if !plan.fits() {
            assert!(dispatches >= 3, "{what}: a column sum besides the products");
        }
    }
}

fn transpose_batches(x: &[f32], batch: usize, rows: usize, cols: usize) -> Vec<f32> {
    cpu::permute(x, &[batch, rows, cols], &[0, 2, 1])
}

/// Where the device measures plans, a product runs on the fastest plan that computes
/// the same, timed at the first product of its sizes' bucket. A mixed product keeps its
/// arithmetic: the weight gradient of a mixed `linear`, both of its operands stored in
/// f32, is timed on mixed kernels only.
#[test]
fn measured_products_are_timed_once_per_bucket_and_keep_their_arithmetic() {
    let dev = std::sync::Arc::new(engine::Device::new().unwrap());
    dev.set_measure_plans(true);
    let mut r = rng(16);
    let here =
        |shape: &[usize], data: &[f32]| engine::Tensor::from_slice(&dev, shape, data).unwrap();
    let (k, n) = (20, 36);
    // 37 and 38 rows round up to one bucket: the second product measures nothing.
    for m in [37, 38] {
        let (a, b) = (random(&mut r, m * k), random(&mut r, k * n));
        let (ta, tb) = (here(&[m, k], &a), here(&[k, n], &b));
        let before = dev.counts().dispatches;
        let out = matmul::matmul_forward(&ta, &tb, Transpose::NONE, None).unwrap();
        let want = cpu::matmul(&a, &b, None, 1, m, k, n, false, false, true);
        assert_close(
            &format!("m={m}"),
            &out.to_vec(),
            &want,
            1e-5 * k as f32,
            1e-4,
        );
        let measured = dev.measured_plans();
        assert_eq!(measured.len(), 1, "m={m}: {measured:?}");
        let (key, choice) = &measured[0];
        let shape = MatmulShape::of(&ta, &tb, Transpose::NONE, None, Epilogue::None).unwrap();
        let plans = MatmulPlan::candidates(&dev, &shape);
        assert_eq!(choice.candidates.len(), plans.len(), "{key}: {choice:?}");
        // The rule's plan is named among the candidates, and every call of the bucket
        // is counted, the measured one and those that follow its choice.
        let rule = choice.rule.map(|i| plans[i]);
        assert_eq!(
            rule,
            Some(MatmulPlan::new(&dev, &shape)),
            "{key}: {choice:?}"
        );
        assert_eq!(choice.calls, if m == 37 { 1 } else { 2 }, "{key}");
        let best = choice.candidates[choice.chosen].1;
        assert!(
            choice
                .candidates
                .iter()
                .all(|(_, s)| s.is_finite() && *s >= best),
            "{choice:?}"
        );
        if m == 38 {
            // Measured before: one product's dispatches, as its plan runs it.
            let chosen = &plans[choice.chosen];
            let once = dev.counts().dispatches - before;
            let before = dev.counts().dispatches;
            matmul::matmul_with(chosen, &ta, &tb, None).unwrap();
            assert_eq!(once, dev.counts().dispatches - before, "{key}");
        }
    }

    let (x, w) = (random(&mut r, 9 * 12), random(&mut r, 16 * 12));
    let grads_of = |device: &std::sync::Arc<engine::Device>| {
        let xt = engine::Tensor::from_slice(device, &[9, 12], &x)
            .unwrap()
            .requires_grad();
        let wt = engine::Tensor::from_slice(device, &[16, 12], &w)
            .unwrap()
            .requires_grad();
        let y = engine::autocast(engine::Precision::Mixed, || ops::linear(&xt, &wt, None)).unwrap();
        let grads = engine::backward(&ops::sum(&y).unwrap()).unwrap();
        [&xt, &wt].map(|t| grads.get(t).unwrap().to_vec())
    };
    let keys_before: Vec<String> = dev.measured_plans().into_iter().map(|(k, _)| k).collect();
    let measured = grads_of(&dev);
    let ruled = grads_of(&device());
    for (what, (got, want)) in ["dx", "dw"].iter().zip(measured.iter().zip(&ruled)) {
        assert_close(what, got, want, 1e-5, 1e-4);
    }
    let all_f32 = format!("{:?}", MatmulTypes::F32);
    let mixed: Vec<_> = dev
        .measured_plans()
        .into_iter()
        .filter(|(key, _)| !keys_before.contains(key))
        .collect();
    assert!(
        mixed.len() >= 3,
        "the forward and both gradients: {mixed:?}"
    );
    // Every candidate runs a mixed kernel, whole or over slices of K.
    for (key, choice) in &mixed {
        assert!(
            choice
                .candidates
                .iter()
                .all(|(name, _)| name.contains(": Mixed") || name.contains("on the Mixed")),
            "{key}: {choice:?}"
        );
    }
    assert!(
        mixed.iter().any(|(key, _)| key.contains(&all_f32)),
        "the weight gradient, both operands in f32: {mixed:?}"
    );
}

/// Every kernel that tiles c folds a grid with more row tiles (every batch entry's
/// together) than one dimension holds over y and z (`Device::grid_2d`): on a device
/// whose adapter allows only 8 workgroups per dimension, every candidate, f32 and mixed,
/// against the CPU, on a batch longer than that, a product taller than that in every
/// kernel's tiles, and a batch of weight-gradient forms whose row sums land at their
/// entry's rows. Values are eighths, which f16 holds exactly, so one CPU product serves
/// both. Columns past the limit are still refused (tests/errors.rs).
#[test]
fn tiles_past_the_grid_limit_fold_over_two_dimensions_and_match_the_cpu() {
    use engine::{DType, Tensor};
    let dev = common::small_grid_device();
    assert_eq!(dev.info().workgroups_per_dimension, 8);
    let shape = |batch, m, k, n, ta, epilogue| MatmulShape {
        batch,
        m,
        k,
        n,
        t: Transpose { a: ta, b: false },
        b_shared: false,
        bias: false,
        epilogue,
        types: MatmulTypes::F32,
    };
    let mut r = rng(13);
    let mut eighths = |n: usize| -> Vec<f32> {
        random(&mut r, n)
            .iter()
            .map(|v| (v * 16.0).round() / 8.0)
            .collect()
    };
    let mut kernels = std::collections::BTreeSet::new();
    for f32_shape in [
        shape(11, 5, 8, 12, false, Epilogue::None),
        shape(1, 1100, 8, 4, false, Epilogue::None),
        shape(3, 300, 8, 8, true, Epilogue::RowSums),
    ] {
        let MatmulShape {
            batch, m, k, n, t, ..
        } = f32_shape;
        let (a_shape, b_shape, out_shape) = cases::operand_shapes(&f32_shape);
        let (a, b) = (
            eighths(a_shape.iter().product()),
            eighths(b_shape.iter().product()),
        );
        let want = cpu::matmul(&a, &b, None, batch, m, k, n, t.a, t.b, false);
        let (a32, b32) = (
            Tensor::from_slice(&dev, &a_shape, &a).unwrap(),
            Tensor::from_slice(&dev, &b_shape, &b).unwrap(),
        );
        let (a16, b16) = (
            cast_forward(&a32, DType::F16).unwrap(),
            cast_forward(&b32, DType::F16).unwrap(),
        );
        let f16_types = MatmulTypes {
            a: DType::F16,
            b: DType::F16,
            ..MatmulTypes::F32
        };
        for (s, ta, tb) in [
            (f32_shape, &a32, &b32),
            (
                MatmulShape {
                    types: f16_types,
                    ..f32_shape
                },
                &a16,
                &b16,
            ),
        ] {
            for plan in MatmulPlan::candidates(&dev, &s) {
                let (got, sums) = matmul::matmul_epilogue_with(&plan, ta, tb, None, None).unwrap();
                assert_eq!(got.shape(), out_shape);
                let what = format!("{} ({s:?})", plan.describe());
                assert_close(&what, &got.to_vec(), &want, 1e-5, 1e-6);
                common::assert_second_output(
                    &what,
                    s.epilogue,
                    sums,
                    &want,
                    || cases::row_sums_of_transposed(&a, batch, k, m),
                    (k, 1e-5, 1e-6),
                );
                kernels.insert(format!("{:?}", plan.kernel));
            }
        }
    }
    eprintln!("kernels run on folded grids: {kernels:?}");
    for kernel in ["Vec4", "TiledPrefetch", "MixedTiledPrefetch"] {
        assert!(kernels.contains(kernel), "{kernel} ran: {kernels:?}");
    }
}

/// A product [m x 20] x [20 x 36], checked against the CPU, and attention over 2 x 2
/// heads of 9 tokens x 8, on `dev`, with nothing to differentiate.
fn product_and_attention(dev: &std::sync::Arc<engine::Device>, m: usize) {
    let mut r = rng(40 + m as u64);
    let (k, n) = (20, 36);
    let (a, b) = (random(&mut r, m * k), random(&mut r, k * n));
    let here =
        |shape: &[usize], data: &[f32]| engine::Tensor::from_slice(dev, shape, data).unwrap();
    let c = matmul::matmul_forward(
        &here(&[m, k], &a),
        &here(&[k, n], &b),
        Transpose::NONE,
        None,
    )
    .unwrap();
    let want = cpu::matmul(&a, &b, None, 1, m, k, n, false, false, true);
    assert_close(&format!("m={m}"), &c.to_vec(), &want, 1e-5 * k as f32, 1e-4);
    let qkv = here(&[2, 9, 48], &random(&mut r, 2 * 9 * 48));
    engine::no_grad(|| ops::attention::attention(&qkv, 2, 0.35)).unwrap();
}

/// The shape of `product_and_attention`'s product of `m` rows.
fn product_shape(dev: &std::sync::Arc<engine::Device>, m: usize) -> MatmulShape {
    let zeros = |shape: &[usize]| engine::Tensor::zeros(dev, shape).unwrap();
    MatmulShape::of(
        &zeros(&[m, 20]),
        &zeros(&[20, 36]),
        Transpose::NONE,
        None,
        Epilogue::None,
    )
    .unwrap()
}

/// The measured key of `product_and_attention`'s product (the composed attention path,
/// if timed, measures products of its own).
const PRODUCT_BUCKET: &str = "matmul of at most 1 x [40x20] x [20x40]";

fn read_json(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// With a plan file (`IJEPA_PLANS`), what one run measures, a later run follows without
/// measuring: here a product and an attention call measured on one device, then, on a
/// second, a product of the same bucket of sizes and the same attention run on the
/// plans the file names. Each choice is first edited to another candidate than the
/// rule's and the measured one, so that only the file can have chosen it.
#[test]
fn a_plan_file_keeps_measured_choices_for_later_runs() {
    // [37x20] x [20x36] and [38x20] x [20x36] share the product's bucket.
    let (log, (edited, edited_path)) = common::follow_an_edited_plan_file(
        "plan_file",
        product_and_attention,
        (37, 38),
        |plans, follower| {
            let shape = product_shape(follower, 38);
            let rule = MatmulPlan::new(follower, &shape);
            let (key, product) = plans
                .iter_mut()
                .find(|(k, _)| k.starts_with(PRODUCT_BUCKET))
                .unwrap();
            let measured = product["chosen"].as_str().unwrap().to_string();
            // The file names the rule's plan beside the measured choice.
            assert_eq!(
                product["rule"].as_str(),
                Some(rule.method().as_str()),
                "{key}"
            );
            let edited = MatmulPlan::candidates(follower, &shape)
                .into_iter()
                .find(|p| p.method() != measured && p.kernel != rule.kernel)
                .unwrap_or_else(|| panic!("{key}: a third candidate"));
            product["chosen"] = edited.method().into();
            // An attention plan's key reads "attention <path>[ head_dim=...]", its path
            // as the file names it.
            let path_of = |key: String| {
                let path = key.trim_start_matches("attention ");
                path.split(" head_dim").next().unwrap().to_string()
            };
            let qkv = engine::Tensor::zeros(follower, &[2, 9, 48]).unwrap();
            let qkv_shape = AttentionShape::of(&qkv, 2).unwrap();
            let rule_path = path_of(AttentionPlan::new(follower, &qkv_shape).key());
            let (_, attention) = plans
                .iter_mut()
                .find(|(k, _)| k.starts_with("attention"))
                .unwrap();
            let measured_path = attention["chosen"].as_str().unwrap().to_string();
            assert_eq!(attention["rule"].as_str(), Some(rule_path.as_str()));
            let edited_path = AttentionPlan::candidates(follower, &qkv_shape)
                .into_iter()
                .map(|p| path_of(p.key()))
                .find(|p| *p != measured_path && *p != rule_path)
                .unwrap();
            attention["chosen"] = edited_path.clone().into();
            (edited, edited_path)
        },
    );
    assert!(
        log.contains(&edited.key()),
        "the product runs on {}, the file's choice: {log:?}",
        edited.describe()
    );
    assert!(
        log.iter()
            .any(|k| k.starts_with(&format!("attention {edited_path}"))),
        "attention runs {edited_path}, the file's choice: {log:?}"
    );
}

/// A plan file is refused, by name, when it was measured on another adapter, is of
/// another format, is not a plan file, or lies in a folder that does not exist; a
/// choice it records that is no longer a candidate gives way to the rule, or, where
/// the device measures, to a new measurement that replaces it in the file.
#[test]
fn plan_files_of_other_adapters_or_unreadable_ones_are_refused_by_name() {
    let dir = common::runs::temp_dir("plan_file_errors");
    let dev = std::sync::Arc::new(engine::Device::new().unwrap());
    let name = dev.info().name.clone();
    let file = |plans: serde_json::Value| {
        serde_json::json!({
            "format": 1, "adapter": name, "backend": dev.info().backend, "driver": "any",
            "plans": plans
        })
    };
    let path = dir.join("plans.json");
    let refusal = |contents: &str| {
        std::fs::write(&path, contents).unwrap();
        dev.use_plan_file(&path).unwrap_err().to_string()
    };
    let mut other = file(serde_json::json!({}));
    other["adapter"] = "Some Other GPU".into();
    let e = refusal(&other.to_string());
    assert!(
        e.contains("plans.json") && e.contains("Some Other GPU") && e.contains(&name),
        "{e}"
    );
    let mut later = file(serde_json::json!({}));
    later["format"] = 2.into();
    let e = refusal(&later.to_string());
    assert!(e.contains("plans.json") && e.contains("format 2"), "{e}");
    let e = refusal("{\"plans\": [1, 2]}");
    assert!(
        e.contains("plans.json") && e.contains("not a plan file"),
        "{e}"
    );
    let e = dev
        .use_plan_file(&dir.join("missing").join("plans.json"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("missing") && e.contains("folder does not exist"),
        "{e}"
    );

    // A recorded choice that names no candidate: the rule runs; where the device
    // measures, the bucket is measured again and the file's choice replaced.
    let key = {
        let measuring = std::sync::Arc::new(engine::Device::new().unwrap());
        measuring.set_measure_plans(true);
        let recorded = dir.join("measured.json");
        measuring.use_plan_file(&recorded).unwrap();
        product_and_attention(&measuring, 37);
        let file = read_json(&recorded);
        let plans = file["plans"].as_object().unwrap();
        plans
            .keys()
            .find(|k| k.starts_with(PRODUCT_BUCKET))
            .unwrap()
            .clone()
    };
    let stale =
        file(serde_json::json!({ key.clone(): {"chosen": "NoSuchKernel", "candidates": []} }));
    std::fs::write(&path, stale.to_string()).unwrap();
    dev.use_plan_file(&path).unwrap();
    dev.log_plans();
    product_and_attention(&dev, 38);
    let log = dev.take_plan_log();
    let shape = product_shape(&dev, 38);
    let rule = MatmulPlan::new(&dev, &shape);
    assert!(log.contains(&rule.key()), "{}: {log:?}", rule.describe());
    let used = dev.plan_file().unwrap();
    assert_eq!(used.stale, 1, "the product's choice is stale: {used:?}");
    let measuring = std::sync::Arc::new(engine::Device::new().unwrap());
    measuring.set_measure_plans(true);
    measuring.use_plan_file(&path).unwrap();
    product_and_attention(&measuring, 38);
    let methods: Vec<String> = MatmulPlan::candidates(&measuring, &shape)
        .iter()
        .map(MatmulPlan::method)
        .collect();
    let chosen = read_json(&path)["plans"][&key]["chosen"].clone();
    assert!(
        methods.iter().any(|m| chosen == m.as_str()),
        "{key}: {chosen} measured again, among {methods:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
