// The workgroup tiles of the tiled matmul kernels, f32 (matmul.wgsl's `matmul_tiled*`)
// and mixed (matmul_mixed.wgsl's `matmul_mixed_tiled*`), prepended to both modules,
// which declare TILE_M. A 16x16 workgroup computes a TILE_M x TILE_M tile of c, 8x8 per
// invocation; for each TILE_K-deep step of K it stages op(a) and op(b) in workgroup
// memory, k-major, so that the inner loop reads vec4s of b (and of a, in the
// prefetching kernels) and broadcast scalars.
const TILE_K: u32 = 16u;

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

// The tiles of `matmul_tiled` and `matmul_mixed_tiled`: invocation (tx, ty) owns rows
// ty + 16 i and column groups tx, tx + 16.
var<workgroup> a_tile: array<f32, TILE_K * TILE_M>;            // [TILE_K][TILE_M]
var<workgroup> b_tile: array<vec4<f32>, TILE_K * TILE_M / 4u>;  // [TILE_K][TILE_M / 4]

// The prefetching kernels load the next k-step's elements into registers before the
// current step's products (the loads are in flight while the invocation computes), and
// each invocation owns rows 4 ty .. +4 and 64 + 4 ty .. +4, so op(a) is read from
// workgroup memory as vec4s too (4 vec4 reads per 64 multiply-adds). Both tiles are
// vec4 arrays [TILE_K][TILE_M / 4], the vec4 column m / 4 of k-row k stored at
// (m / 4) ^ k.
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

// Under ROW_SUMS (a stored [K, M]), the first column of workgroups of a prefetching
// kernel sums the elements of op(a) it loads: invocation t those of row t % TILE_M,
// at alternate k with invocation t + TILE_M. Row t's sum, for t < TILE_M, from every
// invocation's `row_sum`, after the products (pa_tile is reused).
fn prefetched_row_sum(t: u32, row_sum: f32) -> f32 {
    workgroupBarrier();
    pa_tile[t / 4u][t % 4u] = row_sum;
    workgroupBarrier();
    return pa_tile[t / 4u][t % 4u] + pa_tile[(t + TILE_M) / 4u][t % 4u];
}
