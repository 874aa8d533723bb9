//! `ijepa bench`: kernel throughput on the adapter in use, one line per case.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use engine::ops::{self, Transpose};
use engine::{Device, Tensor};
use train::synthetic::synthetic;

/// What `time_per_call` measured, per call.
struct Timing {
    /// Wall time, each call waited for.
    secs: f64,
    /// Under IJEPA_PROFILE=1 (every dispatch waited for, so `secs` is inflated) the
    /// summed kernel time, from the GPU's timestamps where it has them.
    kernel_secs: Option<f64>,
    /// Matmul and attention FLOPs the call dispatched (`Device::counts`).
    flops: f64,
}

/// `f` timed after a warm-up, over enough calls to fill ~`budget` s.
fn time_per_call(dev: &Device, budget: f64, mut f: impl FnMut() -> Result<()>) -> Result<Timing> {
    f()?;
    dev.synchronize();
    dev.take_profile_report();
    let flops_before = dev.counts().flops;
    let start = Instant::now();
    let mut calls = 0u32;
    while calls < 3 || start.elapsed().as_secs_f64() < budget {
        f()?;
        dev.synchronize();
        calls += 1;
    }
    let per_call = |total: f64| total / calls as f64;
    let (rows, _) = dev.take_profile_report();
    Ok(Timing {
        secs: per_call(start.elapsed().as_secs_f64()),
        kernel_secs: (!rows.is_empty()).then(|| per_call(rows.iter().map(|r| r.2).sum())),
        flops: per_call((dev.counts().flops - flops_before) as f64),
    })
}

/// ", kernels X ms" when profiling gave kernel times.
fn kernel_note(label: &str, kernels: Option<f64>) -> String {
    kernels.map_or(String::new(), |k| {
        format!(", {label}kernels {:.3} ms", k * 1e3)
    })
}

/// ViT-shaped matmuls (fc1 and its weight gradient), then squares up to `size`; the
/// last line is the `size`^3 case on the path `matmul_forward` takes. With
/// `every_kernel`, each case is timed with every kernel that takes it, unsplit, and
/// then on the chosen path last.
pub fn matmul(dev: &Arc<Device>, size: usize, every_kernel: bool) -> Result<()> {
    use engine::ops::matmul::{matmul_with, split_k, Epilogue, MatmulKernel};
    /// op(a) [m, k] @ op(b) [k, n], a untransposed or (`trans_a`) stored [k, m].
    struct Case {
        label: String,
        m: usize,
        k: usize,
        n: usize,
        trans_a: bool,
    }
    let name = &dev.info().name;
    let mut cases = Vec::new();
    for d in [192, 384, 768] {
        let tokens = 8 * 196;
        let (m, k, n) = (tokens, d, 4 * d);
        let label = format!("vit fc1 [{m}x{k}]x[{k}x{n}]");
        cases.push(Case {
            label,
            m,
            k,
            n,
            trans_a: false,
        });
        // The weight gradient of fc1 over a batch of 32 images of 196 tokens.
        let (m, k, n) = (d, 32 * 196, 4 * d);
        let label = format!("vit fc1 dW [{k}x{m}]^T x [{k}x{n}]");
        cases.push(Case {
            label,
            m,
            k,
            n,
            trans_a: true,
        });
    }
    let mut squares = Vec::new();
    let mut s = 256;
    while s < size {
        squares.push(s);
        s *= 2;
    }
    squares.push(size);
    for s in squares {
        let label = format!("{s}x{s}x{s}");
        cases.push(Case {
            label,
            m: s,
            k: s,
            n: s,
            trans_a: false,
        });
    }
    for Case {
        label,
        m,
        k,
        n,
        trans_a,
    } in cases
    {
        let a_shape = if trans_a { [k, m] } else { [m, k] };
        let (a, b) = (synthetic(dev, &a_shape)?, synthetic(dev, &[k, n])?);
        let t = Transpose {
            a: trans_a,
            b: false,
        };
        let slices = split_k(!dev.is_cpu(), m, n, k, t, false);
        let chosen = MatmulKernel::choose(dev, m, n, k, t);
        let mut paths: Vec<(Option<MatmulKernel>, String)> = MatmulKernel::ALL
            .into_iter()
            .filter(|&kernel| {
                every_kernel
                    && (kernel != chosen || slices.is_some())
                    && kernel.takes(m, n, k, t)
                    && kernel.runs_on(dev)
            })
            .map(|kernel| (Some(kernel), format!("{kernel:?} kernel")))
            .collect();
        let chosen_label = match slices {
            Some(s) => format!("split-K {s} x {chosen:?} kernel"),
            None => format!("{chosen:?} kernel"),
        };
        paths.push((None, chosen_label));
        for (kernel, path) in paths {
            let timing = time_per_call(dev, 1.0, || {
                matmul_with(kernel, &a, &b, t, None, Epilogue::None)?;
                Ok(())
            })?;
            // Under profiling, the rate of the kernels themselves.
            let timed = if timing.kernel_secs.is_some() {
                " (kernel time)"
            } else {
                ""
            };
            println!(
                "matmul {label}: {:.2} GFLOP/s on {name}, {path}{timed}",
                timing.flops / timing.kernel_secs.unwrap_or(timing.secs) / 1e9
            );
        }
    }
    Ok(())
}

