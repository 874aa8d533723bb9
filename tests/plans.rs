//! The plans a training step runs in production on this adapter, and those a GPU's
//! rules would pick, are all among the plans the kernel tests run
//! (`cases::tested_plan_keys`: every candidate for every tested size), so no kernel the
//! adapter, or a GPU, uses goes untested. Each test logs the plans of a device of its
//! own work only.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use common::{cases, device};
use engine::{Device, Precision};
use train::config::PretrainConfig;
use train::synthetic::SyntheticRun;

/// The plans of training steps on `dev` that are not in `tested`: the CPU quick start's
/// model, and a ViT-S on a 14x14 grid, whose rows of 384 leave the short-row kernels
/// and whose 196 tokens of head dim 64 leave the fused attention on lavapipe; each in
/// f32 and in mixed precision.
fn untested_plans(dev: &Arc<Device>, tested: &BTreeSet<String>) -> Vec<String> {
    dev.log_plans();
    for (model, patch, pred_embed_dim, batch) in [("vit_pico", 4, 32, 8), ("vit_small", 2, 48, 2)] {
        for precision in [Precision::F32, Precision::Mixed] {
            let mut config = PretrainConfig::preset("fmnist-cpu").unwrap();
            config.model = model.into();
            config.patch_size = patch;
            config.pred_embed_dim = pred_embed_dim;
            config.batch_size = batch;
            config.precision = precision;
            let mut run = SyntheticRun::new(dev, config, 2).unwrap();
            run.step(0, false).unwrap();
        }
    }
    let production = dev.take_plan_log();
    assert!(
        production.iter().any(|k| k.starts_with("attention")),
        "the plan log recorded no attention: {production:?}"
    );
    eprintln!(
        "{} plans in production on {}{}:",
        production.len(),
        dev.info().name,
        if dev.plans_as_cpu() {
            ""
        } else {
            " planning as a GPU"
        }
    );
    for key in &production {
        eprintln!("  {key}");
    }
    production.difference(tested).cloned().collect()
}

#[test]
fn every_plan_a_training_step_runs_is_tested() {
    let dev = device();
    let tested = cases::tested_plan_keys(&dev);
    let untested = untested_plans(&dev, &tested);
    assert!(
        untested.is_empty(),
        "plans used by a training step on {} that no kernel test runs: {untested:?}",
        dev.info().name
    );
}

/// The same for a GPU's plans (`IJEPA_GPU_PLANS`), on a device of its own: on a CPU
/// adapter, the kernel tests run every GPU candidate too, so the plans a GPU would pick
/// must be among those tested here.
#[test]
fn every_plan_a_gpus_training_step_runs_is_tested() {
    let tested = cases::tested_plan_keys(&device());
    let dev = Arc::new(Device::new().unwrap());
    dev.set_gpu_plans(true);
    let untested = untested_plans(&dev, &tested);
    assert!(
        untested.is_empty(),
        "plans a GPU would use in a training step that no kernel test runs: {untested:?}"
    );
}
