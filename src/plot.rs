//! Pictures of runs, drawn with plotters and the DejaVu Sans font built into the binary:
//! the training curves of one or several runs (from their metrics.jsonl), and sampled
//! masks over real images with a legend.

use std::path::{Path, PathBuf};
use std::sync::Once;

use anyhow::{anyhow, bail, Context, Result};
use image::{Rgb, RgbImage};
use plotters::prelude::*;
use train::data::Dataset;
use train::multiblock::MaskBatch;
use train::pretrain::METRICS;

/// DejaVu Sans (licence: assets/DejaVuSans-LICENSE.txt), so that plots need no system
/// font.
const FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

fn register_font() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
            .map_err(|_| ())
            .expect("the built-in font parses");
    });
}

/// One step of a run's metrics.jsonl.
#[derive(Clone, Debug)]
pub struct Point {
    pub step: f64,
    pub loss: f64,
    pub lr: f64,
    pub wd: f64,
    pub momentum: f64,
    pub knn_top1: Option<f64>,
    pub target_std: Option<f64>,
    pub rankme: Option<f64>,
    pub context_patches: Option<f64>,
}

/// A run's curves: its name and its steps.
pub struct Run {
    pub name: String,
    pub points: Vec<Point>,
}

impl Run {
    /// The metrics of the run directory `dir`, named after the directory.
    pub fn read(dir: &Path) -> Result<Run> {
        let path = dir.join(METRICS);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "{} holds no readable {METRICS}: not the output directory of `ijepa pretrain`",
                dir.display()
            )
        })?;
        let mut points = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let v: serde_json::Value = serde_json::from_str(line)
                .with_context(|| format!("{}: line {} is not JSON", path.display(), n + 1))?;
            let number = |key: &str| {
                v[key].as_f64().with_context(|| {
                    format!("{}: line {} has no number `{key}`", path.display(), n + 1)
                })
            };
            points.push(Point {
                step: number("step")?,
                loss: number("loss")?,
                lr: number("lr")?,
                wd: number("wd")?,
                momentum: number("momentum")?,
                knn_top1: v["knn_top1"].as_f64(),
                target_std: v["target_std"].as_f64(),
                rankme: v["rankme"].as_f64(),
                context_patches: v["context_patches"].as_f64(),
            });
        }
        if points.is_empty() {
            bail!("{} is empty: the run has no step yet", path.display());
        }
        let name = dir.file_name().map_or_else(
            || dir.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        Ok(Run { name, points })
    }
}

/// The colour of the `i`-th run.
fn colour(i: usize) -> RGBColor {
    const COLOURS: [RGBColor; 6] = [
        RGBColor(31, 119, 180),
        RGBColor(214, 39, 40),
        RGBColor(44, 160, 44),
        RGBColor(148, 103, 189),
        RGBColor(255, 127, 14),
        RGBColor(23, 190, 207),
    ];
    COLOURS[i % COLOURS.len()]
}

/// One panel: a quantity of every run against the step.
struct Panel {
    title: &'static str,
    y_label: &'static str,
    value: fn(&Point) -> Option<f64>,
    log_scale: bool,
    /// Few points (per epoch): drawn as dots joined by lines.
    dots: bool,
}

const PANELS: [Panel; 8] = [
    Panel {
        title: "I-JEPA loss",
        y_label: "loss (log scale)",
        value: |p| Some(p.loss),
        log_scale: true,
        dots: false,
    },
    Panel {
        title: "k-NN top-1 of the target encoder",
        y_label: "top-1 (%)",
        value: |p| p.knn_top1,
        log_scale: false,
        dots: true,
    },
    Panel {
        title: "target-feature std (collapse: near 0)",
        y_label: "mean std over features",
        value: |p| p.target_std,
        log_scale: false,
        dots: true,
    },
    Panel {
        title: "RankMe of the target features (collapse: 1)",
        y_label: "effective rank",
        value: |p| p.rankme,
        log_scale: false,
        dots: true,
    },
    Panel {
        title: "context patches kept per mask",
        y_label: "patches",
        value: |p| p.context_patches,
        log_scale: false,
        dots: false,
    },
    Panel {
        title: "learning rate",
        y_label: "lr",
        value: |p| Some(p.lr),
        log_scale: false,
        dots: false,
    },
    Panel {
        title: "weight decay",
        y_label: "wd",
        value: |p| Some(p.wd),
        log_scale: false,
        dots: false,
    },
    Panel {
        title: "EMA momentum",
        y_label: "momentum",
        value: |p| Some(p.momentum),
        log_scale: false,
        dots: false,
    },
];

