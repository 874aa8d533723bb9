// Fused attention on cooperative matrices (tensor cores) for a qkv stored in f16 (mixed
// precision), at head dims that are multiples of 16 up to 128: the same three kernels
// and bindings as attention.wgsl, and the same sums, with every product's operands in
// f16 and its sums in f32. attention_layout.wgsl says where the rows live; the fragment
// operations come from coop_fragments.wgsl (the hardware's) or coop_emulated.wgsl (lane
// by lane, on any adapter with f16, where tests/attention.rs holds this file to the
// other families).
//
// A workgroup of SUBGROUPS subgroups of SG lanes owns OWN rows (query rows in the
// forward and dq kernels, key rows in the dk/dv kernel), 16 per subgroup: one fragment
// high. It stages its own rows in workgroup memory as f16 once, then walks the other
// side in blocks of BLOCK rows, staged the same way. Per block each subgroup
//   - multiplies its own rows by the block's (16 x BLOCK scores, two fragments wide,
//     summed over the head dim 16 at a time) and stores the scores in f32;
//   - has its lanes turn them into probabilities (or score gradients), stored in f16;
//   - multiplies those by the block's rows into its accumulators (16 x HD, HD / 16
//     fragments).
// Fragments cannot be scaled row by row, so the forward takes two passes over the keys:
// the first finds each row's log-sum-exp, the second adds exp(s - lse) v, already
// normalised (the backward's own way of recomputing probabilities).
//
// With ds_ij = p_ij (dout_i . v_j - delta_i) (attention.wgsl's backward):
//   forward: out_i = sum_j p_ij v_j, lse_i;
//   dq:      dq_i = scale sum_j ds_ij k_j, delta_i = dout_i . out_i;
//   dk/dv:   dk_j = scale sum_i ds_ij q_i, dv_j = sum_i p_ij dout_i.
// dout, out, dqkv, lse and delta are f32; dout is rounded to f16 as it is staged, and
// probabilities and score gradients as they are stored for their products.

override SG: u32;
const SUBGROUPS: u32 = 2u;
const OWN: u32 = 32u;       // SUBGROUPS x 16, a region of staged rows
const BLOCK: u32 = 32u;     // the other side's rows per block (two fragments), a region
const MAX_FRAGMENTS: u32 = 8u;  // HD / 16 at the largest head dim, 128
const NEG: f32 = -3.4e38;

// Staged rows are HD + 8 halves apart, so that the 16-byte rows a fragment load reads
// fall in different banks; probabilities PS apart.
const PS: u32 = BLOCK + 8u;

// The kernels' bindings are attention_bindings.wgsl's.

// Four regions of 32 staged rows (OWN_A, OWN_B, OTHER_A, OTHER_B), then each
// subgroup's 16 x BLOCK probabilities, then its score gradients (the dk/dv kernel's).
var<workgroup> coop_tiles: array<f16, 4u * 32u * (HD + 8u) + 2u * SUBGROUPS * 16u * PS>;
// Each subgroup's 16 x BLOCK scores (or their gradients), f32.
var<workgroup> coop_out: array<f32, SUBGROUPS * 16u * BLOCK>;
// Per own row: (running max, running sum) in the forward's first pass, then (lse, _);
// (lse, delta) in dq. Per row of the block: (lse, delta) in dk/dv.
var<workgroup> own_stats: array<vec2<f32>, OWN>;
var<workgroup> block_stats: array<vec2<f32>, BLOCK>;

const OWN_A: u32 = 0u;
const OWN_B: u32 = 1u;
const OTHER_A: u32 = 2u;
const OTHER_B: u32 = 3u;

// Where row r of a region of staged rows starts in coop_tiles.
fn staged_row(region: u32, r: u32) -> u32 {
    return (region * 32u + r) * (HD + 8u);
}

// Where subgroup sg's probabilities (which 0) or score gradients (which 1) start,
// after the four regions.
fn probs_at(which: u32, sg: u32) -> u32 {
    return staged_row(4u, 0u) + (which * SUBGROUPS + sg) * 16u * PS;
}

