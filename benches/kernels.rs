//! Kernel throughput: matmul (square and ViT shapes) and attention, forward and
//! backward, in GFLOP/s via criterion's throughput (reported as elements = flops).
//! Run with `cargo bench --bench kernels`; `IJEPA_ADAPTER` picks the adapter.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use engine::ops::{self, matmul::matmul_forward, Transpose};
use engine::{Device, Tensor};

fn filled(dev: &std::sync::Arc<Device>, shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    Tensor::from_slice(dev, shape, &data).unwrap()
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

fn attention(c: &mut Criterion) {
    let dev = Device::shared().unwrap();
    let mut group = c.benchmark_group(format!("attention [{}]", dev.info().name));
    group.sample_size(10);
    for (tokens, head_dim) in [(49, 32), (196, 64), (256, 64)] {
        let bh = 8;
        let q = filled(&dev, &[bh, tokens, head_dim]);
        let flops = 4 * bh * tokens * tokens * head_dim;
        group.throughput(Throughput::Elements(flops as u64));
        group.bench_function(
            BenchmarkId::from_parameter(format!("N={tokens} hd={head_dim}")),
            |bench| {
                bench.iter(|| {
                    let out = engine::no_grad(|| ops::attention(&q, &q, &q, 0.125)).unwrap();
                    dev.synchronize();
                    out
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, matmul, attention);
criterion_main!(benches);
