//! Batched matmul with transpose flags and an optional bias and GELU epilogue.
//!
//! a: [.., M, K] ([.., K, M] with `trans_a`), b: [K, N] shared or [.., K, N] per batch
//! ([.., N, K] with `trans_b`), bias: [N]. out: [.., M, N].
//!
//! [`MatmulPlan::new`] is the one place that decides how a product runs: which kernel,
//! its tile, and whether it is split along K. The kernels, and where the plan picks
//! each:
//!
//! | kernel | tile | chosen for |
//! | --- | --- | --- |
//! | `Subgroup` | 64x64, 16x4 per lane of 8-lane subgroups | every product it takes (N, K multiples of 4) on CPU adapters with 8-lane subgroups, whose storage loads it minimises |
//! | `Tiled` | 128x128 in workgroup memory, 8x8 per invocation | products of at least 4e9 multiply-adds on GPUs, where staging pays for its barriers |
//! | `Vec4` | 64x64, 4x4 per invocation, vec4 loads | what remains with N and K multiples of 4 |
//! | `Flat` | 64 4x4 blocks per workgroup, numbered across the batch | what remains on CPU adapters, and products with M or N under 32 (attention over few tokens), where a 64x64 tile would idle |
//! | `Scalar` | 64x64, 4x4 per invocation | what remains on GPUs |
//! | `TiledPrefetch` | as `Tiled`, the next k-step loaded during the products | nowhere yet: a candidate, tested on every adapter, until a GPU measurement says where it beats `Tiled` |
//!
//! Split-K: on GPUs a weight gradient whose output has too few tiles to occupy the
//! device is split along K (see [`split_k`]). Measurements: docs/results/.

use crate::device::KernelDef;
use crate::error::{shape_err, Result};
use crate::ops::reduce::{sum_leading_forward, sum_to_shape};
use crate::shaders;
use crate::tape::record;
use crate::tensor::Tensor;
use crate::Device;

crate::kernel_params! {
    /// matmul.wgsl's `Params` (also matmul_subgroup.wgsl's).
    pub struct MatmulParams {
        m: u32,
        n: u32,
        k: u32,
        /// Elements between batch entries of a (M K) and of b (K N, or 0 when shared).
        a_batch_stride: u32,
        b_batch_stride: u32,
        batch: u32,
    }
}

/// The side of the tile of the `Scalar`, `Vec4` and `Subgroup` kernels (their WGSL's
/// `TILE`).
pub const TILE: usize = 64;
/// The 4x4 blocks per workgroup of the `Flat` kernel (`FLAT_WG`).
pub const FLAT_BLOCKS: usize = 64;
/// The side of the tile of the `Tiled` and `TiledPrefetch` kernels (`TILE_M`): 16x16
/// invocations of 8x8, as those kernels are written.
pub const TILED_TILE: usize = 128;

/// a, b, bias -> c; the vec4 kernels bind the same buffers as vec4 arrays from binding
/// 5, the tiled ones from 9.
const SCALAR: KernelDef<MatmulParams> = KernelDef::new(&shaders::MATMUL, "matmul", 3, 1);
const FLAT: KernelDef<MatmulParams> = KernelDef::new(&shaders::MATMUL, "matmul_flat", 3, 1);
const VEC4: KernelDef<MatmulParams> =
    KernelDef::new(&shaders::MATMUL, "matmul_vec4", 3, 1).bound_from(5);
const TILED: KernelDef<MatmulParams> =
    KernelDef::new(&shaders::MATMUL, "matmul_tiled", 3, 1).bound_from(9);
const TILED_PREFETCH: KernelDef<MatmulParams> =
    KernelDef::new(&shaders::MATMUL, "matmul_tiled_prefetch", 3, 1).bound_from(9);
const SUBGROUP: KernelDef<MatmulParams> =
    KernelDef::new(&shaders::MATMUL_SUBGROUP, "matmul_subgroup", 3, 1).bound_from(5);

