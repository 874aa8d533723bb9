//! Scaled dot-product attention, out = softmax(q k^T * scale) v per head.
//! q, k, v, out: [BH, N, hd].
//!
//! `attention_fused` runs the flash-style kernels (shaders/attention.wgsl): the forward
//! saves only the row log-sum-exp, the backward recomputes the scores from it, and the
//! tokens x tokens matrix is never written. `attention_composed` builds the same from
//! matmul, scale and softmax; it is the oracle the fused kernels are tested against and,
//! for now, the faster of the two on the adapters measured (lavapipe and an H200: the
//! fused kernels keep one row per invocation and lose to the tiled matmuls), so
//! `attention` uses it.

use crate::device::KernelDef;
use crate::error::{shape_err, Result};
use crate::ops::elementwise::scale;
use crate::ops::matmul::{matmul, Transpose};
use crate::ops::softmax::softmax;
use crate::shaders;
use crate::tape::record;
use crate::tensor::Tensor;

/// The largest head dim the fused kernels hold in registers.
pub const MAX_HEAD_DIM: usize = 128;
const ROWS_PER_WORKGROUP: usize = 64;
const TILE_FLOATS: usize = 2048;

const fn kernel(entry: &'static str, reads: usize, writes: usize, first_binding: u32) -> KernelDef {
    KernelDef {
        file: "attention.wgsl",
        source: shaders::ATTENTION,
        entry,
        reads,
        writes,
        first_binding,
    }
}

const FORWARD: KernelDef = kernel("attention_forward", 3, 2, 1);
const BACKWARD_DQ: KernelDef = kernel("attention_backward_dq", 6, 2, 10);
const BACKWARD_DKV: KernelDef = kernel("attention_backward_dkv", 6, 2, 20);

fn check(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<(usize, usize, usize)> {
    let s = q.shape();
    if s.len() != 3 || k.shape() != s || v.shape() != s || s[1] == 0 {
        return shape_err(
            "attention",
            format!("q {:?}, k {:?}, v {:?} must share one non-empty shape [batch*heads, tokens, head_dim]", s, k.shape(), v.shape()),
        );
    }
    Ok((s[0], s[1], s[2]))
}

fn launch(
    def: &KernelDef,
    bh: usize,
    n: usize,
    hd: usize,
    scale: f32,
    buffers: &[&wgpu::Buffer],
    dev: &crate::Device,
) {
    let tile = (TILE_FLOATS / hd).min(32);
    dev.dispatch(
        def,
        &[("HD", hd as f64), ("TILE", tile as f64)],
        &[bh as u32, n as u32, hd as u32, scale.to_bits()],
        buffers,
        [n.div_ceil(ROWS_PER_WORKGROUP) as u32, bh as u32, 1],
    );
}

/// Fused forward: (out [BH, N, hd], row log-sum-exp [BH, N]).
pub fn attention_forward(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f32,
) -> Result<(Tensor, Tensor)> {
    let (bh, n, hd) = check(q, k, v)?;
    if hd > MAX_HEAD_DIM {
        return shape_err(
            "attention",
            format!("head dim {hd} exceeds the fused kernels' {MAX_HEAD_DIM}"),
        );
    }
    let dev = q.device();
    let out = Tensor::empty(dev, q.shape())?;
    let lse = Tensor::empty(dev, &[bh, n])?;
    launch(
        &FORWARD,
        bh,
        n,
        hd,
        scale,
        &[
            q.buffer(),
            k.buffer(),
            v.buffer(),
            out.buffer(),
            lse.buffer(),
        ],
        dev,
    );
    Ok((out, lse))
}

/// Fused backward: (dq, dk, dv) from the forward's out and lse and the gradient dout.
pub fn attention_backward(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    out: &Tensor,
    lse: &Tensor,
    dout: &Tensor,
    scale: f32,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (bh, n, hd) = check(q, k, v)?;
    let dev = q.device();
    let (dq, dk, dv) = (
        Tensor::empty(dev, q.shape())?,
        Tensor::empty(dev, q.shape())?,
        Tensor::empty(dev, q.shape())?,
    );
    let delta = Tensor::empty(dev, &[bh, n])?;
    launch(
        &BACKWARD_DQ,
        bh,
        n,
        hd,
        scale,
        &[
            q.buffer(),
            k.buffer(),
            v.buffer(),
            out.buffer(),
            dout.buffer(),
            lse.buffer(),
            dq.buffer(),
            delta.buffer(),
        ],
        dev,
    );
    launch(
        &BACKWARD_DKV,
        bh,
        n,
        hd,
        scale,
        &[
            q.buffer(),
            k.buffer(),
            v.buffer(),
            dout.buffer(),
            lse.buffer(),
            delta.buffer(),
            dk.buffer(),
            dv.buffer(),
        ],
        dev,
    );
    Ok((dq, dk, dv))
}

/// Differentiable attention: the path that is currently faster (see the module docs).
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, scale_factor: f32) -> Result<Tensor> {
    attention_composed(q, k, v, scale_factor)
}

/// Differentiable fused attention (head dims up to 128; larger ones take the composed
/// path).
pub fn attention_fused(q: &Tensor, k: &Tensor, v: &Tensor, scale_factor: f32) -> Result<Tensor> {
    let (_, _, hd) = check(q, k, v)?;
    if hd > MAX_HEAD_DIM {
        return attention_composed(q, k, v, scale_factor);
    }
    let (out, lse) = attention_forward(q, k, v, scale_factor)?;
    let (q2, k2, v2, o2) = (q.clone(), k.clone(), v.clone(), out.detach());
    record("attention", &[q, k, v], &out, move |dout, _| {
        let (dq, dk, dv) = attention_backward(&q2, &k2, &v2, &o2, &lse, dout, scale_factor)?;
        Ok(vec![Some(dq), Some(dk), Some(dv)])
    });
    Ok(out)
}

/// The same from matmul, scale and softmax (materialises the [N, N] scores).
pub fn attention_composed(q: &Tensor, k: &Tensor, v: &Tensor, scale_factor: f32) -> Result<Tensor> {
    check(q, k, v)?;
    let scores = scale(&matmul(q, k, Transpose::B, None)?, scale_factor)?;
    matmul(&softmax(&scores)?, v, Transpose::NONE, None)
}
