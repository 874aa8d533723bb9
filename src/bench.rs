//! `ijepa bench`: kernel throughput on the adapter in use, one line per case.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Result};
use engine::ops::{self, Transpose};
use engine::{DType, Device};
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

/// The matmul kernel `name` names (as `{:?}` prints it, any case), where it runs on `dev`.
pub fn kernel_named(dev: &Device, name: &str) -> Result<engine::ops::matmul::MatmulKernel> {
    use engine::ops::matmul::MatmulKernel;
    let names: Vec<String> = MatmulKernel::ALL.iter().map(|k| format!("{k:?}")).collect();
    let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(name)) else {
        bail!(
            "--kernel {name}: no such matmul kernel; the kernels are {}",
            names.join(", ")
        );
    };
    let kernel = MatmulKernel::ALL[i];
    if !kernel.runs_on(dev) {
        bail!(
            "--kernel {name}: {kernel:?} does not run on {}: it needs {}",
            dev.info().name,
            kernel.needs()
        );
    }
    Ok(kernel)
}

/// The sizes of one product for `bench matmul --shape`: op(a) [m, k] x op(b) [k, n],
/// a stored [k, m] when `trans_a` (a weight gradient), b stored [n, k] when `trans_b`
/// (x W^T, every linear layer's forward).
#[derive(Clone, Copy, Debug)]
pub struct ProductSize {
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub trans_a: bool,
    pub trans_b: bool,
}

impl ProductSize {
    /// `MxKxN`, with `:ta` for op(a) = a^T and `:tb` for op(b) = b^T.
    pub fn parse(arg: &str) -> std::result::Result<ProductSize, String> {
        let expected = "expected MxKxN, MxKxN:ta, MxKxN:tb or MxKxN:ta:tb with whole numbers \
                        of at least 1, e.g. 3136x64x256";
        let mut parts = arg.split(':');
        let dims = parts.next().unwrap_or_default();
        let (mut trans_a, mut trans_b) = (false, false);
        for part in parts {
            let flag = match part {
                "ta" => &mut trans_a,
                "tb" => &mut trans_b,
                other => return Err(format!("`{other}` in `{arg}`: {expected}")),
            };
            if *flag {
                return Err(format!("`{part}` twice in `{arg}`: {expected}"));
            }
            *flag = true;
        }
        let dims: Vec<usize> = dims
            .split('x')
            .map(|d| d.trim().parse::<usize>().ok().filter(|&d| d > 0))
            .collect::<Option<_>>()
            .filter(|dims: &Vec<usize>| dims.len() == 3)
            .ok_or_else(|| format!("`{arg}`: {expected}"))?;
        Ok(ProductSize {
            m: dims[0],
            k: dims[1],
            n: dims[2],
            trans_a,
            trans_b,
        })
    }
}

impl std::fmt::Display for ProductSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ProductSize {
            m,
            k,
            n,
            trans_a,
            trans_b,
        } = *self;
        match trans_a {
            true => write!(f, "[{k}x{m}]^T")?,
            false => write!(f, "[{m}x{k}]")?,
        }
        match trans_b {
            true => write!(f, " x [{n}x{k}]^T"),
            false => write!(f, " x [{k}x{n}]"),
        }
    }
}

