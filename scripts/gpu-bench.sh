#!/usr/bin/env bash
# The GPU benchmarks of one lent-device call, in one script, most needed first, each
# command under a time limit and the whole inside a deadline (scripts/gpu-common.sh):
# the adapter and its cooperative-matrix shapes; `ijepa bench step` for `fmnist` and a
# ViT-S/16 at 224 (batch 64), each in f32, mixed precision and mixed with tensor cores
# opened, beside PyTorch's eager f32 step on the same GPU; matmul up to 4096^3 on
# every kernel in f32 and f16; the same steps with every dispatch timed by kernel
# (IJEPA_PROFILE=1); the mixed products on every kernel (tensor cores included,
# IJEPA_COOPERATIVE_MATRIX=1) and every attention plan on f32 and f16 qkv against the
# CPU, and the golden steps; the steps with plans measured (IJEPA_MEASURE_PLANS=1);
# attention on every plan, last. Run from the repository root
# on the GPU machine, with what it cannot build there carried in git-ignored folders,
# which `scripts/gpu-prepare.sh` fills here (docs/results/README.md gives the call):
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
vits=scripts/vit_small_224.json
step 30 "$bin" info
step 30 $coop "$bin" info
# The speed targets: our step beside PyTorch's eager f32 step on the same GPU.
step 60 "$bin" bench step --preset fmnist --steps 20
step 60 "$bin" bench step --preset fmnist --steps 20 --precision mixed
step 60 $coop "$bin" bench step --preset fmnist --steps 20 --precision mixed
step 90 python3 .gpu/torch_step.py --preset fmnist --device cuda
step 90 "$bin" bench step --preset fmnist --config $vits --steps 5
step 90 "$bin" bench step --preset fmnist --config $vits --steps 5 --precision mixed
step 90 $coop "$bin" bench step --preset fmnist --config $vits --steps 5 --precision mixed
step 120 python3 .gpu/torch_step.py --preset vit_small_224 --device cuda
step 120 "$bin" bench matmul --size 4096 --every-kernel
step 120 $coop "$bin" bench matmul --size 4096 --f16 --every-kernel
# Where the time goes: every dispatch waited for and timed by kernel.
step 60 env IJEPA_PROFILE=1 "$bin" bench step --preset fmnist --steps 5
step 90 env IJEPA_PROFILE=1 "$bin" bench step --preset fmnist --config $vits --steps 2
step 90 $coop IJEPA_PROFILE=1 "$bin" bench step --preset fmnist --config $vits --steps 2 --precision mixed
# Correctness on the hardware: the mixed products on every kernel, tensor cores
# included, and every attention plan against the CPU; the golden steps.
step 150 $coop .gpu/mixed-tests mixed_products_match_the_cpu --nocapture
step 120 $coop .gpu/attention-tests every_attention_plan --nocapture
for f in tests/data/*.safetensors; do
    step 60 "$bin" check-reference "$f"
done
# Plans measured on the device instead of chosen by rule.
step 120 env IJEPA_MEASURE_PLANS=1 "$bin" bench step --preset fmnist --steps 20
step 150 env IJEPA_MEASURE_PLANS=1 "$bin" bench step --preset fmnist --config $vits --steps 5
step 150 $coop IJEPA_MEASURE_PLANS=1 "$bin" bench step --preset fmnist --config $vits --steps 5 --precision mixed
step 90 "$bin" bench attention
step 90 "$bin" bench attention --f16
