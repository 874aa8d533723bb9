// Mixed-precision batched matmul: the operands of matmul.wgsl's product, each stored in
// f32 or in f16 (A_F16, B_F16), multiplied as f16 values and summed in f32; c stored in
// f32, or in f16 (C_F16) for an activation that only feeds another product, GELU's saved
// input stored with it and read back (GELU_GRAD) in its type (PRE_F16). f16 tensors
// are stored two halves to a 32-bit word (element 2i in the low half), so every operand
// is bound as words and each element read is converted to f32 on load: no adapter
// feature is needed. Transposes, bias and the GELU epilogues are matmul.wgsl's, as are
// the kernels' layouts: `matmul_mixed` numbers 4x4 blocks across the batch as its
// `matmul_flat` does, `matmul_mixed_tiled` and `matmul_mixed_tiled_prefetch` stage
// tiles in workgroup memory (matmul_tiles.wgsl) as its `matmul_tiled` and
// `matmul_tiled_prefetch` do.
//
// a is [M, K] ([K, M] when TRANS_A), b is [K, N] ([N, K] when TRANS_B), c is [M, N];
// with C_F16, N is even, so that each invocation's pairs of columns share a word.

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
override HAS_GELU: bool = false;
override SAVE_PRE: bool = false;
override GELU_GRAD: bool = false;
override A_F16: bool = false;
override B_F16: bool = false;
override C_F16: bool = false;
override PRE_F16: bool = false;
// matmul.wgsl's ROW_SUMS (the tiled kernels, matmul_subgroup.wgsl): op(a)'s row
// sums, of a as stored, in f32 into the second output.
override ROW_SUMS: bool = false;
// The 4x4 blocks per workgroup of `matmul_mixed`, and the tile side of
// `matmul_mixed_tiled` (written for 16 x 8 = 128); set by the host.
override FLAT_WG: u32;
override TILE_M: u32;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<u32>;
@group(0) @binding(2) var<storage, read> b: array<u32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> pre_in: array<u32>;
@group(0) @binding(5) var<storage, read_write> c: array<u32>;
@group(0) @binding(6) var<storage, read_write> pre_out: array<u32>;

// An f32 operand's element is rounded to the nearest f16 (f16.wgsl's round_to_f16), so
// that a mixed product multiplies f16 values whatever its operands' storage: an
// activation kept in f32, or a gradient (scaled by the loss scale, so that it neither
// underflows nor, unnoticed, overflows; past f16's range it is infinite).

// Element i of a as stored, widened from f16 or not.
fn a_stored(i: u32) -> f32 {
    if (A_F16) { return unpack2x16float(a[i >> 1u])[i & 1u]; }
    return bitcast<f32>(a[i]);
}

// An element of a as the product multiplies it: an f16 value in f32.
fn a_operand(v: f32) -> f32 {
    if (A_F16) { return v; }
    return round_to_f16(v);
}

// Element i of a and of b, an f16 value in f32.
fn a_at(i: u32) -> f32 {
    return a_operand(a_stored(i));
}

fn b_at(i: u32) -> f32 {
    if (B_F16) { return unpack2x16float(b[i >> 1u])[i & 1u]; }
    return round_to_f16(bitcast<f32>(b[i]));
}

// op(a)[row][kk] and op(b)[kk][col] of one batch entry (in range).
fn load_a(base: u32, row: u32, kk: u32) -> f32 {
    if (TRANS_A) { return a_at(base + kk * p.m + row); }
    return a_at(base + row * p.k + kk);
}

fn load_b(base: u32, kk: u32, col: u32) -> f32 {
    if (TRANS_B) { return b_at(base + col * p.k + kk); }
    return b_at(base + kk * p.n + col);
}

// Element i of GELU's saved input.
fn pre_at(i: u32) -> f32 {
    if (PRE_F16) { return unpack2x16float(pre_in[i >> 1u])[i & 1u]; }
    return bitcast<f32>(pre_in[i]);
}

// Columns col0..col0+4 (col0 a multiple of 4) of row `row` of one batch entry of c,
// where they fall inside the matrix, with the epilogue: bias, GELU's input saved, GELU
// or the gradient through it. In f16, (col0, col0 + 1) and (col0 + 2, col0 + 3) are
// whole words: N even makes element c_base + row N + col0 even.
fn store_row4(c_base: u32, row: u32, col0: u32, v: vec4<f32>) {
    if (row >= p.m) { return; }
    let i0 = c_base + row * p.n + col0;
    var x = v;
    var pre = v;
    for (var j = 0u; j < 4u; j++) {
        if (col0 + j < p.n) {
            if (HAS_BIAS) { x[j] += bias[col0 + j]; }
            pre[j] = x[j];
            if (HAS_GELU) { x[j] = gelu(x[j]); }
            if (GELU_GRAD) { x[j] *= gelu_grad(pre_at(i0 + j)); }
        }
    }
    if (SAVE_PRE && PRE_F16) {
        if (col0 < p.n) { pre_out[i0 / 2u] = pack_f16(pre.xy); }
        if (col0 + 2u < p.n) { pre_out[i0 / 2u + 1u] = pack_f16(pre.zw); }
    }
    if (C_F16) {
        if (col0 < p.n) { c[i0 / 2u] = pack_f16(x.xy); }
        if (col0 + 2u < p.n) { c[i0 / 2u + 1u] = pack_f16(x.zw); }
    }
    for (var j = 0u; j < 4u; j++) {
        if (col0 + j < p.n) {
            if (SAVE_PRE && !PRE_F16) { pre_out[i0 + j] = bitcast<u32>(pre[j]); }
            if (!C_F16) { c[i0 + j] = bitcast<u32>(x[j]); }
        }
    }
}

