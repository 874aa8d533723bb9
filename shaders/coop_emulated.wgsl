// The fragment operations of coop_fragments.wgsl emulated with plain loads and stores,
// with the meaning the hardware's have: an A or B fragment is where its elements lie
// in `coop_tiles` (the first, and the steps between rows and between columns), an
// accumulator is this lane's share of 16x16 f32 (element lane + i SG, row-major), and
// a multiply-add has each lane compute its elements. Never chosen: it runs the
// cooperative-matrix kernels' tiling, staging and epilogues on any adapter with f16,
// where tests/mixed.rs and tests/attention.rs hold them to the CPU and to the other
// kernels. The host compiles it with SG = 32 (`EMULATED_LANES`): 8 elements a lane.

const LANE_ELEMENTS: u32 = 8u;

alias Accumulator = array<f32, LANE_ELEMENTS>;
alias FragmentA = vec3<u32>;
alias FragmentB = vec3<u32>;

var<private> my_lane: u32;

fn begin_fragments(lane: u32) {
    my_lane = lane;
}

fn zero_fragment() -> Accumulator {
    return Accumulator();
}

fn fragment_a(at: u32, stride: u32) -> FragmentA {
    return vec3<u32>(at, stride, 1u);
}

fn fragment_b(at: u32, stride: u32) -> FragmentB {
    return vec3<u32>(at, stride, 1u);
}

fn fragment_b_transposed(at: u32, stride: u32) -> FragmentB {
    return vec3<u32>(at, 1u, stride);
}

// c + A B over this lane's elements. The loop over them starts at the lane, so that
// its trip count is not a constant: llvmpipe would unroll it at every call, and the
// kernels took minutes to compile.
fn multiply_add(a: FragmentA, b: FragmentB, c: Accumulator) -> Accumulator {
    var s = c;
    var i = 0u;
    for (var e = my_lane; e < 256u; e += SG) {
        let r = e / 16u;
        let n = e % 16u;
        for (var k = 0u; k < 16u; k++) {
            s[i] += f32(coop_tiles[a.x + r * a.y + k * a.z]) * f32(coop_tiles[b.x + k * b.y + n * b.z]);
        }
        i++;
    }
    return s;
}

fn store_fragment(c: Accumulator, at: u32, stride: u32) {
    var i = 0u;
    for (var e = my_lane; e < 256u; e += SG) {
        coop_out[at + (e / 16u) * stride + e % 16u] = c[i];
        i++;
    }
}
