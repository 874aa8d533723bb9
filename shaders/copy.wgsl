// Block copies between tensors viewed as [outer, rows, inner] with different `rows`
// along one axis: the parts of concat (copy a whole source into a slice of the
// destination) and of narrow (copy a slice of the source into a whole destination).
// One thread per copied element.

struct Params {
    n: u32,           // outer * len * inner: elements copied
    len_inner: u32,   // len * inner
    src_row: u32,     // src rows * inner
    dst_row: u32,     // dst rows * inner
    src_offset: u32,  // first src row * inner
    dst_offset: u32,  // first dst row * inner
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(256)
fn copy_block(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * 256u + lid;
    if (i >= p.n) { return; }
    let o = i / p.len_inner;
    let r = i % p.len_inner;
    dst[o * p.dst_row + p.dst_offset + r] = src[o * p.src_row + p.src_offset + r];
}
