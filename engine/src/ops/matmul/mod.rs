//! Batched matmul with transpose flags and an optional bias and GELU epilogue, run on
//! the plan `plan::MatmulPlan` makes for each product; `linear`, and the fused `mlp`
//! whose GELU lives in the epilogues of its products, forward and backward. Operands
//! may be f16 (products on them run on matmul_mixed.wgsl, f32 accumulation); under
//! `Precision::Mixed` (`crate::precision`) `linear` and `mlp` cast theirs to f16.
//!
//! a: [.., M, K] ([.., K, M] with `trans_a`), b: [K, N] shared or [.., K, N] per batch
//! ([.., N, K] with `trans_b`), bias: [N]. out: [.., M, N].
//!
//! Explained in the tour: docs/tour/04-matmul.md.

mod plan;

use plan::slice_shape;

pub use plan::{
    split_k, Epilogue, MatmulKernel, MatmulPlan, MatmulShape, MatmulTypes, Transpose, COOP_TILE,
    FLAT_BLOCKS, SUBGROUP_TILE, TILE, TILED_TILE,
};

use std::sync::atomic::{AtomicU32, Ordering};

use crate::device::{round_up_to_quarter_power, Candidate, KernelDef, CPU_LOOP_BUDGET};
use crate::error::{shape_err, Result};
use crate::ops::cast::{cast, cast_forward};
use crate::ops::reduce::{sum_leading_forward, sum_leading_pair_forward, sum_to_shape};
use crate::precision;
use crate::shaders;
use crate::tape::record;
use crate::tensor::{DType, Tensor};

crate::kernel_params! {
    /// matmul_params.wgsl's `Params`, every matmul kernel's.
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

/// a, b, bias, pre (the GELU-gradient epilogue's input) -> c, pre (the saving
/// epilogue's output); the vec4 kernels bind the same buffers as vec4 arrays from
/// binding 7, the tiled ones from 13.
const SCALAR: KernelDef<MatmulParams> = KernelDef::new(&shaders::MATMUL, "matmul", 4, 2);
const FLAT: KernelDef<MatmulParams> = KernelDef::new(&shaders::MATMUL, "matmul_flat", 4, 2);
const VEC4: KernelDef<MatmulParams> =
    KernelDef::new(&shaders::MATMUL, "matmul_vec4", 4, 2).bound_from(7);
const TILED: KernelDef<MatmulParams> =
    KernelDef::new(&shaders::MATMUL, "matmul_tiled", 4, 2).bound_from(13);
const TILED_PREFETCH: KernelDef<MatmulParams> =
    KernelDef::new(&shaders::MATMUL, "matmul_tiled_prefetch", 4, 2).bound_from(13);
const TILED_PREFETCH_VEC4: KernelDef<MatmulParams> =
    KernelDef::new(&shaders::MATMUL, "matmul_tiled_prefetch_vec4", 4, 2).bound_from(7);
const SUBGROUP: KernelDef<MatmulParams> =
    KernelDef::new(&shaders::MATMUL_SUBGROUP, "matmul_subgroup", 4, 2).bound_from(7);
/// The same six buffers, each operand bound as 32-bit words (f32 or f16 pairs).
const MIXED: KernelDef<MatmulParams> = KernelDef::new(&shaders::MATMUL_MIXED, "matmul_mixed", 4, 2);
const MIXED_TILED: KernelDef<MatmulParams> =
    KernelDef::new(&shaders::MATMUL_MIXED, "matmul_mixed_tiled", 4, 2);
const MIXED_TILED_PREFETCH: KernelDef<MatmulParams> =
    KernelDef::new(&shaders::MATMUL_MIXED, "matmul_mixed_tiled_prefetch", 4, 2);
/// The same, bound from 7 with a, b and c as pairs of words.
const MIXED_SUBGROUP: KernelDef<MatmulParams> =
    KernelDef::new(&shaders::MATMUL_MIXED_SUBGROUP, "matmul_subgroup", 4, 2).bound_from(7);
/// The same six buffers as `MIXED`, on cooperative matrices, or with them emulated.
const MIXED_COOP: KernelDef<MatmulParams> =
    KernelDef::new(&shaders::MATMUL_COOP, "matmul_coop", 4, 2);
const MIXED_COOP_EMULATED: KernelDef<MatmulParams> =
    KernelDef::new(&shaders::MATMUL_COOP_EMULATED, "matmul_coop", 4, 2);

/// The kernel definition of each matmul kernel.
fn kernel_def(kernel: MatmulKernel) -> &'static KernelDef<MatmulParams> {
    match kernel {
        MatmulKernel::Scalar => &SCALAR,
        MatmulKernel::Flat => &FLAT,
        MatmulKernel::Vec4 => &VEC4,
        MatmulKernel::Tiled => &TILED,
        MatmulKernel::TiledPrefetch => &TILED_PREFETCH,
        MatmulKernel::TiledPrefetchVec4 => &TILED_PREFETCH_VEC4,
        MatmulKernel::Subgroup => &SUBGROUP,
        MatmulKernel::Mixed => &MIXED,
        MatmulKernel::MixedTiled => &MIXED_TILED,
        MatmulKernel::MixedTiledPrefetch => &MIXED_TILED_PREFETCH,
        MatmulKernel::MixedSubgroup => &MIXED_SUBGROUP,
        MatmulKernel::MixedCoop => &MIXED_COOP,
        MatmulKernel::MixedCoopEmulated => &MIXED_COOP_EMULATED,
    }
}

