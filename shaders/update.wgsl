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

@compute @workgroup_size(WG)
fn adamw(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.n) { return; }
    let g = src[i] * p.grad_scale;
    let decay = select(0.0, p.weight_decay, i >= p.decay_from);
    let w = param[i] * (1.0 - p.lr * decay);
    let m = p.beta1 * exp_avg[i] + (1.0 - p.beta1) * g;
    let v = p.beta2 * exp_avg_sq[i] + (1.0 - p.beta2) * g * g;
    exp_avg[i] = m;
    exp_avg_sq[i] = v;
    let denom = sqrt(v) / p.bias_correction2_sqrt + p.eps;
    param[i] = w - (p.lr / p.bias_correction1) * m / denom;
}

@compute @workgroup_size(WG)
fn ema_update(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.n) { return; }
    param[i] = p.momentum * param[i] + (1.0 - p.momentum) * src[i];
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
