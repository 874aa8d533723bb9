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
    stride: u32,   // and the columns its partial sums of dgamma and of dbeta each take
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

// The parameter-gradient kernel's columns per workgroup, set by the host (WG, LANES_PER_ROW
// and each invocation's row: row_lanes.wgsl).
override COLS_PER_WG: u32;
var<workgroup> partial: array<f32, 2u * WG>;

// Sums of two values over the LANES_PER_ROW invocations of a row at once.
fn reduce_sum2(lid: u32, a: f32, b: f32) -> vec2<f32> {
    partial[lid] = a;
    partial[WG + lid] = b;
    workgroupBarrier();
    let lane = lid % LANES_PER_ROW;
    for (var s = LANES_PER_ROW / 2u; s > 0u; s >>= 1u) {
        if (lane < s) {
            partial[lid] += partial[lid + s];
            partial[WG + lid] += partial[WG + lid + s];
        }
        workgroupBarrier();
    }
    let first = lid - lane;
    let r = vec2<f32>(partial[first], partial[WG + first]);
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(WG)
fn layernorm_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let at = row_lane(wid, nwg, lid);
    let base = at.row * p.cols;
    let n = f32(p.cols);
    var s = 0.0;
    for (var c = at.lane; c < at.cols; c += LANES_PER_ROW) { s += first_input(base + c); }
    // The f16 stores read pairs of sums that other invocations wrote.
    if (ADD && F16_OUT) { storageBarrier(); }
    let mean = reduce_sum2(lid, s, 0.0).x / n;
    // Two-pass variance: no cancellation for rows with a large mean.
    var v = 0.0;
    for (var c = at.lane; c < at.cols; c += LANES_PER_ROW) { let d = input(base + c) - mean; v += d * d; }
    let rstd = inverseSqrt(reduce_sum2(lid, v, 0.0).x / n + p.eps);
    for (var c = at.lane * out_step(); c < at.cols; c += LANES_PER_ROW * out_step()) { store_y(base, c, mean, rstd); }
    if (at.lane == 0u && at.row < p.rows) {
        stats_out[2u * at.row] = mean;
        stats_out[2u * at.row + 1u] = rstd;
    }
}

// dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dy * gamma.
@compute @workgroup_size(WG)
fn layernorm_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let at = row_lane(wid, nwg, lid);
    let base = at.row * p.cols;
    var mean = 0.0;
    var rstd = 0.0;
    if (at.row < p.rows) {
        mean = stats_in[2u * at.row];
        rstd = stats_in[2u * at.row + 1u];
    }
    var sg = 0.0;
    var sgx = 0.0;
    for (var c = at.lane; c < at.cols; c += LANES_PER_ROW) {
        var g = dy[base + c];
        if (AFFINE) { g *= gamma[c]; }
        let xhat = (x[base + c] - mean) * rstd;
        sg += g;
        sgx += g * xhat;
    }
    let sums = reduce_sum2(lid, sg, sgx) / f32(p.cols);
    for (var c = at.lane; c < at.cols; c += LANES_PER_ROW) {
        var g = dy[base + c];
        if (AFFINE) { g *= gamma[c]; }
        let xhat = (x[base + c] - mean) * rstd;
        store_dx(base + c, rstd * (g - sums.x - xhat * sums.y));
    }
}

var<workgroup> lanes: array<vec2<f32>, COLS_PER_WG * ROW_LANES>;

// Partial sums over a chunk of `chunk` rows of dy * xhat and dy per column, side by side
// in `out` [chunks, 2, stride]: dgamma's at [chunk, 0, col], dbeta's at [chunk, 1, col]
// (one sum over the chunks then adds both). A workgroup per column block
// (column_sums.wgsl).
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
        out[2u * block.chunk * p.stride + col] = t.x;
        out[(2u * block.chunk + 1u) * p.stride + col] = t.y;
    }
}

// The same with one invocation per row and no barriers (short rows; the `_vec4` kernels
// below when the rows are whole vec4s).
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

// The row kernels for cols a multiple of 4, on vec4 views of the same buffers: on a CPU
// adapter each storage load walks the lanes one by one, so a vec4 load brings four
// columns for about the price of one.
@group(0) @binding(11) var<storage, read> x4: array<vec4<f32>>;
@group(0) @binding(12) var<storage, read> gamma4: array<vec4<f32>>;
@group(0) @binding(13) var<storage, read> beta4: array<vec4<f32>>;
@group(0) @binding(14) var<storage, read> stats_in2: array<vec2<f32>>;
@group(0) @binding(15) var<storage, read> dy4: array<vec4<f32>>;
@group(0) @binding(16) var<storage, read> addend4: array<vec4<f32>>;
@group(0) @binding(17) var<storage, read_write> out4: array<vec4<f32>>;
@group(0) @binding(18) var<storage, read_write> stats_out2: array<vec2<f32>>;
@group(0) @binding(19) var<storage, read_write> sum_out4: array<vec4<f32>>;
@group(0) @binding(20) var<storage, read_write> out_h2: array<vec2<u32>>;

