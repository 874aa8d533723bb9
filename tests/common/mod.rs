//! Helpers shared by the integration tests: the process-wide device, seeded random
//! data and a closeness assertion that names the worst element.
#![allow(dead_code)]

pub mod cases;
pub mod runs;

use std::sync::Arc;

use engine::{Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub fn device() -> Arc<Device> {
    Device::shared()
        .expect("a GPU adapter (on a CPU-only machine: apt-get install mesa-vulkan-drivers)")
}

pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// Uniform values in [-1, 1).
pub fn random(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
}

pub fn upload(shape: &[usize], data: &[f32]) -> Tensor {
    Tensor::from_slice(&device(), shape, data).unwrap()
}

/// Assert |actual - expected| <= atol + rtol * |expected| everywhere.
pub fn assert_close(what: &str, actual: &[f32], expected: &[f32], atol: f32, rtol: f32) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    let mut worst = (0.0f32, 0usize);
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        let excess = (a - e).abs() / (atol + rtol * e.abs());
        let excess = if a == e {
            0.0
        } else if excess.is_nan() {
            f32::INFINITY
        } else {
            excess
        };
        if excess > worst.0 {
            worst = (excess, i);
        }
    }
    let i = worst.1;
    assert!(
        worst.0 <= 1.0,
        "{what}: element {i} is {} but expected {} (atol {atol}, rtol {rtol})",
        actual[i],
        expected[i]
    );
}
