#!/usr/bin/env bash
# Khronos's SPIR-V validator over what naga writes for our kernels, as wgpu's Vulkan
# backend does on a Vulkan 1.3 driver (the override values processed, SPIR-V 1.6): no
# driver here checks SPIR-V strictly, and the cooperative-matrix kernels run only on a
# GPU that has them. Always: those kernels in every form their launchers compile
# (tests/shaders.rs, seconds). With --suite, also every pipeline the test suite
# compiles, on the adapter's plans and on a GPU's (IJEPA_GPU_PLANS=1): the engine saves
# each new pipeline's SPIR-V under IJEPA_SPIRV_OUT (twice the suite's time).
# tools/spirv-val does the checking: Debian's spirv-val (SPIRV-Tools 2023.1) predates
# the cooperative-matrix capability, so it builds a newer SPIRV-Tools from source (the
# spirv-tools crate; a few minutes, once).
# Usage: scripts/validate-spirv.sh [--suite] [FOLDER]   (the .spv files stay in FOLDER)
set -euo pipefail
cd "$(dirname "$0")/.."
suite=false
if [ "${1:-}" = --suite ]; then
    suite=true
    shift
fi
out=${1:-$(mktemp -d)}
mkdir -p "$out"
cargo build --release --manifest-path tools/spirv-val/Cargo.toml
IJEPA_SPIRV_OUT="$out" cargo test --release --test shaders cooperative_matrix
if $suite; then
    for plans in 0 1; do
        IJEPA_GPU_PLANS=$plans IJEPA_SPIRV_OUT="$out" cargo test --release --workspace
    done
fi
tools/spirv-val/target/release/spirv-val "$out"/*.spv
