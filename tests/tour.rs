//! The tour's examples (docs/tour/), run as the reader runs them and held to what each
//! chapter states: the kernels agree with the CPU reference, the gradcheck passes, the
//! pool stops allocating, the golden step passes, and the step diagram in docs/tour/ is
//! the one the model draws today, and a mixed-precision step follows the f32 one.
//! `cargo test` builds every example before the tests run; chapter 11's pretraining run
//! is built but, taking minutes here, not run.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::runs::temp_dir;

/// Run a built example with `args`; its stdout, after checking it succeeded.
fn run_example(name: &str, args: &[&str]) -> String {
    let exe = std::env::current_exe().expect("the test's own path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>");
    let path = dir.join("examples").join(name);
    let out = Command::new(&path).args(args).output().unwrap_or_else(|e| {
        panic!(
            "cannot run {}: {e} (a whole `cargo test` builds the examples; with `--test tour` alone, `cargo build --examples` first)",
            path.display()
        )
    });
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{name} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The lines of `output` that contain `marker`.
fn lines_with<'a>(output: &'a str, marker: &str) -> Vec<&'a str> {
    output.lines().filter(|l| l.contains(marker)).collect()
}

/// The number that follows each `marker` in `output`.
fn numbers_after(output: &str, marker: &str) -> Vec<f64> {
    output
        .match_indices(marker)
        .map(|(i, _)| {
            let rest = output[i + marker.len()..].trim_start();
            let end = rest
                .find(|c: char| !(c.is_ascii_digit() || "+-.eE".contains(c)))
                .unwrap_or(rest.len());
            rest[..end]
                .trim_end_matches('.')
                .parse()
                .unwrap_or_else(|e| panic!("no number after `{marker}` in `{rest}`: {e}"))
        })
        .collect()
}

/// The only number after `marker`.
fn number_after(output: &str, marker: &str) -> f64 {
    let found = numbers_after(output, marker);
    assert_eq!(
        found.len(),
        1,
        "`{marker}` occurs {} times in:\n{output}",
        found.len()
    );
    found[0]
}

#[test]
fn chapter_01_a_kernel_by_hand_and_through_the_engine_agree_with_the_cpu() {
    let out = run_example("01_first_kernel", &[]);
    for err in numbers_after(&out, "max |gpu - cpu| = ") {
        assert!(err <= 1e-6, "{out}");
    }
    assert_eq!(numbers_after(&out, "max |gpu - cpu| = ").len(), 2);
    assert!(out.contains("recorded 2 dispatches and 0 submits"), "{out}");
    assert_eq!(number_after(&out, "reading the result submitted"), 1.0);
}

#[test]
fn chapter_02_the_pool_stops_allocating_and_readbacks_submit() {
    let out = run_example("02_tensors_and_pool", &[]);
    assert!(
        out.contains("after x.write, the reshaped handle reads [6.0, 5.0, 4.0, 3.0, 2.0, 1.0]"),
        "{out}"
    );
    assert!(
        number_after(&out, "pass 1: 4 layers created") > 0.0,
        "{out}"
    );
    assert_eq!(number_after(&out, "pass 2: 4 layers created"), 0.0, "{out}");
    assert_eq!(number_after(&out, "pass 3: 4 layers created"), 0.0, "{out}");
    let once = number_after(&out, "read once at the end:");
    let each = number_after(&out, "read after each:");
    assert!(once <= 2.0 && each >= 33.0, "{out}");
}

#[test]
fn chapter_03_the_tape_differentiates_and_the_gradcheck_passes() {
    let out = run_example("03_tape", &[]);
    assert!(out.contains("dy/dx = [2.0, -4.0, 1.0, 6.0]"), "{out}");
    assert_eq!(number_after(&out, "under no_grad:"), 0.0, "{out}");
    assert!(number_after(&out, "worst ratio") <= 1.0, "{out}");
    assert!(out.contains("(passes at <= 1): passed"), "{out}");
    assert!(number_after(&out, "max difference") <= 1e-5, "{out}");
}

