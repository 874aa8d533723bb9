// Fused attention for CPU adapters whose subgroups are 8 lanes wide: the same three
// kernels and bindings as attention.wgsl, for head dims that are multiples of 4 (up
// to 128). It lives in its own file because it needs the subgroup feature;
// attention_layout.wgsl (prepended) says where the rows live.
//
// Each lane owns one row (a query row in the forward and dq kernels, a key row in the
// dk/dv kernel) and its accumulators, as vec4 chunks of the head dim. The other side
// is walked 8 rows at a time: chunk c of those 8 rows is read once per lane (lane t
// reads row t: two pairs of words in f32, one in f16), handed round with
// subgroupBroadcast, so a lane pays one chunk's loads instead of eight and the
// exponentials of the online softmax are taken once per block of 8. Two rows a lane,
// sharing each load and broadcast between them, ran 1.4x slower on lavapipe, and dq
// and dk/dv keeping the chunks they load for their second pass no faster
// (docs/results/2026-12-05-lavapipe-step-6.txt).

const CHUNKS: u32 = 32u;      // vec4 chunks of the largest head dim, 128
const NEG: f32 = -3.4e38;

// qkv, as pairs of words: two elements in f32, four in f16. On a CPU adapter each
// storage load walks the lanes one by one, so fewer, wider loads cost less: on lavapipe
// the f32 kernels ran in about 0.8 of their time against a word a load, the f16 ones in
// the same (vec4s of words were faster still in f32 but slower in f16).
@group(0) @binding(1) var<storage, read> f_qkv: array<vec2<u32>>;
@group(0) @binding(2) var<storage, read_write> f_out: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> f_lse: array<f32>;

@group(0) @binding(10) var<storage, read> q_qkv: array<vec2<u32>>;
@group(0) @binding(11) var<storage, read> q_out: array<vec4<f32>>;
@group(0) @binding(12) var<storage, read> q_dout: array<vec4<f32>>;
@group(0) @binding(13) var<storage, read> q_lse: array<f32>;
@group(0) @binding(14) var<storage, read_write> q_dqkv: array<vec4<f32>>;
@group(0) @binding(15) var<storage, read_write> q_delta: array<f32>;

@group(0) @binding(20) var<storage, read> kv_qkv: array<vec2<u32>>;
@group(0) @binding(21) var<storage, read> kv_dout: array<vec4<f32>>;
@group(0) @binding(22) var<storage, read> kv_lse: array<f32>;
@group(0) @binding(23) var<storage, read> kv_delta: array<f32>;
@group(0) @binding(24) var<storage, read_write> kv_dqkv: array<vec4<f32>>;

// Chunk c of qkv (elements 4c .. 4c + 3): two vec2s of words in f32, one in f16.
fn chunk_of(words: vec2<u32>) -> vec4<f32> {
    return vec4<f32>(unpack2x16float(words.x), unpack2x16float(words.y));
}

fn load4_f_qkv(c: u32) -> vec4<f32> {
    if (QKV_F16) { return chunk_of(f_qkv[c]); }
    return bitcast<vec4<f32>>(vec4<u32>(f_qkv[2u * c], f_qkv[2u * c + 1u]));
}
fn load4_q_qkv(c: u32) -> vec4<f32> {
    if (QKV_F16) { return chunk_of(q_qkv[c]); }
    return bitcast<vec4<f32>>(vec4<u32>(q_qkv[2u * c], q_qkv[2u * c + 1u]));
}
fn load4_kv_qkv(c: u32) -> vec4<f32> {
    if (QKV_F16) { return chunk_of(kv_qkv[c]); }
    return bitcast<vec4<f32>>(vec4<u32>(kv_qkv[2u * c], kv_qkv[2u * c + 1u]));
}

// The layout's row offsets in vec4s.
fn qkv_at4(at: HeadLayout, part: u32, r: u32) -> u32 {
    return qkv_at(at, part, r) / 4u;
}

fn out_at4(at: HeadLayout, r: u32) -> u32 {
    return out_at(at, r) / 4u;
}

