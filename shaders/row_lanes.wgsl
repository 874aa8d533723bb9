// The row kernels' invocations and rows, prepended to the two families of row kernels
// (softmax.wgsl, layernorm.wgsl; it reads their `p.rows` and `p.cols`). Set by the host
// (ops/rows.rs): WG invocations per workgroup, and in the kernels that share rows LANES_PER_ROW
// invocations per row (powers of two, LANES_PER_ROW up to WG), so that a workgroup covers
// WG / LANES_PER_ROW rows.
override WG: u32;
override LANES_PER_ROW: u32;

// The row an invocation of the row-sharing kernels works on, and its lane in it. A row
// past the end still takes part in the barriers, with nothing to read.
struct RowLane {
    row: u32,
    lane: u32,
    cols: u32,   // p.cols, or 0 past the end
}

fn row_lane(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> RowLane {
    let row = (wid.x + wid.y * nwg.x) * (WG / LANES_PER_ROW) + lid / LANES_PER_ROW;
    return RowLane(row, lid % LANES_PER_ROW, select(0u, p.cols, row < p.rows));
}
