// qkv as words, for the fused families that read it element by element (attention.wgsl
// and attention_blocked.wgsl) or a pair of halves at a time (attention_coop.wgsl): each
// has attention_layout.wgsl and this file prepended.

@group(0) @binding(1) var<storage, read> f_qkv: array<u32>;
@group(0) @binding(10) var<storage, read> q_qkv: array<u32>;
@group(0) @binding(20) var<storage, read> kv_qkv: array<u32>;

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
