//! The buffer pool: once a step has run, running the same step again (forward,
//! backward, optimiser update) creates no new GPU buffers, and neither do steps whose
//! token counts vary below the largest seen, as the masks make them vary in training;
//! and the memory peaks follow the tensors alive; and lent buffers may hold anything,
//! since no kernel reads what no kernel wrote. Alone in its process so no other test
//! allocates meanwhile.

mod common;

use common::{device, random, rng, upload};
use engine::ops;

#[test]
fn training_steps_allocate_nothing_new_after_warm_up() {
    let mut r = rng(1);
    let w = upload(&[16, 8], &random(&mut r, 128)).requires_grad();
    let (m, v) = (upload(&[16, 8], &[0.0; 128]), upload(&[16, 8], &[0.0; 128]));
    // One step on `rows` tokens: x [rows, 8] -> linear [rows, 16] -> GELU -> LayerNorm.
    let step = |t: u32, rows: usize| {
        let x = upload(&[rows, 8], &random(&mut rng(t as u64), rows * 8));
        let h = ops::gelu(&ops::linear(&x, &w, None).unwrap()).unwrap();
        let loss = ops::mean(&ops::layernorm(&h, None, 1e-6).unwrap()).unwrap();
        let grads = engine::backward(&loss).unwrap();
        let h = engine::ops::update::AdamW::default();
        engine::ops::update::adamw_update(&h, t, &w, grads.get(&w).unwrap(), &m, &v, 0).unwrap();
        loss.item()
    };
    let created = || (device().buffers_created(), device().memory_held());

    step(1, 40);
    step(2, 40);
    let before = created();
    for t in 3..6 {
        step(t, 40);
    }
    assert_eq!(created(), before, "repeating a step created new buffers");

    // Fewer tokens than the warm-up step, each count in its own pool size class.
    for (t, rows) in [(6, 31), (7, 37), (8, 24), (9, 33), (10, 21)] {
        step(t, rows);
    }
    assert_eq!(
        created(),
        before,
        "steps on 21..37 tokens created buffers after a 40-token step"
    );

    // The peaks `bench step` reports: what the live tensors hold at most, and the pool.
    let dev = device();
    dev.reset_memory_peaks();
    let base = dev.memory_peaks();
    // f16 elements fill whole 32-bit words: 999 of them 2000 bytes.
    let bytes = 4 * (1000 + 3000) + 2000;
    let peak = {
        // First, so that the f32 tensor it is cast from is gone before the peak.
        let _c = engine::ops::cast::cast_forward(
            &engine::Tensor::zeros(&dev, &[999]).unwrap(),
            engine::DType::F16,
        )
        .unwrap();
        let _a = engine::Tensor::zeros(&dev, &[1000]).unwrap();
        let _b = engine::Tensor::zeros(&dev, &[3000]).unwrap();
        let peak = dev.memory_peaks();
        assert_eq!(
            peak.tensors,
            base.tensors + bytes,
            "peak in tensors with {bytes} bytes of elements alive"
        );
        assert!(
            peak.held >= peak.tensors,
            "the pool holds less than its tensors take: {peak:?}"
        );
        peak
    };
    assert_eq!(dev.memory_peaks(), peak, "a peak stays until it is reset");
    dev.reset_memory_peaks();
    assert_eq!(
        dev.memory_peaks().tensors,
        base.tensors,
        "after a reset, the peak is what is alive"
    );
}

/// The pool lends buffers as their last tensor left them, which is sound only if no
/// kernel reads elements that no kernel wrote (past a tensor's end, in a tile's
/// padding, in a packed bucket's gaps). Under `IJEPA_POISON_BUFFERS=1` every lent
/// buffer is NaN until written: three pretraining steps, in f32 and in mixed
/// precision, end with the same weights as without it, bit for bit (a stray read
/// would bring in NaN, or other values, and change them).
#[test]
fn training_reads_no_element_that_no_kernel_wrote() {
    use common::runs::{pretrain_command, read_checkpoint, temp_dir, tiny_config};
    use engine::Precision;
    for precision in [Precision::F32, Precision::Mixed] {
        let config = train::config::PretrainConfig {
            precision,
            ..tiny_config(64, 1)
        };
        let weights = [false, true].map(|poison| {
            let out = temp_dir(&format!("poison_{precision:?}_{poison}"));
            let mut cmd = pretrain_command(&config, &out, &["--max-steps", "3"]);
            if poison {
                cmd.env(engine::POISON_ENV, "1");
            }
            let run = cmd.output().unwrap();
            assert!(
                run.status.success(),
                "{precision:?}, poison {poison}: {}",
                String::from_utf8_lossy(&run.stderr)
            );
            let (mut tensors, _) = read_checkpoint(&out.join(train::checkpoint::CHECKPOINT));
            tensors.sort_by(|a, b| a.0.cmp(&b.0));
            tensors
        });
        assert!(weights[0].len() > 20, "{} tensors", weights[0].len());
        for ((name, clean, _), (_, poisoned, _)) in weights[0].iter().zip(&weights[1]) {
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
            assert!(
                bits(clean) == bits(poisoned),
                "{precision:?}: {name} differs when lent buffers start as NaN"
            );
        }
    }
}
