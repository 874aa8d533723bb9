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
    }
}

fn launch(entry: &'static str, x: &Tensor, dy: Option<&Tensor>) -> Result<Tensor> {
    let cols = x.last_dim();
    let rows = x.numel() / cols.max(1);
    let dev = x.device();
    let out = Tensor::empty(dev, x.shape())?;
    dev.dispatch(
        &kernel(entry),
        &[],
        &[rows as u32, cols as u32],
        &[
            x.buffer(),
            dy.map_or(x.buffer(), |d| d.buffer()),
            out.buffer(),
        ],
        dev.grid_1d(rows as u32),
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
    launch("softmax_forward", x, None)
}

/// dx = y * (dy - sum(dy * y)) over each row, from the forward's output y.
pub fn softmax_backward(y: &Tensor, dy: &Tensor) -> Result<Tensor> {
    if y.shape() != dy.shape() {
        return shape_err(
            "softmax_backward",
            format!("y {:?} vs dy {:?}", y.shape(), dy.shape()),
        );
    }
    launch("softmax_backward", y, Some(dy))
}

pub fn softmax(x: &Tensor) -> Result<Tensor> {
    let y = softmax_forward(x)?;
    let y2 = y.detach();
    record("softmax", &[x], &y, move |dy, _| {
        Ok(vec![Some(softmax_backward(&y2, dy)?)])
    });
    Ok(y)
}