/// What `MixedCoop` (and its emulation) compile to: the product, or one part of it
/// alone, to find what bounds it (`ijepa bench matmul --coop-anatomy`; matmul_params.wgsl's
/// `ANATOMY` says what each part keeps). Only the product computes anything meaningful.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CoopAnatomy {
    Product = 0,
    Staging = 1,
    Fragments = 2,
    HalfAccumulators = 3,
}

static COOP_ANATOMY: AtomicU32 = AtomicU32::new(CoopAnatomy::Product as u32);

/// Compile the cooperative-matrix kernels as `anatomy` from now on, in this process: a
/// benchmark's diagnostic; every mode but `Product` gives wrong products.
pub fn set_coop_anatomy(anatomy: CoopAnatomy) {
    COOP_ANATOMY.store(anatomy as u32, Ordering::Relaxed);
}

/// The override values `kernel`'s pipeline for a product of shape `d` is compiled
/// with; `subgroup` is the device's subgroup size, which `MixedCoop`'s workgroups
/// are (see `Device::cooperative_subgroup`).
pub fn pipeline_constants(
    kernel: MatmulKernel,
    d: &MatmulShape,
    subgroup: Option<u32>,
) -> Vec<(&'static str, f64)> {
    let flag = |on: bool| on as u32 as f64;
    let mut overrides = vec![
        ("TRANS_A", flag(d.t.a)),
        ("TRANS_B", flag(d.t.b)),
        ("HAS_BIAS", flag(d.bias)),
        ("HAS_GELU", flag(d.epilogue.applies_gelu())),
        ("SAVE_PRE", flag(d.epilogue == Epilogue::GeluSavingInput)),
        ("GELU_GRAD", flag(d.epilogue == Epilogue::GeluGradient)),
        ("FLAT_WG", FLAT_BLOCKS as f64),
        ("TILE_M", TILED_TILE as f64),
    ];
    let f16 = |t: DType| flag(t == DType::F16);
    if kernel.mixed() {
        overrides.extend([
            ("A_F16", f16(d.types.a)),
            ("B_F16", f16(d.types.b)),
            ("C_F16", f16(d.types.c)),
            ("PRE_F16", f16(d.types.pre)),
        ]);
    } else {
        overrides.push(("TILE", TILE as f64));
    }
    match (kernel, subgroup) {
        (MatmulKernel::MixedCoop, Some(lanes)) => overrides.push(("SG", lanes as f64)),
        (MatmulKernel::MixedCoopEmulated, _) => {
            overrides.push(("SG", shaders::COOP_EMULATED_LANES as f64))
        }
        _ => {}
    }
    if kernel.cooperative() {
        let anatomy = COOP_ANATOMY.load(Ordering::Relaxed);
        if anatomy != CoopAnatomy::Product as u32 {
            overrides.push(("ANATOMY", anatomy as f64));
        }
    }
    if kernel.sums_rows() {
        overrides.push(("ROW_SUMS", flag(d.epilogue == Epilogue::RowSums)));
    }
    overrides
}

