// matmul_subgroup.wgsl's kernel on matmul_mixed.wgsl's operands: a, b and c each in
// f32 or f16 (A_F16, B_F16, C_F16), f32 accumulation, for CPU adapters whose
// subgroups are 8 lanes wide; N and K multiples of 4, M too when a is stored
// transposed. The engine appends this file to matmul_mixed.wgsl and uses its
// parameters, overrides and epilogue; it is a module of its own because it needs the
// subgroup feature.
//
// The layout is matmul_subgroup's: one subgroup per workgroup, a 32x32 tile of c, lane
// l owning columns 4l..4l+4 for all 32 rows; op(a) fetched once per subgroup and
// broadcast, op(b) loaded by each lane. Four consecutive elements are one vec2 of
// words in f16 and two in f32, so the operands are bound as vec2<u32> (from binding 7)
// and every load reads one or two of them.

const ROWS: u32 = 32u;

@group(0) @binding(7) var<storage, read> a2: array<vec2<u32>>;
@group(0) @binding(8) var<storage, read> b2: array<vec2<u32>>;
@group(0) @binding(9) var<storage, read> bias4: array<vec4<f32>>;
@group(0) @binding(10) var<storage, read> pre_in4: array<vec4<f32>>;
@group(0) @binding(11) var<storage, read_write> c2: array<vec2<u32>>;
@group(0) @binding(12) var<storage, read_write> pre_out4: array<vec4<f32>>;

// Elements i..i+4 (i a multiple of 4) of a and of b, in f32.
fn a4_at(i: u32) -> vec4<f32> {
    if (A_F16) {
        let w = a2[i / 4u];
        return vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y));
    }
    return bitcast<vec4<f32>>(vec4<u32>(a2[i / 2u], a2[i / 2u + 1u]));
}

fn b4_at(i: u32) -> vec4<f32> {
    if (B_F16) {
        let w = b2[i / 4u];
        return vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y));
    }
    return bitcast<vec4<f32>>(vec4<u32>(b2[i / 2u], b2[i / 2u + 1u]));
}

// The 4x4 block of op(b) at rows k..k+4, columns c..c+4, as matmul.wgsl's b_block
// lays it out for `times`.
fn b_block(base: u32, k: u32, c: u32) -> mat4x4<f32> {
    if (TRANS_B) {
        let i = base + c * p.k + k;
        return mat4x4<f32>(b4_at(i), b4_at(i + p.k), b4_at(i + 2u * p.k), b4_at(i + 3u * p.k));
    }
    let i = base + k * p.n + c;
    return mat4x4<f32>(b4_at(i), b4_at(i + p.n), b4_at(i + 2u * p.n), b4_at(i + 3u * p.n));
}

fn times(a_row: vec4<f32>, b: mat4x4<f32>) -> vec4<f32> {
    if (TRANS_B) { return a_row * b; }
    return b * a_row;
}

// Elements i..i+4 of c (i a multiple of 4) with the epilogue, the bias already added.
fn store4(i: u32, v: vec4<f32>) {
    var x = v;
    if (SAVE_PRE) { pre_out4[i / 4u] = x; }
    if (HAS_GELU) { x = gelu4(x); }
    if (GELU_GRAD) { x *= gelu_grad4(pre_in4[i / 4u]); }
    if (C_F16) {
        let h = clamp(x, vec4<f32>(-65504.0), vec4<f32>(65504.0));
        c2[i / 4u] = vec2<u32>(pack2x16float(h.xy), pack2x16float(h.zw));
        return;
    }
    let w = bitcast<vec4<u32>>(x);
    c2[i / 2u] = w.xy;
    c2[i / 2u + 1u] = w.zw;
}

@compute @workgroup_size(8)
fn matmul_mixed_subgroup(@builtin(workgroup_id) wid: vec3<u32>,
                         @builtin(subgroup_invocation_id) lane: u32) {
    let batch = wid.z;
    let row0 = wid.y * ROWS;
    let col0 = wid.x * 32u + 4u * lane;
    let a_base = batch * p.a_batch_stride;
    let b_base = batch * p.b_batch_stride;
    let c = min(col0, p.n - 4u);
    var acc: array<vec4<f32>, ROWS>;
    for (var i = 0u; i < ROWS; i++) { acc[i] = vec4<f32>(0.0); }
    for (var k = 0u; k < p.k; k += 4u) {
        // As in matmul_subgroup: fetch h, lane l brings row 8h + l of the ROWSx4 block
        // of op(a) (stored [K, M]: rows 8h + 4(l/4)..+4 at k + l%4), clamped at M.
        var rows: array<vec4<f32>, ROWS>;
        for (var h = 0u; h < ROWS / 8u; h++) {
            var m: vec4<f32>;
            if (TRANS_A) {
                m = a4_at(a_base + (k + lane % 4u) * p.m + min(row0 + 8u * h + 4u * (lane / 4u), p.m - 4u));
            } else {
                m = a4_at(a_base + min(row0 + 8u * h + lane, p.m - 1u) * p.k + k);
            }
            // The lane argument must be a constant.
            rows[8u * h] = subgroupBroadcast(m, 0u);
            rows[8u * h + 1u] = subgroupBroadcast(m, 1u);
            rows[8u * h + 2u] = subgroupBroadcast(m, 2u);
            rows[8u * h + 3u] = subgroupBroadcast(m, 3u);
            rows[8u * h + 4u] = subgroupBroadcast(m, 4u);
            rows[8u * h + 5u] = subgroupBroadcast(m, 5u);
            rows[8u * h + 6u] = subgroupBroadcast(m, 6u);
            rows[8u * h + 7u] = subgroupBroadcast(m, 7u);
        }
        if (TRANS_A) {
            for (var g = 0u; g < ROWS / 4u; g++) {
                let tg = transpose(mat4x4<f32>(rows[4u * g], rows[4u * g + 1u], rows[4u * g + 2u], rows[4u * g + 3u]));
                rows[4u * g] = tg[0];
                rows[4u * g + 1u] = tg[1];
                rows[4u * g + 2u] = tg[2];
                rows[4u * g + 3u] = tg[3];
            }
        }
        let b0 = b_block(b_base, k, c);
        for (var i = 0u; i < ROWS; i++) {
            acc[i] += times(rows[i], b0);
        }
    }
    if (col0 >= p.n) { return; }
    var bv = vec4<f32>(0.0);
    if (HAS_BIAS) { bv = bias4[col0 / 4u]; }
    let o = batch * p.m * p.n + col0;
    for (var i = 0u; i < ROWS; i++) {
        if (row0 + i < p.m) { store4(o + (row0 + i) * p.n, acc[i] + bv); }
    }
}
