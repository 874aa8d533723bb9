//! The sizes the kernel tests run every candidate plan on (tests/matmul.rs,
//! tests/attention.rs, tests/kernels.rs), and the keys of those plans, which
//! tests/plans.rs holds against the plans a training step runs in production.

use std::collections::BTreeSet;

use engine::ops::attention::{AttentionPlan, AttentionShape};
use engine::ops::matmul::{Epilogue, MatmulPlan, MatmulShape, MatmulTypes, Transpose};
use engine::ops::rows::RowPlan;
use engine::ops::{layernorm, softmax};
use engine::{DType, Device};

const TRANSPOSES: [Transpose; 4] = [
    Transpose::NONE,
    Transpose::A,
    Transpose::B,
    Transpose { a: true, b: true },
];

/// Every product the matmul test runs, each on every candidate plan:
/// - (batch, m, k, n) with sizes that are not multiples of any tile, each with every
///   transpose, a b per batch entry or shared (not with a transposed batched a, which
///   is refused), with and without bias; from (3, 4, 8, 12) on N and K are multiples
///   of 4 (the vec4 kernels) but not of their tiles, and the last four have an M that
///   is not, which those kernels take when a is not transposed;
/// - the GELU epilogue over every transpose, with bias;
/// - weight gradients a^T b with long K (split-K candidates, on every kernel that takes
///   the sliced product): 2, 4, 8 and 16 slices, K = 2051 and 3003 leaving 3 rows over
///   the equal slices, M and N multiples of 4 (the vec4 kernels) or not.
pub fn matmul_shapes() -> Vec<MatmulShape> {
    let mut shapes = Vec::new();
    let shape = |(batch, m, k, n), t, b_shared, bias, epilogue| MatmulShape {
        batch,
        m,
        k,
        n,
        t,
        b_shared,
        bias,
        epilogue,
        types: MatmulTypes::F32,
    };
    for sizes in [
        (1, 1, 1, 1),
        (1, 3, 7, 5),
        (2, 33, 65, 7),
        (3, 65, 33, 130),
        (1, 130, 7, 65),
        (2, 64, 64, 64),
        (3, 4, 8, 12),
        (1, 68, 20, 132),
        (2, 200, 36, 144),
        (2, 12, 132, 36),
        (3, 1, 4, 4),
        (1, 3, 12, 8),
        (2, 33, 20, 12),
        (2, 131, 36, 68),
        (2, 12, 35, 8),
    ] {
        for t in TRANSPOSES {
            let sharing: &[bool] = if t.a { &[false] } else { &[false, true] };
            for &b_shared in sharing {
                for bias in [false, true] {
                    shapes.push(shape(sizes, t, b_shared, bias, Epilogue::None));
                }
            }
        }
    }
    for sizes in [
        (1, 3, 7, 5),
        (2, 36, 20, 12),
        (1, 130, 12, 68),
        (2, 37, 8, 12),
    ] {
        for t in TRANSPOSES {
            shapes.push(shape(sizes, t, false, true, Epilogue::Gelu));
            shapes.push(shape(sizes, t, false, true, Epilogue::GeluSavingInput));
            shapes.push(shape(sizes, t, false, false, Epilogue::GeluGradient));
        }
    }
    for (k, m, n) in [
        (1024, 64, 64),
        (2048, 40, 70),
        (2051, 40, 70),
        (2051, 36, 68),
        (3000, 65, 33),
        (3003, 65, 33),
        (4096, 64, 64),
        (8192, 8, 12),
    ] {
        shapes.push(shape(
            (1, m, k, n),
            Transpose::A,
            true,
            false,
            Epilogue::None,
        ));
    }
    // A weight gradient with its bias gradient (op(a)'s row sums): multiples of 4 (the
    // subgroup kernel's), rows past a tile, slices of K (1024 and 2048 in two and more;
    // 2051 in four slices of 512 and a rest of 3 rows, which no kernel takes whole);
    // and a batch of them, and sizes that only the tiled mixed kernel sums rows for (M
    // or K not multiples of 4).
    for (batch, m, k, n) in [
        (1, 36, 20, 68),
        (1, 64, 1024, 12),
        (1, 40, 2048, 8),
        (1, 40, 2051, 8),
        (2, 36, 20, 12),
        (1, 33, 20, 12),
        (1, 36, 21, 12),
    ] {
        shapes.push(shape(
            (batch, m, k, n),
            Transpose::A,
            batch == 1,
            false,
            Epilogue::RowSums,
        ));
    }
    shapes
}

