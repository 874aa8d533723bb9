// Sums. `sum_columns` reduces x viewed as [rows, cols] over its rows, one chunk of
// CHUNK rows per workgroup row, into partial sums [ceil(rows / CHUNK), cols]; the host
// repeats it until one row is left. `sum_all` reduces 1024 values per workgroup into
// one partial sum, likewise repeated.

struct Params {
    rows: u32,
    cols: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

const COLS_PER_WG: u32 = 64u;
const ROW_LANES: u32 = 4u;
const CHUNK: u32 = 256u;

var<workgroup> lanes: array<f32, 256>;

// Workgroup (64 columns x 4 row lanes); grid (column groups, row chunks).
@compute @workgroup_size(64, 4)
fn sum_columns(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let col = wid.x * COLS_PER_WG + lid.x;
    let row_start = wid.y * CHUNK;
    let row_end = min(row_start + CHUNK, p.rows);
    var acc = 0.0;
    if (col < p.cols) {
        for (var r = row_start + lid.y; r < row_end; r += ROW_LANES) {
            acc += x[r * p.cols + col];
        }
    }
    lanes[lid.y * COLS_PER_WG + lid.x] = acc;
    workgroupBarrier();
    if (lid.y == 0u && col < p.cols) {
        let total = lanes[lid.x] + lanes[COLS_PER_WG + lid.x] + lanes[2u * COLS_PER_WG + lid.x]
            + lanes[3u * COLS_PER_WG + lid.x];
        out[wid.y * p.cols + col] = total;
    }
}

// `rows` is the number of values; grid: one workgroup per 1024 values (2-D if large).
@compute @workgroup_size(256)
fn sum_all(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let group = wid.x + wid.y * nwg.x;
    let base = group * 1024u;
    var acc = 0.0;
    for (var k = 0u; k < 4u; k++) {
        let i = base + k * 256u + lid;
        if (i < p.rows) { acc += x[i]; }
    }
    lanes[lid] = acc;
    workgroupBarrier();
    for (var stride = 128u; stride > 0u; stride >>= 1u) {
        if (lid < stride) { lanes[lid] += lanes[lid + stride]; }
        workgroupBarrier();
    }
    if (lid == 0u && base < p.rows) { out[group] = lanes[0]; }
}
