//! The I-JEPA networks: the ViT encoder (context and target) and the predictor.
//!
//! Shapes: B images, N patches, D encoder width, Dp predictor width, Kc context and
//! Kt target indices per mask. Masks are stacked mask-major (row j * B + b is mask j of
//! image b), as the official `apply_masks` concatenates them.
//!
//! Explained in the tour: docs/tour/07-vit.md and docs/tour/09-predictor-loss-update.md.

use anyhow::{bail, Result};
use engine::ops::{self, layout};
use engine::{Indices, Tensor};

use crate::config::{PredictorConfig, VitConfig};
use crate::layers::{
    blocks_then_norm, Init, LayerNorm, Linear, NamedParams, PatchEmbed, TransformerBlock, INIT_STD,
};
use crate::masks::Masks;
use crate::pos_embed::sincos_2d;

/// The ViT encoder: patch embed, + fixed sin-cos positions, optional gather of the
/// kept (context) patches, pre-norm blocks, final LayerNorm. No class token.
pub struct VisionTransformer {
    pub config: VitConfig,
    pub patch_embed: PatchEmbed,
    /// Fixed table [1, N, D]; not a trained parameter.
    pub pos_embed: Tensor,
    pub blocks: Vec<TransformerBlock>,
    pub norm: LayerNorm,
}

impl VisionTransformer {
    pub fn new(config: &VitConfig, init: &mut Init) -> Result<VisionTransformer> {
        config.validate()?;
        let (d, n) = (config.embed_dim, config.num_patches());
        let table = sincos_2d(d, config.grid());
        let pos_embed = Tensor::from_slice(init.device, &[1, n, d], &table)?;
        let blocks = (1..=config.depth)
            .map(|id| {
                TransformerBlock::new(
                    init,
                    d,
                    config.num_heads,
                    config.mlp_hidden(),
                    config.qkv_bias,
                    config.layer_norm_eps,
                    id,
                )
            })
            .collect::<Result<_>>()?;
        Ok(VisionTransformer {
            patch_embed: PatchEmbed::new(init, config.in_chans, d, config.patch_size)?,
            pos_embed,
            blocks,
            norm: LayerNorm::new(init, d, config.layer_norm_eps)?,
            config: config.clone(),
        })
    }

    /// images [B, C, H, W] -> patch embeddings plus positions [B, N, D].
    fn embed(&self, images: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        let s = images.shape();
        if s.len() != 4 || s[1] != c.in_chans || s[2] != c.img_size || s[3] != c.img_size {
            bail!(
                "encoder expects images [B, {}, {}, {}], got {s:?}",
                c.in_chans,
                c.img_size,
                c.img_size
            );
        }
        let pos = ops::reshape(&self.pos_embed, &[c.num_patches(), c.embed_dim])?;
        Ok(ops::add(&self.patch_embed.forward(images)?, &pos)?)
    }

    /// images [B, C, H, W] -> [B, N, D], or with `masks` [G, K] (G a multiple of B)
    /// -> [G, K, D] over the kept patches only.
    pub fn forward(&self, images: &Tensor, masks: Option<&Indices>) -> Result<Tensor> {
        let mut x = self.embed(images)?;
        if let Some(m) = masks {
            x = ops::gather_rows(&x, m)?;
        }
        blocks_then_norm(&self.blocks, &x, &self.norm)
    }

    /// images [B, C, H, W] -> the outputs of the last `layers` blocks, each through the
    /// final LayerNorm, first to last: `layers` x [B, N, D] (the last is `forward`'s).
    pub fn forward_last(&self, images: &Tensor, layers: usize) -> Result<Vec<Tensor>> {
        let depth = self.blocks.len();
        if layers == 0 || layers > depth {
            bail!("the encoder has {depth} blocks: cannot take the last {layers}");
        }
        let mut x = self.embed(images)?;
        let mut out = Vec::with_capacity(layers);
        for (i, block) in self.blocks.iter().enumerate() {
            x = block.forward(&x)?;
            if i + layers >= depth {
                out.push(self.norm.forward(&x)?);
            }
        }
        Ok(out)
    }