/// Which matmul kernel runs a product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatmulKernel {
    /// Scalar loads, 4x4 register blocks, no workgroup memory: any shape.
    Scalar,
    /// The scalar kernel's blocks numbered across the batch: any shape, no idle
    /// invocations on small products (attention over few tokens).
    Flat,
    /// vec4 loads, 4x4 blocks as mat4x4 products: N and K multiples of 4, M too when
    /// a is stored transposed.
    Vec4,
    /// Workgroup tiles in workgroup memory, 8x8 per invocation: any shape.
    Tiled,
    /// `Tiled` with the next k-step loaded into registers while the current one is
    /// multiplied, and op(a) read from workgroup memory as vec4s: any shape.
    TiledPrefetch,
    /// 16x4 per lane, op(a) fetched once per 8-lane subgroup and broadcast: N and K
    /// multiples of 4, M too when a is stored transposed, on adapters whose subgroups
    /// are exactly 8 lanes (CPU drivers).
    Subgroup,
}

impl MatmulKernel {
    pub const ALL: [MatmulKernel; 6] = [
        MatmulKernel::Scalar,
        MatmulKernel::Flat,
        MatmulKernel::Vec4,
        MatmulKernel::Tiled,
        MatmulKernel::TiledPrefetch,
        MatmulKernel::Subgroup,
    ];

    /// Whether the device can run this kernel at all.
    pub fn runs_on(self, device: &Device) -> bool {
        match self {
            MatmulKernel::Subgroup => device.has_cpu_subgroups_of_8(),
            _ => true,
        }
    }

    /// Whether the kernel takes an MxKxN product with these transposes: the vec4
    /// kernels read N and K as vec4s, and M too when a is stored [K, M].
    pub fn takes(self, m: usize, n: usize, k: usize, t: Transpose) -> bool {
        let vec4 = n.is_multiple_of(4) && k.is_multiple_of(4) && (m.is_multiple_of(4) || !t.a);
        vec4 || !matches!(self, MatmulKernel::Vec4 | MatmulKernel::Subgroup)
    }

    fn def(self) -> &'static KernelDef<MatmulParams> {
        match self {
            MatmulKernel::Scalar => &SCALAR,
            MatmulKernel::Flat => &FLAT,
            MatmulKernel::Vec4 => &VEC4,
            MatmulKernel::Tiled => &TILED,
            MatmulKernel::TiledPrefetch => &TILED_PREFETCH,
            MatmulKernel::Subgroup => &SUBGROUP,
        }
    }

    /// The kernel's tile, in words.
    pub fn tile(self) -> String {
        match self {
            MatmulKernel::Scalar | MatmulKernel::Vec4 => {
                format!("{TILE}x{TILE} tiles, 4x4 per invocation")
            }
            MatmulKernel::Subgroup => format!("{TILE}x{TILE} tiles, 16x4 per lane"),
            MatmulKernel::Flat => format!("{FLAT_BLOCKS} 4x4 blocks per workgroup"),
            MatmulKernel::Tiled | MatmulKernel::TiledPrefetch => {
                format!("{TILED_TILE}x{TILED_TILE} tiles, 8x8 per invocation")
            }
        }
    }
}

/// What the kernel applies to `op(a) @ op(b) + bias` before storing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Epilogue {
    None,
    /// GELU (exact erf form), as `gelu` applies it.
    Gelu,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Transpose {
    pub a: bool,
    pub b: bool,
}

impl Transpose {
    pub const NONE: Transpose = Transpose { a: false, b: false };
    /// `x @ w^T`, the layout of a torch `nn.Linear` weight [out, in].
    pub const B: Transpose = Transpose { a: false, b: true };
    pub const A: Transpose = Transpose { a: true, b: false };
}

/// The sizes and form of one product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatmulShape {
    pub batch: usize,
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub t: Transpose,
    /// One 2-D b for every batch entry.
    pub b_shared: bool,
    pub bias: bool,
    pub epilogue: Epilogue,
}