// One invocation per 4x4 block of c, blocks numbered across the batch, FLAT_WG to a
// workgroup: any shape. Rows and columns past the edge are clamped on load (computed,
// not stored).
@compute @workgroup_size(FLAT_WG)
fn matmul_mixed(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let row_blocks = (p.m + 3u) / 4u;
    let col_blocks = (p.n + 3u) / 4u;
    let block = (wid.x + wid.y * nwg.x) * FLAT_WG + lid;
    let batch = block / (row_blocks * col_blocks);
    if (batch >= p.batch) { return; }
    let within = block % (row_blocks * col_blocks);
    let row0 = (within / col_blocks) * 4u;
    let col0 = (within % col_blocks) * 4u;
    let a_base = batch * p.a_batch_stride;
    let b_base = batch * p.b_batch_stride;
    let r = vec4<u32>(min(row0, p.m - 1u), min(row0 + 1u, p.m - 1u),
                      min(row0 + 2u, p.m - 1u), min(row0 + 3u, p.m - 1u));
    let q = vec4<u32>(min(col0, p.n - 1u), min(col0 + 1u, p.n - 1u),
                      min(col0 + 2u, p.n - 1u), min(col0 + 3u, p.n - 1u));
    var acc: array<vec4<f32>, 4>;
    for (var kk = 0u; kk < p.k; kk++) {
        let bv = vec4<f32>(load_b(b_base, kk, q.x), load_b(b_base, kk, q.y),
                           load_b(b_base, kk, q.z), load_b(b_base, kk, q.w));
        for (var i = 0u; i < 4u; i++) { acc[i] += load_a(a_base, r[i], kk) * bv; }
    }
    let c_base = batch * p.m * p.n;
    for (var i = 0u; i < 4u; i++) { store_row4(c_base, row0 + i, col0, acc[i]); }
}

// The tiled kernels, for GPUs: matmul.wgsl's `matmul_tiled` and
// `matmul_tiled_prefetch` on the tiles of matmul_tiles.wgsl, with the operands widened
// to f32 (f16 values) as they are loaded.

// op(a)[m][k] as stored, zero past the edges.
fn tiled_stored_a(a_base: u32, m: u32, k: u32) -> f32 {
    if (m >= p.m || k >= p.k) { return 0.0; }
    if (TRANS_A) { return a_stored(a_base + k * p.m + m); }
    return a_stored(a_base + m * p.k + k);
}

fn tiled_load_b(b_base: u32, k: u32, n: u32) -> f32 {
    if (n >= p.n || k >= p.k) { return 0.0; }
    return load_b(b_base, k, n);
}