/// ViT-shaped matmuls (fc1 and its weight gradient), then squares up to `size`, each
/// on the plan the adapter uses (its description printed); with `every_kernel`, first
/// on every other candidate plan; with `only`, on that kernel's candidate plans alone,
/// wherever it takes the shape. With `f16`, a and b are f16 (c f32), as the forward
/// products of mixed precision take them: the products cooperative matrices run. With
/// `anatomy`, the cooperative-matrix kernels are compiled as that part of themselves
/// alone, and their lines say so.
pub fn matmul(
    dev: &Arc<Device>,
    size: usize,
    sizes: &[ProductSize],
    every_kernel: bool,
    f16: bool,
    only: Option<engine::ops::matmul::MatmulKernel>,
    anatomy: Option<engine::ops::matmul::CoopAnatomy>,
) -> Result<()> {
    use engine::ops::cast::cast_forward;
    use engine::ops::matmul::{
        matmul_with, set_coop_anatomy, Epilogue, MatmulPlan, MatmulShape, MatmulTypes,
    };
    if let Some(part) = anatomy {
        set_coop_anatomy(part);
    }
    let name = &dev.info().name;
    let operand = if f16 { DType::F16 } else { DType::F32 };
    let shape = |size: &ProductSize| MatmulShape {
        batch: 1,
        m: size.m,
        k: size.k,
        n: size.n,
        t: Transpose {
            a: size.trans_a,
            b: size.trans_b,
        },
        b_shared: true,
        bias: false,
        epilogue: Epilogue::None,
        types: MatmulTypes {
            a: operand,
            b: operand,
            ..MatmulTypes::F32
        },
    };
    let plain = |m, k, n| ProductSize {
        m,
        k,
        n,
        trans_a: false,
        trans_b: false,
    };
    let mut cases = Vec::new();
    if sizes.is_empty() {
        for d in [192, 384, 768] {
            // fc1 over 8 images of 196 tokens, and its weight gradient over 32 images.
            cases.push(("vit fc1".to_string(), plain(8 * 196, d, 4 * d)));
            let weight_gradient = ProductSize {
                trans_a: true,
                ..plain(d, 32 * 196, 4 * d)
            };
            cases.push(("vit fc1 dW".to_string(), weight_gradient));
        }
        let mut s = 256;
        while s < size {
            cases.push(("square".to_string(), plain(s, s, s)));
            s *= 2;
        }
        cases.push(("square".to_string(), plain(size, size, size)));
    }
    cases.extend(sizes.iter().map(|size| (size.to_string(), *size)));
    for (label, size) in cases {
        let shape = shape(&size);
        let a_shape = if shape.t.a {
            [shape.k, shape.m]
        } else {
            [shape.m, shape.k]
        };
        let b_shape = if shape.t.b {
            [shape.n, shape.k]
        } else {
            [shape.k, shape.n]
        };
        let (a, b) = (
            cast_forward(&synthetic(dev, &a_shape)?, operand)?,
            cast_forward(&synthetic(dev, &b_shape)?, operand)?,
        );
        let chosen = MatmulPlan::new(dev, &shape);
        let mut plans: Vec<MatmulPlan> = if every_kernel || only.is_some() {
            MatmulPlan::candidates(dev, &shape)
                .into_iter()
                .filter(|plan| *plan != chosen)
                .collect()
        } else {
            Vec::new()
        };
        plans.push(chosen);
        if let Some(kernel) = only {
            plans.retain(|plan| plan.kernel == kernel);
        }
        for plan in plans {
            let timing = time_per_call(dev, 1.0, || {
                matmul_with(&plan, &a, &b, None)?;
                Ok(())
            })?;
            // Under profiling, the rate of the kernels themselves.
            let timed = if timing.kernel_secs.is_some() {
                " (kernel time)"
            } else {
                ""
            };
            let part = match anatomy {
                Some(part) if plan.kernel.cooperative() => {
                    format!(" (anatomy: {part:?} alone, the product's flops over its time)")
                }
                _ => String::new(),
            };
            println!(
                "matmul {label}: {:.2} GFLOP/s on {name}{}, {}{timed}{part}",
                timing.flops / timing.kernel_secs.unwrap_or(timing.secs) / 1e9,
                if plan == chosen {
                    " (the plan in use)"
                } else {
                    ""
                },
                plan.describe()
            );
        }
    }
    Ok(())
}