impl MatmulShape {
    /// The shape of `op(a) @ op(b) (+ bias)`, checked.
    pub fn of(
        a: &Tensor,
        b: &Tensor,
        t: Transpose,
        bias: Option<&Tensor>,
        epilogue: Epilogue,
    ) -> Result<MatmulShape> {
        let (sa, sb) = (a.shape(), b.shape());
        if sa.len() < 2 || sb.len() < 2 {
            return shape_err(
                "matmul",
                format!("operands must be at least 2-D, got a {sa:?}, b {sb:?}"),
            );
        }
        let lead = &sa[..sa.len() - 2];
        let (m, ka) = if t.a {
            (sa[sa.len() - 1], sa[sa.len() - 2])
        } else {
            (sa[sa.len() - 2], sa[sa.len() - 1])
        };
        let (kb, n) = if t.b {
            (sb[sb.len() - 1], sb[sb.len() - 2])
        } else {
            (sb[sb.len() - 2], sb[sb.len() - 1])
        };
        let b_shared = sb.len() == 2;
        if !b_shared && sb[..sb.len() - 2] != *lead {
            return shape_err("matmul", format!("batch dims differ: a {sa:?}, b {sb:?}"));
        }
        if b_shared && t.a && !lead.is_empty() {
            return shape_err(
                "matmul",
                format!("a shared 2-D b {sb:?} needs an untransposed a, got a {sa:?} with trans_a"),
            );
        }
        if ka != kb {
            return shape_err(
                "matmul",
                format!("inner dims differ: a {sa:?} (trans {}) gives K={ka}, b {sb:?} (trans {}) gives K={kb}", t.a, t.b),
            );
        }
        if let Some(bias) = bias {
            if bias.shape() != [n] {
                return shape_err(
                    "matmul",
                    format!("bias {:?} does not match N={n}", bias.shape()),
                );
            }
        }
        Ok(MatmulShape {
            batch: lead.iter().product(),
            m,
            k: ka,
            n,
            t,
            b_shared,
            bias: bias.is_some(),
            epilogue,
        })
    }

    /// Multiply-adds.
    fn products(&self) -> usize {
        self.batch * self.m * self.n * self.k
    }

    /// The weight-gradient form that split-K takes: a^T b, a [K, M] and b [K, N]
    /// unbatched, nothing applied after.
    fn splittable(&self) -> bool {
        self.t == Transpose::A
            && self.batch == 1
            && self.b_shared
            && !self.bias
            && self.epilogue == Epilogue::None
    }
}

/// How one product runs: a kernel, over the whole product or over `split_k` slices
/// of K whose partial products are summed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatmulPlan {
    pub shape: MatmulShape,
    pub kernel: MatmulKernel,
    pub split_k: Option<usize>,
}

impl MatmulPlan {
    /// The plan on this device. On CPU adapters with 8-lane subgroups the subgroup
    /// kernel wherever it applies (every storage load costs a loop over the lanes, and
    /// it loads least); on GPUs workgroup tiles from 4e9 multiply-adds, below which
    /// their barriers cost more than the loads they save; then the vec4 kernel where N
    /// and K allow, the flat kernel where a tile would mostly idle (M or N under 32) or
    /// on CPU adapters, else the scalar one. A GPU splits weight gradients too small to
    /// occupy it along K ([`split_k`]).
    pub fn new(device: &Device, shape: &MatmulShape) -> MatmulPlan {
        let gpu = !device.is_cpu();
        if let Some(slices) = shape.splittable().then(|| split_k(gpu, shape)).flatten() {
            return MatmulPlan {
                kernel: Self::new(device, &slice_shape(shape, slices)).kernel,
                shape: *shape,
                split_k: Some(slices),
            };
        }
        const TILED_FROM: f64 = 4.0e9;
        let (m, n, k, t) = (shape.m, shape.n, shape.k, shape.t);
        let subgroup = MatmulKernel::Subgroup;
        let kernel = if subgroup.takes(m, n, k, t) && subgroup.runs_on(device) {
            subgroup
        } else if gpu && (m * n * k) as f64 >= TILED_FROM {
            MatmulKernel::Tiled
        } else if MatmulKernel::Vec4.takes(m, n, k, t) {
            MatmulKernel::Vec4
        } else if !gpu || m.min(n) < 32 {
            MatmulKernel::Flat
        } else {
            MatmulKernel::Scalar
        };
        MatmulPlan {
            shape: *shape,
            kernel,
            split_k: None,
        }
    }

    /// Every plan that can run this shape on this device: each kernel that takes it and
    /// runs here, unsplit, and for the weight-gradient form each of them over slices of
    /// K too (the count a GPU would choose, or 2).
    pub fn candidates(device: &Device, shape: &MatmulShape) -> Vec<MatmulPlan> {
        let runs = |s: MatmulShape| {
            MatmulKernel::ALL
                .into_iter()
                .filter(move |kernel| kernel.takes(s.m, s.n, s.k, s.t) && kernel.runs_on(device))
        };
        let mut plans: Vec<MatmulPlan> = runs(*shape)
            .map(|kernel| MatmulPlan {
                shape: *shape,
                kernel,
                split_k: None,
            })
            .collect();
        if shape.splittable() && shape.k >= 2 {
            let slices = split_k(true, shape).unwrap_or(2);
            let sliced = slice_shape(shape, slices);
            plans.extend(runs(sliced).map(|kernel| MatmulPlan {
                shape: *shape,
                kernel,
                split_k: Some(slices),
            }));
        }
        plans
    }

