//! Every WGSL source of the project, one file per kernel family, compiled into the
//! binary, each with the layout of its `Params` struct as the Rust side declares it.
//! `ALL` lets the tests validate each with naga and hold each `Params` to its Rust
//! struct. gelu.wgsl holds functions only; the kernels that apply GELU have it
//! prepended. attention_layout.wgsl, the fused attention families' parameters and row
//! offsets, is prepended to each of them. matmul_subgroup.wgsl holds one entry point
//! that builds on matmul.wgsl.

use crate::device::{KernelParams, ParamsLayout};
use crate::ops::attention::AttentionParams;
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

macro_rules! wgsl {
    ($file:literal) => {
        include_str!(concat!("../../shaders/", $file))
    };
}

pub static GELU: Shader = Shader {
    file: "gelu.wgsl",
    source: wgsl!("gelu.wgsl"),
    params: None,
};
pub static ELEMENTWISE: Shader = Shader {
    file: "elementwise.wgsl",
    source: concat!(wgsl!("gelu.wgsl"), wgsl!("elementwise.wgsl")),
    params: Some(ElementwiseParams::LAYOUT),
};
pub static REDUCE: Shader = Shader {
    file: "reduce.wgsl",
    source: wgsl!("reduce.wgsl"),
    params: Some(ReduceParams::LAYOUT),
};
pub static MATMUL: Shader = Shader {
    file: "matmul.wgsl",
    source: concat!(wgsl!("gelu.wgsl"), wgsl!("matmul.wgsl")),
    params: Some(MatmulParams::LAYOUT),
};
pub static MATMUL_SUBGROUP: Shader = Shader {
    file: "matmul_subgroup.wgsl",
    source: concat!(
        wgsl!("gelu.wgsl"),
        wgsl!("matmul.wgsl"),
        wgsl!("matmul_subgroup.wgsl")
    ),
    params: Some(MatmulParams::LAYOUT),
};
pub static ATTENTION_LAYOUT: Shader = Shader {
    file: "attention_layout.wgsl",
    source: wgsl!("attention_layout.wgsl"),
    params: Some(AttentionParams::LAYOUT),
};
pub static ATTENTION: Shader = Shader {
    file: "attention.wgsl",
    source: concat!(wgsl!("attention_layout.wgsl"), wgsl!("attention.wgsl")),
    params: Some(AttentionParams::LAYOUT),
};
pub static ATTENTION_SUBGROUP: Shader = Shader {
    file: "attention_subgroup.wgsl",
    source: concat!(
        wgsl!("attention_layout.wgsl"),
        wgsl!("attention_subgroup.wgsl")
    ),
    params: Some(AttentionParams::LAYOUT),
};
pub static ATTENTION_BLOCKED: Shader = Shader {
    file: "attention_blocked.wgsl",
    source: concat!(
        wgsl!("attention_layout.wgsl"),
        wgsl!("attention_blocked.wgsl")
    ),
    params: Some(AttentionParams::LAYOUT),
};
pub static SOFTMAX: Shader = Shader {
    file: "softmax.wgsl",
    source: wgsl!("softmax.wgsl"),
    params: Some(SoftmaxParams::LAYOUT),
};
pub static LAYERNORM: Shader = Shader {
    file: "layernorm.wgsl",
    source: wgsl!("layernorm.wgsl"),
    params: Some(LayerNormParams::LAYOUT),
};
pub static LAYOUT: Shader = Shader {
    file: "layout.wgsl",
    source: wgsl!("layout.wgsl"),
    params: Some(PermuteParams::LAYOUT),
};
pub static COPY: Shader = Shader {
    file: "copy.wgsl",
    source: wgsl!("copy.wgsl"),
    params: Some(CopyParams::LAYOUT),
};
pub static GATHER: Shader = Shader {
    file: "gather.wgsl",
    source: wgsl!("gather.wgsl"),
    params: Some(GatherParams::LAYOUT),
};
pub static LOSS: Shader = Shader {
    file: "loss.wgsl",
    source: wgsl!("loss.wgsl"),
    params: Some(RegressionLossParams::LAYOUT),
};
pub static CROSS_ENTROPY: Shader = Shader {
    file: "cross_entropy.wgsl",
    source: wgsl!("cross_entropy.wgsl"),
    params: Some(CrossEntropyParams::LAYOUT),
};
pub static UPDATE: Shader = Shader {
    file: "update.wgsl",
    source: wgsl!("update.wgsl"),
    params: Some(UpdateParams::LAYOUT),
};

pub static ALL: &[&Shader] = &[
    &GELU,
    &ELEMENTWISE,
    &REDUCE,
    &MATMUL,
    &MATMUL_SUBGROUP,
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
];
