//! Model configuration and presets (named as the official ones).

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// A Vision Transformer encoder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VitConfig {
    pub img_size: usize,
    pub patch_size: usize,
    pub in_chans: usize,
    pub embed_dim: usize,
    pub depth: usize,
    pub num_heads: usize,
    pub mlp_ratio: f64,
    pub qkv_bias: bool,
    pub layer_norm_eps: f32,
}

impl VitConfig {
    /// Patches per side.
    pub fn grid(&self) -> usize {
        self.img_size / self.patch_size
    }

    pub fn num_patches(&self) -> usize {
        self.grid() * self.grid()
    }

    pub fn mlp_hidden(&self) -> usize {
        (self.embed_dim as f64 * self.mlp_ratio) as usize
    }

    /// Reject configurations the model cannot be built for.
    pub fn validate(&self) -> Result<()> {
        if self.patch_size == 0 || !self.img_size.is_multiple_of(self.patch_size) {
            bail!(
                "image size {} is not divisible by the patch size {}",
                self.img_size,
                self.patch_size
            );
        }
        check_heads("encoder", self.embed_dim, self.num_heads)?;
        if self.in_chans == 0 || self.depth == 0 {
            bail!("encoder needs at least one channel and one block");
        }
        Ok(())
    }
}

fn check_heads(what: &str, dim: usize, heads: usize) -> Result<()> {
    if dim == 0 || heads == 0 || !dim.is_multiple_of(heads) || !dim.is_multiple_of(4) {
        bail!("{what} width {dim} must be a positive multiple of 4 (sin-cos table) and of the head count {heads}");
    }
    Ok(())
}

/// The I-JEPA predictor: a narrow ViT over context and mask tokens.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PredictorConfig {
    pub embed_dim: usize,
    pub depth: usize,
    pub num_heads: usize,
}

/// Encoder + predictor (the target encoder has the encoder's architecture).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IjepaConfig {
    pub encoder: VitConfig,
    pub predictor: PredictorConfig,
}

impl IjepaConfig {
    pub fn validate(&self) -> Result<()> {
        self.encoder.validate()?;
        check_heads(
            "predictor",
            self.predictor.embed_dim,
            self.predictor.num_heads,
        )?;
        if self.predictor.depth == 0 {
            bail!("predictor needs at least one block");
        }
        Ok(())
    }

    /// The values the optimiser updates (and a data-parallel step all-reduces): encoder
    /// and predictor, without the fixed position tables, counted from the
    /// architecture alone, so that it can be told for models too large to build.
    pub fn trainable_parameters(&self) -> usize {
        let e = &self.encoder;
        let (d, dp) = (e.embed_dim, self.predictor.embed_dim);
        let block = |w: usize, hidden: usize| {
            let qkv = 3 * w * w + if e.qkv_bias { 3 * w } else { 0 };
            // norm1, qkv, proj, norm2, fc1, fc2
            2 * w + qkv + w * w + w + 2 * w + w * hidden + hidden + hidden * w + w
        };
        let encoder = d * e.in_chans * e.patch_size * e.patch_size
            + d
            + e.depth * block(d, e.mlp_hidden())
            + 2 * d;
        // The official predictor's MLP ratio is 4 whatever the encoder's (vit.rs).
        let predictor = d * dp + dp // predictor_embed
            + dp // mask_token
            + self.predictor.depth * block(dp, 4 * dp)
            + 2 * dp // predictor_norm
            + dp * d + d; // predictor_proj
        encoder + predictor
    }
}

/// Encoder presets: (name, width, depth, heads). The official ViTs, plus small ones
/// for 28-32 px images (Fashion-MNIST, CIFAR-10; vit_femto is for smoke tests).
pub const PRESETS: &[(&str, usize, usize, usize)] = &[
    ("vit_femto", 32, 2, 2),
    ("vit_pico", 64, 4, 4),
    ("vit_nano", 128, 6, 4),
    ("vit_tiny", 192, 12, 3),
    ("vit_small", 384, 12, 6),
    ("vit_base", 768, 12, 12),
    ("vit_large", 1024, 24, 16),
    ("vit_huge", 1280, 32, 16),
    ("vit_giant", 1408, 40, 16),
];

/// An encoder preset at the given image geometry, with the official defaults (MLP
/// ratio 4, 48/11 for vit_giant; qkv bias; LayerNorm eps 1e-6).
pub fn vit_preset(
    name: &str,
    img_size: usize,
    patch_size: usize,
    in_chans: usize,
) -> Result<VitConfig> {
    let Some(&(_, embed_dim, depth, num_heads)) = PRESETS.iter().find(|p| p.0 == name) else {
        let names: Vec<&str> = PRESETS.iter().map(|p| p.0).collect();
        bail!("unknown model preset `{name}`; known: {}", names.join(", "));
    };
    let c = VitConfig {
        img_size,
        patch_size,
        in_chans,
        embed_dim,
        depth,
        num_heads,
        mlp_ratio: if name == "vit_giant" {
            48.0 / 11.0
        } else {
            4.0
        },
        qkv_bias: true,
        layer_norm_eps: 1e-6,
    };
    c.validate()?;
    Ok(c)
}
