//! The I-JEPA model: finite-difference check of the whole loss with respect to every
//! kind of parameter, checkpoints round-trip and refuse other architectures.

mod common;

use common::{device, random, rng};
use engine::{backward, no_grad, Tensor};
use model::weights::{save, SafetensorsFile};
use model::{IJepa, IjepaConfig, Masks, PredictorConfig, VitConfig};

fn tiny_config() -> IjepaConfig {
    IjepaConfig {
        encoder: VitConfig {
            img_size: 8,
            patch_size: 2,
            in_chans: 2,
            embed_dim: 8,
            depth: 2,
            num_heads: 2,
            mlp_ratio: 4.0,
            qkv_bias: true,
            layer_norm_eps: 1e-6,
        },
        predictor: PredictorConfig {
            embed_dim: 8,
            depth: 1,
            num_heads: 2,
        },
    }
}

fn tiny_batch(model: &IJepa) -> (Tensor, Masks) {
    let images = Tensor::from_slice(&device(), &[2, 2, 8, 8], &random(&mut rng(5), 256)).unwrap();
    // 4x4 grid; one context mask and two target masks per image, disjoint.
    let context = vec![vec![vec![0, 1, 4, 5, 8, 9], vec![2, 3, 6, 7, 10, 11]]];
    let target = vec![
        vec![vec![10, 11, 14], vec![12, 13, 4]],
        vec![vec![2, 3, 15], vec![0, 1, 5]],
    ];
    let masks = Masks::new(
        &device(),
        &context,
        &target,
        model.config.encoder.num_patches(),
    )
    .unwrap();
    (images, masks)
}

#[test]
fn whole_loss_gradient_matches_finite_differences_for_every_parameter_kind() {
    let model = IJepa::new(&device(), &tiny_config(), 11).unwrap();
    // Move the target encoder away from the encoder so the loss is not near zero.
    for (_, t) in model.target_params() {
        let v: Vec<f32> = t
            .to_vec()
            .iter()
            .zip(random(&mut rng(t.numel() as u64), t.numel()))
            .map(|(a, b)| a + 0.3 * b)
            .collect();
        t.write(&v).unwrap();
    }
    let (images, masks) = tiny_batch(&model);
    let loss = |m: &IJepa| no_grad(|| m.forward(&images, &masks).unwrap().loss.item()) as f64;
    let out = model.forward(&images, &masks).unwrap();
    let grads = backward(&out.loss).unwrap();
    let kinds = [
        "encoder.patch_embed.proj.weight",
        "encoder.patch_embed.proj.bias",
        "encoder.blocks.0.norm1.weight",
        "encoder.blocks.0.attn.qkv.weight",
        "encoder.blocks.0.attn.qkv.bias",
        "encoder.blocks.1.attn.proj.weight",
        "encoder.blocks.0.mlp.fc1.weight",
        "encoder.blocks.1.mlp.fc2.bias",
        "encoder.norm.bias",
        "predictor.predictor_embed.weight",
        "predictor.mask_token",
        "predictor.predictor_blocks.0.norm2.weight",
        "predictor.predictor_proj.weight",
    ];
    let params = model.trainable_params();
    let h = 1e-2f32;
    for kind in kinds {
        let (_, t) = params
            .iter()
            .find(|(n, _)| n == kind)
            .unwrap_or_else(|| panic!("no parameter {kind}"));
        let analytic = grads.get(t).unwrap().to_vec();
        let base = t.to_vec();
        for i in [0, base.len() / 2, base.len() - 1] {
            let mut v = base.clone();
            v[i] = base[i] + h;
            t.write(&v).unwrap();
            let up = loss(&model);
            v[i] = base[i] - h;
            t.write(&v).unwrap();
            let down = loss(&model);
            t.write(&base).unwrap();
            let numeric = (up - down) / (2.0 * h as f64);
            let a = analytic[i] as f64;
            assert!(
                (a - numeric).abs() <= 2e-5 + 2e-2 * numeric.abs(),
                "{kind}[{i}]: analytic {a:e}, finite differences {numeric:e}"
            );
        }
    }
}

