//! Finite-difference gradient check of any scalar function of tensors, through the
//! real kernels in f32.
//!
//! Explained in the tour: docs/tour/03-tape.md.

use std::sync::Arc;

use crate::device::Device;
use crate::error::Result;
use crate::tape::{backward, no_grad};
use crate::tensor::Tensor;

/// Worst disagreement between analytic and numeric gradients.
#[derive(Debug, Clone)]
pub struct GradcheckReport {
    /// max |analytic - numeric| / (atol + rtol * |numeric|) over checked entries;
    /// the check passes when this is at most 1.
    pub worst_ratio: f64,
    pub worst_input: usize,
    pub worst_index: usize,
    pub analytic: f64,
    pub numeric: f64,
    pub checked: usize,
}

impl GradcheckReport {
    pub fn passed(&self) -> bool {
        self.worst_ratio <= 1.0
    }
}

/// Options of [`gradcheck`]. Central differences in f32 have an error of roughly
/// eps_f32 * |f| / h + h^2 * |f'''|, so h around 1e-2..1e-3 and tolerances of a few
/// 1e-3 are what f32 allows.
#[derive(Debug, Clone, Copy)]
pub struct GradcheckOptions {
    pub h: f32,
    pub atol: f64,
    pub rtol: f64,
    /// Check at most this many entries per input (spread evenly), to keep it quick.
    pub max_entries: usize,
}

impl Default for GradcheckOptions {
    fn default() -> Self {
        GradcheckOptions {
            h: 1e-2,
            atol: 2e-3,
            rtol: 2e-2,
            max_entries: 24,
        }
    }
}

/// Compare d f / d inputs from the tape with central differences
/// (f(x + h e_i) - f(x - h e_i)) / 2h, for `f` returning a one-element tensor.
pub fn gradcheck(
    device: &Arc<Device>,
    inputs: &[(Vec<usize>, Vec<f32>)],
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
    opts: GradcheckOptions,
) -> Result<GradcheckReport> {
    let leaves: Vec<Tensor> = inputs
        .iter()
        .map(|(shape, data)| Ok(Tensor::from_slice(device, shape, data)?.requires_grad()))
        .collect::<Result<_>>()?;
    let loss = f(&leaves)?;
    let grads = backward(&loss)?;
    let mut report = GradcheckReport {
        worst_ratio: 0.0,
        worst_input: 0,
        worst_index: 0,
        analytic: 0.0,
        numeric: 0.0,
        checked: 0,
    };
    for (which, (shape, data)) in inputs.iter().enumerate() {
        let analytic = match grads.get(&leaves[which]) {
            Some(g) => g.to_vec(),
            None => vec![0.0; data.len()],
        };
        let stride = data.len().div_ceil(opts.max_entries).max(1);
        for i in (0..data.len()).step_by(stride) {
            let eval = |delta: f32| -> Result<f64> {
                let mut d = data.clone();
                d[i] += delta;
                let shifted: Vec<Tensor> = inputs
                    .iter()
                    .enumerate()
                    .map(|(j, (s, x))| {
                        if j == which {
                            Tensor::from_slice(device, shape, &d)
                        } else {
                            Tensor::from_slice(device, s, x)
                        }
                    })
                    .collect::<Result<_>>()?;
                Ok(no_grad(|| f(&shifted))?.item() as f64)
            };
            let numeric = (eval(opts.h)? - eval(-opts.h)?) / (2.0 * opts.h as f64);
            let a = analytic[i] as f64;
            let ratio = (a - numeric).abs() / (opts.atol + opts.rtol * numeric.abs());
            report.checked += 1;
            if ratio > report.worst_ratio || !ratio.is_finite() {
                report = GradcheckReport {
                    worst_ratio: if ratio.is_finite() {
                        ratio
                    } else {
                        f64::INFINITY
                    },
                    worst_input: which,
                    worst_index: i,
                    analytic: a,
                    numeric,
                    checked: report.checked,
                };
            }
        }
    }
    Ok(report)
}
