// Cross-entropy of logits [rows, classes] against integer labels [rows].
// forward: one thread per row writes out[row] = logsumexp(x[row]) - x[row, label]
//          and out[rows + row] = logsumexp(x[row]) (saved for the backward).
// backward: one thread per logit, out = dy[0] * s * (softmax(x)[c] - [c == label]),
//          with s = 1 / rows for the mean.

struct Params {
    rows: u32,
    classes: u32,
    s: f32,
}

// Invocations per workgroup, one element (or vec4) each; set by the host.
override WG: u32;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<u32>;
@group(0) @binding(3) var<storage, read> saved: array<f32>;
@group(0) @binding(4) var<storage, read> dy: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

fn index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.x + wid.y * nwg.x) * WG + lid;
}

@compute @workgroup_size(WG)
fn cross_entropy_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32) {
    let row = index(wid, nwg, lid);
    if (row >= p.rows) { return; }
    let base = row * p.classes;
    var m = -3.4e38;
    for (var c = 0u; c < p.classes; c++) { m = max(m, logits[base + c]); }
    var s = 0.0;
    for (var c = 0u; c < p.classes; c++) { s += exp(logits[base + c] - m); }
    let lse = m + log(s);
    out[row] = lse - logits[base + labels[row]];
    out[p.rows + row] = lse;
}

@compute @workgroup_size(WG)
fn cross_entropy_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                          @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.rows * p.classes) { return; }
    let row = i / p.classes;
    let c = i % p.classes;
    let prob = exp(logits[i] - saved[p.rows + row]);
    let hit = select(0.0, 1.0, labels[row] == c);
    out[i] = dy[0] * p.s * (prob - hit);
}