// What each of the 8 lanes holds, to every lane.
fn share(x: vec4<f32>) -> array<vec4<f32>, 8> {
    return array<vec4<f32>, 8>(
        subgroupBroadcast(x, 0u), subgroupBroadcast(x, 1u),
        subgroupBroadcast(x, 2u), subgroupBroadcast(x, 3u),
        subgroupBroadcast(x, 4u), subgroupBroadcast(x, 5u),
        subgroupBroadcast(x, 6u), subgroupBroadcast(x, 7u));
}

fn share_scalar(x: f32) -> array<f32, 8> {
    return array<f32, 8>(
        subgroupBroadcast(x, 0u), subgroupBroadcast(x, 1u),
        subgroupBroadcast(x, 2u), subgroupBroadcast(x, 3u),
        subgroupBroadcast(x, 4u), subgroupBroadcast(x, 5u),
        subgroupBroadcast(x, 6u), subgroupBroadcast(x, 7u));
}

// Rows per workgroup, one per lane, set by the host (ops/attention.rs): a workgroup is
// ROWS / 8 subgroups of 8 lanes, over ROWS rows of one head.
override ROWS: u32;

fn my_row(wid: vec3<u32>, sg: u32, lane: u32) -> u32 {
    return wid.x * ROWS + sg * 8u + lane;
}

