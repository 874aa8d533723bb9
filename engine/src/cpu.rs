//! The CPU reference: every op as plain loops on host slices, accumulating in f64.
//! Written to be obviously right, not fast; the tests hold each kernel against it.
//!
//! Explained in the tour: docs/tour/05-softmax-layernorm.md.

/// c[batch] = op(a[batch]) @ op(b[batch]) (+ bias); `b_shared`: one b for all batches.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    a: &[f32],
    b: &[f32],
    bias: Option<&[f32]>,
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
    trans_a: bool,
    trans_b: bool,
    b_shared: bool,
) -> Vec<f32> {
    let mut c = vec![0.0; batch * m * n];
    for bt in 0..batch {
        let a = &a[bt * m * k..];
        let b = if b_shared { b } else { &b[bt * k * n..] };
        for i in 0..m {
            for j in 0..n {
                let mut acc = bias.map_or(0.0, |bias| bias[j] as f64);
                for p in 0..k {
                    let av = if trans_a { a[p * m + i] } else { a[i * k + p] };
                    let bv = if trans_b { b[j * k + p] } else { b[p * n + j] };
                    acc += av as f64 * bv as f64;
                }
                c[bt * m * n + i * n + j] = acc as f32;
            }
        }
    }
    c
}

/// a (op) b with b repeated over a's leading elements.
pub fn binary(a: &[f32], b: &[f32], op: fn(f64, f64) -> f64) -> Vec<f32> {
    a.iter()
        .enumerate()
        .map(|(i, &x)| op(x as f64, b[i % b.len()] as f64) as f32)
        .collect()
}

/// Sum of x viewed as [rows, inner] over its rows.
pub fn sum_leading(x: &[f32], inner: usize) -> Vec<f32> {
    let mut acc = vec![0.0f64; inner];
    for (i, &v) in x.iter().enumerate() {
        acc[i % inner] += v as f64;
    }
    acc.into_iter().map(|v| v as f32).collect()
}

