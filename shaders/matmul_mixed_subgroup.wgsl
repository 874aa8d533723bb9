// matmul_subgroup.wgsl's kernel on matmul_mixed.wgsl's operands: a, b and c each in f32
// or f16 (A_F16, B_F16, C_F16), multiplied as f16 values with f32 accumulation. The
// engine builds the module from gelu.wgsl, matmul_mixed.wgsl, matmul_subgroup.wgsl and
// this file, which gives the kernel its six accessors (a4_at, a4_operand, b_block,
// times, store4, store_row_sums4) on words. Four consecutive elements are one vec2 of
// words in f16 and two in f32, so the buffers are bound as vec2<u32> (from binding 7)
// and every load reads one or two of them.

@group(0) @binding(7) var<storage, read> a2: array<vec2<u32>>;
@group(0) @binding(8) var<storage, read> b2: array<vec2<u32>>;
@group(0) @binding(9) var<storage, read> bias4: array<vec4<f32>>;
@group(0) @binding(10) var<storage, read> pre_in2: array<vec2<u32>>;
@group(0) @binding(11) var<storage, read_write> c2: array<vec2<u32>>;
@group(0) @binding(12) var<storage, read_write> pre_out2: array<vec2<u32>>;

// Elements i..i+4 (i a multiple of 4) of a as stored (f16 widened), and as the
// product multiplies them: f16 values, an f32 a rounded.
fn a4_at(i: u32) -> vec4<f32> {
    if (A_F16) {
        let w = a2[i / 4u];
        return vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y));
    }
    return bitcast<vec4<f32>>(vec4<u32>(a2[i / 2u], a2[i / 2u + 1u]));
}

fn a4_operand(v: vec4<f32>) -> vec4<f32> {
    if (A_F16) { return v; }
    return round4_to_f16(v);
}

// Elements i..i+4 of b, f16 values in f32.
fn b4_at(i: u32) -> vec4<f32> {
    if (B_F16) {
        let w = b2[i / 4u];
        return vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y));
    }
    return round4_to_f16(bitcast<vec4<f32>>(vec4<u32>(b2[i / 2u], b2[i / 2u + 1u])));
}

// The 4x4 block of op(b) at rows k..k+4, columns c..c+4, as matmul.wgsl's b_block
// lays it out for `times`.
fn b_block(base: u32, k: u32, c: u32) -> mat4x4<f32> {
    if (TRANS_B) {
        let i = base + c * p.k + k;
        return mat4x4<f32>(b4_at(i), b4_at(i + p.k), b4_at(i + 2u * p.k), b4_at(i + 3u * p.k));
    }
    // Rows past K read row K - 1 (matmul.wgsl's b_block says why).
    let i = base + c;
    let last = p.k - 1u;
    return mat4x4<f32>(b4_at(i + min(k, last) * p.n), b4_at(i + min(k + 1u, last) * p.n),
                       b4_at(i + min(k + 2u, last) * p.n), b4_at(i + min(k + 3u, last) * p.n));
}

fn times(a_row: vec4<f32>, b: mat4x4<f32>) -> vec4<f32> {
    if (TRANS_B) { return a_row * b; }
    return b * a_row;
}

// Elements 4 i..4 i + 4 of c with the epilogue, the bias already added (i counts
// vec4s, as matmul.wgsl's store4 does); GELU's input in its type (PRE_F16).
fn store4(i: u32, v: vec4<f32>) {
    var x = v;
    if (SAVE_PRE) {
        if (PRE_F16) {
            pre_out2[i] = vec2<u32>(pack_f16(x.xy), pack_f16(x.zw));
        } else {
            let w = bitcast<vec4<u32>>(x);
            pre_out2[2u * i] = w.xy;
            pre_out2[2u * i + 1u] = w.zw;
        }
    }
    if (HAS_GELU) { x = gelu4(x); }
    if (GELU_GRAD) {
        var pre: vec4<f32>;
        if (PRE_F16) {
            let w = pre_in2[i];
            pre = vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y));
        } else {
            pre = bitcast<vec4<f32>>(vec4<u32>(pre_in2[2u * i], pre_in2[2u * i + 1u]));
        }
        x *= gelu_grad4(pre);
    }
    if (C_F16) {
        c2[i] = vec2<u32>(pack_f16(x.xy), pack_f16(x.zw));
        return;
    }
    let w = bitcast<vec4<u32>>(x);
    c2[2u * i] = w.xy;
    c2[2u * i + 1u] = w.zw;
}

// Row sums of op(a) 4 i..4 i + 4, in f32, into the second output (ROW_SUMS).
fn store_row_sums4(i: u32, v: vec4<f32>) {
    let w = bitcast<vec4<u32>>(v);
    pre_out2[2u * i] = w.xy;
    pre_out2[2u * i + 1u] = w.zw;
}
