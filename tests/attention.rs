//! Attention on every plan the adapter can run, for the sizes of `cases::ATTENTION`
//! and a qkv in f32 and in f16 (as the qkv projection stores it under mixed
//! precision): the composed path (permutes, matmuls, softmax) against a CPU computation
//! of the output and the row log-sum-exp, and each fused family against the composed
//! path, forward (output, log-sum-exp) and backward (the gradient of the packed qkv,
//! f32 either way).

mod common;

use common::{assert_close, cases, device, random, rng, upload};
use engine::ops;
use engine::ops::attention::{
    attention_backward, attention_composed, attention_forward, attention_with, AttentionPath,
    AttentionPlan, AttentionShape, FusedAttention,
};
use engine::DType;

#[test]
fn every_attention_plan_matches_the_cpu_and_the_composed_path() {
    let dev = device();
    let mut r = rng(14);
    for ((b, heads, n, hd), dtype) in cases::ATTENTION
        .into_iter()
        .flat_map(|case| [(case, DType::F32), (case, DType::F16)])
    {
        let width = heads * hd;
        // In f16 the values the GPU rounds to, which the CPU then takes exactly.
        let qkv = ops::cast::cast_forward(
            &upload(&[b, n, 3 * width], &random(&mut r, b * n * 3 * width)),
            dtype,
        )
        .unwrap()
        .requires_grad();
        let qkv_data = qkv.to_vec();
        let dout_data = random(&mut r, b * n * width);
        let scale = (hd as f32).powf(-0.5) * 2.0;
        let what = format!("attention b={b} heads={heads} n={n} hd={hd}, {dtype:?} qkv");
        let dout = upload(&[b, n, width], &dout_data);

        // The CPU: per image, head and query row, the scores, their log-sum-exp and the
        // probability-weighted sum of the value rows.
        let row = |part: usize, i: usize, h: usize, t: usize| {
            let at = ((i * n + t) * 3 + part) * width + h * hd;
            &qkv_data[at..at + hd]
        };
        let mut want_lse = Vec::new();
        let mut want_out = vec![0.0f32; b * n * width];
        for i in 0..b {
            for h in 0..heads {
                for t in 0..n {
                    let scores: Vec<f64> = (0..n)
                        .map(|u| {
                            let dot: f64 = (row(0, i, h, t).iter().zip(row(1, i, h, u)))
                                .map(|(x, y)| *x as f64 * *y as f64)
                                .sum();
                            dot * scale as f64
                        })
                        .collect();
                    let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let sum: f64 = scores.iter().map(|s| (s - m).exp()).sum();
                    want_lse.push((m + sum.ln()) as f32);
                    for d in 0..hd {
                        let value: f64 = (0..n)
                            .map(|u| (scores[u] - m).exp() / sum * row(2, i, h, u)[d] as f64)
                            .sum();
                        want_out[(i * n + t) * width + h * hd + d] = value as f32;
                    }
                }
            }
        }

        // The oracle: the composed path and its tape gradient.
        let composed = attention_composed(&qkv, heads, scale).unwrap();
        assert_close(
            &format!("{what} composed"),
            &composed.to_vec(),
            &want_out,
            2e-6,
            1e-4,
        );
        let loss = ops::sum(&ops::mul(&composed, &dout).unwrap()).unwrap();
        let grads = engine::backward(&loss).unwrap();
        let want_dqkv = grads.get(&qkv).unwrap();
        assert_eq!(want_dqkv.dtype(), DType::F32, "{what}: gradients are f32");
        let want_dqkv = want_dqkv.to_vec();

        let shape = AttentionShape {
            batch: b,
            tokens: n,
            heads,
            head_dim: hd,
            qkv: dtype,
        };
        let plans = AttentionPlan::candidates(&dev, &shape);
        assert!(plans.contains(&AttentionPlan::new(&dev, &shape)));
        for plan in plans {
            let what = format!("{what}: {}", plan.describe());
            // The cooperative-matrix families multiply f16 values: probabilities, score
            // gradients and dout are rounded to f16 (by at most 2^-11 of themselves) for
            // their products. out moves by at most 2^-11 max |v| (v in [-1, 1]); dqkv
            // carries three such roundings per term (3.1e-4 at most on lavapipe).
            let coop = matches!(
                plan.path,
                AttentionPath::Fused(FusedAttention::Coop | FusedAttention::CoopEmulated)
            );
            let ((out_atol, out_rtol), (grad_atol, grad_rtol)) = if coop {
                ((5e-4, 1e-3), (2e-3, 5e-3))
            } else {
                ((2e-6, 1e-4), (1e-5, 1e-3))
            };
            // Through the tape, as the model runs it.
            let out = attention_with(&plan, &qkv, heads, scale).unwrap();
            let out_data = out.to_vec();
            assert_close(
                &format!("{what} out"),
                &out_data,
                &want_out,
                out_atol,
                out_rtol,
            );
            let loss = ops::sum(&ops::mul(&out, &dout).unwrap()).unwrap();
            let dqkv = engine::backward(&loss).unwrap().get(&qkv).unwrap().to_vec();
            assert_close(
                &format!("{what} dqkv"),
                &dqkv,
                &want_dqkv,
                grad_atol,
                grad_rtol,
            );
            if coop {
                eprintln!(
                    "{what}: out within {:.2e}, dqkv within {:.2e} of the composed path",
                    worst_difference(&out_data, &want_out),
                    worst_difference(&dqkv, &want_dqkv)
                );
            }
            // The fused kernels' saved log-sum-exp, which their backward relies on.
            if let AttentionPath::Fused(kind) = plan.path {
                let (out, lse) = attention_forward(kind, &qkv, heads, scale).unwrap();
                assert_close(&format!("{what} lse"), &lse.to_vec(), &want_lse, 1e-5, 1e-5);
                assert_eq!(out.dtype(), DType::F32, "{what}");
                let dqkv =
                    attention_backward(kind, &qkv, heads, (&out, &lse), &dout, scale).unwrap();
                assert_eq!(dqkv.dtype(), DType::F32, "{what}");
                assert_close(
                    &format!("{what} dqkv, kernels"),
                    &dqkv.to_vec(),
                    &want_dqkv,
                    grad_atol,
                    grad_rtol,
                );
            }
        }
    }
}