/// erf by its Maclaurin series (|x| < 3) or continued fraction of erfc (|x| >= 3),
/// both to f64 precision: an independent check of the kernel's approximation.
pub fn erf(x: f64) -> f64 {
    let ax = x.abs();
    let r = if ax < 3.0 {
        let mut term = ax;
        let mut sum = ax;
        let mut n = 0.0;
        while term.abs() > 1e-17 * sum.abs() {
            n += 1.0;
            term *= -ax * ax / n;
            sum += term / (2.0 * n + 1.0);
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        // erfc(x) = exp(-x^2)/sqrt(pi) * 1/(x + 1/2/(x + 1/(x + 3/2/(x + ...))))
        let mut f = 0.0;
        for n in (1..60).rev() {
            f = (n as f64 / 2.0) / (ax + f);
        }
        1.0 - (-ax * ax).exp() / std::f64::consts::PI.sqrt() / (ax + f)
    };
    r.copysign(x)
}

pub fn gelu(x: &[f32]) -> Vec<f32> {
    x.iter()
        .map(|&v| {
            let v = v as f64;
            (0.5 * v * (1.0 + erf(v / std::f64::consts::SQRT_2))) as f32
        })
        .collect()
}

pub fn gelu_backward(x: &[f32], dy: &[f32]) -> Vec<f32> {
    x.iter()
        .zip(dy)
        .map(|(&v, &g)| {
            let v = v as f64;
            let cdf = 0.5 * (1.0 + erf(v / std::f64::consts::SQRT_2));
            let pdf = (-0.5 * v * v).exp() / (2.0 * std::f64::consts::PI).sqrt();
            (g as f64 * (cdf + v * pdf)) as f32
        })
        .collect()
}

/// Softmax of each row of length `cols`.
pub fn softmax(x: &[f32], cols: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks(cols) {
        let m = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
        let s: f64 = row.iter().map(|&v| (v as f64 - m).exp()).sum();
        out.extend(row.iter().map(|&v| ((v as f64 - m).exp() / s) as f32));
    }
    out
}

pub fn softmax_backward(y: &[f32], dy: &[f32], cols: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(y.len());
    for (yr, gr) in y.chunks(cols).zip(dy.chunks(cols)) {
        let d: f64 = yr.iter().zip(gr).map(|(&a, &b)| a as f64 * b as f64).sum();
        out.extend(
            yr.iter()
                .zip(gr)
                .map(|(&a, &b)| (a as f64 * (b as f64 - d)) as f32),
        );
    }
    out
}

/// LayerNorm of each row; returns y and (mean, rstd) per row.
pub fn layernorm(
    x: &[f32],
    cols: usize,
    affine: Option<(&[f32], &[f32])>,
    eps: f64,
) -> (Vec<f32>, Vec<(f64, f64)>) {
    let mut y = Vec::with_capacity(x.len());
    let mut stats = Vec::new();
    for row in x.chunks(cols) {
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / cols as f64;
        let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / cols as f64;
        let rstd = 1.0 / (var + eps).sqrt();
        for (c, &v) in row.iter().enumerate() {
            let mut o = (v as f64 - mean) * rstd;
            if let Some((g, b)) = affine {
                o = o * g[c] as f64 + b[c] as f64;
            }
            y.push(o as f32);
        }
        stats.push((mean, rstd));
    }
    (y, stats)
}

/// Gradients (dx, dgamma, dbeta) of LayerNorm.
pub fn layernorm_backward(
    x: &[f32],
    dy: &[f32],
    cols: usize,
    gamma: Option<&[f32]>,
    eps: f64,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (_, stats) = layernorm(x, cols, None, eps);
    let mut dx = Vec::with_capacity(x.len());
    let mut dgamma = vec![0.0f64; cols];
    let mut dbeta = vec![0.0f64; cols];
    for ((row, g), (mean, rstd)) in x.chunks(cols).zip(dy.chunks(cols)).zip(stats) {
        let xhat: Vec<f64> = row.iter().map(|&v| (v as f64 - mean) * rstd).collect();
        let gh: Vec<f64> = (0..cols)
            .map(|c| g[c] as f64 * gamma.map_or(1.0, |w| w[c] as f64))
            .collect();
        let mg = gh.iter().sum::<f64>() / cols as f64;
        let mgx = gh.iter().zip(&xhat).map(|(a, b)| a * b).sum::<f64>() / cols as f64;
        for c in 0..cols {
            dx.push((rstd * (gh[c] - mg - xhat[c] * mgx)) as f32);
            dgamma[c] += g[c] as f64 * xhat[c];
            dbeta[c] += g[c] as f64;
        }
    }
    let f = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect();
    (dx, f(dgamma), f(dbeta))
}

/// x.permute(perm) for a contiguous x of `shape`.
pub fn permute(x: &[f32], shape: &[usize], perm: &[usize]) -> Vec<f32> {
    let rank = shape.len();
    let mut strides = vec![1; rank];
    for d in (0..rank.saturating_sub(1)).rev() {
        strides[d] = strides[d + 1] * shape[d + 1];
    }
    let out_shape: Vec<usize> = perm.iter().map(|&d| shape[d]).collect();
    let mut out = Vec::with_capacity(x.len());
    let mut coord = vec![0; rank];
    for _ in 0..x.len() {
        let src: usize = (0..rank).map(|i| coord[i] * strides[perm[i]]).sum();
        out.push(x[src]);
        for i in (0..rank).rev() {
            coord[i] += 1;
            if coord[i] < out_shape[i] {
                break;
            }
            coord[i] = 0;
        }
    }
    out
}

/// Concatenate tensors (as (data, shape)) along `axis`.
pub fn concat(parts: &[(&[f32], &[usize])], axis: usize) -> Vec<f32> {
    let outer: usize = parts[0].1[..axis].iter().product();
    let mut out = Vec::new();
    for o in 0..outer {
        for (data, shape) in parts {
            let block: usize = shape[axis..].iter().product();
            out.extend_from_slice(&data[o * block..(o + 1) * block]);
        }
    }
    out
}

/// out[g, k] = x[g % B, idx[g, k]] for x [B, N, D], idx [G, K].
pub fn gather_rows(x: &[f32], b: usize, n: usize, d: usize, idx: &[u32], k: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(idx.len() * d);
    for (row, &i) in idx.iter().enumerate() {
        let src = ((row / k) % b * n + i as usize) * d;
        out.extend_from_slice(&x[src..src + d]);
    }
    out
}

/// Scatter-add backward of [`gather_rows`].
pub fn gather_rows_backward(
    dy: &[f32],
    b: usize,
    n: usize,
    d: usize,
    idx: &[u32],
    k: usize,
) -> Vec<f32> {
    let mut dx = vec![0.0f64; b * n * d];
    for (row, &i) in idx.iter().enumerate() {
        let dst = ((row / k) % b * n + i as usize) * d;
        for c in 0..d {
            dx[dst + c] += dy[row * d + c] as f64;
        }
    }
    dx.into_iter().map(|v| v as f32).collect()
}

pub fn smooth_l1(pred: &[f32], target: &[f32], beta: f64) -> f64 {
    let total: f64 = pred
        .iter()
        .zip(target)
        .map(|(&p, &t)| {
            let d = (p as f64 - t as f64).abs();
            if d < beta {
                0.5 * d * d / beta
            } else {
                d - 0.5 * beta
            }
        })
        .sum();
    total / pred.len() as f64
}

pub fn mse(pred: &[f32], target: &[f32]) -> f64 {
    pred.iter()
        .zip(target)
        .map(|(&p, &t)| (p as f64 - t as f64).powi(2))
        .sum::<f64>()
        / pred.len() as f64
}

/// Mean cross-entropy of logits [rows, classes] against labels.
pub fn cross_entropy(logits: &[f32], labels: &[u32], classes: usize) -> f64 {
    let total: f64 = logits
        .chunks(classes)
        .zip(labels)
        .map(|(row, &l)| {
            let m = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
            let lse = m + row.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln();
            lse - row[l as usize] as f64
        })
        .sum();
    total / labels.len() as f64
}

/// One AdamW step as torch.optim.AdamW; returns (param, exp_avg, exp_avg_sq).
#[allow(clippy::too_many_arguments)]
pub fn adamw(
    param: &[f32],
    grad: &[f32],
    m: &[f32],
    v: &[f32],
    step: i32,
    lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (bc1, bc2) = (1.0 - beta1.powi(step), 1.0 - beta2.powi(step));
    let mut out = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..param.len() {
        let g = grad[i] as f64;
        let p = param[i] as f64 * (1.0 - lr * weight_decay);
        let mi = beta1 * m[i] as f64 + (1.0 - beta1) * g;
        let vi = beta2 * v[i] as f64 + (1.0 - beta2) * g * g;
        let p = p - lr / bc1 * mi / (vi.sqrt() / bc2.sqrt() + eps);
        out.0.push(p as f32);
        out.1.push(mi as f32);
        out.2.push(vi as f32);
    }
    out
}

pub fn ema(target: &[f32], source: &[f32], momentum: f64) -> Vec<f32> {
    target
        .iter()
        .zip(source)
        .map(|(&t, &s)| (momentum * t as f64 + (1.0 - momentum) * s as f64) as f32)
        .collect()
}

/// The largest |a[i] - b[i]| (infinite where either is NaN), for reports that compare
/// a kernel's output with this reference.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(
        a.len(),
        b.len(),
        "max_abs_diff of slices of different lengths"
    );
    a.iter().zip(b).fold(0.0, |worst: f64, (&x, &y)| {
        let d = (x as f64 - y as f64).abs();
        if d.is_nan() {
            f64::INFINITY
        } else {
            worst.max(d)
        }
    })
}

/// `n` values uniform in [-1, 1) from `seed`, the same on every machine.
pub fn seeded_uniform(seed: u64, n: usize) -> Vec<f32> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
}
