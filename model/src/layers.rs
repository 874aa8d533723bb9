//! The ViT building blocks, each with its parameters named as the official
//! `state_dict()` and a forward pass built from engine ops (whose backward the tape
//! records).
//!
//! Shapes: B batch, N tokens, D width, H heads, hd = D / H.
//!
//! Explained in the tour: docs/tour/07-vit.md.

use std::sync::Arc;

use anyhow::Result;
use engine::ops::{self, attention};
use engine::{precision, DType, Device, Tensor};
use rand::rngs::StdRng;
use rand_distr::{Distribution, Normal};

/// Named parameters in `state_dict()` order.
pub type NamedParams = Vec<(String, Tensor)>;

fn push(out: &mut NamedParams, prefix: &str, name: &str, t: &Tensor) {
    out.push((format!("{prefix}{name}"), t.clone()));
}

/// Creates parameters: trainable ones are tape leaves, the others (target encoder)
/// are plain tensors the tape never tracks.
pub struct Init<'a> {
    pub device: &'a Arc<Device>,
    pub rng: &'a mut StdRng,
    pub trainable: bool,
}

impl Init<'_> {
    pub fn tensor(&mut self, shape: &[usize], data: &[f32]) -> Result<Tensor> {
        let t = Tensor::from_slice(self.device, shape, data)?;
        Ok(if self.trainable { t.requires_grad() } else { t })
    }

    /// Normal(0, std) truncated to [-2, 2] (absolute bounds, as the official
    /// `trunc_normal_`), scaled by `rescale`.
    pub fn trunc_normal(&mut self, shape: &[usize], std: f32, rescale: f32) -> Result<Tensor> {
        let normal = Normal::new(0.0f32, std).expect("finite std");
        let n: usize = shape.iter().product();
        let data: Vec<f32> = (0..n)
            .map(|_| loop {
                let v = normal.sample(self.rng);
                if (-2.0..=2.0).contains(&v) {
                    break v * rescale;
                }
            })
            .collect();
        self.tensor(shape, &data)
    }

    pub fn full(&mut self, shape: &[usize], value: f32) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        self.tensor(shape, &vec![value; n])
    }
}

pub const INIT_STD: f32 = 0.02;

/// y = x W^T + b with a torch-layout weight [out, in].
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    /// trunc-normal(0.02) weight divided by `rescale`, zero bias.
    pub fn new(
        init: &mut Init,
        inputs: usize,
        outputs: usize,
        bias: bool,
        rescale: f32,
    ) -> Result<Linear> {
        Ok(Linear {
            weight: init.trunc_normal(&[outputs, inputs], INIT_STD, 1.0 / rescale)?,
            bias: if bias {
                Some(init.full(&[outputs], 0.0)?)
            } else {
                None
            },
        })
    }

    /// x [.., in] -> [.., out].
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_to(x, DType::F32)
    }

    /// `forward` with the output in `out`: for the qkv projection, which only attention
    /// reads, the type attention asks for (`attention::qkv_storage`: f16 under mixed
    /// precision where its plan reads f16).
    pub fn forward_to(&self, x: &Tensor, out: DType) -> Result<Tensor> {
        Ok(ops::linear_to(x, &self.weight, self.bias.as_ref(), out)?)
    }

    pub fn params(&self, prefix: &str, out: &mut NamedParams) {
        push(out, prefix, "weight", &self.weight);
        if let Some(b) = &self.bias {
            push(out, prefix, "bias", b);
        }
    }
}

/// LayerNorm over the last dim with weight (1) and bias (0).
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub eps: f32,
}

