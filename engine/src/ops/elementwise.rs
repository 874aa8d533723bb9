//! Element-wise ops: add/sub/mul/div with `b` broadcast over the leading dims of `a`,
//! scale, GELU, and fill.
//!
//! Explained in the tour: docs/tour/01-first-kernel.md.

use crate::device::KernelDef;
use crate::error::{shape_err, Result};
use crate::ops::reduce::sum_to_shape;
use crate::ops::{grid_for, WG_OVERRIDES};
use crate::shaders;
use crate::tape::record;
use crate::tensor::Tensor;

crate::kernel_params! {
    /// elementwise.wgsl's `Params`.
    pub struct ElementwiseParams {
        /// Elements (or vec4s) of `a` and `out`.
        n: u32,
        /// Elements (or vec4s) of `b`, broadcast by `i % nb`.
        nb: u32,
        /// The factor of `scale` and `broadcast`, the value of `fill`.
        s: f32,
    }
}

/// The entry points of elementwise.wgsl, each over f32s and over vec4s.
#[derive(Clone, Copy, Debug)]
enum Kernel {
    Add,
    Sub,
    Mul,
    Div,
    Scale,
    Fill,
    GeluForward,
    GeluBackward,
    Broadcast,
}

impl Kernel {
    /// (f32 entry, vec4 entry).
    fn entries(self) -> (&'static str, &'static str) {
        match self {
            Kernel::Add => ("add", "add_vec4"),
            Kernel::Sub => ("sub", "sub_vec4"),
            Kernel::Mul => ("mul", "mul_vec4"),
            Kernel::Div => ("div", "div_vec4"),
            Kernel::Scale => ("scale", "scale_vec4"),
            Kernel::Fill => ("fill", "fill_vec4"),
            Kernel::GeluForward => ("gelu_forward", "gelu_forward_vec4"),
            Kernel::GeluBackward => ("gelu_backward", "gelu_backward_vec4"),
            Kernel::Broadcast => ("broadcast", "broadcast_vec4"),
        }
    }
}

/// One thread per element of `out`, or per vec4 when `out` and `b` both have a
/// multiple of 4 elements; `b` (if any) is broadcast by `i % b.numel()`.
fn launch(
    kernel: Kernel,
    a: Option<&Tensor>,
    b: Option<&Tensor>,
    s: f32,
    out: &Tensor,
) -> Result<()> {
    let dev = out.device();
    let nb = b.map_or(1, |b| b.numel());
    let n = out.numel();
    let vec4 = n.is_multiple_of(4) && b.is_none_or(|_| nb.is_multiple_of(4));
    let (unit, entry, first_binding) = match (vec4, kernel.entries()) {
        (true, (_, entry)) => (4, entry, 4),
        (false, (entry, _)) => (1, entry, 1),
    };
    let def: KernelDef<ElementwiseParams> =
        KernelDef::new(&shaders::ELEMENTWISE, entry, 2, 1).bound_from(first_binding);
    let items = n / unit;
    dev.dispatch(
        &def,
        WG_OVERRIDES,
        &ElementwiseParams {
            n: items as u32,
            nb: (nb / unit).max(1) as u32,
            s,
        },
        &[
            a.map_or(dev.dummy(), |a| a.buffer()),
            b.map_or(dev.dummy(), |b| b.buffer()),
            out.buffer(),
        ],
        grid_for(dev, items),
    )
}

/// Set every element of `t` to `value`.
pub(crate) fn fill(t: &Tensor, value: f32) -> Result<()> {
    launch(Kernel::Fill, None, None, value, t)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
}

impl BinaryOp {
    fn kernel(self) -> Kernel {
        match self {
            BinaryOp::Add => Kernel::Add,
            BinaryOp::Sub => Kernel::Sub,
            BinaryOp::Mul => Kernel::Mul,
            BinaryOp::Div => Kernel::Div,
        }
    }

    /// The f32 entry's name, for messages.
    fn entry(self) -> &'static str {
        self.kernel().entries().0
    }
}

/// `b` broadcasts over `a` when its shape is a suffix of `a`'s, or it has one element.
fn check_broadcast(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    let (sa, sb) = (a.shape(), b.shape());
    let suffix = sb.len() <= sa.len() && sa[sa.len() - sb.len()..] == *sb;
    if suffix || b.numel() == 1 {
        Ok(())
    } else {
        shape_err(
            op,
            format!(
                "cannot broadcast b {sb:?} over a {sa:?} (b must be a trailing part of a's shape)"
            ),
        )
    }
}

