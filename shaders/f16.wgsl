// f32 to f16 with one rounding on every adapter: to the nearest f16, ties to even, as
// IEEE arithmetic and the CPU reference round. pack2x16float and f16() leave the
// rounding to the driver (on an NVIDIA H200 a mixed product came out one f16 step from
// the CPU's where lavapipe's matched), so values are rounded here first, after which
// either conversion is exact.
// The kernels that store or multiply f16 values have this file prepended.

// x rounded to the nearest f16 value, in f32. Past f16's range (|x| >= 65520, which
// rounds up) it is infinite, as the conversion is in IEEE arithmetic; infinities and
// NaN stay as they are.
fn round_to_f16(x: f32) -> f32 {
    let bits = bitcast<u32>(x);
    let magnitude = bits & 0x7fffffffu;
    let sign = bits & 0x80000000u;
    if (magnitude >= 0x477ff000u) {
        if ((bits & 0x7f800000u) == 0x7f800000u) { return x; }
        return bitcast<f32>(sign | 0x7f800000u);
    }
    // Below 2^-14, f16's subnormals: multiples of 2^-24 (2^-25 itself ties to 0).
    if (magnitude < 0x38800000u) {
        return round(x * 16777216.0) / 16777216.0;
    }
    // Normal: keep 10 of the 23 bits of the fraction, ties to the even one.
    let lsb = (bits >> 13u) & 1u;
    return bitcast<f32>((bits + 0xfffu + lsb) & 0xffffe000u);
}

fn round4_to_f16(x: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(round_to_f16(x.x), round_to_f16(x.y), round_to_f16(x.z), round_to_f16(x.w));
}

// Two values as one word of f16s (the first in the low half), rounded to the nearest
// and clamped to f16's finite range.
fn pack_f16(v: vec2<f32>) -> u32 {
    let clamped = clamp(v, vec2<f32>(-65504.0), vec2<f32>(65504.0));
    return pack2x16float(vec2<f32>(round_to_f16(clamped.x), round_to_f16(clamped.y)));
}
