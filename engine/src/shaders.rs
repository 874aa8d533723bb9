//! Every WGSL source of the project, one file per kernel family, compiled into the
//! binary, each with the layout of its `Params` struct as the Rust side declares it.
//! `ALL` lets the tests validate each with naga and hold each `Params` to its Rust
//! struct. gelu.wgsl holds functions only; the kernels that apply GELU have it
//! prepended, as f16.wgsl's rounding to f16 is to the kernels that store or multiply
//! f16 values. attention_layout.wgsl, the fused attention families' parameters and row
//! offsets, is prepended to each of them, and attention_bindings.wgsl, their bindings
//! with qkv as words, to the three that read it a word at a time (all but the subgroup
//! family). matmul_subgroup.wgsl holds one entry point
//! that builds on matmul.wgsl. matmul_mixed.wgsl is the product with f16 operands;
//! matmul_mixed_subgroup.wgsl gives matmul_subgroup.wgsl's kernel its operands.
//! matmul_coop.wgsl is the product on cooperative matrices, built on
//! matmul_mixed.wgsl, and attention_coop.wgsl the fused attention on them; both on the
//! fragment operations of coop_fragments.wgsl (the hardware's) or of coop_emulated.wgsl
//! (lane by lane, for any adapter with f16).
//! matmul_params.wgsl, the parameters and overrides of both matmul families
//! (matmul.wgsl, matmul_mixed.wgsl), and after it matmul_tiles.wgsl, the bodies of
//! their flat and tiled kernels (written on each family's loads and stores; naga needs
//! the overrides declared before the tiles they size), are prepended to every module
//! built on them.
//! column_sums.wgsl, how a column sum's workgroups share its columns and rows, is
//! prepended to the two kernel families that sum columns (reduce.wgsl, layernorm.wgsl);
//! row_lanes.wgsl, which row each invocation of a row kernel takes, to the two families
//! of row kernels (softmax.wgsl, layernorm.wgsl).
//! Directives (`enable f16;`) go before everything else.

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

/// One WGSL module as compiled: the name of its static here (what tells it from
/// another: the emulated cooperative-matrix kernels end with the same file), its file,
/// its source (with what is prepended to it), the files prepended, and the layout of
/// its `Params` struct, if it has one.
pub struct Shader {
    pub name: &'static str,
    pub file: &'static str,
    pub source: &'static str,
    pub parts: &'static [&'static str],
    pub params: Option<ParamsLayout>,
}

/// `pub static NAME: Shader` for a WGSL file, with the extensions it enables, the
/// files it builds on prepended in order, and its `Params` layout (`None` for a file
/// of functions only).
macro_rules! shader {
    ($name:ident, $file:literal, [$($before:literal),*], $params:expr) => {
        shader!($name, $file, enable [], [$($before),*], $params);
    };
    ($name:ident, $file:literal, enable [$($ext:ident),*], [$($before:literal),*], $params:expr) => {
        pub static $name: Shader = Shader {
            name: stringify!($name),
            file: $file,
            source: concat!(
                $("enable ", stringify!($ext), ";\n",)*
                $(include_str!(concat!("../../shaders/", $before)),)*
                include_str!(concat!("../../shaders/", $file))
            ),
            parts: &[$($before),*],
            params: $params,
        };
    };
}

