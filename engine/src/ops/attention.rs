//! Scaled dot-product attention composed of matmul, scale and softmax:
//! out = softmax(q k^T * scale) v, per (batch * head). q, k, v: [BH, N, hd].

use crate::error::{shape_err, Result};
use crate::ops::elementwise::scale;
use crate::ops::matmul::{matmul, Transpose};
use crate::ops::softmax::softmax;
use crate::tensor::Tensor;

pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, scale_factor: f32) -> Result<Tensor> {
    let s = q.shape();
    if s.len() != 3 || k.shape() != s || v.shape() != s {
        return shape_err(
            "attention",
            format!(
                "q {:?}, k {:?}, v {:?} must share one shape [batch*heads, tokens, head_dim]",
                s,
                k.shape(),
                v.shape()
            ),
        );
    }
    let scores = scale(&matmul(q, k, Transpose::B, None)?, scale_factor)?;
    matmul(&softmax(&scores)?, v, Transpose::NONE, None)
}
