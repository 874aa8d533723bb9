//! Every WGSL source of the project, one file per kernel family, compiled into the
//! binary. `ALL` lets the tests validate each with naga. gelu.wgsl holds functions
//! only; the kernels that apply GELU have it prepended. attention_layout.wgsl, the
//! fused attention families' parameters and row offsets, is prepended to each of
//! them. matmul_subgroup.wgsl holds one entry point that builds on matmul.wgsl.

pub const GELU: &str = include_str!("../../shaders/gelu.wgsl");
pub const ELEMENTWISE: &str = concat!(
    include_str!("../../shaders/gelu.wgsl"),
    include_str!("../../shaders/elementwise.wgsl")
);
pub const REDUCE: &str = include_str!("../../shaders/reduce.wgsl");
pub const MATMUL: &str = concat!(
    include_str!("../../shaders/gelu.wgsl"),
    include_str!("../../shaders/matmul.wgsl")
);
pub const MATMUL_SUBGROUP: &str = concat!(
    include_str!("../../shaders/gelu.wgsl"),
    include_str!("../../shaders/matmul.wgsl"),
    include_str!("../../shaders/matmul_subgroup.wgsl")
);
pub const ATTENTION_LAYOUT: &str = include_str!("../../shaders/attention_layout.wgsl");
pub const ATTENTION: &str = concat!(
    include_str!("../../shaders/attention_layout.wgsl"),
    include_str!("../../shaders/attention.wgsl")
);
pub const ATTENTION_SUBGROUP: &str = concat!(
    include_str!("../../shaders/attention_layout.wgsl"),
    include_str!("../../shaders/attention_subgroup.wgsl")
);
pub const ATTENTION_BLOCKED: &str = concat!(
    include_str!("../../shaders/attention_layout.wgsl"),
    include_str!("../../shaders/attention_blocked.wgsl")
);
pub const SOFTMAX: &str = include_str!("../../shaders/softmax.wgsl");
pub const LAYERNORM: &str = include_str!("../../shaders/layernorm.wgsl");
pub const LAYOUT: &str = include_str!("../../shaders/layout.wgsl");
pub const COPY: &str = include_str!("../../shaders/copy.wgsl");
pub const GATHER: &str = include_str!("../../shaders/gather.wgsl");
pub const LOSS: &str = include_str!("../../shaders/loss.wgsl");
pub const CROSS_ENTROPY: &str = include_str!("../../shaders/cross_entropy.wgsl");
pub const OPTIM: &str = include_str!("../../shaders/optim.wgsl");

pub const ALL: &[(&str, &str)] = &[
    ("gelu.wgsl", GELU),
    ("elementwise.wgsl", ELEMENTWISE),
    ("reduce.wgsl", REDUCE),
    ("matmul.wgsl", MATMUL),
    ("matmul_subgroup.wgsl", MATMUL_SUBGROUP),
    ("attention_layout.wgsl", ATTENTION_LAYOUT),
    ("attention.wgsl", ATTENTION),
    ("attention_subgroup.wgsl", ATTENTION_SUBGROUP),
    ("attention_blocked.wgsl", ATTENTION_BLOCKED),
    ("softmax.wgsl", SOFTMAX),
    ("layernorm.wgsl", LAYERNORM),
    ("layout.wgsl", LAYOUT),
    ("copy.wgsl", COPY),
    ("gather.wgsl", GATHER),
    ("loss.wgsl", LOSS),
    ("cross_entropy.wgsl", CROSS_ENTROPY),
    ("optim.wgsl", OPTIM),
];
