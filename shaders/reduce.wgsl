// Sums. `sum_columns` reduces x viewed as [rows, cols] over its rows, one chunk of
// `chunk` rows per workgroup row, into partial sums [ceil(rows / chunk), cols];
// `sum_columns_pair` does the same for two inputs of the same rows at once (both
// also on vec4s, for rows of whole vec4s);
// `sum_all` reduces `chunk` values per workgroup into one partial sum. The host
// repeats them until one row is left (once, when a chunk is all the rows).

struct Params {
    rows: u32,
    cols: u32,        // of sum_columns_pair: both inputs' columns
    first_cols: u32,  // of sum_columns_pair: the first input's (the rest are the second's)
    chunk: u32,       // rows (values, for sum_all) per workgroup
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

// Sizes the host grids with, set by it.
override COLS_PER_WG: u32;   // columns per workgroup of sum_columns and sum_columns_pair
override SUM_WG: u32;        // invocations per workgroup of sum_all

var<workgroup> lanes: array<f32, COLS_PER_WG * ROW_LANES>;
var<workgroup> sum_lanes: array<f32, SUM_WG>;

// An invocation's partial sum of its column, shared with the column's other row lanes.
fn share_partial(lid: vec3<u32>, acc: f32) {
    lanes[lid.y * COLS_PER_WG + lid.x] = acc;
    workgroupBarrier();
}

// Column `x`'s total over its row lanes, once shared (what row lane 0 stores).
fn column_total(x: u32) -> f32 {
    var total = 0.0;
    for (var l = 0u; l < ROW_LANES; l++) { total += lanes[l * COLS_PER_WG + x]; }
    return total;
}

// A workgroup per column block (column_sums.wgsl).
@compute @workgroup_size(COLS_PER_WG, ROW_LANES)
fn sum_columns(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_id) lid: vec3<u32>) {
    let block = column_block(wid, nwg, lid.x);
    if (block.row_start >= p.rows) { return; }
    let col = block.col;
    var acc = 0.0;
    if (col < p.cols) {
        for (var r = block.row_start + lid.y; r < block.row_end; r += ROW_LANES) {
            acc += x[r * p.cols + col];
        }
    }
    share_partial(lid, acc);
    if (lid.y == 0u && col < p.cols) { out[block.chunk * p.cols + col] = column_total(lid.x); }
}

// sum_columns over first [rows, p.first_cols] and second [rows, p.cols - p.first_cols]
// at once: the columns past p.first_cols are the second's. One dispatch where a split
// product sums its partial products and their row sums (a weight gradient and its bias
// gradient).
@group(0) @binding(3) var<storage, read> first: array<f32>;
@group(0) @binding(4) var<storage, read> second: array<f32>;
@group(0) @binding(5) var<storage, read_write> first_out: array<f32>;
@group(0) @binding(6) var<storage, read_write> second_out: array<f32>;

@compute @workgroup_size(COLS_PER_WG, ROW_LANES)
fn sum_columns_pair(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_id) lid: vec3<u32>) {
    let block = column_block(wid, nwg, lid.x);
    if (block.row_start >= p.rows) { return; }
    // A workgroup's columns may start in one input and end in the other.
    let in_first = block.col < p.first_cols;
    let cols = select(p.cols - p.first_cols, p.first_cols, in_first);
    let col = select(block.col - p.first_cols, block.col, in_first);
    var acc = 0.0;
    if (block.col < p.cols) {
        for (var r = block.row_start + lid.y; r < block.row_end; r += ROW_LANES) {
            if (in_first) { acc += first[r * cols + col]; } else { acc += second[r * cols + col]; }
        }
    }
    share_partial(lid, acc);
    if (lid.y == 0u && block.col < p.cols) {
        let total = column_total(lid.x);
        if (in_first) {
            first_out[block.chunk * cols + col] = total;
        } else {
            second_out[block.chunk * cols + col] = total;
        }
    }
}

