//! Multi-head scaled dot-product attention on a packed projection: qkv
//! [B, N, 3 H hd] (per token q, k and v side by side, the heads inside each, as the
//! model's qkv Linear gives them) -> out [B, N, H hd] (the heads side by side, as the
//! output projection takes them); per head, out = softmax(q k^T * scale) v.
//!
//! `attention_fused` runs one family of flash-style kernels: they read q, k and v in place and
//! write out in place (no permutes), the forward saves only the row log-sum-exp, the
//! backward recomputes the scores from it, and the tokens x tokens matrix is never
//! written. `attention_composed` builds the same from permutes, matmul, scale and
//! softmax; it is the oracle the fused kernels are tested against. The fused kernels
//! come in four families: `attention.wgsl` (one row per invocation, the other side in
//! workgroup-memory tiles; any adapter), `attention_blocked.wgsl` (32 x 32 score tiles
//! as register-blocked products; GPUs), `attention_subgroup.wgsl` (subgroup
//! broadcasts; CPU adapters with 8-lane subgroups) and `attention_coop.wgsl` (products
//! on cooperative matrices, f16 operands and f32 sums, for an f16 qkv; GPUs that opened
//! them, and with its fragments emulated on any adapter with f16). `attention`, which
//! the model calls, runs the path [`AttentionPlan::new`] picks for the adapter, head dim
//! and token count:
//!
//! | path | chosen for |
//! | --- | --- |
//! | fused `Subgroup` | CPU adapters with 8-lane subgroups: head dims up to 32, up to 64 tokens, token counts not multiples of 4 |
//! | fused `Blocked` | GPUs: up to 128 tokens, or head dims under 64 |
//! | fused `Tiled` | GPUs: above 128 tokens at head dims from 64, and where `Blocked` cannot run |
//! | fused `Coop` | never by rule (untimed on a GPU): where plans are measured, with an f16 qkv |
//! | fused `CoopEmulated` | never by rule: it tests `Coop`'s staging and sums on any adapter with f16 |
//! | composed | everything else; the oracle the fused families are tested against |
//!
//! qkv is f32, or f16 where the qkv projection stored it so under mixed precision
//! ([`qkv_storage`] says which): the fused kernels read either (their `QKV_F16`) and
//! keep it for their backward, the composed path widens an f16 qkv first; both
//! compute and return out and the gradient in f32.
//!
//! Where the device measures plans (`IJEPA_MEASURE_PLANS=1`), [`AttentionPlan::measured`]
//! replaces these rules: every candidate is timed on the device at the first call of a
//! size, and the fastest kept (and followed in later runs, with a plan file:
//! `IJEPA_PLANS`).
//!
//! Measurements: docs/results/.
//!
//! Explained in the tour: docs/tour/06-attention.md.

use crate::device::{Binding, Candidate, Device, KernelDef};
use crate::error::{shape_err, Result};
use crate::ops::cast::cast;
use crate::ops::elementwise::scale;
use crate::ops::layout::{narrow, permute, reshape};
use crate::ops::matmul::{matmul, Transpose};
use crate::ops::softmax::softmax;
use crate::shaders::{self, Shader, COOP_EMULATED_LANES};
use crate::tape::record;
use crate::tensor::{DType, Tensor};

crate::kernel_params! {
    /// attention_layout.wgsl's `Params`, shared by the fused families.
    pub struct AttentionParams {
        /// Tokens.
        n: u32,
        scale: f32,
        heads: u32,
        /// Heads over the batch, B H.
        bh: u32,
    }
}

