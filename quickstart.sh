#!/usr/bin/env bash
# Quick start: install what is missing (a Vulkan driver only where none exists, the
# Fashion-MNIST package), build in release, pretrain with the preset that suits the
# adapter (small and short on a CPU adapter, the full Fashion-MNIST run on a GPU), and
# probe the result against raw pixels and a random-init encoder.
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v cargo >/dev/null; then
    echo "Rust is needed: install it from https://rustup.rs, then run $0 again." >&2
    exit 1
fi
scripts/install-deps.sh
cargo build --release
bin=./target/release/ijepa
out=runs/quickstart
$bin info
rm -rf "$out"
$bin pretrain --preset auto --out "$out"
$bin probe "$out/checkpoint.safetensors"
echo "training curves: $out/curves.png, metrics: $out/metrics.jsonl"