/// The row sums of op(a) for a stored [batch, K, M] (`Epilogue::RowSums`): [batch, M].
pub fn row_sums_of_transposed(a: &[f32], batch: usize, k: usize, m: usize) -> Vec<f32> {
    let mut sums = vec![0.0; batch * m];
    for (b, entry) in a.chunks(k * m).enumerate() {
        for row in entry.chunks(m) {
            for (s, v) in sums[b * m..(b + 1) * m].iter_mut().zip(row) {
                *s += v;
            }
        }
    }
    sums
}

/// The stored shapes of a product's a, b and output. A weight gradient's a is 2-D:
/// [K, M] (a shared b needs it so when transposed).
pub fn operand_shapes(shape: &MatmulShape) -> (Vec<usize>, Vec<usize>, Vec<usize>) {
    let MatmulShape {
        batch,
        m,
        k,
        n,
        t,
        b_shared,
        ..
    } = *shape;
    let mut a_shape = if t.a { vec![k, m] } else { vec![m, k] };
    let mut out_shape = vec![m, n];
    if !(b_shared && t.a) {
        a_shape.insert(0, batch);
        out_shape.insert(0, batch);
    }
    let mut b_shape = if t.b { vec![n, k] } else { vec![k, n] };
    if !b_shared {
        b_shape.insert(0, batch);
    }
    (a_shape, b_shape, out_shape)
}

/// The products of the mixed-precision test (tests/mixed.rs), each run on the mixed
/// kernels (`MatmulPlan::mixed_candidates`): sizes of `matmul_shapes` that are not
/// multiples of any tile (odd N among them), each with every transpose, shared b or
/// not, with and without bias, in every mix of f16 operands with an f32 output, and
/// both operands in f16 with an f16 output where N is even; then each epilogue in the
/// mixes a mixed-precision MLP runs it in (fc1's GELU into f16 with its input saved in
/// f16, its gradient from an f32 dy and an f16 weight through GELU's input in f16, into
/// f16 as the hidden layer is stored), and in f32; last, weight gradients of f32
/// operands, as a mixed backward multiplies them.
pub fn mixed_matmul_shapes() -> Vec<MatmulShape> {
    use engine::DType::{F16, F32};
    let mixes = |c| {
        [
            MatmulTypes {
                a: F16,
                b: F16,
                c,
                pre: F32,
            },
            MatmulTypes {
                a: F16,
                b: F32,
                c,
                pre: F32,
            },
            MatmulTypes {
                a: F32,
                b: F16,
                c,
                pre: F32,
            },
        ]
    };
    let mut shapes = Vec::new();
    let shape = |(batch, m, k, n), t, b_shared, bias, epilogue, types| MatmulShape {
        batch,
        m,
        k,
        n,
        t,
        b_shared,
        bias,
        epilogue,
        types,
    };
    for sizes in [
        (1, 1, 1, 1),
        (1, 3, 7, 5),
        (2, 33, 65, 6),
        (3, 65, 33, 130),
        (1, 68, 20, 132),
        (2, 131, 36, 68),
        (2, 12, 35, 8),
    ] {
        let n_even = sizes.3 % 2 == 0;
        for t in TRANSPOSES {
            let sharing: &[bool] = if t.a { &[false] } else { &[false, true] };
            for &b_shared in sharing {
                for bias in [false, true] {
                    for types in mixes(F32) {
                        shapes.push(shape(sizes, t, b_shared, bias, Epilogue::None, types));
                    }
                    if n_even {
                        let types = mixes(F16)[0];
                        shapes.push(shape(sizes, t, b_shared, bias, Epilogue::None, types));
                    }
                }
            }
        }
    }
    for sizes in [(1, 3, 7, 6), (2, 36, 20, 12), (2, 37, 8, 12)] {
        for t in TRANSPOSES {
            for c in [F32, F16] {
                let types = mixes(c)[0];
                shapes.push(shape(sizes, t, false, true, Epilogue::Gelu, types));
                // GELU's input is saved as c is stored.
                shapes.push(shape(
                    sizes,
                    t,
                    false,
                    true,
                    Epilogue::GeluSavingInput,
                    MatmulTypes { pre: c, ..types },
                ));
            }
            for (pre, c) in [(F32, F32), (F16, F32), (F16, F16)] {
                let types = MatmulTypes {
                    pre,
                    c,
                    ..mixes(F32)[2]
                };
                shapes.push(shape(sizes, t, false, false, Epilogue::GeluGradient, types));
            }
        }
    }
    // Weight gradients a^T b of a 2-D a [K, M] and b [K, N], the form split-K takes:
    // K split in 4 on a GPU (slices of 512), in 2 (the candidate count), in 2 with a
    // row left over (odd), which a product in the same arithmetic adds.
    for k in [2048, 1000, 1001] {
        for types in mixes(F32) {
            shapes.push(shape(
                (1, 24, k, 20),
                Transpose::A,
                true,
                false,
                Epilogue::None,
                types,
            ));
        }
    }
    // With op(a)'s row sums, in the subgroup kernel's sizes.
    for types in mixes(F32) {
        shapes.push(shape(
            (1, 36, 20, 12),
            Transpose::A,
            true,
            false,
            Epilogue::RowSums,
            types,
        ));
    }
    // Weight gradients with row sums of operands both stored in f32, as a mixed step's
    // backward runs them (an f32 input and dc) on the mixed kernels: in the subgroup
    // kernel's sizes, in sizes only the tiled ones take, and split along K.
    for sizes in [(1, 36, 20, 12), (1, 33, 20, 12), (1, 40, 2048, 8)] {
        shapes.push(shape(
            sizes,
            Transpose::A,
            true,
            false,
            Epilogue::RowSums,
            MatmulTypes::F32,
        ));
    }
    shapes
}