shader!(GELU, "gelu.wgsl", [], None);
shader!(F16, "f16.wgsl", [], None);
shader!(
    ELEMENTWISE,
    "elementwise.wgsl",
    ["gelu.wgsl"],
    Some(ElementwiseParams::LAYOUT)
);
shader!(
    REDUCE,
    "reduce.wgsl",
    ["column_sums.wgsl"],
    Some(ReduceParams::LAYOUT)
);
shader!(
    MATMUL,
    "matmul.wgsl",
    ["gelu.wgsl", "matmul_params.wgsl", "matmul_tiles.wgsl"],
    Some(MatmulParams::LAYOUT)
);
shader!(
    MATMUL_SUBGROUP,
    "matmul_subgroup.wgsl",
    [
        "gelu.wgsl",
        "matmul_params.wgsl",
        "matmul_tiles.wgsl",
        "matmul.wgsl"
    ],
    Some(MatmulParams::LAYOUT)
);
shader!(
    MATMUL_MIXED,
    "matmul_mixed.wgsl",
    [
        "f16.wgsl",
        "gelu.wgsl",
        "matmul_params.wgsl",
        "matmul_tiles.wgsl"
    ],
    Some(MatmulParams::LAYOUT)
);
shader!(
    MATMUL_MIXED_SUBGROUP,
    "matmul_mixed_subgroup.wgsl",
    [
        "f16.wgsl",
        "gelu.wgsl",
        "matmul_params.wgsl",
        "matmul_tiles.wgsl",
        "matmul_mixed.wgsl",
        "matmul_subgroup.wgsl"
    ],
    Some(MatmulParams::LAYOUT)
);
shader!(
    MATMUL_COOP,
    "matmul_coop.wgsl",
    enable [f16, wgpu_cooperative_matrix],
    [
        "f16.wgsl",
        "gelu.wgsl",
        "matmul_params.wgsl",
        "matmul_tiles.wgsl",
        "matmul_mixed.wgsl",
        "coop_fragments.wgsl"
    ],
    Some(MatmulParams::LAYOUT)
);
shader!(
    MATMUL_COOP_EMULATED,
    "coop_emulated.wgsl",
    enable[f16],
    [
        "f16.wgsl",
        "gelu.wgsl",
        "matmul_params.wgsl",
        "matmul_tiles.wgsl",
        "matmul_mixed.wgsl",
        "matmul_coop.wgsl"
    ],
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
    ["attention_layout.wgsl", "attention_bindings.wgsl"],
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
    ["attention_layout.wgsl", "attention_bindings.wgsl"],
    Some(AttentionParams::LAYOUT)
);
// The fragment operations come after the kernels here: naga (30) lowers declarations in
// source order, and where the fragments' use of coop_tiles comes first, the anonymous
// override that sizes it lands before SG, on which its override processing fails.
shader!(
    ATTENTION_COOP,
    "coop_fragments.wgsl",
    enable [f16, wgpu_cooperative_matrix],
    [
        "f16.wgsl",
        "attention_layout.wgsl",
        "attention_bindings.wgsl",
        "attention_coop.wgsl"
    ],
    Some(AttentionParams::LAYOUT)
);
shader!(
    ATTENTION_COOP_EMULATED,
    "coop_emulated.wgsl",
    enable[f16],
    [
        "f16.wgsl",
        "attention_layout.wgsl",
        "attention_bindings.wgsl",
        "attention_coop.wgsl"
    ],
    Some(AttentionParams::LAYOUT)
);
shader!(
    SOFTMAX,
    "softmax.wgsl",
    ["row_lanes.wgsl"],
    Some(SoftmaxParams::LAYOUT)
);
shader!(
    LAYERNORM,
    "layernorm.wgsl",
    ["f16.wgsl", "column_sums.wgsl", "row_lanes.wgsl"],
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
shader!(CAST, "cast.wgsl", ["f16.wgsl"], Some(CastParams::LAYOUT));

/// The lanes per subgroup coop_emulated.wgsl is compiled for (its 8 elements of a
/// 16x16 accumulator a lane): its "subgroups" are workgroup invocations, so any
/// adapter runs them.
pub const COOP_EMULATED_LANES: u32 = 32;

pub static ALL: &[&Shader] = &[
    &GELU,
    &F16,
    &ELEMENTWISE,
    &REDUCE,
    &MATMUL,
    &MATMUL_SUBGROUP,
    &MATMUL_MIXED,
    &MATMUL_MIXED_SUBGROUP,
    &MATMUL_COOP,
    &MATMUL_COOP_EMULATED,
    &ATTENTION_LAYOUT,
    &ATTENTION,
    &ATTENTION_SUBGROUP,
    &ATTENTION_BLOCKED,
    &ATTENTION_COOP,
    &ATTENTION_COOP_EMULATED,
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