// sum_columns and sum_columns_pair on vec4s, for rows of whole vec4s: the host counts
// cols and first_cols in vec4s. On a CPU adapter each storage load walks the lanes one
// by one, so four columns a load cost about what one does.
@group(0) @binding(7) var<storage, read> x4: array<vec4<f32>>;
@group(0) @binding(8) var<storage, read_write> out4: array<vec4<f32>>;
@group(0) @binding(9) var<storage, read> first4: array<vec4<f32>>;
@group(0) @binding(10) var<storage, read> second4: array<vec4<f32>>;
@group(0) @binding(11) var<storage, read_write> first_out4: array<vec4<f32>>;
@group(0) @binding(12) var<storage, read_write> second_out4: array<vec4<f32>>;

var<workgroup> lanes4: array<vec4<f32>, COLS_PER_WG * ROW_LANES>;

// share_partial and column_total of vec4s.
fn share_partial4(lid: vec3<u32>, acc: vec4<f32>) {
    lanes4[lid.y * COLS_PER_WG + lid.x] = acc;
    workgroupBarrier();
}

fn column_total4(x: u32) -> vec4<f32> {
    var total = vec4<f32>(0.0);
    for (var l = 0u; l < ROW_LANES; l++) { total += lanes4[l * COLS_PER_WG + x]; }
    return total;
}

@compute @workgroup_size(COLS_PER_WG, ROW_LANES)
fn sum_columns_vec4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_id) lid: vec3<u32>) {
    let block = column_block(wid, nwg, lid.x);
    if (block.row_start >= p.rows) { return; }
    let col = block.col;
    var acc = vec4<f32>(0.0);
    if (col < p.cols) {
        for (var r = block.row_start + lid.y; r < block.row_end; r += ROW_LANES) {
            acc += x4[r * p.cols + col];
        }
    }
    share_partial4(lid, acc);
    if (lid.y == 0u && col < p.cols) { out4[block.chunk * p.cols + col] = column_total4(lid.x); }
}

@compute @workgroup_size(COLS_PER_WG, ROW_LANES)
fn sum_columns_pair_vec4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_id) lid: vec3<u32>) {
    let block = column_block(wid, nwg, lid.x);
    if (block.row_start >= p.rows) { return; }
    let in_first = block.col < p.first_cols;
    let cols = select(p.cols - p.first_cols, p.first_cols, in_first);
    let col = select(block.col - p.first_cols, block.col, in_first);
    var acc = vec4<f32>(0.0);
    if (block.col < p.cols) {
        for (var r = block.row_start + lid.y; r < block.row_end; r += ROW_LANES) {
            if (in_first) { acc += first4[r * cols + col]; } else { acc += second4[r * cols + col]; }
        }
    }
    share_partial4(lid, acc);
    if (lid.y == 0u && block.col < p.cols) {
        let total = column_total4(lid.x);
        if (in_first) {
            first_out4[block.chunk * cols + col] = total;
        } else {
            second_out4[block.chunk * cols + col] = total;
        }
    }
}

// `rows` is the number of values; grid: one workgroup per `chunk` values (2-D if
// large).
@compute @workgroup_size(SUM_WG)
fn sum_all(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let group = wid.x + wid.y * nwg.x;
    let base = group * p.chunk;
    let end = min(base + p.chunk, p.rows);
    var acc = 0.0;
    for (var i = base + lid; i < end; i += SUM_WG) { acc += x[i]; }
    sum_lanes[lid] = acc;
    workgroupBarrier();
    // SUM_WG is a power of two.
    for (var stride = SUM_WG / 2u; stride > 0u; stride >>= 1u) {
        if (lid < stride) { sum_lanes[lid] += sum_lanes[lid + stride]; }
        workgroupBarrier();
    }
    if (lid == 0u && base < p.rows) { out[group] = sum_lanes[0]; }
}