@compute @workgroup_size(ROWS)
fn attention_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(subgroup_id) sg: u32, @builtin(subgroup_invocation_id) lane: u32) {
    let head = head_of(wid, nwg);
    if (head >= p.bh) { return; }
    let at = head_layout(head);
    let row = my_row(wid, sg, lane);
    let r = min(row, p.n - 1u);
    let c4 = HD / 4u;
    var q: array<vec4<f32>, CHUNKS>;
    var acc: array<vec4<f32>, CHUNKS>;
    let own = qkv_at4(at, 0u, r);
    for (var c = 0u; c < c4; c++) { q[c] = load4_f_qkv(own + c) * p.scale; }
    var m = NEG;
    var l = 0.0;
    for (var j0 = 0u; j0 < p.n; j0 += 8u) {
        let mine = min(j0 + lane, p.n - 1u);
        let mine_k = qkv_at4(at, 1u, mine);
        let mine_v = qkv_at4(at, 2u, mine);
        var s = array<f32, 8>(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
        for (var c = 0u; c < c4; c++) {
            let k = share(load4_f_qkv(mine_k + c));
            for (var t = 0u; t < 8u; t++) { s[t] += dot(q[c], k[t]); }
        }
        var m_new = m;
        for (var t = 0u; t < 8u; t++) {
            if (j0 + t >= p.n) { s[t] = NEG; }
            m_new = max(m_new, s[t]);
        }
        let corr = exp(m - m_new);
        l *= corr;
        for (var t = 0u; t < 8u; t++) {
            s[t] = exp(s[t] - m_new);
            l += s[t];
        }
        for (var c = 0u; c < c4; c++) {
            let v = share(load4_f_qkv(mine_v + c));
            var a = acc[c] * corr;
            for (var t = 0u; t < 8u; t++) { a += s[t] * v[t]; }
            acc[c] = a;
        }
        m = m_new;
    }
    if (row < p.n) {
        for (var c = 0u; c < c4; c++) { f_out[out_at4(at, row) + c] = acc[c] / l; }
        f_lse[head * p.n + row] = m + log(l);
    }
}

@compute @workgroup_size(ROWS)
fn attention_backward_dq(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(subgroup_id) sg: u32, @builtin(subgroup_invocation_id) lane: u32) {
    let head = head_of(wid, nwg);
    if (head >= p.bh) { return; }
    let at = head_layout(head);
    let row = my_row(wid, sg, lane);
    let r = min(row, p.n - 1u);
    let c4 = HD / 4u;
    var q: array<vec4<f32>, CHUNKS>;
    var dout: array<vec4<f32>, CHUNKS>;
    var dq: array<vec4<f32>, CHUNKS>;
    var delta = 0.0;
    let own = qkv_at4(at, 0u, r);
    let own_out = out_at4(at, r);
    for (var c = 0u; c < c4; c++) {
        q[c] = load4_q_qkv(own + c) * p.scale;
        dout[c] = q_dout[own_out + c];
        delta += dot(dout[c], q_out[own_out + c]);
    }
    let lse = q_lse[head * p.n + r];
    for (var j0 = 0u; j0 < p.n; j0 += 8u) {
        let mine = min(j0 + lane, p.n - 1u);
        let mine_k = qkv_at4(at, 1u, mine);
        let mine_v = qkv_at4(at, 2u, mine);
        var s = array<f32, 8>(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
        var dp = array<f32, 8>(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
        for (var c = 0u; c < c4; c++) {
            let k = share(load4_q_qkv(mine_k + c));
            let v = share(load4_q_qkv(mine_v + c));
            for (var t = 0u; t < 8u; t++) {
                s[t] += dot(q[c], k[t]);
                dp[t] += dot(dout[c], v[t]);
            }
        }
        // ds_t = p_t (dp_t - delta), zero past the last key.
        for (var t = 0u; t < 8u; t++) {
            s[t] = select(exp(s[t] - lse) * (dp[t] - delta), 0.0, j0 + t >= p.n);
        }
        for (var c = 0u; c < c4; c++) {
            let k = share(load4_q_qkv(mine_k + c));
            var d = dq[c];
            for (var t = 0u; t < 8u; t++) { d += s[t] * k[t]; }
            dq[c] = d;
        }
    }
    if (row < p.n) {
        for (var c = 0u; c < c4; c++) { q_dqkv[own + c] = dq[c] * p.scale; }
        q_delta[head * p.n + row] = delta;
    }
}

@compute @workgroup_size(ROWS)
fn attention_backward_dkv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                          @builtin(subgroup_id) sg: u32, @builtin(subgroup_invocation_id) lane: u32) {
    let head = head_of(wid, nwg);
    if (head >= p.bh) { return; }
    let at = head_layout(head);
    let row = my_row(wid, sg, lane);
    let r = min(row, p.n - 1u);
    let c4 = HD / 4u;
    var k: array<vec4<f32>, CHUNKS>;
    var v: array<vec4<f32>, CHUNKS>;
    var dk: array<vec4<f32>, CHUNKS>;
    var dv: array<vec4<f32>, CHUNKS>;
    let own_k = qkv_at4(at, 1u, r);
    let own_v = qkv_at4(at, 2u, r);
    for (var c = 0u; c < c4; c++) {
        k[c] = load4_kv_qkv(own_k + c) * p.scale;
        v[c] = load4_kv_qkv(own_v + c);
    }
    for (var i0 = 0u; i0 < p.n; i0 += 8u) {
        let i_mine = min(i0 + lane, p.n - 1u);
        let mine_q = qkv_at4(at, 0u, i_mine);
        let mine_out = out_at4(at, i_mine);
        let lse = share_scalar(kv_lse[head * p.n + i_mine]);
        let delta = share_scalar(kv_delta[head * p.n + i_mine]);
        var s = array<f32, 8>(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
        var dp = array<f32, 8>(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
        for (var c = 0u; c < c4; c++) {
            let q = share(load4_kv_qkv(mine_q + c));
            let g = share(kv_dout[mine_out + c]);
            for (var t = 0u; t < 8u; t++) {
                s[t] += dot(k[c], q[t]);
                dp[t] += dot(v[c], g[t]);
            }
        }
        // s becomes p_t and dp becomes ds_t, both zero past the last query.
        for (var t = 0u; t < 8u; t++) {
            let pr = select(exp(s[t] - lse[t]), 0.0, i0 + t >= p.n);
            s[t] = pr;
            dp[t] = pr * (dp[t] - delta[t]);
        }
        for (var c = 0u; c < c4; c++) {
            let q = share(load4_kv_qkv(mine_q + c));
            let g = share(kv_dout[mine_out + c]);
            var a = dk[c];
            var b = dv[c];
            for (var t = 0u; t < 8u; t++) {
                a += dp[t] * q[t];
                b += s[t] * g[t];
            }
            dk[c] = a;
            dv[c] = b;
        }
    }
    if (row < p.n) {
        for (var c = 0u; c < c4; c++) {
            kv_dqkv[own_k + c] = dk[c] * p.scale;
            kv_dqkv[own_v + c] = dv[c];
        }
    }
}