#[test]
fn chapter_04_every_matmul_kernel_matches_the_cpu_on_ragged_sizes() {
    // 68 is no multiple of any tile (and a multiple of 4, so the vec4 kernels take it):
    // the edges of every kernel run.
    let out = run_example("04_matmul", &["68"]);
    let rows: Vec<&str> = out.lines().skip(2).collect();
    assert!(rows.len() >= 5, "{out}");
    for row in &rows {
        let err: f64 = row
            .split_whitespace()
            .nth_back(if row.contains("<-") { 4 } else { 1 })
            .unwrap()
            .parse()
            .unwrap();
        assert!(err <= 1e-4, "{row}");
    }
    assert_eq!(lines_with(&out, "<- the plan").len(), 1, "{out}");
}

#[test]
fn chapter_05_softmax_and_layernorm_numerics() {
    let out = run_example("05_softmax_layernorm", &[]);
    assert!(out.contains("naive f32:          [NaN, NaN, NaN]"), "{out}");
    for marker in ["forward max error", "backward max error", "dx", "dgamma"] {
        for err in numbers_after(&out, marker) {
            assert!(err <= 1e-5, "{marker}: {out}");
        }
    }
    let variance = &out[out.find("variance of").expect("the variance section")..];
    let kernel = number_after(variance, "kernel (two pass):");
    let reference = number_after(variance, "f64 reference:");
    assert!((kernel - reference).abs() <= 0.01 * reference, "{out}");
    let one_pass = number_after(variance, "one pass in f32:");
    assert!((one_pass - reference).abs() > reference, "{out}");
}

#[test]
fn chapter_06_fused_attention_matches_the_composed_path() {
    let out = run_example("06_attention", &[]);
    let errors: Vec<f64> = numbers_after(&out, "vs composed");
    assert!(errors.len() >= 4, "{out}");
    assert!(errors.iter().all(|&e| e <= 1e-5), "{out}");
    assert_eq!(lines_with(&out, "<- the plan").len(), 1, "{out}");
}

#[test]
fn chapter_07_patch_embedding_is_a_convolution_and_positions_are_sin_cos() {
    let out = run_example("07_vit", &[]);
    assert!(
        number_after(&out, "vs a direct convolution") <= 1e-5,
        "{out}"
    );
    assert_eq!(
        number_after(&out, "equal to VisionTransformer::forward:"),
        0.0,
        "{out}"
    );
    assert_eq!(number_after(&out, "equal along a column ("), 0.0, "{out}");
    assert_eq!(number_after(&out, "equal along a row ("), 0.0, "{out}");
    // The cosine map peaks at (3, 3) and falls towards the corners.
    let grid: Vec<Vec<f64>> = out
        .lines()
        .skip_while(|l| !l.starts_with("cosine"))
        .skip(1)
        .take(7)
        .map(|l| l.split_whitespace().map(|v| v.parse().unwrap()).collect())
        .collect();
    assert!((grid[3][3] - 1.0).abs() < 1e-6, "{out}");
    assert!(
        grid[0][0] < grid[1][1] && grid[1][1] < grid[2][2] && grid[2][2] < grid[3][3],
        "{out}"
    );
}

#[test]
fn chapter_08_contexts_avoid_targets_and_every_patch_can_be_a_target() {
    let out = run_example("08_masks", &[]);
    assert_eq!(number_after(&out, "images:"), 0.0, "{out}");
    let shares: Vec<Vec<f64>> = out
        .lines()
        .skip_while(|l| !l.starts_with("share of images"))
        .skip(1)
        .map(|l| l.split_whitespace().map(|v| v.parse().unwrap()).collect())
        .collect();
    assert_eq!(shares.len(), 7, "{out}");
    // The last row and column too: the official placement never reaches them.
    assert!(
        shares.iter().all(|row| row.iter().all(|&s| s > 0.0)),
        "{out}"
    );
}

#[test]
fn chapter_09_loss_gradients_adamw_and_ema_match_the_reference() {
    let out = run_example("09_predictor_loss_update", &[]);
    let loss = number_after(&out, "loss: smooth L1 (beta 1)");
    let reference = number_after(&out, "the CPU reference on the same tensors");
    assert!(
        (loss - reference).abs() <= 1e-5 * reference.abs().max(1.0),
        "{out}"
    );
    let trainable = number_after(&out, "gradients:");
    assert!(
        out.contains(&format!("{trainable} of {trainable} trainable")),
        "{out}"
    );
    assert!(out.contains(", 0 of "), "{out}");
    for err in numbers_after(&out, "max |kernel - reference|") {
        assert!(err <= 1e-6, "{out}");
    }
    assert!(number_after(&out, "it moved") > 0.0, "{out}");
}