/// The largest head dim the fused kernels hold in registers.
pub const MAX_HEAD_DIM: usize = 128;
/// Floats of one workgroup-memory tile of the tiled family (its `TILE_FLOATS`).
const TILE_FLOATS: usize = 2048;
/// The most rows of the other side per tile of the tiled family (its `TILE`).
const MAX_TILE: usize = 32;
/// Workgroup memory of the tiled family: two tiles and a tile's row statistics.
const TILED_WORKGROUP_BYTES: u32 = (2 * TILE_FLOATS * 4 + MAX_TILE * 8) as u32;
/// Workgroup memory of the blocked family's dk/dv kernel, its largest.
const BLOCKED_WORKGROUP_BYTES: u32 = 20 << 10;
/// Subgroups per workgroup of the cooperative-matrix family (its `SUBGROUPS`).
const COOP_SUBGROUPS: usize = 2;
/// Workgroup memory of the cooperative-matrix family at head dim `hd`: four regions of
/// 32 staged f16 rows (hd + 8 apart), two sets of 16 x 40 f16 probabilities per
/// subgroup, 16 x 32 f32 scores per subgroup and 64 row statistics (its arrays).
const fn coop_workgroup_bytes(hd: usize) -> u32 {
    let subgroups = COOP_SUBGROUPS;
    (2 * (4 * 32 * (hd + 8) + 2 * subgroups * 16 * 40) + 4 * subgroups * 16 * 32 + 8 * 64) as u32
}
/// Rows per workgroup of each family (their `ROWS`): one per invocation in the tiled
/// family, at least a tile; one per lane of one 8-lane subgroup in the subgroup family
/// (a head of few tokens then idles at most 7 lanes: 8 rows ran the fmnist-cpu step
/// 1.13x faster than 64, docs/results/2026-12-03-lavapipe-step.txt); the 32 the blocked
/// family is written for (8 x 8 invocations of 4 x 4).
const TILED_ROWS: usize = 64;
const SUBGROUP_ROWS: usize = 8;
const BLOCKED_ROWS: usize = 32;
const COOP_ROWS: usize = 16 * COOP_SUBGROUPS;
const _: () = assert!(TILED_ROWS >= MAX_TILE && TILED_ROWS <= 256);
const _: () = assert!(SUBGROUP_ROWS.is_multiple_of(8) && SUBGROUP_ROWS <= 256);
const _: () = assert!(BLOCKED_ROWS == 32);

/// The forward, dq and dk/dv kernels of one WGSL file (the three files share entry
/// names and bindings).
const fn kernels(shader: &'static Shader) -> [KernelDef<AttentionParams>; 3] {
    [
        // qkv -> out, lse
        KernelDef::new(shader, "attention_forward", 1, 2),
        // qkv, out, dout, lse -> dqkv (the q part), delta
        KernelDef::new(shader, "attention_backward_dq", 4, 2).bound_from(10),
        // qkv, dout, lse, delta -> dqkv (the k and v parts)
        KernelDef::new(shader, "attention_backward_dkv", 4, 1).bound_from(20),
    ]
}

const TILED: [KernelDef<AttentionParams>; 3] = kernels(&shaders::ATTENTION);
const SUBGROUP: [KernelDef<AttentionParams>; 3] = kernels(&shaders::ATTENTION_SUBGROUP);
const BLOCKED: [KernelDef<AttentionParams>; 3] = kernels(&shaders::ATTENTION_BLOCKED);
const COOP: [KernelDef<AttentionParams>; 3] = kernels(&shaders::ATTENTION_COOP);
const COOP_EMULATED: [KernelDef<AttentionParams>; 3] = kernels(&shaders::ATTENTION_COOP_EMULATED);
const FORWARD: usize = 0;
const BACKWARD_DQ: usize = 1;
const BACKWARD_DKV: usize = 2;

/// Which fused kernels run attention.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FusedAttention {
    /// One row per invocation, the other side staged in workgroup memory tiles.
    Tiled,
    /// A workgroup of 64 owns 32 rows; each tile of 32 other rows is a 32 x 32 score
    /// product (4 x 4 per invocation) and a row product (4 rows x hd/8 columns per
    /// invocation), both from workgroup memory: head dims that are multiples of 8, on
    /// adapters with 20 KiB of workgroup memory.
    Blocked,
    /// One row per lane, the other side read 8 rows at a time and shared by subgroup
    /// broadcasts: head dims that are multiples of 4, on adapters whose subgroups are
    /// exactly 8 lanes (CPU drivers, where workgroup memory costs as much as storage).
    Subgroup,
    /// A workgroup of two subgroups owns 32 rows, 16 a subgroup; each block of 32
    /// other rows is two products on cooperative matrices (scores, then probabilities
    /// or score gradients times rows), f16 operands staged in workgroup memory, f32
    /// sums: an f16 qkv at head dims that are multiples of 16, on devices that opened
    /// 16x16x16 cooperative matrices.
    Coop,
    /// `Coop`'s kernels with the fragment operations emulated lane by lane: any
    /// adapter with f16; slow, so never a rule's choice.
    CoopEmulated,
}