#[test]
fn checkpoints_round_trip_and_refuse_another_architecture() {
    let dir = std::env::temp_dir().join(format!("ijepa_model_test_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.safetensors");
    let a = IJepa::new(&device(), &tiny_config(), 1).unwrap();
    save(&path, &a.named_params(), Default::default()).unwrap();
    let b = IJepa::new(&device(), &tiny_config(), 2).unwrap();
    let qkv = |m: &IJepa| {
        m.named_params()
            .into_iter()
            .find(|(n, _)| n == "encoder.blocks.0.attn.qkv.weight")
            .unwrap()
            .1
            .to_vec()
    };
    assert_ne!(qkv(&a), qkv(&b));
    SafetensorsFile::open(&path)
        .unwrap()
        .load_into("", &b.named_params())
        .unwrap();
    for ((n, x), (_, y)) in a.named_params().iter().zip(b.named_params()) {
        assert_eq!(x.to_vec(), y.to_vec(), "{n}");
    }
    let mut wider = tiny_config();
    wider.encoder.embed_dim = 12;
    wider.encoder.num_heads = 3;
    let c = IJepa::new(&device(), &wider, 3).unwrap();
    let before = qkv(&c);
    let e = SafetensorsFile::open(&path)
        .unwrap()
        .load_into("", &c.named_params())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("model.safetensors")
            && e.contains("encoder.blocks.0.attn.qkv.weight")
            && e.contains("[24, 8]")
            && e.contains("[36, 12]"),
        "{e}"
    );
    assert_eq!(qkv(&c), before, "a refused file changes nothing");
    let e = SafetensorsFile::open(&dir.join("missing.safetensors"))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("missing.safetensors"), "{e}");
    std::fs::write(dir.join("corrupt.safetensors"), b"not a safetensors file").unwrap();
    let e = SafetensorsFile::open(&dir.join("corrupt.safetensors"))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("corrupt.safetensors") && e.contains("not a valid safetensors"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn initialisation_follows_the_official_scheme() {
    let mut config = tiny_config();
    config.encoder.embed_dim = 64;
    config.encoder.num_heads = 4;
    let m = IJepa::new(&device(), &config, 4).unwrap();
    let params = m.named_params();
    let get = |name: &str| params.iter().find(|(n, _)| n == name).unwrap().1.to_vec();
    let std =
        |v: &[f32]| (v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>() / v.len() as f64).sqrt();
    let qkv = std(&get("encoder.blocks.0.attn.qkv.weight"));
    assert!((qkv - 0.02).abs() < 0.002, "qkv std {qkv}");
    // attn.proj of block 2 (layer_id 2) is divided by sqrt(4) = 2.
    let proj = std(&get("encoder.blocks.1.attn.proj.weight"));
    assert!((proj - 0.01).abs() < 0.0015, "block 1 proj std {proj}");
    assert!(get("encoder.blocks.0.attn.qkv.bias")
        .iter()
        .all(|&v| v == 0.0));
    assert!(get("encoder.norm.weight").iter().all(|&v| v == 1.0));
    assert_eq!(
        get("encoder.patch_embed.proj.weight"),
        get("target_encoder.patch_embed.proj.weight")
    );
}

/// The parameter count told from the architecture (used where the model is too large
/// to build, as by `ijepa bench allreduce`) is the count of the model built: for RGB
/// and grey images, with and without qkv bias, and vit_giant's MLP ratio.
#[test]
fn trainable_parameters_from_the_architecture_match_the_built_model() {
    for (preset, channels, qkv_bias, pred) in [
        ("vit_femto", 1, true, (16, 1, 2)),
        ("vit_pico", 3, false, (32, 2, 4)),
        ("vit_giant", 3, true, (32, 1, 4)),
    ] {
        let mut encoder = model::config::vit_preset(preset, 28, 14, channels).unwrap();
        encoder.qkv_bias = qkv_bias;
        if preset == "vit_giant" {
            // One block of the giant's width and MLP ratio is enough to check it.
            encoder.depth = 1;
        }
        let config = IjepaConfig {
            encoder,
            predictor: PredictorConfig {
                embed_dim: pred.0,
                depth: pred.1,
                num_heads: pred.2,
            },
        };
        let built: usize = IJepa::new(&device(), &config, 0)
            .unwrap()
            .trainable_params()
            .iter()
            .map(|(_, t)| t.numel())
            .sum();
        assert_eq!(config.trainable_parameters(), built, "{preset}");
    }
}
