//! `ijepa check-reference`: replay a golden I-JEPA step computed by the official
//! PyTorch code (format: shared/reference/README.md) through the trainer's own
//! `train_step` and report, per group, how far this implementation is from it.
//!
//! Explained in the tour: docs/tour/10-golden-step.md.

use std::path::Path;

use crate::parallel::Single;
use crate::step::{train_step, StepHyper, TrainState};
use anyhow::{bail, Context, Result};
use engine::{Device, Tensor};
use model::pos_embed::sincos_2d;
use model::weights::SafetensorsFile;
use model::{IJepa, IjepaConfig, Masks, PredictorConfig, VitConfig};
use serde::Deserialize;

/// The `config` metadata of a golden file.
#[derive(Deserialize)]
struct GoldenConfig {
    img_size: usize,
    patch_size: usize,
    in_chans: usize,
    embed_dim: usize,
    depth: usize,
    num_heads: usize,
    mlp_ratio: f64,
    qkv_bias: bool,
    layer_norm_eps: f32,
    pred_embed_dim: usize,
    pred_depth: usize,
    pred_num_heads: usize,
    num_enc_masks: usize,
    num_pred_masks: usize,
    optimizer: GoldenOptimizer,
    ema_momentum: f32,
}

#[derive(Deserialize)]
struct GoldenOptimizer {
    lr: f32,
    betas: [f32; 2],
    eps: f32,
    weight_decay: f32,
}

/// Elementwise tolerance: |got - want| <= atol + rtol * |want|.
#[derive(Clone, Copy)]
pub struct Tolerance {
    pub atol: f64,
    pub rtol: f64,
}

/// Forward features and the loss: float rounding of a different summation order
/// (measured: below 2e-6 on every golden file in tests/data).
pub const FEATURES: Tolerance = Tolerance {
    atol: 1e-5,
    rtol: 1e-5,
};
/// Gradients (measured: below 3e-8 absolute, 1.1e-6 relative to the tensor's scale).
pub const GRADIENTS: Tolerance = Tolerance {
    atol: 1e-7,
    rtol: 1e-4,
};
/// Parameters after AdamW + EMA, except the entries described below.
pub const AFTER_STEP: Tolerance = Tolerance {
    atol: 1e-6,
    rtol: 1e-5,
};
/// Entries whose reference gradient is this small take an AdamW step of about
/// lr * g / (|g| + eps), as noisy as g itself: they may differ by up to lr.
pub const TINY_GRADIENT: f32 = 1e-6;

pub struct GroupReport {
    pub group: String,
    pub max_abs: f64,
    /// max |got - want| over max |want|.
    pub max_rel: f64,
    /// Elements outside the tolerance.
    pub failures: usize,
    /// after_step entries with a tiny reference gradient (allowed up to lr).
    pub noisy: usize,
}

pub struct Report {
    pub groups: Vec<GroupReport>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.groups.iter().all(|g| g.failures == 0)
    }
}

fn compare(
    group: String,
    got: &[f32],
    want: &[f32],
    tol: Tolerance,
    tiny: Option<(&[f32], f32)>,
) -> Result<GroupReport> {
    if got.len() != want.len() {
        bail!(
            "{group}: {} values computed, {} in the reference",
            got.len(),
            want.len()
        );
    }
    let scale = want.iter().fold(0.0f64, |m, &w| m.max(w.abs() as f64));
    let mut r = GroupReport {
        group,
        max_abs: 0.0,
        max_rel: 0.0,
        failures: 0,
        noisy: 0,
    };
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w as f64).abs();
        // NaN errors count as bad.
        let bad = err.is_nan() || err > tol.atol + tol.rtol * (w as f64).abs();
        match tiny {
            Some((grad, lr)) if bad && grad[i].abs() < TINY_GRADIENT => {
                r.noisy += 1;
                if err > lr as f64 * 1.01 {
                    r.failures += 1;
                }
                continue;
            }
            _ if bad => r.failures += 1,
            _ => {}
        }
        r.max_abs = r.max_abs.max(err);
    }
    r.max_rel = if scale > 0.0 {
        r.max_abs / scale
    } else {
        r.max_abs
    };
    Ok(r)
}

fn model_config(c: &GoldenConfig) -> IjepaConfig {
    IjepaConfig {
        encoder: VitConfig {
            img_size: c.img_size,
            patch_size: c.patch_size,
            in_chans: c.in_chans,
            embed_dim: c.embed_dim,
            depth: c.depth,
            num_heads: c.num_heads,
            mlp_ratio: c.mlp_ratio,
            qkv_bias: c.qkv_bias,
            layer_norm_eps: c.layer_norm_eps,
        },
        predictor: PredictorConfig {
            embed_dim: c.pred_embed_dim,
            depth: c.pred_depth,
            num_heads: c.pred_num_heads,
        },
    }
}

/// Per-image index lists of one stacked mask tensor [B, K].
fn mask_rows(file: &SafetensorsFile, name: &str) -> Result<Vec<Vec<u32>>> {
    let (values, shape) = file.ints(name)?;
    if shape.len() != 2 {
        bail!("`{name}` is {shape:?}, expected [B, K]");
    }
    Ok(values
        .chunks(shape[1])
        .map(|r| r.iter().map(|&v| v as u32).collect())
        .collect())
}

