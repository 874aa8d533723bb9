#!/usr/bin/env bash
# Prepares, here, what the lent-GPU calls carry (docs/results/README.md), in git-ignored
# folders: in .gpu/ the release binary, the release builds of tests/mixed.rs and
# tests/attention.rs and a copy of ../shared/bench/torch_step.py (for
# scripts/gpu-bench.sh) and the Fashion-MNIST files (for scripts/gpu-probe.sh); in .gl/
# the Vulkan loader packages, which the GPU machine may lack. Binaries are stripped, so
# that each call's carry stays inside the 64 MiB a call sends.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release
rm -rf .gpu
mkdir -p .gpu
cp target/release/ijepa .gpu/
cp ../shared/bench/torch_step.py .gpu/
for t in mixed attention; do
    built=$(cargo test --release --test "$t" --no-run 2>&1 | grep -o "target/release/deps/$t-[0-9a-f]*")
    cp "$built" ".gpu/$t-tests"
done
strip .gpu/ijepa .gpu/*-tests
cp -r /usr/share/datasets/fashion-mnist .gpu/
# The loaders the device README lists: NVIDIA's Vulkan driver is reached through
# libvulkan1 and builds on libglvnd.
rm -rf .gl
mkdir -p .gl /tmp/amd64/partial
apt=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64)
apt-get "${apt[@]}" update -qq
(cd .gl && apt-get "${apt[@]}" download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
du -sh .gpu/* .gl
