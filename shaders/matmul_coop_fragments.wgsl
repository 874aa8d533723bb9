// matmul_coop.wgsl's fragment operations on the hardware's cooperative matrices
// (`enable wgpu_cooperative_matrix;`): each 16x16 fragment is spread over the lanes of
// the subgroup, which load, multiply and store it together. Fragments are read from
// and written to the kernel's workgroup tiles, row-major (the T forms).

// The hardware keeps its fragments' state itself (the emulation needs the lane).
fn begin_fragments(lane: u32) {}

// An f32 accumulator of zeros.
fn zero_fragment() -> coop_mat16x16<f32, C> {
    return coop_mat16x16<f32, C>();
}

// Rows r..r+16, columns k..k+16 of the op(a) slice, `at` = r COOP_K + k.
fn fragment_a(at: u32) -> coop_mat16x16<f16, A> {
    return coopLoadT<coop_mat16x16<f16, A>>(&a_coop[at], COOP_K);
}

// Rows k..k+16, columns n..n+16 of the op(b) slice, `at` = k COOP_TILE + n.
fn fragment_b(at: u32) -> coop_mat16x16<f16, B> {
    return coopLoadT<coop_mat16x16<f16, B>>(&b_coop[at], COOP_TILE);
}

fn multiply_add(a: coop_mat16x16<f16, A>, b: coop_mat16x16<f16, B>,
                c: coop_mat16x16<f32, C>) -> coop_mat16x16<f32, C> {
    return coopMultiplyAdd(a, b, c);
}

// The fragment into the f32 tile at `at` = r COOP_TILE + n.
fn store_fragment(c: coop_mat16x16<f32, C>, at: u32) {
    coopStoreT(c, &c_coop[at], COOP_TILE);
}