pub fn check_reference(device: &std::sync::Arc<Device>, path: &Path) -> Result<Report> {
    let file = SafetensorsFile::open(path)?;
    let meta = file.metadata();
    let raw = meta
        .get("config")
        .with_context(|| format!("{}: no `config` in the header metadata", path.display()))?;
    let c: GoldenConfig = serde_json::from_str(raw)
        .with_context(|| format!("{}: bad `config` metadata", path.display()))?;
    let config = model_config(&c);
    let model = IJepa::new(device, &config, 0)?;
    let mut groups = Vec::new();

    // Our sin-cos tables against the official ones, before loading overwrites them.
    let grid = config.encoder.grid();
    for (name, dim, group) in [
        ("encoder.pos_embed", c.embed_dim, "pos_embed table"),
        (
            "predictor.predictor_pos_embed",
            c.pred_embed_dim,
            "predictor_pos_embed table",
        ),
    ] {
        let (want, _) = file.f32(name)?;
        groups.push(compare(
            group.into(),
            &sincos_2d(dim, grid),
            &want,
            FEATURES,
            None,
        )?);
    }

    file.load_into("", &model.named_params())?;

    let (images, shape) = file.f32("input.images")?;
    let images = Tensor::from_slice(device, &shape, &images)?;
    let context: Vec<_> = (0..c.num_enc_masks)
        .map(|j| mask_rows(&file, &format!("input.masks_enc.{j}")))
        .collect::<Result<_>>()?;
    let target: Vec<_> = (0..c.num_pred_masks)
        .map(|j| mask_rows(&file, &format!("input.masks_pred.{j}")))
        .collect::<Result<_>>()?;
    let masks = Masks::new(device, &context, &target, config.encoder.num_patches())?;

    // The trainer's own step, with the golden file's hyper-parameters.
    let mut state = TrainState::new(model, None)?;
    state.optimizer.beta1 = c.optimizer.betas[0];
    state.optimizer.beta2 = c.optimizer.betas[1];
    state.optimizer.eps = c.optimizer.eps;
    let hyper = StepHyper {
        lr: c.optimizer.lr as f64,
        weight_decay: c.optimizer.weight_decay as f64,
        momentum: c.ema_momentum as f64,
    };
    let step = train_step(&mut state, &images, &masks, hyper, &Single, false)?;
    let out = &step.outputs;
    for (group, t, name) in [
        (
            "context features",
            &out.context,
            "expected.context_features",
        ),
        ("target features", &out.target, "expected.target_features"),
        ("prediction", &out.prediction, "expected.prediction"),
        ("loss", &out.loss, "expected.loss"),
    ] {
        let (want, shape) = file.f32(name)?;
        if t.shape() != shape.as_slice() {
            bail!(
                "{group}: computed shape {:?}, reference {shape:?}",
                t.shape()
            );
        }
        groups.push(compare(group.into(), &t.to_vec(), &want, FEATURES, None)?);
    }

    let mut reference_grads = std::collections::HashMap::new();
    for (name, p) in state.model.trainable_params() {
        let (want, _) = file.f32(&format!("grad.{name}"))?;
        let got = step
            .grads
            .get(&p)
            .with_context(|| format!("no gradient for {name}"))?
            .to_vec();
        groups.push(compare(
            format!("grad {name}"),
            &got,
            &want,
            GRADIENTS,
            None,
        )?);
        reference_grads.insert(name, want);
    }

    for (name, t) in state.model.named_params() {
        let (want, _) = file.f32(&format!("after_step.{name}"))?;
        let tiny = reference_grads
            .get(&name)
            .map(|g| (g.as_slice(), c.optimizer.lr));
        groups.push(compare(
            format!("after_step {name}"),
            &t.to_vec(),
            &want,
            AFTER_STEP,
            tiny,
        )?);
    }
    Ok(Report { groups })
}

/// Every group, then the summary.
pub fn print(report: &Report) {
    print_groups(report.groups.iter());
    print_summary(report);
}

/// One line per group: its worst absolute and relative errors, failures and noisy
/// entries.
pub fn print_groups<'a>(groups: impl Iterator<Item = &'a GroupReport>) {
    println!(
        "{:<58} {:>11} {:>11} {:>6} {:>6}",
        "group", "max abs", "max rel", "fail", "noisy"
    );
    for g in groups {
        println!(
            "{:<58} {:>11.3e} {:>11.3e} {:>6} {:>6}",
            g.group, g.max_abs, g.max_rel, g.failures, g.noisy
        );
    }
}

/// The worst errors of each kind of group against its tolerance, and the verdict.
pub fn print_summary(report: &Report) {
    // Group kinds: 0 forward (features, loss, tables), 1 gradients, 2 after the step.
    let kind = |g: &str| match g {
        g if g.starts_with("grad ") => 1,
        g if g.starts_with("after_step ") => 2,
        _ => 0,
    };
    let labels = [
        ("features+loss", FEATURES),
        ("gradients", GRADIENTS),
        ("after step", AFTER_STEP),
    ];
    for (k, (label, tol)) in labels.iter().enumerate() {
        let (a, r) = report
            .groups
            .iter()
            .filter(|g| kind(&g.group) == k)
            .fold((0.0f64, 0.0f64), |(a, r), g| {
                (a.max(g.max_abs), r.max(g.max_rel))
            });
        println!(
            "worst {label:<14} abs {a:.3e} rel {r:.3e} (tolerance |err| <= {:e} + {:e} |ref|)",
            tol.atol, tol.rtol
        );
    }
    let noisy: usize = report.groups.iter().map(|g| g.noisy).sum();
    println!(
        "{noisy} after-step entries have a reference gradient below {TINY_GRADIENT:e} (step as noisy as the gradient; allowed up to lr)"
    );
    let failed: Vec<&str> = report
        .groups
        .iter()
        .filter(|g| g.failures > 0)
        .map(|g| g.group.as_str())
        .collect();
    if failed.is_empty() {
        println!("PASS: every group within tolerance");
    } else {
        println!(
            "FAIL: {} group(s) out of tolerance: {}",
            failed.len(),
            failed.join(", ")
        );
    }
}
