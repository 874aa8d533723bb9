//! Bad shapes and indices are refused on the host, before any dispatch, with an error
//! that names both shapes or the offending index.

mod common;

use common::{device, upload};
use engine::ops::{self, Transpose};
use engine::{Indices, Tensor};

fn message<T: std::fmt::Debug>(r: engine::Result<T>) -> String {
    r.expect_err("expected an error").to_string()
}

#[test]
fn matmul_inner_dim_mismatch_names_both_shapes() {
    let a = upload(&[2, 3], &[0.0; 6]);
    let b = upload(&[4, 5], &[0.0; 20]);
    let m = message(ops::matmul(&a, &b, Transpose::NONE, None));
    assert!(m.contains("[2, 3]") && m.contains("[4, 5]"), "{m}");
    let m = message(ops::matmul(
        &upload(&[2, 2, 3], &[0.0; 12]),
        &upload(&[3, 3, 4], &[0.0; 36]),
        Transpose::NONE,
        None,
    ));
    assert!(m.contains("[2, 2, 3]") && m.contains("[3, 3, 4]"), "{m}");
    let m = message(ops::matmul(
        &a,
        &upload(&[3, 4], &[0.0; 12]),
        Transpose::NONE,
        Some(&upload(&[3], &[0.0; 3])),
    ));
    assert!(m.contains("bias [3]") && m.contains("N=4"), "{m}");
}

#[test]
fn row_sums_are_refused_with_a_bias_or_an_untransposed_a() {
    use engine::ops::matmul::{Epilogue, MatmulShape};
    let (a, b) = (upload(&[8, 4], &[0.0; 32]), upload(&[8, 4], &[0.0; 32]));
    let bias = upload(&[4], &[0.0; 4]);
    let m = message(MatmulShape::of(
        &a,
        &b,
        Transpose::A,
        Some(&bias),
        Epilogue::RowSums,
    ));
    assert!(m.contains("RowSums") && m.contains("no bias"), "{m}");
    let m = message(MatmulShape::of(
        &a,
        &upload(&[4, 4], &[0.0; 16]),
        Transpose::NONE,
        None,
        Epilogue::RowSums,
    ));
    assert!(
        m.contains("stored transposed") && m.contains("[8, 4]"),
        "{m}"
    );
}

#[test]
fn broadcast_mismatch_names_both_shapes() {
    let m = message(ops::add(
        &upload(&[2, 3], &[0.0; 6]),
        &upload(&[2], &[0.0; 2]),
    ));
    assert!(m.contains("[2, 3]") && m.contains("[2]"), "{m}");
}

#[test]
fn gather_index_out_of_range_names_the_index() {
    let x = upload(&[1, 4, 2], &[0.0; 8]);
    let idx = Indices::new(&device(), &[1, 3], &[0, 7, 1]).unwrap();
    let m = message(ops::gather_rows(&x, &idx));
    assert!(
        m.contains("index 7") && m.contains("position 1") && m.contains("size 4"),
        "{m}"
    );
    let m = message(Indices::new(&device(), &[2], &[0, -1]));
    assert!(m.contains("index -1"), "{m}");
}

#[test]
fn cross_entropy_label_out_of_range_names_the_label() {
    let logits = upload(&[2, 3], &[0.0; 6]);
    let labels = Indices::new(&device(), &[2], &[2, 3]).unwrap();
    let m = message(ops::cross_entropy(&logits, &labels));
    assert!(m.contains("index 3") && m.contains("size 3"), "{m}");
}

#[test]
fn other_shape_errors_name_the_shapes() {
    let x = upload(&[2, 3], &[0.0; 6]);
    let m = message(ops::layernorm(
        &x,
        Some((&upload(&[2], &[0.0; 2]), &upload(&[3], &[0.0; 3]))),
        1e-6,
    ));
    assert!(m.contains("[2]") && m.contains("[2, 3]"), "{m}");
    let m = message(ops::concat(&[&x, &upload(&[3, 3], &[0.0; 9])], 1));
    assert!(m.contains("[3, 3]") && m.contains("[2, 3]"), "{m}");
    let m = message(ops::permute(&x, &[0, 0]));
    assert!(m.contains("[0, 0]") && m.contains("[2, 3]"), "{m}");
    let m = message(ops::reshape(&x, &[4]));
    assert!(m.contains("[2, 3]") && m.contains("[4]"), "{m}");
    let m = message(ops::patchify(&upload(&[1, 1, 5, 4], &[0.0; 20]), 2));
    assert!(m.contains("[1, 1, 5, 4]") && m.contains('2'), "{m}");
    let m = message(ops::smooth_l1_loss(&x, &upload(&[3, 2], &[0.0; 6]), 1.0));
    assert!(m.contains("[2, 3]") && m.contains("[3, 2]"), "{m}");
    let m = message(Tensor::from_slice(&device(), &[2, 2], &[0.0; 3]));
    assert!(m.contains("[2, 2]") && m.contains('3'), "{m}");
}

/// A row plan whose lanes per row are not a power of two up to a workgroup is refused
/// by name before it reaches a kernel, whose segmented reductions assume one.
#[test]
fn a_row_plan_of_impossible_lanes_is_refused() {
    use engine::ops::rows::{RowKernel, RowPlan, ROW_WG};
    let x = upload(&[5, 24], &[0.5; 120]);
    for lanes in [0, 3, 2 * ROW_WG] {
        let plan = RowPlan {
            kernel: RowKernel::Lanes(lanes),
            rows: 5,
            cols: 24,
        };
        let m = message(ops::softmax::softmax_forward_with(&plan, &x));
        assert!(
            m.contains("power of two") && m.contains(&format!("Lanes({lanes})")),
            "{m}"
        );
    }
}