/// out = op(a) @ op(b) (+ bias), on the device's plan.
pub fn matmul_forward(
    a: &Tensor,
    b: &Tensor,
    t: Transpose,
    bias: Option<&Tensor>,
) -> Result<Tensor> {
    matmul_forward_to(a, b, t, bias, DType::F32)
}

/// `matmul_forward` with the product stored in `out`. An f16 output makes the product
/// mixed: its f32 operands are rounded to f16 as it reads them.
pub fn matmul_forward_to(
    a: &Tensor,
    b: &Tensor,
    t: Transpose,
    bias: Option<&Tensor>,
    out: DType,
) -> Result<Tensor> {
    let shape = MatmulShape::of(a, b, t, bias, Epilogue::None)?.with_output(out)?;
    Ok(run_planned(MatmulPlan::new(a.device(), &shape), a, b, bias, None)?.0)
}

/// The product `plan` was made for, run as it says (tests run every candidate).
pub fn matmul_with(
    plan: &MatmulPlan,
    a: &Tensor,
    b: &Tensor,
    bias: Option<&Tensor>,
) -> Result<Tensor> {
    Ok(matmul_epilogue_with(plan, a, b, bias, None)?.0)
}

/// `matmul_with` for every epilogue and output type: `pre` is the GELU-gradient
/// epilogue's input (of the output's shape), and the GELU input the saving epilogue
/// writes comes back beside the output.
pub fn matmul_epilogue_with(
    plan: &MatmulPlan,
    a: &Tensor,
    b: &Tensor,
    bias: Option<&Tensor>,
    pre: Option<&Tensor>,
) -> Result<(Tensor, Option<Tensor>)> {
    let d = plan.shape;
    let mut given = MatmulShape::of(a, b, d.t, bias, d.epilogue)?.with_output(d.types.c)?;
    if let Some(pre) = pre.filter(|_| d.epilogue == Epilogue::GeluGradient) {
        given = given.with_gelu_input(pre.dtype())?;
    }
    if given != d {
        return shape_err(
            "matmul",
            format!(
                "a plan for {d:?} was given a {:?} and b {:?} ({given:?})",
                a.shape(),
                b.shape()
            ),
        );
    }
    a.device().note_plan(|| plan.key());
    run(plan, a, b, bias, pre)
}

/// The product `rule` plans, on `rule`'s plan or, where the device measures plans, on
/// the fastest of the plans that compute the same ([`MatmulPlan::candidates_like`]),
/// timed on these operands at the first product of its sizes' bucket
/// ([`measured_key`]) and remembered by the device; or on the choice its plan file
/// recorded for that bucket.
fn run_planned(
    rule: MatmulPlan,
    a: &Tensor,
    b: &Tensor,
    bias: Option<&Tensor>,
    pre: Option<&Tensor>,
) -> Result<(Tensor, Option<Tensor>)> {
    let dev = a.device();
    let plan = if dev.chooses_measured_plans() {
        let candidates = MatmulPlan::candidates_like(dev, &rule);
        let key = measured_key(&rule, &candidates);
        let chosen = dev.measured_choice(key, &candidates, &rule, |i| {
            run(&candidates[i], a, b, bias, pre).map(drop)
        })?;
        chosen.map_or(rule, |i| candidates[i])
    } else {
        rule
    };
    dev.note_plan(|| plan.key());
    run(&plan, a, b, bias, pre)
}

