//! Evaluation of frozen features: average-pooled encoder features extracted on the
//! GPU, a linear probe (multinomial logistic regression, L-BFGS, on the GPU) and a
//! cosine k-NN classifier.
//!
//! Explained in the tour: docs/tour/11-pretrain-probe.md.

use std::sync::Arc;

use anyhow::{bail, Result};
use engine::ops::{self, Transpose};
use engine::{no_grad, Device, Indices, Tensor};
use model::vit::VisionTransformer;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::data::{eval_images, Dataset};

/// Images `indices` of `data` at the evaluation size, normalised with `stats`:
/// [n, C, H, W] flattened. An image file that cannot be read is evaluated as the mean
/// image (zeros after normalisation), with a warning naming it.
pub fn normalised_pixels(data: &Dataset, stats: &[(f32, f32)], indices: &[usize]) -> Vec<f32> {
    let plane = data.height * data.width;
    let mut out = Vec::with_capacity(indices.len() * data.image_len());
    for (image, &i) in eval_images(data, indices, 0).into_iter().zip(indices) {
        match image {
            Ok(image) => {
                for (c, chunk) in image.chunks(plane).enumerate() {
                    let (mean, std) = stats[c];
                    out.extend(chunk.iter().map(|&p| (p as f32 / 255.0 - mean) / std));
                }
            }
            Err(e) => {
                eprintln!("warning: {e:#}; image {i} evaluated as the mean image");
                out.extend(std::iter::repeat_n(0.0, data.image_len()));
            }
        }
    }
    out
}

/// The encoder's features averaged over patches, of its last `layers` blocks (each
/// through the final LayerNorm) side by side, first to last: [n, layers * D]
/// row-major. `layers` = 1 is the last layer's mean, the paper's protocol.
pub fn pooled_features(
    encoder: &VisionTransformer,
    data: &Dataset,
    stats: &[(f32, f32)],
    indices: &[usize],
    batch: usize,
    layers: usize,
) -> Result<Vec<f32>> {
    let device = encoder.pos_embed.device();
    let (n, d) = (encoder.config.num_patches(), encoder.config.embed_dim);
    let mean_row = Tensor::from_slice(device, &[n, 1], &vec![1.0 / n as f32; n])?;
    let mut out = Vec::with_capacity(indices.len() * d * layers);
    for chunk in indices.chunks(batch) {
        let pixels = normalised_pixels(data, stats, chunk);
        let images = Tensor::from_slice(
            device,
            &[chunk.len(), data.channels, data.height, data.width],
            &pixels,
        )?;
        let pooled = no_grad(|| -> Result<Vec<Vec<f32>>> {
            encoder
                .forward_last(&images, layers)?
                .iter()
                .map(|x| {
                    // [B, N, D] -> [B, D, N] @ [N, 1] = the mean over patches.
                    let mean = ops::matmul(
                        &ops::permute(x, &[0, 2, 1])?,
                        &mean_row,
                        Transpose::NONE,
                        None,
                    )?;
                    Ok(mean.to_vec())
                })
                .collect()
        })?;
        for row in 0..chunk.len() {
            for layer in &pooled {
                out.extend_from_slice(&layer[row * d..(row + 1) * d]);
            }
        }
    }
    Ok(out)
}

/// RankMe (Garrido et al., 2023), the effective rank of features x [rows, cols]:
/// exp of the entropy of the singular values normalised to sum 1. From 1 (collapsed to
/// one direction) to `cols` (every direction used alike). The singular values are the
/// square roots of the eigenvalues of x^T x, found by cyclic Jacobi rotations in f64.
pub fn rankme(x: &[f32], cols: usize) -> f64 {
    let mut a = vec![0f64; cols * cols];
    for row in x.chunks(cols) {
        for i in 0..cols {
            let ri = row[i] as f64;
            for j in i..cols {
                a[i * cols + j] += ri * row[j] as f64;
            }
        }
    }
    for i in 0..cols {
        for j in 0..i {
            a[i * cols + j] = a[j * cols + i];
        }
    }
    let singular: Vec<f64> = symmetric_eigenvalues(&mut a, cols)
        .into_iter()
        .map(|l| l.max(0.0).sqrt())
        .collect();
    let total: f64 = singular.iter().sum();
    if total == 0.0 {
        return 1.0;
    }
    let entropy: f64 = singular
        .iter()
        .map(|s| s / total + 1e-12)
        .map(|p| -p * p.ln())
        .sum();
    entropy.exp()
}