/// (images, heads, tokens, head dim) of the attention test: token counts that are not
/// multiples of the 32- or 64-row workgroups or the key tile, head dims from 8 to 128
/// (tiles of 32, 32 and 16 keys; at 72 and 128 the blocked kernels stage a tile's rows
/// in chunks that do not divide it).
pub const ATTENTION: [(usize, usize, usize, usize); 8] = [
    (1, 1, 1, 16),
    (2, 4, 70, 8),
    (3, 1, 7, 16),
    (1, 2, 33, 32),
    (2, 1, 65, 64),
    (1, 1, 130, 128),
    (1, 2, 197, 24),
    (1, 1, 45, 72),
];

/// (rows, cols) of the softmax test: rows shorter and longer than `SHORT_ROW`, whose
/// short rows' lanes (`short_row_lanes`) run through every count a GPU's rule picks.
pub const SOFTMAX: [(usize, usize); 10] = [
    (5, 1),
    (5, 3),
    (5, 7),
    (66, 8),
    (70, 24),
    (5, 33),
    (5, 65),
    (5, 130),
    (5, 196),
    (5, 257),
];

/// (rows, cols) of the LayerNorm test (each with and without affine parameters): the
/// short rows' lanes run through every count a GPU's rule picks, as the softmax test's.
pub fn layernorm_shapes() -> Vec<(usize, usize)> {
    let mut shapes = Vec::new();
    for cols in [3, 7, 24, 33, 64, 65, 130, 300] {
        for rows in [1, 7, 300] {
            shapes.push((rows, cols));
        }
    }
    shapes
}

/// The keys of every plan the kernel tests run on this device.
pub fn tested_plan_keys(device: &Device) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for shape in matmul_shapes() {
        keys.extend(
            MatmulPlan::candidates(device, &shape)
                .iter()
                .map(MatmulPlan::key),
        );
    }
    for shape in mixed_matmul_shapes() {
        keys.extend(
            MatmulPlan::mixed_candidates(device, &shape)
                .iter()
                .map(MatmulPlan::key),
        );
    }
    // The attention test runs each case on an f32 and an f16 qkv.
    for ((batch, heads, tokens, hd), qkv) in ATTENTION
        .into_iter()
        .flat_map(|case| [(case, DType::F32), (case, DType::F16)])
    {
        let shape = AttentionShape {
            batch,
            tokens,
            heads,
            head_dim: hd,
            qkv,
        };
        let plans = AttentionPlan::candidates(device, &shape);
        keys.extend(plans.iter().map(AttentionPlan::key));
    }
    for (rows, cols) in SOFTMAX {
        keys.extend(
            RowPlan::candidates(device, rows, cols)
                .iter()
                .map(softmax::plan_key),
        );
    }
    for (rows, cols) in layernorm_shapes() {
        for plan in RowPlan::candidates(device, rows, cols) {
            keys.extend([false, true].map(|affine| layernorm::plan_key(&plan, affine)));
        }
    }
    keys
}