    /// What distinguishes this plan's pipelines from another's, whatever the sizes:
    /// the kernel, split or not, the transposes and the epilogue.
    pub fn key(&self) -> String {
        let s = &self.shape;
        format!(
            "matmul {:?}{} trans_a={} trans_b={} bias={} {:?}",
            self.kernel,
            if self.split_k.is_some() {
                " split-K"
            } else {
                ""
            },
            s.t.a,
            s.t.b,
            s.bias,
            s.epilogue
        )
    }

    /// What runs, in words.
    pub fn describe(&self) -> String {
        let s = &self.shape;
        let kernel = format!("{:?} kernel ({})", self.kernel, self.kernel.tile());
        let how = match self.split_k {
            Some(slices) => format!("split-K into {slices} slices of K on the {kernel}, summed"),
            None => kernel,
        };
        let epilogue = match (s.bias, s.epilogue) {
            (false, Epilogue::None) => "",
            (true, Epilogue::None) => " + bias",
            (false, Epilogue::Gelu) => " then GELU",
            (true, Epilogue::Gelu) => " + bias then GELU",
        };
        format!(
            "{}[{}x{}]{} x [{}x{}]{}{epilogue}: {how}",
            if s.batch > 1 {
                format!("{} x ", s.batch)
            } else {
                String::new()
            },
            s.m,
            s.k,
            if s.t.a { " (a stored transposed)" } else { "" },
            s.k,
            s.n,
            if s.t.b { " (b stored transposed)" } else { "" },
        )
    }
}

/// How many slices of K to split a product of the weight-gradient form into on a GPU,
/// or None. Slicing K of a [K, M] and b [K, N] is a free reshape to a batched product
/// of [S, K/S, M] and [S, K/S, N]. It pays when the output has too few 64x64 tiles to
/// occupy a GPU while K is long (a ViT's dW: [D, 4D] outputs summed over every token
/// of the batch): S partial products run side by side and one reduction adds them.
/// Slices stay at least 512 long and the grid at most 256 tiles; a count that divides
/// K is preferred, since the rows left over cost four more dispatches.
pub fn split_k(gpu: bool, shape: &MatmulShape) -> Option<usize> {
    const SPLIT_TILE: usize = 64;
    const COUNTS: [usize; 4] = [16, 8, 4, 2];
    let (m, n, k) = (shape.m, shape.n, shape.k);
    let tiles = m.div_ceil(SPLIT_TILE) * n.div_ceil(SPLIT_TILE);
    if !gpu || !shape.splittable() || tiles >= 64 {
        return None;
    }
    let fits = |s: usize| k / s >= 512 && tiles * s <= 256;
    COUNTS
        .into_iter()
        .find(|&s| fits(s) && k.is_multiple_of(s))
        .or_else(|| COUNTS.into_iter().find(|&s| fits(s)))
}

/// The batched product each slice of a split-K plan runs.
fn slice_shape(shape: &MatmulShape, slices: usize) -> MatmulShape {
    MatmulShape {
        batch: slices,
        k: shape.k / slices,
        b_shared: false,
        ..*shape
    }
}

/// out = op(a) @ op(b) (+ bias), on the device's plan.
pub fn matmul_forward(
    a: &Tensor,
    b: &Tensor,
    t: Transpose,
    bias: Option<&Tensor>,
) -> Result<Tensor> {
    let shape = MatmulShape::of(a, b, t, bias, Epilogue::None)?;
    matmul_with(&MatmulPlan::new(a.device(), &shape), a, b, bias)
}

/// The product `plan` was made for, run as it says (tests run every candidate).
pub fn matmul_with(
    plan: &MatmulPlan,
    a: &Tensor,
    b: &Tensor,
    bias: Option<&Tensor>,
) -> Result<Tensor> {
    let d = plan.shape;
    if MatmulShape::of(a, b, d.t, bias, d.epilogue)? != d {
        return shape_err(
            "matmul",
            format!(
                "a plan for {d:?} was given a {:?} and b {:?}",
                a.shape(),
                b.shape()
            ),
        );
    }
    a.device().note_plan(|| plan.key());
    match plan.split_k {
        Some(slices) => split_k_product(a, b, &d, slices, plan.kernel),
        None => run_kernel(plan.kernel, a, b, &d, bias),
    }
}