#[test]
fn backward_of_a_non_scalar_is_refused() {
    let x = upload(&[2], &[1.0, 2.0]).requires_grad();
    let y = ops::scale(&x, 2.0).unwrap();
    let m = message(engine::backward(&y));
    assert!(m.contains("[2]"), "{m}");
}

#[test]
fn oversized_tensor_is_refused_before_allocation() {
    let limit = device().info().max_storage_binding;
    let elems = (limit / 4 + 1) as usize;
    let m = message(Tensor::zeros(&device(), &[elems]));
    assert!(
        m.contains("max storage binding")
            && m.contains(&format!("a [{elems}] F32 tensor of"))
            && m.contains("smaller batch"),
        "{m}"
    );
}

#[test]
fn a_grid_past_the_workgroup_limit_is_refused_at_the_op_that_asks_for_it() {
    use engine::ops::matmul::{matmul_with, Epilogue, MatmulKernel, MatmulPlan, MatmulShape};
    // Row tiles and batch entries fold over two dimensions (tests/matmul.rs); column
    // tiles do not. On a device allowing 8 workgroups per dimension, a product 9 vec4
    // tiles (64 columns each) wide.
    let dev = common::small_grid_device();
    let a = Tensor::zeros(&dev, &[1, 4]).unwrap();
    let b = Tensor::zeros(&dev, &[4, 8 * 64 + 4]).unwrap();
    let shape = MatmulShape::of(&a, &b, Transpose::NONE, None, Epilogue::None).unwrap();
    let plan = MatmulPlan {
        shape,
        kernel: MatmulKernel::Vec4,
        split_k: None,
    };
    let m = message(matmul_with(&plan, &a, &b, None));
    assert!(
        m.contains("8 workgroups per dimension")
            && m.contains("matmul_vec4")
            && m.contains("[9, 1, 1]"),
        "{m}"
    );
}

#[test]
fn attention_refuses_a_qkv_that_does_not_split_into_heads_and_unrunnable_kernels() {
    use engine::ops::attention::{attention_fused, FusedAttention};
    // 20 is not 3 x heads x head_dim for 2 heads.
    let qkv = upload(&[1, 4, 20], &[0.0; 80]);
    let m = message(ops::attention(&qkv, 2, 1.0));
    assert!(m.contains("[1, 4, 20]") && m.contains("2 heads"), "{m}");
    let m = message(ops::attention(&upload(&[1, 4, 24], &[0.0; 96]), 0, 1.0));
    assert!(m.contains("0 heads"), "{m}");
    // Head dim 6 (qkv [1, 4, 36] with 2 heads): not a multiple of 8 for the blocked
    // kernels, nor of 4 for the subgroup ones.
    let qkv = upload(&[1, 4, 36], &[0.0; 144]);
    for kind in [FusedAttention::Blocked, FusedAttention::Subgroup] {
        let m = message(attention_fused(kind, &qkv, 2, 1.0));
        assert!(m.contains("head dim 6") && m.contains("multiple of"), "{m}");
    }
    // Head dim 136: more than any family holds in registers.
    let qkv = upload(&[1, 1, 408], &[0.0; 408]);
    for kind in FusedAttention::ALL {
        let m = message(attention_fused(kind, &qkv, 1, 1.0));
        assert!(m.contains("head dim 136") && m.contains("up to 128"), "{m}");
    }
}

#[test]
fn the_cooperative_matrix_kernel_is_refused_where_the_device_has_not_opened_them() {
    use engine::ops::cast::cast_forward;
    use engine::ops::matmul::{matmul_with, Epilogue, MatmulKernel, MatmulPlan, MatmulShape};
    let dev = device();
    let a = cast_forward(&upload(&[2, 4], &[0.5; 8]), engine::DType::F16).unwrap();
    let b = cast_forward(&upload(&[4, 2], &[0.5; 8]), engine::DType::F16).unwrap();
    let shape = MatmulShape::of(&a, &b, Transpose::NONE, None, Epilogue::None).unwrap();
    assert!(MatmulKernel::MixedCoop.takes(&shape));
    let f32_operands = MatmulShape::of(
        &upload(&[2, 4], &[0.5; 8]),
        &b,
        Transpose::NONE,
        None,
        Epilogue::None,
    )
    .unwrap();
    assert!(
        MatmulKernel::MixedCoop.takes(&f32_operands),
        "an f32 operand is rounded to f16 as it is staged"
    );
    let plan = MatmulPlan {
        kernel: MatmulKernel::MixedCoop,
        ..MatmulPlan::new(&dev, &shape)
    };
    match dev.cooperative_subgroup() {
        None => {
            let m = message(matmul_with(&plan, &a, &b, None));
            assert!(
                m.contains("MixedCoop") && m.contains("16x16x16 f16 -> f32 cooperative matrices"),
                "{m}"
            );
        }
        Some(_) => assert_eq!(matmul_with(&plan, &a, &b, None).unwrap().to_vec(), [1.0; 4]),
    }
}

/// Asking for cooperative matrices on an adapter without them stops with what it
/// lacks, before anything runs; where it has them, `ijepa info` says they are on.
#[test]
fn cooperative_matrices_asked_of_an_adapter_without_them_name_what_it_lacks() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ijepa"))
        .arg("info")
        .env(engine::device::COOPERATIVE_MATRIX_ENV, "1")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        assert!(text.contains("cooperative kernels:    on"), "{text}");
    } else {
        assert!(
            text.contains("IJEPA_COOPERATIVE_MATRIX=1, but") && text.contains("lacks"),
            "{text}"
        );
    }
}
