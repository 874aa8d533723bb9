//! The plan of the row kernels, softmax and LayerNorm: x viewed as [rows, cols], each
//! row reduced on its own, either by one invocation or by a group of invocations that
//! share it.
//!
//! Explained in the tour: docs/tour/05-softmax-layernorm.md.

use crate::device::{round_up_to_quarter_power, Candidate, Device, KernelDef};
use crate::error::{shape_err, Result};
use crate::ops::by_width;
use crate::tensor::Tensor;

/// Invocations per workgroup of the row kernels (the `WG` override of softmax.wgsl and
/// layernorm.wgsl, a power of two): the rows that share a workgroup, or the lanes of
/// the rows that share it.
pub const ROW_WG: usize = 64;

/// Rows up to this long are short: one invocation each on a CPU adapter, a few lanes each
/// on a GPU; longer rows get a whole workgroup each.
pub const SHORT_ROW: usize = 256;

/// How a row kernel covers its rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowKernel {
    /// One invocation per row, `ROW_WG` rows per workgroup, no barriers.
    PerInvocation,
    /// This many invocations per row (a power of two up to `ROW_WG`, the
    /// `LANES_PER_ROW` override), reducing through workgroup memory: `ROW_WG / lanes` rows per
    /// workgroup.
    Lanes(usize),
}

impl RowKernel {
    /// The `LANES_PER_ROW` override the kernel is compiled with (the per-invocation
    /// kernels do not read it: one value keeps them one pipeline).
    pub(crate) fn lanes_override(&self) -> usize {
        match *self {
            RowKernel::PerInvocation => ROW_WG,
            RowKernel::Lanes(lanes) => lanes,
        }
    }
}

/// The lanes of a short row on a GPU: about four columns each (so a row of 128 columns
/// gets 32, a warp), at least 4 and at most `ROW_WG`.
pub fn short_row_lanes(cols: usize) -> usize {
    cols.div_ceil(4).next_power_of_two().clamp(4, ROW_WG)
}

/// Which row kernel runs a [rows, cols] tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowPlan {
    pub kernel: RowKernel,
    pub rows: usize,
    pub cols: usize,
}

