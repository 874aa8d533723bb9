// The fragment operations of the cooperative-matrix kernels (matmul_coop.wgsl,
// attention_coop.wgsl) on the hardware's cooperative matrices (`enable
// wgpu_cooperative_matrix;`): each 16x16 fragment is spread over the lanes of the
// subgroup, which load, multiply and store it together. coop_emulated.wgsl gives the
// same operations lane by lane. Each kernel declares the two workgroup arrays they work
// on: `coop_tiles`, its staged f16 operands, from which A and B fragments are loaded,
// and `coop_out`, f32, into which accumulators are stored.

alias Accumulator = coop_mat16x16<f32, C>;
alias FragmentA = coop_mat16x16<f16, A>;
alias FragmentB = coop_mat16x16<f16, B>;

// The hardware keeps its fragments' state itself (the emulation needs the lane).
fn begin_fragments(lane: u32) {}

// An f32 accumulator of zeros.
fn zero_fragment() -> Accumulator {
    return Accumulator();
}

// The 16x16 A operand whose row r, column k is coop_tiles[at + r stride + k].
fn fragment_a(at: u32, stride: u32) -> FragmentA {
    return coopLoadT<FragmentA>(&coop_tiles[at], stride);
}

// The 16x16 B operand whose row k, column n is coop_tiles[at + k stride + n].
fn fragment_b(at: u32, stride: u32) -> FragmentB {
    return coopLoadT<FragmentB>(&coop_tiles[at], stride);
}

// The 16x16 B operand whose row k, column n is coop_tiles[at + n stride + k]: the
// transpose of 16 rows stored from `at` (k^T, of k's rows).
fn fragment_b_transposed(at: u32, stride: u32) -> FragmentB {
    return coopLoad<FragmentB>(&coop_tiles[at], stride);
}

fn multiply_add(a: FragmentA, b: FragmentB, c: Accumulator) -> Accumulator {
    return coopMultiplyAdd(a, b, c);
}

// The accumulator into coop_out, row r, column n at coop_out[at + r stride + n].
fn store_fragment(c: Accumulator, at: u32, stride: u32) {
    coopStoreT(c, &coop_out[at], stride);
}
