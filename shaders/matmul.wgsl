// Batched matmul in f32: the product of matmul_params.wgsl.
//
// Each invocation of `matmul` owns a 4x4 block of c in four vec4 registers, strided
// by TILE / 4 rows and columns; a (TILE / 4)^2 workgroup covers a TILE x TILE tile.
// Out-of-range rows/columns are clamped on load (the results are computed and
// discarded), so the inner loop has no branches.

@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> pre_in: array<f32>;
@group(0) @binding(5) var<storage, read_write> c: array<f32>;
@group(0) @binding(6) var<storage, read_write> pre_out: array<f32>;

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
        let i = base + row * p.n + col;
        var x = v;
        if (HAS_BIAS) { x += bias[col]; }
        if (SAVE_PRE) { pre_out[i] = x; }
        if (HAS_GELU) { x = gelu(x); }
        if (GELU_GRAD) { x *= gelu_grad(pre_in[i]); }
        c[i] = x;
    }
}

// Columns col0..col0+4 of row `row` of one batch entry of c, where they fall inside the
// matrix, with the epilogue (`flat_product` stores through it, as the mixed family's).
fn store_row4(c_base: u32, row: u32, col0: u32, v: vec4<f32>) {
    for (var j = 0u; j < 4u; j++) { store(c_base, row, col0 + j, v[j]); }
}

// Invocation (x, y) of a (TILE / 4)^2 workgroup owns rows y + s i and columns x + s j
// (i, j < 4, s = TILE / 4) of the workgroup's tile: neighbouring invocations read
// neighbouring columns of b (contiguous, vectorisable) and share the rows of a.
@compute @workgroup_size(TILE / 4u, TILE / 4u)
fn matmul(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_id) lid: vec3<u32>) {
    let s = TILE / 4u;
    let tile = tile_at(wid, nwg, TILE);
    if (tile.batch >= p.batch) { return; }
    let batch = tile.batch;
    let row0 = tile.m0 + lid.y;
    let col0 = wid.x * TILE + lid.x;
    let a_base = batch * p.a_batch_stride;
    let b_base = batch * p.b_batch_stride;
    let r0 = min(row0, p.m - 1u);
    let r1 = min(row0 + s, p.m - 1u);
    let r2 = min(row0 + 2u * s, p.m - 1u);
    let r3 = min(row0 + 3u * s, p.m - 1u);
    let q0 = min(col0, p.n - 1u);
    let q1 = min(col0 + s, p.n - 1u);
    let q2 = min(col0 + 2u * s, p.n - 1u);
    let q3 = min(col0 + 3u * s, p.n - 1u);
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
        let col = col0 + s * j;
        store(c_base, row0, col, c0[j]);
        store(c_base, row0 + s, col, c1[j]);
        store(c_base, row0 + 2u * s, col, c2[j]);
        store(c_base, row0 + 3u * s, col, c3[j]);
    }
}

// The flat kernel, for small products of any shape: matmul_tiles.wgsl's `flat_product`.
@compute @workgroup_size(FLAT_WG)
fn matmul_flat(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    flat_product(wid, nwg, lid);
}

// The vec4 kernel, for N and K multiples of 4, and M too when a is stored transposed:
// the same 4x4 block per invocation, but every load is a vec4 (four k of a row, or
// four rows/columns of a k), and each 4-deep step of k is two 4x4 matrix products. Its
// bindings are the same buffers seen as vec4 arrays.
@group(0) @binding(7) var<storage, read> a4: array<vec4<f32>>;
@group(0) @binding(8) var<storage, read> b4: array<vec4<f32>>;
@group(0) @binding(9) var<storage, read> bias4: array<vec4<f32>>;
@group(0) @binding(10) var<storage, read> pre_in4: array<vec4<f32>>;
@group(0) @binding(11) var<storage, read_write> c4: array<vec4<f32>>;
@group(0) @binding(12) var<storage, read_write> pre_out4: array<vec4<f32>>;

// Elements i..i+4 of a (i a multiple of 4), as matmul_subgroup.wgsl reads them, and
// as its product multiplies them (as they are, in f32).
fn a4_at(i: u32) -> vec4<f32> {
    return a4[i / 4u];
}

fn a4_operand(v: vec4<f32>) -> vec4<f32> {
    return v;
}

