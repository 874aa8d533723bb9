// matmul_mixed.wgsl's product on cooperative matrices (tensor cores): f16 values of a
// and b multiplied 16x16x16 at a time with f32 accumulation, c stored through
// matmul_mixed.wgsl's epilogue (bias, GELU or its gradient, f32 or f16). The module is
// built from gelu.wgsl, matmul_mixed.wgsl, the fragment operations and this file,
// with `enable f16;`. The fragment operations (begin_fragments, zero_fragment,
// fragment_a, fragment_b, multiply_add, store_fragment) come from matmul_coop_fragments.wgsl, the hardware's, on
// devices that opened cooperative matrices with 16x16x16 f16 -> f32 products; or from
// matmul_coop_emulated.wgsl, lane by lane, which runs this same kernel on any adapter
// with f16 so that its tiling, staging and epilogue are tested everywhere.
//
// Cooperative matrices belong to a subgroup, so one workgroup is one subgroup of SG
// lanes (the device's fixed subgroup size), computing a COOP_TILE x COOP_TILE tile of c
// as 2x2 fragments of 16x16. For each COOP_K-long slice of K the lanes stage op(a) and
// op(b) in workgroup memory as f16, zero past the matrix edges, so that every lane
// runs every cooperative operation as they require; the subgroup then multiplies the
// fragments. At the end the fragments go to workgroup memory in f32 and the lanes
// apply the epilogue and store c four columns at a time.
//
// a is [M, K] ([K, M] when TRANS_A), b is [K, N] ([N, K] when TRANS_B), each in f16 or
// in f32 (rounded to f16 as it is staged); c is [M, N], with N even when C_F16.

override SG: u32;
const COOP_TILE: u32 = 32u;
const COOP_K: u32 = 32u;

var<workgroup> a_coop: array<f16, COOP_TILE * COOP_K>;     // op(a) slice, [COOP_TILE][COOP_K]
var<workgroup> b_coop: array<f16, COOP_K * COOP_TILE>;     // op(b) slice, [COOP_K][COOP_TILE]
var<workgroup> c_coop: array<f32, COOP_TILE * COOP_TILE>;  // the tile of c

@compute @workgroup_size(SG)
fn matmul_coop(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let batch = wid.z;
    let m0 = wid.y * COOP_TILE;
    let n0 = wid.x * COOP_TILE;
    let a_base = batch * p.a_batch_stride;
    let b_base = batch * p.b_batch_stride;
    begin_fragments(lane);
    var c00 = zero_fragment();
    var c01 = zero_fragment();
    var c10 = zero_fragment();
    var c11 = zero_fragment();
    for (var k0 = 0u; k0 < p.k; k0 += COOP_K) {
        // Consecutive lanes read consecutive elements of each operand as it is stored.
        for (var e = lane; e < COOP_TILE * COOP_K; e += SG) {
            var row = e / COOP_K;
            var ka = e % COOP_K;
            if (TRANS_A) {
                row = e % COOP_TILE;
                ka = e / COOP_TILE;
            }
            a_coop[row * COOP_K + ka] = f16(round_to_f16(tiled_load_a(a_base, m0 + row, k0 + ka)));
            var col = e % COOP_TILE;
            var kb = e / COOP_TILE;
            if (TRANS_B) {
                col = e / COOP_K;
                kb = e % COOP_K;
            }
            b_coop[kb * COOP_TILE + col] = f16(round_to_f16(tiled_load_b(b_base, k0 + kb, n0 + col)));
        }
        workgroupBarrier();
        for (var kf = 0u; kf < COOP_K; kf += 16u) {
            let a0 = fragment_a(kf);
            let a1 = fragment_a(16u * COOP_K + kf);
            let b0 = fragment_b(kf * COOP_TILE);
            let b1 = fragment_b(kf * COOP_TILE + 16u);
            c00 = multiply_add(a0, b0, c00);
            c01 = multiply_add(a0, b1, c01);
            c10 = multiply_add(a1, b0, c10);
            c11 = multiply_add(a1, b1, c11);
        }
        workgroupBarrier();
    }
    store_fragment(c00, 0u);
    store_fragment(c01, 16u);
    store_fragment(c10, 16u * COOP_TILE);
    store_fragment(c11, 16u * COOP_TILE + 16u);
    workgroupBarrier();
    let c_base = batch * p.m * p.n;
    for (var e = lane; e < COOP_TILE * COOP_TILE / 4u; e += SG) {
        let row = e / (COOP_TILE / 4u);
        let col = (e % (COOP_TILE / 4u)) * 4u;
        let i = row * COOP_TILE + col;
        let v = vec4<f32>(c_coop[i], c_coop[i + 1u], c_coop[i + 2u], c_coop[i + 3u]);
        store_row4(c_base, m0 + row, n0 + col, v);
    }
}
