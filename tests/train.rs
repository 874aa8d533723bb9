//! Training: loaders on files the test writes, schedules against their closed forms,
//! gradient clipping against a host computation, exact resume, an end-to-end run on a
//! Fashion-MNIST subset, and bad input.

mod common;

use common::device;
use common::runs::{losses, temp_dir, tiny_config};
use train::checkpoint::CHECKPOINT;
use train::config::PretrainConfig;
use train::data::{load_cifar10_dir, load_idx_dir, load_image_folder, read_idx};
use train::pretrain::{Trainer, METRICS};
use train::schedule::Schedules;

fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        b.extend(d.to_be_bytes());
    }
    b.extend_from_slice(data);
    b
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

#[test]
fn idx_files_load_plain_and_gzipped_and_bad_ones_are_named() {
    let dir = temp_dir("idx");
    let pixels: Vec<u8> = (0..3 * 4 * 5).map(|i| i as u8).collect();
    std::fs::write(
        dir.join("train-images-idx3-ubyte.gz"),
        gzip(&idx_bytes(&[3, 4, 5], &pixels)),
    )
    .unwrap();
    std::fs::write(
        dir.join("train-labels-idx1-ubyte"),
        idx_bytes(&[3], &[2, 0, 1]),
    )
    .unwrap();
    std::fs::write(
        dir.join("t10k-images-idx3-ubyte"),
        idx_bytes(&[1, 4, 5], &pixels[..20]),
    )
    .unwrap();
    std::fs::write(dir.join("t10k-labels-idx1-ubyte"), idx_bytes(&[1], &[1])).unwrap();
    let s = load_idx_dir(&dir).unwrap();
    assert_eq!(
        (
            s.train.len(),
            s.train.height,
            s.train.width,
            s.train.classes
        ),
        (3, 4, 5, 3)
    );
    assert_eq!(*s.train.eval_image(1).unwrap(), pixels[20..40]);
    assert_eq!(s.train.labels, vec![2, 0, 1]);
    // Truncated: the header promises more than the file holds.
    std::fs::write(dir.join("bad"), &idx_bytes(&[3, 4, 5], &pixels)[..50]).unwrap();
    let e = read_idx(&dir.join("bad")).unwrap_err().to_string();
    assert!(e.contains("bad") && e.contains("[3, 4, 5]"), "{e}");
    // Corrupt gzip.
    std::fs::write(dir.join("bad.gz"), [0x1f, 0x8b, 1, 2, 3]).unwrap();
    let e = read_idx(&dir.join("bad.gz")).unwrap_err().to_string();
    assert!(e.contains("bad.gz") && e.contains("gzip"), "{e}");
    let e = load_idx_dir(&dir.join("nope")).err().unwrap().to_string();
    assert!(e.contains("nope") && e.contains("does not exist"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn cifar_batches_load_and_a_truncated_one_is_refused() {
    let dir = temp_dir("cifar");
    let record = |label: u8| {
        let mut r = vec![label];
        r.extend((0..3072).map(|i| (i % 251) as u8));
        r
    };
    for i in 1..=5 {
        std::fs::write(
            dir.join(format!("data_batch_{i}.bin")),
            [record(i), record(9)].concat(),
        )
        .unwrap();
    }
    std::fs::write(dir.join("test_batch.bin"), record(3)).unwrap();
    let s = load_cifar10_dir(&dir).unwrap();
    assert_eq!(
        (s.train.len(), s.train.channels, s.train.height),
        (10, 3, 32)
    );
    assert_eq!(s.train.labels[..4], [1, 9, 2, 9]);
    assert_eq!(s.test.eval_image(0).unwrap()[..3], [0, 1, 2]);
    std::fs::write(dir.join("test_batch.bin"), &record(3)[..1000]).unwrap();
    let e = load_cifar10_dir(&dir).err().unwrap().to_string();
    assert!(
        e.contains("test_batch.bin") && e.contains("1000 bytes"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// An image folder is indexed in class then name order; its images are decoded when
/// asked for, at their own size for training crops and resized and centre-cropped for
/// evaluation; a file that is not an image is an error naming it when read.
#[test]
fn image_folders_index_in_order_and_decode_on_demand() {
    let dir = temp_dir("folder");
    // Three classes of three images, each a flat colour that names it; one file in the
    // middle of the second class is not an image.
    let shade = |class: usize, i: usize| (20 + 70 * class + 20 * i) as u8;
    for (class, name) in ["cat", "dog", "fox"].iter().enumerate() {
        std::fs::create_dir_all(dir.join(name)).unwrap();
        for (i, file) in ["a.png", "c.png", "d.png"].iter().enumerate() {
            let s = shade(class, i);
            let img = image::RgbImage::from_pixel(12, 8, image::Rgb([s, s / 2, 10]));
            img.save(dir.join(name).join(file)).unwrap();
        }
    }
    std::fs::write(dir.join("dog").join("b.png"), b"not a png").unwrap();
    std::fs::write(dir.join("dog").join("notes.txt"), b"text").unwrap();
    let classes = train::data::folder_classes(&dir).unwrap();
    assert_eq!(classes, ["cat", "dog", "fox"]);
    let (data, report) = load_image_folder(&dir, &classes, 8, 3).unwrap();
    assert_eq!(
        (data.len(), data.classes, data.height, data.channels),
        (10, 3, 8, 3)
    );
    assert_eq!(data.labels, vec![0, 0, 0, 1, 1, 1, 1, 2, 2, 2]);
    assert!(report.warnings()[0].contains("notes.txt"), "{report:?}");
    let readable: Vec<usize> = (0..10).filter(|&k| k != 4).collect();
    for (n, &k) in readable.iter().enumerate() {
        let (class, i) = (n / 3, n % 3);
        let source = data.source(k).unwrap();
        assert_eq!((source.height, source.width), (8, 12));
        let image = data.eval_image(k).unwrap();
        // Planar RGB: the red plane, then green, then blue.
        assert_eq!(
            (image[0], image[64], image[128]),
            (shade(class, i), shade(class, i) / 2, 10),
            "image {k}"
        );
    }
    let e = format!("{:#}", data.eval_image(4).unwrap_err());
    assert!(e.contains("dog/b.png"), "{e}");
    assert!(format!("{:#}", data.source(4).err().unwrap()).contains("dog/b.png"));
    let (gray, _) = load_image_folder(&dir, &classes, 4, 1).unwrap();
    assert_eq!((gray.len(), gray.image_len()), (10, 16));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_batch_is_the_same_on_any_number_of_threads() {
    use train::data::Dataset;
    use train::loader::{epoch_order, make_batch_on_threads, LoaderConfig};
    use train::multiblock::{MaskCollator, MaskConfig};
    let (n, size) = (10, 12);
    let data = Dataset::in_memory(
        (3, size, size),
        (0..n * 3 * size * size)
            .map(|i| (i * 7919 % 251) as u8)
            .collect(),
        vec![0; n],
        1,
    )
    .unwrap();
    let config = LoaderConfig {
        batch: 7,
        slots: 0..7,
        image_size: 8,
        crop_scale: (0.3, 1.0),
        crop_ratio: (0.75, 4.0 / 3.0),
        seed: 3,
        stats: vec![(0.5, 0.25); 3],
        workers: 1,
    };
    let collator = MaskCollator::new(MaskConfig::official(14), 0).unwrap();
    let order = epoch_order(&data, config.seed, 0);
    let one = make_batch_on_threads(&data, &config, &collator, &order, 1, 1).unwrap();
    // Each image has its own crop, so the images differ.
    let len = 3 * 8 * 8;
    assert_ne!(one.images[..len], one.images[len..2 * len]);
    for threads in [2, 3, 7, 16] {
        let many = make_batch_on_threads(&data, &config, &collator, &order, 1, threads).unwrap();
        assert_eq!(many.images, one.images, "{threads} threads");
    }
}

/// scripts/fmnist-cpu-official.json, over which the small-scale study's rows and the
/// bench step beside torch_step.py run, restores the official EMA and target masks
/// (`PretrainConfig::default()`, the official settings) over the tuned CPU preset.
#[test]
fn the_official_masks_file_restores_the_default_ema_and_masks() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/fmnist-cpu-official.json");
    let preset = PretrainConfig::preset("fmnist-cpu").unwrap();
    let config = preset.overridden_by(&path).unwrap();
    let official = PretrainConfig::default();
    assert_ne!(
        preset.mask_config(7),
        official.mask_config(7),
        "the preset's own masks"
    );
    assert_eq!(config.ema, official.ema);
    assert_eq!(config.mask_config(7), official.mask_config(7));
    assert_eq!(config.model, "vit_pico", "the CPU preset's model stays");
}

#[test]
fn a_config_file_overrides_a_preset_key_by_key_and_names_unknown_keys() {
    let dir = temp_dir("config");
    let path = dir.join("over.json");
    std::fs::write(
        &path,
        r#"{"model": "vit_tiny", "batch_size": 32, "data": {"kind": "folder", "image_size": 64}}"#,
    )
    .unwrap();
    let base = PretrainConfig::preset("fmnist-cpu").unwrap();
    let config = base.overridden_by(&path).unwrap();
    assert_eq!((config.model.as_str(), config.batch_size), ("vit_tiny", 32));
    assert_eq!(
        (config.data.kind.as_str(), config.data.image_size),
        ("folder", 64)
    );
    // Keys the file leaves alone keep the preset's values, nested ones included.
    assert_eq!(config.data.train_limit, base.data.train_limit);
    assert_eq!(config.pred_depth, base.pred_depth);

    std::fs::write(&path, r#"{"data": {"imagesize": 64}}"#).unwrap();
    let e = format!("{:#}", base.overridden_by(&path).unwrap_err());
    assert!(e.contains("over.json") && e.contains("imagesize"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn schedules_follow_their_closed_forms() {
    let s = Schedules {
        total_steps: 100,
        warmup_steps: 10,
        start_lr: 2e-4,
        lr: 1e-3,
        final_lr: 1e-6,
        weight_decay: 0.04,
        final_weight_decay: 0.4,
        ema_start: 0.996,
        ema_end: 1.0,
    };
    let pi = std::f64::consts::PI;
    // Warm-up: the schedule advances before its first update, so update 0 uses 1/10.
    assert!((s.lr(0) - (2e-4 + 0.1 * 8e-4)).abs() < 1e-15);
    assert!((s.lr(8) - (2e-4 + 0.9 * 8e-4)).abs() < 1e-15);
    assert!((s.lr(9) - 1e-3).abs() < 1e-15, "peak right after warm-up");
    let at =
        |t: usize| 1e-6 + (1e-3 - 1e-6) * 0.5 * (1.0 + (pi * (t + 1 - 10) as f64 / 90.0).cos());
    for t in [20, 54, 99] {
        assert!((s.lr(t) - at(t)).abs() < 1e-15, "lr at {t}");
    }
    assert!((s.lr(99) - 1e-6).abs() < 1e-15);
    for t in [0, 49, 99] {
        let wd = 0.4 + (0.04 - 0.4) * 0.5 * (1.0 + (pi * (t + 1) as f64 / 100.0).cos());
        assert!((s.weight_decay(t) - wd).abs() < 1e-15, "wd at {t}");
    }
    assert!((s.momentum(0) - 0.996).abs() < 1e-15);
    assert!((s.momentum(50) - 0.998).abs() < 1e-15);
    assert!((s.momentum(100) - 1.0).abs() < 1e-15);
}

/// Clipping scales every gradient by max_norm / norm, norm taken over all parameters
/// together: the loss sum(w1 * c1) + sum(w2 * c2) has gradients c1 and c2 exactly, so
/// the norm and the clipped AdamW step are computed on the host from c1, c2 alone.
#[test]
fn gradient_clipping_uses_the_global_norm() {
    use engine::{cpu, ops, Tensor};
    let dev = device();
    let c1: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin()).collect();
    let c2: Vec<f32> = (0..12).map(|i| 1.0 + (i as f32 * 1.3).cos()).collect();
    let w1_init: Vec<f32> = (0..37).map(|i| 0.01 * i as f32).collect();
    let w2_init = vec![0.5f32; 12];
    let norm: f64 = c1
        .iter()
        .chain(&c2)
        .map(|&x| (x as f64).powi(2))
        .sum::<f64>()
        .sqrt();
    for max_norm in [0.25 * norm, 4.0 * norm] {
        let w1 = Tensor::from_slice(&dev, &[37], &w1_init)
            .unwrap()
            .requires_grad();
        let w2 = Tensor::from_slice(&dev, &[3, 4], &w2_init)
            .unwrap()
            .requires_grad();
        let params = vec![
            ("a.weight".to_string(), w1.clone()),
            ("b.weight".to_string(), w2.clone()),
        ];
        let mut optimizer = train::adamw::AdamWOptimizer::new(&[params]).unwrap();
        optimizer.max_grad_norm = Some(max_norm);
        let loss = ops::add(
            &ops::sum(&ops::mul(&w1, &Tensor::from_slice(&dev, &[37], &c1).unwrap()).unwrap())
                .unwrap(),
            &ops::sum(&ops::mul(&w2, &Tensor::from_slice(&dev, &[3, 4], &c2).unwrap()).unwrap())
                .unwrap(),
        )
        .unwrap();
        let grads = engine::backward(&loss).unwrap();
        let got_norm = optimizer.step(&grads, 1e-2, 0.1).unwrap().unwrap();
        assert!(
            (got_norm - norm).abs() < 1e-5 * norm,
            "norm {got_norm}, host {norm}"
        );
        let factor = (max_norm / (norm + 1e-6)).min(1.0) as f32;
        // A first AdamW step moves the weights by about lr * sign(g) whatever the
        // scale, so the moments, which carry the scale, are compared too.
        let moments = optimizer.moments();
        // w1 is 1-D, so it is in the group without weight decay.
        let cases = [(&w1, &w1_init, &c1, 0.0), (&w2, &w2_init, &c2, 0.1)];
        for (k, (w, init, c, wd)) in cases.into_iter().enumerate() {
            let g: Vec<f32> = c.iter().map(|x| x * factor).collect();
            let zeros = vec![0.0; c.len()];
            let (want_w, want_m, want_v) =
                cpu::adamw(init, &g, &zeros, &zeros, 1, 1e-2, 0.9, 0.999, 1e-8, wd);
            let (_, m, v) = moments[k];
            assert_eq!(moments[k].0, ["a.weight", "b.weight"][k]);
            for (what, got, want) in [
                ("weight", w.to_vec(), want_w),
                ("exp_avg", m.to_vec(), want_m),
                ("exp_avg_sq", v.to_vec(), want_v),
            ] {
                for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-7 + 1e-5 * b.abs(),
                        "max_norm {max_norm}: {what}[{i}] is {a}, want {b}"
                    );
                }
            }
        }
    }
}

/// The trainer's own step against a host computation: after `Trainer::step_on`, each
/// trainable parameter is torch's AdamW step (`cpu::adamw`) from its value and moments
/// before, with the gradient the step used and the schedules' closed-form learning rate
/// and weight decay at that step (decay for the official group only: not biases, not
/// 1-D tensors), and the target encoder is the EMA of the updated encoder with the
/// closed-form momentum. Checked in warm-up and in the cosine phase.
#[test]
fn the_trainer_step_is_adamw_then_ema_at_the_scheduled_values() {
    use engine::cpu;
    use std::f64::consts::PI;
    let dir = temp_dir("trainer_step");
    let config = tiny_config(320, 2);
    let mut t = Trainer::new(&device(), config.clone(), &dir).unwrap();
    // 320 images in batches of 16 for 2 epochs: 40 updates, the first 4 of warm-up.
    let (total, warmup) = (40.0, 4.0);
    let lr = |s: usize| {
        let s = (s + 1) as f64;
        if s < warmup {
            config.start_lr + s / warmup * (config.lr - config.start_lr)
        } else {
            let progress = (s - warmup) / (total - warmup);
            config.final_lr + (config.lr - config.final_lr) * 0.5 * (1.0 + (PI * progress).cos())
        }
    };
    let wd = |s: usize| {
        let progress = (s + 1) as f64 / total;
        config.final_weight_decay
            + (config.weight_decay - config.final_weight_decay)
                * 0.5
                * (1.0 + (PI * progress).cos())
    };
    let momentum = |s: usize| config.ema.0 + s as f64 * (config.ema.1 - config.ema.0) / total;
    let images = train::synthetic::synthetic(&device(), &[16, 1, 28, 28]).unwrap();
    // The schedules follow the trainer's step, set here to land in warm-up and in the
    // cosine phase; AdamW's bias correction follows the optimizer's own count of updates.
    for step in [0, 1, 25] {
        t.step = step;
        let m = t.collator.sample(step as u64, 16).unwrap();
        let masks = model::Masks::new(&device(), &m.context, &m.target, 49).unwrap();
        let snapshot = |params: &[(String, engine::Tensor)]| -> Vec<Vec<f32>> {
            params.iter().map(|(_, p)| p.to_vec()).collect()
        };
        let trainable = t.state.model.trainable_params();
        let before = snapshot(&trainable);
        let moments: std::collections::HashMap<String, (Vec<f32>, Vec<f32>)> = t
            .state
            .optimizer
            .moments()
            .iter()
            .map(|(name, m, v)| (name.to_string(), (m.to_vec(), v.to_vec())))
            .collect();
        let target_before = snapshot(&t.state.model.target_params());
        let result = t.step_on(&images, &masks).unwrap();
        assert_eq!(t.step, step + 1);
        let count = t.state.optimizer.step as i32;
        for (k, (name, p)) in trainable.iter().enumerate() {
            let decays = !name.contains("bias") && p.shape().len() != 1;
            let grad = result.grads.get(p).unwrap().to_vec();
            let (want, _, _) = cpu::adamw(
                &before[k],
                &grad,
                &moments[name].0,
                &moments[name].1,
                count,
                lr(step),
                0.9,
                0.999,
                1e-8,
                if decays { wd(step) } else { 0.0 },
            );
            common::assert_close(
                &format!("step {step}: {name}"),
                &p.to_vec(),
                &want,
                1e-7,
                1e-5,
            );
        }
        let encoder = t.state.model.encoder_params();
        for (k, (name, target)) in t.state.model.target_params().iter().enumerate() {
            let want = cpu::ema(&target_before[k], &encoder[k].1.to_vec(), momentum(step));
            common::assert_close(
                &format!("step {step}: target {name}"),
                &target.to_vec(),
                &want,
                1e-7,
                1e-6,
            );
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A run cut at step 25 whose last checkpoint is of step 20 (as after a kill, with a
/// line cut short at the end of the log) resumes from 20 to the same losses as a run
/// that was never cut, and its log holds each step once.
#[test]
fn resume_continues_exactly() {
    let (a, b) = (temp_dir("resume_a"), temp_dir("resume_b"));
    let config = tiny_config(320, 2);
    let mut straight = Trainer::new(&device(), config.clone(), &a).unwrap();
    straight.run(30, |_| {}).unwrap();
    let mut first = Trainer::new(&device(), config.clone(), &b).unwrap();
    first.run(20, |_| {}).unwrap();
    let at_20 = std::fs::read(b.join(CHECKPOINT)).unwrap();
    first.run(25, |_| {}).unwrap();
    drop(first);
    std::fs::write(b.join(CHECKPOINT), at_20).unwrap();
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(b.join(METRICS))
        .unwrap();
    std::io::Write::write_all(&mut log, br#"{"step":26,"epo"#).unwrap();
    let mut resumed = Trainer::new(&device(), config, &b).unwrap();
    resumed.resume(&b.join(CHECKPOINT)).unwrap();
    assert_eq!(resumed.step, 20);
    resumed.run(30, |_| {}).unwrap();
    let (la, lb) = (losses(&a), losses(&b));
    assert_eq!(la.len(), 30);
    assert_eq!(lb.len(), 30);
    for ((sa, x), (sb, y)) in la.iter().zip(&lb) {
        assert_eq!(sa, sb);
        assert_eq!(
            x.to_bits(),
            y.to_bits(),
            "step {sa}: {x} straight vs {y} resumed"
        );
    }
    std::fs::remove_dir_all(&a).unwrap();
    std::fs::remove_dir_all(&b).unwrap();
}

#[test]
fn end_to_end_run_lowers_the_loss_keeps_features_alive_and_probes() {
    let dir = temp_dir("e2e");
    // 800 images, 16 per batch, 4 epochs: 200 steps.
    let mut t = Trainer::new(&device(), tiny_config(800, 4), &dir).unwrap();
    let mut stds = Vec::new();
    let mut knn = Vec::new();
    t.run(usize::MAX, |m| {
        stds.extend(m.target_std);
        knn.extend(m.knn_top1);
    })
    .unwrap();
    let l = losses(&dir);
    assert_eq!(l.len(), 200);
    let mean = |s: &[(usize, f32)]| s.iter().map(|x| x.1 as f64).sum::<f64>() / s.len() as f64;
    let (early, late) = (mean(&l[..20]), mean(&l[180..]));
    assert!(
        late < 0.5 * early,
        "loss did not go down: first 20 steps {early}, last 20 {late}"
    );
    assert!(
        stds.iter().all(|&s| s > 0.05),
        "target features collapsed: stds {stds:?}"
    );
    assert_eq!(knn.len(), 4, "one k-NN per epoch");
    assert!(dir.join("checkpoint.safetensors").exists());
    let results = train::probe::probe_checkpoint(
        &device(),
        &dir.join(CHECKPOINT),
        &Default::default(),
        None,
        |_| {},
    )
    .unwrap();
    assert_eq!(results.len(), 3);
    // Raw pixels of Fashion-MNIST are linearly separable far above chance (10%).
    assert!(results[0].all_labels > 50.0, "{results:?}");
    for r in &results {
        assert!(r.all_labels > 20.0 && r.knn > 20.0, "{r:?}");
        // The 1% probe on each balanced split.
        let splits = &r.one_percent_splits;
        assert_eq!(splits.len() as u64, train::probe::LOW_SHOT_SPLITS, "{r:?}");
    }
    // Other seeds draw other images (here one per class), so other accuracies.
    let pixels = &results[0].one_percent_splits;
    assert!(pixels.iter().any(|&a| a != pixels[0]), "{pixels:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `init_from` (`pretrain --init`) starts from exactly the file's weights, with the
/// optimizer fresh and the step at 0; a file of another architecture is refused, naming
/// what does not fit.
#[test]
fn init_starts_from_the_given_weights_with_a_fresh_optimizer() {
    let (a, b, c) = (temp_dir("init_a"), temp_dir("init_b"), temp_dir("init_c"));
    let mut first = Trainer::new(&device(), tiny_config(320, 1), &a).unwrap();
    first.run(10, |_| {}).unwrap();
    let want: Vec<Vec<f32>> = first
        .state
        .model
        .named_params()
        .iter()
        .map(|(_, t)| t.to_vec())
        .collect();
    drop(first);
    // Another seed: another initialisation, which the file's weights replace.
    let mut config = tiny_config(320, 1);
    config.seed = 9;
    let mut t = Trainer::new(&device(), config, &b).unwrap();
    t.init_from(&a.join(CHECKPOINT)).unwrap();
    for ((name, p), w) in t.state.model.named_params().iter().zip(&want) {
        assert!(p.to_vec() == *w, "{name} is not the file's");
    }
    assert_eq!((t.step, t.state.optimizer.step), (0, 0));
    for (name, m, v) in t.state.optimizer.moments() {
        assert!(
            m.to_vec().iter().chain(&v.to_vec()).all(|&x| x == 0.0),
            "{name}: moments not fresh"
        );
    }
    let mut other = tiny_config(320, 1);
    other.pred_embed_dim = 32;
    let mut t = Trainer::new(&device(), other, &c).unwrap();
    let e = t.init_from(&a.join(CHECKPOINT)).unwrap_err().to_string();
    assert!(e.contains("does not fit") && e.contains("predictor"), "{e}");
    for d in [a, b, c] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

/// `ijepa embed` writes the features the probe evaluates: the same as `probe
/// --save-features`, bit for bit, with the data set's labels; the context encoder's
/// are others of the same shape.
#[test]
fn embed_writes_the_features_the_probe_uses() {
    use common::runs::ijepa_stdout;
    let dir = temp_dir("embed");
    let mut t = Trainer::new(&device(), tiny_config(320, 1), &dir).unwrap();
    t.run(10, |_| {}).unwrap();
    let labels = (t.splits.train.labels.clone(), t.splits.test.labels.clone());
    drop(t);
    let checkpoint = dir.join(CHECKPOINT);
    let checkpoint = checkpoint.to_str().unwrap();
    let files = ["embed", "probe", "context"].map(|n| dir.join(format!("{n}.safetensors")));
    let path = |i: usize| files[i].to_str().unwrap().to_string();
    ijepa_stdout(&["embed", checkpoint, "--out", &path(0)]);
    ijepa_stdout(&["probe", checkpoint, "--save-features", &path(1)]);
    ijepa_stdout(&[
        "embed",
        checkpoint,
        "--out",
        &path(2),
        "--encoder",
        "context",
    ]);
    let read = |i: usize| {
        let bytes = std::fs::read(&files[i]).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut out = Vec::new();
        for split in ["train", "test"] {
            let f = st.tensor(&format!("{split}.features")).unwrap();
            let l = st.tensor(&format!("{split}.labels")).unwrap();
            assert_eq!(l.dtype(), safetensors::Dtype::I64);
            let labels: Vec<u32> = l
                .data()
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u32)
                .collect();
            out.push((f.shape().to_vec(), f.data().to_vec(), labels));
        }
        out
    };
    let (embed, probe, context) = (read(0), read(1), read(2));
    assert_eq!(embed[0].0, vec![320, 32]);
    assert_eq!(embed[1].0, vec![200, 32]);
    assert_eq!((&embed[0].2, &embed[1].2), (&labels.0, &labels.1));
    assert!(embed == probe, "embed and probe --save-features differ");
    assert_eq!(context[0].0, embed[0].0);
    assert!(
        context[0].1 != embed[0].1,
        "the context encoder gave the target's features"
    );

    // Both blocks' means side by side, on the first 100 and 50 images: the last block's
    // half of each row is the last-layer feature (up to the summation order of batches
    // of another size).
    ijepa_stdout(&[
        "embed",
        checkpoint,
        "--out",
        &path(2),
        "--layers",
        "2",
        "--train-limit",
        "100",
        "--test-limit",
        "50",
    ]);
    let two = read(2);
    assert_eq!(
        (two[0].0.clone(), two[1].0.clone()),
        (vec![100, 64], vec![50, 64])
    );
    let floats = |b: &[u8]| -> Vec<f32> {
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    };
    for (split, rows) in [(0, 100), (1, 50)] {
        let (two, one) = (floats(&two[split].1), floats(&embed[split].1));
        let last: Vec<f32> = (0..rows)
            .flat_map(|r| two[r * 64 + 32..(r + 1) * 64].to_vec())
            .collect();
        common::assert_close(
            &format!("split {split}: the second block's half"),
            &last,
            &one[..rows * 32],
            1e-5,
            1e-4,
        );
    }
    let (code, stderr) =
        common::runs::ijepa(&["embed", checkpoint, "--out", &path(2), "--layers", "3"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("2 blocks") && stderr.contains("last 3"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// RankMe against its closed form: features whose singular values are known (rows of a
/// scaled identity, then turned by a random orthogonal matrix, which keeps them) give
/// exp of the entropy of those values normalised; equal values give the width, one
/// direction gives 1.
#[test]
fn rankme_is_the_effective_rank_of_the_singular_values() {
    use train::eval::rankme;
    let d = 6;
    let closed_form = |s: &[f64]| {
        let total: f64 = s.iter().sum();
        let h: f64 = s
            .iter()
            .filter(|&&v| v > 0.0)
            .map(|v| -(v / total) * (v / total).ln())
            .sum();
        h.exp()
    };
    // A random orthogonal matrix: Gram-Schmidt on random columns.
    let mut rng = common::rng(4);
    let mut q: Vec<Vec<f64>> = Vec::new();
    while q.len() < d {
        let mut v: Vec<f64> = common::random(&mut rng, d)
            .iter()
            .map(|&x| x as f64)
            .collect();
        for u in &q {
            let dot: f64 = v.iter().zip(u).map(|(a, b)| a * b).sum();
            v.iter_mut().zip(u).for_each(|(a, b)| *a -= dot * b);
        }
        let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt();
        q.push(v.iter().map(|a| a / norm).collect());
    }
    for s in [
        vec![3.0, 2.0, 1.0, 0.5, 0.0, 0.0],
        vec![1.0; 6],
        vec![5.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    ] {
        // 9 rows: diag(s) then zeros; times Q^T.
        let mut x = vec![0f32; 9 * d];
        for i in 0..d {
            for j in 0..d {
                x[i * d + j] = (s[i] * q[j][i]) as f32;
            }
        }
        let got = rankme(&x, d);
        let want = closed_form(&s);
        assert!(
            (got - want).abs() < 1e-4 * want,
            "s {s:?}: RankMe {got}, want {want}"
        );
    }
    assert!((rankme(&[1.0; 12], 6) - 1.0).abs() < 1e-6);
}

/// `n` points around `classes` fixed centres in `cols` dimensions, overlapping enough
/// that no classifier is perfect, with noise drawn from `seed`: features [n, cols] and
/// labels [n].
fn clustered(seed: u64, n: usize, cols: usize, classes: usize) -> (Vec<f32>, Vec<u32>) {
    let centres = common::random(&mut common::rng(10), classes * cols);
    let mut rng = common::rng(seed);
    let mut x = Vec::with_capacity(n * cols);
    let mut y = Vec::with_capacity(n);
    for i in 0..n {
        let class = i % classes;
        let noise = common::random(&mut rng, cols);
        x.extend((0..cols).map(|j| centres[class * cols + j] + 1.2 * noise[j]));
        y.push(class as u32);
    }
    (x, y)
}

/// The gradient of the probe's objective, mean cross-entropy + l2/2 |W|^2, in f64 on
/// the host: [dW (classes x cols), db (classes)].
fn probe_objective_gradient(
    w: &[f64],
    b: &[f64],
    x: &[f32],
    y: &[u32],
    cols: usize,
    l2: f64,
) -> Vec<f64> {
    let classes = b.len();
    let rows = y.len() as f64;
    let mut grad = vec![0.0; classes * cols + classes];
    for (row, &label) in x.chunks(cols).zip(y) {
        let logits: Vec<f64> = (0..classes)
            .map(|c| {
                b[c] + (0..cols)
                    .map(|j| w[c * cols + j] * row[j] as f64)
                    .sum::<f64>()
            })
            .collect();
        let top = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let total: f64 = logits.iter().map(|l| (l - top).exp()).sum();
        for c in 0..classes {
            let d = (logits[c] - top).exp() / total - f64::from(c as u32 == label);
            for j in 0..cols {
                grad[c * cols + j] += d * row[j] as f64 / rows;
            }
            grad[classes * cols + c] += d / rows;
        }
    }
    for (g, wv) in grad.iter_mut().zip(w) {
        *g += l2 * wv;
    }
    grad
}

/// The linear probe is a strongly convex problem (l2 > 0), so its answer is checked by
/// the optimality condition: the objective's gradient, computed independently on the
/// host in f64, vanishes at the weights `train_logistic` returns, although the data
/// reach it in three chunks.
#[test]
fn the_linear_probe_stops_where_its_objective_is_flat() {
    use train::eval::{linear_accuracy, train_logistic};
    let device = common::small_binding_device();
    let (cols, classes, l2) = (6, 3, 1e-2);
    let (x, y) = clustered(11, 150, cols, classes);
    let zero = probe_objective_gradient(
        &vec![0.0; classes * cols],
        &vec![0.0; classes],
        &x,
        &y,
        cols,
        l2,
    );
    let (w, b) = train_logistic(&device, &x, &y, cols, classes, l2, 200).unwrap();
    let to_f64 = |v: &[f32]| v.iter().map(|&a| a as f64).collect::<Vec<_>>();
    let at_answer = probe_objective_gradient(&to_f64(&w), &to_f64(&b), &x, &y, cols, l2);
    let norm = |g: &[f64]| g.iter().map(|v| v * v).sum::<f64>().sqrt();
    assert!(
        norm(&at_answer) < 1e-4 * norm(&zero),
        "gradient norm {:e} at the probe's answer, {:e} at zero",
        norm(&at_answer),
        norm(&zero)
    );
    // linear_accuracy against a count made here, in f64: no row may be so near a tie
    // between its two best classes that f32 could order them otherwise.
    let correct = x
        .chunks(cols)
        .zip(&y)
        .filter(|(row, &label)| {
            let score = |c: usize| {
                b[c] as f64
                    + (0..cols)
                        .map(|j| (w[c * cols + j] * row[j]) as f64)
                        .sum::<f64>()
            };
            let mut scores: Vec<f64> = (0..classes).map(score).collect();
            let labelled = scores[label as usize];
            scores.sort_by(|p, q| q.total_cmp(p));
            assert!(
                scores[0] - scores[1] > 1e-4,
                "a near tie: choose another seed"
            );
            labelled == scores[0]
        })
        .count();
    let accuracy = linear_accuracy(&w, &b, &x, &y, cols);
    assert_eq!(accuracy, 100.0 * correct as f64 / y.len() as f64);
    assert!(
        accuracy > 50.0 && accuracy < 100.0,
        "accuracy {accuracy}: the clusters should be separable in part"
    );
}

/// k-NN against a brute-force count in f64 on the host: cosine similarities, the k
/// nearest training rows, votes weighted by exp(similarity / 0.07); the queries go to
/// the GPU in chunks of 6 rows.
#[test]
fn knn_accuracy_matches_a_brute_force_count() {
    use train::eval::knn_accuracy;
    let device = common::small_binding_device();
    let (cols, classes, k) = (4, 4, 3);
    let (train, train_y) = clustered(12, 120, cols, classes);
    let (test, test_y) = clustered(13, 90, cols, classes);
    let unit = |r: &[f32]| {
        let norm = r.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
        r.iter().map(|&v| v as f64 / norm).collect::<Vec<_>>()
    };
    let train_units: Vec<Vec<f64>> = train.chunks(cols).map(unit).collect();
    let mut correct = 0;
    for (query, &label) in test.chunks(cols).map(unit).zip(&test_y) {
        let mut sims: Vec<(f64, usize)> = train_units
            .iter()
            .enumerate()
            .map(|(i, t)| (t.iter().zip(&query).map(|(a, b)| a * b).sum(), i))
            .collect();
        sims.sort_by(|a, b| b.0.total_cmp(&a.0));
        // A near tie at the k-th neighbour could go either way in f32.
        assert!(sims[k - 1].0 - sims[k].0 > 1e-5, "choose another seed");
        let mut votes = vec![0.0; classes];
        for &(s, i) in &sims[..k] {
            votes[train_y[i] as usize] += (s / 0.07).exp();
        }
        let best = (0..classes)
            .max_by(|&a, &b| votes[a].total_cmp(&votes[b]))
            .unwrap();
        let mut sorted = votes.clone();
        sorted.sort_by(|p, q| q.total_cmp(p));
        assert!(
            sorted[0] - sorted[1] > 1e-4 * sorted[0],
            "a near tie of votes: choose another seed"
        );
        correct += usize::from(best as u32 == label);
    }
    let want = 100.0 * correct as f64 / test_y.len() as f64;
    let got = knn_accuracy(
        &device,
        (&train, &train_y),
        (&test, &test_y),
        cols,
        classes,
        k,
    )
    .unwrap();
    assert_eq!(got, want);
    assert!(want > 30.0 && want < 100.0, "accuracy {want}");
}