impl FusedAttention {
    pub const ALL: [FusedAttention; 5] = [
        FusedAttention::Tiled,
        FusedAttention::Blocked,
        FusedAttention::Subgroup,
        FusedAttention::Coop,
        FusedAttention::CoopEmulated,
    ];

    /// Whether the device can run these kernels for this head dim (at most
    /// `MAX_HEAD_DIM`, which they hold in registers) on a qkv stored in `qkv`: the
    /// cooperative-matrix families multiply f16 values, so they read an f16 qkv only
    /// (an f32 one is attention in f32).
    pub fn runs_on(self, device: &Device, head_dim: usize, qkv: DType) -> bool {
        let coop = || {
            qkv == DType::F16
                && head_dim.is_multiple_of(16)
                && device.info().workgroup_storage >= coop_workgroup_bytes(head_dim)
        };
        head_dim <= MAX_HEAD_DIM
            && match self {
                FusedAttention::Tiled => device.info().workgroup_storage >= TILED_WORKGROUP_BYTES,
                FusedAttention::Blocked => {
                    head_dim.is_multiple_of(8)
                        && device.info().workgroup_storage >= BLOCKED_WORKGROUP_BYTES
                }
                FusedAttention::Subgroup => {
                    head_dim.is_multiple_of(4) && device.has_cpu_subgroups_of_8()
                }
                FusedAttention::Coop => device.cooperative_subgroup().is_some() && coop(),
                FusedAttention::CoopEmulated => device.has_shader_f16() && coop(),
            }
    }

    fn defs(self) -> &'static [KernelDef<AttentionParams>; 3] {
        match self {
            FusedAttention::Tiled => &TILED,
            FusedAttention::Blocked => &BLOCKED,
            FusedAttention::Subgroup => &SUBGROUP,
            FusedAttention::Coop => &COOP,
            FusedAttention::CoopEmulated => &COOP_EMULATED,
        }
    }

    /// What `runs_on` asks, in words.
    fn requirement(self) -> &'static str {
        match self {
            FusedAttention::Tiled => "a head dim up to 128 and 16.25 KiB of workgroup memory",
            FusedAttention::Blocked => {
                "a head dim up to 128 that is a multiple of 8, and 20 KiB of workgroup memory"
            }
            FusedAttention::Subgroup => {
                "a head dim up to 128 that is a multiple of 4, and a CPU adapter with 8-lane subgroups"
            }
            FusedAttention::Coop => {
                "an f16 qkv, a head dim up to 128 that is a multiple of 16, the workgroup memory \
                 of its staged rows, and cooperative matrices opened (IJEPA_COOPERATIVE_MATRIX=1)"
            }
            FusedAttention::CoopEmulated => {
                "an f16 qkv, a head dim up to 128 that is a multiple of 16, the workgroup memory \
                 of its staged rows, and f16 in shaders"
            }
        }
    }

    /// Rows of q (or k) one workgroup owns (each family's `ROWS`).
    pub fn rows_per_workgroup(self) -> usize {
        match self {
            FusedAttention::Tiled => TILED_ROWS,
            FusedAttention::Blocked => BLOCKED_ROWS,
            FusedAttention::Subgroup => SUBGROUP_ROWS,
            FusedAttention::Coop | FusedAttention::CoopEmulated => COOP_ROWS,
        }
    }

    /// The pipeline overrides of this family's kernels at head dim `hd`, reading a qkv
    /// of type `qkv`, with `coop_lanes` lanes to a subgroup for `Coop`'s cooperative
    /// matrices (`Device::cooperative_subgroup`).
    pub fn pipeline_constants(
        self,
        hd: usize,
        qkv: DType,
        coop_lanes: Option<u32>,
    ) -> Vec<(&'static str, f64)> {
        if let Some(lanes) = match self {
            FusedAttention::Coop => coop_lanes,
            FusedAttention::CoopEmulated => Some(COOP_EMULATED_LANES),
            _ => None,
        } {
            // The kernels are written for f16 rows, and their ROWS is fixed.
            return vec![("HD", hd as f64), ("QKV_F16", 1.0), ("SG", lanes as f64)];
        }
        let mut overrides = vec![
            ("HD", hd as f64),
            ("ROWS", self.rows_per_workgroup() as f64),
            ("QKV_F16", (qkv == DType::F16) as u32 as f64),
        ];
        if self == FusedAttention::Tiled {
            let tile = (TILE_FLOATS / hd).min(MAX_TILE);
            overrides.extend([("TILE_FLOATS", TILE_FLOATS as f64), ("TILE", tile as f64)]);
        }
        overrides
    }
}

