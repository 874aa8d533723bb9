//! Losses, each the mean over all elements (rows for cross-entropy): smooth-L1 and MSE
//! between two tensors of one shape, cross-entropy of logits against integer labels.

use crate::device::KernelDef;
use crate::error::{shape_err, Result};
use crate::ops::elementwise::scale_forward;
use crate::ops::reduce::sum_leading_forward;
use crate::ops::{grid_for, WG_OVERRIDES};
use crate::shaders;
use crate::tape::record;
use crate::tensor::{Indices, Tensor};

crate::kernel_params! {
    /// loss.wgsl's `Params`.
    pub struct RegressionLossParams {
        n: u32,
        /// The smooth-L1 threshold.
        beta: f32,
        /// 1 / n: the mean's factor.
        s: f32,
    }
}

crate::kernel_params! {
    /// cross_entropy.wgsl's `Params`.
    pub struct CrossEntropyParams {
        rows: u32,
        classes: u32,
        /// The backward's factor, 1 / rows.
        s: f32,
    }
}

/// pred, target, dy -> out.
const fn regression(entry: &'static str) -> KernelDef<RegressionLossParams> {
    KernelDef::new(&shaders::LOSS, entry, 3, 1)
}

/// logits, labels, saved, dy -> out.
const fn classification(entry: &'static str) -> KernelDef<CrossEntropyParams> {
    KernelDef::new(&shaders::CROSS_ENTROPY, entry, 4, 1)
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Regression {
    /// Smooth-L1 (Huber with slope 1) with threshold beta; I-JEPA uses beta = 1.
    SmoothL1 {
        beta: f32,
    },
    Mse,
}

impl Regression {
    fn entries(self) -> (&'static str, &'static str, f32) {
        match self {
            Regression::SmoothL1 { beta } => ("smooth_l1_forward", "smooth_l1_backward", beta),
            Regression::Mse => ("mse_forward", "mse_backward", 1.0),
        }
    }
}

fn regression_launch(
    entry: &'static str,
    beta: f32,
    pred: &Tensor,
    target: &Tensor,
    dy: Option<&Tensor>,
) -> Result<Tensor> {
    let dev = pred.device();
    let n = pred.numel();
    let out = Tensor::empty(dev, pred.shape())?;
    dev.dispatch(
        &regression(entry),
        WG_OVERRIDES,
        &RegressionLossParams {
            n: n as u32,
            beta,
            s: 1.0 / n as f32,
        },
        &[
            pred.buffer(),
            target.buffer(),
            dy.map_or(dev.dummy(), |d| d.buffer()),
            out.buffer(),
        ],
        grid_for(dev, n),
    )?;
    Ok(out)
}

/// mean(l(pred - target)) : [1].
pub fn regression_loss_forward(kind: Regression, pred: &Tensor, target: &Tensor) -> Result<Tensor> {
    if pred.shape() != target.shape() || pred.numel() == 0 {
        return shape_err(
            "loss",
            format!(
                "prediction {:?} and target {:?} must have one non-empty shape",
                pred.shape(),
                target.shape()
            ),
        );
    }
    let (fwd, _, beta) = kind.entries();
    // Each element comes scaled by 1 / n: their sum is the mean.
    let per_element = regression_launch(fwd, beta, pred, target, None)?;
    sum_leading_forward(&per_element, 1)
}

/// d loss / d pred given the loss's gradient dy [1]; d loss / d target is its negation.
pub fn regression_loss_backward(
    kind: Regression,
    pred: &Tensor,
    target: &Tensor,
    dy: &Tensor,
) -> Result<Tensor> {
    let (_, bwd, beta) = kind.entries();
    regression_launch(bwd, beta, pred, target, Some(dy))
}

pub fn regression_loss(kind: Regression, pred: &Tensor, target: &Tensor) -> Result<Tensor> {
    let y = regression_loss_forward(kind, pred, target)?;
    let (p, t) = (pred.clone(), target.clone());
    record("loss", &[pred, target], &y, move |dy, needs| {
        let dp = regression_loss_backward(kind, &p, &t, dy)?;
        let dt = if needs[1] {
            Some(scale_forward(&dp, -1.0)?)
        } else {
            None
        };
        Ok(vec![Some(dp), dt])
    });
    Ok(y)
}

/// Smooth-L1 loss with beta, mean over all elements (torch `F.smooth_l1_loss`).
pub fn smooth_l1_loss(pred: &Tensor, target: &Tensor, beta: f32) -> Result<Tensor> {
    regression_loss(Regression::SmoothL1 { beta }, pred, target)
}

/// Mean squared error.
pub fn mse_loss(pred: &Tensor, target: &Tensor) -> Result<Tensor> {
    regression_loss(Regression::Mse, pred, target)
}

/// Per-row loss and log-sum-exp: [2, rows].
pub fn cross_entropy_forward(logits: &Tensor, labels: &Indices) -> Result<(Tensor, Tensor)> {
    let s = logits.shape();
    if s.len() != 2 || labels.shape() != [s[0]] || s[1] == 0 {
        return shape_err(
            "cross_entropy",
            format!(
                "logits {s:?} must be [rows, classes] and labels {:?} [rows]",
                labels.shape()
            ),
        );
    }
    labels.check_below("cross_entropy", s[1])?;
    let (rows, classes) = (s[0], s[1]);
    let dev = logits.device();
    let saved = Tensor::empty(dev, &[2, rows])?;
    dev.dispatch(
        &classification("cross_entropy_forward"),
        WG_OVERRIDES,
        &CrossEntropyParams {
            rows: rows as u32,
            classes: classes as u32,
            s: 0.0,
        },
        &[
            logits.buffer(),
            labels.buffer(),
            dev.dummy(),
            dev.dummy(),
            saved.buffer(),
        ],
        grid_for(dev, rows),
    )?;
    let row_losses = crate::ops::layout::narrow_forward(&saved, 0, 0, 1)?;
    let loss = scale_forward(&sum_leading_forward(&row_losses, 1)?, 1.0 / rows as f32)?;
    Ok((loss, saved))
}

/// d loss / d logits = dy * (softmax(logits) - onehot(labels)) / rows.
pub fn cross_entropy_backward(
    logits: &Tensor,
    labels: &Indices,
    saved: &Tensor,
    dy: &Tensor,
) -> Result<Tensor> {
    let (rows, classes) = (logits.shape()[0], logits.shape()[1]);
    let dev = logits.device();
    let out = Tensor::empty(dev, logits.shape())?;
    dev.dispatch(
        &classification("cross_entropy_backward"),
        WG_OVERRIDES,
        &CrossEntropyParams {
            rows: rows as u32,
            classes: classes as u32,
            s: 1.0 / rows as f32,
        },
        &[
            logits.buffer(),
            labels.buffer(),
            saved.buffer(),
            dy.buffer(),
            out.buffer(),
        ],
        grid_for(dev, rows * classes),
    )?;
    Ok(out)
}

/// Mean cross-entropy of logits [rows, classes] against labels [rows]: [1].
pub fn cross_entropy(logits: &Tensor, labels: &Indices) -> Result<Tensor> {
    let (loss, saved) = cross_entropy_forward(logits, labels)?;
    let (x, l) = (logits.clone(), labels.clone());
    record("cross_entropy", &[logits], &loss, move |dy, _| {
        Ok(vec![Some(cross_entropy_backward(&x, &l, &saved, dy)?)])
    });
    Ok(loss)
}
