#!/usr/bin/env bash
# Prepares, here, what a lent-GPU call carries (docs/results/README.md): in .gpu/ the
# release binary and, for `bench` (scripts/gpu-bench.sh), the release builds of
# tests/mixed.rs and tests/attention.rs and a copy of ../shared/bench/torch_step.py,
# or, for `probe` (scripts/gpu-probe.sh), the Fashion-MNIST files; in .gl/ the Vulkan
# loader packages, which the GPU machine may lack. Both folders are git-ignored; the
# call carries [".gpu", ".gl"].
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-}
case $what in
    bench | probe) ;;
    *)
        echo "usage: $0 bench|probe" >&2
        exit 2
        ;;
esac
cargo build --release
rm -rf .gpu
mkdir -p .gpu
cp target/release/ijepa .gpu/
if [ "$what" = bench ]; then
    cp ../shared/bench/torch_step.py .gpu/
    for t in mixed attention; do
        built=$(cargo test --release --test "$t" --no-run 2>&1 | grep -o "target/release/deps/$t-[0-9a-f]*")
        cp "$built" ".gpu/$t-tests"
    done
else
    cp -r /usr/share/datasets/fashion-mnist .gpu/
fi
# The loaders the device README lists: NVIDIA's Vulkan driver is reached through
# libvulkan1 and builds on libglvnd.
rm -rf .gl
mkdir -p .gl /tmp/amd64/partial
apt=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64)
apt-get "${apt[@]}" update -qq
(cd .gl && apt-get "${apt[@]}" download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
du -sh .gpu .gl