/// A candidate's kernel, and how it splits K.
impl Candidate for MatmulPlan {
    fn method(&self) -> String {
        MatmulPlan::method(self)
    }

    fn description(&self) -> String {
        self.describe()
    }
}

/// What a measured choice is remembered under: the product's form and its sizes
/// rounded up as the pool's size classes are (`round_up_to_quarter_power`; the masks
/// change the token counts, so M or K, every step), and the candidates, which differ
/// where a size's multiples of 4 do.
fn measured_key(rule: &MatmulPlan, candidates: &[MatmulPlan]) -> String {
    let s = &rule.shape;
    let quarter = |x: usize| round_up_to_quarter_power(x as u64);
    let kernels: Vec<String> = candidates.iter().map(|p| p.method()).collect();
    format!(
        "matmul of at most {} x [{}x{}] x [{}x{}], t {:?}, b shared {}, bias {}, {:?}, {:?}: {}",
        quarter(s.batch),
        quarter(s.m),
        quarter(s.k),
        quarter(s.k),
        quarter(s.n),
        (s.t.a, s.t.b),
        s.b_shared,
        s.bias,
        s.epilogue,
        s.types,
        kernels.join(", ")
    )
}

/// `plan` on operands of its shape: the output, and the second output of its epilogue
/// (the saving one's GELU input, or op(a)'s row sums).
/// Unnoted in the plan log: its callers note the plan they chose (not those timed).
fn run(
    plan: &MatmulPlan,
    a: &Tensor,
    b: &Tensor,
    bias: Option<&Tensor>,
    pre: Option<&Tensor>,
) -> Result<(Tensor, Option<Tensor>)> {
    match plan.split_k {
        Some(slices) => split_k_product(a, b, &plan.shape, slices, plan.kernel),
        None => run_kernel(plan.kernel, a, b, &plan.shape, bias, pre),
    }
}

/// a^T b for a [K, M] and b [K, N] as `slices` partial products (each by `kernel`) over
/// equal slices of K, summed, plus the few rows K leaves over, multiplied in the same
/// arithmetic (f16 values on a mixed kernel); with the row sums of a^T
/// (`Epilogue::RowSums`) summed the same way.
fn split_k_product(
    a: &Tensor,
    b: &Tensor,
    d: &MatmulShape,
    slices: usize,
    kernel: MatmulKernel,
) -> Result<(Tensor, Option<Tensor>)> {
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
    let mut rows = d.k / slices;
    // The rows left over are copied out from their first row on: in f16, that row
    // must begin a word, as an even count of rows makes it.
    let f16 = a.dtype() == DType::F16 || b.dtype() == DType::F16;
    if f16 && rows * slices < d.k && rows % 2 == 1 && rows > 1 {
        rows -= 1;
    }
    let a3 = a.prefix_view(&[slices, rows, d.m])?;
    let b3 = b.prefix_view(&[slices, rows, d.n])?;
    let (partial, partial_sums) =
        run_kernel(kernel, &a3, &b3, &slice_shape(d, slices), None, None)?;
    // The row sums' slices are summed in the same dispatch as the products'.
    let (sum, row_sums) = match partial_sums {
        Some(sums) => {
            let (sum, row_sums) = sum_leading_pair_forward(&partial, d.m * d.n, &sums, d.m)?;
            (sum, Some(row_sums))
        }
        None => (sum_leading_forward(&partial, d.m * d.n)?, None),
    };
    let sum = sum.view(&[d.m, d.n])?;
    let (main, rest) = (rows * slices, d.k - rows * slices);
    if rest == 0 {
        return Ok((sum, row_sums));
    }
    use crate::ops::elementwise::add_forward;
    let (tail_a, tail_b) = (a.copy_rows(main, rest)?, b.copy_rows(main, rest)?);
    let tail_shape = MatmulShape::of(&tail_a, &tail_b, Transpose::A, None, Epilogue::None)?;
    let tail_plan = if kernel.mixed() {
        MatmulPlan::mixed(a.device(), &tail_shape)
    } else {
        MatmulPlan::new(a.device(), &tail_shape)
    };
    let (tail, _) = run_planned(tail_plan, &tail_a, &tail_b, None, None)?;
    // The column sums read f32: an f16 a is widened first, exactly.
    let row_sums = row_sums
        .map(|sums| {
            let tail_sums = sum_leading_forward(&cast_forward(&tail_a, DType::F32)?, d.m)?;
            add_forward(&sums, &tail_sums)
        })
        .transpose()?;
    Ok((add_forward(&sum, &tail)?, row_sums))
}