#[test]
fn chapter_10_the_golden_step_passes() {
    let out = run_example("10_golden_step", &[]);
    assert!(out.contains("PASS: every group within tolerance"), "{out}");
}

#[test]
fn chapter_12_a_mixed_step_follows_the_f32_step_and_the_loss_scale_keeps_f16_normal() {
    let out = run_example("12_speed_and_precision", &[]);
    // Both steps were counted, and mixed precision holds less at its peak.
    let dispatches = numbers_after(&out, "batch 16:");
    assert_eq!(dispatches.len(), 2, "{out}");
    assert!(dispatches.iter().all(|&d| d > 0.0), "{out}");
    let peaks = numbers_after(&out, "backward");
    assert!(
        peaks[1] < peaks[0],
        "mixed peak {} against f32 {}: {out}",
        peaks[1],
        peaks[0]
    );
    // f16 operands move the loss and gradients, by about f16's rounding, not more.
    let loss = number_after(&out, "relative difference");
    assert!(loss < 1e-3, "{out}");
    let grads = number_after(&out, "relative L2");
    assert!(grads > 0.0 && grads < 1e-2, "{out}");
    // A GPU's plans run no CPU-only kernel.
    let gpu = &out[out.find("plans on a GPU:").expect("the GPU's plans")..];
    let gpu = &gpu[..gpu.find("loss:").unwrap()];
    assert!(!gpu.contains("Subgroup"), "{out}");
    assert_eq!(lines_with(gpu, "kernel").len(), 3, "{out}");
    // Unscaled, the backward's first gradient lies in f16's subnormals; scaled by
    // 2^16, every value is normal and rounds within f16's half step, 2^-11.
    let normal_share = numbers_after(&out, "below f16's smallest normal");
    assert_eq!(normal_share.len(), 2, "{out}");
    assert!(normal_share[0] > 50.0 && normal_share[1] == 0.0, "{out}");
    let errors = numbers_after(&out, "f16 rounding");
    assert!(errors[0] > 1e-2 && errors[1] <= 2f64.powi(-11), "{out}");
}

#[test]
fn the_step_diagram_in_the_tour_is_the_one_the_model_draws() {
    let dir = temp_dir("tour_diagram");
    let drawn = dir.join("step.svg");
    run_example("step_diagram", &[drawn.to_str().unwrap()]);
    let committed = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/tour/step.svg");
    assert!(
        std::fs::read(&drawn).unwrap() == std::fs::read(&committed).unwrap(),
        "docs/tour/step.svg is out of date: run `cargo run --release --example step_diagram`"
    );
}

/// Every relative link of the tour's pages resolves, and every `docs/tour/...` a source
/// file's module doc names exists: renaming a file or a chapter breaks this test, not
/// the reader's path.
#[test]
fn tour_links_and_source_backlinks_resolve() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let tour = root.join("docs/tour");
    let mut pages = 0;
    for entry in std::fs::read_dir(&tour).unwrap() {
        let page = entry.unwrap().path();
        if page.extension().is_none_or(|e| e != "md") {
            continue;
        }
        pages += 1;
        let text = std::fs::read_to_string(&page).unwrap();
        for (i, _) in text.match_indices("](") {
            let target = &text[i + 2..i + 2 + text[i + 2..].find(')').unwrap()];
            if target.starts_with("http") {
                continue;
            }
            let path = tour.join(target.split('#').next().unwrap());
            assert!(path.exists(), "{}: broken link {target}", page.display());
        }
    }
    assert_eq!(pages, 13, "the table of contents and twelve chapters");
    let mut backlinks = 0;
    for dir in ["engine/src", "model/src", "train/src"] {
        let mut stack = vec![root.join(dir)];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(d).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                for (i, _) in text.match_indices("docs/tour/") {
                    let name: String = text[i..]
                        .chars()
                        .take_while(|c| !c.is_whitespace() && *c != ',')
                        .collect();
                    let name = name.trim_end_matches('.');
                    assert!(root.join(name).exists(), "{}: names {name}", path.display());
                    backlinks += 1;
                }
            }
        }
    }
    assert!(backlinks >= 26, "{backlinks} source backlinks to the tour");
}
