//! Differentiable ops. Each file pairs `*_forward` / `*_backward` kernel launchers
//! (which record nothing) with the op that runs the forward and records the backward.

pub mod attention;
pub mod elementwise;
pub mod gather;
pub mod layernorm;
pub mod layout;
pub mod loss;
pub mod matmul;
pub mod reduce;
pub mod softmax;
pub mod update;

pub use attention::attention;
pub use elementwise::{add, div, gelu, mul, scale, sub};
pub use gather::gather_rows;
pub use layernorm::layernorm;
pub use layout::{concat, narrow, patchify, permute, repeat_batch, reshape};
pub use loss::{cross_entropy, mse_loss, smooth_l1_loss};
pub use matmul::{linear, linear_gelu, matmul, Transpose};
pub use reduce::{mean, sum, sum_leading};
pub use softmax::softmax;
