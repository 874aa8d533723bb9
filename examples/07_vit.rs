//! Tour chapter 7 (docs/tour/07-vit.md): the ViT encoder. The patch embedding is a
//! convolution with stride = kernel = patch, run as patchify + one matmul (checked here
//! against a direct convolution on the CPU); positions are the fixed 2-D sin-cos table;
//! a block is pre-norm attention and MLP with residuals.
//!
//! Run: cargo run --release --example 07_vit

use engine::cpu::{max_abs_diff, seeded_uniform};
use engine::{ops, Device, Tensor};
use model::config::vit_preset;
use model::layers::{Init, NamedParams};
use model::pos_embed::sincos_2d;
use model::vit::VisionTransformer;
use rand::SeedableRng;

/// Conv2d(C, D, kernel = stride = p) of images [B, C, S, S] with weight [D, C, p, p]
/// as its definition reads: [B, (S/p)^2, D], patches row-major.
fn conv_patches(
    images: &[f32],
    [b, c, s]: [usize; 3],
    w: &[f32],
    bias: &[f32],
    p: usize,
) -> Vec<f32> {
    let (d, g) = (bias.len(), s / p);
    let mut out = Vec::with_capacity(b * g * g * d);
    for img in 0..b {
        for (row, col) in (0..g).flat_map(|r| (0..g).map(move |q| (r, q))) {
            for o in 0..d {
                let mut acc = bias[o] as f64;
                for ch in 0..c {
                    for (y, x) in (0..p).flat_map(|y| (0..p).map(move |x| (y, x))) {
                        let pixel = images[((img * c + ch) * s + row * p + y) * s + col * p + x];
                        acc += pixel as f64 * w[((o * c + ch) * p + y) * p + x] as f64;
                    }
                }
                out.push(acc as f32);
            }
        }
    }
    out
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot = |x: &[f32], y: &[f32]| {
        x.iter()
            .zip(y)
            .map(|(p, q)| *p as f64 * *q as f64)
            .sum::<f64>()
    };
    dot(a, b) / (dot(a, a) * dot(b, b)).sqrt()
}

fn main() -> anyhow::Result<()> {
    engine::device::private_runtime_dir();
    let device = Device::shared()?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let mut init = Init {
        device: &device,
        rng: &mut rng,
        trainable: true,
    };

    // The fmnist-cpu encoder: 28x28 grey images, 4x4 patches, a 7x7 grid.
    let config = vit_preset("vit_pico", 28, 4, 1)?;
    let vit = VisionTransformer::new(&config, &mut init)?;
    let (d, g, p) = (config.embed_dim, config.grid(), config.patch_size);

    // Patch embedding: patchify is a pure layout change, the rest one matmul.
    let images_host = seeded_uniform(1, 2 * 28 * 28);
    let images = Tensor::from_slice(&device, &[2, 1, 28, 28], &images_host)?;
    let patches = ops::patchify(&images, p)?;
    let embedded = vit.patch_embed.forward(&images)?;
    let direct = conv_patches(
        &images_host,
        [2, 1, 28],
        &vit.patch_embed.weight.to_vec(),
        &vit.patch_embed.bias.to_vec(),
        p,
    );
    println!(
        "patch embedding: images {:?} -> patchify {:?} -> matmul with [{d}, {}] -> {:?}; vs a direct convolution {:.1e}",
        images.shape(),
        patches.shape(),
        p * p,
        embedded.shape(),
        max_abs_diff(&embedded.to_vec(), &direct)
    );

    // The sin-cos table: how alike position (3, 3) is to every other, by cosine.
    let table = sincos_2d(d, g);
    let at = |row: usize, col: usize| &table[(row * g + col) * d..(row * g + col + 1) * d];
    println!("cosine of each position's table row with that of (3, 3), on the {g}x{g} grid:");
    for row in 0..g {
        let line: Vec<String> = (0..g)
            .map(|col| format!("{:5.2}", cosine(at(row, col), at(3, 3))))
            .collect();
        println!("  {}", line.join(" "));
    }
    // The first half of the channels encodes the column, the second the row.
    let same_col = max_abs_diff(&at(0, 5)[..d / 2], &at(6, 5)[..d / 2]);
    let same_row = max_abs_diff(&at(2, 0)[d / 2..], &at(2, 6)[d / 2..]);
    println!("channels 0..{}: equal along a column ({same_col:.0e}); channels {}..{d}: equal along a row ({same_row:.0e})", d / 2, d / 2);

    // The encoder, block by block, and its parameters by name.
    let mut x = ops::add(&embedded, &ops::reshape(&vit.pos_embed, &[g * g, d])?)?;
    println!(
        "encoder vit_pico (width {d}, {} blocks, {} heads): tokens {:?}",
        config.depth,
        config.num_heads,
        x.shape()
    );
    for (i, block) in vit.blocks.iter().enumerate() {
        x = block.forward(&x)?;
        println!("  after block {i}: {:?}", x.shape());
    }
    let x = vit.norm.forward(&x)?;
    println!(
        "  final LayerNorm: {:?}; equal to VisionTransformer::forward: {:.1e}",
        x.shape(),
        max_abs_diff(&x.to_vec(), &vit.forward(&images, None)?.to_vec())
    );
    let mut params = NamedParams::new();
    vit.params("", &mut params);
    let count = |filter: &dyn Fn(&str) -> bool| -> usize {
        params
            .iter()
            .filter(|(n, _)| filter(n))
            .map(|(_, t)| t.numel())
            .sum()
    };
    println!(
        "parameters: {} in all: patch_embed {}, blocks {} ({} per block), norm {}, and the fixed pos_embed {} (not trained)",
        count(&|n| n != "pos_embed"),
        count(&|n| n.starts_with("patch_embed")),
        count(&|n| n.starts_with("blocks")),
        count(&|n| n.starts_with("blocks.0.")),
        count(&|n| n.starts_with("norm")),
        count(&|n| n == "pos_embed"),
    );
    Ok(())
}