/// How attention runs: a fused family, or composed from permutes, matmuls and softmax.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttentionPath {
    Fused(FusedAttention),
    Composed,
}

/// The sizes of one attention call: `batch` images of `tokens` tokens, `heads` heads of
/// `head_dim`, from a packed qkv [batch, tokens, 3 heads head_dim] stored in `qkv`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionShape {
    pub batch: usize,
    pub tokens: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub qkv: DType,
}

impl AttentionShape {
    /// The sizes of a packed qkv with `heads` heads, checked.
    pub fn of(qkv: &Tensor, heads: usize) -> Result<AttentionShape> {
        let s = qkv.shape();
        if s.len() != 3 || s[1] == 0 || heads == 0 || s[2] == 0 || !s[2].is_multiple_of(3 * heads) {
            return shape_err(
                "attention",
                format!("qkv {s:?} must be a non-empty [batch, tokens, 3 * heads * head_dim] with {heads} heads"),
            );
        }
        Ok(AttentionShape {
            batch: s[0],
            tokens: s[1],
            heads,
            head_dim: s[2] / (3 * heads),
            qkv: qkv.dtype(),
        })
    }
}

/// The path of one attention call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionPlan {
    pub path: AttentionPath,
    pub shape: AttentionShape,
}

impl AttentionPlan {
    /// The plan on this device. On CPU adapters with 8-lane subgroups the subgroup
    /// family for head dims up to 32, for up to 64 tokens at any head dim, and for
    /// token counts that are not multiples of 4, where the composed path's products
    /// leave the vec4 matmuls: there the fused kernels' single pass over the other
    /// side wins; above 64 tokens at larger head dims the composed path's subgroup
    /// matmuls win. On GPUs a fused family, as measured on the H200 within the
    /// training steps of `fmnist` and ViT-S/16 (docs/results/2026-12-04-h200-bench.txt):
    /// the tiled one above 128 tokens at head dims from 64 (0.60 ms against 0.93 for
    /// the composed path at 196 tokens), the blocked one below (1.2-2.1x the composed
    /// path up to 64 tokens; on par at 65-96), the tiled one where the blocked one
    /// cannot run (head dims not multiples of 8). Elsewhere the composed path.
    pub fn new(device: &Device, shape: &AttentionShape) -> AttentionPlan {
        let (tokens, head_dim) = (shape.tokens, shape.head_dim);
        let fused = if device.plans_as_cpu() {
            let kind = FusedAttention::Subgroup;
            ((head_dim <= 32 || tokens <= 64 || !tokens.is_multiple_of(4))
                && kind.runs_on(device, head_dim, shape.qkv))
            .then_some(kind)
        } else {
            let (tiled, blocked) = (FusedAttention::Tiled, FusedAttention::Blocked);
            let first = if tokens > 128 && head_dim >= 64 {
                tiled
            } else {
                blocked
            };
            [first, tiled]
                .into_iter()
                .find(|kind| kind.runs_on(device, head_dim, shape.qkv))
        };
        AttentionPlan {
            path: fused.map_or(AttentionPath::Composed, AttentionPath::Fused),
            shape: *shape,
        }
    }

    /// Every plan that can run these sizes on this device: the composed path and each
    /// fused family that runs here.
    pub fn candidates(device: &Device, shape: &AttentionShape) -> Vec<AttentionPlan> {
        let plan = |path| AttentionPlan {
            path,
            shape: *shape,
        };
        let mut plans = vec![plan(AttentionPath::Composed)];
        plans.extend(
            FusedAttention::ALL
                .into_iter()
                .filter(|kind| kind.runs_on(device, shape.head_dim, shape.qkv))
                .map(|kind| plan(AttentionPath::Fused(kind))),
        );
        plans
    }

    /// What distinguishes this plan's kernels from another's: the path, and for the
    /// fused kernels the head dim they are compiled for (they are compiled per qkv
    /// type too, which the key leaves out: every plan runs both).
    pub fn key(&self) -> String {
        match self.path {
            AttentionPath::Fused(kind) => {
                format!("attention fused {kind:?} head_dim={}", self.shape.head_dim)
            }
            AttentionPath::Composed => "attention composed".to_string(),
        }
    }

