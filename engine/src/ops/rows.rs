//! The plan of the row kernels, softmax and LayerNorm: x viewed as [rows, cols], each
//! row reduced on its own, either by one invocation or by one workgroup.
//!
//! Explained in the tour: docs/tour/05-softmax-layernorm.md.

use crate::device::{Device, KernelDef};
use crate::error::{shape_err, Result};
use crate::ops::by_width;
use crate::tensor::Tensor;

/// Invocations per workgroup of the row kernels (the `WG` override of softmax.wgsl and
/// layernorm.wgsl, a power of two): the lanes that share a row, or the rows that share
/// a workgroup.
pub const ROW_WG: usize = 64;

/// Rows up to this long get one invocation each; longer rows one workgroup each.
pub const SHORT_ROW: usize = 256;

/// How a row kernel covers its rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowKernel {
    /// One invocation per row, `ROW_WG` rows per workgroup, no barriers.
    PerInvocation,
    /// One workgroup of `ROW_WG` invocations per row, reducing through workgroup memory.
    PerWorkgroup,
}

/// Which row kernel runs a [rows, cols] tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowPlan {
    pub kernel: RowKernel,
    pub rows: usize,
    pub cols: usize,
}

impl RowPlan {
    /// The plan on this device: one invocation per row for rows up to `SHORT_ROW`, since
    /// a workgroup spread over a short row spends its time in barriers (attention
    /// scores over a few hundred tokens); a workgroup per row for longer ones, which
    /// one invocation would walk alone. The same rule on every adapter.
    pub fn new(_device: &Device, rows: usize, cols: usize) -> RowPlan {
        let kernel = if cols <= SHORT_ROW {
            RowKernel::PerInvocation
        } else {
            RowKernel::PerWorkgroup
        };
        RowPlan { kernel, rows, cols }
    }

    /// The plan for x [.., cols] seen as [rows, cols].
    pub fn of(x: &Tensor) -> RowPlan {
        let cols = x.last_dim();
        RowPlan::new(x.device(), x.numel() / cols.max(1), cols)
    }

    /// That `x` is a non-empty [.., cols] of this plan's rows and cols.
    pub(crate) fn check(&self, op: &'static str, x: &Tensor) -> Result<()> {
        let cols = x.last_dim();
        if x.shape().is_empty() || cols == 0 {
            return shape_err(
                op,
                format!("needs a non-empty last dim, got {:?}", x.shape()),
            );
        }
        if (self.rows, self.cols) != (x.numel() / cols, cols) {
            return shape_err(op, format!("{self:?} does not fit {:?}", x.shape()));
        }
        Ok(())
    }

    /// Every plan that can run this shape on this device (both kernels take any).
    pub fn candidates(_device: &Device, rows: usize, cols: usize) -> Vec<RowPlan> {
        [RowKernel::PerInvocation, RowKernel::PerWorkgroup]
            .into_iter()
            .map(|kernel| RowPlan { kernel, rows, cols })
            .collect()
    }

    /// The kernel of a family's pair that this plan runs.
    fn pick<'a, P>(
        &self,
        per_workgroup: &'a KernelDef<P>,
        per_invocation: &'a KernelDef<P>,
    ) -> &'a KernelDef<P> {
        match self.kernel {
            RowKernel::PerInvocation => per_invocation,
            RowKernel::PerWorkgroup => per_workgroup,
        }
    }

    /// The kernel of a family's three that this plan runs: a workgroup per row, or an
    /// invocation per row, which reads rows of whole vec4s as vec4s (on a CPU adapter each
    /// storage load walks the lanes one by one, so four columns cost about what one does).
    pub(crate) fn pick_by_width<'a, P>(
        &self,
        per_workgroup: &'a KernelDef<P>,
        per_invocation: &'a KernelDef<P>,
        per_invocation_vec4: &'a KernelDef<P>,
    ) -> &'a KernelDef<P> {
        self.pick(
            per_workgroup,
            by_width(self.cols, per_invocation, per_invocation_vec4).0,
        )
    }

    pub(crate) fn grid(&self, device: &Device) -> [u32; 3] {
        let groups = match self.kernel {
            RowKernel::PerInvocation => self.rows.div_ceil(ROW_WG),
            RowKernel::PerWorkgroup => self.rows,
        };
        device.grid_1d(groups as u32)
    }

    /// What runs, in words.
    pub fn describe(&self) -> String {
        let how = match self.kernel {
            RowKernel::PerInvocation => {
                format!("one invocation per row, {ROW_WG} rows per workgroup")
            }
            RowKernel::PerWorkgroup => format!("one workgroup of {ROW_WG} per row"),
        };
        format!("{} rows of {}: {how}", self.rows, self.cols)
    }
}
