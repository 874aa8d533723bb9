// matmul_coop.wgsl's fragment operations emulated with plain loads and stores, with
// the meaning the hardware's have (matmul_coop_fragments.wgsl): an A or B fragment is
// its place in the staged slice, an accumulator is a slot of 16x16 f32 in workgroup
// memory of which each lane owns every SG-th element, and a multiply-add has each lane
// compute its elements. Never chosen: it runs matmul_coop.wgsl's tiling, staging and
// epilogue on any adapter with f16, where tests/mixed.rs holds them to the CPU.

// The workgroup's accumulators (the kernel keeps four), and this lane and the slots
// handed out so far.
var<workgroup> accumulators: array<f32, 4u * 256u>;
var<private> my_lane: u32;
var<private> slots_used: u32;

fn begin_fragments(lane: u32) {
    my_lane = lane;
    slots_used = 0u;
}

// A fresh slot of zeros.
fn zero_fragment() -> u32 {
    let slot = slots_used;
    slots_used += 1u;
    for (var e = my_lane; e < 256u; e += SG) { accumulators[slot * 256u + e] = 0.0; }
    return slot;
}

fn fragment_a(at: u32) -> u32 {
    return at;
}

fn fragment_b(at: u32) -> u32 {
    return at;
}

// slot += A B over this lane's elements (row-major 16x16).
fn multiply_add(a: u32, b: u32, slot: u32) -> u32 {
    for (var e = my_lane; e < 256u; e += SG) {
        let r = e / 16u;
        let n = e % 16u;
        var s = accumulators[slot * 256u + e];
        for (var k = 0u; k < 16u; k++) {
            s += f32(a_coop[a + r * COOP_K + k]) * f32(b_coop[b + k * COOP_TILE + n]);
        }
        accumulators[slot * 256u + e] = s;
    }
    return slot;
}

fn store_fragment(slot: u32, at: u32) {
    for (var e = my_lane; e < 256u; e += SG) {
        c_coop[at + (e / 16u) * COOP_TILE + e % 16u] = accumulators[slot * 256u + e];
    }
}
