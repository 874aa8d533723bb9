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

/// A device of its own whose adapter allows only 8 workgroups along each grid
/// dimension: what a grid past the limit does, at small sizes.
pub fn small_grid_device() -> Arc<Device> {
    Arc::new(Device::with_limits(|l| l.max_compute_workgroups_per_dimension = 8).unwrap())
}

/// A device of its own whose storage bindings hold only 3,072 bytes: what data split
/// into chunks does (the probe's, the k-NN's queries), at small sizes.
pub fn small_binding_device() -> Arc<Device> {
    Arc::new(Device::with_limits(|l| l.max_storage_buffer_binding_size = 3072).unwrap())
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

/// What a product's epilogue returns beside its output, against the CPU: GELU's input
/// for the saving epilogue (`gelu_input`), op(a)'s row sums for `RowSums` (`row_sums`,
/// sums of `k` terms), nothing for the others. `atol` and `rtol` are the output's.
pub fn assert_second_output(
    what: &str,
    epilogue: engine::ops::matmul::Epilogue,
    second: Option<Tensor>,
    gelu_input: &[f32],
    row_sums: impl FnOnce() -> Vec<f32>,
    (k, atol, rtol): (usize, f32, f32),
) {
    use engine::ops::matmul::Epilogue;
    match (epilogue, second) {
        (Epilogue::GeluSavingInput, Some(saved)) => {
            assert_close(
                &format!("{what}: GELU's input"),
                &saved.to_vec(),
                gelu_input,
                atol,
                rtol,
            );
        }
        (Epilogue::RowSums, Some(sums)) => {
            let what = format!("{what}: row sums");
            assert_close(&what, &sums.to_vec(), &row_sums(), 1e-5 * k as f32, 1e-4);
        }
        (Epilogue::None | Epilogue::Gelu | Epilogue::GeluGradient, None) => {}
        (epilogue, second) => panic!(
            "{what}: {epilogue:?} returned a second output: {}",
            second.is_some()
        ),
    }
}

/// A plan file measured by one device running `work` (`IJEPA_MEASURE_PLANS`), its
/// choices then edited by `edit` (given the file's `plans` and a second device), and
/// followed by that second device running `work` on sizes `follow` of the same buckets:
/// the follower's plan log, once it is checked that it measured nothing and found no
/// choice stale or missing, and what `edit` returned.
pub fn follow_an_edited_plan_file<T>(
    name: &str,
    work: impl Fn(&Arc<Device>, usize),
    (measure, follow): (usize, usize),
    edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>, &Arc<Device>) -> T,
) -> (std::collections::BTreeSet<String>, T) {
    let dir = runs::temp_dir(name);
    let path = dir.join("plans.json");
    let measuring = Arc::new(Device::new().unwrap());
    measuring.set_measure_plans(true);
    measuring.use_plan_file(&path).unwrap();
    work(&measuring, measure);
    let mut file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(file["adapter"], measuring.info().name.as_str());
    let plans = file["plans"].as_object_mut().unwrap();
    // What was timed inside a timed candidate (the composed attention path's
    // products) is measured and written too.
    assert_eq!(plans.len(), measuring.measured_plans().len(), "{plans:?}");
    let follower = Arc::new(Device::new().unwrap());
    let edited = edit(plans, &follower);
    std::fs::write(&path, serde_json::to_string(&file).unwrap()).unwrap();

    follower.use_plan_file(&path).unwrap();
    follower.log_plans();
    work(&follower, follow);
    let log = follower.take_plan_log();
    assert!(follower.measured_plans().is_empty(), "nothing is measured");
    let used = follower.plan_file().unwrap();
    assert_eq!((used.stale, used.missing), (0, 0), "{used:?}");
    std::fs::remove_dir_all(&dir).unwrap();
    (log, edited)
}
