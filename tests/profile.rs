//! IJEPA_PROFILE=1 times every dispatch by kernel (GPU timestamps where the adapter has
//! them). Alone in its process: the variable must be set before the device exists.

use engine::ops::{matmul::matmul_forward, Transpose};
use engine::{Device, Tensor};

#[test]
fn profiling_counts_and_times_every_dispatch() {
    std::env::set_var("IJEPA_PROFILE", "1");
    let dev = Device::shared().unwrap();
    let a = Tensor::from_slice(&dev, &[64, 64], &vec![0.5; 64 * 64]).unwrap();
    for _ in 0..3 {
        matmul_forward(&a, &a, Transpose::NONE, None).unwrap();
    }
    let (rows, _) = dev.profile_report();
    let (_, calls, seconds) = rows
        .iter()
        .find(|r| r.0.starts_with("matmul"))
        .expect("matmul in the report");
    assert_eq!(*calls, 3);
    assert!(*seconds > 0.0);
}
