//! The plans a training step runs in production on this adapter are all among the
//! plans the kernel tests run (`cases::tested_plan_keys`: every candidate for every
//! tested size), so no kernel the adapter uses goes untested. Alone in its process, so
//! the plan log sees this test's work only.

mod common;

use common::{cases, device};
use train::config::PretrainConfig;
use train::synthetic::SyntheticRun;

#[test]
fn every_plan_a_training_step_runs_is_tested() {
    let dev = device();
    let tested = cases::tested_plan_keys(&dev);
    dev.log_plans();
    // The CPU quick start's model, and a ViT-S on a 14x14 grid, whose rows of 384 leave
    // the short-row kernels and whose 196 tokens of head dim 64 leave the fused
    // attention on lavapipe.
    for (model, patch, pred_embed_dim, batch) in [("vit_pico", 4, 32, 8), ("vit_small", 2, 48, 2)] {
        let mut config = PretrainConfig::preset("fmnist-cpu").unwrap();
        config.model = model.into();
        config.patch_size = patch;
        config.pred_embed_dim = pred_embed_dim;
        config.batch_size = batch;
        let mut run = SyntheticRun::new(&dev, config, 2).unwrap();
        run.step(0, false).unwrap();
    }
    let production = dev.take_plan_log();
    assert!(
        production.iter().any(|k| k.starts_with("attention")),
        "the plan log recorded no attention: {production:?}"
    );
    let untested: Vec<&String> = production.difference(&tested).collect();
    assert!(
        untested.is_empty(),
        "plans used by a training step on {} that no kernel test runs: {untested:?}",
        dev.info().name
    );
    eprintln!(
        "{} plans in production on {}, all among the {} tested:",
        production.len(),
        dev.info().name,
        tested.len()
    );
    for key in &production {
        eprintln!("  {key}");
    }
}
