// What both matmul families (matmul.wgsl in f32, matmul_mixed.wgsl with f16 operands)
// take from the host, prepended to each. Every override of either family is declared
// here, ahead of matmul_tiles.wgsl's arrays sized by TILE_M: naga 30 mishandles a
// named override declared after such an array (its pipeline-constant pass asserts).
// Each family's pipelines set its own; those of the other are compiled out.
//
// The product c[batch] = op(a[batch]) @ op(b[batch]) (+ bias), op an optional
// transpose chosen by the TRANS_A / TRANS_B pipeline constants, so no transpose is ever
// materialised. a is [M, K] ([K, M] when TRANS_A), b is [K, N] ([N, K] when TRANS_B),
// c is [M, N]; b_batch_stride is 0 when one b is shared by every batch entry.

struct Params {
    m: u32,
    n: u32,
    k: u32,
    a_batch_stride: u32,
    b_batch_stride: u32,
    batch: u32,
}

override TRANS_A: bool = false;
override TRANS_B: bool = false;
override HAS_BIAS: bool = false;
// The mixed family's storage types (matmul_mixed.wgsl): a, b, c and GELU's saved input
// in f16 rather than f32.
override A_F16: bool = false;
override B_F16: bool = false;
override C_F16: bool = false;
override PRE_F16: bool = false;
// The epilogues (gelu.wgsl): c = gelu(op(a) @ op(b) + bias); with SAVE_PRE the value
// before GELU is written to pre_out as well (what GELU's backward needs). GELU_GRAD:
// c = (op(a) @ op(b)) * gelu'(pre_in), the gradient through a GELU whose input was
// pre_in.
override HAS_GELU: bool = false;
override SAVE_PRE: bool = false;
override GELU_GRAD: bool = false;
// ROW_SUMS (a stored [K, M]; `matmul_vec4` and matmul_subgroup.wgsl with M a multiple
// of 4, the tiled kernels): the row sums of op(a), of a as stored, in f32, written
// beside c, [batch, M], into the second output, added up from the blocks of a the
// kernel loads anyway (a weight gradient's bias gradient, dc summed over tokens,
// without a reduction of its own). The host's plan sets it.
override ROW_SUMS: bool = false;
// Sizes set by the host (ops/matmul/plan.rs), which grids with them: the side of the
// tile of the f32 family's `matmul`, `matmul_vec4` and `matmul_subgroup`, the 4x4
// blocks per workgroup of the flat kernels, and the side of the tiled kernels' tile
// (written for 16 x 8 = 128).
override TILE: u32;
override FLAT_WG: u32;
override TILE_M: u32;
// A diagnostic of matmul_coop.wgsl (`ijepa bench matmul --coop-anatomy`), 0 otherwise:
// which part of the kernel bounds it. 1: the slices staged (global loads and workgroup
// stores), only the last one multiplied; 2: the fragments only (loaded from workgroup
// memory and multiplied, nothing staged); 3: the product on half the accumulators (the
// columns of fragments c?0 and c?1: what registers cost). Every mode but 0 computes
// nothing meaningful. Declared here with the others (see above), though only
// matmul_coop.wgsl reads it.
override ANATOMY: u32 = 0u;

@group(0) @binding(0) var<uniform> p: Params;