/// Attention forward + backward of `batch` x `heads` heads for each token count and
/// head dim, from a packed qkv projection to the merged heads as the model runs it:
/// each fused family that runs on the adapter against the composed path (permutes,
/// matmul, scale, softmax, matmul), one line per family.
pub fn attention(
    dev: &Arc<Device>,
    tokens: &[usize],
    head_dims: &[usize],
    batch: usize,
    heads: usize,
) -> Result<()> {
    use ops::attention::{attention_composed, attention_fused, FusedAttention};
    let name = &dev.info().name;
    for &hd in head_dims {
        for &n in tokens {
            let qkv = synthetic(dev, &[batch, n, 3 * heads * hd])?.requires_grad();
            let w = synthetic(dev, &[batch, n, heads * hd])?;
            let scale = (hd as f32).powf(-0.5);
            let time = |f: &dyn Fn() -> engine::Result<Tensor>| {
                time_per_call(dev, 1.0, || {
                    let loss = ops::sum(&ops::mul(&f()?, &w)?)?;
                    engine::backward(&loss)?;
                    Ok(())
                })
            };
            let composed = time(&|| attention_composed(&qkv, heads, scale))?;
            let kinds = FusedAttention::ALL
                .into_iter()
                .filter(|kind| kind.runs_on(dev, hd));
            for kind in kinds {
                let fused = time(&|| attention_fused(kind, &qkv, heads, scale))?;
                println!(
                    "attention fwd+bwd {batch}x{heads} heads N={n} hd={hd}: fused ({kind:?}) {:.2} ms ({:.1} GFLOP/s), composed {:.2} ms, speed-up {:.2}x on {name}{}{}",
                    fused.secs * 1e3,
                    fused.flops / fused.secs / 1e9,
                    composed.secs * 1e3,
                    composed.secs / fused.secs,
                    kernel_note("fused ", fused.kernel_secs),
                    kernel_note("composed ", composed.kernel_secs),
                );
            }
        }
    }
    Ok(())
}

/// Training steps of a pretraining preset (with a JSON file's overrides) on synthetic
/// images of its data's geometry, through `train_step`, each phase timed; prints
/// images/s.
pub fn step(
    dev: &Arc<Device>,
    preset: &str,
    overrides: Option<&std::path::Path>,
    steps: usize,
) -> Result<()> {
    if steps == 0 {
        anyhow::bail!("--steps must be at least 1");
    }
    let mut config = train::config::PretrainConfig::preset(preset)?;
    if let Some(path) = overrides {
        config = config.overridden_by(path)?;
    }
    let mut run = train::synthetic::SyntheticRun::new(dev, config, steps + 1)?;
    let (mut t_fwd, mut t_bwd, mut t_opt) = (0.0, 0.0, 0.0);
    let mut counted = dev.counts();
    // Step 0 warms the pipelines and the buffer pool and is not counted.
    for s in 0..=steps {
        if s == 1 {
            counted = dev.counts();
        }
        let phases = run.step(s, true)?.phases.expect("phases were timed");
        if s > 0 {
            t_fwd += phases.forward;
            t_bwd += phases.backward;
            t_opt += phases.update;
        }
    }
    let config = &run.config;
    let b = config.batch_size;
    let (channels, size) = config.data.geometry()?;
    let (rows, gpu_timed) = dev.profile_report();
    if !rows.is_empty() {
        println!(
            "per kernel over {} steps ({}):",
            steps + 1,
            if gpu_timed {
                "GPU timestamps"
            } else {
                "host wall time"
            }
        );
    }
    for (kernel, calls, secs) in rows.iter().take(12) {
        println!("  {kernel:<40} {calls:>6} calls {:>9.2} ms", secs * 1e3);
    }
    let n = steps as f64;
    let total = (t_fwd + t_bwd + t_opt) / n;
    let now = dev.counts();
    let name = match overrides {
        None => preset.to_string(),
        Some(_) => format!(
            "{} {}x{}x{}/{}",
            config.model, channels, size, size, config.patch_size
        ),
    };
    let flops = (now.flops - counted.flops) as f64 / n;
    println!(
        "train step {name} (batch {b}): {:.0} dispatches in {:.0} submits, {:.2} GFLOP of matmul and attention per step: {:.1} GFLOP/s",
        (now.dispatches - counted.dispatches) as f64 / n,
        (now.submits - counted.submits) as f64 / n,
        flops / 1e9,
        flops / total / 1e9,
    );
    println!(
        "train step {name} (batch {b}): forward {:.1} ms, backward {:.1} ms, update {:.1} ms: {:.1} images/s on {}",
        t_fwd / n * 1e3,
        t_bwd / n * 1e3,
        t_opt / n * 1e3,
        b as f64 / total,
        dev.info().name
    );
    Ok(())
}