/// Attention forward + backward of `batch` x `heads` heads for each token count and
/// head dim, from a packed qkv projection (f16 with `f16`, as under mixed precision)
/// to the merged heads as the model runs it: each candidate plan (every fused family
/// that runs on the adapter, and the composed path), one line each, the plan in use
/// marked.
pub fn attention(
    dev: &Arc<Device>,
    tokens: &[usize],
    head_dims: &[usize],
    batch: usize,
    heads: usize,
    f16: bool,
) -> Result<()> {
    use ops::attention::{attention_with, AttentionPath, AttentionPlan, AttentionShape};
    let name = &dev.info().name;
    for &hd in head_dims {
        for &n in tokens {
            let qkv = synthetic(dev, &[batch, n, 3 * heads * hd])?;
            let qkv = ops::cast::cast_forward(&qkv, if f16 { DType::F16 } else { DType::F32 })?
                .requires_grad();
            let w = synthetic(dev, &[batch, n, heads * hd])?;
            let scale = (hd as f32).powf(-0.5);
            let shape = AttentionShape {
                batch,
                tokens: n,
                heads,
                head_dim: hd,
                qkv: qkv.dtype(),
            };
            let chosen = AttentionPlan::new(dev, &shape);
            let mut composed_secs = None;
            for plan in AttentionPlan::candidates(dev, &shape) {
                let timing = time_per_call(dev, 1.0, || {
                    let out = attention_with(&plan, &qkv, heads, scale)?;
                    engine::backward(&ops::sum(&ops::mul(&out, &w)?)?)?;
                    Ok(())
                })?;
                let speedup = match (plan.path, composed_secs) {
                    (AttentionPath::Composed, _) => {
                        composed_secs = Some(timing.secs);
                        String::new()
                    }
                    (_, Some(c)) => format!(", {:.2}x the composed path", c / timing.secs),
                    (_, None) => String::new(),
                };
                println!(
                    "attention fwd+bwd, {:?} qkv: {:.2} ms ({:.1} GFLOP/s) on {name}{}, {}{speedup}{}",
                    qkv.dtype(),
                    timing.secs * 1e3,
                    timing.flops / timing.secs / 1e9,
                    if plan == chosen {
                        " (the plan in use)"
                    } else {
                        ""
                    },
                    plan.describe(),
                    kernel_note("", timing.kernel_secs),
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
    precision: Option<engine::Precision>,
) -> Result<()> {
    let mut config = train::config::PretrainConfig::preset(preset)?;
    if let Some(path) = overrides {
        config = config.overridden_by(path)?;
    }
    if let Some(precision) = precision {
        config.precision = precision;
    }
    let mut run = train::synthetic::SyntheticRun::new(dev, config, steps + 1)?;
    let (mut t_fwd, mut t_bwd, mut t_opt) = (0.0, 0.0, 0.0);
    let mut peaks = [0u64; 3];
    // Where plans are measured, the steps run once beforehand, so that every plan
    // their masks' sizes need is measured before the clock starts.
    let mut steps_run = steps + 1;
    if dev.measures_plans() {
        for s in 0..=steps {
            run.step(s, false)?;
        }
        steps_run *= 2;
    }
    let mut counted = dev.counts();
    // The recording thread's CPU time over the counted steps, against their wall time.
    let mut host_cpu_start = (thread_cpu_seconds(), Instant::now());
    // Step 0 warms the pipelines and the buffer pool and is not counted, in the kernel
    // times either: a CPU driver compiles each kernel at its first dispatch, inside its
    // timestamps.
    for s in 0..=steps {
        if s == 1 {
            counted = dev.counts();
            host_cpu_start = (thread_cpu_seconds(), Instant::now());
            dev.take_profile_report();
        }
        let phases = run.step(s, true)?.phases.expect("phases were timed");
        if s > 0 {
            t_fwd += phases.forward;
            t_bwd += phases.backward;
            t_opt += phases.update;
            for (peak, bytes) in peaks.iter_mut().zip(phases.peak_bytes) {
                *peak = (*peak).max(bytes);
            }
        }
    }
    let host_cpu = thread_cpu_seconds()
        .zip(host_cpu_start.0)
        .filter(|_| steps > 0)
        .map(|(end, start)| {
            let per_step = |seconds: f64| seconds / steps as f64;
            (
                per_step(end - start),
                per_step(host_cpu_start.1.elapsed().as_secs_f64()),
            )
        });
    let config = &run.config;
    let b = config.batch_size;
    let (channels, size) = config.data.geometry()?;
    let (rows, gpu_timed) = dev.profile_report();
    if !rows.is_empty() {
        println!(
            "per kernel over {} steps ({}):",
            steps,
            if gpu_timed {
                "GPU timestamps"
            } else {
                "host wall time"
            }
        );
    }
    for (kernel, calls, secs) in &rows {
        println!(
            "  {kernel:<40} {:>6.1} calls/step {:>9.2} ms",
            *calls as f64 / steps as f64,
            secs * 1e3
        );
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
    let name = format!(
        "{name} {}{}",
        config.precision.name(),
        if dev.is_cpu() && !dev.plans_as_cpu() {
            ", a GPU's plans"
        } else {
            ""
        }
    );
    let flops = (now.flops - counted.flops) as f64 / n;
    println!(
        "train step {name} (batch {b}): {:.0} dispatches and {:.0} buffer copies in {:.0} submits, {:.2} GFLOP of matmul and attention per step: {:.1} GFLOP/s",
        (now.dispatches - counted.dispatches) as f64 / n,
        (now.copies - counted.copies) as f64 / n,
        (now.submits - counted.submits) as f64 / n,
        flops / 1e9,
        flops / total / 1e9,
    );
    let mib = |bytes: u64| bytes as f64 / (1 << 20) as f64;
    println!(
        "train step {name} (batch {b}): peak GPU memory {:.1} MiB in tensors (forward {:.1}, backward {:.1}, update {:.1} MiB), {:.1} MiB held by the buffer pool",
        mib(peaks.into_iter().max().unwrap_or(0)),
        mib(peaks[0]),
        mib(peaks[1]),
        mib(peaks[2]),
        mib(dev.memory_held()),
    );
    if let Some((cpu, wall)) = host_cpu {
        println!(
            "train step {name} (batch {b}): host CPU {:.1} ms per step on the recording thread, {:.0}% of the step's wall time",
            cpu * 1e3,
            100.0 * cpu / wall,
        );
    }
    if let Some(file) = dev.plan_file() {
        println!("{file}");
    }
    let measured = dev.measured_plans();
    if !measured.is_empty() {
        println!(
            "plans measured ({}=1), each the best of {} batches of runs, per run:",
            engine::MEASURE_PLANS_ENV,
            engine::MEASURED_RUNS
        );
    }
    for (key, m) in &measured {
        println!("  {key}:");
        for (i, (plan, secs)) in m.candidates.iter().enumerate() {
            let mark = match (i == m.chosen, m.rule == Some(i)) {
                (true, true) => "  <- chosen, the rule's",
                (true, false) => "  <- chosen",
                (false, true) => "  <- the rule's",
                (false, false) => "",
            };
            println!("    {:>9.3} ms  {plan}{mark}", secs * 1e3);
        }
    }
    if !measured.is_empty() {
        print_rules_against_fastest(&measured, steps_run);
    }
    println!(
        "train step {name} (batch {b}): forward {:.1} ms, backward {:.1} ms, update {:.1} ms: {:.prec$} images/s on {}",
        t_fwd / n * 1e3,
        t_bwd / n * 1e3,
        t_opt / n * 1e3,
        b as f64 / total,
        dev.info().name,
        // Three significant digits for the slow steps of a large model on a CPU adapter.
        prec = if b as f64 / total < 1.0 { 3 } else { 1 },
    );
    Ok(())
}

/// How the rules' plans fare against the fastest candidates over the measured buckets'
/// calls in `steps_run` steps, per step, and the buckets where the rules lose most.
fn print_rules_against_fastest(measured: &[(String, engine::Measured)], steps_run: usize) {
    const NAMED: usize = 8;
    let report = engine::RulesAgainstFastest::of(measured);
    let per_step = |seconds: f64| seconds / steps_run as f64 * 1e3;
    println!(
        "rules against the fastest: {} of {} measured buckets have their rule's plan among the candidates, \
         {} of those on the fastest; their {} calls in {steps_run} steps take {:.3} ms a step on the rules' plans, \
         {:.3} ms on the fastest ({:.2}x)",
        report.ruled,
        report.buckets,
        report.rule_fastest,
        report.calls,
        per_step(report.by_rule),
        per_step(report.fastest),
        report.by_rule / report.fastest,
    );
    for loss in report.losses.iter().take(NAMED) {
        println!(
            "  {:>9.3} ms a step lost by rule over {} calls: {}\n      rule: {}\n      fastest: {}",
            per_step(loss.seconds),
            loss.calls,
            loss.key,
            loss.rule,
            loss.fastest
        );
    }
    if report.losses.len() > NAMED {
        println!(
            "  ... and {} more buckets where the rule is not the fastest",
            report.losses.len() - NAMED
        );
    }
}

/// CPU seconds the calling thread has run (recording dispatches, wgpu's validation, the
/// driver's submits), where the OS reports it per thread (Linux); None elsewhere.
fn thread_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let nanos: f64 = stat.split_whitespace().next()?.parse().ok()?;
    Some(nanos * 1e-9)
}

/// The streaming pipeline on an image folder (its `train/` split, or the folder itself
/// when its sub-folders are the classes): images per second decoded, cropped
/// (RandomResizedCrop, scale 0.3-1) and normalised at `image_size`, and the process's
/// peak resident memory.
pub fn data(
    folder: &std::path::Path,
    image_size: usize,
    batch: usize,
    batches: usize,
    workers: usize,
) -> Result<()> {
    use train::data::{folder_classes, load_image_folder, worker_count};
    use train::loader::{BatchLoader, LoaderConfig};
    use train::multiblock::{MaskCollator, MaskConfig};
    let train_dir = folder.join("train");
    let dir = if train_dir.is_dir() {
        &train_dir
    } else {
        folder
    };
    let started = Instant::now();
    let classes = folder_classes(dir)?;
    let (data, report) = load_image_folder(dir, &classes, image_size, 3)?;
    for w in report.warnings() {
        eprintln!("warning: {w}");
    }
    if data.len() < batch {
        anyhow::bail!(
            "{}: {} images are fewer than one batch of {batch}",
            dir.display(),
            data.len()
        );
    }
    println!(
        "indexed {} images of {} classes in {:.2} s",
        data.len(),
        classes.len(),
        started.elapsed().as_secs_f64()
    );
    let config = LoaderConfig {
        batch,
        slots: 0..batch,
        image_size,
        crop_scale: (0.3, 1.0),
        crop_ratio: (3.0 / 4.0, 4.0 / 3.0),
        seed: 0,
        // The normalisation constants do not change the cost.
        stats: vec![(0.5, 0.25); 3],
        workers,
    };
    let collator = Arc::new(MaskCollator::new(MaskConfig::official(14), 0)?);
    let loader = BatchLoader::spawn(Arc::new(data), config, collator, 0, batches + 1, 2);
    // The first batch also warms the file cache and the threads.
    loader.next()?;
    let started = Instant::now();
    let mut replaced = 0;
    for _ in 0..batches {
        replaced += loader.next()?.replaced.len();
    }
    let secs = started.elapsed().as_secs_f64();
    let peak = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or("unknown".into(), |kib| format!("{:.0} MiB", kib / 1024.0));
    println!(
        "data: {:.1} images/s at {image_size}x{image_size} on {} worker thread(s) ({} cores), batch {batch}, {batches} batches; peak resident memory {peak}; {replaced} unreadable image(s) replaced",
        (batches * batch) as f64 / secs,
        worker_count(workers),
        worker_count(0),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::ProductSize;

    #[test]
    fn product_sizes_parse_with_and_without_transposes() {
        let plain = ProductSize::parse("3136x64x256").unwrap();
        assert_eq!(
            (plain.m, plain.k, plain.n, plain.trans_a, plain.trans_b),
            (3136, 64, 256, false, false)
        );
        assert_eq!(plain.to_string(), "[3136x64] x [64x256]");
        let weight_gradient = ProductSize::parse("64x3136x256:ta").unwrap();
        assert_eq!(
            (weight_gradient.m, weight_gradient.k, weight_gradient.n),
            (64, 3136, 256)
        );
        assert!(weight_gradient.trans_a && !weight_gradient.trans_b);
        assert_eq!(weight_gradient.to_string(), "[3136x64]^T x [3136x256]");
        let linear = ProductSize::parse("3136x64x192:tb").unwrap();
        assert!(!linear.trans_a && linear.trans_b);
        assert_eq!(linear.to_string(), "[3136x64] x [192x64]^T");
        let both = ProductSize::parse("8x16x4:tb:ta").unwrap();
        assert!(both.trans_a && both.trans_b);
        assert_eq!(both.to_string(), "[16x8]^T x [4x16]^T");
    }

    #[test]
    fn bad_product_sizes_name_the_argument_and_the_form() {
        for bad in [
            "64x64",
            "64x64x64x64",
            "0x4x4",
            "ax4x4",
            "4x4x4:tc",
            "4x4x4:ta:ta",
            "",
        ] {
            let message = ProductSize::parse(bad).unwrap_err();
            assert!(message.contains(&format!("`{bad}`")), "{bad}: {message}");
            assert!(message.contains("MxKxN"), "{bad}: {message}");
        }
    }
}