// Rows r..r+4 of op(a) over k..k+4: result[i] = op(a)[r + i][k..k+4]. Stored [M, K],
// rows past M repeat the last one (M need not be a multiple of 4 there).
fn a_block(base: u32, r: u32, k: u32) -> mat4x4<f32> {
    if (TRANS_A) {
        // Stored [K, M]: a vec4 holds four rows of one k.
        let m4 = p.m / 4u;
        let i = (base + k * p.m + r) / 4u;
        return transpose(mat4x4<f32>(a4[i], a4[i + m4], a4[i + 2u * m4], a4[i + 3u * m4]));
    }
    let last = p.m - 1u;
    return mat4x4<f32>(a4[(base + min(r, last) * p.k + k) / 4u],
                       a4[(base + min(r + 1u, last) * p.k + k) / 4u],
                       a4[(base + min(r + 2u, last) * p.k + k) / 4u],
                       a4[(base + min(r + 3u, last) * p.k + k) / 4u]);
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
    // Stored [K, N]: column t of the matrix is op(b)[k + t][c..c+4]. Rows past K (the
    // subgroup kernel's last step of a K that is not a multiple of 4, whose rows of a it
    // zeroes) read row K - 1.
    let n4 = p.n / 4u;
    let i = (base + c) / 4u;
    let last = p.k - 1u;
    return mat4x4<f32>(b4[i + min(k, last) * n4], b4[i + min(k + 1u, last) * n4],
                       b4[i + min(k + 2u, last) * n4], b4[i + min(k + 3u, last) * n4]);
}

fn times(a_row: vec4<f32>, b: mat4x4<f32>) -> vec4<f32> {
    if (TRANS_B) { return a_row * b; }
    return b * a_row;
}

// Element i of c seen as vec4s, with the epilogue (the bias already added).
fn store4(i: u32, v: vec4<f32>) {
    var x = v;
    if (SAVE_PRE) { pre_out4[i] = x; }
    if (HAS_GELU) { x = gelu4(x); }
    if (GELU_GRAD) { x *= gelu_grad4(pre_in4[i]); }
    c4[i] = x;
}

// Row sums of op(a) 4 i..4 i + 4, into the second output (ROW_SUMS).
fn store_row_sums4(i: u32, v: vec4<f32>) {
    pre_out4[i] = v;
}

// Invocation (x, y) owns the 4x4 block at rows 4 y.., columns 4 x.. of the tile.
@compute @workgroup_size(TILE / 4u, TILE / 4u)
fn matmul_vec4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_id) lid: vec3<u32>) {
    let tile = tile_at(wid, nwg, TILE);
    if (tile.batch >= p.batch) { return; }
    let batch = tile.batch;
    let row0 = tile.m0 + lid.y * 4u;
    let col0 = wid.x * TILE + lid.x * 4u;
    let a_base = batch * p.a_batch_stride;
    let b_base = batch * p.b_batch_stride;
    // Blocks past the edge are clamped onto the last one, computed and not stored
    // (rows one by one in a_block, unless a is stored transposed and M is a multiple of 4).
    var r = row0;
    if (TRANS_A) { r = min(row0, p.m - 4u); }
    let c = min(col0, p.n - 4u);
    var c0 = vec4<f32>(0.0);
    var c1 = vec4<f32>(0.0);
    var c2 = vec4<f32>(0.0);
    var c3 = vec4<f32>(0.0);
    // Under ROW_SUMS, the first column of workgroups also sums its rows of op(a).
    let sums_rows = ROW_SUMS && wid.x == 0u;
    var sums = vec4<f32>(0.0);
    for (var k = 0u; k < p.k; k += 4u) {
        let a = a_block(a_base, r, k);
        let b = b_block(b_base, k, c);
        c0 += times(a[0], b);
        c1 += times(a[1], b);
        c2 += times(a[2], b);
        c3 += times(a[3], b);
        // a[i] is row i: the sums of the four rows.
        if (sums_rows) { sums += vec4<f32>(1.0) * a; }
    }
    if (sums_rows && lid.x == 0u && row0 < p.m) {
        store_row_sums4((batch * p.m + row0) / 4u, sums);
    }
    if (row0 >= p.m || col0 >= p.n) { return; }
    var bv = vec4<f32>(0.0);
    if (HAS_BIAS) { bv = bias4[col0 / 4u]; }
    let n4 = p.n / 4u;
    let o = (batch * p.m * p.n + row0 * p.n + col0) / 4u;
    store4(o, c0 + bv);
    if (row0 + 1u < p.m) { store4(o + n4, c1 + bv); }
    if (row0 + 2u < p.m) { store4(o + 2u * n4, c2 + bv); }
    if (row0 + 3u < p.m) { store4(o + 3u * n4, c3 + bv); }
}

