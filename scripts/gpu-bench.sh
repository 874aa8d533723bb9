#!/usr/bin/env bash
# The GPU benchmarks of one lent-device call, in one script: the adapter (and its
# cooperative-matrix shapes); with cooperative matrices opened
# (IJEPA_COOPERATIVE_MATRIX=1), the mixed products against the CPU on every kernel, the
# tensor-core one included; every attention plan on f32 and f16 qkv; the golden steps;
# `ijepa bench step` beside PyTorch's eager f32 step for `fmnist` (ours in f32, with
# plans measured (IJEPA_MEASURE_PLANS=1), in mixed precision, and in mixed on tensor
# cores) and a ViT-S/16 at 224 (batch 64; the same, and mixed on tensor cores with
# plans measured); matmul up to 4096^3
# in f32, and in f16 on every kernel; attention forward and backward on every plan,
# f32 and f16 qkv, last, as the least needed. Run from the
# repository root on the GPU machine, with what it cannot build there carried in
# git-ignored folders, which `scripts/gpu-prepare.sh bench` fills here (see
# docs/results/README.md for the call):
#   .gpu/ijepa            the release binary, built here (both machines are x86-64)
#   .gpu/mixed-tests      the release build of tests/mixed.rs
#   .gpu/attention-tests  the release build of tests/attention.rs
#   .gpu/torch_step.py    a copy of ../shared/bench/torch_step.py
#   .gl/*.deb             the Vulkan loader packages, where the machine has none
# Everything it prints also goes to $OUT/gpu-bench.log ($OUT, or ./gpu-out).
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/gpu-common.sh gpu-bench

coop="env IJEPA_COOPERATIVE_MATRIX=1"
step 30 "$bin" info
step 30 $coop "$bin" info
# The tensor-core kernel against the CPU first: it has not run on hardware before.
step 120 $coop .gpu/mixed-tests mixed_products_match_the_cpu --nocapture
step 120 .gpu/attention-tests every_attention_plan --nocapture
for f in tests/data/*.safetensors; do
    step 60 "$bin" check-reference "$f"
done
step 90 "$bin" bench step --preset fmnist --steps 20
step 120 env IJEPA_MEASURE_PLANS=1 "$bin" bench step --preset fmnist --steps 20
step 90 "$bin" bench step --preset fmnist --steps 20 --precision mixed
step 90 $coop "$bin" bench step --preset fmnist --steps 20 --precision mixed
step 90 python3 .gpu/torch_step.py --preset fmnist --device cuda
step 120 "$bin" bench step --preset fmnist --config scripts/vit_small_224.json --steps 5
step 120 env IJEPA_MEASURE_PLANS=1 "$bin" bench step --preset fmnist --config scripts/vit_small_224.json --steps 5
step 120 "$bin" bench step --preset fmnist --config scripts/vit_small_224.json --steps 5 --precision mixed
step 120 $coop "$bin" bench step --preset fmnist --config scripts/vit_small_224.json --steps 5 --precision mixed
step 150 $coop IJEPA_MEASURE_PLANS=1 "$bin" bench step --preset fmnist --config scripts/vit_small_224.json --steps 5 --precision mixed
step 120 python3 .gpu/torch_step.py --preset vit_small_224 --device cuda
step 120 "$bin" bench matmul --size 4096
step 120 $coop "$bin" bench matmul --size 4096 --f16 --every-kernel
step 90 "$bin" bench attention
step 90 "$bin" bench attention --f16
