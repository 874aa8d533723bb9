//! Tour chapter 11 (docs/tour/11-pretrain-probe.md): a short pretraining run on
//! Fashion-MNIST through the trainer `ijepa pretrain` uses, then the linear probe of
//! `ijepa probe` on its checkpoint, beside raw pixels and a random-init encoder.
//!
//! Run: cargo run --release --example 11_pretrain_probe [output directory]
//! (Fashion-MNIST in /usr/share/datasets/fashion-mnist: scripts/install-deps.sh)

use std::path::PathBuf;

use engine::Device;
use train::checkpoint::CHECKPOINT;
use train::config::PretrainConfig;
use train::data::DataConfig;
use train::pretrain::Trainer;
use train::probe::{probe_checkpoint, FeatureOptions};

fn main() -> anyhow::Result<()> {
    engine::device::private_runtime_dir();
    let out = std::env::args()
        .nth(1)
        .map_or_else(|| std::env::temp_dir().join("ijepa-tour-11"), PathBuf::from);
    // A fresh run each time: the run directory holds nothing but this example's output.
    if out.join(CHECKPOINT).exists() {
        std::fs::remove_dir_all(&out)?;
    }
    let device = Device::shared()?;

    // The CPU preset on a fifth of its images, for two epochs.
    let preset = PretrainConfig::preset("fmnist-cpu")?;
    let config = PretrainConfig {
        data: DataConfig {
            train_limit: 2048,
            test_limit: 1000,
            ..preset.data.clone()
        },
        epochs: 2,
        knn_train: 1000,
        knn_test: 500,
        ..preset
    };
    let mut trainer = Trainer::new(&device, config, &out)?;
    println!(
        "pretraining {} on {} images: {} steps of {}",
        trainer.config.model,
        trainer.splits.train.len(),
        trainer.total_steps(),
        trainer.config.batch_size
    );
    let width = trainer.state.model.config.encoder.embed_dim;
    trainer.run(trainer.total_steps(), |m| {
        if let Some(knn) = m.knn_top1 {
            println!(
                "epoch {}: loss {:.4}, k-NN top-1 {knn:.1}%, RankMe {:.1} of {width}, target std {:.3}, {:.0} img/s",
                m.epoch + 1,
                m.loss,
                m.rankme.unwrap_or(f64::NAN),
                m.target_std.unwrap_or(f64::NAN),
                m.images_per_s
            );
        }
    })?;

    // The probe: logistic regression on standardised, mean-pooled target-encoder
    // features, trained on all the probe's training labels and on 1% of them.
    let checkpoint = out.join(CHECKPOINT);
    println!("linear probe of {} (test top-1 %):", checkpoint.display());
    println!(
        "  {:<24} {:>10} {:>8} {:>8}",
        "features", "all labels", "1%", "k-NN"
    );
    probe_checkpoint(
        &device,
        &checkpoint,
        &FeatureOptions::default(),
        None,
        |r| {
            println!(
                "  {:<24} {:>10.2} {:>8.2} {:>8.2}",
                r.features,
                r.all_labels,
                r.one_percent(),
                r.knn
            );
        },
    )?;
    Ok(())
}
