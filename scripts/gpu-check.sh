#!/usr/bin/env bash
# The short GPU call that follows a change of plans or kernels (about 5 minutes on an
# H200, most needed first, inside GPU_DEADLINE): the golden steps; `bench step` for
# `fmnist` and ViT-S/16 at 224 in f32 and in mixed precision (cooperative matrices
# opened); f16 and f32 matmul to 4096^3 on every kernel; PyTorch's eager f32 steps
# beside them; the ViT-S steps with plans measured (into plan files that come back in
# $OUT), the f32 one again following its file, and its kernels timed (IJEPA_PROFILE=1);
# the `fmnist` step's kernels timed and its plans measured;
# the tensor-core kernel's parts timed alone (--coop-anatomy); every attention plan on an
# f16 qkv timed, the tensor-core family among them; last, attention on every plan and
# the mixed products on every kernel, tensor cores included (IJEPA_COOPERATIVE_MATRIX=1),
# against the CPU and the composed path. It carries what scripts/gpu-bench.sh does
# (docs/results/README.md gives the call).
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/gpu-common.sh gpu-check

coop="env IJEPA_COOPERATIVE_MATRIX=1"
vits=scripts/vit_small_224.json
for f in tests/data/*.safetensors; do
    step 20 "$bin" check-reference "$f"
done
step 30 "$bin" bench step --preset fmnist --steps 20
step 30 $coop "$bin" bench step --preset fmnist --steps 20 --precision mixed
step 40 "$bin" bench step --preset fmnist --config $vits --steps 5
step 40 $coop "$bin" bench step --preset fmnist --config $vits --steps 5 --precision mixed
step 60 $coop "$bin" bench matmul --size 4096 --f16 --every-kernel
step 60 "$bin" bench matmul --size 4096 --every-kernel
step 40 python3 .gpu/torch_step.py --preset fmnist --device cuda
step 40 python3 .gpu/torch_step.py --preset vit_small_224 --device cuda
# The measured choices come back in plan files, for the rules and for runs to follow.
step 60 env IJEPA_MEASURE_PLANS=1 IJEPA_PLANS="$out/plans-f32.json" "$bin" bench step --preset fmnist --config $vits --steps 5
step 60 $coop IJEPA_MEASURE_PLANS=1 IJEPA_PLANS="$out/plans-mixed.json" "$bin" bench step --preset fmnist --config $vits --steps 5 --precision mixed
step 30 env IJEPA_PLANS="$out/plans-f32.json" "$bin" bench step --preset fmnist --config $vits --steps 5
step 60 env IJEPA_PROFILE=1 "$bin" bench step --preset fmnist --config $vits --steps 2
# The fmnist step's kernels (its short LayerNorm rows run on lanes per row by rule), and
# its plans measured, the row kernels' among them.
step 20 env IJEPA_PROFILE=1 "$bin" bench step --preset fmnist --steps 5
step 40 env IJEPA_MEASURE_PLANS=1 IJEPA_PLANS="$out/plans-fmnist.json" "$bin" bench step --preset fmnist --steps 5
# What bounds the tensor-core kernel: each part of it alone, beside the whole above.
for part in staging fragments half-accumulators; do
    step 30 $coop "$bin" bench matmul --size 4096 --f16 --kernel MixedCoop --coop-anatomy $part
done
# Attention on every plan, the tensor-core family's among them (timed, then held to the
# composed path).
step 30 $coop "$bin" bench attention --f16
step 60 $coop .gpu/attention-tests every_attention_plan --nocapture
# Last, with what is left: it compiles every candidate kernel for every shape, and ran
# past 40 s on the H200 without a verdict.
step 300 $coop .gpu/mixed-tests mixed_products_match_the_cpu --nocapture
