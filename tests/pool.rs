//! The buffer pool: once a step has run, running the same step again (forward,
//! backward, optimiser update) creates no new GPU buffers. Alone in its process so no
//! other test allocates meanwhile.

mod common;

use common::{device, random, rng, upload};
use engine::ops;

#[test]
fn a_repeated_training_step_allocates_nothing_new() {
    let mut r = rng(1);
    let w = upload(&[16, 8], &random(&mut r, 128)).requires_grad();
    let (m, v) = (upload(&[16, 8], &[0.0; 128]), upload(&[16, 8], &[0.0; 128]));
    let step = |t: u32| {
        let x = upload(&[4, 8], &random(&mut rng(t as u64), 32));
        let h = ops::gelu(&ops::linear(&x, &w, None).unwrap()).unwrap();
        let loss = ops::mean(&ops::layernorm(&h, None, 1e-6).unwrap()).unwrap();
        let grads = engine::backward(&loss).unwrap();
        let h = engine::optim::AdamW::default();
        engine::optim::adamw_update(&h, t, &w, grads.get(&w).unwrap(), &m, &v).unwrap();
        loss.item()
    };
    step(1);
    step(2);
    let before = device().buffers_created();
    for t in 3..6 {
        step(t);
    }
    assert_eq!(
        device().buffers_created(),
        before,
        "steps 3..6 created new buffers"
    );
}
