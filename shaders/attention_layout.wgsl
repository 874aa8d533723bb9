// What the three fused attention families share (prepended to each): the parameters
// and where a head's rows live. q, k and v come packed as the model's qkv projection
// gives them, [B, N, 3, H, HD] (parts 0, 1, 2 = q, k, v), and out and dout are
// [B, N, H, HD], so neither side needs a permute. Head bh = b H + h; lse and delta are
// [B H, N].

struct Params {
    bh: u32,
    n: u32,
    hd: u32,
    scale: f32,
    heads: u32,
}

// The head dim as a pipeline constant, so the per-row loops have fixed trip counts and
// the row arrays can live in registers.
override HD: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;

// Offset (in floats) of row r of head bh's part `part` in qkv.
fn qkv_row(part: u32, bh: u32, r: u32) -> u32 {
    let b = bh / p.heads;
    let h = bh % p.heads;
    return ((b * p.n + r) * 3u + part) * p.heads * HD + h * HD;
}

// Offset (in floats) of row r of head bh in out (and dout).
fn out_row(bh: u32, r: u32) -> u32 {
    let b = bh / p.heads;
    let h = bh % p.heads;
    return ((b * p.n + r) * p.heads + h) * HD;
}
