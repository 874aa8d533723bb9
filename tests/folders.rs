//! Image folders streamed from disk and the official YAML configurations: batches that
//! depend only on (seed, step) and the files, whatever the worker count; bad files
//! replaced and counted; RandomResizedCrop's boxes; the resize against a direct
//! computation; each official config file's keys mapped onto ours; and an official
//! file run end to end (pretrain, checkpoint, probe) on a generated ImageNet-layout
//! folder.

mod common;

use std::path::Path;

use common::runs::{ijepa, ijepa_stdout, temp_dir};
use rand::{Rng, SeedableRng};
use train::augment::{random_resized_crop_params, resize_crop_normalised, Crop};
use train::config::PretrainConfig;
use train::config_file::ConfigFile;
use train::data::{folder_classes, load_image_folder, Image};
use train::loader::{epoch_order, make_batch_on_threads, LoaderConfig};
use train::multiblock::{MaskCollator, MaskConfig};

/// `count` images per class of varied sizes and aspect ratios (16 to 80 px a side),
/// JPEG and PNG alternately, with seeded noise so that each differs.
fn write_folder(dir: &Path, classes: &[&str], count: usize, seed: u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for class in classes {
        std::fs::create_dir_all(dir.join(class)).unwrap();
        for k in 0..count {
            let (w, h) = (rng.random_range(16..80), rng.random_range(16..80));
            let img = image::RgbImage::from_fn(w, h, |x, y| {
                let v = (x * 7 + y * 13 + k as u32 * 29) as u8;
                image::Rgb([v, v.wrapping_mul(3), rng.random()])
            });
            let ext = if k % 2 == 0 { "jpg" } else { "png" };
            img.save(dir.join(class).join(format!("{k:03}.{ext}")))
                .unwrap();
        }
    }
}

fn loader_config(workers: usize) -> LoaderConfig {
    LoaderConfig {
        batch: 8,
        slots: 0..8,
        image_size: 24,
        crop_scale: (0.3, 1.0),
        crop_ratio: (3.0 / 4.0, 4.0 / 3.0),
        seed: 5,
        stats: vec![(0.5, 0.25); 3],
        workers,
    }
}

