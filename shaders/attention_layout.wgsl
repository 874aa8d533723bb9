// What the fused attention families share (prepended to each): the parameters,
// where a head's rows live, and how q, k and v are read. q, k and v come packed as the
// model's qkv projection gives them, [B, N, 3, H, HD] (parts 0, 1, 2 = q, k, v), and
// out and dout are [B, N, H, HD], so neither side needs a permute. Head bh = b H + h;
// lse and delta are [B H, N].

// The head dim is HD, so it is not here.
struct Params {
    n: u32,
    scale: f32,
    heads: u32,
    bh: u32,    // heads over the batch, B H
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

// The head bh a workgroup takes: the grid's y, folded over z where B H is more than a
// grid dimension holds (the workgroups past B H have none: bh is then p.bh or more).
fn head_of(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.y + wid.z * nwg.y;
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

// qkv, read by all three kernels (the forward's, dq's and dk/dv's binding, at 1, 10 and
// 20): f32, or f16 two to a word (QKV_F16) where the projection stored it so under mixed
// precision. Either way the kernels sum in f32 (the cooperative-matrix family, for an
// f16 qkv only, multiplies f16 values) and write out, dqkv, lse and delta in f32.
// attention_bindings.wgsl binds it as words for the tiled, blocked and
// cooperative-matrix families; the subgroup family binds it as pairs of words.
override QKV_F16: bool = false;