/// Draw a 2x4 grid of the training curves of `runs` (loss on a log scale, k-NN top-1,
/// target-feature std, RankMe, context patches per mask, learning rate, weight decay,
/// EMA momentum against the step),
/// each panel with a title, labelled axes with ticks, and a legend of the runs.
pub fn training_curves(path: &Path, runs: &[Run]) -> Result<()> {
    register_font();
    let (w, h) = (2000u32, 900u32);
    let mut buffer = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buffer, (w, h)).into_drawing_area();
        for (panel, area) in PANELS.iter().zip(root.split_evenly((2, 4))) {
            draw_panel(&area, panel, runs)
                .map_err(|e| anyhow!("drawing {} of {}: {e}", panel.title, path.display()))?;
        }
        root.present()
            .map_err(|e| anyhow!("drawing {}: {e}", path.display()))?;
    }
    let img = RgbImage::from_raw(w, h, buffer).expect("the buffer holds w x h RGB pixels");
    save_png(&img, path)
}

fn draw_panel(
    area: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    panel: &Panel,
    runs: &[Run],
) -> std::result::Result<(), Box<dyn std::error::Error>> {
    let series: Vec<Vec<(f64, f64)>> = runs
        .iter()
        .map(|r| {
            r.points
                .iter()
                .filter_map(|p| (panel.value)(p).map(|v| (p.step, v)))
                .filter(|(_, v)| v.is_finite() && (!panel.log_scale || *v > 0.0))
                .collect()
        })
        .collect();
    let all = || series.iter().flatten();
    let max_step = all().map(|p| p.0).fold(1.0, f64::max);
    let (mut lo, mut hi) = all().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    if lo > hi {
        (lo, hi) = (0.0, 1.0);
    }
    if hi - lo < 1e-12 * hi.abs().max(1.0) {
        (lo, hi) = if panel.log_scale {
            (lo / 2.0, hi * 2.0)
        } else {
            (lo - 0.5 * lo.abs().max(1e-3), hi + 0.5 * hi.abs().max(1e-3))
        };
    }
    let mut chart = ChartBuilder::on(area);
    chart
        .caption(panel.title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70);
    macro_rules! plot {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc("step")
                .y_desc(panel.y_label)
                .x_label_formatter(&|x| format!("{x:.0}"))
                .y_label_formatter(&|y| tick(*y))
                .label_style(("sans-serif", 13))
                .axis_desc_style(("sans-serif", 15))
                .draw()?;
            for (i, (run, points)) in runs.iter().zip(&series).enumerate() {
                let c = colour(i);
                chart
                    .draw_series(LineSeries::new(points.iter().copied(), c.stroke_width(2)))?
                    .label(run.name.as_str())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(3))
                    });
                if panel.dots {
                    chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, c.filled())))?;
                }
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .label_font(("sans-serif", 13))
                .position(SeriesLabelPosition::UpperRight)
                .draw()?;
        }};
    }
    if panel.log_scale {
        plot!(chart.build_cartesian_2d(0f64..max_step, (lo..hi).log_scale())?);
    } else {
        plot!(chart.build_cartesian_2d(0f64..max_step, lo..hi)?);
    }
    Ok(())
}

/// A tick label: up to four significant digits, in scientific notation when small or
/// large.
fn tick(v: f64) -> String {
    if v == 0.0 || (1e-3..1e5).contains(&v.abs()) {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        format!("{v:.1e}")
    }
}

