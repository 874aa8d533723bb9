//! `Device::counts`: dispatches and the FLOPs of matmuls and attention, which
//! `ijepa bench step` reports per step. Alone in its process, since the counts are the
//! device's.

mod common;

use common::{device, random, rng, upload};
use engine::ops::attention::{attention_composed, attention_fused, FusedAttention};
use engine::ops::{self, Transpose};

#[test]
fn matmul_and_attention_flops_are_counted_alike_on_every_path() {
    let dev = device();
    let mut r = rng(4);

    // A batched product counts two FLOPs per multiply-add.
    let before = dev.counts();
    let (a, b) = (
        upload(&[2, 5, 7], &random(&mut r, 70)),
        upload(&[7, 3], &random(&mut r, 21)),
    );
    ops::matmul(&a, &b, Transpose::NONE, None).unwrap();
    let after = dev.counts();
    assert_eq!(after.flops - before.flops, 2 * 2 * 5 * 3 * 7);
    assert!(after.dispatches > before.dispatches);

    // Forward and backward of the fused kernels count what the composed path's
    // matmuls count (its softmax, permutes and sums count nothing).
    let (batch, tokens, heads, hd) = (2, 9, 2, 8);
    let qkv = random(&mut r, batch * tokens * 3 * heads * hd);
    let flops_of = |attention: &dyn Fn(&engine::Tensor) -> engine::Result<engine::Tensor>| {
        let x = upload(&[batch, tokens, 3 * heads * hd], &qkv).requires_grad();
        let before = dev.counts().flops;
        let loss = ops::sum(&attention(&x).unwrap()).unwrap();
        engine::backward(&loss).unwrap();
        let flops = dev.counts().flops - before;
        // Wait for the kernels: lavapipe crashes when the process exits while it still
        // compiles one on its own threads.
        dev.synchronize();
        flops
    };
    let composed = flops_of(&|x| attention_composed(x, heads, 0.3));
    assert_eq!(composed, 12 * (batch * heads * tokens * tokens * hd) as u64);
    for kind in FusedAttention::ALL {
        if kind.runs_on(&dev, hd) {
            let fused = flops_of(&|x| attention_fused(kind, x, heads, 0.3));
            assert_eq!(fused, composed, "{kind:?}");
        }
    }
}