/// out = a (op) b, `b` broadcast over `a`'s leading dims. out: a's shape.
pub fn binary_forward(op: BinaryOp, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    check_broadcast(op.entry(), a, b)?;
    let out = Tensor::empty(a.device(), a.shape())?;
    launch(op.kernel(), Some(a), Some(b), 0.0, &out)?;
    Ok(out)
}

pub fn add_forward(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary_forward(BinaryOp::Add, a, b)
}

/// Gradients (da, db) of `a (op) b` given dy. `db` is summed over the broadcast dims.
pub fn binary_backward(
    op: BinaryOp,
    a: &Tensor,
    b: &Tensor,
    dy: &Tensor,
    needs: &[bool],
) -> Result<Vec<Option<Tensor>>> {
    use BinaryOp::*;
    let da = match (needs[0], op) {
        (false, _) => None,
        (true, Add | Sub) => Some(dy.clone()),
        (true, Mul) => Some(binary_forward(Mul, dy, b)?),
        (true, Div) => Some(binary_forward(Div, dy, b)?),
    };
    let db = match (needs[1], op) {
        (false, _) => None,
        (true, Add) => Some(sum_to_shape(dy, b.shape())?),
        (true, Sub) => Some(sum_to_shape(&scale_forward(dy, -1.0)?, b.shape())?),
        (true, Mul) => Some(sum_to_shape(&binary_forward(Mul, dy, a)?, b.shape())?),
        (true, Div) => {
            // d(a/b)/db = -a / b^2
            let t = binary_forward(Div, &binary_forward(Mul, dy, a)?, b)?;
            let t = binary_forward(Div, &t, b)?;
            Some(sum_to_shape(&scale_forward(&t, -1.0)?, b.shape())?)
        }
    };
    Ok(vec![da, db])
}

fn binary(op: BinaryOp, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let y = binary_forward(op, a, b)?;
    let (a2, b2) = (a.clone(), b.clone());
    record(op.entry(), &[a, b], &y, move |dy, needs| {
        binary_backward(op, &a2, &b2, dy, needs)
    });
    Ok(y)
}

/// a + b, `b` broadcast over a's leading dims (e.g. [B, N, D] + [N, D]).
pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(BinaryOp::Add, a, b)
}

/// a - b, broadcast as [`add`].
pub fn sub(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(BinaryOp::Sub, a, b)
}

/// a * b, broadcast as [`add`].
pub fn mul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(BinaryOp::Mul, a, b)
}

/// a / b, broadcast as [`add`].
pub fn div(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(BinaryOp::Div, a, b)
}

/// y = s * x.
pub fn scale_forward(x: &Tensor, s: f32) -> Result<Tensor> {
    let out = Tensor::empty(x.device(), x.shape())?;
    launch(Kernel::Scale, Some(x), None, s, &out)?;
    Ok(out)
}

/// y = s * x; dx = s * dy.
pub fn scale(x: &Tensor, s: f32) -> Result<Tensor> {
    let y = scale_forward(x, s)?;
    record("scale", &[x], &y, move |dy, _| {
        Ok(vec![Some(scale_forward(dy, s)?)])
    });
    Ok(y)
}

/// y = x * Phi(x) (exact erf GELU). Any shape.
pub fn gelu_forward(x: &Tensor) -> Result<Tensor> {
    let out = Tensor::empty(x.device(), x.shape())?;
    launch(Kernel::GeluForward, Some(x), None, 0.0, &out)?;
    Ok(out)
}

/// dx = dy * (Phi(x) + x * phi(x)).
pub fn gelu_backward(x: &Tensor, dy: &Tensor) -> Result<Tensor> {
    if x.shape() != dy.shape() {
        return shape_err(
            "gelu_backward",
            format!("x {:?} vs dy {:?}", x.shape(), dy.shape()),
        );
    }
    let out = Tensor::empty(x.device(), x.shape())?;
    launch(Kernel::GeluBackward, Some(x), Some(dy), 0.0, &out)?;
    Ok(out)
}

pub fn gelu(x: &Tensor) -> Result<Tensor> {
    let y = gelu_forward(x)?;
    let x2 = x.clone();
    record("gelu", &[x], &y, move |dy, _| {
        Ok(vec![Some(gelu_backward(&x2, dy)?)])
    });
    Ok(y)
}

/// `s * x` repeated over leading dims up to `shape` (x's shape is a suffix of it).
pub fn broadcast_forward(x: &Tensor, shape: &[usize], s: f32) -> Result<Tensor> {
    let out = Tensor::empty(x.device(), shape)?;
    check_broadcast("broadcast", &out, x)?;
    launch(Kernel::Broadcast, None, Some(x), s, &out)?;
    Ok(out)
}