/// Encode `img` as PNG and write it atomically: a failed write leaves no partial file.
fn save_png(img: &RgbImage, path: &Path) -> Result<()> {
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .with_context(|| format!("cannot encode {}", path.display()))?;
    model::weights::write_atomically(path, &png)
}

/// The tint of the context blocks and of each target block in [`masks`].
const CONTEXT: [u8; 3] = [70, 110, 240];
const TARGETS: [[u8; 3]; 6] = [
    [230, 60, 60],
    [60, 180, 60],
    [240, 170, 30],
    [180, 60, 200],
    [40, 200, 200],
    [120, 120, 0],
];

/// Images side by side, scaled up and numbered, with context patches tinted blue and
/// each target block filled with its own colour, above a legend.
pub fn masks(
    path: &Path,
    data: &Dataset,
    batch: &MaskBatch,
    patch: usize,
    count: usize,
) -> Result<()> {
    register_font();
    let scale = 8usize;
    let (ih, iw) = (data.height * scale, data.width * scale);
    let (gap, title, legend) = (8, 28, 44);
    let (w, h) = ((iw + gap) * count + gap, title + ih + gap + legend);
    let mut img = RgbImage::from_pixel(w.max(560) as u32, h as u32, Rgb([255, 255, 255]));
    let grid = data.width / patch;
    for b in 0..count {
        let pixels = data.eval_image(b)?;
        let mut tint = vec![None; grid * grid];
        for m in &batch.context {
            for &i in &m[b] {
                tint[i as usize] = Some(CONTEXT);
            }
        }
        for (j, m) in batch.target.iter().enumerate() {
            for &i in &m[b] {
                tint[i as usize] = Some(TARGETS[j % TARGETS.len()]);
            }
        }
        for y in 0..ih {
            for x in 0..iw {
                let v = pixels[(y / scale) * data.width + x / scale] as f64;
                let cell = (y / scale / patch) * grid + x / scale / patch;
                let c = match tint[cell] {
                    Some(t) => [0, 1, 2].map(|k| (0.55 * v + 0.45 * t[k] as f64) as u8),
                    None => [(v * 0.35) as u8; 3],
                };
                img.put_pixel(
                    (gap + b * (iw + gap) + x) as u32,
                    (title + y) as u32,
                    Rgb(c),
                );
            }
        }
    }
    let (w, h) = img.dimensions();
    {
        let root = BitMapBackend::with_buffer(&mut img, (w, h)).into_drawing_area();
        let font = ("sans-serif", 16).into_font().color(&BLACK);
        let draw = || -> std::result::Result<(), Box<dyn std::error::Error>> {
            for b in 0..count {
                let x = (gap + b * (iw + gap)) as i32;
                root.draw(&Text::new(format!("image {}", b + 1), (x, 6), font.clone()))?;
            }
            let mut x = gap as i32;
            let y = (title + ih + gap + 12) as i32;
            let entries = std::iter::once(("context".to_string(), CONTEXT)).chain(
                (0..batch.target.len())
                    .map(|j| (format!("target {}", j + 1), TARGETS[j % TARGETS.len()])),
            );
            for (label, [r, g, b]) in entries {
                root.draw(&Rectangle::new(
                    [(x, y), (x + 18, y + 18)],
                    RGBColor(r, g, b).filled(),
                ))?;
                root.draw(&Text::new(label.clone(), (x + 24, y + 1), font.clone()))?;
                x += 34 + 9 * label.len() as i32;
            }
            root.present()?;
            Ok(())
        };
        draw().map_err(|e| anyhow!("drawing {}: {e}", path.display()))?;
    }
    save_png(&img, path)
}

/// `ijepa plot`: the training curves of the run directories `runs` in one picture.
pub fn plot_runs(runs: &[PathBuf], out: &Path) -> Result<()> {
    let runs: Vec<Run> = runs.iter().map(|d| Run::read(d)).collect::<Result<_>>()?;
    training_curves(out, &runs)
}