/// 3 classes of 70 images, plus a corrupt JPEG, an empty PNG and a text file: 300
/// steps (about 11 epochs) on 1, 2 and 5 workers give bit-identical batches, and the
/// two unreadable images, and only they, are replaced and named.
#[test]
fn a_streamed_folder_gives_the_same_batches_on_any_worker_count() {
    let dir = temp_dir("stream");
    write_folder(&dir, &["ant", "bee", "cow"], 70, 1);
    std::fs::write(dir.join("bee").join("900.jpg"), b"\xff\xd8 not really").unwrap();
    std::fs::write(dir.join("cow").join("901.png"), b"").unwrap();
    std::fs::write(dir.join("cow").join("readme.txt"), b"notes").unwrap();
    let classes = folder_classes(&dir).unwrap();
    let (data, report) = load_image_folder(&dir, &classes, 24, 3).unwrap();
    assert_eq!(data.len(), 212);
    assert!(report.warnings().iter().any(|w| w.contains("readme.txt")));
    let collator = MaskCollator::new(MaskConfig::official(14), 0).unwrap();
    let per_epoch = data.len() / 8;
    let mut replaced_in_epoch = vec![Vec::new(); 300 / per_epoch + 1];
    let mut first: Vec<Vec<f32>> = Vec::new();
    for workers in [1, 2, 5] {
        let config = loader_config(workers);
        for step in 0..300 {
            let order = epoch_order(&data, config.seed, step / per_epoch);
            let batch =
                make_batch_on_threads(&data, &config, &collator, &order, step, workers).unwrap();
            assert!(batch.images.iter().all(|v| v.is_finite()));
            if workers == 1 {
                replaced_in_epoch[step / per_epoch].extend(batch.replaced.clone());
                first.push(batch.images);
            } else {
                assert!(
                    batch.images == first[step],
                    "step {step}: {workers} workers differ from 1"
                );
            }
        }
    }
    // Only the two unreadable files are ever replaced, each named.
    for (epoch, replaced) in replaced_in_epoch.iter().enumerate() {
        for (path, error) in replaced {
            let name = path.file_name().unwrap().to_string_lossy();
            assert!(
                (name == "900.jpg" || name == "901.png") && error.contains(&*name),
                "epoch {epoch}: {path:?}: {error}"
            );
        }
    }
    let total: usize = replaced_in_epoch.iter().map(Vec::len).sum();
    assert!(
        total >= 300 / per_epoch,
        "only {total} replacements in 300 steps"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Before training starts, a class folder without a readable image and a folder
/// without classes are errors naming them.
#[test]
fn a_class_without_readable_images_is_refused_up_front() {
    let dir = temp_dir("unreadable_class");
    write_folder(&dir, &["ant"], 2, 2);
    std::fs::create_dir_all(dir.join("bee")).unwrap();
    std::fs::write(dir.join("bee").join("0.jpg"), b"garbage").unwrap();
    let classes = folder_classes(&dir).unwrap();
    let e = load_image_folder(&dir, &classes, 24, 3)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("bee") && e.contains("no readable image"), "{e}");
    std::fs::remove_dir_all(dir.join("bee")).unwrap();
    std::fs::create_dir_all(dir.join("cow")).unwrap();
    let classes = folder_classes(&dir).unwrap();
    let e = load_image_folder(&dir, &classes, 24, 3)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("cow") && e.contains("no readable image"), "{e}");
    let empty = temp_dir("no_classes");
    let e = folder_classes(&empty).err().unwrap().to_string();
    assert!(e.contains("no class sub-folders"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_dir_all(&empty).unwrap();
}

/// torchvision's RandomResizedCrop: every box lies in the image, covers an area
/// fraction within `scale` and has a width/height within `ratio` (up to the rounding of
/// its sides); where no draw can fit (a 10x1000 strip) the box is the centre crop
/// clamped to the ratio range.
#[test]
fn random_resized_crop_boxes_obey_scale_and_ratio_and_fall_back_to_the_centre() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let (scale, ratio) = ((0.3, 1.0), (3.0 / 4.0, 4.0 / 3.0));
    for (h, w) in [(375, 500), (500, 375), (224, 224), (28, 28)] {
        for _ in 0..2000 {
            let c = random_resized_crop_params(&mut rng, h, w, scale, ratio);
            assert!(
                c.top + c.h <= h && c.left + c.w <= w,
                "{c:?} outside {h}x{w}"
            );
            let (hf, wf) = (c.h as f64, c.w as f64);
            // A side rounded by half a pixel moves the area and the ratio that much.
            let area = hf * wf / (h * w) as f64;
            let slack = (hf + wf) / (h * w) as f64;
            assert!(
                area >= scale.0 - slack && area <= scale.1 + slack,
                "{c:?}: area fraction {area} on {h}x{w}"
            );
            let r = wf / hf;
            let r_slack = 0.5 / hf + 0.5 * wf / (hf * hf);
            assert!(
                r >= ratio.0 - r_slack && r <= ratio.1 + r_slack,
                "{c:?}: ratio {r}"
            );
        }
    }
    let c = random_resized_crop_params(&mut rng, 10, 1000, scale, ratio);
    assert_eq!(
        c,
        Crop {
            top: 0,
            left: (1000 - 13) / 2,
            h: 10,
            w: 13
        }
    );
    let c = random_resized_crop_params(&mut rng, 1000, 10, scale, ratio);
    assert_eq!(
        c,
        Crop {
            top: (1000 - 13) / 2,
            left: 0,
            h: 13,
            w: 10
        }
    );
}

/// The separable resize equals a direct bilinear interpolation (computed per output
/// pixel in f64, torch's half-pixel centres) for planar and interleaved images, when
/// shrinking and when enlarging.
#[test]
fn the_crop_resize_is_bilinear_on_either_layout() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let (h, w, channels) = (37, 53, 3);
    let planar: Vec<u8> = (0..channels * h * w).map(|_| rng.random()).collect();
    let mut interleaved = vec![0u8; planar.len()];
    for c in 0..channels {
        for p in 0..h * w {
            interleaved[p * channels + c] = planar[c * h * w + p];
        }
    }
    let stats = [(0.4, 0.2), (0.5, 0.25), (0.3, 0.3)];
    for (crop, out) in [
        (
            Crop {
                top: 3,
                left: 5,
                h: 30,
                w: 41,
            },
            16,
        ),
        (
            Crop {
                top: 0,
                left: 0,
                h: 37,
                w: 53,
            },
            64,
        ),
        (
            Crop {
                top: 20,
                left: 40,
                h: 7,
                w: 9,
            },
            20,
        ),
    ] {
        let want: Vec<f64> = (0..channels)
            .flat_map(|c| {
                let plane = &planar[c * h * w..(c + 1) * h * w];
                let (mean, std) = stats[c];
                (0..out * out).map(move |o| {
                    let sample = |o: usize, size: usize| {
                        let f = ((o as f64 + 0.5) * size as f64 / out as f64 - 0.5).max(0.0);
                        let i0 = (f.floor() as usize).min(size - 1);
                        (i0, (i0 + 1).min(size - 1), f - i0 as f64)
                    };
                    let (y0, y1, wy) = sample(o / out, crop.h);
                    let (x0, x1, wx) = sample(o % out, crop.w);
                    let px = |y: usize, x: usize| plane[(crop.top + y) * w + crop.left + x] as f64;
                    let v = (px(y0, x0) * (1.0 - wx) + px(y0, x1) * wx) * (1.0 - wy)
                        + (px(y1, x0) * (1.0 - wx) + px(y1, x1) * wx) * wy;
                    (v / 255.0 - mean as f64) / std as f64
                })
            })
            .collect();
        for (layout, pixels) in [(false, &planar), (true, &interleaved)] {
            let image = Image {
                height: h,
                width: w,
                channels,
                interleaved: layout,
                pixels: std::borrow::Cow::Borrowed(pixels),
            };
            let mut got = vec![0f32; channels * out * out];
            resize_crop_normalised(&image, crop, out, &stats, &mut got);
            for (i, (g, e)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (*g as f64 - e).abs() < 1e-4,
                    "{crop:?} -> {out}, interleaved {layout}: value {i} is {g}, want {e}"
                );
            }
        }
    }
}

