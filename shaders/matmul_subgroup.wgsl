// Batched matmul for CPU adapters whose subgroups are 8 lanes wide (lavapipe on
// x86), for N and K multiples of 4, or, when a is stored transposed (a weight
// gradient), N and M multiples of 4 and any K. The engine
// appends this file to matmul.wgsl (after matmul_params.wgsl, whose parameters and
// transposes it uses), whose vec4 bindings it uses through a4_at, a4_operand, b_block, times, store4 and store_row_sums4; and, for
// operands and output in f32 or f16, to matmul_mixed.wgsl and matmul_mixed_subgroup.wgsl,
// which define the same six functions on words. It is a module of its own because it needs
// the subgroup feature, which not every adapter has.
//
// On such a driver each invocation is one lane of a SIMD register, and a storage
// load costs a loop over the 8 lanes whether or not their addresses agree. So the
// kernel loads as little as it can per multiply-add: a subgroup computes a 32x32
// block of c, lane l owning columns 4l..4l+4 of it for all 32 rows (32 vec4
// accumulators). Each 4-deep step of k, the 32x4 block of op(a) shared by the
// lanes is fetched four vec4 per lane and handed round with subgroupBroadcast, and
// each lane loads only its own 4x4 block of op(b): 8 loads for 512 multiply-adds,
// against 8 for 64 in the vec4 kernel. Fewer rows would load more per multiply-add;
// larger blocks load less and ran faster on large products (64 rows x 8 columns per
// lane as four arrays of 32: products 1.2-1.5x, weight gradients 1.5-1.9x) but not on
// the `fmnist-cpu` step's small ones, while a 1-step bench without the shader cache
// took 1.9x (32x8) to 4.8x (64x8) as long to compile, as every CI test process does
// (docs/results/2026-12-05-lavapipe-step-5.txt). On lavapipe no array here may be longer
// than 32: its compiler unrolls loops of at most 32 iterations, and an array indexed by a
// loop it keeps is evidently left in memory (64 rows in one array ran 3x slower, as two
// arrays of 32 faster). Reading op(b) from a uniform buffer, whose loads lavapipe makes
// without the per-lane branches (half the time of a storage load alone), was no faster
// here (docs/results/2026-12-05-lavapipe-step-6.txt). Where b stays in cache (the
// `fmnist-cpu` step's products) nothing that loads less would be faster: with no loads
// at all they ran 1.2-1.3x faster. The multiply-adds and their accumulators bound them,
// and llvmpipe makes each multiply-add a multiply and an add (`fma()` too), so writing
// them as fma gains nothing (docs/results/2026-12-06-lavapipe-step-2.txt).

const ROWS: u32 = 32u;

// ROW_SUMS (matmul_params.wgsl's override): op(a)'s row sums
// added up from the blocks the lanes fetch anyway.

// Rows row..row+8 of op(a) summed over k, from one fetch's sums (ROW_SUMS, a stored
// [K, M]): lane l fetched rows row + 4(l/4)..+4 at k + l%4, so lanes 0-3 hold parts of
// the first four rows' sums and lanes 4-7 of the next four. Rows past M, fetched
// clamped, are not stored.
fn store_fetched_sums(f: vec4<f32>, batch: u32, row: u32, stores: bool) {
    let first = subgroupBroadcast(f, 0u) + subgroupBroadcast(f, 1u)
        + subgroupBroadcast(f, 2u) + subgroupBroadcast(f, 3u);
    let next = subgroupBroadcast(f, 4u) + subgroupBroadcast(f, 5u)
        + subgroupBroadcast(f, 6u) + subgroupBroadcast(f, 7u);
    if (stores && row < p.m) { store_row_sums4((batch * p.m + row) / 4u, first); }
    if (stores && row + 4u < p.m) { store_row_sums4((batch * p.m + row + 4u) / 4u, next); }
}

// A workgroup is one subgroup of 8 lanes: a ROWS x 32 tile of c. Small tiles give
// the CPU's threads enough workgroups to share even when c is small (a weight
// gradient [64, 192] is 12 of them), and there is no workgroup memory to reuse.
@compute @workgroup_size(8)
fn matmul_subgroup(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(subgroup_invocation_id) lane: u32) {
    let tile = tile_at(wid, nwg, ROWS);
    if (tile.batch >= p.batch) { return; }
    let batch = tile.batch;
    let row0 = tile.m0;
    let col0 = wid.x * 32u + 4u * lane;
    let a_base = batch * p.a_batch_stride;
    let b_base = batch * p.b_batch_stride;
    let c = min(col0, p.n - 4u);
    var acc: array<vec4<f32>, ROWS>;
    for (var i = 0u; i < ROWS; i++) { acc[i] = vec4<f32>(0.0); }
    // Under ROW_SUMS, fetch h summed over k.
    var fetched: array<vec4<f32>, ROWS / 8u>;
    for (var k = 0u; k < p.k; k += 4u) {
        // Fetch h: lane l fetches row 8h + l of the ROWSx4 block of op(a) (when a is
        // stored [K, M]: rows 8h + 4(l/4)..+4 at k + l%4). Rows past M are clamped:
        // computed, never stored.
        var rows: array<vec4<f32>, ROWS>;
        for (var h = 0u; h < ROWS / 8u; h++) {
            var m: vec4<f32>;
            if (TRANS_A) {
                // Rows past K (K need not be a multiple of 4 here) add nothing.
                let kk = k + lane % 4u;
                m = a4_at(a_base + min(kk, p.k - 1u) * p.m + min(row0 + 8u * h + 4u * (lane / 4u), p.m - 4u));
                if (kk >= p.k) { m = vec4<f32>(0.0); }
            } else {
                m = a4_at(a_base + min(row0 + 8u * h + lane, p.m - 1u) * p.k + k);
            }
            // The row sums are of a as stored; the product takes it as an operand.
            if (ROW_SUMS) { fetched[h] += m; }
            m = a4_operand(m);
            // The lane argument must be a constant.
            rows[8u * h + 0u] = subgroupBroadcast(m, 0u);
            rows[8u * h + 1u] = subgroupBroadcast(m, 1u);
            rows[8u * h + 2u] = subgroupBroadcast(m, 2u);
            rows[8u * h + 3u] = subgroupBroadcast(m, 3u);
            rows[8u * h + 4u] = subgroupBroadcast(m, 4u);
            rows[8u * h + 5u] = subgroupBroadcast(m, 5u);
            rows[8u * h + 6u] = subgroupBroadcast(m, 6u);
            rows[8u * h + 7u] = subgroupBroadcast(m, 7u);
        }
        if (TRANS_A) {
            // rows[4g + t] holds rows 4g..4g+4 at k + t: transpose each 4x4 group.
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
    if (ROW_SUMS) {
        // The first column of workgroups stores them.
        for (var h = 0u; h < ROWS / 8u; h++) {
            store_fetched_sums(fetched[h], batch, row0 + 8u * h, wid.x == 0u && lane == 0u);
        }
    }
    if (col0 >= p.n) { return; }
    var bv = vec4<f32>(0.0);
    if (HAS_BIAS) { bv = bias4[col0 / 4u]; }
    let n4 = p.n / 4u;
    let o = (batch * p.m * p.n + col0) / 4u;
    for (var i = 0u; i < ROWS; i++) {
        if (row0 + i < p.m) { store4(o + (row0 + i) * n4, acc[i] + bv); }
    }
}
