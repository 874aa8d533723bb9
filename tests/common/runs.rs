//! Small pretraining runs for the training and fault tests: a scratch directory, the
//! tiny configuration, the loss log, the `ijepa` binary on that configuration, and
//! the tensors of a checkpoint it writes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use safetensors::SafeTensors;
use train::config::PretrainConfig;
use train::data::DataConfig;
use train::pretrain::METRICS;

/// An empty scratch directory of this test process.
pub fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ijepa_{name}_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A tiny run on the first `images` Fashion-MNIST training images.
pub fn tiny_config(images: usize, epochs: usize) -> PretrainConfig {
    PretrainConfig {
        data: DataConfig {
            train_limit: images,
            test_limit: 200,
            ..DataConfig::default()
        },
        model: "vit_femto".into(),
        pred_embed_dim: 16,
        pred_depth: 1,
        batch_size: 16,
        epochs,
        checkpoint_every: 10,
        knn_train: 200,
        knn_test: 100,
        ..PretrainConfig::default()
    }
}

/// (step, loss) of each line of a run's metrics log.
pub fn losses(dir: &Path) -> Vec<(usize, f32)> {
    std::fs::read_to_string(dir.join(METRICS))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["step"].as_u64().unwrap() as usize,
                v["loss"].as_f64().unwrap() as f32,
            )
        })
        .collect()
}

/// `ijepa pretrain` on `config` (written next to `out` as JSON over the fmnist
/// preset), with `extra` arguments; not yet started.
pub fn pretrain_command(config: &PretrainConfig, out: &Path, extra: &[&str]) -> Command {
    let file = out.with_extension("json");
    std::fs::write(&file, serde_json::to_string(config).unwrap()).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ijepa"));
    cmd.args(["pretrain", "--preset", "fmnist", "--config"])
        .arg(&file)
        .arg("--out")
        .arg(out)
        .args(extra)
        .env_remove("RUST_BACKTRACE");
    cmd
}

/// `pretrain_command` as `ranks` processes started by Open MPI's `mpirun` on this
/// machine (as root when the tests run as root; more processes than cores allowed).
pub fn mpirun_pretrain_command(
    ranks: usize,
    config: &PretrainConfig,
    out: &Path,
    extra: &[&str],
) -> Command {
    let single = pretrain_command(config, out, extra);
    let mut cmd = Command::new("mpirun");
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| {
        use std::os::unix::fs::MetadataExt;
        m.uid() == 0
    });
    if root {
        cmd.arg("--allow-run-as-root");
    }
    cmd.args(["--oversubscribe", "-np", &ranks.to_string()])
        .arg(single.get_program())
        .args(single.get_args())
        .env_remove("RUST_BACKTRACE");
    cmd
}

/// Run `ijepa` with `args` to its end: (exit code, stderr).
pub fn ijepa(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ijepa"))
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Run `ijepa` with `args`, which must succeed: its stdout.
pub fn ijepa_stdout(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ijepa"))
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ijepa {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every tensor of a safetensors file, as (name, values, shape), and its metadata.
pub type Tensors = Vec<(String, Vec<f32>, Vec<usize>)>;

pub fn read_checkpoint(path: &Path) -> (Tensors, HashMap<String, String>) {
    let bytes = std::fs::read(path).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let tensors = file
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let values = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            (name, values, view.shape().to_vec())
        })
        .collect();
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    (tensors, header.metadata().clone().unwrap_or_default())
}