// Staging moves pairs of halves: pair slot e of a region is its row e / (HD / 2), and
// the columns c = 2 (e % (HD / 2)) and c + 1.
fn pair_slot(e: u32) -> vec2<u32> {
    return vec2<u32>(e / (HD / 2u), 2u * (e % (HD / 2u)));
}

// x as the f16 nearest it, rounded by f16.wgsl so that every adapter rounds alike.
fn to_f16(x: f32) -> f16 {
    return f16(round_to_f16(x));
}

fn put_pair(at: u32, v: vec2<f32>) {
    coop_tiles[at] = to_f16(v.x);
    coop_tiles[at + 1u] = to_f16(v.y);
}

// Subgroup sg's 16 own rows of region `own` times the transpose of the 32 rows of
// region `other`, over the head dim: 16 x BLOCK f32 into its part of coop_out.
fn block_scores(own: u32, other: u32, sg: u32) {
    for (var j = 0u; j < BLOCK / 16u; j++) {
        var s = zero_fragment();
        for (var d = 0u; d < HD / 16u; d++) {
            let a = fragment_a(staged_row(own, sg * 16u) + 16u * d, HD + 8u);
            let b = fragment_b_transposed(staged_row(other, 16u * j) + 16u * d, HD + 8u);
            s = multiply_add(a, b, s);
        }
        store_fragment(s, sg * 16u * BLOCK + 16u * j, BLOCK);
    }
}

// acc[d] += the 16 x BLOCK f16 values of probability set `which` times region
// `other`'s 32 rows, for the HD / 16 fragments of the head dim.
fn add_block_product(acc: ptr<function, array<Accumulator, MAX_FRAGMENTS>>, which: u32, other: u32, sg: u32) {
    for (var d = 0u; d < HD / 16u; d++) {
        for (var j = 0u; j < BLOCK / 16u; j++) {
            let a = fragment_a(probs_at(which, sg) + 16u * j, PS);
            let b = fragment_b(staged_row(other, 16u * j) + 16u * d, HD + 8u);
            (*acc)[d] = multiply_add(a, b, (*acc)[d]);
        }
    }
}

fn zero_fragments() -> array<Accumulator, MAX_FRAGMENTS> {
    return array<Accumulator, MAX_FRAGMENTS>(zero_fragment(), zero_fragment(), zero_fragment(),
        zero_fragment(), zero_fragment(), zero_fragment(), zero_fragment(), zero_fragment());
}

// Fragments d and d + 1 of acc into subgroup sg's part of coop_out (16 x 32), for its
// lanes to store as rows of the head dim's columns 16 d ... The caller brackets it with
// barriers.
fn fragments_out(acc: ptr<function, array<Accumulator, MAX_FRAGMENTS>>, d: u32, sg: u32) {
    store_fragment((*acc)[d], sg * 16u * BLOCK, BLOCK);
    if (d + 1u < HD / 16u) { store_fragment((*acc)[d + 1u], sg * 16u * BLOCK + 16u, BLOCK); }
}

// What a workgroup works on: its head (bh; p.bh or more where it has none), where the
// head's rows live, its first own row, and this invocation's subgroup and lane.
struct Work {
    head: u32,
    at: HeadLayout,
    row0: u32,
    sg: u32,
    lane: u32,
}

