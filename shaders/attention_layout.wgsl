// What the three fused attention families share (prepended to each): the parameters,
// where a head's rows live, and how q, k and v are read. q, k and v come packed as the
// model's qkv projection gives them, [B, N, 3, H, HD] (parts 0, 1, 2 = q, k, v), and
// out and dout are [B, N, H, HD], so neither side needs a permute. Head bh = b H + h;
// lse and delta are [B H, N].

// The head count B H is the grid's y and the head dim is HD, so neither is here.
struct Params {
    n: u32,
    scale: f32,
    heads: u32,
}

// The head dim as a pipeline constant set by the host, so the per-row loops have fixed
// trip counts and the row arrays can live in registers.
override HD: u32;

@group(0) @binding(0) var<uniform> p: Params;

// Where head bh's rows start in qkv and out (in elements); computed once per kernel so
// the per-row offsets below need no division.
struct HeadLayout {
    qkv: u32,
    out: u32,
}

fn head_layout(bh: u32) -> HeadLayout {
    let b = bh / p.heads;
    let h = bh % p.heads;
    return HeadLayout(b * p.n * 3u * p.heads * HD + h * HD, b * p.n * p.heads * HD + h * HD);
}

// Offset of row r of part `part` (0, 1, 2 = q, k, v) in qkv.
fn qkv_at(at: HeadLayout, part: u32, r: u32) -> u32 {
    return at.qkv + (r * 3u + part) * p.heads * HD;
}

// Offset of row r in out (and dout).
fn out_at(at: HeadLayout, r: u32) -> u32 {
    return at.out + r * p.heads * HD;
}

// qkv, read by all three kernels (the forward's, dq's and dk/dv's binding): f32, or f16
// two to a word (QKV_F16) where the projection stored it so under mixed precision.
// Either way the kernels compute in f32 and write out, dqkv, lse and delta in f32.
override QKV_F16: bool = false;

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