// The tiled kernels, for GPUs (matmul_tiles.wgsl), on their own bindings of the
// same buffers; here is what they read and store.
@group(0) @binding(13) var<storage, read> ta: array<f32>;
@group(0) @binding(14) var<storage, read> tb: array<f32>;
@group(0) @binding(15) var<storage, read> tbias: array<f32>;
@group(0) @binding(16) var<storage, read> tpre_in: array<f32>;
@group(0) @binding(17) var<storage, read_write> tc: array<f32>;
@group(0) @binding(18) var<storage, read_write> tpre_out: array<f32>;

// op(a)[m][k] and op(b)[k][n] of one batch entry, zero outside the matrix; f32 values
// are multiplied as they are.
fn tile_a(a_base: u32, m: u32, k: u32) -> f32 {
    if (m >= p.m || k >= p.k) { return 0.0; }
    if (TRANS_A) { return ta[a_base + k * p.m + m]; }
    return ta[a_base + m * p.k + k];
}

fn tile_operand(v: f32) -> f32 {
    return v;
}

fn tile_b(b_base: u32, k: u32, n: u32) -> f32 {
    if (n >= p.n || k >= p.k) { return 0.0; }
    if (TRANS_B) { return tb[b_base + n * p.k + k]; }
    return tb[b_base + k * p.n + n];
}

// Columns col0..col0+4 of row `row` of one batch entry of c, with the epilogue, where
// they fall inside the matrix.
fn store_tiled(c_base: u32, row: u32, col0: u32, v: vec4<f32>) {
    if (row >= p.m) { return; }
    for (var c = 0u; c < 4u; c++) {
        let col = col0 + c;
        if (col < p.n) {
            let i = c_base + row * p.n + col;
            var x = v[c];
            if (HAS_BIAS) { x += tbias[col]; }
            if (SAVE_PRE) { tpre_out[i] = x; }
            if (HAS_GELU) { x = gelu(x); }
            if (GELU_GRAD) { x *= gelu_grad(tpre_in[i]); }
            tc[i] = x;
        }
    }
}

fn store_tile_pair(c_base: u32, row: u32, col0: u32, v0: vec4<f32>, v1: vec4<f32>) {
    store_tiled(c_base, row, col0, v0);
    store_tiled(c_base, row, col0 + 64u, v1);
}

fn store_tile_row_sum(i: u32, v: f32) {
    tpre_out[i] = v;
}

@compute @workgroup_size(16, 16)
fn matmul_tiled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_id) lid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    tiled_product(wid, nwg, lid, t);
}

@compute @workgroup_size(16, 16)
fn matmul_tiled_prefetch(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_id) lid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    tiled_prefetch_product(wid, nwg, lid, t);
}

// `matmul_tiled_prefetch` on the vec4 kernel's shapes and bindings: each invocation
// loads its 8 elements of each tile of a k-step as two vec4s along the stored matrix's
// contiguous dim (LDG.128 where a scalar load was), and stores c four columns at a
// time. A vec4 along k (a stored [M, K], b stored [N, K]) goes to four k-rows of the
// tile, one along m or n to one vec4 of a k-row. Slot e of a k-step's 512 vec4s holds,
// for op(a): (m, k..k+4) at m = e / 4, k = 4 (e % 4), or (m..m+4, k) at
// m = 4 (e % 32), k = e / 32 when TRANS_A; for op(b) likewise with n.

// The vec4 of slot e of op(a)'s tile for the k-step from k0, zero outside the matrix
// (M or K, a multiple of 4, never cuts one).
fn a_tile_vec4(a_base: u32, m0: u32, k0: u32, e: u32) -> vec4<f32> {
    if (TRANS_A) {
        let m = m0 + 4u * (e % (TILE_M / 4u));
        let k = k0 + e / (TILE_M / 4u);
        if (m >= p.m || k >= p.k) { return vec4<f32>(0.0); }
        return a4[(a_base + k * p.m + m) / 4u];
    }
    let m = m0 + e / (TILE_K / 4u);
    let k = k0 + 4u * (e % (TILE_K / 4u));
    if (m >= p.m || k >= p.k) { return vec4<f32>(0.0); }
    return a4[(a_base + m * p.k + k) / 4u];
}

fn b_tile_vec4(b_base: u32, n0: u32, k0: u32, e: u32) -> vec4<f32> {
    if (TRANS_B) {
        let n = n0 + e / (TILE_K / 4u);
        let k = k0 + 4u * (e % (TILE_K / 4u));
        if (n >= p.n || k >= p.k) { return vec4<f32>(0.0); }
        return b4[(b_base + n * p.k + k) / 4u];
    }
    let n = n0 + 4u * (e % (TILE_M / 4u));
    let k = k0 + e / (TILE_M / 4u);
    if (n >= p.n || k >= p.k) { return vec4<f32>(0.0); }
    return b4[(b_base + k * p.n + n) / 4u];
}

