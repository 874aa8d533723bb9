//! Softmax over the last dim. x: [.., cols].

use crate::device::KernelDef;
use crate::error::{shape_err, Result};
use crate::shaders;
use crate::tape::record;
use crate::tensor::Tensor;

const fn kernel(entry: &'static str) -> KernelDef {
    KernelDef {
        file: "softmax.wgsl",
        source: shaders::SOFTMAX,
        entry,
        reads: 2,
        writes: 1,
        first_binding: 1,
    }
}

/// Rows up to this long get one invocation each; longer rows one workgroup each.
pub const SHORT_ROW: usize = 256;

/// `entry` is the workgroup-per-row kernel; short rows use its `_rows` sibling.
fn launch(
    entry: &'static str,
    rows_entry: &'static str,
    x: &Tensor,
    dy: Option<&Tensor>,
) -> Result<Tensor> {
    let cols = x.last_dim();
    let rows = x.numel() / cols.max(1);
    let dev = x.device();
    let out = Tensor::empty(dev, x.shape())?;
    let (entry, groups) = if cols <= SHORT_ROW {
        (rows_entry, rows.div_ceil(64))
    } else {
        (entry, rows)
    };
    dev.dispatch(
        &kernel(entry),
        &[],
        &[rows as u32, cols as u32],
        &[
            x.buffer(),
            dy.map_or(x.buffer(), |d| d.buffer()),
            out.buffer(),
        ],
        dev.grid_1d(groups as u32),
    );
    Ok(out)
}

pub fn softmax_forward(x: &Tensor) -> Result<Tensor> {
    if x.shape().is_empty() || x.last_dim() == 0 {
        return shape_err(
            "softmax",
            format!("needs a non-empty last dim, got {:?}", x.shape()),
        );
    }
    launch("softmax_forward", "softmax_forward_rows", x, None)
}

/// dx = y * (dy - sum(dy * y)) over each row, from the forward's output y.
pub fn softmax_backward(y: &Tensor, dy: &Tensor) -> Result<Tensor> {
    if y.shape() != dy.shape() {
        return shape_err(
            "softmax_backward",
            format!("y {:?} vs dy {:?}", y.shape(), dy.shape()),
        );
    }
    launch("softmax_backward", "softmax_backward_rows", y, Some(dy))
}

pub fn softmax(x: &Tensor) -> Result<Tensor> {
    let y = softmax_forward(x)?;
    let y2 = y.detach();
    record("softmax", &[x], &y, move |dy, _| {
        Ok(vec![Some(softmax_backward(&y2, dy)?)])
    });
    Ok(y)
}