fn first_input4(i: u32) -> vec4<f32> {
    if (ADD) {
        let s = x4[i] + addend4[i];
        sum_out4[i] = s;
        return s;
    }
    return x4[i];
}

fn input4(i: u32) -> vec4<f32> {
    if (ADD) { return sum_out4[i]; }
    return x4[i];
}

@compute @workgroup_size(WG)
fn layernorm_forward_rows_vec4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                               @builtin(local_invocation_index) lid: u32) {
    let row = (wid.x + wid.y * nwg.x) * WG + lid;
    if (row >= p.rows) { return; }
    let n4 = p.cols / 4u;
    let base = row * n4;
    let n = f32(p.cols);
    var s = vec4<f32>(0.0);
    for (var c = 0u; c < n4; c++) { s += first_input4(base + c); }
    let mean = dot(s, vec4<f32>(1.0)) / n;
    var v = vec4<f32>(0.0);
    for (var c = 0u; c < n4; c++) { let d = input4(base + c) - mean; v += d * d; }
    let rstd = inverseSqrt(dot(v, vec4<f32>(1.0)) / n + p.eps);
    for (var c = 0u; c < n4; c++) {
        var y = (input4(base + c) - mean) * rstd;
        if (AFFINE) { y = y * gamma4[c] + beta4[c]; }
        if (F16_OUT) {
            out_h2[base + c] = vec2<u32>(pack_f16(y.xy), pack_f16(y.zw));
        } else {
            out4[base + c] = y;
        }
    }
    stats_out2[row] = vec2<f32>(mean, rstd);
}

@compute @workgroup_size(WG)
fn layernorm_backward_rows_vec4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                                @builtin(local_invocation_index) lid: u32) {
    let row = (wid.x + wid.y * nwg.x) * WG + lid;
    if (row >= p.rows) { return; }
    let n4 = p.cols / 4u;
    let base = row * n4;
    let stats = stats_in2[row];
    var sg = vec4<f32>(0.0);
    var sgx = vec4<f32>(0.0);
    for (var c = 0u; c < n4; c++) {
        var g = dy4[base + c];
        if (AFFINE) { g *= gamma4[c]; }
        sg += g;
        sgx += g * (x4[base + c] - stats.x) * stats.y;
    }
    let mg = dot(sg, vec4<f32>(1.0)) / f32(p.cols);
    let mgx = dot(sgx, vec4<f32>(1.0)) / f32(p.cols);
    for (var c = 0u; c < n4; c++) {
        var g = dy4[base + c];
        if (AFFINE) { g *= gamma4[c]; }
        var dx = stats.y * (g - mg - (x4[base + c] - stats.x) * stats.y * mgx);
        if (ADD) { dx += addend4[base + c]; }
        out4[base + c] = dx;
    }
}

var<workgroup> lanes4: array<vec4<f32>, 2u * COLS_PER_WG * ROW_LANES>;

// layernorm_param_grads on vec4s: the host counts cols and stride (and so the column
// blocks) in vec4s.
@compute @workgroup_size(COLS_PER_WG, ROW_LANES)
fn layernorm_param_grads_vec4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                              @builtin(local_invocation_id) lid: vec3<u32>) {
    let block = column_block(wid, nwg, lid.x);
    if (block.row_start >= p.rows) { return; }
    let col = block.col;
    var dgamma = vec4<f32>(0.0);
    var dbeta = vec4<f32>(0.0);
    if (col < p.cols) {
        for (var r = block.row_start + lid.y; r < block.row_end; r += ROW_LANES) {
            let stats = stats_in2[r];
            let g = dy4[r * p.cols + col];
            dgamma += g * (x4[r * p.cols + col] - stats.x) * stats.y;
            dbeta += g;
        }
    }
    let lane = 2u * (lid.y * COLS_PER_WG + lid.x);
    lanes4[lane] = dgamma;
    lanes4[lane + 1u] = dbeta;
    workgroupBarrier();
    if (lid.y == 0u && col < p.cols) {
        for (var l = 1u; l < ROW_LANES; l++) {
            dgamma += lanes4[2u * (l * COLS_PER_WG + lid.x)];
            dbeta += lanes4[2u * (l * COLS_PER_WG + lid.x) + 1u];
        }
        out4[2u * block.chunk * p.stride + col] = dgamma;
        out4[(2u * block.chunk + 1u) * p.stride + col] = dbeta;
    }
}
