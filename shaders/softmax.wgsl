// Softmax over the last dim of x viewed as [rows, cols]; LANES_PER_ROW invocations per row with
// tree reductions in workgroup memory, WG / LANES_PER_ROW rows per workgroup, or (the `_rows`
// entries) one invocation per row.
// forward: out = softmax(x). backward (x = y, dy): out = y * (dy - sum(dy * y)).

struct Params {
    rows: u32,
    cols: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> dy: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

// WG and LANES_PER_ROW, and each invocation's row: row_lanes.wgsl.
var<workgroup> partial: array<f32, WG>;

// The maximum (take_max) or the sum of v over the LANES_PER_ROW invocations of a row.
fn reduce(lid: u32, v: f32, take_max: bool) -> f32 {
    partial[lid] = v;
    workgroupBarrier();
    let lane = lid % LANES_PER_ROW;
    for (var s = LANES_PER_ROW / 2u; s > 0u; s >>= 1u) {
        if (lane < s) {
            if (take_max) {
                partial[lid] = max(partial[lid], partial[lid + s]);
            } else {
                partial[lid] += partial[lid + s];
            }
        }
        workgroupBarrier();
    }
    let r = partial[lid - lane];
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(WG)
fn softmax_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let at = row_lane(wid, nwg, lid);
    let base = at.row * p.cols;
    var m = -3.4e38;
    for (var c = at.lane; c < at.cols; c += LANES_PER_ROW) { m = max(m, x[base + c]); }
    m = reduce(lid, m, true);
    var s = 0.0;
    for (var c = at.lane; c < at.cols; c += LANES_PER_ROW) { s += exp(x[base + c] - m); }
    s = reduce(lid, s, false);
    let inv = 1.0 / s;
    for (var c = at.lane; c < at.cols; c += LANES_PER_ROW) { out[base + c] = exp(x[base + c] - m) * inv; }
}

@compute @workgroup_size(WG)
fn softmax_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let at = row_lane(wid, nwg, lid);
    let base = at.row * p.cols;
    var d = 0.0;
    for (var c = at.lane; c < at.cols; c += LANES_PER_ROW) { d += dy[base + c] * x[base + c]; }
    d = reduce(lid, d, false);
    for (var c = at.lane; c < at.cols; c += LANES_PER_ROW) { out[base + c] = x[base + c] * (dy[base + c] - d); }
}

// The same with one invocation per row and no barriers: faster for short rows
// (attention over a few hundred tokens), where a workgroup per row mostly waits.
@compute @workgroup_size(WG)
fn softmax_forward_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
    let row = (wid.x + wid.y * nwg.x) * WG + lid;
    if (row >= p.rows) { return; }
    let base = row * p.cols;
    var m = -3.4e38;
    for (var c = 0u; c < p.cols; c++) { m = max(m, x[base + c]); }
    var s = 0.0;
    for (var c = 0u; c < p.cols; c++) { s += exp(x[base + c] - m); }
    let inv = 1.0 / s;
    for (var c = 0u; c < p.cols; c++) { out[base + c] = exp(x[base + c] - m) * inv; }
}

@compute @workgroup_size(WG)
fn softmax_backward_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32) {
    let row = (wid.x + wid.y * nwg.x) * WG + lid;
    if (row >= p.rows) { return; }
    let base = row * p.cols;
    var d = 0.0;
    for (var c = 0u; c < p.cols; c++) { d += dy[base + c] * x[base + c]; }
    for (var c = 0u; c < p.cols; c++) { out[base + c] = x[base + c] * (dy[base + c] - d); }
}

// The per-row kernels for cols a multiple of 4, on vec4 views of the same buffers: on a
// CPU adapter each storage load walks the lanes one by one, so a vec4 costs about what
// one value does.
@group(0) @binding(4) var<storage, read> x4: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> dy4: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> out4: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn softmax_forward_rows_vec4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                             @builtin(local_invocation_index) lid: u32) {
    let row = (wid.x + wid.y * nwg.x) * WG + lid;
    if (row >= p.rows) { return; }
    let n4 = p.cols / 4u;
    let base = row * n4;
    var m4 = vec4<f32>(-3.4e38);
    for (var c = 0u; c < n4; c++) { m4 = max(m4, x4[base + c]); }
    let m = max(max(m4.x, m4.y), max(m4.z, m4.w));
    var s = vec4<f32>(0.0);
    for (var c = 0u; c < n4; c++) { s += exp(x4[base + c] - m); }
    let inv = 1.0 / dot(s, vec4<f32>(1.0));
    for (var c = 0u; c < n4; c++) { out4[base + c] = exp(x4[base + c] - m) * inv; }
}

@compute @workgroup_size(WG)
fn softmax_backward_rows_vec4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                              @builtin(local_invocation_index) lid: u32) {
    let row = (wid.x + wid.y * nwg.x) * WG + lid;
    if (row >= p.rows) { return; }
    let n4 = p.cols / 4u;
    let base = row * n4;
    var d = vec4<f32>(0.0);
    for (var c = 0u; c < n4; c++) { d += dy4[base + c] * x4[base + c]; }
    let total = dot(d, vec4<f32>(1.0));
    for (var c = 0u; c < n4; c++) { out4[base + c] = x4[base + c] * (dy4[base + c] - total); }
}
