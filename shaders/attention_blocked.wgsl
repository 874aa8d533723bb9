// Fused attention for GPUs: the same three kernels and bindings as attention.wgsl, for
// head dims that are multiples of 8 (up to 128); attention_layout.wgsl (prepended)
// says where the rows live.
//
// A workgroup of 64 invocations (8 x 8) owns 32 rows (query rows in the forward and dq
// kernels, key rows in the dk/dv kernel) and walks the other side in tiles of 32 rows.
// Each tile is two small products, done like a register-blocked matmul:
//   scores: the 32 x 32 tile, 4 x 4 per invocation (own rows ty*4.., other rows tx*4..),
//           accumulated over the head dim from 8-dim chunks of both operands staged
//           transposed in workgroup memory;
//   rows:   the probabilities (or score gradients) go to workgroup memory, and each
//           invocation adds them times the other side's rows into its 4 own rows x
//           HD/8 head-dim columns (tx, tx+8, ..).
// Accumulators are vec4s across an invocation's 4 own rows, so one tile of
// probabilities stored transposed (other row j, own rows ty*4..+3) is one vec4 read.
// Rows past the token count are read clamped (finite) and weighted by zero.

// Own rows per workgroup, and other rows per tile: set by the host (ops/attention.rs)
// to the 32 the kernels are written for (8 x 8 invocations of 4 x 4).
override ROWS: u32;
const COLS: u32 = 16u;      // head-dim columns per invocation at the largest head dim
const NEG: f32 = -3.4e38;

// The kernels' bindings are attention_bindings.wgsl's.

// Up to four score operands, 8 dims x 32 rows each, transposed (4 KiB); also the
// scratch of the row reductions.
var<workgroup> stage: array<vec4<f32>, 256>;
// A tile's probabilities (or, in dq, score gradients), transposed (4 KiB).
var<workgroup> probs: array<vec4<f32>, 256>;
// The dk/dv kernel's score gradients, transposed (4 KiB).
var<workgroup> grads: array<vec4<f32>, 256>;
// Other-side rows for the row products (8 KiB).
var<workgroup> rows: array<f32, 2048>;

// Element (dim dd, row r) of staged operand o is component r % 4 of this vec4 slot.
// The XOR spreads the 8 invocations that store one row's 8 dims over 8 banks.
fn operand_slot(o: u32, dd: u32, r4: u32) -> u32 {
    return o * 64u + dd * 8u + (r4 ^ dd);
}

// Other row j's probabilities for own rows 4 * r4 .. 4 * r4 + 3; the XOR spreads the 8
// invocations of one ty that store a tile's columns.
fn prob_slot(j: u32, r4: u32) -> u32 {
    return j * 8u + (r4 ^ ((j >> 2u) & 7u));
}

// The sum (or max) of the 8 invocations of one ty's vec4s, through `stage`.
fn row_sum(x: vec4<f32>, tx: u32, ty: u32) -> vec4<f32> {
    workgroupBarrier();
    stage[ty * 8u + tx] = x;
    workgroupBarrier();
    var s = vec4<f32>(0.0);
    for (var t = 0u; t < 8u; t++) { s += stage[ty * 8u + t]; }
    return s;
}

fn row_max(x: vec4<f32>, tx: u32, ty: u32) -> vec4<f32> {
    workgroupBarrier();
    stage[ty * 8u + tx] = x;
    workgroupBarrier();
    var m = stage[ty * 8u];
    for (var t = 1u; t < 8u; t++) { m = max(m, stage[ty * 8u + t]); }
    return m;
}

// s[c] += staged operand a (own rows ty*4..+3) times staged operand b (other row
// tx*4+c), over the 8 staged dims.
fn add_scores(s: ptr<function, array<vec4<f32>, 4>>, a: u32, b: u32, tx: u32, ty: u32) {
    for (var dd = 0u; dd < 8u; dd++) {
        let x = stage[operand_slot(a, dd, ty)];
        let y = stage[operand_slot(b, dd, tx)];
        for (var c = 0u; c < 4u; c++) { (*s)[c] += x * y[c]; }
    }
}

// Other rows staged per chunk of the row products, from `floats` of `rows`.
fn rows_per_chunk(floats: u32) -> u32 {
    return min(ROWS, floats / HD);
}

