#!/usr/bin/env bash
# The kernel benchmark table: the adapter, matmul up to 4096^3 on every candidate plan of
# each shape (the plan in use last), attention forward + backward on every candidate
# plan, the plan in use marked (8 images x 4 heads, and a ViT-S batch of 64 images x 6 heads),
# a training step of the fmnist preset and of a ViT-S/16 at 224, then the fmnist step
# profiled kernel by kernel.
# Usage: scripts/bench-kernels.sh [path to the ijepa binary] > table.txt
# IJEPA_ADAPTER picks the adapter as everywhere else.
set -euo pipefail
ijepa=${1:-target/release/ijepa}
"$ijepa" info
"$ijepa" bench matmul --size 4096 --every-kernel
"$ijepa" bench attention --tokens 49,196,256,512,1024 --head-dims 32,64,128 --batch 8 --heads 4
"$ijepa" bench attention --tokens 196,256 --head-dims 64 --batch 64 --heads 6
"$ijepa" bench step --preset fmnist
# A ViT-S/16 at 224 (scripts/vit_small_224.json): the workload I-JEPA papers report.
"$ijepa" bench step --config "$(dirname "$0")/vit_small_224.json" --steps 3
# The same attention cases with every dispatch timed by the GPU's timestamps: the
# kernels' own time per call, without the submission overhead.
IJEPA_PROFILE=1 "$ijepa" bench attention --tokens 256,1024 --head-dims 64 --batch 8 --heads 4
# Where a training step's GPU time goes, kernel by kernel.
IJEPA_PROFILE=1 "$ijepa" bench step --preset fmnist --steps 3
