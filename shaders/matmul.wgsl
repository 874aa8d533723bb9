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
