//! The golden I-JEPA steps (computed by the official PyTorch code) replayed through
//! `ijepa check-reference`: every file in tests/data, plus any listed in the
//! IJEPA_REFERENCE environment variable (paths separated by ':'), on the adapter's
//! plans and on a GPU's. A tampered file must fail, so the check can fail.

use std::path::{Path, PathBuf};
use std::process::Command;

/// `ijepa check-reference path`, with the environment variables `env` set.
fn check(path: &Path, env: &[(&str, &str)]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ijepa"))
        .arg("check-reference")
        .arg(path)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn golden_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
            .collect();
    files.sort();
    if let Ok(extra) = std::env::var("IJEPA_REFERENCE") {
        files.extend(
            extra
                .split(':')
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
        );
    }
    files
}

#[test]
fn every_golden_step_matches() {
    let files = golden_files();
    assert!(
        files.len() >= 4,
        "expected the shared golden file and the extra configs in tests/data"
    );
    for f in files {
        let (ok, text) = check(&f, &[]);
        assert!(ok && text.contains("PASS"), "{}:\n{text}", f.display());
    }
}

/// The same on a GPU's plans (`IJEPA_GPU_PLANS=1`): on a CPU adapter, the kernels,
/// splits, fused attention and row lanes a GPU would run, in the whole step.
#[test]
fn every_golden_step_matches_on_a_gpus_plans() {
    for f in golden_files() {
        let (ok, text) = check(&f, &[(engine::GPU_PLANS_ENV, "1")]);
        assert!(ok && text.contains("PASS"), "{}:\n{text}", f.display());
    }
}

#[test]
fn a_tampered_golden_step_fails() {
    let src = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/ijepa_step_small.safetensors"
    ));
    let bytes = std::fs::read(src).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    // Move one expected gradient entry by 1%: far beyond the tolerance.
    let target = "grad.encoder.blocks.1.mlp.fc1.weight";
    let mut owned: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec()))
        .collect();
    let entry = owned.iter_mut().find(|t| t.0 == target).unwrap();
    let v = f32::from_le_bytes(entry.3[..4].try_into().unwrap());
    entry.3[..4].copy_from_slice(&(v * 1.01 + 1e-4).to_le_bytes());
    let views: Vec<(String, safetensors::tensor::TensorView)> = owned
        .iter()
        .map(|(n, d, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    let out =
        std::env::temp_dir().join(format!("ijepa_tampered_{}.safetensors", std::process::id()));
    std::fs::write(
        &out,
        safetensors::serialize(views, meta.metadata().clone()).unwrap(),
    )
    .unwrap();
    let (ok, text) = check(&out, &[]);
    std::fs::remove_file(&out).unwrap();
    assert!(!ok, "a tampered file passed:\n{text}");
    assert!(
        text.contains(&format!(
            "FAIL: 1 group(s) out of tolerance: grad {}",
            &target[5..]
        )),
        "{text}"
    );
}
