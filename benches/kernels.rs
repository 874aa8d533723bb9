//! Kernel throughput: matmul (square and ViT shapes) and attention in GFLOP/s via
//! criterion's throughput (elements = flops), and training-step throughput in images.
//! Run with `cargo bench --bench kernels`; `IJEPA_ADAPTER` picks the adapter.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use engine::ops::{self, matmul::matmul_forward, Transpose};
use engine::{Device, Tensor};

fn filled(dev: &std::sync::Arc<Device>, shape: &[usize]) -> Tensor {
    train::synthetic::synthetic(dev, shape).unwrap()
}

fn matmul(c: &mut Criterion) {
    let dev = Device::shared().unwrap();
    let mut group = c.benchmark_group(format!("matmul [{}]", dev.info().name));
    group.sample_size(10);
    let cases: Vec<(String, usize, usize, usize)> = vec![
        ("square 256".into(), 256, 256, 256),
        ("square 512".into(), 512, 512, 512),
        ("square 1024".into(), 1024, 1024, 1024),
        ("vit D=192 fc1".into(), 8 * 196, 192, 768),
        ("vit D=384 fc1".into(), 8 * 196, 384, 1536),
    ];
    for (name, m, k, n) in cases {
        let (a, b) = (filled(&dev, &[m, k]), filled(&dev, &[k, n]));
        group.throughput(Throughput::Elements((2 * m * k * n) as u64));
        group.bench_function(BenchmarkId::from_parameter(name), |bench| {
            bench.iter(|| {
                let out = matmul_forward(&a, &b, Transpose::NONE, None).unwrap();
                dev.synchronize();
                out
            })
        });
    }
    group.finish();
}

/// Attention forward + backward from a packed qkv projection on every candidate plan
/// (the composed path and each fused family that runs on the adapter), over 2 images x
/// 4 heads; flops counted as 12 N^2 hd per head (forward 4, backward 8).
fn attention(c: &mut Criterion) {
    use ops::attention::{attention_with, AttentionPlan, AttentionShape};
    let dev = Device::shared().unwrap();
    let mut group = c.benchmark_group(format!("attention fwd+bwd [{}]", dev.info().name));
    group.sample_size(10);
    let (batch, heads) = (2, 4);
    for head_dim in [32, 64] {
        for tokens in [49, 196, 256, 1024] {
            let qkv = filled(&dev, &[batch, tokens, 3 * heads * head_dim]).requires_grad();
            let w = filled(&dev, &[batch, tokens, heads * head_dim]);
            group.throughput(Throughput::Elements(
                (12 * batch * heads * tokens * tokens * head_dim) as u64,
            ));
            let shape = AttentionShape {
                batch,
                tokens,
                heads,
                head_dim,
                qkv: qkv.dtype(),
            };
            for plan in AttentionPlan::candidates(&dev, &shape) {
                let id = format!("{:?} N={tokens} hd={head_dim}", plan.path);
                group.bench_function(BenchmarkId::from_parameter(id), |bench| {
                    bench.iter(|| {
                        let out = attention_with(&plan, &qkv, heads, 0.125).unwrap();
                        let loss = ops::sum(&ops::mul(&out, &w).unwrap()).unwrap();
                        let grads = engine::backward(&loss).unwrap();
                        dev.synchronize();
                        grads
                    })
                });
            }
        }
    }
    group.finish();
}

/// One I-JEPA training step (`train_step`: forward, backward, AdamW, EMA) of the
/// `fmnist-cpu` preset at batch 32 on synthetic images; throughput in images.
fn train_step(c: &mut Criterion) {
    let dev = Device::shared().unwrap();
    let mut group = c.benchmark_group(format!("train step [{}]", dev.info().name));
    group.sample_size(10);
    let mut config = train::config::PretrainConfig::preset("fmnist-cpu").unwrap();
    config.batch_size = 32;
    let name = format!("{} batch {}", config.model, config.batch_size);
    group.throughput(Throughput::Elements(config.batch_size as u64));
    let mut run = train::synthetic::SyntheticRun::new(&dev, config, 1000).unwrap();
    let mut step = 0;
    group.bench_function(name, |bench| {
        bench.iter(|| {
            step += 1;
            run.step(step % 1000, false).unwrap().loss
        })
    });
    group.finish();
}

criterion_group!(benches, matmul, attention, train_step);
criterion_main!(benches);