impl LayerNorm {
    pub fn new(init: &mut Init, dim: usize, eps: f32) -> Result<LayerNorm> {
        Ok(LayerNorm {
            weight: init.full(&[dim], 1.0)?,
            bias: init.full(&[dim], 0.0)?,
            eps,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_to(x, DType::F32)
    }

    /// `forward` with the output in `out`: `precision::operand_type()` for a LayerNorm
    /// that only feeds products (a block's norm1 and norm2), f16 under mixed precision.
    pub fn forward_to(&self, x: &Tensor, out: DType) -> Result<Tensor> {
        Ok(ops::layernorm_to(
            x,
            Some((&self.weight, &self.bias)),
            self.eps,
            out,
        )?)
    }

    /// (s, norm(s)) with s = x + addend, in one kernel: a residual connection and the
    /// LayerNorm after it, norm(s) in `out`.
    pub fn add_forward(&self, x: &Tensor, addend: &Tensor, out: DType) -> Result<(Tensor, Tensor)> {
        Ok(ops::add_layernorm_to(
            x,
            addend,
            Some((&self.weight, &self.bias)),
            self.eps,
            out,
        )?)
    }

    pub fn params(&self, prefix: &str, out: &mut NamedParams) {
        push(out, prefix, "weight", &self.weight);
        push(out, prefix, "bias", &self.bias);
    }
}

/// fc2(gelu(fc1(x))): [.., D] -> [.., D] through a hidden width of ratio * D.
pub struct Mlp {
    pub fc1: Linear,
    pub fc2: Linear,
}

impl Mlp {
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(ops::mlp(
            x,
            &self.fc1.weight,
            self.fc1.bias.as_ref(),
            &self.fc2.weight,
            self.fc2.bias.as_ref(),
        )?)
    }

    pub fn params(&self, prefix: &str, out: &mut NamedParams) {
        self.fc1.params(&format!("{prefix}fc1."), out);
        self.fc2.params(&format!("{prefix}fc2."), out);
    }
}

/// Multi-head self-attention with a fused qkv projection.
pub struct Attention {
    pub qkv: Linear,
    pub proj: Linear,
    pub num_heads: usize,
}

impl Attention {
    /// x [B, N, D] -> [B, N, D]: per head softmax(q k^T / sqrt(hd)) v on the packed
    /// qkv projection [B, N, 3D], heads side by side in the result, projected.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (s, heads) = (x.shape(), self.num_heads);
        let hd = s[2] / heads;
        let shape = attention::AttentionShape {
            batch: s[0],
            tokens: s[1],
            heads,
            head_dim: hd,
            // Not read: the type is what qkv_storage decides.
            qkv: DType::F32,
        };
        let qkv = self
            .qkv
            .forward_to(x, attention::qkv_storage(x.device(), &shape))?;
        let out = attention::attention(&qkv, self.num_heads, (hd as f32).powf(-0.5))?;
        self.proj.forward(&out)
    }

    pub fn params(&self, prefix: &str, out: &mut NamedParams) {
        self.qkv.params(&format!("{prefix}qkv."), out);
        self.proj.params(&format!("{prefix}proj."), out);
    }
}

/// Pre-norm transformer block: x += attn(norm1(x)); x += mlp(norm2(x)).
pub struct TransformerBlock {
    pub norm1: LayerNorm,
    pub attn: Attention,
    pub norm2: LayerNorm,
    pub mlp: Mlp,
}

impl TransformerBlock {
    /// Block `layer_id` (from 1) of a stack: the official init divides attn.proj and
    /// mlp.fc2 weights by sqrt(2 * layer_id).
    pub fn new(
        init: &mut Init,
        dim: usize,
        heads: usize,
        hidden: usize,
        qkv_bias: bool,
        eps: f32,
        layer_id: usize,
    ) -> Result<TransformerBlock> {
        let rescale = (2.0 * layer_id as f32).sqrt();
        Ok(TransformerBlock {
            norm1: LayerNorm::new(init, dim, eps)?,
            attn: Attention {
                qkv: Linear::new(init, dim, 3 * dim, qkv_bias, 1.0)?,
                proj: Linear::new(init, dim, dim, true, rescale)?,
                num_heads: heads,
            },
            norm2: LayerNorm::new(init, dim, eps)?,
            mlp: Mlp {
                fc1: Linear::new(init, dim, hidden, true, 1.0)?,
                fc2: Linear::new(init, hidden, dim, true, rescale)?,
            },
        })
    }