/// The official in1k_vith14_ep300.yaml with its keys and structure as they are
/// (root_path pointed at `root`), and its variants' differing values.
fn official_yaml(root: &Path, overrides: &[(&str, &str)]) -> String {
    let mut text = format!(
        "data:
  batch_size: 128
  color_jitter_strength: 0.0
  crop_scale:
  - 0.3
  - 1.0
  crop_size: 224
  image_folder: imagenet_full_size/061417/
  num_workers: 10
  pin_mem: true
  root_path: {}
  use_color_distortion: false
  use_gaussian_blur: false
  use_horizontal_flip: false
logging:
  folder: $replace_this_with_path_for_experiment_logs/vith14.224-bs.2048-ep.300/
  write_tag: jepa
mask:
  allow_overlap: false
  aspect_ratio:
  - 0.75
  - 1.5
  enc_mask_scale:
  - 0.85
  - 1.0
  min_keep: 10
  num_enc_masks: 1
  num_pred_masks: 4
  patch_size: 14
  pred_mask_scale:
  - 0.15
  - 0.2
meta:
  copy_data: false
  load_checkpoint: false
  model_name: vit_huge
  pred_depth: 12
  pred_emb_dim: 384
  read_checkpoint: null
  use_bfloat16: true
optimization:
  ema:
  - 0.996
  - 1.0
  epochs: 300
  final_lr: 1.0e-06
  final_weight_decay: 0.4
  ipe_scale: 1.0
  lr: 0.001
  start_lr: 0.0002
  warmup: 40
  weight_decay: 0.04
",
        root.display()
    );
    for (from, to) in overrides {
        assert!(text.contains(from), "{from}");
        text = text.replace(from, to);
    }
    text
}

/// (text to find, text to put there), or (key, expected JSON value).
type Pairs<'a> = &'a [(&'a str, &'a str)];