/// More heads over the batch than a grid dimension holds (the predictor's masks of a
/// large batch): each fused family folds them over the grid's y and z. On a device
/// allowing 8 workgroups per dimension, 6 images of 2 heads: every image comes out as
/// the composed path gives it (the oracle), and bit for bit as the same kernels give it
/// alone, forward and backward.
#[test]
fn heads_past_the_grid_limit_fold_and_match_the_same_images_alone() {
    let dev = common::small_grid_device();
    let (b, n, heads, hd) = (6, 3, 2, 8);
    let (width, scale) = (3 * heads * hd, 0.5);
    let mut r = rng(15);
    let qkv = random(&mut r, b * n * width);
    let dout = random(&mut r, b * n * heads * hd);
    // qkv and dout of some images, on the device.
    let of = |images: &std::ops::Range<usize>| {
        let count = images.len();
        let here = |shape: &[usize], data: &[f32], per_image: usize| {
            let data = &data[images.start * per_image..images.end * per_image];
            engine::Tensor::from_slice(&dev, shape, data).unwrap()
        };
        (
            here(&[count, n, width], &qkv, n * width),
            here(&[count, n, heads * hd], &dout, n * heads * hd),
        )
    };
    let (all_qkv, all_dout) = of(&(0..b));
    let all_qkv = all_qkv.requires_grad();
    let out = attention_composed(&all_qkv, heads, scale).unwrap();
    let loss = ops::sum(&ops::mul(&out, &all_dout).unwrap()).unwrap();
    let dqkv = engine::backward(&loss)
        .unwrap()
        .get(&all_qkv)
        .unwrap()
        .to_vec();
    let composed = [out.to_vec(), dqkv];
    let kinds: Vec<_> = FusedAttention::ALL
        .into_iter()
        .filter(|k| k.runs_on(&dev, hd, DType::F32))
        .collect();
    assert!(!kinds.is_empty(), "no fused attention kernel runs here");
    for kind in kinds {
        let run = |images: &std::ops::Range<usize>| {
            let (qkv, dout) = of(images);
            let (out, lse) = attention_forward(kind, &qkv, heads, scale).unwrap();
            let dqkv = attention_backward(kind, &qkv, heads, (&out, &lse), &dout, scale).unwrap();
            [out.to_vec(), lse.to_vec(), dqkv.to_vec()]
        };
        let all = run(&(0..b));
        let what = format!("{kind:?}, {b} images of {heads} heads");
        assert_close(&format!("{what}: out"), &all[0], &composed[0], 2e-6, 1e-4);
        assert_close(&format!("{what}: dqkv"), &all[2], &composed[1], 1e-5, 1e-3);
        for image in 0..b {
            let alone = run(&(image..image + 1));
            for ((name, got), want) in ["out", "lse", "dqkv"].iter().zip(&all).zip(&alone) {
                let per_image = got.len() / b;
                let part = &got[image * per_image..(image + 1) * per_image];
                assert_eq!(part, &want[..], "{what}: {name} of image {image}, alone");
            }
        }
    }
}

