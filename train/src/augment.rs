//! RandomResizedCrop (torchvision semantics), the only augmentation of I-JEPA, and the
//! normalisation of u8 pixels into model inputs.

use rand::Rng;

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

/// Bilinear resize of one channel plane's crop to out x out (half-pixel centres, as
/// torch's `align_corners=False`), writing `(v / 255 - mean) / std` into `dst`.
pub fn resize_crop_normalised(
    src: &[u8],
    width: usize,
    crop: Crop,
    out: usize,
    mean: f32,
    std: f32,
    dst: &mut [f32],
) {
    let sy = crop.h as f32 / out as f32;
    let sx = crop.w as f32 / out as f32;
    let px = |y: usize, x: usize| src[(crop.top + y) * width + crop.left + x] as f32;
    for oy in 0..out {
        let fy = ((oy as f32 + 0.5) * sy - 0.5).max(0.0);
        let y0 = (fy as usize).min(crop.h - 1);
        let y1 = (y0 + 1).min(crop.h - 1);
        let wy = fy - y0 as f32;
        for ox in 0..out {
            let fx = ((ox as f32 + 0.5) * sx - 0.5).max(0.0);
            let x0 = (fx as usize).min(crop.w - 1);
            let x1 = (x0 + 1).min(crop.w - 1);
            let wx = fx - x0 as f32;
            let top = px(y0, x0) * (1.0 - wx) + px(y0, x1) * wx;
            let bottom = px(y1, x0) * (1.0 - wx) + px(y1, x1) * wx;
            let v = (top * (1.0 - wy) + bottom * wy) / 255.0;
            dst[oy * out + ox] = (v - mean) / std;
        }
    }
}