/// The official files map onto our configuration key by key: in1k_vith14_ep300,
/// in1k_vith16-448_ep300, in22k_vith14_ep66 (its values), and in22k_vitg16_ep44, whose
/// vit_giant. The keys with no effect here are listed; unknown keys
/// and settings we do not have are errors naming them.
#[test]
fn the_official_config_files_map_onto_ours() {
    let dir = temp_dir("official");
    let path = dir.join("in1k_vith14_ep300.yaml");
    std::fs::write(&path, official_yaml(Path::new("/data"), &[])).unwrap();
    // A base that differs from the official values in every key the file sets.
    let base = PretrainConfig {
        data: train::data::DataConfig {
            train_limit: 7,
            test_limit: 7,
            ..PretrainConfig::default().data
        },
        model: "vit_pico".into(),
        patch_size: 7,
        pred_embed_dim: 8,
        pred_depth: 1,
        batch_size: 3,
        epochs: 1,
        start_lr: 1.0,
        lr: 1.0,
        final_lr: 1.0,
        warmup_fraction: 0.5,
        weight_decay: 1.0,
        final_weight_decay: 1.0,
        ema: (0.5, 0.5),
        min_keep: 1,
        npred: 2,
        nenc: 2,
        enc_mask_scale: (0.5, 0.5),
        pred_mask_scale: (0.5, 0.5),
        aspect_ratio: (1.0, 1.0),
        allow_overlap: true,
        crop_scale: (0.5, 0.5),
        ..PretrainConfig::default()
    };
    let file = ConfigFile::read(&path).unwrap();
    let c = file.apply(&base).unwrap();
    let want = PretrainConfig {
        data: train::data::DataConfig {
            kind: "folder".into(),
            dir: "/data/imagenet_full_size/061417/".into(),
            image_size: 224,
            channels: 3,
            workers: 10,
            ..PretrainConfig::default().data
        },
        model: "vit_huge".into(),
        patch_size: 14,
        pred_embed_dim: 384,
        pred_depth: 12,
        batch_size: 128,
        epochs: 300,
        start_lr: 2e-4,
        lr: 1e-3,
        final_lr: 1e-6,
        warmup_fraction: 40.0 / 300.0,
        weight_decay: 0.04,
        final_weight_decay: 0.4,
        ema: (0.996, 1.0),
        min_keep: 10,
        npred: 4,
        nenc: 1,
        enc_mask_scale: (0.85, 1.0),
        pred_mask_scale: (0.15, 0.2),
        aspect_ratio: (0.75, 1.5),
        allow_overlap: false,
        crop_scale: (0.3, 1.0),
        precision: engine::Precision::Mixed,
        ..base.clone()
    };
    assert_eq!(want.differences(&c), Vec::<String>::new());
    c.validate().unwrap();
    let notes = file.notes.join("\n");
    for key in [
        "data.pin_mem",
        "logging.folder",
        "logging.write_tag",
        "meta.copy_data",
        "meta.use_bfloat16",
    ] {
        assert!(notes.contains(key), "{key} not noted: {notes}");
    }
    assert_eq!(file.out_dir, None);

    let variants: [(&str, Pairs, Pairs); 3] = [
        (
            "in1k_vith16-448_ep300",
            &[("batch_size: 128", "batch_size: 16"), ("crop_size: 224", "crop_size: 448"), ("patch_size: 14", "patch_size: 16"), ("folder: $replace_this_with_path_for_experiment_logs/vith14.224-bs.2048-ep.300/", "folder: /logs/vith16")],
            &[("batch_size", "16"), ("data.image_size", "448"), ("patch_size", "16")],
        ),
        (
            "in22k_vith14_ep66",
            &[("batch_size: 128", "batch_size: 32"), ("epochs: 300", "epochs: 66"), ("warmup: 40", "warmup: 3")],
            &[("batch_size", "32"), ("epochs", "66"), ("warmup_fraction", &format!("{}", 3.0 / 66.0))],
        ),
        (
            "in22k_vitg16_ep44",
            &[("model_name: vit_huge", "model_name: vit_giant"), ("pred_depth: 12", "pred_depth: 16"), ("epochs: 300", "epochs: 44"), ("warmup: 40", "warmup: 3")],
            &[("model", "\"vit_giant\""), ("pred_depth", "16"), ("epochs", "44")],
        ),
    ];
    for (name, edits, expected) in variants {
        let path = dir.join(format!("{name}.yaml"));
        std::fs::write(&path, official_yaml(Path::new("/data"), edits)).unwrap();
        let file = ConfigFile::read(&path).unwrap();
        let c = file.apply(&PretrainConfig::default()).unwrap();
        let value = serde_json::to_value(&c).unwrap();
        for (key, v) in expected {
            let mut at = &value;
            for part in key.split('.') {
                at = &at[part];
            }
            assert_eq!(at.to_string(), *v, "{name}: {key}");
        }
        if name == "in1k_vith16-448_ep300" {
            assert_eq!(file.out_dir.as_deref(), Some(Path::new("/logs/vith16")));
        }
        c.validate().unwrap();
    }

    let refused: [(&str, &str, &str); 6] = [
        (
            "  pin_mem: true\n",
            "  pin_mem: true\n  prefetch: 4\n",
            "data.prefetch",
        ),
        (
            "use_horizontal_flip: false",
            "use_horizontal_flip: true",
            "data.use_horizontal_flip",
        ),
        (
            "load_checkpoint: false",
            "load_checkpoint: true",
            "--resume",
        ),
        (
            "ipe_scale: 1.0",
            "ipe_scale: 1.25",
            "optimization.ipe_scale",
        ),
        ("warmup: 40", "warmup: 400", "optimization.warmup"),
        (
            "logging:\n",
            "schedule:\n  x: 1\nlogging:\n",
            "unknown section `schedule`",
        ),
    ];
    for (from, to, named) in refused {
        std::fs::write(&path, official_yaml(Path::new("/data"), &[(from, to)])).unwrap();
        let e = format!("{:#}", ConfigFile::read(&path).unwrap_err());
        assert!(e.contains(named) && e.contains(".yaml"), "{to}: {e}");
    }
    std::fs::write(
        &path,
        official_yaml(
            Path::new("$replace_this_with_absolute_path_to_your_datasets_directory"),
            &[],
        ),
    )
    .unwrap();
    let e = format!("{:#}", ConfigFile::read(&path).unwrap_err());
    assert!(
        e.contains("data.root_path") && e.contains("placeholder"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// An official YAML file, with root_path at a generated ImageNet-layout folder and a
/// small model, through the CLI: `--print-config` shows the run, `pretrain` runs and
/// checkpoints into its logging.folder, and `probe` evaluates the checkpoint on the
/// streamed val/ split.
#[test]
fn an_official_yaml_runs_checkpoints_and_probes_on_an_image_folder() {
    let dir = temp_dir("official_run");
    let root = dir.join("datasets");
    let folder = root.join("imagenet_full_size/061417");
    write_folder(&folder.join("train"), &["n01", "n02", "n03"], 32, 3);
    write_folder(&folder.join("val"), &["n01", "n02", "n03"], 8, 4);
    let out = dir.join("logs");
    let yaml = official_yaml(
        &root,
        &[
            ("batch_size: 128", "batch_size: 16"),
            ("crop_size: 224", "crop_size: 64"),
            ("num_workers: 10", "num_workers: 2"),
            ("patch_size: 14", "patch_size: 8"),
            ("min_keep: 10", "min_keep: 4"),
            ("model_name: vit_huge", "model_name: vit_femto"),
            ("pred_depth: 12", "pred_depth: 1"),
            ("pred_emb_dim: 384", "pred_emb_dim: 16"),
            ("epochs: 300", "epochs: 2"),
            ("warmup: 40", "warmup: 1"),
            (
                "$replace_this_with_path_for_experiment_logs/vith14.224-bs.2048-ep.300/",
                out.to_str().unwrap(),
            ),
        ],
    );
    let config = dir.join("in1k_small.yaml");
    std::fs::write(&config, yaml).unwrap();
    let config = config.to_str().unwrap();

    let shown = ijepa_stdout(&["pretrain", "--config", config, "--print-config"]);
    let shown: PretrainConfig = serde_json::from_str(&shown).unwrap();
    assert_eq!(
        (
            shown.model.as_str(),
            shown.data.image_size,
            shown.data.channels,
            shown.patch_size
        ),
        ("vit_femto", 64, 3, 8)
    );

    let (code, stderr) = ijepa(&["pretrain", "--config", config]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("meta.use_bfloat16") && stderr.contains("mixed precision"),
        "{stderr}"
    );
    let checkpoint = out.join("checkpoint.safetensors");
    assert!(checkpoint.exists(), "{stderr}");
    let table = ijepa_stdout(&["probe", checkpoint.to_str().unwrap()]);
    assert!(table.contains("I-JEPA target encoder"), "{table}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--print-config` shows the data geometry the run uses: Fashion-MNIST's 1x28x28.
#[test]
fn print_config_shows_the_geometry_of_idx_data() {
    let shown = ijepa_stdout(&["pretrain", "--preset", "fmnist", "--print-config"]);
    let shown: PretrainConfig = serde_json::from_str(&shown).unwrap();
    assert_eq!((shown.data.image_size, shown.data.channels), (28, 1));
}
