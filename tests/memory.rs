//! The pool's memory limit (`IJEPA_MEMORY_LIMIT`, `Device::set_memory_limit`): a buffer
//! beyond it first makes the pool release the buffers it keeps for reuse; one that still
//! does not fit is an `Error::OutOfMemory` from the op that wanted it, naming the sizes.
//! Alone in its process, since the limit is the device's.

mod common;

use common::device;
use engine::ops::{self, Transpose};
use engine::{parse_bytes, Error, Tensor};

const KIB: u64 = 1 << 10;

#[test]
fn a_memory_limit_releases_kept_buffers_then_fails_with_a_clear_error() {
    let dev = device();
    let base = dev.memory_held();
    dev.set_memory_limit(Some(base + 1024 * KIB));

    // Three 256 KiB buffers, then kept by the pool for reuse.
    let kept: Vec<Tensor> = (0..3)
        .map(|_| Tensor::zeros(&dev, &[64 * 1024]).unwrap())
        .collect();
    drop(kept);
    assert_eq!(dev.memory_held(), base + 3 * 256 * KIB);

    // 512 KiB, a size none of them serves: it fits only once they are released.
    let big = Tensor::full(&dev, &[128 * 1024], 2.0).unwrap();
    assert_eq!(dev.memory_held(), base + 512 * KIB);
    assert!(big.to_vec().iter().all(|&v| v == 2.0));

    // A product whose 2 MiB output cannot fit: an error from the op, not a panic.
    let a = Tensor::full(&dev, &[512, 1], 1.0).unwrap();
    let b = Tensor::full(&dev, &[1, 1024], 3.0).unwrap();
    let err = ops::matmul(&a, &b, Transpose::NONE, None).unwrap_err();
    assert!(matches!(err, Error::OutOfMemory { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("a buffer of 2.0 MiB") && message.contains("IJEPA_MEMORY_LIMIT"),
        "{message}"
    );

    // Without the limit the same product runs.
    dev.set_memory_limit(None);
    let c = ops::matmul(&a, &b, Transpose::NONE, None).unwrap();
    assert_eq!(c.shape(), [512, 1024]);
    assert!(c.to_vec().iter().all(|&v| v == 3.0));
}

#[test]
fn byte_counts_take_binary_units_and_name_what_they_reject() {
    assert_eq!(parse_bytes("6G"), Ok(6 << 30));
    assert_eq!(parse_bytes("512M"), Ok(512 << 20));
    assert_eq!(parse_bytes(" 2 GiB "), Ok(2 << 30));
    assert_eq!(parse_bytes("64k"), Ok(64 << 10));
    assert_eq!(parse_bytes("1000000"), Ok(1_000_000));
    for bad in ["12Q", "", "G", "0", "-5", "1.5G", "99999999999999999999G"] {
        let err = parse_bytes(bad).unwrap_err();
        assert!(err.contains(&format!("`{bad}`")), "{bad}: {err}");
    }
}