@compute @workgroup_size(64)
fn attention_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let tx = lid % 8u;
    let ty = lid / 8u;
    let row0 = wid.x * ROWS;
    let head = head_of(wid, nwg);
    if (head >= p.bh) { return; }
    let at = head_layout(head);
    let last = p.n - 1u;
    let vr = rows_per_chunk(2048u);
    var acc: array<vec4<f32>, COLS>;
    var m = vec4<f32>(NEG);
    var l = vec4<f32>(0.0);
    for (var t0 = 0u; t0 < p.n; t0 += ROWS) {
        var s: array<vec4<f32>, 4>;
        for (var d0 = 0u; d0 < HD; d0 += 8u) {
            workgroupBarrier();
            for (var e = lid; e < 256u; e += 64u) {
                let r = e >> 3u;
                let dd = e & 7u;
                stage[operand_slot(0u, dd, r >> 2u)][r & 3u] = load_f_qkv(qkv_at(at, 0u, min(row0 + r, last)) + d0 + dd);
                stage[operand_slot(1u, dd, r >> 2u)][r & 3u] = load_f_qkv(qkv_at(at, 1u, min(t0 + r, last)) + d0 + dd);
            }
            workgroupBarrier();
            add_scores(&s, 0u, 1u, tx, ty);
        }
        var tile_max = vec4<f32>(NEG);
        for (var c = 0u; c < 4u; c++) {
            s[c] = select(s[c] * p.scale, vec4<f32>(NEG), t0 + tx * 4u + c >= p.n);
            tile_max = max(tile_max, s[c]);
        }
        let m_new = max(m, row_max(tile_max, tx, ty));
        let corr = exp(m - m_new);
        l *= corr;
        for (var i = 0u; i < HD / 8u; i++) { acc[i] *= corr; }
        m = m_new;
        for (var c = 0u; c < 4u; c++) {
            let pr = exp(s[c] - m);
            l += pr;
            probs[prob_slot(tx * 4u + c, ty)] = pr;
        }
        let count = min(ROWS, p.n - t0);
        for (var j0 = 0u; j0 < count; j0 += vr) {
            let jn = min(vr, count - j0);
            workgroupBarrier();
            for (var e = lid; e < jn * HD; e += 64u) {
                rows[e] = load_f_qkv(qkv_at(at, 2u, t0 + j0 + e / HD) + e % HD);
            }
            workgroupBarrier();
            for (var j = 0u; j < jn; j++) {
                let pr = probs[prob_slot(j0 + j, ty)];
                for (var i = 0u; i < HD / 8u; i++) { acc[i] += pr * rows[j * HD + tx + 8u * i]; }
            }
        }
    }
    let total = row_sum(l, tx, ty);
    for (var a = 0u; a < 4u; a++) {
        let row = row0 + ty * 4u + a;
        if (row < p.n) {
            for (var i = 0u; i < HD / 8u; i++) { f_out[out_at(at, row) + tx + 8u * i] = acc[i][a] / total[a]; }
            if (tx == 0u) { f_lse[head * p.n + row] = m[a] + log(total[a]); }
        }
    }
}

@compute @workgroup_size(64)
fn attention_backward_dq(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32) {
    let tx = lid % 8u;
    let ty = lid / 8u;
    let row0 = wid.x * ROWS;
    let head = head_of(wid, nwg);
    if (head >= p.bh) { return; }
    let at = head_layout(head);
    let last = p.n - 1u;
    let vr = rows_per_chunk(2048u);
    var lse: vec4<f32>;
    var dot = vec4<f32>(0.0);
    for (var a = 0u; a < 4u; a++) {
        let r = min(row0 + ty * 4u + a, last);
        lse[a] = q_lse[head * p.n + r];
        for (var i = 0u; i < HD / 8u; i++) {
            let e = out_at(at, r) + tx + 8u * i;
            dot[a] += q_dout[e] * q_out[e];
        }
    }
    let delta = row_sum(dot, tx, ty);
    var dq: array<vec4<f32>, COLS>;
    for (var t0 = 0u; t0 < p.n; t0 += ROWS) {
        var s: array<vec4<f32>, 4>;
        var dp: array<vec4<f32>, 4>;
        for (var d0 = 0u; d0 < HD; d0 += 8u) {
            workgroupBarrier();
            for (var e = lid; e < 256u; e += 64u) {
                let r = e >> 3u;
                let dd = e & 7u;
                let own = min(row0 + r, last);
                let other = min(t0 + r, last);
                stage[operand_slot(0u, dd, r >> 2u)][r & 3u] = load_q_qkv(qkv_at(at, 0u, own) + d0 + dd);
                stage[operand_slot(1u, dd, r >> 2u)][r & 3u] = load_q_qkv(qkv_at(at, 1u, other) + d0 + dd);
                stage[operand_slot(2u, dd, r >> 2u)][r & 3u] = q_dout[out_at(at, own) + d0 + dd];
                stage[operand_slot(3u, dd, r >> 2u)][r & 3u] = load_q_qkv(qkv_at(at, 2u, other) + d0 + dd);
            }
            workgroupBarrier();
            add_scores(&s, 0u, 1u, tx, ty);
            add_scores(&dp, 2u, 3u, tx, ty);
        }
        for (var c = 0u; c < 4u; c++) {
            let ds = exp(s[c] * p.scale - lse) * (dp[c] - delta);
            probs[prob_slot(tx * 4u + c, ty)] = select(ds, vec4<f32>(0.0), t0 + tx * 4u + c >= p.n);
        }
        let count = min(ROWS, p.n - t0);
        for (var j0 = 0u; j0 < count; j0 += vr) {
            let jn = min(vr, count - j0);
            workgroupBarrier();
            for (var e = lid; e < jn * HD; e += 64u) {
                rows[e] = load_q_qkv(qkv_at(at, 1u, t0 + j0 + e / HD) + e % HD);
            }
            workgroupBarrier();
            for (var j = 0u; j < jn; j++) {
                let ds = probs[prob_slot(j0 + j, ty)];
                for (var i = 0u; i < HD / 8u; i++) { dq[i] += ds * rows[j * HD + tx + 8u * i]; }
            }
        }
    }
    for (var a = 0u; a < 4u; a++) {
        let row = row0 + ty * 4u + a;
        if (row < p.n) {
            for (var i = 0u; i < HD / 8u; i++) { q_dqkv[qkv_at(at, 0u, row) + tx + 8u * i] = dq[i][a] * p.scale; }
            if (tx == 0u) { q_delta[head * p.n + row] = delta[a]; }
        }
    }
}

