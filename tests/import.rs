//! `ijepa import` on fixtures in exactly the layout of the official code's torch.save
//! (written by scripts/make-official-fixtures.py from an ijepa checkpoint, which sits
//! beside them): the imported weights are exactly those, they give the same features,
//! and other architectures or broken archives are refused, saying why.

mod common;

use std::path::{Path, PathBuf};

use common::device;
use common::runs::{ijepa, ijepa_stdout, temp_dir, tiny_config};
use train::checkpoint::Checkpoint;
use train::probe::{embed_checkpoint, FeatureOptions};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/official")
        .join(name)
}

/// The weights of a safetensors file, optimiser moments left out, by name.
fn weights(path: &Path) -> Vec<(String, Vec<u8>, Vec<usize>)> {
    let bytes = std::fs::read(path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<_> = file
        .tensors()
        .into_iter()
        .filter(|(n, _)| !n.starts_with("optim."))
        .map(|(n, v)| (n, v.data().to_vec(), v.shape().to_vec()))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The official layout (DDP's `module.` names in three OrderedDicts, with the AdamW and
/// GradScaler states beside) imports to exactly the weights it was made from, with the
/// architecture inferred (vit_femto, patch 4, predictor 16x1), and gives the same
/// features, bit for bit.
#[test]
fn an_official_checkpoint_imports_to_exactly_the_weights_saved_alongside() {
    let dir = temp_dir("import");
    let config = dir.join("data.json");
    // The data the fixture's run used, so that the normalisation is the same.
    std::fs::write(
        &config,
        serde_json::to_string(&tiny_config(320, 1)).unwrap(),
    )
    .unwrap();
    let out = dir.join("imported.safetensors");
    let printed = ijepa_stdout(&[
        "import",
        fixture("femto.pth.tar").to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        printed.contains("vit_femto")
            && printed.contains("predictor 16x1")
            && printed.contains("epoch 3"),
        "{printed}"
    );
    let alongside = fixture("femto.safetensors");
    let (got, want) = (weights(&out), weights(&alongside));
    assert_eq!(got.len(), 78);
    assert!(
        got == want,
        "the imported weights differ from the ones saved alongside"
    );
    let (a, b) = (
        Checkpoint::open(&out).unwrap().meta,
        Checkpoint::open(&alongside).unwrap().meta,
    );
    assert_eq!(a.model, b.model);
    assert_eq!(a.channel_stats, b.channel_stats);
    let options = FeatureOptions {
        limits: (64, 32),
        ..FeatureOptions::default()
    };
    let (f, g) = (
        embed_checkpoint(&device(), &out, &options).unwrap(),
        embed_checkpoint(&device(), &alongside, &options).unwrap(),
    );
    assert!(
        f.train == g.train && f.test == g.test,
        "the features differ"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// An MLP ratio of 3 (no supported architecture), a truncated archive and a file that is
/// not a torch.save archive are refused with the reason, and nothing is written.
#[test]
fn other_architectures_and_broken_archives_are_refused() {
    let dir = temp_dir("import_bad");
    let config = dir.join("data.json");
    std::fs::write(
        &config,
        serde_json::to_string(&tiny_config(320, 1)).unwrap(),
    )
    .unwrap();
    let truncated = dir.join("truncated.pth.tar");
    let bytes = std::fs::read(fixture("femto.pth.tar")).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let out = dir.join("out.safetensors");
    let cases = [
        (fixture("mlp3.pth.tar"), "a ratio of 3.00"),
        (truncated, "not a torch.save archive"),
        (fixture("femto.safetensors"), "not a torch.save archive"),
    ];
    for (file, reason) in cases {
        let (code, stderr) = ijepa(&[
            "import",
            file.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        assert_eq!(code, Some(1), "{stderr}");
        assert!(
            stderr.contains(reason) && stderr.contains(file.file_name().unwrap().to_str().unwrap()),
            "{file:?}: {stderr}"
        );
        assert!(!out.exists());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The official architectures are inferred from their shapes alone: ViT-H/14 at 224,
/// ViT-H/16 at 448 and ViT-g/16 at 224 (MLP ratio 48/11), with their predictors.
#[test]
fn the_official_architectures_are_inferred_from_their_shapes() {
    use train::import::infer_architecture;
    // (width, depth, hidden, patch, positions, predictor width, predictor depth)
    let cases = [
        ("vit_huge", 1280, 32, 5120, 14, 256, 384, 12),
        ("vit_huge", 1280, 32, 5120, 16, 784, 384, 12),
        ("vit_giant", 1408, 40, 6144, 16, 196, 384, 16),
    ];
    for (preset, d, depth, hidden, p, n, pd, pdepth) in cases {
        let mut shapes: Vec<(String, Vec<usize>)> = vec![
            ("encoder.patch_embed.proj.weight".into(), vec![d, 3, p, p]),
            ("encoder.pos_embed".into(), vec![1, n, d]),
            ("predictor.predictor_embed.weight".into(), vec![pd, d]),
        ];
        for i in 0..depth {
            shapes.push((format!("encoder.blocks.{i}.norm1.weight"), vec![d]));
            shapes.push((
                format!("encoder.blocks.{i}.mlp.fc1.weight"),
                vec![hidden, d],
            ));
        }
        for i in 0..pdepth {
            shapes.push((
                format!("predictor.predictor_blocks.{i}.norm1.weight"),
                vec![pd],
            ));
        }
        let shapes: Vec<(&str, &[usize])> = shapes
            .iter()
            .map(|(n, s)| (n.as_str(), s.as_slice()))
            .collect();
        let (name, config) = infer_architecture(&shapes).unwrap();
        let size = (n as f64).sqrt() as usize * p;
        assert_eq!(name, preset);
        assert_eq!(
            (
                config.encoder.img_size,
                config.encoder.patch_size,
                config.encoder.depth,
                config.encoder.mlp_hidden(),
                config.encoder.num_heads
            ),
            (size, p, depth, hidden, 16)
        );
        assert_eq!(
            (config.predictor.embed_dim, config.predictor.depth),
            (pd, pdepth)
        );
    }
}
