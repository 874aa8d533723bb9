//! How a product runs: [`MatmulPlan::new`] is the one place that decides, from the
//! device and the product's shape, which kernel runs it, with which tile, and whether
//! it is split along K. The kernels, and where the plan picks each:
//!
//! | kernel | tile | chosen for |
//! | --- | --- | --- |
//! | `Subgroup` | 32x32, one 8-lane subgroup of 32x4 per lane | every product it takes (N, K multiples of 4; a weight gradient's M, N multiples of 4, any K) on CPU adapters with 8-lane subgroups, whose storage loads it minimises; a weight gradient's bias gradient with it, op(a)'s rows summed as they are fetched (`Epilogue::RowSums`: one column-sum dispatch fewer); `MixedSubgroup` likewise |
//! | `Tiled` | 128x128 in workgroup memory, 8x8 per invocation | nowhere now: `TiledPrefetch` measured faster on the H200 at every size from 1e9 multiply-adds; a candidate |
//! | `Vec4` | 64x64, 4x4 per invocation, vec4 loads | what remains with N and K multiples of 4; on GPUs a weight gradient's bias gradient with it where it runs the product (`Epilogue::RowSums`, summed by its first column of workgroups; M a multiple of 4) |
//! | `Flat` | 64 4x4 blocks per workgroup, numbered across the batch | what remains (attention over few tokens, odd sizes) |
//! | `Scalar` | 64x64, 4x4 per invocation | nowhere now: `Flat` measured as fast or faster on the H200 where `Vec4` cannot run; a candidate |
//! | `TiledPrefetch` | as `Tiled`, the next k-step loaded during the products | products of at least 1e9 multiply-adds on GPUs, and those of a b stored transposed with M and N from 32; a weight gradient's bias gradient with it (`Epilogue::RowSums`, summed by its first column of workgroups as they load dc) |
//! | `TiledPrefetchVec4` | as `TiledPrefetch`, tiles loaded and c stored as vec4s (`Vec4`'s shapes) | nowhere by rule yet: a candidate where plans are measured, not yet timed on a GPU |
//! | `Mixed` | as `Flat`, any operand in f16 | the other products with an f16 operand or output on CPU adapters |
//! | `MixedTiled` | as `Tiled`, any operand in f16 | nowhere now: it won every mixed product of the ViT-S/16 step on the H200, and `MixedTiledPrefetch` is to it what `TiledPrefetch`, faster at every size there, is to `Tiled`; a candidate |
//! | `MixedTiledPrefetch` | as `TiledPrefetch`, any operand in f16 | products with an f16 operand or output on GPUs; a weight gradient's bias gradient with it (`Epilogue::RowSums`, of dc as stored, summed by its first column of workgroups as they load it) |
//! | `MixedSubgroup` | as `Subgroup`, any operand in f16 | products with an f16 operand or output that it takes, on CPU adapters with 8-lane subgroups |
//! | `MixedCoop` | 128x128 per workgroup of 4 subgroups, each 4x4 cooperative 16x16 f16 fragments, f32 accumulation | nowhere by rule: on devices that opened cooperative matrices (`IJEPA_COOPERATIVE_MATRIX=1`) a candidate where plans are measured; on the H200 `MixedTiled` beat it on every product of the ViT-S/16 step |
//! | `MixedCoopEmulated` | as `MixedCoop`, the fragments emulated lane by lane | nowhere: slow; it tests `MixedCoop`'s tiling, staging and epilogue on every adapter with f16 |
//!
//! The f32 kernels take f32 operands only; the mixed ones (matmul_mixed.wgsl,
//! matmul_coop.wgsl) take each of a, b and c in f32 or f16, and multiply f16 values:
//! an operand stored in f32 (a gradient, an activation kept in f32) is rounded to f16
//! as it is read, as tensor cores need.
//!
//! Where the device measures plans (`IJEPA_MEASURE_PLANS=1`), each product runs instead
//! on the fastest of [`MatmulPlan::candidates_like`] its rule's plan, as timed on the
//! device at the first product of its sizes' bucket; with a plan file (`IJEPA_PLANS`),
//! on the choice a run before measured for that bucket.
//!
//! Split-K: on GPUs weight gradients are split along K, into as many slices as
//! occupy the device where the product runs on few workgroups, else two (see
//! [`split_k`]), mixed ones as f32 ones. The measurements behind these rules are in
//! docs/results/. On CPU adapters a weight gradient is split only where its kernel
//! would loop over K more than `CPU_LOOP_BUDGET` times, which lavapipe would cut short;
//! other products that deep are refused there.
//!
//! Explained in the tour: docs/tour/04-matmul.md.

