// Parameter updates, in place, one thread per parameter element. Each runs on one
// tensor, or on a bucket of packed tensors at once (a multi-tensor update).
//
// adamw (torch.optim.AdamW) on g = grad_scale * grad (grad_scale clips the gradient
//   norm and undoes the loss scale): p -= lr * wd * p (only from element decay_from
//   on: a bucket holds the parameters without weight decay first);
//   m = b1 m + (1 - b1) g;
//   v = b2 v + (1 - b2) g^2; p -= lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps),
//   bc1 = 1 - b1^t, bc2 = 1 - b2^t.
// ema_update: target = momentum * target + (1 - momentum) * source.
// find_non_finite: found = 1.0 where any of the first n elements of `checked` is
//   infinite or NaN (loss scaling's check of the scaled gradients before AdamW). It
//   reads their bits: a shader compiler may assume that comparisons never meet
//   infinities or NaN.

struct Params {
    n: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    bias_correction1: f32,
    bias_correction2_sqrt: f32,
    grad_scale: f32,
    momentum: f32,     // ema_update's; adamw uses the fields above and below
    decay_from: u32,
}

// Invocations per workgroup, one element (or vec4) each; set by the host.
override WG: u32;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;      // grad, or EMA source
@group(0) @binding(2) var<storage, read_write> param: array<f32>;
@group(0) @binding(3) var<storage, read_write> exp_avg: array<f32>;
@group(0) @binding(4) var<storage, read_write> exp_avg_sq: array<f32>;

fn index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.x + wid.y * nwg.x) * WG + lid;
}

// AdamW's new (param, exp_avg, exp_avg_sq) of four elements from their old values, the
// gradient and each element's weight decay: the math of both kernels below.
struct AdamWState {
    param: vec4<f32>,
    exp_avg: vec4<f32>,
    exp_avg_sq: vec4<f32>,
}

fn adamw_step(grad: vec4<f32>, old: AdamWState, decay: vec4<f32>) -> AdamWState {
    let g = grad * p.grad_scale;
    let w = old.param * (1.0 - p.lr * decay);
    let m = p.beta1 * old.exp_avg + (1.0 - p.beta1) * g;
    let v = p.beta2 * old.exp_avg_sq + (1.0 - p.beta2) * g * g;
    let denom = sqrt(v) / p.bias_correction2_sqrt + p.eps;
    return AdamWState(w - (p.lr / p.bias_correction1) * m / denom, m, v);
}

@compute @workgroup_size(WG)
fn adamw(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.n) { return; }
    let old = AdamWState(vec4<f32>(param[i]), vec4<f32>(exp_avg[i]), vec4<f32>(exp_avg_sq[i]));
    let decay = select(0.0, p.weight_decay, i >= p.decay_from);
    let next = adamw_step(vec4<f32>(src[i]), old, vec4<f32>(decay));
    param[i] = next.param.x;
    exp_avg[i] = next.exp_avg.x;
    exp_avg_sq[i] = next.exp_avg_sq.x;
}

@compute @workgroup_size(WG)
fn ema_update(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.n) { return; }
    param[i] = p.momentum * param[i] + (1.0 - p.momentum) * src[i];
}

// The same on vec4 views, for tensors of whole vec4s (packed buckets are): the host
// counts n in vec4s, decay_from stays in elements.
@group(0) @binding(7) var<storage, read> src4: array<vec4<f32>>;
@group(0) @binding(8) var<storage, read_write> param4: array<vec4<f32>>;
@group(0) @binding(9) var<storage, read_write> exp_avg4: array<vec4<f32>>;
@group(0) @binding(10) var<storage, read_write> exp_avg_sq4: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn adamw_vec4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.n) { return; }
    let old = AdamWState(param4[i], exp_avg4[i], exp_avg_sq4[i]);
    let elements = 4u * i + vec4<u32>(0u, 1u, 2u, 3u);
    let decay = select(vec4<f32>(0.0), vec4<f32>(p.weight_decay), elements >= vec4<u32>(p.decay_from));
    let next = adamw_step(src4[i], old, decay);
    param4[i] = next.param;
    exp_avg4[i] = next.exp_avg;
    exp_avg_sq4[i] = next.exp_avg_sq;
}

@compute @workgroup_size(WG)
fn ema_update_vec4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.n) { return; }
    param4[i] = p.momentum * param4[i] + (1.0 - p.momentum) * src4[i];
}

@group(0) @binding(5) var<storage, read> checked: array<u32>;
@group(0) @binding(6) var<storage, read_write> found: array<atomic<u32>>;

@compute @workgroup_size(WG)
fn find_non_finite(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.n) { return; }
    if ((checked[i] & 0x7f800000u) == 0x7f800000u) {
        atomicStore(&found[0], bitcast<u32>(1.0));
    }
}
