// The bindings of the fused families that read qkv as words, element by element
// (attention.wgsl, attention_blocked.wgsl) or a pair of halves at a time
// (attention_coop.wgsl), and everything else as f32: each has attention_layout.wgsl
// and this file prepended. The forward's bindings start at 1, dq's at 10 and dk/dv's at
// 20 (ops/attention.rs), so that the three kernels of one module never share one.

// forward: qkv -> out, lse
@group(0) @binding(1) var<storage, read> f_qkv: array<u32>;
@group(0) @binding(2) var<storage, read_write> f_out: array<f32>;
@group(0) @binding(3) var<storage, read_write> f_lse: array<f32>;

// backward, dq: qkv, out, dout, lse -> dqkv (the q part), delta
@group(0) @binding(10) var<storage, read> q_qkv: array<u32>;
@group(0) @binding(11) var<storage, read> q_out: array<f32>;
@group(0) @binding(12) var<storage, read> q_dout: array<f32>;
@group(0) @binding(13) var<storage, read> q_lse: array<f32>;
@group(0) @binding(14) var<storage, read_write> q_dqkv: array<f32>;
@group(0) @binding(15) var<storage, read_write> q_delta: array<f32>;

// backward, dk and dv: qkv, dout, lse, delta -> dqkv (the k and v parts)
@group(0) @binding(20) var<storage, read> kv_qkv: array<u32>;
@group(0) @binding(21) var<storage, read> kv_dout: array<f32>;
@group(0) @binding(22) var<storage, read> kv_lse: array<f32>;
@group(0) @binding(23) var<storage, read> kv_delta: array<f32>;
@group(0) @binding(24) var<storage, read_write> kv_dqkv: array<f32>;

// The word that holds element i, and element i from it.
fn qkv_word(i: u32) -> u32 {
    return select(i, i >> 1u, QKV_F16);
}

fn qkv_element(word: u32, i: u32) -> f32 {
    if (QKV_F16) { return unpack2x16float(word)[i & 1u]; }
    return bitcast<f32>(word);
}

// Element i of qkv, from each kernel's binding.
fn load_f_qkv(i: u32) -> f32 { return qkv_element(f_qkv[qkv_word(i)], i); }
fn load_q_qkv(i: u32) -> f32 { return qkv_element(q_qkv[qkv_word(i)], i); }
fn load_kv_qkv(i: u32) -> f32 { return qkv_element(kv_qkv[qkv_word(i)], i); }
