// matmul_mixed.wgsl's product on cooperative matrices (tensor cores): f16 values of a
// and b multiplied 16x16x16 at a time with f32 accumulation, c stored through
// matmul_mixed.wgsl's epilogue (bias, GELU or its gradient, f32 or f16). The module is
// built from f16.wgsl, gelu.wgsl, matmul_mixed.wgsl, the fragment operations and this
// file, with `enable f16;`. The fragment operations (begin_fragments, zero_fragment,
// fragment_a, fragment_b, multiply_add, store_fragment, and the types Accumulator,
// FragmentA and FragmentB) come from coop_fragments.wgsl, the hardware's, on devices
// that opened cooperative matrices with 16x16x16 f16 -> f32 products; or from
// coop_emulated.wgsl, lane by lane, which runs this same kernel on any adapter with f16
// so that its tiling, staging and epilogue are tested everywhere.
//
// Cooperative matrices belong to a subgroup. A workgroup is four subgroups of SG lanes
// (the device's fixed subgroup size, numbered by consecutive invocations) and computes
// a COOP_TILE x COOP_TILE tile of c; each subgroup a SUB_TILE x SUB_TILE quarter of it
// as 4x4 fragments of 16x16. For each COOP_K-long slice of K the workgroup stages
// op(a) and op(b) in workgroup memory as f16, zero past the matrix edges, so that
// every lane runs every cooperative operation as they require; each subgroup then
// multiplies its fragments, every staged element serving 64 products, while its
// invocations' loads of the next slice are in flight. The staged rows are padded
// (A_STRIDE, B_STRIDE) so that the 16-byte rows a fragment load reads fall in
// different banks. At the end each subgroup passes its fragments one at a time through
// its own 16x16 f32 slot of workgroup memory, from which its lanes apply the epilogue
// and store c four columns at a time.
//
// a is [M, K] ([K, M] when TRANS_A), b is [K, N] ([N, K] when TRANS_B), each in f16 or
// in f32 (rounded to f16 as it is read, by matmul_mixed.wgsl's loads, so that the
// conversion to f16 as it is staged is exact); c is [M, N], with N even when C_F16.

override SG: u32;
const COOP_TILE: u32 = 128u;
const SUB_TILE: u32 = 64u;
const COOP_K: u32 = 32u;
const A_STRIDE: u32 = COOP_K + 8u;
const B_STRIDE: u32 = COOP_TILE + 8u;

// Where the op(b) slice starts in coop_tiles, after op(a)'s.
const B_AT: u32 = COOP_TILE * A_STRIDE;

// The op(a) slice, [COOP_TILE][A_STRIDE], then the op(b) slice, [COOP_K][B_STRIDE].
var<workgroup> coop_tiles: array<f16, B_AT + COOP_K * B_STRIDE>;
// A 16x16 fragment of c per subgroup.
var<workgroup> coop_out: array<f32, 4u * 256u>;