    /// The path without the sizes: composed, or which fused family; what tells the
    /// candidates of a bucket apart in any run (plan files).
    pub fn method(&self) -> String {
        match self.path {
            AttentionPath::Fused(kind) => format!("fused {kind:?}"),
            AttentionPath::Composed => "composed".to_string(),
        }
    }

    /// What runs, in words.
    pub fn describe(&self) -> String {
        let how = match self.path {
            AttentionPath::Fused(kind) => format!(
                "fused {kind:?} kernels, {} rows per workgroup",
                kind.rows_per_workgroup()
            ),
            AttentionPath::Composed => {
                "composed: permutes, q k^T and p v matmuls, scale, softmax".to_string()
            }
        };
        let s = &self.shape;
        format!(
            "{} x {} heads of {} tokens x {}: {how}",
            s.batch, s.heads, s.tokens, s.head_dim
        )
    }
}

/// One of `kind`'s kernels over the B H heads of a packed qkv of `shape`'s sizes, stored
/// in `qkv_type` (its binding the first of `buffers`).
fn launch(
    kind: FusedAttention,
    kernel: usize,
    dev: &Device,
    (shape, qkv_type): (&AttentionShape, DType),
    scale: f32,
    buffers: &[Binding],
) -> Result<()> {
    // A row of workgroups per head, the heads folded over the grid's y and z where
    // they are more than a dimension holds (a large batch of the predictor's masks).
    let bh = shape.batch * shape.heads;
    dev.dispatch(
        &kind.defs()[kernel],
        &kind.pipeline_constants(shape.head_dim, qkv_type, dev.cooperative_subgroup()),
        &AttentionParams {
            n: shape.tokens as u32,
            scale,
            heads: shape.heads as u32,
            bh: bh as u32,
        },
        buffers,
        dev.grid_2d(shape.tokens.div_ceil(kind.rows_per_workgroup()), bh),
    )
}

/// Checks that `kind` can run this head dim and qkv type here.
fn check_kind(kind: FusedAttention, dev: &Device, hd: usize, qkv: DType) -> Result<()> {
    if !kind.runs_on(dev, hd, qkv) {
        return shape_err(
            "attention",
            format!(
                "the {kind:?} kernels need {} (head dim {hd}, {qkv:?} qkv, on {} with {} KiB of workgroup memory)",
                kind.requirement(),
                dev.info().name,
                dev.info().workgroup_storage >> 10
            ),
        );
    }
    Ok(())
}

/// Fused forward with `kind`'s kernels: qkv [B, N, 3 H hd] (f32, or f16 under mixed
/// precision) -> (out [B, N, H hd], row log-sum-exp [B H, N]), both f32.
pub fn attention_forward(
    kind: FusedAttention,
    qkv: &Tensor,
    heads: usize,
    scale: f32,
) -> Result<(Tensor, Tensor)> {
    let shape = AttentionShape::of(qkv, heads)?;
    let (b, n, h, hd) = (shape.batch, shape.tokens, shape.heads, shape.head_dim);
    let dev = qkv.device();
    check_kind(kind, dev, hd, qkv.dtype())?;
    let out = Tensor::empty(dev, &[b, n, h * hd])?;
    let lse = Tensor::empty(dev, &[b * h, n])?;
    // Scores and output: two N x N x hd products per head.
    dev.count_flops(4 * (b * h * n * n * hd) as u64);
    launch(
        kind,
        FORWARD,
        dev,
        (&shape, qkv.dtype()),
        scale,
        &[qkv.binding(), out.buffer(), lse.buffer()],
    )?;
    Ok((out, lse))
}

