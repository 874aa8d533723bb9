// Regression losses, element-wise parts, each scaled by s = 1 / elements so that
// their sum (reduce.wgsl) is the mean. d = pred - truth (the target).
// smooth-L1 (beta): l = 0.5 d^2 / beta if |d| < beta else |d| - 0.5 beta;
//                   dl/dd = clamp(d / beta, -1, 1).
// MSE: l = d^2; dl/dd = 2 d.
// backward: out = dy[0] * s * dl/dd.

struct Params {
    n: u32,
    beta: f32,
    s: f32,
}

// Invocations per workgroup, one element (or vec4) each; set by the host.
override WG: u32;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> pred: array<f32>;
@group(0) @binding(2) var<storage, read> truth: array<f32>;
@group(0) @binding(3) var<storage, read> dy: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

fn index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.x + wid.y * nwg.x) * WG + lid;
}

@compute @workgroup_size(WG)
fn smooth_l1_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.n) { return; }
    let d = pred[i] - truth[i];
    let ad = abs(d);
    out[i] = p.s * select(ad - 0.5 * p.beta, 0.5 * d * d / p.beta, ad < p.beta);
}

@compute @workgroup_size(WG)
fn smooth_l1_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.n) { return; }
    let d = pred[i] - truth[i];
    out[i] = dy[0] * p.s * clamp(d / p.beta, -1.0, 1.0);
}

@compute @workgroup_size(WG)
fn mse_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.n) { return; }
    let d = pred[i] - truth[i];
    out[i] = p.s * d * d;
}

@compute @workgroup_size(WG)
fn mse_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.n) { return; }
    out[i] = dy[0] * p.s * 2.0 * (pred[i] - truth[i]);
}
