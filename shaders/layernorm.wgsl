// LayerNorm over the last dim of x viewed as [rows, cols]:
// y = (x - mean) * rstd * gamma + beta, rstd = 1 / sqrt(var + eps) (biased variance).
// AFFINE = false: no gamma/beta (the target path's parameter-free LayerNorm).
// forward writes y and the per-row statistics [rows, 2] = (mean, rstd) that the
// backward reads instead of recomputing them.
// ADD = true fuses a residual connection: the forward normalises s = x + addend and
// writes s too (sum_out); the backward returns dx + addend, addend being the gradient
// s already received from the residual stream.
// F16_OUT = true: the forward writes y rounded to f16, two halves to a word (out_h),
// for a LayerNorm whose output only feeds mixed-precision products; cols is even.

struct Params {
    rows: u32,
    cols: u32,
    eps: f32,
    chunk: u32,    // rows per workgroup of layernorm_param_grads
}

override AFFINE: bool = true;
override ADD: bool = false;
override F16_OUT: bool = false;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
@group(0) @binding(4) var<storage, read> stats_in: array<f32>;
@group(0) @binding(5) var<storage, read> dy: array<f32>;
@group(0) @binding(6) var<storage, read> addend: array<f32>;
@group(0) @binding(7) var<storage, read_write> out: array<f32>;
@group(0) @binding(8) var<storage, read_write> stats_out: array<f32>;
@group(0) @binding(9) var<storage, read_write> sum_out: array<f32>;
@group(0) @binding(10) var<storage, read_write> out_h: array<u32>;

// The forward's input, x or x + addend, as its first pass reads it: the sum is written
// to sum_out, from which the later passes read it back (one load instead of two).
fn first_input(i: u32) -> f32 {
    if (ADD) {
        let s = x[i] + addend[i];
        sum_out[i] = s;
        return s;
    }
    return x[i];
}

// The forward's input after its first pass.
fn input(i: u32) -> f32 {
    if (ADD) { return sum_out[i]; }
    return x[i];
}

// y of column c of the row at base.
fn normalized(base: u32, c: u32, mean: f32, rstd: f32) -> f32 {
    var y = (input(base + c) - mean) * rstd;
    if (AFFINE) { y = y * gamma[c] + beta[c]; }
    return y;
}

// Columns each store of the forward writes: one f32, or two halves in a word.
fn out_step() -> u32 {
    return select(1u, 2u, F16_OUT);
}

// Writes y of column c (and of c + 1 when F16_OUT).
fn store_y(base: u32, c: u32, mean: f32, rstd: f32) {
    if (F16_OUT) {
        let pair = vec2<f32>(normalized(base, c, mean, rstd), normalized(base, c + 1u, mean, rstd));
        out_h[(base + c) / 2u] = pack_f16(pair);
    } else {
        out[base + c] = normalized(base, c, mean, rstd);
    }
}

// The backward's dx, plus the gradient gathered so far when ADD.
fn store_dx(i: u32, dx: f32) {
    if (ADD) { out[i] = dx + addend[i]; } else { out[i] = dx; }
}

// Sizes the host grids with, set by it: the row kernels' invocations per workgroup (a
// power of two; ops/rows.rs), and the parameter-gradient kernel's columns per
// workgroup.
override WG: u32;
override COLS_PER_WG: u32;
var<workgroup> partial: array<f32, 2u * WG>;

// Sums of two values over the workgroup at once.
fn reduce_sum2(lid: u32, a: f32, b: f32) -> vec2<f32> {
    partial[lid] = a;
    partial[WG + lid] = b;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            partial[lid] += partial[lid + s];
            partial[WG + lid] += partial[WG + lid + s];
        }
        workgroupBarrier();
    }
    let r = vec2<f32>(partial[0], partial[WG]);
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(WG)
fn layernorm_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.rows) { return; }
    let base = row * p.cols;
    let n = f32(p.cols);
    var s = 0.0;
    for (var c = lid; c < p.cols; c += WG) { s += first_input(base + c); }
    // The f16 stores read pairs of sums that other invocations wrote.
    if (ADD && F16_OUT) { storageBarrier(); }
    let mean = reduce_sum2(lid, s, 0.0).x / n;
    // Two-pass variance: no cancellation for rows with a large mean.
    var v = 0.0;
    for (var c = lid; c < p.cols; c += WG) { let d = input(base + c) - mean; v += d * d; }
    let rstd = inverseSqrt(reduce_sum2(lid, v, 0.0).x / n + p.eps);
    for (var c = lid * out_step(); c < p.cols; c += WG * out_step()) { store_y(base, c, mean, rstd); }
    if (lid == 0u) {
        stats_out[2u * row] = mean;
        stats_out[2u * row + 1u] = rstd;
    }
}

// dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dy * gamma.
@compute @workgroup_size(WG)
fn layernorm_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.rows) { return; }
    let base = row * p.cols;
    let mean = stats_in[2u * row];
    let rstd = stats_in[2u * row + 1u];
    var sg = 0.0;
    var sgx = 0.0;
    for (var c = lid; c < p.cols; c += WG) {
        var g = dy[base + c];
        if (AFFINE) { g *= gamma[c]; }
        let xhat = (x[base + c] - mean) * rstd;
        sg += g;
        sgx += g * xhat;
    }
    let sums = reduce_sum2(lid, sg, sgx) / f32(p.cols);
    for (var c = lid; c < p.cols; c += WG) {
        var g = dy[base + c];
        if (AFFINE) { g *= gamma[c]; }
        let xhat = (x[base + c] - mean) * rstd;
        store_dx(base + c, rstd * (g - sums.x - xhat * sums.y));
    }
}

var<workgroup> lanes: array<vec2<f32>, COLS_PER_WG * ROW_LANES>;

// Partial sums over a chunk of `chunk` rows of dy * xhat and dy per column: the dgamma
// partials [chunks, cols] into `out`, the dbeta partials [chunks, cols] into
// `stats_out`. A workgroup per column block (column_sums.wgsl).
@compute @workgroup_size(COLS_PER_WG, ROW_LANES)
fn layernorm_param_grads(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_id) lid: vec3<u32>) {
    let block = column_block(wid, nwg, lid.x);
    if (block.row_start >= p.rows) { return; }
    let col = block.col;
    var acc = vec2<f32>(0.0);
    if (col < p.cols) {
        for (var r = block.row_start + lid.y; r < block.row_end; r += ROW_LANES) {
            let xhat = (x[r * p.cols + col] - stats_in[2u * r]) * stats_in[2u * r + 1u];
            let g = dy[r * p.cols + col];
            acc += vec2<f32>(g * xhat, g);
        }
    }
    lanes[lid.y * COLS_PER_WG + lid.x] = acc;
    workgroupBarrier();
    if (lid.y == 0u && col < p.cols) {
        var t = vec2<f32>(0.0);
        for (var l = 0u; l < ROW_LANES; l++) { t += lanes[l * COLS_PER_WG + lid.x]; }
        out[block.chunk * p.cols + col] = t.x;
        stats_out[block.chunk * p.cols + col] = t.y;
    }
}

// The same with one invocation per row and no barriers (short rows).
@compute @workgroup_size(WG)
fn layernorm_forward_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                          @builtin(local_invocation_index) lid: u32) {
    let row = (wid.x + wid.y * nwg.x) * WG + lid;
    if (row >= p.rows) { return; }
    let base = row * p.cols;
    let n = f32(p.cols);
    var s = 0.0;
    for (var c = 0u; c < p.cols; c++) { s += first_input(base + c); }
    let mean = s / n;
    var v = 0.0;
    for (var c = 0u; c < p.cols; c++) { let d = input(base + c) - mean; v += d * d; }
    let rstd = inverseSqrt(v / n + p.eps);
    for (var c = 0u; c < p.cols; c += out_step()) { store_y(base, c, mean, rstd); }
    stats_out[2u * row] = mean;
    stats_out[2u * row + 1u] = rstd;
}

@compute @workgroup_size(WG)
fn layernorm_backward_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                           @builtin(local_invocation_index) lid: u32) {
    let row = (wid.x + wid.y * nwg.x) * WG + lid;
    if (row >= p.rows) { return; }
    let base = row * p.cols;
    let mean = stats_in[2u * row];
    let rstd = stats_in[2u * row + 1u];
    var sg = 0.0;
    var sgx = 0.0;
    for (var c = 0u; c < p.cols; c++) {
        var g = dy[base + c];
        if (AFFINE) { g *= gamma[c]; }
        sg += g;
        sgx += g * (x[base + c] - mean) * rstd;
    }
    let mg = sg / f32(p.cols);
    let mgx = sgx / f32(p.cols);
    for (var c = 0u; c < p.cols; c++) {
        var g = dy[base + c];
        if (AFFINE) { g *= gamma[c]; }
        store_dx(base + c, rstd * (g - mg - (x[base + c] - mean) * rstd * mgx));
    }
}