use crate::device::CPU_LOOP_BUDGET;
use crate::error::{shape_err, Result};
use crate::tensor::{DType, Tensor};
use crate::Device;

/// The side of the tile of the `Scalar` and `Vec4` kernels (their WGSL's `TILE`).
pub const TILE: usize = 64;
/// The 4x4 blocks per workgroup of the `Flat` kernel (`FLAT_WG`).
pub const FLAT_BLOCKS: usize = 64;
/// The side of the tile of the `Tiled` and `TiledPrefetch` kernels (`TILE_M`): 16x16
/// invocations of 8x8, as those kernels are written.
pub const TILED_TILE: usize = 128;
/// The side of the tile of the `Subgroup` kernel, one 8-lane subgroup of 32 rows x 4
/// columns per lane (matmul_subgroup.wgsl's `ROWS` and lanes).
pub const SUBGROUP_TILE: usize = 32;
/// The side of the tile of the `MixedCoop` kernel (matmul_coop.wgsl's `COOP_TILE`).
pub const COOP_TILE: usize = 128;

// What the kernels are written for: the scalar and vec4 kernels run (TILE / 4)^2
// invocations per workgroup, at most 256 on every adapter; the subgroup and tiled
// kernels' workgroups are fixed.
const _: () = assert!((TILE / 4) * (TILE / 4) <= 256);
const _: () = assert!(TILED_TILE == 16 * 8);

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
    /// `TiledPrefetch` loading its tiles and storing c as vec4s: `Vec4`'s shapes. A
    /// candidate only, where plans are measured.
    TiledPrefetchVec4,
    /// 32x4 per lane, op(a) fetched once per 8-lane subgroup and broadcast: N and K
    /// multiples of 4, M too when a is stored transposed, on adapters whose subgroups
    /// are exactly 8 lanes (CPU drivers).
    Subgroup,
    /// `Flat` with each of a, b, c in f32 or f16 (f32 accumulation): any shape, N even
    /// for an f16 c.
    Mixed,
    /// `Tiled` with each of a, b, c in f32 or f16: any shape, N even for an f16 c.
    MixedTiled,
    /// `TiledPrefetch` with each of a, b, c in f32 or f16: any shape, N even for an
    /// f16 c.
    MixedTiledPrefetch,
    /// `Subgroup` with each of a, b, c in f32 or f16: its shapes, on its adapters.
    MixedSubgroup,
    /// Cooperative matrices (tensor cores), four subgroups per 128x128 tile: a and b in
    /// f16, c in f32 or f16, any shape (N even for an f16 c), on devices that opened
    /// 16x16x16 f16 -> f32 cooperative matrices.
    MixedCoop,
    /// `MixedCoop`'s kernel with its fragment operations emulated lane by lane: its
    /// shapes, on adapters with f16 in shaders; a test of `MixedCoop` everywhere.
    MixedCoopEmulated,
}

impl MatmulKernel {
    pub const ALL: [MatmulKernel; 13] = [
        MatmulKernel::Scalar,
        MatmulKernel::Flat,
        MatmulKernel::Vec4,
        MatmulKernel::Tiled,
        MatmulKernel::TiledPrefetch,
        MatmulKernel::TiledPrefetchVec4,
        MatmulKernel::Subgroup,
        MatmulKernel::Mixed,
        MatmulKernel::MixedTiled,
        MatmulKernel::MixedTiledPrefetch,
        MatmulKernel::MixedSubgroup,
        MatmulKernel::MixedCoop,
        MatmulKernel::MixedCoopEmulated,
    ];