/// a^T b for a [K, M] and b [K, N] as `slices` partial products (each by `kernel`) over
/// equal slices of K, summed, plus the few rows K leaves over.
fn split_k_product(
    a: &Tensor,
    b: &Tensor,
    d: &MatmulShape,
    slices: usize,
    kernel: MatmulKernel,
) -> Result<Tensor> {
    if !d.splittable() || slices == 0 || d.k < slices {
        return shape_err(
            "matmul",
            format!(
                "split-K needs 2-D a [K, M] and b [K, N] with K at least {slices}, got a {:?}, b {:?}",
                a.shape(),
                b.shape()
            ),
        );
    }
    let rows = d.k / slices;
    let a3 = a.prefix_view(&[slices, rows, d.m])?;
    let b3 = b.prefix_view(&[slices, rows, d.n])?;
    let partial = run_kernel(kernel, &a3, &b3, &slice_shape(d, slices), None)?;
    let sum = sum_leading_forward(&partial, d.m * d.n)?.view(&[d.m, d.n])?;
    let (main, rest) = (rows * slices, d.k - rows * slices);
    if rest == 0 {
        return Ok(sum);
    }
    let tail_a = crate::ops::layout::narrow_forward(a, 0, main, rest)?;
    let tail_b = crate::ops::layout::narrow_forward(b, 0, main, rest)?;
    let tail = matmul_forward(&tail_a, &tail_b, Transpose::A, None)?;
    crate::ops::elementwise::add_forward(&sum, &tail)
}

/// One dispatch of `kernel` over a product of shape `d`.
fn run_kernel(
    kernel: MatmulKernel,
    a: &Tensor,
    b: &Tensor,
    d: &MatmulShape,
    bias: Option<&Tensor>,
) -> Result<Tensor> {
    let dev = a.device();
    if !kernel.takes(d.m, d.n, d.k, d.t) {
        return shape_err(
            "matmul",
            format!(
                "the {kernel:?} kernel needs N and K multiples of 4 (and M, with a transposed), got {}x{}x{} (transposed a: {})",
                d.m, d.n, d.k, d.t.a
            ),
        );
    }
    if !kernel.runs_on(dev) {
        return shape_err(
            "matmul",
            format!(
                "the {kernel:?} kernel needs a CPU adapter with 8-lane subgroups, this one is {}",
                dev.info().name
            ),
        );
    }
    let sa = a.shape();
    let mut out_shape = sa[..sa.len() - 2].to_vec();
    out_shape.extend([d.m, d.n]);
    let out = Tensor::empty(dev, &out_shape)?;
    if d.k == 0 {
        // An empty sum: the bias, through the epilogue, is what is left.
        crate::ops::elementwise::fill(&out, 0.0);
        let out = match bias {
            Some(bias) => crate::ops::elementwise::add_forward(&out, bias)?,
            None => out,
        };
        return match d.epilogue {
            Epilogue::None => Ok(out),
            Epilogue::Gelu => crate::ops::elementwise::gelu_forward(&out),
        };
    }
    let flag = |on: bool| on as u32 as f64;
    let overrides = [
        ("TRANS_A", flag(d.t.a)),
        ("TRANS_B", flag(d.t.b)),
        ("HAS_BIAS", flag(d.bias)),
        ("HAS_GELU", flag(d.epilogue == Epilogue::Gelu)),
        ("TILE", TILE as f64),
        ("FLAT_WG", FLAT_BLOCKS as f64),
        ("TILE_M", TILED_TILE as f64),
    ];
    let tiles = |tile: usize| {
        [
            d.n.div_ceil(tile) as u32,
            d.m.div_ceil(tile) as u32,
            d.batch as u32,
        ]
    };
    let grid = match kernel {
        MatmulKernel::Scalar | MatmulKernel::Vec4 | MatmulKernel::Subgroup => tiles(TILE),
        MatmulKernel::Tiled | MatmulKernel::TiledPrefetch => tiles(TILED_TILE),
        MatmulKernel::Flat => {
            let blocks = d.batch * d.m.div_ceil(4) * d.n.div_ceil(4);
            dev.grid_1d(blocks.div_ceil(FLAT_BLOCKS) as u32)
        }
    };
    dev.count_flops(2 * d.products() as u64);
    dev.dispatch(
        kernel.def(),
        &overrides,
        &MatmulParams {
            m: d.m as u32,
            n: d.n as u32,
            k: d.k as u32,
            a_batch_stride: (d.m * d.k) as u32,
            b_batch_stride: if d.b_shared { 0 } else { d.k * d.n } as u32,
            batch: d.batch as u32,
        },
        &[
            a.buffer(),
            b.buffer(),
            bias.map_or(dev.dummy(), |x| x.buffer()),
            out.buffer(),
        ],
        grid,
    );
    Ok(out)
}