// Where slot e's vec4 goes in a prefetch tile: one along m or n is one vec4 of its
// k-row; element j of one along k is component m % 4 of k-row k + j.
fn along_mn_at(e: u32) -> u32 {
    let m4 = e % (TILE_M / 4u);
    let k = e / (TILE_M / 4u);
    return k * (TILE_M / 4u) + (m4 ^ k);
}

fn along_k_at(e: u32, j: u32) -> vec2<u32> {
    let m = e / (TILE_K / 4u);
    let k = 4u * (e % (TILE_K / 4u)) + j;
    return vec2<u32>(k * (TILE_M / 4u) + ((m / 4u) ^ k), m % 4u);
}

fn stage_a_vec4(e: u32, v: vec4<f32>) {
    if (TRANS_A) {
        pa_tile[along_mn_at(e)] = v;
        return;
    }
    for (var j = 0u; j < 4u; j++) {
        let at = along_k_at(e, j);
        pa_tile[at.x][at.y] = v[j];
    }
}

fn stage_b_vec4(e: u32, v: vec4<f32>) {
    if (!TRANS_B) {
        pb_tile[along_mn_at(e)] = v;
        return;
    }
    for (var j = 0u; j < 4u; j++) {
        let at = along_k_at(e, j);
        pb_tile[at.x][at.y] = v[j];
    }
}

// Columns col0..col0+4 and col0+64..col0+68 of a row, with the bias and the epilogue,
// where they fall inside the matrix (N is a multiple of 4).
fn store_tiled4_pair(c_base: u32, row: u32, col0: u32, v0: vec4<f32>, v1: vec4<f32>) {
    if (row >= p.m) { return; }
    let i = (c_base + row * p.n + col0) / 4u;
    var bias0 = vec4<f32>(0.0);
    var bias1 = vec4<f32>(0.0);
    if (HAS_BIAS && col0 < p.n) { bias0 = bias4[col0 / 4u]; }
    if (HAS_BIAS && col0 + 64u < p.n) { bias1 = bias4[col0 / 4u + 16u]; }
    if (col0 < p.n) { store4(i, v0 + bias0); }
    if (col0 + 64u < p.n) { store4(i + 16u, v1 + bias1); }
}

@compute @workgroup_size(16, 16)
fn matmul_tiled_prefetch_vec4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                              @builtin(local_invocation_id) lid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let tile = tile_at(wid, nwg, TILE_M);
    if (tile.batch >= p.batch) { return; }
    let batch = tile.batch;
    let m0 = tile.m0;
    let n0 = wid.x * TILE_M;
    let a_base = batch * p.a_batch_stride;
    let b_base = batch * p.b_batch_stride;
    var acc: array<vec4<f32>, 16>;   // as in matmul_tiled_prefetch
    var next_a: array<vec4<f32>, 2>;
    var next_b: array<vec4<f32>, 2>;
    for (var k0 = 0u; k0 < p.k + TILE_K; k0 += TILE_K) {
        if (k0 > 0u) {
            workgroupBarrier();
            for (var q = 0u; q < 2u; q++) {
                stage_a_vec4(t + 256u * q, next_a[q]);
                stage_b_vec4(t + 256u * q, next_b[q]);
            }
            workgroupBarrier();
        }
        if (k0 < p.k) {
            for (var q = 0u; q < 2u; q++) {
                next_a[q] = a_tile_vec4(a_base, m0, k0, t + 256u * q);
                next_b[q] = b_tile_vec4(b_base, n0, k0, t + 256u * q);
            }
        }
        if (k0 > 0u) { multiply_prefetched(&acc, lid); }
    }
    let c_base = batch * p.m * p.n;
    let row = m0 + 4u * lid.y;
    let col = n0 + 4u * lid.x;
    store_tiled4_pair(c_base, row, col, acc[0], acc[1]);
    store_tiled4_pair(c_base, row + 1u, col, acc[2], acc[3]);
    store_tiled4_pair(c_base, row + 2u, col, acc[4], acc[5]);
    store_tiled4_pair(c_base, row + 3u, col, acc[6], acc[7]);
    store_tiled4_pair(c_base, row + 64u, col, acc[8], acc[9]);
    store_tiled4_pair(c_base, row + 65u, col, acc[10], acc[11]);
    store_tiled4_pair(c_base, row + 66u, col, acc[12], acc[13]);
    store_tiled4_pair(c_base, row + 67u, col, acc[14], acc[15]);
}
