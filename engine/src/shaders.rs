//! Every WGSL source of the project, one file per kernel family, compiled into the
//! binary, each with the layout of its `Params` struct as the Rust side declares it.
//! `ALL` lets the tests validate each with naga and hold each `Params` to its Rust
//! struct. gelu.wgsl holds functions only; the kernels that apply GELU have it
//! prepended. attention_layout.wgsl, the fused attention families' parameters and row
//! offsets, is prepended to each of them. matmul_subgroup.wgsl holds one entry point
//! that builds on matmul.wgsl. matmul_mixed.wgsl is the product with f16 operands;
//! matmul_mixed_subgroup.wgsl gives matmul_subgroup.wgsl's kernel its operands.
//! cooperative_matrix.wgsl holds the `enable` directives of the kernels on cooperative
//! matrices (matmul_coop.wgsl), prepended before everything else.

use crate::device::{KernelParams, ParamsLayout};
use crate::ops::attention::AttentionParams;
use crate::ops::cast::CastParams;
use crate::ops::elementwise::ElementwiseParams;
use crate::ops::gather::GatherParams;
use crate::ops::layernorm::LayerNormParams;
use crate::ops::layout::{CopyParams, PermuteParams};
use crate::ops::loss::{CrossEntropyParams, RegressionLossParams};
use crate::ops::matmul::MatmulParams;
use crate::ops::reduce::ReduceParams;
use crate::ops::softmax::SoftmaxParams;
use crate::ops::update::UpdateParams;

/// One WGSL file as compiled: its name, its source (with what is prepended to it)
/// and the layout of its `Params` struct, if it has one.
pub struct Shader {
    pub file: &'static str,
    pub source: &'static str,
    pub params: Option<ParamsLayout>,
}

/// `pub static NAME: Shader` for a WGSL file, with the files it builds on prepended
/// in order, and its `Params` layout (`None` for a file of functions only).
macro_rules! shader {
    ($name:ident, $file:literal, [$($before:literal),*], $params:expr) => {
        pub static $name: Shader = Shader {
            file: $file,
            source: concat!(
                $(include_str!(concat!("../../shaders/", $before)),)*
                include_str!(concat!("../../shaders/", $file))
            ),
            params: $params,
        };
    };
}

shader!(GELU, "gelu.wgsl", [], None);
shader!(
    ELEMENTWISE,
    "elementwise.wgsl",
    ["gelu.wgsl"],
    Some(ElementwiseParams::LAYOUT)
);
shader!(REDUCE, "reduce.wgsl", [], Some(ReduceParams::LAYOUT));
shader!(
    MATMUL,
    "matmul.wgsl",
    ["gelu.wgsl"],
    Some(MatmulParams::LAYOUT)
);
shader!(
    MATMUL_SUBGROUP,
    "matmul_subgroup.wgsl",
    ["gelu.wgsl", "matmul.wgsl"],
    Some(MatmulParams::LAYOUT)
);
shader!(
    MATMUL_MIXED,
    "matmul_mixed.wgsl",
    ["gelu.wgsl"],
    Some(MatmulParams::LAYOUT)
);
shader!(
    MATMUL_MIXED_SUBGROUP,
    "matmul_mixed_subgroup.wgsl",
    ["gelu.wgsl", "matmul_mixed.wgsl", "matmul_subgroup.wgsl"],
    Some(MatmulParams::LAYOUT)
);
shader!(COOPERATIVE_MATRIX, "cooperative_matrix.wgsl", [], None);
shader!(
    MATMUL_COOP,
    "matmul_coop.wgsl",
    ["cooperative_matrix.wgsl", "gelu.wgsl", "matmul_mixed.wgsl"],
    Some(MatmulParams::LAYOUT)
);
shader!(
    ATTENTION_LAYOUT,
    "attention_layout.wgsl",
    [],
    Some(AttentionParams::LAYOUT)
);
shader!(
    ATTENTION,
    "attention.wgsl",
    ["attention_layout.wgsl"],
    Some(AttentionParams::LAYOUT)
);
shader!(
    ATTENTION_SUBGROUP,
    "attention_subgroup.wgsl",
    ["attention_layout.wgsl"],
    Some(AttentionParams::LAYOUT)
);
shader!(
    ATTENTION_BLOCKED,
    "attention_blocked.wgsl",
    ["attention_layout.wgsl"],
    Some(AttentionParams::LAYOUT)
);
shader!(SOFTMAX, "softmax.wgsl", [], Some(SoftmaxParams::LAYOUT));
shader!(
    LAYERNORM,
    "layernorm.wgsl",
    [],
    Some(LayerNormParams::LAYOUT)
);
shader!(LAYOUT, "layout.wgsl", [], Some(PermuteParams::LAYOUT));
shader!(COPY, "copy.wgsl", [], Some(CopyParams::LAYOUT));
shader!(GATHER, "gather.wgsl", [], Some(GatherParams::LAYOUT));
shader!(LOSS, "loss.wgsl", [], Some(RegressionLossParams::LAYOUT));
shader!(
    CROSS_ENTROPY,
    "cross_entropy.wgsl",
    [],
    Some(CrossEntropyParams::LAYOUT)
);
shader!(UPDATE, "update.wgsl", [], Some(UpdateParams::LAYOUT));
shader!(CAST, "cast.wgsl", [], Some(CastParams::LAYOUT));

pub static ALL: &[&Shader] = &[
    &GELU,
    &ELEMENTWISE,
    &REDUCE,
    &MATMUL,
    &MATMUL_SUBGROUP,
    &MATMUL_MIXED,
    &MATMUL_MIXED_SUBGROUP,
    &COOPERATIVE_MATRIX,
    &MATMUL_COOP,
    &ATTENTION_LAYOUT,
    &ATTENTION,
    &ATTENTION_SUBGROUP,
    &ATTENTION_BLOCKED,
    &SOFTMAX,
    &LAYERNORM,
    &LAYOUT,
    &COPY,
    &GATHER,
    &LOSS,
    &CROSS_ENTROPY,
    &UPDATE,
    &CAST,
];
