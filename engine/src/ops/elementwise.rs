//! Element-wise ops: add/sub/mul/div with `b` broadcast over the leading dims of `a`,
//! scale, GELU, and fill.

use crate::device::KernelDef;
use crate::error::{shape_err, Result};
use crate::ops::reduce::sum_to_shape;
use crate::shaders;
use crate::tape::record;
use crate::tensor::Tensor;

const fn kernel(entry: &'static str) -> KernelDef {
    KernelDef {
        file: "elementwise.wgsl",
        source: shaders::ELEMENTWISE,
        entry,
        reads: 2,
        writes: 1,
        first_binding: 1,
    }
}

/// One thread per element of `out`; `b` (if any) is broadcast by `i % b.numel()`.
fn launch(entry: &'static str, a: &Tensor, b: Option<&Tensor>, s: f32, out: &Tensor) {
    let dev = a.device();
    let b_buf = b.map_or(a.buffer(), |b| b.buffer());
    let nb = b.map_or(1, |b| b.numel()) as u32;
    let n = out.numel() as u32;
    dev.dispatch(
        &kernel(entry),
        &[],
        &[n, nb, s.to_bits()],
        &[a.buffer(), b_buf, out.buffer()],
        dev.grid_1d(n.div_ceil(256)),
    );
}

/// Set every element of `t` to `value`.
pub(crate) fn fill(t: &Tensor, value: f32) {
    let dev = t.device();
    let n = t.numel() as u32;
    dev.dispatch(
        &kernel("fill"),
        &[],
        &[n, 1, value.to_bits()],
        &[dev.dummy(), dev.dummy(), t.buffer()],
        dev.grid_1d(n.div_ceil(256)),
    );
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
}

impl BinaryOp {
    fn entry(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
        }
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
    launch(op.entry(), a, Some(b), 0.0, &out);
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
    launch("scale", x, None, s, &out);
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
    launch("gelu_forward", x, None, 0.0, &out);
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
    launch("gelu_backward", x, Some(dy), 0.0, &out);
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
    launch("broadcast", x, Some(x), s, &out);
    Ok(out)
}
