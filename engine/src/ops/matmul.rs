//! Batched matmul with transpose flags and an optional bias and GELU epilogue.
//!
//! a: [.., M, K] ([.., K, M] with `trans_a`), b: [K, N] shared or [.., K, N] per batch
//! ([.., N, K] with `trans_b`), bias: [N]. out: [.., M, N].

use crate::device::KernelDef;
use crate::error::{shape_err, Result};
use crate::ops::reduce::{sum_leading_forward, sum_to_shape};
use crate::shaders;
use crate::tape::record;
use crate::tensor::Tensor;

/// Any shape: scalar loads, edges clamped.
const SCALAR: KernelDef = KernelDef {
    file: "matmul.wgsl",
    source: shaders::MATMUL,
    entry: "matmul",
    reads: 3,
    writes: 1,
    first_binding: 1,
};

/// Any shape, 4x4 blocks numbered across the batch: for small products.
const FLAT: KernelDef = KernelDef {
    file: "matmul.wgsl",
    source: shaders::MATMUL,
    entry: "matmul_flat",
    reads: 3,
    writes: 1,
    first_binding: 1,
};

/// M, N, K multiples of 4: vec4 loads and stores (the buffers bound as vec4 arrays).
const VEC4: KernelDef = KernelDef {
    file: "matmul.wgsl",
    source: shaders::MATMUL,
    entry: "matmul_vec4",
    reads: 3,
    writes: 1,
    first_binding: 5,
};

/// Any shape, 128x128 tiles staged in workgroup memory: for GPUs and large products.
const TILED: KernelDef = KernelDef {
    file: "matmul.wgsl",
    source: shaders::MATMUL,
    entry: "matmul_tiled",
    reads: 3,
    writes: 1,
    first_binding: 9,
};

/// The tiled kernel with the next step's loads in flight during the products, and
/// vec4 reads of both workgroup tiles.
const TILED_PREFETCH: KernelDef = KernelDef {
    file: "matmul.wgsl",
    source: shaders::MATMUL,
    entry: "matmul_tiled_prefetch",
    reads: 3,
    writes: 1,
    first_binding: 9,
};

/// M, N, K multiples of 4, on CPU adapters with 8-lane subgroups: rows of op(a)
/// shared between lanes by subgroup broadcasts.
const SUBGROUP: KernelDef = KernelDef {
    file: "matmul_subgroup.wgsl",
    source: shaders::MATMUL_SUBGROUP,
    entry: "matmul_subgroup",
    reads: 3,
    writes: 1,
    first_binding: 5,
};

