// matmul_coop.wgsl's fragment operations emulated with plain loads and stores, with
// the meaning the hardware's have (matmul_coop_fragments.wgsl): an A or B fragment is
// its place in the staged slice, an accumulator is a slot of 16x16 f32 of which each
// lane of the subgroup holds every SG-th element in its own memory, and a multiply-add
// has each lane compute its elements. Never chosen: it runs matmul_coop.wgsl's tiling,
// staging and epilogue on any adapter with f16, where tests/mixed.rs holds them to the
// CPU. The host compiles it with SG = 32 (EMULATED_LANES): 8 elements of each slot
// per lane.

alias Accumulator = u32;
alias FragmentA = u32;
alias FragmentB = u32;

const LANE_ELEMENTS: u32 = 8u;

// The kernel's 16 accumulators, this lane's elements of each, this lane, and the slots
// handed out so far.
var<private> accumulators: array<f32, 16u * LANE_ELEMENTS>;
var<private> my_lane: u32;
var<private> slots_used: u32;

fn begin_fragments(lane: u32) {
    my_lane = lane;
    slots_used = 0u;
}

fn lane_in_subgroup() -> u32 {
    return my_lane;
}

// A fresh slot of zeros.
fn zero_fragment() -> Accumulator {
    let slot = slots_used;
    slots_used += 1u;
    for (var i = 0u; i < LANE_ELEMENTS; i++) { accumulators[slot * LANE_ELEMENTS + i] = 0.0; }
    return slot;
}

fn fragment_a(at: u32) -> FragmentA {
    return at;
}

fn fragment_b(at: u32) -> FragmentB {
    return at;
}

// slot += A B over this lane's elements (row-major 16x16).
fn multiply_add(a: FragmentA, b: FragmentB, slot: Accumulator) -> Accumulator {
    for (var i = 0u; i < LANE_ELEMENTS; i++) {
        let e = my_lane + i * SG;
        let r = e / 16u;
        let n = e % 16u;
        var s = accumulators[slot * LANE_ELEMENTS + i];
        for (var k = 0u; k < 16u; k++) {
            s += f32(a_coop[a + r * A_STRIDE + k]) * f32(b_coop[b + k * B_STRIDE + n]);
        }
        accumulators[slot * LANE_ELEMENTS + i] = s;
    }
    return slot;
}

fn store_fragment(slot: Accumulator, at: u32) {
    for (var i = 0u; i < LANE_ELEMENTS; i++) {
        let e = my_lane + i * SG;
        c_coop[at + e] = accumulators[slot * LANE_ELEMENTS + i];
    }
}