impl RowPlan {
    /// The plan on this device: a workgroup per row for rows longer than `SHORT_ROW`,
    /// which one invocation would walk alone. Shorter rows get one invocation each on a
    /// CPU adapter, where a workgroup spread over a short row spends its time in
    /// barriers (attention scores over a few hundred tokens); on a GPU a few lanes each
    /// (`short_row_lanes`), whose loads of a row coalesce. There one invocation per
    /// row read neighbouring rows 512 bytes apart and left the device nearly idle: on
    /// the H200, the `fmnist` step's LayerNorms of 6,272 rows of 128 took 54 us each,
    /// 98 workgroups for 132 SMs (docs/results/2026-12-04-h200-bench.txt).
    pub fn new(device: &Device, rows: usize, cols: usize) -> RowPlan {
        let kernel = if cols > SHORT_ROW {
            RowKernel::Lanes(ROW_WG)
        } else if device.plans_as_cpu() {
            RowKernel::PerInvocation
        } else {
            RowKernel::Lanes(short_row_lanes(cols))
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
        let lanes = self.kernel.lanes_override();
        if !lanes.is_power_of_two() || lanes > ROW_WG {
            return shape_err(
                op,
                format!("{self:?}: lanes per row must be a power of two up to {ROW_WG}"),
            );
        }
        Ok(())
    }

    /// The fastest of [`candidates`](Self::candidates) for `op` (the kernel and its
    /// variant, in words) on x seen as rows, `run` running one: measured on the device
    /// (`Device::measured_choice`) at the first call of each bucket of row and column
    /// counts, each rounded up as the pool's size classes are (the masks change the
    /// token counts every step), then remembered by the device and its plan file; the
    /// rule's plan ([`of`](Self::of)) where nothing is measured or followed.
    pub fn measured(
        op: std::fmt::Arguments,
        x: &Tensor,
        mut run: impl FnMut(&RowPlan) -> Result<()>,
    ) -> Result<RowPlan> {
        let rule = RowPlan::of(x);
        let dev = x.device();
        if !dev.chooses_measured_plans() {
            return Ok(rule);
        }
        let candidates = RowPlan::candidates(dev, rule.rows, rule.cols);
        let methods: Vec<String> = candidates.iter().map(RowPlan::method).collect();
        let quarter = |x: usize| round_up_to_quarter_power(x as u64);
        // Rows of whole vec4s run other per-invocation kernels than the rest of a bucket.
        let key = format!(
            "{op} of at most {} rows of at most {} columns{}: {}",
            quarter(rule.rows),
            quarter(rule.cols),
            if rule.cols.is_multiple_of(4) {
                " (whole vec4s)"
            } else {
                ""
            },
            methods.join(", ")
        );
        let chosen = dev.measured_choice(key, &candidates, &rule, |i| run(&candidates[i]))?;
        Ok(chosen.map_or(rule, |i| candidates[i]))
    }

    /// The plans worth running this shape with (every kernel takes any shape): one
    /// invocation per row, a short row's lanes, a workgroup per row.
    pub fn candidates(_device: &Device, rows: usize, cols: usize) -> Vec<RowPlan> {
        let mut kernels = vec![RowKernel::PerInvocation];
        for lanes in [short_row_lanes(cols), ROW_WG] {
            if !kernels.contains(&RowKernel::Lanes(lanes)) {
                kernels.push(RowKernel::Lanes(lanes));
            }
        }
        kernels
            .into_iter()
            .map(|kernel| RowPlan { kernel, rows, cols })
            .collect()
    }

    /// The kernel of a family's pair that this plan runs.
    fn pick<'a, P>(
        &self,
        lanes: &'a KernelDef<P>,
        per_invocation: &'a KernelDef<P>,
    ) -> &'a KernelDef<P> {
        match self.kernel {
            RowKernel::PerInvocation => per_invocation,
            RowKernel::Lanes(_) => lanes,
        }
    }

    /// The kernel of a family's three that this plan runs: lanes per row, or an
    /// invocation per row, which reads rows of whole vec4s as vec4s (on a CPU adapter each
    /// storage load walks the lanes one by one, so four columns cost about what one does).
    pub(crate) fn pick_by_width<'a, P>(
        &self,
        lanes: &'a KernelDef<P>,
        per_invocation: &'a KernelDef<P>,
        per_invocation_vec4: &'a KernelDef<P>,
    ) -> &'a KernelDef<P> {
        self.pick(
            lanes,
            by_width(self.cols, per_invocation, per_invocation_vec4).0,
        )
    }

    pub(crate) fn grid(&self, device: &Device) -> [u32; 3] {
        let groups = match self.kernel {
            RowKernel::PerInvocation => self.rows.div_ceil(ROW_WG),
            RowKernel::Lanes(lanes) => self.rows.div_ceil(ROW_WG / lanes),
        };
        device.grid_1d(groups as u32)
    }

    /// The kernel without the sizes: what a plan file records.
    pub fn method(&self) -> String {
        match self.kernel {
            RowKernel::PerInvocation => "one invocation per row".to_string(),
            RowKernel::Lanes(lanes) => format!("{lanes} lanes per row"),
        }
    }

    /// What runs, in words.
    pub fn describe(&self) -> String {
        let how = match self.kernel {
            RowKernel::PerInvocation => {
                format!("one invocation per row, {ROW_WG} rows per workgroup")
            }
            RowKernel::Lanes(ROW_WG) => format!("one workgroup of {ROW_WG} per row"),
            RowKernel::Lanes(lanes) => format!(
                "{lanes} invocations per row, {} rows per workgroup",
                ROW_WG / lanes
            ),
        };
        format!("{} rows of {}: {how}", self.rows, self.cols)
    }
}

impl Candidate for RowPlan {
    fn method(&self) -> String {
        RowPlan::method(self)
    }

    fn description(&self) -> String {
        self.describe()
    }
}