/// One dispatch of `kernel` over a product of shape `d`.
fn run_kernel(
    kernel: MatmulKernel,
    a: &Tensor,
    b: &Tensor,
    d: &MatmulShape,
    bias: Option<&Tensor>,
    pre: Option<&Tensor>,
) -> Result<(Tensor, Option<Tensor>)> {
    let dev = a.device();
    if !kernel.takes(d) {
        return shape_err(
            "matmul",
            format!(
                "the {kernel:?} kernel does not take {}x{}x{} (transposed a: {}) with {:?}: the f32 kernels take f32 only, the vec4 ones N and K multiples of 4 (and M, with a transposed), the mixed ones an f16 output with N even, the cooperative one f16 a and b",
                d.m, d.n, d.k, d.t.a, d.types
            ),
        );
    }
    if !kernel.runs_on(dev) {
        return shape_err(
            "matmul",
            format!(
                "the {kernel:?} kernel needs {}, this device ({}) has not",
                kernel.needs(),
                dev.info().name
            ),
        );
    }
    if dev.is_cpu() && kernel.cpu_k_steps(d.k) > CPU_LOOP_BUDGET {
        let splits = if d.splittable() {
            "a weight gradient this deep runs split along K, as its rule plans it"
        } else {
            "only weight gradients are split along K"
        };
        return shape_err(
            "matmul",
            format!(
                "the {kernel:?} kernel would walk K = {} in {} steps, past the {CPU_LOOP_BUDGET} that a CPU adapter's loops may make (lavapipe cuts them short without an error); {splits}",
                d.k,
                kernel.cpu_k_steps(d.k)
            ),
        );
    }
    let sa = a.shape();
    let mut out_shape = sa[..sa.len() - 2].to_vec();
    out_shape.extend([d.m, d.n]);
    let pre = match (d.epilogue, pre) {
        (Epilogue::GeluGradient, Some(pre))
            if pre.shape() == out_shape.as_slice() && pre.dtype() == d.types.pre =>
        {
            Some(pre)
        }
        (Epilogue::GeluGradient, _) => {
            return shape_err(
                "matmul",
                format!(
                "the GELU-gradient epilogue needs the GELU input {out_shape:?} in {:?}, got {:?}",
                d.types.pre,
                pre.map(|p| (p.shape(), p.dtype()))
            ),
            )
        }
        _ => None,
    };
    // The row sums of op(a): [.., M].
    let sums_shape = &out_shape[..out_shape.len() - 1];
    if d.k == 0 {
        // An empty sum: the bias, through the epilogue, is what is left.
        use crate::ops::elementwise::{add_forward, fill, gelu_forward};
        let out = Tensor::empty(dev, &out_shape)?;
        fill(&out, 0.0)?;
        let out = match bias {
            Some(bias) => add_forward(&out, bias)?,
            None => out,
        };
        let saved = match d.epilogue {
            Epilogue::GeluSavingInput => Some(cast_forward(&out, d.types.pre)?),
            Epilogue::RowSums => Some(Tensor::zeros(dev, sums_shape)?),
            _ => None,
        };
        let out = if d.epilogue.applies_gelu() {
            gelu_forward(&out)?
        } else {
            out
        };
        return Ok((cast_forward(&out, d.types.c)?, saved));
    }
    let out = Tensor::empty_of(dev, &out_shape, d.types.c)?;
    let saved = match d.epilogue {
        Epilogue::GeluSavingInput => Some(Tensor::empty_of(dev, &out_shape, d.types.pre)?),
        Epilogue::RowSums => Some(Tensor::empty(dev, sums_shape)?),
        _ => None,
    };
    let overrides = pipeline_constants(kernel, d, dev.cooperative_subgroup());
    let tiles = |tile: usize| dev.grid_2d(d.n.div_ceil(tile), d.m.div_ceil(tile) * d.batch);
    let grid = match kernel {
        MatmulKernel::Scalar | MatmulKernel::Vec4 => tiles(TILE),
        MatmulKernel::Subgroup | MatmulKernel::MixedSubgroup => tiles(SUBGROUP_TILE),
        MatmulKernel::Tiled
        | MatmulKernel::TiledPrefetch
        | MatmulKernel::TiledPrefetchVec4
        | MatmulKernel::MixedTiled
        | MatmulKernel::MixedTiledPrefetch => tiles(TILED_TILE),
        MatmulKernel::MixedCoop | MatmulKernel::MixedCoopEmulated => tiles(COOP_TILE),
        MatmulKernel::Flat | MatmulKernel::Mixed => {
            let blocks = d.batch * d.m.div_ceil(4) * d.n.div_ceil(4);
            dev.grid_1d(blocks.div_ceil(FLAT_BLOCKS) as u32)
        }
    };
    // The f32 kernels check their operands are f32 (`buffer`); the mixed ones read
    // either type.
    let bind = |t: &Tensor| {
        if kernel.mixed() {
            t.binding()
        } else {
            t.buffer()
        }
    };
    dev.count_flops(2 * d.products() as u64);
    dev.dispatch(
        kernel_def(kernel),
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
            bind(a),
            bind(b),
            bias.map_or(dev.dummy(), |x| x.buffer()),
            pre.map_or(dev.dummy(), bind),
            out.binding(),
            saved.as_ref().map_or(dev.dummy_output(), bind),
        ],
        grid,
    )?;
    Ok((out, saved))
}