    pub fn params(&self, prefix: &str, out: &mut NamedParams) {
        out.push((format!("{prefix}pos_embed"), self.pos_embed.clone()));
        self.patch_embed
            .params(&format!("{prefix}patch_embed."), out);
        for (i, b) in self.blocks.iter().enumerate() {
            b.params(&format!("{prefix}blocks.{i}."), out);
        }
        self.norm.params(&format!("{prefix}norm."), out);
    }
}

/// The predictor: embeds the context into Dp, adds positions, appends one mask token
/// (+ position) per target index for each target mask, runs its blocks and projects the
/// mask-token rows back to D.
pub struct Predictor {
    pub predictor_embed: Linear,
    /// [1, 1, Dp].
    pub mask_token: Tensor,
    /// Fixed table [1, N, Dp].
    pub predictor_pos_embed: Tensor,
    pub predictor_blocks: Vec<TransformerBlock>,
    pub predictor_norm: LayerNorm,
    pub predictor_proj: Linear,
    num_patches: usize,
}

impl Predictor {
    pub fn new(
        encoder: &VitConfig,
        config: &PredictorConfig,
        init: &mut Init,
    ) -> Result<Predictor> {
        let (d, dp, n) = (encoder.embed_dim, config.embed_dim, encoder.num_patches());
        let table = sincos_2d(dp, encoder.grid());
        // The official vit_predictor has an MLP ratio of 4 whatever the encoder's.
        let hidden = 4 * dp;
        let predictor_embed = Linear::new(init, d, dp, true, 1.0)?;
        let mask_token = init.trunc_normal(&[1, 1, dp], INIT_STD, 1.0)?;
        let predictor_blocks = (1..=config.depth)
            .map(|id| {
                TransformerBlock::new(
                    init,
                    dp,
                    config.num_heads,
                    hidden,
                    encoder.qkv_bias,
                    encoder.layer_norm_eps,
                    id,
                )
            })
            .collect::<Result<_>>()?;
        Ok(Predictor {
            predictor_embed,
            mask_token,
            predictor_pos_embed: Tensor::from_slice(init.device, &[1, n, dp], &table)?,
            predictor_blocks,
            predictor_norm: LayerNorm::new(init, dp, encoder.layer_norm_eps)?,
            predictor_proj: Linear::new(init, dp, d, true, 1.0)?,
            num_patches: n,
        })
    }

    /// context [nenc*B, Kc, D] (the encoder's output on `masks.context`) ->
    /// predictions [npred*nenc*B, Kt, D] in the order of `masks.target_rows`.
    pub fn forward(&self, context: &Tensor, masks: &Masks) -> Result<Tensor> {
        let kc = masks.context.shape()[1];
        if context.shape()[..2] != *masks.context.shape() {
            bail!(
                "predictor: context {:?} does not match its masks {:?}",
                context.shape(),
                masks.context.shape()
            );
        }
        let dp = self.mask_token.numel();
        let table = ops::reshape(&self.predictor_pos_embed, &[1, self.num_patches, dp])?;
        let x = self.predictor_embed.forward(context)?;
        let x = ops::add(&x, &ops::gather_rows(&table, &masks.context)?)?;
        let token = ops::reshape(&self.mask_token, &[dp])?;
        let pred_tokens = ops::add(&ops::gather_rows(&table, &masks.target_rows)?, &token)?;
        let x = ops::concat(&[&ops::repeat_batch(&x, masks.npred)?, &pred_tokens], 1)?;
        let x = blocks_then_norm(&self.predictor_blocks, &x, &self.predictor_norm)?;
        let kt = masks.target.shape()[1];
        self.predictor_proj.forward(&layout::narrow(&x, 1, kc, kt)?)
    }

    pub fn params(&self, prefix: &str, out: &mut NamedParams) {
        out.push((format!("{prefix}mask_token"), self.mask_token.clone()));
        out.push((
            format!("{prefix}predictor_pos_embed"),
            self.predictor_pos_embed.clone(),
        ));
        self.predictor_embed
            .params(&format!("{prefix}predictor_embed."), out);
        for (i, b) in self.predictor_blocks.iter().enumerate() {
            b.params(&format!("{prefix}predictor_blocks.{i}."), out);
        }
        self.predictor_norm
            .params(&format!("{prefix}predictor_norm."), out);
        self.predictor_proj
            .params(&format!("{prefix}predictor_proj."), out);
    }
}
