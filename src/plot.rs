//! PNG pictures without a plotting library: the loss (and k-NN) curve of a run and
//! sampled masks over real images. Numbers are drawn with a 3x5 pixel font.

use std::path::Path;

use anyhow::{Context, Result};
use image::{Rgb, RgbImage};
use train::data::Dataset;
use train::multiblock::MaskBatch;

const GLYPHS: &str = "0123456789.%-e";
/// 3x5 bitmaps, one row per 3 bits, for the characters of GLYPHS.
const FONT: [[u8; 5]; 14] = [
    [7, 5, 5, 5, 7],
    [2, 6, 2, 2, 7],
    [7, 1, 7, 4, 7],
    [7, 1, 7, 1, 7],
    [5, 5, 7, 1, 1],
    [7, 4, 7, 1, 7],
    [7, 4, 7, 5, 7],
    [7, 1, 1, 1, 1],
    [7, 5, 7, 5, 7],
    [7, 5, 7, 1, 7],
    [0, 0, 0, 0, 2],
    [5, 1, 2, 4, 5],
    [0, 0, 7, 0, 0],
    [0, 7, 5, 6, 7],
];

fn text(img: &mut RgbImage, x: i64, y: i64, s: &str, scale: i64, color: Rgb<u8>) {
    for (k, ch) in s.chars().enumerate() {
        let Some(g) = GLYPHS.find(ch) else { continue };
        for (row, bits) in FONT[g].iter().enumerate() {
            for col in 0..3 {
                if bits >> (2 - col) & 1 == 1 {
                    for dy in 0..scale {
                        for dx in 0..scale {
                            put(
                                img,
                                x + (k as i64 * 4 + col) * scale + dx,
                                y + row as i64 * scale + dy,
                                color,
                            );
                        }
                    }
                }
            }
        }
    }
}

fn put(img: &mut RgbImage, x: i64, y: i64, color: Rgb<u8>) {
    if x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height() {
        img.put_pixel(x as u32, y as u32, color);
    }
}

fn line(img: &mut RgbImage, (x0, y0): (f64, f64), (x1, y1): (f64, f64), color: Rgb<u8>) {
    let n = ((x1 - x0).abs().max((y1 - y0).abs()) as usize).max(1);
    for i in 0..=n {
        let t = i as f64 / n as f64;
        let (x, y) = (x0 + t * (x1 - x0), y0 + t * (y1 - y0));
        put(img, x as i64, y as i64, color);
        put(img, x as i64, y as i64 + 1, color);
    }
}

/// Encode `img` as PNG and write it atomically: a failed write leaves no partial file.
fn save_png(img: &RgbImage, path: &Path) -> Result<()> {
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .with_context(|| format!("cannot encode {}", path.display()))?;
    model::weights::write_atomically(path, &png)
}

/// Loss (blue, left axis) and k-NN top-1 (red dots, right axis 0-100%) against step.
pub fn loss_curve(path: &Path, points: &[(f64, f64, Option<f64>)]) -> Result<()> {
    let (w, h, margin) = (900u32, 450u32, 60.0);
    let mut img = RgbImage::from_pixel(w, h, Rgb([255, 255, 255]));
    let black = Rgb([0, 0, 0]);
    let (x0, x1, y0, y1) = (margin, w as f64 - margin, h as f64 - margin, margin);
    line(&mut img, (x0, y0), (x1, y0), black);
    line(&mut img, (x0, y0), (x0, y1), black);
    line(&mut img, (x1, y0), (x1, y1), black);
    if points.is_empty() {
        return save_png(&img, path);
    }
    let max_step = points.iter().map(|p| p.0).fold(1.0, f64::max);
    let (lo, hi) = points
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    let hi = if hi > lo { hi } else { lo + 1.0 };
    let px = |s: f64| x0 + (x1 - x0) * s / max_step;
    let py = |v: f64| y0 + (y1 - y0) * (v - lo) / (hi - lo);
    for pair in points.windows(2) {
        line(
            &mut img,
            (px(pair[0].0), py(pair[0].1)),
            (px(pair[1].0), py(pair[1].1)),
            Rgb([30, 90, 200]),
        );
    }
    let red = Rgb([200, 30, 30]);
    for p in points {
        if let Some(k) = p.2 {
            let (cx, cy) = (px(p.0), y0 + (y1 - y0) * k / 100.0);
            for dx in -3..=3 {
                for dy in -3..=3 {
                    put(&mut img, cx as i64 + dx, cy as i64 + dy, red);
                }
            }
        }
    }
    text(
        &mut img,
        4,
        y1 as i64 - 5,
        &format!("{hi:.3}"),
        2,
        Rgb([30, 90, 200]),
    );
    text(
        &mut img,
        4,
        y0 as i64 - 5,
        &format!("{lo:.3}"),
        2,
        Rgb([30, 90, 200]),
    );
    text(&mut img, x1 as i64 + 6, y1 as i64 - 5, "100%", 2, red);
    text(&mut img, x1 as i64 + 6, y0 as i64 - 5, "0%", 2, red);
    text(&mut img, x0 as i64, y0 as i64 + 10, "0", 2, black);
    text(
        &mut img,
        x1 as i64 - 40,
        y0 as i64 + 10,
        &format!("{max_step:.0}"),
        2,
        black,
    );
    save_png(&img, path)
}

/// Images side by side, scaled up, with context patches tinted blue and each target
/// mask filled with its own colour.
pub fn masks(
    path: &Path,
    data: &Dataset,
    batch: &MaskBatch,
    patch: usize,
    count: usize,
) -> Result<()> {
    let scale = 8usize;
    let (ih, iw) = (data.height * scale, data.width * scale);
    let gap = 8;
    let mut img = RgbImage::from_pixel(
        ((iw + gap) * count + gap) as u32,
        (ih + 2 * gap) as u32,
        Rgb([255, 255, 255]),
    );
    let colours = [
        [230, 60, 60],
        [60, 180, 60],
        [240, 170, 30],
        [180, 60, 200],
        [40, 200, 200],
        [120, 120, 0],
    ];
    let grid = data.width / patch;
    for b in 0..count {
        let pixels = data.eval_image(b)?;
        let mut tint = vec![None; grid * grid];
        for m in &batch.context {
            for &i in &m[b] {
                tint[i as usize] = Some([70, 110, 240]);
            }
        }
        for (j, m) in batch.target.iter().enumerate() {
            for &i in &m[b] {
                tint[i as usize] = Some(colours[j % colours.len()]);
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
                img.put_pixel((gap + b * (iw + gap) + x) as u32, (gap + y) as u32, Rgb(c));
            }
        }
    }
    save_png(&img, path)
}