/// Which matmul kernel runs a product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatmulKernel {
    /// Scalar loads, 4x4 register blocks, no workgroup memory: any shape.
    Scalar,
    /// The scalar kernel's blocks numbered across the batch, 64 per workgroup: any
    /// shape, no idle invocations on small products (attention over few tokens).
    Flat,
    /// vec4 loads, 4x4 blocks as mat4x4 products: N and K multiples of 4, M too when
    /// a is stored transposed.
    Vec4,
    /// 128x128 workgroup tiles in workgroup memory, 8x8 per invocation: any shape.
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

    /// The kernel for a product on this device: workgroup tiles pay off on GPUs for
    /// large products only (on an H200: 26 TFLOP/s against 22 at 4096^3, but half the
    /// vec4 kernel's speed at 1024^3). On CPU adapters barriers and storage loads are
    /// costly, and the subgroup kernel, which loads least, wins (on lavapipe about 3x
    /// the vec4 kernel at 1024^3).
    pub fn choose(
        device: &crate::Device,
        m: usize,
        n: usize,
        k: usize,
        t: Transpose,
    ) -> MatmulKernel {
        const TILED_FROM: f64 = 4.0e9;
        let subgroup = MatmulKernel::Subgroup;
        if subgroup.takes(m, n, k, t) && subgroup.runs_on(device) {
            subgroup
        } else if !device.is_cpu() && (m * n * k) as f64 >= TILED_FROM {
            MatmulKernel::Tiled
        } else if MatmulKernel::Vec4.takes(m, n, k, t) {
            MatmulKernel::Vec4
        } else if device.is_cpu() || m.min(n) < 32 {
            MatmulKernel::Flat
        } else {
            MatmulKernel::Scalar
        }
    }

    /// Whether the device can run this kernel at all.
    pub fn runs_on(self, device: &crate::Device) -> bool {
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

/// The sizes of one call, after checking the shapes.
struct Dims {
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
    b_shared: bool,
    out_shape: Vec<usize>,
}

fn dims(a: &Tensor, b: &Tensor, t: Transpose, bias: Option<&Tensor>) -> Result<Dims> {
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
    let mut out_shape = lead.to_vec();
    out_shape.extend([m, n]);
    Ok(Dims {
        batch: lead.iter().product(),
        m,
        k: ka,
        n,
        b_shared,
        out_shape,
    })
}

/// out = op(a) @ op(b) (+ bias), with the kernel [`MatmulKernel::choose`] picks.
pub fn matmul_forward(
    a: &Tensor,
    b: &Tensor,
    t: Transpose,
    bias: Option<&Tensor>,
) -> Result<Tensor> {
    matmul_with(None, a, b, t, bias, Epilogue::None)
}

/// How many slices of K to split a product into on a GPU, or None. Only the
/// weight-gradient form qualifies: a^T b with a [K, M] and b [K, N] unbatched, where
/// slicing K is a free reshape to a batched product of [S, K/S, M] and [S, K/S, N].
/// It pays when the output has too few 64x64 tiles to occupy a GPU while K is long
/// (a ViT's dW: [D, 4D] outputs summed over every token of the batch): S partial
/// products run side by side and one reduction adds them. Slices stay at least 512
/// long and the grid at most 256 tiles; a count that divides K is preferred, since
/// the rows left over cost four more dispatches.
pub fn split_k(
    gpu: bool,
    m: usize,
    n: usize,
    k: usize,
    t: Transpose,
    batched: bool,
) -> Option<usize> {
    const TILE: usize = 64;
    const COUNTS: [usize; 4] = [16, 8, 4, 2];
    let tiles = m.div_ceil(TILE) * n.div_ceil(TILE);
    if !gpu || batched || !t.a || t.b || tiles >= 64 {
        return None;
    }
    let fits = |s: usize| k / s >= 512 && tiles * s <= 256;
    COUNTS
        .into_iter()
        .find(|&s| fits(s) && k.is_multiple_of(s))
        .or_else(|| COUNTS.into_iter().find(|&s| fits(s)))
}

/// a^T b for a [K, M] and b [K, N] as `slices` partial products over equal slices of
/// K, summed, plus the few rows K leaves over: the same product as
/// `matmul_forward(a, b, Transpose::A, None)`.
pub fn matmul_split_k(a: &Tensor, b: &Tensor, slices: usize) -> Result<Tensor> {
    let d = dims(a, b, Transpose::A, None)?;
    if d.batch != 1 || a.shape().len() != 2 || !d.b_shared || slices == 0 || d.k < slices {
        return shape_err(
            "matmul",
            format!(
                "split-K needs 2-D a [K, M] and b [K, N] with K at least {slices}, got a {:?}, b {:?}",
                a.shape(),
                b.shape()
            ),
        );
    }
    split_k_checked(a, b, &d, slices)
}

/// `matmul_split_k` on shapes already checked.
fn split_k_checked(a: &Tensor, b: &Tensor, d: &Dims, slices: usize) -> Result<Tensor> {
    let rows = d.k / slices;
    let a3 = a.prefix_view(&[slices, rows, d.m])?;
    let b3 = b.prefix_view(&[slices, rows, d.n])?;
    let partial = matmul_with(None, &a3, &b3, Transpose::A, None, Epilogue::None)?;
    let sum = sum_leading_forward(&partial, d.m * d.n)?.view(&[d.m, d.n])?;
    let (main, rest) = (rows * slices, d.k - rows * slices);
    if rest == 0 {
        return Ok(sum);
    }
    let tail_a = crate::ops::layout::narrow_forward(a, 0, main, rest)?;
    let tail_b = crate::ops::layout::narrow_forward(b, 0, main, rest)?;
    let tail = matmul_with(None, &tail_a, &tail_b, Transpose::A, None, Epilogue::None)?;
    crate::ops::elementwise::add_forward(&sum, &tail)
}

/// [`matmul_forward`] with an epilogue and a given kernel, or the chosen one for
/// `None` (tests hold every kernel against the CPU). With `None`, a weight-gradient
/// product too small to fill a GPU is split along K (see [`split_k`]).
pub fn matmul_with(
    kernel: Option<MatmulKernel>,
    a: &Tensor,
    b: &Tensor,
    t: Transpose,
    bias: Option<&Tensor>,
    epilogue: Epilogue,
) -> Result<Tensor> {
    let d = dims(a, b, t, bias)?;
    if kernel.is_none() && bias.is_none() && epilogue == Epilogue::None {
        let gpu = !a.device().is_cpu();
        let batched = a.shape().len() > 2 || !d.b_shared;
        if let Some(slices) = split_k(gpu, d.m, d.n, d.k, t, batched) {
            return split_k_checked(a, b, &d, slices);
        }
    }
    let kernel = kernel.unwrap_or_else(|| MatmulKernel::choose(a.device(), d.m, d.n, d.k, t));
    if !kernel.takes(d.m, d.n, d.k, t) {
        return shape_err(
            "matmul",
            format!(
                "the {kernel:?} kernel needs N and K multiples of 4 (and M, with a transposed), got {}x{}x{} (transposed a: {})",
                d.m, d.n, d.k, t.a
            ),
        );
    }
    if !kernel.runs_on(a.device()) {
        return shape_err(
            "matmul",
            format!(
                "the {kernel:?} kernel needs a CPU adapter with 8-lane subgroups, this one is {}",
                a.device().info().name
            ),
        );
    }
    let dev = a.device();
    let out = Tensor::empty(dev, &d.out_shape)?;
    if d.k == 0 {
        // An empty sum: the bias, through the epilogue, is what is left.
        crate::ops::elementwise::fill(&out, 0.0);
        let out = match bias {
            Some(bias) => crate::ops::elementwise::add_forward(&out, bias)?,
            None => out,
        };
        return match epilogue {
            Epilogue::None => Ok(out),
            Epilogue::Gelu => crate::ops::elementwise::gelu_forward(&out),
        };
    }
    let constants = [
        ("TRANS_A", t.a as u32 as f64),
        ("TRANS_B", t.b as u32 as f64),
        ("HAS_BIAS", bias.is_some() as u32 as f64),
        ("HAS_GELU", (epilogue == Epilogue::Gelu) as u32 as f64),
    ];
    let b_stride = if d.b_shared { 0 } else { d.k * d.n };
    let tiles = |tile: usize| {
        [
            d.n.div_ceil(tile) as u32,
            d.m.div_ceil(tile) as u32,
            d.batch as u32,
        ]
    };
    let (def, grid) = match kernel {
        MatmulKernel::Scalar => (&SCALAR, tiles(64)),
        MatmulKernel::Flat => {
            let blocks = d.batch * d.m.div_ceil(4) * d.n.div_ceil(4);
            (&FLAT, dev.grid_1d(blocks.div_ceil(64) as u32))
        }
        MatmulKernel::Vec4 => (&VEC4, tiles(64)),
        MatmulKernel::Tiled => (&TILED, tiles(128)),
        MatmulKernel::TiledPrefetch => (&TILED_PREFETCH, tiles(128)),
        MatmulKernel::Subgroup => (&SUBGROUP, tiles(64)),
    };
    dev.count_flops(2 * (d.batch * d.m * d.n * d.k) as u64);
    dev.dispatch(
        def,
        &constants,
        &[
            d.m as u32,
            d.n as u32,
            d.k as u32,
            (d.m * d.k) as u32,
            b_stride as u32,
            d.batch as u32,
        ],
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
    let d = dims(a, b, t, None)?;
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
/// evaluation) it is one kernel with a GELU epilogue; otherwise the two ops, since
/// GELU's backward needs the pre-activation.
pub fn linear_gelu(x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let mut inputs = vec![x, w];
    inputs.extend(bias);
    if crate::tape::records(&inputs) {
        return crate::ops::elementwise::gelu(&linear(x, w, bias)?);
    }
    on_rows(x, |x2| {
        matmul_with(None, x2, w, Transpose::B, bias, Epilogue::Gelu)
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