@compute @workgroup_size(4u * SG)
fn matmul_coop(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) t: u32) {
    let tile = tile_at(wid, nwg, COOP_TILE);
    if (tile.batch >= p.batch) { return; }
    let batch = tile.batch;
    let m0 = tile.m0;
    let n0 = wid.x * COOP_TILE;
    let a_base = batch * p.a_batch_stride;
    let b_base = batch * p.b_batch_stride;
    let sg = t / SG;
    let sm = (sg / 2u) * SUB_TILE;
    let sn = (sg % 2u) * SUB_TILE;
    let lane = t % SG;
    begin_fragments(lane);
    var c00 = zero_fragment();
    var c01 = zero_fragment();
    var c02 = zero_fragment();
    var c03 = zero_fragment();
    var c10 = zero_fragment();
    var c11 = zero_fragment();
    var c12 = zero_fragment();
    var c13 = zero_fragment();
    var c20 = zero_fragment();
    var c21 = zero_fragment();
    var c22 = zero_fragment();
    var c23 = zero_fragment();
    var c30 = zero_fragment();
    var c31 = zero_fragment();
    var c32 = zero_fragment();
    var c33 = zero_fragment();
    // This invocation's pairs of the next slice, loaded while the current one is
    // multiplied: PAIRS / (4 SG) of each operand, a fixed count.
    var next_a: array<vec2<f16>, MAX_STAGED>;
    var next_b: array<vec2<f16>, MAX_STAGED>;
    for (var k0 = 0u; k0 < p.k + COOP_K; k0 += COOP_K) {
        if (k0 > 0u && ANATOMY != 2u) {
            // Stage the slice loaded last time round, then multiply it.
            workgroupBarrier();
            for (var q = 0u; q < PAIRS / (4u * SG); q++) {
                let at_a = a_staged_at(t + q * 4u * SG);
                coop_tiles[at_a.x] = next_a[q].x;
                coop_tiles[at_a.y] = next_a[q].y;
                let at_b = b_staged_at(t + q * 4u * SG);
                coop_tiles[B_AT + at_b.x] = next_b[q].x;
                coop_tiles[B_AT + at_b.y] = next_b[q].y;
            }
            workgroupBarrier();
        }
        if (k0 < p.k && ANATOMY != 2u) {
            for (var q = 0u; q < PAIRS / (4u * SG); q++) {
                let sa = pair_slot(!TRANS_A, t + q * 4u * SG);
                next_a[q] = vec2<f16>(a_pair(a_base, m0 + sa.x, k0 + sa.y));
                let sb = pair_slot(TRANS_B, t + q * 4u * SG);
                next_b[q] = vec2<f16>(b_pair(b_base, k0 + sb.y, n0 + sb.x));
            }
        }
        // Nothing is staged yet in the first round. The staging anatomy multiplies the
        // last slice only: a read of what it staged, which keeps the stores.
        if (k0 == 0u || (ANATOMY == 1u && k0 < p.k)) { continue; }
        for (var kq = 0u; kq < COOP_K; kq += 16u) {
            // The fragments anatomy stages nothing, so it varies the fragments it
            // loads with k0: loads that never change would leave the loop.
            var kf = kq;
            if (ANATOMY == 2u) { kf = (kq + 16u * (k0 / COOP_K)) % COOP_K; }
            let a0 = fragment_a(sm * A_STRIDE + kf, A_STRIDE);
            let a1 = fragment_a((sm + 16u) * A_STRIDE + kf, A_STRIDE);
            let a2 = fragment_a((sm + 32u) * A_STRIDE + kf, A_STRIDE);
            let a3 = fragment_a((sm + 48u) * A_STRIDE + kf, A_STRIDE);
            let b0 = fragment_b(B_AT + kf * B_STRIDE + sn, B_STRIDE);
            let b1 = fragment_b(B_AT + kf * B_STRIDE + sn + 16u, B_STRIDE);
            let b2 = fragment_b(B_AT + kf * B_STRIDE + sn + 32u, B_STRIDE);
            let b3 = fragment_b(B_AT + kf * B_STRIDE + sn + 48u, B_STRIDE);
            // Half the accumulators (the anatomy's): c?2 and c?3 left out.
            let all = ANATOMY != 3u;
            c00 = multiply_add(a0, b0, c00);
            c01 = multiply_add(a0, b1, c01);
            if (all) { c02 = multiply_add(a0, b2, c02); c03 = multiply_add(a0, b3, c03); }
            c10 = multiply_add(a1, b0, c10);
            c11 = multiply_add(a1, b1, c11);
            if (all) { c12 = multiply_add(a1, b2, c12); c13 = multiply_add(a1, b3, c13); }
            c20 = multiply_add(a2, b0, c20);
            c21 = multiply_add(a2, b1, c21);
            if (all) { c22 = multiply_add(a2, b2, c22); c23 = multiply_add(a2, b3, c23); }
            c30 = multiply_add(a3, b0, c30);
            c31 = multiply_add(a3, b1, c31);
            if (all) { c32 = multiply_add(a3, b2, c32); c33 = multiply_add(a3, b3, c33); }
        }
    }
    let c_base = batch * p.m * p.n;
    let row = m0 + sm;
    let col = n0 + sn;
    store_c(c00, c_base, row, col, sg, lane);
    store_c(c01, c_base, row, col + 16u, sg, lane);
    store_c(c02, c_base, row, col + 32u, sg, lane);
    store_c(c03, c_base, row, col + 48u, sg, lane);
    store_c(c10, c_base, row + 16u, col, sg, lane);
    store_c(c11, c_base, row + 16u, col + 16u, sg, lane);
    store_c(c12, c_base, row + 16u, col + 32u, sg, lane);
    store_c(c13, c_base, row + 16u, col + 48u, sg, lane);
    store_c(c20, c_base, row + 32u, col, sg, lane);
    store_c(c21, c_base, row + 32u, col + 16u, sg, lane);
    store_c(c22, c_base, row + 32u, col + 32u, sg, lane);
    store_c(c23, c_base, row + 32u, col + 48u, sg, lane);
    store_c(c30, c_base, row + 48u, col, sg, lane);
    store_c(c31, c_base, row + 48u, col + 16u, sg, lane);
    store_c(c32, c_base, row + 48u, col + 32u, sg, lane);
    store_c(c33, c_base, row + 48u, col + 48u, sg, lane);
}