/// Gradients (da, db, dbias) of `op(a) @ op(b) + bias` given dc. The products of a
/// mixed forward (an f16 operand) are mixed too, whatever their operands' storage: the
/// gradient dc (f32, or f16 where only products read it: GELU's in the MLP), and an
/// operand that entered in f32, are multiplied as f16 values.
pub fn matmul_backward(
    a: &Tensor,
    b: &Tensor,
    t: Transpose,
    has_bias: bool,
    dc: &Tensor,
    needs: &[bool],
) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
    let d = MatmulShape::of(a, b, t, None, Epilogue::None)?;
    let dev = a.device();
    // The plan of a product in the forward's arithmetic.
    let plan = |shape: &MatmulShape| {
        if d.types.all_f32() {
            MatmulPlan::new(dev, shape)
        } else {
            MatmulPlan::mixed(dev, shape)
        }
    };
    let product = |x: &Tensor, y: &Tensor, t: Transpose| -> Result<Tensor> {
        let shape = MatmulShape::of(x, y, t, None, Epilogue::None)?;
        Ok(run_planned(plan(&shape), x, y, None, None)?.0)
    };
    let wants_dbias = has_bias && needs.get(2).copied().unwrap_or(false);
    let da = if needs[0] {
        Some(if t.a {
            product(b, dc, Transpose { a: t.b, b: true })?
        } else {
            product(dc, b, Transpose { a: false, b: !t.b })?
        })
    } else {
        None
    };
    // The weight gradient of x W^T is dc^T op(a): where its plan's kernel can sum dc's
    // columns as it reads them (`Epilogue::RowSums`, of dc as stored, in mixed
    // arithmetic too), the bias gradient comes with it.
    let with_sums = (wants_dbias && needs[1] && t.b && dc.shape().len() == 2)
        .then(|| {
            MatmulShape::of(
                dc,
                a,
                Transpose { a: true, b: t.a },
                None,
                Epilogue::RowSums,
            )
        })
        .transpose()?
        .map(|shape| plan(&shape))
        .filter(MatmulPlan::fits);
    let (per_batch, row_sums) = match with_sums {
        Some(p) => {
            let (dw, sums) = run_planned(p, dc, a, None, None)?;
            (Some(dw), sums)
        }
        None if needs[1] && t.b => (Some(product(dc, a, Transpose { a: true, b: t.a })?), None),
        None if needs[1] => (Some(product(a, dc, Transpose { a: !t.a, b: false })?), None),
        None => (None, None),
    };
    // A b shared by every batch receives the sum of the per-batch gradients.
    let db = match per_batch {
        Some(g) if d.b_shared => Some(sum_to_shape(&g, b.shape())?),
        g => g,
    };
    let dbias = match row_sums {
        Some(sums) => Some(sums),
        // The column sums read f32: an f16 dc (GELU's gradient under mixed precision)
        // is widened first, exactly.
        None if wants_dbias => Some(sum_leading_forward(&cast_forward(dc, DType::F32)?, d.n)?),
        None => None,
    };
    Ok((da, db, dbias))
}