fn work_of(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> Work {
    let head = head_of(wid, nwg);
    begin_fragments(lid % SG);
    return Work(head, head_layout(head), wid.x * OWN, lid / SG, lid % SG);
}

// Subgroup w.sg's probabilities exp(scale s - lse) from its scores in coop_out, into
// its probability set 0 in f16, zero for columns past the token count: lse per own row
// (own_stats), or per column, the block's rows (block_stats: the dk/dv kernel's scores
// are transposed).
fn store_probabilities(w: Work, t0: u32, per_column: bool) {
    for (var e = w.lane; e < 16u * BLOCK; e += SG) {
        let r = e / BLOCK;
        let c = e % BLOCK;
        let lse = select(own_stats[w.sg * 16u + r].x, block_stats[c].x, per_column);
        let pr = exp(coop_out[w.sg * 16u * BLOCK + e] * p.scale - lse);
        coop_tiles[probs_at(0u, w.sg) + r * PS + c] = to_f16(select(pr, 0.0, t0 + c >= p.n));
    }
}

// The score gradients p (dp - delta), from the probabilities (set 0) and dp in
// coop_out, into set `which`; delta per row or per column as lse above.
fn store_score_gradients(w: Work, per_column: bool, which: u32) {
    for (var e = w.lane; e < 16u * BLOCK; e += SG) {
        let r = e / BLOCK;
        let c = e % BLOCK;
        let delta = select(own_stats[w.sg * 16u + r].y, block_stats[c].y, per_column);
        let pr = f32(coop_tiles[probs_at(0u, w.sg) + r * PS + c]);
        let ds = pr * (coop_out[w.sg * 16u * BLOCK + e] - delta);
        coop_tiles[probs_at(which, w.sg) + r * PS + c] = to_f16(ds);
    }
}

// The backward's block: probabilities from the scores of regions OWN_A and OTHER_A
// (set 0), then score gradients from those of OWN_B and OTHER_B, into set `which`;
// lse and delta per row or per column (store_probabilities).
fn block_gradients(w: Work, t0: u32, per_column: bool, which: u32) {
    block_scores(OWN_A, OTHER_A, w.sg);
    workgroupBarrier();
    store_probabilities(w, t0, per_column);
    workgroupBarrier();
    block_scores(OWN_B, OTHER_B, w.sg);
    workgroupBarrier();
    store_score_gradients(w, per_column, which);
}

// Row r's element c of the pair of fragments fragments_out passed on, as the head dim's
// column 16 d + c of own row row0 + 16 sg + r: (row, column), and whether it is a
// value to write (inside the tokens and the head dim).
fn out_slot(w: Work, d: u32, e: u32) -> vec3<u32> {
    let row = w.row0 + w.sg * 16u + e / BLOCK;
    let col = 16u * d + e % BLOCK;
    return vec3<u32>(row, col, u32(row < p.n && col < HD));
}

@compute @workgroup_size(SUBGROUPS * SG)
fn attention_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let w = work_of(wid, nwg, lid);
    if (w.head >= p.bh) { return; }
    stage_f_rows(OWN_A, 0u, w.row0, w.at, lid);
    for (var r = lid; r < OWN; r += SUBGROUPS * SG) { own_stats[r] = vec2<f32>(NEG, 0.0); }
    // First pass: each own row's running max and sum of exp over the keys.
    for (var t0 = 0u; t0 < p.n; t0 += BLOCK) {
        workgroupBarrier();
        stage_f_rows(OTHER_A, 1u, t0, w.at, lid);
        workgroupBarrier();
        block_scores(OWN_A, OTHER_A, w.sg);
        workgroupBarrier();
        let count = min(BLOCK, p.n - t0);
        for (var r = w.lane; r < 16u; r += SG) {
            let at_s = (w.sg * 16u + r) * BLOCK;
            var top = NEG;
            for (var c = 0u; c < count; c++) { top = max(top, coop_out[at_s + c] * p.scale); }
            let stats = own_stats[w.sg * 16u + r];
            let m = max(stats.x, top);
            var l = stats.y * exp(stats.x - m);
            for (var c = 0u; c < count; c++) { l += exp(coop_out[at_s + c] * p.scale - m); }
            own_stats[w.sg * 16u + r] = vec2<f32>(m, l);
        }
    }
    for (var r = w.lane; r < 16u; r += SG) {
        let stats = own_stats[w.sg * 16u + r];
        own_stats[w.sg * 16u + r].x = stats.x + log(stats.y);
    }
    // Second pass: out = sum over the keys of exp(s - lse) v.
    var o = zero_fragments();
    for (var t0 = 0u; t0 < p.n; t0 += BLOCK) {
        workgroupBarrier();
        stage_f_rows(OTHER_A, 1u, t0, w.at, lid);
        stage_f_rows(OTHER_B, 2u, t0, w.at, lid);
        workgroupBarrier();
        block_scores(OWN_A, OTHER_A, w.sg);
        workgroupBarrier();
        store_probabilities(w, t0, false);
        workgroupBarrier();
        add_block_product(&o, 0u, OTHER_B, w.sg);
    }
    for (var d = 0u; d < HD / 16u; d += 2u) {
        workgroupBarrier();
        fragments_out(&o, d, w.sg);
        workgroupBarrier();
        for (var e = w.lane; e < 16u * BLOCK; e += SG) {
            let at = out_slot(w, d, e);
            if (at.z == 1u) { f_out[out_at(w.at, at.x) + at.y] = coop_out[w.sg * 16u * BLOCK + e]; }
        }
    }
    for (var r = w.lane; r < 16u; r += SG) {
        let row = w.row0 + w.sg * 16u + r;
        if (row < p.n) { f_lse[w.head * p.n + row] = own_stats[w.sg * 16u + r].x; }
    }
}

