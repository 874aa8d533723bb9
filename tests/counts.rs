//! `Device::counts`: dispatches and the FLOPs of matmuls and attention, which
//! `ijepa bench step` reports per step. Alone in its process, since the counts are the
//! device's.

mod common;

use std::sync::Arc;

use common::{device, random, rng, upload};
use engine::ops::attention::{attention_composed, attention_fused, FusedAttention};
use engine::ops::{self, reduce, Transpose};
use engine::{DType, Device, Tensor};

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
        if kind.runs_on(&dev, hd, DType::F32) {
            let fused = flops_of(&|x| attention_fused(kind, x, heads, 0.3));
            assert_eq!(fused, composed, "{kind:?}");
        }
    }
}

#[test]
fn paired_column_sums_take_one_dispatch_per_pass() {
    // A device of its own, whose counts the other test's dispatches do not reach.
    let dev = Arc::new(Device::new().unwrap());
    let mut r = rng(5);
    let (rows, inner_x, inner_y) = (700, 13, 9);
    let x = Tensor::from_slice(&dev, &[rows, inner_x], &random(&mut r, rows * inner_x)).unwrap();
    let y = Tensor::from_slice(&dev, &[rows, inner_y], &random(&mut r, rows * inner_y)).unwrap();
    let dispatches = |f: &dyn Fn()| {
        let before = dev.counts().dispatches;
        f();
        dev.counts().dispatches - before
    };
    // In chunks of 3 rows: 700 -> 234 -> 78 -> 26 -> 9 -> 3 -> 1, six passes.
    let paired = dispatches(&|| {
        drop(reduce::sum_leading_pair_forward_with(&x, inner_x, &y, inner_y, 3).unwrap());
    });
    let apart = dispatches(&|| {
        drop(reduce::sum_leading_forward_with(&x, inner_x, 3).unwrap());
        drop(reduce::sum_leading_forward_with(&y, inner_y, 3).unwrap());
    });
    assert_eq!((paired, apart), (6, 12));
}