@compute @workgroup_size(16, 16)
fn matmul_mixed_tiled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
                      @builtin(local_invocation_index) t: u32) {
    let batch = wid.z;
    let m0 = wid.y * TILE_M;
    let n0 = wid.x * TILE_M;
    let a_base = batch * p.a_batch_stride;
    let b_base = batch * p.b_batch_stride;
    var acc: array<vec4<f32>, 16>;   // row i, column group j at 2 i + j
    for (var i = 0u; i < 16u; i++) { acc[i] = vec4<f32>(0.0); }
    // Under ROW_SUMS (a stored [K, M]), the first column of workgroups also sums the
    // elements of op(a) it stages: invocation t those of row m0 + t % TILE_M.
    let sums_rows = ROW_SUMS && wid.x == 0u;
    var row_sum = 0.0;
    for (var k0 = 0u; k0 < p.k; k0 += TILE_K) {
        for (var q = 0u; q < 8u; q++) {
            let e = t + 256u * q;
            let ac = a_tile_coord(e);
            let stored = tiled_stored_a(a_base, m0 + ac.x, k0 + ac.y);
            if (sums_rows) { row_sum += stored; }
            a_tile[ac.y * TILE_M + (ac.x ^ ac.y)] = a_operand(stored);
            let bc = b_tile_coord(e);
            b_tile[bc.y * (TILE_M / 4u) + ((bc.x / 4u) ^ bc.y)][bc.x % 4u] = tiled_load_b(b_base, k0 + bc.y, n0 + bc.x);
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TILE_K; kk++) {
            let b0 = b_tile[kk * (TILE_M / 4u) + (lid.x ^ kk)];
            let b1 = b_tile[kk * (TILE_M / 4u) + ((lid.x + 16u) ^ kk)];
            for (var i = 0u; i < 8u; i++) {
                let av = a_tile[kk * TILE_M + ((lid.y + 16u * i) ^ kk)];
                acc[2u * i] += av * b0;
                acc[2u * i + 1u] += av * b1;
            }
        }
        workgroupBarrier();
    }
    if (sums_rows) {
        // Invocations t and t + TILE_M staged alternate k of the same row.
        a_tile[t] = row_sum;
        workgroupBarrier();
        let row = m0 + t;
        if (t < TILE_M && row < p.m) {
            pre_out[batch * p.m + row] = bitcast<u32>(a_tile[t] + a_tile[t + TILE_M]);
        }
    }
    // At constant indices, as matmul.wgsl's tiled kernels store theirs.
    let c_base = batch * p.m * p.n;
    let row = m0 + lid.y;
    let col = n0 + 4u * lid.x;
    store_row4_pair(c_base, row, col, acc[0], acc[1]);
    store_row4_pair(c_base, row + 16u, col, acc[2], acc[3]);
    store_row4_pair(c_base, row + 32u, col, acc[4], acc[5]);
    store_row4_pair(c_base, row + 48u, col, acc[6], acc[7]);
    store_row4_pair(c_base, row + 64u, col, acc[8], acc[9]);
    store_row4_pair(c_base, row + 80u, col, acc[10], acc[11]);
    store_row4_pair(c_base, row + 96u, col, acc[12], acc[13]);
    store_row4_pair(c_base, row + 112u, col, acc[14], acc[15]);
}

fn store_row4_pair(c_base: u32, row: u32, col0: u32, v0: vec4<f32>, v1: vec4<f32>) {
    store_row4(c_base, row, col0, v0);
    store_row4(c_base, row, col0 + 64u, v1);
}

@compute @workgroup_size(16, 16)
fn matmul_mixed_tiled_prefetch(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
                               @builtin(local_invocation_index) t: u32) {
    let batch = wid.z;
    let m0 = wid.y * TILE_M;
    let n0 = wid.x * TILE_M;
    let a_base = batch * p.a_batch_stride;
    let b_base = batch * p.b_batch_stride;
    var acc: array<vec4<f32>, 16>;   // row 64 h + 4 ty + r, column group j at 8 h + 2 r + j
    var next_a: array<f32, 8>;
    var next_b: array<f32, 8>;
    // Under ROW_SUMS, of a as stored (matmul_tiles.wgsl's `prefetched_row_sum`).
    let sums_rows = ROW_SUMS && wid.x == 0u;
    var row_sum = 0.0;
    for (var k0 = 0u; k0 < p.k + TILE_K; k0 += TILE_K) {
        if (k0 > 0u) {
            // Stage the step loaded last time round, then multiply it.
            workgroupBarrier();
            stage_prefetched(t, &next_a, &next_b);
            workgroupBarrier();
        }
        if (k0 < p.k) {
            for (var q = 0u; q < 8u; q++) {
                let e = t + 256u * q;
                let ac = a_tile_coord(e);
                let stored = tiled_stored_a(a_base, m0 + ac.x, k0 + ac.y);
                if (sums_rows) { row_sum += stored; }
                next_a[q] = a_operand(stored);
                let bc = b_tile_coord(e);
                next_b[q] = tiled_load_b(b_base, k0 + bc.y, n0 + bc.x);
            }
        }
        if (k0 > 0u) { multiply_prefetched(&acc, lid); }
    }
    if (sums_rows) {
        let sum = prefetched_row_sum(t, row_sum);
        let row = m0 + t;
        if (t < TILE_M && row < p.m) { pre_out[batch * p.m + row] = bitcast<u32>(sum); }
    }
    let c_base = batch * p.m * p.n;
    let row = m0 + 4u * lid.y;
    let col = n0 + 4u * lid.x;
    store_row4_pair(c_base, row, col, acc[0], acc[1]);
    store_row4_pair(c_base, row + 1u, col, acc[2], acc[3]);
    store_row4_pair(c_base, row + 2u, col, acc[4], acc[5]);
    store_row4_pair(c_base, row + 3u, col, acc[6], acc[7]);
    store_row4_pair(c_base, row + 64u, col, acc[8], acc[9]);
    store_row4_pair(c_base, row + 65u, col, acc[10], acc[11]);
    store_row4_pair(c_base, row + 66u, col, acc[12], acc[13]);
    store_row4_pair(c_base, row + 67u, col, acc[14], acc[15]);
}