// Rows t0 .. t0 + 32 of qkv part `part` into a region, from the forward's binding,
// zero past the token count.
fn stage_f_rows(region: u32, part: u32, t0: u32, at: HeadLayout, lid: u32) {
    for (var e = lid; e < 32u * HD / 2u; e += SUBGROUPS * SG) {
        let s = pair_slot(e);
        let i = qkv_at(at, part, t0 + s.x) + s.y;
        let v = select(vec2<f32>(0.0), unpack2x16float(f_qkv[i >> 1u]), t0 + s.x < p.n);
        put_pair(staged_row(region, s.x) + s.y, v);
    }
}

@compute @workgroup_size(SUBGROUPS * SG)
fn attention_backward_dq(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32) {
    let w = work_of(wid, nwg, lid);
    if (w.head >= p.bh) { return; }
    // Own q and dout rows, each row's lse and delta (written out for dk/dv).
    for (var e = lid; e < OWN * HD / 2u; e += SUBGROUPS * SG) {
        let s = pair_slot(e);
        let live = w.row0 + s.x < p.n;
        let i = qkv_at(w.at, 0u, w.row0 + s.x) + s.y;
        put_pair(staged_row(OWN_A, s.x) + s.y, select(vec2<f32>(0.0), unpack2x16float(q_qkv[i >> 1u]), live));
        let o = out_at(w.at, min(w.row0 + s.x, p.n - 1u)) + s.y;
        put_pair(staged_row(OWN_B, s.x) + s.y, select(vec2<f32>(0.0), vec2<f32>(q_dout[o], q_dout[o + 1u]), live));
    }
    for (var r = lid; r < OWN; r += SUBGROUPS * SG) {
        let row = min(w.row0 + r, p.n - 1u);
        var delta = 0.0;
        for (var c = 0u; c < HD; c++) { delta += q_dout[out_at(w.at, row) + c] * q_out[out_at(w.at, row) + c]; }
        own_stats[r] = vec2<f32>(q_lse[w.head * p.n + row], delta);
        if (w.row0 + r < p.n) { q_delta[w.head * p.n + row] = delta; }
    }
    var dq = zero_fragments();
    for (var t0 = 0u; t0 < p.n; t0 += BLOCK) {
        workgroupBarrier();
        for (var e = lid; e < BLOCK * HD / 2u; e += SUBGROUPS * SG) {
            let s = pair_slot(e);
            let live = t0 + s.x < p.n;
            let k = qkv_at(w.at, 1u, t0 + s.x) + s.y;
            let v = qkv_at(w.at, 2u, t0 + s.x) + s.y;
            put_pair(staged_row(OTHER_A, s.x) + s.y, select(vec2<f32>(0.0), unpack2x16float(q_qkv[k >> 1u]), live));
            put_pair(staged_row(OTHER_B, s.x) + s.y, select(vec2<f32>(0.0), unpack2x16float(q_qkv[v >> 1u]), live));
        }
        workgroupBarrier();
        // p = exp(scale q k^T - lse), then ds = p (dout v^T - delta) in its place.
        block_gradients(w, t0, false, 0u);
        workgroupBarrier();
        add_block_product(&dq, 0u, OTHER_A, w.sg);
    }
    for (var d = 0u; d < HD / 16u; d += 2u) {
        workgroupBarrier();
        fragments_out(&dq, d, w.sg);
        workgroupBarrier();
        for (var e = w.lane; e < 16u * BLOCK; e += SG) {
            let at = out_slot(w, d, e);
            if (at.z == 1u) {
                q_dqkv[qkv_at(w.at, 0u, at.x) + at.y] = coop_out[w.sg * 16u * BLOCK + e] * p.scale;
            }
        }
    }
}

