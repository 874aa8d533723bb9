// Mixed-precision batched matmul: the product of matmul_params.wgsl with its operands
// each stored in f32 or in f16 (A_F16, B_F16), multiplied as f16 values and summed in
// f32; c stored in f32, or in f16 (C_F16) for an activation that only feeds another
// product, GELU's saved input stored with it and read back (GELU_GRAD) in its type
// (PRE_F16). f16 tensors are stored two halves to a 32-bit word (element 2i in the low
// half), so every operand is bound as words and each element read is converted to f32
// on load: no adapter feature is needed. With C_F16, N is even, so that each
// invocation's pairs of columns share a word. The kernels' layouts are matmul.wgsl's:
// `matmul_mixed` is its `matmul_flat`, and the tiled kernels its tiled ones: the bodies
// of matmul_tiles.wgsl, on this file's loads and stores.

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

// The flat kernel on this file's loads and stores: matmul_tiles.wgsl's `flat_product`.
@compute @workgroup_size(FLAT_WG)
fn matmul_mixed(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    flat_product(wid, nwg, lid);
}

// The tiled kernels, for GPUs (matmul_tiles.wgsl): each element widened to f32 (an f16
// value) as it is loaded.
fn tile_a(a_base: u32, m: u32, k: u32) -> f32 {
    if (m >= p.m || k >= p.k) { return 0.0; }
    if (TRANS_A) { return a_stored(a_base + k * p.m + m); }
    return a_stored(a_base + m * p.k + k);
}

fn tile_operand(v: f32) -> f32 {
    return a_operand(v);
}

fn tile_b(b_base: u32, k: u32, n: u32) -> f32 {
    if (n >= p.n || k >= p.k) { return 0.0; }
    return load_b(b_base, k, n);
}

fn store_tile_pair(c_base: u32, row: u32, col0: u32, v0: vec4<f32>, v1: vec4<f32>) {
    store_row4(c_base, row, col0, v0);
    store_row4(c_base, row, col0 + 64u, v1);
}

fn store_tile_row_sum(i: u32, v: f32) {
    pre_out[i] = bitcast<u32>(v);
}

@compute @workgroup_size(16, 16)
fn matmul_mixed_tiled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_id) lid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    tiled_product(wid, nwg, lid, t);
}

@compute @workgroup_size(16, 16)
fn matmul_mixed_tiled_prefetch(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                               @builtin(local_invocation_id) lid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    tiled_prefetch_product(wid, nwg, lid, t);
}
