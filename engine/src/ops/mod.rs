//! Differentiable ops. Each file pairs `*_forward` / `*_backward` kernel launchers
//! (which record nothing) with the op that runs the forward and records the backward.

pub mod attention;
pub mod cast;
pub mod elementwise;
pub mod gather;
pub mod layernorm;
pub mod layout;
pub mod loss;
pub mod matmul;
pub mod reduce;
pub mod rows;
pub mod softmax;
pub mod update;

pub use attention::attention;
pub use cast::cast;
pub use elementwise::{add, div, gelu, mul, scale, sub};
pub use gather::gather_rows;
pub use layernorm::{add_layernorm, add_layernorm_to, layernorm, layernorm_to};
pub use layout::{concat, narrow, patchify, permute, repeat_batch, reshape};
pub use loss::{cross_entropy, mse_loss, smooth_l1_loss};
pub use matmul::{linear, linear_gelu, linear_to, matmul, mlp, Transpose};
pub use reduce::{mean, sum, sum_leading};
pub use softmax::softmax;

/// Invocations per workgroup of the kernels that give each invocation one element, one
/// vec4 or one row: the `WG` override of elementwise, copy, layout, gather, loss,
/// cross_entropy and update.wgsl.
pub(crate) const WG: u32 = 256;

/// The override values of those kernels.
pub(crate) const WG_OVERRIDES: &[(&str, f64)] = &[("WG", WG as f64)];

/// Of a kernel's two forms, by element and by vec4, the one for rows (or tensors) of `n`
/// elements, and the elements it counts as one: the vec4 form where `n` is whole vec4s
/// (on a CPU adapter each storage load walks the lanes one by one, so a vec4 costs about
/// what one value does).
pub(crate) fn by_width<'a, P>(
    n: usize,
    scalar: &'a crate::device::KernelDef<P>,
    vec4: &'a crate::device::KernelDef<P>,
) -> (&'a crate::device::KernelDef<P>, usize) {
    if n.is_multiple_of(4) {
        (vec4, 4)
    } else {
        (scalar, 1)
    }
}

/// The grid for `items` invocations of one of those kernels.
pub(crate) fn grid_for(dev: &crate::Device, items: usize) -> [u32; 3] {
    dev.grid_1d((items as u32).div_ceil(WG))
}