@compute @workgroup_size(64)
fn attention_backward_dkv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                          @builtin(local_invocation_index) lid: u32) {
    let tx = lid % 8u;
    let ty = lid / 8u;
    let row0 = wid.x * ROWS;
    let head = head_of(wid, nwg);
    if (head >= p.bh) { return; }
    let at = head_layout(head);
    let last = p.n - 1u;
    // Query rows and dout rows share `rows`, half each.
    let vr = rows_per_chunk(1024u);
    var dk: array<vec4<f32>, COLS>;
    var dv: array<vec4<f32>, COLS>;
    for (var t0 = 0u; t0 < p.n; t0 += ROWS) {
        // Transposed tiles: own key rows x query columns.
        var s: array<vec4<f32>, 4>;
        var dp: array<vec4<f32>, 4>;
        for (var d0 = 0u; d0 < HD; d0 += 8u) {
            workgroupBarrier();
            for (var e = lid; e < 256u; e += 64u) {
                let r = e >> 3u;
                let dd = e & 7u;
                let own = min(row0 + r, last);
                let other = min(t0 + r, last);
                stage[operand_slot(0u, dd, r >> 2u)][r & 3u] = load_kv_qkv(qkv_at(at, 1u, own) + d0 + dd);
                stage[operand_slot(1u, dd, r >> 2u)][r & 3u] = load_kv_qkv(qkv_at(at, 0u, other) + d0 + dd);
                stage[operand_slot(2u, dd, r >> 2u)][r & 3u] = load_kv_qkv(qkv_at(at, 2u, own) + d0 + dd);
                stage[operand_slot(3u, dd, r >> 2u)][r & 3u] = kv_dout[out_at(at, other) + d0 + dd];
            }
            workgroupBarrier();
            add_scores(&s, 0u, 1u, tx, ty);
            add_scores(&dp, 2u, 3u, tx, ty);
        }
        for (var c = 0u; c < 4u; c++) {
            let query = t0 + tx * 4u + c;
            let stat = head * p.n + min(query, last);
            let dead = query >= p.n;
            let pr = exp(s[c] * p.scale - kv_lse[stat]);
            probs[prob_slot(tx * 4u + c, ty)] = select(pr, vec4<f32>(0.0), dead);
            grads[prob_slot(tx * 4u + c, ty)] = select(pr * (dp[c] - kv_delta[stat]), vec4<f32>(0.0), dead);
        }
        let count = min(ROWS, p.n - t0);
        for (var j0 = 0u; j0 < count; j0 += vr) {
            let jn = min(vr, count - j0);
            workgroupBarrier();
            for (var e = lid; e < jn * HD; e += 64u) {
                let j = t0 + j0 + e / HD;
                rows[e] = load_kv_qkv(qkv_at(at, 0u, j) + e % HD);
                rows[1024u + e] = kv_dout[out_at(at, j) + e % HD];
            }
            workgroupBarrier();
            for (var j = 0u; j < jn; j++) {
                let pr = probs[prob_slot(j0 + j, ty)];
                let ds = grads[prob_slot(j0 + j, ty)];
                for (var i = 0u; i < HD / 8u; i++) {
                    dv[i] += pr * rows[1024u + j * HD + tx + 8u * i];
                    dk[i] += ds * rows[j * HD + tx + 8u * i];
                }
            }
        }
    }
    for (var a = 0u; a < 4u; a++) {
        let row = row0 + ty * 4u + a;
        if (row < p.n) {
            for (var i = 0u; i < HD / 8u; i++) {
                kv_dqkv[qkv_at(at, 1u, row) + tx + 8u * i] = dk[i][a] * p.scale;
                kv_dqkv[qkv_at(at, 2u, row) + tx + 8u * i] = dv[i][a];
            }
        }
    }
}