/// Differentiable `op(a) @ op(b) (+ bias)`.
pub fn matmul(a: &Tensor, b: &Tensor, t: Transpose, bias: Option<&Tensor>) -> Result<Tensor> {
    matmul_to(a, b, t, bias, DType::F32)
}

/// Differentiable `matmul_forward_to`: the backward's products follow the operands'
/// types, and the gradients are f32 whatever `out` is.
pub fn matmul_to(
    a: &Tensor,
    b: &Tensor,
    t: Transpose,
    bias: Option<&Tensor>,
    out: DType,
) -> Result<Tensor> {
    let y = matmul_forward_to(a, b, t, bias, out)?;
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

/// A weight as a product takes it: under `Precision::Mixed` cast to f16 (the cast
/// recorded, so that its f32 gradient reaches `w`), otherwise as it is. The f16 weight
/// makes the product, and its backward's, mixed; the activation enters as it is, in
/// f16 where its kernel wrote it so, else in f32, rounded to f16 as the product reads
/// it (the same values a cast would give, without its dispatch and copy).
fn autocast_weight(w: &Tensor) -> Result<Tensor> {
    cast(w, precision::operand_type())
}

/// `x @ w^T + bias` with a torch-layout weight [out, in]: x [.., in] -> [.., out], in
/// f32 (from f16 values of x and w under `Precision::Mixed`).
pub fn linear(x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    linear_to(x, w, bias, DType::F32)
}

/// `linear` with its output stored in `out`: f16 for a layer whose output only feeds
/// products and attention (the qkv projection, `ops::attention::qkv_storage`), under
/// `Precision::Mixed`. Its gradient is f32 either way.
pub fn linear_to(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, out: DType) -> Result<Tensor> {
    let w = autocast_weight(w)?;
    on_rows(x, |x2| matmul_to(x2, &w, Transpose::B, bias, out))
}

/// `gelu(linear(x, w, bias))`. With nothing to differentiate (the target encoder,
/// evaluation) it is one product with a GELU epilogue, stored in f16 under
/// `Precision::Mixed` (it feeds the next product only); otherwise the two ops, since
/// GELU's backward needs the pre-activation.
pub fn linear_gelu(x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let mut inputs = vec![x, w];
    inputs.extend(bias);
    if crate::tape::records(&inputs) {
        return crate::ops::elementwise::gelu(&linear(x, w, bias)?);
    }
    let w = autocast_weight(w)?;
    on_rows(x, |x2| {
        let shape = MatmulShape::of(x2, &w, Transpose::B, bias, Epilogue::Gelu)?
            .with_output(precision::operand_type())?;
        Ok(run_planned(MatmulPlan::new(x.device(), &shape), x2, &w, bias, None)?.0)
    })
}

/// The transformer MLP `fc2(gelu(fc1(x)))` with torch-layout weights w1 [H, D] and
/// w2 [D, H]: x [.., D] -> [.., D]. Differentiated, it is one op whose GELU lives in
/// the products' epilogues: the forward's fc1 writes GELU's input beside its output,
/// and the backward's product dy w2 comes out multiplied by GELU' of it, so the GELU
/// and its backward cost no dispatch of their own. Without a tape: `linear_gelu`, then
/// fc2. Under `Precision::Mixed` the products multiply f16 values, the weights cast
/// to f16, and the hidden activations, GELU's saved input and, in the backward, the
/// gradient of GELU's input are stored in f16 (as autocast keeps them); the output is
/// f32.
pub fn mlp(
    x: &Tensor,
    w1: &Tensor,
    b1: Option<&Tensor>,
    w2: &Tensor,
    b2: Option<&Tensor>,
) -> Result<Tensor> {
    // The tape's inputs: x, w1, (b1), w2, (b2).
    fn inputs<'a>(
        x: &'a Tensor,
        w1: &'a Tensor,
        b1: Option<&'a Tensor>,
        w2: &'a Tensor,
        b2: Option<&'a Tensor>,
    ) -> Vec<&'a Tensor> {
        let mut inputs = vec![x, w1];
        inputs.extend(b1);
        inputs.push(w2);
        inputs.extend(b2);
        inputs
    }
    if !crate::tape::records(&inputs(x, w1, b1, w2, b2)) {
        return linear(&linear_gelu(x, w1, b1)?, w2, b2);
    }
    let (w1, w2) = (&autocast_weight(w1)?, &autocast_weight(w2)?);
    on_rows(x, |x| {
        let dev = x.device();
        let shape = MatmulShape::of(x, w1, Transpose::B, b1, Epilogue::GeluSavingInput)?
            .with_output(precision::operand_type())?;
        let (h, pre) = run_planned(MatmulPlan::new(dev, &shape), x, w1, b1, None)?;
        let pre = pre.expect("the saving epilogue writes GELU's input");
        let y = matmul_forward(&h, w2, Transpose::B, b2)?;
        let recorded = inputs(x, w1, b1, w2, b2);
        let (x, w1, w2) = (x.clone(), w1.clone(), w2.clone());
        let (has_b1, has_b2) = (b1.is_some(), b2.is_some());
        record("mlp", &recorded, &y, move |dy, needs| {
            let fc2 = 2 + has_b1 as usize;
            let fc1_needs = &needs[..fc2];
            let (_, dw2, db2) = matmul_backward(
                &h,
                &w2,
                Transpose::B,
                has_b2,
                dy,
                &[
                    false,
                    needs[fc2],
                    needs.get(fc2 + 1).copied().unwrap_or(false),
                ],
            )?;
            let (dx, dw1, db1) = if fc1_needs.iter().any(|&n| n) {
                // GELU's gradient only feeds fc1's products: stored as the hidden
                // layer is (f16 under `Precision::Mixed`), it is what they would read.
                let shape =
                    MatmulShape::of(dy, &w2, Transpose::NONE, None, Epilogue::GeluGradient)?
                        .with_gelu_input(pre.dtype())?
                        .with_output(h.dtype())?;
                let plan = MatmulPlan::new(dy.device(), &shape);
                let (dpre, _) = run_planned(plan, dy, &w2, None, Some(&pre))?;
                matmul_backward(&x, &w1, Transpose::B, has_b1, &dpre, fc1_needs)?
            } else {
                (None, None, None)
            };
            let mut grads = vec![dx, dw1];
            if has_b1 {
                grads.push(db1);
            }
            grads.push(dw2);
            if has_b2 {
                grads.push(db2);
            }
            Ok(grads)
        });
        Ok(y)
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