/// The eigenvalues of the symmetric n x n matrix `a` (overwritten), by cyclic Jacobi
/// sweeps until the off-diagonal part is negligible.
fn symmetric_eigenvalues(a: &mut [f64], n: usize) -> Vec<f64> {
    let scale: f64 = a
        .iter()
        .map(|v| v * v)
        .sum::<f64>()
        .sqrt()
        .max(f64::MIN_POSITIVE);
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * n + j] * a[i * n + j])
            .sum::<f64>()
            .sqrt();
        if off <= 1e-14 * scale {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq.abs() <= 1e-300 {
                    continue;
                }
                // The rotation that zeroes a[p][q].
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
            }
        }
    }
    (0..n).map(|i| a[i * n + i]).collect()
}

/// Per-column mean and std of x [rows, cols] (std floored to avoid division by 0).
pub fn column_stats(x: &[f32], cols: usize) -> (Vec<f32>, Vec<f32>) {
    let rows = (x.len() / cols) as f64;
    let mut mean = vec![0f64; cols];
    let mut sq = vec![0f64; cols];
    for row in x.chunks(cols) {
        for (c, &v) in row.iter().enumerate() {
            mean[c] += v as f64;
            sq[c] += (v as f64) * (v as f64);
        }
    }
    let m: Vec<f32> = mean.iter().map(|s| (s / rows) as f32).collect();
    let s: Vec<f32> = sq
        .iter()
        .zip(&m)
        .map(|(q, &mu)| ((q / rows - (mu as f64).powi(2)).max(0.0).sqrt().max(1e-6)) as f32)
        .collect();
    (m, s)
}

pub fn standardise(x: &mut [f32], cols: usize, mean: &[f32], std: &[f32]) {
    for row in x.chunks_mut(cols) {
        for (c, v) in row.iter_mut().enumerate() {
            *v = (*v - mean[c]) / std[c];
        }
    }
}

/// `per_class` images of each class chosen with a fixed seed (the low-shot split).
pub fn balanced_subset(labels: &[u32], classes: usize, per_class: usize, seed: u64) -> Vec<usize> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut picked = Vec::new();
    for c in 0..classes as u32 {
        let mut idx: Vec<usize> = labels
            .iter()
            .enumerate()
            .filter(|(_, &l)| l == c)
            .map(|(i, _)| i)
            .collect();
        idx.shuffle(&mut rng);
        picked.extend(idx.into_iter().take(per_class));
    }
    picked.sort();
    picked
}

/// Rows of a [rows, cols] matrix.
pub fn select_rows(x: &[f32], cols: usize, rows: &[usize]) -> Vec<f32> {
    rows.iter()
        .flat_map(|&r| x[r * cols..(r + 1) * cols].iter().copied())
        .collect()
}

/// Training data of the linear probe, resident on the GPU in chunks that fit the
/// adapter's binding limit.
struct ProbeData {
    chunks: Vec<(Tensor, Indices)>,
    rows: usize,
    cols: usize,
}

impl ProbeData {
    fn new(device: &Arc<Device>, x: &[f32], y: &[u32], cols: usize) -> Result<ProbeData> {
        let rows = y.len();
        let limit = (device.info().max_storage_binding as usize / 4 / cols / 2).max(1);
        let per_chunk = limit.min(16_384);
        let mut chunks = Vec::new();
        for start in (0..rows).step_by(per_chunk) {
            let end = (start + per_chunk).min(rows);
            let labels: Vec<i64> = y[start..end].iter().map(|&l| l as i64).collect();
            chunks.push((
                Tensor::from_slice(device, &[end - start, cols], &x[start * cols..end * cols])?,
                Indices::new(device, &[end - start], &labels)?,
            ));
        }
        Ok(ProbeData { chunks, rows, cols })
    }

