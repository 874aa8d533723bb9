//! Tour chapter 9 (docs/tour/09-predictor-loss-update.md): one I-JEPA update taken
//! apart. The target path runs under `no_grad`; the context encoder and the predictor
//! are on the tape; the loss is smooth L1; AdamW updates the encoder and predictor; the
//! target encoder follows by EMA. Each piece is checked against the CPU reference.
//!
//! Run: cargo run --release --example 09_predictor_loss_update

use engine::cpu::{self, max_abs_diff};
use engine::ops::update::ema_update;
use engine::{backward, Device};
use model::ijepa::LOSS_BETA;
use model::{IJepa, Masks};
use train::adamw::{decays, AdamWOptimizer};
use train::config::PretrainConfig;
use train::multiblock::MaskCollator;
use train::synthetic::synthetic;

fn main() -> anyhow::Result<()> {
    engine::device::private_runtime_dir();
    let device = Device::shared()?;
    let preset = PretrainConfig::preset("fmnist-cpu")?;
    let config = preset.model_config(1, 28)?;
    let model = IJepa::new(&device, &config, 0)?;
    let grid = config.encoder.grid();
    let batch = 8;
    let collator = MaskCollator::new(preset.mask_config(grid), 0)?;
    let drawn = collator.sample(0, batch)?;
    let masks = Masks::new(&device, &drawn.context, &drawn.target, grid * grid)?;
    let images = synthetic(&device, &[batch, 1, 28, 28])?;
    println!(
        "fmnist-cpu model, batch {batch}: context masks {:?}, target masks {:?}, prediction rows {:?}",
        masks.context.shape(),
        masks.target.shape(),
        masks.target_rows.shape()
    );

    // Forward: targets (no tape), then context encoder and predictor (on the tape).
    let out = model.forward(&images, &masks)?;
    println!(
        "context features {:?} -> predictions {:?}",
        out.context.shape(),
        out.prediction.shape()
    );
    println!(
        "targets (LayerNormed target-encoder features at the target patches) {:?}",
        out.target.shape()
    );
    let (pred, target) = (out.prediction.to_vec(), out.target.to_vec());
    println!(
        "loss: smooth L1 (beta {LOSS_BETA}) {:.6}; the CPU reference on the same tensors {:.6}",
        out.loss.item(),
        cpu::smooth_l1(&pred, &target, LOSS_BETA as f64)
    );

    // Backward: gradients reach the encoder and predictor, never the target encoder.
    let grads = backward(&out.loss)?;
    let trainable = model.trainable_params();
    let target_params = model.target_params();
    println!(
        "gradients: {} of {} trainable tensors, {} of {} target-encoder tensors",
        trainable
            .iter()
            .filter(|(_, p)| grads.get(p).is_some())
            .count(),
        trainable.len(),
        target_params
            .iter()
            .filter(|(_, p)| grads.get(p).is_some())
            .count(),
        target_params.len()
    );

    // AdamW, first step, on one weight matrix that decays.
    let (name, weight) = trainable
        .iter()
        .find(|(n, p)| n.ends_with("attn.qkv.weight") && decays(n, p.shape()))
        .expect("an attention weight");
    let before = weight.to_vec();
    let grad = grads.get(weight).expect("a gradient").to_vec();
    let mut optimizer = AdamWOptimizer::new(std::slice::from_ref(&trainable))?;
    let (lr, weight_decay) = (1e-3, 0.04);
    optimizer.step(&grads, lr, weight_decay)?;
    let zeros = vec![0.0; before.len()];
    let (want, _, _) = cpu::adamw(
        &before,
        &grad,
        &zeros,
        &zeros,
        1,
        lr as f64,
        0.9,
        0.999,
        1e-8,
        weight_decay as f64,
    );
    println!(
        "AdamW step 1 on {name}: max |kernel - reference| {:.1e}",
        max_abs_diff(&weight.to_vec(), &want)
    );

    // EMA of the target encoder towards the updated encoder.
    let momentum = 0.996;
    let source = model.encoder_params();
    let (_, source_weight) = source
        .iter()
        .find(|(n, _)| name.ends_with(n.as_str()))
        .expect("the same weight");
    let (_, target_weight) = target_params
        .iter()
        .find(|(n, _)| name.ends_with(n.as_str()))
        .expect("its target copy");
    let target_before = target_weight.to_vec();
    for ((_, t), (_, s)) in target_params.iter().zip(&source) {
        ema_update(t, s, momentum)?;
    }
    let want = cpu::ema(&target_before, &source_weight.to_vec(), momentum as f64);
    println!(
        "EMA (momentum {momentum}) of the target's copy: max |kernel - reference| {:.1e}; it moved {:.1e} towards the encoder",
        max_abs_diff(&target_weight.to_vec(), &want),
        max_abs_diff(&target_weight.to_vec(), &target_before)
    );
    Ok(())
}
