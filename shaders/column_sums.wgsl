// The part of a column sum that each workgroup takes, for the kernels that sum x viewed
// as [rows, cols] over chunks of `chunk` rows into partial sums [chunks, cols]:
// reduce.wgsl's sum_columns and sum_columns_pair, and layernorm.wgsl's
// layernorm_param_grads, to which this file is prepended (it reads their `p` and
// COLS_PER_WG). A workgroup is COLS_PER_WG columns x ROW_LANES row lanes; workgroup g,
// numbered across a grid that is 2-D when large (millions of columns), takes column
// group g % groups of row chunk g / groups.

// Set by the host (ops/reduce.rs), which caps the rows of a chunk by it.
override ROW_LANES: u32;

struct ColumnBlock {
    chunk: u32,      // the row of the partial sums it writes
    col: u32,        // the invocation's column (past cols in the last group)
    row_start: u32,  // past rows in the grid's spare workgroups
    row_end: u32,
}

fn column_block(wid: vec3<u32>, nwg: vec3<u32>, lane: u32) -> ColumnBlock {
    let groups = (p.cols + COLS_PER_WG - 1u) / COLS_PER_WG;
    let g = wid.x + wid.y * nwg.x;
    let chunk = g / groups;
    let row_start = chunk * p.chunk;
    return ColumnBlock(chunk, (g % groups) * COLS_PER_WG + lane, row_start,
                       min(row_start + p.chunk, p.rows));
}
