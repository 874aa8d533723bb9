//! `ijepa plot` and `ijepa masks`: PNGs of the expected size with each run's colour and
//! each legend entry drawn, and run directories without metrics refused by name.

mod common;

use std::path::Path;

use common::runs::{ijepa, ijepa_stdout, temp_dir};

/// A metrics.jsonl of `steps` steps whose loss falls from `start`, with a k-NN top-1
/// every 10 steps.
fn write_metrics(dir: &Path, steps: usize, start: f64) {
    std::fs::create_dir_all(dir).unwrap();
    let lines: Vec<String> = (1..=steps)
        .map(|s| {
            let knn = if s % 10 == 0 {
                format!(r#","knn_top1":{}"#, 30.0 + s as f64)
            } else {
                String::new()
            };
            format!(
                r#"{{"step":{s},"epoch":0,"loss":{},"lr":{},"wd":0.04,"momentum":0.996,"images_per_s":1.0,"context_patches":9,"target_patches":9,"target_std":0.3{knn}}}"#,
                start / s as f64,
                1e-3 * s as f64 / steps as f64
            )
        })
        .collect();
    std::fs::write(dir.join("metrics.jsonl"), lines.join("\n") + "\n").unwrap();
}

/// Whether `png` holds a pixel of exactly `rgb`.
fn has_colour(png: &Path, rgb: [u8; 3]) -> bool {
    let img = image::open(png).unwrap().to_rgb8();
    img.pixels().any(|p| p.0 == rgb)
}

/// One run and two runs give 2000x900 pictures (2x4 panels); the second run's colour (red) is drawn
/// only when there is a second run.
#[test]
fn plot_draws_one_or_several_runs() {
    let dir = temp_dir("plot");
    write_metrics(&dir.join("a"), 40, 0.5);
    write_metrics(&dir.join("b"), 25, 0.8);
    let (one, two) = (dir.join("one.png"), dir.join("two.png"));
    let arg = |p: &Path| p.to_str().unwrap().to_string();
    ijepa_stdout(&["plot", &arg(&dir.join("a")), "--out", &arg(&one)]);
    ijepa_stdout(&[
        "plot",
        &arg(&dir.join("a")),
        &arg(&dir.join("b")),
        "--out",
        &arg(&two),
    ]);
    for png in [&one, &two] {
        assert_eq!(image::image_dimensions(png).unwrap(), (2000, 900));
    }
    let (blue, red) = ([31, 119, 180], [214, 39, 40]);
    assert!(has_colour(&one, blue) && !has_colour(&one, red));
    assert!(has_colour(&two, blue) && has_colour(&two, red));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A directory without metrics.jsonl, an empty one and a line that is not JSON are
/// errors naming the file or directory.
#[test]
fn plot_refuses_a_directory_without_metrics() {
    let dir = temp_dir("plot_bad");
    let out = dir.join("x.png");
    let (out, run) = (out.to_str().unwrap(), dir.join("run"));
    std::fs::create_dir_all(&run).unwrap();
    let run_arg = run.to_str().unwrap();
    let (code, stderr) = ijepa(&["plot", run_arg, "--out", out]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(run_arg) && stderr.contains("metrics.jsonl"),
        "{stderr}"
    );
    std::fs::write(run.join("metrics.jsonl"), "").unwrap();
    let (_, stderr) = ijepa(&["plot", run_arg, "--out", out]);
    assert!(stderr.contains("is empty"), "{stderr}");
    std::fs::write(run.join("metrics.jsonl"), "{\"step\": 1,\n").unwrap();
    let (_, stderr) = ijepa(&["plot", run_arg, "--out", out]);
    assert!(stderr.contains("line 1"), "{stderr}");
    assert!(!Path::new(out).exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `ijepa masks` draws the images with a legend: the context colour and one colour per
/// target block appear, in the legend's squares at least.
#[test]
fn masks_draws_a_legend() {
    let dir = temp_dir("masks");
    let out = dir.join("m.png");
    ijepa_stdout(&["masks", "--count", "3", "--out", out.to_str().unwrap()]);
    for rgb in [
        [70, 110, 240],
        [230, 60, 60],
        [60, 180, 60],
        [240, 170, 30],
        [180, 60, 200],
    ] {
        assert!(has_colour(&out, rgb), "{rgb:?} missing");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