/// Gradients (da, db, dbias) of `op(a) @ op(b) + bias` given dc.
pub fn matmul_backward(
    a: &Tensor,
    b: &Tensor,
    t: Transpose,
    has_bias: bool,
    dc: &Tensor,
    needs: &[bool],
) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
    let d = MatmulShape::of(a, b, t, None, Epilogue::None)?;
    let da = if needs[0] {
        Some(if t.a {
            matmul_forward(b, dc, Transpose { a: t.b, b: true }, None)?
        } else {
            matmul_forward(dc, b, Transpose { a: false, b: !t.b }, None)?
        })
    } else {
        None
    };
    let db = if needs[1] {
        let per_batch = if t.b {
            matmul_forward(dc, a, Transpose { a: true, b: t.a }, None)?
        } else {
            matmul_forward(a, dc, Transpose { a: !t.a, b: false }, None)?
        };
        // A b shared by every batch receives the sum of the per-batch gradients.
        Some(if d.b_shared {
            sum_to_shape(&per_batch, b.shape())?
        } else {
            per_batch
        })
    } else {
        None
    };
    let dbias = if has_bias && needs.get(2).copied().unwrap_or(false) {
        Some(sum_leading_forward(dc, d.n)?)
    } else {
        None
    };
    Ok((da, db, dbias))
}

/// Differentiable `op(a) @ op(b) (+ bias)`.
pub fn matmul(a: &Tensor, b: &Tensor, t: Transpose, bias: Option<&Tensor>) -> Result<Tensor> {
    let y = matmul_forward(a, b, t, bias)?;
    let (a2, b2, has_bias) = (a.clone(), b.clone(), bias.is_some());
    let mut inputs = vec![a, b];
    inputs.extend(bias);
    record("matmul", &inputs, &y, move |dc, needs| {
        let (da, db, dbias) = matmul_backward(&a2, &b2, t, has_bias, dc, needs)?;
        let mut grads = vec![da, db];
        if has_bias {
            grads.push(dbias);
        }
        Ok(grads)
    });
    Ok(y)
}

/// `x @ w^T + bias` with a torch-layout weight [out, in]: x [.., in] -> [.., out].
pub fn linear(x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    on_rows(x, |x2| matmul(x2, w, Transpose::B, bias))
}

/// `gelu(linear(x, w, bias))`. With nothing to differentiate (the target encoder,
/// evaluation) it is one product with a GELU epilogue; otherwise the two ops, since
/// GELU's backward needs the pre-activation.
pub fn linear_gelu(x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let mut inputs = vec![x, w];
    inputs.extend(bias);
    if crate::tape::records(&inputs) {
        return crate::ops::elementwise::gelu(&linear(x, w, bias)?);
    }
    on_rows(x, |x2| {
        let shape = MatmulShape::of(x2, w, Transpose::B, bias, Epilogue::Gelu)?;
        matmul_with(&MatmulPlan::new(x.device(), &shape), x2, w, bias)
    })
}

/// `f` applied to x [.., in] seen as [rows, in], its [rows, out] result given x's
/// leading dims back.
fn on_rows(x: &Tensor, f: impl FnOnce(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
    let sx = x.shape();
    if sx.is_empty() {
        return shape_err("linear", "x must be at least 1-D");
    }
    let rows = x.numel() / sx[sx.len() - 1];
    let y = f(&crate::ops::layout::reshape(x, &[rows, sx[sx.len() - 1]])?)?;
    let mut out_shape = sx[..sx.len() - 1].to_vec();
    out_shape.push(y.shape()[1]);
    crate::ops::layout::reshape(&y, &out_shape)
}