@compute @workgroup_size(SUBGROUPS * SG)
fn attention_backward_dkv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                          @builtin(local_invocation_index) lid: u32) {
    let w = work_of(wid, nwg, lid);
    if (w.head >= p.bh) { return; }
    // Own k and v rows.
    for (var e = lid; e < OWN * HD / 2u; e += SUBGROUPS * SG) {
        let s = pair_slot(e);
        let live = w.row0 + s.x < p.n;
        let k = qkv_at(w.at, 1u, w.row0 + s.x) + s.y;
        let v = qkv_at(w.at, 2u, w.row0 + s.x) + s.y;
        put_pair(staged_row(OWN_A, s.x) + s.y, select(vec2<f32>(0.0), unpack2x16float(kv_qkv[k >> 1u]), live));
        put_pair(staged_row(OWN_B, s.x) + s.y, select(vec2<f32>(0.0), unpack2x16float(kv_qkv[v >> 1u]), live));
    }
    var dk = zero_fragments();
    var dv = zero_fragments();
    for (var t0 = 0u; t0 < p.n; t0 += BLOCK) {
        workgroupBarrier();
        // The block's q and dout rows, and their lse and delta.
        for (var e = lid; e < BLOCK * HD / 2u; e += SUBGROUPS * SG) {
            let s = pair_slot(e);
            let live = t0 + s.x < p.n;
            let q = qkv_at(w.at, 0u, t0 + s.x) + s.y;
            put_pair(staged_row(OTHER_A, s.x) + s.y, select(vec2<f32>(0.0), unpack2x16float(kv_qkv[q >> 1u]), live));
            let o = out_at(w.at, min(t0 + s.x, p.n - 1u)) + s.y;
            put_pair(staged_row(OTHER_B, s.x) + s.y, select(vec2<f32>(0.0), vec2<f32>(kv_dout[o], kv_dout[o + 1u]), live));
        }
        for (var r = lid; r < BLOCK; r += SUBGROUPS * SG) {
            let stat = w.head * p.n + min(t0 + r, p.n - 1u);
            block_stats[r] = vec2<f32>(kv_lse[stat], kv_delta[stat]);
        }
        workgroupBarrier();
        // Transposed: own key rows x the block's queries. p = exp(scale k q^T - lse),
        // then ds = p (v dout^T - delta).
        block_gradients(w, t0, true, 1u);
        workgroupBarrier();
        add_block_product(&dv, 0u, OTHER_B, w.sg);
        add_block_product(&dk, 1u, OTHER_A, w.sg);
    }
    for (var d = 0u; d < HD / 16u; d += 2u) {
        for (var part = 1u; part < 3u; part++) {
            workgroupBarrier();
            if (part == 1u) { fragments_out(&dk, d, w.sg); } else { fragments_out(&dv, d, w.sg); }
            workgroupBarrier();
            for (var e = w.lane; e < 16u * BLOCK; e += SG) {
                let at = out_slot(w, d, e);
                if (at.z == 1u) {
                    let g = coop_out[w.sg * 16u * BLOCK + e];
                    kv_dqkv[qkv_at(w.at, part, at.x) + at.y] = select(g, g * p.scale, part == 1u);
                }
            }
        }
    }
}
