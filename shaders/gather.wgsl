// Row gather (the `apply_masks` of I-JEPA) and its backward.
//
// gather_rows: x [B, N, D], idx [G, K] -> out [G, K, D] with
//   out[g, k, :] = x[g % B, idx[g, k], :]
// (G = masks * B, mask-major: row j * B + b is mask j of image b).
//
// scatter_rows: dx [B, N, D] from dy [G, K, D] through the inverse map in CSR form:
// the rows of dy that were read from x row r are entries[offsets[r] .. offsets[r+1]].
// Deterministic (no atomics) and correct when an index repeats.

struct Params {
    batch: u32,  // B
    n: u32,      // N, rows per image of x
    d: u32,      // D
    k: u32,      // K, indices per row of idx
    total: u32,  // elements written
}

// Invocations per workgroup, one element (or vec4) each; set by the host.
override WG: u32;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read> idx: array<u32>;
@group(0) @binding(3) var<storage, read> entries: array<u32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

fn index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.x + wid.y * nwg.x) * WG + lid;
}

@compute @workgroup_size(WG)
fn gather_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.total) { return; }
    let row = i / p.d;          // g * K + k
    let col = i % p.d;
    let g = row / p.k;
    out[i] = src[((g % p.batch) * p.n + idx[row]) * p.d + col];
}

// Here idx holds the CSR offsets [B * N + 1] and entries the dy rows.
@compute @workgroup_size(WG)
fn scatter_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.total) { return; }
    let row = i / p.d;          // b * N + n
    let col = i % p.d;
    var acc = 0.0;
    for (var e = idx[row]; e < idx[row + 1u]; e++) {
        acc += src[entries[e] * p.d + col];
    }
    out[i] = acc;
}

// The same for rows of whole vec4s (D a multiple of 4), on vec4 views of the buffers:
// the host counts d and total in vec4s.
@group(0) @binding(5) var<storage, read> src4: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> idx4: array<u32>;
@group(0) @binding(7) var<storage, read> entries4: array<u32>;
@group(0) @binding(8) var<storage, read_write> out4: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn gather_rows_vec4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.total) { return; }
    let row = i / p.d;
    let col = i % p.d;
    let g = row / p.k;
    out4[i] = src4[((g % p.batch) * p.n + idx4[row]) * p.d + col];
}

@compute @workgroup_size(WG)
fn scatter_rows_vec4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.total) { return; }
    let row = i / p.d;
    let col = i % p.d;
    var acc = vec4<f32>(0.0);
    for (var e = idx4[row]; e < idx4[row + 1u]; e++) {
        acc += src4[entries4[e] * p.d + col];
    }
    out4[i] = acc;
}