    /// Whether the kernel reads and writes f16 as well as f32 (matmul_mixed.wgsl).
    pub fn mixed(self) -> bool {
        matches!(
            self,
            MatmulKernel::Mixed
                | MatmulKernel::MixedTiled
                | MatmulKernel::MixedTiledPrefetch
                | MatmulKernel::MixedSubgroup
                | MatmulKernel::MixedCoop
                | MatmulKernel::MixedCoopEmulated
        )
    }

    /// Whether the kernel is the cooperative-matrix one (`MixedCoop`, or its emulation).
    pub fn cooperative(self) -> bool {
        matches!(
            self,
            MatmulKernel::MixedCoop | MatmulKernel::MixedCoopEmulated
        )
    }

    /// Iterations of the kernel's loop over K for a product `k` deep, where a CPU
    /// adapter runs it (`CPU_LOOP_BUDGET`): the vec4 and subgroup kernels step four at a
    /// time, the others one.
    pub fn cpu_k_steps(self, k: usize) -> usize {
        match self {
            MatmulKernel::Vec4 | MatmulKernel::Subgroup | MatmulKernel::MixedSubgroup => {
                k.div_ceil(4)
            }
            _ => k,
        }
    }

    /// Whether the device can run this kernel at all.
    pub fn runs_on(self, device: &Device) -> bool {
        match self {
            MatmulKernel::Subgroup | MatmulKernel::MixedSubgroup => device.has_cpu_subgroups_of_8(),
            MatmulKernel::MixedCoop => device.cooperative_subgroup().is_some(),
            MatmulKernel::MixedCoopEmulated => device.has_shader_f16(),
            _ => true,
        }
    }