/// Fused backward with `kind`'s kernels: dqkv [B, N, 3 H hd] (f32, whatever qkv's
/// type) from the forward's out and lse and the gradient dout [B, N, H hd].
pub fn attention_backward(
    kind: FusedAttention,
    qkv: &Tensor,
    heads: usize,
    (out, lse): (&Tensor, &Tensor),
    dout: &Tensor,
    scale: f32,
) -> Result<Tensor> {
    let shape = AttentionShape::of(qkv, heads)?;
    let (b, n, h, hd) = (shape.batch, shape.tokens, shape.heads, shape.head_dim);
    let dev = qkv.device();
    check_kind(kind, dev, hd, qkv.dtype())?;
    if out.shape() != [b, n, h * hd] || dout.shape() != out.shape() || lse.shape() != [b * h, n] {
        return shape_err(
            "attention backward",
            format!(
                "out {:?}, dout {:?}, lse {:?} do not match qkv {:?} with {heads} heads",
                out.shape(),
                dout.shape(),
                lse.shape(),
                qkv.shape()
            ),
        );
    }
    let dqkv = Tensor::empty(dev, qkv.shape())?;
    let delta = Tensor::empty(dev, &[b * h, n])?;
    // dv, dp, dq and dk: four N x N x hd products per head.
    dev.count_flops(8 * (b * h * n * n * hd) as u64);
    launch(
        kind,
        BACKWARD_DQ,
        dev,
        (&shape, qkv.dtype()),
        scale,
        &[
            qkv.binding(),
            out.buffer(),
            dout.buffer(),
            lse.buffer(),
            dqkv.buffer(),
            delta.buffer(),
        ],
    )?;
    launch(
        kind,
        BACKWARD_DKV,
        dev,
        (&shape, qkv.dtype()),
        scale,
        &[
            qkv.binding(),
            dout.buffer(),
            lse.buffer(),
            delta.buffer(),
            dqkv.buffer(),
        ],
    )?;
    Ok(dqkv)
}

/// Differentiable attention on the device's plan: [`AttentionPlan::new`]'s, or the
/// fastest as measured ([`AttentionPlan::measured`]) where the device measures plans or
/// follows a plan file.
pub fn attention(qkv: &Tensor, heads: usize, scale_factor: f32) -> Result<Tensor> {
    let dev = qkv.device();
    let plan = if dev.chooses_measured_plans() {
        AttentionPlan::measured(qkv, heads, scale_factor)?
    } else {
        AttentionPlan::new(dev, &AttentionShape::of(qkv, heads)?)
    };
    run(&plan, qkv, scale_factor)
}

/// The type a qkv projection stores for attention of `shape`'s sizes (its `qkv` is not
/// read: this decides it) in the current precision
/// (`precision::operand_type`): f16 under mixed precision where the plan reads it as it
/// is, f32 otherwise. The plan reads it as it is when it is a fused family, or, where
/// the device measures plans or follows a plan file, whichever is fastest (the
/// composed path timed with its widening; a run that follows a file stores qkv as the
/// run that measured it did, so that both run the same kernels); the composed path by
/// rule would only widen an f16 qkv again, one more dispatch for no memory saved (its
/// products keep f32 copies). An odd width 3 H hd stays f32: f16 rows are stored two
/// to a word.
pub fn qkv_storage(device: &Device, shape: &AttentionShape) -> DType {
    let stored = crate::precision::operand_type();
    let width = 3 * shape.heads * shape.head_dim;
    let reads_f16 = device.chooses_measured_plans()
        || matches!(
            AttentionPlan::new(
                device,
                &AttentionShape {
                    qkv: DType::F16,
                    ..*shape
                }
            )
            .path,
            AttentionPath::Fused(_)
        );
    if stored == DType::F16 && width.is_multiple_of(2) && reads_f16 {
        DType::F16
    } else {
        DType::F32
    }
}

/// Token counts are measured in buckets this wide: the masks change them every step,
/// and one measurement stands for its neighbours.
pub const MEASURED_TOKENS: usize = 32;

impl AttentionPlan {
    /// The fastest of [`candidates`](Self::candidates) for this call, timed on the
    /// device (`Device::measured_choice`): each runs on the call's own qkv, its
    /// forward, and its backward too where the call is differentiated (on a tape of its
    /// own). Measured at the first call of a batch, head count, head dim, bucket of
    /// [`MEASURED_TOKENS`] token counts and differentiation, then remembered by the
    /// device (`Device::measured_plans`) and its plan file; the rule's plan where the
    /// device follows a plan file without that bucket and does not measure.
    pub fn measured(qkv: &Tensor, heads: usize, scale_factor: f32) -> Result<AttentionPlan> {
        let dev = qkv.device();
        let shape = AttentionShape::of(qkv, heads)?;
        let differentiated = crate::tape::records(&[qkv]);
        let bucket = shape.tokens.div_ceil(MEASURED_TOKENS);
        let key = format!(
            "attention {} x {} heads of {}..={} tokens x {}, {:?} qkv, {}",
            shape.batch,
            shape.heads,
            (bucket - 1) * MEASURED_TOKENS + 1,
            bucket * MEASURED_TOKENS,
            shape.head_dim,
            qkv.dtype(),
            if differentiated {
                "forward and backward"
            } else {
                "forward"
            }
        );
        let candidates = Self::candidates(dev, &shape);
        let rule = Self::new(dev, &shape);
        let chosen = dev.measured_choice(key, &candidates, &rule, |i| {
            let plan = &candidates[i];
            if differentiated {
                crate::tape::on_own_tape(|| {
                    let x = qkv.detach().requires_grad();
                    let out = run_path(plan, &x, scale_factor)?;
                    crate::tape::backward(&crate::ops::reduce::sum(&out)?).map(drop)
                })
            } else {
                crate::tape::no_grad(|| run_path(plan, qkv, scale_factor).map(drop))
            }
        })?;
        Ok(chosen.map_or(rule, |i| candidates[i]))
    }
}