    /// Mean cross-entropy + l2/2 |W|^2 and its gradient, for theta = [W (classes x
    /// cols), b (classes)].
    fn loss_and_grad(&self, theta: &[f64], classes: usize, l2: f64) -> Result<(f64, Vec<f64>)> {
        let device = self.chunks[0].0.device();
        let wn = classes * self.cols;
        let w_host: Vec<f32> = theta[..wn].iter().map(|&v| v as f32).collect();
        let b_host: Vec<f32> = theta[wn..].iter().map(|&v| v as f32).collect();
        let w = Tensor::from_slice(device, &[classes, self.cols], &w_host)?.requires_grad();
        let b = Tensor::from_slice(device, &[classes], &b_host)?.requires_grad();
        let mut loss = 0.0;
        let mut grad = vec![0.0; theta.len()];
        for (x, y) in &self.chunks {
            let rows = x.shape()[0];
            let l = ops::scale(
                &ops::cross_entropy(&ops::linear(x, &w, Some(&b))?, y)?,
                rows as f32 / self.rows as f32,
            )?;
            let grads = engine::backward(&l)?;
            loss += l.item() as f64;
            for (g, t) in grad.iter_mut().zip(
                grads
                    .get(&w)
                    .unwrap()
                    .to_vec()
                    .into_iter()
                    .chain(grads.get(&b).unwrap().to_vec()),
            ) {
                *g += t as f64;
            }
        }
        for i in 0..wn {
            loss += 0.5 * l2 * theta[i] * theta[i];
            grad[i] += l2 * theta[i];
        }
        Ok((loss, grad))
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Multinomial logistic regression trained by L-BFGS (history 10, backtracking
/// line search); returns the weights [classes, cols] and biases.
pub fn train_logistic(
    device: &Arc<Device>,
    x: &[f32],
    y: &[u32],
    cols: usize,
    classes: usize,
    l2: f64,
    iterations: usize,
) -> Result<(Vec<f32>, Vec<f32>)> {
    if y.is_empty() || x.len() != y.len() * cols {
        bail!(
            "probe: {} feature values for {} labels of {cols} features",
            x.len(),
            y.len()
        );
    }
    let data = ProbeData::new(device, x, y, cols)?;
    let n = classes * cols + classes;
    let mut theta = vec![0.0f64; n];
    let (mut f, mut g) = data.loss_and_grad(&theta, classes, l2)?;
    let mut history: Vec<(Vec<f64>, Vec<f64>, f64)> = Vec::new();
    for _ in 0..iterations {
        // Two-loop recursion: d = -H g.
        let mut q = g.clone();
        let mut alphas = Vec::new();
        for (s, yv, rho) in history.iter().rev() {
            let a = rho * dot(s, &q);
            q.iter_mut().zip(yv).for_each(|(qi, yi)| *qi -= a * yi);
            alphas.push(a);
        }
        let gamma = history
            .last()
            .map_or(1.0 / dot(&g, &g).sqrt().max(1e-12), |(s, yv, _)| {
                dot(s, yv) / dot(yv, yv)
            });
        q.iter_mut().for_each(|v| *v *= gamma);
        for ((s, yv, rho), a) in history.iter().zip(alphas.into_iter().rev()) {
            let beta = rho * dot(yv, &q);
            q.iter_mut()
                .zip(s)
                .for_each(|(qi, si)| *qi += (a - beta) * si);
        }
        let d: Vec<f64> = q.iter().map(|v| -v).collect();
        let slope = dot(&g, &d);
        if slope >= 0.0 {
            history.clear();
            continue;
        }
        let mut step = 1.0;
        let mut accepted = None;
        for _ in 0..20 {
            let trial: Vec<f64> = theta.iter().zip(&d).map(|(t, di)| t + step * di).collect();
            let (ft, gt) = data.loss_and_grad(&trial, classes, l2)?;
            if ft <= f + 1e-4 * step * slope {
                accepted = Some((trial, ft, gt));
                break;
            }
            step *= 0.5;
        }
        let Some((trial, ft, gt)) = accepted else {
            break;
        };
        let s: Vec<f64> = trial.iter().zip(&theta).map(|(a, b)| a - b).collect();
        let yv: Vec<f64> = gt.iter().zip(&g).map(|(a, b)| a - b).collect();
        let sy = dot(&s, &yv);
        if sy > 1e-12 {
            history.push((s, yv, 1.0 / sy));
            if history.len() > 10 {
                history.remove(0);
            }
        }
        let converged = (f - ft).abs() < 1e-9 * f.abs().max(1.0);
        theta = trial;
        f = ft;
        g = gt;
        if converged {
            break;
        }
    }
    let wn = classes * cols;
    Ok((
        theta[..wn].iter().map(|&v| v as f32).collect(),
        theta[wn..].iter().map(|&v| v as f32).collect(),
    ))
}

/// Top-1 accuracy (%) of a linear classifier on x [rows, cols] (computed on the host).
pub fn linear_accuracy(w: &[f32], b: &[f32], x: &[f32], y: &[u32], cols: usize) -> f64 {
    let classes = b.len();
    let correct = x
        .chunks(cols)
        .zip(y)
        .filter(|(row, &label)| {
            let scores = (0..classes).map(|c| {
                b[c] + w[c * cols..(c + 1) * cols]
                    .iter()
                    .zip(*row)
                    .map(|(a, v)| a * v)
                    .sum::<f32>()
            });
            let best =
                scores.enumerate().fold(
                    (0, f32::NEG_INFINITY),
                    |m, (c, s)| if s > m.1 { (c, s) } else { m },
                );
            best.0 as u32 == label
        })
        .count();
    100.0 * correct as f64 / y.len() as f64
}

/// Cosine k-NN top-1 accuracy (%), votes weighted by exp(similarity / 0.07); the
/// similarities are one GPU matmul.
/// `train` and `test` are (features [n, cols], labels [n]).
pub fn knn_accuracy(
    device: &Arc<Device>,
    (train, train_y): (&[f32], &[u32]),
    (test, test_y): (&[f32], &[u32]),
    cols: usize,
    classes: usize,
    k: usize,
) -> Result<f64> {
    let unit = |x: &[f32]| -> Vec<f32> {
        x.chunks(cols)
            .flat_map(|r| {
                let norm = r.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
                r.iter().map(move |v| v / norm)
            })
            .collect()
    };
    let (tr, te) = (unit(train), unit(test));
    let tr_t = Tensor::from_slice(device, &[train_y.len(), cols], &tr)?;
    let mut correct = 0;
    let rows_per_chunk =
        (device.info().max_storage_binding as usize / 4 / train_y.len()).clamp(1, 1024);
    for (chunk_i, chunk) in te.chunks(rows_per_chunk * cols).enumerate() {
        let q = Tensor::from_slice(device, &[chunk.len() / cols, cols], chunk)?;
        let sims = no_grad(|| ops::matmul(&q, &tr_t, Transpose::B, None))?.to_vec();
        for (r, row) in sims.chunks(train_y.len()).enumerate() {
            let mut idx: Vec<usize> = (0..row.len()).collect();
            let kk = k.min(row.len());
            idx.select_nth_unstable_by(kk - 1, |&a, &b| row[b].total_cmp(&row[a]));
            let mut votes = vec![0f64; classes];
            for &i in &idx[..kk] {
                votes[train_y[i] as usize] += ((row[i] as f64) / 0.07).exp();
            }
            let pred = votes
                .iter()
                .enumerate()
                .fold((0, -1.0), |m, (c, &v)| if v > m.1 { (c, v) } else { m })
                .0;
            if pred as u32 == test_y[chunk_i * rows_per_chunk + r] {
                correct += 1;
            }
        }
    }
    Ok(100.0 * correct as f64 / test_y.len() as f64)
}