    /// x [B, N, D] -> [B, N, D], op by op: what `blocks_then_norm` fuses. The norms
    /// only feed products, so they write the products' operand type.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let operand = precision::operand_type();
        let x = ops::add(x, &self.attn.forward(&self.norm1.forward_to(x, operand)?)?)?;
        let h = self.norm2.forward_to(&x, operand)?;
        Ok(ops::add(&x, &self.mlp.forward(&h)?)?)
    }

    /// The block given x and h = norm1(x), each residual addition fused with the
    /// LayerNorm after it: `next` is the LayerNorm that follows the block (the next
    /// block's norm1, or the stack's final norm), its output in `next_out`. Returns
    /// (out, next(out)).
    pub fn forward_fused(
        &self,
        x: &Tensor,
        h: &Tensor,
        next: &LayerNorm,
        next_out: DType,
    ) -> Result<(Tensor, Tensor)> {
        let attn = self.attn.forward(h)?;
        let (x, h) = self
            .norm2
            .add_forward(x, &attn, precision::operand_type())?;
        next.add_forward(&x, &self.mlp.forward(&h)?, next_out)
    }

    pub fn params(&self, prefix: &str, out: &mut NamedParams) {
        self.norm1.params(&format!("{prefix}norm1."), out);
        self.attn.params(&format!("{prefix}attn."), out);
        self.norm2.params(&format!("{prefix}norm2."), out);
        self.mlp.params(&format!("{prefix}mlp."), out);
    }
}

/// `norm(blocks(x))` with every residual addition fused with the LayerNorm after it:
/// one kernel fewer per addition, the same values as `TransformerBlock::forward` in
/// turn then `norm`.
pub fn blocks_then_norm(
    blocks: &[TransformerBlock],
    x: &Tensor,
    norm: &LayerNorm,
) -> Result<Tensor> {
    let Some(first) = blocks.first() else {
        return norm.forward(x);
    };
    let operand = precision::operand_type();
    let (mut x, mut h) = (x.clone(), first.norm1.forward_to(x, operand)?);
    for (i, block) in blocks.iter().enumerate() {
        // The next block's norm1 feeds its products; the stack's final norm is its output.
        let (next, next_out) = blocks
            .get(i + 1)
            .map_or((norm, DType::F32), |b| (&b.norm1, operand));
        (x, h) = block.forward_fused(&x, &h, next, next_out)?;
    }
    Ok(h)
}

/// Conv2d(C, D, kernel = stride = p) as patchify + matmul: weight [D, C, p, p].
pub struct PatchEmbed {
    pub weight: Tensor,
    pub bias: Tensor,
    pub patch: usize,
}

impl PatchEmbed {
    pub fn new(init: &mut Init, chans: usize, dim: usize, patch: usize) -> Result<PatchEmbed> {
        Ok(PatchEmbed {
            weight: init.trunc_normal(&[dim, chans, patch, patch], INIT_STD, 1.0)?,
            bias: init.full(&[dim], 0.0)?,
            patch,
        })
    }

    /// images [B, C, H, W] -> [B, (H/p)*(W/p), D].
    pub fn forward(&self, images: &Tensor) -> Result<Tensor> {
        let s = self.weight.shape();
        // Cast before the reshape: under mixed precision the step's f16 copy is of the
        // [D, C, p, p] parameter, so it stands in and no cast runs.
        let w = ops::cast(&self.weight, precision::operand_type())?;
        let w = ops::reshape(&w, &[s[0], s[1] * s[2] * s[3]])?;
        Ok(ops::linear(
            &ops::patchify(images, self.patch)?,
            &w,
            Some(&self.bias),
        )?)
    }

    pub fn params(&self, prefix: &str, out: &mut NamedParams) {
        push(out, prefix, "proj.weight", &self.weight);
        push(out, prefix, "proj.bias", &self.bias);
    }
}
