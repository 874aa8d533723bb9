// Element-wise kernels. Binary ops broadcast `b` over the leading dims of `a`:
// out[i] = a[i] (op) b[i % nb]. Unary kernels read `a` and ignore `b`.

struct Params {
    n: u32,      // elements of a and out
    nb: u32,     // elements of b
    s: f32,      // scalar: the factor of `scale`, the value of `fill`
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

const WG: u32 = 256u;

fn index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.x + wid.y * nwg.x) * WG + lid;
}

@compute @workgroup_size(256)
fn add(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i < p.n) { out[i] = a[i] + b[i % p.nb]; }
}

@compute @workgroup_size(256)
fn sub(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i < p.n) { out[i] = a[i] - b[i % p.nb]; }
}

@compute @workgroup_size(256)
fn mul(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i < p.n) { out[i] = a[i] * b[i % p.nb]; }
}

@compute @workgroup_size(256)
fn div(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i < p.n) { out[i] = a[i] / b[i % p.nb]; }
}

@compute @workgroup_size(256)
fn scale(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i < p.n) { out[i] = a[i] * p.s; }
}

@compute @workgroup_size(256)
fn fill(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i < p.n) { out[i] = p.s; }
}

// erfc(z) for z >= 0 by the Chebyshev fit of Numerical Recipes (erfcc):
// relative error below 1.2e-7 everywhere, so the tails of GELU stay accurate too.
fn erfc_pos(z: f32) -> f32 {
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 +
        t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 +
        t * (-0.82215223 + t * 0.17087277))))))));
    return t * exp(-z * z + poly);
}

// Phi(x), the standard normal CDF, = 0.5 * erfc(-x / sqrt(2)).
fn normal_cdf(x: f32) -> f32 {
    let half_tail = 0.5 * erfc_pos(abs(x) * 0.70710678118654752);
    return select(1.0 - half_tail, half_tail, x < 0.0);
}

// GELU, exact erf form (torch.nn.GELU()): x * Phi(x).
@compute @workgroup_size(256)
fn gelu_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i < p.n) {
        let x = a[i];
        out[i] = x * normal_cdf(x);
    }
}

// a = x, b = dy: dx = dy * (Phi(x) + x * phi(x)).
@compute @workgroup_size(256)
fn gelu_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i < p.n) {
        let x = a[i];
        let pdf = 0.39894228040143268 * exp(-0.5 * x * x);
        out[i] = b[i] * (normal_cdf(x) + x * pdf);
    }
}

// out[i] = s * b[i % nb]: b repeated over out's leading dims (backward of sums).
@compute @workgroup_size(256)
fn broadcast(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i < p.n) { out[i] = p.s * b[i % p.nb]; }
}
