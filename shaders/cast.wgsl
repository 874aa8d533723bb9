// Conversions between f32 tensors and f16 ones, stored two halves to a 32-bit word
// (element 2i in the low half), the form pack2x16float writes and unpack2x16float
// reads: no adapter feature is needed to store or load them.

struct Params {
    n: u32,   // elements
}

// Invocations per workgroup; set by the host.
override WG: u32;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> halves: array<u32>;

// One invocation per pair of elements, rounded to the nearest f16 and saturated at
// its largest finite value (f16.wgsl's pack_f16).
@compute @workgroup_size(WG)
fn to_f16(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * WG + lid;
    if (2u * i >= p.n) { return; }
    var pair = vec2<f32>(x[2u * i], 0.0);
    if (2u * i + 1u < p.n) { pair.y = x[2u * i + 1u]; }
    halves[i] = pack_f16(pair);
}

@group(0) @binding(3) var<storage, read> h: array<u32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

// One invocation per element, widened exactly.
@compute @workgroup_size(WG)
fn to_f32(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * WG + lid;
    if (i < p.n) { y[i] = unpack2x16float(h[i / 2u])[i % 2u]; }
}
