// Layout changes as explicit copies (tensors are always contiguous).
//
// permute: out = x.permute(perm) for rank <= 6. `out_dims` are the output's sizes and
// `in_strides` the input strides taken in output order (stride of x's dim perm[i]);
// unused leading dims have size 1. `permute_vec4` is the same for a permutation that
// keeps the last dim last, when it is a multiple of 4: the host describes the tensors
// in vec4 units and each invocation moves four floats.

struct Params {
    n: u32,
    out_dims: array<vec4<u32>, 2>,    // 6 used
    in_strides: array<vec4<u32>, 2>,  // 6 used
}

// Invocations per workgroup, one element (or vec4) each; set by the host.
override WG: u32;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

fn dim(i: u32) -> u32 { return p.out_dims[i / 4u][i % 4u]; }
fn stride(i: u32) -> u32 { return p.in_strides[i / 4u][i % 4u]; }

// The input index of output element i.
fn source(i: u32) -> u32 {
    var rest = i;
    var src = 0u;
    for (var d = 5; d >= 0; d--) {
        let size = dim(u32(d));
        src += (rest % size) * stride(u32(d));
        rest /= size;
    }
    return src;
}

@compute @workgroup_size(WG)
fn permute(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * WG + lid;
    if (i < p.n) { out[i] = x[source(i)]; }
}

@group(0) @binding(3) var<storage, read> x4: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> out4: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn permute_vec4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * WG + lid;
    if (i < p.n) { out4[i] = x4[source(i)]; }
}