/// Where the device measures plans, attention times every candidate at the first call
/// of a size (forward, and backward on a tape of its own where the call is
/// differentiated), keeps the fastest for the token counts of its bucket, and leaves
/// the caller's tape whole: the gradients through the call are the composed path's.
#[test]
fn measured_attention_times_every_candidate_once_and_keeps_the_callers_tape() {
    let dev = std::sync::Arc::new(engine::Device::new().unwrap());
    dev.set_measure_plans(true);
    let mut r = rng(15);
    let (b, heads, hd, scale) = (2, 2, 16, 0.25);
    let width = heads * hd;
    // The composed path's products are measured too, under keys of their own.
    let attention_measured = || {
        let measured = dev.measured_plans().into_iter();
        measured
            .filter(|(key, _)| key.starts_with("attention"))
            .collect::<Vec<_>>()
    };
    let upload_here =
        |shape: &[usize], data: &[f32]| engine::Tensor::from_slice(&dev, shape, data).unwrap();
    // 37 and 40 tokens share a bucket (33..=64): the second call measures nothing.
    for (n, measured_before) in [(37, 0), (40, 1)] {
        let qkv_data = random(&mut r, b * n * 3 * width);
        let dout_data = random(&mut r, b * n * width);
        let dout = upload_here(&[b, n, width], &dout_data);
        // An op recorded before the call, so that its gradient needs the caller's tape.
        let through = |attend: &dyn Fn(&engine::Tensor) -> engine::Tensor| {
            let qkv = upload_here(&[b, n, 3 * width], &qkv_data).requires_grad();
            let out = attend(&ops::add(&qkv, &qkv).unwrap());
            let loss = ops::sum(&ops::mul(&out, &dout).unwrap()).unwrap();
            let dqkv = engine::backward(&loss).unwrap().get(&qkv).unwrap().to_vec();
            (out.to_vec(), dqkv)
        };
        assert_eq!(attention_measured().len(), measured_before, "{n} tokens");
        let (out, dqkv) = through(&|x| ops::attention::attention(x, heads, scale).unwrap());
        let measured = attention_measured();
        assert_eq!(measured.len(), 1, "{n} tokens: {measured:?}");
        let (key, m) = &measured[0];
        assert!(
            key.contains("33..=64 tokens") && key.ends_with("forward and backward"),
            "{key}"
        );
        let qkv = upload_here(&[b, n, 3 * width], &qkv_data).requires_grad();
        let plans = AttentionPlan::candidates(&dev, &AttentionShape::of(&qkv, heads).unwrap());
        assert_eq!(m.candidates.len(), plans.len(), "{m:?}");
        assert!(
            m.candidates.iter().all(|(_, s)| s.is_finite() && *s > 0.0),
            "{m:?}"
        );
        assert!(
            m.candidates
                .iter()
                .all(|(_, s)| *s >= m.candidates[m.chosen].1),
            "{m:?}"
        );
        let (want_out, want_dqkv) = through(&|x| attention_composed(x, heads, scale).unwrap());
        assert_close(&format!("{n} tokens out"), &out, &want_out, 2e-6, 1e-4);
        assert_close(&format!("{n} tokens dqkv"), &dqkv, &want_dqkv, 1e-5, 1e-3);

        // Once measured, a call costs the chosen plan's dispatches and no more.
        let dispatches = |f: &dyn Fn()| {
            let before = dev.counts().dispatches;
            f();
            dev.counts().dispatches - before
        };
        let called = dispatches(&|| drop(ops::attention::attention(&qkv, heads, scale).unwrap()));
        let chosen =
            dispatches(&|| drop(attention_with(&plans[m.chosen], &qkv, heads, scale).unwrap()));
        assert_eq!(called, chosen, "{n} tokens");
    }
    // Undifferentiated, a call is measured apart: only its forward runs in training.
    let qkv = upload_here(&[b, 40, 3 * width], &random(&mut r, b * 40 * 3 * width));
    engine::no_grad(|| ops::attention::attention(&qkv, heads, scale).unwrap());
    let keys: Vec<String> = attention_measured().into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(keys.iter().any(|k| k.ends_with(", forward")), "{keys:?}");
}

/// The largest absolute difference between two equally long slices.
fn worst_difference(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
