// Block copies between tensors viewed as [outer, rows, inner] with different `rows`
// along one axis: the parts of concat (copy a whole source into a slice of the
// destination) and of narrow (copy a slice of the source into a whole destination).
// One thread per copied element; `copy_block_vec4` moves four at a time when `inner`
// is a multiple of 4 (the host gives every size in vec4 units).

struct Params {
    n: u32,           // outer * len * inner: elements copied
    len_inner: u32,   // len * inner
    src_row: u32,     // src rows * inner
    dst_row: u32,     // dst rows * inner
    src_offset: u32,  // first src row * inner
    dst_offset: u32,  // first dst row * inner
}

// Invocations per workgroup, one element (or vec4) each; set by the host.
override WG: u32;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

// Where copied element i comes from and goes to.
fn src_index(i: u32) -> u32 { return (i / p.len_inner) * p.src_row + p.src_offset + i % p.len_inner; }
fn dst_index(i: u32) -> u32 { return (i / p.len_inner) * p.dst_row + p.dst_offset + i % p.len_inner; }

@compute @workgroup_size(WG)
fn copy_block(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * WG + lid;
    if (i < p.n) { dst[dst_index(i)] = src[src_index(i)]; }
}

@group(0) @binding(3) var<storage, read> src4: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> dst4: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn copy_block_vec4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * WG + lid;
    if (i < p.n) { dst4[dst_index(i)] = src4[src_index(i)]; }
}
