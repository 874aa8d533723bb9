// Batched matmul: c[batch] = op(a[batch]) @ op(b[batch]) (+ bias), op = optional
// transpose chosen by the TRANS_A / TRANS_B pipeline constants, so no transpose is
// ever materialised. a is [M, K] ([K, M] when TRANS_A), b is [K, N] ([N, K] when
// TRANS_B), c is [M, N]; b_batch_stride is 0 when one b is shared by every batch.
//
// Each invocation owns a 4x4 block of c in four vec4 registers, strided by 16 rows
// and columns; a 16x16 workgroup covers a 64x64 tile. Out-of-range rows/columns are clamped on load (the results are
// computed and discarded), so the inner loop has no branches.

struct Params {
    m: u32,
    n: u32,
    k: u32,
    a_batch_stride: u32,
    b_batch_stride: u32,
}

override TRANS_A: bool = false;
override TRANS_B: bool = false;
override HAS_BIAS: bool = false;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> c: array<f32>;

fn load_a(base: u32, row: u32, kk: u32) -> f32 {
    if (TRANS_A) { return a[base + kk * p.m + row]; }
    return a[base + row * p.k + kk];
}

fn load_b(base: u32, kk: u32, col: u32) -> f32 {
    if (TRANS_B) { return b[base + col * p.k + kk]; }
    return b[base + kk * p.n + col];
}

fn store(base: u32, row: u32, col: u32, v: f32) {
    if (row < p.m && col < p.n) {
        var x = v;
        if (HAS_BIAS) { x += bias[col]; }
        c[base + row * p.n + col] = x;
    }
}

// Invocation (x, y) of a 16x16 workgroup owns rows y + 16 i and columns x + 16 j
// (i, j < 4) of the workgroup's 64x64 tile: neighbouring invocations read
// neighbouring columns of b (contiguous, vectorisable) and share the rows of a.
@compute @workgroup_size(16, 16)
fn matmul(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let batch = wid.z;
    let row0 = wid.y * 64u + lid.y;
    let col0 = wid.x * 64u + lid.x;
    let a_base = batch * p.a_batch_stride;
    let b_base = batch * p.b_batch_stride;
    let r0 = min(row0, p.m - 1u);
    let r1 = min(row0 + 16u, p.m - 1u);
    let r2 = min(row0 + 32u, p.m - 1u);
    let r3 = min(row0 + 48u, p.m - 1u);
    let q0 = min(col0, p.n - 1u);
    let q1 = min(col0 + 16u, p.n - 1u);
    let q2 = min(col0 + 32u, p.n - 1u);
    let q3 = min(col0 + 48u, p.n - 1u);
    var c0 = vec4<f32>(0.0);
    var c1 = vec4<f32>(0.0);
    var c2 = vec4<f32>(0.0);
    var c3 = vec4<f32>(0.0);
    for (var kk = 0u; kk < p.k; kk++) {
        let bv = vec4<f32>(load_b(b_base, kk, q0), load_b(b_base, kk, q1),
                           load_b(b_base, kk, q2), load_b(b_base, kk, q3));
        c0 += load_a(a_base, r0, kk) * bv;
        c1 += load_a(a_base, r1, kk) * bv;
        c2 += load_a(a_base, r2, kk) * bv;
        c3 += load_a(a_base, r3, kk) * bv;
    }
    let c_base = batch * p.m * p.n;
    for (var j = 0u; j < 4u; j++) {
        let col = col0 + 16u * j;
        store(c_base, row0, col, c0[j]);
        store(c_base, row0 + 16u, col, c1[j]);
        store(c_base, row0 + 32u, col, c2[j]);
        store(c_base, row0 + 48u, col, c3[j]);
    }
}

// The vec4 kernel, for M, N and K all multiples of 4: the same 4x4 block per
// invocation, but every load is a vec4 (four k of a row, or four rows/columns of a
// k), and each 4-deep step of k is two 4x4 matrix products. Its bindings are the same
// buffers seen as vec4 arrays.
@group(0) @binding(5) var<storage, read> a4: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> b4: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read> bias4: array<vec4<f32>>;
@group(0) @binding(8) var<storage, read_write> c4: array<vec4<f32>>;

// Rows r..r+4 of op(a) over k..k+4: result[i] = op(a)[r + i][k..k+4].
fn a_block(base: u32, r: u32, k: u32) -> mat4x4<f32> {
    if (TRANS_A) {
        // Stored [K, M]: a vec4 holds four rows of one k.
        let m4 = p.m / 4u;
        let i = (base + k * p.m + r) / 4u;
        return transpose(mat4x4<f32>(a4[i], a4[i + m4], a4[i + 2u * m4], a4[i + 3u * m4]));
    }
    let k4 = p.k / 4u;
    let i = (base + r * p.k + k) / 4u;
    return mat4x4<f32>(a4[i], a4[i + k4], a4[i + 2u * k4], a4[i + 3u * k4]);
}

// Row i of the 4x4 block of op(a) times the 4x4 block of op(b) over k..k+4, columns
// c..c+4.
fn b_block(base: u32, k: u32, c: u32) -> mat4x4<f32> {
    if (TRANS_B) {
        // Stored [N, K]: column j of the matrix is op(b)[k..k+4][c + j].
        let k4 = p.k / 4u;
        let i = (base + c * p.k + k) / 4u;
        return mat4x4<f32>(b4[i], b4[i + k4], b4[i + 2u * k4], b4[i + 3u * k4]);
    }
    // Stored [K, N]: column t of the matrix is op(b)[k + t][c..c+4].
    let n4 = p.n / 4u;
    let i = (base + k * p.n + c) / 4u;
    return mat4x4<f32>(b4[i], b4[i + n4], b4[i + 2u * n4], b4[i + 3u * n4]);
}

fn times(a_row: vec4<f32>, b: mat4x4<f32>) -> vec4<f32> {
    if (TRANS_B) { return a_row * b; }
    return b * a_row;
}

@compute @workgroup_size(16, 16)
fn matmul_vec4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let batch = wid.z;
    let row0 = (wid.y * 16u + lid.y) * 4u;
    let col0 = (wid.x * 16u + lid.x) * 4u;
    let a_base = batch * p.a_batch_stride;
    let b_base = batch * p.b_batch_stride;
    // Blocks past the edge are clamped onto the last one, computed and not stored.
    let r = min(row0, p.m - 4u);
    let c = min(col0, p.n - 4u);
    var c0 = vec4<f32>(0.0);
    var c1 = vec4<f32>(0.0);
    var c2 = vec4<f32>(0.0);
    var c3 = vec4<f32>(0.0);
    for (var k = 0u; k < p.k; k += 4u) {
        let a = a_block(a_base, r, k);
        let b = b_block(b_base, k, c);
        c0 += times(a[0], b);
        c1 += times(a[1], b);
        c2 += times(a[2], b);
        c3 += times(a[3], b);
    }
    if (row0 >= p.m || col0 >= p.n) { return; }
    var bv = vec4<f32>(0.0);
    if (HAS_BIAS) { bv = bias4[col0 / 4u]; }
    let n4 = p.n / 4u;
    let o = (batch * p.m * p.n + row0 * p.n + col0) / 4u;
    c4[o] = c0 + bv;
    c4[o + n4] = c1 + bv;
    c4[o + 2u * n4] = c2 + bv;
    c4[o + 3u * n4] = c3 + bv;
}
