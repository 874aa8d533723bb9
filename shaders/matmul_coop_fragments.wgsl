// matmul_coop.wgsl's fragment operations on the hardware's cooperative matrices
// (`enable wgpu_cooperative_matrix;`): each 16x16 fragment is spread over the lanes of
// the subgroup, which load, multiply and store it together. Fragments are read from
// and written to the kernel's workgroup tiles, row-major (the T forms).

alias Accumulator = coop_mat16x16<f32, C>;
alias FragmentA = coop_mat16x16<f16, A>;
alias FragmentB = coop_mat16x16<f16, B>;

var<private> my_lane: u32;

// The hardware keeps its fragments' state itself; the lane is the epilogue's.
fn begin_fragments(lane: u32) {
    my_lane = lane;
}

fn lane_in_subgroup() -> u32 {
    return my_lane;
}

// An f32 accumulator of zeros.
fn zero_fragment() -> Accumulator {
    return Accumulator();
}

// Rows r..r+16, columns k..k+16 of the op(a) slice, `at` = r A_STRIDE + k.
fn fragment_a(at: u32) -> FragmentA {
    return coopLoadT<FragmentA>(&a_coop[at], A_STRIDE);
}

// Rows k..k+16, columns n..n+16 of the op(b) slice, `at` = k B_STRIDE + n.
fn fragment_b(at: u32) -> FragmentB {
    return coopLoadT<FragmentB>(&b_coop[at], B_STRIDE);
}

fn multiply_add(a: FragmentA, b: FragmentB, c: Accumulator) -> Accumulator {
    return coopMultiplyAdd(a, b, c);
}

// The fragment into a 16x16 f32 slot of c_coop at `at`.
fn store_fragment(c: Accumulator, at: u32) {
    coopStoreT(c, &c_coop[at], 16u);
}
