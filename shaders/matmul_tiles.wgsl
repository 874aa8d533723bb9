// The matmul kernel bodies shared by the f32 family (matmul.wgsl's `matmul_flat`,
// `matmul_tiled` and `matmul_tiled_prefetch`) and the mixed one (matmul_mixed.wgsl's
// `matmul_mixed`, `matmul_mixed_tiled` and `matmul_mixed_tiled_prefetch`), after
// matmul_params.wgsl: the flat kernel's, on each family's `load_a(base, row, kk)` and
// `load_b(base, kk, col)` (op(a)[row][kk] and op(b)[kk][col] as multiplied) and
// `store_row4(c_base, row, col0, v)` (four columns of a row of c with the epilogue,
// where they fall inside); then the tiled kernels' tiles and bodies, for GPUs.
//
// The tiled kernels: a 16x16 workgroup computes a TILE_M x TILE_M tile of c (the
// kernels are written for 16 x 8 = 128), 8x8 per invocation, held in registers; for
// each TILE_K-deep step of K it stages op(a) and op(b) in workgroup memory, k-major, so
// that the inner loop reads vec4s of b (and of a, in the prefetching kernel) and
// broadcast scalars, with coalesced, bounds-checked loads for either transpose.
//
// What each family gives them: `tile_a(a_base, m, k)`, op(a)[m][k] of a batch entry as
// stored (what the row sums add), zero outside the matrix; `tile_operand(v)`, that
// value as the product multiplies it; `tile_b(b_base, k, n)`, op(b)[k][n] as
// multiplied, zero outside; `store_tile_pair(c_base, row, col0, v0, v1)`, columns
// col0..col0+4 and col0+64..col0+68 of a row of c, with the epilogue, where they fall
// inside; `store_tile_row_sum(i, v)`, element i of the row sums (ROW_SUMS).
// The flat kernel, for small products of any shape: the 4x4 blocks of every batch
// are numbered one after another and handed out FLAT_WG to a workgroup, so a batch of
// 7x7 attention scores keeps every invocation busy instead of one tile each. Scalar
// loads; rows and columns past the edge are clamped on load (computed, not stored).
fn flat_product(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) {
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

const TILE_K: u32 = 16u;

// Where a workgroup's tile of c lies, for every kernel of both families that tiles c
// (the host grids them as `Device::grid_2d` does): its first row m0 and batch entry.
// The grid is [column tiles, row tiles x batch entries]: the second dimension, y,
// folded over z where it passes what one holds; the workgroups past the end find a
// batch entry of p.batch or more, and return.
struct Tile {
    m0: u32,
    batch: u32,
}

fn tile_at(wid: vec3<u32>, nwg: vec3<u32>, side: u32) -> Tile {
    let row_tiles = (p.m + side - 1u) / side;
    let i = wid.y + wid.z * nwg.y;
    return Tile((i % row_tiles) * side, i / row_tiles);
}

// Each k-row is stored swizzled: column m of row k at m ^ k (for a vec4 column, m/4 at
// (m/4) ^ k). When consecutive invocations stage consecutive k of one m (a stored
// [M, K], b stored [N, K]), their stores then fall in different memory banks instead
// of all in one, 128 floats apart; every other access only sees the columns of a row
// permuted.
// Staging slot e of a k-step holds element (m, k) of op(a)'s tile and (n, k) of op(b)'s:
// consecutive slots walk the stored matrix's contiguous dim, so the loads coalesce.
fn a_tile_coord(e: u32) -> vec2<u32> {
    if (TRANS_A) { return vec2<u32>(e % TILE_M, e / TILE_M); }
    return vec2<u32>(e / TILE_K, e % TILE_K);
}

fn b_tile_coord(e: u32) -> vec2<u32> {
    if (TRANS_B) { return vec2<u32>(e / TILE_K, e % TILE_K); }
    return vec2<u32>(e % TILE_M, e / TILE_M);
}

// The tiles of `tiled_product`: invocation (tx, ty) owns rows ty + 16 i and column
// groups tx, tx + 16.
var<workgroup> a_tile: array<f32, TILE_K * TILE_M>;            // [TILE_K][TILE_M]
var<workgroup> b_tile: array<vec4<f32>, TILE_K * TILE_M / 4u>;  // [TILE_K][TILE_M / 4]

// `tiled_prefetch_product` (and matmul.wgsl's `matmul_tiled_prefetch_vec4`) loads the
// next k-step's elements into registers before the current step's products (the loads
// are in flight while the invocation computes), and each invocation owns rows
// 4 ty .. +4 and 64 + 4 ty .. +4, so op(a) is read from workgroup memory as vec4s too
// (4 vec4 reads per 64 multiply-adds). Both tiles are vec4 arrays [TILE_K][TILE_M / 4],
// the vec4 column m / 4 of k-row k stored at (m / 4) ^ k.
var<workgroup> pa_tile: array<vec4<f32>, TILE_K * TILE_M / 4u>;
var<workgroup> pb_tile: array<vec4<f32>, TILE_K * TILE_M / 4u>;

// Stage the k-step invocation t loaded, element by element: its slots t + 256 q.
fn stage_prefetched(t: u32, next_a: ptr<function, array<f32, 8>>, next_b: ptr<function, array<f32, 8>>) {
    for (var q = 0u; q < 8u; q++) {
        let e = t + 256u * q;
        let a = a_tile_coord(e);
        pa_tile[a.y * (TILE_M / 4u) + ((a.x / 4u) ^ a.y)][a.x % 4u] = (*next_a)[q];
        let b = b_tile_coord(e);
        pb_tile[b.y * (TILE_M / 4u) + ((b.x / 4u) ^ b.y)][b.x % 4u] = (*next_b)[q];
    }
}

// acc += the staged k-step's products: row 64 h + 4 ty + r, column group j of the
// invocation at acc[8 h + 2 r + j].
fn multiply_prefetched(acc: ptr<function, array<vec4<f32>, 16>>, lid: vec3<u32>) {
    for (var kk = 0u; kk < TILE_K; kk++) {
        let row = kk * (TILE_M / 4u);
        let a0 = pa_tile[row + (lid.y ^ kk)];
        let a1 = pa_tile[row + ((lid.y + 16u) ^ kk)];
        let b0 = pb_tile[row + (lid.x ^ kk)];
        let b1 = pb_tile[row + ((lid.x + 16u) ^ kk)];
        for (var r = 0u; r < 4u; r++) {
            (*acc)[2u * r] += a0[r] * b0;
            (*acc)[2u * r + 1u] += a0[r] * b1;
            (*acc)[8u + 2u * r] += a1[r] * b0;
            (*acc)[8u + 2u * r + 1u] += a1[r] * b1;
        }
    }
}

// Under ROW_SUMS (a stored [K, M]), the first column of workgroups also sums the
// elements of op(a) it loads: invocation t those of row m0 + t % TILE_M, at alternate k
// with invocation t + TILE_M. After the products the two halves meet in a tile the
// kernel no longer needs (each kernel its own: workgroup memory is counted per array
// a kernel touches) and invocation t < TILE_M stores row m0 + t's sum.
fn store_row_sum(t: u32, batch: u32, m0: u32, sum: f32) {
    let row = m0 + t;
    if (t < TILE_M && row < p.m) { store_tile_row_sum(batch * p.m + row, sum); }
}

// The body of `matmul_tiled` and `matmul_mixed_tiled`: each k-step staged, then
// multiplied.
fn tiled_product(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>, t: u32) {
    let tile = tile_at(wid, nwg, TILE_M);
    if (tile.batch >= p.batch) { return; }
    let batch = tile.batch;
    let m0 = tile.m0;
    let n0 = wid.x * TILE_M;
    let a_base = batch * p.a_batch_stride;
    let b_base = batch * p.b_batch_stride;
    var acc: array<vec4<f32>, 16>;   // row i, column group j at 2 i + j
    for (var i = 0u; i < 16u; i++) { acc[i] = vec4<f32>(0.0); }
    let sums_rows = ROW_SUMS && wid.x == 0u;
    var row_sum = 0.0;
    for (var k0 = 0u; k0 < p.k; k0 += TILE_K) {
        for (var q = 0u; q < 8u; q++) {
            let e = t + 256u * q;
            let a = a_tile_coord(e);
            let stored = tile_a(a_base, m0 + a.x, k0 + a.y);
            if (sums_rows) { row_sum += stored; }
            a_tile[a.y * TILE_M + (a.x ^ a.y)] = tile_operand(stored);
            let b = b_tile_coord(e);
            b_tile[b.y * (TILE_M / 4u) + ((b.x / 4u) ^ b.y)][b.x % 4u] = tile_b(b_base, k0 + b.y, n0 + b.x);
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TILE_K; kk++) {
            let b0 = b_tile[kk * (TILE_M / 4u) + (lid.x ^ kk)];
            let b1 = b_tile[kk * (TILE_M / 4u) + ((lid.x + 16u) ^ kk)];
            for (var i = 0u; i < 8u; i++) {
                let a = a_tile[kk * TILE_M + ((lid.y + 16u * i) ^ kk)];
                acc[2u * i] += a * b0;
                acc[2u * i + 1u] += a * b1;
            }
        }
        workgroupBarrier();
    }
    if (sums_rows) {
        b_tile[t / 4u][t % 4u] = row_sum;
        workgroupBarrier();
        store_row_sum(t, batch, m0, b_tile[t / 4u][t % 4u] + b_tile[(t + TILE_M) / 4u][t % 4u]);
    }
    // The accumulators at constant indices: a loop over them made the NVIDIA driver
    // keep them in memory instead of registers once the GELU epilogues made the loop too
    // long to unroll (the tiled kernels ran 3-7x slower than the vec4 one with GELU, on
    // par without).
    let c_base = batch * p.m * p.n;
    let row = m0 + lid.y;
    let col = n0 + 4u * lid.x;
    store_tile_pair(c_base, row, col, acc[0], acc[1]);
    store_tile_pair(c_base, row + 16u, col, acc[2], acc[3]);
    store_tile_pair(c_base, row + 32u, col, acc[4], acc[5]);
    store_tile_pair(c_base, row + 48u, col, acc[6], acc[7]);
    store_tile_pair(c_base, row + 64u, col, acc[8], acc[9]);
    store_tile_pair(c_base, row + 80u, col, acc[10], acc[11]);
    store_tile_pair(c_base, row + 96u, col, acc[12], acc[13]);
    store_tile_pair(c_base, row + 112u, col, acc[14], acc[15]);
}

// The body of `matmul_tiled_prefetch` and `matmul_mixed_tiled_prefetch`: each k-step
// loaded into registers while the one before is multiplied.
fn tiled_prefetch_product(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>, t: u32) {
    let tile = tile_at(wid, nwg, TILE_M);
    if (tile.batch >= p.batch) { return; }
    let batch = tile.batch;
    let m0 = tile.m0;
    let n0 = wid.x * TILE_M;
    let a_base = batch * p.a_batch_stride;
    let b_base = batch * p.b_batch_stride;
    var acc: array<vec4<f32>, 16>;   // row 64 h + 4 ty + r, column group j at 8 h + 2 r + j
    var next_a: array<f32, 8>;
    var next_b: array<f32, 8>;
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
                let a = a_tile_coord(e);
                let stored = tile_a(a_base, m0 + a.x, k0 + a.y);
                if (sums_rows) { row_sum += stored; }
                next_a[q] = tile_operand(stored);
                let b = b_tile_coord(e);
                next_b[q] = tile_b(b_base, k0 + b.y, n0 + b.x);
            }
        }
        if (k0 > 0u) { multiply_prefetched(&acc, lid); }
    }
    if (sums_rows) {
        workgroupBarrier();
        pa_tile[t / 4u][t % 4u] = row_sum;
        workgroupBarrier();
        store_row_sum(t, batch, m0, pa_tile[t / 4u][t % 4u] + pa_tile[(t + TILE_M) / 4u][t % 4u]);
    }
    // At constant indices, as in `tiled_product`.
    let c_base = batch * p.m * p.n;
    let row = m0 + 4u * lid.y;
    let col = n0 + 4u * lid.x;
    store_tile_pair(c_base, row, col, acc[0], acc[1]);
    store_tile_pair(c_base, row + 1u, col, acc[2], acc[3]);
    store_tile_pair(c_base, row + 2u, col, acc[4], acc[5]);
    store_tile_pair(c_base, row + 3u, col, acc[6], acc[7]);
    store_tile_pair(c_base, row + 64u, col, acc[8], acc[9]);
    store_tile_pair(c_base, row + 65u, col, acc[10], acc[11]);
    store_tile_pair(c_base, row + 66u, col, acc[12], acc[13]);
    store_tile_pair(c_base, row + 67u, col, acc[14], acc[15]);
}
