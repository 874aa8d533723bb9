//! RandomResizedCrop (torchvision semantics), the only augmentation of I-JEPA, and the
//! normalisation of u8 pixels into model inputs.

use rand::Rng;

use crate::data::Image;

/// A crop: rows top..top+h, columns left..left+w of the source image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Crop {
    pub top: usize,
    pub left: usize,
    pub h: usize,
    pub w: usize,
}

/// torchvision's `RandomResizedCrop.get_params`: up to 10 draws of an area fraction in
/// `scale` and a log-uniform aspect ratio in `ratio`; otherwise a centre crop clamped
/// to the ratio range.
pub fn random_resized_crop_params(
    rng: &mut impl Rng,
    height: usize,
    width: usize,
    scale: (f64, f64),
    ratio: (f64, f64),
) -> Crop {
    let area = (height * width) as f64;
    let (lr0, lr1) = (ratio.0.ln(), ratio.1.ln());
    for _ in 0..10 {
        let target = area * rng.random_range(scale.0..=scale.1);
        let aspect = rng.random_range(lr0..=lr1).exp();
        let w = (target * aspect).sqrt().round_ties_even() as usize;
        let h = (target / aspect).sqrt().round_ties_even() as usize;
        if 0 < w && w <= width && 0 < h && h <= height {
            return Crop {
                top: rng.random_range(0..=height - h),
                left: rng.random_range(0..=width - w),
                h,
                w,
            };
        }
    }
    let in_ratio = width as f64 / height as f64;
    let (h, w) = if in_ratio < ratio.0 {
        ((width as f64 / ratio.0).round_ties_even() as usize, width)
    } else if in_ratio > ratio.1 {
        (height, (height as f64 * ratio.1).round_ties_even() as usize)
    } else {
        (height, width)
    };
    Crop {
        top: (height - h) / 2,
        left: (width - w) / 2,
        h,
        w,
    }
}

/// Bilinear resize of an image's crop to out x out per channel (half-pixel centres, as
/// torch's `align_corners=False`), writing `(v / 255 - mean) / std` with each channel's
/// (mean, std) into `dst` as planes [C, out, out]. Separable: each source row an output
/// row reads is resized along x once, then output rows are blends of two such rows.
pub fn resize_crop_normalised(
    src: &Image,
    crop: Crop,
    out: usize,
    stats: &[(f32, f32)],
    dst: &mut [f32],
) {
    // Offsets of a pixel's channel 0 within a row, and of a row, in `src.pixels`.
    let (pixel_stride, row_stride) = if src.interleaved {
        (src.channels, src.width * src.channels)
    } else {
        (1, src.width)
    };
    // (first tap, second tap, weight of the second) of each output column or row.
    let taps = |size: usize, from: usize| -> Vec<(usize, usize, f32)> {
        let scale = size as f32 / out as f32;
        (0..out)
            .map(|o| {
                let f = ((o as f32 + 0.5) * scale - 0.5).max(0.0);
                let i0 = (f as usize).min(size - 1);
                let i1 = (i0 + 1).min(size - 1);
                (from + i0, from + i1, f - i0 as f32)
            })
            .collect()
    };
    let columns: Vec<(usize, usize, f32)> = taps(crop.w, crop.left)
        .into_iter()
        .map(|(x0, x1, w)| (x0 * pixel_stride, x1 * pixel_stride, w))
        .collect();
    let rows = taps(crop.h, crop.top);
    let plane = out * out;
    // Source rows resized along x, kept for the next output row that reads them.
    let (mut upper, mut lower) = (vec![0f32; out], vec![0f32; out]);
    for (c, &(mean, std)) in stats.iter().enumerate().take(src.channels) {
        let (scale, bias) = (1.0 / (255.0 * std), -mean / std);
        // Channel c's first value: after c planes, or c values into each pixel.
        let first = if src.interleaved {
            c
        } else {
            c * src.height * src.width
        };
        let resize_row = |y: usize, row: &mut [f32]| {
            let pixels = &src.pixels[first + y * row_stride..];
            for (&(x0, x1, wx), v) in columns.iter().zip(row.iter_mut()) {
                let a = pixels[x0] as f32;
                *v = a + (pixels[x1] as f32 - a) * wx;
            }
        };
        // The source rows `upper` and `lower` hold.
        let mut held = [usize::MAX; 2];
        let dst = &mut dst[c * plane..(c + 1) * plane];
        for (&(y0, y1, wy), dst) in rows.iter().zip(dst.chunks_exact_mut(out)) {
            if held[0] != y0 {
                if held[1] == y0 {
                    std::mem::swap(&mut upper, &mut lower);
                    held.swap(0, 1);
                } else {
                    resize_row(y0, &mut upper);
                    held[0] = y0;
                }
            }
            if held[1] != y1 {
                resize_row(y1, &mut lower);
                held[1] = y1;
            }
            for ((d, &t), &b) in dst.iter_mut().zip(&upper).zip(&lower) {
                *d = (t + (b - t) * wy) * scale + bias;
            }
        }
    }
}
