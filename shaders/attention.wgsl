// Fused scaled-dot-product attention, flash style: softmax(q k^T * scale) v without
// ever writing the tokens x tokens score matrix. attention_layout.wgsl (prepended)
// says where the rows live.
//
// Each invocation owns one row (a query row in the forward and dq kernels, a key row in
// the dk/dv kernel) and keeps it and its accumulators in private memory; a workgroup of
// ROWS rows walks over the other side's rows in tiles of TILE rows staged in workgroup
// memory.
//
// forward: online softmax over key tiles; writes out and the row log-sum-exp `lse`.
// backward (from lse, with delta_i = dout_i . out_i):
//   p_ij = exp(scale q_i.k_j - lse_i), ds_ij = p_ij (dout_i.v_j - delta_i),
//   dq_i = scale sum_j ds_ij k_j,  dk_j = scale sum_i ds_ij q_i,  dv_j = sum_i p_ij dout_i.

// Set by the host (ops/attention.rs): rows per workgroup (one per invocation, and at
// least TILE, so a tile's rows are loaded one per invocation), the floats of a staged
// tile, and the other side's rows per tile (TILE * HD <= TILE_FLOATS, picked per HD).
override ROWS: u32;
override TILE_FLOATS: u32;
override TILE: u32;

// The kernels' bindings are attention_bindings.wgsl's.

// Two tiles of TILE rows x HD floats, and a tile's saved row statistics.
var<workgroup> tile_a: array<f32, TILE_FLOATS>;
var<workgroup> tile_b: array<f32, TILE_FLOATS>;
var<workgroup> tile_s: array<vec2<f32>, TILE>;

@compute @workgroup_size(ROWS)
fn attention_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let head = head_of(wid, nwg);
    if (head >= p.bh) { return; }
    let at = head_layout(head);
    let row = wid.x * ROWS + lid;
    let live = row < p.n;
    var q: array<f32, 128>;
    var acc: array<f32, 128>;
    let own = qkv_at(at, 0u, min(row, p.n - 1u));
    for (var d = 0u; d < HD; d++) {
        q[d] = load_f_qkv(own + d) * p.scale;
        acc[d] = 0.0;
    }
    var m = -3.4e38;
    var l = 0.0;
    for (var t0 = 0u; t0 < p.n; t0 += TILE) {
        let count = min(TILE, p.n - t0);
        workgroupBarrier();
        for (var e = lid; e < count * HD; e += ROWS) {
            tile_a[e] = load_f_qkv(qkv_at(at, 1u, t0 + e / HD) + e % HD);
            tile_b[e] = load_f_qkv(qkv_at(at, 2u, t0 + e / HD) + e % HD);
        }
        workgroupBarrier();
        for (var j = 0u; j < count; j++) {
            var s = 0.0;
            for (var d = 0u; d < HD; d++) { s += q[d] * tile_a[j * HD + d]; }
            let m_new = max(m, s);
            let corr = exp(m - m_new);
            let w = exp(s - m_new);
            l = l * corr + w;
            for (var d = 0u; d < HD; d++) { acc[d] = acc[d] * corr + w * tile_b[j * HD + d]; }
            m = m_new;
        }
    }
    if (live) {
        let inv = 1.0 / l;
        for (var d = 0u; d < HD; d++) { f_out[out_at(at, row) + d] = acc[d] * inv; }
        f_lse[head * p.n + row] = m + log(l);
    }
}

@compute @workgroup_size(ROWS)
fn attention_backward_dq(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32) {
    let head = head_of(wid, nwg);
    if (head >= p.bh) { return; }
    let at = head_layout(head);
    let row = wid.x * ROWS + lid;
    let live = row < p.n;
    let r = min(row, p.n - 1u);
    var q: array<f32, 128>;
    var dout: array<f32, 128>;
    var dq: array<f32, 128>;
    var delta = 0.0;
    let own = qkv_at(at, 0u, r);
    let own_out = out_at(at, r);
    for (var d = 0u; d < HD; d++) {
        q[d] = load_q_qkv(own + d) * p.scale;
        dout[d] = q_dout[own_out + d];
        delta += dout[d] * q_out[own_out + d];
        dq[d] = 0.0;
    }
    let lse = q_lse[head * p.n + r];
    for (var t0 = 0u; t0 < p.n; t0 += TILE) {
        let count = min(TILE, p.n - t0);
        workgroupBarrier();
        for (var e = lid; e < count * HD; e += ROWS) {
            tile_a[e] = load_q_qkv(qkv_at(at, 1u, t0 + e / HD) + e % HD);
            tile_b[e] = load_q_qkv(qkv_at(at, 2u, t0 + e / HD) + e % HD);
        }
        workgroupBarrier();
        for (var j = 0u; j < count; j++) {
            var s = 0.0;
            var dp = 0.0;
            for (var d = 0u; d < HD; d++) {
                s += q[d] * tile_a[j * HD + d];
                dp += dout[d] * tile_b[j * HD + d];
            }
            let ds = exp(s - lse) * (dp - delta);
            for (var d = 0u; d < HD; d++) { dq[d] += ds * tile_a[j * HD + d]; }
        }
    }
    if (live) {
        for (var d = 0u; d < HD; d++) { q_dqkv[own + d] = dq[d] * p.scale; }
        q_delta[head * p.n + row] = delta;
    }
}

@compute @workgroup_size(ROWS)
fn attention_backward_dkv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                          @builtin(local_invocation_index) lid: u32) {
    let head = head_of(wid, nwg);
    if (head >= p.bh) { return; }
    let at = head_layout(head);
    let row = wid.x * ROWS + lid;
    let live = row < p.n;
    let r = min(row, p.n - 1u);
    var k: array<f32, 128>;
    var v: array<f32, 128>;
    var dk: array<f32, 128>;
    var dv: array<f32, 128>;
    let own_k = qkv_at(at, 1u, r);
    let own_v = qkv_at(at, 2u, r);
    for (var d = 0u; d < HD; d++) {
        k[d] = load_kv_qkv(own_k + d) * p.scale;
        v[d] = load_kv_qkv(own_v + d);
        dk[d] = 0.0;
        dv[d] = 0.0;
    }
    for (var t0 = 0u; t0 < p.n; t0 += TILE) {
        let count = min(TILE, p.n - t0);
        workgroupBarrier();
        for (var e = lid; e < count * HD; e += ROWS) {
            tile_a[e] = load_kv_qkv(qkv_at(at, 0u, t0 + e / HD) + e % HD);
            tile_b[e] = kv_dout[out_at(at, t0 + e / HD) + e % HD];
        }
        if (lid < count) {
            tile_s[lid] = vec2<f32>(kv_lse[head * p.n + t0 + lid], kv_delta[head * p.n + t0 + lid]);
        }
        workgroupBarrier();
        for (var i = 0u; i < count; i++) {
            var s = 0.0;
            var dp = 0.0;
            for (var d = 0u; d < HD; d++) {
                s += k[d] * tile_a[i * HD + d];
                dp += v[d] * tile_b[i * HD + d];
            }
            let pr = exp(s - tile_s[i].x);
            let ds = pr * (dp - tile_s[i].y);
            for (var d = 0u; d < HD; d++) {
                dv[d] += pr * tile_b[i * HD + d];
                dk[d] += ds * tile_a[i * HD + d];
            }
        }
    }
    if (live) {
        for (var d = 0u; d < HD; d++) {
            kv_dqkv[own_k + d] = dk[d] * p.scale;
            kv_dqkv[own_v + d] = dv[d];
        }
    }
}