/// A candidate's path: composed, or which fused family.
impl Candidate for AttentionPlan {
    fn method(&self) -> String {
        AttentionPlan::method(self)
    }

    fn description(&self) -> String {
        self.describe()
    }
}

/// Differentiable attention on the path `plan` names (made for this qkv's sizes).
pub fn attention_with(
    plan: &AttentionPlan,
    qkv: &Tensor,
    heads: usize,
    scale_factor: f32,
) -> Result<Tensor> {
    if AttentionShape::of(qkv, heads)? != plan.shape {
        return shape_err(
            "attention",
            format!(
                "{plan:?} does not fit qkv {:?} with {heads} heads",
                qkv.shape()
            ),
        );
    }
    run(plan, qkv, scale_factor)
}

/// `plan` on a qkv of its shape, noted in the device's plan log.
fn run(plan: &AttentionPlan, qkv: &Tensor, scale_factor: f32) -> Result<Tensor> {
    qkv.device().note_plan(|| plan.key());
    run_path(plan, qkv, scale_factor)
}

/// `run` unnoted: a plan being timed.
fn run_path(plan: &AttentionPlan, qkv: &Tensor, scale_factor: f32) -> Result<Tensor> {
    let heads = plan.shape.heads;
    match plan.path {
        AttentionPath::Fused(kind) => attention_fused(kind, qkv, heads, scale_factor),
        AttentionPath::Composed => attention_composed(qkv, heads, scale_factor),
    }
}

/// Differentiable fused attention with `kind`'s kernels (an error where they cannot
/// run, see `FusedAttention::runs_on`).
pub fn attention_fused(
    kind: FusedAttention,
    qkv: &Tensor,
    heads: usize,
    scale_factor: f32,
) -> Result<Tensor> {
    let (out, lse) = attention_forward(kind, qkv, heads, scale_factor)?;
    let (qkv2, out2) = (qkv.clone(), out.detach());
    record("attention", &[qkv], &out, move |dout, _| {
        let dqkv = attention_backward(kind, &qkv2, heads, (&out2, &lse), dout, scale_factor)?;
        Ok(vec![Some(dqkv)])
    });
    Ok(out)
}

/// The same from permutes, matmul, scale and softmax (materialises the [N, N] scores),
/// in f32: an f16 qkv is widened first.
pub fn attention_composed(qkv: &Tensor, heads: usize, scale_factor: f32) -> Result<Tensor> {
    let s = AttentionShape::of(qkv, heads)?;
    let qkv = &cast(qkv, DType::F32)?;
    let (b, n, h, hd) = (s.batch, s.tokens, s.heads, s.head_dim);
    // [B, N, 3 H hd] -> [3, B, H, N, hd] -> q, k, v [B H, N, hd]
    let parts = permute(&reshape(qkv, &[b, n, 3, h, hd])?, &[2, 0, 3, 1, 4])?;
    let part = |i| reshape(&narrow(&parts, 0, i, 1)?, &[b * h, n, hd]);
    let (q, k, v) = (part(0)?, part(1)?, part(2)?);
    let scores = scale(&matmul(&q, &k, Transpose::B, None)?, scale_factor)?;
    let out = matmul(&softmax(&scores)?, &v, Transpose::NONE, None)?;
    // [B H, N, hd] -> [B, N, H, hd] -> [B, N, H hd]
    let out = permute(&reshape(&out, &[b, h, n, hd])?, &[0, 2, 1, 3])?;
    reshape(&out, &[b, n, h * hd])
}