// The 16x16 fragment at rows row0.., columns col0.. of c, through subgroup sg's slot:
// every subgroup stores its fragments in the same order, so the barriers are met by
// the whole workgroup.
fn store_c(c: Accumulator, c_base: u32, row0: u32, col0: u32, sg: u32, lane: u32) {
    store_fragment(c, sg * 256u, 16u);
    workgroupBarrier();
    for (var e = lane; e < 64u; e += SG) {
        let r = e / 4u;
        let q = (e % 4u) * 4u;
        let i = sg * 256u + r * 16u + q;
        let v = vec4<f32>(coop_out[i], coop_out[i + 1u], coop_out[i + 2u], coop_out[i + 3u]);
        store_row4(c_base, row0 + r, col0 + q, v);
    }
    workgroupBarrier();
}

// Staging moves pairs of elements adjacent in memory: along K in a stored [M, K] and in
// b stored [N, K], along M or N otherwise. A pair of an f16 operand that starts a word
// is read as that word. Each invocation moves PAIRS / (4 SG) of each operand's, at most
// MAX_STAGED (subgroups of 8 lanes or more).
const PAIRS: u32 = COOP_TILE * COOP_K / 2u;
const MAX_STAGED: u32 = PAIRS / 32u;

// Pair slot e of a slice: (i, k) of its first element, i the row of op(a) or the
// column of op(b) in the tile. Consecutive slots walk the stored matrix's contiguous
// dim: K where the pair runs along it (a [M, K], b [N, K]), the tile's otherwise.
fn pair_slot(along_k: bool, e: u32) -> vec2<u32> {
    if (along_k) { return vec2<u32>(e / (COOP_K / 2u), 2u * (e % (COOP_K / 2u))); }
    return vec2<u32>(2u * (e % (COOP_TILE / 2u)), e / (COOP_TILE / 2u));
}

// Where pair slot e's two elements go in the staged slices ([row][k] for op(a),
// [k][column] for op(b)).
fn a_staged_at(e: u32) -> vec2<u32> {
    let s = pair_slot(!TRANS_A, e);
    let first = s.x * A_STRIDE + s.y;
    return vec2<u32>(first, first + select(1u, A_STRIDE, TRANS_A));
}

fn b_staged_at(e: u32) -> vec2<u32> {
    let s = pair_slot(TRANS_B, e);
    let first = s.y * B_STRIDE + s.x;
    return vec2<u32>(first, first + select(1u, B_STRIDE, TRANS_B));
}

// op(a)[row][kk] and the element after it in memory (op(a)[row][kk + 1], or
// op(a)[row + 1][kk] when TRANS_A), zero past the matrix edges.
fn a_pair(a_base: u32, row: u32, kk: u32) -> vec2<f32> {
    var i = a_base + row * p.k + kk;
    var second = row < p.m && kk + 1u < p.k;
    if (TRANS_A) {
        i = a_base + kk * p.m + row;
        second = row + 1u < p.m && kk < p.k;
    }
    let first = row < p.m && kk < p.k;
    if (A_F16 && second && (i & 1u) == 0u) { return unpack2x16float(a[i >> 1u]); }
    var v = vec2<f32>(0.0);
    if (first) { v.x = a_at(i); }
    if (second) { v.y = a_at(i + 1u); }
    return v;
}

// op(b)[kk][col] and the element after it in memory (op(b)[kk][col + 1], or
// op(b)[kk + 1][col] when TRANS_B), zero past the matrix edges.
fn b_pair(b_base: u32, kk: u32, col: u32) -> vec2<f32> {
    var i = b_base + kk * p.n + col;
    var second = col + 1u < p.n && kk < p.k;
    if (TRANS_B) {
        i = b_base + col * p.k + kk;
        second = col < p.n && kk + 1u < p.k;
    }
    let first = col < p.n && kk < p.k;
    if (B_F16 && second && (i & 1u) == 0u) { return unpack2x16float(b[i >> 1u]); }
    var v = vec2<f32>(0.0);
    if (first) { v.x = b_at(i); }
    if (second) { v.y = b_at(i + 1u); }
    return v;
}
