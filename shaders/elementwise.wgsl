// Element-wise kernels. Binary ops broadcast `b` over the leading dims of `a`:
// out[i] = a[i] (op) b[i % nb]. Unary kernels read `a` and ignore `b`.
//
// Every op is one `apply` case and two entry points: `op` over f32 elements and
// `op_vec4` over vec4s, for when n and nb are multiples of 4 (the host then counts
// n and nb in vec4s). The op reaches `apply` as a constant, so each entry point
// compiles to its own straight-line kernel.

struct Params {
    n: u32,      // elements (or vec4s) of a and out
    nb: u32,     // elements (or vec4s) of b
    s: f32,      // scalar: the factor of `scale` and `broadcast`, the value of `fill`
}

// Invocations per workgroup, one element (or vec4) each; set by the host.
override WG: u32;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read> a4: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> b4: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> out4: array<vec4<f32>>;

const ADD: u32 = 0u;
const SUB: u32 = 1u;
const MUL: u32 = 2u;
const DIV: u32 = 3u;
const SCALE: u32 = 4u;          // s * a
const FILL: u32 = 5u;           // s
const GELU: u32 = 6u;           // gelu(a) (gelu.wgsl)
const GELU_BACKWARD: u32 = 7u;  // a = x, b = dy: dy * gelu'(x)
const BROADCAST: u32 = 8u;      // s * b, b repeated over out's leading dims

fn apply(op: u32, x: f32, y: f32) -> f32 {
    switch op {
        case ADD: { return x + y; }
        case SUB: { return x - y; }
        case MUL: { return x * y; }
        case DIV: { return x / y; }
        case SCALE: { return p.s * x; }
        case GELU: { return gelu(x); }
        case GELU_BACKWARD: { return y * gelu_grad(x); }
        case BROADCAST: { return p.s * y; }
        default: { return p.s; }
    }
}

fn reads_a(op: u32) -> bool { return op != FILL && op != BROADCAST; }
fn reads_b(op: u32) -> bool { return op <= DIV || op == GELU_BACKWARD || op == BROADCAST; }

struct Ids {
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
}

fn run(op: u32, ids: Ids) {
    let i = (ids.wid.x + ids.wid.y * ids.nwg.x) * WG + ids.lid;
    if (i >= p.n) { return; }
    var x = 0.0;
    var y = 0.0;
    if (reads_a(op)) { x = a[i]; }
    if (reads_b(op)) { y = b[i % p.nb]; }
    out[i] = apply(op, x, y);
}

fn run_vec4(op: u32, ids: Ids) {
    let i = (ids.wid.x + ids.wid.y * ids.nwg.x) * WG + ids.lid;
    if (i >= p.n) { return; }
    var x = vec4<f32>(0.0);
    var y = vec4<f32>(0.0);
    if (reads_a(op)) { x = a4[i]; }
    if (reads_b(op)) { y = b4[i % p.nb]; }
    out4[i] = vec4<f32>(apply(op, x.x, y.x), apply(op, x.y, y.y),
                        apply(op, x.z, y.z), apply(op, x.w, y.w));
}

@compute @workgroup_size(WG) fn add(ids: Ids) { run(ADD, ids); }
@compute @workgroup_size(WG) fn add_vec4(ids: Ids) { run_vec4(ADD, ids); }
@compute @workgroup_size(WG) fn sub(ids: Ids) { run(SUB, ids); }
@compute @workgroup_size(WG) fn sub_vec4(ids: Ids) { run_vec4(SUB, ids); }
@compute @workgroup_size(WG) fn mul(ids: Ids) { run(MUL, ids); }
@compute @workgroup_size(WG) fn mul_vec4(ids: Ids) { run_vec4(MUL, ids); }
@compute @workgroup_size(WG) fn div(ids: Ids) { run(DIV, ids); }
@compute @workgroup_size(WG) fn div_vec4(ids: Ids) { run_vec4(DIV, ids); }
@compute @workgroup_size(WG) fn scale(ids: Ids) { run(SCALE, ids); }
@compute @workgroup_size(WG) fn scale_vec4(ids: Ids) { run_vec4(SCALE, ids); }
@compute @workgroup_size(WG) fn fill(ids: Ids) { run(FILL, ids); }
@compute @workgroup_size(WG) fn fill_vec4(ids: Ids) { run_vec4(FILL, ids); }
@compute @workgroup_size(WG) fn gelu_forward(ids: Ids) { run(GELU, ids); }
@compute @workgroup_size(WG) fn gelu_forward_vec4(ids: Ids) { run_vec4(GELU, ids); }
@compute @workgroup_size(WG) fn gelu_backward(ids: Ids) { run(GELU_BACKWARD, ids); }
@compute @workgroup_size(WG) fn gelu_backward_vec4(ids: Ids) { run_vec4(GELU_BACKWARD, ids); }
@compute @workgroup_size(WG) fn broadcast(ids: Ids) { run(BROADCAST, ids); }
@compute @workgroup_size(WG) fn broadcast_vec4(ids: Ids) { run_vec4(BROADCAST, ids); }
