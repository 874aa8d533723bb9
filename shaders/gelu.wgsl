// GELU, exact erf form (torch.nn.GELU()), as functions for the kernels that apply
// it: the element-wise ones and the matmul epilogues. The engine prepends this file
// to their sources (engine/src/shaders.rs).

// erfc(z) for z >= 0 by the Chebyshev fit of Numerical Recipes (erfcc):
// relative error below 1.2e-7 everywhere, so the tails of GELU stay accurate too.
fn erfc_pos(z: f32) -> f32 {
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 +
        t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 +
        t * (-0.82215223 + t * 0.17087277))))))));
    return t * exp(-z * z + poly);
}

// Phi(x), the standard normal CDF, = 0.5 * erfc(-x / sqrt(2)).
fn normal_cdf(x: f32) -> f32 {
    let half_tail = 0.5 * erfc_pos(abs(x) * 0.70710678118654752);
    return select(1.0 - half_tail, half_tail, x < 0.0);
}

// x * Phi(x).
fn gelu(x: f32) -> f32 {
    return x * normal_cdf(x);
}

// Phi(x) + x * phi(x), the derivative of gelu.
fn gelu_grad(x: f32) -> f32 {
    return normal_cdf(x) + x * 0.39894228040143268 * exp(-0.5 * x * x);
}

fn gelu4(v: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(gelu(v.x), gelu(v.y), gelu(v.z), gelu(v.w));
}

fn gelu_grad4(v: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(gelu_grad(v.x), gelu_grad(v.y), gelu_grad(v.z), gelu_grad(v.w));
}