    /// What a device needs to run this kernel, in words (for errors).
    pub fn needs(self) -> &'static str {
        match self {
            MatmulKernel::Subgroup | MatmulKernel::MixedSubgroup => {
                "a CPU adapter with 8-lane subgroups"
            }
            MatmulKernel::MixedCoop => {
                "16x16x16 f16 -> f32 cooperative matrices, opened with IJEPA_COOPERATIVE_MATRIX=1"
            }
            MatmulKernel::MixedCoopEmulated => "f16 in shaders (SHADER_F16)",
            _ => "nothing",
        }
    }

    /// Whether the kernel can sum op(a)'s rows beside the product (`Epilogue::RowSums`,
    /// its `ROW_SUMS` override).
    pub fn sums_rows(self) -> bool {
        matches!(
            self,
            MatmulKernel::Subgroup
                | MatmulKernel::MixedSubgroup
                | MatmulKernel::Vec4
                | MatmulKernel::Tiled
                | MatmulKernel::TiledPrefetch
                | MatmulKernel::MixedTiled
                | MatmulKernel::MixedTiledPrefetch
        )
    }

    /// Whether the kernel takes this product: the f32 kernels f32 operands only, the
    /// mixed ones an f16 c only with N even (its columns are stored in pairs); the
    /// vec4 and subgroup kernels (`MixedSubgroup` too) read N and K four at a time, and
    /// M too when a is stored [K, M], where the subgroup kernels take any K; the row sums
    /// of op(a) the subgroup kernels, `Vec4` and the tiled ones (not
    /// `TiledPrefetchVec4`) only, with a stored [K, M].
    pub fn takes(self, shape: &MatmulShape) -> bool {
        let (m, n, k, t) = (shape.m, shape.n, shape.k, shape.t);
        if shape.epilogue == Epilogue::RowSums && !(self.sums_rows() && t.a) {
            return false;
        }
        let vec4 = n.is_multiple_of(4) && k.is_multiple_of(4) && (m.is_multiple_of(4) || !t.a);
        // The subgroup kernels read a stored [K, M] four rows of K at a time and zero the
        // rows past K: a weight gradient's K is free (the tokens of a masked batch).
        let subgroup = vec4 || (t.a && !t.b && m.is_multiple_of(4) && n.is_multiple_of(4));
        if self.mixed() {
            let pairs = shape.types.c == DType::F32 || n.is_multiple_of(2);
            return pairs && (self != MatmulKernel::MixedSubgroup || subgroup);
        }
        if !shape.types.all_f32() {
            return false;
        }
        match self {
            MatmulKernel::Vec4 | MatmulKernel::TiledPrefetchVec4 => vec4,
            MatmulKernel::Subgroup => subgroup,
            _ => true,
        }
    }

    /// The kernel's tile, in words.
    pub fn tile(self) -> String {
        match self {
            MatmulKernel::Scalar | MatmulKernel::Vec4 => {
                format!("{TILE}x{TILE} tiles, 4x4 per invocation")
            }
            MatmulKernel::Subgroup | MatmulKernel::MixedSubgroup => {
                format!("{SUBGROUP_TILE}x{SUBGROUP_TILE} tiles, 32x4 per lane")
            }
            MatmulKernel::Flat | MatmulKernel::Mixed => {
                format!("{FLAT_BLOCKS} 4x4 blocks per workgroup")
            }
            MatmulKernel::Tiled
            | MatmulKernel::TiledPrefetch
            | MatmulKernel::MixedTiled
            | MatmulKernel::MixedTiledPrefetch => {
                format!("{TILED_TILE}x{TILED_TILE} tiles, 8x8 per invocation")
            }
            MatmulKernel::TiledPrefetchVec4 => {
                format!("{TILED_TILE}x{TILED_TILE} tiles, 8x8 per invocation, vec4 loads")
            }
            MatmulKernel::MixedCoop => {
                format!("{COOP_TILE}x{COOP_TILE} tiles, 4 subgroups of 4x4 f16 16x16 fragments")
            }
            MatmulKernel::MixedCoopEmulated => {
                format!("{COOP_TILE}x{COOP_TILE} tiles, fragments emulated")
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
    /// GELU, and the value before it written out too (for GELU's backward).
    GeluSavingInput,
    /// The product times GELU'(pre), pre a tensor of the output's shape: the gradient
    /// through a GELU, fused into the product that brings it (no bias).
    GeluGradient,
    /// The product as it is, and the row sums of op(a) (over K) written beside it,
    /// [.., M] in f32, of a as stored (an f32 a unrounded, in a mixed product too):
    /// for a = dc stored [K, M], a weight gradient's bias gradient, summed as the
    /// product reads dc (no bias; a stored transposed; the kernels that
    /// [`MatmulKernel::sums_rows`]).
    RowSums,
}

impl Epilogue {
    /// Whether it applies GELU to what it stores.
    pub fn applies_gelu(self) -> bool {
        matches!(self, Epilogue::Gelu | Epilogue::GeluSavingInput)
    }
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

/// The element types of a product's operands and output, and of GELU's input where
/// an epilogue writes or reads it (f32 otherwise).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatmulTypes {
    pub a: DType,
    pub b: DType,
    pub c: DType,
    /// GELU's input: written as c is stored (`Epilogue::GeluSavingInput`), or read
    /// (`Epilogue::GeluGradient`) in the type its forward wrote.
    pub pre: DType,
}

impl MatmulTypes {
    pub const F32: MatmulTypes = MatmulTypes {
        a: DType::F32,
        b: DType::F32,
        c: DType::F32,
        pre: DType::F32,
    };

    pub fn all_f32(&self) -> bool {
        *self == MatmulTypes::F32
    }
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
    /// a's and b's types, and c's: f32 unless [`MatmulShape::with_output`] says.
    pub types: MatmulTypes,
}

impl MatmulShape {
    /// The shape of `op(a) @ op(b) (+ bias)`, checked, with an f32 output.
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
        if bias.is_some() && matches!(epilogue, Epilogue::GeluGradient | Epilogue::RowSums) {
            return shape_err("matmul", format!("the {epilogue:?} epilogue takes no bias"));
        }
        if epilogue == Epilogue::RowSums && !t.a {
            return shape_err(
                "matmul",
                format!("the row sums of op(a) are of an a stored transposed [K, M], got a {sa:?} untransposed"),
            );
        }
        if let Some(bias) = bias {
            if bias.shape() != [n] {
                return shape_err(
                    "matmul",
                    format!("bias {:?} does not match N={n}", bias.shape()),
                );
            }
            if bias.dtype() != DType::F32 {
                return shape_err("matmul", "the bias must be f32");
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
            types: MatmulTypes {
                a: a.dtype(),
                b: b.dtype(),
                ..MatmulTypes::F32
            },
        })
    }

    /// The same product with its output stored in `c` (f16: N must be even), and the
    /// GELU input a saving epilogue writes with it.
    pub fn with_output(self, c: DType) -> Result<MatmulShape> {
        if c == DType::F16 && !self.n.is_multiple_of(2) {
            return shape_err(
                "matmul",
                format!(
                    "an f16 output is stored in pairs of columns: N={} is odd",
                    self.n
                ),
            );
        }
        let pre = match self.epilogue {
            Epilogue::GeluSavingInput => c,
            _ => self.types.pre,
        };
        Ok(MatmulShape {
            types: MatmulTypes {
                c,
                pre,
                ..self.types
            },
            ..self
        })
    }

    /// The same GELU-gradient product reading GELU's input stored in `pre`.
    pub fn with_gelu_input(self, pre: DType) -> Result<MatmulShape> {
        if self.epilogue != Epilogue::GeluGradient {
            return shape_err(
                "matmul",
                format!(
                    "only the GELU-gradient epilogue reads GELU's input, not {:?}",
                    self.epilogue
                ),
            );
        }
        Ok(MatmulShape {
            types: MatmulTypes { pre, ..self.types },
            ..self
        })
    }

    /// GELU's input type, in words, where the epilogue writes or reads it.
    fn gelu_input_note(&self) -> String {
        match self.epilogue {
            Epilogue::GeluSavingInput | Epilogue::GeluGradient => {
                format!(", GELU input {:?}", self.types.pre)
            }
            _ => String::new(),
        }
    }

    /// Multiply-adds.
    pub(super) fn products(&self) -> usize {
        self.batch * self.m * self.n * self.k
    }

    /// The weight-gradient form that split-K takes: a^T b, a [K, M] and b [K, N]
    /// unbatched, nothing applied after (the row sums of a, summed over slices as
    /// the products are), an f32 output (the partial products are summed in f32).
    pub(super) fn splittable(&self) -> bool {
        self.types.c == DType::F32
            && self.t == Transpose::A
            && self.batch == 1
            && self.b_shared
            && !self.bias
            && matches!(self.epilogue, Epilogue::None | Epilogue::RowSums)
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
    /// it loads least), else the vec4 kernel where N and K allow, else the flat one.
    /// On GPUs, as measured on the H200 (docs/results/2026-12-04-h200-bench.txt and
    /// -check.txt): weight gradients split along K ([`split_k`]); `TiledPrefetch` from
    /// 1e9 multiply-adds, and for every product of a b stored transposed (x W^T) with
    /// M and N of at least 32, where the vec4 kernel's strided reads of b cost it
    /// 1.6-3.3x; else the vec4 kernel where N and K allow, else the flat one. Products
    /// with an f16 operand or output run as [`MatmulPlan::mixed`] says.
    pub fn new(device: &Device, shape: &MatmulShape) -> MatmulPlan {
        let gpu = !device.plans_as_cpu();
        if !shape.types.all_f32() {
            return Self::mixed(device, shape);
        }
        if let Some(slices) = split_k(gpu, shape) {
            return Self::split(device, shape, slices, Self::new);
        }
        let subgroup = MatmulKernel::Subgroup;
        let kernel = if subgroup.takes(shape) && subgroup.runs_on(device) {
            subgroup
        } else if gpu && prefetches(shape) {
            MatmulKernel::TiledPrefetch
        } else if MatmulKernel::Vec4.takes(shape) {
            MatmulKernel::Vec4
        } else {
            MatmulKernel::Flat
        };
        if Self::deeper_than_cpu_loops(device, shape, kernel) {
            return Self::split(device, shape, 1, Self::new);
        }
        MatmulPlan {
            shape: *shape,
            kernel,
            split_k: None,
        }
    }

    /// Whether the plan's kernel takes the product it runs (each slice's, when split):
    /// what a caller of an epilogue only some kernels have (`Epilogue::RowSums`) asks.
    pub fn fits(&self) -> bool {
        let runs = self
            .split_k
            .map_or(self.shape, |slices| slice_shape(&self.shape, slices));
        self.kernel.takes(&runs)
    }

    /// The plan of a mixed product (its operands multiplied as f16 values), whatever
    /// the types its operands are stored in: `new`'s choice for products with an f16
    /// operand or output, and the backward's for every product of a mixed forward. A
    /// GPU splits weight gradients along K as it does f32 ones. Then the subgroup
    /// kernel where it applies; on GPUs the prefetching tiled one: `MixedTiled` won
    /// every mixed product of the ViT-S/16 step on the H200, the cooperative-matrix
    /// kernel's included (2026-12-04-h200-check.txt), and its prefetching form is what
    /// `TiledPrefetch`, faster at every size there, is to `Tiled`; else blocks numbered
    /// across the batch. `MixedTiled` and `MixedCoop` are candidates only, where plans
    /// are measured.
    ///
    /// On a CPU adapter, a weight gradient deeper than its loops may go is split as an
    /// f32 one is.
    pub fn mixed(device: &Device, shape: &MatmulShape) -> MatmulPlan {
        let gpu = !device.plans_as_cpu();
        if let Some(slices) = split_k(gpu, shape) {
            return Self::split(device, shape, slices, Self::mixed);
        }
        let subgroup = MatmulKernel::MixedSubgroup;
        let kernel = if subgroup.takes(shape) && subgroup.runs_on(device) {
            subgroup
        } else if !device.plans_as_cpu() {
            MatmulKernel::MixedTiledPrefetch
        } else {
            MatmulKernel::Mixed
        };
        if Self::deeper_than_cpu_loops(device, shape, kernel) {
            return Self::split(device, shape, 1, Self::mixed);
        }
        MatmulPlan {
            shape: *shape,
            kernel,
            split_k: None,
        }
    }

    /// `shape` over `slices` slices of K, or more where a CPU adapter's loops need them
    /// ([`walkable_slices`]), each on the kernel `rule` (`new` or `mixed`) gives a slice.
    fn split(
        device: &Device,
        shape: &MatmulShape,
        slices: usize,
        rule: fn(&Device, &MatmulShape) -> MatmulPlan,
    ) -> MatmulPlan {
        let slices = walkable_slices(device, shape.k, slices);
        MatmulPlan {
            kernel: rule(device, &slice_shape(shape, slices)).kernel,
            shape: *shape,
            split_k: Some(slices),
        }
    }

    /// Whether `kernel` would walk a weight gradient past a CPU adapter's loop budget
    /// (then split into the slices its loops can walk: [`MatmulPlan::split`]).
    fn deeper_than_cpu_loops(device: &Device, shape: &MatmulShape, kernel: MatmulKernel) -> bool {
        device.is_cpu() && shape.splittable() && kernel.cpu_k_steps(shape.k) > CPU_LOOP_BUDGET
    }

    /// Every plan for this shape on this device: each kernel that takes it and runs
    /// here, unsplit, and for the weight-gradient form each of them over slices of K too
    /// (the count a GPU would choose, 2, and on a CPU adapter the count its loops need
    /// past `CPU_LOOP_BUDGET`). Some may be too deep for a CPU adapter's loops: measuring
    /// leaves those out. The mixed kernels, which multiply f16 values, are candidates for
    /// products with an f16 operand or output only: an f32 product is one in f32.
    pub fn candidates(device: &Device, shape: &MatmulShape) -> Vec<MatmulPlan> {
        Self::candidates_in(device, shape, !shape.types.all_f32())
    }

    /// Every plan that computes what `plan` does: its product, in its arithmetic
    /// (f16 products on a mixed kernel, even of operands both stored in f32, as the
    /// backward of a mixed forward runs them; f32 products otherwise), as
    /// [`candidates`](Self::candidates) lists them.
    pub fn candidates_like(device: &Device, plan: &MatmulPlan) -> Vec<MatmulPlan> {
        Self::candidates_in(device, &plan.shape, plan.kernel.mixed())
    }

    /// The plans of the mixed kernels for a product, whatever its operands' storage:
    /// [`candidates`](Self::candidates) where an operand or the output is f16, and for
    /// operands both in f32 the f16 products a mixed step's backward runs on them.
    pub fn mixed_candidates(device: &Device, shape: &MatmulShape) -> Vec<MatmulPlan> {
        Self::candidates_in(device, shape, true)
    }

    fn candidates_in(device: &Device, shape: &MatmulShape, mixed: bool) -> Vec<MatmulPlan> {
        let runs = |s: MatmulShape| {
            MatmulKernel::ALL.into_iter().filter(move |kernel| {
                kernel.mixed() == mixed && kernel.takes(&s) && kernel.runs_on(device)
            })
        };
        let mut plans: Vec<MatmulPlan> = runs(*shape)
            .map(|kernel| MatmulPlan {
                shape: *shape,
                kernel,
                split_k: None,
            })
            .collect();
        if !shape.splittable() || shape.k < 2 {
            return plans;
        }
        // The count a GPU would choose, and 2. On a CPU adapter, for K past its loops'
        // budget, the count the rule splits the product into too.
        let chosen = split_k(true, shape).unwrap_or(2);
        let deep = (device.is_cpu() && shape.k > CPU_LOOP_BUDGET)
            .then(|| walkable_slices(device, shape.k, 1));
        let mut counts = vec![chosen];
        for extra in [Some(2), deep].into_iter().flatten() {
            if !counts.contains(&extra) {
                counts.push(extra);
            }
        }
        for slices in counts {
            plans.extend(runs(slice_shape(shape, slices)).map(|kernel| MatmulPlan {
                shape: *shape,
                kernel,
                split_k: Some(slices),
            }));
        }
        plans
    }

    /// The kernel, and how K is split, without the sizes: what tells the candidates of
    /// a bucket of sizes apart in any run (plan files). A split is named by its role
    /// among [`candidates`](Self::candidates): the count a GPU's rule takes for the
    /// shape, two slices, or as many as a CPU adapter's loop budget needs.
    pub fn method(&self) -> String {
        let kernel = format!("{:?}", self.kernel);
        match self.split_k {
            None => kernel,
            Some(2) => format!("{kernel} split-K in 2"),
            Some(n) if Some(n) == split_k(true, &self.shape) => {
                format!("{kernel} split-K as a GPU's rule")
            }
            Some(_) => format!("{kernel} split-K to the loop budget"),
        }
    }

    /// What distinguishes this plan's pipelines from another's, whatever the sizes:
    /// the kernel, split or not, the transposes and the epilogue.
    pub fn key(&self) -> String {
        let s = &self.shape;
        let types = if s.types.all_f32() {
            String::new()
        } else {
            format!(
                " {:?}x{:?}->{:?}{}",
                s.types.a,
                s.types.b,
                s.types.c,
                s.gelu_input_note()
            )
        };
        format!(
            "matmul {:?}{}{types} trans_a={} trans_b={} bias={} {:?}",
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
            (false, Epilogue::GeluSavingInput) => " then GELU, keeping its input",
            (true, Epilogue::GeluSavingInput) => " + bias then GELU, keeping its input",
            (_, Epilogue::GeluGradient) => " times GELU' of a saved input",
            (_, Epilogue::RowSums) => ", and op(a)'s row sums",
        };
        let types = if s.types.all_f32() {
            String::new()
        } else {
            format!(
                " ({:?} x {:?} -> {:?}{})",
                s.types.a,
                s.types.b,
                s.types.c,
                s.gelu_input_note()
            )
        };
        format!(
            "{}[{}x{}]{} x [{}x{}]{}{epilogue}{types}: {how}",
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

/// Whether a GPU runs this f32 product on `TiledPrefetch`: from 1e9 multiply-adds, and
/// every x W^T with M and N of at least 32.
fn prefetches(shape: &MatmulShape) -> bool {
    const PREFETCH_FROM: f64 = 1.0e9;
    shape.products() as f64 >= PREFETCH_FROM || (shape.t.b && shape.m.min(shape.n) >= 32)
}

/// The workgroups a GPU runs one batch entry of this product on, unsplit: tiles of
/// 128x128 on the tiled kernels (`TiledPrefetch`, and `MixedTiledPrefetch` for every
/// mixed product), of 64x64 otherwise.
fn gpu_workgroups(shape: &MatmulShape) -> usize {
    let side = if !shape.types.all_f32() || prefetches(shape) {
        TILED_TILE
    } else {
        TILE
    };
    shape.m.div_ceil(side) * shape.n.div_ceil(side)
}

/// How many slices of K to split a product of the weight-gradient form into on a GPU,
/// or None. Slicing K of a [K, M] and b [K, N] is a free reshape to a batched product
/// of [S, K/S, M] and [S, K/S, N]. It pays most when the output has too few tiles to
/// occupy a GPU while K is long (a ViT's dW: [D, 4D] outputs summed over every token
/// of the batch): S partial products run side by side and one reduction adds them.
/// Where the whole product runs on under 64 workgroups, S is the largest count whose
/// slices stay at least 512 long and whose workgroups, in the tiles of the kernel the
/// slices run on, number at most 256; a count that divides K is preferred, since the
/// rows left over cost two buffer copies and two dispatches more (their product, and
/// its addition). Every other weight gradient with K of at
/// least 512 is split in two: on the H200 two slices beat the whole product at every
/// such size measured, outputs that fill the device included (1.2-2.6x,
/// docs/results/2026-12-04-h200-bench.txt). There a [1152, 384] output on 27 tiled
/// workgroups took 2.75 ms whole and 1.56 in two slices: the counts are workgroups,
/// not 64x64 tiles, so that such an output gets eight.
pub fn split_k(gpu: bool, shape: &MatmulShape) -> Option<usize> {
    const COUNTS: [usize; 4] = [16, 8, 4, 2];
    let k = shape.k;
    if !gpu || !shape.splittable() {
        return None;
    }
    // The slices, a batch of the same multiply-adds, run on the whole product's kernel.
    let whole = gpu_workgroups(shape);
    let fits = |s: usize| whole < 64 && k / s >= 512 && whole * s <= 256;
    COUNTS
        .into_iter()
        .find(|&s| fits(s) && k.is_multiple_of(s))
        .or_else(|| COUNTS.into_iter().find(|&s| fits(s)))
        .or((k >= 512).then_some(2))
}

/// How many slices of K a CPU adapter's kernels walk a weight gradient `k` deep in, one
/// k a step at most: lavapipe cuts loops past `CPU_LOOP_BUDGET` short.
fn cpu_loop_slices(k: usize) -> usize {
    k.div_ceil(CPU_LOOP_BUDGET)
}

/// At least `at_least` slices of K that the device's loops can walk: on a CPU adapter
/// at least `cpu_loop_slices` (lavapipe cuts longer loops short, whatever rule planned
/// the split).
fn walkable_slices(device: &Device, k: usize, at_least: usize) -> usize {
    if device.is_cpu() {
        at_least.max(cpu_loop_slices(k))
    } else {
        at_least
    }
}

/// The batched product each slice of a split-K plan runs.
pub(super) fn slice_shape(shape: &MatmulShape, slices: usize) -> MatmulShape {
    MatmulShape {
        batch: slices,
        k: shape.k / slices,
        b_shared: false,
        ..*shape
    }
}
