#!/usr/bin/env bash
# The quality check of mixed precision on a lent GPU, in one device call (about 5
# minutes on an H200): `fmnist` pretraining from seed 0 in f32 and in mixed precision
# with the same build, each then probed (all labels, 1% labels, k-NN of the frozen
# target encoder); mixed should be within 0.5 points of f32. Run from the repository
# root on the GPU machine, with what it reads carried in git-ignored folders, which
# `scripts/gpu-prepare.sh probe` fills here (see docs/results/README.md for the call):
#   .gpu/ijepa            the release binary, built here (both machines are x86-64)
#   .gpu/fashion-mnist/   a copy of /usr/share/datasets/fashion-mnist
#   .gl/*.deb             the Vulkan loader packages, where the machine has none
# Everything it prints also goes to $OUT/gpu-probe.log ($OUT, or ./gpu-out), and each
# run's metrics.jsonl to $OUT/metrics-PRECISION.jsonl.
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/gpu-common.sh gpu-probe

runs=$(mktemp -d)
echo '{"precision": "mixed"}' > "$runs/mixed.json"
for precision in f32 mixed; do
    config=()
    [ "$precision" = mixed ] && config=(--config "$runs/mixed.json")
    # About 2 minutes each on an H200 (2808 steps at ~3,000 images/s, 2026-11-28).
    step 210 "$bin" pretrain --preset fmnist "${config[@]}" --seed 0 \
        --data-dir .gpu/fashion-mnist --out "$runs/$precision" &&
        cp "$runs/$precision/metrics.jsonl" "$out/metrics-$precision.jsonl" &&
        step 60 "$bin" probe "$runs/$precision/checkpoint.safetensors"
done
